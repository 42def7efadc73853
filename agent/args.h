/*
 * args.h: the NOTIFY arguments of one `exchange` or `logout` message,
 * classified once into slices.
 *
 * One pure function (args_classify()) reads the arguments and decides, by
 * one set of rules, what a request sends: the URI, the client address, the
 * incoming X-Forwarded-For, and each forwarded header (cookie,
 * authorization, the identity header...). The cache key, the user-service
 * request lines and the admin endpoint's invalidation key are all built from
 * this struct, so they cannot disagree about what the credentials are.
 *
 * Never copies, allocates, logs or formats anything: every slice borrows the
 * frame (or, for args_add_header(), the caller's strings) and is valid as
 * long as that is.
 */
#ifndef SPOA_ARGS_H
#define SPOA_ARGS_H

#include <stddef.h>
#include <stdint.h>

#include "cachekey.h"

struct cfg;

#define ARGS_MAX 255             /* arguments per message (SPOP nb-args is a byte) */
#define ARGS_SRC_TEXT_MAX 46     /* INET6_ADDRSTRLEN: a `src` string longer is ignored */
#define ARGS_LOG_KEY_LEN 32      /* bytes of the access-log hash key */
#define ARGS_LOG_HASH_SIZE 9     /* 8 hex chars + NUL */
#define ARGS_SCOPE_MAX 64        /* bytes of a decision scope name (`scope`) */

/* One forwarded header; <value> is never NULL (absent values are not sent). */
struct args_hdr {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

struct args {
	const char *uri;             /* `uri` (string or binary); NULL: none */
	size_t uri_len;
	const char *scope;           /* `scope`: the decision scope HAProxy gave, 1 to
	                              * ARGS_SCOPE_MAX bytes of [A-Za-z0-9._:-];
	                              * NULL: none (absent, or not such a name) */
	size_t scope_len;
	unsigned n_bad_scope;        /* `scope` arguments ignored: not such a name */
	const char *xff;             /* `xff`: incoming X-Forwarded-For, non-empty,
	                              * no CR/LF/NUL; NULL: none */
	size_t xff_len;
	enum cachekey_addr src_kind; /* `src`; CACHEKEY_ADDR_NONE: none usable. A
	                              * later `src` replaces an earlier one */
	uint8_t src_ip[16];          /* IPV4: 4 bytes, IPV6: 16 */
	const char *src_text;        /* TEXT: the string as sent (no CR/LF/NUL) */
	size_t src_len;              /* bytes of src_ip or src_text */
	const char *traceparent;     /* `traceparent`/`tracestate` (strings; the
	                              * last of each wins), unchecked: trace.c
	                              * parses them. NULL: none. Also forwarded as
	                              * headers if <cfg> forwards the names */
	size_t traceparent_len;
	const char *tracestate;
	size_t tracestate_len;
	struct args_hdr hdrs[ARGS_MAX]; /* forwarded headers, in argument order */
	size_t n_hdrs;
	unsigned n_unsafe;           /* forwarded headers dropped: CR, LF or NUL */
	const char *unsafe_name;     /* the first such header's name, for a log line */
	size_t unsafe_name_len;
};

/* Empties <a> (no URI, no address, no header). */
void args_init(struct args *a);

/* The one rule for headers: adds <name>: <value> to <a> if <cfg> forwards
 * <name> (any case, non-empty). Returns 1 if added, 0 if not forwarded, -1
 * if forwarded but dropped because <value> holds CR, LF or NUL (counted in
 * n_unsafe). <value> NULL (absent) is never added. */
int args_add_header(struct args *a, const struct cfg *cfg, const char *name, size_t name_len,
                    const char *value, size_t value_len);

/* 1 if <s>[0..<len>) is a usable decision scope name: 1 to ARGS_SCOPE_MAX
 * bytes, each of [A-Za-z0-9._:-]. */
int args_scope_ok(const char *s, size_t len);

/* Reads the <nargs> arguments at <*p> (advanced past them) into <a>, by name,
 * in one walk: uri, scope (a string that args_scope_ok() accepts; any other
 * non-null value is counted in n_bad_scope and left out), src, xff,
 * traceparent and tracestate (string values only), and every header <cfg>
 * forwards; other names are skipped. A later `scope` replaces an earlier one.
 * Returns 0, or -1 if the arguments are malformed or more than ARGS_MAX. */
int args_classify(struct args *a, const struct cfg *cfg, const uint8_t **p, const uint8_t *end,
                  unsigned nargs);

/* The cache key and credential hash of what <a> sends (cachekey_begin,
 * every header, cachekey_end_client: the client address hashed as sent).
 * With a scope, the key holds the scope instead of the URI
 * (cachekey_end_scope()); the credential hash never holds either.
 * <cred> NULL: left to cachekey_cred(). Returns 0, or -1 if hashing failed. */
int args_key(const struct args *a, struct cachekey *ck, uint8_t key[CACHEKEY_LEN],
             uint8_t cred[CACHEKEY_LEN]);

/* Writes the text of the client address into <out> (room for
 * ARGS_SRC_TEXT_MAX + 1). Returns 0, or -1 if there is none. */
int args_src_text(const struct args *a, char *out, size_t outsz);

/* The access log's credential hash: 8 hex chars of HMAC-SHA256(<key>, every
 * forwarded "Name: value\n" line). Keyed, so a log reader cannot confirm a
 * guessed credential offline without the key. Writes "-" if hashing failed. */
void args_log_hash(const struct args *a, const uint8_t key[ARGS_LOG_KEY_LEN],
                   char out[ARGS_LOG_HASH_SIZE]);

#endif /* SPOA_ARGS_H */
