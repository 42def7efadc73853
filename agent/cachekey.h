/*
 * cachekey.h: the decision cache's key and credential hashes.
 *
 * Turns the inputs of one user-service request into two SHA-256 digests
 * (OpenSSL, one pass for both), fed incrementally, without copying or keeping any input:
 *   - cred: the credential inputs (the forwarded headers, with the Cookie
 *     header reduced to the configured cookies); no URI, no client address.
 *     All entries of a session share it; a logout invalidates by it.
 *   - key:  cred + the X-Forwarded-For value sent (unless disabled) + the URI
 *     (unless disabled), or instead of the URI the request's decision scope
 *     (cachekey_end_scope()). What a cached decision may be reused for.
 * Every field is tagged and length-prefixed, absent is encoded apart from
 * empty, and the options that change the encoding (salt, scope, cookie set,
 * included fields) are hashed in first, so two configurations never share a
 * key. Raw cookies, tokens and Authorization values only pass through the
 * hash; this module never stores or logs them.
 *
 * A struct cachekey is per worker thread (it owns the hash state); it is
 * built from the configuration (cachekey_from_cfg()) and replaced on
 * reload. Callers: worker.c (its builder), admin.c (one per invalidation),
 * args.c (the key of a struct args), main.c (the salt).
 *
 * Return convention: constructors return the object or NULL (message in
 * <err>); everything else returns 0 or -1 (hashing failed).
 */
#ifndef SPOA_CACHEKEY_H
#define SPOA_CACHEKEY_H

#include <stddef.h>
#include <stdint.h>

#define CACHEKEY_LEN      32  /* SHA-256 */
#define CACHEKEY_SALT_LEN 32
#define CACHEKEY_MAX_COOKIES 64  /* names in a cookie filter */

struct cachekey_opts {
	int include_uri;     /* 1 (default): the URI is part of the key */
	int include_client;  /* 1 (default): the X-Forwarded-For sent is part of the key */
	const char *const *cookie_names; /* borrowed during cachekey_new(); keep only
	                                  * these cookies of Cookie headers (names are
	                                  * case-sensitive, list order irrelevant) */
	size_t n_cookie_names;           /* 0: the whole Cookie header counts */
	const uint8_t *salt;  /* CACHEKEY_SALT_LEN secret bytes, the same for every
	                       * worker of the process (cachekey_salt_new()); NULL =
	                       * unsalted (tests only: keys become predictable) */
	const char *scope;    /* bytes hashed into everything, e.g. the user-service
	                       * URL, so a changed service never reuses entries; may be NULL */
	size_t scope_len;
};

/* One forwarded header: <value> NULL means the header is absent (not sent),
 * which is a different input from an empty value. */
