/*
 * test_h1c.c: the native HTTP/1.1 client against a scripted loopback server
 * running on the same libev loop (127.0.0.1, a free port from the kernel).
 *
 * Each case sets a handler that, for the <n>-th request on the <k>-th
 * accepted connection, says what to send back and what to do next (keep the
 * connection, close after, close without answering, hang). The tests check
 * the response fields, the request bytes, how many connections were opened,
 * the attempts and the errors: every guarantee of the libcurl path, kept.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <ev.h>

#include "cfg.h"
#include "h1c.h"
#include "tap.h"
#include "upstream.h"

#define SRV_MAX_CONNS 16
#define SRV_BUF 65536
#define MAX_DONE 16
/* Safety net for a broken client: no case runs longer than this. */
#define CASE_LIMIT_S 5.0

enum srv_act {
	SRV_KEEP = 0,           /* answer, keep the connection */
	SRV_CLOSE,              /* answer, then close */
	SRV_DROP,               /* close without answering */
	SRV_HANG,               /* never answer */
	SRV_ACT_ENTRIES
};

/* What to answer to request <nreq> (from 0) on connection <nconn> (from 0). */
typedef enum srv_act (*srv_fn)(unsigned nconn, unsigned nreq, const char **out, size_t *outlen);

struct srv_conn {
	ev_io io;
	int fd;
	unsigned idx, nreq;
	size_t len;
	char buf[SRV_BUF];
};

static struct ev_loop *loop;
static int lfd;
static unsigned short port;
static ev_io lio;
static srv_fn handler;
static unsigned accepted;
static struct srv_conn *sconns[SRV_MAX_CONNS];
static char last_req[SRV_BUF];
static size_t last_req_len;

/* Completions recorded by the callback. */
struct got {
	long status;
	char error[64];
	char body[SRV_BUF];
	size_t body_len;
	int has_body;
	char ct[128], loc[128], www[128], cc[128], copy0[1100];
	char cookies[UPSTREAM_MAX_SET_COOKIE][64];
	unsigned n_cookies, attempts;
	unsigned retries[UPSTREAM_RETRY_ENTRIES];
};
static struct got got[MAX_DONE];
static unsigned n_done, n_want;
static ev_timer limit, pause_timer;

static void srv_close(struct srv_conn *s)
{
	ev_io_stop(loop, &s->io);
	close(s->fd);
	sconns[s->idx] = NULL;
	free(s);
}

static void srv_read_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct srv_conn *s = (struct srv_conn *)w;
	ssize_t n;
	char *end;

	(void)l;
	(void)revents;
	n = read(s->fd, s->buf + s->len, sizeof(s->buf) - 1 - s->len);
	if (n <= 0) {
		srv_close(s);
		return;
	}
	s->len += (size_t)n;
	s->buf[s->len] = 0;
	while ((end = strstr(s->buf, "\r\n\r\n"))) {
		size_t rl = (size_t)(end + 4 - s->buf), outlen = 0;
		const char *out = NULL;
		enum srv_act a;

		memcpy(last_req, s->buf, rl);
		last_req_len = rl;
		last_req[rl] = 0;
		memmove(s->buf, s->buf + rl, s->len - rl);
		s->len -= rl;
		s->buf[s->len] = 0;
		a = handler(s->idx, s->nreq++, &out, &outlen);
		if (a == SRV_HANG)
			return;
		if (a == SRV_DROP) {
			srv_close(s);
			return;
		}
		if (outlen && write(s->fd, out, outlen) != (ssize_t)outlen)
			diag("short write in the test server");
		if (a == SRV_CLOSE) {
			srv_close(s);
			return;
		}
	}
}

static void srv_accept_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct srv_conn *s;
	int fd;

	(void)l;
	(void)w;
	(void)revents;
	fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (accepted >= SRV_MAX_CONNS) {
		close(fd);
		return;
	}
	s = calloc(1, sizeof(*s));
	s->fd = fd;
	s->idx = accepted++;
	sconns[s->idx] = s;
	ev_io_init(&s->io, srv_read_cb, fd, EV_READ);
	ev_io_start(loop, &s->io);
}

static void srv_reset(srv_fn fn)
{
	for (unsigned i = 0; i < SRV_MAX_CONNS; i++)
		if (sconns[i])
			srv_close(sconns[i]);
	accepted = 0;
	handler = fn;
	last_req_len = 0;
	last_req[0] = 0;
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
}

static void cp(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src ? src : "(null)");
}

