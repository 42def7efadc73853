/*
 * cachekey.c: SHA-256 cache keys and credential hashes over request inputs.
 *
 * Encoding (every field self-delimiting; vN is an unsigned LEB128 varint,
 * 7 bits a byte, low bits first, always in its shortest form):
 *   field  := tag:u8 vN(absent ? 0 : len + 1) [bytes]
 *   count  := tag:u8 vN(n)
 *   cred   := SHA256("spoa-auth/cred/3" NUL, salt-field 'S', scope-field 's',
 *                    filter, header*, 'E', 'C')
 *                    (the prefix, up to the filter, ends with 'P' z:u8 and z
 *                    zero bytes: a whole number of SHA-256 blocks)
 *   filter := 'F' count(n or 2^64-1 for none) name-field 'f'...
 *                                          (sorted, deduplicated names)
 *   header := name-field 'n' (lowercased) then either value-field 'v', or
 *             under a filter for a present "cookie" value:
 *             'C' (pair* 'c' count | raw-field 'R' | 'c' count(0) when blank),
 *             pair := name-field 'k', value-field 'w'
 *             (the tags that may follow a header, 'n' or 'E', are none of
 *             a header's inner tags, so header boundaries are unambiguous
 *             and 'E' ends the list without a count)
 *   key    := SHA256(the same bytes as cred up to 'E', without restarting,
 *                    then flags:u8 client [uri-field 'u' | scope-field 'o'])
 *             (flags < 8: never cred's 'C')
 *             (cachekey_end_scope(): flags has CACHEKEY_F_SCOPE and the scope
 *             field stands where the URI was, so a scope's key never equals
 *             a URI's, whatever the bytes)
 *   client := [xff-field 'x']                 (cachekey_end: the text sent), or
 *             [xff-field 'y' addr-field tagged by its kind (enum
 *             cachekey_addr: 0 absent, 4, 6 or 't'; never 'u' or 'o')]
 *                                             (cachekey_end_client: its
 *                                              inputs, not formatted)
 * The per-request part is short on purpose: a request with one Cookie header,
 * an IPv4 client and a short URI or scope fits in the single SHA-256 block
 * after the aligned prefix (at most 55 bytes), so a hit costs one
 * compression. The bytes are gathered in a small buffer and handed to
 * SHA256_Update() in one call where possible (each call has a fixed cost
 * larger than the bytes of a tag); when a request's bytes after the prefix
 * fit one block with the padding, that block is padded in the buffer and
 * compressed with SHA256_Transform() from the prefix's state (the digest
 * SHA256_Final() gives, without its Update/Final bookkeeping).
 * cred and key are one pass: the running state after the headers is copied
 * (a plain struct) and finished as cred, then fed the key's fields; while
 * that state is still the prefix plus bytes in the buffer, cred is only
 * those bytes' length, and is hashed when cachekey_cred() asks (a hit never
 * does). The cred
 * prefix (salt, scope, filter) is hashed once in cachekey_new() and copied
 * per request. cred's input is a strict prefix of key's input, but the two
 * digests live in separate tables and key's input continues with a flags
 * byte where cred's has 'C', so neither is ever taken for the other.
 *
 * The low-level SHA256_* functions (deprecated in OpenSSL 3.0, still shipped)
 * are used on purpose: in 3.0 EVP_MD_CTX_copy_ex()/EVP_DigestInit_ex2()
 * re-allocate the provider context (one malloc + free per request, measured),
 * and EVP dispatch costs more than the bytes hashed here; SHA256_CTX is a
 * plain struct, copied by assignment, and uses the same assembly.
 * Never stores or logs an input; the only state is the SHA-256 contexts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SHA256_*: see the top comment. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "cachekey.h"
#include "cfg.h"
#include "hex.h"

#define CACHEKEY_F_URI    0x01
#define CACHEKEY_F_CLIENT 0x02
#define CACHEKEY_F_SCOPE  0x04  /* per request: the key holds a scope, not the URI */
#define CACHEKEY_BUF      128   /* bytes gathered before a SHA256_Update() */
#define CACHEKEY_VARINT_MAX 10  /* LEB128 bytes of a uint64_t */

