/*
 * test_cfg.c: configuration parsing: defaults, file syntax, command-line
 * overrides, list semantics, value parsers and the error messages (which
 * must name the place and the key).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "log.h"
#include "tap.h"

static char tmpl[256];

/* Writes <text> to a fresh temporary file; returns its path (static). */
static const char *write_file(const char *text)
{
	int fd;

	if (tmpl[0])
		unlink(tmpl);
	snprintf(tmpl, sizeof(tmpl), "%s/test_cfg.XXXXXX",
	         getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	fd = mkstemp(tmpl);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		perror("tmp");
		exit(2);
	}
	close(fd);
	return tmpl;
}

static struct cfg *load(const char *text, int argc, char *const argv[], char *err, size_t n)
{
	err[0] = 0;
	return cfg_load(text ? write_file(text) : NULL, argc, argv, err, n);
}

/* Loads and expects failure with an error containing <want>. */
static void fails(const char *text, int argc, char *const argv[], const char *want,
                  const char *name)
{
	char err[512], exp[256];
	struct cfg *c = load(text, argc, argv, err, sizeof(err));

	snprintf(exp, sizeof(exp), "%s", want);
	if (strstr(want, "FILE"))
		snprintf(exp, sizeof(exp), "%s%s", tmpl, strstr(want, "FILE") + 4);
	if (!ok(c == NULL && strstr(err, exp) != NULL, "%s", name))
		diag("  err: '%s'  wanted: '%s'", err, exp);
	cfg_put(c);
}

static void test_defaults(void)
{
	char err[512];
	struct cfg *c = cfg_load(NULL, 0, NULL, err, sizeof(err));
	const struct sockaddr_in *sin;

	if (!ok(c != NULL, "defaults load")) {
		diag("%s", err);
		return;
	}
	ok(strcmp(c->listen, "127.0.0.1:12345") == 0, "listen default");
	sin = (const struct sockaddr_in *)&c->listen_addr;
	is_int(sin->sin_family, AF_INET, "listen family");
	is_int(ntohs(sin->sin_port), 12345, "listen port");
	is_int(c->workers, 0, "workers");
	is_int(c->max_frame_size, 16380, "max-frame-size");
	is_int(c->max_connections, 1024, "max-connections");
	ok(strcmp(c->user_service_url, "http://127.0.0.1:8101/api/user/token") == 0, "url");
	is_int(c->n_forward_headers, 3, "forward-headers count");
	ok(cfg_forwards_header(c, "Cookie", 6), "forwards Cookie (case-insensitive)");
	ok(cfg_forwards_header(c, "x-example-authorization", 23), "forwards identity");
	ok(!cfg_forwards_header(c, "host", 4), "does not forward host");
	is_int(c->timeout_ms, 1000, "timeout");
	is_int(c->connect_timeout_ms, 300, "connect-timeout");
	is_int(c->max_response_size, 8192, "max-response-size");
	is_int(c->keepalive_max, 64, "keepalive-max");
	is_int(c->max_upstream_conns, 64, "max-upstream-connections");
	ok(c->ca_file == NULL && c->client_cert == NULL && c->client_key == NULL, "tls unset");
	is_int(c->tls_verify, 1, "tls-verify");
	ok(strcmp(c->var_prefix, "auth") == 0, "var-prefix");
	is_int(c->n_copy_headers, 0, "copy-header none");
	is_int(c->log_level, LOG_LVL_INFO, "log-level");
	is_int(c->drain_timeout_ms, 5000, "drain-timeout");
	ok(strcmp(c->admin_listen, "127.0.0.1:12346") == 0 && c->admin_addrlen > 0,
	   "admin-listen default");
	cfg_put(c);
}

