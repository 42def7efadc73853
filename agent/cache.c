/*
 * cache.c: sharded decision cache with SIEVE eviction, miss coalescing,
 * stale-if-error and credential invalidation.
 *
 * Layout: the key's first 8 bytes pick a shard (a mutex, a key hash table, a
 * credential hash table, a SIEVE queue and the leaders in flight); the next 8
 * pick the key bucket. Keys are salted SHA-256, so the bits are uniform and
 * clients cannot aim at a bucket. Logout holds are one fixed table per cache,
 * per credential, beside a counting filter of the credentials stored or in
 * flight.
 *
 * Rules kept everywhere:
 *   - Only entries with an answer live in the tables and the queue; a leader
 *     in flight is a separate struct cache_flight, so it can never be evicted.
 *   - Nothing is freed, unref'ed or called back under a shard lock: removed
 *     entries go on a local list released after unlock; waiter callbacks run
 *     after unlock too.
 *   - A hit never relinks anything: it sets the visited bit (SIEVE).
 *   - A decision the shareable() hook refuses is never stored, handed to a
 *     waiter or served stale: it was the leader's own answer.
 *   - Never logs, never sees a credential (only digests).
 */
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

#define CACHE_LINE            64
#define CACHE_DEFAULT_SHARDS  64
#define CACHE_MAX_ENTRIES     ((size_t)1 << 28)
#define CACHE_MIN_SHARD_ENTRIES 16 /* a smaller shard evicts too eagerly */
#define CACHE_MIN_SHARD_BYTES 4096
#define CACHE_FLIGHT_BUCKETS  64  /* per shard; chains stay short (in-flight only) */
#define CACHE_HOLD_SETS       1024 /* logout holds: sets of the table (power of two) */
#define CACHE_HOLD_WAYS       4    /* holds per set; a full set holds its whole set */
#define CACHE_CRED_SLOTS_MIN  1024 /* counting filter of credentials (power of two) */
#define CACHE_CRED_SLOTS_PER_ENTRY 4 /* slots per entry bound: ~20% occupied when full */
#define CACHE_SWEEP_STEP      8   /* entries the sweeper examines per miss/store */

/* A stored answer. 120 bytes on LP64 (see docs/cache.md). */
struct cache_entry {
	struct cache_entry *hnext;  /* key bucket chain; reused as the free list */
	struct cache_entry *cnext;  /* credential bucket chain */
	struct cache_entry *newer;  /* SIEVE queue, toward the head (newest) */
	struct cache_entry *older;  /* SIEVE queue, toward the tail (oldest) */
	struct decision *d;         /* owned reference */
	uint64_t expires_ms;        /* fresh while now < expires_ms */
	uint32_t charge;            /* bytes charged to the shard */
	uint8_t visited;            /* SIEVE bit, set by hits */
	uint8_t key[CACHE_KEY_LEN];
	uint8_t cred[CACHE_KEY_LEN];
};

/* A leader in flight and its waiters. */
struct cache_flight {
	struct cache_flight *next;     /* flight bucket chain */
	struct cache_waiter *head;     /* borrowed until their cb: FIFO */
	struct cache_waiter **tail;
	uint8_t no_store;              /* invalidated since the lookup began */
	uint8_t key[CACHE_KEY_LEN];
	uint8_t cred[CACHE_KEY_LEN];
};

/* A logout hold: no store for <cred> while now < until_ms. */
struct cache_hold {
	uint64_t until_ms;
	uint8_t cred[CACHE_KEY_LEN];
};

/* Holds whose credentials share cred bits 16-23; all_until: a set that was
 * full holds every credential of the set until then (errs toward not
 * caching, for 1/CACHE_HOLD_SETS of the credentials only). */
struct cache_hold_set {
	struct cache_hold way[CACHE_HOLD_WAYS];
	uint64_t all_until;
};

