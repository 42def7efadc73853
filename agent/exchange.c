/*
 * exchange.c: NOTIFY arguments -> user-service request; response ->
 * struct decision -> ACK.
 *
 *   args_classify()            one pass over the NOTIFY args, no allocation:
 *                              a struct args of slices that everything
 *                              below is built from;
 * With the decision cache (docs/cache.md) on:
 *   args_key()                 the cache key of exactly what would be sent;
 *   cache_lookup()             HIT: ACK at once (the decision's pre-encoded
 *                              actions + `cache=hit`), no exchange kept;
 *                              COALESCED: wait for the leader's answer, which
 *                              comes back through the worker's inbox (or, if
 *                              the leader's answer was private to it, make
 *                              this request's own call);
 *                              MISS: this exchange is the leader:
 *   exchange_inputs_compute()  URL and header lines from the same struct, then
 *   upstream_start()           the HTTP call, and on its end
 *   cache_complete()/cache_fail() whatever happened to the connection;
 *   exchange_complete()        ACKs a struct decision * + the `cache` label.
 * L1 (HAProxy's own cache, docs/cache.md "L1"): an allow that depends on
 * nothing but the one session cookie (and the scope or URI, which HAProxy's
 * L1 key holds) is ACKed with `l1_ttl`, the whole seconds HAProxy may keep
 * it (exchange_l1_request_ok(), exchange_l1_mark(), exchange_l1_ttl()).
 * Never logs argument values, keys or digests: only the keyed short
 * credential hash (args_log_hash()).
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "args.h"
#include "breaker.h"
#include "cache.h"
#include "cachekey.h"
#include "cfg.h"
#include "conn.h"
#include "decision.h"
#include "exchange.h"
#include "fleet.h"
#include "hapi.h"
#include "httpcc.h"
#include "log.h"
#include "metrics.h"
#include "spop.h"
#include "trace.h"
#include "upstream.h"
#include "worker.h"

/* <lit> (a string literal) and its length, for the encoders' name/length
 * pairs. */
#define EXCHANGE_LIT(lit) (lit), (sizeof(lit) - 1)
#define EXCHANGE_LIT_LEN(lit) (sizeof(lit) - 1)

/* Names of the variables the ACKs set besides a decision's (docs/design.md). */
#define EXCHANGE_VAR_CACHE "cache"
#define EXCHANGE_VAR_INVALIDATED "invalidated"
#define EXCHANGE_VAR_L1_TTL "l1_ttl"
#define EXCHANGE_VAR_TRACE_ID "trace_id"

/* An L1 entry lives whole seconds: below one, there is no L1 answer. */
#define EXCHANGE_L1_MIN_TTL_MS 1000
/* The user-service URL's query: "request_uri=" and the URI percent-encoded,
 * each byte at most "%XX". */
#define EXCHANGE_URI_PARAM "request_uri="
#define EXCHANGE_PCT_MAX 3

/* Bytes of struct exchange_inputs' own buffer: enough for the URL and the
 * header lines of usual requests; bigger ones take one heap block. */
#define EXCHANGE_INPUTS_BUF 4096

/* The request inputs of one exchange: everything the upstream call depends
 * on, copied out of the frame into <buf> (or <heap>). Lives on the stack of
 * exchange_start() only until upstream_start() has copied it. */
struct exchange_inputs {
	char *url;              /* into buf or heap */
	const char *hdrs[ARGS_MAX + 3]; /* "Name: value" lines, into buf or heap: at
	                                 * most one per argument, plus X-Forwarded-For,
	                                 * traceparent and tracestate */
	size_t n_hdrs;
	char *heap;             /* owned: used instead of buf when it is too small */
	char buf[EXCHANGE_INPUTS_BUF];
};

static void exchange_inputs_free(struct exchange_inputs *in)
{
	free(in->heap);
	in->heap = NULL;
	in->url = NULL;
	in->n_hdrs = 0;
}

/* ---- the `cache` variable, encoded once per label ---- */

enum exchange_label {
	EXCHANGE_L_HIT = 0,
	EXCHANGE_L_MISS,
	EXCHANGE_L_COALESCED,
	EXCHANGE_L_STALE,
	EXCHANGE_L_ENTRIES
};

static const char *const exchange_label_names[EXCHANGE_L_ENTRIES] = {
	"hit", "miss", "coalesced", "stale",
};
static pthread_once_t exchange_once = PTHREAD_ONCE_INIT;
/* Each fits DECISION_ACK_RESERVE, which every ACK leaves free. */
static uint8_t exchange_label_buf[EXCHANGE_L_ENTRIES][DECISION_ACK_RESERVE];
static size_t exchange_label_len[EXCHANGE_L_ENTRIES];
static uint8_t exchange_inval_buf[DECISION_ACK_RESERVE];
static size_t exchange_inval_len;
/* The access-log hash key when log-hash-key is unset: random per process,
 * so hashes correlate across reloads but not across processes or nodes. */
static uint8_t exchange_log_key[ARGS_LOG_KEY_LEN];
static int exchange_log_key_ok;

static void exchange_static_init(void)
{
	struct spop_data d;
	uint8_t *p;

	for (int i = 0; i < EXCHANGE_L_ENTRIES; i++) {
		p = exchange_label_buf[i];
		d.type = SPOP_T_STR;
		d.u.str.ptr = exchange_label_names[i];
		d.u.str.len = strlen(exchange_label_names[i]);
		spop_put_set_var(&p, p + DECISION_ACK_RESERVE, SPOP_SCOPE_TXN,
		                 EXCHANGE_LIT(EXCHANGE_VAR_CACHE), &d);
		exchange_label_len[i] = (size_t)(p - exchange_label_buf[i]);
	}
	p = exchange_inval_buf;
	d.type = SPOP_T_INT32;
	d.u.s64 = 1;
	spop_put_set_var(&p, p + DECISION_ACK_RESERVE, SPOP_SCOPE_TXN,
	                 EXCHANGE_LIT(EXCHANGE_VAR_INVALIDATED), &d);
	exchange_inval_len = (size_t)(p - exchange_inval_buf);
	exchange_log_key_ok = RAND_bytes(exchange_log_key, sizeof(exchange_log_key)) == 1;
}

