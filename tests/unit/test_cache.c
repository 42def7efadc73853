/*
 * test_cache.c: unit tests of the shared decision cache (agent/cache.c).
 *
 * What it does: hits, misses and TTL; coalescing (every waiter answered
 * exactly once, cancel); stale-if-error within and past the grace; SIEVE
 * eviction under the entry bound and the byte bound keeping the hot set;
 * reclaiming expired entries; invalidation by credential and of everything,
 * also while a leader is in flight; logout holds and their bounded table;
 * leaders without a flight; option checks; struct sizes (per-entry overhead);
 * and a multi-threaded random workload with a refcount-checking fake decision
 * (run it under ThreadSanitizer: make tsan).
 *
 * What it never does: depend on anything but cache.c (included, to see the
 * struct sizes and the queue) and pthreads.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.c"
#include "tap.h"

/* ---- a fake refcounted decision ----------------------------------------- */

#define DEC_MAGIC 0x5eca11edu

struct decision {
	atomic_int refs;
	uint32_t magic;
	int key;        /* which key it answers */
	size_t size;
	int own;        /* private to its leader (like a Set-Cookie answer) */
};

static atomic_long dec_live;     /* decisions not freed yet */
static atomic_long dec_bad;      /* refcount misuse seen */

static struct decision *dec_new(int key, size_t size)
{
	struct decision *d = malloc(sizeof(*d));

	if (!d)
		abort();
	atomic_init(&d->refs, 1);
	d->magic = DEC_MAGIC;
	d->key = key;
	d->size = size;
	d->own = 0;
	atomic_fetch_add(&dec_live, 1);
	return d;
}

static void dec_ref(struct decision *d)
{
	if (d->magic != DEC_MAGIC || atomic_fetch_add(&d->refs, 1) <= 0)
		atomic_fetch_add(&dec_bad, 1);
}

static void dec_unref(struct decision *d)
{
	int r;

	if (d->magic != DEC_MAGIC) {
		atomic_fetch_add(&dec_bad, 1);
		return;
	}
	r = atomic_fetch_sub(&d->refs, 1);
	if (r <= 0)
		atomic_fetch_add(&dec_bad, 1);
	if (r == 1) {
		d->magic = 0;
		free(d);
		atomic_fetch_sub(&dec_live, 1);
	}
}

static size_t dec_size(const struct decision *d)
{
	return d->size;
}

static int dec_shareable(const struct decision *d)
{
	return !d->own;
}

static int dec_refs(struct decision *d)
{
	return atomic_load(&d->refs);
}

/* ---- keys ---------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* A key-like 32 bytes for <i> in namespace <ns>. */
static void mkkey(uint8_t k[CACHE_KEY_LEN], uint64_t ns, uint64_t i)
{
	uint64_t w;
	int j;

	for (j = 0; j < 4; j++) {
		w = mix64(ns * 0x100000000ull + i * 4 + (uint64_t)j);
		memcpy(k + 8 * j, &w, 8);
	}
}

#define KEY(i)  (mkkey(kbuf, 1, (i)), kbuf)
#define CRED(i) (mkkey(cbuf, 2, (i)), cbuf)

static uint8_t kbuf[CACHE_KEY_LEN], cbuf[CACHE_KEY_LEN];

static struct cache *mkcache(size_t max_entries, size_t max_bytes, unsigned shards,
                             uint32_t grace, uint32_t hold)
{
	struct cache_opts o = { max_entries, max_bytes, shards, grace, hold,
		                dec_ref, dec_unref, dec_size, dec_shareable };
	char err[128];
	struct cache *c = cache_new(&o, err, sizeof(err));

	if (!c)
		diag("cache_new: %s", err);
	return c;
}

/* ---- waiters ------------------------------------------------------------- */

struct twaiter {
	struct cache_waiter w;   /* first: the callback gets &w */
	int calls;
	int stale;
	struct decision *d;
};

static void twaiter_cb(struct cache_waiter *w, struct decision *d, int stale)
{
	struct twaiter *t = (struct twaiter *)w;

	t->calls++;
	t->stale = stale;
	t->d = d;
}

static void twaiter_init(struct twaiter *t)
{
	memset(t, 0, sizeof(*t));
	t->w.cb = twaiter_cb;
}

/* Leader helper: MISS then complete with a fresh decision. */
static struct decision *put(struct cache *c, int key, int cred, size_t size, uint32_t ttl,
                            uint64_t now)
{
	struct decision *d = NULL, *out;
	struct twaiter t;
	uint8_t k[32], cr[32];

	twaiter_init(&t);
	mkkey(k, 1, (uint64_t)key);
	mkkey(cr, 2, (uint64_t)cred);
	if (cache_lookup(c, k, cr, now, &out, &t.w) != CACHE_MISS) {
		if (out)
			dec_unref(out);
		return NULL;
	}
	d = dec_new(key, size);
	cache_complete(c, k, d, ttl, now, NULL);
	dec_unref(d);
	return d;
}

/* Lookup that expects a hit and drops the reference; returns 1 on a hit. A
 * miss is completed with an error so the leader contract holds. */
static int hit(struct cache *c, int key, uint64_t now)
{
	struct decision *out;
	struct twaiter t;
	enum cache_res r;
	uint8_t k[32];

	twaiter_init(&t);
	mkkey(k, 1, (uint64_t)key);
	r = cache_lookup(c, k, CRED(0), now, &out, &t.w);
	if (r == CACHE_HIT) {
		int good = out && out->key == key;

		dec_unref(out);
		return good;
	}
	if (r == CACHE_MISS)
		cache_fail(c, k, NULL, now, NULL);
	return 0;
}

/* ---- tests --------------------------------------------------------------- */

static void test_sizes(void)
{
	diag("sizeof(struct cache_entry)  = %zu", sizeof(struct cache_entry));
	diag("sizeof(struct cache_flight) = %zu", sizeof(struct cache_flight));
	diag("sizeof(struct cache_shard)  = %zu", sizeof(struct cache_shard));
	if (sizeof(void *) == 8)
		is_int(sizeof(struct cache_entry), 120, "entry is 120 bytes on LP64 (docs/cache.md)");
	ok(sizeof(struct cache_shard) % CACHE_LINE == 0, "shards are cache-line sized");
}