struct cachekey_hdr {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

struct cachekey;

/* Fills <salt> with CACHEKEY_SALT_LEN random bytes (RAND_bytes). Create it once
 * per process, next to the cache, and pass it to every worker's cachekey_new():
 * it makes keys unpredictable to clients (the cache's buckets are picked from
 * key bits). Returns 0, or -1 if the RNG failed. */
int cachekey_salt_new(uint8_t salt[CACHEKEY_SALT_LEN]);

/* Builds a key builder from <o> (copied: names and salt need not outlive the
 * call). Cookie names (at most CACHEKEY_MAX_COOKIES) must be non-empty and
 * free of '=', ';', spaces and control characters. Returns NULL with a message in <err> on bad options or
 * OOM. */
struct cachekey *cachekey_new(const struct cachekey_opts *o, char *err, size_t errlen);

/* NULL-tolerant. */
void cachekey_free(struct cachekey *k);

/* Incremental use, for one request at a time on one thread:
 *   cachekey_begin(k);
 *   cachekey_header(k, ...) for each forwarded header, in the order sent;
 *   cachekey_end(k, xff, uri, key, cred);
 * Header names are compared and hashed case-insensitively (lowercased); values
 * are hashed as sent, except Cookie headers under a cookie filter. A header
 * named "cookie" under a filter contributes its kept "name=value" pairs in
 * header order (SP/HT around pairs dropped) only when the filter can classify
 * it with certainty: a strict RFC 6265 cookie-string, each kept cookie at most
 * once and unquoted, and no name a lenient parser could read as a kept one
 * (case, percent-encoding, '.' for '_'). Any other value (odd bytes anywhere,
 * a segment without '=', an empty name, spaces around '=') contributes its
 * whole raw bytes instead, so two requests share a key only if every
 * reasonable cookie parser sees the same kept cookies in them. Each call
 * returns 0, or -1 if OpenSSL failed (then do not cache this request). */
int cachekey_begin(struct cachekey *k);
int cachekey_header(struct cachekey *k, const char *name, size_t name_len, const char *value,
                    size_t value_len);
/* <xff>: the X-Forwarded-For value actually sent, NULL if none was sent;
 * <uri>: the request URI sent as request_uri, NULL if none. Either is ignored
 * when the options leave it out of the key. Writes <key> and <cred>; with
 * <cred> NULL, cred is left to cachekey_cred() (a cache hit needs only the
 * key: this saves a digest). */
int cachekey_end(struct cachekey *k, const char *xff, size_t xff_len, const char *uri,
                 size_t uri_len, uint8_t key[CACHEKEY_LEN], uint8_t cred[CACHEKEY_LEN]);

/* Writes the cred deferred by the last cachekey_end*(<cred> NULL) of this
 * request; call it before the next cachekey_begin(), at most once. Returns 0,
 * or -1 if there is none or OpenSSL failed. */
int cachekey_cred(struct cachekey *k, uint8_t cred[CACHEKEY_LEN]);

/* The client address as HAProxy gave it (`src`), unformatted. */
enum cachekey_addr {
	CACHEKEY_ADDR_NONE = 0,  /* no usable address (none is sent) */
	CACHEKEY_ADDR_IPV4 = 4,  /* 4 bytes */
	CACHEKEY_ADDR_IPV6 = 6,  /* 16 bytes */
	CACHEKEY_ADDR_TEXT = 't' /* the text sent as is */
};

/* cachekey_end() with the X-Forwarded-For given as its inputs instead of the
 * text sent: the incoming value <xff> (NULL if none is appended to) and the
 * client address <addr>/<addr_len> of <kind>. Saves formatting the address on
 * every request. The sent text is a function of these inputs, and they are
 * encoded unambiguously (and apart from cachekey_end()'s form), so two
 * requests that send different X-Forwarded-For values never share a key; a
 * caller must use one form for every request of a cache. */
int cachekey_end_client(struct cachekey *k, const char *xff, size_t xff_len,
                        enum cachekey_addr kind, const void *addr, size_t addr_len,
                        const char *uri, size_t uri_len, uint8_t key[CACHEKEY_LEN],
                        uint8_t cred[CACHEKEY_LEN]);

/* cachekey_end_client() for a request with a decision scope: the key holds
 * the scope name <scope>[0..<scope_len>) where it would hold the URI, tagged
 * apart (no scope's key equals any URI's key, nor one of another scope), and
 * nothing else changes; the cred is the same as cachekey_end_client()'s, so a
 * logout drops scoped and URI-keyed entries alike. With the URI left out of
 * the key (include_uri 0) the scope is left out too: the same key as
 * cachekey_end_client(). */
int cachekey_end_scope(struct cachekey *k, const char *xff, size_t xff_len,
                       enum cachekey_addr kind, const void *addr, size_t addr_len,
                       const char *scope, size_t scope_len, uint8_t key[CACHEKEY_LEN],
                       uint8_t cred[CACHEKEY_LEN]);

/* The same in one call over <n> headers. */
int cachekey_compute(struct cachekey *k, const struct cachekey_hdr *hdrs, size_t n,
                     const char *xff, size_t xff_len, const char *uri, size_t uri_len,
                     uint8_t key[CACHEKEY_LEN], uint8_t cred[CACHEKEY_LEN]);

/* The key builder of <cfg>'s cache-key-* options, with the user-service URL
 * as scope (a new URL never shares keys with the old one) and <salt>. The
 * one place that maps cfg to struct cachekey_opts: every worker and the
 * admin endpoint build theirs here. NULL with <err> on failure. */
struct cfg;
struct cachekey *cachekey_from_cfg(const struct cfg *cfg, const uint8_t *salt, char *err,
                                   size_t errlen);

#endif /* SPOA_CACHEKEY_H */