static void test_file_and_overrides(void)
{
	char err[512];
	char *argv[] = { "--timeout=2s", "--workers", "3", "--copy-header", "X-Role" };
	struct cfg *c;

	c = load("# comment\n"
	         "\n"
	         "listen [::1]:9000   # trailing comment\n"
	         "  timeout 250\n"
	         "connect-timeout 1s\n"
	         "max-response-size 16k\n"
	         "max-frame-size 1m\n"
	         "tls-verify off\n"
	         "forward-headers Cookie\n"
	         "forward-headers X-Api-Key\n"
	         "copy-header X-User-Id x-tenant\n"
	         "copy-header X-Other\n"
	         "log-level debug\n"
	         "drain-timeout 1m\n"
	         "user-service-url https://auth.example/check?x=1\n",
	         5, argv, err, sizeof(err));
	if (!ok(c != NULL, "file + overrides load")) {
		diag("%s", err);
		return;
	}
	is_int(c->listen_addr.ss_family, AF_INET6, "v6 listen");
	is_int(ntohs(((struct sockaddr_in6 *)&c->listen_addr)->sin6_port), 9000, "v6 port");
	is_int(c->timeout_ms, 2000, "command line overrides the file");
	is_int(c->workers, 3, "--key value form");
	is_int(c->connect_timeout_ms, 1000, "seconds");
	is_int(c->max_response_size, 16384, "k suffix");
	is_int(c->max_frame_size, 1048576, "m suffix");
	is_int(c->tls_verify, 0, "bool off");
	is_int(c->n_forward_headers, 2, "file list replaces the default, then appends");
	ok(cfg_forwards_header(c, "cookie", 6) && cfg_forwards_header(c, "x-api-key", 9),
	   "forward-headers lower-cased");
	is_int(c->n_copy_headers, 1, "command-line list replaces the file's");
	if (c->n_copy_headers == 1) {
		ok(strcmp(c->copy_headers[0], "X-Role") == 0, "copy-header name kept");
		ok(strcmp(c->copy_vars[0], "hdr.x_role") == 0, "copy-header var name");
	}
	is_int(c->log_level, LOG_LVL_DEBUG, "log-level");
	is_int(c->drain_timeout_ms, 60000, "minutes");
	ok(strcmp(c->user_service_url, "https://auth.example/check?x=1") == 0, "https url");
	/* Refcount: a second reference keeps it alive. */
	ok(cfg_get(c) == c, "cfg_get returns the cfg");
	cfg_put(c);
	cfg_put(c);

	c = load("copy-header X-User-Id x-tenant\ncopy-header X-Other\n", 0, NULL, err, sizeof(err));
	if (ok(c != NULL, "repeated copy-header in a file")) {
		is_int(c->n_copy_headers, 3, "repeated copy-header appends");
		if (c->n_copy_headers == 3)
			ok(strcmp(c->copy_vars[1], "hdr.x_tenant") == 0, "second var name");
	}
	cfg_put(c);
}

static void test_values(void)
{
	char err[512];
	static const char *const bools[][2] = {
		{ "on", "1" }, { "yes", "1" }, { "true", "1" }, { "1", "1" },
		{ "off", "0" }, { "no", "0" }, { "false", "0" }, { "0", "0" },
	};

	for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		char opt[64];
		char *argv[1] = { opt };
		struct cfg *c;

		snprintf(opt, sizeof(opt), "--tls-verify=%s", bools[i][0]);
		c = load(NULL, 1, argv, err, sizeof(err));
		ok(c && c->tls_verify == atoi(bools[i][1]), "bool %s", bools[i][0]);
		cfg_put(c);
	}
	{
		char *argv[] = { "--timeout", "3m", "--listen", ":8080", "--keepalive-max=0" };
		struct cfg *c = load(NULL, 5, argv, err, sizeof(err));

		ok(c && c->timeout_ms == 180000, "3m = 180000 ms");
		ok(c && c->listen_addr.ss_family == AF_INET, "':port' listens on any IPv4");
		ok(c && c->keepalive_max == 0, "keepalive-max 0 allowed");
		cfg_put(c);
	}
	{
		char *argv[] = { "--admin-listen=off" };
		struct cfg *c = load(NULL, 1, argv, err, sizeof(err));

		ok(c && c->admin_addrlen == 0 && strcmp(c->admin_listen, "off") == 0,
		   "admin-listen off");
		cfg_put(c);
	}
}

