/*
 * test_args.c: unit tests of the NOTIFY argument classification
 * (agent/args.c).
 *
 * What it does: encodes NOTIFY arguments with spop.c's writers and checks
 * what args_classify() makes of them (uri, src of each type, xff, forwarded
 * headers in order, unknown names skipped, values with CR/LF/NUL dropped and
 * counted, malformed or too many arguments refused); the `scope` argument
 * (kept only as a scope name, else counted) and its key (the scope instead of
 * the URI, the credential hash unchanged); that the admin
 * endpoint's way of building a struct args (args_add_header()) gives the same
 * credential hash as the NOTIFY path for the same headers, unsafe ones
 * included; that args_key() is the key of exactly those slices; and that the
 * access-log hash is HMAC-SHA256 (checked against OpenSSL's HMAC()), keyed,
 * and never the unkeyed SHA-256 prefix; that the IPv4 client text is
 * exactly inet_ntop()'s for every octet value in every position, and that a
 * buffer too small for the longest quad is refused.
 *
 * What it never does: I/O beyond loading defaults with cfg_load(NULL, ...).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "args.h"
#include "cachekey.h"
#include "cfg.h"
#include "spop.h"
#include "tap.h"

struct enc {
	uint8_t buf[4096];
	uint8_t *p;
	unsigned n;
};

static void enc_init(struct enc *e)
{
	e->p = e->buf;
	e->n = 0;
}

static void enc_str_arg(struct enc *e, const char *name, int type, const char *v, size_t vlen)
{
	struct spop_data d;

	d.type = (enum spop_type)type;
	d.u.str.ptr = v;
	d.u.str.len = vlen;
	spop_put_str(&e->p, e->buf + sizeof(e->buf), name, strlen(name));
	spop_put_data(&e->p, e->buf + sizeof(e->buf), &d);
	e->n++;
}

#define ARG(e, name, v) enc_str_arg((e), (name), SPOP_T_STR, (v), sizeof(v) - 1)

static void enc_ip_arg(struct enc *e, const char *name, int type, const uint8_t *ip)
{
	struct spop_data d;

	d.type = (enum spop_type)type;
	memcpy(d.u.ip, ip, type == SPOP_T_IPV4 ? 4 : 16);
	spop_put_str(&e->p, e->buf + sizeof(e->buf), name, strlen(name));
	spop_put_data(&e->p, e->buf + sizeof(e->buf), &d);
	e->n++;
}

static int classify(struct args *a, const struct cfg *cfg, struct enc *e)
{
	const uint8_t *p = e->buf;
	int rc = args_classify(a, cfg, &p, e->p, e->n);

	if (rc == 0 && p != e->p)
		diag("cursor not at the end of the arguments");
	return rc == 0 && p == e->p ? 0 : -1;
}

static int slice_is(const char *p, size_t n, const char *want)
{
	return p && n == strlen(want) && memcmp(p, want, n) == 0;
}

static void test_classify(const struct cfg *cfg)
{
	static const uint8_t v4[4] = { 192, 0, 2, 7 };
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
	struct args a;
	struct enc e;
	char txt[ARGS_SRC_TEXT_MAX + 1];

	enc_init(&e);
	ARG(&e, "uri", "/a?b=c");
	enc_ip_arg(&e, "src", SPOP_T_IPV4, v4);
	ARG(&e, "xff", "10.0.0.1");
	ARG(&e, "cookie", "sid=1");
	ARG(&e, "x-other", "not forwarded");
	ARG(&e, "Authorization", "Bearer t");
	ARG(&e, "x-example-authorization", "bad\r\nX-Injected: 1");
	ok(classify(&a, cfg, &e) == 0, "classified");
	ok(slice_is(a.uri, a.uri_len, "/a?b=c"), "uri");
	ok(a.src_kind == CACHEKEY_ADDR_IPV4 && a.src_len == 4 && memcmp(a.src_ip, v4, 4) == 0,
	   "src IPv4 bytes");
	ok(args_src_text(&a, txt, sizeof(txt)) == 0 && strcmp(txt, "192.0.2.7") == 0, "src text");
	ok(slice_is(a.xff, a.xff_len, "10.0.0.1"), "xff");
	is_int((long long)a.n_hdrs, 2, "two forwarded headers (x-other skipped, unsafe dropped)");
	ok(a.n_hdrs == 2 && slice_is(a.hdrs[0].name, a.hdrs[0].name_len, "cookie") &&
	   slice_is(a.hdrs[0].value, a.hdrs[0].value_len, "sid=1") &&
	   slice_is(a.hdrs[1].name, a.hdrs[1].name_len, "Authorization"), "  in argument order");
	ok(a.n_unsafe == 1 && slice_is(a.unsafe_name, a.unsafe_name_len, "x-example-authorization"),
	   "the CR/LF value is counted and named");

	enc_init(&e);
	enc_ip_arg(&e, "src", SPOP_T_IPV6, v6);
	ARG(&e, "xff", "");
	ok(classify(&a, cfg, &e) == 0 && a.src_kind == CACHEKEY_ADDR_IPV6 && a.xff == NULL &&
	   a.uri == NULL, "IPv6 src; an empty xff is none; no uri");
	ok(args_src_text(&a, txt, sizeof(txt)) == 0 && strcmp(txt, "2001:db8::1") == 0,
	   "  IPv6 text");

	enc_init(&e);
	ARG(&e, "src", "unix@sock");
	ARG(&e, "src", "bad\nsrc");
	ok(classify(&a, cfg, &e) == 0 && a.src_kind == CACHEKEY_ADDR_NONE,
	   "a later src replaces an earlier one, an unsafe one is none");
	ok(args_src_text(&a, txt, sizeof(txt)) < 0, "  no text");

	enc_init(&e);
	ARG(&e, "cookie", "a");
	{
		const uint8_t *p = e.buf;

		ok(args_classify(&a, cfg, &p, e.p - 1, e.n) < 0, "truncated arguments: malformed");
		p = e.buf;
		ok(args_classify(&a, cfg, &p, e.p, ARGS_MAX + 1) < 0, "more than ARGS_MAX: refused");
	}
}

static void enc_null_arg(struct enc *e, const char *name)
{
	struct spop_data d;

	d.type = SPOP_T_NULL;
	spop_put_str(&e->p, e->buf + sizeof(e->buf), name, strlen(name));
	spop_put_data(&e->p, e->buf + sizeof(e->buf), &d);
	e->n++;
}

/* `scope`: 1..ARGS_SCOPE_MAX of [A-Za-z0-9._:-], else absent and counted. */
static void test_scope_classify(const struct cfg *cfg)
{
	static const char *const bad[] = {
		"", "admin business", "adm/in", "adm%69n", "admin\n", "caf\xc3\xa9", "a;b",
		"a\r\nX: 1", "*", "uri?",
	};
	char longest[ARGS_SCOPE_MAX + 2];
	struct args a;
	struct enc e;
	size_t i;

	enc_init(&e);
	ARG(&e, "scope", "business");
	ARG(&e, "uri", "/api/business/orders/1");
	ok(classify(&a, cfg, &e) == 0 && slice_is(a.scope, a.scope_len, "business") &&
	   a.n_bad_scope == 0 && slice_is(a.uri, a.uri_len, "/api/business/orders/1"),
	   "scope and uri both kept");
	is_int((long long)a.n_hdrs, 0, "  scope is never a forwarded header");

	enc_init(&e);
	ARG(&e, "scope", "Az09._:-");
	ok(classify(&a, cfg, &e) == 0 && slice_is(a.scope, a.scope_len, "Az09._:-"),
	   "every allowed character class");

	enc_init(&e);
	enc_null_arg(&e, "scope");
	ARG(&e, "uri", "/x");
	ok(classify(&a, cfg, &e) == 0 && a.scope == NULL && a.n_bad_scope == 0,
	   "null scope (txn.auth_scope unset): none, not counted");

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enc_init(&e);
		enc_str_arg(&e, "scope", SPOP_T_STR, bad[i], strlen(bad[i]));
		ok(classify(&a, cfg, &e) == 0 && a.scope == NULL && a.n_bad_scope == 1,
		   "bad scope #%zu: none, counted", i);
	}
	enc_init(&e);
	enc_str_arg(&e, "scope", SPOP_T_STR, "a\0b", 3);
	ok(classify(&a, cfg, &e) == 0 && a.scope == NULL && a.n_bad_scope == 1, "NUL: none");
	enc_init(&e);
	enc_str_arg(&e, "scope", SPOP_T_BIN, "admin", 5);
	ok(classify(&a, cfg, &e) == 0 && a.scope == NULL && a.n_bad_scope == 1,
	   "binary, not a string: none");

	memset(longest, 'a', sizeof(longest));
	enc_init(&e);
	enc_str_arg(&e, "scope", SPOP_T_STR, longest, ARGS_SCOPE_MAX);
	ok(classify(&a, cfg, &e) == 0 && a.scope && a.scope_len == ARGS_SCOPE_MAX,
	   "ARGS_SCOPE_MAX bytes: kept");
	enc_init(&e);
	enc_str_arg(&e, "scope", SPOP_T_STR, longest, ARGS_SCOPE_MAX + 1);
	ok(classify(&a, cfg, &e) == 0 && a.scope == NULL && a.n_bad_scope == 1,
	   "one byte more: none");

	enc_init(&e);
	ARG(&e, "scope", "admin");
	ARG(&e, "scope", "bad scope");
	ok(classify(&a, cfg, &e) == 0 && a.scope == NULL && a.n_bad_scope == 1,
	   "a later scope replaces an earlier one");
}