static void done_cb(void *arg, const struct upstream_response *r)
{
	struct got *g = &got[n_done < MAX_DONE ? n_done : MAX_DONE - 1];

	(void)arg;
	memset(g, 0, sizeof(*g));
	g->status = r->status;
	cp(g->error, sizeof(g->error), r->error);
	g->has_body = r->body != NULL;
	if (r->body && r->body_len < sizeof(g->body)) {
		memcpy(g->body, r->body, r->body_len);
		g->body_len = r->body_len;
	}
	cp(g->ct, sizeof(g->ct), r->content_type);
	cp(g->loc, sizeof(g->loc), r->location);
	cp(g->www, sizeof(g->www), r->www_authenticate);
	cp(g->cc, sizeof(g->cc), r->cache_control);
	cp(g->copy0, sizeof(g->copy0), r->n_copy ? r->copy[0] : NULL);
	g->n_cookies = r->n_set_cookie;
	for (unsigned i = 0; i < r->n_set_cookie; i++)
		cp(g->cookies[i], sizeof(g->cookies[i]), r->set_cookie[i]);
	g->attempts = r->attempts;
	memcpy(g->retries, r->retries, sizeof(g->retries));
	n_done++;
	if (n_done >= n_want)
		ev_break(loop, EVBREAK_ALL);
}

static void limit_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	diag("case time limit reached");
	ev_break(l, EVBREAK_ALL);
}

/* Runs the loop until <want> completions (or the safety limit). */
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
	(void)w;
	(void)revents;
	ev_break(l, EVBREAK_ALL);
}

/* Runs the loop for <s> seconds (lets idle closes be seen). */
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

/* One request through a fresh client; returns it for more. */
static struct h1c *start_one(struct h1c *h, const struct cfg *c, const char *uri)
{
	static const char *hdrs[] = { "X-Session: abc", "Cookie: s=1" };
	char url[256];

	snprintf(url, sizeof(url), "%s?request_uri=%s", c->user_service_url, uri);
	if (h1c_start(h, c, url, hdrs, 2, done_cb, NULL) != 0)
		diag("h1c_start failed");
	return h;
}

/* ---- handlers ---- */

static const char full_answer[] =
	"HTTP/1.1 200 OK\r\n"
	"Content-Type: text/plain\r\n"
	"Location: /next \r\n"
	"WWW-Authenticate: Bearer realm=\"x\"\r\n"
	"Cache-Control: max-age=30\r\n"
	"X-User-Id: u42\r\n"
	"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nSet-Cookie: c=3\r\nSet-Cookie: d=4\r\nSet-Cookie: e=5\r\n"
	"Content-Length: 7\r\n"
	"\r\n"
	"tok-abc";

static enum srv_act h_full(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	*out = full_answer;
	*len = sizeof(full_answer) - 1;
	return SRV_KEEP;
}

#define ANSWER(s) do { *out = (s); *len = sizeof(s) - 1; } while (0)

static enum srv_act h_ok(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	return SRV_KEEP;
}

static enum srv_act h_chunked(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	       "3\r\ntok\r\n4\r\n-abc\r\n0\r\n\r\n");
	return SRV_KEEP;
}

static enum srv_act h_continue(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.1 100 Continue\r\nX-User-Id: interim\r\n\r\n"
	       "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
	       "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope");
	return SRV_KEEP;
}

static enum srv_act h_http10(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-eof");
	return SRV_CLOSE;
}

static enum srv_act h_conn_close(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
	return SRV_KEEP;   /* the client must close it, not us */
}

static enum srv_act h_garbage(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("SSH-2.0-OpenSSH_9.2\r\n\r\n");
	return SRV_CLOSE;
}

static enum srv_act h_truncated(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ntok-short");
	return SRV_CLOSE;
}

static enum srv_act h_big_cl(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
	return SRV_KEEP;
}

static char big_chunked[8192];

static enum srv_act h_big_chunked(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	*out = big_chunked;
	*len = strlen(big_chunked);
	return SRV_KEEP;
}

static enum srv_act h_redirect(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k;
	if (n > 0)
		diag("the redirect was followed");
	ANSWER("HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n");
	return SRV_KEEP;
}

/* The second request on the first connection is dropped (the server
 * closed its idle connection just as the client reused it). */
static enum srv_act h_stale(unsigned k, unsigned n, const char **out, size_t *len)
{
	if (k == 0 && n == 1)
		return SRV_DROP;
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	return SRV_KEEP;
}

/* Every request after the first is dropped. */
static enum srv_act h_stale_always(unsigned k, unsigned n, const char **out, size_t *len)
{
	if (k > 0 || n > 0)
		return SRV_DROP;
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	return SRV_KEEP;
}

/* The second request on the first connection gets half an answer. */
static enum srv_act h_stale_partial(unsigned k, unsigned n, const char **out, size_t *len)
{
	if (k == 0 && n == 1) {
		ANSWER("HTTP/1.1 200 OK\r\nContent-Le");
		return SRV_CLOSE;
	}
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	return SRV_KEEP;
}

static enum srv_act h_hang(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n; (void)out; (void)len;
	return SRV_HANG;
}

static enum srv_act h_503_then_ok(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k;
	if (k == 0 && n == 0) {
		ANSWER("HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy");
		return SRV_KEEP;
	}
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	return SRV_KEEP;
}

static enum srv_act h_hang_first_conn(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)n;
	if (k == 0)
		return SRV_HANG;
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	return SRV_KEEP;
}

