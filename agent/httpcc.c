/*
 * httpcc.c: Cache-Control parsing, the cache TTL policy, and JWT exp reading.
 *
 * Pure code over untrusted bytes: every read is bounded by an end pointer,
 * numbers saturate instead of overflowing, and nothing recurses (the JSON
 * walker keeps its nesting in a 64-bit stack). Never allocates, never logs,
 * never depends on the locale (ASCII case folding by hand).
 */
#include <stdint.h>
#include <string.h>

#include "hex.h"
#include "httpcc.h"

/* ---- Cache-Control ---------------------------------------------------- */

static int httpcc_is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 9110 tchar (ALPHA, DIGIT and "!#$%&'*+-.^_`|~") as bitmaps of the
 * bytes 0x00-0x3f and 0x40-0x7f; nothing from 0x80 up. */
#define HTTPCC_TCHAR_LO UINT64_C(0x03ff6cfa00000000)
#define HTTPCC_TCHAR_HI UINT64_C(0x57ffffffc7fffffe)

static int httpcc_is_tchar(unsigned char c)
{
	if (c >= 0x80)
		return 0;
	return (int)(((c < 0x40 ? HTTPCC_TCHAR_LO : HTTPCC_TCHAR_HI) >> (c & 0x3f)) & 1);
}

static unsigned char httpcc_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Case-insensitive compare of <s>/<n> with the lowercase literal <lit>. */
static int httpcc_tok_is(const char *s, size_t n, const char *lit)
{
	size_t i;

	if (n != strlen(lit))
		return 0;
	for (i = 0; i < n; i++)
		if (httpcc_lower((unsigned char)s[i]) != (unsigned char)lit[i])
			return 0;
	return 1;
}

/* delta-seconds: 1*DIGIT, clamped to HTTPCC_DELTA_MAX. Returns 0 or -1. */
static int httpcc_delta(const char *s, size_t n, uint32_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v <= HTTPCC_DELTA_MAX)
			v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v > HTTPCC_DELTA_MAX ? HTTPCC_DELTA_MAX : (uint32_t)v;
	return 0;
}

/* Skips to the next top-level comma (quoted strings may hold commas). */
static size_t httpcc_skip_element(const char *v, size_t i, size_t len)
{
	int quoted = 0;

	for (; i < len; i++) {
		if (quoted) {
			if (v[i] == '\\')
				i++;
			else if (v[i] == '"')
				quoted = 0;
		} else if (v[i] == '"') {
			quoted = 1;
		} else if (v[i] == ',') {
			break;
		}
	}
	return i < len ? i : len;
}

static void httpcc_set_delta(struct httpcc *out, unsigned flag, uint32_t *field,
                             const char *val, size_t vlen, int has_val)
{
	uint32_t d;

	if (!has_val || httpcc_delta(val, vlen, &d) < 0) {
		out->flags |= HTTPCC_F_INVALID;
		return;
	}
	if (!(out->flags & flag) || d < *field)
		*field = d;
	out->flags |= flag;
}

