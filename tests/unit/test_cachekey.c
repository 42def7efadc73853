/*
 * test_cachekey.c: unit tests of the cache key and credential hashes
 * (agent/cachekey.c).
 *
 * What it does: checks which inputs change the key and which change the
 * credential hash: URI included or dropped, client address, cookie filtering
 * (spaces, empty values, duplicates, order), absent vs empty, field boundaries,
 * header-name case, salt, scope, option validation; and that the incremental
 * and one-call forms agree. A property test over generated Cookie headers:
 * whenever two headers get the same key under a cookie filter, every
 * reference parser of cookie_ref.h reads the same kept cookie in both.
 * The digests against a plain one-shot SHA-256 of the documented encoding,
 * for request sizes on both sides of the one-block finish.
 *
 * What it never does: depend on anything but cachekey.c and libcrypto.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "cachekey.h"
#include "cookie_ref.h"
#include "tap.h"

struct out {
	uint8_t key[CACHEKEY_LEN];
	uint8_t cred[CACHEKEY_LEN];
};

/* strlen that takes NULL (an absent value) */
static size_t slen(const char *s)
{
	return s ? strlen(s) : 0;
}

#define H(n, v) { (n), sizeof(n) - 1, (v), slen(v) }
#define NHDR(a) (sizeof(a) / sizeof((a)[0]))

static struct cachekey *mk(int uri, int client, const char *const *cookies, size_t n)
{
	struct cachekey_opts o = { uri, client, cookies, n, NULL, NULL, 0 };
	char err[128];
	struct cachekey *k = cachekey_new(&o, err, sizeof(err));

	if (!k)
		diag("cachekey_new: %s", err);
	return k;
}

static struct out run(struct cachekey *k, const struct cachekey_hdr *h, size_t n, const char *xff,
                      const char *uri)
{
	struct out o;

	memset(&o, 0xee, sizeof(o));
	if (cachekey_compute(k, h, n, xff, slen(xff), uri, slen(uri), o.key, o.cred) < 0)
		diag("cachekey_compute failed");
	return o;
}

static int same_key(struct out a, struct out b)
{
	return memcmp(a.key, b.key, CACHEKEY_LEN) == 0;
}

static int same_cred(struct out a, struct out b)
{
	return memcmp(a.cred, b.cred, CACHEKEY_LEN) == 0;
}

/* SHA-256("") : a sanity anchor that EVP works and we do not output it */
static const uint8_t sha_empty[32] = {
	0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
	0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
};

static void test_default_key(void)
{
	struct cachekey *k = mk(1, 1, NULL, 0);
	struct cachekey_hdr h1[] = { H("cookie", "sid=abc; theme=dark"), H("authorization", NULL) };
	struct cachekey_hdr h1b[] = { H("Cookie", "sid=abc; theme=dark"), H("AUTHORIZATION", NULL) };
	struct cachekey_hdr h2[] = { H("cookie", "sid=abc; theme=light"), H("authorization", NULL) };
	struct cachekey_hdr h3[] = { H("cookie", "sid=abc; theme=dark"), H("authorization", "") };
	struct cachekey_hdr h4[] = { H("authorization", NULL), H("cookie", "sid=abc; theme=dark") };
	struct out a, b;

	if (!ok(k != NULL, "default builder"))
		return;
	a = run(k, h1, NHDR(h1), "10.0.0.1", "/a?x=1");
	b = run(k, h1, NHDR(h1), "10.0.0.1", "/a?x=1");
	ok(same_key(a, b) && same_cred(a, b), "deterministic");
	ok(memcmp(a.key, sha_empty, 32) != 0 && memcmp(a.key, a.cred, 32) != 0, "key != cred");

	b = run(k, h1b, NHDR(h1b), "10.0.0.1", "/a?x=1");
	ok(same_key(a, b), "header names are case-insensitive");

	b = run(k, h1, NHDR(h1), "10.0.0.1", "/b?x=1");
	ok(!same_key(a, b), "URI in the default key");
	ok(same_cred(a, b), "  but not in cred");

	b = run(k, h1, NHDR(h1), "10.0.0.2", "/a?x=1");
	ok(!same_key(a, b), "client address in the default key");
	ok(same_cred(a, b), "  but not in cred (a logout from another address works)");

	b = run(k, h1, NHDR(h1), NULL, "/a?x=1");
	ok(!same_key(a, b), "no XFF sent != XFF sent");
	a = run(k, h1, NHDR(h1), "", "/a?x=1");
	ok(!same_key(a, b), "absent XFF != empty XFF");
	a = run(k, h1, NHDR(h1), "10.0.0.1", NULL);
	b = run(k, h1, NHDR(h1), "10.0.0.1", "");
	ok(!same_key(a, b), "absent URI != empty URI");

	a = run(k, h1, NHDR(h1), "10.0.0.1", "/a");
	b = run(k, h2, NHDR(h2), "10.0.0.1", "/a");
	ok(!same_key(a, b) && !same_cred(a, b), "whole Cookie header counts without a filter");
	b = run(k, h3, NHDR(h3), "10.0.0.1", "/a");
	ok(!same_key(a, b) && !same_cred(a, b), "absent header != empty header");
	b = run(k, h4, NHDR(h4), "10.0.0.1", "/a");
	ok(!same_key(a, b), "header order is an input (sent as is)");
	b = run(k, h1, 1, "10.0.0.1", "/a");
	ok(!same_key(a, b) && !same_cred(a, b), "an absent header is not the same as no header");
	cachekey_free(k);
}