static enum srv_act h_te_and_cl(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
	       "3\r\nabc\r\n0\r\n\r\n");
	return SRV_KEEP;
}

static enum srv_act h_dup_cl(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc");
	return SRV_KEEP;
}

/* An answer followed by the start of another, unasked for. */
static enum srv_act h_extra(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	ANSWER("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n");
	return SRV_KEEP;
}

static char long_answer[2048];

/* A copied header longer than the client's inline value buffer, sent in
 * two writes so the value arrives in two pieces. */
static enum srv_act h_long_value(unsigned k, unsigned n, const char **out, size_t *len)
{
	size_t half = strlen(long_answer) / 2;

	(void)k; (void)n;
	if (write(sconns[k]->fd, long_answer, half) != (ssize_t)half)
		diag("short write in the test server");
	*out = long_answer + half;
	*len = strlen(long_answer) - half;
	return SRV_KEEP;
}

/* A header block that never ends: 100 lines of 1,000 bytes (over the
 * 80 KiB bound), the connection kept open. */
static char endless_headers[120 * 1024];

static enum srv_act h_endless_headers(unsigned k, unsigned n, const char **out, size_t *len)
{
	(void)k; (void)n;
	*out = endless_headers;
	*len = strlen(endless_headers);
	return SRV_KEEP;
}

/* A chunked body of three 600-byte chunks ('a', 'b', 'c'): it outgrows the
 * request's own body bytes; then, on the same connection, a bare answer. */
static char grow_answer[2400];

static enum srv_act h_grow_then_bare(unsigned k, unsigned n, const char **out, size_t *len)
{
	static const char bare[] = "HTTP/1.1 204 No Content\r\n\r\n";

	(void)k;
	if (n == 0) {
		*out = grow_answer;
		*len = strlen(grow_answer);
	} else {
		*out = bare;
		*len = sizeof(bare) - 1;
	}
	return SRV_KEEP;
}

/* ---- cases ---- */

static void t_fields(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h1c *h = h1c_new(loop, c);

	srv_reset(h_full);
	n_done = 0;
	start_one(h, c, "/x");
	run_until(1);
	is_int(n_done, 1, "fields: one completion");
	is_int(got[0].status, 200, "fields: status 200");
	is_mem(got[0].body, got[0].body_len, "tok-abc", 7, "fields: body");
	ok(strcmp(got[0].ct, "text/plain") == 0, "fields: Content-Type");
	ok(strcmp(got[0].loc, "/next") == 0, "fields: Location, trailing space trimmed (%s)", got[0].loc);
	ok(strcmp(got[0].www, "Bearer realm=\"x\"") == 0, "fields: WWW-Authenticate");
	ok(strcmp(got[0].cc, "max-age=30") == 0, "fields: Cache-Control");
	ok(strcmp(got[0].copy0, "u42") == 0, "fields: copy-header X-User-Id");
	is_int(got[0].n_cookies, 4, "fields: 4 Set-Cookie kept of 5");
	ok(strcmp(got[0].cookies[0], "a=1") == 0 && strcmp(got[0].cookies[3], "d=4") == 0,
	   "fields: Set-Cookie in order");
	ok(strncmp(last_req, "GET /api/user/token?request_uri=/x HTTP/1.1\r\n", 45) == 0,
	   "request: request line");
	ok(strstr(last_req, "\r\nHost: 127.0.0.1:") != NULL, "request: Host");
	ok(strstr(last_req, "\r\nX-Session: abc\r\nCookie: s=1\r\n\r\n") != NULL,
	   "request: caller's headers, then the end");
	ok(strstr(last_req, "Proxy") == NULL && strstr(last_req, "Expect") == NULL,
	   "request: no proxy or Expect header");
	is_int(got[0].attempts, 1, "fields: one attempt");
	ok(strstr(last_req, "\r\nUser-Agent: spoa-auth\r\nAccept: */*\r\n") != NULL,
	   "request: User-Agent and Accept");

	/* A forwarded Host replaces ours: one Host header, never two. */
	{
		static const char *hdrs[] = { "Host: users.example" };
		char url[256];

		snprintf(url, sizeof(url), "%s?request_uri=/h", c->user_service_url);
		h1c_start(h, c, url, hdrs, 1, done_cb, NULL);
		run_until(2);
		ok(strstr(last_req, "\r\nHost: users.example\r\n") != NULL &&
		   strstr(last_req, "Host: 127.0.0.1") == NULL, "request: the caller's Host replaces ours");
	}
	h1c_free(h);
	cfg_put(c);
}

static void t_keepalive(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h1c *h = h1c_new(loop, c);

	srv_reset(h_ok);
	n_done = 0;
	for (unsigned i = 0; i < 5; i++) {
		start_one(h, c, "/k");
		run_until(i + 1);
	}
	is_int(n_done, 5, "keep-alive: 5 answers");
	is_int(accepted, 1, "keep-alive: one connection for 5 sequential requests");
	is_int(h1c_conns_opened(h), 1, "keep-alive: client opened one");
	h1c_free(h);
	cfg_put(c);
}