static void test_opts(void)
{
	struct cache_opts o = { 100, 1 << 20, 64, 0, 0, dec_ref, dec_unref, dec_size };
	struct cache *c;
	char err[128];

	o.shards = 48;
	ok(!cache_new(&o, err, sizeof(err)) && strstr(err, "power of two"), "48 shards: %s", err);
	o.shards = 64;
	o.max_entries = 0;
	ok(!cache_new(&o, err, sizeof(err)), "0 entries refused: %s", err);
	o.max_entries = (size_t)1 << 29;
	ok(!cache_new(&o, err, sizeof(err)), "2^29 entries refused: %s", err);
	o.max_entries = 100;
	o.max_bytes = 0;
	ok(!cache_new(&o, err, sizeof(err)), "0 bytes refused: %s", err);
	o.max_bytes = 1 << 20;
	o.size = NULL;
	ok(!cache_new(&o, err, sizeof(err)), "missing callback refused: %s", err);
	o.size = dec_size;

	c = cache_new(&o, err, sizeof(err));
	if (ok(c != NULL, "100 entries, 1 MiB, 64 shards")) {
		is_int(c->nshards, 4, "  shards lowered to 4 (16 entries each at least)");
		is_int(c->shards[0].max_n, 25, "  25 entries each (total <= 100)");
		cache_free(c);
	}
	o.max_entries = 100000;
	c = cache_new(&o, err, sizeof(err));
	if (ok(c != NULL, "100000 entries")) {
		is_int(c->nshards, 64, "  64 shards kept");
		is_int(c->nbuckets, 2048, "  buckets: next power of two of 1562");
		cache_free(c);
	}
	o.max_entries = 10;
	c = cache_new(&o, err, sizeof(err));
	if (ok(c != NULL, "10 entries")) {
		is_int(c->nshards, 1, "  one shard");
		cache_free(c);
	}
	o.max_entries = 1000;
	o.max_bytes = 20000;
	o.shards = 0;
	c = cache_new(&o, err, sizeof(err));
	if (ok(c != NULL, "20000 bytes, default shards")) {
		is_int(c->nshards, 4, "  shards lowered to keep 4 KiB each");
		ok(c->shards[0].max_bytes * c->nshards <= 20000, "  bounds split, never exceeded");
		cache_free(c);
	}
	cache_free(NULL);
	ok(1, "cache_free(NULL)");
}

static void test_basic(void)
{
	struct cache *c = mkcache(100, 1 << 20, 1, 0, 0);
	struct decision *d, *out;
	struct cache_stats st;
	struct twaiter t;

	if (!c)
		return;
	twaiter_init(&t);
	is_int(cache_lookup(c, KEY(1), CRED(1), 1000, &out, &t.w), CACHE_MISS, "first lookup: miss");
	ok(out == NULL, "  no decision");
	d = dec_new(1, 10);
	cache_complete(c, KEY(1), d, 500, 1000, NULL);
	is_int(dec_refs(d), 2, "stored: the cache holds one reference");
	is_int(cache_lookup(c, KEY(1), CRED(1), 1499, &out, &t.w), CACHE_HIT, "hit before expiry");
	ok(out == d, "  same decision");
	is_int(dec_refs(d), 3, "  a reference for the caller");
	dec_unref(out);
	ok(c->shards[0].head->visited, "  visited bit set");
	is_int(cache_lookup(c, KEY(1), CRED(1), 1500, &out, &t.w), CACHE_MISS, "miss at expiry");
	is_int(dec_refs(d), 1, "  dead entry reclaimed at once (grace off)");
	cache_complete(c, KEY(1), NULL, 0, 1500, NULL);

	/* ttl 0: answered, not stored */
	cache_lookup(c, KEY(2), CRED(1), 2000, &out, &t.w);
	cache_complete(c, KEY(2), d, 0, 2000, NULL);
	is_int(dec_refs(d), 1, "ttl 0: not stored");
	is_int(cache_lookup(c, KEY(2), CRED(1), 2000, &out, &t.w), CACHE_MISS, "  still a miss");
	cache_complete(c, KEY(2), NULL, 0, 2000, NULL);

	/* refresh replaces */
	dec_unref(d);
	put(c, 3, 1, 10, 100, 3000);
	put(c, 3, 1, 20, 100, 3200);
	cache_stats(c, &st);
	is_int(st.entries, 1, "refresh after expiry: one entry");
	is_int(st.bytes, sizeof(struct cache_entry) + 20, "  bytes charged: entry + size()");
	is_int(st.hits, 1, "stats: hits");
	is_int(st.misses, 6, "stats: misses");
	is_int(st.expired, 2, "stats: expired");
	is_int(st.pending, 0, "stats: nothing pending");

	/* a decision bigger than the shard's bytes is answered but not stored */
	cache_free(c);
	c = mkcache(100, 8192, 1, 0, 0);
	if (!c)
		return;
	put(c, 4, 1, 9000, 1000, 0);
	cache_stats(c, &st);
	is_int(st.entries, 0, "oversized decision not stored");
	is_int(atomic_load(&dec_live), 0, "  and released");
	cache_free(c);
}