struct cachekey {
	SHA256_CTX prefix;   /* cred hash with the prefix already fed */
	SHA256_CTX ctx;      /* the running hash */
	SHA256_CTX cred;     /* cred's state when cachekey_end*() deferred it */
	int cred_pending;    /* cachekey_cred() has a state to finish */
	int cred_in_buf;     /* cred's state is <prefix> fed buf[0..cred_n) */
	size_t cred_n;
	int fresh;           /* <ctx> is <prefix>, not copied yet (nothing flushed) */
	char **cookies;      /* owned: sorted, deduplicated names; NULL = no filter */
	size_t *cookie_lens; /* owned */
	size_t n_cookies;
	uint8_t flags;       /* CACHEKEY_F_* */
	size_t buf_n;        /* bytes of <buf> not yet fed to <ctx> */
	uint8_t buf[CACHEKEY_BUF];
};

/* Largest input tail finished in the block that holds it: one byte of
 * 0x80 and the 64-bit bit count must fit after it (FIPS 180-4, 5.1.1). */
#define CACHEKEY_ONE_BLOCK_MAX (SHA256_CBLOCK - 1 - 8)

/* Moves cred's pending input out of <buf> into <cred> (before <buf> is
 * flushed or reused). Returns 0, or -1 if OpenSSL failed. */
static int cachekey_cred_take(struct cachekey *k)
{
	k->cred_in_buf = 0;
	k->cred = k->prefix;
	return SHA256_Update(&k->cred, k->buf, k->cred_n) == 1 ? 0 : -1;
}

/* Feeds the gathered bytes to the running hash. Returns 0, or -1 if
 * OpenSSL failed. */
static int cachekey_flush(struct cachekey *k)
{
	size_t n = k->buf_n;

	if (k->cred_in_buf && cachekey_cred_take(k) < 0)
		return -1;
	if (k->fresh) {
		k->ctx = k->prefix;
		k->fresh = 0;
	}
	k->buf_n = 0;
	return n == 0 || SHA256_Update(&k->ctx, k->buf, n) == 1 ? 0 : -1;
}

/* Appends <n> bytes at <p> to the running hash's input, through the buffer
 * (large inputs go to SHA256_Update() directly). */
static int cachekey_feed(struct cachekey *k, const void *p, size_t n)
{
	if (n <= CACHEKEY_BUF - k->buf_n) {
		memcpy(k->buf + k->buf_n, p, n);
		k->buf_n += n;
		return 0;
	}
	if (cachekey_flush(k) < 0)
		return -1;
	if (n <= CACHEKEY_BUF) {
		memcpy(k->buf, p, n);
		k->buf_n = n;
		return 0;
	}
	return SHA256_Update(&k->ctx, p, n) == 1 ? 0 : -1;
}

/* Writes <tag> and <v> as a shortest-form LEB128 varint at <b> (room for
 * 1 + CACHEKEY_VARINT_MAX bytes). Returns the bytes written. */