/* The cache's clock: monotonic, unlike ev_now(), which follows the wall clock. */
static uint64_t exchange_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A JWT's exp is wall-clock time. */
static int64_t exchange_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + (int64_t)ts.tv_nsec / 1000000;
}

static int exchange_str_eq(const struct spop_str *s, const char *lit)
{
	size_t n = strlen(lit);

	return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

/* ---- W3C trace context (trace.h) ---- */

/* What the exchange sends: <on> 0 = no trace headers. <state> borrows the
 * frame (or the waiter's copy of its arguments). */
struct exchange_trace {
	int on;
	struct trace_ctx ctx;
	const char *state;
	size_t state_len;
};

/* Takes the traceparent/tracestate arguments args_classify() found in <a>
 * and decides what goes to the user service under <cfg>. The arguments are
 * never forwarded as given: only what trace_parse() accepted, re-formatted
 * (cfg.c refuses them in forward-headers). Allocates nothing. */
static void exchange_trace_scan(const struct cfg *cfg, const struct args *a,
                                struct exchange_trace *t)
{
	struct spop_str tp = { a->traceparent, a->traceparent_len };
	struct spop_str ts = { a->tracestate, a->tracestate_len };
	uint8_t rnd[TRACE_RANDOM_LEN];

	memset(t, 0, sizeof(*t));
	if (tp.ptr && trace_parse(tp.ptr, tp.len, &t->ctx) == 0) {
		t->on = 1;
		/* tracestate goes only with the traceparent it belongs to */
		if (ts.ptr && trace_state_ok(ts.ptr, ts.len)) {
			t->state = ts.ptr;
			t->state_len = ts.len;
		}
		if (cfg->trace_new_span && RAND_bytes(rnd, TRACE_SPAN_HEX / 2) == 1)
			trace_new_span(&t->ctx, rnd);
	} else if (cfg->trace_generate && RAND_bytes(rnd, sizeof(rnd)) == 1) {
		trace_generate(&t->ctx, rnd);
		t->on = 1;
	}
}

/* ---- L1 eligibility ---- */

/* 1 if <h> is a Cookie header holding one name=value pair: what haproxy.cfg
 * sends for an L1 candidate, and the bytes HAProxy's L1 key hashes
 * (hapi_l1_cookie_ok(), shared with the admin endpoint), for the L1 check
 * and the logout's L1 hash. */
static int exchange_l1_cookie(const struct args_hdr *h)
{
	if (h->name_len != EXCHANGE_LIT_LEN("cookie") ||
	    strncasecmp(h->name, "cookie", EXCHANGE_LIT_LEN("cookie")) != 0)
		return 0;
	return hapi_l1_cookie_ok(h->value, h->value_len);
}

/* Whether the decision for <a> may be kept by HAProxy's L1, whose key is the
 * one session cookie plus the scope or URI: only if the request carried
 * nothing else the user service may decide on. That is: l1-max-ttl of at
 * least a second, the client address out of the decision (cache-key-client
 * off), and exactly one forwarded header, a Cookie holding one name=value
 * pair (haproxy.cfg sends exactly that for an L1 candidate). Never looks at
 * the values beyond their shape. */
static int exchange_l1_request_ok(const struct cfg *cfg, const struct args *a)
{
	if (cfg->l1_max_ttl_ms < EXCHANGE_L1_MIN_TTL_MS || cfg->cache_key_client || a->n_hdrs != 1 ||
	    a->n_unsafe || a->n_bad_scope)
		return 0;
	return exchange_l1_cookie(&a->hdrs[0]);
}

/* Marks <d>, just built from <r> and not yet shared, with how long an L1 may
 * keep it: a 2xx allow without Set-Cookie, cacheable by the agent's own TTL
 * policy (Cache-Control, the JWT exp, cache-max-ttl), whose body holds no
 * '|' (the L1 value's separator), and, for a request of scope <scope> (""
 * = none: the L1 key holds the URI), not narrowed by the user service to
 * another scope or the URI (X-Auth-Scope). Leaves l1_until_ms 0 otherwise. */
static void exchange_l1_mark(const struct cfg *cfg, const char *scope,
                             const struct upstream_response *r, struct decision *d)
{
	struct httpcc_policy pol = {
		.default_ttl_ms = cfg->cache_ttl_ms,
		.deny_ttl_ms = cfg->cache_deny_ttl_ms,
		.max_ttl_ms = cfg->cache_max_ttl_ms,
	};
	uint32_t ttl;
	int64_t now = exchange_wall_ms();

	if (cfg->l1_max_ttl_ms < EXCHANGE_L1_MIN_TTL_MS || d->outcome != DECISION_ALLOW ||
	    d->set_cookie || r->status < 200 || r->status > 299 ||
	    (r->body && memchr(r->body, '|', r->body_len)))
		return;
	if (scope[0] && r->auth_scope && strcmp(r->auth_scope, scope) != 0)
		return;
	ttl = httpcc_ttl(&pol, (int)r->status, r->cache_control,
	                 r->cache_control ? strlen(r->cache_control) : 0, r->body, r->body_len, now);
	if (ttl)
		d->l1_until_ms = now + ttl;
}

/* Whole seconds HAProxy's L1 may keep <d> from now under <cfg>: what is left
 * of its mark, capped by l1-max-ttl, rounded down; 0 = not at all. */
static unsigned exchange_l1_ttl(const struct cfg *cfg, const struct decision *d)
{
	int64_t left;

	if (!d->l1_until_ms || d->outcome != DECISION_ALLOW || d->set_cookie)
		return 0;
	left = d->l1_until_ms - exchange_wall_ms();
	if (left > (int64_t)cfg->l1_max_ttl_ms)
		left = cfg->l1_max_ttl_ms;
	return left >= EXCHANGE_L1_MIN_TTL_MS ? (unsigned)(left / EXCHANGE_L1_MIN_TTL_MS) : 0;
}

/* The extra ACK actions of an answer: `cache=<label>`, when a trace was
 * sent `trace_id`, and when <l1_ttl> is not 0 `l1_ttl`. Writes at most
 * EXCHANGE_EXTRA_MAX bytes at <buf>; returns the length. */
#define EXCHANGE_EXTRA_TRACE_ID_MAX (TRACE_ID_HEX + 32)  /* set-var trace_id */
#define EXCHANGE_EXTRA_L1_TTL_MAX 16                    /* set-var l1_ttl, INT32 */
#define EXCHANGE_EXTRA_MAX (DECISION_ACK_RESERVE + EXCHANGE_EXTRA_TRACE_ID_MAX + \
                            EXCHANGE_EXTRA_L1_TTL_MAX)

