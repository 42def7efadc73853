/*
 * test_h2c.c: the native h2c client against a real HTTP/2 server session
 * (nghttp2's server API) on loopback (127.0.0.1, a free port from the
 * kernel), driven by the same libev loop as the client.
 *
 * Each case sets a handler called for every complete request: it answers
 * (status, headers, body, 1xx before, trailers after), holds the stream,
 * sends GOAWAY, or drops the connection. The server records what it saw
 * (connections, concurrent streams, RST_STREAM, PING, request fields), and
 * the tests check the responses, the errors, the attempts and that one
 * connection carried many exchanges.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

#include "cfg.h"
#include "h2c.h"
#include "tap.h"
#include "upstream.h"

#define SRV_MAX_CONNS 16
#define SRV_MAX_HELD 64
#define MAX_DONE 64
#define CASE_LIMIT_S 5.0
#define BIG_HDR 30000

struct sconn;
typedef void (*srv_fn)(struct sconn *s, int32_t sid, unsigned nreq);

struct body_src {
	const char *p;
	size_t len, off;
	int trailers;
};

struct sconn {
	ev_io io;
	int fd, events;
	unsigned idx, nreq, open_streams;
	nghttp2_session *s;
	int drop;                       /* close right after this read */
	int close_after_write;
	uint8_t *wbuf;
	size_t wlen;
	int32_t held[SRV_MAX_HELD];
	unsigned n_held;
};

static struct ev_loop *loop;
static int lfd;
static unsigned short port;
static ev_io lio;
static srv_fn handler;
static const char *raw_greeting;        /* not h2c: these bytes, then close */
static uint32_t srv_max_streams = 100;
static unsigned accepted, max_open, rst_seen, pings_seen, reqs_seen;
static struct sconn *sconns[SRV_MAX_CONNS];
static char seen_auth[128], seen_path[256], seen_cookie[64], seen_host[64];
static char big[BIG_HDR + 1];
static nghttp2_session_callbacks *scbs;
static nghttp2_option *sopt;

struct got {
	long status;
	char error[96];
	char body[4096];
	size_t body_len;
	char ct[64], cc[64], copy0[64];
	unsigned n_cookies, attempts;
	unsigned retries[UPSTREAM_RETRY_ENTRIES];
};
static struct got got[MAX_DONE];
static unsigned n_done, n_want;
static ev_timer limit, pause_timer;

/* ---- the server ---- */

static void srv_watch(struct sconn *s, int ev)
{
	if (s->events == ev)
		return;
	ev_io_stop(loop, &s->io);
	ev_io_set(&s->io, s->fd, ev);
	s->events = ev;
	ev_io_start(loop, &s->io);
}

static void srv_close(struct sconn *s)
{
	ev_io_stop(loop, &s->io);
	close(s->fd);
	nghttp2_session_del(s->s);
	sconns[s->idx] = NULL;
	free(s->wbuf);
	free(s);
}

/* Writes what the session has; 0, or -1 after closing <s>. */
static int srv_flush(struct sconn *s)
{
	for (;;) {
		const uint8_t *p;
		ssize_t n, w;

		if (s->wlen) {
			w = write(s->fd, s->wbuf, s->wlen);
			if (w < 0 && errno == EAGAIN) {
				srv_watch(s, EV_READ | EV_WRITE);
				return 0;
			}
			if (w < 0) {
				srv_close(s);
				return -1;
			}
			memmove(s->wbuf, s->wbuf + w, s->wlen - (size_t)w);
			s->wlen -= (size_t)w;
			continue;
		}
		n = nghttp2_session_mem_send(s->s, &p);
		if (n <= 0)
			break;
		s->wbuf = realloc(s->wbuf, (size_t)n);
		memcpy(s->wbuf, p, (size_t)n);
		s->wlen = (size_t)n;
	}
	srv_watch(s, EV_READ);
	if (s->close_after_write) {
		srv_close(s);
		return -1;
	}
	return 0;
}

