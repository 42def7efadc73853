/*
 * subject.h: the subject of an allowed request (who it is), for per-user
 * rate limits and the like in HAProxy (variable txn.<prefix>.subject).
 *
 * Taken from a top-level string claim of the JWT the user service answered
 * with (subject-claim), or from a response header (subject-header). The
 * token is not verified here: it comes from the trusted user service, and
 * the subject only keys counters; the business service still verifies it.
 *
 * Pure: no allocation, no I/O, no logging. A subject is at most SUBJECT_MAX
 * bytes of visible ASCII (0x21..0x7e); anything else is refused, so nothing
 * odd reaches a stick table key or a log.
 */
#ifndef SPOA_SUBJECT_H
#define SPOA_SUBJECT_H

#include <stddef.h>

#define SUBJECT_MAX 128
/* Largest decoded JWT payload looked at; bigger tokens give no subject. */
#define SUBJECT_PAYLOAD_MAX 8192

/* Returns 1 if <s>/<len> is a usable subject (1..SUBJECT_MAX visible ASCII). */
int subject_ok(const char *s, size_t len);

/* Finds the top-level string member <claim> of the payload of the compact
 * JWS <tok>/<len> (surrounding blanks ignored), JSON escapes decoded, and
 * copies it with a NUL into <out> (SUBJECT_MAX + 1 bytes). Returns its
 * length, or -1: not a JWT, payload not one JSON object or too big, claim
 * absent, not a string, duplicated, or not subject_ok(). */
int subject_from_jwt(const char *tok, size_t len, const char *claim,
                     char out[SUBJECT_MAX + 1]);

#endif /* SPOA_SUBJECT_H */
