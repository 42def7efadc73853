/*
 * exchange.c: NOTIFY arguments -> user-service request; response ->
 * struct decision -> ACK.
 *
 * With the decision cache (issue 3, docs/cache.md) on:
 *   exchange_key_compute()     pass 1 over the NOTIFY args, no allocation:
 *                              the cache key and credential hash of exactly
 *                              what would be sent;
 *   cache_lookup()             HIT: ACK at once (the decision's pre-encoded
 *                              actions + `cache=hit`), no exchange kept;
 *                              COALESCED: wait for the leader's answer, which
 *                              comes back through the worker's inbox;
 *                              MISS: this exchange is the leader:
 *   exchange_inputs_compute()  pass 2: URL and header lines, then
 *   upstream_start()           the HTTP call, and on its end
 *   cache_complete()/cache_fail() whatever happened to the connection;
 *   exchange_complete()        ACKs a struct decision * + the `cache` label.
 * Never logs argument values, keys or digests: only the short credential hash.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>

/* SHA256_* for the short log hash: see cachekey.c. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>

#include "cache.h"
#include "cachekey.h"
#include "cfg.h"
#include "conn.h"
#include "decision.h"
#include "exchange.h"
#include "httpcc.h"
#include "log.h"
#include "metrics.h"
#include "spop.h"
#include "upstream.h"
#include "worker.h"

/* Bytes of struct exchange_inputs' own buffer: enough for the URL and the
 * header lines of usual requests; bigger ones take one heap block. */
#define EXCHANGE_INPUTS_BUF 4096

/* The request inputs of one exchange: everything the upstream call depends
 * on, copied out of the frame into <buf> (or <heap>). Lives on the stack of
 * exchange_start() only until upstream_start() has copied it. */