static ssize_t srv_read_body(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t len,
                             uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct body_src *b = src->ptr;
	size_t n = b->len - b->off;

	(void)ud;
	if (n > len)
		n = len;
	memcpy(buf, b->p + b->off, n);
	b->off += n;
	if (b->off == b->len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (b->trailers) {
			nghttp2_nv tr[] = {
				{ (uint8_t *)"x-user-id", (uint8_t *)"from-trailer", 9, 12, 0 },
			};

			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			nghttp2_submit_trailer(ss, sid, tr, 1);
		}
	}
	return (ssize_t)n;
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), 0 }

/* Answers stream <sid>: <status>, <nv>[0..<n>), <body> (static), trailers. */
static void srv_answer(struct sconn *s, int32_t sid, const char *status, const nghttp2_nv *nv,
                       size_t n, const char *body, int trailers)
{
	nghttp2_nv all[16];
	nghttp2_data_provider dp;
	struct body_src *b = calloc(1, sizeof(*b));

	all[0] = (nghttp2_nv)NV(":status", status);
	for (size_t i = 0; i < n && i < 15; i++)
		all[i + 1] = nv[i];
	b->p = body;
	b->len = strlen(body);
	b->trailers = trailers;
	dp.source.ptr = b;
	dp.read_callback = srv_read_body;
	nghttp2_session_set_stream_user_data(s->s, sid, b);
	nghttp2_submit_response(s->s, sid, all, n + 1, &dp);
}

static void srv_ok(struct sconn *s, int32_t sid, const char *body)
{
	srv_answer(s, sid, "200", NULL, 0, body, 0);
}

static void copy_val(char *dst, size_t n, const uint8_t *v, size_t vl)
{
	snprintf(dst, n, "%.*s", (int)vl, (const char *)v);
}

static int srv_on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                         size_t nl, const uint8_t *v, size_t vl, uint8_t flags, void *ud)
{
	(void)ss; (void)f; (void)flags; (void)ud;
	if (nl == 10 && memcmp(name, ":authority", 10) == 0)
		copy_val(seen_auth, sizeof(seen_auth), v, vl);
	else if (nl == 5 && memcmp(name, ":path", 5) == 0)
		copy_val(seen_path, sizeof(seen_path), v, vl);
	else if (nl == 6 && memcmp(name, "cookie", 6) == 0)
		copy_val(seen_cookie, sizeof(seen_cookie), v, vl);
	else if (nl == 4 && memcmp(name, "host", 4) == 0)
		copy_val(seen_host, sizeof(seen_host), v, vl);
	return 0;
}

static int srv_on_frame(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
	struct sconn *s = ud;

	(void)ss;
	if (f->hd.type == NGHTTP2_RST_STREAM)
		rst_seen++;
	if (f->hd.type == NGHTTP2_PING && !(f->hd.flags & NGHTTP2_FLAG_ACK))
		pings_seen++;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
		if (++s->open_streams > max_open)
			max_open = s->open_streams;
		if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
			reqs_seen++;
			handler(s, f->hd.stream_id, s->nreq++);
		}
	}
	return 0;
}

static int srv_on_close(nghttp2_session *ss, int32_t sid, uint32_t code, void *ud)
{
	struct sconn *s = ud;

	(void)code;
	free(nghttp2_session_get_stream_user_data(ss, sid));
	if (s->open_streams)
		s->open_streams--;
	return 0;
}

static void srv_io_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct sconn *s = (struct sconn *)w;
	uint8_t buf[16384];
	ssize_t n;

	(void)l;
	if (revents & EV_READ) {
		n = read(s->fd, buf, sizeof(buf));
		if (n == 0 || (n < 0 && errno != EAGAIN)) {
			srv_close(s);
			return;
		}
		if (n > 0 && nghttp2_session_mem_recv(s->s, buf, (size_t)n) < 0) {
			srv_close(s);
			return;
		}
		if (s->drop) {
			srv_close(s);
			return;
		}
	}
	srv_flush(s);
}

