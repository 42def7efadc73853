/*
 * conn.c: one SPOP connection: framing, handshake, NOTIFY dispatch, ACK
 * writes, orderly and disorderly closes.
 *
 * Lifetime rule: a connection is only freed by conn_release() at the end of
 * an entry point (libev callback or a public function), when no other entry
 * point of it is on the stack (<busy> == 0). Inner code marks it <dead>
 * instead, so frame processing never runs on freed memory. Exchanges still
 * in flight at close are orphaned: they complete later and their result is
 * dropped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "cfg.h"
#include "conn.h"
#include "decision.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "spop.h"
#include "worker.h"

struct conn {
	struct worker *w;               /* owner */
	struct ev_loop *loop;           /* the worker's (worker_env()) */
	struct metrics *met;            /* the worker's counters */
	conn_notify_fn notify;          /* each NOTIFY goes there, with <notify_arg> */
	void *notify_arg;
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
	uint8_t *rx;                    /* owned, own_max + SPOP_FRAME_LEN_SIZE bytes */
	size_t rx_len;
	uint8_t *tx;                    /* owned: unsent bytes of queued frames */
	size_t tx_off, tx_len, tx_cap;
	struct list inflight;           /* of struct conn_req: NOTIFYs waiting for
	                                 * their ACK */
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
	struct list wlink;              /* the worker's list (worker.c links it) */
	char peer[CONN_PEER_MAX];       /* "ip:port", for logs */
};

/* Stop reading while this much is waiting to be written: a peer that does
 * not read its ACKs must not make us buffer without bound. */
#define CONN_TX_HIGH(c) ((size_t)(c)->max_frame * 8)
/* Seconds a closing connection may take to flush its last frame. */
#define CONN_LINGER_S 2.0
/* Reads per wakeup, so one busy connection cannot starve the others. */
#define CONN_READS_PER_EVENT 16
/* First size of the output queue (doubled as needed). */
#define CONN_TX_FIRST_CAP 4096
/* Buffers of the frames conn.c encodes itself: the AGENT-HELLO, and the
 * AGENT-DISCONNECTs (a message of up to 255 bytes, SPOP's limit; the
 * eviction's is a fixed short one). */
#define CONN_HELLO_BUF 256
#define CONN_DISCONNECT_BUF 512
#define CONN_EVICT_BUF 128
/* A drain grace shorter than this is none: quiesce at once. */
#define CONN_GRACE_MIN_S 0.001
/* An ACK's pieces: header, the decision's actions, the extra set-vars. */
#define CONN_ACK_IOV 3

static const char *const conn_state_names[CONN_ST_ENTRIES] = {
	[CONN_ST_HELLO] = "HEL",
	[CONN_ST_RUNNING] = "RUN",
	[CONN_ST_CLOSING] = "CLO",
};

const char *conn_state_to_str(enum conn_state st)
{
	if ((int)st < 0 || st >= CONN_ST_ENTRIES)
		return "???";
	return conn_state_names[st];
}

static size_t conn_tx_pending(const struct conn *c)
{
	return c->tx_len - c->tx_off;
}

/* 1 while the connection may take more frames: open, below the in-flight
 * limit, and below the unsent-bytes limit. Checked before every frame: a
 * cache hit is ACKed at once without counting in flight, and its ACK may be
 * hundreds of times its NOTIFY, so a check per read event would let one
 * event queue megabytes for a peer that does not read. */
static int conn_accepts_work(const struct conn *c)
{
	return !c->dead && c->st != CONN_ST_CLOSING && c->n_inflight < CONN_MAX_INFLIGHT &&
	       conn_tx_pending(c) < CONN_TX_HIGH(c);
}

static void conn_quiesce(struct conn *c);
static void conn_update_frame_timer(struct conn *c);

/* Frees <c> if it is dead and no entry point of it is running. Callers must
 * not touch <c> afterwards. */
static void conn_release(struct conn *c)
{
	if (c->dead && c->busy == 0)
		conn_free(c);
}

/* Starts or stops reading according to the state and the back-pressure
 * limits. When reading resumes with frames already buffered, a read event is
 * fed so they get processed without waiting for new bytes. */
static void conn_update_rx(struct conn *c)
{
	struct ev_loop *loop = c->loop;
	int want = conn_accepts_work(c);

	if (want && !ev_is_active(&c->rio)) {
		ev_io_start(loop, &c->rio);
		/* Not from the flush: libev polls right after the prepare
		 * watchers, so an ACK written by a fed read event then would wait
		 * for the next wakeup; conn_flush_cb handles buffered frames
		 * itself. */
		if (c->rx_len && !c->flushing)
			ev_feed_event(loop, &c->rio, EV_READ);
	} else if (!want && ev_is_active(&c->rio)) {
		ev_io_stop(loop, &c->rio);
	}
	conn_update_frame_timer(c);
}