/* With a scope, the key holds it instead of the URI; the cred is unchanged. */
static void test_scope_key(const struct cfg *cfg)
{
	struct cachekey_opts o = { 1, 1, NULL, 0, NULL, NULL, 0 };
	struct cachekey_opts nouri = { 0, 1, NULL, 0, NULL, NULL, 0 };
	struct cachekey *ck, *cn;
	struct args a;
	struct enc e;
	uint8_t k1[CACHEKEY_LEN], c1[CACHEKEY_LEN], k2[CACHEKEY_LEN], c2[CACHEKEY_LEN];
	uint8_t k3[CACHEKEY_LEN], c3[CACHEKEY_LEN], k4[CACHEKEY_LEN], c4[CACHEKEY_LEN];
	char err[128];

	ck = cachekey_new(&o, err, sizeof(err));
	cn = cachekey_new(&nouri, err, sizeof(err));
	if (!ck || !cn) {
		ok(0, "cachekey_new: %s", err);
		goto out;
	}
	enc_init(&e);
	ARG(&e, "scope", "business");
	ARG(&e, "uri", "/api/business/orders/1");
	ARG(&e, "cookie", "sid=1");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, ck, k1, c1) == 0, "scoped key 1");
	enc_init(&e);
	ARG(&e, "scope", "business");
	ARG(&e, "uri", "/api/business/orders/2?x=1");
	ARG(&e, "cookie", "sid=1");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, ck, k2, c2) == 0, "scoped key 2");
	ok(memcmp(k1, k2, CACHEKEY_LEN) == 0, "two URIs of one scope: one key");
	ok(memcmp(c1, c2, CACHEKEY_LEN) == 0, "  one cred");
	ok(cachekey_begin(ck) == 0 && cachekey_header(ck, "cookie", 6, "sid=1", 5) == 0 &&
	   cachekey_end_scope(ck, NULL, 0, CACHEKEY_ADDR_NONE, NULL, 0, "business", 8, k3, c3) == 0 &&
	   memcmp(k1, k3, CACHEKEY_LEN) == 0, "  args_key == cachekey_end_scope on the same slices");

	enc_init(&e);
	ARG(&e, "scope", "admin");
	ARG(&e, "uri", "/api/business/orders/1");
	ARG(&e, "cookie", "sid=1");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, ck, k3, c3) == 0 &&
	   memcmp(k1, k3, CACHEKEY_LEN) != 0 && memcmp(c1, c3, CACHEKEY_LEN) == 0,
	   "another scope: another key, the same cred");

	enc_init(&e);
	ARG(&e, "scope", "business");
	ARG(&e, "uri", "/api/business/orders/1");
	ARG(&e, "cookie", "sid=2");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, ck, k3, c3) == 0 &&
	   memcmp(k1, k3, CACHEKEY_LEN) != 0 && memcmp(c1, c3, CACHEKEY_LEN) != 0,
	   "another session, same scope: another key and cred");

	/* a URI spelled like the scope name never shares its key */
	enc_init(&e);
	ARG(&e, "uri", "business");
	ARG(&e, "cookie", "sid=1");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, ck, k3, c3) == 0 &&
	   memcmp(k1, k3, CACHEKEY_LEN) != 0 && memcmp(c1, c3, CACHEKEY_LEN) == 0,
	   "uri \"business\" (no scope) != scope business; same cred");
	enc_init(&e);
	ARG(&e, "uri", "/api/business/orders/1");
	ARG(&e, "cookie", "sid=1");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, ck, k4, c4) == 0 &&
	   memcmp(k1, k4, CACHEKEY_LEN) != 0 && memcmp(k3, k4, CACHEKEY_LEN) != 0,
	   "no scope: keyed on the URI, as without scopes");

	/* cache-key-uri off: neither URI nor scope in the key */
	enc_init(&e);
	ARG(&e, "scope", "business");
	ARG(&e, "uri", "/api/business/orders/1");
	ARG(&e, "cookie", "sid=1");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, cn, k3, c3) == 0, "no-URI key, scoped");
	enc_init(&e);
	ARG(&e, "scope", "admin");
	ARG(&e, "uri", "/api/business/admin");
	ARG(&e, "cookie", "sid=1");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, cn, k4, c4) == 0 &&
	   memcmp(k3, k4, CACHEKEY_LEN) == 0,
	   "  another scope and URI: the same key (the scope counts only with the URI)");
	enc_init(&e);
	ARG(&e, "uri", "/elsewhere");
	ARG(&e, "cookie", "sid=1");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, cn, k4, c4) == 0 &&
	   memcmp(k3, k4, CACHEKEY_LEN) == 0, "  and the same as an unscoped request's");