int httpcc_parse(const char *v, size_t len, struct httpcc *out)
{
	const char *name, *val;
	size_t i = 0, nlen, vlen;
	int bad = 0, has_val;

	memset(out, 0, sizeof(*out));
	while (i < len) {
		while (i < len && (httpcc_is_ows(v[i]) || v[i] == ','))
			i++;
		if (i >= len)
			break;
		name = v + i;
		while (i < len && httpcc_is_tchar((unsigned char)v[i]))
			i++;
		nlen = (size_t)(v + i - name);
		if (nlen == 0)
			goto garbage;
		while (i < len && httpcc_is_ows(v[i]))
			i++;
		has_val = 0;
		val = NULL;
		vlen = 0;
		if (i < len && v[i] == '=') {
			i++;
			while (i < len && httpcc_is_ows(v[i]))
				i++;
			has_val = 1;
			if (i < len && v[i] == '"') {
				/* quoted-string: the value is its content; an escape makes a
				 * number invalid, which is what it deserves */
				val = v + ++i;
				while (i < len && v[i] != '"') {
					if (v[i] == '\\')
						i++;
					i++;
				}
				if (i >= len)
					goto garbage; /* unterminated */
				vlen = (size_t)(v + i - val);
				i++;
			} else {
				val = v + i;
				while (i < len && httpcc_is_tchar((unsigned char)v[i]))
					i++;
				vlen = (size_t)(v + i - val);
			}
			while (i < len && httpcc_is_ows(v[i]))
				i++;
		}
		if (i < len && v[i] != ',')
			goto garbage;

		if (httpcc_tok_is(name, nlen, "max-age"))
			httpcc_set_delta(out, HTTPCC_F_MAX_AGE, &out->max_age, val, vlen, has_val);
		else if (httpcc_tok_is(name, nlen, "s-maxage"))
			httpcc_set_delta(out, HTTPCC_F_S_MAXAGE, &out->s_maxage, val, vlen, has_val);
		else if (httpcc_tok_is(name, nlen, "no-store"))
			out->flags |= HTTPCC_F_NO_STORE;
		else if (httpcc_tok_is(name, nlen, "no-cache"))
			out->flags |= HTTPCC_F_NO_CACHE;
		else if (httpcc_tok_is(name, nlen, "private"))
			out->flags |= HTTPCC_F_PRIVATE;
		else if (httpcc_tok_is(name, nlen, "public"))
			out->flags |= HTTPCC_F_PUBLIC;
		continue;
	garbage:
		/* Conservative: an element we cannot read may have meant to
		 * forbid caching or to shorten it. A broken max-age or s-maxage
		 * makes the response uncacheable, and so does "no-store" or
		 * "no-cache" anywhere in the broken element. */
		bad = 1;
		if (httpcc_tok_is(name, nlen, "max-age") || httpcc_tok_is(name, nlen, "s-maxage"))
			out->flags |= HTTPCC_F_INVALID;
		i = httpcc_skip_element(v, i, len);
		for (val = name; (size_t)(v + i - val) >= 8; val++) {
			if (httpcc_tok_is(val, 8, "no-store"))
				out->flags |= HTTPCC_F_NO_STORE;
			else if (httpcc_tok_is(val, 8, "no-cache"))
				out->flags |= HTTPCC_F_NO_CACHE;
		}
	}
	return bad ? -1 : 0;
}

/* ---- JWT exp ---------------------------------------------------------- */

/* base64url alphabet value + 1, 0 if not in the alphabet (a table: this runs
 * per token byte on every cached allow). */
