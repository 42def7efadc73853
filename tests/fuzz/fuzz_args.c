/*
 * fuzz_args.c: libFuzzer target for the NOTIFY argument classification
 * (agent/args.c).
 *
 * What it does: takes the first input byte as an argument count and the rest
 * as encoded SPOP arguments, classifies them under the default configuration
 * (forward-headers cookie, authorization, x-example-authorization) and checks
 * what may reach a user-service request: every slice lies inside the input,
 * no forwarded header value, X-Forwarded-For or text address holds CR, LF
 * or NUL, only forwarded names are kept, at most one header per argument;
 * a decision scope kept is a scope name (1..ARGS_SCOPE_MAX of
 * [A-Za-z0-9._:-]) inside the input; the cache key of the result is
 * computable and deterministic.
 *
 * What it never does: I/O beyond stderr; a failed invariant calls abort() so
 * libFuzzer records the input.
 *
 * Build: make fuzz (clang -fsanitize=fuzzer,address,undefined).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cachekey.h"
#include "cfg.h"
#include "fuzz.h"


static struct cfg *fuzz_cfg;
static struct cachekey *fuzz_ck;
static struct args fuzz_a;

static int fuzz_inside(const void *p, size_t n, const uint8_t *lo, const uint8_t *hi)
{
	const uint8_t *q = p;

	return n == 0 || (q >= lo && q + n <= hi);
}

static int fuzz_clean(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] == '\r' || p[i] == '\n' || p[i] == 0)
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p, *end = data + size;
	uint8_t k1[CACHEKEY_LEN], k2[CACHEKEY_LEN], c1[CACHEKEY_LEN], c2[CACHEKEY_LEN];
	struct args *a = &fuzz_a;
	char err[256];

	if (!fuzz_cfg) {
		struct cachekey_opts o = { 1, 1, NULL, 0, NULL, NULL, 0 };

		fuzz_cfg = cfg_load(NULL, 0, NULL, err, sizeof(err));
		fuzz_ck = fuzz_cfg ? cachekey_new(&o, err, sizeof(err)) : NULL;
		if (!fuzz_ck)
			abort();
	}
	if (size < 1)
		return 0;
	p = data + 1;
	if (args_classify(a, fuzz_cfg, &p, end, data[0]) < 0)
		return 0;
	CHECK(p >= data + 1 && p <= end);
	CHECK(a->n_hdrs <= data[0]);
	for (size_t i = 0; i < a->n_hdrs; i++) {
		const struct args_hdr *h = &a->hdrs[i];

		CHECK(h->value && fuzz_clean(h->value, h->value_len));
		CHECK(h->name_len && cfg_forwards_header(fuzz_cfg, h->name, h->name_len));
		CHECK(fuzz_inside(h->name, h->name_len, data, end));
		CHECK(fuzz_inside(h->value, h->value_len, data, end));
	}
	if (a->xff)
		CHECK(a->xff_len && fuzz_clean(a->xff, a->xff_len) &&
		      fuzz_inside(a->xff, a->xff_len, data, end));
	if (a->uri)
		CHECK(fuzz_inside(a->uri, a->uri_len, data, end));
	if (a->scope)
		CHECK(a->scope_len >= 1 && a->scope_len <= ARGS_SCOPE_MAX &&
		      args_scope_ok(a->scope, a->scope_len) &&
		      fuzz_inside(a->scope, a->scope_len, data, end));
	else
		CHECK(a->scope_len == 0);
	CHECK(a->n_bad_scope <= data[0]);
	if (a->src_kind == CACHEKEY_ADDR_TEXT)
		CHECK(a->src_len <= ARGS_SRC_TEXT_MAX && fuzz_clean(a->src_text, a->src_len));
	CHECK(args_key(a, fuzz_ck, k1, c1) == 0 && args_key(a, fuzz_ck, k2, c2) == 0);
	CHECK(memcmp(k1, k2, sizeof(k1)) == 0 && memcmp(c1, c2, sizeof(c1)) == 0);
	return 0;
}
