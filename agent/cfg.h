/*
 * cfg.h: configuration file + command-line overrides -> immutable, refcounted
 * struct cfg.
 *
 * A cfg is built once by cfg_load(), never modified afterwards, and shared by
 * every thread through cfg_get()/cfg_put() (atomic refcount). A reload builds
 * a new one; whoever still holds the old one (an in-flight exchange) keeps it
 * alive until it is done.
 */
#ifndef SPOA_CFG_H
#define SPOA_CFG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define CFG_DEFAULT_LISTEN "127.0.0.1:12345"
#define CFG_DEFAULT_ADMIN_LISTEN "127.0.0.1:12346"
#define CFG_LOG_HASH_KEY_LEN 32        /* SHA-256 of the configured log-hash-key */
#define CFG_LOG_HASH_KEY_MIN 16        /* bytes of secret at least */
#define CFG_LOG_HASH_KEY_FILE_MAX 4096 /* bytes read from file:PATH at most */
#define CFG_REDIS_SECRET_MIN 32        /* bytes of redis-key-secret at least */

/* upstream-client: which HTTP client calls the user service. */
enum cfg_upstream_client {
	CFG_UPC_AUTO = 0,       /* native for http:// with an IP literal, else libcurl */
	CFG_UPC_NATIVE,         /* agent/h1c.c or h2c.c; http:// only (names resolved at load) */
	CFG_UPC_CURL,           /* libcurl for everything */
	CFG_UPC_ENTRIES
};

/* upstream-http-version: how the agent talks to the user service. */
enum cfg_http_version {
	CFG_HTTP_1_1 = 0,       /* HTTP/1.1, keep-alive */
	CFG_HTTP_H2C = 1,       /* HTTP/2 over cleartext, prior knowledge, multiplexed
	                         * (agent/h2c.c when native, else libcurl) */
};

struct cfg {
	atomic_uint refcnt;

	/* listen: text as given (for logs) and the parsed address. */
	char *listen;
	struct sockaddr_storage listen_addr;
	socklen_t listen_addrlen;

	unsigned workers;               /* 0 in the file = resolved to the CPU count */
	uint32_t max_frame_size;        /* 256..1048576 */
	unsigned max_connections;       /* per worker */
	unsigned idle_timeout_ms;       /* SPOP connection idle past HELLO; 0 = never */
	unsigned frame_timeout_ms;      /* a started frame must be complete within */
	char *user_service_url;
	char **forward_headers;         /* lower-cased header names */
	size_t n_forward_headers;
	unsigned timeout_ms;
	unsigned connect_timeout_ms;
	size_t max_response_size;
	unsigned keepalive_max;
	unsigned max_upstream_conns;    /* per worker; 0 = unlimited */
	char *upstream_proxy;           /* proxy URL for the user service; NULL = none
	                                 * (and no proxy from the environment either) */
	int upstream_client;            /* enum cfg_upstream_client */
	/* Filled at load for the native client (agent/h1c.c). */
	int upstream_native;            /* 1: this cfg's requests take h1c */
	struct sockaddr_storage upstream_addr;
	socklen_t upstream_addrlen;
	char *upstream_host;            /* Host header value: the URL's authority */
	size_t upstream_path_off;       /* where the path starts in user_service_url */
	/* Retries (native client): extra attempts, H1C_RETRY_* mask, per-attempt
	 * timeout (0 = the rest of `timeout`), base of the jittered backoff. */
	unsigned upstream_retries;
	unsigned upstream_retry_on;
	unsigned upstream_attempt_timeout_ms;
	unsigned upstream_retry_backoff_ms;
	unsigned keepalive_idle_timeout_ms;  /* native pool: idle longer = closed */
	char *subject_claim;            /* JWT claim -> subject; NULL = unset */
	char *subject_header;           /* response header -> subject; NULL = unset */
	size_t subject_copy_idx;        /* subject_header's slot in copy_headers */
	int trace_new_span;             /* traceparent: the agent's own parent-id */
	int trace_generate;             /* none (or invalid): invent one */
	int upstream_http_version;      /* enum cfg_http_version */
	int breaker;                    /* circuit breaker on/off */
	unsigned breaker_failures;      /* consecutive failures that open it */
	unsigned breaker_open_ms;       /* open time before one probe */
	unsigned breaker_ratio_pm;      /* failure ratio that opens it, 1/1000; 0 = off */
	unsigned breaker_window_ms;     /* the ratio's sliding window */
	unsigned breaker_min_requests;  /* calls in the window before the ratio counts */
	char *ca_file;                  /* NULL when unset */
	char *client_cert;
	char *client_key;
	int tls_verify;
	char *var_prefix;
	char **copy_headers;            /* response header names, as given */
	char **copy_vars;               /* matching variable names "hdr.<name>"; NULL for
	                                 * subject-header when it is not a copy-header */
	size_t n_copy_headers;
	int log_level;                  /* enum log_level */
	uint8_t log_hash_key[CFG_LOG_HASH_KEY_LEN]; /* log-hash-key, hashed; valid if set */
	int log_hash_key_set;
	unsigned drain_timeout_ms;

