/*
 * upstream.c: libcurl multi on a libev loop, after curl's evhiperfifo example
 * with its known defects fixed:
 *   - timer seconds are timeout_ms / 1000.0 (the example divides integers,
 *     so every sub-second timeout became 0 and the loop spun);
 *   - the socket callback tolerates socketp == NULL on CURL_POLL_REMOVE
 *     (curl >= 8.13 may announce REMOVE for a socket it never added) and
 *     never returns -1 (that would abort every transfer of the multi);
 *   - curl_multi_info_read() is drained after every socket_action, and
 *     requests complete there, outside curl callbacks (no recursive API
 *     calls, CURLM_RECURSIVE_API_CALL).
 * Retries (upstream-retries, upstream-retry-on, upstream-attempt-timeout,
 * upstream-retry-backoff) follow the native clients: the decision is
 * h1c_retry_delay()'s, the backoff an ev_timer on the worker's loop, each
 * attempt's CURLOPT_TIMEOUT_MS the smaller of the attempt timeout and what
 * is left of the exchange timeout, and nothing is retried once a byte of a
 * response arrived (a retryable status excepted: that answer is complete).
 * One struct upstream per worker thread; nothing here is shared between
 * threads. Never logs header values or bodies.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "cfg.h"
#include "h1c.h"
#include "h2c.h"
#include "log.h"
#include "upcurl.h"
#include "upstream.h"

/* Easy handles kept for reuse per worker, configured: the options that come
 * from the cfg are set once per handle (upstream_easy_configure()); a request
 * sets only its URL, header list and data pointers. Connection state lives in
 * the multi's cache. */
#define UPSTREAM_POOL_MAX 64

#define UPSTREAM_MS 1000.0

struct upstream_sock {
	ev_io io;                       /* watches <fd> for curl */
	curl_socket_t fd;
	struct upstream *u;
	struct upstream_sock *prev, *next;
};

struct upstream_req {
	struct upstream *u;             /* owner */
	CURL *easy;                     /* owned; back to the pool when done */
	unsigned gen;                   /* u->gen <easy> was configured for; 0 = not poolable */
	struct curl_slist *hdrs;        /* in this allocation: nodes, then their lines */
	const struct cfg *cfg;          /* borrowed: the caller holds a ref */
	upstream_done_fn done;
	void *arg;
	struct upstream_response resp;  /* owned strings */
	size_t body_cap;
	int oversize;
	int headers_done;               /* the blank line ending the headers was seen */
	int got_bytes;                  /* a response byte reached a callback this attempt */
	int in_multi;                   /* <easy> is in u->multi (not in a backoff) */
	unsigned attempt;               /* policy attempts started, from 1 */
	ev_tstamp deadline;             /* the exchange timeout, on the loop's clock */
	ev_timer backoff;               /* before the next attempt */
	struct timespec start;
	struct upstream_req *prev, *next;
};

struct upstream {
	struct ev_loop *loop;           /* borrowed: the worker's */
	CURLM *multi;                   /* owned */
	ev_timer timer;                 /* curl's single timeout */
	struct upstream_req *reqs;      /* running, owned */
	unsigned n_reqs;
	struct upstream_sock *socks;    /* watched sockets, owned */
	CURL *pool[UPSTREAM_POOL_MAX];
	unsigned n_pool;
	const struct cfg *cfg;          /* borrowed: the worker's current cfg
	                                 * (upstream_set_cfg()); pooled handles are
	                                 * configured for it */
	unsigned gen;                   /* bumped by upstream_set_cfg(); >= 1 */
	unsigned keepalive_max;         /* idle connections to keep (cfg) */
	long maxconnects;               /* CURLMOPT_MAXCONNECTS in force */
	struct h1c *h1;                 /* owned: the native client (cfg->upstream_native) */
	struct h2c *h2;                 /* owned: the native h2c client (native + h2c) */
	uint32_t rnd;                   /* xorshift state for the backoff jitter */
};

static pthread_once_t upstream_once = PTHREAD_ONCE_INIT;
static CURLcode upstream_init_rc;