struct exchange_inputs {
	char *url;              /* into buf or heap */
	const char *hdrs[256];  /* "Name: value" lines, into buf or heap: at
	                         * most one per argument (nargs <= 255), plus
	                         * X-Forwarded-For */
	size_t n_hdrs;
	char cred_hash[9];
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

static void exchange_static_init(void)
{
	struct spop_data d;
	uint8_t *p;

	for (int i = 0; i < EXCHANGE_L_ENTRIES; i++) {
		p = exchange_label_buf[i];
		d.type = SPOP_T_STR;
		d.u.str.ptr = exchange_label_names[i];
		d.u.str.len = strlen(exchange_label_names[i]);
		spop_put_set_var(&p, p + DECISION_ACK_RESERVE, SPOP_SCOPE_TXN, "cache", 5, &d);
		exchange_label_len[i] = (size_t)(p - exchange_label_buf[i]);
	}
	p = exchange_inval_buf;
	d.type = SPOP_T_INT32;
	d.u.s64 = 1;
	spop_put_set_var(&p, p + DECISION_ACK_RESERVE, SPOP_SCOPE_TXN, "invalidated", 11, &d);
	exchange_inval_len = (size_t)(p - exchange_inval_buf);
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

/* A header value must not smuggle a line break (or NUL) into our request. */
static int exchange_value_ok(const char *v, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (v[i] == '\r' || v[i] == '\n' || v[i] == 0)
			return 0;
	return 1;
}

static int exchange_str_eq(const struct spop_str *s, const char *lit)
{
	size_t n = strlen(lit);

	return s->len == n && memcmp(s->ptr, lit, n) == 0;
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
	return strlen(cfg->user_service_url) + 1 + 12 + 3 * uri_len + 1;
}

static char *exchange_build_url(char *out, const struct cfg *cfg, const struct spop_str *uri)
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
	out = stpcpy(out, "request_uri=");
	if (uri)
		out = exchange_pct_encode(out, uri->ptr, uri->len);
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

/* Text form of the `src` argument (IPv4/IPv6 typed data, or a string). */
static int exchange_src_text(const struct spop_data *d, char *out, size_t outsz)
{
	if (d->type == SPOP_T_IPV4)
		return inet_ntop(AF_INET, d->u.ip, out, (socklen_t)outsz) ? 0 : -1;
	if (d->type == SPOP_T_IPV6)
		return inet_ntop(AF_INET6, d->u.ip, out, (socklen_t)outsz) ? 0 : -1;
	if (d->type == SPOP_T_STR && d->u.str.len < outsz &&
	    exchange_value_ok(d->u.str.ptr, d->u.str.len)) {
		memcpy(out, d->u.str.ptr, d->u.str.len);
		out[d->u.str.len] = 0;
		return 0;
	}
	return -1;
}

/* Short credential hash for access logs: 8 hex chars of SHA-256 over the
 * forwarded "Name: value\n" lines (the same digest as exchange_inputs_compute
 * builds from its copies). Low-level SHA256_* as in cachekey.c: no allocation. */
static void exchange_cred_hash_final(SHA256_CTX *md, char out[9])
{
	unsigned char dg[SHA256_DIGEST_LENGTH];

	if (SHA256_Final(dg, md) == 1)
		snprintf(out, 9, "%02x%02x%02x%02x", dg[0], dg[1], dg[2], dg[3]);
}

/* Pass 1: the cache key and credential digest of the request the `exchange`
 * (or `logout`) message at <p> would produce, by exactly the rules of
 * exchange_inputs_compute() (same headers forwarded, same X-Forwarded-For
 * inputs, same URI), without copying or formatting anything: the client
 * address is hashed as HAProxy sent it (cachekey_end_client()).
 * <cred> NULL: the credential hash is left to cachekey_cred() (only a miss
 * needs it). <cred_hash> (may be NULL) gets the short hash for access logs.
 * Returns 0, -1 if the key cannot be computed (bypass the cache), -2 if the
 * arguments are malformed. Allocates nothing. */
static int exchange_key_compute(const struct cfg *cfg, struct cachekey *ck, const uint8_t *p,
                                const uint8_t *end, unsigned nargs, uint8_t key[CACHE_KEY_LEN],
                                uint8_t cred[CACHE_KEY_LEN], char cred_hash[9])
{
	struct spop_str uri = { NULL, 0 }, xff = { NULL, 0 };
	int has_uri = 0, has_xff = 0, ok;
	enum cachekey_addr kind = CACHEKEY_ADDR_NONE;
	uint8_t ip[16];
	const void *addr = NULL;
	size_t addr_len = 0;
	SHA256_CTX md;

	if (cred_hash) {
		strcpy(cred_hash, "-");
		SHA256_Init(&md);
	}
	ok = cachekey_begin(ck) == 0;
	for (unsigned i = 0; i < nargs; i++) {
		struct spop_str name;
		struct spop_data val;

		if (spop_arg_next(&p, end, &name, &val) < 0)
			return -2;
		if (exchange_str_eq(&name, "uri")) {
			if (val.type == SPOP_T_STR || val.type == SPOP_T_BIN) {
				uri = val.u.str;
				has_uri = 1;
			}
		} else if (exchange_str_eq(&name, "src")) {
			/* Same acceptance as exchange_src_text(), which formats
			 * it on a miss; a later `src` replaces an earlier one. */
			kind = CACHEKEY_ADDR_NONE;
			if (val.type == SPOP_T_IPV4 || val.type == SPOP_T_IPV6) {
				/* val.u.ip is a copy in <val>: keep the bytes */
				addr_len = val.type == SPOP_T_IPV4 ? 4 : 16;
				kind = val.type == SPOP_T_IPV4 ? CACHEKEY_ADDR_IPV4 : CACHEKEY_ADDR_IPV6;
				memcpy(ip, val.u.ip, addr_len);
				addr = ip;
			} else if (val.type == SPOP_T_STR && val.u.str.len < INET6_ADDRSTRLEN + 1 &&
			           exchange_value_ok(val.u.str.ptr, val.u.str.len)) {
				kind = CACHEKEY_ADDR_TEXT;
				addr = val.u.str.ptr;
				addr_len = val.u.str.len;
			}
		} else if (exchange_str_eq(&name, "xff")) {
			if (val.type == SPOP_T_STR && exchange_value_ok(val.u.str.ptr, val.u.str.len) &&
			    val.u.str.len) {
				xff = val.u.str;
				has_xff = 1;
			}
		} else if (name.len && (val.type == SPOP_T_STR || val.type == SPOP_T_BIN) &&
		           cfg_forwards_header(cfg, name.ptr, name.len) &&
		           exchange_value_ok(val.u.str.ptr, val.u.str.len)) {
			if (ok && cachekey_header(ck, name.ptr, name.len, val.u.str.ptr,
			                          val.u.str.len) < 0)
				ok = 0;
			if (cred_hash) {
				SHA256_Update(&md, name.ptr, name.len);
				SHA256_Update(&md, ": ", 2);
				SHA256_Update(&md, val.u.str.ptr, val.u.str.len);
				SHA256_Update(&md, "\n", 1);
			}
		}
	}
	if (cred_hash)
		exchange_cred_hash_final(&md, cred_hash);
	if (!ok)
		return -1;
	if (cachekey_end_client(ck, has_xff ? xff.ptr : NULL, has_xff ? xff.len : 0, kind, addr,
	                        addr_len, has_uri ? uri.ptr : NULL, has_uri ? uri.len : 0, key,
	                        cred) < 0)
		return -1;
	return 0;
}

struct cachekey *exchange_cachekey_new(const struct cfg *cfg, const uint8_t *salt,
                                       char *err, size_t errlen)
{
	struct cachekey_opts o;

	memset(&o, 0, sizeof(o));
	o.include_uri = cfg->cache_key_uri;
	o.include_client = cfg->cache_key_client;
	o.cookie_names = (const char *const *)cfg->cache_key_cookies;
	o.n_cookie_names = cfg->n_cache_key_cookies;
	o.salt = salt;
	o.scope = cfg->user_service_url;
	o.scope_len = strlen(cfg->user_service_url);
	return cachekey_new(&o, err, errlen);
}

/* Reads the <nargs> arguments of the `exchange` message at <*p> and builds
 * the request inputs. Returns 0, -1 when out of memory, or -2 when the
 * arguments are malformed. Values are copied: the frame may go away. */
static int exchange_inputs_compute(const struct cfg *cfg, const uint8_t **p,
                                   const uint8_t *end, unsigned nargs,
                                   struct exchange_inputs *in)
{
	struct spop_str uri = { NULL, 0 }, xff = { NULL, 0 };
	int has_uri = 0, has_xff = 0, has_src = 0;
	char src[INET6_ADDRSTRLEN + 1];
	SHA256_CTX md;
	int want_hash = log_enabled(LOG_LVL_ACCESS);
	size_t avail = (size_t)(end - *p), need;
	char *o;

	in->url = NULL;
	in->n_hdrs = 0;
	in->heap = NULL;
	strcpy(in->cred_hash, "-");
	/* Every name and value is in the <avail> bytes of arguments: lines take
	 * at most avail + 3 per line, the URL at most 3 * avail for the URI,
	 * X-Forwarded-For its prefix, ", " and an address. */
	need = avail + 3 * 256 + exchange_url_max(cfg, avail) +
	       sizeof("X-Forwarded-For: , ") + sizeof(src);
	o = in->buf;
	if (need > sizeof(in->buf)) {
		in->heap = malloc(need);
		if (!in->heap)
			return -1;
		o = in->heap;
	}
	if (nargs > 255)
		goto out_malformed;
	if (want_hash)
		SHA256_Init(&md);

	for (unsigned i = 0; i < nargs; i++) {
		struct spop_str name;
		struct spop_data val;

		if (spop_arg_next(p, end, &name, &val) < 0)
			goto out_malformed;
		if (exchange_str_eq(&name, "uri")) {
			if (val.type == SPOP_T_STR || val.type == SPOP_T_BIN) {
				uri = val.u.str;
				has_uri = 1;
			}
		} else if (exchange_str_eq(&name, "src")) {
			has_src = exchange_src_text(&val, src, sizeof(src)) == 0;
		} else if (exchange_str_eq(&name, "xff")) {
			if (val.type == SPOP_T_STR && exchange_value_ok(val.u.str.ptr, val.u.str.len) &&
			    val.u.str.len) {
				xff = val.u.str;
				has_xff = 1;
			}
		} else if (name.len && (val.type == SPOP_T_STR || val.type == SPOP_T_BIN) &&
		           cfg_forwards_header(cfg, name.ptr, name.len)) {
			/* NULL (absent header) values are simply not forwarded. */
			if (!exchange_value_ok(val.u.str.ptr, val.u.str.len)) {
				static struct log_rl rl;

				log_ratelimited(LOG_LVL_WARN, &rl, "argument '%.*s' holds a line "
				                "break or NUL: not forwarded", (int)name.len, name.ptr);
				continue;
			}
			in->hdrs[in->n_hdrs] = o;
			o = exchange_header_line(o, name.ptr, name.len, val.u.str.ptr,
			                         val.u.str.len);
			if (want_hash) {
				SHA256_Update(&md, in->hdrs[in->n_hdrs], name.len + 2 + val.u.str.len);
				SHA256_Update(&md, "\n", 1);
			}
			in->n_hdrs++;
		}
	}

	if (has_xff || has_src) {
		in->hdrs[in->n_hdrs++] = o;
		o = stpcpy(o, "X-Forwarded-For: ");
		if (has_xff) {
			memcpy(o, xff.ptr, xff.len);
			o += xff.len;
		}
		if (has_xff && has_src)
			o = stpcpy(o, ", ");
		if (has_src)
			o = stpcpy(o, src);
		*o++ = 0;
	}
	in->url = o;
	o = exchange_build_url(o, cfg, has_uri ? &uri : NULL);
	if (want_hash)
		exchange_cred_hash_final(&md, in->cred_hash);
	return 0;

out_malformed:
	exchange_inputs_free(in);
	return -2;
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
	if (!w->x_spare)
		w->x_spare = x;
	else
		free(x);
}

/* The completion path, whoever produced <d> (the user service, a leader's
 * answer, a stale entry). ACKs <d> + `cache=<label>`. Consumes the caller's
 * reference on <d> and frees <x>. */
static void exchange_complete(struct exchange *x, struct decision *d, enum exchange_label label)
{
	struct worker *w = x->w;

	METRICS_INC(w->met.decisions[d->outcome]);
	METRICS_DEC(w->met.inflight);
	if (d->claims_skipped)
		METRICS_ADD(w->met.claims_skipped, d->claims_skipped);
	if (log_enabled(LOG_LVL_ACCESS))
		log_access("sid=%llu fid=%llu outcome=%s status=%d latency_ms=%.1f cred=%s cache=%s%s",
		           (unsigned long long)x->sid, (unsigned long long)x->fid,
		           decision_outcome_to_str(d->outcome), d->status,
		           exchange_elapsed_ms(&x->start), x->cred_hash,
		           exchange_label_names[label],
		           x->conn ? "" : " (connection gone, dropped)");
	if (x->conn)  /* may free the connection */
		conn_exchange_done(x->conn, x, d, exchange_label_buf[label],
		                   exchange_label_len[label]);
	decision_put(d);
	cfg_put(x->cfg);
	x->cfg = NULL;
	exchange_release(w, x);
	w->n_exchanges--;
	worker_maybe_done(w);
}

/* Leader's end: store or fail the key, whatever happened to the connection,
 * so that every waiter gets an answer. May replace *<d> by a stale entry.
 * Returns the label of the answer. */
static enum exchange_label exchange_leader_done(struct exchange *x, long status,
                                                const char *cc, const char *body,
                                                size_t body_len, struct decision **d)
{
	struct worker *w = x->w;
	uint64_t now = exchange_mono_ms();

	if (status >= 100 && status < 500 && (*d)->outcome != DECISION_ERROR) {
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

		cache_complete(w->cache, x->key, *d, ttl, now, NULL);
	} else {
		/* No answer, 5xx, or an answer we could not use: never cached;
		 * an entry within cache-stale-grace may stand in. */
		struct decision *stale = NULL;

		cache_fail(w->cache, x->key, *d, now, &stale);
		if (stale) {
			decision_put(*d);
			*d = stale;
			METRICS_INC(w->met.cache_stale);
			return EXCHANGE_L_STALE;
		}
	}
	METRICS_INC(w->met.cache_miss);
	return EXCHANGE_L_MISS;
}

/* Leader's thread, no cache lock held: hand the answer to the waiter's own
 * worker, which ACKs it from its loop. */
static void exchange_waiter_cb(struct cache_waiter *wt, struct decision *d, int stale)
{
	struct exchange *x = (struct exchange *)(void *)((char *)wt - offsetof(struct exchange, waiter));

	x->cache_d = d;
	x->cache_stale = stale;
	worker_post_cache(x->w, x);
}

void exchange_cache_deliver(struct exchange *x)
{
	struct decision *d = x->cache_d ? x->cache_d : decision_error();
	enum exchange_label label = x->cache_stale ? EXCHANGE_L_STALE : EXCHANGE_L_COALESCED;

	x->cache_d = NULL;
	if (label == EXCHANGE_L_STALE)
		METRICS_INC(x->w->met.cache_stale);
	else
		METRICS_INC(x->w->met.cache_coalesced);
	exchange_complete(x, d, label);
}

void exchange_cache_drop(struct exchange *x)
{
	decision_put(x->cache_d);
	x->cache_d = NULL;
	cfg_put(x->cfg);
	x->cfg = NULL;
	free(x);
}

static void exchange_upstream_done(void *arg, const struct upstream_response *r)
{
	struct exchange *x = arg;
	struct decision *d;
	int too_big = 0;

	metrics_upstream(&x->w->met, r->status, r->latency_us);
	if (r->status == 0) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "user service: no usable answer: %s",
		                r->error ? r->error : "unknown error");
	}
	d = decision_build(r, x->cfg, &too_big);
	if (too_big) {
		static struct log_rl rl;

		METRICS_INC(x->w->met.ack_too_big);
		log_ratelimited(LOG_LVL_WARN, &rl, "user-service answer (status %ld) does not "
		                "fit max-frame-size %u: sending status=0 outcome=error",
		                r->status, (unsigned)x->cfg->max_frame_size);
	}
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
		                                                 r->body, r->body_len, &d);

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
static void exchange_cred_fn(void *arg, uint8_t cred[CACHE_KEY_LEN])
{
	if (cachekey_cred(arg, cred) < 0)
		memset(cred, 0, CACHE_KEY_LEN);
}

