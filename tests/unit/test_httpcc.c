/*
 * test_httpcc.c: unit tests of the cache policy helpers (agent/httpcc.c).
 *
 * What it does: Cache-Control parsing (case, spaces, quotes, garbage,
 * overflow, repeats), the TTL policy table by status and directives, JWT exp
 * reading (shapes, JSON validity, nesting, escapes, numbers) and the exp cap.
 *
 * What it never does: depend on anything but httpcc.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "httpcc.h"
#include "tap.h"

#define NOW_MS 1700000000000LL /* a fixed wall clock: 2023-11-14 */
#define NOW_S  (NOW_MS / 1000)

static const char b64url[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding of <n> bytes of <in> into <out> (NUL-terminated). */
static size_t enc(const char *in, size_t n, char *out)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t i, o = 0;
	uint32_t v;

	for (i = 0; i + 2 < n; i += 3) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
		out[o++] = b64url[v & 63];
	}
	if (n - i == 1) {
		v = (uint32_t)p[i] << 16;
		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
	} else if (n - i == 2) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
	}
	out[o] = 0;
	return o;
}

/* A JWT "header.payload.sig" around the JSON <payload>. */
static const char *jwt(const char *payload, char *buf)
{
	size_t o;

	o = enc("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27, buf);
	buf[o++] = '.';
	o += enc(payload, strlen(payload), buf + o);
	strcpy(buf + o, ".c2lnbmF0dXJl");
	return buf;
}

static int exp_of(const char *payload, int64_t *exp)
{
	char buf[4096];

	jwt(payload, buf);
	return httpcc_jwt_exp(buf, strlen(buf), exp);
}

static void test_parse(void)
{
	static const struct {
		const char *v;
		int ret;
		unsigned flags;
		uint32_t max_age, s_maxage;
	} t[] = {
		{ "", 0, 0, 0, 0 },
		{ "max-age=60", 0, HTTPCC_F_MAX_AGE, 60, 0 },
		{ "MAX-AGE=60", 0, HTTPCC_F_MAX_AGE, 60, 0 },
		{ "  max-age = 60 ,  private ", 0, HTTPCC_F_MAX_AGE | HTTPCC_F_PRIVATE, 60, 0 },
		{ "max-age=\"60\"", 0, HTTPCC_F_MAX_AGE, 60, 0 },
		{ "max-age=60, s-maxage=10", 0, HTTPCC_F_MAX_AGE | HTTPCC_F_S_MAXAGE, 60, 10 },
		{ "public,no-cache", 0, HTTPCC_F_PUBLIC | HTTPCC_F_NO_CACHE, 0, 0 },
		{ "no-cache=\"Set-Cookie, X-A\", max-age=5", 0,
		  HTTPCC_F_NO_CACHE | HTTPCC_F_MAX_AGE, 5, 0 },
		{ "No-Store", 0, HTTPCC_F_NO_STORE, 0, 0 },
		{ ",,, ,max-age=1,,", 0, HTTPCC_F_MAX_AGE, 1, 0 },
		{ "max-age=99999999999999999999", 0, HTTPCC_F_MAX_AGE, HTTPCC_DELTA_MAX, 0 },
		{ "max-age=2147483649", 0, HTTPCC_F_MAX_AGE, HTTPCC_DELTA_MAX, 0 },
		{ "max-age=30, max-age=10, max-age=20", 0, HTTPCC_F_MAX_AGE, 10, 0 },
		{ "max-age=-1", 0, HTTPCC_F_INVALID, 0, 0 },
		{ "max-age=abc", 0, HTTPCC_F_INVALID, 0, 0 },
		{ "max-age", 0, HTTPCC_F_INVALID, 0, 0 },
		{ "max-age=", 0, HTTPCC_F_INVALID, 0, 0 },
		{ "max-age=\"6\\0\"", 0, HTTPCC_F_INVALID, 0, 0 },
		{ "max-age=60 junk", -1, HTTPCC_F_INVALID, 0, 0 },
		{ "max-age=\"60", -1, HTTPCC_F_INVALID, 0, 0 },
		{ "ext=\"a,b\", max-age=7", 0, HTTPCC_F_MAX_AGE, 7, 0 },
		{ "ext=\"unterminated, max-age=7", -1, 0, 0, 0 },
		{ "(garbage), max-age=7", -1, HTTPCC_F_MAX_AGE, 7, 0 },
		{ "garbage no-store, max-age=7", -1, HTTPCC_F_NO_STORE | HTTPCC_F_MAX_AGE, 7, 0 },
		{ "private=\"x\", s-maxage=0", 0, HTTPCC_F_PRIVATE | HTTPCC_F_S_MAXAGE, 0, 0 },
		{ "\tno-store\t", 0, HTTPCC_F_NO_STORE, 0, 0 },
		{ "max-age=1\x00", -1, HTTPCC_F_INVALID, 0, 0 },
	};
	struct httpcc h;
	size_t i, len;
	int r;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		len = strlen(t[i].v);
		if (strcmp(t[i].v, "max-age=1") == 0)
			len++; /* the trailing NUL is part of the input */
		r = httpcc_parse(t[i].v, len, &h);
		ok(r == t[i].ret && h.flags == t[i].flags &&
		   (!(h.flags & HTTPCC_F_MAX_AGE) || h.max_age == t[i].max_age) &&
		   (!(h.flags & HTTPCC_F_S_MAXAGE) || h.s_maxage == t[i].s_maxage),
		   "parse [%s]", t[i].v);
		if (r != t[i].ret || h.flags != t[i].flags)
			diag("  ret %d flags 0x%x max-age %u s-maxage %u", r, h.flags,
			     h.max_age, h.s_maxage);
	}
	is_int(httpcc_parse(NULL, 0, &h), 0, "NULL, 0 is an empty value");
	is_int(h.flags, 0, "  nothing set");
}

