/*
 * test_conn.c: unit tests of the SPOP connection (agent/conn.c) over a
 * socketpair, with a real libev loop: a worker made by worker_new() (never
 * started: this thread runs its loop) owns one end through
 * worker_conn_add(), the test plays HAProxy on the other, and the test's own
 * NOTIFY handler (test_notify(), given to worker_new()) answers in place of
 * the exchanges. Only the conn.h and worker.h functions are used.
 *
 * What it does: HELLO negotiation (AGENT-HELLO with version 2.0, the smaller
 * max-frame-size, pipelining); every NOTIFY handed to the handler with its
 * ids; pipelined NOTIFYs answered in order with their stream and frame ids;
 * requests answered later (conn_track(), conn_req_done()) ACKed in the order
 * they complete; an answer too big for the negotiated frame size replaced by
 * the error ACK; requests still in flight detached when the peer closes;
 * back-pressure (a peer that stops reading makes the connection stop
 * reading too, with a bounded output queue, and every ACK still arrives, in
 * order, once it reads again); the AGENT-DISCONNECT status of each kind of
 * bad input, and the connection gone afterwards.
 *
 * What it never does: open a network socket other than the worker's own
 * loopback listener (bound to an ephemeral port, never accepted on), or
 * call the user service (the handler answers itself).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "cfg.h"
#include "conn.h"
#include "decision.h"
#include "spop.h"
#include "tap.h"
#include "worker.h"

#define PEER_MAX_FRAME 256U             /* the SPOP minimum: small ACK queues */
#define TEST_DEADLINE_S 10.0            /* bound of every wait */
#define RX_CAP (1U << 20)
#define PIPELINED 5
#define FLOOD 20000                     /* NOTIFYs sent while not reading */
#define SMALL_SOCKBUF 4096
#define FRAME_BUF 512
#define DEFERRED 4                      /* requests answered later, by the test */
/* Actions whose frame fits PEER_MAX_FRAME (7 bytes of header for these
 * ids) but not with the DECISION_ACK_RESERVE bytes an ACK must leave. */
#define BIG_ACTIONS (PEER_MAX_FRAME - 8)

static struct worker *w;

struct peer {
	int fd;
	struct conn *c;                 /* the agent's end while it lives */
	uint8_t *rx;
	size_t rx_len;
	int eof;
};

/* A request the handler keeps for the test to answer (defer mode). */
struct test_req {
	struct conn_req r;
	uint64_t sid, fid;
};

/* What the handler saw, and how it answers: at once with a noop ACK, or
 * (<defer>) by keeping up to DEFERRED requests in <reqs>. */
static struct {
	unsigned calls;
	uint64_t last_sid, last_fid;
	struct conn *last_c;
	int defer;
	unsigned n_reqs;
	struct test_req reqs[DEFERRED];
} h;

/* The connections' NOTIFY handler (conn_notify_fn). */
static int test_notify(void *arg, struct conn *c, const struct spop_frame *f)
{
	size_t len;
	const uint8_t *a = decision_noop_actions(&len), *q = f->payload;
	struct spop_str name;
	unsigned nargs;
	int r;

	/* Reads the messages as a real handler would: a malformed payload is
	 * the connection's to refuse. */
	while ((r = spop_msg_next(&q, f->end, &name, &nargs)) == 1)
		if (spop_msg_skip_args(&q, f->end, nargs) < 0)
			return -SPOP_ERR_INVALID;
	if (r < 0)
		return -SPOP_ERR_INVALID;
	h.calls++;
	h.last_sid = f->sid;
	h.last_fid = f->fid;
	h.last_c = c;
	if (arg != w)
		return -SPOP_ERR_UNKNOWN;       /* the worker is the handler's arg */
	if (h.defer && h.n_reqs < DEFERRED) {
		struct test_req *q = &h.reqs[h.n_reqs++];

		q->sid = f->sid;
		q->fid = f->fid;
		conn_track(c, &q->r);
		return 0;
	}
	conn_send_ack(c, f->sid, f->fid, a, len);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A new connection of the worker; the test's end in <p>. */
static void peer_open(struct peer *p, int small_buffers)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		perror("socketpair");
		exit(2);
	}
	if (small_buffers) {
		int n = SMALL_SOCKBUF;

		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &n, sizeof(n));
		setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &n, sizeof(n));
	}
	nonblock(sv[0]);
	nonblock(sv[1]);
	p->fd = sv[1];
	p->rx = malloc(RX_CAP);
	p->rx_len = 0;
	p->eof = 0;
	p->c = p->rx ? worker_conn_add(w, sv[0], "test:1", 0) : NULL;
	if (!p->c) {
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
}