static void srv_accept_cb(struct ev_loop *l, ev_io *w, int revents)
{
	nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv_max_streams } };
	struct sconn *s;
	int fd;

	(void)l; (void)w; (void)revents;
	fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (accepted >= SRV_MAX_CONNS) {
		close(fd);
		return;
	}
	if (raw_greeting) {
		accepted++;
		if (write(fd, raw_greeting, strlen(raw_greeting)) < 0)
			diag("short write");
		close(fd);
		return;
	}
	s = calloc(1, sizeof(*s));
	s->fd = fd;
	s->idx = accepted++;
	sconns[s->idx] = s;
	nghttp2_session_server_new2(&s->s, scbs, s, sopt);
	nghttp2_submit_settings(s->s, NGHTTP2_FLAG_NONE, iv, 1);
	ev_io_init(&s->io, srv_io_cb, fd, EV_READ);
	s->events = EV_READ;
	ev_io_start(loop, &s->io);
	srv_flush(s);
}

static void srv_reset(srv_fn fn)
{
	for (unsigned i = 0; i < SRV_MAX_CONNS; i++)
		if (sconns[i])
			srv_close(sconns[i]);
	accepted = max_open = rst_seen = pings_seen = reqs_seen = 0;
	handler = fn;
	raw_greeting = NULL;
	srv_max_streams = 100;
	seen_auth[0] = seen_path[0] = seen_cookie[0] = seen_host[0] = 0;
	n_done = 0;
	memset(got, 0, sizeof(got));
}

static void srv_start(void)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int one = 1;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 64) < 0) {
		perror("listen");
		exit(2);
	}
	getsockname(lfd, (struct sockaddr *)&a, &alen);
	port = ntohs(a.sin_port);
	ev_io_init(&lio, srv_accept_cb, lfd, EV_READ);
	ev_io_start(loop, &lio);
	nghttp2_session_callbacks_new(&scbs);
	nghttp2_session_callbacks_set_on_header_callback(scbs, srv_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(scbs, srv_on_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(scbs, srv_on_close);
	nghttp2_option_new(&sopt);
	nghttp2_option_set_max_send_header_block_length(sopt, 4 * BIG_HDR);
}

/* ---- the client side ---- */

static void cp(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src ? src : "(null)");
}

static void done_cb(void *arg, const struct upstream_response *r)
{
	struct got *g = &got[n_done < MAX_DONE ? n_done : MAX_DONE - 1];

	(void)arg;
	g->status = r->status;
	cp(g->error, sizeof(g->error), r->error);
	if (r->body && r->body_len < sizeof(g->body)) {
		memcpy(g->body, r->body, r->body_len);
		g->body_len = r->body_len;
	}
	cp(g->ct, sizeof(g->ct), r->content_type);
	cp(g->cc, sizeof(g->cc), r->cache_control);
	cp(g->copy0, sizeof(g->copy0), r->n_copy ? r->copy[0] : NULL);
	g->n_cookies = r->n_set_cookie;
	g->attempts = r->attempts;
	memcpy(g->retries, r->retries, sizeof(g->retries));
	n_done++;
	if (n_done >= n_want)
		ev_break(loop, EVBREAK_ALL);
}

static void limit_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	diag("case time limit reached");
	ev_break(l, EVBREAK_ALL);
}

static void run_until(unsigned want)
{
	n_want = want;
	if (n_done >= want)
		return;
	ev_timer_set(&limit, CASE_LIMIT_S, 0.);
	ev_timer_start(loop, &limit);
	ev_run(loop, 0);
	ev_timer_stop(loop, &limit);
}

static void pause_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	ev_break(l, EVBREAK_ALL);
}

static void run_for(double s)
{
	ev_timer_set(&pause_timer, s, 0.);
	ev_timer_start(loop, &pause_timer);
	ev_run(loop, 0);
	ev_timer_stop(loop, &pause_timer);
}

static struct cfg *mkcfg(const char *extra[], size_t n_extra, unsigned short p)
{
	char url[128], err[512];
	char *argv[64];
	int argc = 0;
	struct cfg *c;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/api/user/token", p);
	argv[argc++] = (char *)"--user-service-url";
	argv[argc++] = url;
	argv[argc++] = (char *)"--upstream-http-version";
	argv[argc++] = (char *)"h2c";
	argv[argc++] = (char *)"--copy-header";
	argv[argc++] = (char *)"X-User-Id";
	argv[argc++] = (char *)"--timeout";
	argv[argc++] = (char *)"1000ms";
	for (size_t i = 0; i < n_extra && argc < 62; i++)
		argv[argc++] = (char *)extra[i];
	c = cfg_load(NULL, argc, argv, err, sizeof(err));
	if (!c) {
		diag("cfg: %s", err);
		exit(2);
	}
	return c;
}

