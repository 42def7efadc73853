/*
 * trace.h: W3C Trace Context (traceparent, tracestate) parsing and
 * formatting.
 *
 *   traceparent: 00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>
 *
 * Strict: lower-case hex only, trace-id and parent-id not all zeros,
 * version not ff; version 00 is exactly 55 characters; a later version may
 * carry more after a '-' at offset 55, which is ignored (only the 00 fields
 * are understood, and re-emitted as version 00). Anything else is refused:
 * the caller then drops it, so a malformed value is never forwarded.
 *
 * Pure: no allocation, no I/O, no randomness (the caller passes random bytes
 * to trace_generate() and trace_new_span()). Never logs.
 */
#ifndef SPOA_TRACE_H
#define SPOA_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define TRACE_ID_HEX 32
#define TRACE_SPAN_HEX 16
#define TRACE_PARENT_LEN 55                 /* version 00 */
#define TRACE_STATE_MAX 512                 /* W3C: at least 512 must pass */
#define TRACE_RANDOM_LEN 24                 /* bytes trace_generate() takes */

struct trace_ctx {
	char trace_id[TRACE_ID_HEX + 1];     /* lower-case hex, NUL-terminated */
	char parent_id[TRACE_SPAN_HEX + 1];
	uint8_t flags;
};

/* Parses traceparent <s>/<len> into <out>. Returns 0, or -1 if it is not a
 * valid traceparent (then <out> is unspecified). */
int trace_parse(const char *s, size_t len, struct trace_ctx *out);

/* Returns 1 if tracestate <s>/<len> may be forwarded: 1..TRACE_STATE_MAX
 * bytes of printable ASCII (space and tab allowed, no control characters),
 * at most 32 comma-separated members, each "key=value" with a non-empty
 * key. Else 0. */
int trace_state_ok(const char *s, size_t len);

/* Writes "00-<trace-id>-<parent-id>-<flags>" and a NUL into <out>
 * (TRACE_PARENT_LEN + 1 bytes). Returns TRACE_PARENT_LEN. */
size_t trace_format(const struct trace_ctx *t, char out[TRACE_PARENT_LEN + 1]);

/* Replaces the parent-id of <t> with one made of <rnd> (8 bytes), for a hop
 * that is a span of its own. An all-zero <rnd> is nudged to stay valid. */
void trace_new_span(struct trace_ctx *t, const uint8_t rnd[8]);

/* Fills <t> with a new trace from <rnd> (TRACE_RANDOM_LEN bytes: 16 for the
 * trace-id, 8 for the parent-id), flags 00 (not sampled: the agent records
 * nothing; sampling is left to whoever does). */
void trace_generate(struct trace_ctx *t, const uint8_t rnd[TRACE_RANDOM_LEN]);

#endif /* SPOA_TRACE_H */
