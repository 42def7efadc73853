/*
 * conn.h: one SPOP connection from HAProxy, owned by one worker.
 *
 * States: HELLO (waiting for HAPROXY-HELLO) -> RUNNING (NOTIFY/ACK) ->
 * CLOSING (a last frame is being flushed, then close). The rx buffer is
 * allocated once at max frame + 4 and only complete frames are parsed; a
 * length over the limit is refused from its 4-byte prefix, before anything is
 * buffered. Frames are queued whole and every frame queued during one loop
 * turn leaves in one send() when the loop is about to wait (an ev_prepare
 * watcher, armed only while frames wait); what the socket does not take is
 * sent by the write watcher, which runs only while there is some.
 *
 * Time bounds, so that no peer holds a max-connections slot for ever: HELLO
 * within CONN_HELLO_TIMEOUT_S; once a frame's first bytes are in, the rest
 * within frame-timeout (slow writers; not while we stopped reading
 * ourselves); past HELLO, nothing in flight and nothing received for
 * idle-timeout (AGENT-DISCONNECT 2, "timeout", as HAProxy 2.x uses itself for
 * its SPOE timeout idle). At max-connections the worker evicts one
 * connection (conn_pick_victim) rather than refusing HAProxy's; when none
 * may go, a health-check reserve slot (WORKER_HC_RESERVE) serves a
 * health-check HELLO only, within CONN_RESERVE_HELLO_TIMEOUT_S.
 */
#ifndef SPOA_CONN_H
#define SPOA_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

struct decision;
struct exchange;
struct worker;

/* Seconds a new connection has to complete its HAPROXY-HELLO (HAProxy sends
 * it at once and gives up itself after its `timeout hello`, 2 s here). */
#define CONN_HELLO_TIMEOUT_S 5.0
/* The same for a connection on a health-check reserve slot (WORKER_HC_RESERVE):
 * short, so that a flood of connections cannot hold the reserve. */
#define CONN_RESERVE_HELLO_TIMEOUT_S 1.0

/* NOTIFYs in flight per connection before we stop reading (HAProxy itself
 * keeps at most 20 per connection, or max-waiting-frames in 2.x). It also
 * bounds what one connection can have queued for output at once: coalesced
 * answers are ACKed together, up to this many frames of max-frame-size. */
#define CONN_MAX_INFLIGHT 64

enum conn_state {
	CONN_ST_HELLO = 0,      /* waiting for HAPROXY-HELLO */
	CONN_ST_RUNNING = 1,    /* handshake done: NOTIFY -> ACK */
	CONN_ST_CLOSING = 2,    /* last frame queued; close once flushed */
	CONN_ST_ENTRIES
};

struct conn {
	struct worker *w;               /* owner */
	int fd;
	ev_io rio, wio;
	ev_prepare flush;               /* active while frames queued this turn wait
	                                 * for the end-of-turn send() */
	ev_timer linger;                /* bounds CLOSING when the peer stops reading */
	ev_timer hello;                 /* bounds HELLO: a peer that never completes
	                                 * its HAPROXY-HELLO frees its slot */
	ev_timer idle;                  /* RUNNING: lazy idle check against last_active */
	ev_timer frame;                 /* active while a partial frame is buffered */
	ev_tstamp since;                /* accepted at (loop time) */
	ev_tstamp last_active;          /* last frame received or ACK written */
	ev_tstamp partial_since;        /* when the buffered partial frame began */
	enum conn_state st;
	uint32_t own_max;               /* our max-frame-size when accepted */
	uint32_t max_frame;             /* negotiated (own_max before HELLO) */
	uint8_t *rx;                    /* owned, own_max + 4 bytes */
	size_t rx_len;
	uint8_t *tx;                    /* owned: unsent bytes of queued frames */
	size_t tx_off, tx_len, tx_cap;
	struct exchange *inflight;      /* exchanges waiting for their ACK */
	unsigned n_inflight;
	unsigned busy;                  /* > 0 while a callback of ours runs */
	int dead;                       /* close as soon as not busy */
	int draining;                   /* worker draining: grace, then quiesce */
	int quiesce;                    /* grace over: DISCONNECT once idle */
	int used;                       /* carried a NOTIFY: HAProxy's, most likely */
	int flushing;                   /* inside conn_flush_cb */
	int reserve;                    /* on a health-check reserve slot (beyond
	                                 * max-connections): HELLO only */
	ev_timer grace;                 /* end of the drain grace */
	struct conn *prev, *next;       /* worker's list */
	char peer[64];                  /* "ip:port", for logs */
};

