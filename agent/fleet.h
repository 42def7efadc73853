/*
 * fleet.h: Redis as a second decision level shared by a fleet of agents,
 * and fleet-wide revocation (docs/fleet.md).
 *
 * Off unless redis-address is set. Process-wide state (keys, the revocation
 * stream, counters) lives here; each worker owns one command connection
 * (struct fleet_worker) on its own libev loop. One extra thread, started by
 * fleet_start(), owns the revocation stream (XREAD BLOCK) and a command
 * connection for revocations, and evicts from the shared cache (whose
 * functions may be called from any thread).
 *
 * Never blocks a worker loop: every command has an ev_timer budget
 * (redis-timeout); a command past it, a closed connection or an open
 * breaker make the caller proceed as if Redis had no entry. Never logs a
 * key, a value or a credential.
 */
#ifndef SPOA_FLEET_H
#define SPOA_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

struct cache;
struct cfg;
struct decision;
struct fleet_worker;

/* What fleet_get()'s callback receives. */
enum fleet_l2 {
	FLEET_L2_HIT = 0,     /* <d> holds a reference, <ttl_ms> > 0 the remaining TTL */
	FLEET_L2_MISS,        /* no entry (or an expired one) */
	FLEET_L2_ERROR,       /* error reply, timeout, connection lost */
	FLEET_L2_SKIPPED,     /* not asked: down, connecting, breaker open, fleet off */
	FLEET_L2_BAD_VALUE,   /* a value that does not decode (or is not authentic) */
	FLEET_L2_ENTRIES
};

/* Main thread, before the workers start: derives the keys from <cfg>, checks
 * Redis once (bounded: a connect and AUTH within a second), and starts the
 * stream thread evicting from <cache>. Fleet off (no redis-address): returns
 * 0 and does nothing. Redis unreachable: logs a warning, returns 0 (single
 * node until it comes back). AUTH refused: returns -1 with a message naming
 * redis-password / redis-user in <err>. */
int fleet_start(const struct cfg *cfg, struct cache *cache, char *err, size_t errlen);

/* Main thread, after every worker is freed: stops the stream thread. */
void fleet_stop(void);

/* 1 if the fleet is on. Any thread. */
int fleet_on(void);

/* The cache key salt every agent of the fleet shares (derived from the
 * secret), or NULL when the fleet is off. Main thread, after fleet_start(). */
const uint8_t *fleet_cache_salt(void);

/* Worker <loop>'s command connection; connects in the background (call it
 * before the loop runs or on the loop's thread). NULL when the fleet is off
 * or out of memory (the worker then works as a single node). */
struct fleet_worker *fleet_worker_new(struct ev_loop *loop);

/* Closes it; pending callbacks are not called. Loop thread (or after the
 * loop stopped), before the loop is destroyed. NULL ok. */
void fleet_worker_free(struct fleet_worker *fw);

typedef void (*fleet_get_cb)(void *arg, enum fleet_l2 res, struct decision *d,
                             uint32_t ttl_ms);

/* Reads the shared decision of local <key>/<cred>. Returns 0: <cb> will be
 * called exactly once, from the loop, within redis-timeout; or -1: not asked
 * (FLEET_L2_SKIPPED, counted), <cb> is never called. Loop thread. */
int fleet_get(struct fleet_worker *fw, const uint8_t key[32], const uint8_t cred[32],
              size_t max_actions, fleet_get_cb cb, void *arg);

/* Writes <d> (shareable, not an error) for <ttl_ms> without waiting; the
 * write is refused by Redis while <cred>'s tombstone exists. Loop thread. */
void fleet_put(struct fleet_worker *fw, const uint8_t key[32], const uint8_t cred[32],
               const struct decision *d, uint32_t ttl_ms);

/* Fleet-wide revocation of credential <cred> (NULL: every entry): queued to
 * the stream thread, which deletes the shared values, sets the tombstone and
 * appends the event every agent evicts on. <l1_hex>: the session's L1 hash
 * (hapi_l1_cred(), 64 hex chars) when the revoker knows the session cookie,
 * else NULL; the event carries it sealed, and every agent with
 * haproxy-runtime-socket tombstones it in its HAProxy's L1 ("*" events clear
 * the L1 map). Any thread; never blocks. */
void fleet_revoke(const uint8_t *cred, const char *l1_hex);

/* <ttl_ms> capped to redis-disconnected-max-ttl while the revocation stream
 * is not connected (fleet on), else <ttl_ms>. Any thread. */
uint32_t fleet_local_ttl(uint32_t ttl_ms);

/* Counters for /metrics. */
enum fleet_cmd { FLEET_CMD_GET = 0, FLEET_CMD_SET, FLEET_CMD_REVOKE, FLEET_CMD_XREAD,
                 FLEET_CMD_AUTH, FLEET_CMD_ENTRIES };
enum fleet_cres { FLEET_CR_OK = 0, FLEET_CR_ERROR, FLEET_CR_TIMEOUT, FLEET_CR_ENTRIES };

struct fleet_stats {
	int on;
	int up;                         /* every worker's command connection is up */
	int stream_up;
	int breaker_state;              /* enum breaker_state */
	uint64_t commands[FLEET_CMD_ENTRIES][FLEET_CR_ENTRIES];
	uint64_t l2[FLEET_L2_ENTRIES];
	uint64_t revocations_sent, revocations_received;
	uint64_t local_flushes;
};

void fleet_stats_get(struct fleet_stats *st);
const char *fleet_cmd_to_str(int c);
const char *fleet_cres_to_str(int r);
const char *fleet_l2_to_str(int r);

#endif /* SPOA_FLEET_H */