/* 1 while the rx buffer holds the start of a frame we are waiting for the
 * rest of: bytes buffered while we take work (conn_process consumes every
 * complete frame then). Bytes kept while a limit of ours holds are not the
 * peer's delay. */
static int conn_partial_pending(const struct conn *c)
{
	return c->rx_len > 0 && conn_accepts_work(c);
}

/* Arms frame-timeout when a partial frame appears, disarms it when there is
 * none; the deadline runs from the frame's first bytes, not from the last
 * read, so a peer dripping one byte at a time gains nothing. */
static void conn_update_frame_timer(struct conn *c)
{
	struct ev_loop *loop = c->loop;

	if (conn_partial_pending(c)) {
		if (!ev_is_active(&c->frame)) {
			c->partial_since = ev_now(loop);
			ev_timer_set(&c->frame, (double)worker_env(c->w)->cfg->frame_timeout_ms / 1000.0, 0.);
			ev_timer_start(loop, &c->frame);
		}
	} else if (ev_is_active(&c->frame)) {
		ev_timer_stop(loop, &c->frame);
	}
}

/* 1 if <c> is past HELLO with nothing in flight, buffered or queued. */
static int conn_is_idle(const struct conn *c)
{
	return !c->dead && c->st == CONN_ST_RUNNING && c->n_inflight == 0 && c->rx_len == 0 &&
	       conn_tx_pending(c) == 0;
}

/* Room for <n> more bytes at the end of <c>'s send buffer (compacted or
 * grown as needed): where they go, or NULL (OOM). The caller copies them
 * and adds <n> to tx_len. */
static uint8_t *conn_tx_room(struct conn *c, size_t n)
{
	if (c->tx_off && c->tx_off == c->tx_len)
		c->tx_off = c->tx_len = 0;
	if (c->tx_len + n > c->tx_cap && c->tx_off) {
		memmove(c->tx, c->tx + c->tx_off, c->tx_len - c->tx_off);
		c->tx_len -= c->tx_off;
		c->tx_off = 0;
	}
	if (c->tx_len + n > c->tx_cap) {
		size_t cap = c->tx_cap ? c->tx_cap : CONN_TX_FIRST_CAP;
		uint8_t *nb;

		while (cap < c->tx_len + n)
			cap *= 2;
		nb = realloc(c->tx, cap);
		if (!nb)
			return NULL;
		c->tx = nb;
		c->tx_cap = cap;
	}
	return c->tx + c->tx_len;
}

static void conn_io_error(struct conn *c, int err)
{
	/* EPIPE/ECONNRESET: HAProxy went away; that is a normal close. */
	if (err != EPIPE && err != ECONNRESET) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "%s: write: %s", c->peer, strerror(err));
	}
	c->dead = 1;
}

/* Queues one whole frame given as <iov>[0..<cnt>-1] behind the frames
 * already queued (frame order kept) and arms the flush: every frame made
 * ready during this loop turn leaves in one send() when the loop is about to
 * wait (conn_flush_cb), the pattern of Redis's beforeSleep. Frames stay whole
 * in the stream; HAProxy 3.2+ may reset a connection whose frame arrives in
 * pieces, and a single send() of whole frames is what it gets unless the
 * socket buffer is full (then the rest follows on EV_WRITE, as before). */
static void conn_write_frame(struct conn *c, struct iovec *iov, int cnt)
{
	size_t total = 0;
	uint8_t *o;

	if (c->dead)
		return;
	/* one room check for the whole frame, then its pieces copied in */
	for (int i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	o = conn_tx_room(c, total);
	if (!o) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_ERROR, &rl, "%s: out of memory queueing a frame", c->peer);
		c->dead = 1;
		return;
	}
	for (int i = 0; i < cnt; i++) {
		memcpy(o, iov[i].iov_base, iov[i].iov_len);
		o += iov[i].iov_len;
	}
	c->tx_len += total;
	METRICS_INC(c->met->frames_out);
	/* While the write watcher waits for room, it sends this too. */
	if (!ev_is_active(&c->wio) && !ev_is_active(&c->flush))
		ev_prepare_start(c->loop, &c->flush);
}

/* Sends queued bytes until done or EAGAIN; on EAGAIN the write watcher takes
 * over. Marks <c> dead on an error, or once flushed when closing. */