static size_t exchange_extra(uint8_t *buf, size_t label_len, const uint8_t *label,
                             const char *trace_id, unsigned l1_ttl)
{
	uint8_t *p = buf + label_len;
	struct spop_data d;

	memcpy(buf, label, label_len);
	/* Each fits EXCHANGE_EXTRA_MAX; one that did not would be left out
	 * (spop_put_set_var() leaves <p> as it was). */
	if (l1_ttl) {
		d.type = SPOP_T_INT32;
		d.u.s64 = l1_ttl;
		spop_put_set_var(&p, buf + EXCHANGE_EXTRA_MAX, SPOP_SCOPE_TXN,
		                 EXCHANGE_LIT(EXCHANGE_VAR_L1_TTL), &d);
	}
	if (trace_id[0]) {
		d.type = SPOP_T_STR;
		d.u.str.ptr = trace_id;
		d.u.str.len = strlen(trace_id);
		spop_put_set_var(&p, buf + EXCHANGE_EXTRA_MAX, SPOP_SCOPE_TXN,
		                 EXCHANGE_LIT(EXCHANGE_VAR_TRACE_ID), &d);
	}
	return (size_t)(p - buf);
}

/* Appends <s>/<n> percent-encoded (RFC 3986 unreserved kept) to <out>. */
static char *exchange_pct_encode(char *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			*out++ = (char)ch;
		} else {
			*out++ = '%';
			*out++ = hex[ch >> 4];
			*out++ = hex[ch & 15];
		}
	}
	return out;
}

/* Writes the user-service URL for <uri> (NULL: none) at <out>, which has
 * room for exchange_url_max(); returns the end (after the NUL). */
static size_t exchange_url_max(const struct cfg *cfg, size_t uri_len)
{
	/* base, '?' or '&', the parameter, the URI, NUL */
	return strlen(cfg->user_service_url) + 1 + EXCHANGE_LIT_LEN(EXCHANGE_URI_PARAM) +
	       EXCHANGE_PCT_MAX * uri_len + 1;
}

static char *exchange_build_url(char *out, const struct cfg *cfg, const char *uri, size_t uri_len)
{
	const char *base = cfg->user_service_url;
	size_t blen = strlen(base);
	const char *sep;

	if (strchr(base, '?'))
		sep = (base[blen - 1] == '?' || base[blen - 1] == '&') ? "" : "&";
	else
		sep = "?";
	memcpy(out, base, blen);
	out += blen;
	out = stpcpy(out, sep);
	out = stpcpy(out, EXCHANGE_URI_PARAM);
	if (uri)
		out = exchange_pct_encode(out, uri, uri_len);
	*out++ = 0;
	return out;
}

/* Writes "<name>: <v>" and a NUL at <out>; returns the end. */
static char *exchange_header_line(char *out, const char *name, size_t nlen, const char *v,
                                  size_t vlen)
{
	memcpy(out, name, nlen);
	memcpy(out + nlen, ": ", 2);
	memcpy(out + nlen + 2, v, vlen);
	out[nlen + 2 + vlen] = 0;
	return out + nlen + 2 + vlen + 1;
}

/* Builds the request inputs (URL and header lines) from the classified
 * arguments <a>. Returns 0, or -1 when out of memory. Values are copied: the
 * frame may go away. */
static int exchange_inputs_compute(const struct cfg *cfg, const struct args *a,
                                   const struct exchange_trace *tr,
                                   struct exchange_inputs *in)
{
	char src[ARGS_SRC_TEXT_MAX + 1];
	int has_src = args_src_text(a, src, sizeof(src)) == 0;
	size_t need = exchange_url_max(cfg, a->uri_len) + sizeof("X-Forwarded-For: , ") +
	              a->xff_len + sizeof(src) + sizeof("traceparent: ") + TRACE_PARENT_LEN + 1 +
	              (tr->state ? sizeof("tracestate: ") + tr->state_len : 0);
	char *o;

	in->url = NULL;
	in->n_hdrs = 0;
	in->heap = NULL;
	for (size_t i = 0; i < a->n_hdrs; i++)
		need += a->hdrs[i].name_len + a->hdrs[i].value_len + sizeof(": ");
	o = in->buf;
	if (need > sizeof(in->buf)) {
		in->heap = malloc(need);
		if (!in->heap)
			return -1;
		o = in->heap;
	}
	if (a->n_unsafe) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "argument '%.*s' holds a line break or NUL: "
		                "not forwarded", (int)a->unsafe_name_len, a->unsafe_name);
	}
	for (size_t i = 0; i < a->n_hdrs; i++) {
		in->hdrs[in->n_hdrs++] = o;
		o = exchange_header_line(o, a->hdrs[i].name, a->hdrs[i].name_len, a->hdrs[i].value,
		                         a->hdrs[i].value_len);
	}
	if (a->xff || has_src) {
		in->hdrs[in->n_hdrs++] = o;
		o = stpcpy(o, "X-Forwarded-For: ");
		if (a->xff) {
			memcpy(o, a->xff, a->xff_len);
			o += a->xff_len;
		}
		if (a->xff && has_src)
			o = stpcpy(o, ", ");
		if (has_src)
			o = stpcpy(o, src);
		*o++ = 0;
	}
	if (tr->on) {
		char tp[TRACE_PARENT_LEN + 1];

		trace_format(&tr->ctx, tp);
		in->hdrs[in->n_hdrs++] = o;
		o = exchange_header_line(o, EXCHANGE_LIT("traceparent"), tp, TRACE_PARENT_LEN);
		if (tr->state) {
			in->hdrs[in->n_hdrs++] = o;
			o = exchange_header_line(o, EXCHANGE_LIT("tracestate"), tr->state,
			                         tr->state_len);
		}
	}
	in->url = o;
	exchange_build_url(o, cfg, a->uri, a->uri_len);
	return 0;
}