static void test_boundaries(void)
{
	struct cachekey *k = mk(1, 1, NULL, 0);
	struct cachekey_hdr a1[] = { H("x-a", "bc") };
	struct cachekey_hdr a2[] = { H("x-ab", "c") };
	struct cachekey_hdr b1[] = { H("x", "1"), H("y", "2") };
	struct cachekey_hdr b2[] = { H("x", "1y2") };
	struct out a, b;

	if (!k)
		return;
	a = run(k, a1, 1, NULL, NULL);
	b = run(k, a2, 1, NULL, NULL);
	ok(!same_key(a, b), "name/value boundary");
	a = run(k, b1, 2, NULL, NULL);
	b = run(k, b2, 1, NULL, NULL);
	ok(!same_key(a, b), "header boundary");
	a = run(k, NULL, 0, "1.2.3.4", "");
	b = run(k, NULL, 0, "1.2.3.", "4");
	ok(!same_key(a, b), "xff/uri boundary");
	a = run(k, NULL, 0, "", "x");
	b = run(k, NULL, 0, "x", "");
	ok(!same_key(a, b), "empty fields are positional");
	{
		/* NUL bytes are data, lengths decide */
		struct cachekey_hdr n1[] = { { "x", 1, "a\0b", 3 } };
		struct cachekey_hdr n2[] = { { "x", 1, "a\0c", 3 } };

		a = run(k, n1, 1, NULL, NULL);
		b = run(k, n2, 1, NULL, NULL);
		ok(!same_key(a, b), "bytes after a NUL count");
	}
	{
		/* a long header name is lowercased in chunks */
		char n1[200], n2[200];
		struct cachekey_hdr l1[] = { { n1, sizeof(n1), "v", 1 } };
		struct cachekey_hdr l2[] = { { n2, sizeof(n2), "v", 1 } };

		memset(n1, 'A', sizeof(n1));
		memset(n2, 'a', sizeof(n2));
		a = run(k, l1, 1, NULL, NULL);
		b = run(k, l2, 1, NULL, NULL);
		ok(same_key(a, b), "long names fold case");
		n2[150] = 'b';
		b = run(k, l2, 1, NULL, NULL);
		ok(!same_key(a, b), "  every byte of them counts");
	}
	cachekey_free(k);
}

static void test_options(void)
{
	static const char *const sid[] = { "sid" };
	struct cachekey *k = mk(0, 1, NULL, 0), *kc = mk(1, 0, NULL, 0), *kd = mk(1, 1, NULL, 0);
	struct cachekey *kf = mk(1, 1, sid, 1);
	struct cachekey_hdr h[] = { H("cookie", "sid=1") };
	struct out a, b;

	if (!k || !kc || !kd || !kf)
		goto out;
	a = run(k, h, 1, "10.0.0.1", "/a");
	b = run(k, h, 1, "10.0.0.1", "/b");
	ok(same_key(a, b), "URI dropped: /a and /b share the key");
	b = run(k, h, 1, "10.0.0.1", NULL);
	ok(same_key(a, b), "  absent too");
	b = run(kd, h, 1, "10.0.0.1", "/a");
	ok(!same_key(a, b), "  but not with the default builder's keys");
	ok(same_cred(a, b), "  cred does not depend on include_uri");

	a = run(kc, h, 1, "10.0.0.1", "/a");
	b = run(kc, h, 1, "10.9.9.9", "/a");
	ok(same_key(a, b), "client dropped: any address shares the key");

	a = run(kd, h, 1, NULL, NULL);
	b = run(kf, h, 1, NULL, NULL);
	ok(!same_key(a, b) && !same_cred(a, b), "filter on/off never share keys");
out:
	cachekey_free(k);
	cachekey_free(kc);
	cachekey_free(kd);
	cachekey_free(kf);
}