static void start_one(struct h2c *h, const struct cfg *c)
{
	static const char *hdrs[] = { "X-Session: abc", "Cookie: s=1", "Connection: keep-alive" };
	char url[256];

	snprintf(url, sizeof(url), "%s?request_uri=/x", c->user_service_url);
	if (h2c_start(h, c, url, hdrs, 3, done_cb, NULL) != 0)
		diag("h2c_start failed");
}

/* ---- handlers ---- */

static void h_full(struct sconn *s, int32_t sid, unsigned nreq)
{
	nghttp2_nv nv[] = {
		NV("content-type", "text/plain"), NV("cache-control", "max-age=30"),
		NV("x-user-id", "u42"), NV("set-cookie", "a=1"), NV("set-cookie", "b=2"),
		NV("set-cookie", "c=3"), NV("set-cookie", "d=4"), NV("set-cookie", "e=5"),
	};

	(void)nreq;
	srv_answer(s, sid, "200", nv, sizeof(nv) / sizeof(nv[0]), "tok-abc", 0);
}

/* Holds every stream until <want_held> are open, then answers them all:
 * they were in flight at the same time. */
static unsigned want_held;

static void h_hold_all(struct sconn *s, int32_t sid, unsigned nreq)
{
	(void)nreq;
	s->held[s->n_held++] = sid;
	if (s->n_held < want_held)
		return;
	for (unsigned i = 0; i < s->n_held; i++)
		srv_ok(s, s->held[i], "ok");
	s->n_held = 0;
}

static void h_ok(struct sconn *s, int32_t sid, unsigned nreq)
{
	(void)nreq;
	srv_ok(s, sid, "ok");
}

static void h_hang_first(struct sconn *s, int32_t sid, unsigned nreq)
{
	if (nreq > 0)
		srv_ok(s, sid, "ok");
}

static const char long_body[] =
	"0123456789012345678901234567890123456789012345678901234567890123456789"
	"0123456789012345678901234567890123456789012345678901234567890123456789";

static void h_long_then_ok(struct sconn *s, int32_t sid, unsigned nreq)
{
	srv_ok(s, sid, nreq == 0 ? long_body : "ok");
}

static void h_big_headers(struct sconn *s, int32_t sid, unsigned nreq)
{
	nghttp2_nv nv[] = { NV("x-a", big), NV("x-b", big), NV("x-c", big) };

	if (nreq == 0)
		srv_answer(s, sid, "200", nv, 3, "tok", 0);
	else
		srv_ok(s, sid, "ok");
}

static void h_interim_trailers(struct sconn *s, int32_t sid, unsigned nreq)
{
	nghttp2_nv early[] = { NV(":status", "103"), NV("x-user-id", "interim"),
	                       NV("cache-control", "early") };
	nghttp2_nv fin[] = { NV("content-type", "text/plain") };

	(void)nreq;
	nghttp2_submit_headers(s->s, NGHTTP2_FLAG_NONE, sid, NULL, early, 3, NULL);
	srv_answer(s, sid, "401", fin, 1, "nope", 1);
}

/* First connection: answers the first request, then GOAWAY with that one
 * as the last processed, and closes once written. */
static void h_goaway(struct sconn *s, int32_t sid, unsigned nreq)
{
	if (s->idx > 0) {
		srv_ok(s, sid, "ok");
		return;
	}
	if (nreq == 0) {
		s->held[s->n_held++] = sid;
		return;
	}
	if (nreq == 3) {
		int32_t first = s->held[0];

		srv_ok(s, first, "ok");
		nghttp2_submit_goaway(s->s, NGHTTP2_FLAG_NONE, first, NGHTTP2_NO_ERROR, NULL, 0);
		s->close_after_write = 1;
	}
}