static void peer_close(struct peer *p)
{
	close(p->fd);
	free(p->rx);
	p->rx = NULL;
	p->c = NULL;
	/* Let the agent see the close and free its side. */
	for (int i = 0; i < 100 && worker_n_conns(w); i++)
		ev_run(worker_env(w)->loop, EVRUN_NOWAIT);
}

/* Reads what is there into p->rx. */
static void peer_read(struct peer *p)
{
	for (;;) {
		ssize_t n = read(p->fd, p->rx + p->rx_len, RX_CAP - p->rx_len);

		if (n > 0) {
			p->rx_len += (size_t)n;
			continue;
		}
		if (n == 0)
			p->eof = 1;
		return;
	}
}

/* Pops the first complete frame of p->rx into <f> (pointing into <copy>).
 * Returns 1, or 0 if none is complete. */
static int peer_frame(struct peer *p, struct spop_frame *f, uint8_t *copy, size_t cap)
{
	long r = spop_frame_decode(p->rx, p->rx_len, (uint32_t)cap - 4, f, NULL);

	if (r <= 0)
		return 0;
	memcpy(copy, p->rx, (size_t)r);
	spop_frame_decode(copy, (size_t)r, (uint32_t)cap - 4, f, NULL);
	memmove(p->rx, p->rx + r, p->rx_len - (size_t)r);
	p->rx_len -= (size_t)r;
	return 1;
}

/* Runs the loop and reads until a frame is there (or EOF, or the deadline). */
static int peer_wait_frame(struct peer *p, struct spop_frame *f, uint8_t *copy, size_t cap)
{
	double end = now_s() + TEST_DEADLINE_S;

	while (now_s() < end) {
		ev_run(worker_env(w)->loop, EVRUN_NOWAIT);
		peer_read(p);
		if (peer_frame(p, f, copy, cap))
			return 1;
		if (p->eof)
			return 0;
		usleep(1000);
	}
	return 0;
}

static void peer_send(struct peer *p, const uint8_t *b, size_t n)
{
	double end = now_s() + TEST_DEADLINE_S;

	while (n && now_s() < end) {
		ssize_t k = write(p->fd, b, n);

		if (k > 0) {
			b += k;
			n -= (size_t)k;
		} else {
			ev_run(worker_env(w)->loop, EVRUN_NOWAIT);
		}
	}
}

static void put_kv_str(uint8_t **q, const uint8_t *end, const char *k, const char *v)
{
	struct spop_data d = { .type = SPOP_T_STR };

	d.u.str.ptr = v;
	d.u.str.len = strlen(v);
	spop_put_str(q, end, k, strlen(k));
	spop_put_data(q, end, &d);
}

/* A HAPROXY-HELLO; <version> NULL: without supported-versions. */
static size_t hello(uint8_t *buf, size_t cap, const char *version, uint32_t max_frame)
{
	uint8_t *q = spop_frame_begin(buf, buf + cap, SPOP_FRM_HAPROXY_HELLO, 0, 0);
	struct spop_data d = { .type = SPOP_T_UINT32 };

	if (version)
		put_kv_str(&q, buf + cap, "supported-versions", version);
	d.u.u64 = max_frame;
	spop_put_str(&q, buf + cap, "max-frame-size", 14);
	spop_put_data(&q, buf + cap, &d);
	put_kv_str(&q, buf + cap, "capabilities", "pipelining");
	return spop_frame_end(buf, q);
}

/* A NOTIFY with one message "noop" and no arguments. */
static size_t notify(uint8_t *buf, size_t cap, uint64_t sid, uint64_t fid)
{
	uint8_t *q = spop_frame_begin(buf, buf + cap, SPOP_FRM_NOTIFY, sid, fid);

	spop_put_str(&q, buf + cap, "noop", 4);
	*q++ = 0;
	return spop_frame_end(buf, q);
}

/* Opens a connection and completes the handshake; returns the AGENT-HELLO's
 * negotiated size through <max>. */
