/*
 * cache.h: the shared, sharded decision cache (docs/cache.md).
 *
 * One cache per agent process, used by every worker thread. It maps a 32-byte
 * key (cachekey.h) to a refcounted struct decision, coalesces concurrent misses
 * of one key into one user-service call, can serve an entry shortly past its
 * expiry when the user service fails (stale-if-error), and drops a session's
 * entries on logout. It is pure of I/O: no sockets, no libev, no logging, no
 * clock (callers pass a monotonic now_ms). It never sees a credential, only
 * digests. See docs/cache.md for the design and its costs.
 *
 * Thread safety: every function may be called from any thread, except
 * cache_new() and cache_free(). Waiter callbacks run on the thread that calls
 * cache_complete()/cache_fail(), never under a cache lock, so they may take
 * other locks (a worker's inbox).
 */
#ifndef SPOA_CACHE_H
#define SPOA_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define CACHE_KEY_LEN 32

/* Owned by decision.c: immutable, refcounted (atomically). The cache only
 * moves references through the callbacks below. */
struct decision;
struct cache;

struct cache_opts {
	size_t max_entries;   /* bound on stored entries (>= 1) */
	size_t max_bytes;     /* bound on charged bytes: per entry sizeof(entry) + size(d) */
	unsigned shards;      /* power of two; 0 = 64. Lowered until each shard gets at
	                       * least 16 entries and 4 KiB: the bounds are split
	                       * evenly between shards (rounded down) */
	uint32_t stale_grace_ms;  /* stale-if-error window past expiry; 0 = off */
	uint32_t logout_hold_ms;  /* after cache_invalidate_cred(), answers for that
	                           * credential are not stored for this long (covers
	                           * calls racing with the logout); 0 = off */
	void (*ref)(struct decision *d);         /* +1, thread-safe */
	void (*unref)(struct decision *d);       /* -1, frees at 0, thread-safe */
	size_t (*size)(const struct decision *d); /* bytes to charge for <d> */
	/* 0 if <d> must never answer another request than its leader's (it
	 * carries Set-Cookie): not stored, and the waiters get CACHE_ANS_OWN.
	 * NULL: every decision is shareable. */
	int (*shareable)(const struct decision *d);
};

/* How a waiter's answer came. */
enum cache_ans {
	CACHE_ANS_SHARED = 0,  /* the leader's answer, or a fresh entry */
	CACHE_ANS_STALE,       /* an entry served past its expiry */
	CACHE_ANS_OWN,         /* no answer (d = NULL): the leader's was private to
	                        * it; the waiter must make its own call */
};

/* A coalesced request waiting for a leader. Caller storage: it must stay valid
 * until <cb> has run or cache_cancel() returned 0. <next> belongs to the cache
 * while queued. */
struct cache_waiter {
	/* Called exactly once, from the leader's thread, with no cache lock held:
	 * <d> is a reference the callee now owns (NULL: no answer, an error, or
	 * <how> = CACHE_ANS_OWN); <how> is an enum cache_ans. */
	void (*cb)(struct cache_waiter *w, struct decision *d, int how);
	struct cache_waiter *next;
};

enum cache_res {
	CACHE_HIT = 0,    /* *out holds a reference */
	CACHE_MISS,       /* the caller is the leader: it must call cache_complete()
	                   * or cache_fail() exactly once for this key */
	CACHE_COALESCED,  /* <w> is queued: its cb will deliver the leader's answer */
	CACHE_STALE,      /* never returned by cache_lookup(): the label for an
	                   * answer that was an entry past its expiry (stale = 1,
	                   * or *stale_out set), for txn.<prefix>.cache = "stale" */
};

struct cache_stats {
	uint64_t entries, bytes;       /* now */
	uint64_t pending;              /* leaders in flight now */
	uint64_t evictions;            /* live entries evicted for room */
	uint64_t expired;              /* dead entries reclaimed (lookup, hand, sweeper) */
	uint64_t hits, misses, coalesced;
	uint64_t stale;                /* stale answers handed out (leader + waiters) */
	uint64_t invalidated;          /* entries dropped by cache_invalidate_*() */
};

/* Builds a cache. <o> is copied. Returns NULL with a message in <err> on a bad
 * option (missing callback, zero bound, shards not a power of two, more than
 * 2^28 entries) or OOM. */
struct cache *cache_new(const struct cache_opts *o, char *err, size_t errlen);

/* Frees the cache and drops its references. NULL-tolerant. Call it only when no
 * other thread uses the cache any more; leaders still pending are forgotten and
 * their waiters are NOT called (their workers are gone by then). */
void cache_free(struct cache *c);

/* Looks up <key> (32 bytes) at monotonic <now_ms>; <cred> is the key's
 * credential hash (32 bytes), stored with a new leader for invalidation.
 *   HIT:       fresh entry: *out = a new reference. Costs one shard lock, a
 *              visited bit and one ref().
 *   COALESCED: a leader is in flight for <key>: <w> (cb set by the caller) is
 *              queued; *out = NULL.
 *   MISS:      *out = NULL; the caller is now the leader and MUST end with
 *              exactly one cache_complete() or cache_fail() for <key>, even if
 *              its own request was abandoned, or the waiters hang.
 * <w> may be NULL: the caller will not wait, and is a MISS leader that does
 * not block others. Its completion is not told apart from the real leader's,
 * so until it completes, new leaders of its shard do not store (see
 * docs/cache.md, "leaders without a flight"). */