static void test_errors(void)
{
	char *a_unknown[] = { "--nope=1" };
	char *a_missing[] = { "--timeout" };
	char *a_bad[] = { "--max-frame-size", "100" };
	char *a_bare[] = { "timeout" };

	fails("listen 127.0.0.1:12345\nbogus 1\n", 0, NULL, "FILE:2: key 'bogus': unknown key",
	      "unknown key names file and line");
	fails("timeout 5x\n", 0, NULL, "FILE:1: key 'timeout': ", "bad duration");
	fails("timeout\n", 0, NULL, "FILE:1: key 'timeout': missing value", "missing value");
	fails("max-frame-size 255\n", 0, NULL, "FILE:1: key 'max-frame-size': ",
	      "max-frame-size below 256");
	fails("max-frame-size 2m\n", 0, NULL, "key 'max-frame-size'", "max-frame-size above 1m");
	fails("tls-verify maybe\n", 0, NULL, "FILE:1: key 'tls-verify': ", "bad bool");
	fails("listen 127.0.0.1\n", 0, NULL, "FILE:1: key 'listen': ", "listen without port");
	fails("listen ::1:80\n", 0, NULL, "key 'listen'", "bare IPv6 refused");
	fails("listen 1.2.3.4:70000\n", 0, NULL, "key 'listen'", "port out of range");
	fails("user-service-url ftp://x/\n", 0, NULL, "key 'user-service-url'", "non-http URL");
	fails("log-level loud\n", 0, NULL, "key 'log-level'", "bad log level");
	fails("ca-file /nonexistent/ca.pem\n", 0, NULL, "FILE:1: key 'ca-file': ", "unreadable ca-file");
	fails("var-prefix a-b\n", 0, NULL, "key 'var-prefix'", "var-prefix charset");
	fails("var-prefix aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 0, NULL,
	      "FILE:1: key 'var-prefix': ", "var-prefix too long for txn.<p>.www_authenticate");
	fails("# x\ncopy-header X-A-Very-Long-Header-Name-That-Cannot-Fit-In-Sixty-Three\n", 0, NULL,
	      "FILE:2: key 'copy-header': ", "copy-header var name too long");
	fails("copy-header X(bad)\n", 0, NULL, "key 'copy-header'", "copy-header not a token");
	fails("admin-listen 12346\n", 0, NULL, "FILE:1: key 'admin-listen': ", "admin-listen needs host:port");
	fails(NULL, 1, a_unknown, "command line: option '--nope': unknown option",
	      "unknown option");
	fails(NULL, 1, a_missing, "command line: option '--timeout': missing value",
	      "option without value");
	fails(NULL, 2, a_bad, "command line: option '--max-frame-size': ", "bad option value");
	fails(NULL, 1, a_bare, "command line: 'timeout'", "argument without --");
	{
		char err[512];
		struct cfg *c = cfg_load("/nonexistent/spoa-auth.conf", 0, NULL, err, sizeof(err));

		ok(c == NULL && strstr(err, "/nonexistent/spoa-auth.conf"), "missing file named");
		cfg_put(c);
	}
}