static size_t cachekey_put_u64(uint8_t *b, uint8_t tag, uint64_t v)
{
	size_t n = 1;

	b[0] = tag;
	while (v >= 0x80) {
		b[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	b[n++] = (uint8_t)v;
	return n;
}

/* <tag> then <v> (a count). */
static int cachekey_u64(struct cachekey *k, uint8_t tag, uint64_t v)
{
	uint8_t b[1 + CACHEKEY_VARINT_MAX];

	if (CACHEKEY_BUF - k->buf_n >= sizeof(b)) {
		k->buf_n += cachekey_put_u64(k->buf + k->buf_n, tag, v);
		return 0;
	}
	return cachekey_feed(k, b, cachekey_put_u64(b, tag, v));
}

/* A field: <p> NULL = absent (length code 0), else length code n + 1.
 * Written straight into the buffer when it has room (the usual case). */
static int cachekey_field(struct cachekey *k, uint8_t tag, const void *p, size_t n)
{
	uint8_t *o;

	if (n <= CACHEKEY_BUF && CACHEKEY_BUF - k->buf_n >= 1 + CACHEKEY_VARINT_MAX + n) {
		o = k->buf + k->buf_n;
		o += cachekey_put_u64(o, tag, p ? (uint64_t)n + 1 : 0);
		if (p) {
			memcpy(o, p, n);
			o += n;
		}
		k->buf_n = (size_t)(o - k->buf);
		return 0;
	}
	if (cachekey_u64(k, tag, p ? (uint64_t)n + 1 : 0) < 0)
		return -1;
	return p ? cachekey_feed(k, p, n) : 0;
}

static unsigned char cachekey_lower(unsigned char c)
{
	/* branch-free: 'a' - 'A' is bit 5, added for A..Z only */
	return (unsigned char)(c + ((unsigned)((unsigned)(c - 'A') < 26u) << 5));
}

/* A present field, lowercased while copied into the buffer (header names):
 * in one go when the buffer has room (a usual name), else piecewise. */
static int cachekey_field_lower(struct cachekey *k, uint8_t tag, const char *p, size_t n)
{
	size_t i, j;

	if (n <= CACHEKEY_BUF && CACHEKEY_BUF - k->buf_n >= 1 + CACHEKEY_VARINT_MAX + n) {
		uint8_t *o = k->buf + k->buf_n;

		o += cachekey_put_u64(o, tag, (uint64_t)n + 1);
		for (i = 0; i < n; i++)
			o[i] = cachekey_lower((unsigned char)p[i]);
		k->buf_n = (size_t)(o + n - k->buf);
		return 0;
	}
	if (cachekey_u64(k, tag, (uint64_t)n + 1) < 0)
		return -1;
	for (i = 0; i < n; i += j) {
		if (k->buf_n == CACHEKEY_BUF && cachekey_flush(k) < 0)
			return -1;
		for (j = 0; j < CACHEKEY_BUF - k->buf_n && i + j < n; j++)
			k->buf[k->buf_n + j] = cachekey_lower((unsigned char)p[i + j]);
		k->buf_n += j;
	}
	return 0;
}

static int cachekey_ows(char c)
{
	return c == ' ' || c == '\t';
}

static int cachekey_is_cookie(const char *name, size_t n)
{
	static const char lit[] = "cookie";
	size_t i;

	if (n != sizeof(lit) - 1)
		return 0;
	for (i = 0; i < n; i++)
		if (cachekey_lower((unsigned char)name[i]) != (unsigned char)lit[i])
			return 0;
	return 1;
}

/* Index of <name> in the filter, or -1. */
static int cachekey_kept(const struct cachekey *k, const char *name, size_t n)
{
	size_t i;

	for (i = 0; i < k->n_cookies; i++)
		if (k->cookie_lens[i] == n && memcmp(k->cookies[i], name, n) == 0)
			return (int)i;
	return -1;
}

/* Byte classes of RFC 6265 4.1.1: a cookie-name is a token (RFC 9110 tchar),
 * a cookie-value is cookie-octets, optionally in DQUOTEs. */
#define CACHEKEY_C_TCHAR  0x01
#define CACHEKEY_C_OCTET  0x02

/* CACHEKEY_C_* of each byte: tchar (also a cookie-octet) 3, other
 * cookie-octets ( ) / : < = > ? @ [ ] { } 2, everything else 0 (CTLs, SP,
 * DQUOTE, ',', ';', '\\', DEL, every byte >= 0x80). */
static const uint8_t cachekey_classes[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 3, 0, 3, 3, 3, 3, 3, 2, 2, 3, 3, 0, 3, 3, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 0, 2, 2, 2, 2,
	2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 0, 2, 3, 3,
	3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 3, 2, 3, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static uint8_t cachekey_class(unsigned char c)
{
	return cachekey_classes[c];
}

static int cachekey_all(const char *p, const char *e, uint8_t cls)
{
	for (; p < e; p++)
		if (!(cachekey_class((unsigned char)*p) & cls))
			return 0;
	return 1;
}

/* The next byte of <*p> as a lenient parser may read a cookie name:
 * percent-decoded, lowercased, '.', '[' and SP as '_' (PHP). */
static unsigned char cachekey_canon_next(const char **p, const char *e)
{
	unsigned char c = (unsigned char)**p;
	int hi, lo;

	(*p)++;
	if (c == '%' && e - *p >= 2 && (hi = hex_digit((unsigned char)(*p)[0])) >= 0 &&
	    (lo = hex_digit((unsigned char)(*p)[1])) >= 0) {
		c = (unsigned char)(hi << 4 | lo);
		*p += 2;
	}
	c = cachekey_lower(c);
	return c == '.' || c == '[' || c == ' ' ? '_' : c;
}

/* 1 if some lenient parser could read <n> as the kept name <kn>. */
static int cachekey_confusable(const char *n, const char *ne, const char *kn, size_t klen)
{
	const char *ke = kn + klen;

	while (n < ne && kn < ke)
		if (cachekey_canon_next(&n, ne) != cachekey_canon_next(&kn, ke))
			return 0;
	return n == ne && kn == ke;
}

static int cachekey_all_ows(const char *p, const char *e)
{
	for (; p < e; p++)
		if (!cachekey_ows(*p))
			return 0;
	return 1;
}

/* 1 if <v> is a strict RFC 6265 cookie-string (name=value pairs split on
 * ';', SP/HT only around pairs) whose kept cookies every reasonable parser
 * reads the same: each kept name at most once, unquoted, and no other name
 * that a lenient parser could take for a kept one (case, percent-encoding,
 * PHP's '.' to '_'). Anything else (any byte outside the grammar: NUL, NBSP,
 * VT, ',', '\\', obs-text; a segment without '=', an empty segment or name,
 * spaces around '=') is uncertain: 0. An empty or blank value: 2. */
static int cachekey_cookies_certain(const struct cachekey *k, const char *v, size_t len)
{
	const char *p = v, *end = v + len, *s, *e, *eq, *seg;
	uint64_t seen = 0;
	size_t i;
	int idx;

	if (cachekey_all_ows(v, end))
		return 2;  /* no cookie at all, for every parser */
	for (;;) {
		seg = memchr(p, ';', (size_t)(end - p));
		e = seg ? seg : end;
		s = p;
		while (s < e && cachekey_ows(*s))
			s++;
		while (e > s && cachekey_ows(e[-1]))
			e--;
		eq = memchr(s, '=', (size_t)(e - s));
		if (!eq || eq == s || !cachekey_all(s, eq, CACHEKEY_C_TCHAR))
			return 0;
		idx = cachekey_kept(k, s, (size_t)(eq - s));
		if (e - eq >= 3 && eq[1] == '"' && e[-1] == '"') {
			if (idx >= 0 || !cachekey_all(eq + 2, e - 1, CACHEKEY_C_OCTET))
				return 0;  /* a quoted kept value: unquoted by some parsers only */
		} else if (!cachekey_all(eq + 1, e, CACHEKEY_C_OCTET)) {
			return 0;
		}
		if (idx >= 0) {
			if (seen & (UINT64_C(1) << idx))
				return 0;  /* first-wins and last-wins parsers disagree */
			seen |= UINT64_C(1) << idx;
		} else {
			for (i = 0; i < k->n_cookies; i++)
				if (cachekey_confusable(s, eq, k->cookies[i], k->cookie_lens[i]))
					return 0;
		}
		if (!seg)
			return 1;
		p = seg + 1;
	}
}

/* Feeds a Cookie header value under the filter: its kept pairs when the
 * header is certain (cachekey_cookies_certain()), else the whole raw value,
 * tagged apart: two uncertain headers then share a key only when they are
 * the same bytes, which every parser reads alike. */
static int cachekey_cookies(struct cachekey *k, const char *v, size_t len)
{
	const char *p = v, *end = v + len, *seg_end, *eq, *ns, *ne, *vs, *ve;
	uint64_t count = 0;

	switch (cachekey_cookies_certain(k, v, len)) {
	case 0:
		return cachekey_field(k, 'R', v, len);
	case 2:
		return cachekey_u64(k, 'c', 0);
	}
	while (p < end) {
		seg_end = memchr(p, ';', (size_t)(end - p));
		if (!seg_end)
			seg_end = end;
		eq = memchr(p, '=', (size_t)(seg_end - p));  /* certain: never NULL */
		ns = p;
		ne = eq;
		vs = eq + 1;
		ve = seg_end;
		while (ns < ne && cachekey_ows(*ns))
			ns++;
		while (ve > vs && cachekey_ows(ve[-1]))
			ve--;
		if (cachekey_kept(k, ns, (size_t)(ne - ns)) >= 0) {
			if (cachekey_field(k, 'k', ns, (size_t)(ne - ns)) < 0 ||
			    cachekey_field(k, 'w', vs, (size_t)(ve - vs)) < 0)
				return -1;
			count++;
		}
		p = seg_end + 1;
	}
	return cachekey_u64(k, 'c', count);
}

int cachekey_salt_new(uint8_t salt[CACHEKEY_SALT_LEN])
{
	return RAND_bytes(salt, CACHEKEY_SALT_LEN) == 1 ? 0 : -1;
}

/* Pads the prefix to a whole SHA-256 block ('P' z:u8, z zero bytes): a
 * request's own bytes then start a fresh block, and a usual request (one
 * Cookie header, a short URI) costs two compressions instead of three. The
 * padding depends only on the configuration. */
static int cachekey_align(struct cachekey *k)
{
	static const uint8_t zeros[64];
	uint8_t b[2];

	if (cachekey_flush(k) < 0)
		return -1;
	b[0] = 'P';
	b[1] = (uint8_t)((SHA256_CBLOCK - (k->ctx.num + 2) % SHA256_CBLOCK) % SHA256_CBLOCK);
	if (cachekey_feed(k, b, 2) < 0 || cachekey_feed(k, zeros, b[1]) < 0 ||
	    cachekey_flush(k) < 0)
		return -1;
	return k->ctx.num == 0 ? 0 : -1;
}

static int cachekey_name_ok(const char *s)
{
	const unsigned char *p;

	if (!s || !*s)
		return 0;
	for (p = (const unsigned char *)s; *p; p++)
		if (*p <= ' ' || *p == 0x7f || *p == '=' || *p == ';')
			return 0;
	return 1;
}

static int cachekey_cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct cachekey *cachekey_new(const struct cachekey_opts *o, char *err, size_t errlen)
{
	static const char tag[] = "spoa-auth/cred/3";
	struct cachekey *k;
	size_t i, j;

	k = calloc(1, sizeof(*k));
	if (!k) {
		snprintf(err, errlen, "cache key: out of memory");
		return NULL;
	}
	k->flags = (o->include_uri ? CACHEKEY_F_URI : 0) | (o->include_client ? CACHEKEY_F_CLIENT : 0);

	if (o->n_cookie_names > CACHEKEY_MAX_COOKIES) {
		snprintf(err, errlen, "cache key: more than %d cookie names", CACHEKEY_MAX_COOKIES);
		goto out_free;
	}
	if (o->n_cookie_names) {
		k->cookies = calloc(o->n_cookie_names, sizeof(*k->cookies));
		k->cookie_lens = calloc(o->n_cookie_names, sizeof(*k->cookie_lens));
		if (!k->cookies || !k->cookie_lens)
			goto out_oom;
		for (i = 0; i < o->n_cookie_names; i++) {
			if (!cachekey_name_ok(o->cookie_names[i])) {
				snprintf(err, errlen, "cache key: bad cookie name #%zu", i + 1);
				goto out_free;
			}
			k->cookies[i] = strdup(o->cookie_names[i]);
			if (!k->cookies[i])
				goto out_oom;
			k->n_cookies = i + 1;
		}
		/* the filter is a set: order and repeats in the list do not matter */
		qsort(k->cookies, k->n_cookies, sizeof(*k->cookies), cachekey_cmp_names);
		for (i = j = 0; i < k->n_cookies; i++) {
			if (j && strcmp(k->cookies[j - 1], k->cookies[i]) == 0) {
				free(k->cookies[i]);
				k->cookies[i] = NULL;
				continue;
			}
			k->cookies[j++] = k->cookies[i];
		}
		k->n_cookies = j;
		for (i = 0; i < j; i++)
			k->cookie_lens[i] = strlen(k->cookies[i]);
	}

	/* the prefix is built in <ctx> (cachekey_feed()'s target), then kept */
	if (SHA256_Init(&k->ctx) != 1 ||
	    cachekey_feed(k, tag, sizeof(tag)) < 0 ||
	    cachekey_field(k, 'S', o->salt, o->salt ? CACHEKEY_SALT_LEN : 0) < 0 ||
	    cachekey_field(k, 's', o->scope, o->scope_len) < 0 ||
	    cachekey_u64(k, 'F', k->cookies ? k->n_cookies : UINT64_MAX) < 0)
		goto out_ssl;
	for (i = 0; i < k->n_cookies; i++)
		if (cachekey_field(k, 'f', k->cookies[i], k->cookie_lens[i]) < 0)
			goto out_ssl;
	if (cachekey_align(k) < 0)
		goto out_ssl;
	k->prefix = k->ctx;
	return k;

out_ssl:
	snprintf(err, errlen, "cache key: OpenSSL SHA-256 unavailable");
	goto out_free;
out_oom:
	snprintf(err, errlen, "cache key: out of memory");
out_free:
	cachekey_free(k);
	return NULL;
}

void cachekey_free(struct cachekey *k)
{
	size_t i;

	if (!k)
		return;
	if (k->cookies)
		for (i = 0; i < k->n_cookies; i++)
			free(k->cookies[i]);
	free(k->cookies);
	free(k->cookie_lens);
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

int cachekey_begin(struct cachekey *k)
{
	k->cred_pending = 0;
	k->cred_in_buf = 0;
	k->fresh = 1;  /* <ctx> is taken from <prefix> at the first flush */
	k->buf_n = 0;
	return 0;
}

int cachekey_header(struct cachekey *k, const char *name, size_t name_len, const char *value,
                    size_t value_len)
{
	if (cachekey_field_lower(k, 'n', name, name ? name_len : 0) < 0)
		return -1;
	if (!value || !k->cookies || !cachekey_is_cookie(name, name_len))
		return cachekey_field(k, 'v', value, value_len);
	if (cachekey_feed(k, "C", 1) < 0)
		return -1;
	return cachekey_cookies(k, value, value_len);
}

/* Ends the credential part: writes <cred> from a copy of the running state
 * (or, <cred> NULL, keeps that copy for cachekey_cred()), then starts the
 * key's own fields. */
static int cachekey_split(struct cachekey *k, uint8_t cred[CACHEKEY_LEN], uint8_t extra_flags)
{
	uint8_t flags = k->flags | extra_flags;

	/* 'E' ends the header list: every header starts with 'n', and no tag
	 * inside a header is 'E', so no count is needed */
	if (cachekey_feed(k, "E", 1) < 0)
		return -1;
	k->cred_pending = 1;
	if (k->fresh) {
		/* everything since the prefix is still in <buf>: cred is the
		 * prefix fed buf[0..cred_n), the key's bytes follow in <buf> */
		k->cred_in_buf = 1;
		k->cred_n = k->buf_n;
	} else {
		if (cachekey_flush(k) < 0)
			return -1;
		k->cred = k->ctx;
	}
	if (cred && cachekey_cred(k, cred) < 0)
		return -1;
	/* the flags byte (< 8) is never cred's 'C' */
	return cachekey_feed(k, &flags, 1);
}

/* <v> big-endian at <p> (compilers make it one store). */
static void cachekey_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Finishes the key when all of its input after the prefix is in <buf> and
 * fits one block with the padding: the same digest SHA256_Final() gives,
 * without the Update/Final bookkeeping (one compression, at <buf>). */
static void cachekey_final_block(struct cachekey *k, uint8_t key[CACHEKEY_LEN])
{
	uint64_t bits = (((uint64_t)k->prefix.Nh << 32) | k->prefix.Nl) + (uint64_t)k->buf_n * 8;
	SHA256_CTX c;

	k->buf[k->buf_n] = 0x80;
	memset(k->buf + k->buf_n + 1, 0, CACHEKEY_ONE_BLOCK_MAX - k->buf_n);
	cachekey_be32(k->buf + SHA256_CBLOCK - 8, (uint32_t)(bits >> 32));
	cachekey_be32(k->buf + SHA256_CBLOCK - 4, (uint32_t)bits);
	memcpy(c.h, k->prefix.h, sizeof(c.h));
	SHA256_Transform(&c, k->buf);
	cachekey_be32(key, c.h[0]);
	cachekey_be32(key + 4, c.h[1]);
	cachekey_be32(key + 8, c.h[2]);
	cachekey_be32(key + 12, c.h[3]);
	cachekey_be32(key + 16, c.h[4]);
	cachekey_be32(key + 20, c.h[5]);
	cachekey_be32(key + 24, c.h[6]);
	cachekey_be32(key + 28, c.h[7]);
}

/* <tag> 'u': <uri> is the URI; 'o': a scope name (cachekey_end_scope()). */
static int cachekey_finish(struct cachekey *k, uint8_t tag, const char *uri, size_t uri_len,
                           uint8_t key[CACHEKEY_LEN])
{
	if ((k->flags & CACHEKEY_F_URI) && cachekey_field(k, tag, uri, uri_len) < 0)
		return -1;
	if (k->fresh && k->buf_n <= CACHEKEY_ONE_BLOCK_MAX) {
		cachekey_final_block(k, key);
		return 0;
	}
	if (cachekey_flush(k) < 0)
		return -1;
	return SHA256_Final(key, &k->ctx) == 1 ? 0 : -1;
}

int cachekey_cred(struct cachekey *k, uint8_t cred[CACHEKEY_LEN])
{
	if (!k->cred_pending)
		return -1;
	k->cred_pending = 0;
	if (k->cred_in_buf && cachekey_cred_take(k) < 0)
		return -1;
	if (SHA256_Update(&k->cred, "C", 1) != 1 || SHA256_Final(cred, &k->cred) != 1)
		return -1;
	return 0;
}

int cachekey_end(struct cachekey *k, const char *xff, size_t xff_len, const char *uri,
                 size_t uri_len, uint8_t key[CACHEKEY_LEN], uint8_t cred[CACHEKEY_LEN])
{
	if (cachekey_split(k, cred, 0) < 0)
		return -1;
	if ((k->flags & CACHEKEY_F_CLIENT) && cachekey_field(k, 'x', xff, xff_len) < 0)
		return -1;
	return cachekey_finish(k, 'u', uri, uri_len, key);
}

/* cachekey_end_client() and cachekey_end_scope(): <tag> as for
 * cachekey_finish(). */
static int cachekey_end_addr(struct cachekey *k, const char *xff, size_t xff_len,
                             enum cachekey_addr kind, const void *addr, size_t addr_len,
                             uint8_t tag, const char *uri, size_t uri_len,
                             uint8_t key[CACHEKEY_LEN], uint8_t cred[CACHEKEY_LEN])
{
	if (cachekey_split(k, cred, tag == 'o' && (k->flags & CACHEKEY_F_URI) ? CACHEKEY_F_SCOPE
	                                                                        : 0) < 0)
		return -1;
	if (k->flags & CACHEKEY_F_CLIENT) {
		/* the address field's tag is its kind: 0, 4, 6 or 't' */
		if (cachekey_field(k, 'y', xff, xff_len) < 0 ||
		    cachekey_field(k, (uint8_t)kind, kind == CACHEKEY_ADDR_NONE ? NULL : addr,
		                   kind == CACHEKEY_ADDR_NONE ? 0 : addr_len) < 0)
			return -1;
	}
	return cachekey_finish(k, tag, uri, uri_len, key);
}

int cachekey_end_client(struct cachekey *k, const char *xff, size_t xff_len,
                        enum cachekey_addr kind, const void *addr, size_t addr_len,
                        const char *uri, size_t uri_len, uint8_t key[CACHEKEY_LEN],
                        uint8_t cred[CACHEKEY_LEN])
{
	return cachekey_end_addr(k, xff, xff_len, kind, addr, addr_len, 'u', uri, uri_len, key,
	                         cred);
}

int cachekey_end_scope(struct cachekey *k, const char *xff, size_t xff_len,
                       enum cachekey_addr kind, const void *addr, size_t addr_len,
                       const char *scope, size_t scope_len, uint8_t key[CACHEKEY_LEN],
                       uint8_t cred[CACHEKEY_LEN])
{
	return cachekey_end_addr(k, xff, xff_len, kind, addr, addr_len, 'o', scope, scope_len,
	                         key, cred);
}

int cachekey_compute(struct cachekey *k, const struct cachekey_hdr *hdrs, size_t n,
                     const char *xff, size_t xff_len, const char *uri, size_t uri_len,
                     uint8_t key[CACHEKEY_LEN], uint8_t cred[CACHEKEY_LEN])
{
	size_t i;

	if (cachekey_begin(k) < 0)
		return -1;
	for (i = 0; i < n; i++)
		if (cachekey_header(k, hdrs[i].name, hdrs[i].name_len, hdrs[i].value,
		                    hdrs[i].value_len) < 0)
			return -1;
	return cachekey_end(k, xff, xff_len, uri, uri_len, key, cred);
}

struct cachekey *cachekey_from_cfg(const struct cfg *cfg, const uint8_t *salt, char *err,
                                   size_t errlen)
{
	struct cachekey_opts o;

	memset(&o, 0, sizeof(o));
	o.include_uri = cfg->cache_key_uri;
	o.include_client = cfg->cache_key_client;
	o.cookie_names = (const char *const *)cfg->cache_key_cookies;
	o.n_cookie_names = cfg->n_cache_key_cookies;
	o.salt = salt;
	o.scope = cfg->user_service_url;
	o.scope_len = strlen(cfg->user_service_url);
	return cachekey_new(&o, err, errlen);
}