static void conn_send_queued(struct conn *c)
{
	while (conn_tx_pending(c) && !c->dead) {
		ssize_t n = send(c->fd, c->tx + c->tx_off, conn_tx_pending(c),
		                 MSG_NOSIGNAL | MSG_DONTWAIT);

		METRICS_INC(c->met->writes);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_io_error(c, errno);
			break;
		}
		c->tx_off += (size_t)n;
	}
	if (c->dead)
		return;
	if (conn_tx_pending(c) == 0) {
		c->tx_off = c->tx_len = 0;
		ev_io_stop(c->loop, &c->wio);
		if (c->st == CONN_ST_CLOSING)
			c->dead = 1;
	} else {
		ev_io_start(c->loop, &c->wio);
	}
}

/* Detaches every request in flight: their answers have nowhere to go. */
static void conn_detach_all(struct conn *c)
{
	struct conn_req *r, *nx;

	LIST_FOR_EACH_SAFE(r, nx, &c->inflight, struct conn_req, link) {
		list_delete(&r->link);
		r->conn = NULL;
	}
	c->n_inflight = 0;
}

/* Closes once the queue is flushed (bounded by the linger timer). */
static void conn_close_after_flush(struct conn *c)
{
	c->st = CONN_ST_CLOSING;
	/* The linger bounds the flush now, not the HELLO timer (which, on a
	 * reserve slot, is shorter and would count a timeout that is none). */
	ev_timer_stop(c->loop, &c->hello);
	/* Results of requests still running can no longer be sent. */
	conn_detach_all(c);
	if (conn_tx_pending(c) == 0) {
		c->dead = 1;
		return;
	}
	conn_update_rx(c);
	ev_timer_start(c->loop, &c->linger);
}

/* Sends AGENT-DISCONNECT <status> <msg>, then closes once flushed: the
 * common end of conn_disconnect() and of the timeouts, which are no protocol
 * errors and are counted and logged by their callers. May free <c>. */
static void conn_say_disconnect(struct conn *c, unsigned status, const char *msg)
{
	uint8_t buf[CONN_DISCONNECT_BUF];
	struct iovec iov;
	size_t n;

	if (c->dead || c->st == CONN_ST_CLOSING)
		return;
	c->busy++;
	n = spop_agent_disconnect_encode(buf, buf + sizeof(buf), (enum spop_error)status, msg);
	if (n) {
		iov.iov_base = buf;
		iov.iov_len = n;
		conn_write_frame(c, &iov, 1);
	}
	if (!c->dead)
		conn_close_after_flush(c);
	c->busy--;
	conn_release(c);
}

void conn_disconnect(struct conn *c, unsigned status, const char *msg)
{
	if (c->dead || c->st == CONN_ST_CLOSING)
		return;
	if (status != SPOP_ERR_NONE) {
		static struct log_rl rl;

		metrics_proto_error(c->met, status);
		log_ratelimited(LOG_LVL_WARN, &rl, "%s: protocol error, disconnecting: %u (%s)",
		                c->peer, status, msg);
	}
	conn_say_disconnect(c, status, msg);
}

/* Writes an ACK frame: the header spop_ack_header() builds, then <a>/<alen>
 * as is, then <x>/<xlen> (one more encoded action, e.g. the cache's `cache`
 * set-var; may be 0 bytes). max(<reserve>, <xlen>) bytes must remain under
 * the negotiated size after <a>; otherwise status=0/error is sent (without
 * <x>). */
static void conn_write_ack(struct conn *c, uint64_t sid, uint64_t fid,
                           const uint8_t *a, size_t alen, const uint8_t *x, size_t xlen,
                           size_t reserve)
{
	uint8_t hdr[SPOP_FRAME_HDR_MAX];
	struct iovec iov[CONN_ACK_IOV];
	size_t hlen = spop_ack_header(hdr, hdr + sizeof(hdr), sid, fid, alen + xlen,
	                              reserve > xlen ? reserve - xlen : 0, c->max_frame);

	if (!hlen) {
		static struct log_rl rl;
		struct decision *e = decision_error();

		METRICS_INC(c->met->ack_too_big);
		log_ratelimited(LOG_LVL_WARN, &rl, "%s: ACK of %zu bytes of actions exceeds the "
		                "negotiated max-frame-size %u: sending status=0 outcome=error",
		                c->peer, alen, (unsigned)c->max_frame);
		a = e->actions;
		alen = e->actions_len;
		xlen = 0;
		hlen = spop_ack_header(hdr, hdr + sizeof(hdr), sid, fid, alen, 0, c->max_frame);
		if (!hlen)
			return;  /* cannot happen: the error ACK fits the smallest frame */
	}
	iov[0].iov_base = hdr;
	iov[0].iov_len = hlen;
	iov[1].iov_base = (void *)a;
	iov[1].iov_len = alen;
	iov[2].iov_base = (void *)x;
	iov[2].iov_len = xlen;
	conn_write_frame(c, iov, xlen ? CONN_ACK_IOV : CONN_ACK_IOV - 1);
	c->last_active = ev_now(c->loop);
}