static void test_cookie_filter(void)
{
	static const char *const f1[] = { "sid", "lang" };
	static const char *const f2[] = { "lang", "sid", "sid" };
	static const char *const f3[] = { "sid" };
	struct cachekey *k1 = mk(1, 1, f1, 2), *k2 = mk(1, 1, f2, 3), *k3 = mk(1, 1, f3, 1);
	struct out a, b;

#define C(v) ((struct cachekey_hdr[]){ H("cookie", v), H("authorization", "Bearer t") })
#define RUN(k, v) run((k), C(v), 2, "10.0.0.1", "/a")
	if (!k1 || !k2 || !k3)
		goto out;
	a = RUN(k1, "sid=1; lang=en");
	b = RUN(k1, "sid=1; ga=123; lang=en; _x=7");
	ok(same_key(a, b) && same_cred(a, b), "other cookies ignored");
	b = RUN(k1, "  sid=1 ;lang=en  ");
	ok(same_key(a, b), "spaces around pairs");
	b = RUN(k1, "sid=1;\tlang=en\t");
	ok(same_key(a, b), "tabs too");
	b = RUN(k1, "sid = 1; lang=en");
	ok(!same_key(a, b), "spaces around '=' make the header uncertain: raw key");
	b = RUN(k1, "lang=en; sid=1");
	ok(!same_key(a, b), "kept cookies are hashed in header order");
	b = RUN(k2, "sid=1; lang=en");
	ok(same_key(a, b) && same_cred(a, b), "filter list order and repeats do not matter");
	b = RUN(k1, "sid=2; lang=en");
	ok(!same_key(a, b) && !same_cred(a, b), "a kept value counts");
	b = RUN(k1, "SID=1; lang=en");
	ok(!same_key(a, b), "cookie names are case-sensitive");

	a = RUN(k3, "sid=");
	b = RUN(k3, "sid");
	ok(!same_key(a, b), "empty value != no '=' (the latter has an empty name)");
	b = RUN(k3, "");
	ok(same_key(a, RUN(k3, "sid=")) && !same_key(a, b), "sid= kept; empty header keeps nothing");
	a = RUN(k3, "x=1");
	ok(same_key(a, b), "no kept cookie == empty header");
	a = run(k3, (struct cachekey_hdr[]){ H("cookie", NULL) }, 1, NULL, NULL);
	b = run(k3, (struct cachekey_hdr[]){ H("cookie", "") }, 1, NULL, NULL);
	ok(!same_key(a, b), "absent Cookie != empty Cookie under a filter");

	a = RUN(k3, "sid=1; sid=2");
	b = RUN(k3, "sid=2; sid=1");
	ok(!same_key(a, b), "duplicates: raw key, order counts");
	b = RUN(k3, "sid=1");
	ok(!same_key(a, b) && !same_key(a, RUN(k3, "sid=2")), "  and differs from either value");
	a = RUN(k3, "sid=a=b");
	b = RUN(k3, "sid=a; =b");
	ok(!same_key(a, b), "'=' inside a value stays in the value");
	a = RUN(k3, "sid=\"q;x\"");
	b = RUN(k3, "sid=\"q");
	ok(!same_key(a, b), "quoted kept cookies are uncertain: raw key");
	a = RUN(k3, "sid=1;;;");
	b = RUN(k3, ";sid=1");
	ok(!same_key(a, b) && !same_key(a, RUN(k3, "sid=1")), "empty pairs are uncertain: raw key");
	a = RUN(k3, "sid=1");
	b = run(k3, (struct cachekey_hdr[]){ H("cookie", "sid=1"), H("authorization", "Bearer u") }, 2,
	        "10.0.0.1", "/a");
	ok(!same_key(a, b) && !same_cred(a, b), "other headers still count in full");
	b = run(k3, (struct cachekey_hdr[]){ H("x-cookie", "sid=1"), H("authorization", "Bearer t") },
	        2, "10.0.0.1", "/a");
	ok(!same_key(a, b), "only the header named cookie is filtered");
	a = run(k3, (struct cachekey_hdr[]){ H("cookie", "sid=1"), H("cookie", "sid=2") }, 2, NULL, NULL);
	b = run(k3, (struct cachekey_hdr[]){ H("cookie", "sid=1; sid=2") }, 1, NULL, NULL);
	ok(!same_key(a, b), "two Cookie headers are two fields");
	a = run(k3, (struct cachekey_hdr[]){ H("cookie", "a=1; sid=1") }, 1, NULL, NULL);
	b = run(k3, (struct cachekey_hdr[]){ H("cookie", "sid=1; a=1") }, 1, NULL, NULL);
	ok(same_key(a, b), "dropped cookies' positions do not matter");
#undef RUN
#undef C
out:
	cachekey_free(k1);
	cachekey_free(k2);
	cachekey_free(k3);
}