static void test_coalescing(void)
{
	enum { N = 100 };
	struct cache *c = mkcache(100, 1 << 20, 4, 0, 0);
	struct twaiter t[N], lead;
	struct decision *d, *out;
	struct cache_stats st;
	int i, once = 1, same = 1;

	if (!c)
		return;
	twaiter_init(&lead);
	is_int(cache_lookup(c, KEY(7), CRED(7), 0, &out, &lead.w), CACHE_MISS, "leader");
	for (i = 0; i < N; i++) {
		twaiter_init(&t[i]);
		if (cache_lookup(c, KEY(7), CRED(7), 1, &out, &t[i].w) != CACHE_COALESCED)
			once = 0;
	}
	ok(once, "%d concurrent misses coalesced", N);
	cache_stats(c, &st);
	is_int(st.pending, 1, "one leader pending");
	is_int(st.coalesced, N, "stats: coalesced");
	is_int(cache_cancel(c, KEY(7), &t[N - 1].w), 0, "cancel the last waiter");
	is_int(cache_cancel(c, KEY(7), &t[N - 1].w), -1, "  twice: not queued");
	is_int(cache_cancel(c, KEY(7), &t[0].w), 0, "cancel the first waiter");
	for (i = 0; i < N; i++)
		if (t[i].calls)
			once = 0;
	ok(once, "nobody called before completion");

	d = dec_new(7, 10);
	cache_complete(c, KEY(7), d, 1000, 2, NULL);
	once = 1;
	for (i = 1; i < N - 1; i++) {
		if (t[i].calls != 1)
			once = 0;
		if (t[i].d != d || t[i].stale)
			same = 0;
	}
	ok(once, "every waiter called exactly once");
	ok(same, "  with the leader's answer, not stale");
	ok(t[0].calls == 0 && t[N - 1].calls == 0, "cancelled waiters not called");
	is_int(dec_refs(d), 1 + 1 + (N - 2), "a reference per waiter + cache + ours");
	for (i = 1; i < N - 1; i++)
		dec_unref(t[i].d);
	is_int(cache_cancel(c, KEY(7), &t[3].w), -1, "cancel after completion: -1");
	is_int(cache_lookup(c, KEY(7), CRED(7), 3, &out, &lead.w), CACHE_HIT, "stored for the next one");
	dec_unref(out);
	dec_unref(d);

	/* error: waiters get NULL */
	twaiter_init(&t[0]);
	twaiter_init(&t[1]);
	cache_lookup(c, KEY(8), CRED(8), 0, &out, &lead.w);
	cache_lookup(c, KEY(8), CRED(8), 0, &out, &t[0].w);
	cache_lookup(c, KEY(8), CRED(8), 0, &out, &t[1].w);
	cache_complete(c, KEY(8), NULL, 1000, 0, &out);
	ok(t[0].calls == 1 && t[1].calls == 1 && !t[0].d && !t[1].d, "error: waiters get NULL once");
	ok(out == NULL, "  no stale for the leader");

	/* a 5xx fallback decision goes to the waiters, unstored */
	twaiter_init(&t[0]);
	d = dec_new(8, 10);
	cache_lookup(c, KEY(8), CRED(8), 0, &out, &lead.w);
	cache_lookup(c, KEY(8), CRED(8), 0, &out, &t[0].w);
	cache_fail(c, KEY(8), d, 0, &out);
	ok(t[0].calls == 1 && t[0].d == d && !t[0].stale && out == NULL, "fail with fallback");
	dec_unref(t[0].d);
	dec_unref(d);
	is_int(cache_lookup(c, KEY(8), CRED(8), 0, &out, &lead.w), CACHE_MISS, "  not stored");
	cache_fail(c, KEY(8), NULL, 0, NULL);
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "all released");
}

static void test_stale(void)
{
	struct cache *c = mkcache(100, 1 << 20, 1, 5000, 0);
	struct decision *d, *out;
	struct cache_stats st;
	struct twaiter lead, w1;

	if (!c)
		return;
	d = put(c, 1, 1, 10, 1000, 0);
	twaiter_init(&lead);
	twaiter_init(&w1);
	is_int(cache_lookup(c, KEY(1), CRED(1), 1500, &out, &lead.w), CACHE_MISS,
	       "expired within grace: a miss (go ask)");
	is_int(cache_lookup(c, KEY(1), CRED(1), 1500, &out, &w1.w), CACHE_COALESCED, "  waiter");
	cache_complete(c, KEY(1), NULL, 0, 1600, &out);
	ok(out == d, "service failed: the leader gets the stale entry");
	ok(w1.calls == 1 && w1.d == d && w1.stale == 1, "  the waiter too, marked stale");
	dec_unref(out);
	dec_unref(w1.d);
	cache_stats(c, &st);
	is_int(st.stale, 2, "stats: 2 stale answers");

	is_int(cache_lookup(c, KEY(1), CRED(1), 5999, &out, &lead.w), CACHE_MISS, "just within grace");
	cache_fail(c, KEY(1), NULL, 5999, &out);
	ok(out == d, "  still served");
	dec_unref(out);

	is_int(cache_lookup(c, KEY(1), CRED(1), 6000, &out, &lead.w), CACHE_MISS, "past grace");
	cache_fail(c, KEY(1), NULL, 6000, &out);
	ok(out == NULL, "  not served");
	is_int(atomic_load(&dec_live), 0, "  and reclaimed");

	/* a successful refresh after expiry replaces the stale entry */
	put(c, 2, 1, 10, 1000, 0);
	d = put(c, 2, 1, 10, 1000, 1200);
	ok(d != NULL, "refresh within grace");
	cache_stats(c, &st);
	is_int(st.entries, 1, "  one entry");
	ok(hit(c, 2, 2100), "  the new one is fresh");
	cache_free(c);

	/* grace off: never stale */
	c = mkcache(100, 1 << 20, 1, 0, 0);
	if (!c)
		return;
	put(c, 1, 1, 10, 1000, 0);
	cache_lookup(c, KEY(1), CRED(1), 1001, &out, &lead.w);
	cache_fail(c, KEY(1), NULL, 1001, &out);
	ok(out == NULL, "grace off: no stale");
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "all released");
}

/* Hot keys re-accessed now and then survive a long scan of cold keys. */
static void test_evict_entries(void)
{
	enum { CAP = 100, HOT = 10, COLD = 1000, EVERY = 25 };
	struct cache *c = mkcache(CAP, (size_t)1 << 30, 1, 0, 0);
	struct cache_stats st;
	int i, h, hot_ok = 1, bound_ok = 1;

	if (!c)
		return;
	for (h = 0; h < HOT; h++) {
		put(c, h, 0, 10, 1000000, 0);
		hit(c, h, 1);
	}
	for (i = 0; i < COLD; i++) {
		put(c, 1000 + i, 0, 10, 1000000, 2);
		cache_stats(c, &st);
		if (st.entries > CAP)
			bound_ok = 0;
		if (i % EVERY == EVERY - 1)
			for (h = 0; h < HOT; h++)
				if (!hit(c, h, 3))
					hot_ok = 0;
	}
	ok(bound_ok, "entries never above %d", CAP);
	ok(hot_ok, "hot keys hit during the scan");
	for (h = 0; h < HOT; h++)
		if (!hit(c, h, 4))
			hot_ok = 0;
	ok(hot_ok, "hot keys all survive %d cold ones", COLD);
	cache_stats(c, &st);
	is_int(st.entries, CAP, "cache full");
	is_int(st.evictions, HOT + COLD - CAP, "evictions counted");
	ok(!hit(c, 1000, 5), "the first cold key is gone");
	ok(hit(c, 1000 + COLD - 1, 5), "the last cold key is there");
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "all released");
}