static void t_simple(const char *name, srv_fn fn, long status, const char *body,
                     const char *err)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h1c *h = h1c_new(loop, c);

	srv_reset(fn);
	n_done = 0;
	start_one(h, c, "/s");
	run_until(1);
	is_int(n_done, 1, name);
	if (!is_int(got[0].status, status, name))
		diag("  error: %s", got[0].error);
	if (body)
		is_mem(got[0].body, got[0].body_len, body, strlen(body), name);
	else
		ok(!got[0].has_body, "%s: no body", name);
	if (err)
		ok(strcmp(got[0].error, err) == 0, "%s: error '%s' (got '%s')", name, err, got[0].error);
	if (status == 0)
		ok(strcmp(got[0].ct, "(null)") == 0, "%s: no header leaks from a failed answer", name);
	h1c_free(h);
	cfg_put(c);
}

static void t_interim(void)
{
	t_simple("1xx: the final answer counts", h_continue, 401, "nope", NULL);
	ok(strcmp(got[0].copy0, "(null)") == 0, "1xx: interim headers forgotten");
}

static void t_conn_close(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h1c *h = h1c_new(loop, c);

	srv_reset(h_conn_close);
	n_done = 0;
	start_one(h, c, "/c");
	run_until(1);
	is_int(h1c_conns(h), 0, "Connection: close: not kept");
	start_one(h, c, "/c");
	run_until(2);
	is_int(got[1].status, 200, "Connection: close: next request answered");
	is_int(accepted, 2, "Connection: close: a new connection for the next");
	h1c_free(h);
	cfg_put(c);
}

static void t_idle_close(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h1c *h = h1c_new(loop, c);

	srv_reset(h_ok);
	n_done = 0;
	start_one(h, c, "/i");
	run_until(1);
	is_int(h1c_conns(h), 1, "idle close: kept after the answer");
	srv_close(sconns[0]);
	run_for(0.05);
	is_int(h1c_conns(h), 0, "idle close: seen and dropped while idle");
	start_one(h, c, "/i");
	run_until(2);
	is_int(got[1].status, 200, "idle close: next request on a new connection");
	is_int(got[1].attempts, 1, "idle close: without a retry");
	h1c_free(h);
	cfg_put(c);
}

/* An idle connection older than keepalive-idle-timeout is not reused, even
 * if the server never closed it (a middlebox may have dropped it). */
static void t_idle_age(void)
{
	const char *e[] = { "--keepalive-idle-timeout", "100ms" };
	struct cfg *c = mkcfg(e, 2, port);
	struct h1c *h = h1c_new(loop, c);

	srv_reset(h_ok);
	n_done = 0;
	start_one(h, c, "/a");
	run_until(1);
	start_one(h, c, "/a");
	run_until(2);
	is_int(accepted, 1, "idle age: reused while young");
	run_for(0.25);
	start_one(h, c, "/a");
	run_until(3);
	is_int(got[2].status, 200, "idle age: answered");
	is_int(got[2].attempts, 1, "idle age: without a retry");
	is_int(accepted, 2, "idle age: a new connection instead of the old one");
	h1c_free(h);
	cfg_put(c);
}

/* A reload to another user service: idle connections to the old one go. */
static void t_reload(void)
{
	struct cfg *c = mkcfg(NULL, 0, port), *c2 = mkcfg(NULL, 0, (unsigned short)(port + 1));
	struct h1c *h = h1c_new(loop, c);

	srv_reset(h_ok);
	n_done = 0;
	start_one(h, c, "/r");
	run_until(1);
	is_int(h1c_conns(h), 1, "reload: one idle connection");
	h1c_set_cfg(h, c);
	is_int(h1c_conns(h), 1, "reload: same address: kept");
	h1c_set_cfg(h, c2);
	is_int(h1c_conns(h), 0, "reload: another address: closed");
	h1c_free(h);
	cfg_put(c2);
	cfg_put(c);
}

static void t_stale(void)
{
	struct cfg *c = mkcfg(NULL, 0, port);
	struct h1c *h = h1c_new(loop, c);

	srv_reset(h_stale);
	n_done = 0;
	start_one(h, c, "/a");
	run_until(1);
	start_one(h, c, "/b");
	run_until(2);
	is_int(got[1].status, 200, "stale: reused connection dropped, retried once: 200");
	is_int(got[1].attempts, 2, "stale: two attempts");
	is_int(got[1].retries[UPSTREAM_RETRY_STALE], 1, "stale: counted as stale");
	is_int(accepted, 2, "stale: one new connection");
	h1c_free(h);
	cfg_put(c);

	c = mkcfg(NULL, 0, port);
	h = h1c_new(loop, c);
	srv_reset(h_stale_always);
	n_done = 0;
	start_one(h, c, "/a");
	run_until(1);
	start_one(h, c, "/b");
	run_until(2);
	is_int(got[1].status, 0, "stale: dropped again: error");
	is_int(accepted, 2, "stale: retried once, never more");
	h1c_free(h);
	cfg_put(c);

	c = mkcfg(NULL, 0, port);
	h = h1c_new(loop, c);
	srv_reset(h_stale_partial);
	n_done = 0;
	start_one(h, c, "/a");
	run_until(1);
	start_one(h, c, "/b");
	run_until(2);
	is_int(got[1].status, 0, "stale: a byte arrived then closed: error");
	is_int(accepted, 1, "stale: never retried after a byte of a response");
	h1c_free(h);
	cfg_put(c);
}

