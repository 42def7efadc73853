/*
 * httpcc.h: cache policy helpers for user-service responses.
 *
 * Three pure functions: a Cache-Control parser, the TTL policy that turns a
 * response (status, Cache-Control, body) into "cache it for N ms" or "do not
 * cache", and a JWT `exp` reader that keeps a cached token from outliving its
 * own expiry. No I/O, no allocation, no global state, no locale; every input
 * is untrusted text bounded by its length (no NUL terminator needed) and is
 * never logged (the body is a credential).
 */
#ifndef SPOA_HTTPCC_H
#define SPOA_HTTPCC_H

#include <stddef.h>
#include <stdint.h>

/* Directives seen (struct httpcc.flags). */
#define HTTPCC_F_MAX_AGE   0x01u  /* max-age=N seen; value in max_age */
#define HTTPCC_F_S_MAXAGE  0x02u  /* s-maxage=N seen; value in s_maxage */
#define HTTPCC_F_NO_STORE  0x04u
#define HTTPCC_F_NO_CACHE  0x08u  /* with or without a field list */
#define HTTPCC_F_PRIVATE   0x10u  /* informational: our cache is per credential */
#define HTTPCC_F_PUBLIC    0x20u
#define HTTPCC_F_INVALID   0x40u  /* max-age/s-maxage without a valid number */

/* Largest delta-seconds kept (RFC 9111 1.2.2: bigger values mean this). */
#define HTTPCC_DELTA_MAX   2147483648u

struct httpcc {
	unsigned flags;     /* HTTPCC_F_* */
	uint32_t max_age;   /* seconds, valid with HTTPCC_F_MAX_AGE */
	uint32_t s_maxage;  /* seconds, valid with HTTPCC_F_S_MAXAGE */
};

/* Parses one Cache-Control value <v> of <len> bytes (several header lines
 * joined with "," are fine) into <out>, which is always fully written.
 * Directive names are case-insensitive; spaces and tabs around tokens, "=" and
 * commas are skipped; values may be tokens or quoted strings (max-age="60").
 * Unknown directives are ignored, with their values. A repeated max-age or
 * s-maxage keeps the smallest value; a value above HTTPCC_DELTA_MAX is clamped;
 * a missing or non-numeric one sets HTTPCC_F_INVALID (the policy then refuses
 * to cache). Returns 0 if the whole value was well formed, -1 if something was
 * skipped as garbage (<out> still holds everything that was understood).
 * <v> may be NULL when <len> is 0. */
int httpcc_parse(const char *v, size_t len, struct httpcc *out);

/* httpcc_jwt_exp() results. */
enum httpcc_jwt {
	HTTPCC_JWT_EXP = 0,     /* a JWT with a top-level numeric "exp": *exp set */
	HTTPCC_JWT_NONE = -1,   /* not a JWT, or a JWT payload without "exp" */
	HTTPCC_JWT_BAD = -2,    /* JWT-shaped, but the payload is not valid JSON, or
	                         * "exp" is not a usable number: do not cache */
};

/* Reads the "exp" claim of the compact JWS in <tok> (<len> bytes, surrounding
 * whitespace ignored). JWT-shaped means exactly three dot-separated base64url
 * segments, the first two non-empty, the header decoding to a JSON object.
 * The payload is decoded on the fly (no copy, no allocation) and validated as
 * one JSON object, iteratively (nesting up to 64 levels, deeper is BAD). "exp"
 * must be a JSON number without exponent; a fraction is rounded down (the cap
 * can only get earlier); values beyond int64 saturate; a duplicated "exp"
 * keeps the smallest. The signature is not checked: the token comes from the
 * trusted user service, and exp only shortens a cache lifetime.
 * Returns an enum httpcc_jwt; *exp is written only for HTTPCC_JWT_EXP. */
int httpcc_jwt_exp(const char *tok, size_t len, int64_t *exp);

/* Operator policy (config keys cache-ttl, cache-deny-ttl, cache-max-ttl). */
struct httpcc_policy {
	uint32_t default_ttl_ms;  /* 2xx without max-age/s-maxage */
	uint32_t deny_ttl_ms;     /* 3xx and 4xx: this, or less if the service says less */
	uint32_t max_ttl_ms;      /* cap on everything; 0 = no cap */
};

/* The TTL policy: how long may the answer (<status>, Cache-Control value <cc>
 * of <cc_len> bytes or <cc> NULL when the header is absent, <body> of
 * <body_len> bytes, may be NULL) be cached? <now_unix_ms> is the wall clock
 * (ms since the epoch) used against a JWT exp.
 *   - 2xx: s-maxage, else max-age, else default_ttl_ms; capped by max_ttl_ms;
 *     when the body is a JWT with exp, capped to exp - now (0 if past or BAD).
 *   - 3xx, 4xx except 408 and 429: min(deny_ttl_ms, s-maxage/max-age if any).
 *   - 408, 429 (transient by definition), 1xx, 5xx, anything else: 0.
 *   - no-store, no-cache, or HTTPCC_F_INVALID: 0 whatever the status.
 *   - "private" is cacheable: every entry is keyed by its own credentials.
 * Returns milliseconds; 0 = do not cache. */
uint32_t httpcc_ttl(const struct httpcc_policy *p, int status, const char *cc, size_t cc_len,
                    const char *body, size_t body_len, int64_t now_unix_ms);

#endif /* SPOA_HTTPCC_H */
