/*
 * metrics.c: registry of per-worker counters and their sum.
 *
 * The registry is a small array under a mutex: touched only when a worker
 * starts or stops and when someone reads the sum, never on the hot path.
 */
#include <pthread.h>
#include <string.h>

#include "metrics.h"
#include "upstream.h"

_Static_assert(METRICS_RETRY_REASONS == UPSTREAM_RETRY_ENTRIES, "one counter per retry reason");

#define METRICS_MAX_REG 1100

const unsigned metrics_lat_bounds_ms[METRICS_LAT_BUCKETS - 1] = {
	1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
};

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics *metrics_reg[METRICS_MAX_REG];
static unsigned metrics_nreg;

int metrics_register(struct metrics *m)
{
	int ret = -1;

	memset(m, 0, sizeof(*m));
	pthread_mutex_lock(&metrics_lock);
	if (metrics_nreg < METRICS_MAX_REG) {
		metrics_reg[metrics_nreg++] = m;
		ret = 0;
	}
	pthread_mutex_unlock(&metrics_lock);
	return ret;
}

void metrics_unregister(struct metrics *m)
{
	pthread_mutex_lock(&metrics_lock);
	for (unsigned i = 0; i < metrics_nreg; i++) {
		if (metrics_reg[i] == m) {
			metrics_reg[i] = metrics_reg[--metrics_nreg];
			metrics_reg[metrics_nreg] = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&metrics_lock);
}

#define METRICS_LD(f) atomic_load_explicit(&(f), memory_order_relaxed)

void metrics_sum(struct metrics_snapshot *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&metrics_lock);
	for (unsigned i = 0; i < metrics_nreg; i++) {
		struct metrics *m = metrics_reg[i];

		for (int j = 0; j < METRICS_OUT_ENTRIES; j++)
			out->decisions[j] += METRICS_LD(m->decisions[j]);
		for (int j = 0; j < METRICS_UP_CLASSES; j++)
			out->upstream[j] += METRICS_LD(m->upstream[j]);
		for (int j = 0; j < METRICS_LAT_BUCKETS; j++)
			out->upstream_lat[j] += METRICS_LD(m->upstream_lat[j]);
		for (int j = 0; j < METRICS_PROTO_SLOTS; j++)
			out->proto_errors[j] += METRICS_LD(m->proto_errors[j]);
		out->upstream_lat_sum_us += METRICS_LD(m->upstream_lat_sum_us);
		for (int j = 0; j < METRICS_UP_CLIENTS; j++)
			out->upstream_attempts[j] += METRICS_LD(m->upstream_attempts[j]);
		for (int j = 0; j < METRICS_RETRY_REASONS; j++)
			out->upstream_retries[j] += METRICS_LD(m->upstream_retries[j]);
		out->inflight += METRICS_LD(m->inflight);
		out->conns += METRICS_LD(m->conns);
		out->conns_total += METRICS_LD(m->conns_total);
		out->conns_refused += METRICS_LD(m->conns_refused);
		for (int j = 0; j < METRICS_CLOSE_ENTRIES; j++)
			out->conns_closed[j] += METRICS_LD(m->conns_closed[j]);
		out->frames_in += METRICS_LD(m->frames_in);
		out->frames_out += METRICS_LD(m->frames_out);
		out->writes += METRICS_LD(m->writes);
		out->ack_too_big += METRICS_LD(m->ack_too_big);
		out->claims_skipped += METRICS_LD(m->claims_skipped);
		out->cache_hit += METRICS_LD(m->cache_hit);
		out->cache_miss += METRICS_LD(m->cache_miss);
		out->cache_coalesced += METRICS_LD(m->cache_coalesced);
		out->cache_stale += METRICS_LD(m->cache_stale);
	}
	pthread_mutex_unlock(&metrics_lock);
}

void metrics_upstream(struct metrics *m, long status, uint64_t latency_us)
{
	unsigned cls = (status >= 100 && status < 600) ? (unsigned)(status / 100) : 0;
	unsigned b = 0;

	METRICS_INC(m->upstream[cls]);
	/* Bucket b counts latencies <= bound b (Prometheus "le"). */
	while (b < METRICS_LAT_BUCKETS - 1 && latency_us > metrics_lat_bounds_ms[b] * 1000ull)
		b++;
	METRICS_INC(m->upstream_lat[b]);
	METRICS_ADD(m->upstream_lat_sum_us, latency_us);
}

void metrics_upstream_attempts(struct metrics *m, int native, unsigned attempts,
                               const unsigned *retries)
{
	METRICS_ADD(m->upstream_attempts[native ? 1 : 0], attempts ? attempts : 1);
	for (int j = 0; j < METRICS_RETRY_REASONS; j++)
		if (retries[j])
			METRICS_ADD(m->upstream_retries[j], retries[j]);
}

void metrics_proto_error(struct metrics *m, unsigned status)
{
	METRICS_INC(m->proto_errors[status < METRICS_PROTO_SLOTS - 1 ? status : METRICS_PROTO_SLOTS - 1]);
}
