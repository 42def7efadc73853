/*
 * fuzz_fleetval.c: libFuzzer target over the decoding of stored decisions
 * (agent/fleetval.c), the bytes an agent reads back from Redis.
 *
 * Two inputs per run: the raw bytes as a value (whatever Redis, or whoever
 * wrote to it, returned), and the same bytes taken as a decision body and
 * sealed with the fuzzer's key, so that the checks behind the seal are
 * reached too. Invariants: a value decodes only to well-formed, non-empty
 * actions within the bound; a sealed body decodes to exactly what went in;
 * one flipped byte never decodes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decision.h"
#include "fleetval.h"
#include "fuzz.h"
#include "spop.h"

#define FUZZ_MAX_ACTIONS 4096
#define FUZZ_NOW 1700000000000ull

static struct fleetval_keys keys;
static int keys_ok;
static const char fuzz_name[] = "spoa-auth:v:{fuzz}name";

static void fuzz_check_actions(const struct fleetval *v)
{
	const uint8_t *p = v->actions, *end = v->actions + v->actions_len;
	struct spop_action a;
	int r, n = 0;

	CHECK(v->actions_len > 0 && v->actions_len <= FUZZ_MAX_ACTIONS);
	while ((r = spop_action_next(&p, end, &a)) == 1)
		n++;
	CHECK(r == 0 && n > 0);
	CHECK(v->status >= 0 && v->status <= 999);
	CHECK(v->outcome >= 0 && v->outcome < DECISION_OUTCOME_ENTRIES);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t nonce[FLEETVAL_NONCE_LEN] = { 0 };
	struct fleetval v, in;
	enum fleetval_res res;
	uint8_t *plain, *val;
	long vlen;

	if (!keys_ok) {
		static const char secret[] = "fuzz secret, at least thirty-two bytes";

		CHECK(fleetval_keys_derive(&keys, (const uint8_t *)secret, strlen(secret)) == 0);
		keys_ok = 1;
	}
	/* 1: the bytes as a stored value */
	plain = malloc(size ? size : 1);
	CHECK(plain);
	res = fleetval_decode(&keys, fuzz_name, strlen(fuzz_name), data, size, FUZZ_NOW,
	                      FUZZ_MAX_ACTIONS, plain, &v);
	if (res != FLEETVAL_BAD)
		fuzz_check_actions(&v);
	free(plain);

	/* 2: the bytes as a body: 8 expiry, 2 status, 1 outcome, then actions */
	if (size < 11 || size - 11 > FUZZ_MAX_ACTIONS)
		return 0;
	in.expires_ms = 0;
	for (int i = 0; i < 8; i++)
		in.expires_ms = in.expires_ms << 8 | data[i];
	in.status = (data[8] << 8 | data[9]) % 1000;
	in.outcome = data[10] % DECISION_OUTCOME_ENTRIES;
	in.claims_skipped = data[0];
	in.l1_until_ms = in.expires_ms >> (data[1] & 63);
	in.actions = data + 11;
	in.actions_len = size - 11;
	val = malloc(fleetval_size(in.actions_len));
	plain = malloc(fleetval_size(in.actions_len));
	CHECK(val && plain);
	vlen = fleetval_encode(&keys, fuzz_name, strlen(fuzz_name), nonce, &in, val);
	CHECK(vlen == (long)fleetval_size(in.actions_len));
	res = fleetval_decode(&keys, fuzz_name, strlen(fuzz_name), val, (size_t)vlen, FUZZ_NOW,
	                      FUZZ_MAX_ACTIONS, plain, &v);
	if (res != FLEETVAL_BAD) {
		fuzz_check_actions(&v);
		CHECK(v.expires_ms == in.expires_ms && v.status == in.status &&
		      v.outcome == in.outcome && v.claims_skipped == in.claims_skipped &&
		      v.l1_until_ms == in.l1_until_ms);
		CHECK(v.actions_len == in.actions_len &&
		      memcmp(v.actions, in.actions, in.actions_len) == 0);
		CHECK((res == FLEETVAL_EXPIRED) == (in.expires_ms <= FUZZ_NOW));
		val[data[1] % vlen] ^= 0x40;
		CHECK(fleetval_decode(&keys, fuzz_name, strlen(fuzz_name), val, (size_t)vlen,
		                      FUZZ_NOW, FUZZ_MAX_ACTIONS, plain, &v) == FLEETVAL_BAD);
	}
	free(val);
	free(plain);
	return 0;
}
