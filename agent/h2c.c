/*
 * h2c.c: the native HTTP/2 cleartext user-service client (see h2c.h).
 *
 * States. A request is QUEUED (no stream free, waiting in c->queue), ACTIVE
 * (a stream on a connection, which may still be connecting), BACKOFF
 * (between attempts) or ENDED (its attempt is over, in c->ended, waiting for
 * h2c_run() to decide: answer, retry or failure). One ev_timer per request
 * fires at the nearest of the exchange deadline, the attempt's end and the
 * end of the backoff. A connection is CONNECTING or READY; it stops taking
 * streams once GOAWAY came, its cfg went away or it broke; its own timer
 * covers the connect timeout and, with no stream, the PING and idle close.
 *
 * nghttp2 is never re-entered: its callbacks only record what happened
 * (an ended stream moves its request to c->ended); everything else (sending,
 * closing a connection, completing a request) is done by h2c_run() at the top
 * of an io or timer callback, which loops until nothing is left to do.
 *
 * Ownership: struct h2c owns every connection and every request; an ACTIVE
 * request points at its connection and is in that connection's list. Never
 * logs header values or bodies; never reads the environment (no proxy).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <nghttp2/nghttp2.h>

#include "cfg.h"
#include "h1c.h"
#include "h2c.h"

/* Bytes read per recv(), and recv() calls per readiness (fairness). */
#define H2C_RBUF 16384
#define H2C_READS_PER_EVENT 4
/* First allocation of a body whose length is not known. */
#define H2C_BODY_INIT 1024
/* Our receive window per stream and per connection: a whole usual answer
 * without a WINDOW_UPDATE round trip. */
#define H2C_WINDOW (1 << 20)
/* A PING unanswered this long marks the connection dead. */
#define H2C_PING_GRACE_S 1.0
/* Per-field overhead counted against H2C_HEADERS_MAX (RFC 9113 6.5.2). */
#define H2C_FIELD_OVERHEAD 32
#define H2C_MS 1000.0
/* An HTTP/2 frame header, and where its type sits. */
#define H2C_FRAME_HDR 9
#define H2C_FRAME_TYPE 3
/* Fixed request fields: :method :scheme :authority :path user-agent accept. */
#define H2C_FIXED_NV 6

enum h2c_phase {
	H2C_P_QUEUED = 0,
	H2C_P_ACTIVE,
	H2C_P_BACKOFF,
	H2C_P_ENDED,
	H2C_P_ENTRIES
};

enum h2c_conn_st {
	H2C_C_CONNECTING = 0,
	H2C_C_READY,
	H2C_C_ENTRIES
};

/* What a request's timer was last armed for. */
enum h2c_tkind {
	H2C_T_DEADLINE = 0,     /* the exchange timeout: final */
	H2C_T_ATTEMPT,          /* upstream-attempt-timeout */
	H2C_T_BACKOFF,          /* start the next attempt */
	H2C_T_ENTRIES
};

/* What a connection's timer was last armed for. */
enum h2c_ckind {
	H2C_K_NONE = 0,
	H2C_K_CONNECT,          /* connect-timeout */
	H2C_K_PING,             /* idle half of keepalive-idle-timeout: PING */
	H2C_K_IDLE,             /* idle keepalive-idle-timeout: close */
	H2C_K_ENTRIES
};

/* How an attempt ended (struct h2c_req.end). */
enum h2c_end {
	H2C_E_ANSWER = 0,       /* a complete final answer */
	H2C_E_FAIL,             /* <fail>/<err> */
	H2C_E_REFUSED,          /* the server did not process the stream: safe */
	H2C_E_LOST,             /* the connection went before any byte of the answer */
	H2C_E_ENTRIES
};

struct h2c_req;

struct h2c_rlist {
	struct h2c_req *head, *tail;
};

struct h2c_conn {
	ev_io io;                       /* first: the callback casts back */
	ev_timer timer;
	struct h2c *c;
	nghttp2_session *s;             /* owned */
	int fd;
	int events;                     /* EV_READ/EV_WRITE watched */
	enum h2c_conn_st st;
	enum h2c_ckind ckind;
	int got_settings;               /* the server's SETTINGS arrived */
	int goaway;                     /* GOAWAY received: no new stream */
	int32_t last_sid;               /* its last-stream-id */
	int closing;                    /* no new stream (cfg, ids, idle): close when empty */
	int broken;                     /* dead: h2c_run() kills it */
	int proto_err;                  /* broken by bytes that are not HTTP/2 */
	enum h1c_fail kill_fail;
	const char *kill_err;
	uint8_t head[H2C_FRAME_HDR];    /* the first bytes from the server */
	size_t head_len;
	int ping_out;                   /* a PING waits for its ACK */
	ev_tstamp ping_at, idle_since;
	unsigned n_streams;             /* requests ACTIVE on it */
	uint64_t uses;                  /* streams that ended on it */
	uint64_t answered;              /* streams that ended with an answer */
	struct h2c_req *reqs;           /* ACTIVE on it (cprev/cnext) */
	uint8_t *wbuf;                  /* bytes nghttp2 produced that did not fit */
	size_t wlen, woff;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	struct h2c_conn *prev, *next;   /* c->conns */
};

struct h2c_req {
	struct h2c *c;
	const struct cfg *cfg;          /* borrowed: the caller holds a ref */
	upstream_done_fn done;
	void *arg;
	struct upstream_response resp;  /* owned strings */
	ev_timer timer;
	enum h2c_tkind tkind;
	ev_tstamp deadline, attempt_end, backoff_end;
	enum h2c_phase phase;
	struct h2c_conn *conn;
	int32_t sid;                    /* stream id on <conn>; 0 = none */
	unsigned attempt;               /* policy attempts started, from 1 */
	unsigned refused_retries;       /* refusals by a connection that answered nothing */
	int refused_progress;           /* the last refusal came from one that answered */
	int stale_retried;
	int on_reused;                  /* <conn> had ended streams before this one */
	int got_bytes;                  /* a frame of the answer arrived this attempt */
	int got_final;                  /* the final (non-1xx) header block came */
	int in_trailers;
	int final_done;                 /* END_STREAM after the final header block */
	long status;
	size_t hdr_bytes;
	size_t body_cap;
	enum h2c_end end;
	enum h1c_fail fail;
	const char *err;
	nghttp2_nv *nv;                 /* in this allocation */
	size_t n_nv;
	struct timespec start;
	struct h2c_req *prev, *next;    /* c->running, c->queue or c->ended */
	struct h2c_req *cprev, *cnext;  /* conn->reqs */
};