static void test_cache_keys(void)
{
	char err[512];
	struct cfg *c, *d;

	c = load(NULL, 0, NULL, err, sizeof(err));
	ok(c && c->cache == 0, "cache off by default");
	ok(c && c->cache_max_entries == 100000 && c->cache_max_bytes == 64u * 1024 * 1024 &&
	   c->cache_shards == 64, "cache bounds defaults");
	ok(c && c->cache_ttl_ms == 10000 && c->cache_deny_ttl_ms == 2000 &&
	   c->cache_max_ttl_ms == 300000, "cache TTL defaults");
	ok(c && c->cache_stale_grace_ms == 0 && c->cache_logout_hold_ms == 2000,
	   "stale-if-error off, logout hold 2s by default");
	ok(c && c->cache_key_uri == 1 && c->cache_key_client == 1 && c->n_cache_key_cookies == 0,
	   "key defaults: URI and client in, whole Cookie header");
	ok(c && c->admin_token == NULL, "admin-token unset by default");
	cfg_put(c);

	c = load("cache on\ncache-max-entries 500\ncache-max-bytes 1m\ncache-shards 8\n"
	         "cache-ttl 30s\ncache-deny-ttl 0\ncache-max-ttl 1m\ncache-stale-grace 5s\n"
	         "cache-logout-hold 500ms\ncache-key-uri off\ncache-key-client no\n"
	         "cache-key-cookies session\ncache-key-cookies other_One\n"
	         "admin-token 0123456789abcdef0123\n", 0, NULL, err, sizeof(err));
	if (!ok(c != NULL, "every cache key parses"))
		diag("  err: %s", err);
	ok(c && c->cache == 1 && c->cache_max_entries == 500 && c->cache_max_bytes == 1048576 &&
	   c->cache_shards == 8, "cache bounds from the file");
	ok(c && c->cache_ttl_ms == 30000 && c->cache_deny_ttl_ms == 0 &&
	   c->cache_max_ttl_ms == 60000 && c->cache_stale_grace_ms == 5000 &&
	   c->cache_logout_hold_ms == 500, "cache durations from the file");
	ok(c && c->cache_key_uri == 0 && c->cache_key_client == 0, "key options off");
	ok(c && c->n_cache_key_cookies == 2 && strcmp(c->cache_key_cookies[0], "session") == 0 &&
	   strcmp(c->cache_key_cookies[1], "other_One") == 0,
	   "cache-key-cookies repeated in a file appends, case kept");
	ok(c && c->admin_token && strcmp(c->admin_token, "0123456789abcdef0123") == 0,
	   "admin-token");
	{
		char *argv[] = { "--cache-key-cookies", "sid" };

		d = load("cache-key-cookies a b\n", 2, argv, err, sizeof(err));
		ok(d && d->n_cache_key_cookies == 1 && strcmp(d->cache_key_cookies[0], "sid") == 0,
		   "cache-key-cookies on the command line replaces the file's list");
		cfg_put(d);
	}

	/* Reload rules: which changes empty the cache. */
	d = load("cache on\ncache-max-entries 500\ncache-max-bytes 1m\ncache-shards 8\n"
	         "cache-ttl 1s\ncache-key-uri off\ncache-key-client no\n"
	         "cache-key-cookies other_One session\n", 0, NULL, err, sizeof(err));
	ok(c && d && cfg_cache_key_changed(c, d),
	   "cookie list reordered counts as a change (compared as written: errs toward emptying)");
	cfg_put(d);
	d = load("cache on\ncache-key-uri on\ncache-key-client no\n"
	         "cache-key-cookies session other_One\n", 0, NULL, err, sizeof(err));
	ok(c && d && cfg_cache_key_changed(c, d), "cache-key-uri change empties the cache");
	cfg_put(d);
	d = load("cache on\ncache-key-uri off\ncache-key-client no\n"
	         "cache-key-cookies session other_One\n"
	         "user-service-url http://10.0.0.1/token\n", 0, NULL, err, sizeof(err));
	ok(c && d && cfg_cache_key_changed(c, d), "user-service-url change empties the cache");
	cfg_put(d);
	d = load("cache on\ncache-key-uri off\ncache-key-client no\n"
	         "cache-key-cookies session\n", 0, NULL, err, sizeof(err));
	ok(c && d && cfg_cache_key_changed(c, d), "cookie list change empties the cache");
	cfg_put(d);
	d = load("cache on\ncache-key-uri off\ncache-key-client no\n"
	         "cache-key-cookies session other_One\ncopy-header X-User-Id\n", 0, NULL, err,
	         sizeof(err));
	ok(c && d && cfg_cache_key_changed(c, d), "copy-header change empties the cache");
	cfg_put(d);
	d = load("cache on\ncache-key-uri off\ncache-key-client no\n"
	         "cache-key-cookies session other_One\ncache-ttl 1m\ncache-max-entries 7\n", 0, NULL,
	         err, sizeof(err));
	ok(c && d && !cfg_cache_key_changed(c, d), "TTL and bound changes keep the entries");
	cfg_put(d);
	cfg_put(c);

	fails("cache maybe\n", 0, NULL, "FILE:1: key 'cache': ", "cache: bad bool");
	fails("cache-shards 6\n", 0, NULL, "FILE:1: key 'cache-shards': 6 is not a power of two",
	      "cache-shards power of two");
	fails("cache-shards 0\n", 0, NULL, "key 'cache-shards'", "cache-shards 0 refused");
	fails("cache-max-entries 0\n", 0, NULL, "key 'cache-max-entries'", "cache-max-entries >= 1");
	fails("cache-max-entries 300000000\n", 0, NULL, "key 'cache-max-entries'",
	      "cache-max-entries <= 2^28");
	fails("cache-max-bytes 1k\n", 0, NULL, "key 'cache-max-bytes'", "cache-max-bytes >= 4k");
	fails("cache-ttl 2d\n", 0, NULL, "key 'cache-ttl'", "cache-ttl unit");
	fails("cache-deny-ttl 2000m\n", 0, NULL, "key 'cache-deny-ttl'", "cache-deny-ttl <= 1 day");
	fails("cache-stale-grace x\n", 0, NULL, "key 'cache-stale-grace'", "cache-stale-grace");
	fails("cache-key-uri perhaps\n", 0, NULL, "key 'cache-key-uri'", "cache-key-uri bool");
	fails("cache-key-cookies a=b\n", 0, NULL, "key 'cache-key-cookies'",
	      "cookie name with '='");
	fails("admin-token short\n", 0, NULL, "key 'admin-token': too short", "admin-token length");
	{
		char err2[512];
		char *argv[] = { "--admin-token", "0123456789abcdef 0123" };
		struct cfg *e = load(NULL, 2, argv, err2, sizeof(err2));

		ok(e == NULL && strstr(err2, "no spaces") && !strstr(err2, "0123456789abcdef"),
		   "admin-token with a space refused, value not echoed");
		cfg_put(e);
	}
}