static void test_salt_scope(void)
{
	uint8_t s1[CACHEKEY_SALT_LEN], s2[CACHEKEY_SALT_LEN];
	struct cachekey_opts o = { 1, 1, NULL, 0, NULL, NULL, 0 };
	struct cachekey *k0, *k1, *k1b, *k2, *ks;
	struct cachekey_hdr h[] = { H("cookie", "sid=1") };
	char err[128];
	struct out a, b;

	ok(cachekey_salt_new(s1) == 0 && cachekey_salt_new(s2) == 0, "salts drawn");
	ok(memcmp(s1, s2, sizeof(s1)) != 0, "  and differ");
	k0 = cachekey_new(&o, err, sizeof(err));
	o.salt = s1;
	k1 = cachekey_new(&o, err, sizeof(err));
	k1b = cachekey_new(&o, err, sizeof(err));
	o.salt = s2;
	k2 = cachekey_new(&o, err, sizeof(err));
	o.salt = s1;
	o.scope = "http://127.0.0.1:8101/api/user/token";
	o.scope_len = strlen(o.scope);
	ks = cachekey_new(&o, err, sizeof(err));
	if (!ok(k0 && k1 && k1b && k2 && ks, "builders"))
		goto out;
	a = run(k1, h, 1, NULL, "/");
	b = run(k1b, h, 1, NULL, "/");
	ok(same_key(a, b) && same_cred(a, b), "same salt: workers agree");
	b = run(k2, h, 1, NULL, "/");
	ok(!same_key(a, b) && !same_cred(a, b), "another salt: other keys and creds");
	b = run(k0, h, 1, NULL, "/");
	ok(!same_key(a, b), "unsalted differs");
	b = run(ks, h, 1, NULL, "/");
	ok(!same_key(a, b) && !same_cred(a, b), "scope changes keys and creds");
out:
	cachekey_free(k0);
	cachekey_free(k1);
	cachekey_free(k1b);
	cachekey_free(k2);
	cachekey_free(ks);
}

static void test_incremental(void)
{
	static const char *const f[] = { "sid" };
	struct cachekey *k = mk(1, 1, f, 1);
	struct cachekey_hdr h[] = { H("cookie", "a=1; sid=x"), H("authorization", "Basic Zm9v"),
		                    H("x-example-authorization", NULL) };
	uint8_t key[32], cred[32];
	struct out a;
	size_t i;

	if (!k)
		return;
	a = run(k, h, 3, "1.1.1.1, 2.2.2.2", "/p?q");
	ok(cachekey_begin(k) == 0, "begin");
	for (i = 0; i < 3; i++)
		cachekey_header(k, h[i].name, h[i].name_len, h[i].value, h[i].value_len);
	ok(cachekey_end(k, "1.1.1.1, 2.2.2.2", 16, "/p?q", 4, key, cred) == 0, "end");
	is_mem(key, 32, a.key, 32, "incremental key == one call");
	is_mem(cred, 32, a.cred, 32, "incremental cred == one call");
	/* cred deferred: the same digest, once */
	cachekey_begin(k);
	for (i = 0; i < 3; i++)
		cachekey_header(k, h[i].name, h[i].name_len, h[i].value, h[i].value_len);
	memset(key, 0, sizeof(key));
	memset(cred, 0, sizeof(cred));
	ok(cachekey_end(k, "1.1.1.1, 2.2.2.2", 16, "/p?q", 4, key, NULL) == 0, "end, cred deferred");
	is_mem(key, 32, a.key, 32, "  same key");
	ok(cachekey_cred(k, cred) == 0, "  cachekey_cred");
	is_mem(cred, 32, a.cred, 32, "  same cred");
	ok(cachekey_cred(k, cred) < 0, "  only once");
	cachekey_begin(k);
	ok(cachekey_cred(k, cred) < 0, "  nothing deferred after begin");
	/* a builder is reusable: an abandoned half request leaves no trace */
	cachekey_begin(k);
	cachekey_header(k, "junk", 4, "junk", 4);
	a = run(k, h, 3, "1.1.1.1, 2.2.2.2", "/p?q");
	is_mem(key, 32, a.key, 32, "begin resets");
	cachekey_free(k);
}

/* cachekey_end_client(): the X-Forwarded-For given as its inputs. */
static struct out run_client(struct cachekey *k, const struct cachekey_hdr *h, size_t n,
                             const char *xff, enum cachekey_addr kind, const void *addr,
                             size_t addr_len, const char *uri)
{
	struct out o;
	size_t i;

	memset(&o, 0xee, sizeof(o));
	cachekey_begin(k);
	for (i = 0; i < n; i++)
		cachekey_header(k, h[i].name, h[i].name_len, h[i].value, h[i].value_len);
	if (cachekey_end_client(k, xff, slen(xff), kind, addr, addr_len, uri, slen(uri), o.key,
	                        o.cred) < 0)
		diag("cachekey_end_client failed");
	return o;
}

