/*
 * exchange.h: one NOTIFY -> one user-service call (or a cache answer) ->
 * one struct decision -> one ACK.
 *
 * Owns struct exchange (one request's lifecycle: cache, fleet, user service,
 * decision, ACK), run through the others' interfaces: args (classification),
 * cachekey, cache, fleet, upstream, decision, conn (conn_track(),
 * conn_req_done(), conn_send_ack*()) and worker (worker_env(), the inbox, the
 * work count). An exchange belongs to its worker; while its connection lives
 * it is on the connection's in-flight list (its struct conn_req). If the
 * connection closes first, the exchange is orphaned (req.conn = NULL): it
 * still completes, and its result is dropped. Nothing here blocks. Callers:
 * the worker's connections (exchange_notify(), set by main.c) and the unit
 * tests and fuzzers (exchange_request_build()).
 *
 * Return convention: 0 on success; a negative value on failure, -(enum
 * spop_error) where the connection must disconnect, else documented per
 * function (-1 malformed, -2 could not build).
 */
#ifndef SPOA_EXCHANGE_H
#define SPOA_EXCHANGE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "args.h"
#include "cache.h"
#include "conn.h"
#include "trace.h"
#include "worker.h"

struct cachekey;
struct cfg;
struct decision;
struct exchange_l2;
struct spop_frame;

struct exchange {
	struct conn_req req;            /* its NOTIFY's answer: req.conn is the
	                                 * connection, NULL once it closed (orphan) */
	struct worker *w;               /* owner */
	struct cfg *cfg;                /* reference: the cfg it started with */
	uint64_t sid, fid;              /* echoed exactly in the ACK */
	struct timespec start;
	char cred_hash[ARGS_LOG_HASH_SIZE]; /* 8 hex chars of HMAC-SHA256(credentials) or "-" */
	int breaker;                    /* enum breaker_ticket of its call */
	char trace_id[TRACE_ID_HEX + 1]; /* W3C trace-id sent, "" when none */
	int l1_ok;                      /* its request may be answered from HAProxy's L1 */
	char l1_scope[ARGS_SCOPE_MAX + 1]; /* the scope HAProxy's L1 key holds, "" = the URI */

	/* Decision cache (docs/cache.md). */
	int cache_role;                 /* EXCHANGE_CACHE_* */
	uint8_t key[CACHE_KEY_LEN];     /* LEADER: the key it must complete */
	char scope[ARGS_SCOPE_MAX + 1]; /* LEADER: the decision scope <key> holds
	                                 * (args.scope), "" when keyed on the URI */
	uint8_t cred[CACHE_KEY_LEN];    /* LEADER: its credential hash (fleet names) */
	struct exchange_l2 *l2;         /* LEADER, owned: its arguments while the fleet's
	                                 * second level is asked (fleet.h); else NULL */
	struct cache_waiter waiter;     /* WAITER: queued in the cache */
	struct decision *cache_d;       /* WAITER: the delivered answer (a reference) */
	int cache_stale;                /* WAITER: how cache_d came (CACHE_ANS_*) */
	uint8_t *own_args;              /* WAITER: owned copy of its NOTIFY arguments,
	                                 * for its own call when the leader's answer
	                                 * was private (CACHE_ANS_OWN); may be NULL */
	size_t own_args_len;
	unsigned own_nargs;
	struct worker_msg post;         /* WAITER: the leader's answer, posted to
	                                 * the owner's inbox */
};

enum {
	EXCHANGE_CACHE_BYPASS = 0,      /* cache off or no key: plain call, `cache=miss` */
	EXCHANGE_CACHE_LEADER = 1,      /* asked the user service for the key */
	EXCHANGE_CACHE_WAITER = 2,      /* coalesced on another exchange's call */
};

/* The worker's NOTIFY handler (worker_notify_fn; <w> is the struct worker):
 * handles NOTIFY frame <f> received on <c> (RUNNING). Either ACKs at once
 * (no `exchange` message: `unset-var txn noop`) or starts an exchange, on
 * <c>'s in-flight list, which ACKs through conn_req_done() when it
 * completes. If <c> closes first the exchange still completes and its
 * result is dropped; a coalesced waiter stays alive until its leader's
 * answer arrives through the worker's inbox. All frame data needed later is
 * copied: the frame may be discarded when this returns. Returns 0, or
 * -(enum spop_error) if the payload is malformed (the caller disconnects). */
int exchange_notify(void *w, struct conn *c, const struct spop_frame *f);

/* Receives the user-service request of exchange_request_build(): the URL
 * and <n> "Name: value" header lines, NUL-terminated, valid during the call. */
typedef void (*exchange_request_fn)(void *arg, const char *url, const char *const *lines,
                                    size_t n);

/* Builds what exchange_notify() would send for the <nargs> `exchange`
 * arguments at <p> (up to <end>) under <cfg>, by the same calls: one
 * args_classify(), the trace scan, the URL and header lines, and (when <key>
 * is not NULL) the cache key from the same struct args through <ck>. Calls
 * <fn>(<arg>, ...) once. Returns 0, -1 if the arguments are malformed, -2 if
 * the key or the lines could not be built. Touches no worker, connection or
 * socket; what it allocates is freed before it returns. */
int exchange_request_build(const struct cfg *cfg, struct cachekey *ck, const uint8_t *p,
                           const uint8_t *end, unsigned nargs, uint8_t key[CACHE_KEY_LEN],
                           exchange_request_fn fn, void *arg);

#endif /* SPOA_EXCHANGE_H */