static void t_queue(void)
{
	const char *extra[] = { "--max-upstream-connections", "2" };
	struct cfg *c = mkcfg(extra, 2, port);
	struct h1c *h = h1c_new(loop, c);

	srv_reset(h_ok);
	n_done = 0;
	for (unsigned i = 0; i < 8; i++)
		start_one(h, c, "/q");
	ok(h1c_conns(h) <= 2, "queue: at most the cap opened at once (%u)", h1c_conns(h));
	run_until(8);
	is_int(n_done, 8, "queue: all 8 answered");
	for (unsigned i = 0; i < 8; i++)
		if (got[i].status != 200)
			diag("queue: answer %u: %ld %s", i, got[i].status, got[i].error);
	ok(accepted <= 2, "queue: %u connections for 8 requests under a cap of 2", accepted);
	h1c_free(h);
	cfg_put(c);

	/* Queued behind a hung request: they time out within their timeout. */
	{
		const char *e2[] = { "--max-upstream-connections", "1", "--timeout", "200ms" };

		c = mkcfg(e2, 4, port);
		h = h1c_new(loop, c);
		srv_reset(h_hang);
		n_done = 0;
		for (unsigned i = 0; i < 3; i++)
			start_one(h, c, "/q");
		run_for(0.1);
		is_int(accepted, 1, "queue: behind a hung request, no connection beyond the cap");
		is_int(h1c_pending(h), 3, "queue: the others wait");
		run_until(3);
		is_int(n_done, 3, "queue: all complete at their timeout");
		ok(got[0].status == 0 && got[1].status == 0 && got[2].status == 0,
		   "queue: with status 0");
		h1c_free(h);
		cfg_put(c);
	}
}

static void t_timeouts(void)
{
	const char *e1[] = { "--timeout", "150ms" };
	struct cfg *c = mkcfg(e1, 2, port);
	struct h1c *h = h1c_new(loop, c);
	ev_tstamp t0;

	srv_reset(h_hang);
	n_done = 0;
	ev_now_update(loop);
	t0 = ev_now(loop);
	start_one(h, c, "/t");
	run_until(1);
	ev_now_update(loop);
	is_int(got[0].status, 0, "timeout: no answer: status 0");
	ok(strcmp(got[0].error, "timeout") == 0, "timeout: error 'timeout' (%s)", got[0].error);
	ok(ev_now(loop) - t0 < 1.0, "timeout: ended well before the safety limit");
	h1c_free(h);
	cfg_put(c);

	/* Connect timeout: a listener whose backlog is full never completes
	 * the handshake. */
	{
		struct sockaddr_in a;
		socklen_t alen = sizeof(a);
		int bl = socket(AF_INET, SOCK_STREAM, 0), fill[8], nfill = 0;
		const char *e2[] = { "--timeout", "2s", "--connect-timeout", "100ms",
		                     "--upstream-retries", "0" };

		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		bind(bl, (struct sockaddr *)&a, sizeof(a));
		listen(bl, 0);
		getsockname(bl, (struct sockaddr *)&a, &alen);
		for (int i = 0; i < 8; i++) {
			fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			connect(fill[i], (struct sockaddr *)&a, sizeof(a));
			nfill++;
		}
		c = mkcfg(e2, 6, ntohs(a.sin_port));
		h = h1c_new(loop, c);
		n_done = 0;
		ev_now_update(loop);
		t0 = ev_now(loop);
		start_one(h, c, "/t");
		run_until(1);
		ev_now_update(loop);
		is_int(got[0].status, 0, "connect timeout: status 0");
		ok(strcmp(got[0].error, "connect timeout") == 0, "connect timeout: error (%s)",
		   got[0].error);
		ok(ev_now(loop) - t0 < 1.5, "connect timeout: before the exchange timeout");
		h1c_free(h);
		cfg_put(c);
		for (int i = 0; i < nfill; i++)
			close(fill[i]);
		close(bl);
	}
}

