/*
 * admin.h: the operations HTTP listener: GET /metrics and GET /healthz.
 *
 * A separate listener (config key admin-listen, default 127.0.0.1:12346,
 * loopback only by default; "off" disables it) served by libmicrohttpd in its
 * own internal polling thread, so it never runs on, or blocks, a worker loop
 * or the main loop. It reads the counters through metrics_sum() only.
 *
 *   GET /metrics   Prometheus text exposition format 0.0.4: the workers'
 *                  counters summed, gauges, and the user-service latency
 *                  histogram (_bucket / _sum / _count), with HELP/TYPE lines.
 *   GET /healthz   200 "ok" while serving, 503 "draining" once
 *                  admin_set_draining() was called.
 *   POST /cache/invalidate  "Authorization: Bearer <admin-token>" (403
 *                  without it, or when admin-token is unset); form or
 *                  query parameters: all=1 drops every cached decision;
 *                  else the session's credential headers named like
 *                  forward-headers (cookie=..., authorization=...) drop
 *                  that session's entries, as a logout would.
 *   HEAD on the GETs; anything else: 404, or 405 for other methods.
 *
 * Bounded, and monitoring keeps answering while other local processes hold
 * connections open: past ADMIN_MAX_CONNS connections each new one evicts the
 * one least recently active (those between requests or still sending their
 * headers first, a request being answered last), so idle or half-sent
 * connections never lock /healthz out; libmicrohttpd's own limits
 * (ADMIN_HARD_CONNS, per client address too: on loopback every client is
 * one address) are only reached if eviction cannot keep up. ADMIN_TIMEOUT_S
 * seconds of inactivity close a connection; small per-connection memory.
 * Only POST /cache/invalidate's body is read (16 KiB).
 *
 * One listener per process: admin_start(), admin_set_draining() and
 * admin_stop() are called from the main thread; the request handler runs on
 * libmicrohttpd's thread.
 */
#ifndef SPOA_ADMIN_H
#define SPOA_ADMIN_H

#include <stddef.h>
#include <sys/socket.h>

#define ADMIN_DEFAULT_LISTEN "127.0.0.1:12346"
#define ADMIN_MAX_CONNS   32
#define ADMIN_HARD_CONNS  (4 * ADMIN_MAX_CONNS)
#define ADMIN_TIMEOUT_S   5

/*
 * Binds <addr> (<len> bytes, AF_INET or AF_INET6, as parsed from
 * admin-listen) and starts serving. <addr> NULL or <len> 0 means "off":
 * nothing is started and 0 is returned. Calling it while a listener runs is
 * an error. Returns 0, or -1 with a message in <err> ("admin-listen
 * 127.0.0.1:12346: Address already in use").
 */
int admin_start(const struct sockaddr *addr, socklen_t len, char *err, size_t errlen);

struct cache;
struct cfg;

/* The shared decision cache (NULL: off) and its key salt, for /metrics and
 * POST /cache/invalidate. Set before admin_start(), cleared after
 * admin_stop(). Main thread. */
void admin_set_cache(struct cache *c, const unsigned char *salt);

/* The current cfg (admin-token, forward-headers, key options); takes a
 * reference and drops the previous one. NULL at exit. Main thread. */
void admin_set_cfg(struct cfg *cfg);

/* From now on /healthz answers 503. Harmless when no listener runs. */
void admin_set_draining(void);

/* Returns the bound TCP port, or 0 when no listener runs (tests, logs). */
unsigned admin_port(void);

/*
 * Stops the listener: closes the socket, ends open connections and joins the
 * libmicrohttpd thread. Idempotent; harmless when none runs.
 */
void admin_stop(void);

/*
 * Writes the /metrics document into <buf> (<size> bytes, NUL-terminated).
 * Returns its length, or the length it would need (>= <size>) when it does
 * not fit, as snprintf does. Exposed for the unit test.
 */
size_t admin_render_metrics(char *buf, size_t size);

#endif /* SPOA_ADMIN_H */