static void test_evict_bytes(void)
{
	enum { HOT = 8, COLD = 500, EVERY = 16, SZ = 900 };
	size_t max = 64 * 1024, charge = sizeof(struct cache_entry) + SZ;
	struct cache *c = mkcache(100000, max, 1, 0, 0);
	struct cache_stats st;
	int i, h, hot_ok = 1, bound_ok = 1;

	if (!c)
		return;
	for (h = 0; h < HOT; h++) {
		put(c, h, 0, SZ, 1000000, 0);
		hit(c, h, 1);
	}
	for (i = 0; i < COLD; i++) {
		put(c, 1000 + i, 0, SZ, 1000000, 2);
		cache_stats(c, &st);
		if (st.bytes > max || st.bytes != st.entries * charge)
			bound_ok = 0;
		if (i % EVERY == EVERY - 1)
			for (h = 0; h < HOT; h++)
				if (!hit(c, h, 3))
					hot_ok = 0;
	}
	ok(bound_ok, "bytes never above %zu and exact", max);
	ok(hot_ok, "hot keys hit during the scan");
	cache_stats(c, &st);
	is_int(st.entries, max / charge, "as many entries as bytes allow");
	for (h = 0; h < HOT; h++)
		if (!hit(c, h, 4))
			hot_ok = 0;
	ok(hot_ok, "hot keys all survive under the byte bound");
	/* one big decision makes room by evicting several */
	put(c, 5000, 0, 10 * SZ, 1000000, 5);
	cache_stats(c, &st);
	ok(st.bytes <= max && hit(c, 5000, 6), "a big entry evicts several (%llu entries)",
	   (unsigned long long)st.entries);
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "all released");
}

static void test_expired_reclaim(void)
{
	struct cache *c = mkcache(1000, (size_t)1 << 30, 1, 0, 0);
	struct cache_stats st;
	int i;

	if (!c)
		return;
	for (i = 0; i < 100; i++)
		put(c, i, 0, 10, 100, 0);
	put(c, 500, 0, 10, 1000000, 0);
	cache_stats(c, &st);
	is_int(st.entries, 101, "101 entries");
	/* later misses on other keys sweep a few entries each, never the live one */
	for (i = 0; i < 20; i++)
		put(c, 1000 + i, 0, 10, 1000000, 200);
	cache_stats(c, &st);
	is_int(st.expired, 100, "sweeper reclaimed the 100 expired entries");
	is_int(st.entries, 21, "  live ones kept");
	is_int(st.evictions, 0, "  nothing evicted");
	ok(hit(c, 500, 300), "  live entry still hits");
	cache_free(c);

	/* a full cache of dead entries: the hand takes them, visited or not */
	c = mkcache(10, (size_t)1 << 30, 1, 0, 0);
	if (!c)
		return;
	for (i = 0; i < 10; i++) {
		put(c, i, 0, 10, 100, 0);
		hit(c, i, 1);
	}
	for (i = 0; i < 5; i++) {
		struct decision *out, *d;
		struct twaiter t;
		uint8_t k[32];

		/* looked up while nothing is dead yet, completed later: the
		 * entries are visited, yet the dead ones go before any live one */
		twaiter_init(&t);
		mkkey(k, 1, (uint64_t)(100 + i));
		cache_lookup(c, k, CRED(0), 50, &out, &t.w);
		d = dec_new(100 + i, 10);
		cache_complete(c, k, d, 100, 200, NULL);
		dec_unref(d);
	}
	cache_stats(c, &st);
	ok(st.expired >= 5 && st.evictions == 0, "dead entries reclaimed before live ones "
	   "(expired %llu, evicted %llu)", (unsigned long long)st.expired,
	   (unsigned long long)st.evictions);
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "all released");
}

static void test_invalidate(void)
{
	struct cache *c = mkcache(1000, (size_t)1 << 30, 8, 0, 0);
	struct decision *d, *out;
	struct cache_stats st;
	struct twaiter lead, w1;
	int i, good = 1;

	if (!c)
		return;
	for (i = 0; i < 30; i++)
		put(c, i, i % 3, 10, 100000, 0);
	cache_invalidate_cred(c, CRED(1), 10);
	for (i = 0; i < 30; i++)
		if (hit(c, i, 20) != (i % 3 != 1))
			good = 0;
	ok(good, "logout of cred 1 drops exactly its 10 entries, in every shard");
	cache_stats(c, &st);
	is_int(st.invalidated, 10, "stats: invalidated");

	/* while a leader is pending */
	twaiter_init(&lead);
	twaiter_init(&w1);
	is_int(cache_lookup(c, KEY(100), CRED(5), 30, &out, &lead.w), CACHE_MISS, "leader for cred 5");
	is_int(cache_lookup(c, KEY(100), CRED(5), 30, &out, &w1.w), CACHE_COALESCED, "  a waiter");
	cache_invalidate_cred(c, CRED(5), 31);
	d = dec_new(100, 10);
	cache_complete(c, KEY(100), d, 100000, 32, NULL);
	ok(w1.calls == 1 && w1.d == d, "the waiter still gets the leader's answer");
	dec_unref(w1.d);
	is_int(dec_refs(d), 1, "  but it is not stored");
	dec_unref(d);
	ok(!hit(c, 100, 33), "  next lookup misses");
	ok(put(c, 100, 5, 10, 100000, 34) != NULL && hit(c, 100, 35),
	   "a lookup after the logout stores again (hold off)");

	/* other credentials' leaders are unaffected */
	cache_lookup(c, KEY(101), CRED(6), 40, &out, &lead.w);
	cache_invalidate_cred(c, CRED(5), 41);
	cache_complete(c, KEY(101), d = dec_new(101, 10), 100000, 42, NULL);
	dec_unref(d);
	ok(hit(c, 101, 43), "another credential's leader stores");

	/* everything */
	twaiter_init(&w1);
	cache_lookup(c, KEY(102), CRED(6), 50, &out, &lead.w);
	cache_lookup(c, KEY(102), CRED(6), 50, &out, &w1.w);
	cache_invalidate_all(c);
	cache_stats(c, &st);
	is_int(st.entries, 0, "invalidate_all: empty");
	is_int(st.bytes, 0, "  no bytes");
	cache_complete(c, KEY(102), d = dec_new(102, 10), 100000, 51, NULL);
	ok(w1.calls == 1 && w1.d == d, "  pending waiter answered");
	dec_unref(w1.d);
	dec_unref(d);
	ok(!hit(c, 102, 52), "  pending answer not stored");
	good = 1;
	for (i = 0; i < 30; i++)
		if (hit(c, i, 53))
			good = 0;
	ok(good, "  old entries gone");
	ok(put(c, 0, 0, 10, 1000, 60) && hit(c, 0, 61), "  usable afterwards");
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "all released");
}