struct cache_shard {
	alignas(CACHE_LINE) pthread_mutex_t lock;
	struct cache_entry **keys;     /* owned: bucket heads, c->nbuckets */
	struct cache_entry **creds;    /* owned: bucket heads, c->nbuckets */
	struct cache_entry *head;      /* newest */
	struct cache_entry *tail;      /* oldest */
	struct cache_entry *hand;      /* SIEVE hand; NULL = start at tail */
	struct cache_entry *sweep;     /* sweeper cursor; NULL = start at tail */
	struct cache_flight *flights[CACHE_FLIGHT_BUCKETS]; /* owned */
	uint64_t orphans;              /* MISS leaders without a flight, not yet completed */
	size_t n, bytes;               /* stored now */
	size_t max_n, max_bytes;       /* this shard's share of the bounds */
	struct cache_stats st;         /* counters (entries/bytes/pending unused) */
	uint64_t nflights;
};

struct cache {
	struct cache_opts o;           /* copy */
	struct cache_shard *shards;    /* owned, nshards, cache-line aligned */
	unsigned nshards;
	size_t nbuckets;               /* per shard and per table, power of two */
	/* Entries + flights per credential slot (cred bits 24-31), updated under
	 * the owning shard's lock: a logout whose slot is 0 has nothing to
	 * drop in any shard (O(1) for an unknown credential). */
	atomic_uint *cred_count;       /* owned, ncred_slots */
	size_t ncred_slots;            /* power of two */
	/* Logout holds, one table for the whole cache (a hold is per
	 * credential, whatever shards its keys are in). Lock order: a shard's
	 * lock, then hold_lock; never the reverse. */
	pthread_mutex_t hold_lock;
	struct cache_hold_set *holds;  /* owned, CACHE_HOLD_SETS */
	atomic_uint_fast64_t hold_until; /* no hold is live at or after this time */
};

static uint64_t cache_load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static struct cache_shard *cache_shard_of(struct cache *c, const uint8_t *key)
{
	return &c->shards[cache_load64(key) & (c->nshards - 1)];
}

static size_t cache_kbucket(const struct cache *c, const uint8_t *key)
{
	return cache_load64(key + 8) & (c->nbuckets - 1);
}

static size_t cache_cbucket(const struct cache *c, const uint8_t *cred)
{
	return cache_load64(cred + 8) & (c->nbuckets - 1);
}

static atomic_uint *cache_cred_slot(const struct cache *c, const uint8_t *cred)
{
	return &c->cred_count[cache_load64(cred + 24) & (c->ncred_slots - 1)];
}

static size_t cache_fbucket(const uint8_t *key)
{
	return cache_load64(key + 16) & (CACHE_FLIGHT_BUCKETS - 1);
}

/* Dead = past expiry and past the stale grace: nothing can use it any more. */
static int cache_dead(const struct cache *c, const struct cache_entry *e, uint64_t now)
{
	return now >= e->expires_ms + c->o.stale_grace_ms;
}

static struct cache_entry *cache_find(struct cache *c, struct cache_shard *s, const uint8_t *key)
{
	struct cache_entry *e;

	for (e = s->keys[cache_kbucket(c, key)]; e; e = e->hnext)
		if (memcmp(e->key, key, CACHE_KEY_LEN) == 0)
			return e;
	return NULL;
}

/* Removes <e> from both tables and the queue, uncharges it, and pushes it on
 * <*freel> for cache_release() after unlock. */
static void cache_unlink(struct cache *c, struct cache_shard *s, struct cache_entry *e,
                         struct cache_entry **freel)
{
	struct cache_entry **pp;

	for (pp = &s->keys[cache_kbucket(c, e->key)]; *pp != e; pp = &(*pp)->hnext)
		;
	*pp = e->hnext;
	for (pp = &s->creds[cache_cbucket(c, e->cred)]; *pp != e; pp = &(*pp)->cnext)
		;
	*pp = e->cnext;

	if (s->hand == e)
		s->hand = e->newer;
	if (s->sweep == e)
		s->sweep = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		s->head = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		s->tail = e->newer;

	s->n--;
	s->bytes -= e->charge;
	atomic_fetch_sub(cache_cred_slot(c, e->cred), 1);
	e->hnext = *freel;
	*freel = e;
}

/* Drops the references and memory of unlinked entries. No lock held. */
static void cache_release(struct cache *c, struct cache_entry *freel)
{
	struct cache_entry *e;

	while ((e = freel)) {
		freel = e->hnext;
		c->o.unref(e->d);
		free(e);
	}
}

