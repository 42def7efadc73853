/*
 * breaker.c: circuit breaker state machine on atomics (see breaker.h).
 *
 * Races are settled by compare-and-swap on <state>: of several threads that
 * see the same trigger (the Nth failure, the end of the open time), exactly
 * one moves the state and is told to log it. The probe is the thread whose
 * CAS OPEN -> HALF_OPEN succeeded; every other caller is rejected until the
 * probe ends, so one request at a time tests a recovering service.
 * <open_until_ms> is written before the CAS that publishes OPEN (seq_cst),
 * so whoever sees OPEN sees its deadline.
 *
 * A window bucket word is <bucket number mod 2^24> << 40 | ok << 20 | failed:
 * a call adds to its bucket with one CAS, restarting the counts when the
 * word still holds an older bucket number; counts saturate at 2^20 - 1.
 */
#include <stddef.h>

#include "breaker.h"

static struct breaker breaker_the_process;

static uint64_t breaker_deadline(const struct breaker_params *p, uint64_t now_ms);
static int breaker_move(struct breaker *b, int from, int to);

#define BREAKER_CNT_BITS 20
#define BREAKER_CNT_MAX ((1u << BREAKER_CNT_BITS) - 1)
#define BREAKER_NO_BITS 24
#define BREAKER_NO_MASK ((1u << BREAKER_NO_BITS) - 1)
#define BREAKER_W_NO(w) ((unsigned)((w) >> (2 * BREAKER_CNT_BITS)) & BREAKER_NO_MASK)
#define BREAKER_W_OK(w) ((unsigned)((w) >> BREAKER_CNT_BITS) & BREAKER_CNT_MAX)
#define BREAKER_W_FAIL(w) ((unsigned)(w) & BREAKER_CNT_MAX)
#define BREAKER_W(no, okc, failc) \
	(((uint64_t)((no) & BREAKER_NO_MASK) << (2 * BREAKER_CNT_BITS)) | \
	 ((uint64_t)(okc) << BREAKER_CNT_BITS) | (uint64_t)(failc))

void breaker_init(struct breaker *b)
{
	atomic_init(&b->state, BREAKER_CLOSED);
	atomic_init(&b->consecutive, 0);
	atomic_init(&b->open_until_ms, 0);
	for (int i = 0; i < BREAKER_ST_ENTRIES; i++)
		atomic_init(&b->transitions[i], 0);
	atomic_init(&b->rejected, 0);
	atomic_init(&b->why, BREAKER_WHY_NONE);
	for (int i = 0; i < BREAKER_BUCKETS; i++)
		atomic_init(&b->window[i], 0);
}

static uint64_t breaker_bucket_ms(const struct breaker_params *p)
{
	uint64_t ms = p->window_ms / BREAKER_BUCKETS;

	return ms ? ms : 1;
}

/* Adds one call (<ok> or not) to the bucket of <now_ms>. */
static void breaker_window_add(struct breaker *b, const struct breaker_params *p,
                               uint64_t now_ms, int ok)
{
	uint64_t no = now_ms / breaker_bucket_ms(p);
	_Atomic uint64_t *slot = &b->window[no % BREAKER_BUCKETS];
	uint64_t w = atomic_load_explicit(slot, memory_order_relaxed), nw;

	do {
		unsigned okc = 0, failc = 0;

		if (BREAKER_W_NO(w) == (no & BREAKER_NO_MASK)) {
			okc = BREAKER_W_OK(w);
			failc = BREAKER_W_FAIL(w);
		}
		if (ok && okc < BREAKER_CNT_MAX)
			okc++;
		else if (!ok && failc < BREAKER_CNT_MAX)
			failc++;
		nw = BREAKER_W(no, okc, failc);
	} while (!atomic_compare_exchange_weak_explicit(slot, &w, nw, memory_order_relaxed,
	                                                memory_order_relaxed));
}

void breaker_window_counts(const struct breaker *b, const struct breaker_params *p,
                           uint64_t now_ms, unsigned *calls, unsigned *failed)
{
	uint64_t no = now_ms / breaker_bucket_ms(p);

	*calls = *failed = 0;
	for (int i = 0; i < BREAKER_BUCKETS; i++) {
		uint64_t w = atomic_load_explicit(&b->window[i], memory_order_relaxed);
		unsigned age = ((unsigned)no - BREAKER_W_NO(w)) & BREAKER_NO_MASK;

		if (w == 0 || age >= BREAKER_BUCKETS)
			continue;   /* empty, or older than the window */
		*calls += BREAKER_W_OK(w) + BREAKER_W_FAIL(w);
		*failed += BREAKER_W_FAIL(w);
	}
}

static void breaker_window_clear(struct breaker *b)
{
	for (int i = 0; i < BREAKER_BUCKETS; i++)
		atomic_store_explicit(&b->window[i], 0, memory_order_relaxed);
}

