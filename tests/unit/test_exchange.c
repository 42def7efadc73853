/*
 * test_exchange.c: unit tests of the request an exchange sends
 * (agent/exchange.c exchange_request_build(), the path exchange_notify()
 * takes from NOTIFY arguments to the user-service call).
 *
 * What it does: encodes NOTIFY arguments with spop.c's writers and checks the
 * URL (request_uri percent-encoded, '?' or '&' after the configured URL), the
 * header lines (forwarded ones in argument order under the argument's name,
 * X-Forwarded-For from xff and src, traceparent/tracestate only from a valid
 * traceparent), a request bigger than the inline buffer, malformed arguments
 * refused; and that the cache key and the request come from the same slices:
 * an argument that is not forwarded changes neither, a dropped unsafe value
 * changes neither, a changed credential changes both; the key builder made
 * from a cfg by cachekey_from_cfg() (the workers' and the admin endpoint's):
 * two builders of one cfg agree, another user-service URL (the key's scope)
 * or cache-key-uri changes the key. Argument classification itself is
 * test_args.c's.
 *
 * What it never does: open a socket, start a worker or a loop; I/O beyond
 * loading a configuration from arguments.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachekey.h"
#include "cfg.h"
#include "exchange.h"
#include "spop.h"
#include "tap.h"

#define ENC_SIZE 16384
#define BIG_COOKIE 6000                 /* more than the exchange's inline buffer */
#define MAX_LINES 16
#define LINE_MAX_LEN (BIG_COOKIE + 64)

struct enc {
	uint8_t buf[ENC_SIZE];
	uint8_t *p;
	unsigned n;
};

static void enc_init(struct enc *e)
{
	e->p = e->buf;
	e->n = 0;
}

static void enc_str(struct enc *e, const char *name, const char *v, size_t vlen)
{
	struct spop_data d;

	d.type = SPOP_T_STR;
	d.u.str.ptr = v;
	d.u.str.len = vlen;
	spop_put_str(&e->p, e->buf + sizeof(e->buf), name, strlen(name));
	spop_put_data(&e->p, e->buf + sizeof(e->buf), &d);
	e->n++;
}

#define ARG(e, name, v) enc_str((e), (name), (v), strlen(v))

static void enc_ipv4(struct enc *e, const char *name, const uint8_t ip[4])
{
	struct spop_data d;

	d.type = SPOP_T_IPV4;
	memcpy(d.u.ip, ip, 4);
	spop_put_str(&e->p, e->buf + sizeof(e->buf), name, strlen(name));
	spop_put_data(&e->p, e->buf + sizeof(e->buf), &d);
	e->n++;
}

/* What one build produced: copies of the URL and lines. */
struct req {
	int calls;
	char url[LINE_MAX_LEN];
	char lines[MAX_LINES][LINE_MAX_LEN];
	size_t n;
	uint8_t key[CACHEKEY_LEN];
};

static void req_copy(void *arg, const char *url, const char *const *lines, size_t n)
{
	struct req *r = arg;

	r->calls++;
	snprintf(r->url, sizeof(r->url), "%s", url);
	r->n = n;
	for (size_t i = 0; i < n && i < MAX_LINES; i++)
		snprintf(r->lines[i], sizeof(r->lines[i]), "%s", lines[i]);
}

static int build(const struct cfg *cfg, struct cachekey *ck, const struct enc *e, struct req *r)
{
	memset(r, 0, sizeof(*r));
	return exchange_request_build(cfg, ck, e->buf, e->p, e->n, r->key, req_copy, r);
}

static int same_request(const struct req *a, const struct req *b)
{
	if (strcmp(a->url, b->url) != 0 || a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->lines[i], b->lines[i]) != 0)
			return 0;
	return 1;
}

static struct cfg *load(int argc, char **argv)
{
	char err[256];
	struct cfg *c = cfg_load(NULL, argc, argv, err, sizeof(err));

	if (!c) {
		fprintf(stderr, "cfg: %s\n", err);
		exit(2);
	}
	return c;
}