/* SIEVE: from the hand toward the head (wrapping to the tail), clear visited
 * bits until an unvisited entry, which is the victim. A dead entry is taken at
 * once whatever its bit, so expired entries are reclaimed before live ones the
 * hand passes. Terminates within one lap plus one step. The queue is not
 * empty. */
static void cache_evict_one(struct cache *c, struct cache_shard *s, uint64_t now,
                            struct cache_entry **freel)
{
	struct cache_entry *e = s->hand ? s->hand : s->tail;

	for (;;) {
		if (cache_dead(c, e, now)) {
			s->st.expired++;
			break;
		}
		if (!e->visited) {
			s->st.evictions++;
			break;
		}
		e->visited = 0;
		e = e->newer ? e->newer : s->tail;
	}
	s->hand = e;
	cache_unlink(c, s, e, freel); /* moves the hand to e->newer */
}

/* Bounded incremental sweep: examines up to CACHE_SWEEP_STEP entries from its
 * own cursor (tail to head, wrapping) and reclaims the dead ones, so expired
 * entries go away without a full scan even when nothing needs evicting. */
static void cache_sweep(struct cache *c, struct cache_shard *s, uint64_t now,
                        struct cache_entry **freel)
{
	struct cache_entry *e = s->sweep ? s->sweep : s->tail, *next;
	int i;

	for (i = 0; e && i < CACHE_SWEEP_STEP; i++) {
		next = e->newer;
		if (cache_dead(c, e, now)) {
			s->st.expired++;
			cache_unlink(c, s, e, freel);
		}
		e = next;
	}
	s->sweep = e;
}

static struct cache_flight *cache_flight_find(struct cache_shard *s, const uint8_t *key,
                                              struct cache_flight ***pprev)
{
	struct cache_flight **pp, *f;

	for (pp = &s->flights[cache_fbucket(key)]; (f = *pp); pp = &f->next) {
		if (memcmp(f->key, key, CACHE_KEY_LEN) == 0) {
			if (pprev)
				*pprev = pp;
			return f;
		}
	}
	return NULL;
}

static struct cache_hold_set *cache_hold_set_of(struct cache *c, const uint8_t *cred)
{
	return &c->holds[cache_load64(cred + 16) & (CACHE_HOLD_SETS - 1)];
}

/* Is storing an answer for <cred> held by a recent logout? Costs one atomic
 * load when no hold is live; called under a shard lock. */
static int cache_held(struct cache *c, const uint8_t *cred, uint64_t now)
{
	struct cache_hold_set *hs;
	int held = 0, i;

	if (now >= atomic_load(&c->hold_until))
		return 0;
	hs = cache_hold_set_of(c, cred);
	pthread_mutex_lock(&c->hold_lock);
	if (now < hs->all_until)
		held = 1;
	for (i = 0; !held && i < CACHE_HOLD_WAYS; i++)
		held = now < hs->way[i].until_ms &&
		       memcmp(hs->way[i].cred, cred, CACHE_KEY_LEN) == 0;
	pthread_mutex_unlock(&c->hold_lock);
	return held;
}

int cache_cred_held(struct cache *c, const uint8_t cred[CACHE_KEY_LEN], uint64_t now_ms)
{
	return cache_held(c, cred, now_ms);
}

/* Records a logout hold for <cred> until <until>: O(1), in a fixed table. */
static void cache_hold(struct cache *c, const uint8_t *cred, uint64_t now, uint64_t until)
{
	struct cache_hold_set *hs = cache_hold_set_of(c, cred);
	struct cache_hold *t = NULL;
	uint64_t cur;
	int i, found = 0;

	pthread_mutex_lock(&c->hold_lock);
	for (i = 0; i < CACHE_HOLD_WAYS; i++) {
		struct cache_hold *h = &hs->way[i];

		if (now < h->until_ms && memcmp(h->cred, cred, CACHE_KEY_LEN) == 0) {
			t = h;
			found = 1;
			break;
		}
		if (!t || h->until_ms < t->until_ms)
			t = h;
	}
	if (found) {
		if (until > t->until_ms)
			t->until_ms = until;
	} else {
		/* <t> has ended, or is the live hold that ends first:
		 * displaced, it is kept coarsely on its set */
		if (now < t->until_ms && t->until_ms > hs->all_until)
			hs->all_until = t->until_ms;
		memcpy(t->cred, cred, CACHE_KEY_LEN);
		t->until_ms = until;
	}
	cur = atomic_load(&c->hold_until);
	while (cur < until && !atomic_compare_exchange_weak(&c->hold_until, &cur, until))
		;
	pthread_mutex_unlock(&c->hold_lock);
}