/* 1 if the window's failure ratio opens the breaker. */
static int breaker_ratio_trips(const struct breaker *b, const struct breaker_params *p,
                               uint64_t now_ms)
{
	unsigned calls, failed;

	if (!p->ratio_pm)
		return 0;
	breaker_window_counts(b, p, now_ms, &calls, &failed);
	return calls && calls >= p->min_requests &&
	       (uint64_t)failed * BREAKER_RATIO_ONE >= (uint64_t)p->ratio_pm * calls;
}

/* CLOSED -> OPEN for <why>; sets *<entered> if this caller did it. */
static void breaker_trip(struct breaker *b, const struct breaker_params *p, uint64_t now_ms,
                         enum breaker_why why, int *entered)
{
	atomic_store(&b->open_until_ms, breaker_deadline(p, now_ms));
	if (breaker_move(b, BREAKER_CLOSED, BREAKER_OPEN)) {
		atomic_store(&b->consecutive, 0);
		atomic_store_explicit(&b->why, why, memory_order_relaxed);
		breaker_window_clear(b);
		*entered = BREAKER_OPEN;
	}
}

enum breaker_why breaker_open_why(const struct breaker *b)
{
	return (enum breaker_why)atomic_load_explicit(&b->why, memory_order_relaxed);
}

struct breaker *breaker_process(void)
{
	return &breaker_the_process;
}

/* Moves <from> -> <to>; returns 1 if this caller did it. */
static int breaker_move(struct breaker *b, int from, int to)
{
	int expect = from;

	if (!atomic_compare_exchange_strong(&b->state, &expect, to))
		return 0;
	atomic_fetch_add_explicit(&b->transitions[to], 1, memory_order_relaxed);
	return 1;
}

static uint64_t breaker_deadline(const struct breaker_params *p, uint64_t now_ms)
{
	return now_ms + p->open_ms;
}

enum breaker_ticket breaker_admit(struct breaker *b, uint64_t now_ms, int *entered)
{
	int st = atomic_load(&b->state);

	*entered = -1;
	if (st == BREAKER_CLOSED)
		return BREAKER_CALL;
	if (st == BREAKER_OPEN && now_ms >= atomic_load(&b->open_until_ms) &&
	    breaker_move(b, BREAKER_OPEN, BREAKER_HALF_OPEN)) {
		*entered = BREAKER_HALF_OPEN;
		return BREAKER_PROBE;
	}
	/* Open and not yet time, lost the race for the probe, or a probe is
	 * already running (half-open). */
	atomic_fetch_add_explicit(&b->rejected, 1, memory_order_relaxed);
	return BREAKER_REJECT;
}

void breaker_done(struct breaker *b, const struct breaker_params *p, enum breaker_ticket t,
                  int ok, uint64_t now_ms, int *entered)
{
	*entered = -1;
	if (t == BREAKER_PROBE) {
		if (ok) {
			atomic_store(&b->consecutive, 0);
			if (breaker_move(b, BREAKER_HALF_OPEN, BREAKER_CLOSED))
				*entered = BREAKER_CLOSED;
		} else {
			atomic_store(&b->open_until_ms, breaker_deadline(p, now_ms));
			if (breaker_move(b, BREAKER_HALF_OPEN, BREAKER_OPEN)) {
				atomic_store_explicit(&b->why, BREAKER_WHY_PROBE,
				                      memory_order_relaxed);
				*entered = BREAKER_OPEN;
			}
		}
		return;
	}
	if (t != BREAKER_CALL)
		return;
	if (p->ratio_pm && atomic_load_explicit(&b->state, memory_order_relaxed) == BREAKER_CLOSED)
		breaker_window_add(b, p, now_ms, ok);
	if (ok) {
		/* A store, not a CAS: a success between failures breaks the run. */
		if (atomic_load_explicit(&b->consecutive, memory_order_relaxed))
			atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
		return;
	}
	if (atomic_fetch_add(&b->consecutive, 1) + 1 >= p->failures) {
		if (atomic_load(&b->state) != BREAKER_CLOSED)
			return;  /* already open or probing: calls started before do not count */
		breaker_trip(b, p, now_ms, BREAKER_WHY_CONSECUTIVE, entered);
		return;
	}
	if (atomic_load(&b->state) == BREAKER_CLOSED && breaker_ratio_trips(b, p, now_ms))
		breaker_trip(b, p, now_ms, BREAKER_WHY_RATIO, entered);
}

int breaker_close(struct breaker *b)
{
	int moved = 0;

	atomic_store(&b->consecutive, 0);
	breaker_window_clear(b);
	moved |= breaker_move(b, BREAKER_OPEN, BREAKER_CLOSED);
	moved |= breaker_move(b, BREAKER_HALF_OPEN, BREAKER_CLOSED);
	return moved;
}

enum breaker_state breaker_state_get(const struct breaker *b)
{
	return (enum breaker_state)atomic_load_explicit(&b->state, memory_order_relaxed);
}

const char *breaker_state_to_str(int st)
{
	static const char *const names[BREAKER_ST_ENTRIES] = { "closed", "open", "half_open" };

	return st >= 0 && st < BREAKER_ST_ENTRIES ? names[st] : "unknown";
}