/* Cache hit: ACK at once; no exchange, no copy of the actions. Consumes the
 * reference on <d>. */
static void exchange_hit(struct conn *c, const struct spop_frame *f, struct decision *d,
                         const char *cred_hash)
{
	struct worker *w = c->w;

	METRICS_INC(w->met.cache_hit);
	METRICS_INC(w->met.decisions[d->outcome]);
	if (log_enabled(LOG_LVL_ACCESS))
		log_access("sid=%llu fid=%llu outcome=%s status=%d latency_ms=0.0 cred=%s cache=hit",
		           (unsigned long long)f->sid, (unsigned long long)f->fid,
		           decision_outcome_to_str(d->outcome), d->status, cred_hash);
	conn_send_ack_extra(c, f->sid, f->fid, d->actions, d->actions_len,
	                    exchange_label_buf[EXCHANGE_L_HIT], exchange_label_len[EXCHANGE_L_HIT]);
	decision_put(d);
}

/* Out of memory: still answer, so HAProxy does not wait. */
static void exchange_oom_ack(struct conn *c, const struct spop_frame *f)
{
	static struct log_rl rl;
	struct decision *d = decision_error();

	log_ratelimited(LOG_LVL_ERROR, &rl, "out of memory starting an exchange");
	METRICS_INC(c->w->met.decisions[DECISION_ERROR]);
	conn_send_ack_extra(c, f->sid, f->fid, d->actions, d->actions_len,
	                    exchange_label_buf[EXCHANGE_L_MISS], exchange_label_len[EXCHANGE_L_MISS]);
}