/* Every connection: GOAWAY at once, no stream processed. */
static void h_refuse_all(struct sconn *s, int32_t sid, unsigned nreq)
{
	(void)sid;
	(void)nreq;
	nghttp2_submit_goaway(s->s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
	s->close_after_write = 1;
}

/* First connection: headers of the answer, then the connection is gone. */
static void h_cut_mid(struct sconn *s, int32_t sid, unsigned nreq)
{
	nghttp2_nv nv[] = { NV(":status", "200") };

	(void)nreq;
	if (s->idx > 0) {
		srv_ok(s, sid, "ok");
		return;
	}
	nghttp2_submit_headers(s->s, NGHTTP2_FLAG_NONE, sid, NULL, nv, 1, NULL);
	s->close_after_write = 1;
}

/* The second request on the first connection: dropped unanswered. */
static void h_stale(struct sconn *s, int32_t sid, unsigned nreq)
{
	if (s->idx == 0 && nreq == 1) {
		s->drop = 1;
		return;
	}
	srv_ok(s, sid, "ok");
}

static void h_503_then_ok(struct sconn *s, int32_t sid, unsigned nreq)
{
	if (nreq == 0)
		srv_answer(s, sid, "503", NULL, 0, "busy", 0);
	else
		srv_ok(s, sid, "ok");
}

/* ---- cases ---- */

static void case_full(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_full);
	start_one(h, c);
	is_int(n_done, 0, "never completes inside h2c_start");
	run_until(1);
	is_int(got[0].status, 200, "200 over h2c");
	is_mem(got[0].body, got[0].body_len, "tok-abc", 7, "body");
	ok(strcmp(got[0].ct, "text/plain") == 0, "content-type kept (%s)", got[0].ct);
	ok(strcmp(got[0].cc, "max-age=30") == 0, "cache-control kept");
	ok(strcmp(got[0].copy0, "u42") == 0, "copy-header kept (%s)", got[0].copy0);
	is_int(got[0].n_cookies, UPSTREAM_MAX_SET_COOKIE, "set-cookie bounded");
	ok(strcmp(seen_auth, "127.0.0.1:") > 0 && strncmp(seen_auth, "127.0.0.1:", 10) == 0,
	   ":authority from the URL (%s)", seen_auth);
	ok(strcmp(seen_path, "/api/user/token?request_uri=/x") == 0, ":path (%s)", seen_path);
	ok(strcmp(seen_cookie, "s=1") == 0, "caller header sent lower-cased (%s)", seen_cookie);
	ok(seen_host[0] == 0, "no host header in HTTP/2");
	is_int(h2c_conns(h), 1, "connection kept");
	h2c_free(h);
	cfg_put(c);
}

static void case_multiplex(void)
{
	enum { N = 12 };
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h2c *h = h2c_new(loop, c);
	int all = 1;

	srv_reset(h_hold_all);
	want_held = N;
	for (int i = 0; i < N; i++)
		start_one(h, c);
	run_until(N);
	for (int i = 0; i < N; i++)
		all &= got[i].status == 200;
	ok(all && n_done == N, "%d concurrent exchanges answered", N);
	is_int(accepted, 1, "on one TCP connection");
	is_int(max_open, N, "all in flight at once");
	is_int(h2c_conns_opened(h), 1, "client opened one connection");
	h2c_free(h);
	cfg_put(c);
}

static void case_stream_limit_queues(void)
{
	const char *x[] = { "--max-upstream-connections", "1" };
	struct cfg *c = mkcfg(x, 2, port);
	struct h2c *h = h2c_new(loop, c);
	int all = 1;

	srv_reset(h_ok);
	srv_max_streams = 2;
	/* the first request opens the connection; the SETTINGS come first */
	start_one(h, c);
	run_until(1);
	for (int i = 0; i < 8; i++)
		start_one(h, c);
	run_until(9);
	for (int i = 0; i < 9; i++)
		all &= got[i].status == 200;
	ok(all && n_done == 9, "requests beyond the stream limit waited and were answered");
	ok(max_open <= 2, "never more streams than SETTINGS_MAX_CONCURRENT_STREAMS (%u)", max_open);
	is_int(accepted, 1, "one connection (max-upstream-connections 1)");
	h2c_free(h);
	cfg_put(c);
}