/* cache_lookup_lazy(): the cred callback runs only when a flight is created,
 * and that flight is invalidated by the cred it wrote. */
static int lazy_calls;

static void lazy_cred(void *arg, uint8_t cred[CACHE_KEY_LEN])
{
	lazy_calls++;
	mkkey(cred, 2, (uint64_t)(uintptr_t)arg);
}

static void test_lookup_lazy(void)
{
	struct cache *c = mkcache(1000, (size_t)1 << 30, 4, 0, 0);
	struct decision *d, *out;
	struct twaiter lead, w1, w2;

	if (!c)
		return;
	twaiter_init(&lead);
	twaiter_init(&w1);
	twaiter_init(&w2);
	lazy_calls = 0;
	is_int(cache_lookup_lazy(c, KEY(7), lazy_cred, (void *)(uintptr_t)9, 10, &out, &lead.w),
	       CACHE_MISS, "lazy: miss");
	is_int(lazy_calls, 1, "  cred computed once for the new flight");
	is_int(cache_lookup_lazy(c, KEY(7), lazy_cred, (void *)(uintptr_t)9, 10, &out, &w1.w),
	       CACHE_COALESCED, "lazy: coalesced");
	is_int(lazy_calls, 1, "  no cred for a waiter");
	cache_invalidate_cred(c, CRED(9), 11);
	d = dec_new(7, 10);
	cache_complete(c, KEY(7), d, 100000, 12, NULL);
	ok(w1.calls == 1 && w1.d == d, "  waiter answered");
	dec_unref(w1.d);
	ok(!hit(c, 7, 13), "  the lazily written cred is what a logout matches");
	dec_unref(d);

	lazy_calls = 0;
	is_int(cache_lookup_lazy(c, KEY(8), lazy_cred, (void *)(uintptr_t)9, 20, &out, NULL),
	       CACHE_MISS, "lazy: miss without a waiter");
	is_int(lazy_calls, 0, "  no flight, no cred");
	cache_complete(c, KEY(8), d = dec_new(8, 10), 100000, 21, NULL);
	dec_unref(d);
	is_int(cache_lookup_lazy(c, KEY(7), lazy_cred, (void *)(uintptr_t)9, 30, &out, &w2.w),
	       CACHE_MISS, "lazy: miss again");
	cache_complete(c, KEY(7), d = dec_new(7, 10), 100000, 31, NULL);
	dec_unref(d);
	lazy_calls = 0;
	is_int(cache_lookup_lazy(c, KEY(7), lazy_cred, (void *)(uintptr_t)9, 32, &out, &w1.w),
	       CACHE_HIT, "lazy: hit");
	is_int(lazy_calls, 0, "  no cred for a hit");
	dec_unref(out);
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "lazy: all released");
}

static void test_logout_hold(void)
{
	struct cache *c = mkcache(1000, (size_t)1 << 30, 2, 0, 1000);
	struct cache_stats st;
	struct cache_hold_set *set0;
	int i, n, same[CACHE_HOLD_WAYS + 1], other_same;

	if (!c)
		return;
	cache_invalidate_cred(c, CRED(1), 100);
	put(c, 1, 1, 10, 100000, 500);
	ok(!hit(c, 1, 501), "within the hold: answers for the credential are not stored");
	put(c, 2, 2, 10, 100000, 500);
	ok(hit(c, 2, 501), "  other credentials are");
	put(c, 1, 1, 10, 100000, 1100);
	ok(hit(c, 1, 1101), "after the hold: stored");

	/* more logouts than a hold set's ways, all in one set: that set (and
	 * only it) holds every credential briefly */
	n = 0;
	set0 = cache_hold_set_of(c, CRED(10));
	for (i = 10; n < CACHE_HOLD_WAYS + 1 && i < 1000000; i++)
		if (cache_hold_set_of(c, CRED(i)) == set0)
			same[n++] = i;
	for (i = 1000000; i < 2000000; i++)
		if (cache_hold_set_of(c, CRED(i)) == set0)
			break;
	other_same = i;  /* a credential of that set that never logged out */
	for (i = 0; i < n; i++)
		cache_invalidate_cred(c, CRED(same[i]), 2000 + (uint64_t)i);
	put(c, 3, other_same, 10, 100000, 2500);
	ok(!hit(c, 3, 2501), "set overflow: its credentials are not stored during the displaced hold");
	put(c, 5, 5, 10, 100000, 2500);
	ok(cache_hold_set_of(c, CRED(5)) != set0 && hit(c, 5, 2501),
	   "  credentials of other sets are stored");
	put(c, 3, other_same, 10, 100000, 3001);
	ok(hit(c, 3, 3002), "  stored after it");
	put(c, 4, same[n - 1], 10, 100000, 3003);
	ok(!hit(c, 4, 3003), "the newest hold is still exact");
	cache_stats(c, &st);
	ok(st.entries == 4, "bounded: %llu entries", (unsigned long long)st.entries);
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "all released");
}