/* The fleet's redis-* keys: defaults, values, and every bad value naming its key. */
static void test_redis_keys(void)
{
	static const char secret[] = "redis-key-secret 0123456789abcdef0123456789abcdef\n";
	char err[512], text[1024];
	struct cfg *c;

	c = load(NULL, 0, NULL, err, sizeof(err));
	ok(c && !c->redis_address && !c->redis_key_secret && strcmp(c->redis_prefix, "spoa-auth:") == 0 &&
	   c->redis_timeout_ms == 20 && c->redis_stream_maxlen == 100000 &&
	   c->redis_disconnected_max_ttl_ms == 5000 && c->redis_breaker_failures == 5 &&
	   c->redis_breaker_open_ms == 2000, "redis defaults: fleet off");
	cfg_put(c);

	snprintf(text, sizeof(text), "cache on\nredis-address 127.0.0.1:6390\n%sredis-user u\n"
	         "redis-password p4ss\nredis-prefix gw:\nredis-timeout 20ms\n"
	         "redis-stream-maxlen 1000\nredis-disconnected-max-ttl 1s\n", secret);
	c = load(text, 0, NULL, err, sizeof(err));
	if (!ok(c != NULL, "every redis key parses"))
		diag("  err: %s", err);
	ok(c && strcmp(c->redis_host, "127.0.0.1") == 0 && c->redis_port == 6390 && !c->redis_path &&
	   c->redis_key_secret_len == 32 && strcmp(c->redis_user, "u") == 0 &&
	   strcmp(c->redis_prefix, "gw:") == 0 && c->redis_timeout_ms == 20 &&
	   c->redis_stream_maxlen == 1000 && c->redis_disconnected_max_ttl_ms == 1000,
	   "redis values");
	cfg_put(c);
	snprintf(text, sizeof(text), "cache on\nredis-address [::1]:6390\n%s", secret);
	c = load(text, 0, NULL, err, sizeof(err));
	ok(c && strcmp(c->redis_host, "::1") == 0 && c->redis_port == 6390, "redis-address [v6]:port");
	cfg_put(c);
	snprintf(text, sizeof(text), "cache on\nredis-address unix:/run/redis.sock\n%s", secret);
	c = load(text, 0, NULL, err, sizeof(err));
	ok(c && c->redis_path && strcmp(c->redis_path, "/run/redis.sock") == 0 && !c->redis_host,
	   "redis-address unix:/path");
	cfg_put(c);

	fails("cache on\nredis-address 127.0.0.1:6390\n", 0, NULL, "key 'redis-key-secret'",
	      "redis-address without a secret: refused, naming redis-key-secret");
	fails("cache on\nredis-key-secret short\n", 0, NULL, "key 'redis-key-secret': too short",
	      "a short secret: refused");
	snprintf(text, sizeof(text), "redis-address 127.0.0.1:6390\n%s", secret);
	fails(text, 0, NULL, "key 'redis-address'", "fleet without the cache: refused");
	fails("redis-address 127.0.0.1\n", 0, NULL, "key 'redis-address'", "no port: refused");
	fails("redis-address 127.0.0.1:0\n", 0, NULL, "key 'redis-address'", "port 0: refused");
	fails("redis-address 127.0.0.1:70000\n", 0, NULL, "key 'redis-address'", "port too big");
	fails("redis-address unix:relative\n", 0, NULL, "key 'redis-address'", "relative unix path");
	fails("redis-prefix a{b}\n", 0, NULL, "key 'redis-prefix'", "a prefix with braces");
	fails("redis-timeout 0\n", 0, NULL, "key 'redis-timeout'", "redis-timeout 0: refused");
	snprintf(text, sizeof(text), "cache on\nredis-address 127.0.0.1:6390\n%sredis-user u\n",
	         secret);
	fails(text, 0, NULL, "key 'redis-user'", "redis-user without redis-password: refused");
	{
		char *argv[] = { "--redis-key-secret", "short-secret-value" };
		char out[512];
		struct cfg *x = load(NULL, 2, argv, out, sizeof(out));

		ok(!x && strstr(out, "redis-key-secret") && !strstr(out, "short-secret-value"),
		   "a refused secret is not echoed");
		cfg_put(x);
	}
}