/* curl_global_init is not thread-safe in older libcurl: run it once, first. */
static void upstream_global_init(void)
{
	upstream_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

uint64_t upstream_elapsed_us(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)(now.tv_sec - t0->tv_sec) * 1000000u +
	       (uint64_t)((now.tv_nsec - t0->tv_nsec) / 1000);
}

/* ---- response capture ---- */

/* Frees <*slot> unless it lies in [<lo>, <hi>) (the caller's own storage),
 * and clears it either way. */
static void upstream_drop(char **slot, const char *lo, const char *hi)
{
	uintptr_t a = (uintptr_t)*slot;

	/* as integers: a heap string and <lo> are different objects */
	if (*slot && !(lo && a >= (uintptr_t)lo && a < (uintptr_t)hi))
		free(*slot);
	*slot = NULL;
}

void upstream_resp_clear_headers_in(struct upstream_response *r, const char *lo, const char *hi)
{
	upstream_drop(&r->content_type, lo, hi);
	upstream_drop(&r->location, lo, hi);
	upstream_drop(&r->www_authenticate, lo, hi);
	upstream_drop(&r->cache_control, lo, hi);
	upstream_drop(&r->auth_scope, lo, hi);
	for (unsigned i = 0; i < r->n_set_cookie; i++)
		upstream_drop(&r->set_cookie[i], lo, hi);
	r->n_set_cookie = 0;
	for (size_t i = 0; i < r->n_copy; i++)
		upstream_drop(&r->copy[i], lo, hi);
}

void upstream_resp_clear_headers(struct upstream_response *r)
{
	upstream_resp_clear_headers_in(r, NULL, NULL);
}

static void upstream_resp_free(struct upstream_response *r)
{
	upstream_resp_clear_headers(r);
	free(r->copy); r->copy = NULL;
	r->n_copy = 0;
	free(r->body); r->body = NULL;
	r->body_len = 0;
}

static size_t upstream_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct upstream_req *q = userdata;
	struct upstream_response *r = &q->resp;
	size_t n = size * nmemb;

	q->got_bytes = 1;
	if (n > q->cfg->max_response_size - r->body_len) {
		/* Returning less than n makes curl fail with CURLE_WRITE_ERROR. */
		q->oversize = 1;
		return 0;
	}
	if (r->body_len + n + 1 > q->body_cap) {
		size_t cap = q->body_cap ? q->body_cap : 1024;
		char *nb;

		while (cap < r->body_len + n + 1)
			cap *= 2;
		if (cap > q->cfg->max_response_size + 1)
			cap = q->cfg->max_response_size + 1;
		nb = realloc(r->body, cap);
		if (!nb)
			return 0;
		r->body = nb;
		q->body_cap = cap;
	}
	memcpy(r->body + r->body_len, ptr, n);
	r->body_len += n;
	r->body[r->body_len] = 0;
	return n;
}

/* Keeps the first value of a header (later duplicates ignored). */
static void upstream_keep(char **slot, const char *v, size_t vlen, upstream_dup_fn dup, void *ctx)
{
	if (*slot)
		return;
	*slot = dup(ctx, v, vlen);   /* on OOM the header is just missing */
}

static char *upstream_strndup(void *ctx, const char *v, size_t vlen)
{
	(void)ctx;
	return strndup(v, vlen);
}

/* <lit> is lowercase (or not a letter) in its first byte: the first byte,
 * folded, rules most names out before strncasecmp() is called. */
static int upstream_name_is(const char *n, size_t nlen, const char *lit, size_t litlen)
{
	return nlen == litlen && nlen && (unsigned char)(n[0] | 0x20) == (unsigned char)(lit[0] | 0x20) &&
	       strncasecmp(n, lit, nlen) == 0;
}

#define UPSTREAM_HDR_IS(lit) upstream_name_is(name, nlen, (lit), sizeof(lit) - 1)