static void test_client_inputs(void)
{
	struct cachekey *k = mk(1, 1, NULL, 0), *kn = mk(1, 0, NULL, 0);
	struct cachekey_hdr h[] = { H("cookie", "sid=abc") };
	static const uint8_t v4a[4] = { 10, 0, 0, 1 }, v4b[4] = { 10, 0, 0, 2 };
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
	struct out a, b, t;

	if (!k || !kn)
		goto out;
	a = run_client(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "/p");
	b = run_client(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "/p");
	ok(same_key(a, b) && same_cred(a, b), "client form: deterministic");
	t = run(k, h, 1, "10.0.0.1", "/p");
	ok(same_cred(a, t), "client form: cred as with the text form");
	ok(!same_key(a, t), "client form never shares a key with the text form");
	b = run_client(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4b, 4, "/p");
	ok(!same_key(a, b) && same_cred(a, b), "another address: another key, same cred");
	b = run_client(k, h, 1, "1.2.3.4", CACHEKEY_ADDR_IPV4, v4a, 4, "/p");
	ok(!same_key(a, b) && same_cred(a, b), "incoming X-Forwarded-For counts");
	b = run_client(k, h, 1, "", CACHEKEY_ADDR_IPV4, v4a, 4, "/p");
	ok(!same_key(a, b), "empty incoming X-Forwarded-For != none");
	b = run_client(k, h, 1, NULL, CACHEKEY_ADDR_NONE, NULL, 0, "/p");
	ok(!same_key(a, b), "no address != an address");
	b = run_client(k, h, 1, NULL, CACHEKEY_ADDR_TEXT, "", 0, "/p");
	t = run_client(k, h, 1, NULL, CACHEKEY_ADDR_NONE, NULL, 0, "/p");
	ok(!same_key(b, t), "empty text address != no address");
	b = run_client(k, h, 1, NULL, CACHEKEY_ADDR_TEXT, v4a, 4, "/p");
	ok(!same_key(a, b), "address kinds are told apart (v4 bytes vs text)");
	b = run_client(k, h, 1, NULL, CACHEKEY_ADDR_IPV6, v6, 16, "/p");
	ok(!same_key(a, b), "IPv6 != IPv4");
	b = run_client(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "/q");
	ok(!same_key(a, b) && same_cred(a, b), "URI still counts");
	a = run_client(kn, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "/p");
	b = run_client(kn, h, 1, "9.9.9.9", CACHEKEY_ADDR_IPV6, v6, 16, "/p");
	ok(same_key(a, b), "include_client off: the client inputs do not count");
out:
	cachekey_free(k);
	cachekey_free(kn);
}


/* ---- property: equal keys => every reference parser sees the same cookie ---- */

#define PROP_N       20000  /* generated headers */
#define PROP_MAXLEN  96

static uint64_t prop_rng = 0x9e3779b97f4a7c15u;

static unsigned prop_rand(unsigned n)
{
	prop_rng ^= prop_rng << 13;
	prop_rng ^= prop_rng >> 7;
	prop_rng ^= prop_rng << 17;
	return (unsigned)(prop_rng % n);
}

struct prop_hdr {
	char v[PROP_MAXLEN * 2];
	size_t len;
	uint8_t key[CACHEKEY_LEN];
};

static void prop_cat(struct prop_hdr *h, const char *s, size_t n)
{
	if (h->len + n <= sizeof(h->v)) {
		memcpy(h->v + h->len, s, n);
		h->len += n;
	}
}

static void prop_cats(struct prop_hdr *h, const char *lit)
{
	prop_cat(h, lit, strlen(lit));
}

/* Pools small enough that many headers share a key. */
static void prop_gen(struct prop_hdr *h)
{
	static const char *const names[] = {
		"sid", "sid", "sid", "SID", "Sid", "s%69d", "si%64", "sid.", "s.d", "theme", "x",
		"", "\xa0sid", "sid\xa0", "\x0bsid", "\x0csid", "\"sid\"", "s id", " sid",
	};
	static const char *const values[] = {
		"bob", "bob", "alice", "", "\"bob\"", "bo b", "b%6fb", "bob ", " bob", "dark",
		"\xa0" "bob", "bob,sid=eve",
	};
	static const char *const eqs[] = { "=", "=", "=", " =", "= ", "", "==" };
	static const char *const seps[] = {
		"; ", "; ", ";", ";;", ", ", " ; ", ";\t", "\xa0; ", ";\x0b", "; ; ",
	};
	unsigned n = 1 + prop_rand(3), i;

	h->len = 0;
	if (prop_rand(8) == 0)
		prop_cats(h, " ");
	for (i = 0; i < n; i++) {
		if (i)
			prop_cats(h, seps[prop_rand(sizeof(seps) / sizeof(seps[0]))]);
		prop_cats(h, names[prop_rand(sizeof(names) / sizeof(names[0]))]);
		prop_cats(h, eqs[prop_rand(sizeof(eqs) / sizeof(eqs[0]))]);
		prop_cats(h, values[prop_rand(sizeof(values) / sizeof(values[0]))]);
	}
	if (prop_rand(8) == 0)
		prop_cats(h, seps[prop_rand(sizeof(seps) / sizeof(seps[0]))]);
	/* a random byte 0x00-0xff somewhere, now and then */
	if (prop_rand(4) == 0 && h->len < sizeof(h->v)) {
		size_t at = prop_rand((unsigned)h->len + 1);

		memmove(h->v + at + 1, h->v + at, h->len - at);
		h->v[at] = (char)prop_rand(256);
		h->len++;
	}
}

static int prop_cmp(const void *a, const void *b)
{
	const struct prop_hdr *x = a, *y = b;
	int c = memcmp(x->key, y->key, CACHEKEY_LEN);

	if (c)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->v, y->v, x->len);
}