struct cache *cache_new(const struct cache_opts *o, char *err, size_t errlen)
{
	struct cache *c;
	size_t per, nb;
	unsigned i, ns, init = 0;

	if (!o->ref || !o->unref || !o->size) {
		snprintf(err, errlen, "cache: ref, unref and size callbacks are required");
		return NULL;
	}
	if (o->max_entries == 0 || o->max_bytes == 0) {
		snprintf(err, errlen, "cache: max entries and max bytes must be positive");
		return NULL;
	}
	if (o->max_entries > CACHE_MAX_ENTRIES) {
		snprintf(err, errlen, "cache: max entries above %zu", CACHE_MAX_ENTRIES);
		return NULL;
	}
	ns = o->shards ? o->shards : CACHE_DEFAULT_SHARDS;
	if (ns & (ns - 1)) {
		snprintf(err, errlen, "cache: shards (%u) must be a power of two", ns);
		return NULL;
	}
	while (ns > 1 && (o->max_entries / ns < CACHE_MIN_SHARD_ENTRIES ||
	                  o->max_bytes / ns < CACHE_MIN_SHARD_BYTES))
		ns >>= 1;

	c = calloc(1, sizeof(*c));
	if (!c)
		goto out_oom;
	c->o = *o;
	c->nshards = ns;
	if (pthread_mutex_init(&c->hold_lock, NULL) != 0) {
		free(c);
		goto out_oom;
	}
	atomic_init(&c->hold_until, 0);
	for (c->ncred_slots = CACHE_CRED_SLOTS_MIN;
	     c->ncred_slots / CACHE_CRED_SLOTS_PER_ENTRY < o->max_entries; c->ncred_slots <<= 1)
		;
	c->cred_count = calloc(c->ncred_slots, sizeof(*c->cred_count));
	c->holds = calloc(CACHE_HOLD_SETS, sizeof(*c->holds));
	if (!c->cred_count || !c->holds)
		goto out_free;
	per = o->max_entries / ns;
	for (nb = 8; nb < per; nb <<= 1)
		;
	c->nbuckets = nb;
	c->shards = aligned_alloc(CACHE_LINE, sizeof(*c->shards) * ns);
	if (!c->shards)
		goto out_free;
	memset(c->shards, 0, sizeof(*c->shards) * ns);
	for (init = 0; init < ns; init++) {
		struct cache_shard *s = &c->shards[init];

		if (pthread_mutex_init(&s->lock, NULL) != 0)
			goto out_free;
		s->max_n = per;
		s->max_bytes = o->max_bytes / ns;
		s->keys = calloc(nb, sizeof(*s->keys));
		s->creds = calloc(nb, sizeof(*s->creds));
		if (!s->keys || !s->creds) {
			free(s->keys);
			free(s->creds);
			pthread_mutex_destroy(&s->lock);
			goto out_free;
		}
	}
	return c;

out_free:
	if (c->shards) {
		for (i = 0; i < init; i++) {
			free(c->shards[i].keys);
			free(c->shards[i].creds);
			pthread_mutex_destroy(&c->shards[i].lock);
		}
		free(c->shards);
	}
	free(c->cred_count);
	free(c->holds);
	pthread_mutex_destroy(&c->hold_lock);
	free(c);
out_oom:
	snprintf(err, errlen, "cache: out of memory");
	return NULL;
}