struct h2c {
	struct ev_loop *loop;           /* borrowed: the worker's */
	const struct cfg *cfg;          /* borrowed: the worker's current cfg */
	struct h2c_conn *conns;         /* owned */
	unsigned n_conns;
	uint64_t opened;
	struct h2c_rlist running, queue, ended;   /* owned requests */
	unsigned n_reqs;                /* all three lists */
	unsigned keepalive_max, max_conns;
	int in_run;
	ev_timer kick;                  /* h2c_run() soon, from the loop */
	uint32_t rnd;                   /* xorshift32 state, for the jitter */
	nghttp2_session_callbacks *cbs; /* owned */
	nghttp2_option *opt;            /* owned */
};

static void h2c_run(struct h2c *c);
static void h2c_attempt_go(struct h2c_req *q);

/* ---- small helpers ---- */

static uint32_t h2c_rand(struct h2c *c)
{
	uint32_t x = c->rnd;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	c->rnd = x;
	return x;
}

static struct h2c_rlist *h2c_list_of(struct h2c *c, enum h2c_phase ph)
{
	return ph == H2C_P_QUEUED ? &c->queue : ph == H2C_P_ENDED ? &c->ended : &c->running;
}

static void h2c_rl_del(struct h2c_rlist *l, struct h2c_req *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		l->head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else
		l->tail = q->prev;
	q->prev = q->next = NULL;
}

static void h2c_rl_add_tail(struct h2c_rlist *l, struct h2c_req *q)
{
	q->next = NULL;
	q->prev = l->tail;
	if (l->tail)
		l->tail->next = q;
	else
		l->head = q;
	l->tail = q;
}

/* Moves <q> to the list of phase <ph>. */
static void h2c_set_phase(struct h2c_req *q, enum h2c_phase ph)
{
	struct h2c *c = q->c;

	h2c_rl_del(h2c_list_of(c, q->phase), q);
	q->phase = ph;
	h2c_rl_add_tail(h2c_list_of(c, ph), q);
}

static void h2c_kick(struct h2c *c)
{
	if (!c->in_run && !ev_is_active(&c->kick)) {
		ev_timer_set(&c->kick, 0., 0.);
		ev_timer_start(c->loop, &c->kick);
	}
}

static int h2c_same_addr(const struct h2c_conn *k, const struct cfg *cfg)
{
	return k->addrlen == cfg->upstream_addrlen &&
	       memcmp(&k->addr, &cfg->upstream_addr, k->addrlen) == 0;
}

static void h2c_resp_clear(struct upstream_response *r)
{
	upstream_resp_clear_headers(r);
	free(r->body); r->body = NULL;
	r->body_len = 0;
}

/* ---- request <-> stream ---- */

static void h2c_conn_watch(struct h2c_conn *k, int events)
{
	struct ev_loop *loop = k->c->loop;

	if (k->events == events)
		return;
	ev_io_stop(loop, &k->io);
	ev_io_set(&k->io, k->fd, events);
	k->events = events;
	if (events)
		ev_io_start(loop, &k->io);
}

/* Takes <q> off its connection. <rst>: the stream is still open at the
 * server, reset it (CANCEL). nghttp2 hears no more of <q> afterwards. */
static void h2c_detach(struct h2c_req *q, int rst)
{
	struct h2c_conn *k = q->conn;

	if (!k)
		return;
	if (q->sid > 0) {
		nghttp2_session_set_stream_user_data(k->s, q->sid, NULL);
		if (rst)
			nghttp2_submit_rst_stream(k->s, NGHTTP2_FLAG_NONE, q->sid, NGHTTP2_CANCEL);
	}
	if (q->cprev)
		q->cprev->cnext = q->cnext;
	else
		k->reqs = q->cnext;
	if (q->cnext)
		q->cnext->cprev = q->cprev;
	q->cprev = q->cnext = NULL;
	k->n_streams--;
	k->uses++;
	q->conn = NULL;
	q->sid = 0;
}

/* The attempt of <q> is over (<end>, and <fail>/<err> for a failure): off
 * its connection, into c->ended for h2c_run(). */
static void h2c_end(struct h2c_req *q, enum h2c_end end, enum h1c_fail fail,
                    const char *err, int rst)
{
	if (q->conn && end == H2C_E_ANSWER)
		q->conn->answered++;
	/* A server that answers on a connection and then GOAWAYs the rest
	 * (nginx after keepalive_requests) makes progress: that refusal is
	 * not counted against H2C_REFUSED_RETRIES. */
	q->refused_progress = end == H2C_E_REFUSED && q->conn && q->conn->answered > 0;
	h2c_detach(q, rst);
	q->end = end;
	q->fail = fail;
	q->err = err;
	ev_timer_stop(q->c->loop, &q->timer);
	h2c_set_phase(q, H2C_P_ENDED);
	h2c_kick(q->c);
}

/* ---- nghttp2 callbacks: record only ---- */

static struct h2c_req *h2c_stream_req(nghttp2_session *s, int32_t sid)
{
	return sid > 0 ? nghttp2_session_get_stream_user_data(s, sid) : NULL;
}