int upstream_resp_wants(const struct upstream_response *r, const struct cfg *cfg,
                        const char *name, size_t nlen)
{
	if (UPSTREAM_HDR_IS("content-type") || UPSTREAM_HDR_IS("location") ||
	    UPSTREAM_HDR_IS("www-authenticate") || UPSTREAM_HDR_IS("cache-control") ||
	    UPSTREAM_HDR_IS("set-cookie") || UPSTREAM_HDR_IS("x-auth-scope"))
		return 1;
	for (size_t i = 0; i < r->n_copy; i++)
		if (upstream_name_is(name, nlen, cfg->copy_headers[i], strlen(cfg->copy_headers[i])))
			return 1;
	return 0;
}

void upstream_resp_header_dup(struct upstream_response *r, const struct cfg *cfg,
                              const char *name, size_t nlen, const char *v, size_t vlen,
                              upstream_dup_fn dup, void *ctx)
{
	if (UPSTREAM_HDR_IS("content-type"))
		upstream_keep(&r->content_type, v, vlen, dup, ctx);
	else if (UPSTREAM_HDR_IS("location"))
		upstream_keep(&r->location, v, vlen, dup, ctx);
	else if (UPSTREAM_HDR_IS("www-authenticate"))
		upstream_keep(&r->www_authenticate, v, vlen, dup, ctx);
	else if (UPSTREAM_HDR_IS("cache-control"))
		upstream_keep(&r->cache_control, v, vlen, dup, ctx);
	else if (UPSTREAM_HDR_IS("x-auth-scope"))
		upstream_keep(&r->auth_scope, v, vlen, dup, ctx);
	else if (UPSTREAM_HDR_IS("set-cookie") && r->n_set_cookie < UPSTREAM_MAX_SET_COOKIE) {
		r->set_cookie[r->n_set_cookie] = dup(ctx, v, vlen);
		if (r->set_cookie[r->n_set_cookie])
			r->n_set_cookie++;
	}
	/* copy-header may also name one of the above: check independently. */
	for (size_t i = 0; i < r->n_copy; i++)
		if (upstream_name_is(name, nlen, cfg->copy_headers[i], strlen(cfg->copy_headers[i])))
			upstream_keep(&r->copy[i], v, vlen, dup, ctx);
}

void upstream_resp_header(struct upstream_response *r, const struct cfg *cfg,
                          const char *name, size_t nlen, const char *v, size_t vlen)
{
	upstream_resp_header_dup(r, cfg, name, nlen, v, vlen, upstream_strndup, NULL);
}

#undef UPSTREAM_HDR_IS

static size_t upstream_header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct upstream_req *q = userdata;
	struct upstream_response *r = &q->resp;
	size_t n = size * nitems, nlen;
	const char *colon, *v, *end = buf + n;

	q->got_bytes = 1;
	/* A status line starts a new response (1xx interim): forget headers. */
	if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
		upstream_resp_clear_headers(r);
		q->headers_done = 0;
		return n;
	}
	/* curl hands us the empty line that ends the header block: without it
	 * (peer closed mid-headers) curl may still report success. */
	if ((n == 2 && buf[0] == '\r' && buf[1] == '\n') || (n == 1 && buf[0] == '\n')) {
		q->headers_done = 1;
		return n;
	}
	colon = memchr(buf, ':', n);
	if (!colon)
		return n;
	nlen = (size_t)(colon - buf);
	v = colon + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;

	upstream_resp_header(r, q->cfg, buf, nlen, v, (size_t)(end - v));
	return n;
}

/* ---- request lifecycle ---- */

/* curl's MAXCONNECTS bounds the whole connection cache, busy connections
 * included: a fixed 64 under 100 concurrent transfers would close a
 * connection at nearly every completion and open a new one for the next
 * request. Sizing it to running + keepalive-max keeps what the option means,
 * that many *idle* connections, and lets steady load reuse every connection.
 * Called outside curl callbacks only. */
static void upstream_update_maxconnects(struct upstream *u)
{
	long want = (long)u->n_reqs + (long)u->keepalive_max;

	if (want < 1)
		want = 1;  /* 0 would mean "curl's default" */
	if (want != u->maxconnects) {
		curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, want);
		u->maxconnects = want;
	}
}

static void upstream_req_link(struct upstream *u, struct upstream_req *q)
{
	q->prev = NULL;
	q->next = u->reqs;
	if (u->reqs)
		u->reqs->prev = q;
	u->reqs = q;
	u->n_reqs++;
}

