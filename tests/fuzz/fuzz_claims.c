/*
 * fuzz_claims.c: libFuzzer target for claims_encode() (agent/claims.c).
 *
 * What it does: feeds the input as a msgpack document, once into a roomy
 * output buffer and once into a small one whose size comes from the input;
 * checks the return codes, that the cursor is restored on every error,
 * that the two runs agree (a run fits iff its output size allows it, with
 * identical bytes), and that every action written decodes back as a txn
 * set-var "claim.*" whose name passes varname_check().
 *
 * What it never does: I/O; a failed invariant calls abort().
 *
 * Build: make fuzz (clang -fsanitize=fuzzer,address,undefined).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claims.h"
#include "spop.h"
#include "varname.h"
#include "fuzz.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t big[1 << 20], small[3 + 256];
	uint8_t *p = big, *s;
	const uint8_t *q;
	size_t small_sz = size ? data[size - 1] : 0;
	unsigned skipped = 0, sk2 = 0;
	int r, r2, n = 0;
	struct spop_action a;

	r = claims_encode((const char *)data, size, "auth", &p, big + sizeof(big), &skipped);
	CHECK(r >= -2);
	if (size <= 16384)
		CHECK(r != -2);     /* at most ~40 output bytes per input pair */
	if (r < 0) {
		CHECK(p == big);
	} else {
		CHECK(p >= big && p <= big + sizeof(big));
		q = big;
		while (spop_action_next(&q, p, &a) == 1) {
			CHECK(a.type == SPOP_ACT_SET_VAR && a.scope == SPOP_SCOPE_TXN);
			CHECK(a.name.len > 6 && memcmp(a.name.ptr, "claim.", 6) == 0);
			CHECK(varname_check("auth", a.name.ptr, a.name.len) == 0);
			CHECK(a.value.type == SPOP_T_INT64 || a.value.type == SPOP_T_UINT64 ||
			      a.value.type == SPOP_T_BOOL || a.value.type == SPOP_T_STR ||
			      a.value.type == SPOP_T_BIN);
			if (a.value.type == SPOP_T_UINT64)
				CHECK(a.value.u.u64 > (uint64_t)INT64_MAX);
			if (a.value.type == SPOP_T_STR || a.value.type == SPOP_T_BIN)
				CHECK(a.value.u.str.len <= size);
			n++;
		}
		CHECK(q == p && n == r);
	}

	/* the same document into <small_sz> bytes, cursor not at the start */
	s = small + 3;
	r2 = claims_encode((const char *)data, size, "auth", &s, small + 3 + small_sz, &sk2);
	if (r < 0) {
		CHECK(r2 == r && s == small + 3);
	} else if ((size_t)(p - big) <= small_sz) {
		CHECK(r2 == r && sk2 == skipped && s - (small + 3) == p - big);
		CHECK(memcmp(small + 3, big, (size_t)(p - big)) == 0);
	} else {
		CHECK(r2 == -2 && s == small + 3);
	}
	return 0;
}