static int h2c_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct h2c_req *q = h2c_stream_req(s, f->hd.stream_id);

	(void)ud;
	if (!q || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	q->got_bytes = 1;
	q->hdr_bytes = 0;
	if (q->got_final) {
		q->in_trailers = 1;   /* trailers: bounded, never captured */
		return 0;
	}
	/* A new response header block (the first, or after a 1xx). */
	upstream_resp_clear_headers(&q->resp);
	q->status = 0;
	return 0;
}

static int h2c_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen,
                         uint8_t flags, void *ud)
{
	struct h2c_req *q = h2c_stream_req(s, f->hd.stream_id);

	(void)flags;
	(void)ud;
	if (!q)
		return 0;
	q->hdr_bytes += namelen + valuelen + H2C_FIELD_OVERHEAD;
	if (q->hdr_bytes > H2C_HEADERS_MAX) {
		h2c_end(q, H2C_E_FAIL, H1C_FAIL_OTHER, "response headers too large", 1);
		return 0;
	}
	if (q->in_trailers)
		return 0;
	if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		long st = 0;

		/* nghttp2's messaging checks made it three digits */
		for (size_t i = 0; i < valuelen && i < 3; i++)
			st = st * 10 + (value[i] - '0');
		q->status = st;
		return 0;
	}
	if (namelen && name[0] == ':')
		return 0;
	upstream_resp_header(&q->resp, q->cfg, (const char *)name, namelen,
	                     (const char *)value, valuelen);
	return 0;
}

static int h2c_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                       size_t len, void *ud)
{
	struct h2c_req *q = h2c_stream_req(s, sid);
	struct upstream_response *r;
	size_t max;

	(void)flags;
	(void)ud;
	if (!q)
		return 0;
	r = &q->resp;
	max = q->cfg->max_response_size;
	q->got_bytes = 1;
	if (len > max - r->body_len) {
		h2c_end(q, H2C_E_FAIL, H1C_FAIL_OTHER, "response too large", 1);
		return 0;
	}
	if (r->body_len + len + 1 > q->body_cap) {
		size_t cap = q->body_cap ? q->body_cap : H2C_BODY_INIT;
		char *nb;

		while (cap < r->body_len + len + 1)
			cap *= 2;
		if (cap > max + 1)
			cap = max + 1;
		nb = realloc(r->body, cap);
		if (!nb) {
			h2c_end(q, H2C_E_FAIL, H1C_FAIL_OTHER, "out of memory", 1);
			return 0;
		}
		r->body = nb;
		q->body_cap = cap;
	}
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	r->body[r->body_len] = 0;
	return 0;
}

static int h2c_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct h2c_conn *k = ud;
	struct h2c_req *q;

	switch (f->hd.type) {
	case NGHTTP2_SETTINGS:
		if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
			k->got_settings = 1;
		return 0;
	case NGHTTP2_GOAWAY:
		k->goaway = 1;
		k->last_sid = f->goaway.last_stream_id;
		return 0;
	case NGHTTP2_PING:
		if (f->hd.flags & NGHTTP2_FLAG_ACK)
			k->ping_out = 0;
		return 0;
	case NGHTTP2_HEADERS:
		q = h2c_stream_req(s, f->hd.stream_id);
		if (!q)
			return 0;
		if (!q->got_final) {
			if (q->status >= 100 && q->status < 200) {
				/* Interim answer: the final one follows. */
				upstream_resp_clear_headers(&q->resp);
				q->status = 0;
			} else {
				q->got_final = 1;
			}
		}
		if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && q->got_final)
			q->final_done = 1;
		return 0;
	case NGHTTP2_DATA:
		q = h2c_stream_req(s, f->hd.stream_id);
		if (q && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && q->got_final)
			q->final_done = 1;
		return 0;
	default:
		return 0;
	}
}

static int h2c_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	struct h2c_req *q = h2c_stream_req(s, sid);

	(void)ud;
	if (!q)
		return 0;
	if (q->final_done)
		h2c_end(q, H2C_E_ANSWER, H1C_FAIL_NONE, NULL, 0);
	else if (code == NGHTTP2_REFUSED_STREAM && !q->got_bytes)
		h2c_end(q, H2C_E_REFUSED, H1C_FAIL_RESET, "stream refused", 0);
	else if (!q->got_bytes)
		h2c_end(q, H2C_E_FAIL, H1C_FAIL_RESET, "stream reset before the answer", 0);
	else
		h2c_end(q, H2C_E_FAIL, H1C_FAIL_OTHER, "stream reset mid-response", 0);
	return 0;
}

/* ---- connections ---- */

static void h2c_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void h2c_conn_read(struct h2c_conn *k);
static void h2c_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void h2c_conn_arm(struct h2c_conn *k, enum h2c_ckind kind, ev_tstamp at)
{
	struct ev_loop *loop = k->c->loop;
	ev_tstamp t = at - ev_now(loop);

	ev_timer_stop(loop, &k->timer);
	k->ckind = kind;
	if (kind == H2C_K_NONE)
		return;
	ev_timer_set(&k->timer, t > 0 ? t : 0., 0.);
	ev_timer_start(loop, &k->timer);
}

/* Marks <k> dead with the reason its streams get; h2c_run() kills it. */
static void h2c_conn_break(struct h2c_conn *k, enum h1c_fail fail, const char *err)
{
	if (k->broken)
		return;
	k->broken = 1;
	k->kill_fail = fail;
	k->kill_err = err;
	h2c_kick(k->c);
}

/* A new connection for <cfg>'s address, connect started, preface queued.
 * NULL with errno set when it failed at once. */
