/*
 * varname.h: HAProxy variable-name helpers.
 *
 * What it does: checks a variable name against HAProxy's charset
 * [A-Za-z0-9._] and its 63-character limit for "txn.<prefix>.<name>", and
 * turns HTTP header names and claim keys into names of that charset.
 *
 * What it never does: allocate, keep state, or depend on the locale (ASCII
 * only; every byte outside the charset, NUL and 8-bit bytes included, is
 * treated as invalid).
 */
#ifndef SPOA_VARNAME_H
#define SPOA_VARNAME_H

#include <stddef.h>

/* Longest full variable name HAProxy keeps: "<scope>.<prefix>.<name>" is
 * built in a 64-byte buffer, NUL included. */
#define VARNAME_FULL_MAX  63

/* Checks the bare name <name>/<len> (no scope, no prefix) that the agent
 * sets in scope txn under the SPOE var-prefix <prefix> (NULL is ""). Returns
 * 0 if <len> > 0, every byte is in [A-Za-z0-9._] and
 * strlen("txn.") + strlen(<prefix>) + 1 + <len> <= 63; -1 otherwise. */
int varname_check(const char *prefix, const char *name, size_t len);

/* Writes into <out> (<outsz> bytes) the variable-name form of the header
 * name <hdr>/<len>: ASCII lowercased, '-' and every byte outside [a-z0-9._]
 * mapped to '_'; NUL-terminated. Returns the name length, or 0 (and <out>
 * untouched) if <len> is 0 or <len> + 1 > <outsz>.
 * "X-User-Id" gives "x_user_id". */
size_t varname_from_header(char *out, size_t outsz, const char *hdr, size_t len);

/* Same for a claim key: case kept, every byte outside [A-Za-z0-9._] mapped to
 * '_'; NUL-terminated. Returns the length, or 0 (and <out> untouched) if
 * <len> is 0 or <len> + 1 > <outsz>. */
size_t varname_sanitize(char *out, size_t outsz, const char *key, size_t len);

#endif /* SPOA_VARNAME_H */