void conn_send_ack(struct conn *c, uint64_t sid, uint64_t fid,
                   const uint8_t *actions, size_t len)
{
	c->busy++;
	if (!c->dead && c->st == CONN_ST_RUNNING)
		conn_write_ack(c, sid, fid, actions, len, NULL, 0, 0);
	c->busy--;
	conn_release(c);
}

void conn_track(struct conn *c, struct conn_req *r)
{
	r->conn = c;
	list_insert(&c->inflight, &r->link);
	c->n_inflight++;
}

void conn_send_ack_extra(struct conn *c, uint64_t sid, uint64_t fid, const uint8_t *actions,
                         size_t len, const uint8_t *extra, size_t extra_len)
{
	c->busy++;
	if (!c->dead && c->st == CONN_ST_RUNNING)
		conn_write_ack(c, sid, fid, actions, len, extra, extra_len, DECISION_ACK_RESERVE);
	c->busy--;
	conn_release(c);
}

void conn_req_done(struct conn_req *r, uint64_t sid, uint64_t fid, const uint8_t *actions,
                   size_t len, const uint8_t *extra, size_t extra_len)
{
	struct conn *c = r->conn;

	if (!c)
		return;
	list_delete(&r->link);
	r->conn = NULL;
	c->n_inflight--;

	c->busy++;
	if (!c->dead && c->st == CONN_ST_RUNNING)
		conn_write_ack(c, sid, fid, actions, len, extra, extra_len, DECISION_ACK_RESERVE);
	conn_update_rx(c);
	conn_quiesce(c);
	c->busy--;
	conn_release(c);
}

/* Returns 1 if bytes from the peer wait in the socket (or EOF/error is
 * pending): a NOTIFY may be on its way, so this is no moment to disconnect. */
static int conn_peer_pending(const struct conn *c)
{
	uint8_t b;
	ssize_t n;

	do
		n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

/* After the drain grace: sends AGENT-DISCONNECT 0 if nothing is in flight,
 * nothing is buffered (not even part of a frame) and nothing waits in the
 * socket. HAProxy fails the NOTIFYs it sent and we did not ACK before it
 * reads the DISCONNECT (256+0), so the quieter the moment the better; a
 * connection that never gets quiet is cut by the drain deadline. */
static void conn_quiesce(struct conn *c)
{
	if (!c->quiesce || c->dead || c->st != CONN_ST_RUNNING || c->n_inflight ||
	    c->rx_len || conn_tx_pending(c) || conn_peer_pending(c))
		return;
	log_debug("%s: drained: nothing in flight, disconnecting", c->peer);
	conn_disconnect(c, SPOP_ERR_NONE, "shutting down");
}

static void conn_grace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	c->busy++;
	c->quiesce = 1;
	conn_quiesce(c);
	c->busy--;
	conn_release(c);
}

void conn_drain(struct conn *c)
{
	/* The drain timer runs from the start of the drain: the grace ends when
	 * (1 - fraction) of drain-timeout remains. */
	double grace = worker_drain_left(c->w) - (1.0 - CONN_DRAIN_GRACE_FRACTION) *
	               (double)worker_env(c->w)->cfg->drain_timeout_ms / 1000.0;

	c->busy++;
	if (!c->draining) {
		c->draining = 1;
		if (grace > CONN_GRACE_MIN_S && c->st != CONN_ST_CLOSING) {
			ev_timer_set(&c->grace, grace, 0.);
			ev_timer_start(c->loop, &c->grace);
		} else {
			c->quiesce = 1;
			conn_quiesce(c);
		}
	}
	c->busy--;
	conn_release(c);
}

/* ---- frame handling ---- */

