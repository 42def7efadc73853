/*
 * decision.c: upstream response -> struct decision with pre-encoded ACK
 * actions.
 *
 * Runs on worker threads; the result is immutable and may be shared between
 * threads (the cache, docs/cache.md). Encodes into a scratch block on the stack
 * (DECISION_STACK bytes, room for the usual answer) or, when the actions
 * need more, on the heap sized for the largest frame we could send, then
 * copies the result into a block of its exact size: one malloc per upstream
 * answer in the usual case, none per ACK.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache.h"
#include "cfg.h"
#include "claims.h"
#include "decision.h"
#include "spop.h"
#include "subject.h"
#include "upstream.h"

static const char *const decision_names[DECISION_OUTCOME_ENTRIES] = {
	[DECISION_ALLOW] = "allow",
	[DECISION_DENY] = "deny",
	[DECISION_ERROR] = "error",
};

const char *decision_outcome_to_str(enum decision_outcome o)
{
	if ((int)o < 0 || o >= DECISION_OUTCOME_ENTRIES)
		return "?";
	return decision_names[o];
}

/* ---- encoding helpers: each returns 1, or 0 when out of room ---- */

static int decision_put_str(uint8_t **p, const uint8_t *end, const char *name,
                            const char *v, size_t vlen)
{
	struct spop_data d;

	d.type = SPOP_T_STR;
	d.u.str.ptr = v;
	d.u.str.len = vlen;
	return spop_put_set_var(p, end, SPOP_SCOPE_TXN, name, strlen(name), &d);
}

static int decision_put_cstr(uint8_t **p, const uint8_t *end, const char *name,
                             const char *v)
{
	return decision_put_str(p, end, name, v, strlen(v));
}

static int decision_put_status(uint8_t **p, const uint8_t *end, long status,
                               enum decision_outcome o)
{
	struct spop_data d;

	d.type = SPOP_T_INT32;
	d.u.s64 = status;
	return spop_put_set_var(p, end, SPOP_SCOPE_TXN, "status", 6, &d) &&
	       decision_put_cstr(p, end, "outcome", decision_outcome_to_str(o));
}

/* "application/msgpack", parameters and case ignored. */
static int decision_is_msgpack(const char *ct)
{
	static const char mp[] = "application/msgpack";
	size_t n = sizeof(mp) - 1;

	if (!ct || (ct[0] | 0x20) != 'a' || strncasecmp(ct, mp, n) != 0)
		return 0;
	return ct[n] == 0 || ct[n] == ';' || ct[n] == ' ';
}

/* ---- the shared error and noop decisions ---- */

static pthread_once_t decision_once = PTHREAD_ONCE_INIT;
static struct decision *decision_err_shared;
static uint8_t decision_noop_buf[32];
static size_t decision_noop_len;
/* Static storage: the shared error decision never fails to exist. The union
 * gives the flexible array room without a GNU extension. */
#define DECISION_ERR_ROOM 64
static union {
	struct decision d;
	uint8_t raw[sizeof(struct decision) + DECISION_ERR_ROOM];
} decision_err_static;

static void decision_static_init(void)
{
	uint8_t *p = decision_err_static.d.actions;
	const uint8_t *end = p + DECISION_ERR_ROOM;

	atomic_init(&decision_err_static.d.refcnt, 1);
	decision_err_static.d.status = 0;
	decision_err_static.d.outcome = DECISION_ERROR;
	decision_put_status(&p, end, 0, DECISION_ERROR);
	decision_err_static.d.actions_len = (size_t)(p - decision_err_static.d.actions);
	decision_err_shared = &decision_err_static.d;

	p = decision_noop_buf;
	spop_put_unset_var(&p, p + sizeof(decision_noop_buf), SPOP_SCOPE_TXN, "noop", 4);
	decision_noop_len = (size_t)(p - decision_noop_buf);
}

struct decision *decision_error(void)
{
	pthread_once(&decision_once, decision_static_init);
	return decision_err_shared;
}

const uint8_t *decision_noop_actions(size_t *len)
{
	pthread_once(&decision_once, decision_static_init);
	*len = decision_noop_len;
	return decision_noop_buf;
}

/* The error decision is recognised by its fixed address, not through
 * decision_err_shared: a worker may put a decision before any thread ran
 * decision_static_init(), and reading the pointer then would race with its
 * initialisation on another thread. */
#define DECISION_IS_STATIC(d) ((d) == &decision_err_static.d)

int decision_shareable(const struct decision *d)
{
	return !d->set_cookie;
}

struct decision *decision_get(struct decision *d)
{
	if (!DECISION_IS_STATIC(d))
		atomic_fetch_add_explicit(&d->refcnt, 1, memory_order_relaxed);
	return d;
}

