/*
 * h2c.h: the native HTTP/2 cleartext (prior knowledge) user-service client,
 * over Debian's libnghttp2 (the framing, HPACK, flow control and HTTP
 * messaging checks are nghttp2's, never code of ours), on the worker's libev
 * loop, behind upstream.h (upstream.c dispatches to it when the cfg says so:
 * cfg->upstream_native with upstream-http-version h2c).
 *
 * One struct h2c per worker thread, nothing shared between threads.
 *
 * Connections: a request goes on an open connection that has a free stream
 * (below the server's SETTINGS_MAX_CONCURRENT_STREAMS, assumed
 * H2C_INITIAL_STREAMS until its SETTINGS arrive); a new connection is opened
 * only when every open one is full, and at most max-upstream-connections
 * exist (0: no bound, but still one more only when all are full), so steady
 * load multiplexes on one connection. A request that finds no free stream
 * and no room for a connection waits in a FIFO queue, within its timeout
 * (the queue is bounded by the SPOP side: at most max-connections x the
 * frames HAProxy pipelines per connection, each with its timeout). A
 * connection with no stream for keepalive-idle-timeout is closed (GOAWAY);
 * at half that time it is PINGed, and a PING left unanswered by then closes
 * it too. keepalive-max 0 closes a connection as soon as it has no stream.
 *
 * Attempts: the retry rules of h1c (upstream-retries, upstream-retry-on,
 * upstream-attempt-timeout, upstream-retry-backoff, h1c_retry_delay()), per
 * stream. A stream the server never processed (above the last-stream-id of
 * its GOAWAY, or refused with REFUSED_STREAM) is retried at once on another
 * connection (see H2C_REFUSED_RETRIES); so is, once, a stream whose
 * reused connection closed before any frame of its answer. A stream that
 * times out is reset (RST_STREAM CANCEL); the connection and its other
 * streams go on. A response beyond max-response-size, or whose header block
 * is beyond H2C_HEADERS_MAX, is reset and that exchange alone fails.
 *
 * Completions are called from the loop (an io or timer callback), never
 * from inside h2c_start() nor from inside an nghttp2 callback, so the
 * callback may start new requests.
 */
#ifndef SPOA_H2C_H
#define SPOA_H2C_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "upstream.h"

struct cfg;
struct h2c;

/* Streams assumed per connection until the server's SETTINGS say (RFC 9113
 * 6.5.2 recommends at least 100), and the cap whatever they say. */
#define H2C_INITIAL_STREAMS 100
#define H2C_MAX_STREAMS 1000
/* Bound of a response header block (names + values + 32 per field, the
 * SETTINGS_MAX_HEADER_LIST_SIZE we announce). */
#define H2C_HEADERS_MAX 65536
/* Immediate retries of a stream the server did not process, counting only
 * refusals by connections that answered no stream (a server answering some
 * streams and refusing the rest makes progress: those retries are bounded
 * by the exchange timeout alone). */
#define H2C_REFUSED_RETRIES 2

/* Creates the per-worker client on <loop>; NULL when out of memory. */
struct h2c *h2c_new(struct ev_loop *loop, const struct cfg *cfg);

/* The worker's current cfg changed: new bounds; connections to another
 * address than <cfg>'s take no new stream and close when their streams end.
 * Requests running keep theirs. */
void h2c_set_cfg(struct h2c *c, const struct cfg *cfg);

/* Starts GET <url> (which begins with cfg->user_service_url, so the path is
 * at cfg->upstream_path_off) with the header lines <headers>[0..<n>-1]
 * ("Name: value", copied; names sent lower-cased, connection-specific ones
 * dropped, Host becomes :authority). <cfg> must have upstream_native set and
 * outlive the request. Calls <done>(<arg>, response) exactly once, later,
 * from the loop. Returns 0, or -1 (out of memory; nothing will be called). */
int h2c_start(struct h2c *c, const struct cfg *cfg, const char *url,
              const char *const *headers, size_t n, upstream_done_fn done, void *arg);

/* Requests running or waiting. */
unsigned h2c_pending(const struct h2c *c);

/* Connections open, and opened since h2c_new. */
unsigned h2c_conns(const struct h2c *c);
uint64_t h2c_conns_opened(const struct h2c *c);

/* Completes every request with status 0 ("aborted"). */
void h2c_abort_all(struct h2c *c);

/* Aborts what runs, closes every connection, frees <c>. NULL ok. */
void h2c_free(struct h2c *c);

#endif /* SPOA_H2C_H */