out:
	cachekey_free(ck);
	cachekey_free(cn);
}

/* The admin endpoint builds its struct args with args_add_header(); the
 * NOTIFY path with args_classify(). Same headers => same credential. */
static void test_admin_same_rules(const struct cfg *cfg)
{
	struct cachekey_opts o = { 1, 1, NULL, 0, NULL, NULL, 0 };
	struct cachekey *ck;
	struct args a, b;
	struct enc e;
	uint8_t ka[CACHEKEY_LEN], ca[CACHEKEY_LEN], kb[CACHEKEY_LEN], cb[CACHEKEY_LEN];
	char err[128];

	ck = cachekey_new(&o, err, sizeof(err));
	if (!ck) {
		ok(0, "cachekey_new: %s", err);
		return;
	}
	enc_init(&e);
	ARG(&e, "uri", "/x");
	ARG(&e, "cookie", "sid=1");
	ARG(&e, "authorization", "Bearer t");
	ARG(&e, "x-example-authorization", "a\0" "b");
	ok(classify(&a, cfg, &e) == 0 && args_key(&a, ck, ka, ca) == 0, "NOTIFY path key");
	args_init(&b);
	is_int(args_add_header(&b, cfg, "cookie", 6, "sid=1", 5), 1, "admin: cookie added");
	is_int(args_add_header(&b, cfg, "authorization", 13, "Bearer t", 8), 1, "  authorization");
	is_int(args_add_header(&b, cfg, "x-example-authorization", 23, "a\0b", 3), -1,
	       "  the NUL value dropped, as on the NOTIFY path");
	is_int(args_add_header(&b, cfg, "x-nope", 6, "v", 1), 0, "  not forwarded: ignored");
	ok(args_key(&b, ck, kb, cb) == 0 && memcmp(ca, cb, CACHEKEY_LEN) == 0,
	   "same credential hash from both paths");
	ok(memcmp(ka, kb, CACHEKEY_LEN) != 0, "  keys differ (URI, address only on one)");

	/* args_key() is the key of exactly these slices */
	ok(cachekey_begin(ck) == 0 && cachekey_header(ck, "cookie", 6, "sid=1", 5) == 0 &&
	   cachekey_header(ck, "authorization", 13, "Bearer t", 8) == 0 &&
	   cachekey_end_client(ck, NULL, 0, CACHEKEY_ADDR_NONE, NULL, 0, "/x", 2, kb, cb) == 0 &&
	   memcmp(ka, kb, CACHEKEY_LEN) == 0, "args_key == the key builder fed the same slices");
	cachekey_free(ck);
}