static void case_timeout_resets_stream(void)
{
	const char *x[] = { "--timeout", "200ms" };
	struct cfg *c = mkcfg(x, 2, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_hang_first);
	start_one(h, c);
	run_until(1);
	is_int(got[0].status, 0, "no answer in time");
	ok(strcmp(got[0].error, "timeout") == 0, "error: timeout (%s)", got[0].error);
	run_for(0.05);
	is_int(rst_seen, 1, "the stream was reset (RST_STREAM)");
	start_one(h, c);
	run_until(2);
	is_int(got[1].status, 200, "the connection still serves");
	is_int(accepted, 1, "same connection");
	h2c_free(h);
	cfg_put(c);
}

static void case_oversize(void)
{
	const char *x[] = { "--max-response-size", "100" };
	struct cfg *c = mkcfg(x, 2, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_long_then_ok);
	start_one(h, c);
	run_until(1);
	is_int(got[0].status, 0, "oversize body: no answer");
	ok(strcmp(got[0].error, "response too large") == 0, "error (%s)", got[0].error);
	is_int(got[0].attempts, 1, "not retried");
	start_one(h, c);
	run_until(2);
	run_for(0.05);
	is_int(rst_seen, 1, "that stream alone was reset");
	is_int(got[1].status, 200, "the next exchange on the same connection works");
	is_int(accepted, 1, "same connection");
	h2c_free(h);
	cfg_put(c);
}

static void case_big_headers(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h2c *h = h2c_new(loop, c);

	memset(big, 'v', BIG_HDR);
	srv_reset(h_big_headers);
	start_one(h, c);
	run_until(1);
	is_int(got[0].status, 0, "header block beyond the bound: no answer");
	ok(strstr(got[0].error, "too large") != NULL, "error (%s)", got[0].error);
	start_one(h, c);
	run_until(2);
	is_int(got[1].status, 200, "the next exchange works");
	h2c_free(h);
	cfg_put(c);
}

static void case_interim_and_trailers(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_interim_trailers);
	start_one(h, c);
	run_until(1);
	is_int(got[0].status, 401, "final status after a 103");
	is_mem(got[0].body, got[0].body_len, "nope", 4, "body before the trailers");
	ok(strcmp(got[0].copy0, "(null)") == 0, "neither the 103's nor the trailer's header "
	   "kept (%s)", got[0].copy0);
	ok(strcmp(got[0].cc, "(null)") == 0, "the 103's cache-control forgotten");
	h2c_free(h);
	cfg_put(c);
}

static void case_goaway(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h2c *h = h2c_new(loop, c);
	int all = 1;
	unsigned stale = 0;

	srv_reset(h_goaway);
	for (int i = 0; i < 4; i++)
		start_one(h, c);
	run_until(4);
	for (int i = 0; i < 4; i++) {
		all &= got[i].status == 200;
		stale += got[i].retries[UPSTREAM_RETRY_STALE];
	}
	ok(all, "streams above GOAWAY's last-stream-id retried elsewhere: all answered");
	is_int(stale, 3, "three streams retried as unprocessed");
	is_int(accepted, 2, "on a second connection");
	h2c_free(h);
	cfg_put(c);
}

static void case_refused_forever_is_bounded(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_refuse_all);
	start_one(h, c);
	run_until(1);
	is_int(got[0].status, 0, "a server refusing every stream: no answer");
	ok(strcmp(got[0].error, "stream refused") == 0, "error (%s)", got[0].error);
	is_int(accepted, 1 + H2C_REFUSED_RETRIES, "bounded: one connection per allowed retry");
	h2c_free(h);
	cfg_put(c);
}

static void case_cut_mid_response(void)
{
	const char *x[] = { "--upstream-retry-on", "connect,reset,timeout" };
	struct cfg *c = mkcfg(x, 2, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_cut_mid);
	start_one(h, c);
	run_until(1);
	is_int(got[0].status, 0, "connection lost after the headers: no answer");
	ok(strstr(got[0].error, "mid-response") != NULL, "error (%s)", got[0].error);
	is_int(got[0].attempts, 1, "never retried once a byte came");
	h2c_free(h);
	cfg_put(c);
}