/* A flood of logouts with unknown credentials (random cookies on a public
 * logout route) must not stop the cache from storing other sessions, and
 * costs no shard lock: nothing of theirs is stored or in flight. */
static void test_logout_flood(void)
{
	struct cache *c = mkcache(1000, (size_t)1 << 30, 16, 0, 2000);
	struct cache_stats st;
	int i, stored = 0;

	if (!c)
		return;
	put(c, 1, 1, 10, 100000, 100);
	for (i = 0; i < 1000; i++)
		cache_invalidate_cred(c, CRED(1000000 + i), 200);
	for (i = 0; i < 64; i++)
		if (put(c, 100 + i, 100 + i, 10, 100000, 300) && hit(c, 100 + i, 301))
			stored++;
	is_int(stored, 64, "after 1000 unknown-credential logouts, miss -> store -> hit still works");
	ok(hit(c, 1, 302), "  and earlier entries still hit");
	cache_stats(c, &st);
	is_int((long long)st.invalidated, 0, "  nothing was invalidated");
	cache_invalidate_cred(c, CRED(1), 400);
	ok(!hit(c, 1, 401), "a known credential's logout still drops its entry");
	cache_invalidate_all(c);
	{
		size_t j, left = 0;

		for (j = 0; j < c->ncred_slots; j++)
			left += atomic_load(&c->cred_count[j]);
		is_int((long long)left, 0, "  credential counts back to 0 with nothing stored");
	}
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "flood: all released");
}

/* A decision the shareable() hook refuses (it carries Set-Cookie) answers
 * its leader only: not stored, not handed to waiters (they must ask for
 * themselves), not served stale. */
static void test_private_answers(void)
{
	struct cache *c = mkcache(100, 1 << 20, 1, 5000, 0);
	struct decision *d, *out, *stale;
	struct twaiter lead, w1, w2;

	if (!c)
		return;
	twaiter_init(&lead);
	twaiter_init(&w1);
	twaiter_init(&w2);
	is_int(cache_lookup(c, KEY(1), CRED(1), 0, &out, &lead.w), CACHE_MISS, "private: leader");
	is_int(cache_lookup(c, KEY(1), CRED(1), 0, &out, &w1.w), CACHE_COALESCED, "  waiter 1");
	is_int(cache_lookup(c, KEY(1), CRED(1), 0, &out, &w2.w), CACHE_COALESCED, "  waiter 2");
	d = dec_new(1, 10);
	d->own = 1;
	cache_complete(c, KEY(1), d, 100000, 1, NULL);
	ok(w1.calls == 1 && w1.d == NULL && w1.stale == CACHE_ANS_OWN,
	   "  waiter 1 is told to ask for itself, without the leader's answer");
	ok(w2.calls == 1 && w2.d == NULL && w2.stale == CACHE_ANS_OWN, "  waiter 2 too");
	is_int(dec_refs(d), 1, "  nobody but the leader holds it");
	ok(!hit(c, 1, 2), "  not stored");
	dec_unref(d);

	/* a shareable entry, expired within the grace; a private failure
	 * fallback must not reach waiters, the stale entry may */
	ok(put(c, 2, 2, 10, 10, 10) != NULL, "shareable entry stored");
	is_int(cache_lookup(c, KEY(2), CRED(2), 30, &out, &lead.w), CACHE_MISS, "expired: leader");
	twaiter_init(&w1);
	is_int(cache_lookup(c, KEY(2), CRED(2), 30, &out, &w1.w), CACHE_COALESCED, "  waiter");
	d = dec_new(2, 10);
	d->own = 1;
	cache_fail(c, KEY(2), d, 31, &stale);
	ok(stale && stale->key == 2 && !stale->own && w1.d == stale && w1.stale == CACHE_ANS_STALE,
	   "  the stored (shareable) entry stands in, not the private fallback");
	dec_unref(w1.d);
	if (stale)
		dec_unref(stale);
	dec_unref(d);

	is_int(cache_lookup(c, KEY(3), CRED(3), 40, &out, &lead.w), CACHE_MISS, "no entry: leader");
	twaiter_init(&w1);
	is_int(cache_lookup(c, KEY(3), CRED(3), 40, &out, &w1.w), CACHE_COALESCED, "  waiter");
	d = dec_new(3, 10);
	d->own = 1;
	cache_fail(c, KEY(3), d, 41, NULL);
	ok(w1.calls == 1 && w1.d == NULL && w1.stale == CACHE_ANS_OWN,
	   "  a private failure fallback is not handed to the waiter either");
	dec_unref(d);
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "private: all released");
}

/* cache_complete_private(): an answer for the leader's request only (the
 * user service narrowed it below the key's scope), whatever it is. */
static void test_complete_private(void)
{
	struct cache *c = mkcache(100, 1 << 20, 1, 5000, 0);
	struct decision *d, *out;
	struct twaiter lead, w1;

	if (!c)
		return;
	twaiter_init(&lead);
	twaiter_init(&w1);
	is_int(cache_lookup(c, KEY(7), CRED(7), 0, &out, &lead.w), CACHE_MISS, "narrowed: leader");
	is_int(cache_lookup(c, KEY(7), CRED(7), 0, &out, &w1.w), CACHE_COALESCED, "  waiter");
	d = dec_new(7, 10);  /* shareable */
	cache_complete_private(c, KEY(7), d, 1);
	ok(w1.calls == 1 && w1.d == NULL && w1.stale == CACHE_ANS_OWN,
	   "  the waiter asks for itself");
	is_int(dec_refs(d), 1, "  nobody but the leader holds it");
	ok(!hit(c, 7, 2), "  not stored");
	is_int(cache_lookup(c, KEY(7), CRED(7), 3, &out, &lead.w), CACHE_MISS,
	       "  the key has no flight left: the next lookup leads");
	cache_complete(c, KEY(7), d, 100000, 4, NULL);
	ok(hit(c, 7, 5), "  and a normal completion stores as before");
	dec_unref(d);
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "narrowed: all released");
}