/* Starts the exchange for the `exchange` message whose <nargs> arguments are
 * at <*p>. Returns 0, or -(enum spop_error). */
static int exchange_start(struct conn *c, const struct spop_frame *f,
                          const uint8_t **p, unsigned nargs)
{
	struct worker *w = c->w;
	struct exchange_inputs in;  /* ~6 KiB of stack: no allocation per miss */
	struct exchange *x;
	uint8_t key[CACHE_KEY_LEN];
	char cred_hash[9] = "-";  /* also what a reload to 'access' in between reads */
	int role = EXCHANGE_CACHE_BYPASS, rc;

	pthread_once(&exchange_once, exchange_static_init);
	if (w->cache && w->ck && w->cfg->cache) {
		rc = exchange_key_compute(w->cfg, w->ck, *p, f->end, nargs, key, NULL,
		                          log_enabled(LOG_LVL_ACCESS) ? cred_hash : NULL);
		if (rc == -2)
			return -SPOP_ERR_INVALID;
		if (rc == 0)
			role = EXCHANGE_CACHE_LEADER;  /* until the lookup says otherwise */
		else
			METRICS_INC(w->met.cache_miss);  /* consulted, could not use it */
	}

	x = w->x_spare;
	w->x_spare = NULL;
	if (x)
		memset(x, 0, sizeof(*x));
	else
		x = calloc(1, sizeof(*x));
	if (!x) {
		exchange_oom_ack(c, f);
		return 0;
	}
	x->w = w;
	x->sid = f->sid;
	x->fid = f->fid;
	clock_gettime(CLOCK_MONOTONIC, &x->start);
	strcpy(x->cred_hash, "-");

	if (role == EXCHANGE_CACHE_LEADER) {
		struct decision *d = NULL;
		enum cache_res res;

		if (log_enabled(LOG_LVL_ACCESS))
			memcpy(x->cred_hash, cred_hash, sizeof(x->cred_hash));
		/* Set before the lookup: once queued, the leader's thread may
		 * call it at any time. */
		x->waiter.cb = exchange_waiter_cb;
		res = cache_lookup_lazy(w->cache, key, exchange_cred_fn, w->ck, exchange_mono_ms(),
		                        &d, &x->waiter);
		if (res == CACHE_HIT) {
			exchange_hit(c, f, d, x->cred_hash);
			exchange_release(w, x);
			return 0;
		}
		if (res == CACHE_COALESCED) {
			/* Only x->w, x->waiter, x->cache_* and x->inbox_next are
			 * touched by the leader's thread; the rest is ours. */
			x->cache_role = EXCHANGE_CACHE_WAITER;
			x->cfg = cfg_get(w->cfg);
			conn_track(c, x);
			w->n_exchanges++;
			METRICS_INC(w->met.inflight);
			return 0;
		}
		x->cache_role = EXCHANGE_CACHE_LEADER;
		memcpy(x->key, key, sizeof(x->key));
	}

	rc = exchange_inputs_compute(w->cfg, p, f->end, nargs, &in);
	if (rc < 0) {
		/* A leader must complete, or its waiters hang. */
		if (x->cache_role == EXCHANGE_CACHE_LEADER)
			cache_fail(w->cache, x->key, decision_error(), exchange_mono_ms(), NULL);
		exchange_release(w, x);
		if (rc == -2)
			return -SPOP_ERR_INVALID;
		exchange_oom_ack(c, f);
		return 0;
	}
	x->cfg = cfg_get(w->cfg);
	if (x->cache_role != EXCHANGE_CACHE_LEADER || !log_enabled(LOG_LVL_ACCESS))
		memcpy(x->cred_hash, in.cred_hash, sizeof(x->cred_hash));
	conn_track(c, x);
	w->n_exchanges++;
	METRICS_INC(w->met.inflight);

	if (upstream_start(w->up, x->cfg, in.url, (const char *const *)in.hdrs, in.n_hdrs,
	                   exchange_upstream_done, x) < 0) {
		static struct log_rl rl;
		struct decision *d = decision_error();
		enum exchange_label label = EXCHANGE_L_MISS;

		log_ratelimited(LOG_LVL_ERROR, &rl, "cannot start the user-service request");
		exchange_inputs_free(&in);
		if (x->cache_role == EXCHANGE_CACHE_LEADER)
			label = exchange_leader_done(x, 0, NULL, NULL, 0, &d);
		exchange_complete(x, d, label);
		return 0;
	}
	exchange_inputs_free(&in);
	return 0;
}

