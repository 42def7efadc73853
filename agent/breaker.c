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
 */
#include <stddef.h>

#include "breaker.h"

static struct breaker breaker_the_process;

void breaker_init(struct breaker *b)
{
	atomic_init(&b->state, BREAKER_CLOSED);
	atomic_init(&b->consecutive, 0);
	atomic_init(&b->open_until_ms, 0);
	for (int i = 0; i < BREAKER_ST_ENTRIES; i++)
		atomic_init(&b->transitions[i], 0);
	atomic_init(&b->rejected, 0);
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
			if (breaker_move(b, BREAKER_HALF_OPEN, BREAKER_OPEN))
				*entered = BREAKER_OPEN;
		}
		return;
	}
	if (t != BREAKER_CALL)
		return;
	if (ok) {
		/* A store, not a CAS: a success between failures breaks the run. */
		if (atomic_load_explicit(&b->consecutive, memory_order_relaxed))
			atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
		return;
	}
	if (atomic_fetch_add(&b->consecutive, 1) + 1 < p->failures)
		return;
	if (atomic_load(&b->state) != BREAKER_CLOSED)
		return;  /* already open or probing: calls started before do not count */
	atomic_store(&b->open_until_ms, breaker_deadline(p, now_ms));
	if (breaker_move(b, BREAKER_CLOSED, BREAKER_OPEN)) {
		atomic_store(&b->consecutive, 0);
		*entered = BREAKER_OPEN;
	}
}

int breaker_close(struct breaker *b)
{
	int moved = 0;

	atomic_store(&b->consecutive, 0);
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