static void test_policy(void)
{
	static const struct httpcc_policy pol = { 30000, 5000, 600000 };
	static const struct {
		int status;
		const char *cc; /* NULL = no header */
		uint32_t want;
	} t[] = {
		{ 200, NULL, 30000 },
		{ 204, NULL, 30000 },
		{ 200, "max-age=60", 60000 },
		{ 200, "max-age=60, s-maxage=20", 20000 }, /* s-maxage preferred */
		{ 200, "s-maxage=120, max-age=5", 120000 },
		{ 200, "private, max-age=60", 60000 },     /* private is cacheable */
		{ 200, "public", 30000 },
		{ 200, "no-store", 0 },
		{ 200, "no-cache", 0 },
		{ 200, "max-age=60, no-cache", 0 },
		{ 200, "max-age=0", 0 },
		{ 200, "max-age=abc", 0 },
		{ 200, "max-age=86400", 600000 },          /* max_ttl cap */
		{ 200, "max-age=2147483648", 600000 },     /* overflow saturates then caps */
		{ 200, "", 30000 },
		{ 200, "garbage", 30000 },
		{ 301, NULL, 5000 },
		{ 302, "max-age=60", 5000 },               /* deny TTL is a cap */
		{ 401, NULL, 5000 },
		{ 403, NULL, 5000 },
		{ 403, "max-age=2", 2000 },
		{ 403, "s-maxage=1, max-age=3", 1000 },
		{ 401, "no-store", 0 },
		{ 404, NULL, 5000 },                       /* other 4xx: deny TTL */
		{ 400, NULL, 5000 },
		{ 408, NULL, 0 },                          /* transient */
		{ 429, "max-age=60", 0 },
		{ 500, NULL, 0 },
		{ 502, "max-age=60", 0 },
		{ 503, NULL, 0 },
		{ 100, NULL, 0 },
		{ 0, NULL, 0 },
		{ -1, NULL, 0 },
		{ 600, NULL, 0 },
	};
	char name[128];
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		snprintf(name, sizeof(name), "ttl %d [%s]", t[i].status, t[i].cc ? t[i].cc : "(none)");
		is_int(httpcc_ttl(&pol, t[i].status, t[i].cc, t[i].cc ? strlen(t[i].cc) : 0, NULL, 0,
		                  NOW_MS),
		       t[i].want, name);
	}

	{
		struct httpcc_policy nocap = { 30000, 0, 0 };

		is_int(httpcc_ttl(&nocap, 200, "max-age=86400", 13, NULL, 0, NOW_MS), 86400000,
		       "max_ttl 0: no cap");
		is_int(httpcc_ttl(&nocap, 200, "max-age=2147483648", 18, NULL, 0, NOW_MS), UINT32_MAX,
		       "ms saturate at UINT32_MAX");
		is_int(httpcc_ttl(&nocap, 403, NULL, 0, NULL, 0, NOW_MS), 0, "deny ttl 0: denials not cached");
	}
}