static struct h2c_conn *h2c_conn_open(struct h2c *c, const struct cfg *cfg)
{
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2C_HEADERS_MAX },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2C_WINDOW },
	};
	struct h2c_conn *k;
	int one = 1, fd, e;

	fd = socket(cfg->upstream_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	k = calloc(1, sizeof(*k));
	if (!k) {
		e = ENOMEM;
		goto out_close;
	}
	k->c = c;
	k->fd = fd;
	memcpy(&k->addr, &cfg->upstream_addr, sizeof(k->addr));
	k->addrlen = cfg->upstream_addrlen;
	if (nghttp2_session_client_new2(&k->s, c->cbs, k, c->opt) != 0) {
		e = ENOMEM;
		goto out_free;
	}
	if (nghttp2_submit_settings(k->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
	    nghttp2_session_set_local_window_size(k->s, NGHTTP2_FLAG_NONE, 0, H2C_WINDOW) != 0) {
		e = ENOMEM;
		goto out_session;
	}
	if (connect(fd, (const struct sockaddr *)&k->addr, k->addrlen) == -1 &&
	    errno != EINPROGRESS) {
		e = errno;
		goto out_session;
	}
	ev_io_init(&k->io, h2c_conn_io_cb, fd, 0);
	ev_init(&k->timer, h2c_conn_timer_cb);
	k->st = H2C_C_CONNECTING;
	k->prev = NULL;
	k->next = c->conns;
	if (c->conns)
		c->conns->prev = k;
	c->conns = k;
	c->n_conns++;
	c->opened++;
	h2c_conn_watch(k, EV_WRITE);
	h2c_conn_arm(k, H2C_K_CONNECT, ev_now(c->loop) + cfg->connect_timeout_ms / H2C_MS);
	return k;

out_session:
	nghttp2_session_del(k->s);
	k->s = NULL;
out_free:
	free(k);
out_close:
	close(fd);
	errno = e;
	return NULL;
}

/* Ends every stream of <k> (h2c_conn_break's reason, refined per stream:
 * what the server never processed is refused, i.e. safe) and frees <k>. */
static void h2c_conn_kill(struct h2c_conn *k)
{
	struct h2c *c = k->c;

	while (k->reqs) {
		struct h2c_req *q = k->reqs;
		enum h1c_fail fail = k->kill_fail;
		const char *err = k->kill_err ? k->kill_err : "connection closed before the answer";
		enum h2c_end end = H2C_E_FAIL;

		if (k->st == H2C_C_CONNECTING) {
			fail = H1C_FAIL_CONNECT;
		} else if (q->got_bytes) {
			fail = H1C_FAIL_OTHER;
			if (!k->proto_err)
				err = "connection lost mid-response";
		} else if (k->goaway && q->sid > k->last_sid) {
			end = H2C_E_REFUSED;
		} else if (!k->proto_err) {
			fail = H1C_FAIL_RESET;
			end = H2C_E_LOST;
		}
		h2c_end(q, end, fail, err, 0);
	}
	ev_io_stop(c->loop, &k->io);
	ev_timer_stop(c->loop, &k->timer);
	if (k->prev)
		k->prev->next = k->next;
	else
		c->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	nghttp2_session_del(k->s);
	k->s = NULL;
	close(k->fd);
	c->n_conns--;
	free(k->wbuf);
	k->wbuf = NULL;
	free(k);
}

/* Keeps the unsent tail <p>[0..<n>) of nghttp2's output. -1 when out of memory. */
static int h2c_conn_keep(struct h2c_conn *k, const uint8_t *p, size_t n)
{
	uint8_t *nb;

	if (k->woff) {
		memmove(k->wbuf, k->wbuf + k->woff, k->wlen - k->woff);
		k->wlen -= k->woff;
		k->woff = 0;
	}
	nb = realloc(k->wbuf, k->wlen + n);
	if (!nb)
		return -1;
	k->wbuf = nb;
	memcpy(k->wbuf + k->wlen, p, n);
	k->wlen += n;
	return 0;
}

/* Writes what nghttp2 has for <k>, until the socket is full. Marks it
 * broken on a write error. Top level only (calls nghttp2_session_mem_send). */
static void h2c_conn_flush(struct h2c_conn *k)
{
	if (k->st == H2C_C_CONNECTING || k->broken)
		return;
	for (;;) {
		const uint8_t *p;
		ssize_t n, w;

		if (k->woff < k->wlen) {
			p = k->wbuf + k->woff;
			n = (ssize_t)(k->wlen - k->woff);
		} else {
			k->woff = k->wlen = 0;
			n = nghttp2_session_mem_send(k->s, &p);
			if (n < 0) {
				h2c_conn_break(k, H1C_FAIL_RESET, "HTTP/2 session error");
				return;
			}
			if (n == 0)
				break;
		}
		w = send(k->fd, p, (size_t)n, MSG_NOSIGNAL);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				/* What the server said before it went tells more
				 * (e.g. an HTTP/1.1 400: not h2c). */
				h2c_conn_read(k);
				h2c_conn_break(k, H1C_FAIL_RESET, "connection reset sending the request");
				return;
			}
			w = 0;
		}
		if (k->woff < k->wlen) {
			k->woff += (size_t)w;
			if (k->woff < k->wlen) {
				h2c_conn_watch(k, EV_READ | EV_WRITE);
				return;
			}
			continue;
		}
		if (w < n) {
			if (h2c_conn_keep(k, p + w, (size_t)(n - w)) < 0) {
				h2c_conn_break(k, H1C_FAIL_RESET, "out of memory");
				return;
			}
			h2c_conn_watch(k, EV_READ | EV_WRITE);
			return;
		}
	}
	h2c_conn_watch(k, EV_READ);
}