static void upstream_req_unlink(struct upstream *u, struct upstream_req *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		u->reqs = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
	u->n_reqs--;
}

static void upstream_req_free(struct upstream *u, struct upstream_req *q)
{
	if (q->easy) {
		/* Pooled with its options, but not with pointers into <q>,
		 * which is freed below: no reachable pointer to freed memory,
		 * even if a later request forgot to set one of them. */
		if (q->gen == u->gen && u->n_pool < UPSTREAM_POOL_MAX) {
			curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, NULL);
			curl_easy_setopt(q->easy, CURLOPT_PRIVATE, NULL);
			curl_easy_setopt(q->easy, CURLOPT_WRITEDATA, NULL);
			curl_easy_setopt(q->easy, CURLOPT_HEADERDATA, NULL);
			u->pool[u->n_pool++] = q->easy;
		} else
			curl_easy_cleanup(q->easy);
		q->easy = NULL;
	}
	q->hdrs = NULL;
	upstream_resp_free(&q->resp);
	free(q);
}

/* Fills the final response fields of a finished transfer, hands it to the
 * caller, frees it. <q> must already be removed from the multi. */
static void upstream_req_finish(struct upstream *u, struct upstream_req *q, CURLcode rc)
{
	struct upstream_response *r = &q->resp;

	r->curl_code = (int)rc;
	r->attempts = q->attempt ? q->attempt : 1;
	r->latency_us = upstream_elapsed_us(&q->start);
	if (rc == CURLE_OK) {
		long code = 0;

		curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
		if (!q->headers_done) {
			r->status = 0;
			r->error = "truncated response headers";
		} else if (code >= 200 && code < 600) {
			r->status = code;
		} else {
			r->status = 0;
			r->error = "unusable HTTP status";
		}
	} else {
		r->status = 0;
		if (q->oversize || rc == CURLE_FILESIZE_EXCEEDED)
			r->error = "response too large";
		else if (rc == CURLE_ABORTED_BY_CALLBACK)
			r->error = "aborted";
		else
			r->error = curl_easy_strerror(rc);
	}
	if (r->status == 0) {
		/* No usable answer: nothing captured may leak into a decision. */
		upstream_resp_clear_headers(r);
		free(r->body); r->body = NULL;
		r->body_len = 0;
	}
	ev_timer_stop(u->loop, &q->backoff);
	upstream_req_unlink(u, q);
	upstream_update_maxconnects(u);
	q->done(q->arg, r);
	upstream_req_free(u, q);
}

/* The next jitter draw of <u> (xorshift32; never 0 from a nonzero state). */
static uint32_t upstream_rand(struct upstream *u)
{
	uint32_t x = u->rnd;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	u->rnd = x;
	return x;
}

/* Contract in upcurl.h. Pure. */
enum h1c_fail upcurl_fail(int rc, int got_bytes, long request_size, long status,
                          int attempt_timeout)
{
	switch (rc) {
	case CURLE_OK:
		return status ? H1C_FAIL_NONE : H1C_FAIL_OTHER;
	case CURLE_COULDNT_CONNECT:
		return H1C_FAIL_CONNECT;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
		return got_bytes ? H1C_FAIL_OTHER : H1C_FAIL_RESET;
	case CURLE_OPERATION_TIMEDOUT:
		if (got_bytes)
			return H1C_FAIL_OTHER;
		/* Nothing sent yet: the connect (or TLS handshake) timed out. */
		if (request_size == 0)
			return H1C_FAIL_CONNECT;
		return attempt_timeout ? H1C_FAIL_TIMEOUT : H1C_FAIL_OTHER;
	default:
		return H1C_FAIL_OTHER;
	}
}

/* The /metrics reason of a retry after <f>. */
static enum upstream_retry_reason upstream_reason(enum h1c_fail f)
{
	switch (f) {
	case H1C_FAIL_CONNECT: return UPSTREAM_RETRY_CONNECT;
	case H1C_FAIL_RESET:   return UPSTREAM_RETRY_RESET;
	case H1C_FAIL_TIMEOUT: return UPSTREAM_RETRY_TIMEOUT;
	default:               return UPSTREAM_RETRY_STATUS;
	}
}