static void test_jwt(void)
{
	int64_t exp = 0;
	char buf[4096], p[512];
	size_t i;

	is_int(exp_of("{\"sub\":\"u1\",\"exp\":1700000600}", &exp), HTTPCC_JWT_EXP, "plain exp");
	is_int(exp, 1700000600, "  value");
	is_int(exp_of("{\"exp\":1700000600.9}", &exp), HTTPCC_JWT_EXP, "fraction");
	is_int(exp, 1700000600, "  rounded down");
	is_int(exp_of("{\"exp\":-1.5}", &exp), HTTPCC_JWT_EXP, "negative fraction");
	is_int(exp, -2, "  floor");
	is_int(exp_of("{\"exp\":0}", &exp), HTTPCC_JWT_EXP, "zero");
	is_int(exp, 0, "  value 0");
	is_int(exp_of("{\"exp\":99999999999999999999999}", &exp), HTTPCC_JWT_EXP, "huge");
	is_int(exp, INT64_MAX, "  saturates");
	is_int(exp_of(" { \"a\" : [1, {\"exp\": 5}, \"x\"] ,\n\t\"exp\" : 42 } ", &exp),
	       HTTPCC_JWT_EXP, "nested exp ignored, whitespace everywhere");
	is_int(exp, 42, "  top-level one");
	is_int(exp_of("{\"exp\":50,\"exp\":40,\"exp\":60}", &exp), HTTPCC_JWT_EXP, "duplicate exp");
	is_int(exp, 40, "  smallest kept");
	is_int(exp_of("{\"\\u0065xp\":77}", &exp), HTTPCC_JWT_EXP, "escaped key is exp");
	is_int(exp, 77, "  value");
	is_int(exp_of("{\"expx\":1,\"ex\":2,\"EXP\":3}", &exp), HTTPCC_JWT_NONE, "near misses");
	is_int(exp_of("{\"sub\":\"u\"}", &exp), HTTPCC_JWT_NONE, "no exp");
	is_int(exp_of("{}", &exp), HTTPCC_JWT_NONE, "empty object");
	is_int(exp_of("{\"e\\\"xp\":1,\"s\":\"a\\\\\\\"b\\/\\n\\u00e9\",\"t\":true,\"f\":false,\"n\":null,"
	              "\"num\":-0.5e+10,\"arr\":[],\"obj\":{}}",
	              &exp),
	       HTTPCC_JWT_NONE, "every JSON kind skipped");

	/* present but unusable: do not cache */
	is_int(exp_of("{\"exp\":\"1700000600\"}", &exp), HTTPCC_JWT_BAD, "string exp");
	is_int(exp_of("{\"exp\":1.7e9}", &exp), HTTPCC_JWT_BAD, "exponent exp");
	is_int(exp_of("{\"exp\":null}", &exp), HTTPCC_JWT_BAD, "null exp");
	is_int(exp_of("{\"exp\":01}", &exp), HTTPCC_JWT_BAD, "leading zero");
	is_int(exp_of("{\"exp\":-}", &exp), HTTPCC_JWT_BAD, "lone minus");
	is_int(exp_of("{\"exp\":1.}", &exp), HTTPCC_JWT_BAD, "dot without digits");
	is_int(exp_of("{\"exp\":1", &exp), HTTPCC_JWT_BAD, "unterminated object");
	is_int(exp_of("{\"exp\":1}}", &exp), HTTPCC_JWT_BAD, "trailing garbage");
	is_int(exp_of("{\"exp\":1,}", &exp), HTTPCC_JWT_BAD, "trailing comma");
	is_int(exp_of("[1]", &exp), HTTPCC_JWT_BAD, "array payload");
	is_int(exp_of("not json", &exp), HTTPCC_JWT_BAD, "text payload");
	is_int(exp_of("{\"a\":[1,}", &exp), HTTPCC_JWT_BAD, "broken nested");
	is_int(exp_of("{\"a\":[1}", &exp), HTTPCC_JWT_BAD, "mismatched bracket");
	is_int(exp_of("{\"a\":tru}", &exp), HTTPCC_JWT_BAD, "bad literal");
	is_int(exp_of("{\"a\":\"\\x\"}", &exp), HTTPCC_JWT_BAD, "bad escape");
	is_int(exp_of("{\"a\":\"\\u12g4\"}", &exp), HTTPCC_JWT_BAD, "bad \\u");
	is_int(exp_of("{\"a\":\"tab\there\"}", &exp), HTTPCC_JWT_BAD, "raw control char");
	is_int(exp_of("{\"a\":\"open}", &exp), HTTPCC_JWT_BAD, "unterminated string");
	is_int(exp_of("{a:1}", &exp), HTTPCC_JWT_BAD, "unquoted key");

	/* nesting: 64 levels fine, 65 refused, no recursion either way */
	for (i = 0; i < 63; i++)
		p[i + 6] = '[';
	memcpy(p, "{\"a\":[", 6);
	for (i = 0; i < 64; i++)
		p[6 + 63 + i] = ']';
	strcpy(p + 6 + 63 + 64, ",\"exp\":9}");
	is_int(exp_of(p, &exp), HTTPCC_JWT_EXP, "64 levels");
	memcpy(p, "{\"a\":[", 6);
	for (i = 0; i < 64; i++)
		p[6 + i] = '[';
	for (i = 0; i < 65; i++)
		p[6 + 64 + i] = ']';
	strcpy(p + 6 + 64 + 65, "}");
	is_int(exp_of(p, &exp), HTTPCC_JWT_BAD, "65 levels refused");

	/* shapes */
	is_int(httpcc_jwt_exp(NULL, 0, &exp), HTTPCC_JWT_NONE, "NULL");
	is_int(httpcc_jwt_exp("", 0, &exp), HTTPCC_JWT_NONE, "empty");
	is_int(httpcc_jwt_exp("opaque-token-123", 16, &exp), HTTPCC_JWT_NONE, "opaque token");
	is_int(httpcc_jwt_exp("a.b", 3, &exp), HTTPCC_JWT_NONE, "two segments");
	is_int(httpcc_jwt_exp("a.b.c.d", 7, &exp), HTTPCC_JWT_NONE, "four segments");
	is_int(httpcc_jwt_exp(".eyJ9.", 6, &exp), HTTPCC_JWT_NONE, "empty header");
	is_int(httpcc_jwt_exp("e30..", 5, &exp), HTTPCC_JWT_NONE, "empty payload");
	is_int(httpcc_jwt_exp("e30.e3+9.x", 10, &exp), HTTPCC_JWT_NONE, "standard base64 char");
	is_int(httpcc_jwt_exp("e30.e.x", 7, &exp), HTTPCC_JWT_NONE, "impossible length");
	is_int(httpcc_jwt_exp("YWJj.e30.x", 10, &exp), HTTPCC_JWT_NONE, "header not JSON");
	enc("{\"exp\":123}", 11, p);
	snprintf(buf, sizeof(buf), "e30.%s.", p);
	is_int(httpcc_jwt_exp(buf, strlen(buf), &exp), HTTPCC_JWT_EXP, "unsigned (empty signature)");
	is_int(exp, 123, "  value");
	snprintf(buf, sizeof(buf), " \r\ne30.%s.sig\n", p);
	is_int(httpcc_jwt_exp(buf, strlen(buf), &exp), HTTPCC_JWT_EXP, "surrounding whitespace");
	snprintf(buf, sizeof(buf), "e30=.%s===.sig", p);
	is_int(httpcc_jwt_exp(buf, strlen(buf), &exp), HTTPCC_JWT_NONE, "too much padding");
	enc("{\"exp\":12}", 10, p); /* 10 bytes: 14 chars, 2 pad */
	snprintf(buf, sizeof(buf), "e30.%s==.sig", p);
	is_int(httpcc_jwt_exp(buf, strlen(buf), &exp), HTTPCC_JWT_EXP, "padding tolerated");
	is_int(exp, 12, "  value");
	/* only <len> bytes are read */
	jwt("{\"exp\":5}", buf);
	i = strlen(buf);
	memcpy(buf + i, "garbage", 8);
	is_int(httpcc_jwt_exp(buf, i, &exp), HTTPCC_JWT_EXP, "bounded by len");
}