/* Streams <k> may carry at once. */
static unsigned h2c_conn_cap(const struct h2c_conn *k)
{
	uint32_t m;

	if (!k->got_settings)
		return H2C_INITIAL_STREAMS;
	m = nghttp2_session_get_remote_settings(k->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	return m < H2C_MAX_STREAMS ? m : H2C_MAX_STREAMS;
}

/* 1 if <k> may take a new stream for <cfg>. */
static int h2c_conn_usable(const struct h2c_conn *k, const struct cfg *cfg, ev_tstamp now)
{
	if (k->broken || k->goaway || k->closing || !h2c_same_addr(k, cfg))
		return 0;
	if (k->ping_out && now - k->ping_at > H2C_PING_GRACE_S)
		return 0;   /* a PING went unanswered: do not trust it with a request */
	return k->n_streams < h2c_conn_cap(k);
}

/* Housekeeping of one connection at the top level: kill when dead, close
 * when it has no stream and must not stay, idle timers, then write. */
static void h2c_conn_tend(struct h2c_conn *k)
{
	struct h2c *c = k->c;
	ev_tstamp now = ev_now(c->loop);

	if (!k->broken && k->ping_out && now - k->ping_at > H2C_PING_GRACE_S)
		h2c_conn_break(k, H1C_FAIL_RESET, "connection dead (PING unanswered)");
	if (!k->broken && k->n_streams == 0 && k->st == H2C_C_READY &&
	    (k->goaway || k->closing || c->keepalive_max == 0 || !c->cfg ||
	     !c->cfg->upstream_native || !h2c_same_addr(k, c->cfg))) {
		/* Nothing runs on it and it is not to be kept: say so, once. */
		if (!k->closing || nghttp2_session_want_write(k->s)) {
			if (!k->closing)
				nghttp2_session_terminate_session(k->s, NGHTTP2_NO_ERROR);
			k->closing = 1;
			h2c_conn_flush(k);
		}
		if (!k->broken)
			h2c_conn_break(k, H1C_FAIL_RESET, "connection closed");
	}
	if (k->broken)
		return;
	if (k->st == H2C_C_READY) {
		if (k->n_streams == 0 && k->ckind == H2C_K_NONE) {
			unsigned idle = c->cfg ? c->cfg->keepalive_idle_timeout_ms : 0;

			k->idle_since = now;
			h2c_conn_arm(k, H2C_K_PING, now + idle / 2 / H2C_MS);
		} else if (k->n_streams > 0 && (k->ckind == H2C_K_PING || k->ckind == H2C_K_IDLE)) {
			h2c_conn_arm(k, H2C_K_NONE, 0);
		}
		h2c_conn_flush(k);
	}
}

static void h2c_conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct h2c_conn *k = (struct h2c_conn *)(void *)((char *)w - offsetof(struct h2c_conn, timer));
	struct h2c *c = k->c;
	unsigned idle = c->cfg ? c->cfg->keepalive_idle_timeout_ms : 0;

	(void)loop;
	(void)revents;
	switch (k->ckind) {
	case H2C_K_CONNECT:
		h2c_conn_break(k, H1C_FAIL_CONNECT, "connect timeout");
		break;
	case H2C_K_PING:
		k->ckind = H2C_K_NONE;
		if (nghttp2_submit_ping(k->s, NGHTTP2_FLAG_NONE, NULL) == 0) {
			k->ping_out = 1;
			k->ping_at = ev_now(c->loop);
		}
		h2c_conn_arm(k, H2C_K_IDLE, k->idle_since + idle / H2C_MS);
		break;
	case H2C_K_IDLE:
		k->ckind = H2C_K_NONE;
		k->closing = 1;
		nghttp2_session_terminate_session(k->s, NGHTTP2_NO_ERROR);
		h2c_conn_flush(k);
		h2c_conn_break(k, H1C_FAIL_RESET, "idle connection closed");
		break;
	default:
		break;
	}
	h2c_run(c);
}

static void h2c_conn_read(struct h2c_conn *k)
{
	uint8_t buf[H2C_RBUF];

	for (int i = 0; i < H2C_READS_PER_EVENT && !k->broken; i++) {
		ssize_t n = recv(k->fd, buf, sizeof(buf), 0), rv;

		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				h2c_conn_break(k, H1C_FAIL_RESET, "connection reset");
			return;
		}
		if (n == 0) {
			/* Closed before any SETTINGS: nginx without http2 on
			 * its listen line does that to our preface. */
			h2c_conn_break(k, H1C_FAIL_RESET, k->head_len ? "connection closed before "
			               "the answer" : "connection closed before any HTTP/2 SETTINGS "
			               "(does the user service speak h2c?)");
			return;
		}
		if (k->head_len < H2C_FRAME_HDR) {
			size_t take = H2C_FRAME_HDR - k->head_len;

			if (take > (size_t)n)
				take = (size_t)n;
			memcpy(k->head + k->head_len, buf, take);
			k->head_len += take;
			/* The server's preface is a SETTINGS frame on stream
			 * 0. nghttp2 would wait for the "frame" an HTTP/1.1
			 * status line announces (megabytes) before failing. */
			if (k->head_len > H2C_FRAME_TYPE && k->head[H2C_FRAME_TYPE] != NGHTTP2_SETTINGS) {
				k->proto_err = 1;
				h2c_conn_break(k, H1C_FAIL_OTHER, "the user service does not speak h2c "
				               "(no HTTP/2 SETTINGS)");
				return;
			}
		}
		rv = nghttp2_session_mem_recv(k->s, buf, (size_t)n);
		/* nghttp2 answers a protocol error (bytes that are not HTTP/2
		 * where SETTINGS must come first, among others) with its own
		 * GOAWAY, and then wants to read no more. */
		if (rv < 0 || (!nghttp2_session_want_read(k->s) && !k->goaway && !k->closing)) {
			k->proto_err = 1;
			h2c_conn_break(k, H1C_FAIL_OTHER, k->got_settings ?
			               "HTTP/2 protocol error from the user service" :
			               "the user service does not speak h2c (no HTTP/2 SETTINGS)");
			return;
		}
		if ((size_t)n < sizeof(buf))
			return;
	}
}

static void h2c_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct h2c_conn *k = (struct h2c_conn *)w;
	struct h2c *c = k->c;

	(void)loop;
	if (k->st == H2C_C_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err) {
			h2c_conn_break(k, H1C_FAIL_CONNECT,
			               err == ECONNREFUSED ? "connection refused" : "cannot connect");
		} else {
			k->st = H2C_C_READY;
			h2c_conn_arm(k, H2C_K_NONE, 0);
			h2c_conn_flush(k);
		}
	} else {
		if (revents & EV_READ)
			h2c_conn_read(k);
		if ((revents & EV_WRITE) && !k->broken)
			h2c_conn_flush(k);
	}
	h2c_run(c);
}