static void test_orphans(void)
{
	struct cache *c = mkcache(100, 1 << 20, 1, 0, 0);
	struct decision *d1, *d2, *out;
	struct twaiter lead, w1;

	if (!c)
		return;
	twaiter_init(&lead);
	twaiter_init(&w1);
	is_int(cache_lookup(c, KEY(1), CRED(1), 0, &out, NULL), CACHE_MISS, "no waiter: a miss");
	is_int(c->shards[0].nflights, 0, "  without a flight");
	is_int(cache_lookup(c, KEY(1), CRED(1), 1, &out, &lead.w), CACHE_MISS, "next lookup leads");
	is_int(cache_lookup(c, KEY(1), CRED(1), 1, &out, &w1.w), CACHE_COALESCED, "  with a waiter");
	/* the orphan completes first: it cannot be told apart from the leader */
	d1 = dec_new(1, 10);
	cache_complete(c, KEY(1), d1, 1000, 2, NULL);
	ok(w1.calls == 1 && w1.d == d1, "the waiter gets the first answer");
	dec_unref(w1.d);
	ok(!hit(c, 1, 3), "  not stored: a flight created behind an orphan never stores");
	d2 = dec_new(1, 10);
	cache_complete(c, KEY(1), d2, 1000, 3, NULL);
	is_int(c->shards[0].orphans, 0, "the real leader's completion balances the orphan");
	dec_unref(d1);
	dec_unref(d2);
	ok(put(c, 1, 1, 10, 1000, 4) && hit(c, 1, 5), "storing resumes");
	cache_free(c);
	is_int(atomic_load(&dec_live), 0, "all released");
}

/* Leaders still pending at cache_free() are forgotten, waiters not called. */
static void test_free_pending(void)
{
	struct cache *c = mkcache(100, 1 << 20, 1, 0, 0);
	struct decision *out;
	struct twaiter lead, w1;

	if (!c)
		return;
	twaiter_init(&lead);
	twaiter_init(&w1);
	put(c, 2, 1, 10, 1000, 0);
	cache_lookup(c, KEY(1), CRED(1), 0, &out, &lead.w);
	cache_lookup(c, KEY(1), CRED(1), 0, &out, &w1.w);
	cache_free(c);
	ok(w1.calls == 0, "cache_free with a pending leader: no callback, no leak (ASan)");
	is_int(atomic_load(&dec_live), 0, "entries released");
}

