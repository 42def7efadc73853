/*
 * test_admin.c: the admin listener. The /metrics document rendered from
 * registered per-worker counters (sums, cumulative histogram, HELP/TYPE
 * lines, snprintf-style sizing), then a real listener on a loopback port:
 * /healthz before and after draining, /metrics over HTTP, HEAD, 404, 405,
 * "off", a second start, a port already in use, and stop. POST
 * /cache/invalidate against a real cache: token rules, one session by form
 * or query (keyed exactly as a worker keys it), all=1, 400, 405.
 */
#include "admin.h"
#include "cache.h"
#include "cachekey.h"
#include "cfg.h"
#include "decision.h"
#include "metrics.h"
#include "tap.h"

#include <stdio.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int has_line(const char *doc, const char *line)
{
	size_t n = strlen(line);
	const char *p = doc;

	while ((p = strstr(p, line)) != NULL) {
		if ((p == doc || p[-1] == '\n') && p[n] == '\n')
			return 1;
		p += n;
	}
	return 0;
}

static void test_render(void)
{
	static struct metrics w0, w1;
	char *doc = malloc(65536), small[64];
	size_t len, need;

	metrics_register(&w0);
	metrics_register(&w1);
	METRICS_ADD(w0.decisions[METRICS_OUT_ALLOW], 3);
	METRICS_ADD(w1.decisions[METRICS_OUT_ALLOW], 4);
	METRICS_INC(w1.decisions[METRICS_OUT_ERROR]);
	metrics_upstream(&w0, 200, 800);        /* 0.8 ms: le 0.001 */
	metrics_upstream(&w1, 404, 30000);      /* 30 ms: le 0.05 */
	metrics_upstream(&w1, 0, 9000000);      /* 9 s, no answer: +Inf only */
	METRICS_ADD(w0.conns, 2);
	METRICS_INC(w1.conns);
	metrics_proto_error(&w0, 3);
	metrics_proto_error(&w1, 99);
	METRICS_ADD(w1.claims_skipped, 5);

	len = admin_render_metrics(doc, 65536);
	ok(len > 0 && len < 65536 && strlen(doc) == len, "render: %zu bytes", len);
	ok(has_line(doc, "# TYPE spoa_auth_decisions_total counter"), "TYPE line");
	ok(has_line(doc, "spoa_auth_decisions_total{outcome=\"allow\"} 7"), "allow summed over workers");
	ok(has_line(doc, "spoa_auth_decisions_total{outcome=\"deny\"} 0"), "deny present at 0");
	ok(has_line(doc, "spoa_auth_decisions_total{outcome=\"error\"} 1"), "error");
	ok(has_line(doc, "spoa_auth_upstream_requests_total{class=\"2xx\"} 1") &&
	   has_line(doc, "spoa_auth_upstream_requests_total{class=\"4xx\"} 1") &&
	   has_line(doc, "spoa_auth_upstream_requests_total{class=\"none\"} 1"),
	   "upstream status classes");
	ok(has_line(doc, "# TYPE spoa_auth_upstream_duration_seconds histogram"), "histogram TYPE");
	ok(has_line(doc, "spoa_auth_upstream_duration_seconds_bucket{le=\"0.001\"} 1"), "le 0.001");
	ok(has_line(doc, "spoa_auth_upstream_duration_seconds_bucket{le=\"0.025\"} 1"), "le 0.025 cumulative");
	ok(has_line(doc, "spoa_auth_upstream_duration_seconds_bucket{le=\"0.05\"} 2"), "le 0.05 cumulative");
	ok(has_line(doc, "spoa_auth_upstream_duration_seconds_bucket{le=\"2.5\"} 2"), "le 2.5");
	ok(has_line(doc, "spoa_auth_upstream_duration_seconds_bucket{le=\"+Inf\"} 3"), "le +Inf");
	ok(has_line(doc, "spoa_auth_upstream_duration_seconds_count 3"), "_count = +Inf bucket");
	ok(has_line(doc, "spoa_auth_upstream_duration_seconds_sum 9.030800"), "_sum in seconds");
	ok(has_line(doc, "spoa_auth_spop_connections 3"), "gauge summed");
	ok(has_line(doc, "spoa_auth_spop_protocol_errors_total{status=\"3\"} 1") &&
	   has_line(doc, "spoa_auth_spop_protocol_errors_total{status=\"other\"} 1"),
	   "protocol errors by status");
	ok(has_line(doc, "spoa_auth_claims_skipped_total 5"), "claims skipped");
	ok(has_line(doc, "spoa_auth_draining 0"), "not draining");
	{
		/* Every sample belongs to a metric with HELP and TYPE lines
		 * (histogram samples by their base name). */
		int bad = 0;
		char *copy = strdup(doc), *save = NULL;

		for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			static const char *const sufs[] = { "_bucket", "_sum", "_count" };
			char name[128], want[192];
			size_t n = strcspn(l, "{ ");

			if (l[0] == '#' || n >= sizeof(name))
				continue;
			memcpy(name, l, n);
			name[n] = '\0';
			for (size_t i = 0; i < sizeof(sufs) / sizeof(sufs[0]); i++) {
				size_t sl = strlen(sufs[i]);

				if (n > sl && strcmp(name + n - sl, sufs[i]) == 0) {
					snprintf(want, sizeof(want), "# TYPE %.*s histogram\n",
					         (int)(n - sl), name);
					if (strstr(doc, want))
						name[n - sl] = '\0';
				}
			}
			snprintf(want, sizeof(want), "# HELP %s ", name);
			if (!strstr(doc, want)) {
				diag("no HELP for %s", name);
				bad++;
			}
			snprintf(want, sizeof(want), "# TYPE %s ", name);
			if (!strstr(doc, want)) {
				diag("no TYPE for %s", name);
				bad++;
			}
		}
		ok(bad == 0, "every sample has HELP and TYPE lines");
		free(copy);
	}

	need = admin_render_metrics(small, sizeof(small));
	ok(need == len && strlen(small) == sizeof(small) - 1,
	   "small buffer: returns the full length (%zu), truncates with a NUL", need);

	metrics_unregister(&w0);
	metrics_unregister(&w1);
	free(doc);
}

