/*
 * fuzz_h1resp.c: libFuzzer target for the response path of the native
 * user-service client: bytes from the user service -> agent/h1c.c (llhttp
 * underneath, from Debian's node-llhttp) -> struct upstream_response ->
 * decision_build().
 *
 * What it does: per input, starts one request on a real loopback connection
 * to an in-process listener, answers it with the input (the first byte picks
 * where the input is split in two writes, so parser state crosses reads),
 * closes the server side, runs the loop until the completion, and builds the
 * decision from the response. Checks the contract of the response: a status
 * of 0 or 200..599, with status 0 no header and no body, a body never over
 * max-response-size and NUL-terminated, at most 4 Set-Cookie.
 *
 * What it never does: keep a connection between inputs (keepalive-max 0),
 * retry (upstream-retries 0), or wait more than the exchange timeout.
 *
 * Build: make fuzz (clang -fsanitize=fuzzer,address,undefined).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "cfg.h"
#include "decision.h"
#include "h1c.h"
#include "upstream.h"
#include "fuzz.h"

#define FUZZ_MAX_INPUT 65536
#define FUZZ_MAX_RESPONSE 4096


int LLVMFuzzerInitialize(int *argc, char ***argv);
static struct ev_loop *fz_loop;
static struct cfg *fz_cfg;
static struct h1c *fz_h;
static int fz_lfd, fz_done;
static char fz_url[128];

static void fz_done_cb(void *arg, const struct upstream_response *r)
{
	struct decision *d;
	int too_big = 0;

	(void)arg;
	CHECK(r->status == 0 || (r->status >= 200 && r->status <= 599));
	if (r->status == 0) {
		CHECK(r->error != NULL);
		CHECK(!r->body && !r->content_type && !r->location && !r->www_authenticate &&
		      !r->cache_control && r->n_set_cookie == 0 && !r->copy[0]);
	}
	CHECK(r->body_len <= FUZZ_MAX_RESPONSE);
	CHECK(!r->body || r->body[r->body_len] == 0);
	CHECK(r->n_set_cookie <= UPSTREAM_MAX_SET_COOKIE);
	d = decision_build(r, fz_cfg, &too_big);
	decision_put(d);
	fz_done = 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	char err[512];
	char *args[] = {
		"--user-service-url", fz_url, "--keepalive-max", "0", "--upstream-retries", "0",
		"--timeout", "2s", "--max-response-size", "4k", "--copy-header", "X-User-Id",
		"--upstream-client", "native",
	};

	(void)argc;
	(void)argv;
	fz_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fz_lfd < 0 || bind(fz_lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(fz_lfd, 16) < 0 || getsockname(fz_lfd, (struct sockaddr *)&a, &alen) < 0) {
		perror("fuzz_h1resp: listener");
		exit(2);
	}
	snprintf(fz_url, sizeof(fz_url), "http://127.0.0.1:%u/api/user/token", ntohs(a.sin_port));
	fz_cfg = cfg_load(NULL, (int)(sizeof(args) / sizeof(args[0])), args, err, sizeof(err));
	if (!fz_cfg) {
		fprintf(stderr, "fuzz_h1resp: cfg: %s\n", err);
		exit(2);
	}
	fz_loop = ev_loop_new(EVFLAG_AUTO);
	fz_h = h1c_new(fz_loop, fz_cfg);
	if (!fz_loop || !fz_h)
		exit(2);
	return 0;
}

static void fz_write(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			return;   /* the client closed: fine */
		p += w;
		n -= (size_t)w;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *hdrs[] = { "Cookie: session=fuzz" };
	char url[192];
	size_t cut;
	int sfd;

	if (size > FUZZ_MAX_INPUT)
		size = FUZZ_MAX_INPUT;
	cut = size ? (size_t)data[0] * size / 256 : 0;
	snprintf(url, sizeof(url), "%s?request_uri=/x", fz_url);
	fz_done = 0;
	CHECK(h1c_start(fz_h, fz_cfg, url, hdrs, 1, fz_done_cb, NULL) == 0);
	/* connect() was called by h1c_start: the handshake is done on loopback. */
	sfd = accept(fz_lfd, NULL, NULL);
	CHECK(sfd >= 0);
	if (size) {
		fz_write(sfd, data + 1, cut > 0 ? cut - 1 : 0);
		ev_run(fz_loop, EVRUN_NOWAIT);
		if (!fz_done)
			fz_write(sfd, data + (cut > 0 ? cut : 1), size - (cut > 0 ? cut : 1));
	}
	shutdown(sfd, SHUT_WR);
	while (!fz_done)
		ev_run(fz_loop, EVRUN_ONCE);
	close(sfd);
	CHECK(h1c_pending(fz_h) == 0);
	return 0;
}
