/*
 * h1c.h: the native user-service client. HTTP/1.1 over plain TCP on the
 * worker's libev loop, behind upstream.h (upstream.c dispatches to it when
 * the cfg says so: cfg->upstream_native).
 *
 * One struct h1c per worker thread, nothing shared between threads. A
 * request is formatted once into one buffer and written with one sendmsg
 * (a writev that cannot raise SIGPIPE); responses are parsed by llhttp
 * (Node's HTTP parser, fuzzed upstream, C sources shipped by Debian's
 * node-llhttp and compiled in), never by code of ours; body bytes go from
 * the read buffer straight into the response body.
 *
 * Connections: a pool of keep-alive connections per worker, at most
 * max-upstream-connections of them (0 = unlimited), at most keepalive-max
 * idle; a request that finds none free waits in a FIFO queue, within its
 * timeout. Never uses a proxy (nothing from the environment is read), never
 * follows a redirect (a 3xx is an answer like any other).
 *
 * Attempts: a reused connection that fails before any byte of a response
 * (the server closed it while idle) is retried once on a new connection,
 * never after a byte arrived. Beyond that, the retry policy of the cfg
 * (upstream-retries, upstream-retry-on, upstream-attempt-timeout,
 * upstream-retry-backoff) is applied through h1c_retry_delay(), and never
 * past the exchange `timeout`, which bounds everything from the start.
 *
 * Completions are called from the loop (an io or timer callback), never
 * from inside h1c_start(), so the callback may start new requests.
 */
#ifndef SPOA_H1C_H
#define SPOA_H1C_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>

#include "upstream.h"

struct cfg;
struct h1c;

/* Failure classes of one attempt, what the retry policy is keyed on. */
enum h1c_fail {
	H1C_FAIL_NONE = 0,      /* an HTTP answer came */
	H1C_FAIL_CONNECT,       /* connect refused, unreachable, or connect timeout */
	H1C_FAIL_RESET,         /* closed or reset before any byte of a response */
	H1C_FAIL_TIMEOUT,       /* upstream-attempt-timeout expired, budget left */
	H1C_FAIL_OTHER,         /* anything after a byte arrived: never retried */
	H1C_FAIL_ENTRIES
};

/* upstream-retry-on bits (cfg->upstream_retry_on). */
#define H1C_RETRY_CONNECT  (1u << 0)
#define H1C_RETRY_RESET    (1u << 1)
#define H1C_RETRY_TIMEOUT  (1u << 2)
#define H1C_RETRY_502      (1u << 3)
#define H1C_RETRY_503      (1u << 4)
#define H1C_RETRY_504      (1u << 5)

/* Parses the user-service URL <url> for the native client. Accepts only
 * "http://host[:port][/path][?query]" with host an IPv4 literal, a bracketed
 * IPv6 literal, or (when <resolve>) a name resolved here with getaddrinfo
 * (blocking: main thread, cfg load only). Fills <ss>/<sslen>, *<host> (the
 * authority as written, for the Host header; malloc'd) and *<path_off> (where
 * the path starts in <url>). Returns 0; 1 when the URL is fine but not for the
 * native client (https, or a name and !<resolve>); -1 with a reason in <why>
 * (<whylen> bytes). Never keeps a pointer into <url>. */
int h1c_url_parse(const char *url, int resolve, struct sockaddr_storage *ss,
                  socklen_t *sslen, char **host, size_t *path_off,
                  char *why, size_t whylen);

/* Retry decision for an attempt that ended with <fail> (or, when
 * H1C_FAIL_NONE, with HTTP <status>). <attempt> counts from 1, <retries> is
 * the number of extra attempts allowed, <retry_on> the H1C_RETRY_* mask,
 * <backoff_ms> the base delay, <left_ms> what remains of the exchange
 * timeout, <rnd> any 32-bit random value (the jitter). Returns the delay in
 * ms before the next attempt (jittered in [base/2, base] with base doubling
 * per attempt), or -1: do not retry (not retryable, no attempts left, or the
 * delay would use up the budget). Pure: no clock, no state. */
long h1c_retry_delay(enum h1c_fail fail, long status, unsigned attempt, unsigned retries,
                     unsigned retry_on, unsigned backoff_ms, long left_ms, uint32_t rnd);

/* Creates the per-worker client on <loop>; NULL when out of memory. */
struct h1c *h1c_new(struct ev_loop *loop, const struct cfg *cfg);

/* The worker's current cfg changed: new pool bounds; idle connections to
 * another address than <cfg>'s are closed. Requests running keep theirs. */
void h1c_set_cfg(struct h1c *c, const struct cfg *cfg);

/* Starts GET <url> (which begins with cfg->user_service_url, so the path is
 * at cfg->upstream_path_off) with the header lines <headers>[0..<n>-1]
 * ("Name: value", copied). <cfg> must have upstream_native set and outlive
 * the request. Calls <done>(<arg>, response) exactly once, later, from the
 * loop. Returns 0, or -1 (out of memory; nothing will be called). */
int h1c_start(struct h1c *c, const struct cfg *cfg, const char *url,
              const char *const *headers, size_t n, upstream_done_fn done, void *arg);

/* Requests running or waiting. */
unsigned h1c_pending(const struct h1c *c);

/* Connections open (busy, connecting or idle), and opened since h1c_new. */
unsigned h1c_conns(const struct h1c *c);
uint64_t h1c_conns_opened(const struct h1c *c);

/* Completes every request with status 0 ("aborted"). */
void h1c_abort_all(struct h1c *c);

/* Aborts what runs, closes every connection, frees <c>. NULL ok. */
void h1c_free(struct h1c *c);

#endif /* SPOA_H1C_H */