static void conn_handle_hello(struct conn *c, const struct spop_frame *f)
{
	struct spop_hello h;
	uint32_t max = 0;
	uint8_t buf[CONN_HELLO_BUF];
	struct iovec iov;
	size_t n;
	int r;

	if (f->type != SPOP_FRM_HAPROXY_HELLO) {
		conn_disconnect(c, SPOP_ERR_INVALID, "expected HAPROXY-HELLO");
		return;
	}
	r = spop_hello_decode(f, &h);
	if (r == 0)
		r = spop_hello_check(&h, c->own_max, &max);
	if (r < 0) {
		conn_disconnect(c, (unsigned)-r, spop_err_to_str((enum spop_error)-r));
		return;
	}
	/* "pipelining" only: async would route ACKs across connections and
	 * fragmentation is not supported. */
	if (c->draining && (h.healthcheck || c->quiesce)) {
		/* HAProxy's spop-check fails on a DISCONNECT: the server goes DOWN
		 * and new work goes elsewhere. After the grace, a new connection
		 * is refused before it can carry a NOTIFY. */
		log_debug("%s: %s refused: draining", c->peer,
		          h.healthcheck ? "health check" : "connection");
		conn_disconnect(c, SPOP_ERR_NONE, "shutting down");
		return;
	}
	if (c->reserve && !h.healthcheck) {
		if (worker_conns_full(c->w)) {
			static struct log_rl rl;

			/* A reserve slot serves health checks only: HAProxy
			 * gets a clean refusal (its stream's SPOE processing
			 * fails at once) rather than a connection we cannot
			 * serve. Counted as a close of ours, not a protocol
			 * error. */
			log_ratelimited(LOG_LVL_WARN, &rl, "%s: max-connections (%u) reached: "
			                "refusing a HELLO on a health-check reserve slot",
			                c->peer, worker_env(c->w)->cfg->max_connections);
			METRICS_INC(c->met->conns_closed[METRICS_CLOSE_RESERVE]);
			conn_say_disconnect(c, SPOP_ERR_RES, "max-connections reached");
			return;
		}
		/* A regular slot freed meanwhile: take it. */
		c->reserve = 0;
		worker_reserve_release(c->w);
	}
	n = spop_agent_hello_encode(buf, buf + sizeof(buf), max, "pipelining");
	if (!n) {
		conn_disconnect(c, SPOP_ERR_RES, "cannot encode AGENT-HELLO");
		return;
	}
	iov.iov_base = buf;
	iov.iov_len = n;
	conn_write_frame(c, &iov, 1);
	if (h.healthcheck) {
		log_debug("%s: health check%s", c->peer, c->reserve ? " (reserve slot)" : "");
		conn_close_after_flush(c);
		return;
	}
	ev_timer_stop(c->loop, &c->hello);
	c->max_frame = max;
	c->st = CONN_ST_RUNNING;
	/* idle-timeout as configured now; a reload applies to new connections
	 * (and 0 after a reload stops the checks at the next one). */
	if (worker_env(c->w)->cfg->idle_timeout_ms) {
		ev_timer_set(&c->idle, 0., (double)worker_env(c->w)->cfg->idle_timeout_ms / 1000.0);
		ev_timer_again(c->loop, &c->idle);
	}
	log_debug("%s: handshake done, max-frame-size %u", c->peer, (unsigned)max);
}

static void conn_handle_frame(struct conn *c, const struct spop_frame *f)
{
	struct spop_disconnect d;
	int r;

	c->last_active = ev_now(c->loop);
	if (c->st == CONN_ST_HELLO) {
		conn_handle_hello(c, f);
		return;
	}
	switch (f->type) {
	case SPOP_FRM_NOTIFY:
		c->used = 1;
		r = c->notify(c->notify_arg, c, f);
		if (r < 0)
			conn_disconnect(c, (unsigned)-r, "invalid NOTIFY");
		break;
	case SPOP_FRM_HAPROXY_DISCON:
		if (spop_disconnect_decode(f, &d) == 0)
			log_debug("%s: HAPROXY-DISCONNECT %llu", c->peer,
			          (unsigned long long)d.status);
		conn_disconnect(c, SPOP_ERR_NONE, "");
		break;
	case SPOP_FRM_HAPROXY_HELLO:
		conn_disconnect(c, SPOP_ERR_INVALID, "unexpected HAPROXY-HELLO");
		break;
	default:
		/* Unknown frame types are ignored (SPOE.txt, and 2.x does the same). */
		break;
	}
}

/* Parses and handles every complete frame in the rx buffer, as long as the
 * connection accepts more work, then compacts the buffer. */
