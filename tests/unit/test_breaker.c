/*
 * test_breaker.c: unit tests of the circuit breaker (agent/breaker.c).
 *
 * What it does: the closed -> open -> half-open -> closed/open walk with a
 * fixed clock, the counters, a success breaking a run of failures, late
 * results of calls started before the opening, and threads hammering one
 * breaker (run it under ThreadSanitizer: make tsan) checking that at most
 * one probe runs at a time and that each transition is reported once.
 *
 * What it never does: sleep or read a clock: time is a parameter.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "breaker.h"
#include "tap.h"

#define T0 1000000u          /* an arbitrary monotonic start, ms */
#define FAILS 3
#define OPEN_MS 5000

static const struct breaker_params params = { FAILS, OPEN_MS };

static void fail_n(struct breaker *b, unsigned n, uint64_t now, int *last_entered)
{
	for (unsigned i = 0; i < n; i++) {
		int e;
		enum breaker_ticket t = breaker_admit(b, now, &e);

		breaker_done(b, &params, t, 0, now, last_entered);
	}
}

static void test_walk(void)
{
	struct breaker b;
	int e;
	enum breaker_ticket t, t2;

	breaker_init(&b);
	is_int(breaker_state_get(&b), BREAKER_CLOSED, "starts closed");
	t = breaker_admit(&b, T0, &e);
	is_int(t, BREAKER_CALL, "closed: a normal call");
	is_int(e, -1, "closed: no transition");
	breaker_done(&b, &params, t, 1, T0, &e);

	fail_n(&b, FAILS - 1, T0, &e);
	is_int(breaker_state_get(&b), BREAKER_CLOSED, "failures - 1: still closed");
	is_int(e, -1, "failures - 1: no transition");
	/* a success breaks the run */
	t = breaker_admit(&b, T0, &e);
	breaker_done(&b, &params, t, 1, T0, &e);
	fail_n(&b, FAILS - 1, T0, &e);
	is_int(breaker_state_get(&b), BREAKER_CLOSED, "a success resets the count");

	fail_n(&b, 1, T0 + 10, &e);
	is_int(breaker_state_get(&b), BREAKER_OPEN, "the Nth consecutive failure opens");
	is_int(e, BREAKER_OPEN, "reported as entering open");
	is_int(atomic_load(&b.transitions[BREAKER_OPEN]), 1, "one transition to open");

	t = breaker_admit(&b, T0 + 10, &e);
	is_int(t, BREAKER_REJECT, "open: rejected");
	t = breaker_admit(&b, T0 + 10 + OPEN_MS - 1, &e);
	is_int(t, BREAKER_REJECT, "open: rejected until open time has passed");
	is_int(atomic_load(&b.rejected), 2, "rejections counted");

	t = breaker_admit(&b, T0 + 10 + OPEN_MS, &e);
	is_int(t, BREAKER_PROBE, "open time over: the first caller probes");
	is_int(e, BREAKER_HALF_OPEN, "reported as entering half-open");
	t2 = breaker_admit(&b, T0 + 10 + OPEN_MS, &e);
	is_int(t2, BREAKER_REJECT, "half-open: a second caller is rejected");
	is_int(e, -1, "the rejected caller moved nothing");

	breaker_done(&b, &params, t, 0, T0 + 20 + OPEN_MS, &e);
	is_int(breaker_state_get(&b), BREAKER_OPEN, "failed probe: open again");
	is_int(e, BREAKER_OPEN, "reported");
	t = breaker_admit(&b, T0 + 20 + 2 * OPEN_MS - 1, &e);
	is_int(t, BREAKER_REJECT, "a new open time from the probe's end");
	t = breaker_admit(&b, T0 + 20 + 2 * OPEN_MS, &e);
	is_int(t, BREAKER_PROBE, "then probes again");

	breaker_done(&b, &params, t, 1, T0 + 30 + 2 * OPEN_MS, &e);
	is_int(breaker_state_get(&b), BREAKER_CLOSED, "successful probe closes");
	is_int(e, BREAKER_CLOSED, "reported");
	is_int(atomic_load(&b.transitions[BREAKER_CLOSED]), 1, "one transition to closed");
	is_int(atomic_load(&b.transitions[BREAKER_HALF_OPEN]), 2, "two to half-open");
	is_int(atomic_load(&b.transitions[BREAKER_OPEN]), 2, "two to open");

	fail_n(&b, FAILS - 1, T0 + 40 + 2 * OPEN_MS, &e);
	is_int(breaker_state_get(&b), BREAKER_CLOSED, "closing reset the failure count");
}

/* Calls admitted while closed that end after the opening change nothing,
 * and BREAKER_REJECT results are ignored. */
