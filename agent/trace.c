/*
 * trace.c: W3C Trace Context, see trace.h.
 */
#include <string.h>

#include "trace.h"

#define TRACE_MAX_MEMBERS 32

static int trace_hex_val(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;  /* upper case is invalid too */
}

/* <n> lower-case hex digits at <s>, copied to <out> (NUL-terminated).
 * Returns 0, -1 on a bad digit, -2 if all are zero. */
static int trace_hex_field(const char *s, size_t n, char *out)
{
	int nonzero = 0;

	for (size_t i = 0; i < n; i++) {
		if (trace_hex_val(s[i]) < 0)
			return -1;
		nonzero |= s[i] != '0';
		out[i] = s[i];
	}
	out[n] = 0;
	return nonzero ? 0 : -2;
}

int trace_parse(const char *s, size_t len, struct trace_ctx *out)
{
	char ver[3], flags[3];

	if (!s || len < TRACE_PARENT_LEN)
		return -1;
	/* version "-" trace-id "-" parent-id "-" flags */
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return -1;
	if (trace_hex_field(s, 2, ver) == -1 || strcmp(ver, "ff") == 0)
		return -1;
	if (strcmp(ver, "00") == 0 ? len != TRACE_PARENT_LEN
	                           : len > TRACE_PARENT_LEN && s[TRACE_PARENT_LEN] != '-')
		return -1;
	if (trace_hex_field(s + 3, TRACE_ID_HEX, out->trace_id) < 0)
		return -1;
	if (trace_hex_field(s + 36, TRACE_SPAN_HEX, out->parent_id) < 0)
		return -1;
	if (trace_hex_field(s + 53, 2, flags) == -1)
		return -1;
	out->flags = (uint8_t)(trace_hex_val(flags[0]) << 4 | trace_hex_val(flags[1]));
	return 0;
}

int trace_state_ok(const char *s, size_t len)
{
	unsigned members = 1;
	int key_len = 0, has_eq = 0;

	if (!s || len == 0 || len > TRACE_STATE_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if ((ch < 0x20 && ch != '\t') || ch > 0x7e)
			return 0;
		if (ch == ',') {
			/* empty members (",,") are allowed and ignored by W3C; a
			 * member with content needs "key=" */
			if (!has_eq && key_len > 0)
				return 0;
			if (++members > TRACE_MAX_MEMBERS)
				return 0;
			key_len = 0;
			has_eq = 0;
		} else if (ch == '=' && !has_eq) {
			if (key_len == 0)
				return 0;
			has_eq = 1;
		} else if (!has_eq && ch != ' ' && ch != '\t') {
			key_len++;
		}
	}
	return has_eq || key_len == 0;
}

static const char trace_hex[] = "0123456789abcdef";

static void trace_to_hex(const uint8_t *in, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = trace_hex[in[i] >> 4];
		out[2 * i + 1] = trace_hex[in[i] & 15];
	}
	out[2 * n] = 0;
}

size_t trace_format(const struct trace_ctx *t, char out[TRACE_PARENT_LEN + 1])
{
	memcpy(out, "00-", 3);
	memcpy(out + 3, t->trace_id, TRACE_ID_HEX);
	out[35] = '-';
	memcpy(out + 36, t->parent_id, TRACE_SPAN_HEX);
	out[52] = '-';
	out[53] = trace_hex[t->flags >> 4];
	out[54] = trace_hex[t->flags & 15];
	out[TRACE_PARENT_LEN] = 0;
	return TRACE_PARENT_LEN;
}

/* All-zero ids are invalid: make the last digit 1. */
static void trace_nonzero(char *hex, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (hex[i] != '0')
			return;
	hex[n - 1] = '1';
}

void trace_new_span(struct trace_ctx *t, const uint8_t rnd[8])
{
	trace_to_hex(rnd, TRACE_SPAN_HEX / 2, t->parent_id);
	trace_nonzero(t->parent_id, TRACE_SPAN_HEX);
}

void trace_generate(struct trace_ctx *t, const uint8_t rnd[TRACE_RANDOM_LEN])
{
	trace_to_hex(rnd, TRACE_ID_HEX / 2, t->trace_id);
	trace_nonzero(t->trace_id, TRACE_ID_HEX);
	trace_new_span(t, rnd + TRACE_ID_HEX / 2);
	t->flags = 0;
}
