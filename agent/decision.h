/*
 * decision.h: the immutable, refcounted result of one exchange, with its ACK
 * actions already encoded.
 *
 * Sending an ACK is then: the header spop_ack_header() writes + the action
 * bytes as they are (+ the `cache` set-var the exchange appends, see
 * docs/cache.md, which DECISION_ACK_RESERVE leaves room for). The refcount
 * is atomic so the cache can share one decision between threads; the
 * content never changes after decision_build() returns.
 *
 * Owns struct decision, and gives the cache the hooks it holds decisions
 * through (decision_cache_hooks()). Callers: exchange.c (build, ACK), the
 * fleet (decoded values), main.c (the cache's hooks), conn.c (the error
 * ACK). Return convention: builders return a reference or NULL (out of
 * memory); predicates return 1 or 0.
 */
#ifndef SPOA_DECISION_H
#define SPOA_DECISION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct cfg;
struct upstream_response;

enum decision_outcome {
	DECISION_ALLOW = 0,     /* 2xx */
	DECISION_DENY = 1,      /* any other HTTP status */
	DECISION_ERROR = 2,     /* no usable answer: status 0 */
	DECISION_OUTCOME_ENTRIES
};

/* Bytes an ACK keeps free after the actions for one more set-var (`cache`). */
#define DECISION_ACK_RESERVE 32

struct decision {
	atomic_uint refcnt;
	int status;                     /* HTTP status, 0 for error */
	enum decision_outcome outcome;
	unsigned claims_skipped;        /* claim.* keys not representable */
	int set_cookie;                 /* the answer sets cookies: it belongs to the
	                                 * one request that asked (never cached or
	                                 * shared with coalesced requests) */
	int64_t l1_until_ms;            /* wall clock (ms) until which HAProxy's L1 may
	                                 * keep it; 0 = never. Written once by the
	                                 * exchange that built it, before it is shared */
	size_t actions_len;
	uint8_t actions[];              /* encoded ACK actions, actions_len bytes */
};

/* Builds the decision for upstream response <r> under <cfg>: variables as in
 * docs/design.md. A 2xx text body (not msgpack) becomes the token less one
 * trailing "\n" or "\r\n"; any other control byte left in it makes the
 * answer unusable: the shared error decision (<*too_big> 0). If the actions do not fit cfg->max_frame_size (the largest
 * frame we could ever send), returns the shared error decision and sets
 * <*too_big> to 1 (else 0). Returns NULL only when out of memory. The result
 * carries one reference for the caller. */
struct decision *decision_build(const struct upstream_response *r,
                                const struct cfg *cfg, int *too_big);

/* The shared `status=0 outcome=error` decision (one reference for the caller;
 * it is never freed). Never NULL. */
struct decision *decision_error(void);

/* Encoded actions of the `unset-var txn noop` ACK (for NOTIFYs carrying no
 * exchange message); sets <*len>. Static storage. */
const uint8_t *decision_noop_actions(size_t *len);

/* 0 if <d> must answer only the request it was built for (it carries
 * Set-Cookie: a login nonce or a session handed to one client), else 1. The
 * cache's shareable() hook. */
int decision_shareable(const struct decision *d);

/* Takes a reference. Any thread. */
struct decision *decision_get(struct decision *d);

/* Drops a reference; frees on the last one. NULL ok. Any thread. */
void decision_put(struct decision *d);

/* "allow", "deny", "error". */
const char *decision_outcome_to_str(enum decision_outcome o);

/* Sets the decision hooks of the cache's options <o> (ref, unref, size,
 * shareable): the cache holds decisions only through them. */
struct cache_opts;
void decision_cache_hooks(struct cache_opts *o);

#endif /* SPOA_DECISION_H */