static int handshake(struct peer *p, int small, uint32_t *max)
{
	uint8_t b[FRAME_BUF], copy[FRAME_BUF];
	struct spop_frame f;
	const uint8_t *q;
	struct spop_str k;
	struct spop_data v;
	int vsn = 0, pipe = 0;

	peer_open(p, small);
	peer_send(p, b, hello(b, sizeof(b), "2.0", PEER_MAX_FRAME));
	if (!peer_wait_frame(p, &f, copy, sizeof(copy)) || f.type != SPOP_FRM_AGENT_HELLO)
		return -1;
	*max = 0;
	q = f.payload;
	while (spop_kv_next(&q, f.end, &k, &v) == 1) {
		if (k.len == 7 && memcmp(k.ptr, "version", 7) == 0 && v.type == SPOP_T_STR)
			vsn = v.u.str.len == 3 && memcmp(v.u.str.ptr, "2.0", 3) == 0;
		else if (k.len == 14 && memcmp(k.ptr, "max-frame-size", 14) == 0)
			*max = (uint32_t)v.u.u64;
		else if (k.len == 12 && memcmp(k.ptr, "capabilities", 12) == 0 &&
		         v.type == SPOP_T_STR)
			pipe = v.u.str.len == 10 && memcmp(v.u.str.ptr, "pipelining", 10) == 0;
	}
	return vsn && pipe ? 0 : -1;
}

static void test_hello_and_pipelining(void)
{
	uint8_t b[PIPELINED * 64], copy[FRAME_BUF];
	struct spop_frame f;
	struct peer p;
	uint32_t max;
	size_t n = 0;
	int i, in_order = 1;

	is_int(handshake(&p, 0, &max), 0, "hello: AGENT-HELLO with version 2.0 and pipelining");
	is_int(max, PEER_MAX_FRAME, "hello: the smaller max-frame-size is negotiated");
	ok(conn_state(p.c) == CONN_ST_RUNNING, "hello: connection RUNNING");
	for (i = 0; i < PIPELINED; i++)
		n += notify(b + n, sizeof(b) - n, 10 + (uint64_t)i, 100 + (uint64_t)i);
	peer_send(&p, b, n);                    /* one write: pipelined */
	for (i = 0; i < PIPELINED; i++) {
		if (!peer_wait_frame(&p, &f, copy, sizeof(copy)) || f.type != SPOP_FRM_ACK ||
		    f.sid != 10 + (uint64_t)i || f.fid != 100 + (uint64_t)i) {
			in_order = 0;
			break;
		}
	}
	ok(in_order, "pipelining: %d ACKs, in order, ids echoed", PIPELINED);
	is_int(h.calls, PIPELINED, "handler: every NOTIFY handed to the connection's handler");
	ok(h.last_c == p.c && h.last_sid == 10 + PIPELINED - 1 &&
	   h.last_fid == 100 + PIPELINED - 1, "handler: with its connection and ids");
	peer_close(&p);
	is_int(worker_n_conns(w), 0, "closed by the peer: connection freed");
}

/* Requests answered later: ACKed in the order they complete, each with its
 * own ids; one too big for the negotiated frame size gets the error ACK. */
static void test_deferred(void)
{
	uint8_t b[DEFERRED * 64], copy[FRAME_BUF], big[BIG_ACTIONS];
	struct spop_frame f;
	struct peer p;
	uint32_t max;
	size_t n = 0, len;
	const uint8_t *noop = decision_noop_actions(&len);
	struct decision *e = decision_error();
	int i, in_order = 1, queued;

	memset(&h, 0, sizeof(h));
	h.defer = 1;
	is_int(handshake(&p, 0, &max), 0, "deferred: handshake");
	for (i = 0; i < DEFERRED; i++)
		n += notify(b + n, sizeof(b) - n, 20 + (uint64_t)i, 200 + (uint64_t)i);
	peer_send(&p, b, n);
	for (double end = now_s() + TEST_DEADLINE_S; h.n_reqs < DEFERRED && now_s() < end;)
		ev_run(worker_env(w)->loop, EVRUN_NOWAIT);
	is_int(h.n_reqs, DEFERRED, "deferred: every NOTIFY tracked by the handler");
	queued = 1;
	for (i = 0; i < DEFERRED; i++)
		queued = queued && h.reqs[i].r.conn == p.c;
	ok(queued, "deferred: each request on its connection");
	/* Last first; the first one with actions bigger than a frame. */
	for (i = DEFERRED - 1; i >= 1; i--)
		conn_req_done(&h.reqs[i].r, h.reqs[i].sid, h.reqs[i].fid, noop, len, NULL, 0);
	memset(big, 0, sizeof(big));
	conn_req_done(&h.reqs[0].r, h.reqs[0].sid, h.reqs[0].fid, big, sizeof(big), NULL, 0);
	for (i = DEFERRED - 1; i >= 0; i--) {
		if (!peer_wait_frame(&p, &f, copy, sizeof(copy)) || f.type != SPOP_FRM_ACK ||
		    f.sid != h.reqs[i].sid || f.fid != h.reqs[i].fid) {
			in_order = 0;
			break;
		}
		if (i == 0)
			ok((size_t)(f.end - f.payload) == e->actions_len &&
			   memcmp(f.payload, e->actions, e->actions_len) == 0,
			   "deferred: no room left for the reserve: the error ACK instead");
		else if ((size_t)(f.end - f.payload) != len ||
		         memcmp(f.payload, noop, len) != 0)
			in_order = 0;
	}
	ok(in_order, "deferred: ACKed in completion order, with their ids and actions");
	ok(h.reqs[0].r.conn == NULL, "deferred: a completed request is detached");
	decision_put(e);
	peer_close(&p);
	memset(&h, 0, sizeof(h));
}