/* The `logout` message (same credential arguments as `exchange`): drops the
 * session's entries, whatever their URI, and holds new ones back for
 * cache-logout-hold. ACKs `invalidated=1`, or noop when the cache is off.
 * Never blocks the logout itself: HAProxy has no rule on this answer. */
static int exchange_logout(struct conn *c, const struct spop_frame *f,
                           const uint8_t **p, unsigned nargs)
{
	struct worker *w = c->w;
	uint8_t key[CACHE_KEY_LEN], cred[CACHE_KEY_LEN];
	char cred_hash[9] = "-";  /* also what a reload to 'access' in between reads */
	const uint8_t *a;
	size_t len;
	int rc = -1;

	pthread_once(&exchange_once, exchange_static_init);
	if (w->cache && w->ck && w->cfg->cache) {
		rc = exchange_key_compute(w->cfg, w->ck, *p, f->end, nargs, key, cred,
		                          log_enabled(LOG_LVL_ACCESS) ? cred_hash : NULL);
		if (rc == -2)
			return -SPOP_ERR_INVALID;
	} else if (spop_msg_skip_args(p, f->end, nargs) < 0) {
		return -SPOP_ERR_INVALID;
	}
	if (rc == 0) {
		cache_invalidate_cred(w->cache, cred, exchange_mono_ms());
		if (log_enabled(LOG_LVL_ACCESS))
			log_access("sid=%llu fid=%llu logout: session entries invalidated cred=%s",
			           (unsigned long long)f->sid, (unsigned long long)f->fid, cred_hash);
		conn_send_ack(c, f->sid, f->fid, exchange_inval_buf, exchange_inval_len);
		return 0;
	}
	a = decision_noop_actions(&len);
	conn_send_ack(c, f->sid, f->fid, a, len);
	return 0;
}

int exchange_notify(struct conn *c, const struct spop_frame *f)
{
	const uint8_t *p = f->payload;
	struct spop_str name;
	unsigned nargs;
	int r;

	while ((r = spop_msg_next(&p, f->end, &name, &nargs)) == 1) {
		if (exchange_str_eq(&name, "exchange"))
			return exchange_start(c, f, &p, nargs);
		if (exchange_str_eq(&name, "logout"))
			return exchange_logout(c, f, &p, nargs);
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

void exchange_orphan(struct exchange *x)
{
	x->conn = NULL;
	x->prev = x->next = NULL;
}
