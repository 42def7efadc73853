/*
 * fuzz_httpcc.c: libFuzzer target for the cache policy helpers
 * (agent/httpcc.c).
 *
 * What it does: feeds the input (1) to httpcc_parse() as a Cache-Control
 * value, (2) to httpcc_jwt_exp() as a response body, (3) base64url-encoded as
 * the payload of a JWT, so the JSON walker sees raw fuzzer bytes, and (4) to
 * httpcc_ttl() split into a status byte, a Cache-Control value and a body.
 * It checks the results stay in their documented ranges and agree with each
 * other: known flag bits only, clamped delta-seconds, enum results, no-store
 * and no-cache always mean 0, caps always hold, parsing is deterministic.
 *
 * What it never does: I/O or allocation beyond one scratch buffer per input;
 * a failed invariant calls abort() so libFuzzer records the input.
 *
 * Build: make fuzz (clang -fsanitize=fuzzer,address,undefined).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpcc.h"
#include "fuzz.h"


#define FUZZ_FLAGS (HTTPCC_F_MAX_AGE | HTTPCC_F_S_MAXAGE | HTTPCC_F_NO_STORE | \
                    HTTPCC_F_NO_CACHE | HTTPCC_F_PRIVATE | HTTPCC_F_PUBLIC | HTTPCC_F_INVALID)

static void fuzz_parse(const uint8_t *data, size_t size)
{
	struct httpcc h, h2;
	int r;

	r = httpcc_parse((const char *)data, size, &h);
	CHECK(r == 0 || r == -1);
	CHECK((h.flags & ~FUZZ_FLAGS) == 0);
	CHECK(h.max_age <= HTTPCC_DELTA_MAX && h.s_maxage <= HTTPCC_DELTA_MAX);
	CHECK((h.flags & HTTPCC_F_MAX_AGE) || h.max_age == 0);
	CHECK((h.flags & HTTPCC_F_S_MAXAGE) || h.s_maxage == 0);
	CHECK(httpcc_parse((const char *)data, size, &h2) == r);
	CHECK(memcmp(&h, &h2, sizeof(h)) == 0);
}

static void fuzz_jwt(const uint8_t *data, size_t size)
{
	static const char hdr[] = "eyJhbGciOiJub25lIn0.";
	int64_t exp = 0;
	char *tok;
	size_t n;
	int r;

	r = httpcc_jwt_exp((const char *)data, size, &exp);
	CHECK(r == HTTPCC_JWT_EXP || r == HTTPCC_JWT_NONE || r == HTTPCC_JWT_BAD);

	/* the input as a JWT payload: exact-size buffer so ASan sees overreads */
	tok = malloc(sizeof(hdr) + size / 3 * 4 + 8);
	if (!tok)
		return;
	memcpy(tok, hdr, sizeof(hdr) - 1);
	n = sizeof(hdr) - 1;
	n += fuzz_b64url_enc(data, size, tok + n);
	memcpy(tok + n, ".c2ln", 5);
	n += 5;
	r = httpcc_jwt_exp(tok, n, &exp);
	CHECK(r == HTTPCC_JWT_EXP || r == HTTPCC_JWT_NONE || r == HTTPCC_JWT_BAD);
	if (size == 0)
		CHECK(r == HTTPCC_JWT_NONE); /* empty payload: not JWT-shaped */
	else if (size == 1)
		CHECK(r == HTTPCC_JWT_BAD);  /* one byte cannot be a JSON object */
	free(tok);
}

static void fuzz_ttl(const uint8_t *data, size_t size)
{
	static const int statuses[] = { 200, 204, 301, 302, 400, 401, 403, 404, 408, 429, 500,
		                        503, 100, 0, -1, 299 };
	static const struct httpcc_policy pol = { 30000, 5000, 600000 };
	const char *cc, *body;
	size_t cc_len, body_len;
	struct httpcc h;
	uint32_t ttl;
	int status;

	if (size < 2)
		return;
	status = statuses[data[0] & 15];
	cc_len = data[1] <= size - 2 ? data[1] : size - 2;
	cc = (const char *)data + 2;
	body = cc + cc_len;
	body_len = size - 2 - cc_len;
	ttl = httpcc_ttl(&pol, status, (data[0] & 16) ? NULL : cc, cc_len, body, body_len,
	                 1700000000000LL);
	CHECK(ttl <= pol.max_ttl_ms);
	if (status < 200 || status >= 500 || status == 408 || status == 429)
		CHECK(ttl == 0);
	if (status >= 300)
		CHECK(ttl <= pol.deny_ttl_ms);
	if (!(data[0] & 16)) {
		httpcc_parse(cc, cc_len, &h);
		if (h.flags & (HTTPCC_F_NO_STORE | HTTPCC_F_NO_CACHE | HTTPCC_F_INVALID))
			CHECK(ttl == 0);
	} else if (status >= 200 && status < 300 && body_len == 0) {
		CHECK(ttl == pol.default_ttl_ms);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_parse(data, size);
	fuzz_jwt(data, size);
	fuzz_ttl(data, size);
	return 0;
}