/* Adds <q>'s handle to the multi for one attempt, its CURLOPT_TIMEOUT_MS the
 * smaller of upstream-attempt-timeout and what is left of the exchange
 * timeout. Returns 0, or -1 (budget spent, or the multi refused it): then
 * <q> is untouched and not in the multi. */
static int upstream_attempt_go(struct upstream *u, struct upstream_req *q)
{
	long left = (long)((q->deadline - ev_now(u->loop)) * UPSTREAM_MS), t = left;

	if (left <= 0)
		return -1;
	if (q->cfg->upstream_attempt_timeout_ms && (long)q->cfg->upstream_attempt_timeout_ms < t)
		t = (long)q->cfg->upstream_attempt_timeout_ms;
	curl_easy_setopt(q->easy, CURLOPT_TIMEOUT_MS, t);
	q->headers_done = 0;
	q->got_bytes = 0;
	q->oversize = 0;
	q->attempt++;
	if (curl_multi_add_handle(u->multi, q->easy) != CURLM_OK) {
		q->attempt--;
		return -1;
	}
	q->in_multi = 1;
	return 0;
}

static void upstream_backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct upstream_req *q = w->data;
	struct upstream *u = q->u;

	(void)loop;
	(void)revents;
	if (upstream_attempt_go(u, q) < 0)
		upstream_req_finish(u, q, CURLE_OPERATION_TIMEDOUT);
}

/* The attempt of <q> ended with <rc> (<q> already out of the multi): starts
 * the backoff before another attempt if the retry policy allows one (1), or
 * leaves <q> as it is (0). Never calls curl's multi. */
static int upstream_maybe_retry(struct upstream *u, struct upstream_req *q, CURLcode rc)
{
	const struct cfg *cfg = q->cfg;
	long code = 0, reqsize = 0, left_ms, d;
	enum h1c_fail fail;

	if (cfg->upstream_retries == 0 || q->oversize)
		return 0;
	if (rc == CURLE_OK && q->headers_done)
		curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
	if (rc == CURLE_OK && code < 500)
		return 0;
	curl_easy_getinfo(q->easy, CURLINFO_REQUEST_SIZE, &reqsize);
	fail = upcurl_fail((int)rc, q->got_bytes, reqsize, code,
	                          cfg->upstream_attempt_timeout_ms != 0);
	left_ms = (long)((q->deadline - ev_now(u->loop)) * UPSTREAM_MS);
	d = h1c_retry_delay(fail, code, q->attempt, cfg->upstream_retries, cfg->upstream_retry_on,
	                    cfg->upstream_retry_backoff_ms, left_ms, upstream_rand(u));
	if (d < 0)
		return 0;
	q->resp.retries[upstream_reason(fail)]++;
	/* What this attempt captured never reaches the decision. */
	upstream_resp_clear_headers(&q->resp);
	q->resp.body_len = 0;
	if (q->resp.body)
		q->resp.body[0] = 0;
	ev_timer_set(&q->backoff, (ev_tstamp)d / UPSTREAM_MS, 0.);
	ev_timer_start(u->loop, &q->backoff);
	return 1;
}

/* Drains curl's completion queue. Called right after every socket_action,
 * i.e. outside curl callbacks, so completions may start new requests. */
static void upstream_check_done(struct upstream *u)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(u->multi, &left))) {
		struct upstream_req *q;
		char *priv = NULL;
		CURLcode rc;

		if (msg->msg != CURLMSG_DONE)
			continue;
		rc = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
		q = (struct upstream_req *)(void *)priv;
		/* <msg> is invalid after remove_handle: everything needed is copied. */
		curl_multi_remove_handle(u->multi, msg->easy_handle);
		if (!q)
			continue;
		q->in_multi = 0;
		if (!upstream_maybe_retry(u, q, rc))
			upstream_req_finish(u, q, rc);
	}
}

/* ---- libev <-> curl glue ---- */