static void test_log_hash(const struct cfg *cfg)
{
	uint8_t k1[ARGS_LOG_KEY_LEN], k2[ARGS_LOG_KEY_LEN], ref[EVP_MAX_MD_SIZE], sha[32];
	static const char lines[] = "cookie: sid=1\nauthorization: Bearer t\n";
	unsigned rlen = 0;
	char h1[ARGS_LOG_HASH_SIZE], h1b[ARGS_LOG_HASH_SIZE], h2[ARGS_LOG_HASH_SIZE], want[9];
	char unkeyed[9];
	struct args a;

	memset(k1, 0x11, sizeof(k1));
	memset(k2, 0x22, sizeof(k2));
	args_init(&a);
	args_add_header(&a, cfg, "cookie", 6, "sid=1", 5);
	args_add_header(&a, cfg, "authorization", 13, "Bearer t", 8);
	args_log_hash(&a, k1, h1);
	args_log_hash(&a, k1, h1b);
	args_log_hash(&a, k2, h2);
	HMAC(EVP_sha256(), k1, sizeof(k1), (const uint8_t *)lines, sizeof(lines) - 1, ref, &rlen);
	snprintf(want, sizeof(want), "%02x%02x%02x%02x", ref[0], ref[1], ref[2], ref[3]);
	EVP_Digest(lines, sizeof(lines) - 1, sha, NULL, EVP_sha256(), NULL);
	snprintf(unkeyed, sizeof(unkeyed), "%02x%02x%02x%02x", sha[0], sha[1], sha[2], sha[3]);
	ok(strcmp(h1, want) == 0, "log hash = HMAC-SHA256 prefix (%s vs %s)", h1, want);
	ok(strcmp(h1, h1b) == 0, "  same key, same hash");
	ok(strcmp(h1, h2) != 0, "  another key, another hash");
	ok(strcmp(h1, unkeyed) != 0 && strcmp(h2, unkeyed) != 0, "  never the unkeyed SHA-256");
}