void decision_put(struct decision *d)
{
	if (!d || DECISION_IS_STATIC(d))
		return;
	if (atomic_fetch_sub_explicit(&d->refcnt, 1, memory_order_acq_rel) == 1)
		free(d);
}

/* ---- build ---- */

/* Bytes no header value may carry: C0 controls and DEL. */
#define DECISION_CTL_LAST 0x1f
#define DECISION_DEL 0x7f
/* Scratch bytes on the stack for the actions: a usual answer (a token of a
 * few hundred bytes, a handful of variables) fits; larger ones take the
 * max-frame-size heap block. */
#define DECISION_STACK 4096
/* A byte repeated in each of the 8 bytes of a uint64_t. */
#define DECISION_BYTES(b) ((uint64_t)(b) * UINT64_C(0x0101010101010101))

/* 1 if one of the 8 bytes of <x> is a C0 control or DEL. Exact (no false
 * positive): x - 0x20.. borrows into a byte's high bit only for a byte
 * below 0x20 (or from a lower byte that already is one), and ~x keeps only
 * bytes below 0x80; DEL is a zero byte of x ^ 0x7f... */
static int decision_word_has_ctl(uint64_t x)
{
	uint64_t hi = DECISION_BYTES(0x80);
	uint64_t d = x ^ DECISION_BYTES(DECISION_DEL);

	return (((x - DECISION_BYTES(DECISION_CTL_LAST + 1)) & ~x) |
	        ((d - DECISION_BYTES(1)) & ~d)) & hi ? 1 : 0;
}

/* The token of a 2xx text answer: <body> (<len> bytes) less exactly one
 * trailing "\n" or "\r\n", which text servers add after their output. Sets
 * <*tok_len> and returns 1; returns 0 when what is left holds a control byte
 * (CR, LF, NUL, TAB, ... or DEL): such a token cannot travel in a header, so
 * the answer is unusable. Never reads past <len>, never writes <body>. */
static int decision_token(const char *body, size_t len, size_t *tok_len)
{
	if (len >= 1 && body[len - 1] == '\n') {
		len--;
		if (len >= 1 && body[len - 1] == '\r')
			len--;
	}
	size_t i = 0;

	/* Eight bytes a step: the token is most of an allow's bytes. */
	for (; i + sizeof(uint64_t) <= len; i += sizeof(uint64_t)) {
		uint64_t w;

		memcpy(&w, body + i, sizeof(w));
		if (decision_word_has_ctl(w))
			return 0;
	}
	for (; i < len; i++) {
		unsigned char ch = (unsigned char)body[i];

		if (ch <= DECISION_CTL_LAST || ch == DECISION_DEL)
			return 0;
	}
	*tok_len = len;
	return 1;
}

/* Hook: the `subject` of an allow (subject.h), from subject-claim of the
 * token or the subject-header value; none when unset or unusable. Returns
 * 0 only when it does not fit. */
static int decision_put_subject(uint8_t **p, const uint8_t *end,
                                const struct upstream_response *r, const struct cfg *cfg)
{
	char sub[SUBJECT_MAX + 1];
	const char *v;

	if (cfg->subject_claim) {
		if (subject_from_jwt(r->body, r->body_len, cfg->subject_claim, sub) < 0)
			return 1;
		return decision_put_cstr(p, end, "subject", sub);
	}
	if (!cfg->subject_header || cfg->subject_copy_idx >= r->n_copy)
		return 1;
	v = r->copy[cfg->subject_copy_idx];
	if (!v || !subject_ok(v, strlen(v)))
		return 1;
	return decision_put_cstr(p, end, "subject", v);
}