int exchange_request_build(const struct cfg *cfg, struct cachekey *ck, const uint8_t *p,
                           const uint8_t *end, unsigned nargs, uint8_t key[CACHE_KEY_LEN],
                           exchange_request_fn fn, void *arg)
{
	struct args a;
	struct exchange_trace tr;
	struct exchange_inputs in;

	if (args_classify(&a, cfg, &p, end, nargs) < 0)
		return -1;
	if (key && (!ck || args_key(&a, ck, key, NULL) < 0))
		return -2;
	exchange_trace_scan(cfg, &a, &tr);
	if (exchange_inputs_compute(cfg, &a, &tr, &in) < 0)
		return -2;
	fn(arg, in.url, in.hdrs, in.n_hdrs);
	exchange_inputs_free(&in);
	return 0;
}

static double exchange_elapsed_ms(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) * 1e3 +
	       (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Frees <x>, or keeps it as the worker's spare (the next hit or miss then
 * allocates nothing). */
static void exchange_release(struct worker *w, struct exchange *x)
{
	free(x->own_args);
	x->own_args = NULL;
	free(x->l2);
	x->l2 = NULL;
	if (!worker_spare_offer(w, x))
		free(x);
}

/* The completion path, whoever produced <d> (the user service, a leader's
 * answer, a stale entry). ACKs <d> + `cache=<label>`. Consumes the caller's
 * reference on <d> and frees <x>. */
static void exchange_complete(struct exchange *x, struct decision *d, enum exchange_label label)
{
	struct worker *w = x->w;
	struct metrics *met = worker_env(w)->met;

	METRICS_INC(met->decisions[d->outcome]);
	METRICS_DEC(met->inflight);
	if (d->claims_skipped)
		METRICS_ADD(met->claims_skipped, d->claims_skipped);
	if (log_enabled(LOG_LVL_ACCESS))
		log_access("sid=%llu fid=%llu outcome=%s status=%d latency_ms=%.1f cred=%s cache=%s "
		           "trace=%s%s",
		           (unsigned long long)x->sid, (unsigned long long)x->fid,
		           decision_outcome_to_str(d->outcome), d->status,
		           exchange_elapsed_ms(&x->start), x->cred_hash,
		           exchange_label_names[label], x->trace_id[0] ? x->trace_id : "-",
		           x->req.conn ? "" : " (connection gone, dropped)");
	if (x->req.conn) {  /* may free the connection */
		uint8_t extra[EXCHANGE_EXTRA_MAX];
		unsigned l1 = x->l1_ok && label != EXCHANGE_L_STALE ? exchange_l1_ttl(x->cfg, d) : 0;
		size_t n = exchange_extra(extra, exchange_label_len[label], exchange_label_buf[label],
		                          x->trace_id, l1);

		conn_req_done(&x->req, x->sid, x->fid, d->actions, d->actions_len, extra, n);
	}
	decision_put(d);
	cfg_put(x->cfg);
	x->cfg = NULL;
	exchange_release(w, x);
	worker_work_end(w);
}

/* 1 if the user service narrowed its answer for a scope-keyed leader: its
 * X-Auth-Scope <said> names another scope, or "uri" (docs/cache.md,
 * "Scopes"). Absent: the answer holds for the whole scope. */
static int exchange_narrowed(const struct exchange *x, const char *said)
{
	return x->scope[0] && said && strcmp(said, x->scope) != 0;
}

/* Leader's end: store or fail the key, whatever happened to the connection,
 * so that every waiter gets an answer. May replace *<d> by a stale entry.
 * <said>: the answer's X-Auth-Scope, NULL if none. Returns the label of the
 * answer. */
static enum exchange_label exchange_leader_done(struct exchange *x, long status,
                                                const char *cc, const char *said,
                                                const char *body, size_t body_len,
                                                struct decision **d)
{
	const struct worker_env *env = worker_env(x->w);
	uint64_t now = exchange_mono_ms();

	if (status >= 100 && status < 500 && (*d)->outcome != DECISION_ERROR &&
	    exchange_narrowed(x, said)) {
		/* It holds for this request's URI only: not stored under the
		 * scope's key, and each coalesced request asks for itself. */
		log_debug("user-service answer (status %ld) narrowed below scope %s: "
		          "not cached", status, x->scope);
		cache_complete_private(env->cache, x->key, *d, now);
	} else if (status >= 100 && status < 500 && (*d)->outcome != DECISION_ERROR) {
		struct httpcc_policy pol = {
			.default_ttl_ms = x->cfg->cache_ttl_ms,
			.deny_ttl_ms = x->cfg->cache_deny_ttl_ms,
			.max_ttl_ms = x->cfg->cache_max_ttl_ms,
		};
		/* Only an allow's body is a token whose exp may cap the entry. */
		uint32_t ttl = httpcc_ttl(&pol, (int)status, cc, cc ? strlen(cc) : 0,
		                          (*d)->outcome == DECISION_ALLOW ? body : NULL,
		                          (*d)->outcome == DECISION_ALLOW ? body_len : 0,
		                          exchange_wall_ms());

		/* Redis gets the TTL of the local rules; this agent's own copy is
		 * capped while it cannot hear revocations. */
		cache_complete(env->cache, x->key, *d, fleet_local_ttl(ttl), now, NULL);
		if (ttl && env->fw && decision_shareable(*d))
			fleet_put(env->fw, x->key, x->cred, *d, ttl);
	} else {
		/* No answer, 5xx, or an answer we could not use: never cached;
		 * an entry within cache-stale-grace may stand in. */
		struct decision *stale = NULL;

		cache_fail(env->cache, x->key, *d, now, &stale);
		if (stale) {
			decision_put(*d);
			*d = stale;
			METRICS_INC(env->met->cache_stale);
			return EXCHANGE_L_STALE;
		}
	}
	METRICS_INC(env->met->cache_miss);
	return EXCHANGE_L_MISS;
}