/* ---- requests ---- */

/* Arms <q>'s timer for the nearest of what its phase waits for. */
static void h2c_arm(struct h2c_req *q)
{
	struct ev_loop *loop = q->c->loop;
	ev_tstamp t = q->deadline;
	enum h2c_tkind kind = H2C_T_DEADLINE;

	if (q->phase == H2C_P_BACKOFF) {
		t = q->backoff_end;
		kind = H2C_T_BACKOFF;
	} else if (q->attempt_end < t) {
		t = q->attempt_end;
		kind = H2C_T_ATTEMPT;
	}
	q->tkind = kind;
	ev_timer_stop(loop, &q->timer);
	t -= ev_now(loop);
	ev_timer_set(&q->timer, t > 0 ? t : 0., 0.);
	ev_timer_start(loop, &q->timer);
}

/* Hands the answer (or the error <err>) to the caller and frees <q>. <q>
 * holds no stream any more. */
static void h2c_finish(struct h2c_req *q, const char *err)
{
	struct h2c *c = q->c;
	struct upstream_response *r = &q->resp;

	ev_timer_stop(c->loop, &q->timer);
	h2c_rl_del(h2c_list_of(c, q->phase), q);
	c->n_reqs--;
	r->latency_us = upstream_elapsed_us(&q->start);
	if (err) {
		r->status = 0;
		r->error = err;
	} else {
		r->status = q->status;
		if (r->status < 200 || r->status > 599) {
			r->status = 0;
			r->error = "unusable HTTP status";
		}
	}
	if (r->status == 0)
		h2c_resp_clear(r);   /* nothing captured may leak into a decision */
	q->done(q->arg, r);
	h2c_resp_clear(r);
	r->copy = NULL;   /* in <q>'s allocation */
	free(q);
}

/* Starts the backoff before another attempt, if the policy allows one. */
static int h2c_maybe_retry(struct h2c_req *q, enum h1c_fail fail, long status)
{
	const struct cfg *cfg = q->cfg;
	ev_tstamp now = ev_now(q->c->loop);
	long left_ms = (long)((q->deadline - now) * H2C_MS), d;
	enum upstream_retry_reason why;

	d = h1c_retry_delay(fail, status, q->attempt, cfg->upstream_retries,
	                    cfg->upstream_retry_on, cfg->upstream_retry_backoff_ms,
	                    left_ms, h2c_rand(q->c));
	if (d < 0)
		return 0;
	why = fail == H1C_FAIL_CONNECT ? UPSTREAM_RETRY_CONNECT :
	      fail == H1C_FAIL_RESET ? UPSTREAM_RETRY_RESET :
	      fail == H1C_FAIL_TIMEOUT ? UPSTREAM_RETRY_TIMEOUT : UPSTREAM_RETRY_STATUS;
	q->resp.retries[why]++;
	h2c_set_phase(q, H2C_P_BACKOFF);
	q->backoff_end = now + (ev_tstamp)d / H2C_MS;
	h2c_arm(q);
	return 1;
}

/* Decides what follows an ended attempt: the answer, an immediate retry of
 * what the server never saw, a policy retry, or the failure. */
static void h2c_settle(struct h2c_req *q)
{
	if (q->end == H2C_E_ANSWER) {
		if (q->status >= 500 && h2c_maybe_retry(q, H1C_FAIL_NONE, q->status))
			return;
		h2c_finish(q, NULL);
		return;
	}
	if (q->end == H2C_E_REFUSED && !q->refused_progress)
		q->refused_retries++;
	if (q->end == H2C_E_REFUSED && q->refused_retries <= H2C_REFUSED_RETRIES &&
	    ev_now(q->c->loop) < q->deadline) {
		q->resp.retries[UPSTREAM_RETRY_STALE]++;
		h2c_attempt_go(q);
		return;
	}
	if (q->end == H2C_E_LOST && q->on_reused && !q->stale_retried &&
	    ev_now(q->c->loop) < q->deadline) {
		/* The server closed a connection that had served before, and
		 * nothing of this answer came: once, at once. */
		q->stale_retried = 1;
		q->resp.retries[UPSTREAM_RETRY_STALE]++;
		h2c_attempt_go(q);
		return;
	}
	if (!h2c_maybe_retry(q, q->end == H2C_E_REFUSED ? H1C_FAIL_RESET : q->fail, 0))
		h2c_finish(q, q->err);
}

/* Starts one attempt: a stream on a connection with room, on a new
 * connection, or the queue. Never completes <q> synchronously. */
