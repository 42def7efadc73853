/*
 * cookie_ref.h: reference Cookie-header parsers for the cache-key property
 * test (test_cachekey.c) and the fuzz target (tests/fuzz/fuzz_cookiekey.c).
 *
 * Each parser reads the value of one cookie the way a family of real parsers
 * does (a strict RFC 6265 reader, Python's str.strip(), plain ';' splitters
 * with first- or last-wins, unquoting readers, case-insensitive names,
 * comma splitting, PHP's name decoding). The invariant checked with them:
 * two Cookie headers that get the same cache key give, under every one of
 * these parsers, the same value (or the same absence) for each kept cookie.
 *
 * What it never does: allocate, or read outside the given bytes. Header-only,
 * static functions: each test includes it once.
 */
#ifndef SPOA_TEST_COOKIE_REF_H
#define SPOA_TEST_COOKIE_REF_H

#include <stddef.h>
#include <string.h>

/* What a parser found: present 0 = no such cookie; else the value bytes. */
struct cookie_ref_val {
	int present;
	size_t len;
	char buf[256];  /* values longer than this compare by their first 256 bytes and length */
};

struct cookie_ref_opts {
	const char *seps;   /* pair separators */
	int ws;             /* 0: trim SP/HT; 1: trim Python's whitespace (str.strip()) */
	int trim_around_eq; /* trim around the name and the value too */
	int last_wins;
	int unquote;        /* strip one pair of DQUOTEs around the value */
	int icase;          /* names compared case-insensitively */
	int php;            /* names percent-decoded, '.', ' ', '[' -> '_' */
};

static int cookie_ref_isws(unsigned char c, int py)
{
	if (c == ' ' || c == '\t')
		return 1;
	/* latin-1 decoded str.isspace(): \n \v \f \r, \x1c-\x1f, \x85, NBSP */
	return py && ((c >= 0x0a && c <= 0x0d) || (c >= 0x1c && c <= 0x1f) || c == 0x85 ||
	              c == 0xa0);
}

static int cookie_ref_hex(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static unsigned char cookie_ref_fold(unsigned char c, const struct cookie_ref_opts *o)
{
	if (o->icase && c >= 'A' && c <= 'Z')
		c = (unsigned char)(c + 32);
	if (o->php && (c == '.' || c == ' ' || c == '['))
		c = '_';
	return c;
}

/* Name <n>..<ne> read by <o> equals <want>? */
static int cookie_ref_name_eq(const char *n, const char *ne, const char *want,
                              const struct cookie_ref_opts *o)
{
	size_t wl = strlen(want), i = 0;
	int hi, lo;

	while (n < ne) {
		unsigned char c = (unsigned char)*n++;

		if (o->php && c == '%' && ne - n >= 2 && (hi = cookie_ref_hex((unsigned char)n[0])) >= 0 &&
		    (lo = cookie_ref_hex((unsigned char)n[1])) >= 0) {
			c = (unsigned char)(hi << 4 | lo);
			n += 2;
		}
		if (i >= wl || cookie_ref_fold(c, o) != cookie_ref_fold((unsigned char)want[i], o))
			return 0;
		i++;
	}
	return i == wl;
}

static void cookie_ref_generic(const char *h, size_t len, const char *name,
                               const struct cookie_ref_opts *o, struct cookie_ref_val *out)
{
	const char *p = h, *end = h + len;

	out->present = 0;
	out->len = 0;
	while (p <= end) {
		const char *s = p, *e = p, *eq, *vs, *ve;

		while (e < end && !strchr(o->seps, *e))
			e++;
		p = e + 1;
		while (s < e && cookie_ref_isws((unsigned char)*s, o->ws))
			s++;
		while (e > s && cookie_ref_isws((unsigned char)e[-1], o->ws))
			e--;
		eq = memchr(s, '=', (size_t)(e - s));
		if (!eq)
			continue;
		vs = eq + 1;
		ve = e;
		if (o->trim_around_eq) {
			while (eq > s && cookie_ref_isws((unsigned char)eq[-1], o->ws))
				eq--;
			while (vs < ve && cookie_ref_isws((unsigned char)*vs, o->ws))
				vs++;
		}
		if (!cookie_ref_name_eq(s, eq, name, o))
			continue;
		if (out->present && !o->last_wins)
			continue;
		if (o->unquote && ve - vs >= 2 && *vs == '"' && ve[-1] == '"') {
			vs++;
			ve--;
		}
		out->present = 1;
		out->len = (size_t)(ve - vs);
		memcpy(out->buf, vs, out->len < sizeof(out->buf) ? out->len : sizeof(out->buf));
	}
}

/* A strict RFC 6265 reader: the whole header must be a cookie-string (SP/HT
 * tolerated around pairs), else it sees no cookie at all; first wins. */
static int cookie_ref_strict_ok(const char *h, size_t len)
{
	const char *p = h, *end = h + len;
	size_t i;

	for (i = 0; i < len && (h[i] == ' ' || h[i] == '\t'); i++)
		;
	if (i == len)
		return 1;  /* no cookie */
	while (p <= end) {
		const char *s = p, *e = p, *eq, *q;

		while (e < end && *e != ';')
			e++;
		p = e + 1;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		eq = memchr(s, '=', (size_t)(e - s));
		if (!eq || eq == s)
			return 0;
		for (q = s; q < eq; q++) {
			unsigned char c = (unsigned char)*q;

			if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c))
				return 0;
		}
		q = eq + 1;
		if (e - q >= 2 && *q == '"' && e[-1] == '"') {
			q++;
			e--;
		}
		for (; q < e; q++) {
			unsigned char c = (unsigned char)*q;

			if (c <= 0x20 || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\')
				return 0;
		}
	}
	return 1;
}