/* Takes ownership of accepted socket <fd> (non-blocking) for worker <w>;
 * <reserve>: on a health-check reserve slot (a short HELLO timeout, and only
 * a health-check HELLO is served). Returns the connection, or NULL (fd
 * closed) when out of memory. */
struct conn *conn_new(struct worker *w, int fd, const char *peer, int reserve);

/* Closes <c> at once (no DISCONNECT): watchers stopped, in-flight exchanges
 * orphaned, memory freed. Must not be called from within <c>'s own
 * callbacks; they use conn_fail(). */
void conn_free(struct conn *c);

/* Sends ACK <sid>/<fid> with <actions>/<len> (noop ACKs, cached answers).
 * Marks the connection dead on write errors (closed when safe). */
void conn_send_ack(struct conn *c, uint64_t sid, uint64_t fid,
                   const uint8_t *actions, size_t len);

/* conn_send_ack() plus one more encoded action <extra>/<extra_len> (the
 * cache's `cache` variable) written after <actions> in the same frame, without
 * copying either. DECISION_ACK_RESERVE bytes must fit after <actions>. */
void conn_send_ack_extra(struct conn *c, uint64_t sid, uint64_t fid, const uint8_t *actions,
                         size_t len, const uint8_t *extra, size_t extra_len);

/* Puts exchange <x> on <c>'s in-flight list. */
void conn_track(struct conn *c, struct exchange *x);

/* Completion of exchange <x> (on <c>'s list): unlinks it and ACKs decision
 * <d> (borrowed) followed by <extra>/<extra_len> (one more encoded action,
 * may be NULL/0), replacing it with status=0/error if it does not fit the
 * negotiated frame size. May close <c> (write error, drain finished):
 * <c> must not be used after this returns. */
void conn_exchange_done(struct conn *c, struct exchange *x, struct decision *d,
                        const uint8_t *extra, size_t extra_len);

/* Drain policy, in fractions of the worker's drain-timeout (bounded by its
 * drain timer): during the grace, NOTIFYs keep being answered so that HAProxy
 * has time to see the health check fail and route new work to another agent;
 * after it, the connection is closed with AGENT-DISCONNECT 0 at the first
 * moment with nothing in flight and nothing unread. */
#define CONN_DRAIN_GRACE_FRACTION 0.5

/* Starts draining <c> (the worker's drain timer must be running): serves
 * during the rest of the grace, then disconnects once idle. Health-check
 * HELLOs get an AGENT-DISCONNECT from now on (the check fails), and after the
 * grace a new HAPROXY-HELLO is refused the same way. May free <c>. */
void conn_drain(struct conn *c);

/* Sends AGENT-DISCONNECT <status> <msg> and closes once flushed (or after a
 * short linger). May free <c> if not busy. */
void conn_disconnect(struct conn *c, unsigned status, const char *msg);

/* The connection of <list> (a worker's) to close so that a new one fits
 * under max-connections, or NULL when none may go. In order of preference,
 * the oldest of: never past HELLO; stalled mid-frame (a partial frame is
 * buffered); past HELLO and never a NOTIFY; idle after serving NOTIFYs,
 * the one idle longest. Each only after some time in that state (0.1 s, 1 s
 * for one that served NOTIFYs). A connection serving exchanges, or used in
 * the last second, or on a reserve slot (it frees no regular slot), is never
 * chosen, so HAProxy's working connections are
 * never evicted. */
struct conn *conn_pick_victim(struct conn *list);

/* Closes <c> at once to make room: an AGENT-DISCONNECT 13 (resource
 * allocation) is written if the socket takes it right away, never queued.
 * Frees <c>. Not from within <c>'s callbacks (the worker's accept path). */
void conn_evict(struct conn *c);

/* Short name of a state ("HEL", "RUN", "CLO"). */
const char *conn_state_to_str(enum conn_state st);

#endif /* SPOA_CONN_H */
