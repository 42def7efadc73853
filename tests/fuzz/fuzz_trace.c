/*
 * fuzz_trace.c: libFuzzer target for the request-derived parsers of the
 * agent's features: W3C Trace Context (agent/trace.c, input from any client)
 * and the subject of a JWT (agent/subject.c).
 *
 * What it does: feeds the input (1) to trace_parse(): an accepted value must
 * re-format to 55 characters that parse again to the same fields, and be
 * accepted as given only when it is exactly its formatting (version 00);
 * (2) to trace_state_ok(): an accepted value is printable and bounded;
 * (3) to subject_from_jwt() as a token, and base64url-encoded as a JWT
 * payload so the JSON walker sees raw bytes: a subject found is always
 * subject_ok().
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

#include "subject.h"
#include "trace.h"
#include "fuzz.h"


static void fuzz_traceparent(const char *s, size_t n)
{
	struct trace_ctx t, t2;
	char out[TRACE_PARENT_LEN + 1];

	if (trace_parse(s, n, &t) < 0)
		return;
	CHECK(n >= TRACE_PARENT_LEN);
	CHECK(trace_format(&t, out) == TRACE_PARENT_LEN && strlen(out) == TRACE_PARENT_LEN);
	CHECK(trace_parse(out, TRACE_PARENT_LEN, &t2) == 0);
	CHECK(strcmp(t.trace_id, t2.trace_id) == 0 && strcmp(t.parent_id, t2.parent_id) == 0);
	CHECK(t.flags == t2.flags);
	if (n == TRACE_PARENT_LEN && memcmp(s, "00", 2) == 0)
		CHECK(memcmp(s, out, TRACE_PARENT_LEN) == 0);
}

static void fuzz_tracestate(const char *s, size_t n)
{
	if (!trace_state_ok(s, n))
		return;
	CHECK(n >= 1 && n <= TRACE_STATE_MAX);
	for (size_t i = 0; i < n; i++)
		CHECK(s[i] == '\t' || (s[i] >= 0x20 && s[i] <= 0x7e));
}

static void fuzz_subject(const char *tok, size_t n)
{
	char out[SUBJECT_MAX + 1];
	int r = subject_from_jwt(tok, n, "sub", out);

	if (r >= 0)
		CHECK(r == (int)strlen(out) && subject_ok(out, (size_t)r));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char head[] = "eyJhbGciOiJIUzI1NiJ9.";  /* {"alg":"HS256"} */
	char *tok;
	size_t n;

	fuzz_traceparent((const char *)data, size);
	fuzz_tracestate((const char *)data, size);
	fuzz_subject((const char *)data, size);

	tok = malloc(sizeof(head) + 4 * (size / 3 + 1) + 8);
	if (!tok)
		return 0;
	memcpy(tok, head, sizeof(head) - 1);
	n = sizeof(head) - 1 + fuzz_b64url_enc(data, size, tok + sizeof(head) - 1);
	memcpy(tok + n, ".c2ln", 5);
	fuzz_subject(tok, n + 5);
	free(tok);
	return 0;
}