static void case_stale_retry(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_stale);
	start_one(h, c);
	run_until(1);
	start_one(h, c);
	run_until(2);
	is_int(got[1].status, 200, "reused connection closed before any answer: retried");
	is_int(got[1].retries[UPSTREAM_RETRY_STALE], 1, "counted as stale");
	is_int(accepted, 2, "on a new connection");
	h2c_free(h);
	cfg_put(c);
}

static void case_not_h2c(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_ok);
	raw_greeting = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
	start_one(h, c);
	run_until(1);
	is_int(got[0].status, 0, "an HTTP/1.1-only server: no answer");
	ok(strstr(got[0].error, "does not speak h2c") != NULL, "clear error (%s)", got[0].error);
	is_int(got[0].attempts, 1, "not retried");
	h2c_free(h);
	cfg_put(c);
}

static void case_refused(void)
{
	struct cfg *c;
	struct h2c *h;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);

	/* a port bound but not listening: connections are refused */
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &alen);
	c = mkcfg(NULL, 0, ntohs(a.sin_port));
	h = h2c_new(loop, c);
	srv_reset(h_ok);
	start_one(h, c);
	run_until(1);
	is_int(got[0].status, 0, "refused: no answer");
	ok(strcmp(got[0].error, "connection refused") == 0, "error (%s)", got[0].error);
	is_int(got[0].attempts, 2, "one retry on connect failure (the default)");
	h2c_free(h);
	cfg_put(c);
	close(fd);
}

static void case_status_retry(void)
{
	const char *x[] = { "--upstream-retry-on", "503", "--upstream-retry-backoff", "0" };
	struct cfg *c = mkcfg(x, 4, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_503_then_ok);
	start_one(h, c);
	run_until(1);
	is_int(got[0].status, 200, "503 retried (upstream-retry-on 503)");
	is_int(got[0].attempts, 2, "two attempts");
	is_int(accepted, 1, "on the same connection");
	h2c_free(h);
	cfg_put(c);
}

static void case_idle_ping_close(void)
{
	const char *x[] = { "--keepalive-idle-timeout", "200ms" };
	struct cfg *c = mkcfg(x, 2, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_ok);
	start_one(h, c);
	run_until(1);
	is_int(h2c_conns(h), 1, "kept after the exchange");
	run_for(0.4);
	ok(pings_seen >= 1, "the idle connection was PINGed (%u)", pings_seen);
	is_int(h2c_conns(h), 0, "and closed after keepalive-idle-timeout");
	start_one(h, c);
	run_until(2);
	is_int(got[1].status, 200, "a new connection afterwards");
	h2c_free(h);
	cfg_put(c);
}

static void case_abort(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h2c *h = h2c_new(loop, c);

	srv_reset(h_hang_first);
	start_one(h, c);
	run_for(0.05);
	is_int(h2c_pending(h), 1, "one running");
	h2c_abort_all(h);
	is_int(n_done, 1, "abort completes it");
	ok(strcmp(got[0].error, "aborted") == 0, "error aborted (%s)", got[0].error);
	is_int(h2c_pending(h), 0, "nothing pending");
	h2c_free(h);
	cfg_put(c);
}

int main(void)
{
	loop = ev_default_loop(0);
	ev_init(&limit, limit_cb);
	ev_init(&pause_timer, pause_cb);
	srv_start();
	case_full();
	case_multiplex();
	case_stream_limit_queues();
	case_timeout_resets_stream();
	case_oversize();
	case_big_headers();
	case_interim_and_trailers();
	case_goaway();
	case_refused_forever_is_bounded();
	case_cut_mid_response();
	case_stale_retry();
	case_not_h2c();
	case_refused();
	case_status_retry();
	case_idle_ping_close();
	case_abort();
	srv_reset(h_ok);
	close(lfd);
	nghttp2_session_callbacks_del(scbs);
	nghttp2_option_del(sopt);
	return done_testing();
}