static void conn_process(struct conn *c)
{
	size_t off = 0;

	while (conn_accepts_work(c)) {
		struct spop_frame f;
		long r = spop_frame_decode(c->rx + off, c->rx_len - off, c->max_frame, &f, NULL);

		if (r == 0)
			break;
		if (r < 0) {
			conn_disconnect(c, (unsigned)-r, spop_err_to_str((enum spop_error)-r));
			break;
		}
		METRICS_INC(c->met->frames_in);
		off += (size_t)r;
		conn_handle_frame(c, &f);
	}
	if (c->dead || c->st == CONN_ST_CLOSING) {
		c->rx_len = 0;
		return;
	}
	/* A frame completed: whatever follows is a new frame, with a deadline
	 * of its own (re-armed by conn_update_rx). */
	if (off && ev_is_active(&c->frame))
		ev_timer_stop(c->loop, &c->frame);
	if (off) {
		memmove(c->rx, c->rx + off, c->rx_len - off);
		c->rx_len -= off;
	}
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	size_t cap = (size_t)c->own_max + SPOP_FRAME_LEN_SIZE;

	(void)loop;
	(void)revents;
	c->busy++;
	/* Frames left over while a limit held (fed event) come first. */
	conn_process(c);
	for (int i = 0; i < CONN_READS_PER_EVENT; i++) {
		ssize_t n;

		if (!conn_accepts_work(c) || c->rx_len == cap)
			break;
		n = recv(c->fd, c->rx + c->rx_len, cap - c->rx_len, 0);
		if (n == 0) {
			/* EOF, possibly with exchanges in flight: a quiet close. */
			log_debug("%s: closed by peer", c->peer);
			c->dead = 1;
			break;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				if (errno != ECONNRESET)
					log_debug("%s: read: %s", c->peer, strerror(errno));
				c->dead = 1;
			}
			break;
		}
		c->rx_len += (size_t)n;
		conn_process(c);
	}
	conn_update_rx(c);
	conn_quiesce(c);
	c->busy--;
	conn_release(c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	c->busy++;
	conn_send_queued(c);
	conn_update_rx(c);
	conn_quiesce(c);
	c->busy--;
	conn_release(c);
}

/* The prepare watcher: the loop is about to wait, so everything this turn
 * queued goes out now, in one send() if the socket takes it. If back-pressure
 * had stopped reading with whole frames buffered and the flush lifted it,
 * those frames are handled here and their ACKs flushed the same way: an
 * event fed now would only run after the poll, and its ACKs with it. The
 * loop ends: every round either consumes a buffered frame or stops, and
 * nothing is read from the socket here. */
static void conn_flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct conn *c = w->data;

	(void)revents;
	c->busy++;
	c->flushing = 1;
	for (;;) {
		size_t before = c->rx_len;

		conn_send_queued(c);
		if (c->dead || conn_tx_pending(c) || !c->rx_len || ev_is_active(&c->rio) ||
		    !conn_accepts_work(c))
			break;
		conn_process(c);
		if (c->rx_len == before)
			break;  /* only part of a frame: reading resumes below */
	}
	/* What is left waits for a limit that an I/O callback lifts (EV_WRITE,
	 * an exchange's completion), or for more bytes: no fed event needed. */
	conn_update_rx(c);
	/* A drained connection's DISCONNECT goes out in this turn too. */
	conn_quiesce(c);
	if (conn_tx_pending(c) && !ev_is_active(&c->wio))
		conn_send_queued(c);
	c->flushing = 0;
	ev_prepare_stop(loop, w);
	c->busy--;
	conn_release(c);
}

/* No complete HAPROXY-HELLO in time: not HAProxy, or stuck. Without this a
 * peer that connects and sends nothing (or half a HELLO) would hold one of
 * max-connections for ever. */
static void conn_hello_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	static struct log_rl rl;

	(void)loop;
	(void)revents;
	log_ratelimited(LOG_LVL_WARN, &rl, "%s: no HAPROXY-HELLO within %.1fs%s: closing",
	                c->peer, c->reserve ? CONN_RESERVE_HELLO_TIMEOUT_S : CONN_HELLO_TIMEOUT_S,
	                c->reserve ? " (health-check reserve slot)" : "");
	METRICS_INC(c->met->conns_closed[METRICS_CLOSE_HELLO]);
	c->dead = 1;
	conn_release(c);
}

/* Lazy idle check (libev's "be smart about timeouts"): activity only moves
 * last_active; this callback re-arms itself for the time left, and closes
 * once the connection has been idle for the whole idle-timeout. */