/* args_src_text() formats IPv4 itself (no printf): the same text as
 * inet_ntop() for each octet value 0..255 in each of the four positions
 * (others fixed at edge values), and -1 for a buffer under 16 bytes. */
static void test_src_text_ipv4(void)
{
	static const uint8_t edge[] = { 0, 9, 10, 99, 100, 255 };
	struct args a;
	char want[INET_ADDRSTRLEN], got[ARGS_SRC_TEXT_MAX + 1];
	unsigned bad = 0, n = 0;

	args_init(&a);
	a.src_kind = CACHEKEY_ADDR_IPV4;
	a.src_len = 4;
	for (unsigned pos = 0; pos < 4; pos++)
		for (unsigned v = 0; v < 256; v++)
			for (size_t e = 0; e < sizeof(edge); e++) {
				for (unsigned i = 0; i < 4; i++)
					a.src_ip[i] = edge[(e + i) % sizeof(edge)];
				a.src_ip[pos] = (uint8_t)v;
				inet_ntop(AF_INET, a.src_ip, want, sizeof(want));
				memset(got, 'z', sizeof(got));
				if (args_src_text(&a, got, sizeof(got)) != 0 || strcmp(got, want) != 0)
					bad++;
				n++;
			}
	ok(bad == 0, "IPv4 text equals inet_ntop's for %u addresses (%u differ)", n, bad);
	memset(a.src_ip, 255, 4);
	ok(args_src_text(&a, got, 16) == 0 && strcmp(got, "255.255.255.255") == 0,
	   "the longest quad fits 16 bytes");
	ok(args_src_text(&a, got, 15) < 0, "a 15-byte buffer is refused");
}

int main(void)
{
	char err[256];
	struct cfg *cfg = cfg_load(NULL, 0, NULL, err, sizeof(err));

	if (!cfg) {
		ok(0, "cfg_load: %s", err);
		return done_testing();
	}
	test_classify(cfg);
	test_scope_classify(cfg);
	test_scope_key(cfg);
	test_admin_same_rules(cfg);
	test_log_hash(cfg);
	test_src_text_ipv4();
	cfg_put(cfg);
	return done_testing();
}
