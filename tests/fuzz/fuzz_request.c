/*
 * fuzz_request.c: libFuzzer target for the NOTIFY arguments -> user-service
 * request path (agent/exchange.c exchange_request_build(): args_classify(),
 * the trace scan, the URL and the header lines, the cache key).
 *
 * What it does: takes the first input byte as an argument count and the rest
 * as encoded SPOP arguments (the fuzz_args input format), builds the request
 * twice under a configuration that forwards the default headers plus one of
 * its own and generates trace context, and checks every line that would
 * reach the user service: "Name: value" with a token name that is forwarded
 * (or X-Forwarded-For, traceparent, tracestate), no CR, LF or NUL anywhere in
 * it (a NUL would end the C string early: each line must run exactly to the
 * next one), at most one forwarded line per argument, a URL without control
 * bytes or spaces; the same arguments give the same key and the same lines.
 *
 * What it never does: I/O beyond stderr; a failed invariant calls abort() so
 * libFuzzer records the input.
 *
 * Build: make fuzz (FUZZ_CC, -fsanitize=fuzzer,address,undefined).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cachekey.h"
#include "cfg.h"
#include "exchange.h"
#include "fuzz.h"

#define FUZZ_MAX_LINES (ARGS_MAX + 3)
#define FUZZ_SNAPSHOT 8192              /* bytes of the first build's lines kept */

static struct cfg *fuzz_cfg;
static struct cachekey *fuzz_ck;

struct fuzz_seen {
	unsigned nargs;
	size_t n;
	char text[FUZZ_SNAPSHOT];       /* url \n line \n line ...: the first build */
	size_t len;
	int truncated;
};

static int fuzz_tchar(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int fuzz_name_is(const char *line, size_t nlen, const char *want)
{
	return strlen(want) == nlen && strncasecmp(line, want, nlen) == 0;
}

static void fuzz_snapshot(struct fuzz_seen *s, const char *str)
{
	size_t n = strlen(str);

	if (s->len + n + 1 > sizeof(s->text)) {
		s->truncated = 1;
		return;
	}
	memcpy(s->text + s->len, str, n);
	s->len += n;
	s->text[s->len++] = '\n';
}

/* Checks one built request; snapshots it into <arg>. */
static void fuzz_check(void *arg, const char *url, const char *const *lines, size_t n)
{
	struct fuzz_seen *s = arg;
	size_t forwarded = 0;

	CHECK(n <= FUZZ_MAX_LINES);
	s->n = n;
	s->len = 0;
	s->truncated = 0;
	fuzz_snapshot(s, url);
	for (size_t i = 0; i < n; i++) {
		const char *l = lines[i], *colon = strchr(l, ':');
		const char *next = i + 1 < n ? lines[i + 1] : url;
		size_t nlen, len = strlen(l);

		/* Contiguous lines: an embedded NUL would make this one shorter. */
		CHECK(l + len + 1 == next);
		CHECK(!strchr(l, '\r') && !strchr(l, '\n'));
		CHECK(colon && colon > l && colon[1] == ' ');
		nlen = (size_t)(colon - l);
		for (size_t j = 0; j < nlen; j++)
			CHECK(fuzz_tchar((unsigned char)l[j]));
		if (fuzz_name_is(l, nlen, "X-Forwarded-For") || fuzz_name_is(l, nlen, "traceparent") ||
		    fuzz_name_is(l, nlen, "tracestate"))
			continue;
		CHECK(cfg_forwards_header(fuzz_cfg, l, nlen));
		forwarded++;
		fuzz_snapshot(s, l);
	}
	CHECK(forwarded <= s->nargs);
	for (const char *u = url; *u; u++)
		CHECK((unsigned char)*u > ' ' && (unsigned char)*u < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fuzz_seen a, b;
	uint8_t k1[CACHEKEY_LEN], k2[CACHEKEY_LEN];
	char err[256];
	int r1, r2;

	if (!fuzz_cfg) {
		static char *argv[] = {
			"--forward-headers", "cookie authorization x-example-authorization x-fuzz",
			"--trace-generate", "on",
		};
		struct cachekey_opts o = { 1, 1, NULL, 0, NULL, NULL, 0 };

		fuzz_cfg = cfg_load(NULL, (int)(sizeof(argv) / sizeof(argv[0])), argv, err, sizeof(err));
		if (!fuzz_cfg) {
			fprintf(stderr, "fuzz_request: %s\n", err);
			abort();
		}
		fuzz_ck = cachekey_new(&o, err, sizeof(err));
		if (!fuzz_ck)
			abort();
	}
	if (size < 1)
		return 0;
	a.nargs = b.nargs = data[0];
	r1 = exchange_request_build(fuzz_cfg, fuzz_ck, data + 1, data + size, data[0], k1,
	                            fuzz_check, &a);
	r2 = exchange_request_build(fuzz_cfg, fuzz_ck, data + 1, data + size, data[0], k2,
	                            fuzz_check, &b);
	CHECK(r1 == r2);
	if (r1 != 0)
		return 0;
	/* Same arguments, same key and same forwarded lines (the trace context
	 * is generated anew each time: not compared). */
	CHECK(memcmp(k1, k2, sizeof(k1)) == 0);
	CHECK(a.n == b.n && a.truncated == b.truncated);
	if (!a.truncated)
		CHECK(a.len == b.len && memcmp(a.text, b.text, a.len) == 0);
	return 0;
}