static void test_url(struct cachekey *ck)
{
	static char *plain[] = { "--user-service-url", "http://u.test/check" };
	static char *query[] = { "--user-service-url", "http://u.test/check?app=1" };
	static char *open_q[] = { "--user-service-url", "http://u.test/check?" };
	struct cfg *c1 = load(2, plain), *c2 = load(2, query), *c3 = load(2, open_q);
	struct enc e;
	struct req r;

	enc_init(&e);
	ARG(&e, "uri", "/a b?x=1&y=\xc3\xa9~._-");
	is_int(build(c1, ck, &e, &r), 0, "url: built");
	is_int(r.calls, 1, "url: one callback");
	ok(strcmp(r.url, "http://u.test/check?request_uri=%2Fa%20b%3Fx%3D1%26y%3D%C3%A9~._-") == 0,
	   "url: request_uri percent-encoded after '?' (%s)", r.url);
	build(c2, ck, &e, &r);
	ok(strcmp(r.url, "http://u.test/check?app=1&request_uri=%2Fa%20b%3Fx%3D1%26y%3D%C3%A9~._-")
	   == 0, "url: '&' after a query (%s)", r.url);
	build(c3, ck, &e, &r);
	ok(strncmp(r.url, "http://u.test/check?request_uri=", 32) == 0,
	   "url: nothing added after a final '?' (%s)", r.url);
	enc_init(&e);
	ARG(&e, "cookie", "a=1");
	build(c1, ck, &e, &r);
	ok(strcmp(r.url, "http://u.test/check?request_uri=") == 0, "url: no uri, empty value (%s)",
	   r.url);
	cfg_put(c1);
	cfg_put(c2);
	cfg_put(c3);
}