static void test_help(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	cfg_print_help(f);
	fclose(f);
	ok(strstr(buf, "--listen") && strstr(buf, "127.0.0.1:12345"), "help: listen + default");
	ok(strstr(buf, "--drain-timeout") && strstr(buf, "5s"), "help: drain-timeout + default");
	ok(strstr(buf, "--copy-header") && strstr(buf, "--forward-headers"), "help: list keys");
	ok(strstr(buf, "--cache ") && strstr(buf, "--cache-key-cookies") &&
	   strstr(buf, "--cache-stale-grace") && strstr(buf, "--admin-token"), "help: cache keys");
	free(buf);
}

/* The SPOP-side timeouts and the user-service client's proxy key. */
static void test_wire_keys(void)
{
	char err[512];
	struct cfg *c = load(NULL, 0, NULL, err, sizeof(err));

	ok(c && c->upstream_proxy == NULL, "no proxy by default");
	/* Above the shipped SPOE timeout idle (30s) and backend timeout server (1m). */
	ok(c && c->idle_timeout_ms == 90000, "idle-timeout default 90s");
	ok(c && c->frame_timeout_ms == 5000, "frame-timeout default 5s");
	cfg_put(c);
	c = load("idle-timeout 0\nframe-timeout 250ms\n", 0, NULL, err, sizeof(err));
	ok(c && c->idle_timeout_ms == 0 && c->frame_timeout_ms == 250, "idle off, frame 250ms");
	cfg_put(c);
	fails("frame-timeout 0\n", 0, NULL, "FILE:1: key 'frame-timeout': ",
	      "frame-timeout cannot be off");
	fails("idle-timeout 2h\n", 0, NULL, "FILE:1: key 'idle-timeout': ", "idle-timeout bound");
	c = load("upstream-proxy http://proxy.example:3128\n", 0, NULL, err, sizeof(err));
	ok(c && c->upstream_proxy && strcmp(c->upstream_proxy, "http://proxy.example:3128") == 0,
	   "upstream-proxy http URL");
	cfg_put(c);
	{
		char *a_none[] = { "--upstream-proxy", "none" };

		c = load("upstream-proxy socks5h://127.0.0.1:1080\n", 2, a_none, err, sizeof(err));
		ok(c && c->upstream_proxy == NULL, "--upstream-proxy none overrides the file");
		cfg_put(c);
	}
	fails("upstream-proxy ftp://u:hunter2@x:21\n", 0, NULL, "FILE:1: key 'upstream-proxy': ",
	      "upstream-proxy scheme checked");
	c = load("upstream-proxy ftp://u:hunter2@x:21\n", 0, NULL, err, sizeof(err));
	ok(c == NULL && strstr(err, "hunter2") == NULL, "a refused proxy URL is not echoed");
	cfg_put(c);
	fails("upstream-proxy http://\n", 0, NULL, "key 'upstream-proxy': no host",
	      "upstream-proxy needs a host");
	/* The native client never uses a proxy: with one configured, auto takes
	 * libcurl and a forced native is refused. */
	c = load("user-service-url http://127.0.0.1:8101/token\n", 0, NULL, err, sizeof(err));
	ok(c && c->upstream_native == 1, "auto: native for http:// with an IP");
	cfg_put(c);
	c = load("user-service-url http://127.0.0.1:8101/token\n"
	         "upstream-proxy http://127.0.0.1:3128\n", 0, NULL, err, sizeof(err));
	ok(c && c->upstream_native == 0, "auto with upstream-proxy: libcurl");
	cfg_put(c);
	fails("user-service-url http://127.0.0.1:8101/token\nupstream-proxy http://127.0.0.1:3128\n"
	      "upstream-client native\n", 0, NULL, "key 'upstream-client': 'native' never uses a proxy",
	      "native with upstream-proxy refused");
	c = load("user-service-url http://127.0.0.1:8101/token\nupstream-http-version h2c\n",
	         0, NULL, err, sizeof(err));
	ok(c && c->upstream_native == 1, "auto with h2c to an IP: the native h2c client");
	cfg_put(c);
	c = load("user-service-url http://127.0.0.1:8101/token\nupstream-http-version h2c\n"
	         "upstream-client native\n", 0, NULL, err, sizeof(err));
	ok(c && c->upstream_native == 1, "native with h2c: the native h2c client");
	cfg_put(c);
	c = load("user-service-url http://127.0.0.1:8101/token\nupstream-http-version h2c\n"
	         "upstream-client curl\n", 0, NULL, err, sizeof(err));
	/* A libcurl that cannot reuse h2c connections refuses h2c at load. */
	ok(c ? c->upstream_native == 0 : strstr(err, "'upstream-http-version': h2c") != NULL,
	   "curl with h2c: libcurl (or h2c refused by this libcurl)");
	cfg_put(c);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);
	test_defaults();
	test_file_and_overrides();
	test_values();
	test_errors();
	test_cache_keys();
	test_redis_keys();
	test_help();
	test_wire_keys();
	if (tmpl[0])
		unlink(tmpl);
	return done_testing();
}