void cache_free(struct cache *c)
{
	struct cache_entry *freel = NULL;
	struct cache_flight *f;
	unsigned i, b;

	if (!c)
		return;
	for (i = 0; i < c->nshards; i++) {
		struct cache_shard *s = &c->shards[i];

		while (s->tail)
			cache_unlink(c, s, s->tail, &freel);
		cache_release(c, freel);
		freel = NULL;
		for (b = 0; b < CACHE_FLIGHT_BUCKETS; b++) {
			while ((f = s->flights[b])) {
				s->flights[b] = f->next;
				free(f);
			}
		}
		free(s->keys);
		free(s->creds);
		pthread_mutex_destroy(&s->lock);
	}
	free(c->shards);
	free(c->cred_count);
	free(c->holds);
	pthread_mutex_destroy(&c->hold_lock);
	free(c);
}

static void cache_cred_copy(void *arg, uint8_t cred[CACHE_KEY_LEN])
{
	memcpy(cred, arg, CACHE_KEY_LEN);
}

enum cache_res cache_lookup(struct cache *c, const uint8_t key[CACHE_KEY_LEN],
                            const uint8_t cred[CACHE_KEY_LEN], uint64_t now_ms,
                            struct decision **out, struct cache_waiter *w)
{
	return cache_lookup_lazy(c, key, cache_cred_copy, (void *)(uintptr_t)cred, now_ms, out, w);
}

enum cache_res cache_lookup_lazy(struct cache *c, const uint8_t key[CACHE_KEY_LEN],
                                 cache_cred_fn cred_fn, void *arg, uint64_t now_ms,
                                 struct decision **out, struct cache_waiter *w)
{
	struct cache_shard *s = cache_shard_of(c, key);
	struct cache_entry *e, *freel = NULL;
	struct cache_flight *f;
	enum cache_res res;

	*out = NULL;
	pthread_mutex_lock(&s->lock);
	e = cache_find(c, s, key);
	if (e) {
		if (now_ms < e->expires_ms) {
			e->visited = 1;
			c->o.ref(e->d);
			*out = e->d;
			s->st.hits++;
			pthread_mutex_unlock(&s->lock);
			return CACHE_HIT;
		}
		if (cache_dead(c, e, now_ms)) {
			s->st.expired++;
			cache_unlink(c, s, e, &freel);
		}
		/* else: expired within the grace, kept for cache_fail() */
	}

	f = cache_flight_find(s, key, NULL);
	if (f && w) {
		w->next = NULL;
		*f->tail = w;
		f->tail = &w->next;
		s->st.coalesced++;
		res = CACHE_COALESCED;
		goto out;
	}
	res = CACHE_MISS;
	s->st.misses++;
	if (f || !w || !(f = malloc(sizeof(*f)))) {
		/* A leader without a flight (no waiter given, or OOM): its
		 * completion cannot be told apart from the real leader's, so
		 * until it is accounted for, new flights here do not store. */
		s->orphans++;
		goto out_sweep;
	}
	f->head = NULL;
	f->tail = &f->head;
	f->no_store = s->orphans != 0;
	memcpy(f->key, key, CACHE_KEY_LEN);
	cred_fn(arg, f->cred);
	atomic_fetch_add(cache_cred_slot(c, f->cred), 1);
	f->next = s->flights[cache_fbucket(key)];
	s->flights[cache_fbucket(key)] = f;
	s->nflights++;
out_sweep:
	cache_sweep(c, s, now_ms, &freel);
out:
	pthread_mutex_unlock(&s->lock);
	cache_release(c, freel);
	return res;
}

/* The common completion. <store>: store <d> for <ttl_ms>; else on <failed>,
 * look for a stale entry and fall back to <d>. */