static void upstream_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct upstream_sock *s = (struct upstream_sock *)w;
	struct upstream *u = s->u;
	int flags = 0, running;
	CURLMcode mc;

	(void)loop;
	if (revents & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (revents & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	/* <s> may be freed inside (CURL_POLL_REMOVE): use nothing of it after. */
	mc = curl_multi_socket_action(u->multi, s->fd, flags, &running);
	if (mc != CURLM_OK) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_ERROR, &rl, "curl_multi_socket_action: %s",
		                curl_multi_strerror(mc));
	}
	upstream_check_done(u);
}

static void upstream_timer_fire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct upstream *u = w->data;
	int running;

	(void)loop;
	(void)revents;
	curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	upstream_check_done(u);
}

/* CURLMOPT_TIMERFUNCTION: one non-repeating timer; -1 deletes it, 0 means
 * "as soon as possible" which a 0 s libev timer gives on the next iteration
 * (we must not call curl from here). Never fails. */
static int upstream_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct upstream *u = userp;

	(void)multi;
	ev_timer_stop(u->loop, &u->timer);
	if (timeout_ms >= 0) {
		ev_timer_set(&u->timer, (double)timeout_ms / 1000.0, 0.);
		ev_timer_start(u->loop, &u->timer);
	}
	return 0;
}

/* CURLMOPT_SOCKETFUNCTION. Never returns -1: that would abort every transfer.
 * When out of memory the socket stays unwatched and its transfer ends at its
 * timeout. */
static int upstream_sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp,
                            void *socketp)
{
	struct upstream *u = userp;
	struct upstream_sock *s = socketp;
	int events = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		/* socketp may be NULL: REMOVE for a socket never announced. */
		if (s) {
			ev_io_stop(u->loop, &s->io);
			if (s->prev)
				s->prev->next = s->next;
			else
				u->socks = s->next;
			if (s->next)
				s->next->prev = s->prev;
			free(s);
			s = NULL;
			curl_multi_assign(u->multi, fd, NULL);
		}
		return 0;
	}
	if (what & CURL_POLL_IN)
		events |= EV_READ;
	if (what & CURL_POLL_OUT)
		events |= EV_WRITE;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return 0;
		s->fd = fd;
		s->u = u;
		ev_init(&s->io, upstream_io_cb);
		s->next = u->socks;
		if (u->socks)
			u->socks->prev = s;
		u->socks = s;
		curl_multi_assign(u->multi, fd, s);
	} else {
		ev_io_stop(u->loop, &s->io);
	}
	/* ev_io_set again each time: libev requires it if the fd was reused. */
	ev_io_set(&s->io, fd, events);
	if (events)
		ev_io_start(u->loop, &s->io);
	return 0;
}

/* ---- public API ---- */

struct upstream *upstream_new(struct ev_loop *loop, const struct cfg *cfg)
{
	struct upstream *u;

	pthread_once(&upstream_once, upstream_global_init);
	if (upstream_init_rc != CURLE_OK)
		return NULL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->loop = loop;
	u->multi = curl_multi_init();
	if (!u->multi)
		goto out_free_u;
	ev_init(&u->timer, upstream_timer_fire_cb);
	u->timer.data = u;
	curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, upstream_sock_cb);
	curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
	curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, upstream_timer_cb);
	curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
	/* Jitter only: any nonzero seed will do. */
	u->rnd = (uint32_t)time(NULL) ^ (uint32_t)(uintptr_t)u;
	if (!u->rnd)
		u->rnd = 1;
	u->h1 = h1c_new(loop, cfg);
	if (!u->h1)
		goto out_free_multi;
	u->h2 = h2c_new(loop, cfg);
	if (!u->h2)
		goto out_free_h1;
	upstream_set_cfg(u, cfg);
	return u;

out_free_h1:
	h1c_free(u->h1);
	u->h1 = NULL;
out_free_multi:
	curl_multi_cleanup(u->multi);
	u->multi = NULL;
out_free_u:
	free(u);
	return NULL;
}