/* Encodes every action of <r>. Returns 1, or 0 when it does not fit. */
static int decision_encode(uint8_t **p, const uint8_t *end,
                           const struct upstream_response *r, const struct cfg *cfg,
                           enum decision_outcome o, size_t token_len,
                           unsigned *claims_skipped)
{
	static const char *const sc_names[UPSTREAM_MAX_SET_COOKIE] = {
		"set_cookie", "set_cookie2", "set_cookie3", "set_cookie4",
	};
	const char *body = r->body ? r->body : "";

	if (!decision_put_status(p, end, r->status, o))
		return 0;
	if (o == DECISION_ALLOW) {
		if (!decision_put_str(p, end, "token", body, token_len))
			return 0;
	} else {
		if (!decision_put_str(p, end, "body", body, r->body_len))
			return 0;
		if (r->content_type && !decision_put_cstr(p, end, "content_type", r->content_type))
			return 0;
	}
	/* Location and WWW-Authenticate serve a refusal only (haproxy.cfg's
	 * auth_refusal): an allow does not carry them, so the allow path's ACK
	 * holds only what its rules read. */
	if (o != DECISION_ALLOW && r->location &&
	    !decision_put_cstr(p, end, "location", r->location))
		return 0;
	if (o != DECISION_ALLOW && r->www_authenticate &&
	    !decision_put_cstr(p, end, "www_authenticate", r->www_authenticate))
		return 0;
	for (unsigned i = 0; i < r->n_set_cookie && i < UPSTREAM_MAX_SET_COOKIE; i++)
		if (!decision_put_cstr(p, end, sc_names[i], r->set_cookie[i]))
			return 0;
	for (size_t i = 0; i < r->n_copy && i < cfg->n_copy_headers; i++)
		if (r->copy[i] && cfg->copy_vars[i] &&
		    !decision_put_cstr(p, end, cfg->copy_vars[i], r->copy[i]))
			return 0;
	if (o == DECISION_ALLOW && !decision_put_subject(p, end, r, cfg))
		return 0;
	if (decision_is_msgpack(r->content_type) && r->body_len) {
		/* Hook: claims.c maps each top-level msgpack key to claim.<key>. */
		int n = claims_encode(body, r->body_len, cfg->var_prefix, p, end,
		                      claims_skipped);

		/* -1: not a msgpack map: no claims, the rest stands. */
		if (n == -2)
			return 0;
	}
	return 1;
}

struct decision *decision_build(const struct upstream_response *r,
                                const struct cfg *cfg, int *too_big)
{
	enum decision_outcome o;
	struct decision *d;
	uint8_t stack[DECISION_STACK], *heap = NULL, *p;
	const uint8_t *end, *actions = NULL;
	unsigned skipped = 0;
	size_t token_len = r->body_len, len;

	*too_big = 0;
	if (r->status == 0)
		return decision_error();
	o = (r->status >= 200 && r->status < 300) ? DECISION_ALLOW : DECISION_DENY;
	/* A msgpack allow carries claims, not a text token: its body stays as is. */
	if (o == DECISION_ALLOW && !decision_is_msgpack(r->content_type) &&
	    !decision_token(r->body ? r->body : "", r->body_len, &token_len))
		return decision_error();

	/* The stack block first; the heap one only when the actions do not fit
	 * it (and could fit a frame). */
	stack[0] = 0;   /* GCC 12 takes <end>, a const pointer into it, for a read */
	p = stack;
	end = stack + (cfg->max_frame_size < sizeof(stack) ? cfg->max_frame_size : sizeof(stack));
	skipped = 0;
	if (decision_encode(&p, end, r, cfg, o, token_len, &skipped)) {
		actions = stack;
	} else if (cfg->max_frame_size > sizeof(stack)) {
		heap = malloc(cfg->max_frame_size);
		if (!heap)
			return NULL;
		p = heap;
		end = heap + cfg->max_frame_size;
		skipped = 0;
		if (decision_encode(&p, end, r, cfg, o, token_len, &skipped))
			actions = heap;
	}
	if (!actions) {
		free(heap);
		*too_big = 1;
		return decision_error();
	}
	/* A block of the exact size, never a realloc() of the scratch one: a
	 * shrunk block stays where the max-frame-size block was carved, and
	 * the decisions the cache keeps pin those places, so each build needed
	 * a new max-frame-size hole. Under eviction the arena grew without
	 * bound while the live bytes stayed flat (docs/reliability.md, make
	 * soak). */
	len = (size_t)(p - actions);
	d = malloc(sizeof(*d) + len);
	if (!d) {
		free(heap);
		return NULL;
	}
	atomic_init(&d->refcnt, 1);
	d->status = (int)r->status;
	d->outcome = o;
	d->claims_skipped = skipped;
	d->set_cookie = r->n_set_cookie > 0;
	d->l1_until_ms = 0;  /* the exchange marks it, before sharing it */
	d->actions_len = len;
	memcpy(d->actions, actions, len);
	free(heap);
	return d;
}

/* ---- the cache's hooks (cache.h: struct cache_opts) ---- */

static void decision_cache_ref(struct decision *d)
{
	decision_get(d);
}

static void decision_cache_unref(struct decision *d)
{
	decision_put(d);
}

/* Bytes the cache charges for <d>. */
static size_t decision_cache_size(const struct decision *d)
{
	return sizeof(*d) + d->actions_len;
}

void decision_cache_hooks(struct cache_opts *o)
{
	o->ref = decision_cache_ref;
	o->unref = decision_cache_unref;
	o->size = decision_cache_size;
	o->shareable = decision_shareable;
}