/* The peer closes with requests in flight: they are detached (the owner
 * finds conn NULL and completes them without an ACK). */
static void test_orphans(void)
{
	uint8_t b[2 * 64];
	struct peer p;
	uint32_t max;
	size_t n = 0, len;
	const uint8_t *noop = decision_noop_actions(&len);

	memset(&h, 0, sizeof(h));
	h.defer = 1;
	is_int(handshake(&p, 0, &max), 0, "orphans: handshake");
	n += notify(b + n, sizeof(b) - n, 1, 1);
	n += notify(b + n, sizeof(b) - n, 2, 2);
	peer_send(&p, b, n);
	for (double end = now_s() + TEST_DEADLINE_S; h.n_reqs < 2 && now_s() < end;)
		ev_run(worker_env(w)->loop, EVRUN_NOWAIT);
	is_int(h.n_reqs, 2, "orphans: two requests in flight");
	peer_close(&p);
	is_int(worker_n_conns(w), 0, "orphans: connection freed");
	ok(h.reqs[0].r.conn == NULL && h.reqs[1].r.conn == NULL,
	   "orphans: requests in flight detached at the close");
	/* Completing a detached request sends nothing and touches no memory of
	 * the freed connection (the ASan build of this test would tell). */
	conn_req_done(&h.reqs[0].r, 1, 1, noop, len, NULL, 0);
	ok(h.reqs[0].r.conn == NULL, "orphans: completing a detached request leaves it so");
	memset(&h, 0, sizeof(h));
}

static void test_back_pressure(void)
{
	uint8_t one[64], copy[FRAME_BUF];
	struct spop_frame f;
	struct peer p;
	uint8_t *out;
	size_t out_len = 0, out_off = 0, max_queued = 0;
	uint32_t max;
	double end;
	int stopped = 0, acks = 0, in_order = 1;
	struct conn *c;

	is_int(handshake(&p, 1, &max), 0, "back-pressure: handshake");
	c = p.c;
	out = malloc((size_t)FLOOD * sizeof(one));
	if (!out || !c)
		exit(2);
	for (int i = 0; i < FLOOD; i++)
		out_len += notify(out + out_len, sizeof(one), 1 + (uint64_t)i, 1);
	/* Send without reading: the agent's ACKs fill both socket buffers. */
	end = now_s() + TEST_DEADLINE_S;
	while (now_s() < end && !stopped) {
		ssize_t k = write(p.fd, out + out_off, out_len - out_off);

		if (k > 0)
			out_off += (size_t)k;
		ev_run(worker_env(w)->loop, EVRUN_NOWAIT);
		if (conn_queued(c) > max_queued)
			max_queued = conn_queued(c);
		stopped = !conn_reading(c) && out_off < out_len;
	}
	ok(stopped, "back-pressure: the agent stops reading a peer that does not read");
	ok(max_queued <= (size_t)conn_max_frame(c) * 16,
	   "back-pressure: bounded output queue (%zu bytes at most)", max_queued);
	/* Read again: everything sent gets its ACK, in order. */
	end = now_s() + TEST_DEADLINE_S;
	while (now_s() < end && acks < FLOOD) {
		ssize_t k = out_off < out_len ? write(p.fd, out + out_off, out_len - out_off) : 0;

		if (k > 0)
			out_off += (size_t)k;
		ev_run(worker_env(w)->loop, EVRUN_NOWAIT);
		peer_read(&p);
		while (peer_frame(&p, &f, copy, sizeof(copy))) {
			if (f.type != SPOP_FRM_ACK || f.sid != 1 + (uint64_t)acks)
				in_order = 0;
			acks++;
		}
	}
	is_int(acks, FLOOD, "back-pressure: every NOTIFY ACKed once the peer reads");
	ok(in_order, "back-pressure: ACKs in order");
	free(out);
	peer_close(&p);
}