static void test_cookie_property(void)
{
	static const char *const f[] = { "sid" };
	static struct prop_hdr hs[PROP_N];
	struct cachekey *k = mk(1, 1, f, 1);
	struct cookie_ref_val a, b;
	size_t i, g, pairs = 0, bad = 0, dup_hdr = 0;
	uint8_t cred[CACHEKEY_LEN];

	if (!k)
		return;
	for (i = 0; i < PROP_N; i++) {
		prop_gen(&hs[i]);
		if (cachekey_begin(k) < 0 || cachekey_header(k, "cookie", 6, hs[i].v, hs[i].len) < 0 ||
		    cachekey_end(k, NULL, 0, "/", 1, hs[i].key, cred) < 0)
			diag("key failed");
	}
	qsort(hs, PROP_N, sizeof(hs[0]), prop_cmp);
	for (g = 0; g < PROP_N; g = i) {
		for (i = g + 1; i < PROP_N && memcmp(hs[i].key, hs[g].key, CACHEKEY_LEN) == 0; i++) {
			if (hs[i].len == hs[i - 1].len && memcmp(hs[i].v, hs[i - 1].v, hs[i].len) == 0) {
				dup_hdr++;
				continue;
			}
			pairs++;
			for (int r = 0; r < COOKIE_REF_ENTRIES; r++) {
				cookie_ref_parse(r, hs[g].v, hs[g].len, "sid", &a);
				cookie_ref_parse(r, hs[i].v, hs[i].len, "sid", &b);
				if (cookie_ref_same(&a, &b))
					continue;
				if (bad++ < 5)
					diag("same key, %s parser disagrees: '%.*s' vs '%.*s'",
					     cookie_ref_names[r], (int)hs[g].len, hs[g].v,
					     (int)hs[i].len, hs[i].v);
			}
		}
	}
	diag("property: %zu distinct headers sharing a key with another, %zu repeats",
	     pairs, dup_hdr);
	ok(pairs > 100, "the generator makes distinct headers that share keys (%zu)", pairs);
	ok(bad == 0, "equal keys: every reference parser reads the same sid (%zu disagreements)",
	   bad);
	cachekey_free(k);
}

#define RUN_K1(k, v) run((k), (struct cachekey_hdr[]){ H("cookie", v) }, 1, NULL, "/")

static void test_cookie_uncertain(void)
{
	static const char *const f[] = { "sid" };
	struct cachekey *k = mk(1, 1, f, 1);
	struct out base, none;
	static const char *const odd[] = {
		"\xa0sid=bob", "sid\xa0=bob", "\x0bsid=bob", "\x0csid=bob", "x=1;\xa0sid=bob",
		"sid=bob; SID=eve", "Sid=bob", "s%69d=bob", "si%64=bob", "sid=\"bob\"",
		"sid=bob; sid=eve", "sid =bob", "sid= bob", "sid", "=bob", "x=1;;sid=bob",
		"sid=bob,x=1", "x=1, sid=bob", "sid=b\\ob", "x=a b; sid=bob", "x=1\x01; sid=bob",
	};
	size_t i;

	if (!k)
		return;
	base = RUN_K1(k, "sid=bob");
	none = RUN_K1(k, "theme=dark");
	ok(!same_key(base, none), "sid=bob != no sid");
	for (i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		struct out o = RUN_K1(k, odd[i]);

		ok(!same_key(o, base) && !same_key(o, none), "uncertain header #%zu keys on its raw bytes", i);
	}
	ok(same_key(RUN_K1(k, "theme=dark; sid=bob"), base), "certain: other cookies still dropped");
	ok(same_key(RUN_K1(k, "x=\"q\"; sid=bob"), base), "certain: a quoted value of another cookie");
	ok(same_key(RUN_K1(k, " sid=bob\t"), base), "certain: SP/HT around pairs");
	ok(same_key(RUN_K1(k, ""), none) && same_key(RUN_K1(k, "  "), none), "blank header == no sid");
	cachekey_free(k);
}

static void test_bad_opts(void)
{
	static const char *const bad1[] = { "" };
	static const char *const bad2[] = { "a=b" };
	static const char *const bad3[] = { "sid", "a b" };
	static const char *const bad4[] = { "a;" };
	static const char *const bad5[] = { NULL };
	static const char *const *const all[] = { bad1, bad2, bad3, bad4, bad5 };
	static const size_t ns[] = { 1, 1, 2, 1, 1 };
	struct cachekey_opts o = { 1, 1, NULL, 0, NULL, NULL, 0 };
	char err[128];
	size_t i;

	for (i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
		o.cookie_names = all[i];
		o.n_cookie_names = ns[i];
		err[0] = 0;
		ok(cachekey_new(&o, err, sizeof(err)) == NULL && strstr(err, "cookie name"),
		   "bad cookie name #%zu refused: %s", i, err);
	}
	cachekey_free(NULL);
	ok(1, "cachekey_free(NULL)");
}