/* A payload small enough to be decoded at once and the same payload padded
 * past the stack buffer (decoded as walked) read alike: the same result and
 * the same exp, for plain, escaped and broken claims. */
static void test_jwt_long_payload(void)
{
	static const char *const claims[] = {
		"\"exp\":77", "\"\\u0065xp\":78", "\"ex\\p\":79,\"exp\":80",
		"\"expo\":1,\"exp\":81", "\"exp\":82,\"exp\":8", "\"ex\":1",
		"\"exp\":\"83\"", "\"e\\\"xp\":1", "\"exp\":84,",
		"\"exp\":85,\"k\":\"a\\tb\"", "\"exp\":86,\"k\":\"a\tb\"",
	};
	static char payload[5000], buf[8192];
	char pad[2100];
	size_t i;
	int r_short, r_long;
	int64_t e_short, e_long;

	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = 0;
	for (i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
		e_short = e_long = -1;
		snprintf(payload, sizeof(payload), "{%s,\"pad\":\"%.8s\"}", claims[i], pad);
		jwt(payload, buf);
		r_short = httpcc_jwt_exp(buf, strlen(buf), &e_short);
		snprintf(payload, sizeof(payload), "{%s,\"pad\":\"%s\"}", claims[i], pad);
		jwt(payload, buf);
		r_long = httpcc_jwt_exp(buf, strlen(buf), &e_long);
		is_int(r_long, r_short, claims[i]);
		is_int(e_long, e_short, "  same exp");
	}
	snprintf(payload, sizeof(payload), "{\"exp\":90,\"pad\":\"%s\"}", pad);
	jwt(payload, buf);
	is_int(httpcc_jwt_exp(buf, strlen(buf), &e_long), HTTPCC_JWT_EXP, "long payload: exp");
	is_int(e_long, 90, "  value");
	buf[strlen(buf) - 20] = '+';  /* outside base64url, in the signature */
	is_int(httpcc_jwt_exp(buf, strlen(buf), &e_long), HTTPCC_JWT_NONE, "  bad signature char");
	jwt(payload, buf);
	buf[60] = '+';  /* in the payload */
	is_int(httpcc_jwt_exp(buf, strlen(buf), &e_long), HTTPCC_JWT_NONE, "  bad payload char");
	snprintf(payload, sizeof(payload), "{\"exp\":91,\"pad\":\"%.8s\"}", pad);
	jwt(payload, buf);
	buf[50] = '+';
	is_int(httpcc_jwt_exp(buf, strlen(buf), &e_short), HTTPCC_JWT_NONE, "short: bad payload char");
}

