/*
 * exchange.c: NOTIFY arguments -> user-service request; response ->
 * struct decision -> ACK.
 *
 * The path is split so the cache (issue 3) can plug in between:
 *   exchange_inputs_compute()  NOTIFY args -> struct exchange_inputs
 *                              (URL, header lines, credential hash): the
 *                              request as a cache key would see it;
 *   [CACHE HOOK: look up / coalesce on the inputs here]
 *   upstream_start()           the HTTP call, on a miss;
 *   exchange_complete()        takes a struct decision *, whoever built it.
 * Never logs argument values: only the short credential hash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>

#include <openssl/evp.h>

#include "cfg.h"
#include "conn.h"
#include "decision.h"
#include "exchange.h"
#include "log.h"
#include "metrics.h"
#include "spop.h"
#include "upstream.h"
#include "worker.h"

/* The request inputs of one exchange: everything the upstream call (and a
 * cache key) depends on. All owned, copied out of the frame. */
struct exchange_inputs {
	char *url;
	char **hdrs;            /* "Name: value" lines */
	size_t n_hdrs;
	char cred_hash[9];
};

static void exchange_inputs_free(struct exchange_inputs *in)
{
	free(in->url);
	in->url = NULL;
	for (size_t i = 0; i < in->n_hdrs; i++) {
		free(in->hdrs[i]);
		in->hdrs[i] = NULL;
	}
	free(in->hdrs);
	in->hdrs = NULL;
	in->n_hdrs = 0;
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

static char *exchange_build_url(const struct cfg *cfg, const struct spop_str *uri)
{
	const char *base = cfg->user_service_url;
	size_t blen = strlen(base), ulen = uri ? uri->len : 0;
	char *url, *p;
	const char *sep;

	if (strchr(base, '?'))
		sep = (base[blen - 1] == '?' || base[blen - 1] == '&') ? "" : "&";
	else
		sep = "?";
	url = malloc(blen + 1 + 12 + 3 * ulen + 1);
	if (!url)
		return NULL;
	p = url;
	memcpy(p, base, blen);
	p += blen;
	p = stpcpy(p, sep);
	p = stpcpy(p, "request_uri=");
	if (uri)
		p = exchange_pct_encode(p, uri->ptr, ulen);
	*p = 0;
	return url;
}

static char *exchange_header_line(const char *name, size_t nlen, const char *v, size_t vlen)
{
	char *h = malloc(nlen + 2 + vlen + 1);

	if (!h)
		return NULL;
	memcpy(h, name, nlen);
	memcpy(h + nlen, ": ", 2);
	memcpy(h + nlen + 2, v, vlen);
	h[nlen + 2 + vlen] = 0;
	return h;
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
	EVP_MD_CTX *md = NULL;
	int want_hash = log_enabled(LOG_LVL_ACCESS);

	memset(in, 0, sizeof(*in));
	strcpy(in->cred_hash, "-");
	/* At most one line per argument, plus X-Forwarded-For. */
	in->hdrs = calloc((size_t)nargs + 1, sizeof(*in->hdrs));
	if (!in->hdrs)
		return -1;
	if (want_hash) {
		md = EVP_MD_CTX_new();
		if (md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
			EVP_MD_CTX_free(md);
			md = NULL;
		}
	}

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
			in->hdrs[in->n_hdrs] = exchange_header_line(name.ptr, name.len,
			                                            val.u.str.ptr, val.u.str.len);
			if (!in->hdrs[in->n_hdrs])
				goto out_oom;
			if (md) {
				EVP_DigestUpdate(md, in->hdrs[in->n_hdrs], name.len + 2 + val.u.str.len);
				EVP_DigestUpdate(md, "\n", 1);
			}
			in->n_hdrs++;
		}
	}

	if (has_xff || has_src) {
		char *h;
		size_t slen = has_src ? strlen(src) : 0;
		size_t len = (has_xff ? xff.len : 0) + (has_xff && has_src ? 2 : 0) + slen;

		h = malloc(sizeof("X-Forwarded-For: ") + len);
		if (!h)
			goto out_oom;
		sprintf(h, "X-Forwarded-For: %.*s%s%s", has_xff ? (int)xff.len : 0,
		        has_xff ? xff.ptr : "", has_xff && has_src ? ", " : "",
		        has_src ? src : "");
		in->hdrs[in->n_hdrs++] = h;
	}
	in->url = exchange_build_url(cfg, has_uri ? &uri : NULL);
	if (!in->url)
		goto out_oom;
	if (md) {
		unsigned char dg[EVP_MAX_MD_SIZE];
		unsigned dlen = 0;

		if (EVP_DigestFinal_ex(md, dg, &dlen) == 1 && dlen >= 4)
			snprintf(in->cred_hash, sizeof(in->cred_hash), "%02x%02x%02x%02x",
			         dg[0], dg[1], dg[2], dg[3]);
		EVP_MD_CTX_free(md);
		md = NULL;
	}
	return 0;