/* Leader's thread, no cache lock held: hand the answer to the waiter's own
 * worker, which ACKs it from its loop. */
static void exchange_waiter_cb(struct cache_waiter *wt, struct decision *d, int how)
{
	struct exchange *x = (struct exchange *)(void *)((char *)wt - offsetof(struct exchange, waiter));

	x->cache_d = d;
	x->cache_stale = how;
	worker_post(x->w, &x->post);
}

static void exchange_own_call(struct exchange *x);

/* worker_msg run: the leader's answer for coalesced exchange <x> arrived
 * (x->cache_d, x->cache_stale) on its worker's thread: ACK it (or drop it if
 * the connection is gone) and free <x>. */
static void exchange_cache_deliver(struct worker *w, struct worker_msg *m)
{
	struct exchange *x = (struct exchange *)(void *)((char *)m - offsetof(struct exchange, post));
	struct decision *d;
	enum exchange_label label = x->cache_stale == CACHE_ANS_STALE ? EXCHANGE_L_STALE
	                                                               : EXCHANGE_L_COALESCED;

	(void)w;  /* the same as x->w */
	if (x->cache_stale == CACHE_ANS_OWN) {
		decision_put(x->cache_d);
		x->cache_d = NULL;
		exchange_own_call(x);
		return;
	}
	d = x->cache_d ? x->cache_d : decision_error();
	x->cache_d = NULL;
	if (label == EXCHANGE_L_STALE)
		METRICS_INC(worker_env(x->w)->met->cache_stale);
	else
		METRICS_INC(worker_env(x->w)->met->cache_coalesced);
	exchange_complete(x, d, label);
}

/* worker_msg drop: the answer arrived after its worker stopped
 * (worker_free): no ACK, no counters. */
static void exchange_cache_drop(struct worker_msg *m)
{
	struct exchange *x = (struct exchange *)(void *)((char *)m - offsetof(struct exchange, post));

	decision_put(x->cache_d);
	x->cache_d = NULL;
	cfg_put(x->cfg);
	x->cfg = NULL;
	free(x->own_args);
	free(x);
}

static const struct worker_msg_ops exchange_post_ops = {
	exchange_cache_deliver, exchange_cache_drop
};

/* ---- circuit breaker hooks (breaker.h; one breaker per process) ---- */

static void exchange_breaker_log(int entered, const struct cfg *cfg)
{
	if (entered == BREAKER_OPEN && breaker_open_why(breaker_process()) == BREAKER_WHY_RATIO)
		log_warn("circuit breaker: open: at least %u.%03u of the user-service calls "
		         "in %ums failed; answering outcome=error without calling it for %ums",
		         cfg->breaker_ratio_pm / BREAKER_RATIO_ONE,
		         cfg->breaker_ratio_pm % BREAKER_RATIO_ONE, cfg->breaker_window_ms,
		         cfg->breaker_open_ms);
	else if (entered == BREAKER_OPEN)
		log_warn("circuit breaker: open: the user service failed %u times in a row; "
		         "answering outcome=error without calling it for %ums",
		         cfg->breaker_failures, cfg->breaker_open_ms);
	else if (entered == BREAKER_HALF_OPEN)
		log_info("circuit breaker: half_open: one probe request to the user service");
	else if (entered == BREAKER_CLOSED)
		log_info("circuit breaker: closed: the probe succeeded");
}

/* Whether <x> may call the user service: its ticket (BREAKER_NONE when the
 * breaker is off, BREAKER_REJECT: do not call). */
static int exchange_breaker_admit(const struct exchange *x)
{
	int entered, t;

	if (!x->cfg->breaker) {
		/* turned off by a reload while not closed: close it, so that
		 * /metrics does not keep showing it open */
		if (breaker_state_get(breaker_process()) != BREAKER_CLOSED &&
		    breaker_close(breaker_process()))
			log_info("circuit breaker: closed: turned off");
		return BREAKER_NONE;
	}
	t = breaker_admit(breaker_process(), exchange_mono_ms(), &entered);
	exchange_breaker_log(entered, x->cfg);
	return t;
}

/* Reports the end of <x>'s call: <status> 0 (no usable answer) or 5xx is a
 * failure. Every admitted call reports, or a probe would hold the breaker
 * half-open for ever. */
static void exchange_breaker_done(struct exchange *x, long status)
{
	struct breaker_params p = { x->cfg->breaker_failures, x->cfg->breaker_open_ms,
	                            x->cfg->breaker_ratio_pm, x->cfg->breaker_window_ms,
	                            x->cfg->breaker_min_requests };
	int entered;

	if (x->breaker == BREAKER_NONE || x->breaker == BREAKER_REJECT)
		return;
	breaker_done(breaker_process(), &p, (enum breaker_ticket)x->breaker,
	             status != 0 && status < 500, exchange_mono_ms(), &entered);
	x->breaker = BREAKER_NONE;
	exchange_breaker_log(entered, x->cfg);
}

static void exchange_upstream_done(void *arg, const struct upstream_response *r)
{
	struct exchange *x = arg;
	struct decision *d;
	int too_big = 0;

	metrics_upstream(worker_env(x->w)->met, r->status, r->latency_us);
	metrics_upstream_attempts(worker_env(x->w)->met, r->native, r->attempts, r->retries);
	exchange_breaker_done(x, r->status);
	if (r->status == 0) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "user service: no usable answer: %s",
		                r->error ? r->error : "unknown error");
	}
	d = decision_build(r, x->cfg, &too_big);
	if (too_big) {
		static struct log_rl rl;

		METRICS_INC(worker_env(x->w)->met->ack_too_big);
		log_ratelimited(LOG_LVL_WARN, &rl, "user-service answer (status %ld) does not "
		                "fit max-frame-size %u: sending status=0 outcome=error",
		                r->status, (unsigned)x->cfg->max_frame_size);
	}
	if (d && !too_big && x->l1_ok)
		exchange_l1_mark(x->cfg, x->l1_scope, r, d);
	if (!d)
		d = decision_error();
	else if (!too_big && d->outcome == DECISION_ERROR && r->status >= 200 && r->status < 300) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "user-service answer (status %ld): body is not a "
		                "usable token (control byte): sending status=0 outcome=error",
		                r->status);
	}
	if (x->cache_role == EXCHANGE_CACHE_LEADER) {
		enum exchange_label label = exchange_leader_done(x, r->status, r->cache_control,
		                                                 r->auth_scope, r->body,
		                                                 r->body_len, &d);

		exchange_complete(x, d, label);
	} else {
		exchange_complete(x, d, EXCHANGE_L_MISS);
	}
}