static void cache_finish(struct cache *c, const uint8_t *key, struct decision *d,
                         uint32_t ttl_ms, uint64_t now, struct decision **stale_out,
                         int failed, int private_ans)
{
	struct cache_shard *s = cache_shard_of(c, key);
	struct cache_entry *ne = NULL, *freel = NULL, *e;
	struct cache_flight *f, **pf = NULL;
	struct cache_waiter *w, *wnext, *waiters = NULL;
	struct decision *ans = d, *held = NULL;
	uint64_t charge = 0;
	int how = CACHE_ANS_SHARED;
	int own = private_ans || (d && c->o.shareable && !c->o.shareable(d));

	if (stale_out)
		*stale_out = NULL;
	if (!failed && d && ttl_ms && !own) {
		charge = sizeof(*ne) + (uint64_t)c->o.size(d);
		/* max_bytes is immutable after cache_new(): no lock needed */
		if (charge <= s->max_bytes && charge <= UINT32_MAX)
			ne = malloc(sizeof(*ne));
	}

	pthread_mutex_lock(&s->lock);
	f = cache_flight_find(s, key, &pf);
	if (f) {
		*pf = f->next;
		s->nflights--;
		waiters = f->head;
	} else if (s->orphans) {
		s->orphans--;
	}

	if (failed) {
		e = c->o.stale_grace_ms ? cache_find(c, s, key) : NULL;
		if (e && !cache_dead(c, e, now)) {
			held = ans = e->d;
			c->o.ref(held);
			how = now >= e->expires_ms ? CACHE_ANS_STALE : CACHE_ANS_SHARED;
			e->visited = 1;
			own = 0;  /* stored entries are shareable */
		}
	} else if (ne && f && !f->no_store && !cache_held(c, f->cred, now)) {
		e = cache_find(c, s, key);
		ne->visited = 0;
		if (e) {
			ne->visited = e->visited; /* a refresh keeps its heat */
			cache_unlink(c, s, e, &freel);
		}
		while (s->n >= s->max_n || s->bytes + charge > s->max_bytes)
			cache_evict_one(c, s, now, &freel);
		c->o.ref(d);
		ne->d = d;
		ne->expires_ms = now + ttl_ms;
		ne->charge = (uint32_t)charge;
		memcpy(ne->key, key, CACHE_KEY_LEN);
		memcpy(ne->cred, f->cred, CACHE_KEY_LEN);
		ne->hnext = s->keys[cache_kbucket(c, key)];
		s->keys[cache_kbucket(c, key)] = ne;
		ne->cnext = s->creds[cache_cbucket(c, f->cred)];
		s->creds[cache_cbucket(c, f->cred)] = ne;
		ne->newer = NULL;
		ne->older = s->head;
		if (s->head)
			s->head->newer = ne;
		else
			s->tail = ne;
		s->head = ne;
		s->n++;
		s->bytes += charge;
		atomic_fetch_add(cache_cred_slot(c, f->cred), 1);
		ne = NULL;
	}
	if (f)
		atomic_fetch_sub(cache_cred_slot(c, f->cred), 1);
	if (own) {
		/* private to the leader (Set-Cookie): each waiter asks for itself */
		how = CACHE_ANS_OWN;
		ans = NULL;
	}
	if (how == CACHE_ANS_STALE) {
		s->st.stale += stale_out ? 1 : 0;
		for (w = waiters; w; w = w->next)
			s->st.stale++;
	}
	cache_sweep(c, s, now, &freel);
	pthread_mutex_unlock(&s->lock);

	free(ne);
	free(f);
	cache_release(c, freel);
	/* <ans> is alive: the caller's borrowed <d>, or <held> */
	for (w = waiters; w; w = wnext) {
		wnext = w->next;
		if (ans)
			c->o.ref(ans);
		w->cb(w, ans, how);
	}
	if (held) {
		if (stale_out)
			*stale_out = held;
		else
			c->o.unref(held);
	}
}

void cache_complete(struct cache *c, const uint8_t key[CACHE_KEY_LEN], struct decision *d,
                    uint32_t ttl_ms, uint64_t now_ms, struct decision **stale_out)
{
	cache_finish(c, key, d, ttl_ms, now_ms, stale_out, d == NULL, 0);
}

void cache_complete_private(struct cache *c, const uint8_t key[CACHE_KEY_LEN],
                            struct decision *d, uint64_t now_ms)
{
	cache_finish(c, key, d, 0, now_ms, NULL, 0, 1);
}

void cache_fail(struct cache *c, const uint8_t key[CACHE_KEY_LEN], struct decision *fallback,
                uint64_t now_ms, struct decision **stale_out)
{
	cache_finish(c, key, fallback, 0, now_ms, stale_out, 1, 0);
}