out_malformed:
	EVP_MD_CTX_free(md);
	md = NULL;
	exchange_inputs_free(in);
	return -2;
out_oom:
	EVP_MD_CTX_free(md);
	md = NULL;
	exchange_inputs_free(in);
	return -1;
}

static double exchange_elapsed_ms(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) * 1e3 +
	       (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The completion path, whoever produced <d> (upstream now, the cache later).
 * Consumes the caller's reference on <d> and frees <x>. */
static void exchange_complete(struct exchange *x, struct decision *d)
{
	struct worker *w = x->w;

	METRICS_INC(w->met.decisions[d->outcome]);
	METRICS_DEC(w->met.inflight);
	if (d->claims_skipped)
		METRICS_ADD(w->met.claims_skipped, d->claims_skipped);
	if (log_enabled(LOG_LVL_ACCESS))
		log_access("sid=%llu fid=%llu outcome=%s status=%d latency_ms=%.1f cred=%s%s",
		           (unsigned long long)x->sid, (unsigned long long)x->fid,
		           decision_outcome_to_str(d->outcome), d->status,
		           exchange_elapsed_ms(&x->start), x->cred_hash,
		           x->conn ? "" : " (connection gone, dropped)");
	if (x->conn)
		conn_exchange_done(x->conn, x, d, NULL, 0);  /* may free the connection */
	decision_put(d);
	cfg_put(x->cfg);
	x->cfg = NULL;
	free(x);
	w->n_exchanges--;
	worker_maybe_done(w);
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
	/* CACHE HOOK (issue 3): store <d> (decision_get) under the inputs key,
	 * honouring r->cache_control, and wake coalesced waiters. */
	exchange_complete(x, d);
}

/* Starts the exchange for the `exchange` message whose <nargs> arguments are
 * at <*p>. Returns 0, or -(enum spop_error). */
static int exchange_start(struct conn *c, const struct spop_frame *f,
                          const uint8_t **p, unsigned nargs)
{
	struct worker *w = c->w;
	struct exchange_inputs in;
	struct exchange *x;
	int rc;

	rc = exchange_inputs_compute(w->cfg, p, f->end, nargs, &in);
	if (rc == -2)
		return -SPOP_ERR_INVALID;

	x = calloc(1, sizeof(*x));
	if (!x) {
		exchange_inputs_free(&in);
		rc = -1;
	}
	if (rc == -1) {
		/* Out of memory: still answer, so HAProxy does not wait. */
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_ERROR, &rl, "out of memory starting an exchange");
		METRICS_INC(w->met.decisions[DECISION_ERROR]);
		{
			struct decision *d = decision_error();

			conn_send_ack(c, f->sid, f->fid, d->actions, d->actions_len);
		}
		return 0;
	}
	x->w = w;
	x->cfg = cfg_get(w->cfg);
	x->sid = f->sid;
	x->fid = f->fid;
	clock_gettime(CLOCK_MONOTONIC, &x->start);
	memcpy(x->cred_hash, in.cred_hash, sizeof(x->cred_hash));
	conn_track(c, x);
	w->n_exchanges++;
	METRICS_INC(w->met.inflight);

	/* CACHE HOOK (issue 3): look <in> up here; on a hit call
	 * exchange_complete(x, decision_get(cached)) and skip the call. */
	if (upstream_start(w->up, x->cfg, in.url, (const char *const *)in.hdrs, in.n_hdrs,
	                   exchange_upstream_done, x) < 0) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_ERROR, &rl, "cannot start the user-service request");
		exchange_inputs_free(&in);
		exchange_complete(x, decision_error());
		return 0;
	}
	exchange_inputs_free(&in);
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
		/* Other messages (e.g. `logout`, issue 3) are not ours yet. */
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