/* cache_cred_fn: the cred deferred by exchange_key_compute(), finished only
 * when the lookup creates a flight. SHA-256 over an in-memory state does not
 * fail; if it ever did, the flight gets an all-zero cred, which no logout
 * matches: that flight's answer would then be stored despite a concurrent
 * logout of the same credential, like any answer stored just before it. */
struct exchange_cred_arg {
	struct cachekey *ck;
	uint8_t *out;          /* a copy for the fleet's names */
};

static void exchange_cred_fn(void *arg, uint8_t cred[CACHE_KEY_LEN])
{
	struct exchange_cred_arg *ca = arg;

	if (cachekey_cred(ca->ck, cred) < 0)
		memset(cred, 0, CACHE_KEY_LEN);
	memcpy(ca->out, cred, CACHE_KEY_LEN);
}

/* Cache hit: ACK at once; no exchange, no copy of the actions. Consumes the
 * reference on <d>. */
static void exchange_hit(const struct worker_env *env, struct conn *c, const struct spop_frame *f,
                         struct decision *d, const char *cred_hash, const char *trace_id,
                         int l1_ok)
{
	uint8_t extra[EXCHANGE_EXTRA_MAX];
	size_t n = exchange_extra(extra, exchange_label_len[EXCHANGE_L_HIT],
	                          exchange_label_buf[EXCHANGE_L_HIT], trace_id,
	                          l1_ok ? exchange_l1_ttl(env->cfg, d) : 0);

	METRICS_INC(env->met->cache_hit);
	METRICS_INC(env->met->decisions[d->outcome]);
	if (log_enabled(LOG_LVL_ACCESS))
		log_access("sid=%llu fid=%llu outcome=%s status=%d latency_ms=0.0 cred=%s cache=hit "
		           "trace=%s", (unsigned long long)f->sid, (unsigned long long)f->fid,
		           decision_outcome_to_str(d->outcome), d->status, cred_hash,
		           trace_id[0] ? trace_id : "-");
	conn_send_ack_extra(c, f->sid, f->fid, d->actions, d->actions_len, extra, n);
	decision_put(d);
}

/* Out of memory: still answer, so HAProxy does not wait. */
static void exchange_oom_ack(const struct worker_env *env, struct conn *c,
                             const struct spop_frame *f)
{
	static struct log_rl rl;
	struct decision *d = decision_error();

	log_ratelimited(LOG_LVL_ERROR, &rl, "out of memory starting an exchange");
	METRICS_INC(env->met->decisions[DECISION_ERROR]);
	conn_send_ack_extra(c, f->sid, f->fid, d->actions, d->actions_len,
	                    exchange_label_buf[EXCHANGE_L_MISS], exchange_label_len[EXCHANGE_L_MISS]);
}

/* The access log's credential hash of <a>: keyed by log-hash-key, or by the
 * process's random key. */
_Static_assert(CFG_LOG_HASH_KEY_LEN == ARGS_LOG_KEY_LEN, "one key size");

static void exchange_log_hash(const struct args *a, const struct cfg *cfg,
                              char out[ARGS_LOG_HASH_SIZE])
{
	if (cfg->log_hash_key_set)
		args_log_hash(a, cfg->log_hash_key, out);
	else if (exchange_log_key_ok)
		args_log_hash(a, exchange_log_key, out);
	else
		strcpy(out, "-");
}

/* Sends the user-service request for <a> on behalf of <x> (tracked, counted
 * in flight). Completes <x> with an error if it cannot start, or if the
 * circuit breaker refuses the call (stale-if-error still applies). */
static void exchange_call(struct exchange *x, const struct args *a,
                          const struct exchange_trace *tr)
{
	struct exchange_inputs in;  /* ~6 KiB of stack: no allocation per miss */
	struct decision *d;
	enum exchange_label label = EXCHANGE_L_MISS;

	x->breaker = exchange_breaker_admit(x);
	if (x->breaker == BREAKER_REJECT) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "circuit breaker open: user service not called, "
		                "outcome=error");
	} else if (exchange_inputs_compute(x->cfg, a, tr, &in) == 0) {
		int rc = upstream_start(worker_env(x->w)->up, x->cfg, in.url, (const char *const *)in.hdrs,
		                        in.n_hdrs, exchange_upstream_done, x);

		exchange_inputs_free(&in);
		if (rc == 0)
			return;
	}
	if (x->breaker != BREAKER_REJECT) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_ERROR, &rl, "cannot start the user-service request");
		exchange_breaker_done(x, 0);
	}
	d = decision_error();
	if (x->cache_role == EXCHANGE_CACHE_LEADER)
		label = exchange_leader_done(x, 0, NULL, NULL, NULL, 0, &d);
	exchange_complete(x, d, label);
}

/* A coalesced waiter whose leader's answer was private to the leader
 * (it carries Set-Cookie): this request makes its own call, from the copy
 * of its arguments, and its answer is not stored. */
static void exchange_own_call(struct exchange *x)
{
	const uint8_t *p = x->own_args;
	struct args a;
	struct exchange_trace tr;

	x->cache_role = EXCHANGE_CACHE_BYPASS;
	if (!x->req.conn || !x->own_args ||
	    args_classify(&a, x->cfg, &p, x->own_args + x->own_args_len, x->own_nargs) < 0) {
		exchange_complete(x, decision_error(), EXCHANGE_L_MISS);
		return;
	}
	exchange_trace_scan(x->cfg, &a, &tr);
	exchange_call(x, &a, &tr);
}

/* ---- the fleet's second level (fleet.h) ---- */