static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	double to = (double)worker_env(c->w)->cfg->idle_timeout_ms / 1000.0;
	double idle = ev_now(loop) - c->last_active;

	(void)revents;
	c->busy++;
	if (to <= 0.) {
		ev_timer_stop(loop, w);
	} else if (!conn_is_idle(c)) {
		/* Working (or closing): its next ACK or frame moves last_active. */
		w->repeat = to;
		ev_timer_again(loop, w);
	} else if (idle < to) {
		w->repeat = to - idle;
		ev_timer_again(loop, w);
	} else {
		log_debug("%s: idle for %.0fs: disconnecting", c->peer, idle);
		METRICS_INC(c->met->conns_closed[METRICS_CLOSE_IDLE]);
		ev_timer_stop(loop, w);
		conn_say_disconnect(c, SPOP_ERR_TOUT, "idle timeout");
	}
	c->busy--;
	conn_release(c);
}

/* A frame began and did not complete within frame-timeout: a slow (or
 * stuck, or hostile) writer. HAProxy writes each frame at once. */
static void conn_frame_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;

	(void)revents;
	c->busy++;
	if (conn_partial_pending(c)) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "%s: frame incomplete %.1fs after its first "
		                "bytes (%zu received): closing", c->peer,
		                ev_now(loop) - c->partial_since, c->rx_len);
		METRICS_INC(c->met->conns_closed[METRICS_CLOSE_FRAME]);
		conn_say_disconnect(c, SPOP_ERR_TOUT, "frame timeout");
	}
	c->busy--;
	conn_release(c);
}

/* Seconds a connection must have spent in its state before it may be
 * evicted: a connection that carried a NOTIFY (HAProxy's way of using one),
 * since its last activity; any other (before HELLO, or past it and never
 * used), since it entered that state, long enough for HAProxy's HELLO and
 * first NOTIFY to arrive. */
#define CONN_EVICT_MIN_AGE_S 1.0
#define CONN_EVICT_NEW_AGE_S 0.1

/* Eviction preference of <c>, higher first (0: never), and the time its
 * state began in <*at> (oldest first within a rank). */
enum conn_evict_rank {
	CONN_EVICT_NEVER = 0,
	CONN_EVICT_IDLE = 1,            /* past HELLO, served NOTIFYs, doing nothing now */
	CONN_EVICT_UNUSED = 2,          /* past HELLO, never a NOTIFY */
	CONN_EVICT_STALLED = 3,         /* a frame started and is not finished */
	CONN_EVICT_HELLO = 4,           /* never proved it is HAProxy */
};

static enum conn_evict_rank conn_evict_rank(const struct conn *c, ev_tstamp *at)
{
	enum conn_evict_rank r;

	/* A reserve slot frees no regular one, and lives at most
	 * CONN_RESERVE_HELLO_TIMEOUT_S (or the linger after its answer). */
	if (c->dead || c->busy || c->st == CONN_ST_CLOSING || c->reserve)
		return CONN_EVICT_NEVER;
	if (c->st == CONN_ST_HELLO) {
		*at = c->since;
		r = CONN_EVICT_HELLO;
	} else if (ev_is_active(&c->frame)) {
		*at = c->partial_since;
		r = CONN_EVICT_STALLED;
	} else if (conn_is_idle(c) && c->used) {
		*at = c->last_active;
		r = CONN_EVICT_IDLE;
	} else if (conn_is_idle(c)) {
		*at = c->last_active;
		r = CONN_EVICT_UNUSED;
	} else {
		return CONN_EVICT_NEVER;
	}
	/* HAProxy's new connection (its HELLO and first NOTIFY on the way) and
	 * the one it used a moment ago are not given up for a flood of
	 * newcomers, which get refused instead. */
	if (ev_now(c->loop) - *at < (r == CONN_EVICT_IDLE ? CONN_EVICT_MIN_AGE_S :
	                                                       CONN_EVICT_NEW_AGE_S))
		return CONN_EVICT_NEVER;
	return r;
}

struct conn *conn_pick_victim(struct list *conns)
{
	enum conn_evict_rank best = CONN_EVICT_NEVER;
	ev_tstamp best_at = 0.;
	struct conn *v = NULL, *c;

	LIST_FOR_EACH(c, conns, struct conn, wlink) {
		ev_tstamp at = 0.;
		enum conn_evict_rank r = conn_evict_rank(c, &at);

		if (r > best || (r == best && r != CONN_EVICT_NEVER && at < best_at)) {
			best = r;
			best_at = at;
			v = c;
		}
	}
	/* An idle one with bytes arriving right now may carry HAProxy's next
	 * NOTIFY: leave it (the new connection is refused this once). */
	if (v && best == CONN_EVICT_IDLE && conn_peer_pending(v))
		return NULL;
	return v;
}