static void t_retries(void)
{
	/* A port nobody listens on: refused. Default: one retry on connect. */
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	unsigned short dead;
	struct cfg *c;
	struct h1c *h;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(s, (struct sockaddr *)&a, sizeof(a));
	getsockname(s, (struct sockaddr *)&a, &alen);
	dead = ntohs(a.sin_port);
	close(s);

	c = mkcfg(NULL, 0, dead);
	h = h1c_new(loop, c);
	n_done = 0;
	start_one(h, c, "/r");
	run_until(1);
	is_int(got[0].status, 0, "retry: refused: error");
	is_int(got[0].attempts, 2, "retry: default: one retry on connect failure");
	is_int(got[0].retries[UPSTREAM_RETRY_CONNECT], 1, "retry: counted as connect");
	h1c_free(h);
	cfg_put(c);

	{
		const char *e[] = { "--upstream-retries", "0" };

		c = mkcfg(e, 2, dead);
		h = h1c_new(loop, c);
		n_done = 0;
		start_one(h, c, "/r");
		run_until(1);
		is_int(got[0].attempts, 1, "retry: upstream-retries 0: one attempt");
		h1c_free(h);
		cfg_put(c);
	}

	/* 503 is not retried by default... */
	c = mkcfg(NULL, 0, port);
	h = h1c_new(loop, c);
	srv_reset(h_503_then_ok);
	n_done = 0;
	start_one(h, c, "/r");
	run_until(1);
	is_int(got[0].status, 503, "retry: 503 returned as is by default");
	h1c_free(h);
	cfg_put(c);
	/* ...but is with upstream-retry-on 503. */
	{
		const char *e[] = { "--upstream-retry-on", "connect,503" };

		c = mkcfg(e, 2, port);
		h = h1c_new(loop, c);
		srv_reset(h_503_then_ok);
		n_done = 0;
		start_one(h, c, "/r");
		run_until(1);
		is_int(got[0].status, 200, "retry: 503 retried with retry-on 503");
		is_mem(got[0].body, got[0].body_len, "ok", 2, "retry: the retried answer's body");
		is_int(got[0].retries[UPSTREAM_RETRY_STATUS], 1, "retry: counted as status");
		is_int(accepted, 1, "retry: the 503's kept-alive connection reused");
		h1c_free(h);
		cfg_put(c);
	}
	/* Attempt timeout: the first connection hangs, the second answers. */
	{
		const char *e[] = { "--upstream-retry-on", "timeout", "--upstream-attempt-timeout",
		                    "100ms", "--timeout", "1s" };

		c = mkcfg(e, 6, port);
		h = h1c_new(loop, c);
		srv_reset(h_hang_first_conn);
		n_done = 0;
		start_one(h, c, "/r");
		run_until(1);
		is_int(got[0].status, 200, "retry: attempt timeout then 200");
		is_int(got[0].retries[UPSTREAM_RETRY_TIMEOUT], 1, "retry: counted as timeout");
		h1c_free(h);
		cfg_put(c);
	}
	/* Never past the exchange timeout, whatever the retries. */
	{
		const char *e[] = { "--upstream-retry-on", "timeout", "--upstream-attempt-timeout",
		                    "100ms", "--timeout", "250ms", "--upstream-retries", "10" };
		ev_tstamp t0;

		c = mkcfg(e, 8, port);
		h = h1c_new(loop, c);
		srv_reset(h_hang);
		n_done = 0;
		ev_now_update(loop);
		t0 = ev_now(loop);
		start_one(h, c, "/r");
		run_until(1);
		ev_now_update(loop);
		is_int(got[0].status, 0, "retry: budget: error");
		ok(got[0].attempts >= 2 && got[0].attempts <= 3, "retry: budget: %u attempts in 250ms",
		   got[0].attempts);
		ok(ev_now(loop) - t0 < 0.6, "retry: budget: ended at the exchange timeout (%.3fs)",
		   ev_now(loop) - t0);
		h1c_free(h);
		cfg_put(c);
	}
}

static void t_retry_delay(void)
{
	long d, lo = 1000000, hi = -1;

	is_int(h1c_retry_delay(H1C_FAIL_CONNECT, 0, 1, 1, H1C_RETRY_CONNECT, 10, 500, 0), 5,
	       "delay: base/2 at rnd 0");
	for (uint32_t r = 0; r < 1000; r++) {
		d = h1c_retry_delay(H1C_FAIL_CONNECT, 0, 2, 3, H1C_RETRY_CONNECT, 10, 500, r * 2654435761u);
		if (d < lo)
			lo = d;
		if (d > hi)
			hi = d;
	}
	ok(lo >= 10 && hi <= 20 && hi > lo, "delay: second retry jittered in [10, 20] (%ld..%ld)", lo, hi);
	is_int(h1c_retry_delay(H1C_FAIL_CONNECT, 0, 2, 1, H1C_RETRY_CONNECT, 10, 500, 0), -1,
	       "delay: no attempts left");
	is_int(h1c_retry_delay(H1C_FAIL_RESET, 0, 1, 1, H1C_RETRY_CONNECT, 10, 500, 0), -1,
	       "delay: reset not in retry-on");
	is_int(h1c_retry_delay(H1C_FAIL_OTHER, 0, 1, 5, 0xff, 10, 500, 0), -1,
	       "delay: a failure after a byte is never retried");
	is_int(h1c_retry_delay(H1C_FAIL_NONE, 500, 1, 5, 0xff, 10, 500, 0), -1,
	       "delay: 500 is never retried");
	ok(h1c_retry_delay(H1C_FAIL_NONE, 504, 1, 5, H1C_RETRY_504, 10, 500, 0) >= 0,
	   "delay: 504 with retry-on 504");
	is_int(h1c_retry_delay(H1C_FAIL_CONNECT, 0, 1, 1, H1C_RETRY_CONNECT, 100, 40, 0), -1,
	       "delay: not when the backoff uses up the budget");
}