void upstream_set_cfg(struct upstream *u, const struct cfg *cfg)
{
	h1c_set_cfg(u->h1, cfg);
	h2c_set_cfg(u->h2, cfg);
	/* keepalive-max 0 is done per request with CURLOPT_FORBID_REUSE. */
	u->keepalive_max = cfg->keepalive_max;
	upstream_update_maxconnects(u);
	/* Requests beyond the cap wait in curl's pending queue for a free
	 * connection instead of opening one each (0 = unlimited). */
	curl_multi_setopt(u->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)cfg->max_upstream_conns);
	curl_multi_setopt(u->multi, CURLMOPT_PIPELINING, cfg->upstream_http_version == CFG_HTTP_H2C
	                  ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING);
	/* Handles configured for the previous cfg are not reused. */
	u->cfg = cfg;
	u->gen++;
	while (u->n_pool) {
		curl_easy_cleanup(u->pool[--u->n_pool]);
		u->pool[u->n_pool] = NULL;
	}
}

/* First libcurl that reuses an HTTP/2 prior-knowledge connection. */
#define UPSTREAM_H2C_MIN_VERSION 0x080000

int upstream_h2c_supported(char *why, size_t len)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

	if (!(v->features & CURL_VERSION_HTTP2)) {
		snprintf(why, len, "libcurl %s has no HTTP/2 support", v->version);
		return 0;
	}
	if (v->version_num < UPSTREAM_H2C_MIN_VERSION) {
		snprintf(why, len, "libcurl %s cannot reuse an h2c connection (every request "
		         "after the first fails); needs 8.0.0 or later", v->version);
		return 0;
	}
	return 1;
}

/* The options that depend only on <cfg>, set once per handle. */
static void upstream_easy_configure(CURL *e, const struct cfg *cfg)
{
	curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "spoa-auth");
	/* Threads + curl: no SIGALRM-based DNS timeouts. */
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
	/* A redirect is the user service's answer (a refusal), never a hop. */
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_MAXREDIRS, 0L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, cfg->upstream_http_version == CFG_HTTP_H2C
	                 ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE : (long)CURL_HTTP_VERSION_1_1);
	/* h2c: wait for the one connection being set up rather than open more. */
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, cfg->upstream_http_version == CFG_HTTP_H2C ? 1L : 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	/* Nothing from the environment or the home directory: the request
	 * carries credentials. libcurl reads http_proxy, HTTPS_PROXY,
	 * ALL_PROXY and NO_PROXY unless CURLOPT_PROXY is set; "" means no
	 * proxy, and NOPROXY "*" (direct) or "" (a configured proxy for every
	 * host) overrides NO_PROXY. */
	curl_easy_setopt(e, CURLOPT_PROXY, cfg->upstream_proxy ? cfg->upstream_proxy : "");
	curl_easy_setopt(e, CURLOPT_NOPROXY, cfg->upstream_proxy ? "" : "*");
	curl_easy_setopt(e, CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
	/* No cookie engine (no COOKIEFILE/COOKIEJAR/COOKIELIST is ever set): a
	 * Set-Cookie of one answer never rides along on another user's call. */
	curl_easy_setopt(e, CURLOPT_UNRESTRICTED_AUTH, 0L);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)cfg->max_response_size);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, upstream_write_cb);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, upstream_header_cb);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	if (cfg->keepalive_max == 0)
		curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	if (cfg->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, cfg->ca_file);
	if (cfg->client_cert)
		curl_easy_setopt(e, CURLOPT_SSLCERT, cfg->client_cert);
	if (cfg->client_key)
		curl_easy_setopt(e, CURLOPT_SSLKEY, cfg->client_key);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, cfg->tls_verify ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, cfg->tls_verify ? 2L : 0L);
}

/* A handle configured for <cfg>: from the pool if <cfg> is the current one,
 * else a new one (*<gen> = 0: not pooled afterwards). NULL when out of memory. */
static CURL *upstream_easy_get(struct upstream *u, const struct cfg *cfg, unsigned *gen)
{
	CURL *e;

	*gen = cfg == u->cfg ? u->gen : 0;
	if (*gen && u->n_pool)
		return u->pool[--u->n_pool];
	e = curl_easy_init();
	if (e)
		upstream_easy_configure(e, cfg);
	return e;
}

