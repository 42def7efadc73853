/*
 * metrics.h: per-worker counters, summed on read.
 *
 * Each worker owns one struct metrics and is the only writer (relaxed atomic
 * load+store, no lock, no contended cache line); any thread may read them,
 * e.g. the later /metrics endpoint through metrics_sum(). Readers see each
 * counter atomically but the set is not a consistent snapshot, which is fine
 * for monitoring.
 */
#ifndef SPOA_METRICS_H
#define SPOA_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

enum metrics_outcome {
	METRICS_OUT_ALLOW = 0,
	METRICS_OUT_DENY = 1,
	METRICS_OUT_ERROR = 2,
	METRICS_OUT_ENTRIES
};

/* Why the agent itself closed an SPOP connection (besides protocol errors
 * and drains): no HAPROXY-HELLO in time, idle-timeout, frame-timeout (a
 * frame started and never finished: slow writer), evicted to make room
 * at max-connections, or a non-health-check HELLO refused on a health-check
 * reserve slot (at max-connections with every slot busy). */
enum metrics_close {
	METRICS_CLOSE_HELLO = 0,
	METRICS_CLOSE_IDLE = 1,
	METRICS_CLOSE_FRAME = 2,
	METRICS_CLOSE_EVICTED = 3,
	METRICS_CLOSE_RESERVE = 4,
	METRICS_CLOSE_ENTRIES
};

/* Upstream calls by status class: 0 = no answer, 1..5 = 1xx..5xx. */
#define METRICS_UP_CLASSES 6

/* User-service attempts by client (0: libcurl, 1: native) and retries by
 * reason (enum upstream_retry_reason). */
#define METRICS_UP_CLIENTS 2
#define METRICS_RETRY_REASONS 5

/* Latency histogram upper bounds in ms (last bucket = +Inf). */
#define METRICS_LAT_BUCKETS 12
extern const unsigned metrics_lat_bounds_ms[METRICS_LAT_BUCKETS - 1];

/* Protocol errors by SPOP status code; codes > 13 count in the last slot. */
#define METRICS_PROTO_SLOTS 15

struct metrics {
	_Atomic uint64_t decisions[METRICS_OUT_ENTRIES];
	_Atomic uint64_t upstream[METRICS_UP_CLASSES];
	_Atomic uint64_t upstream_lat[METRICS_LAT_BUCKETS];  /* non-cumulative */
	_Atomic uint64_t upstream_lat_sum_us;
	_Atomic uint64_t upstream_attempts[METRICS_UP_CLIENTS];
	_Atomic uint64_t upstream_retries[METRICS_RETRY_REASONS];
	_Atomic uint64_t inflight;          /* gauge: exchanges waiting */
	_Atomic uint64_t conns;             /* gauge: open SPOP connections */
	_Atomic uint64_t conns_total;
	_Atomic uint64_t conns_refused;     /* over max-connections */
	_Atomic uint64_t conns_closed[METRICS_CLOSE_ENTRIES];
	_Atomic uint64_t frames_in;
	_Atomic uint64_t frames_out;
	_Atomic uint64_t writes;            /* write system calls on SPOP sockets */
	_Atomic uint64_t proto_errors[METRICS_PROTO_SLOTS];
	_Atomic uint64_t ack_too_big;       /* decisions replaced by status=0 */
	_Atomic uint64_t claims_skipped;
	/* Decision-cache results, one per decision that consulted the cache:
	 * hit = fresh entry answered, miss = user service called, coalesced =
	 * waited on another exchange's identical call, stale = expired entry
	 * served (stale-if-error / revalidation). */
	_Atomic uint64_t cache_hit;
	_Atomic uint64_t cache_miss;
	_Atomic uint64_t cache_coalesced;
	_Atomic uint64_t cache_stale;
};

/* Plain copy of the summed counters. */
struct metrics_snapshot {
	uint64_t decisions[METRICS_OUT_ENTRIES];
	uint64_t upstream[METRICS_UP_CLASSES];
	uint64_t upstream_lat[METRICS_LAT_BUCKETS];
	uint64_t upstream_lat_sum_us;
	uint64_t upstream_attempts[METRICS_UP_CLIENTS];
	uint64_t upstream_retries[METRICS_RETRY_REASONS];
	uint64_t inflight, conns, conns_total, conns_refused;
	uint64_t conns_closed[METRICS_CLOSE_ENTRIES];
	uint64_t frames_in, frames_out, writes;
	uint64_t proto_errors[METRICS_PROTO_SLOTS];
	uint64_t ack_too_big, claims_skipped;
	uint64_t cache_hit, cache_miss, cache_coalesced, cache_stale;
};

/* Owner-only increment: cheaper than a locked add, still race-free for readers. */
#define METRICS_ADD(field, n) atomic_store_explicit(&(field), \
	atomic_load_explicit(&(field), memory_order_relaxed) + (uint64_t)(n), memory_order_relaxed)
#define METRICS_INC(field) METRICS_ADD(field, 1)
#define METRICS_DEC(field) METRICS_ADD(field, (uint64_t)-1)

/* Registers <m> (zeroed here) so metrics_sum() includes it. Returns 0, or -1
 * if the registry is full. Any thread. */
int metrics_register(struct metrics *m);

/* Removes <m> from the registry; its counters stop counting in the sum. */
void metrics_unregister(struct metrics *m);

/* Sums every registered struct into <out>. Any thread. */
void metrics_sum(struct metrics_snapshot *out);

/* Records one upstream call: HTTP <status> (0 = no answer), <latency_us>. */
void metrics_upstream(struct metrics *m, long status, uint64_t latency_us);

/* Counts <attempts> attempts of client <native> (0/1) and the retries
 * <retries>[0..METRICS_RETRY_REASONS-1]. */
void metrics_upstream_attempts(struct metrics *m, int native, unsigned attempts,
                               const unsigned *retries);

/* Records one protocol error sent as AGENT-DISCONNECT <status>. */
void metrics_proto_error(struct metrics *m, unsigned status);

#endif /* SPOA_METRICS_H */
