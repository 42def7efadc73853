/*
 * claims.h: msgpack claims -> SPOP set-var actions.
 *
 * What it does: reads a msgpack document whose top level is a map (the user
 * service's answer with Content-Type application/msgpack) and appends one
 * set-var action (scope txn) per usable key, named "claim.<key>".
 *
 * What it never does: anything with the network, logging, or keeping state;
 * it is the project's only msgpack-c user, and it allocates only inside one
 * call (msgpack-c's zone), freed before returning.
 */
#ifndef SPOA_CLAIMS_H
#define SPOA_CLAIMS_H

#include <stddef.h>
#include <stdint.h>

/* Prefix of every claim variable name. */
#define CLAIMS_VAR_PREFIX "claim."

/* Appends to <*p> (bounded by <end>) one SPOP set-var action in scope txn
 * per key of the top-level map of the msgpack document <buf>/<len>, named
 * "claim.<key>" with <key> passed through varname_sanitize(). Values:
 *   positive integer -> INT64 (UINT64 above INT64_MAX), negative -> INT64,
 *   boolean -> BOOL, str -> STR, bin -> BIN.
 * Skipped, and counted in <*skipped> (if not NULL, set to 0 first): keys
 * that are not non-empty strings, values of any other type (float, nil,
 * array, map, ext), names failing varname_check(<var_prefix>, ...).
 * Returns the number of actions written (>= 0) and advances <*p>;
 * -1 if <buf> is not one complete msgpack document whose top level is a map
 * (truncated, invalid, trailing bytes, absurd container sizes);
 * -2 if the actions do not fit before <end>: then <*p> is left as on entry
 * (bytes between it and <end> may have been overwritten).
 * <var_prefix> is the SPOE var-prefix, used only for the length check. */
int claims_encode(const char *buf, size_t len, const char *var_prefix,
                  uint8_t **p, const uint8_t *end, unsigned *skipped);

#endif /* SPOA_CLAIMS_H */
