/*
 * test_upcurl.c: unit tests of the retry class of a libcurl attempt
 * (upcurl_fail() in agent/upstream.c) and of its agreement with the shared
 * retry decision (h1c_retry_delay()).
 *
 * What it does: every CURLcode the policy names, with and without a response
 * byte, a request sent or not, an attempt timeout set or not; then the class
 * fed to h1c_retry_delay() under the default policy (connect only).
 *
 * What it never does: open a socket or run a transfer.
 */
#include <curl/curl.h>

#include "h1c.h"
#include "tap.h"
#include "upcurl.h"

#define SENT 80L        /* a CURLINFO_REQUEST_SIZE: the request went out */
#define LEFT_MS 500L    /* budget left for the retry decision */
#define BACKOFF_MS 10u

int main(void)
{
	/* Connect failures: retryable whatever the timeout setting. */
	is_int(upcurl_fail(CURLE_COULDNT_CONNECT, 0, 0, 0, 0), H1C_FAIL_CONNECT, "refused: connect");
	is_int(upcurl_fail(CURLE_OPERATION_TIMEDOUT, 0, 0, 0, 0), H1C_FAIL_CONNECT,
	       "timeout before the request was sent: connect");
	/* Reset or close before a response byte. */
	is_int(upcurl_fail(CURLE_SEND_ERROR, 0, 0, 0, 0), H1C_FAIL_RESET, "send error: reset");
	is_int(upcurl_fail(CURLE_RECV_ERROR, 0, SENT, 0, 0), H1C_FAIL_RESET, "recv error: reset");
	is_int(upcurl_fail(CURLE_GOT_NOTHING, 0, SENT, 0, 0), H1C_FAIL_RESET, "empty reply: reset");
	/* After a response byte: never retried. */
	is_int(upcurl_fail(CURLE_RECV_ERROR, 1, SENT, 0, 0), H1C_FAIL_OTHER,
	       "recv error after a byte: other");
	is_int(upcurl_fail(CURLE_SEND_ERROR, 1, SENT, 0, 0), H1C_FAIL_OTHER,
	       "send error after a byte: other");
	is_int(upcurl_fail(CURLE_OPERATION_TIMEDOUT, 1, SENT, 0, 1), H1C_FAIL_OTHER,
	       "timeout after a byte: other");
	is_int(upcurl_fail(CURLE_PARTIAL_FILE, 1, SENT, 0, 0), H1C_FAIL_OTHER,
	       "truncated body: other");
	/* Attempt timeout: only when upstream-attempt-timeout is set. */
	is_int(upcurl_fail(CURLE_OPERATION_TIMEDOUT, 0, SENT, 0, 1), H1C_FAIL_TIMEOUT,
	       "attempt timeout, no byte: timeout");
	is_int(upcurl_fail(CURLE_OPERATION_TIMEDOUT, 0, SENT, 0, 0), H1C_FAIL_OTHER,
	       "the exchange timeout itself: other");
	/* Answers: the status decides. */
	is_int(upcurl_fail(CURLE_OK, 1, SENT, 503, 0), H1C_FAIL_NONE, "503: an answer");
	is_int(upcurl_fail(CURLE_OK, 1, SENT, 0, 0), H1C_FAIL_OTHER, "no usable status: other");
	/* Others never retried. */
	is_int(upcurl_fail(CURLE_COULDNT_RESOLVE_HOST, 0, 0, 0, 0), H1C_FAIL_OTHER,
	       "resolve failure: other");
	is_int(upcurl_fail(CURLE_PEER_FAILED_VERIFICATION, 0, 0, 0, 0), H1C_FAIL_OTHER,
	       "bad certificate: other");
	is_int(upcurl_fail(CURLE_WRITE_ERROR, 1, SENT, 0, 0), H1C_FAIL_OTHER, "too large: other");

	/* With the shared decision, default policy (one retry, connect). */
	ok(h1c_retry_delay(upcurl_fail(CURLE_COULDNT_CONNECT, 0, 0, 0, 0), 0, 1, 1,
	                   H1C_RETRY_CONNECT, BACKOFF_MS, LEFT_MS, 0) >= 0,
	   "default policy: a refused connect is retried once");
	ok(h1c_retry_delay(upcurl_fail(CURLE_COULDNT_CONNECT, 0, 0, 0, 0), 0, 2, 1,
	                   H1C_RETRY_CONNECT, BACKOFF_MS, LEFT_MS, 0) < 0,
	   "default policy: not twice");
	ok(h1c_retry_delay(upcurl_fail(CURLE_GOT_NOTHING, 0, SENT, 0, 0), 0, 1, 1,
	                   H1C_RETRY_CONNECT, BACKOFF_MS, LEFT_MS, 0) < 0,
	   "default policy: a reset is not retried");
	ok(h1c_retry_delay(upcurl_fail(CURLE_RECV_ERROR, 1, SENT, 0, 0), 0, 1, 3,
	                   H1C_RETRY_CONNECT | H1C_RETRY_RESET, BACKOFF_MS, LEFT_MS, 0) < 0,
	   "reset after a byte: never retried, even with reset on");
	ok(h1c_retry_delay(upcurl_fail(CURLE_OK, 1, SENT, 503, 0), 503, 1, 1,
	                   H1C_RETRY_503, BACKOFF_MS, LEFT_MS, 0) >= 0,
	   "503 retried when configured");
	ok(h1c_retry_delay(upcurl_fail(CURLE_OK, 1, SENT, 503, 0), 503, 1, 1,
	                   H1C_RETRY_CONNECT, BACKOFF_MS, LEFT_MS, 0) < 0,
	   "503 not retried when not configured");
	ok(h1c_retry_delay(upcurl_fail(CURLE_COULDNT_CONNECT, 0, 0, 0, 0), 0, 1, 1,
	                   H1C_RETRY_CONNECT, BACKOFF_MS, 0, 0) < 0,
	   "no budget left: no retry");
	return done_testing();
}