static void test_hit_speed(void)
{
	enum { N = 1000000 };
	struct cache *c = mkcache(1000, 1 << 24, 64, 0, 0);
	struct decision *out;
	struct timespec t0, t1;
	uint8_t keys[64][32];
	double ns;
	int i, hits = 0;

	if (!c)
		return;
	for (i = 0; i < 64; i++) {
		put(c, i, 0, 100, 1000000, 0);
		mkkey(keys[i], 1, (uint64_t)i);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < N; i++) {
		if (cache_lookup(c, keys[i & 63], keys[0], 1, &out, NULL) == CACHE_HIT) {
			hits++;
			dec_unref(out);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / N;
	diag("hit + unref: %.0f ns per lookup, one thread (not asserted)", ns);
	is_int(hits, N, "all hits");
	cache_free(c);
}

/* ---- concurrency ---------------------------------------------------------- */

enum { T_THREADS = 4, T_OPS = 200000, T_KEYS = 256, T_CREDS = 8, T_PEND = 8 };
#define T_MAX_ENTRIES 64
#define T_MAX_BYTES   (40 * 1024)

static struct cache *tc;
static atomic_ulong tclock;
static atomic_long t_waiting;      /* coalesced waiters not answered yet */
static atomic_long t_cb_calls, t_wrong, t_cancelled;

/* A waiter owned by the thread that queued it: the callback only marks it
 * done (last), the owner frees it afterwards, as the runtime must. */
struct cwaiter {
	struct cache_waiter w;
	struct cwaiter *own_next;  /* the owner's list */
	int key;
	atomic_int calls;
	atomic_int done;
};

static void cwaiter_cb(struct cache_waiter *w, struct decision *d, int stale)
{
	struct cwaiter *cw = (struct cwaiter *)w;

	(void)stale;
	if (atomic_fetch_add(&cw->calls, 1) != 0)
		atomic_fetch_add(&t_wrong, 1);
	if (d) {
		if (d->key != cw->key)
			atomic_fetch_add(&t_wrong, 1);
		dec_unref(d);
	}
	atomic_fetch_add(&t_cb_calls, 1);
	atomic_fetch_sub(&t_waiting, 1);
	atomic_store_explicit(&cw->done, 1, memory_order_release);
}

/* Frees the owner's answered waiters; with <all>, checks none is left. */
static void cwaiter_reap(struct cwaiter **list, int all)
{
	struct cwaiter **pp = list, *cw;

	while ((cw = *pp)) {
		if (atomic_load_explicit(&cw->done, memory_order_acquire)) {
			*pp = cw->own_next;
			free(cw);
		} else {
			if (all)
				atomic_fetch_add(&t_wrong, 1);
			pp = &cw->own_next;
		}
	}
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void t_complete(int key, uint64_t *rng)
{
	uint8_t k[32];
	struct decision *d, *stale = NULL;
	uint64_t now = atomic_load(&tclock) / 8;
	unsigned r = (unsigned)(xorshift(rng) % 10);

	mkkey(k, 1, (uint64_t)key);
	if (r < 7) {
		d = dec_new(key, 50 + xorshift(rng) % 500);
		cache_complete(tc, k, d, r == 0 ? 0 : (uint32_t)(1 + xorshift(rng) % 30), now, &stale);
		dec_unref(d);
	} else if (r < 9) {
		cache_complete(tc, k, NULL, 0, now, &stale);
	} else {
		d = dec_new(key, 50);
		cache_fail(tc, k, d, now, &stale);
		dec_unref(d);
	}
	if (stale) {
		if (stale->key != key)
			atomic_fetch_add(&t_wrong, 1);
		dec_unref(stale);
	}
}

static void *t_main(void *arg)
{
	uint64_t rng = 0x9e3779b97f4a7c15ull * (uint64_t)(uintptr_t)arg + 1;
	int pend[T_PEND], npend = 0, i, key;
	uint8_t k[32], cr[32];
	struct cwaiter *cw, *mine = NULL;
	struct decision *out;
	struct cache_stats st;
	unsigned r;

	for (i = 0; i < T_OPS; i++) {
		uint64_t now = atomic_fetch_add(&tclock, 1) / 8;

		if (i % 256 == 0)
			cwaiter_reap(&mine, 0);

		r = (unsigned)(xorshift(&rng) % 1000);
		key = (int)(xorshift(&rng) % T_KEYS);
		if (r < 650) {
			mkkey(k, 1, (uint64_t)key);
			mkkey(cr, 2, (uint64_t)(key % T_CREDS));
			cw = calloc(1, sizeof(*cw));
			if (!cw)
				abort();
			cw->w.cb = cwaiter_cb;
			cw->key = key;
			atomic_fetch_add(&t_waiting, 1);
			switch (cache_lookup(tc, k, cr, now, &out, &cw->w)) {
			case CACHE_HIT:
				if (out->key != key)
					atomic_fetch_add(&t_wrong, 1);
				dec_unref(out);
				atomic_fetch_sub(&t_waiting, 1);
				free(cw);
				break;
			case CACHE_MISS:
				atomic_fetch_sub(&t_waiting, 1);
				free(cw);
				if (npend == T_PEND) {
					t_complete(pend[0], &rng);
					memmove(pend, pend + 1, sizeof(pend[0]) * (T_PEND - 1));
					npend--;
				}
				pend[npend++] = key;
				break;
			case CACHE_COALESCED:
				/* sometimes the request is abandoned at once */
				if (xorshift(&rng) % 20 == 0 && cache_cancel(tc, k, &cw->w) == 0) {
					atomic_fetch_add(&t_cancelled, 1);
					atomic_fetch_sub(&t_waiting, 1);
					free(cw);
					break;
				}
				/* answered later: kept until its callback is done */
				cw->own_next = mine;
				mine = cw;
				break;
			default:
				atomic_fetch_add(&t_wrong, 1);
			}
		} else if (r < 980) {
			if (npend) {
				t_complete(pend[0], &rng);
				memmove(pend, pend + 1, sizeof(pend[0]) * (size_t)(npend - 1));
				npend--;
			}
		} else if (r < 990) {
			mkkey(cr, 2, xorshift(&rng) % T_CREDS);
			cache_invalidate_cred(tc, cr, now);
		} else if (r < 991 && xorshift(&rng) % 8 == 0) {
			cache_invalidate_all(tc);
		} else {
			cache_stats(tc, &st);
			if (st.entries > T_MAX_ENTRIES || st.bytes > T_MAX_BYTES)
				atomic_fetch_add(&t_wrong, 1);
		}
	}
	while (npend) {
		t_complete(pend[0], &rng);
		memmove(pend, pend + 1, sizeof(pend[0]) * (size_t)(npend - 1));
		npend--;
	}
	/* our waiters may wait on other threads' leaders: reaped after join */
	return mine;
}

static void test_threads(void)
{
	struct cwaiter *left[T_THREADS];
	pthread_t th[T_THREADS];
	struct cache_stats st;
	int i, started = 0;

	atomic_store(&dec_live, 0);
	tc = mkcache(T_MAX_ENTRIES, T_MAX_BYTES, 4, 20, 5);
	if (tc)
		is_int(tc->nshards, 4, "4 shards of 16 entries");
	if (!tc)
		return;
	for (i = 0; i < T_THREADS; i++)
		if (pthread_create(&th[i], NULL, t_main, (void *)(uintptr_t)(i + 1)) == 0)
			started++;
	is_int(started, T_THREADS, "threads started");
	for (i = 0; i < started; i++) {
		void *mine = NULL;

		pthread_join(th[i], &mine);
		left[i] = mine;
	}
	for (i = 0; i < started; i++)
		cwaiter_reap(&left[i], 1);
	cache_stats(tc, &st);
	diag("%d threads x %d ops: hits %llu misses %llu coalesced %llu (cancelled %ld) stale %llu "
	     "evictions %llu expired %llu invalidated %llu",
	     T_THREADS, T_OPS, (unsigned long long)st.hits, (unsigned long long)st.misses,
	     (unsigned long long)st.coalesced, atomic_load(&t_cancelled),
	     (unsigned long long)st.stale, (unsigned long long)st.evictions,
	     (unsigned long long)st.expired, (unsigned long long)st.invalidated);
	is_int(atomic_load(&t_wrong), 0, "no wrong answer, no double callback, bounds held");
	is_int(atomic_load(&t_waiting), 0, "every coalesced waiter answered or cancelled");
	is_int(atomic_load(&t_cb_calls) + atomic_load(&t_cancelled), (long)st.coalesced,
	       "callbacks + cancels == coalesced");
	is_int(st.pending, 0, "no leader left pending");
	ok(st.hits > 1000 && st.coalesced > 1000 && st.evictions > 100 && st.expired > 100 &&
	   st.stale > 0 && st.invalidated > 0,
	   "the workload exercised hits, coalescing, eviction, expiry, stale and invalidation");
	ok(st.entries <= T_MAX_ENTRIES && st.bytes <= T_MAX_BYTES, "bounds held");
	cache_free(tc);
	tc = NULL;
	is_int(atomic_load(&dec_bad), 0, "refcounts never went negative");
	is_int(atomic_load(&dec_live), 0, "every decision released at cache_free");
}

int main(void)
{
	test_sizes();
	test_opts();
	test_basic();
	test_coalescing();
	test_stale();
	test_evict_entries();
	test_evict_bytes();
	test_expired_reclaim();
	test_invalidate();
	test_lookup_lazy();
	test_logout_hold();
	test_logout_flood();
	test_private_answers();
	test_complete_private();
	test_orphans();
	test_free_pending();
	test_hit_speed();
	test_threads();
	is_int(atomic_load(&dec_bad), 0, "no refcount misuse anywhere");
	return done_testing();
}
