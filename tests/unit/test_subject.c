/*
 * test_subject.c: unit tests of the subject extraction (agent/subject.c).
 *
 * What it does: subject_ok() bounds and charset; subject_from_jwt() on
 * tokens built here from JSON payloads: found, escapes, nesting skipped,
 * nested same-name keys ignored, absent, non-string, duplicated, too long,
 * not visible ASCII, malformed JSON and JWT shapes, oversized payloads.
 *
 * What it never does: depend on anything but subject.c.
 */
#include <stdio.h>
#include <string.h>

#include "subject.h"
#include "tap.h"

static const char b64url[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t enc(const char *in, size_t n, char *out)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t o = 0, i;

	for (i = 0; i + 2 < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];

		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
		out[o++] = b64url[v & 63];
	}
	if (n - i == 1) {
		unsigned v = (unsigned)p[i] << 16;

		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
	} else if (n - i == 2) {
		unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;

		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
	}
	out[o] = 0;
	return o;
}

static char tokbuf[3 * SUBJECT_PAYLOAD_MAX];

/* "<header>.<payload>.sig" for JSON <payload>. */
static const char *jwt(const char *payload)
{
	size_t n = enc("{\"alg\":\"HS256\"}", 15, tokbuf);

	tokbuf[n++] = '.';
	n += enc(payload, strlen(payload), tokbuf + n);
	strcpy(tokbuf + n, ".c2ln");
	return tokbuf;
}

static int sub(const char *payload, const char *claim, char *out)
{
	const char *t = jwt(payload);

	return subject_from_jwt(t, strlen(t), claim, out);
}

static void test_ok(void)
{
	char big[SUBJECT_MAX + 1];

	ok(subject_ok("alice", 5), "plain");
	ok(subject_ok("user@example.com|42", 19), "punctuation");
	ok(!subject_ok("", 0), "empty");
	ok(!subject_ok("a b", 3), "space");
	ok(!subject_ok("a\r\nb", 4), "CR LF");
	ok(!subject_ok("\xc3\xa9", 2), "non-ASCII");
	ok(!subject_ok(NULL, 0), "NULL");
	memset(big, 'x', sizeof(big));
	ok(subject_ok(big, SUBJECT_MAX), "%d bytes", SUBJECT_MAX);
	ok(!subject_ok(big, SUBJECT_MAX + 1), "%d bytes", SUBJECT_MAX + 1);
}

static void test_jwt(void)
{
	char out[SUBJECT_MAX + 1], payload[SUBJECT_PAYLOAD_MAX + 64];
	const char *t;
	int n;

	n = sub("{\"sub\":\"alice\",\"exp\":1}", "sub", out);
	ok(n == 5 && strcmp(out, "alice") == 0, "found: %d %s", n, n > 0 ? out : "");
	n = sub(" { \"a\" : [1, {\"sub\":\"nested\"}, \"x\"], \"o\":{\"sub\":\"no\",\"k\":[[]]},"
	        " \"t\":true, \"n\":null, \"f\":-1.5e3, \"sub\" : \"bob\" } ", "sub", out);
	ok(n == 3 && strcmp(out, "bob") == 0, "nested values skipped, nested keys ignored");
	n = sub("{\"s\\u0075b\":\"\\u0061l\\/ice\"}", "sub", out);
	ok(n == 6 && strcmp(out, "al/ice") == 0, "escapes in key and value");
	n = sub("{\"uid\":\"42\"}", "uid", out);
	ok(n == 2 && strcmp(out, "42") == 0, "another claim name");
	t = jwt("{\"sub\":\"alice\"}");
	{
		char padded[256];

		snprintf(padded, sizeof(padded), "  %s\r\n", t);
		ok(subject_from_jwt(padded, strlen(padded), "sub", out) == 5, "blanks around the token");
	}

	ok(sub("{\"exp\":1}", "sub", out) < 0, "absent");
	ok(sub("{}", "sub", out) < 0, "empty object");
	ok(sub("{\"sub\":42}", "sub", out) < 0, "not a string");
	ok(sub("{\"sub\":\"a\",\"sub\":\"b\"}", "sub", out) < 0, "duplicated");
	ok(sub("{\"sub\":\"a b\"}", "sub", out) < 0, "space in the subject");
	ok(sub("{\"sub\":\"a\\r\\nX: y\"}", "sub", out) < 0, "escaped CR LF in the subject");
	ok(sub("{\"sub\":\"\\u00e9\"}", "sub", out) < 0, "non-ASCII subject");
	ok(sub("{\"sub\":\"\"}", "sub", out) < 0, "empty subject");
	memset(payload, 0, sizeof(payload));
	strcpy(payload, "{\"sub\":\"");
	memset(payload + 8, 'x', SUBJECT_MAX + 1);
	strcat(payload, "\"}");
	ok(sub(payload, "sub", out) < 0, "subject of %d bytes", SUBJECT_MAX + 1);
	payload[8 + SUBJECT_MAX] = '"';
	payload[8 + SUBJECT_MAX + 1] = '}';
	payload[8 + SUBJECT_MAX + 2] = 0;
	ok(sub(payload, "sub", out) == SUBJECT_MAX, "subject of %d bytes", SUBJECT_MAX);

	ok(sub("{\"sub\":\"alice\"", "sub", out) < 0, "unterminated object");
	ok(sub("{\"sub\":\"alice\"} x", "sub", out) < 0, "trailing data");
	ok(sub("[\"sub\",\"alice\"]", "sub", out) < 0, "not an object");
	ok(sub("{\"a\":[1,2,\"sub\":\"alice\"}", "sub", out) < 0, "broken nesting");
	ok(sub("{\"a\":}", "sub", out) < 0, "missing value");
	memset(payload, 0, sizeof(payload));
	strcpy(payload, "{\"sub\":\"alice\",\"pad\":\"");
	memset(payload + strlen(payload), 'p', SUBJECT_PAYLOAD_MAX);
	strcat(payload, "\"}");
	ok(sub(payload, "sub", out) < 0, "payload over %d bytes", SUBJECT_PAYLOAD_MAX);
	{
		char deep[300];
		size_t k = 0;

		k += (size_t)snprintf(deep, sizeof(deep), "{\"a\":");
		for (int i = 0; i < 70; i++)
			deep[k++] = '[';
		for (int i = 0; i < 70; i++)
			deep[k++] = ']';
		strcpy(deep + k, ",\"sub\":\"x\"}");
		ok(sub(deep, "sub", out) < 0, "nesting deeper than 64");
	}

	ok(subject_from_jwt("alice", 5, "sub", out) < 0, "not a JWT");
	ok(subject_from_jwt("a.b", 3, "sub", out) < 0, "two segments");
	ok(subject_from_jwt("a.b.c.d", 7, "sub", out) < 0, "four segments");
	ok(subject_from_jwt("a..c", 4, "sub", out) < 0, "empty payload");
	ok(subject_from_jwt("a.b*c.d", 7, "sub", out) < 0, "bad base64url");
	ok(subject_from_jwt(NULL, 0, "sub", out) < 0, "NULL token");
}

int main(void)
{
	test_ok();
	test_jwt();
	return done_testing();
}
