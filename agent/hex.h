/*
 * hex.h: one hexadecimal digit, for the parsers that decode %XX escapes
 * (form bodies, cookie names) and JSON \uXXXX escapes (JWT payloads).
 * W3C trace context, which allows lower case only, keeps its own (trace.c).
 */
#ifndef SPOA_HEX_H
#define SPOA_HEX_H

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

#endif /* SPOA_HEX_H */