static struct out run_scope(struct cachekey *k, const struct cachekey_hdr *h, size_t n,
                            const char *xff, enum cachekey_addr kind, const void *addr,
                            size_t addr_len, const char *scope)
{
	struct out o;
	size_t i;

	memset(&o, 0xee, sizeof(o));
	cachekey_begin(k);
	for (i = 0; i < n; i++)
		cachekey_header(k, h[i].name, h[i].name_len, h[i].value, h[i].value_len);
	if (cachekey_end_scope(k, xff, slen(xff), kind, addr, addr_len, scope, slen(scope), o.key,
	                       o.cred) < 0)
		diag("cachekey_end_scope failed");
	return o;
}

/* cachekey_end_scope(): the scope stands where the URI was, tagged apart. */
static void test_scope_key(void)
{
	struct cachekey *k = mk(1, 1, NULL, 0), *kn = mk(0, 1, NULL, 0);
	struct cachekey_hdr h[] = { H("cookie", "sid=abc") };
	struct cachekey_hdr h2[] = { H("cookie", "sid=def") };
	static const uint8_t v4a[4] = { 10, 0, 0, 1 }, v4b[4] = { 10, 0, 0, 2 };
	struct out a, b, u;

	if (!k || !kn)
		goto out;
	a = run_scope(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "business");
	b = run_scope(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "business");
	ok(same_key(a, b) && same_cred(a, b), "scope: deterministic");
	u = run_client(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "business");
	ok(!same_key(a, u) && same_cred(a, u), "scope \"business\" != URI \"business\"; same cred");
	u = run_client(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, NULL);
	b = run_scope(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, NULL);
	ok(!same_key(b, u), "even with no bytes: a scope's key is never a URI's");
	b = run_scope(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "admin");
	ok(!same_key(a, b) && same_cred(a, b), "another scope: another key, same cred");
	b = run_scope(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "business2");
	ok(!same_key(a, b), "a scope name's prefix is not the scope");
	b = run_scope(k, h2, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "business");
	ok(!same_key(a, b) && !same_cred(a, b), "another session: another key and cred");
	b = run_scope(k, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4b, 4, "business");
	ok(!same_key(a, b), "the client address still counts");
	b = run_scope(k, h, 1, "1.2.3.4", CACHEKEY_ADDR_IPV4, v4a, 4, "business");
	ok(!same_key(a, b), "  and the incoming X-Forwarded-For");
	a = run_scope(kn, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "business");
	b = run_client(kn, h, 1, NULL, CACHEKEY_ADDR_IPV4, v4a, 4, "/any");
	ok(same_key(a, b) && same_cred(a, b), "include_uri off: the scope is left out too");
out:
	cachekey_free(k);
	cachekey_free(kn);
}

/* Lengths around the varint steps (127/128, 16383/16384) and values longer
 * than the 128-byte feed buffer: every pair that differs in one byte or one
 * length gets distinct keys and creds, and the same inputs the same ones
 * whether they pass through the buffer or go to SHA-256 directly. */
static void test_lengths(void)
{
	static const size_t lens[] = { 0, 1, 54, 55, 56, 63, 64, 127, 128, 129, 200, 16383, 16384 };
	static char v1[20000], v2[20000];
	struct cachekey *k = mk(1, 1, NULL, 0);
	struct out a, b, c;
	size_t i;

	memset(v1, 'a', sizeof(v1) - 1);
	memset(v2, 'a', sizeof(v2) - 1);
	for (i = 0; i < NHDR(lens); i++) {
		struct cachekey_hdr h1[] = { { "cookie", 6, v1, lens[i] } };
		struct cachekey_hdr h2[] = { { "cookie", 6, v1, lens[i] + 1 } };
		struct cachekey_hdr h3[] = { { "cookie", 6, v2, lens[i] } };

		a = run(k, h1, 1, NULL, "/p");
		b = run(k, h2, 1, NULL, "/p");
		ok(!same_key(a, b), "len %zu vs %zu: key differs", lens[i], lens[i] + 1);
		ok(!same_cred(a, b), "  cred differs");
		if (lens[i]) {
			v2[lens[i] - 1] = 'b';
			c = run(k, h3, 1, NULL, "/p");
			v2[lens[i] - 1] = 'a';
			ok(!same_key(a, c), "  last byte changed: key differs");
			ok(!same_cred(a, c), "  cred differs");
		}
		c = run(k, h1, 1, NULL, "/p");
		ok(same_key(a, c) && same_cred(a, c), "  same inputs: same key and cred");
		/* the URI at the same lengths: a long URI against a long header */
		a = run(k, h1, 1, NULL, v1 + sizeof(v1) - 1 - lens[i]);
		b = run(k, h1, 1, NULL, v1 + sizeof(v1) - 2 - lens[i]);
		ok(!same_key(a, b), "  URI one byte longer: key differs");
		ok(same_cred(a, b), "  cred ignores the URI");
	}
	cachekey_free(k);
}

/* ---- the digests against the documented encoding, hashed in one shot ---- */

struct enc {
	uint8_t b[1024];
	size_t n;
};

static void enc_put(struct enc *e, const void *p, size_t n)
{
	memcpy(e->b + e->n, p, n);
	e->n += n;
}