static const uint8_t httpcc_b64_tab[256] = {
	['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7,
	['H'] = 8, ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14,
	['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21,
	['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26,
	['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33,
	['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
	['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47,
	['v'] = 48, ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52,
	['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59,
	['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64,
};

/* httpcc_b64_sN[c]: the base64url value of c shifted left by N, or
 * HTTPCC_B64_BAD (a bit no shifted value reaches) outside the alphabet.
 * Four characters decode to 24 bits with four lookups and three ORs, and
 * one test checks them all. Built by the preprocessor from one definition
 * of the alphabet. */
#define HTTPCC_B64_BAD 0x80000000u
#define HTTPCC_B64V(c) ((c) >= 'A' && (c) <= 'Z' ? (c) - 'A' :                     \
                        (c) >= 'a' && (c) <= 'z' ? (c) - 'a' + 26 :                \
                        (c) >= '0' && (c) <= '9' ? (c) - '0' + 52 :                \
                        (c) == '-' ? 62 : (c) == '_' ? 63 : -1)
#define HTTPCC_B64E(c, sh) (HTTPCC_B64V(c) < 0 ? HTTPCC_B64_BAD : (uint32_t)HTTPCC_B64V(c) << (sh))
#define HTTPCC_B64_4(c, sh) HTTPCC_B64E((c), sh), HTTPCC_B64E((c) + 1, sh), \
                            HTTPCC_B64E((c) + 2, sh), HTTPCC_B64E((c) + 3, sh)
#define HTTPCC_B64_16(c, sh) HTTPCC_B64_4((c), sh), HTTPCC_B64_4((c) + 4, sh), \
                             HTTPCC_B64_4((c) + 8, sh), HTTPCC_B64_4((c) + 12, sh)
#define HTTPCC_B64_64(c, sh) HTTPCC_B64_16((c), sh), HTTPCC_B64_16((c) + 16, sh), \
                             HTTPCC_B64_16((c) + 32, sh), HTTPCC_B64_16((c) + 48, sh)
#define HTTPCC_B64_TABLE(sh) { HTTPCC_B64_64(0, sh), HTTPCC_B64_64(64, sh), \
                               HTTPCC_B64_64(128, sh), HTTPCC_B64_64(192, sh) }
static const uint32_t httpcc_b64_s18[256] = HTTPCC_B64_TABLE(18);
static const uint32_t httpcc_b64_s12[256] = HTTPCC_B64_TABLE(12);
static const uint32_t httpcc_b64_s6[256] = HTTPCC_B64_TABLE(6);
static const uint32_t httpcc_b64_s0[256] = HTTPCC_B64_TABLE(0);

/* base64url alphabet value, or -1 */
static inline int httpcc_b64_val(unsigned char c)
{
	return (int)httpcc_b64_tab[c] - 1;
}

/* Bytes of a JWT payload decoded at once onto the stack (a larger payload
 * is decoded as it is walked). */
#define HTTPCC_JWT_FLAT_MAX 1536

/* A streaming base64url decoder over one validated segment, with one byte of
 * lookahead for the JSON walker; or (plain) a reader over bytes already
 * decoded by httpcc_b64_flat(). */
struct httpcc_b64 {
	const char *p;    /* borrowed: next input char (plain: next byte) */
	const char *end;  /* borrowed: end of the segment (padding stripped) */
	uint32_t acc;     /* pending bits */
	int nbits;        /* number of pending bits */
	int peeked;       /* next output byte, -1 if none buffered */
	int plain;        /* 1: p..end are decoded bytes */
};

static void httpcc_b64_init(struct httpcc_b64 *b, const char *p, const char *end)
{
	b->p = p;
	b->end = end;
	b->acc = 0;
	b->nbits = 0;
	b->peeked = -1;
	b->plain = 0;
}

/* Decodes the base64url segment [p, end) (padding already stripped, length
 * mod 4 not 1) into <out> (room for (end - p) * 3 / 4 bytes): the bytes the
 * streaming decoder yields, leftover bits dropped alike. Returns the number
 * of bytes, or -1 on a byte outside the alphabet. */
static long httpcc_b64_flat(const char *p, const char *end, uint8_t *out)
{
	const unsigned char *s = (const unsigned char *)p, *e = (const unsigned char *)end;
	uint8_t *o = out;
	int a, b, c;

	while (e - s >= 4) {
		uint32_t v = httpcc_b64_s18[s[0]] | httpcc_b64_s12[s[1]] | httpcc_b64_s6[s[2]] |
		             httpcc_b64_s0[s[3]];

		if (v & HTTPCC_B64_BAD)
			return -1;
		o[0] = (uint8_t)(v >> 16);
		o[1] = (uint8_t)(v >> 8);
		o[2] = (uint8_t)v;
		o += 3;
		s += 4;
	}
	if (e - s >= 2) {
		a = httpcc_b64_tab[s[0]];
		b = httpcc_b64_tab[s[1]];
		if (!a || !b)
			return -1;
		a--, b--;
		*o++ = (uint8_t)(a << 2 | b >> 4);
		if (e - s == 3) {
			if (!(c = httpcc_b64_tab[s[2]]))
				return -1;
			c--;
			*o++ = (uint8_t)(b << 4 | c >> 2);
		}
	}
	return (long)(o - out);
}

/* Next decoded byte, or -1 at the end. The segment was validated already. */
static inline int httpcc_b64_raw(struct httpcc_b64 *b)
{
	if (b->plain)
		return b->p < b->end ? (unsigned char)*b->p++ : -1;
	while (b->nbits < 8) {
		if (b->p >= b->end)
			return -1; /* leftover bits (< 8) are padding */
		b->acc = (b->acc << 6) | (uint32_t)httpcc_b64_val((unsigned char)*b->p++);
		b->nbits += 6;
	}
	b->nbits -= 8;
	return (int)((b->acc >> b->nbits) & 0xff);
}

static inline int httpcc_peek(struct httpcc_b64 *b)
{
	if (b->peeked < 0)
		b->peeked = httpcc_b64_raw(b);
	return b->peeked;
}

static inline int httpcc_next(struct httpcc_b64 *b)
{
	int c = httpcc_peek(b);

	b->peeked = -1;
	return c;
}

static void httpcc_json_ws(struct httpcc_b64 *b)
{
	int c;

	while ((c = httpcc_peek(b)) == ' ' || c == '\t' || c == '\n' || c == '\r')
		httpcc_next(b);
}

/* A byte repeated in each of the 8 bytes of a uint64_t. */
#define HTTPCC_BYTES(b) ((uint64_t)(b) * UINT64_C(0x0101010101010101))

/* 1 if one of the 8 bytes of <x> is '"', '\\' or below 0x20: the bytes that
 * end a plain run inside a JSON string. Exact (the usual zero-byte test on
 * x ^ '"' and x ^ '\\', and x - 0x20.. & ~x for the controls, which flags
 * a byte only when it, or a lower byte already flagged, is below 0x20). */
static int httpcc_word_stops(uint64_t x)
{
	uint64_t q = x ^ HTTPCC_BYTES('"'), bs = x ^ HTTPCC_BYTES('\\');
	uint64_t one = HTTPCC_BYTES(1);

	return (((q - one) & ~q) | ((bs - one) & ~bs) | ((x - HTTPCC_BYTES(0x20)) & ~x)) &
	       HTTPCC_BYTES(0x80) ? 1 : 0;
}

/* End of the run of plain string bytes (none of '"', '\\', controls) that
 * starts at <p>, before <end>: eight bytes a step, then byte by byte. */
static const char *httpcc_plain_run(const char *p, const char *end)
{
	uint64_t w;

	while (end - p >= (long)sizeof(w)) {
		memcpy(&w, p, sizeof(w));
		if (httpcc_word_stops(w))
			break;
		p += sizeof(w);
	}
	while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
		p++;
	return p;
}

/* Reads a JSON string whose opening quote was consumed. If <is_exp> is not
 * NULL, sets it to whether the decoded string is exactly "exp". Returns 0 or
 * -1 if malformed. */
static int httpcc_json_string(struct httpcc_b64 *b, int *is_exp)
{
	static const char exp_lit[3] = { 'e', 'x', 'p' };
	size_t n = 0, run;
	int match = 1, c, cp, i, h;
	const char *q;

	for (;;) {
		if (b->plain && b->peeked < 0) {
			/* decoded bytes: skip the run of plain characters at once */
			q = httpcc_plain_run(b->p, b->end);
			run = (size_t)(q - b->p);
			if (match && run && (n + run > sizeof(exp_lit) ||
			                     memcmp(b->p, exp_lit + n, run) != 0))
				match = 0;
			n += run;
			b->p = q;
		}
		c = httpcc_next(b);
		if (c < 0 || c < 0x20)
			return -1;
		if (c == '"')
			break;
		cp = c;
		if (c == '\\') {
			c = httpcc_next(b);
			switch (c) {
			case '"': case '\\': case '/':
				cp = c;
				break;
			case 'b': case 'f': case 'n': case 'r': case 't':
				cp = 0x100; /* never part of "exp" */
				break;
			case 'u':
				cp = 0;
				for (i = 0; i < 4; i++) {
					if ((h = hex_digit(httpcc_next(b))) < 0)
						return -1;
					cp = cp << 4 | h;
				}
				break;
			default:
				return -1;
			}
		}
		if (match && (n >= sizeof(exp_lit) || cp != exp_lit[n]))
			match = 0;
		n++;
	}
	if (is_exp)
		*is_exp = match && n == sizeof(exp_lit);
	return 0;
}

/* Reads a JSON number. With <out>, stores floor(value) saturated to int64 and
 * fails on an exponent (not worth guessing). Returns 0 or -1. */
static int httpcc_json_number(struct httpcc_b64 *b, int64_t *out)
{
	uint64_t mag = 0;
	int neg = 0, frac_nz = 0, digits = 0, c;

	if (httpcc_peek(b) == '-') {
		neg = 1;
		httpcc_next(b);
	}
	c = httpcc_peek(b);
	if (c == '0') {
		httpcc_next(b);
		digits = 1;
	} else {
		while ((c = httpcc_peek(b)) >= '0' && c <= '9') {
			httpcc_next(b);
			if (mag <= (uint64_t)INT64_MAX)
				mag = mag * 10 + (uint64_t)(c - '0');
			digits++;
		}
	}
	if (!digits)
		return -1;
	if (httpcc_peek(b) == '.') {
		httpcc_next(b);
		digits = 0;
		while ((c = httpcc_peek(b)) >= '0' && c <= '9') {
			httpcc_next(b);
			if (c != '0')
				frac_nz = 1;
			digits++;
		}
		if (!digits)
			return -1;
	}
	c = httpcc_peek(b);
	if (c == 'e' || c == 'E') {
		if (out)
			return -1;
		httpcc_next(b);
		c = httpcc_peek(b);
		if (c == '+' || c == '-')
			httpcc_next(b);
		digits = 0;
		while ((c = httpcc_peek(b)) >= '0' && c <= '9') {
			httpcc_next(b);
			digits++;
		}
		if (!digits)
			return -1;
	}
	if (out) {
		if (mag > (uint64_t)INT64_MAX)
			mag = (uint64_t)INT64_MAX;
		if (!neg)
			*out = (int64_t)mag;
		else
			*out = -(int64_t)mag - (frac_nz ? 1 : 0); /* floor */
	}
	return 0;
}

static int httpcc_json_literal(struct httpcc_b64 *b, const char *lit)
{
	for (; *lit; lit++)
		if (httpcc_next(b) != (unsigned char)*lit)
			return -1;
	return 0;
}

#define HTTPCC_JSON_DEPTH 64

/* Skips one JSON value (any nesting, no recursion). Returns 0 or -1. */
static int httpcc_json_skip(struct httpcc_b64 *b)
{
	uint64_t stack = 0; /* bit set = object level, clear = array level */
	int depth = 0, c;

value:
	httpcc_json_ws(b);
	c = httpcc_peek(b);
	switch (c) {
	case '"':
		httpcc_next(b);
		if (httpcc_json_string(b, NULL) < 0)
			return -1;
		break;
	case '{':
	case '[':
		httpcc_next(b);
		if (depth == HTTPCC_JSON_DEPTH)
			return -1;
		stack = (stack << 1) | (c == '{');
		depth++;
		httpcc_json_ws(b);
		if (httpcc_peek(b) == (c == '{' ? '}' : ']')) {
			httpcc_next(b);
			stack >>= 1;
			depth--;
			break;
		}
		if (c == '[')
			goto value;
		goto key;
	case 't':
		if (httpcc_json_literal(b, "true") < 0)
			return -1;
		break;
	case 'f':
		if (httpcc_json_literal(b, "false") < 0)
			return -1;
		break;
	case 'n':
		if (httpcc_json_literal(b, "null") < 0)
			return -1;
		break;
	default:
		if (c != '-' && (c < '0' || c > '9'))
			return -1;
		if (httpcc_json_number(b, NULL) < 0)
			return -1;
		break;
	}

	/* after a value: close levels or move to the next element */
	while (depth > 0) {
		httpcc_json_ws(b);
		c = httpcc_next(b);
		if (c == ',') {
			if (stack & 1)
				goto key;
			goto value;
		}
		if (c != ((stack & 1) ? '}' : ']'))
			return -1;
		stack >>= 1;
		depth--;
	}
	return 0;

key:
	httpcc_json_ws(b);
	if (httpcc_next(b) != '"' || httpcc_json_string(b, NULL) < 0)
		return -1;
	httpcc_json_ws(b);
	if (httpcc_next(b) != ':')
		return -1;
	goto value;
}

/* The payload: one object; remembers the smallest top-level "exp". */
static int httpcc_json_payload(struct httpcc_b64 *b, int64_t *exp)
{
	int64_t v;
	int found = 0, is_exp, c;

	httpcc_json_ws(b);
	if (httpcc_next(b) != '{')
		return HTTPCC_JWT_BAD;
	httpcc_json_ws(b);
	if (httpcc_peek(b) == '}') {
		httpcc_next(b);
		goto tail;
	}
	for (;;) {
		httpcc_json_ws(b);
		if (httpcc_next(b) != '"' || httpcc_json_string(b, &is_exp) < 0)
			return HTTPCC_JWT_BAD;
		httpcc_json_ws(b);
		if (httpcc_next(b) != ':')
			return HTTPCC_JWT_BAD;
		httpcc_json_ws(b);
		if (is_exp) {
			c = httpcc_peek(b);
			if (c != '-' && (c < '0' || c > '9'))
				return HTTPCC_JWT_BAD;
			if (httpcc_json_number(b, &v) < 0)
				return HTTPCC_JWT_BAD;
			if (!found || v < *exp)
				*exp = v;
			found = 1;
		} else if (httpcc_json_skip(b) < 0) {
			return HTTPCC_JWT_BAD;
		}
		httpcc_json_ws(b);
		c = httpcc_next(b);
		if (c == '}')
			break;
		if (c != ',')
			return HTTPCC_JWT_BAD;
	}
tail:
	httpcc_json_ws(b);
	if (httpcc_peek(b) >= 0)
		return HTTPCC_JWT_BAD;
	return found ? HTTPCC_JWT_EXP : HTTPCC_JWT_NONE;
}

/* Validates a base64url segment [p, end): alphabet, at most two trailing '=',
 * a decodable length. Returns the end of the data (padding stripped) or NULL. */
/* Strips at most two trailing '=' from [p, end) and checks the length is
 * decodable. Returns the end of the data or NULL. */
static const char *httpcc_b64_strip(const char *p, const char *end)
{
	int pad = 0;

	while (end > p && end[-1] == '=' && pad < 2) {
		end--;
		pad++;
	}
	if (((size_t)(end - p) & 3) == 1)
		return NULL;
	return end;
}

static const char *httpcc_b64_segment(const char *p, const char *end)
{
	const char *q;

	end = httpcc_b64_strip(p, end);
	if (!end)
		return NULL;
	for (q = p; end - q >= 4; q += 4)
		if ((httpcc_b64_s0[(unsigned char)q[0]] | httpcc_b64_s0[(unsigned char)q[1]] |
		     httpcc_b64_s0[(unsigned char)q[2]] | httpcc_b64_s0[(unsigned char)q[3]]) &
		    HTTPCC_B64_BAD)
			return NULL;
	for (; q < end; q++)
		if (httpcc_b64_val((unsigned char)*q) < 0)
			return NULL;
	return end;
}

static int httpcc_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int httpcc_jwt_exp(const char *tok, size_t len, int64_t *exp)
{
	const char *p, *end, *dot1, *dot2, *hend, *pend;
	struct httpcc_b64 b;
	uint8_t flat[HTTPCC_JWT_FLAT_MAX];
	long n = -1;
	int64_t v = 0;
	int r;

	if (!tok)
		return HTTPCC_JWT_NONE;
	p = tok;
	end = tok + len;
	while (p < end && httpcc_is_space(*p))
		p++;
	while (end > p && httpcc_is_space(end[-1]))
		end--;

	dot1 = memchr(p, '.', (size_t)(end - p));
	if (!dot1)
		return HTTPCC_JWT_NONE;
	dot2 = memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1));
	if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
		return HTTPCC_JWT_NONE;
	if (dot1 == p || dot2 == dot1 + 1)
		return HTTPCC_JWT_NONE;
	hend = httpcc_b64_segment(p, dot1);
	pend = httpcc_b64_strip(dot1 + 1, dot2);
	if (!hend || !pend || !httpcc_b64_segment(dot2 + 1, end))
		return HTTPCC_JWT_NONE;
	/* the payload, the one segment read whole: decoded and checked in one
	 * pass when it fits the stack buffer, else checked here and decoded as
	 * it is walked */
	if ((size_t)(pend - dot1 - 1) / 4 * 3 + 2 <= sizeof(flat)) {
		n = httpcc_b64_flat(dot1 + 1, pend, flat);
		if (n < 0)
			return HTTPCC_JWT_NONE;
	} else if (!httpcc_b64_segment(dot1 + 1, pend)) {
		return HTTPCC_JWT_NONE;
	}

	/* the header must at least open a JSON object */
	httpcc_b64_init(&b, p, hend);
	httpcc_json_ws(&b);
	if (httpcc_peek(&b) != '{')
		return HTTPCC_JWT_NONE;

	httpcc_b64_init(&b, dot1 + 1, pend);
	if (n >= 0) {
		b.p = (const char *)flat;
		b.end = (const char *)flat + n;
		b.plain = 1;
	}
	r = httpcc_json_payload(&b, &v);
	if (r == HTTPCC_JWT_EXP)
		*exp = v;
	return r;
}

/* ---- TTL policy ------------------------------------------------------- */

static uint32_t httpcc_min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static uint32_t httpcc_sec_to_ms(uint32_t s)
{
	uint64_t ms = (uint64_t)s * 1000u;

	return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

uint32_t httpcc_ttl(const struct httpcc_policy *p, int status, const char *cc, size_t cc_len,
                    const char *body, size_t body_len, int64_t now_unix_ms)
{
	struct httpcc h;
	uint32_t ttl;
	int64_t exp, left;
	int deny;

	/* a wall clock before 1970 or absurdly far: keep the arithmetic safe */
	if (now_unix_ms < 0)
		now_unix_ms = 0;
	if (now_unix_ms > INT64_MAX / 2)
		now_unix_ms = INT64_MAX / 2;

	if (status >= 200 && status <= 299)
		deny = 0;
	else if (status >= 300 && status <= 499 && status != 408 && status != 429)
		deny = 1;
	else
		return 0;

	memset(&h, 0, sizeof(h));
	if (cc)
		httpcc_parse(cc, cc_len, &h);
	if (h.flags & (HTTPCC_F_NO_STORE | HTTPCC_F_NO_CACHE | HTTPCC_F_INVALID))
		return 0;

	ttl = deny ? p->deny_ttl_ms : p->default_ttl_ms;
	if (h.flags & HTTPCC_F_S_MAXAGE) {
		ttl = deny ? httpcc_min32(ttl, httpcc_sec_to_ms(h.s_maxage))
		           : httpcc_sec_to_ms(h.s_maxage);
	} else if (h.flags & HTTPCC_F_MAX_AGE) {
		ttl = deny ? httpcc_min32(ttl, httpcc_sec_to_ms(h.max_age))
		           : httpcc_sec_to_ms(h.max_age);
	}
	if (p->max_ttl_ms)
		ttl = httpcc_min32(ttl, p->max_ttl_ms);

	if (!deny && ttl && body) {
		switch (httpcc_jwt_exp(body, body_len, &exp)) {
		case HTTPCC_JWT_EXP:
			/* exp is in seconds: compare in ms without overflow */
			if (exp <= now_unix_ms / 1000 - 1)
				return 0;
			if (exp >= INT64_MAX / 1000)
				break;
			left = exp * 1000 - now_unix_ms;
			if (left <= 0)
				return 0;
			if (left < (int64_t)ttl)
				ttl = (uint32_t)left;
			break;
		case HTTPCC_JWT_BAD:
			return 0;
		default:
			break;
		}
	}
	return ttl;
}