enum {
	COOKIE_REF_STRICT = 0,
	COOKIE_REF_PY_FIRST,     /* the demo/fake user service: part.strip().partition('=') */
	COOKIE_REF_PY_LAST,      /* the same into a dict */
	COOKIE_REF_SEMI_FIRST,   /* split on ';', trim SP/HT everywhere */
	COOKIE_REF_SEMI_LAST,
	COOKIE_REF_UNQUOTE,      /* Go/Java-like: quotes around a value dropped */
	COOKIE_REF_ICASE,        /* case-insensitive names */
	COOKIE_REF_COMMA,        /* RFC 2965: ',' separates pairs too */
	COOKIE_REF_PHP,          /* names percent-decoded, '.' ' ' '[' -> '_', first wins */
	COOKIE_REF_ENTRIES
};

static const char *const cookie_ref_names[COOKIE_REF_ENTRIES] = {
	"strict", "python-strip first-wins", "python-strip last-wins", "split-';' first-wins",
	"split-';' last-wins", "unquote", "case-insensitive", "comma-split", "php-like",
};

/* Reads cookie <name> of header <h> as reference parser <which>. */
static void cookie_ref_parse(int which, const char *h, size_t len, const char *name,
                             struct cookie_ref_val *out)
{
	static const struct cookie_ref_opts opts[COOKIE_REF_ENTRIES] = {
		[COOKIE_REF_STRICT] = { ";", 0, 0, 0, 0, 0, 0 },
		[COOKIE_REF_PY_FIRST] = { ";", 1, 0, 0, 0, 0, 0 },
		[COOKIE_REF_PY_LAST] = { ";", 1, 0, 1, 0, 0, 0 },
		[COOKIE_REF_SEMI_FIRST] = { ";", 0, 1, 0, 0, 0, 0 },
		[COOKIE_REF_SEMI_LAST] = { ";", 0, 1, 1, 0, 0, 0 },
		[COOKIE_REF_UNQUOTE] = { ";", 0, 1, 0, 1, 0, 0 },
		[COOKIE_REF_ICASE] = { ";", 0, 1, 0, 0, 1, 0 },
		[COOKIE_REF_COMMA] = { ";,", 0, 1, 0, 0, 0, 0 },
		[COOKIE_REF_PHP] = { ";", 1, 0, 0, 0, 0, 1 },
	};

	if (which == COOKIE_REF_STRICT && !cookie_ref_strict_ok(h, len)) {
		out->present = 0;
		out->len = 0;
		return;
	}
	cookie_ref_generic(h, len, name, &opts[which], out);
}

static int cookie_ref_same(const struct cookie_ref_val *a, const struct cookie_ref_val *b)
{
	size_t n = a->len < sizeof(a->buf) ? a->len : sizeof(a->buf);

	if (a->present != b->present)
		return 0;
	return !a->present || (a->len == b->len && memcmp(a->buf, b->buf, n) == 0);
}

#endif /* SPOA_TEST_COOKIE_REF_H */
