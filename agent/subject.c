/*
 * subject.c: subject from a JWT claim, see subject.h.
 *
 * The payload is base64url-decoded into a stack buffer (bounded), then
 * walked as JSON: top-level members are compared by their decoded key;
 * every other value is skipped with a depth counter (no recursion).
 */
#include <stdint.h>
#include <string.h>

#include "hex.h"
#include "subject.h"

#define SUBJECT_JSON_DEPTH 64

int subject_ok(const char *s, size_t len)
{
	if (!s || len == 0 || len > SUBJECT_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

static int subject_b64(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* base64url (optional '=' padding) of [p, end) into <out> (<cap> bytes).
 * Returns the decoded length, or -1. */
static long subject_b64_decode(const char *p, const char *end, uint8_t *out, size_t cap)
{
	uint32_t acc = 0;
	int nbits = 0;
	size_t n = 0;

	while (end > p && end[-1] == '=')
		end--;
	if (((size_t)(end - p) & 3) == 1)
		return -1;
	for (; p < end; p++) {
		int v = subject_b64((unsigned char)*p);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		nbits += 6;
		if (nbits >= 8) {
			nbits -= 8;
			if (n >= cap)
				return -1;
			out[n++] = (uint8_t)(acc >> nbits);
		}
	}
	return (long)n;
}

struct subject_json {
	const uint8_t *p, *end;
};

static void subject_ws(struct subject_json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

/* A JSON string at j->p (opening quote included). Decodes it into <out>
 * (<cap> bytes, not NUL-terminated) as far as it fits; *<len> gets the full
 * decoded length (> cap: truncated). \u escapes become UTF-8. Returns 0, or
 * -1 if malformed. <out> may be NULL (skip). */
static int subject_string(struct subject_json *j, char *out, size_t cap, size_t *len)
{
	size_t n = 0;

	if (j->p >= j->end || *j->p != '"')
		return -1;
	j->p++;
	for (;;) {
		unsigned cp;
		uint8_t enc[4];
		size_t elen = 1;

		if (j->p >= j->end || *j->p < 0x20)
			return -1;
		cp = *j->p++;
		if (cp == '"')
			break;
		if (cp == '\\') {
			if (j->p >= j->end)
				return -1;
			cp = *j->p++;
			switch (cp) {
			case '"': case '\\': case '/':
				break;
			case 'b': cp = '\b'; break;
			case 'f': cp = '\f'; break;
			case 'n': cp = '\n'; break;
			case 'r': cp = '\r'; break;
			case 't': cp = '\t'; break;
			case 'u':
				cp = 0;
				for (int i = 0; i < 4; i++) {
					int h = j->p < j->end ? hex_digit(*j->p++) : -1;

					if (h < 0)
						return -1;
					cp = cp << 4 | (unsigned)h;
				}
				break;
			default:
				return -1;
			}
		}
		/* UTF-8 of the code point (surrogates kept as is: a subject
		 * with them fails subject_ok() anyway) */
		if (cp < 0x80) {
			enc[0] = (uint8_t)cp;
		} else if (cp < 0x800) {
			enc[0] = (uint8_t)(0xc0 | cp >> 6);
			enc[1] = (uint8_t)(0x80 | (cp & 0x3f));
			elen = 2;
		} else {
			enc[0] = (uint8_t)(0xe0 | cp >> 12);
			enc[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
			enc[2] = (uint8_t)(0x80 | (cp & 0x3f));
			elen = 3;
		}
		for (size_t i = 0; i < elen; i++, n++)
			if (out && n < cap)
				out[n] = (char)enc[i];
	}
	*len = n;
	return 0;
}

/* Skips one JSON value (any nesting up to SUBJECT_JSON_DEPTH). 0 or -1.
 * Scalars are checked loosely (their characters), strings and structure
 * strictly: enough to find the top-level members reliably. */
static int subject_skip(struct subject_json *j)
{
	int depth = 0;
	size_t dummy;

	do {
		subject_ws(j);
		if (j->p >= j->end)
			return -1;
		switch (*j->p) {
		case '"':
			if (subject_string(j, NULL, 0, &dummy) < 0)
				return -1;
			break;
		case '{': case '[':
			if (++depth > SUBJECT_JSON_DEPTH)
				return -1;
			j->p++;
			continue;
		case '}': case ']':
			if (depth == 0)
				return -1;
			depth--;
			j->p++;
			break;
		case ',': case ':':
			if (depth == 0)
				return -1;
			j->p++;
			continue;
		default: {
			const uint8_t *s = j->p;

			while (j->p < j->end && *j->p && (strchr("+-.eE", *j->p) || (*j->p >= '0' && *j->p <= '9') ||
			                         (*j->p >= 'a' && *j->p <= 'z')))
				j->p++;
			if (j->p == s)
				return -1;
			break;
		}
		}
		subject_ws(j);
		/* inside a container, the structure characters are handled
		 * by the next turn */
	} while (depth > 0);
	return 0;
}

int subject_from_jwt(const char *tok, size_t len, const char *claim,
                     char out[SUBJECT_MAX + 1])
{
	uint8_t payload[SUBJECT_PAYLOAD_MAX];
	const char *p, *end, *dot1, *dot2;
	struct subject_json j;
	size_t clen = strlen(claim);
	long n;
	int found = -1;

	if (!tok || !clen)
		return -1;
	p = tok;
	end = tok + len;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		end--;
	dot1 = memchr(p, '.', (size_t)(end - p));
	if (!dot1 || dot1 == p)
		return -1;
	dot2 = memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1));
	if (!dot2 || dot2 == dot1 + 1 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
		return -1;
	n = subject_b64_decode(dot1 + 1, dot2, payload, sizeof(payload));
	if (n <= 0)
		return -1;

	j.p = payload;
	j.end = payload + n;
	subject_ws(&j);
	if (j.p >= j.end || *j.p++ != '{')
		return -1;
	subject_ws(&j);
	if (j.p < j.end && *j.p == '}') {
		j.p++;
		goto tail;
	}
	for (;;) {
		char key[SUBJECT_MAX + 1];
		size_t klen, vlen;

		subject_ws(&j);
		if (subject_string(&j, key, sizeof(key), &klen) < 0)
			return -1;
		subject_ws(&j);
		if (j.p >= j.end || *j.p++ != ':')
			return -1;
		subject_ws(&j);
		if (klen == clen && memcmp(key, claim, clen) == 0) {
			if (found >= 0)
				return -1;  /* duplicated: which one would HAProxy see? none */
			if (j.p >= j.end || *j.p != '"')
				return -1;
			if (subject_string(&j, out, SUBJECT_MAX, &vlen) < 0 || !subject_ok(out, vlen))
				return -1;
			out[vlen] = 0;
			found = (int)vlen;
		} else if (subject_skip(&j) < 0) {
			return -1;
		}
		subject_ws(&j);
		if (j.p >= j.end)
			return -1;
		if (*j.p == '}') {
			j.p++;
			break;
		}
		if (*j.p++ != ',')
			return -1;
	}
tail:
	subject_ws(&j);
	return j.p == j.end ? found : -1;
}