static void h2c_attempt_go(struct h2c_req *q)
{
	struct h2c *c = q->c;
	const struct cfg *cfg = q->cfg;
	ev_tstamp now = ev_now(c->loop);
	struct h2c_conn *k;
	int32_t sid;

	for (k = c->conns; k; k = k->next)
		if (h2c_conn_usable(k, cfg, now))
			break;
	if (!k && c->max_conns && c->n_conns >= c->max_conns) {
		struct h2c_conn *idle = NULL;

		for (struct h2c_conn *j = c->conns; j; j = j->next)
			if (j->n_streams == 0 && !j->broken && !h2c_same_addr(j, cfg))
				idle = j;
		if (idle) {
			/* an idle one to another address makes room */
			h2c_conn_break(idle, H1C_FAIL_RESET, "connection closed");
		}
		if (q->phase != H2C_P_QUEUED)
			h2c_set_phase(q, H2C_P_QUEUED);
		q->attempt_end = q->deadline;   /* waiting uses the whole budget */
		h2c_arm(q);
		return;
	}
	if (q->phase != H2C_P_ACTIVE)
		h2c_set_phase(q, H2C_P_ACTIVE);
	q->resp.attempts++;
	q->got_bytes = q->got_final = q->in_trailers = q->final_done = 0;
	q->status = 0;
	q->hdr_bytes = 0;
	q->body_cap = 0;
	h2c_resp_clear(&q->resp);
	if (cfg->upstream_attempt_timeout_ms) {
		ev_tstamp end = now + cfg->upstream_attempt_timeout_ms / H2C_MS;

		q->attempt_end = end < q->deadline ? end : q->deadline;
	} else {
		q->attempt_end = q->deadline;
	}
	h2c_arm(q);
	if (!k) {
		k = h2c_conn_open(c, cfg);
		if (!k) {
			h2c_end(q, H2C_E_FAIL, H1C_FAIL_CONNECT,
			        errno == ECONNREFUSED ? "connection refused" : "cannot connect", 0);
			return;
		}
	}
	sid = nghttp2_submit_request(k->s, NULL, q->nv, q->n_nv, NULL, q);
	if (sid < 0) {
		/* Stream ids used up (or out of memory): this connection
		 * takes no more; the attempt goes elsewhere, from the loop. */
		k->closing = 1;
		h2c_end(q, H2C_E_REFUSED, H1C_FAIL_RESET, "no stream available", 0);
		return;
	}
	q->conn = k;
	q->sid = sid;
	q->on_reused = k->uses > 0;
	q->cprev = NULL;
	q->cnext = k->reqs;
	if (k->reqs)
		k->reqs->cprev = q;
	k->reqs = q;
	k->n_streams++;
	h2c_kick(c);   /* the HEADERS go out from the loop */
}

static void h2c_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct h2c_req *q = (struct h2c_req *)(void *)((char *)w - offsetof(struct h2c_req, timer));
	struct h2c *c = q->c;

	(void)loop;
	(void)revents;
	switch (q->tkind) {
	case H2C_T_BACKOFF:
		if (ev_now(c->loop) >= q->deadline) {
			h2c_finish(q, "timeout");
			break;
		}
		q->attempt++;
		h2c_attempt_go(q);
		break;
	case H2C_T_ATTEMPT:
		if (q->phase == H2C_P_QUEUED) {
			/* No stream came within the attempt: the rest of the
			 * budget is for waiting too. */
			q->attempt_end = q->deadline;
			h2c_arm(q);
			break;
		}
		h2c_end(q, H2C_E_FAIL, q->got_bytes ? H1C_FAIL_OTHER : H1C_FAIL_TIMEOUT,
		        "attempt timeout", 1);
		break;
	default:
		h2c_detach(q, 1);
		h2c_finish(q, "timeout");
		break;
	}
	h2c_run(c);
}

/* Settles every ended attempt, starts queued requests while streams are
 * free, tends every connection; until nothing changes. Top level only. */
static void h2c_run(struct h2c *c)
{
	if (c->in_run)
		return;
	c->in_run = 1;
	ev_timer_stop(c->loop, &c->kick);
	for (;;) {
		struct h2c_conn *k, *next;
		unsigned idle = 0;
		int killed = 0;

		while (c->ended.head)
			h2c_settle(c->ended.head);
		while (c->queue.head) {
			struct h2c_req *q = c->queue.head;

			h2c_attempt_go(q);
			if (q->phase == H2C_P_QUEUED)
				break;   /* still no room */
		}
		for (k = c->conns; k; k = next) {
			next = k->next;
			h2c_conn_tend(k);
			if (!k->broken && k->n_streams == 0 && ++idle > c->keepalive_max &&
			    c->keepalive_max)
				h2c_conn_break(k, H1C_FAIL_RESET, "connection closed");
			if (k->broken) {
				h2c_conn_kill(k);
				killed = 1;
			}
		}
		if (!c->ended.head && !(killed && c->queue.head))
			break;
	}
	c->in_run = 0;
}

static void h2c_kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	h2c_run(w->data);
}

/* ---- public API ---- */

struct h2c *h2c_new(struct ev_loop *loop, const struct cfg *cfg)
{
	struct h2c *c = calloc(1, sizeof(*c));
	struct timespec ts;

