/*
 * upstream.h: the user-service HTTP client. libcurl multi driven by a libev
 * loop (curl_multi_socket_action), one struct upstream per worker.
 *
 * The only curl user in the agent. One CURLM per worker keeps the connection
 * cache, so steady load reuses keep-alive connections instead of opening one
 * TCP connection per request: the cache holds every busy connection plus up
 * to keepalive-max idle ones (CURLMOPT_MAXCONNECTS follows the number of
 * running requests), and at most max-upstream-connections exist
 * (CURLMOPT_MAX_HOST_CONNECTIONS): requests beyond it wait in curl's queue
 * for a free one, within their timeout, instead of opening a connection
 * each. Completions are delivered after
 * curl_multi_socket_action() returns (never from inside a curl callback), so
 * the completion callback may do anything, including starting new requests.
 */
#ifndef SPOA_UPSTREAM_H
#define SPOA_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <ev.h>

struct cfg;
struct upstream;
struct upstream_req;

/* Set-Cookie headers kept, in order. */
#define UPSTREAM_MAX_SET_COOKIE 4

/* Why an attempt was repeated (struct upstream_response.retries). */
enum upstream_retry_reason {
	UPSTREAM_RETRY_STALE = 0,   /* reused connection closed before any byte */
	UPSTREAM_RETRY_CONNECT,     /* upstream-retry-on connect */
	UPSTREAM_RETRY_RESET,       /* upstream-retry-on reset */
	UPSTREAM_RETRY_TIMEOUT,     /* upstream-retry-on timeout */
	UPSTREAM_RETRY_STATUS,      /* upstream-retry-on 502/503/504 */
	UPSTREAM_RETRY_ENTRIES
};

/* What came back. Every pointer is owned by the response, NUL-terminated,
 * NULL when absent, and valid until the completion callback returns (take a
 * copy, or build the decision, before returning). */
struct upstream_response {
	long status;                /* HTTP status; 0 = no usable answer */
	int curl_code;              /* CURLcode, 0 on success */
	const char *error;          /* short reason when status is 0; never a value */
	char *body;                 /* NUL-terminated for convenience; may hold NULs */
	size_t body_len;
	char *content_type;
	char *location;
	char *www_authenticate;
	char *cache_control;        /* for the cache (docs/cache.md) */
	char *auth_scope;           /* X-Auth-Scope: the scope the answer holds for
	                             * (docs/cache.md, "Scopes") */
	char *set_cookie[UPSTREAM_MAX_SET_COOKIE];
	unsigned n_set_cookie;
	char **copy;                /* [cfg->n_copy_headers], value or NULL */
	size_t n_copy;
	uint64_t latency_us;
	int native;                 /* 1: agent/h1c.c answered, 0: libcurl */
	unsigned attempts;          /* attempts made (the libcurl path: 1) */
	unsigned retries[UPSTREAM_RETRY_ENTRIES];  /* why the others were made */
};

/* Shared by the two clients (upstream.c's libcurl path, h1c.c). */
/* Microseconds since <t0> (CLOCK_MONOTONIC). */
uint64_t upstream_elapsed_us(const struct timespec *t0);
/* Frees every captured header of <r> (not the body), for a 1xx or a retry. */
void upstream_resp_clear_headers(struct upstream_response *r);
/* The same, except that a value inside [<lo>, <hi>) (the client's own
 * storage, see upstream_resp_header_dup()) is only forgotten, not freed. */
void upstream_resp_clear_headers_in(struct upstream_response *r, const char *lo, const char *hi);
/* 1 if <r> keeps the header <name>[0..<nlen>) (case-insensitive): the fixed
 * ones or one of <cfg>'s copy-header list. */
int upstream_resp_wants(const struct upstream_response *r, const struct cfg *cfg,
                        const char *name, size_t nlen);
/* Stores the header <name>: <v>[0..<vlen>) in <r> if it is wanted: the first
 * value of each single header, up to UPSTREAM_MAX_SET_COOKIE Set-Cookie. OOM
 * leaves the header missing. */
void upstream_resp_header(struct upstream_response *r, const struct cfg *cfg,
                          const char *name, size_t nlen, const char *v, size_t vlen);
/* A NUL-terminated copy of <v>[0..<vlen>), or NULL when out of memory;
 * <ctx> is the caller's. */
typedef char *(*upstream_dup_fn)(void *ctx, const char *v, size_t vlen);
/* upstream_resp_header() with the copies made by <dup>(<ctx>, ...) instead
 * of strndup(): a client may keep them in its own storage (then clear with
 * upstream_resp_clear_headers_in()). */
void upstream_resp_header_dup(struct upstream_response *r, const struct cfg *cfg,
                              const char *name, size_t nlen, const char *v, size_t vlen,
                              upstream_dup_fn dup, void *ctx);

/* Called once per request, outside any curl callback. <arg> is the one given
 * to upstream_start(). The request is freed when the callback returns. */
typedef void (*upstream_done_fn)(void *arg, const struct upstream_response *resp);

/* Creates the per-worker client on <loop>. <cfg> gives keepalive-max.
 * Returns NULL on allocation/curl failure. Call from the owning thread. */
struct upstream *upstream_new(struct ev_loop *loop, const struct cfg *cfg);

/* Applies a reloaded cfg's multi-level options (keepalive-max,
 * max-upstream-connections) and drops the pooled easy handles configured for
 * the previous cfg. Requests already running keep their own options. */
void upstream_set_cfg(struct upstream *u, const struct cfg *cfg);

/* Starts GET <url> with the extra request header lines <headers>[0..<n>-1]
 * ("Name: value"; copied). Options (timeouts, TLS, size bound, copy-header
 * list) come from <cfg>, which must outlive the request (the caller holds a
 * reference). On completion calls <done>(<arg>, response). Returns 0, or -1
 * if the request could not even be started (nothing will be called). */
int upstream_start(struct upstream *u, const struct cfg *cfg, const char *url,
                   const char *const *headers, size_t n,
                   upstream_done_fn done, void *arg);

/* Whether this libcurl can talk h2c (upstream-http-version h2c): HTTP/2
 * support, and a version that reuses a prior-knowledge HTTP/2 connection
 * (7.88 and older fail every request after the first on a connection with
 * "Error in the HTTP2 framing layer"; fixed in 8.0.0). Returns 1, or 0 with
 * the reason in <why> (<len> bytes). Any thread. */
int upstream_h2c_supported(char *why, size_t len);

/* Number of requests running. */
unsigned upstream_pending(const struct upstream *u);

/* Aborts every running request: each completion callback is called with
 * status 0 ("aborted"). For worker shutdown. */
void upstream_abort_all(struct upstream *u);

/* Aborts what runs (as upstream_abort_all) and frees everything. NULL ok. */
void upstream_free(struct upstream *u);

#endif /* SPOA_UPSTREAM_H */