static void t_url(void)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char *host = NULL, why[256];
	size_t off = 0;

	is_int(h1c_url_parse("http://127.0.0.1:8101/api/user/token", 0, &ss, &len, &host, &off,
	                     why, sizeof(why)), 0, "url: v4 literal");
	ok(host && strcmp(host, "127.0.0.1:8101") == 0 && off == 21, "url: host and path offset");
	free(host); host = NULL;
	is_int(h1c_url_parse("http://[::1]/x", 0, &ss, &len, &host, &off, why, sizeof(why)), 0,
	       "url: v6 literal, default port");
	ok(ss.ss_family == AF_INET6 && ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == 80,
	   "url: port 80");
	free(host); host = NULL;
	is_int(h1c_url_parse("http://127.0.0.1?a=b", 0, &ss, &len, &host, &off, why, sizeof(why)), 0,
	       "url: no path");
	is_int(off, 16, "url: path offset at the query");
	free(host); host = NULL;
	is_int(h1c_url_parse("https://127.0.0.1/", 0, &ss, &len, &host, &off, why, sizeof(why)), 1,
	       "url: https is libcurl's");
	is_int(h1c_url_parse("http://users.example/", 0, &ss, &len, &host, &off, why, sizeof(why)), 1,
	       "url: a name without resolve is libcurl's");
	is_int(h1c_url_parse("http://u:p@127.0.0.1/", 0, &ss, &len, &host, &off, why, sizeof(why)), 1,
	       "url: userinfo is libcurl's");
	is_int(h1c_url_parse("http://127.0.0.1:0/", 0, &ss, &len, &host, &off, why, sizeof(why)), -1,
	       "url: port 0 refused");
	is_int(h1c_url_parse("http://127.0.0.1:70000/", 0, &ss, &len, &host, &off, why, sizeof(why)), -1,
	       "url: port 70000 refused");
	is_int(h1c_url_parse("http://[::1/", 0, &ss, &len, &host, &off, why, sizeof(why)), -1,
	       "url: unterminated v6 refused");
	is_int(h1c_url_parse("http://localhost:1/", 1, &ss, &len, &host, &off, why, sizeof(why)), 0,
	       "url: a name resolved when asked");
	free(host); host = NULL;
}

static void t_cfg(void)
{
	char err[512];
	char *a1[] = { "--upstream-client", "native", "--user-service-url", "https://127.0.0.1/" };
	char *a2[] = { "--upstream-client", "sometimes" };
	char *a3[] = { "--upstream-retry-on", "connect,418" };
	char *a4[] = { "--upstream-client", "curl" };
	struct cfg *c;

	c = cfg_load(NULL, 4, a1, err, sizeof(err));
	ok(!c && strstr(err, "'upstream-client'"), "cfg: native + https refused naming the key (%s)", err);
	cfg_put(c);
	c = cfg_load(NULL, 2, a2, err, sizeof(err));
	ok(!c && strstr(err, "'--upstream-client'"), "cfg: bad upstream-client refused (%s)", err);
	cfg_put(c);
	c = cfg_load(NULL, 2, a3, err, sizeof(err));
	ok(!c && strstr(err, "'--upstream-retry-on'"), "cfg: bad retry-on refused (%s)", err);
	cfg_put(c);
	c = cfg_load(NULL, 0, NULL, err, sizeof(err));
	ok(c && c->upstream_native, "cfg: default auto takes the native client for the default URL");
	ok(c && c->upstream_retries == 1 && c->upstream_retry_on == H1C_RETRY_CONNECT,
	   "cfg: default: one retry, on connect failure only");
	cfg_put(c);
	c = cfg_load(NULL, 2, a4, err, sizeof(err));
	ok(c && !c->upstream_native, "cfg: curl forces libcurl");
	cfg_put(c);
}