/* Sends <b>/<n> (after a handshake if <after_hello>) and expects an
 * AGENT-DISCONNECT with <status>, then the close. */
static void expect_disconnect(const uint8_t *b, size_t n, int after_hello, unsigned status,
                              const char *name)
{
	uint8_t copy[FRAME_BUF];
	struct spop_frame f;
	struct spop_disconnect d;
	struct peer p;
	uint32_t max;
	int got = 0;

	if (after_hello)
		handshake(&p, 0, &max);
	else
		peer_open(&p, 0);
	peer_send(&p, b, n);
	if (peer_wait_frame(&p, &f, copy, sizeof(copy)) && f.type == SPOP_FRM_AGENT_DISCON &&
	    spop_disconnect_decode(&f, &d) == 0)
		got = (int)d.status;
	else
		got = -1;
	ok(got == (int)status, "disconnect %s: status %u (got %d)", name, status, got);
	/* Then the agent closes its end. */
	{
		double end = now_s() + TEST_DEADLINE_S;

		while (!p.eof && now_s() < end) {
			ev_run(worker_env(w)->loop, EVRUN_NOWAIT);
			peer_read(&p);
			usleep(1000);
		}
	}
	ok(p.eof, "disconnect %s: then closed", name);
	peer_close(&p);
	ok(worker_n_conns(w) == 0, "disconnect %s: connection freed", name);
}

static void test_disconnect_codes(void)
{
	uint8_t b[FRAME_BUF], *q;
	size_t n;

	n = notify(b, sizeof(b), 1, 1);
	expect_disconnect(b, n, 0, SPOP_ERR_INVALID, "NOTIFY before HELLO");
	n = hello(b, sizeof(b), NULL, PEER_MAX_FRAME);
	expect_disconnect(b, n, 0, SPOP_ERR_NO_VSN, "HELLO without versions");
	n = hello(b, sizeof(b), "1.0", PEER_MAX_FRAME);
	expect_disconnect(b, n, 0, SPOP_ERR_BAD_VSN, "HELLO with version 1.0 only");
	n = hello(b, sizeof(b), "2.0", 100);
	expect_disconnect(b, n, 0, SPOP_ERR_BAD_FRAME_SIZE, "HELLO with a frame size below 256");

	/* After HELLO: a length over the negotiated size, refused from its prefix. */
	memset(b, 0, sizeof(b));
	b[2] = (PEER_MAX_FRAME + 1) >> 8;
	b[3] = (PEER_MAX_FRAME + 1) & 0xff;
	expect_disconnect(b, 8, 1, SPOP_ERR_TOO_BIG, "frame over max-frame-size");
	/* A NOTIFY whose message name runs past the frame. */
	q = spop_frame_begin(b, b + sizeof(b), SPOP_FRM_NOTIFY, 1, 1);
	*q++ = 40;
	*q++ = 'x';
	n = spop_frame_end(b, q);
	expect_disconnect(b, n, 1, SPOP_ERR_INVALID, "malformed NOTIFY");
	/* A fragment (no FIN flag). */
	n = notify(b, sizeof(b), 1, 1);
	memset(b + 5, 0, 4);                    /* flags (after length and type): no FIN */
	expect_disconnect(b, n, 1, SPOP_ERR_FRAG_NOT_SUPPORTED, "fragmented NOTIFY");
	n = hello(b, sizeof(b), "2.0", PEER_MAX_FRAME);
	expect_disconnect(b, n, 1, SPOP_ERR_INVALID, "second HELLO");
}

/* A loopback port free right now, as "127.0.0.1:PORT" in <out> (the worker
 * binds a listener it never uses here; the cfg refuses port 0). */
static void free_listen(char *out, size_t cap)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
		perror("free port");
		exit(2);
	}
	snprintf(out, cap, "127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
	close(fd);
}

int main(void)
{
	static char listen[32];
	static char *opts[] = { "--listen", listen, "--admin-listen", "off" };
	char err[256];
	struct cfg *cfg;

	free_listen(listen, sizeof(listen));
	cfg = cfg_load(NULL, (int)(sizeof(opts) / sizeof(opts[0])), opts, err, sizeof(err));
	if (!cfg || !(w = worker_new(0, cfg, NULL, NULL, test_notify, err, sizeof(err)))) {
		fprintf(stderr, "setup: %s\n", err);
		return 2;
	}
	test_hello_and_pipelining();
	test_deferred();
	test_orphans();
	test_back_pressure();
	test_disconnect_codes();
	worker_free(w);
	cfg_put(cfg);
	return done_testing();
}
