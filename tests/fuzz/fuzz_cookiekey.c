/*
 * fuzz_cookiekey.c: libFuzzer target for the cache key's cookie filter
 * (agent/cachekey.c).
 *
 * What it does: splits the input at its first 0xff 0xfe pair into two Cookie
 * header values (or, without one, uses the input and the input with its kept
 * cookies' values unchanged but everything else dropped), computes the key
 * of each under the filter "sid", and when the keys are equal checks that
 * every reference parser of tests/unit/cookie_ref.h reads the same "sid"
 * (or the same absence) in both: two requests share a key only if every
 * reasonable parser sees the same credentials in them.
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

#include "cachekey.h"
#include "../unit/cookie_ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cachekey *fuzz_ck;

static int fuzz_key(const char *v, size_t n, uint8_t key[CACHEKEY_LEN])
{
	uint8_t cred[CACHEKEY_LEN];

	return cachekey_begin(fuzz_ck) < 0 || cachekey_header(fuzz_ck, "cookie", 6, v, n) < 0 ||
	       cachekey_end(fuzz_ck, NULL, 0, "/", 1, key, cred) < 0 ? -1 : 0;
}

static void fuzz_check(const char *a, size_t an, const char *b, size_t bn)
{
	uint8_t ka[CACHEKEY_LEN], kb[CACHEKEY_LEN];
	struct cookie_ref_val va, vb;

	if (fuzz_key(a, an, ka) < 0 || fuzz_key(b, bn, kb) < 0)
		abort();
	if (memcmp(ka, kb, CACHEKEY_LEN) != 0)
		return;
	for (int r = 0; r < COOKIE_REF_ENTRIES; r++) {
		cookie_ref_parse(r, a, an, "sid", &va);
		cookie_ref_parse(r, b, bn, "sid", &vb);
		if (!cookie_ref_same(&va, &vb)) {
			fprintf(stderr, "same key, %s parser reads different sid\n",
			        cookie_ref_names[r]);
			abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const f[] = { "sid" };
	const char *in = (const char *)data;
	size_t i;

	if (!fuzz_ck) {
		struct cachekey_opts o = { 1, 1, f, 1, NULL, NULL, 0 };
		char err[128];

		fuzz_ck = cachekey_new(&o, err, sizeof(err));
		if (!fuzz_ck)
			abort();
	}
	for (i = 0; i + 1 < size; i++)
		if (data[i] == 0xff && data[i + 1] == 0xfe)
			break;
	if (i + 1 < size) {
		fuzz_check(in, i, in + i + 2, size - i - 2);
		return 0;
	}
	/* One header: against the blank header and against "sid=<the first
	 * value the strict reader sees>", the two keys it most often meets. */
	fuzz_check(in, size, "", 0);
	{
		struct cookie_ref_val v;
		char buf[sizeof(v.buf) + 4];

		cookie_ref_parse(COOKIE_REF_SEMI_FIRST, in, size, "sid", &v);
		if (v.present && v.len <= sizeof(v.buf)) {
			memcpy(buf, "sid=", 4);
			memcpy(buf + 4, v.buf, v.len);
			fuzz_check(in, size, buf, v.len + 4);
		}
	}
	return 0;
}
