/*
 * test_breaker.c: unit tests of the circuit breaker (agent/breaker.c).
 *
 * What it does: the closed -> open -> half-open -> closed/open walk with a
 * fixed clock, the counters, a success breaking a run of failures, late
 * results of calls started before the opening, and threads hammering one
 * breaker (run it under ThreadSanitizer: make tsan) checking that at most
 * one probe runs at a time and that each transition is reported once; the
 * failure-ratio window: its threshold, its minimum of calls, its sliding
 * (old buckets stop counting), its emptying at each opening, and the half-open
 * probe it leads to.
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

/* Ratio window: 50% over 1000 ms (10 buckets of 100 ms), at least 10 calls;
 * consecutive failures far out of reach. */
static const struct breaker_params rparams = { 1000, OPEN_MS, 500, 1000, 10 };

/* One call at <now>: admitted and reported <ok>. Returns what it entered. */
static int rcall(struct breaker *b, uint64_t now, int ok)
{
	int e, e2;
	enum breaker_ticket t = breaker_admit(b, now, &e);

	breaker_done(b, &rparams, t, ok, now, &e2);
	return e2;
}

static void test_ratio(void)
{
	struct breaker b;
	unsigned calls, failed;
	int opened = -1, e;
	uint64_t now = T0;
	enum breaker_ticket t;

	breaker_init(&b);
	/* every other call fails: 50%, but only 9 calls: below min-requests */
	for (int i = 0; i < 9; i++)
		opened = rcall(&b, now, i % 2);
	is_int(opened, -1, "ratio below min-requests: stays closed");
	breaker_window_counts(&b, &rparams, now, &calls, &failed);
	is_int(calls, 9, "the window holds 9 calls");
	is_int(failed, 5, "5 of them failed");
	/* the 10th is a success: 5/10 failed, but only a failure can open it */
	opened = rcall(&b, now, 1);
	is_int(opened, -1, "a success never opens it");
	opened = rcall(&b, now, 0);
	is_int(opened, BREAKER_OPEN, "6 of 11 failed (>= 50%): open");
	is_int(breaker_open_why(&b), BREAKER_WHY_RATIO, "opened by the ratio");
	breaker_window_counts(&b, &rparams, now, &calls, &failed);
	is_int(calls, 0, "the window is emptied when it opens");
	/* probe after open time, succeeds: closed, with an empty window */
	now += OPEN_MS;
	t = breaker_admit(&b, now, &e);
	is_int(t, BREAKER_PROBE, "half-open: one probe");
	is_int(breaker_admit(&b, now, &e), BREAKER_REJECT, "only one");
	breaker_done(&b, &rparams, t, 1, now, &e);
	is_int(e, BREAKER_CLOSED, "the probe's success closes it");
	opened = rcall(&b, now, 0);
	is_int(opened, -1, "one failure after closing: old failures do not count again");

	/* 40% failing stays closed however many calls */
	breaker_init(&b);
	opened = -1;
	for (int i = 0; i < 100 && opened == -1; i++)
		opened = rcall(&b, now, i % 5 < 3);   /* the last 2 of each 5 fail */
	is_int(opened, -1, "40% failures under a 50% threshold: closed");

	/* the window slides: failures older than it stop counting */
	breaker_init(&b);
	for (int i = 0; i < 9; i++)
		rcall(&b, now, 0);
	breaker_window_counts(&b, &rparams, now + 1000, &calls, &failed);
	is_int(calls, 0, "a window later, the 9 failures are gone");
	opened = -1;
	for (int i = 0; i < 9 && opened == -1; i++)
		opened = rcall(&b, now + 1000, 1);
	opened = rcall(&b, now + 1000, 0);
	is_int(opened, -1, "1 failure in 10 calls of the new window: closed");
	breaker_window_counts(&b, &rparams, now + 1500, &calls, &failed);
	is_int(calls, 10, "half a window later, the bucket still counts");

	/* ratio 0 (off): only the consecutive count */
	breaker_init(&b);
	for (int i = 0; i < 50; i++)
		breaker_done(&b, &params, breaker_admit(&b, now, &e), i % 2, now, &opened);
	is_int(breaker_state_get(&b), BREAKER_CLOSED, "ratio off: alternating failures never open");
	breaker_window_counts(&b, &params, now, &calls, &failed);
	is_int(calls, 0, "and nothing is counted");

	/* a failed probe re-opens it, reason: probe */
	breaker_init(&b);
	for (int i = 0; i < 10; i++)
		rcall(&b, now, 0);
	is_int(breaker_state_get(&b), BREAKER_OPEN, "open");
	t = breaker_admit(&b, now + OPEN_MS, &e);
	breaker_done(&b, &rparams, t, 0, now + OPEN_MS, &e);
	is_int(e, BREAKER_OPEN, "failed probe: open again");
	is_int(breaker_open_why(&b), BREAKER_WHY_PROBE, "reason: the probe");
}

/* Threads counting into the same window bucket: no call lost (one CAS per
 * call on the bucket word). */
#define RT_THREADS 4
#define RT_CALLS 20000
static const struct breaker_params rtparams = { 1000000, OPEN_MS, 999, 3600000, 1000000 };
static struct breaker rtb;

static void *rt_main(void *arg)
{
	(void)arg;
	for (int i = 0; i < RT_CALLS; i++) {
		int e;

		breaker_done(&rtb, &rtparams, BREAKER_CALL, i % 2, T0, &e);
	}
	return NULL;
}

static void test_ratio_threads(void)
{
	pthread_t th[RT_THREADS];
	unsigned calls, failed;

	breaker_init(&rtb);
	for (int i = 0; i < RT_THREADS; i++)
		pthread_create(&th[i], NULL, rt_main, NULL);
	for (int i = 0; i < RT_THREADS; i++)
		pthread_join(th[i], NULL);
	breaker_window_counts(&rtb, &rtparams, T0, &calls, &failed);
	is_int(calls, RT_THREADS * RT_CALLS, "concurrent calls: none lost in the window");
	is_int(failed, RT_THREADS * RT_CALLS / 2, "nor any failure");
}

int main(void)
{
	test_ratio();
	test_ratio_threads();
	test_walk();
	test_late_results();
	test_names();
	test_close();
	test_threads();
	return done_testing();
}
