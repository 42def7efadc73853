/*
 * hex.h: one hexadecimal digit, for the parsers that decode %XX escapes
 * (form bodies, cookie names) and JSON \uXXXX escapes (JWT payloads), and
 * the hex form of a digest (fleet names, HAProxy's L1 session hash).
 * W3C trace context, which allows lower case only, keeps its own (trace.c).
 */
#ifndef SPOA_HEX_H
#define SPOA_HEX_H

#include <stddef.h>

/* The value of the hex digit <c> (either case), or -1 if it is none. */
static inline int hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Writes the <n> bytes at <p> as 2 * <n> hex digits (upper case if <upper>)
 * and a NUL into <out>, which has room for 2 * <n> + 1. Never fails. */
static inline void hex_encode(char *out, const unsigned char *p, size_t n, int upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = 0;
}

#endif /* SPOA_HEX_H */
