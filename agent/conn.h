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
 *
 * Owns struct conn (private to conn.c) and its in-flight list of struct
 * conn_req; knows nothing of what answers a NOTIFY (its conn_notify_fn) nor
 * of what embeds a request. ACK frames are built by spop_ack_header(). The
 * worker creates, lists and frees connections; the NOTIFY handler (exchange)
 * ACKs through conn_send_ack*(), conn_track() and conn_req_done().
 *
 * Return convention: constructors return the object or NULL; the rest
 * return nothing (errors mark the connection dead, closed when safe) or a
 * value (accessors).
 */
#ifndef SPOA_CONN_H
#define SPOA_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "list.h"

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

/* Bytes of a peer's name ("ip:port" or "[ipv6]:port", NUL included). */
#define CONN_PEER_MAX 64

enum conn_state {
	CONN_ST_HELLO = 0,      /* waiting for HAPROXY-HELLO */
	CONN_ST_RUNNING = 1,    /* handshake done: NOTIFY -> ACK */
	CONN_ST_CLOSING = 2,    /* last frame queued; close once flushed */
	CONN_ST_ENTRIES
};

/* Private to conn.c. */
struct conn;
struct spop_frame;

/* A NOTIFY's pending answer, embedded by whoever answers it later (an
 * exchange). conn_track() links it on the connection's in-flight list (so
 * that back-pressure counts it); conn_req_done() ACKs it. If the connection
 * closes first, it detaches every request (<conn> = NULL, link detached) and
 * never touches the rest of what embeds them. */
struct conn_req {
	struct conn *conn;              /* NULL: detached (or never tracked) */
	struct list link;               /* the connection's, while tracked */
};

/* The handler a connection hands each decoded NOTIFY to (RUNNING): it
 * either ACKs at once (conn_send_ack*()) or tracks a request that it ACKs
 * later (conn_track(), conn_req_done()). Everything it needs later must be
 * copied: the frame goes away when it returns. Returns 0, or -(enum
 * spop_error) for a malformed payload (the connection disconnects). */
typedef int (*conn_notify_fn)(void *arg, struct conn *c, const struct spop_frame *f);

/* Takes ownership of accepted socket <fd> (non-blocking) for worker <w>;
 * <reserve>: on a health-check reserve slot (a short HELLO timeout, and only
 * a health-check HELLO is served). Each NOTIFY goes to <notify>(<arg>, ...).
 * Returns the connection, or NULL (fd closed) when out of memory. Does not
 * list it: the worker does, through conn_link(). */
struct conn *conn_new(struct worker *w, int fd, const char *peer, int reserve,
                      conn_notify_fn notify, void *arg);

/* The link that puts <c> on its worker's list (the worker's to use), and
 * back from a link of that list to its connection. */
struct list *conn_link(struct conn *c);
struct conn *conn_of_link(struct list *l);

/* Closes <c> at once (no DISCONNECT): watchers stopped, in-flight requests
 * detached, memory freed, the worker told (worker_conn_gone()). Must not be
 * called from within <c>'s own callbacks. */
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

/* Puts request <r> (detached) on <c>'s in-flight list. */
void conn_track(struct conn *c, struct conn_req *r);

/* Completion of request <r> (tracked or detached): a detached one is left
 * as is (nothing is sent). Else unlinks it and ACKs <sid>/<fid> with
 * <actions>/<len> followed by <extra>/<extra_len> (one more encoded action,
 * may be NULL/0), replaced with status=0/error if it does not fit the
 * negotiated frame size with DECISION_ACK_RESERVE bytes to spare. May close
 * the connection (write error, drain finished): it must not be used after
 * this returns. */
void conn_req_done(struct conn_req *r, uint64_t sid, uint64_t fid, const uint8_t *actions,
                   size_t len, const uint8_t *extra, size_t extra_len);

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

/* The connection of <conns> (a worker's list) to close so that a new one fits
 * under max-connections, or NULL when none may go. In order of preference,
 * the oldest of: never past HELLO; stalled mid-frame (a partial frame is
 * buffered); past HELLO and never a NOTIFY; idle after serving NOTIFYs,
 * the one idle longest. Each only after some time in that state (0.1 s, 1 s
 * for one that served NOTIFYs). A connection serving exchanges, or used in
 * the last second, or on a reserve slot (it frees no regular slot), is never
 * chosen, so HAProxy's working connections are
 * never evicted. */
struct conn *conn_pick_victim(struct list *conns);

/* Closes <c> at once to make room: an AGENT-DISCONNECT 13 (resource
 * allocation) is written if the socket takes it right away, never queued.
 * Frees <c>. Not from within <c>'s callbacks (the worker's accept path). */
void conn_evict(struct conn *c);

/* Short name of a state ("HEL", "RUN", "CLO"). */
const char *conn_state_to_str(enum conn_state st);

/* What the tests and logs may read of <c>: its state, the negotiated
 * max-frame-size, the bytes queued and not yet sent, and 1 while it reads
 * its socket (0: back-pressure, or closing). */
enum conn_state conn_state(const struct conn *c);
uint32_t conn_max_frame(const struct conn *c);
size_t conn_queued(const struct conn *c);
int conn_reading(const struct conn *c);
/* 1 while <c> is on a health-check reserve slot (the worker's count). */
int conn_on_reserve(const struct conn *c);

#endif /* SPOA_CONN_H */
