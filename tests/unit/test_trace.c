/*
 * test_trace.c: unit tests of the W3C Trace Context parser and formatter
 * (agent/trace.c).
 *
 * What it does: valid traceparents (version 00, a later version with more
 * fields), every kind of malformed one (length, separators, upper case,
 * zero ids, version ff, non-hex flags), round trips through trace_format(),
 * new spans and generated traces (never all zeros), tracestate bounds.
 *
 * What it never does: depend on anything but trace.c.
 */
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "trace.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parses(const char *s)
{
	struct trace_ctx t;

	return trace_parse(s, strlen(s), &t) == 0;
}

static void test_parse(void)
{
	struct trace_ctx t;
	char out[TRACE_PARENT_LEN + 1];

	ok(trace_parse(TP, strlen(TP), &t) == 0, "the W3C example parses");
	ok(strcmp(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736") == 0, "trace-id");
	ok(strcmp(t.parent_id, "00f067aa0ba902b7") == 0, "parent-id");
	is_int(t.flags, 1, "flags");
	is_int(trace_format(&t, out), TRACE_PARENT_LEN, "format length");
	ok(strcmp(out, TP) == 0, "round trip: %s", out);

	ok(parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), "flags 00");
	ok(parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff"), "flags ff");
	ok(parses("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"),
	   "a later version may carry more fields");
	ok(parses("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
	   "a later version of exactly 55");
	ok(trace_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", 58, &t) == 0 &&
	   trace_format(&t, out) && strncmp(out, "00-", 3) == 0, "re-emitted as version 00");

	ok(!parses(""), "empty");
	ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"), "short");
	ok(!parses(TP "0"), "version 00 with one more char");
	ok(!parses(TP "-x"), "version 00 with more fields");
	ok(!parses("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
	   "later version: more must follow a '-'");
	ok(!parses("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "version ff");
	ok(!parses("0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "bad version hex");
	ok(!parses("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "upper-case trace-id");
	ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01"), "upper-case parent-id");
	ok(!parses("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), "zero trace-id");
	ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), "zero parent-id");
	ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x"), "bad flags");
	ok(!parses("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "bad separator 1");
	ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01"), "bad separator 2");
	ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01"), "bad separator 3");
	ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01"), "shifted separator");
	ok(!parses(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "leading space");
	ok(trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX: y", 60, &t) < 0,
	   "CR LF after a valid value");
	{
		char nul[] = TP;

		nul[10] = 0;
		ok(trace_parse(nul, sizeof(nul) - 1, &t) < 0, "NUL inside");
	}
	ok(trace_parse(NULL, 0, &t) < 0, "NULL");
}

static void test_spans(void)
{
	static const uint8_t zero[TRACE_RANDOM_LEN];
	static const uint8_t rnd[TRACE_RANDOM_LEN] = {
		0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98,
		0x76, 0x54, 0x32, 0x10, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18,
	};
	struct trace_ctx t;
	char out[TRACE_PARENT_LEN + 1];

	trace_parse(TP, strlen(TP), &t);
	trace_new_span(&t, rnd);
	trace_format(&t, out);
	ok(strcmp(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-0123456789abcdef-01") == 0,
	   "new span keeps trace-id and flags: %s", out);
	trace_new_span(&t, zero);
	trace_format(&t, out);
	ok(parses(out), "a zero random span is nudged to a valid one: %s", out);

	trace_generate(&t, rnd);
	trace_format(&t, out);
	ok(strcmp(out, "00-0123456789abcdeffedcba9876543210-a1b2c3d4e5f60718-00") == 0,
	   "generated: %s", out);
	trace_generate(&t, zero);
	trace_format(&t, out);
	ok(parses(out), "generated from zeros still valid: %s", out);
}

static void test_state(void)
{
	char big[TRACE_STATE_MAX + 2];
	char many[400];
	size_t n = 0;

	ok(trace_state_ok("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", 38), "W3C example");
	ok(trace_state_ok("a=1, b=2 ,,c=3", 14), "spaces and an empty member");
	ok(trace_state_ok("vendor@tenant=x", 15), "multi-tenant key");
	ok(!trace_state_ok("", 0), "empty");
	ok(!trace_state_ok("a=1\r\nX: y", 9), "CR LF");
	ok(!trace_state_ok("a=\x01", 3), "control character");
	ok(!trace_state_ok("a=\xc3\xa9", 4), "non-ASCII");
	ok(!trace_state_ok("=x", 2), "empty key");
	ok(!trace_state_ok("a=1,novalue", 11), "member without '='");
	memset(big, 'x', sizeof(big));
	big[0] = 'k';
	big[1] = '=';
	ok(trace_state_ok(big, TRACE_STATE_MAX), "%d bytes", TRACE_STATE_MAX);
	ok(!trace_state_ok(big, TRACE_STATE_MAX + 1), "%d bytes", TRACE_STATE_MAX + 1);
	for (int i = 0; i < 33; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "%sk%d=v", i ? "," : "", i);
	ok(!trace_state_ok(many, n), "33 members");
	ok(trace_state_ok(many, (size_t)(strrchr(many, ',') - many)), "32 members");
}

int main(void)
{
	test_parse();
	test_spans();
	test_state();
	return done_testing();
}