/* The status code of an HTTP response, or -1. */
static int status(const char *resp)
{
	if (strncmp(resp, "HTTP/1.", 7) != 0 || strlen(resp) < 12)
		return -1;
	return atoi(resp + 9);
}

/* One HTTP/1.0 request over a fresh connection; the whole answer in <out>. */
static int http(unsigned port, const char *req, char *out, size_t size)
{
	struct sockaddr_in sin;
	size_t got = 0;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { 5, 0 };

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    send(fd, req, strlen(req), 0) != (ssize_t)strlen(req)) {
		close(fd);
		return -1;
	}
	while (got < size - 1 && (n = recv(fd, out + got, size - 1 - got, 0)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(fd);
	return (int)got;
}

static void test_listener(void)
{
	struct sockaddr_in sin;
	char err[256], buf[65536];
	unsigned port;
	int busy;
	socklen_t sl = sizeof(sin);

	is_int(admin_start(NULL, 0, err, sizeof(err)), 0, "off: 0, nothing started");
	is_int(admin_port(), 0, "off: no port");

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = 0;
	if (!ok(admin_start((struct sockaddr *)&sin, sizeof(sin), err, sizeof(err)) == 0,
	        "start on 127.0.0.1:0 (%s)", err))
		return;
	port = admin_port();
	ok(port > 0, "bound port %u", port);

	ok(admin_start((struct sockaddr *)&sin, sizeof(sin), err, sizeof(err)) == -1 &&
	   strstr(err, "already started"), "second start refused: %s", err);

	ok(http(port, "GET /healthz HTTP/1.0\r\n\r\n", buf, sizeof(buf)) > 0 &&
	   status(buf) == 200 && strstr(buf, "\r\n\r\nok\n"),
	   "/healthz: 200 ok");
	ok(http(port, "GET /metrics HTTP/1.0\r\n\r\n", buf, sizeof(buf)) > 0 &&
	   status(buf) == 200 &&
	   strstr(buf, "text/plain; version=0.0.4") &&
	   strstr(buf, "\nspoa_auth_decisions_total{outcome=\"allow\"} "),
	   "/metrics: 200, Prometheus content type and samples");
	ok(http(port, "HEAD /metrics HTTP/1.0\r\n\r\n", buf, sizeof(buf)) > 0 &&
	   status(buf) == 200 && !strstr(buf, "spoa_auth_"),
	   "HEAD /metrics: 200 without a body");
	ok(http(port, "GET /nope HTTP/1.0\r\n\r\n", buf, sizeof(buf)) > 0 &&
	   status(buf) == 404, "unknown path: 404");
	ok(http(port, "POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", buf,
	        sizeof(buf)) > 0 && status(buf) == 405 &&
	   strstr(buf, "Allow: GET, HEAD"), "POST: 405 with Allow");

	admin_set_draining();
	ok(http(port, "GET /healthz HTTP/1.0\r\n\r\n", buf, sizeof(buf)) > 0 &&
	   status(buf) == 503 && strstr(buf, "draining"),
	   "/healthz while draining: 503");
	ok(http(port, "GET /metrics HTTP/1.0\r\n\r\n", buf, sizeof(buf)) > 0 &&
	   strstr(buf, "\nspoa_auth_draining 1\n"), "/metrics: draining 1");

	admin_stop();
	is_int(admin_port(), 0, "stopped: no port");
	ok(http(port, "GET /healthz HTTP/1.0\r\n\r\n", buf, sizeof(buf)) < 0,
	   "stopped: connection refused");
	admin_stop();
	ok(1, "second stop is harmless");

	/* A port in use: the error names the address and the reason. */
	busy = socket(AF_INET, SOCK_STREAM, 0);
	sin.sin_port = 0;
	if (busy >= 0 && bind(busy, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    listen(busy, 1) == 0 && getsockname(busy, (struct sockaddr *)&sin, &sl) == 0) {
		ok(admin_start((struct sockaddr *)&sin, sizeof(sin), err, sizeof(err)) == -1 &&
		   strstr(err, "admin-listen 127.0.0.1:") && strstr(err, "in use"),
		   "port in use: -1, '%s'", err);
		is_int(admin_port(), 0, "  nothing started");
	} else {
		ok(0, "set up a busy port: %s", strerror(errno));
	}
	if (busy >= 0)
		close(busy);

	/* Restart after a stop works, fresh state. */
	sin.sin_port = 0;
	ok(admin_start((struct sockaddr *)&sin, sizeof(sin), err, sizeof(err)) == 0 &&
	   http(admin_port(), "GET /healthz HTTP/1.0\r\n\r\n", buf, sizeof(buf)) > 0 &&
	   status(buf) == 200, "restart: serving, not draining");
	admin_stop();
}

static void test_ipv6(void)
{
	struct sockaddr_in6 sin6;
	char err[256];
	int probe = socket(AF_INET6, SOCK_STREAM, 0);

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr = in6addr_loopback;
	if (probe < 0 || bind(probe, (struct sockaddr *)&sin6, sizeof(sin6)) < 0) {
		diag("no IPv6 loopback here: IPv6 listener not tested");
		if (probe >= 0)
			close(probe);
		return;
	}
	close(probe);
	ok(admin_start((struct sockaddr *)&sin6, sizeof(sin6), err, sizeof(err)) == 0 &&
	   admin_port() > 0, "start on [::1]:0 (%s)", err);
	admin_stop();
}

static void t_ref(struct decision *d)
{
	decision_get(d);
}

static void t_unref(struct decision *d)
{
	decision_put(d);
}

static size_t t_size(const struct decision *d)
{
	return sizeof(*d) + d->actions_len;
}

static struct decision *t_decision(void)
{
	struct decision *d = calloc(1, sizeof(*d));

	atomic_init(&d->refcnt, 1);
	d->status = 200;
	return d;
}

/* Never called: these tests have one leader at a time and no waiters. */
static void t_waiter_cb(struct cache_waiter *w, struct decision *d, int stale)
{
	(void)w;
	(void)stale;
	decision_put(d);
}

/* The clock the admin endpoint passes the cache (CLOCK_MONOTONIC, ms): the
 * entries must be live on it, or an invalidation drops any expired entry it
 * meets in the same credential bucket (one in a few dozen salts). */
static uint64_t t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Stores an entry for a request carrying Cookie <cookie> at <uri>, keyed as a
 * worker would key it (cachekey from the same cfg and salt). */
static void t_store(struct cache *c, struct cfg *cfg, const uint8_t *salt, const char *cookie,
                    const char *uri, uint8_t key[CACHE_KEY_LEN])
{
	struct cachekey *ck = cachekey_from_cfg(cfg, salt, NULL, 0);
	struct cachekey_hdr h = { "cookie", 6, cookie, strlen(cookie) };
	uint8_t cred[CACHE_KEY_LEN];
	struct decision *d = NULL, *nd = t_decision();
	struct cache_waiter w = { t_waiter_cb, NULL };

	cachekey_compute(ck, &h, 1, "127.0.0.1", 9, uri, strlen(uri), key, cred);
	cachekey_free(ck);
	if (cache_lookup(c, key, cred, t_now_ms(), &d, &w) == CACHE_MISS)
		cache_complete(c, key, nd, 60000, t_now_ms(), NULL);
	decision_put(d);
	decision_put(nd);
}

static int t_cached(struct cache *c, const uint8_t key[CACHE_KEY_LEN])
{
	uint8_t cred[CACHE_KEY_LEN] = { 0 };
	struct decision *d = NULL;
	struct cache_waiter w = { t_waiter_cb, NULL };
	uint64_t now = t_now_ms();
	int hit = cache_lookup(c, key, cred, now, &d, &w) == CACHE_HIT;

	if (!hit)
		cache_fail(c, key, NULL, now, NULL);  /* we became the leader: end it */
	decision_put(d);
	return hit;
}

/* POST /cache/invalidate: token checks, one session (form or query), all. */
static void test_invalidate(void)
{
	static const char tok[] = "0123456789abcdef-token";
	char *argv[] = { "--cache=on", "--cache-logout-hold=0", "--admin-token", (char *)tok };
	char *argv_off[] = { "--cache=on" };
	struct cache_opts o = { 1000, 1 << 20, 4, 0, 0, t_ref, t_unref, t_size };
	struct sockaddr_in sin;
	char err[256], buf[8192], req[1024];
	uint8_t salt[CACHEKEY_SALT_LEN], ka[CACHE_KEY_LEN], kb[CACHE_KEY_LEN], kc[CACHE_KEY_LEN];
	struct cfg *cfg = cfg_load(NULL, 4, argv, err, sizeof(err));
	struct cfg *cfg_notok = cfg_load(NULL, 1, argv_off, err, sizeof(err));
	struct cache *c = cache_new(&o, err, sizeof(err));
	unsigned port;
	const char *form = "Content-Type: application/x-www-form-urlencoded\r\n";
	const char *body = "cookie=session%3Da1%3B+theme%3Ddark";

	if (!ok(cfg && cfg_notok && c && cachekey_salt_new(salt) == 0, "setup"))
		return;
	admin_set_cache(c, salt);
	admin_set_cfg(cfg_notok);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (!ok(admin_start((struct sockaddr *)&sin, sizeof(sin), err, sizeof(err)) == 0, "start"))
		return;
	port = admin_port();
	t_store(c, cfg, salt, "session=a1; theme=dark", "/x", ka);
	t_store(c, cfg, salt, "session=a1; theme=dark", "/y", kb);
	t_store(c, cfg, salt, "session=b2", "/x", kc);
	ok(t_cached(c, ka) && t_cached(c, kb) && t_cached(c, kc), "three entries stored");

	snprintf(req, sizeof(req), "POST /cache/invalidate HTTP/1.0\r\n%sAuthorization: Bearer %s\r\n"
	         "Content-Length: 5\r\n\r\nall=1", form, tok);
	ok(http(port, req, buf, sizeof(buf)) > 0 && status(buf) == 403,
	   "no admin-token configured: 403 even with a token");
	admin_set_cfg(cfg);
	ok(http(port, "POST /cache/invalidate HTTP/1.0\r\nContent-Length: 5\r\n\r\nall=1",
	        buf, sizeof(buf)) > 0 && status(buf) == 403, "no Authorization: 403");
	snprintf(req, sizeof(req), "POST /cache/invalidate HTTP/1.0\r\nAuthorization: Bearer %sX\r\n"
	         "Content-Length: 5\r\n\r\nall=1", tok);
	ok(http(port, req, buf, sizeof(buf)) > 0 && status(buf) == 403, "wrong token: 403");
	ok(http(port, "GET /cache/invalidate HTTP/1.0\r\n\r\n", buf, sizeof(buf)) > 0 &&
	   status(buf) == 405 && strstr(buf, "Allow: POST"), "GET: 405, Allow: POST");
	ok(t_cached(c, ka) && t_cached(c, kc), "refused requests dropped nothing");

	/* cookie=session%3Da1%3B+theme%3Ddark: the Cookie header as HAProxy sends it */
	snprintf(req, sizeof(req), "POST /cache/invalidate HTTP/1.0\r\n%sAuthorization: bearer %s\r\n"
	         "Content-Length: %zu\r\n\r\n%s", form, tok, strlen(body), body);
	ok(http(port, req, buf, sizeof(buf)) > 0 && status(buf) == 200 && strstr(buf, "session"),
	   "one session by form: 200");
	ok(!t_cached(c, ka) && !t_cached(c, kb), "that session's entries are gone (every URI)");
	ok(t_cached(c, kc), "the other session's entry stays");

	snprintf(req, sizeof(req), "POST /cache/invalidate?cookie=session%%3Db2 HTTP/1.0\r\n"
	         "Authorization: Bearer %s\r\nContent-Length: 0\r\n\r\n", tok);
	ok(http(port, req, buf, sizeof(buf)) > 0 && status(buf) == 200, "one session by query: 200");
	ok(!t_cached(c, kc), "dropped");

	t_store(c, cfg, salt, "session=b2", "/x", kc);
	snprintf(req, sizeof(req), "POST /cache/invalidate HTTP/1.0\r\n%sAuthorization: Bearer %s\r\n"
	         "Content-Length: 5\r\n\r\nall=1", form, tok);
	ok(http(port, req, buf, sizeof(buf)) > 0 && status(buf) == 200 && strstr(buf, "all"),
	   "all=1: 200");
	ok(!t_cached(c, kc), "everything dropped");
	snprintf(req, sizeof(req), "POST /cache/invalidate HTTP/1.0\r\nAuthorization: Bearer %s\r\n"
	         "Content-Length: 3\r\n\r\nx=1", tok);
	ok(http(port, req, buf, sizeof(buf)) > 0 && status(buf) == 400, "no credential: 400");
	ok(http(port, "GET /metrics HTTP/1.0\r\n\r\n", buf, sizeof(buf)) > 0 &&
	   strstr(buf, "\nspoa_auth_cache_invalidated_total ") &&
	   strstr(buf, "\nspoa_auth_cache_results_total{result=\"hit\"} "),
	   "/metrics has the cache series");

	admin_stop();
	admin_set_cache(NULL, NULL);
	admin_set_cfg(NULL);
	cache_free(c);
	cfg_put(cfg);
	cfg_put(cfg_notok);
}

int main(void)
{
	test_render();
	test_listener();
	test_invalidate();
	test_ipv6();
	return done_testing();
}