int upstream_start(struct upstream *u, const struct cfg *cfg, const char *url,
                   const char *const *headers, size_t n,
                   upstream_done_fn done, void *arg)
{
	static char expect[] = "Expect:";
	struct upstream_req *q;
	struct curl_slist *nodes;
	size_t len = 0;
	char *p;
	CURL *e;

	if (cfg->upstream_native)
		return cfg->upstream_http_version == CFG_HTTP_H2C
		       ? h2c_start(u->h2, cfg, url, headers, n, done, arg)
		       : h1c_start(u->h1, cfg, url, headers, n, done, arg);
	/* One allocation: the request, then the header list (nodes, then the
	 * lines they point to), which curl only reads. */
	for (size_t i = 0; i < n; i++)
		len += strlen(headers[i]) + 1;
	q = calloc(1, sizeof(*q) + (n + 1) * sizeof(*nodes) + len);
	if (!q)
		return -1;
	q->u = u;
	q->cfg = cfg;
	q->done = done;
	q->arg = arg;
	if (cfg->n_copy_headers) {
		q->resp.copy = calloc(cfg->n_copy_headers, sizeof(*q->resp.copy));
		if (!q->resp.copy)
			goto out_free_req;
		q->resp.n_copy = cfg->n_copy_headers;
	}
	nodes = (struct curl_slist *)(void *)(q + 1);
	p = (char *)(nodes + n + 1);
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(headers[i]) + 1;

		memcpy(p, headers[i], l);
		nodes[i].data = p;
		nodes[i].next = &nodes[i + 1];
		p += l;
	}
	/* No "Expect: 100-continue" round trip (GET has no body anyway). */
	nodes[n].data = expect;
	nodes[n].next = NULL;
	q->hdrs = nodes;
	q->easy = e = upstream_easy_get(u, cfg, &q->gen);
	if (!e)
		goto out_free_req;

	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->hdrs);
	curl_easy_setopt(e, CURLOPT_PRIVATE, q);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, q);

	clock_gettime(CLOCK_MONOTONIC, &q->start);
	q->deadline = ev_now(u->loop) + cfg->timeout_ms / UPSTREAM_MS;
	ev_init(&q->backoff, upstream_backoff_cb);
	q->backoff.data = q;
	upstream_req_link(u, q);
	upstream_update_maxconnects(u);
	if (upstream_attempt_go(u, q) < 0) {
		upstream_req_unlink(u, q);
		upstream_update_maxconnects(u);
		goto out_free_req;
	}
	return 0;

out_free_req:
	upstream_req_free(u, q);
	return -1;
}

unsigned upstream_pending(const struct upstream *u)
{
	return u->n_reqs + h1c_pending(u->h1) + h2c_pending(u->h2);
}

void upstream_abort_all(struct upstream *u)
{
	while (u->reqs) {
		struct upstream_req *q = u->reqs;

		if (q->in_multi)
			curl_multi_remove_handle(u->multi, q->easy);
		q->in_multi = 0;
		upstream_req_finish(u, q, CURLE_ABORTED_BY_CALLBACK);
	}
	h1c_abort_all(u->h1);
	h2c_abort_all(u->h2);
}

void upstream_free(struct upstream *u)
{
	if (!u)
		return;
	upstream_abort_all(u);
	h1c_free(u->h1);
	u->h1 = NULL;
	h2c_free(u->h2);
	u->h2 = NULL;
	/* May call the socket callback for cached connections: the loop is
	 * still alive, and REMOVE frees their watchers. */
	curl_multi_cleanup(u->multi);
	u->multi = NULL;
	ev_timer_stop(u->loop, &u->timer);
	while (u->socks) {
		struct upstream_sock *s = u->socks;

		ev_io_stop(u->loop, &s->io);
		u->socks = s->next;
		free(s);
		s = NULL;
	}
	while (u->n_pool) {
		curl_easy_cleanup(u->pool[--u->n_pool]);
		u->pool[u->n_pool] = NULL;
	}
	free(u);
}
