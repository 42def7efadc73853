/*
 * upcurl.h: the retry class of one libcurl attempt of the user-service client
 * (upstream.c), so that the libcurl path and the native clients share one
 * retry decision, h1c_retry_delay().
 */
#ifndef SPOA_AUTH_UPCURL_H
#define SPOA_AUTH_UPCURL_H

#include "h1c.h"

/* The failure class of a libcurl attempt that ended with CURLcode <rc>.
 * <got_bytes>: a response byte reached the header or write callback;
 * <request_size>: CURLINFO_REQUEST_SIZE (0: the request was never sent);
 * <status>: the HTTP status when <rc> is CURLE_OK and the headers ended,
 * else 0; <attempt_timeout>: upstream-attempt-timeout is set.
 * Returns H1C_FAIL_NONE for an answer (the status decides), CONNECT for a
 * refused or timed-out connect, RESET for a send/receive error or an empty
 * reply before any response byte, TIMEOUT for an attempt timeout before any
 * byte, OTHER for everything else (never retried). Pure: no curl call. */
enum h1c_fail upcurl_fail(int rc, int got_bytes, long request_size, long status,
                          int attempt_timeout);

#endif
