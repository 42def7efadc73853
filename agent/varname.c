/*
 * varname.c: HAProxy variable-name helpers (see varname.h).
 *
 * What it does: charset and length checks for "txn.<prefix>.<name>", and
 * mapping of header names and claim keys into that charset.
 *
 * What it never does: allocate, use the locale (<ctype.h> would make the
 * result depend on LC_CTYPE and is undefined for negative chars), or accept
 * a name HAProxy would silently truncate.
 */
#include <string.h>

#include "varname.h"

/* 1 if <c> is in HAProxy's variable-name charset [A-Za-z0-9._]. */
static int varname_is_valid_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_';
}

int varname_check(const char *prefix, const char *name, size_t len)
{
	size_t plen = prefix ? strlen(prefix) : 0, i;

	if (len == 0 || len > VARNAME_FULL_MAX)
		return -1;
	/* "txn." + prefix + "." + name */
	if (plen > VARNAME_FULL_MAX || 4 + plen + 1 + len > VARNAME_FULL_MAX)
		return -1;
	for (i = 0; i < len; i++)
		if (!varname_is_valid_char((unsigned char)name[i]))
			return -1;
	return 0;
}

size_t varname_from_header(char *out, size_t outsz, const char *hdr, size_t len)
{
	size_t i;

	if (len == 0 || outsz == 0 || len > outsz - 1)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)hdr[i];

		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		out[i] = varname_is_valid_char(c) ? (char)c : '_';
	}
	out[len] = '\0';
	return len;
}

size_t varname_sanitize(char *out, size_t outsz, const char *key, size_t len)
{
	size_t i;

	if (len == 0 || outsz == 0 || len > outsz - 1)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)key[i];

		out[i] = varname_is_valid_char(c) ? (char)c : '_';
	}
	out[len] = '\0';
	return len;
}