	/* admin-listen: text as given; addrlen 0 when "off". */
	char *admin_listen;
	struct sockaddr_storage admin_addr;
	socklen_t admin_addrlen;
	char *admin_token;              /* POST /cache/invalidate bearer; NULL = disabled */

	/* Decision cache (docs/cache.md). */
	int cache;                      /* on/off */
	size_t cache_max_entries;
	size_t cache_max_bytes;
	unsigned cache_shards;          /* power of two */
	unsigned cache_ttl_ms;          /* 2xx without max-age */
	unsigned cache_deny_ttl_ms;     /* 3xx/4xx upper bound; 0 = never */
	unsigned cache_max_ttl_ms;      /* cap; 0 = none */
	unsigned cache_stale_grace_ms;  /* 0 = stale-if-error off */
	unsigned cache_logout_hold_ms;
	int cache_key_uri;
	int cache_key_client;
	char **cache_key_cookies;       /* as given (case-sensitive); none = whole header */
	size_t n_cache_key_cookies;

	/* L1 cache inside HAProxy (docs/cache.md, "L1"). */
	unsigned l1_max_ttl_ms;         /* cap on txn.<prefix>.l1_ttl; 0 = never L1-eligible */
	char *haproxy_runtime_socket;   /* unix path or host:port; NULL = off */
	char *haproxy_l1_map;           /* the L1 map's name on that socket */
	char *haproxy_l1_tombstones;    /* the tombstone table's name */
	/* Fleet: Redis as a second level (docs/fleet.md). Read once at start. */
	char *redis_address;            /* as given; NULL = fleet off */
	char *redis_host;               /* numeric address (resolved at load); NULL for unix */
	int redis_port;
	char *redis_path;               /* unix socket path; NULL for TCP */
	char *redis_user;               /* ACL user; NULL = AUTH with the password only */
	char *redis_password;           /* NULL = no AUTH */
	char *redis_prefix;
	unsigned redis_timeout_ms;      /* per-command budget */
	uint8_t *redis_key_secret;      /* the fleet secret's bytes; NULL = unset */
	size_t redis_key_secret_len;
	unsigned redis_stream_maxlen;
	unsigned redis_disconnected_max_ttl_ms;
	unsigned redis_breaker_failures;
	unsigned redis_breaker_open_ms;
};

/* Returns 1 if <a> and <b> differ in a redis-* key (they apply at start only). */
int cfg_redis_changed(const struct cfg *a, const struct cfg *b);

/* Loads <path> (NULL: defaults only), then applies the command-line options
 * <argv>[0..<argc>-1], each "--key=value" or "--key" followed by its value as
 * the next element. List keys (forward-headers, copy-header) given on the
 * command line replace the file's list; repeated, they append.
 * Returns a cfg with one reference, or NULL with a message in <err> of the form
 * "FILE:LINE: key 'K': why" or "command line: option '--K': why". */
struct cfg *cfg_load(const char *path, int argc, char *const argv[],
                     char *err, size_t errlen);

/* Takes a reference on <c> and returns it. */
struct cfg *cfg_get(struct cfg *c);

/* Drops a reference; frees <c> on the last one. NULL is accepted. */
void cfg_put(struct cfg *c);

/* Prints every key with its default and meaning to <out> (for --help). */
void cfg_print_help(FILE *out);

/* Returns 1 if <a> and <b> differ in something that changes cache keys
 * (user-service URL, forwarded headers, cache-key-* options) or the cached
 * answers themselves (copy-header, var-prefix, max-frame-size): a reload
 * must then drop every entry. */
int cfg_cache_key_changed(const struct cfg *a, const struct cfg *b);

/* Returns 1 if <name> (<len> bytes, any case) is in c->forward_headers. */
int cfg_forwards_header(const struct cfg *c, const char *name, size_t len);

#endif /* SPOA_CFG_H */
