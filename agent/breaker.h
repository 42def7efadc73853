/*
 * breaker.h: circuit breaker in front of the user service.
 *
 * One breaker per process, shared by every worker (breaker_process()): the
 * user service is one dependency, so N workers must not need N times the
 * failures to notice it is down, nor send N probes at once, and /metrics and
 * the log show one state. The state lives in atomics (no lock): a decision
 * costs one or two relaxed loads while closed.
 *
 *   CLOSED     calls go through; <failures> consecutive failures -> OPEN;
 *              so does, when <ratio_pm> is set, a failure ratio of at least
 *              <ratio_pm>/1000 over the last <window_ms> once that window
 *              holds <min_requests> calls
 *   OPEN       no call: breaker_admit() says BREAKER_REJECT until <open_ms>
 *              has passed, then the first caller moves it to HALF_OPEN
 *   HALF_OPEN  exactly one call (the probe) goes through, the others are
 *              rejected; the probe's success -> CLOSED, failure -> OPEN
 *
 * The window is BREAKER_BUCKETS buckets of <window_ms>/BREAKER_BUCKETS each,
 * every bucket one 64-bit atomic word (its bucket number and its two
 * counts), so that a count never lands in a bucket being recycled. It is
 * emptied when the breaker opens: after the probe closes it, old failures
 * do not count again.
 *
 * Pure: no I/O, no logging, no clock. The caller passes the monotonic time
 * and the thresholds (from its cfg, so a reload applies at once), logs the
 * transitions it is told about, and reports the end of every admitted call
 * with breaker_done(). Never blocks, never allocates.
 */
#ifndef SPOA_BREAKER_H
#define SPOA_BREAKER_H

#include <stdatomic.h>
#include <stdint.h>

enum breaker_state {
	BREAKER_CLOSED = 0,
	BREAKER_OPEN = 1,
	BREAKER_HALF_OPEN = 2,
	BREAKER_ST_ENTRIES
};

/* What breaker_admit() lets the caller do. */
enum breaker_ticket {
	BREAKER_NONE = 0,       /* not consulted (breaker off): report nothing */
	BREAKER_REJECT,         /* do not call: answer outcome=error */
	BREAKER_CALL,           /* a normal call (closed) */
	BREAKER_PROBE,          /* the one half-open call */
};

/* Buckets of the failure-ratio window. */
#define BREAKER_BUCKETS 10
/* Ratios are given in thousandths. */
#define BREAKER_RATIO_ONE 1000

/* Why the breaker last opened (breaker_open_why()). */
enum breaker_why {
	BREAKER_WHY_NONE = 0,
	BREAKER_WHY_CONSECUTIVE,        /* <failures> in a row */
	BREAKER_WHY_RATIO,              /* the failure ratio over the window */
	BREAKER_WHY_PROBE,              /* the half-open probe failed */
	BREAKER_WHY_ENTRIES
};

struct breaker_params {
	unsigned failures;      /* consecutive failures that open it (>= 1) */
	unsigned open_ms;       /* time open before a probe */
	unsigned ratio_pm;      /* failure ratio that opens it, in 1/1000; 0 = off */
	unsigned window_ms;     /* the ratio's sliding window (>= 1 when ratio_pm) */
	unsigned min_requests;  /* calls in the window before the ratio counts */
};

struct breaker {
	_Atomic int state;                  /* enum breaker_state */
	_Atomic unsigned consecutive;       /* failures in a row while closed */
	_Atomic uint64_t open_until_ms;     /* OPEN: when a probe may go */
	_Atomic uint64_t transitions[BREAKER_ST_ENTRIES];  /* by state entered */
	_Atomic uint64_t rejected;          /* calls refused */
	_Atomic int why;                    /* enum breaker_why of the last open */
	_Atomic uint64_t window[BREAKER_BUCKETS];  /* bucket no.:24 | ok:20 | failed:20 */
};

/* Zero-initialised is a valid closed breaker; breaker_init() makes one. */
void breaker_init(struct breaker *b);

/* The process-wide breaker of the user service. Never NULL. */
struct breaker *breaker_process(void);

/* Asks whether a call may start at <now_ms> (monotonic). Sets *<entered> to
 * the state this call moved the breaker into (BREAKER_HALF_OPEN), or -1 when
 * it moved nothing, so that the caller logs each transition exactly once.
 * Any thread. */
enum breaker_ticket breaker_admit(struct breaker *b, uint64_t now_ms, int *entered);

/* Reports the end of a call admitted with <t> (BREAKER_REJECT: nothing to
 * report, ignored; BREAKER_NONE too). <ok> 0 = failure. Sets *<entered> as breaker_admit()
 * (BREAKER_OPEN or BREAKER_CLOSED), or -1. A CALL that ends while the
 * breaker is already open or probing does not change it. Any thread. */
void breaker_done(struct breaker *b, const struct breaker_params *p, enum breaker_ticket t,
                  int ok, uint64_t now_ms, int *entered);

/* Calls and failures in the window ending at <now_ms> (for tests and
 * /metrics-like reads; relaxed). Any thread. */
void breaker_window_counts(const struct breaker *b, const struct breaker_params *p,
                           uint64_t now_ms, unsigned *calls, unsigned *failed);

/* Why the breaker last opened. Any thread. */
enum breaker_why breaker_open_why(const struct breaker *b);

/* Closes <b> whatever its state (the breaker was turned off by a reload).
 * Returns 1 if this call moved it (log it), else 0. A probe still running
 * reports into a closed breaker, which ignores it. Any thread. */
int breaker_close(struct breaker *b);

/* Current state (relaxed read, for /metrics). */
enum breaker_state breaker_state_get(const struct breaker *b);

/* "closed", "open", "half_open". Never NULL. */
const char *breaker_state_to_str(int st);

#endif /* SPOA_BREAKER_H */