static void test_late_results(void)
{
	struct breaker b;
	enum breaker_ticket late[FAILS + 2];
	int e;

	breaker_init(&b);
	for (int i = 0; i < FAILS + 2; i++)
		late[i] = breaker_admit(&b, T0, &e);
	for (int i = 0; i < FAILS; i++)
		breaker_done(&b, &params, late[i], 0, T0, &e);
	is_int(breaker_state_get(&b), BREAKER_OPEN, "opened");
	breaker_done(&b, &params, late[FAILS], 0, T0 + 1, &e);
	is_int(e, -1, "a late failure: no second opening");
	breaker_done(&b, &params, late[FAILS + 1], 1, T0 + 1, &e);
	is_int(breaker_state_get(&b), BREAKER_OPEN, "a late success does not close it");
	breaker_done(&b, &params, BREAKER_REJECT, 1, T0 + 1, &e);
	is_int(breaker_state_get(&b), BREAKER_OPEN, "a rejected call reports nothing");
	is_int(atomic_load(&b.transitions[BREAKER_OPEN]), 1, "opened once");
}

static void test_close(void)
{
	struct breaker b;
	enum breaker_ticket t;
	int e;

	breaker_init(&b);
	is_int(breaker_close(&b), 0, "closing a closed breaker moves nothing");
	fail_n(&b, FAILS, T0, &e);
	is_int(breaker_close(&b), 1, "closing an open one moves it");
	is_int(breaker_state_get(&b), BREAKER_CLOSED, "closed");
	fail_n(&b, FAILS, T0, &e);
	t = breaker_admit(&b, T0 + OPEN_MS, &e);
	is_int(t, BREAKER_PROBE, "probing");
	is_int(breaker_close(&b), 1, "closing a half-open one moves it");
	breaker_done(&b, &params, t, 0, T0 + OPEN_MS, &e);
	is_int(breaker_state_get(&b), BREAKER_CLOSED, "the probe's late failure is ignored");
	is_int(e, -1, "and reports nothing");
}

static void test_names(void)
{
	ok(breaker_process() != NULL && breaker_process() == breaker_process(),
	   "one process-wide breaker");
	ok(strcmp(breaker_state_to_str(BREAKER_HALF_OPEN), "half_open") == 0, "half_open name");
	ok(strcmp(breaker_state_to_str(7), "unknown") == 0, "out of range name");
}

/* ---- threads ---- */
#define T_THREADS 4
#define T_ROUNDS 20000

static struct breaker tb;
static const struct breaker_params tparams = { 2, 1 };
static _Atomic int probes_running, max_probes;
static _Atomic uint64_t reported[BREAKER_ST_ENTRIES];
static _Atomic uint64_t clock_ms;

static void *t_main(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	for (int i = 0; i < T_ROUNDS; i++) {
		uint64_t now = atomic_fetch_add(&clock_ms, 1);
		int e, ok_call;
		enum breaker_ticket t = breaker_admit(&tb, now, &e);

		if (e >= 0)
			atomic_fetch_add(&reported[e], 1);
		if (t == BREAKER_PROBE) {
			int n = atomic_fetch_add(&probes_running, 1) + 1;
			int m = atomic_load(&max_probes);

			while (n > m && !atomic_compare_exchange_weak(&max_probes, &m, n))
				;
		}
		seed = seed * 1103515245u + 12345u;
		ok_call = (seed >> 16) % 3 == 0;  /* mostly failing */
		if (t == BREAKER_PROBE)
			atomic_fetch_sub(&probes_running, 1);
		breaker_done(&tb, &tparams, t, ok_call, now, &e);
		if (e >= 0)
			atomic_fetch_add(&reported[e], 1);
	}
	return NULL;
}

static void test_threads(void)
{
	pthread_t th[T_THREADS];
	int started = 0;

	breaker_init(&tb);
	atomic_store(&clock_ms, T0);
	for (int i = 0; i < T_THREADS; i++)
		if (pthread_create(&th[i], NULL, t_main, (void *)(uintptr_t)(i + 1)) == 0)
			started++;
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	is_int(started, T_THREADS, "threads started");
	ok(atomic_load(&max_probes) <= 1, "at most one probe at a time (saw %d)",
	   atomic_load(&max_probes));
	for (int s = 0; s < BREAKER_ST_ENTRIES; s++)
		ok(atomic_load(&reported[s]) == atomic_load(&tb.transitions[s]),
		   "each transition to %s reported exactly once", breaker_state_to_str(s));
	ok(atomic_load(&tb.transitions[BREAKER_OPEN]) > 0, "it did open under failures");
	ok(atomic_load(&tb.transitions[BREAKER_CLOSED]) > 0, "and closed again on successes");
}

int main(void)
{
	test_walk();
	test_late_results();
	test_names();
	test_close();
	test_threads();
	return done_testing();
}