int main(void)
{
	int i = 0;
	char *p;

	loop = ev_default_loop(0);
	ev_init(&limit, limit_cb);
	ev_init(&pause_timer, pause_cb);
	srv_start();
	/* 5000 bytes in 50 chunks: over a 4k bound */
	p = big_chunked;
	p += sprintf(p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (i = 0; i < 50; i++) {
		p += sprintf(p, "64\r\n");
		memset(p, 'x', 100);
		p += 100;
		p += sprintf(p, "\r\n");
	}
	sprintf(p, "0\r\n\r\n");

	t_url();
	t_retry_delay();
	t_cfg();
	t_fields();
	t_keepalive();
	t_simple("chunked", h_chunked, 200, "tok-abc", NULL);
	t_interim();
	t_simple("HTTP/1.0 until EOF", h_http10, 200, "until-eof", NULL);
	t_conn_close();
	t_simple("garbage", h_garbage, 0, NULL, "malformed HTTP response");
	t_simple("reset mid-response", h_truncated, 0, NULL, "connection closed mid-response");
	{
		const char *e[] = { "--max-response-size", "4k" };
		struct cfg *c = mkcfg(e, 2, port);
		struct h1c *h = h1c_new(loop, c);
		const char *names[2] = { "size bound: Content-Length", "size bound: chunked" };
		srv_fn fns[2] = { h_big_cl, h_big_chunked };

		for (int k = 0; k < 2; k++) {
			srv_reset(fns[k]);
			n_done = 0;
			start_one(h, c, "/big");
			run_until(1);
			is_int(got[0].status, 0, names[k]);
			ok(strcmp(got[0].error, "response too large") == 0, "%s: error (%s)", names[k],
			   got[0].error);
		}
		h1c_free(h);
		cfg_put(c);
	}
	{
		char v[1001];

		memset(v, 'v', 1000);
		v[1000] = 0;
		snprintf(long_answer, sizeof(long_answer),
		         "HTTP/1.1 200 OK\r\nX-User-Id: %s\r\nContent-Length: 2\r\n\r\nok", v);
		t_simple("long header value", h_long_value, 200, "ok", NULL);
		ok(strlen(got[0].copy0) == 1000 && strspn(got[0].copy0, "v") == 1000,
		   "long header value: kept whole, across two reads");
	}
	{
		char *e = endless_headers;

		e += sprintf(e, "HTTP/1.1 200 OK\r\n");
		for (i = 0; i < 100; i++) {
			e += sprintf(e, "X-Pad-%d: ", i);
			memset(e, 'p', 1000);
			e += 1000;
			e += sprintf(e, "\r\n");
		}
		/* refused at the bound, not at the 1 s timeout: the client reads
		 * no further */
		t_simple("header block over 80 KiB", h_endless_headers, 0, NULL,
		         "response too large");
	}
	{
		/* A request's storage is reused by the next one: a body that grew
		 * out of it must come whole, and nothing of the first answer may
		 * show in the second. */
		struct cfg *c = mkcfg(NULL, 0, port);
		struct h1c *h = h1c_new(loop, c);
		char want[1800], *e = grow_answer;

		e += sprintf(e, "HTTP/1.1 200 OK\r\nContent-Type: text/x-grow\r\n"
		             "X-User-Id: u-grow\r\nTransfer-Encoding: chunked\r\n\r\n");
		for (i = 0; i < 3; i++) {
			e += sprintf(e, "258\r\n");
			memset(e, 'a' + i, 600);
			memset(want + 600 * i, 'a' + i, 600);
			e += 600;
			e += sprintf(e, "\r\n");
		}
		sprintf(e, "0\r\n\r\n");
		srv_reset(h_grow_then_bare);
		n_done = 0;
		start_one(h, c, "/g1");
		run_until(1);
		is_int(got[0].status, 200, "reuse: a 1800-byte chunked body");
		is_mem(got[0].body, got[0].body_len, want, sizeof(want), "reuse: the body whole");
		ok(strcmp(got[0].ct, "text/x-grow") == 0 && strcmp(got[0].copy0, "u-grow") == 0,
		   "reuse: its headers");
		start_one(h, c, "/g2");
		run_until(2);
		is_int(got[1].status, 204, "reuse: the next answer");
		ok(!got[1].has_body && strcmp(got[1].ct, "(null)") == 0 &&
		   strcmp(got[1].copy0, "(null)") == 0, "reuse: nothing of the first one");
		is_int(h1c_conns_opened(h), 1, "reuse: one connection");
		h1c_free(h);
		cfg_put(c);
	}
	t_simple("Transfer-Encoding with Content-Length refused", h_te_and_cl, 0, NULL,
	         "malformed HTTP response");
	t_simple("two Content-Length refused", h_dup_cl, 0, NULL, "malformed HTTP response");
	{
		struct cfg *c = mkcfg(NULL, 0, port);
		struct h1c *h = h1c_new(loop, c);

		srv_reset(h_extra);
		n_done = 0;
		start_one(h, c, "/e");
		run_until(1);
		is_int(got[0].status, 200, "bytes after the answer: the answer counts");
		is_int(h1c_conns(h), 0, "bytes after the answer: the connection is not reused");
		h1c_free(h);
		cfg_put(c);
	}
	t_simple("no redirects", h_redirect, 302, NULL, NULL);
	ok(strcmp(got[0].loc, "/elsewhere") == 0, "no redirects: Location handed over");
	t_idle_close();
	t_reload();
	t_idle_age();
	t_stale();
	t_queue();
	t_timeouts();
	t_retries();
	srv_reset(NULL);
	ev_io_stop(loop, &lio);
	close(lfd);
	return done_testing();
}