enum cache_res cache_lookup(struct cache *c, const uint8_t key[CACHE_KEY_LEN],
                            const uint8_t cred[CACHE_KEY_LEN], uint64_t now_ms,
                            struct decision **out, struct cache_waiter *w);

/* Writes the credential hash of the key being looked up into <cred>. */
typedef void (*cache_cred_fn)(void *arg, uint8_t cred[CACHE_KEY_LEN]);

/* cache_lookup() for callers whose credential hash costs something to
 * finish (a hit needs only the key): <cred_fn>(<arg>, ...) is called at most
 * once, on the caller's thread under the shard lock, and only when the lookup
 * creates a flight (a MISS with a waiter); it must not call into the cache. */
enum cache_res cache_lookup_lazy(struct cache *c, const uint8_t key[CACHE_KEY_LEN],
                                 cache_cred_fn cred_fn, void *arg, uint64_t now_ms,
                                 struct decision **out, struct cache_waiter *w);

/* Leader completion. <d> is the new decision (borrowed: the cache and every
 * waiter take their own references), or NULL on error (same as cache_fail()
 * with no fallback). <ttl_ms> 0 = answer the waiters but do not store. The
 * answer is not stored either if the key's credential was invalidated since
 * the lookup began, if it is held after a logout, or if it alone exceeds a
 * shard's byte bound, or if shareable(<d>) is 0: then the waiters get NULL
 * and CACHE_ANS_OWN. Else wakes every waiter with <d> (CACHE_ANS_SHARED).
 * <stale_out> is used only on error (see cache_fail()); may be NULL. */
void cache_complete(struct cache *c, const uint8_t key[CACHE_KEY_LEN], struct decision *d,
                    uint32_t ttl_ms, uint64_t now_ms, struct decision **stale_out);

/* Leader completion with an answer that holds for the leader's request only
 * (e.g. the user service narrowed it below the key's scope): nothing is
 * stored, and the waiters get NULL and CACHE_ANS_OWN (each asks for itself).
 * <d> is borrowed and may be NULL. */
void cache_complete_private(struct cache *c, const uint8_t key[CACHE_KEY_LEN],
                            struct decision *d, uint64_t now_ms);

/* Leader completion when the user service failed (no answer, timeout, 5xx).
 * If stale-if-error is on and <key> has an entry expired less than
 * stale_grace_ms ago (or a fresh one), that entry is the answer: *stale_out
 * (if not NULL) gets a reference, and the waiters get it with stale = 1
 * (stale = 0 if it is fresh). Otherwise *stale_out = NULL and the waiters get
 * <fallback> (borrowed, may be NULL: e.g. the 5xx decision to pass through),
 * or CACHE_ANS_OWN if shareable(<fallback>) is 0. Nothing is stored. */
void cache_fail(struct cache *c, const uint8_t key[CACHE_KEY_LEN], struct decision *fallback,
                uint64_t now_ms, struct decision **stale_out);

/* Dequeues waiter <w> of <key> (its request was abandoned). Returns 0 if it was
 * removed (its cb will not run), -1 if it was not queued any more: its cb has
 * run or is running on the leader's thread, so <w> must stay valid until the
 * cb's delivery arrives. */
int cache_cancel(struct cache *c, const uint8_t key[CACHE_KEY_LEN], struct cache_waiter *w);

/* Logout: every entry stored with credential hash <cred> becomes a miss now,
 * leaders in flight for it will not store their answer (their waiters still
 * get it), and for logout_hold_ms after <now_ms> no answer for <cred> is
 * stored. The hold is O(1), in one fixed table (CACHE_HOLD_SETS sets of
 * CACHE_HOLD_WAYS credentials): a set that overflows holds every credential
 * of that set until its displaced hold ends, never the whole cache. When no
 * entry or flight may have <cred> (a counting filter says so, as for any
 * unknown cookie) no shard is locked; otherwise each shard is locked in turn,
 * O(shards + entries of <cred>). */
void cache_invalidate_cred(struct cache *c, const uint8_t cred[CACHE_KEY_LEN], uint64_t now_ms);

/* Is <cred> within its logout hold (cache_invalidate_cred() less than
 * logout_hold_ms ago)? An answer from elsewhere (the fleet's second level)
 * must then not be used: it may predate the invalidation. Any thread; takes
 * no shard lock; one atomic load when no hold is live. */
int cache_cred_held(struct cache *c, const uint8_t cred[CACHE_KEY_LEN], uint64_t now_ms);

/* Drops every entry; leaders in flight will not store. */
void cache_invalidate_all(struct cache *c);

/* Sums the per-shard counters into <st> (each shard read under its lock). */
void cache_stats(struct cache *c, struct cache_stats *st);

#endif /* SPOA_CACHE_H */