static void test_lines(const struct cfg *cfg, struct cachekey *ck)
{
	static const uint8_t ip[4] = { 10, 1, 2, 3 };
	static const char tp[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
	struct enc e;
	struct req r;
	char *big;

	enc_init(&e);
	ARG(&e, "Authorization", "Bearer t0k");
	ARG(&e, "x-other", "not forwarded");
	ARG(&e, "cookie", "sid=abc; theme=dark");
	ARG(&e, "xff", "192.0.2.7");
	enc_ipv4(&e, "src", ip);
	is_int(build(cfg, ck, &e, &r), 0, "lines: built");
	is_int((long long)r.n, 3, "lines: two forwarded + X-Forwarded-For");
	ok(strcmp(r.lines[0], "Authorization: Bearer t0k") == 0, "lines: argument's name and order"
	   " (%s)", r.lines[0]);
	ok(strcmp(r.lines[1], "cookie: sid=abc; theme=dark") == 0, "lines: cookie (%s)",
	   r.lines[1]);
	ok(strcmp(r.lines[2], "X-Forwarded-For: 192.0.2.7, 10.1.2.3") == 0,
	   "lines: xff, then src (%s)", r.lines[2]);

	enc_init(&e);
	ARG(&e, "cookie", "a=1\r\nX-Injected: 1");
	ARG(&e, "authorization", "Basic eA==");
	build(cfg, ck, &e, &r);
	is_int((long long)r.n, 1, "lines: a CR/LF value is not sent");
	ok(strcmp(r.lines[0], "authorization: Basic eA==") == 0, "lines: the safe one is (%s)",
	   r.lines[0]);

	enc_init(&e);
	ARG(&e, "traceparent", tp);
	ARG(&e, "tracestate", "k=v");
	build(cfg, ck, &e, &r);
	is_int((long long)r.n, 2, "trace: traceparent and tracestate");
	ok(strncmp(r.lines[0], "traceparent: 00-0af7651916cd43dd8448eb211c80319c-", 49) == 0,
	   "trace: same trace id (%s)", r.lines[0]);
	ok(strcmp(r.lines[1], "tracestate: k=v") == 0, "trace: state (%s)", r.lines[1]);
	enc_init(&e);
	ARG(&e, "traceparent", "00-zz");
	ARG(&e, "tracestate", "k=v");
	build(cfg, ck, &e, &r);
	is_int((long long)r.n, 0, "trace: nothing from an invalid traceparent");

	big = malloc(BIG_COOKIE + 1);
	if (!big)
		abort();
	memset(big, 'c', BIG_COOKIE);
	big[BIG_COOKIE] = 0;
	enc_init(&e);
	ARG(&e, "uri", "/big");
	ARG(&e, "cookie", big);
	is_int(build(cfg, ck, &e, &r), 0, "big: built (heap block)");
	ok(r.n == 1 && strlen(r.lines[0]) == BIG_COOKIE + strlen("cookie: ") &&
	   strncmp(r.lines[0], "cookie: ccc", 11) == 0, "big: whole line");
	ok(strstr(r.url, "request_uri=%2Fbig") != NULL, "big: url intact (%s)", r.url);
	free(big);

	enc_init(&e);
	ARG(&e, "cookie", "a=1");
	e.n++;                                  /* one argument more than encoded */
	is_int(build(cfg, ck, &e, &r), -1, "malformed: refused");
	is_int(r.calls, 0, "malformed: no request");
}

static void test_same_slices(const struct cfg *cfg, struct cachekey *ck)
{
	struct enc e;
	struct req base, r;

	enc_init(&e);
	ARG(&e, "uri", "/k");
	ARG(&e, "cookie", "sid=1");
	build(cfg, ck, &e, &base);

	enc_init(&e);
	ARG(&e, "uri", "/k");
	ARG(&e, "x-not-forwarded", "whatever");
	ARG(&e, "cookie", "sid=1");
	build(cfg, ck, &e, &r);
	ok(same_request(&base, &r), "unforwarded argument: same request");
	is_mem(r.key, sizeof(r.key), base.key, sizeof(base.key), "unforwarded argument: same key");

	enc_init(&e);
	ARG(&e, "uri", "/k");
	ARG(&e, "cookie", "sid=1");
	ARG(&e, "authorization", "x\ny");
	build(cfg, ck, &e, &r);
	ok(same_request(&base, &r), "dropped unsafe value: same request");
	is_mem(r.key, sizeof(r.key), base.key, sizeof(base.key), "dropped unsafe value: same key");

	enc_init(&e);
	ARG(&e, "uri", "/k");
	ARG(&e, "cookie", "sid=2");
	build(cfg, ck, &e, &r);
	ok(!same_request(&base, &r), "other credential: other request");
	ok(memcmp(r.key, base.key, sizeof(r.key)) != 0, "other credential: other key");

	enc_init(&e);
	ARG(&e, "uri", "/other");
	ARG(&e, "cookie", "sid=1");
	build(cfg, ck, &e, &r);
	ok(strcmp(r.url, base.url) != 0 && memcmp(r.key, base.key, sizeof(r.key)) != 0,
	   "other uri: other url and other key (uri in the key)");
}

/* Keys from cachekey_from_cfg(): the same cfg gives the same key in any
 * builder; the user-service URL (the scope) and cache-key-uri are in it. */
static void test_key_from_cfg(const struct cfg *cfg)
{
	static char *other_url[] = { "--user-service-url", "http://127.0.0.1:1/other" };
	static char *no_uri[] = { "--cache-key-uri", "off" };
	static const uint8_t salt[CACHEKEY_SALT_LEN] = { 7 };
	struct cfg *c2 = load(2, other_url), *c3 = load(2, no_uri);
	struct cachekey *a = cachekey_from_cfg(cfg, salt, NULL, 0);
	struct cachekey *b = cachekey_from_cfg(cfg, salt, NULL, 0);
	struct cachekey *u = cachekey_from_cfg(c2, salt, NULL, 0);
	struct cachekey *n = cachekey_from_cfg(c3, salt, NULL, 0);
	struct req ra, rb, ru, rn, rn2;
	struct enc e;

	ok(a && b && u && n, "key from cfg: builders made");
	if (!a || !b || !u || !n)
		goto out;
	enc_init(&e);
	ARG(&e, "uri", "/k");
	ARG(&e, "cookie", "sid=1");
	build(cfg, a, &e, &ra);
	build(cfg, b, &e, &rb);
	build(c2, u, &e, &ru);
	build(c3, n, &e, &rn);
	is_mem(ra.key, sizeof(ra.key), rb.key, sizeof(rb.key),
	       "key from cfg: two builders of one cfg agree");
	ok(memcmp(ra.key, ru.key, sizeof(ra.key)) != 0,
	   "key from cfg: another user-service URL, another key");
	enc_init(&e);
	ARG(&e, "uri", "/other");
	ARG(&e, "cookie", "sid=1");
	build(c3, n, &e, &rn2);
	is_mem(rn.key, sizeof(rn.key), rn2.key, sizeof(rn2.key),
	       "key from cfg: cache-key-uri off: the URI is not in the key");
out:
	cachekey_free(a);
	cachekey_free(b);
	cachekey_free(u);
	cachekey_free(n);
	cfg_put(c2);
	cfg_put(c3);
}

int main(void)
{
	static char *none[] = { NULL };
	struct cachekey_opts o = { 1, 1, NULL, 0, NULL, NULL, 0 };
	char err[256];
	struct cfg *cfg = load(0, none);
	struct cachekey *ck = cachekey_new(&o, err, sizeof(err));

	if (!ck) {
		fprintf(stderr, "cachekey: %s\n", err);
		return 2;
	}
	test_url(ck);
	test_lines(cfg, ck);
	test_same_slices(cfg, ck);
	test_key_from_cfg(cfg);
	cachekey_free(ck);
	cfg_put(cfg);
	return done_testing();
}