int cache_cancel(struct cache *c, const uint8_t key[CACHE_KEY_LEN], struct cache_waiter *w)
{
	struct cache_shard *s = cache_shard_of(c, key);
	struct cache_waiter **pp;
	struct cache_flight *f;
	int ret = -1;

	pthread_mutex_lock(&s->lock);
	f = cache_flight_find(s, key, NULL);
	if (f) {
		for (pp = &f->head; *pp; pp = &(*pp)->next) {
			if (*pp == w) {
				*pp = w->next;
				if (f->tail == &w->next)
					f->tail = pp;
				ret = 0;
				break;
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

void cache_invalidate_cred(struct cache *c, const uint8_t cred[CACHE_KEY_LEN], uint64_t now_ms)
{
	struct cache_entry *e, *next, *freel;
	struct cache_flight *f;
	unsigned i, b;

	/* The hold first, then the count: a flight created after this count
	 * was read sees the hold when it completes (both sequentially
	 * consistent), so a zero count means nothing to drop anywhere. */
	if (c->o.logout_hold_ms)
		cache_hold(c, cred, now_ms, now_ms + c->o.logout_hold_ms);
	if (atomic_load(cache_cred_slot(c, cred)) == 0)
		return;
	for (i = 0; i < c->nshards; i++) {
		struct cache_shard *s = &c->shards[i];

		freel = NULL;
		pthread_mutex_lock(&s->lock);
		for (e = s->creds[cache_cbucket(c, cred)]; e; e = next) {
			next = e->cnext;
			if (memcmp(e->cred, cred, CACHE_KEY_LEN) == 0) {
				s->st.invalidated++;
				cache_unlink(c, s, e, &freel);
			} else if (cache_dead(c, e, now_ms)) {
				s->st.expired++; /* on the way */
				cache_unlink(c, s, e, &freel);
			}
		}
		for (b = 0; b < CACHE_FLIGHT_BUCKETS; b++)
			for (f = s->flights[b]; f; f = f->next)
				if (memcmp(f->cred, cred, CACHE_KEY_LEN) == 0)
					f->no_store = 1;
		pthread_mutex_unlock(&s->lock);
		cache_release(c, freel);
	}
}

void cache_invalidate_all(struct cache *c)
{
	struct cache_entry *e, *freel;
	struct cache_flight *f;
	unsigned i, b;

	for (i = 0; i < c->nshards; i++) {
		struct cache_shard *s = &c->shards[i];

		pthread_mutex_lock(&s->lock);
		/* detach the whole queue at once; the tables are cleared below */
		freel = NULL;
		for (e = s->head; e; e = e->older) {
			atomic_fetch_sub(cache_cred_slot(c, e->cred), 1);
			e->hnext = freel;
			freel = e;
		}
		s->st.invalidated += s->n;
		memset(s->keys, 0, c->nbuckets * sizeof(*s->keys));
		memset(s->creds, 0, c->nbuckets * sizeof(*s->creds));
		s->head = s->tail = s->hand = s->sweep = NULL;
		s->n = 0;
		s->bytes = 0;
		for (b = 0; b < CACHE_FLIGHT_BUCKETS; b++)
			for (f = s->flights[b]; f; f = f->next)
				f->no_store = 1;
		pthread_mutex_unlock(&s->lock);
		cache_release(c, freel);
	}
}

void cache_stats(struct cache *c, struct cache_stats *st)
{
	unsigned i;

	memset(st, 0, sizeof(*st));
	for (i = 0; i < c->nshards; i++) {
		struct cache_shard *s = &c->shards[i];

		pthread_mutex_lock(&s->lock);
		st->entries += s->n;
		st->bytes += s->bytes;
		st->pending += s->nflights;
		st->evictions += s->st.evictions;
		st->expired += s->st.expired;
		st->hits += s->st.hits;
		st->misses += s->st.misses;
		st->coalesced += s->st.coalesced;
		st->stale += s->st.stale;
		st->invalidated += s->st.invalidated;
		pthread_mutex_unlock(&s->lock);
	}
}