	if (!c)
		return NULL;
	c->loop = loop;
	if (nghttp2_session_callbacks_new(&c->cbs) != 0)
		goto out_free;
	nghttp2_session_callbacks_set_on_begin_headers_callback(c->cbs, h2c_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(c->cbs, h2c_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c->cbs, h2c_on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(c->cbs, h2c_on_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(c->cbs, h2c_on_close);
	if (nghttp2_option_new(&c->opt) != 0)
		goto out_cbs;
	nghttp2_option_set_peer_max_concurrent_streams(c->opt, H2C_INITIAL_STREAMS);
	ev_init(&c->kick, h2c_kick_cb);
	c->kick.data = c;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	c->rnd = (uint32_t)ts.tv_nsec ^ (uint32_t)(uintptr_t)c ^ 0x85ebca6bu;
	if (!c->rnd)
		c->rnd = 1;
	h2c_set_cfg(c, cfg);
	return c;

out_cbs:
	nghttp2_session_callbacks_del(c->cbs);
	c->cbs = NULL;
out_free:
	free(c);
	return NULL;
}

void h2c_set_cfg(struct h2c *c, const struct cfg *cfg)
{
	c->cfg = cfg;
	c->keepalive_max = cfg->keepalive_max;
	c->max_conns = cfg->max_upstream_conns;
	for (struct h2c_conn *k = c->conns; k; k = k->next)
		if (!cfg->upstream_native || cfg->upstream_http_version != CFG_HTTP_H2C ||
		    !h2c_same_addr(k, cfg))
			k->closing = 1;
	h2c_kick(c);
}

/* 1 if the request header <name>[0..<n>) may not travel in HTTP/2
 * (RFC 9113 8.2.2) or is carried otherwise (Host: :authority). */
static int h2c_hdr_dropped(const char *name, size_t n)
{
	static const char *const drop[] = {
		"connection", "keep-alive", "proxy-connection", "transfer-encoding",
		"upgrade", "te", "host", "expect",
	};

	for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		if (strlen(drop[i]) == n && strncasecmp(drop[i], name, n) == 0)
			return 1;
	return 0;
}

static void h2c_nv_set(nghttp2_nv *nv, const char *name, size_t nlen, const char *v,
                       size_t vlen)
{
	nv->name = (uint8_t *)(uintptr_t)name;
	nv->namelen = nlen;
	nv->value = (uint8_t *)(uintptr_t)v;
	nv->valuelen = vlen;
	nv->flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
}

int h2c_start(struct h2c *c, const struct cfg *cfg, const char *url,
              const char *const *headers, size_t n, upstream_done_fn done, void *arg)
{
	static const char slash[] = "/";
	const char *path = url + cfg->upstream_path_off, *auth = cfg->upstream_host;
	size_t len = 0, alen = strlen(cfg->upstream_host), plen = strlen(path);
	size_t i_ua = 4, i_acc = 5;
	struct h2c_req *q;
	nghttp2_nv *nv;
	char *p, *pathbuf;

	for (size_t i = 0; i < n; i++)
		len += strlen(headers[i]) + 1;
	/* One allocation: the request, the copy-header slots, the header
	 * fields, their bytes (names lower-cased), the path. */
	q = calloc(1, sizeof(*q) + cfg->n_copy_headers * sizeof(char *) +
	           (H2C_FIXED_NV + n) * sizeof(nghttp2_nv) + len + plen + 2);
	if (!q)
		return -1;
	q->resp.copy = (char **)(void *)(q + 1);
	q->resp.n_copy = cfg->n_copy_headers;
	q->resp.native = 1;
	q->c = c;
	q->cfg = cfg;
	q->done = done;
	q->arg = arg;
	q->nv = nv = (nghttp2_nv *)(void *)(q->resp.copy + q->resp.n_copy);
	p = (char *)(nv + H2C_FIXED_NV + n);
	pathbuf = p + len;
	if (*path != '/') {
		pathbuf[0] = slash[0];
		memcpy(pathbuf + 1, path, plen);
		plen++;
	} else {
		memcpy(pathbuf, path, plen);
	}
	h2c_nv_set(&nv[0], ":method", 7, "GET", 3);
	h2c_nv_set(&nv[1], ":scheme", 7, "http", 4);
	h2c_nv_set(&nv[3], ":path", 5, pathbuf, plen);
	h2c_nv_set(&nv[i_ua], "user-agent", 10, "spoa-auth", 9);
	h2c_nv_set(&nv[i_acc], "accept", 6, "*/*", 3);
	q->n_nv = H2C_FIXED_NV;
	for (size_t i = 0; i < n; i++) {
		const char *h = headers[i], *colon = strchr(h, ':'), *v;
		size_t nl, l = strlen(h);

		memcpy(p, h, l + 1);
		if (!colon || colon == h)
			goto next;
		nl = (size_t)(colon - h);
		for (size_t j = 0; j < nl; j++)
			p[j] = (char)(p[j] >= 'A' && p[j] <= 'Z' ? p[j] + ('a' - 'A') : p[j]);
		v = p + nl + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		if (nl == 4 && memcmp(p, "host", 4) == 0) {
			/* a caller's Host replaces ours, as :authority */
			auth = v;
			alen = strlen(v);
		} else if (h2c_hdr_dropped(p, nl)) {
			/* connection-specific: not in HTTP/2 */
		} else if (nl == 10 && memcmp(p, "user-agent", 10) == 0) {
			h2c_nv_set(&nv[i_ua], p, nl, v, strlen(v));
		} else if (nl == 6 && memcmp(p, "accept", 6) == 0) {
			h2c_nv_set(&nv[i_acc], p, nl, v, strlen(v));
		} else {
			h2c_nv_set(&nv[q->n_nv++], p, nl, v, strlen(v));
		}
next:
		p += l + 1;
	}
	h2c_nv_set(&nv[2], ":authority", 10, auth, alen);

	clock_gettime(CLOCK_MONOTONIC, &q->start);
	ev_init(&q->timer, h2c_timer_cb);
	q->deadline = ev_now(c->loop) + cfg->timeout_ms / H2C_MS;
	q->attempt_end = q->deadline;
	q->attempt = 1;
	q->phase = H2C_P_BACKOFF;   /* "between attempts": in c->running */
	h2c_rl_add_tail(&c->running, q);
	c->n_reqs++;
	if (c->queue.head) {
		/* A queue ahead of us keeps its order. */
		h2c_set_phase(q, H2C_P_QUEUED);
		h2c_arm(q);
		return 0;
	}
	h2c_attempt_go(q);
	return 0;
}

unsigned h2c_pending(const struct h2c *c)
{
	return c->n_reqs;
}

unsigned h2c_conns(const struct h2c *c)
{
	return c->n_conns;
}

uint64_t h2c_conns_opened(const struct h2c *c)
{
	return c->opened;
}

void h2c_abort_all(struct h2c *c)
{
	c->in_run = 1;   /* nothing is settled behind our back */
	for (;;) {
		struct h2c_req *q = c->running.head ? c->running.head :
		                    c->queue.head ? c->queue.head : c->ended.head;

		if (!q)
			break;
		h2c_detach(q, 1);
		h2c_finish(q, "aborted");
	}
	c->in_run = 0;
	ev_timer_stop(c->loop, &c->kick);
}

void h2c_free(struct h2c *c)
{
	if (!c)
		return;
	h2c_abort_all(c);
	while (c->conns) {
		c->conns->kill_err = "aborted";
		h2c_conn_kill(c->conns);
	}
	ev_timer_stop(c->loop, &c->kick);
	nghttp2_option_del(c->opt);
	c->opt = NULL;
	nghttp2_session_callbacks_del(c->cbs);
	c->cbs = NULL;
	free(c);
}