/* A leader's arguments while Redis is asked: the frame is gone by the time
 * the answer comes, and a miss still needs them for its own call. The trace
 * decided at the start is kept as is (a new span id is drawn once). */
struct exchange_l2 {
	struct exchange_trace tr;
	size_t state_off;           /* tr.state's offset into args */
	unsigned nargs;
	size_t len;
	uint8_t args[];
};

static void exchange_l2_cb(void *arg, enum fleet_l2 res, struct decision *d, uint32_t ttl_ms)
{
	struct exchange *x = arg;
	struct exchange_l2 *l2 = x->l2;
	const uint8_t *p = l2->args;
	struct args a;

	/* A session invalidated here while the read was on its way (or just
	 * before: Redis learns of it a moment later) is within its hold: the
	 * value may predate the invalidation, so the user service decides. */
	if (res == FLEET_L2_HIT && cache_cred_held(worker_env(x->w)->cache, x->cred, exchange_mono_ms()))
		res = FLEET_L2_MISS;
	if (res == FLEET_L2_HIT) {
		uint32_t ttl = ttl_ms;

		if (x->cfg->cache_max_ttl_ms && ttl > x->cfg->cache_max_ttl_ms)
			ttl = x->cfg->cache_max_ttl_ms;
		/* The writer's L1 mark, within what this agent keeps it: the
		 * request's own checks (x->l1_ok) apply at the ACK. */
		if (d->l1_until_ms && d->l1_until_ms > exchange_wall_ms() + (int64_t)ttl)
			d->l1_until_ms = exchange_wall_ms() + (int64_t)ttl;
		cache_complete(worker_env(x->w)->cache, x->key, d, fleet_local_ttl(ttl), exchange_mono_ms(),
		               NULL);
		METRICS_INC(worker_env(x->w)->met->cache_hit);
		exchange_complete(x, d, EXCHANGE_L_HIT);
		return;
	}
	decision_put(d);
	if (l2->tr.state)
		l2->tr.state = (const char *)l2->args + l2->state_off;
	if (args_classify(&a, x->cfg, &p, l2->args + l2->len, l2->nargs) < 0) {
		/* Classified once already: cannot fail on the same bytes. */
		struct decision *e = decision_error();
		enum exchange_label label = exchange_leader_done(x, 0, NULL, NULL, NULL, 0, &e);

		exchange_complete(x, e, label);
		return;
	}
	exchange_call(x, &a, &l2->tr);
	/* upstream_start() copied what it needs; x may be gone already. */
}

/* Asks the fleet's second level for leader <x> before the user service.
 * Returns 0 if the answer will come through exchange_l2_cb(), -1 if the
 * caller must call the user service now (fleet skipped, or no memory). */
static int exchange_l2_start(struct exchange *x, const uint8_t *args, size_t len,
                             unsigned nargs, const struct exchange_trace *tr)
{
	struct exchange_l2 *l2 = malloc(sizeof(*l2) + (len ? len : 1));

	if (!l2)
		return -1;
	memcpy(l2->args, args, len);
	l2->len = len;
	l2->nargs = nargs;
	l2->tr = *tr;
	l2->state_off = tr->state ? (size_t)((const uint8_t *)tr->state - args) : 0;
	x->l2 = l2;
	if (fleet_get(worker_env(x->w)->fw, x->key, x->cred, x->cfg->max_frame_size, exchange_l2_cb, x) == 0)
		return 0;
	x->l2 = NULL;
	free(l2);
	return -1;
}

/* Starts the exchange for the `exchange` message whose <nargs> arguments are
 * at <*p>: classified once; the key, the log hash and the request are built
 * from the same struct args. Returns 0, or -(enum spop_error). */
static int exchange_start(struct worker *w, struct conn *c, const struct spop_frame *f,
                          const uint8_t **p, unsigned nargs)
{
	const struct worker_env *env = worker_env(w);
	const uint8_t *args_at = *p;
	struct args a;
	struct exchange *x;
	uint8_t key[CACHE_KEY_LEN];
	char cred_hash[ARGS_LOG_HASH_SIZE] = "-";
	int role = EXCHANGE_CACHE_BYPASS;
	struct exchange_trace tr;

	pthread_once(&exchange_once, exchange_static_init);
	if (args_classify(&a, env->cfg, p, f->end, nargs) < 0)
		return -SPOP_ERR_INVALID;
	exchange_trace_scan(env->cfg, &a, &tr);
	if (a.n_bad_scope)
		log_debug("sid=%llu fid=%llu argument scope: not a scope name (1 to %d of "
		          "[A-Za-z0-9._:-]): keyed on the URI", (unsigned long long)f->sid,
		          (unsigned long long)f->fid, ARGS_SCOPE_MAX);
	if (log_enabled(LOG_LVL_ACCESS))
		exchange_log_hash(&a, env->cfg, cred_hash);
	if (env->cache && env->ck && env->cfg->cache) {
		if (args_key(&a, env->ck, key, NULL) == 0)
			role = EXCHANGE_CACHE_LEADER;  /* until the lookup says otherwise */
		else
			METRICS_INC(env->met->cache_miss);  /* consulted, could not use it */
	}

	x = worker_spare_take(w);
	if (x)
		memset(x, 0, sizeof(*x));
	else
		x = calloc(1, sizeof(*x));
	if (!x) {
		exchange_oom_ack(env, c, f);
		return 0;
	}
	x->w = w;
	x->sid = f->sid;
	x->fid = f->fid;
	clock_gettime(CLOCK_MONOTONIC, &x->start);
	memcpy(x->cred_hash, cred_hash, sizeof(x->cred_hash));
	if (tr.on)
		memcpy(x->trace_id, tr.ctx.trace_id, sizeof(x->trace_id));
	x->l1_ok = exchange_l1_request_ok(env->cfg, &a);
	if (x->l1_ok && a.scope) {
		memcpy(x->l1_scope, a.scope, a.scope_len);
		x->l1_scope[a.scope_len] = 0;
	}

	if (role == EXCHANGE_CACHE_LEADER) {
		struct exchange_cred_arg ca;
		struct decision *d = NULL;
		enum cache_res res;

		/* Set before the lookup: once queued, the leader's thread may
		 * call it at any time. */
		x->waiter.cb = exchange_waiter_cb;
		ca.ck = env->ck;
		ca.out = x->cred;
		res = cache_lookup_lazy(env->cache, key, exchange_cred_fn, &ca, exchange_mono_ms(),
		                        &d, &x->waiter);
		if (res == CACHE_HIT) {
			exchange_hit(env, c, f, d, x->cred_hash, x->trace_id, x->l1_ok);
			exchange_release(w, x);
			return 0;
		}
		if (res == CACHE_COALESCED) {
			/* Only x->w, x->waiter, x->cache_* and x->post are
			 * touched by the leader's thread; the rest is ours. The
			 * arguments are kept in case the leader's answer is its
			 * own (Set-Cookie) and this request must ask for itself;
			 * without the copy such an answer becomes an error. */
			x->own_args_len = (size_t)(*p - args_at);
			x->own_args = malloc(x->own_args_len ? x->own_args_len : 1);
			if (x->own_args)
				memcpy(x->own_args, args_at, x->own_args_len);
			x->own_nargs = nargs;
			x->cache_role = EXCHANGE_CACHE_WAITER;
			/* Read by this thread only, when the posted answer runs. */
			x->post.ops = &exchange_post_ops;
			x->cfg = cfg_get(env->cfg);
			conn_track(c, &x->req);
			worker_work_begin(w);
			METRICS_INC(env->met->inflight);
			return 0;
		}
		x->cache_role = EXCHANGE_CACHE_LEADER;
		memcpy(x->key, key, sizeof(x->key));
		if (a.scope && env->cfg->cache_key_uri) {
			memcpy(x->scope, a.scope, a.scope_len);
			x->scope[a.scope_len] = 0;
		}
	}

	x->cfg = cfg_get(env->cfg);
	conn_track(c, &x->req);
	worker_work_begin(w);
	METRICS_INC(env->met->inflight);
	if (x->cache_role == EXCHANGE_CACHE_LEADER && env->fw &&
	    exchange_l2_start(x, args_at, (size_t)(*p - args_at), nargs, &tr) == 0)
		return 0;
	exchange_call(x, &a, &tr);
	return 0;
}