void conn_evict(struct conn *c)
{
	static struct log_rl rl;
	static const char *const what[] = {
		[CONN_EVICT_NEVER] = "?", [CONN_EVICT_IDLE] = "idle",
		[CONN_EVICT_UNUSED] = "never used",
		[CONN_EVICT_STALLED] = "stalled mid-frame", [CONN_EVICT_HELLO] = "pre-HELLO",
	};
	ev_tstamp at = 0.;
	enum conn_evict_rank r = conn_evict_rank(c, &at);

	c->busy++;
	log_ratelimited(LOG_LVL_WARN, &rl, "%s: max-connections (%u) reached: evicting this %s "
	                "connection (%.1fs in that state) for a new one", c->peer,
	                worker_env(c->w)->cfg->max_connections, what[r], ev_now(c->loop) - at);
	METRICS_INC(c->met->conns_closed[METRICS_CLOSE_EVICTED]);
	if (c->st != CONN_ST_HELLO) {
		uint8_t buf[CONN_EVICT_BUF];
		size_t n = spop_agent_disconnect_encode(buf, buf + sizeof(buf), SPOP_ERR_RES,
		                                        "max-connections reached");
		ssize_t sent;

		/* Best effort, never queued: the slot is needed now. */
		if (n && conn_tx_pending(c) == 0) {
			do
				sent = send(c->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
			while (sent < 0 && errno == EINTR);
		}
	}
	c->dead = 1;
	c->busy--;
	conn_release(c);
}

static void conn_linger_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	log_debug("%s: peer did not read our last frame in time: closing", c->peer);
	c->dead = 1;
	conn_release(c);
}

struct conn *conn_new(struct worker *w, int fd, const char *peer, int reserve,
                      conn_notify_fn notify, void *arg)
{
	const struct worker_env *env = worker_env(w);
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		goto out_close_fd;
	c->w = w;
	c->loop = env->loop;
	c->met = env->met;
	c->notify = notify;
	c->notify_arg = arg;
	list_init(&c->inflight);
	list_init(&c->wlink);
	c->fd = fd;
	c->own_max = env->cfg->max_frame_size;
	/* Before HELLO the limit is our own max: the rx buffer is sized once. */
	c->max_frame = c->own_max;
	c->rx = malloc((size_t)c->own_max + SPOP_FRAME_LEN_SIZE);
	if (!c->rx)
		goto out_free_conn;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
	c->rio.data = c;
	ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
	c->wio.data = c;
	ev_prepare_init(&c->flush, conn_flush_cb);
	c->flush.data = c;
	ev_timer_init(&c->linger, conn_linger_cb, CONN_LINGER_S, 0.);
	c->linger.data = c;
	ev_timer_init(&c->grace, conn_grace_cb, 0., 0.);
	c->grace.data = c;
	c->reserve = reserve;
	ev_timer_init(&c->hello, conn_hello_cb,
	              reserve ? CONN_RESERVE_HELLO_TIMEOUT_S : CONN_HELLO_TIMEOUT_S, 0.);
	c->hello.data = c;
	ev_init(&c->idle, conn_idle_cb);
	c->idle.data = c;
	ev_init(&c->frame, conn_frame_cb);
	c->frame.data = c;
	c->since = c->last_active = ev_now(c->loop);
	ev_io_start(c->loop, &c->rio);
	ev_timer_start(c->loop, &c->hello);
	return c;

out_free_conn:
	free(c);
	c = NULL;
out_close_fd:
	close(fd);
	return NULL;
}

void conn_free(struct conn *c)
{
	struct ev_loop *loop = c->loop;

	ev_io_stop(loop, &c->rio);
	ev_io_stop(loop, &c->wio);
	ev_prepare_stop(loop, &c->flush);
	ev_timer_stop(loop, &c->linger);
	ev_timer_stop(loop, &c->grace);
	ev_timer_stop(loop, &c->hello);
	ev_timer_stop(loop, &c->idle);
	ev_timer_stop(loop, &c->frame);
	close(c->fd);
	c->fd = -1;
	conn_detach_all(c);
	free(c->rx); c->rx = NULL;
	free(c->tx); c->tx = NULL;
	worker_conn_gone(c->w, c);
	free(c);
}

struct list *conn_link(struct conn *c)
{
	return &c->wlink;
}

struct conn *conn_of_link(struct list *l)
{
	return LIST_ELEM(l, struct conn, wlink);
}

enum conn_state conn_state(const struct conn *c)
{
	return c->st;
}

uint32_t conn_max_frame(const struct conn *c)
{
	return c->max_frame;
}

size_t conn_queued(const struct conn *c)
{
	return conn_tx_pending(c);
}

int conn_reading(const struct conn *c)
{
	return ev_is_active(&c->rio);
}

int conn_on_reserve(const struct conn *c)
{
	return c->reserve;
}