static void test_jwt_cap(void)
{
	static const struct httpcc_policy pol = { 30000, 5000, 0 };
	char buf[4096], payload[128];

	snprintf(payload, sizeof(payload), "{\"exp\":%lld}", (long long)NOW_S + 10);
	jwt(payload, buf);
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), NOW_MS), 10000, "exp in 10 s caps 30 s");
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), NOW_MS + 2500), 7500,
	       "  counted in ms from now");
	is_int(httpcc_ttl(&pol, 200, "max-age=5", 9, buf, strlen(buf), NOW_MS), 5000,
	       "max-age below exp wins");
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), NOW_MS + 10000), 0, "exp reached");
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), NOW_MS + 99999), 0, "exp past");

	snprintf(payload, sizeof(payload), "{\"exp\":%lld}", (long long)NOW_S + 3600);
	jwt(payload, buf);
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), NOW_MS), 30000, "far exp: default");

	jwt("{\"exp\":9223372036854775807}", buf);
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), NOW_MS), 30000, "INT64_MAX exp");
	jwt("{\"exp\":-9223372036854775808}", buf);
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), NOW_MS), 0, "INT64_MIN exp");
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), -5), 0, "negative clock is safe");
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), INT64_MAX), 0, "huge clock is safe");

	jwt("{\"exp\":\"soon\"}", buf);
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), NOW_MS), 0, "unusable exp: no cache");
	jwt("{\"sub\":\"x\"}", buf);
	is_int(httpcc_ttl(&pol, 200, NULL, 0, buf, strlen(buf), NOW_MS), 30000, "JWT without exp");
	is_int(httpcc_ttl(&pol, 200, NULL, 0, "plain body", 10, NOW_MS), 30000, "opaque body");

	snprintf(payload, sizeof(payload), "{\"exp\":%lld}", (long long)NOW_S - 10);
	jwt(payload, buf);
	is_int(httpcc_ttl(&pol, 403, NULL, 0, buf, strlen(buf), NOW_MS), 5000,
	       "deny body is not a token: exp ignored");
}

/* The string walker skips plain runs eight bytes a step: every byte value
 * at every position of a 24-byte string value must give the byte rule's
 * verdict: '"' ends the string early (then garbage: BAD), '\\' starts an
 * escape ("\\x" is none: BAD), a control byte is BAD, anything else
 * (UTF-8 bytes included) is part of the string, and "exp" is then read.
 * NUL cannot go through exp_of()'s strlen(): it is encoded by hand. */