static void enc_u64(struct enc *e, uint8_t tag, uint64_t v)
{
	e->b[e->n++] = tag;
	while (v >= 0x80) {
		e->b[e->n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	e->b[e->n++] = (uint8_t)v;
}

static void enc_field(struct enc *e, uint8_t tag, const void *p, size_t n)
{
	enc_u64(e, tag, p ? (uint64_t)n + 1 : 0);
	if (p)
		enc_put(e, p, n);
}

static void enc_sha(const struct enc *e, const uint8_t *tail, size_t tail_n, uint8_t out[32])
{
	struct enc t = *e;
	unsigned len = 32;

	if (tail_n)
		enc_put(&t, tail, tail_n);
	if (EVP_Digest(t.b, t.n, out, &len, EVP_sha256(), NULL) != 1)
		diag("EVP_Digest failed");
}

/* The unsalted, unscoped, unfiltered builder's prefix and one header. */
static void enc_request(struct enc *e, const char *name, const char *value, size_t value_len)
{
	static const char tag[] = "spoa-auth/cred/3";
	static const uint8_t zeros[64];
	uint8_t pad;

	e->n = 0;
	enc_put(e, tag, sizeof(tag));
	enc_field(e, 'S', NULL, 0);
	enc_field(e, 's', NULL, 0);
	enc_u64(e, 'F', UINT64_MAX);
	pad = (uint8_t)((64 - (e->n + 2) % 64) % 64);
	e->b[e->n++] = 'P';
	e->b[e->n++] = pad;
	enc_put(e, zeros, pad);
	enc_field(e, 'n', name, strlen(name));
	enc_field(e, 'v', value, value_len);
	e->b[e->n++] = 'E';
}

static void test_encoding_reference(void)
{
	static const uint8_t ip[4] = { 192, 0, 2, 7 };
	static const size_t vals[] = { 1, 9, 20, 40, 60, 120, 130, 300 };
	char value[300], uri[160];
	struct cachekey *k = mk(1, 1, NULL, 0);
	size_t vi, ui, bad_key = 0, bad_cred = 0, bad_client = 0, cases = 0;

	if (!k)
		return;
	memset(value, 'v', sizeof(value));
	for (ui = 0; ui < sizeof(uri); ui++)
		uri[ui] = (char)('a' + ui % 26);
	for (vi = 0; vi < sizeof(vals) / sizeof(vals[0]); vi++) {
		for (ui = 0; ui <= sizeof(uri); ui++) {
			struct cachekey_hdr h = { "Cookie", 6, value, vals[vi] };
			uint8_t key[32], cred[32], want[32];
			struct enc e, t;

			enc_request(&e, "cookie", value, vals[vi]);
			/* cachekey_end(): flags, 'x' xff, 'u' uri; cred immediate */
			cachekey_compute(k, &h, 1, "10.0.0.1", 8, uri, ui, key, cred);
			enc_sha(&e, (const uint8_t *)"C", 1, want);
			bad_cred += memcmp(cred, want, 32) != 0;
			t = e;
			t.b[t.n++] = 0x03;
			enc_field(&t, 'x', "10.0.0.1", 8);
			enc_field(&t, 'u', uri, ui);
			enc_sha(&t, NULL, 0, want);
			bad_key += memcmp(key, want, 32) != 0;
			/* cachekey_end_client() (the exchange's path): cred deferred */
			cachekey_begin(k);
			cachekey_header(k, "Cookie", 6, value, vals[vi]);
			memset(cred, 0, sizeof(cred));
			cachekey_end_client(k, NULL, 0, CACHEKEY_ADDR_IPV4, ip, 4, uri, ui, key, NULL);
			t = e;
			t.b[t.n++] = 0x03;
			enc_field(&t, 'y', NULL, 0);
			enc_field(&t, CACHEKEY_ADDR_IPV4, ip, 4);
			enc_field(&t, 'u', uri, ui);
			enc_sha(&t, NULL, 0, want);
			bad_client += memcmp(key, want, 32) != 0;
			cachekey_cred(k, cred);
			enc_sha(&e, (const uint8_t *)"C", 1, want);
			bad_cred += memcmp(cred, want, 32) != 0;
			cases++;
		}
	}
	ok(bad_key == 0, "key == one-shot SHA-256 of the encoding (%zu of %zu differ)", bad_key,
	   cases);
	ok(bad_client == 0, "client-input key == one-shot SHA-256 (%zu of %zu differ)", bad_client,
	   cases);
	ok(bad_cred == 0, "cred, immediate and deferred, == one-shot SHA-256 (%zu differ)",
	   bad_cred);
	cachekey_free(k);
}

int main(void)
{
	test_default_key();
	test_boundaries();
	test_lengths();
	test_options();
	test_cookie_filter();
	test_salt_scope();
	test_incremental();
	test_client_inputs();
	test_scope_key();
	test_bad_opts();
	test_cookie_uncertain();
	test_cookie_property();
	test_encoding_reference();
	return done_testing();
}