/* The L1 session hash (hapi_l1_cred()) of <a>'s Cookie into <out>, when it
 * is one name=value pair (what haproxy.cfg sends for an L1 candidate, and
 * the bytes HAProxy hashes). Returns 0, or -1: no such cookie (the event
 * then carries no hash). */
static int exchange_l1_hash(const struct args *a, char out[HAPI_L1_CRED_HEX + 1])
{
	for (size_t i = 0; i < a->n_hdrs; i++) {
		const struct args_hdr *h = &a->hdrs[i];

		if (h->name_len != EXCHANGE_LIT_LEN("cookie") ||
		    strncasecmp(h->name, "cookie", EXCHANGE_LIT_LEN("cookie")) != 0)
			continue;
		return exchange_l1_cookie(h) ? hapi_l1_cred(h->value, h->value_len, out) : -1;
	}
	return -1;
}

/* The `logout` message (same credential arguments as `exchange`): drops the
 * session's entries, whatever their URI, and holds new ones back for
 * cache-logout-hold. ACKs `invalidated=1`, or noop when the cache is off.
 * Never blocks the logout itself: HAProxy has no rule on this answer. */
static int exchange_logout(struct worker *w, struct conn *c, const struct spop_frame *f,
                           const uint8_t **p, unsigned nargs)
{
	const struct worker_env *env = worker_env(w);
	struct args a;
	uint8_t key[CACHE_KEY_LEN], cred[CACHE_KEY_LEN];
	char cred_hash[ARGS_LOG_HASH_SIZE] = "-";
	const uint8_t *ack;
	size_t len;

	pthread_once(&exchange_once, exchange_static_init);
	if (args_classify(&a, env->cfg, p, f->end, nargs) < 0)
		return -SPOP_ERR_INVALID;
	if (env->cache && env->ck && env->cfg->cache && args_key(&a, env->ck, key, cred) == 0) {
		char l1[HAPI_L1_CRED_HEX + 1];
		int has_l1 = fleet_on() && exchange_l1_hash(&a, l1) == 0;

		cache_invalidate_cred(env->cache, cred, exchange_mono_ms());
		/* every other agent (and their HAProxy L1s), through Redis */
		fleet_revoke(cred, has_l1 ? l1 : NULL);
		if (has_l1)
			OPENSSL_cleanse(l1, sizeof(l1));
		if (log_enabled(LOG_LVL_ACCESS)) {
			exchange_log_hash(&a, env->cfg, cred_hash);
			log_access("sid=%llu fid=%llu logout: session entries invalidated cred=%s",
			           (unsigned long long)f->sid, (unsigned long long)f->fid, cred_hash);
		}
		conn_send_ack(c, f->sid, f->fid, exchange_inval_buf, exchange_inval_len);
		return 0;
	}
	ack = decision_noop_actions(&len);
	conn_send_ack(c, f->sid, f->fid, ack, len);
	return 0;
}

int exchange_notify(void *w, struct conn *c, const struct spop_frame *f)
{
	const uint8_t *p = f->payload;
	struct spop_str name;
	unsigned nargs;
	int r;

	while ((r = spop_msg_next(&p, f->end, &name, &nargs)) == 1) {
		if (exchange_str_eq(&name, "exchange"))
			return exchange_start(w, c, f, &p, nargs);
		if (exchange_str_eq(&name, "logout"))
			return exchange_logout(w, c, f, &p, nargs);
		if (spop_msg_skip_args(&p, f->end, nargs) < 0)
			return -SPOP_ERR_INVALID;
	}
	if (r < 0)
		return -SPOP_ERR_INVALID;
	/* No exchange message: every ACK needs one action (HAProxy 3.1.0 stalls
	 * on an empty one). */
	{
		size_t len;
		const uint8_t *a = decision_noop_actions(&len);

		conn_send_ack(c, f->sid, f->fid, a, len);
	}
	return 0;
}