static void test_jwt_string_every_byte(void)
{
	enum { LEN = 24 };
	char payload[64], tok[256];
	unsigned wrong = 0, n = 0;

	for (int pos = 0; pos < LEN; pos++)
		for (int b = 0; b < 256; b++) {
			size_t plen, o;
			int64_t exp = 0;
			int r, want;

			plen = (size_t)snprintf(payload, sizeof(payload), "{\"pad\":\"%.*s\",\"exp\":123}",
			                        LEN, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
			payload[8 + pos] = (char)b;
			o = enc("{\"alg\":\"HS256\"}", 15, tok);
			tok[o++] = '.';
			o += enc(payload, plen, tok + o);
			memcpy(tok + o, ".c2ln", 5);
			o += 5;
			r = httpcc_jwt_exp(tok, o, &exp);
			want = (b == '"' || b == '\\' || b < 0x20) ? HTTPCC_JWT_BAD : HTTPCC_JWT_EXP;
			if (r != want || (r == HTTPCC_JWT_EXP && exp != 123))
				wrong++;
			n++;
		}
	ok(wrong == 0, "string walk: %u payloads, %u verdicts differ from the byte rule", n, wrong);
}

/* Directive names are RFC 9110 tokens (tchar bitmaps in httpcc.c): each
 * byte value in the middle of "x?y, max-age=7" must give what the grammar
 * says: a tchar keeps one unknown directive (well formed), ',' and '='
 * split it alike, anything else is garbage; max-age is read either way,
 * except after '"', which opens a quoted string that never ends. */
static void test_tchar_every_byte(void)
{
	unsigned wrong = 0;

	for (int b = 0; b < 256; b++) {
		char v[] = "x?y, max-age=7";
		struct httpcc h;
		int tchar = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
		            (b >= '0' && b <= '9') || (b && strchr("!#$%&'*+-.^_`|~", b));
		int want = tchar || b == ',' || b == '=' ? 0 : -1;

		v[1] = (char)b;
		if (b == '"') {
			/* an unterminated quoted string: the rest is in it */
			if (httpcc_parse(v, sizeof(v) - 1, &h) != -1 || (h.flags & HTTPCC_F_MAX_AGE))
				wrong++;
			continue;
		}
		if (httpcc_parse(v, sizeof(v) - 1, &h) != want || !(h.flags & HTTPCC_F_MAX_AGE) ||
		    h.max_age != 7)
			wrong++;
	}
	ok(wrong == 0, "tchar: %u of 256 byte values parsed against the grammar", wrong);
}

/* The base64url tables: every byte value at each of the first eight
 * positions of the payload and of the signature. Outside the alphabet the
 * token is not JWT-shaped (NONE); inside it, the signature is not read (the
 * exp stands; a payload byte changes the JSON, whatever it then says). */
static void test_b64_every_byte(void)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char tok[256];
	unsigned wrong = 0, n = 0;
	size_t dot1, dot2, len;

	jwt("{\"exp\":1234567890,\"sub\":\"abcdefgh\"}", tok);
	len = strlen(tok);
	dot1 = (size_t)(strchr(tok, '.') - tok);
	dot2 = (size_t)(strrchr(tok, '.') - tok);
	for (int seg = 0; seg < 2; seg++)
		for (size_t i = 0; i < 8; i++)
			for (int b = 0; b < 256; b++) {
				char t[256];
				size_t at = (seg ? dot2 : dot1) + 1 + i;
				int in = b && strchr(alpha, b) != NULL, r;
				int64_t exp = 0;

				memcpy(t, tok, len);
				t[at] = (char)b;
				r = httpcc_jwt_exp(t, len, &exp);
				if (!in ? r != HTTPCC_JWT_NONE
				        : seg && (r != HTTPCC_JWT_EXP || exp != 1234567890))
					wrong++;
				n++;
			}
	ok(wrong == 0, "base64url: %u tokens, %u verdicts differ from the alphabet", n, wrong);
}

int main(void)
{
	test_parse();
	test_policy();
	test_jwt();
	test_jwt_long_payload();
	test_jwt_cap();
	test_jwt_string_every_byte();
	test_tchar_every_byte();
	test_b64_every_byte();
	return done_testing();
}
