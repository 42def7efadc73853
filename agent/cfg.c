/*
 * cfg.c: configuration file and command-line options -> struct cfg.
 *
 * One table (cfg_keys) drives everything: defaults, parsing, --help. Defaults
 * go through the same parsers as user values so they cannot drift. Errors
 * name where the value came from ("FILE:LINE" or "command line") and the key.
 * Runs on the main thread only (startup and SIGHUP); may block (file reads,
 * getaddrinfo) since no worker loop runs here.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "breaker.h"
#include "cachekey.h"
#include "cfg.h"
#include "fleetval.h"
#include "h1c.h"
#include "hapi.h"
#include "log.h"
#include "subject.h"
#include "upstream.h"
#include "varname.h"

#define CFG_WHY_MAX 192
#define CFG_WHERE_MAX 300

/* Where a value came from, for list semantics and error messages. */
enum cfg_src {
	CFG_SRC_DEFAULT = 0,
	CFG_SRC_FILE = 1,
	CFG_SRC_CMDLINE = 2,
};

struct cfg_builder;

/* Parses <val> into the builder. Returns 0, or -1 with a reason in <why>. */
typedef int (*cfg_parse_fn)(struct cfg_builder *b, const char *val, char *why);

/* How a key's value is parsed: by its own function, or (plain numbers,
 * durations, sizes and booleans) by cfg_p_num() from the table's bounds
 * into the cfg field at <off>, of <width> bytes. */
enum cfg_kind {
	CFG_K_FN = 0,
	CFG_K_UINT,            /* decimal */
	CFG_K_SIZE,            /* bytes, k, m */
	CFG_K_DUR,             /* ms, s, m; bare = ms; stored as unsigned ms */
	CFG_K_BOOL,            /* on/off...; stored as int */
};

struct cfg_key {
	const char *name;
	const char *def;       /* NULL: unset by default */
	const char *help;
	cfg_parse_fn parse;    /* CFG_K_FN only */
	enum cfg_kind kind;
	size_t off, width;     /* the struct cfg field, for the other kinds */
	unsigned long long min, max;
};

#define CFG_FN(fn)  (fn), CFG_K_FN, 0, 0, 0, 0
#define CFG_NUM(kind, field, lo, hi) \
	NULL, (kind), offsetof(struct cfg, field), sizeof(((struct cfg *)0)->field), (lo), (hi)

/* Parsing state: the cfg being filled plus, per list key, which source last
 * set it (a new source replaces the list, the same source appends). */
struct cfg_builder {
	struct cfg *c;
	enum cfg_src src;
	enum cfg_src fwd_src, copy_src, cookies_src;
	char where[CFG_WHERE_MAX];            /* location of the value being parsed */
	char prefix_where[CFG_WHERE_MAX];     /* where var-prefix was set */
	char client_where[CFG_WHERE_MAX];     /* where upstream-client was set */
	char url_where[CFG_WHERE_MAX];        /* where user-service-url was set */
	char **copy_where;                    /* per copy-header entry */
};

/* ---- small helpers ---- */

static int cfg_why(char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfg_why(char *why, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, CFG_WHY_MAX, fmt, ap);
	va_end(ap);
	return -1;
}

static int cfg_strdup(char **dst, const char *val, char *why)
{
	char *s = strdup(val);

	if (!s)
		return cfg_why(why, "out of memory");
	free(*dst);
	*dst = s;
	return 0;
}

/* Parses a decimal integer in [<min>, <max>], with an optional suffix stored in
 * <*rest>. Returns 0 or -1 (no digits, overflow). */
static int cfg_parse_num(const char *val, unsigned long long *out, const char **rest)
{
	unsigned long long v = 0;
	const char *p = val;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (ULLONG_MAX - 9) / 10)
			return -1;
		v = v * 10 + (unsigned long long)(*p - '0');
	}
	*out = v;
	*rest = p;
	return 0;
}

static int cfg_parse_uint(const char *val, unsigned long long min,
                          unsigned long long max, unsigned long long *out, char *why)
{
	const char *rest;

	if (cfg_parse_num(val, out, &rest) < 0 || *rest)
		return cfg_why(why, "'%s' is not a number", val);
	if (*out < min || *out > max)
		return cfg_why(why, "%llu is out of range [%llu, %llu]", *out, min, max);
	return 0;
}

/* Durations: "123ms", "2s", "1m", bare = ms. Result in ms, in [min, max]. */
static int cfg_parse_duration(const char *val, unsigned min, unsigned max,
                              unsigned *out, char *why)
{
	unsigned long long v, mul;
	const char *rest;

	if (cfg_parse_num(val, &v, &rest) < 0)
		return cfg_why(why, "'%s' is not a duration (e.g. 500ms, 2s, 1m)", val);
	if (*rest == 0 || strcmp(rest, "ms") == 0)
		mul = 1;
	else if (strcmp(rest, "s") == 0)
		mul = 1000;
	else if (strcmp(rest, "m") == 0)
		mul = 60000;
	else
		return cfg_why(why, "'%s': unknown unit '%s' (ms, s, m)", val, rest);
	if (v > UINT_MAX / mul || v * mul < min || v * mul > max)
		return cfg_why(why, "'%s' is out of range [%ums, %ums]", val, min, max);
	*out = (unsigned)(v * mul);
	return 0;
}

/* Sizes: bytes, "k" (1024), "m" (1048576). Result in [min, max]. */
static int cfg_parse_size(const char *val, unsigned long long min,
                          unsigned long long max, unsigned long long *out, char *why)
{
	unsigned long long v, mul;
	const char *rest;

	if (cfg_parse_num(val, &v, &rest) < 0)
		return cfg_why(why, "'%s' is not a size (e.g. 8192, 16k, 1m)", val);
	if (*rest == 0)
		mul = 1;
	else if (strcasecmp(rest, "k") == 0)
		mul = 1024;
	else if (strcasecmp(rest, "m") == 0)
		mul = 1024 * 1024;
	else
		return cfg_why(why, "'%s': unknown unit '%s' (k, m)", val, rest);
	if (v > ULLONG_MAX / mul || v * mul < min || v * mul > max)
		return cfg_why(why, "'%s' is out of range [%llu, %llu]", val, min, max);
	*out = v * mul;
	return 0;
}

static int cfg_parse_bool_str(const char *val, int *out, char *why)
{
	static const char *const yes[] = { "on", "yes", "true", "1" };
	static const char *const no[] = { "off", "no", "false", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(val, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(val, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return cfg_why(why, "'%s' is not a boolean (on/off, yes/no, true/false, 1/0)", val);
}

/* "host:port", "[v6]:port", ":port" or "*:port" (any address). */
static int cfg_parse_addr(const char *val, struct sockaddr_storage *ss,
                          socklen_t *sslen, char *why)
{
	char host[256];
	const char *port, *h = val;
	size_t hlen;
	struct addrinfo hints, *res = NULL;
	unsigned long long pnum;
	int rc;

	if (*val == '[') {
		const char *close = strchr(val, ']');

		if (!close || close[1] != ':')
			return cfg_why(why, "'%s': expected [IPv6]:port", val);
		h = val + 1;
		hlen = (size_t)(close - h);
		port = close + 2;
	} else {
		const char *colon = strrchr(val, ':');

		if (!colon)
			return cfg_why(why, "'%s': expected host:port", val);
		if (memchr(val, ':', (size_t)(colon - val)))
			return cfg_why(why, "'%s': IPv6 addresses need brackets: [addr]:port", val);
		hlen = (size_t)(colon - val);
		port = colon + 1;
	}
	if (hlen >= sizeof(host))
		return cfg_why(why, "'%s': host too long", val);
	memcpy(host, h, hlen);
	host[hlen] = 0;
	if (cfg_parse_uint(port, 1, 65535, &pnum, why) < 0)
		return cfg_why(why, "'%s': bad port '%s'", val, port);

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo((hlen == 0 || strcmp(host, "*") == 0) ? NULL : host, port,
	                 &hints, &res);
	if (rc != 0)
		return cfg_why(why, "'%s': %s", val, gai_strerror(rc));
	if (res->ai_addrlen > sizeof(*ss)) {
		freeaddrinfo(res);
		return cfg_why(why, "'%s': address too long", val);
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* RFC 9110 token characters: what a header name may contain. */
static int cfg_is_tchar(unsigned char ch)
{
	return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static void cfg_free_list(char ***list, size_t *n)
{
	for (size_t i = 0; i < *n; i++) {
		free((*list)[i]);
		(*list)[i] = NULL;
	}
	free(*list);
	*list = NULL;
	*n = 0;
}

/* Appends the space-separated header names of <val> to <*list>. <lower> folds
 * them to lower case. <*where> (optional) gets a copy of <loc> per entry. */
static int cfg_list_append(char ***list, size_t *n, char ***where, const char *loc,
                           const char *val, int lower, char *why)
{
	const char *p = val;

	while (*p) {
		const char *s;
		size_t len;
		char **nl, *item;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		s = p;
		while (*p && *p != ' ' && *p != '\t' && *p != ',')
			p++;
		len = (size_t)(p - s);
		for (size_t i = 0; i < len; i++)
			if (!cfg_is_tchar((unsigned char)s[i]))
				return cfg_why(why, "'%.*s' is not a valid header name", (int)len, s);
		item = strndup(s, len);
		if (!item)
			return cfg_why(why, "out of memory");
		if (lower)
			for (size_t i = 0; i < len; i++)
				item[i] = (char)tolower((unsigned char)item[i]);
		nl = realloc(*list, (*n + 1) * sizeof(*nl));
		if (!nl) {
			free(item);
			return cfg_why(why, "out of memory");
		}
		*list = nl;
		if (where) {
			char **nw = realloc(*where, (*n + 1) * sizeof(*nw));

			if (!nw) {
				free(item);
				return cfg_why(why, "out of memory");
			}
			*where = nw;
			nw[*n] = strdup(loc);
			if (!nw[*n]) {
				free(item);
				return cfg_why(why, "out of memory");
			}
		}
		nl[(*n)++] = item;
	}
	return 0;
}

/* ---- per-key parsers ---- */

static int cfg_p_http_version(struct cfg_builder *b, const char *val, char *why)
{
	if (strcmp(val, "1.1") == 0)
		b->c->upstream_http_version = CFG_HTTP_1_1;
	else if (strcmp(val, "h2c") == 0)
		b->c->upstream_http_version = CFG_HTTP_H2C;
	else
		return cfg_why(why, "'%s': expected 1.1 or h2c", val);
	return 0;
}

static int cfg_p_subject_claim(struct cfg_builder *b, const char *val, char *why)
{
	size_t n = strlen(val);

	if (n > SUBJECT_MAX)
		return cfg_why(why, "longer than %d characters", SUBJECT_MAX);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)val[i] < 0x21 || (unsigned char)val[i] > 0x7e ||
		    val[i] == '"' || val[i] == '\\')
			return cfg_why(why, "'%s': a claim name is visible ASCII without quotes "
			               "or backslashes", val);
	free(b->c->subject_claim);
	b->c->subject_claim = NULL;
	return cfg_strdup(&b->c->subject_claim, val, why);
}

static int cfg_p_subject_header(struct cfg_builder *b, const char *val, char *why)
{
	for (const char *q = val; *q; q++)
		if (!cfg_is_tchar((unsigned char)*q))
			return cfg_why(why, "'%s' is not a valid header name", val);
	free(b->c->subject_header);
	b->c->subject_header = NULL;
	return cfg_strdup(&b->c->subject_header, val, why);
}

static int cfg_p_listen(struct cfg_builder *b, const char *val, char *why)
{
	if (cfg_parse_addr(val, &b->c->listen_addr, &b->c->listen_addrlen, why) < 0)
		return -1;
	return cfg_strdup(&b->c->listen, val, why);
}

static int cfg_p_url(struct cfg_builder *b, const char *val, char *why)
{
	const char *host;

	if (strncasecmp(val, "http://", 7) == 0)
		host = val + 7;
	else if (strncasecmp(val, "https://", 8) == 0)
		host = val + 8;
	else
		return cfg_why(why, "'%s': must start with http:// or https://", val);
	if (*host == 0 || *host == '/' || *host == '?' || *host == ':')
		return cfg_why(why, "'%s': no host", val);
	for (const char *p = val; *p; p++) {
		/* The URL goes on the request line as is: no room for
		 * spaces, controls or a fragment. */
		if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '#')
			return cfg_why(why, "'%s': invalid character in URL", val);
	}
	snprintf(b->url_where, sizeof(b->url_where), "%s", b->where);
	return cfg_strdup(&b->c->user_service_url, val, why);
}

/* upstream-proxy: "none", or a proxy URL. The value may carry credentials
 * (user:password@): errors never echo it. */
static int cfg_p_proxy(struct cfg_builder *b, const char *val, char *why)
{
	static const char *const schemes[] = { "http://", "https://", "socks5://", "socks5h://" };
	size_t i, n = sizeof(schemes) / sizeof(schemes[0]);
	const char *host = NULL;

	if (strcasecmp(val, "none") == 0) {
		free(b->c->upstream_proxy);
		b->c->upstream_proxy = NULL;
		return 0;
	}
	for (i = 0; i < n && !host; i++)
		if (strncasecmp(val, schemes[i], strlen(schemes[i])) == 0)
			host = val + strlen(schemes[i]);
	if (!host)
		return cfg_why(why, "must be none or start with http://, https://, socks5:// "
		               "or socks5h://");
	if (*host == 0 || *host == '/' || *host == ':')
		return cfg_why(why, "no host");
	for (const char *p = val; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return cfg_why(why, "invalid character in URL");
	return cfg_strdup(&b->c->upstream_proxy, val, why);
}

static int cfg_p_forward(struct cfg_builder *b, const char *val, char *why)
{
	if (b->fwd_src != b->src) {
		cfg_free_list(&b->c->forward_headers, &b->c->n_forward_headers);
		b->fwd_src = b->src;
	}
	if (cfg_list_append(&b->c->forward_headers, &b->c->n_forward_headers,
	                    NULL, NULL, val, 1, why) < 0)
		return -1;
	/* W3C trace context is checked and re-formatted by the agent, never
	 * forwarded as the client sent it. */
	for (size_t i = 0; i < b->c->n_forward_headers; i++)
		if (strcmp(b->c->forward_headers[i], "traceparent") == 0 ||
		    strcmp(b->c->forward_headers[i], "tracestate") == 0)
			return cfg_why(why, "'%s' is W3C trace context: the agent checks it and "
			               "sends it itself (trace-new-span, trace-generate), never as given",
			               b->c->forward_headers[i]);
	return 0;
}

/* TLS files must be readable now: failing at the first request is worse. */
static int cfg_p_file(char **dst, const char *val, char *why)
{
	if (access(val, R_OK) != 0)
		return cfg_why(why, "'%s': %s", val, strerror(errno));
	return cfg_strdup(dst, val, why);
}

static int cfg_p_ca(struct cfg_builder *b, const char *val, char *why)
{
	return cfg_p_file(&b->c->ca_file, val, why);
}

static int cfg_p_cert(struct cfg_builder *b, const char *val, char *why)
{
	return cfg_p_file(&b->c->client_cert, val, why);
}

static int cfg_p_key(struct cfg_builder *b, const char *val, char *why)
{
	return cfg_p_file(&b->c->client_key, val, why);
}

static int cfg_p_prefix(struct cfg_builder *b, const char *val, char *why)
{
	for (const char *p = val; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.')
			return cfg_why(why, "'%s': only [A-Za-z0-9._] allowed", val);
	snprintf(b->prefix_where, sizeof(b->prefix_where), "%s", b->where);
	return cfg_strdup(&b->c->var_prefix, val, why);
}

static int cfg_p_copy(struct cfg_builder *b, const char *val, char *why)
{
	if (b->copy_src != b->src) {
		for (size_t i = 0; i < b->c->n_copy_headers; i++) {
			free(b->copy_where[i]);
			b->copy_where[i] = NULL;
		}
		free(b->copy_where);
		b->copy_where = NULL;
		cfg_free_list(&b->c->copy_headers, &b->c->n_copy_headers);
		b->copy_src = b->src;
	}
	return cfg_list_append(&b->c->copy_headers, &b->c->n_copy_headers,
	                       &b->copy_where, b->where, val, 0, why);
}

static int cfg_p_upstream_client(struct cfg_builder *b, const char *val, char *why)
{
	static const char *const names[CFG_UPC_ENTRIES] = { "auto", "native", "curl" };

	for (int i = 0; i < CFG_UPC_ENTRIES; i++) {
		if (strcasecmp(val, names[i]) == 0) {
			b->c->upstream_client = i;
			snprintf(b->client_where, sizeof(b->client_where), "%s", b->where);
			return 0;
		}
	}
	return cfg_why(why, "'%s': expected auto, native or curl", val);
}

/* Space/comma-separated: connect, reset, timeout, 502, 503, 504, or none. */
static int cfg_p_retry_on(struct cfg_builder *b, const char *val, char *why)
{
	static const struct { const char *name; unsigned bit; } words[] = {
		{ "connect", H1C_RETRY_CONNECT }, { "reset", H1C_RETRY_RESET },
		{ "timeout", H1C_RETRY_TIMEOUT }, { "502", H1C_RETRY_502 },
		{ "503", H1C_RETRY_503 }, { "504", H1C_RETRY_504 }, { "none", 0 },
	};
	unsigned mask = 0;
	const char *p = val;

	while (*p) {
		size_t n, i;

		p += strspn(p, " \t,");
		n = strcspn(p, " \t,");
		if (n == 0)
			break;
		for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
			if (strlen(words[i].name) == n && strncasecmp(p, words[i].name, n) == 0)
				break;
		if (i == sizeof(words) / sizeof(words[0]))
			return cfg_why(why, "'%.*s': expected connect, reset, timeout, 502, 503, "
			               "504 or none", (int)n, p);
		mask |= words[i].bit;
		p += n;
	}
	b->c->upstream_retry_on = mask;
	return 0;
}

/* Decimals of a ratio: thousandths, as BREAKER_RATIO_ONE. */
#define CFG_RATIO_DECIMALS 3

/* A ratio 0..1 with at most three decimals ("0", "0.5", "1", ".25"), kept in
 * thousandths. */
static int cfg_p_ratio(struct cfg_builder *b, const char *val, char *why)
{
	const char *p = val;
	unsigned whole = 0, frac = 0, digits = 0;

	if (*p >= '0' && *p <= '9')
		whole = (unsigned)(*p++ - '0');
	else if (*p != '.')
		return cfg_why(why, "'%s': expected a ratio from 0 to 1 (e.g. 0.5)", val);
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9' && digits < CFG_RATIO_DECIMALS) {
			frac = frac * 10 + (unsigned)(*p++ - '0');
			digits++;
		}
		if (!digits)
			return cfg_why(why, "'%s': expected a ratio from 0 to 1 (e.g. 0.5)", val);
		for (; digits < CFG_RATIO_DECIMALS; digits++)
			frac *= 10;
	}
	if (*p || whole > 1 || (whole == 1 && frac))
		return cfg_why(why, "'%s': expected a ratio from 0 to 1 with at most three "
		               "decimals (e.g. 0.5)", val);
	b->c->breaker_ratio_pm = whole * BREAKER_RATIO_ONE + frac;
	return 0;
}

static int cfg_p_log_level(struct cfg_builder *b, const char *val, char *why)
{
	int l = log_level_parse(val);

	if (l < 0)
		return cfg_why(why, "'%s': expected error, warn, info, access or debug", val);
	b->c->log_level = l;
	return 0;
}

/* The admin (metrics/health) listener: an address, or "off". */
static int cfg_p_admin_listen(struct cfg_builder *b, const char *val, char *why)
{
	if (strcasecmp(val, "off") == 0) {
		memset(&b->c->admin_addr, 0, sizeof(b->c->admin_addr));
		b->c->admin_addrlen = 0;
	} else if (cfg_parse_addr(val, &b->c->admin_addr, &b->c->admin_addrlen, why) < 0) {
		return -1;
	}
	return cfg_strdup(&b->c->admin_listen, val, why);
}

/* An admin token is a shared secret on a loopback listener: long enough not
 * to be guessed, printable, no spaces (it is compared with the Authorization
 * header's credentials). Never echoed in errors. */
static int cfg_p_admin_token(struct cfg_builder *b, const char *val, char *why)
{
	size_t n = strlen(val);

	if (n < 16)
		return cfg_why(why, "too short: at least 16 characters");
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)val[i] <= ' ' || (unsigned char)val[i] >= 0x7f)
			return cfg_why(why, "only visible ASCII characters, no spaces");
	return cfg_strdup(&b->c->admin_token, val, why);
}

/* haproxy-runtime-socket: "off", an absolute unix path or IP:port. */
static int cfg_p_hapi_socket(struct cfg_builder *b, const char *val, char *why)
{
	if (strcasecmp(val, "off") == 0) {
		free(b->c->haproxy_runtime_socket);
		b->c->haproxy_runtime_socket = NULL;
		return 0;
	}
	if (!hapi_addr_ok(val))
		return cfg_why(why, "'%s': expected off, an absolute unix socket path, "
		               "IPv4:port or [IPv6]:port", val);
	return cfg_strdup(&b->c->haproxy_runtime_socket, val, why);
}

/* haproxy-l1-map, haproxy-l1-tombstones: names on a runtime API command line. */
static int cfg_p_hapi_map(struct cfg_builder *b, const char *val, char *why)
{
	if (!hapi_name_ok(val))
		return cfg_why(why, "'%s': visible ASCII, no spaces, quotes, ';' or '\\'", val);
	return cfg_strdup(&b->c->haproxy_l1_map, val, why);
}

static int cfg_p_hapi_tomb(struct cfg_builder *b, const char *val, char *why)
{
	if (!hapi_name_ok(val))
		return cfg_why(why, "'%s': visible ASCII, no spaces, quotes, ';' or '\\'", val);
	return cfg_strdup(&b->c->haproxy_l1_tombstones, val, why);
}

/* A secret given as the value itself or as "file:PATH": the file's bytes
 * (at most CFG_LOG_HASH_KEY_FILE_MAX, one final newline dropped) are read
 * into <buf>. Sets *<k>, *<n> to the secret's bytes (<val> or <buf>).
 * Returns 0, or -1 with <why> naming the file, never the secret; <buf> is
 * cleansed on failure. */
static int cfg_secret_read(const char *val, char buf[CFG_LOG_HASH_KEY_FILE_MAX + 1],
                           const char **k, size_t *n, char *why)
{
	FILE *f;
	int ok;

	*k = val;
	*n = strlen(val);
	if (strncmp(val, "file:", 5) != 0)
		return 0;
	f = fopen(val + 5, "rb");
	if (!f)
		return cfg_why(why, "cannot open '%s': %s", val + 5, strerror(errno));
	*n = fread(buf, 1, CFG_LOG_HASH_KEY_FILE_MAX + 1, f);
	ok = !ferror(f);
	fclose(f);
	if (!ok || *n > CFG_LOG_HASH_KEY_FILE_MAX) {
		OPENSSL_cleanse(buf, CFG_LOG_HASH_KEY_FILE_MAX + 1);
		return cfg_why(why, "cannot read '%s' (at most %d bytes)", val + 5,
		               CFG_LOG_HASH_KEY_FILE_MAX);
	}
	if (*n && buf[*n - 1] == '\n')
		(*n)--;
	if (*n && buf[*n - 1] == '\r')
		(*n)--;
	*k = buf;
	return 0;
}

/* log-hash-key: the key of the access log's credential hash, given as the
 * value itself or as "file:PATH" (the file's bytes, one final newline
 * dropped). At least 16 bytes. Only its SHA-256 is kept; it is never echoed
 * in errors or logs. */
static int cfg_p_log_hash_key(struct cfg_builder *b, const char *val, char *why)
{
	char buf[CFG_LOG_HASH_KEY_FILE_MAX + 1];
	const char *k;
	size_t n;
	int ok;

	if (cfg_secret_read(val, buf, &k, &n, why) < 0)
		return -1;
	if (n < CFG_LOG_HASH_KEY_MIN) {
		OPENSSL_cleanse(buf, sizeof(buf));
		return cfg_why(why, "too short: at least %d bytes", CFG_LOG_HASH_KEY_MIN);
	}
	ok = EVP_Digest(k, n, b->c->log_hash_key, NULL, EVP_sha256(), NULL) == 1;
	OPENSSL_cleanse(buf, sizeof(buf));
	if (!ok)
		return cfg_why(why, "SHA-256 unavailable");
	b->c->log_hash_key_set = 1;
	return 0;
}

static int cfg_p_cache_entries(struct cfg_builder *b, const char *val, char *why)
{
	unsigned long long v;

	/* 2^28: cache_new()'s own bound (bucket arrays). */
	if (cfg_parse_uint(val, 1, 1ull << 28, &v, why) < 0)
		return -1;
	b->c->cache_max_entries = (size_t)v;
	return 0;
}

static int cfg_p_cache_shards(struct cfg_builder *b, const char *val, char *why)
{
	unsigned long long v;

	if (cfg_parse_uint(val, 1, 4096, &v, why) < 0)
		return -1;
	if (v & (v - 1))
		return cfg_why(why, "%llu is not a power of two", v);
	b->c->cache_shards = (unsigned)v;
	return 0;
}

/* Cache durations: up to a day; 0 allowed (each key says what 0 means). */
#define CFG_CACHE_DUR_MAX 86400000u
/* l1-max-ttl: an L1 entry outlives a revocation that bypasses the gateway by
 * up to this; more than an hour is never what an operator means. */
#define CFG_L1_TTL_MAX 3600000u

/* Cookie names: RFC 6265 tokens (the header-name charset), case kept. */
static int cfg_p_cache_key_cookies(struct cfg_builder *b, const char *val, char *why)
{
	if (b->cookies_src != b->src) {
		cfg_free_list(&b->c->cache_key_cookies, &b->c->n_cache_key_cookies);
		b->cookies_src = b->src;
	}
	if (cfg_list_append(&b->c->cache_key_cookies, &b->c->n_cache_key_cookies,
	                    NULL, NULL, val, 0, why) < 0) {
		/* The generic message speaks of header names. */
		if (strstr(why, "header name"))
			return cfg_why(why, "'%s': cookie names are tokens (no '=', ';', spaces)", val);
		return -1;
	}
	if (b->c->n_cache_key_cookies > CACHEKEY_MAX_COOKIES)
		return cfg_why(why, "more than %d cookie names", CACHEKEY_MAX_COOKIES);
	return 0;
}

/* redis-address: host:port, [v6]:port, unix:/path, or none. A host name is
 * resolved here, once (the worker loops never block on DNS). */
static int cfg_p_redis_address(struct cfg_builder *b, const char *val, char *why)
{
	struct cfg *c = b->c;
	struct addrinfo hints, *res = NULL;
	char host[256], num[INET6_ADDRSTRLEN];
	const char *colon, *h = val;
	size_t hlen;
	char *endp;
	long port;
	int rc;

	free(c->redis_address); c->redis_address = NULL;
	free(c->redis_host); c->redis_host = NULL;
	free(c->redis_path); c->redis_path = NULL;
	if (strcmp(val, "none") == 0 || strcmp(val, "off") == 0)
		return 0;
	if (strncmp(val, "unix:", 5) == 0) {
		if (val[5] != '/' || strlen(val + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return cfg_why(why, "unix: needs an absolute socket path (< %zu bytes)",
			               sizeof(((struct sockaddr_un *)0)->sun_path));
		if (cfg_strdup(&c->redis_path, val + 5, why) < 0)
			return -1;
		return cfg_strdup(&c->redis_address, val, why);
	}
	colon = strrchr(val, ':');
	if (!colon || colon == val)
		return cfg_why(why, "'%s': expected host:port, [v6]:port or unix:/path", val);
	hlen = (size_t)(colon - val);
	if (val[0] == '[') {
		if (hlen < 3 || val[hlen - 1] != ']')
			return cfg_why(why, "'%s': expected [v6]:port", val);
		h = val + 1;
		hlen -= 2;
	}
	if (hlen >= sizeof(host))
		return cfg_why(why, "host name too long");
	memcpy(host, h, hlen);
	host[hlen] = 0;
	errno = 0;
	port = strtol(colon + 1, &endp, 10);
	if (!isdigit((unsigned char)colon[1]) || *endp || errno || port < 1 || port > 65535)
		return cfg_why(why, "'%s': port must be 1..65535", val);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0 || !res)
		return cfg_why(why, "cannot resolve '%s': %s", host, gai_strerror(rc));
	rc = getnameinfo(res->ai_addr, res->ai_addrlen, num, sizeof(num), NULL, 0, NI_NUMERICHOST);
	freeaddrinfo(res);
	if (rc != 0)
		return cfg_why(why, "cannot format the address of '%s'", host);
	c->redis_port = (int)port;
	if (cfg_strdup(&c->redis_host, num, why) < 0)
		return -1;
	return cfg_strdup(&c->redis_address, val, why);
}

/* Visible ASCII without spaces: sent in AUTH; never echoed in errors. */
static int cfg_redis_visible(const char *val, char *why)
{
	for (const char *p = val; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return cfg_why(why, "only visible ASCII characters, no spaces");
	return 0;
}

static int cfg_p_redis_user(struct cfg_builder *b, const char *val, char *why)
{
	if (cfg_redis_visible(val, why) < 0)
		return -1;
	return cfg_strdup(&b->c->redis_user, val, why);
}

static int cfg_p_redis_password(struct cfg_builder *b, const char *val, char *why)
{
	if (cfg_redis_visible(val, why) < 0)
		return -1;
	if (b->c->redis_password)
		OPENSSL_cleanse(b->c->redis_password, strlen(b->c->redis_password));
	return cfg_strdup(&b->c->redis_password, val, why);
}

static int cfg_p_redis_prefix(struct cfg_builder *b, const char *val, char *why)
{
	if (strlen(val) > FLEETVAL_PREFIX_MAX)
		return cfg_why(why, "longer than %d bytes", FLEETVAL_PREFIX_MAX);
	if (cfg_redis_visible(val, why) < 0)
		return -1;
	if (strpbrk(val, "{}"))
		return cfg_why(why, "no '{' or '}' (they delimit Redis hash tags)");
	return cfg_strdup(&b->c->redis_prefix, val, why);
}

/* redis-key-secret: the value itself or file:PATH (one final newline
 * dropped), at least CFG_REDIS_SECRET_MIN bytes. Never echoed. */
static int cfg_p_redis_key_secret(struct cfg_builder *b, const char *val, char *why)
{
	char buf[CFG_LOG_HASH_KEY_FILE_MAX + 1];
	const char *k;
	size_t n;
	uint8_t *copy;

	if (cfg_secret_read(val, buf, &k, &n, why) < 0)
		return -1;
	if (n < CFG_REDIS_SECRET_MIN) {
		OPENSSL_cleanse(buf, sizeof(buf));
		return cfg_why(why, "too short: at least %d bytes", CFG_REDIS_SECRET_MIN);
	}
	copy = malloc(n);
	if (!copy) {
		OPENSSL_cleanse(buf, sizeof(buf));
		return cfg_why(why, "out of memory");
	}
	memcpy(copy, k, n);
	OPENSSL_cleanse(buf, sizeof(buf));
	if (b->c->redis_key_secret)
		OPENSSL_cleanse(b->c->redis_key_secret, b->c->redis_key_secret_len);
	free(b->c->redis_key_secret);
	b->c->redis_key_secret = copy;
	b->c->redis_key_secret_len = n;
	return 0;
}

/* Parses a CFG_K_UINT/SIZE/DUR/BOOL key <k> into its field of <c>. */
static int cfg_p_num(struct cfg *c, const struct cfg_key *k, const char *val, char *why)
{
	unsigned long long v = 0;
	void *field = (char *)c + k->off;

	switch (k->kind) {
	case CFG_K_UINT:
		if (cfg_parse_uint(val, k->min, k->max, &v, why) < 0)
			return -1;
		break;
	case CFG_K_SIZE:
		if (cfg_parse_size(val, k->min, k->max, &v, why) < 0)
			return -1;
		break;
	case CFG_K_DUR: {
		unsigned ms = 0;

		if (cfg_parse_duration(val, (unsigned)k->min, (unsigned)k->max, &ms, why) < 0)
			return -1;
		v = ms;
		break;
	}
	case CFG_K_BOOL: {
		int b = 0;

		if (cfg_parse_bool_str(val, &b, why) < 0)
			return -1;
		v = (unsigned long long)b;
		break;
	}
	default:
		return cfg_why(why, "internal: key kind %d", (int)k->kind);
	}
	/* The table's bounds fit the field: the narrowing is exact. */
	switch (k->width) {
	case sizeof(uint32_t): {
		uint32_t x = (uint32_t)v;

		memcpy(field, &x, sizeof(x));
		return 0;
	}
	case sizeof(uint64_t): {
		uint64_t x = (uint64_t)v;

		memcpy(field, &x, sizeof(x));
		return 0;
	}
	default:
		return cfg_why(why, "internal: field width %zu", k->width);
	}
}

static const struct cfg_key cfg_keys[] = {
	{ "listen", CFG_DEFAULT_LISTEN,
	  "SPOP listen address (host:port, [v6]:port)", CFG_FN(cfg_p_listen) },
	{ "workers", "0", "worker threads (0 = CPU count)", CFG_NUM(CFG_K_UINT, workers, 0, 1024) },
	{ "max-frame-size", "16380",
	  "our SPOP max frame size (256..1048576)", CFG_NUM(CFG_K_SIZE, max_frame_size, 256, 1048576) },
	{ "max-connections", "1024",
	  "SPOP connections per worker; at the limit the one idle longest (or stuck "
	  "before HELLO or mid-frame) makes room", CFG_NUM(CFG_K_UINT, max_connections, 1, 1000000) },
	{ "idle-timeout", "90s",
	  "close an SPOP connection idle this long (0 = never); keep above HAProxy's "
	  "SPOE timeout idle and the SPOE backend's timeout server",
	  CFG_NUM(CFG_K_DUR, idle_timeout_ms, 0, 3600000) },
	{ "frame-timeout", "5s",
	  "close an SPOP connection whose frame is not complete this long after its "
	  "first bytes (slow writer)", CFG_NUM(CFG_K_DUR, frame_timeout_ms, 100, 600000) },
	{ "user-service-url", "http://127.0.0.1:8101/api/user/token",
	  "user service URL; request_uri= is appended", CFG_FN(cfg_p_url) },
	{ "forward-headers", "cookie authorization x-example-authorization",
	  "SPOE args forwarded as request headers", CFG_FN(cfg_p_forward) },
	{ "timeout", "1000ms",
	  "whole user-service exchange (keep below HAProxy's timeout processing)",
	  CFG_NUM(CFG_K_DUR, timeout_ms, 1, 3600000) },
	{ "connect-timeout", "300ms", "user-service connect timeout", CFG_NUM(CFG_K_DUR, connect_timeout_ms, 1, 3600000) },
	{ "max-response-size", "8192",
	  "response body bound in bytes; bigger = error", CFG_NUM(CFG_K_SIZE, max_response_size, 1, 64 * 1024 * 1024) },
	{ "keepalive-max", "64",
	  "idle keep-alive connections per worker (CURLMOPT_MAXCONNECTS)", CFG_NUM(CFG_K_UINT, keepalive_max, 0, 100000) },
	{ "keepalive-idle-timeout", "118s",
	  "native client: an idle keep-alive connection older than this is closed, not reused",
	  CFG_NUM(CFG_K_DUR, keepalive_idle_timeout_ms, 1, 3600000) },
	{ "max-upstream-connections", "64",
	  "user-service connections per worker; more requests queue (0 = unlimited)",
	  CFG_NUM(CFG_K_UINT, max_upstream_conns, 0, 100000) },
	{ "upstream-proxy", "none",
	  "proxy for user-service requests (http://, https://, socks5[h]://host:port); "
	  "none = direct, proxy environment variables ignored", CFG_FN(cfg_p_proxy) },
	{ "upstream-client", "auto",
	  "auto (native client, HTTP/1.1 or h2c, for http:// with an IP address, else libcurl), "
	  "native or curl",
	  CFG_FN(cfg_p_upstream_client) },
	{ "upstream-retries", "1",
	  "extra attempts after a retryable failure (both clients), within timeout",
	  CFG_NUM(CFG_K_UINT, upstream_retries, 0, 10) },
	{ "upstream-retry-on", "connect",
	  "what is retried: connect, reset, timeout, 502, 503, 504 (list) or none",
	  CFG_FN(cfg_p_retry_on) },
	{ "upstream-attempt-timeout", "0",
	  "per-attempt timeout (0 = the rest of timeout)",
	  CFG_NUM(CFG_K_DUR, upstream_attempt_timeout_ms, 0, 3600000) },
	{ "upstream-retry-backoff", "10ms",
	  "base delay before a retry, doubled per attempt, jittered to [50%, 100%]",
	  CFG_NUM(CFG_K_DUR, upstream_retry_backoff_ms, 0, 60000) },
	{ "subject-claim", NULL,
	  "JWT claim of the 2xx token exposed as the subject variable (e.g. sub)",
	  CFG_FN(cfg_p_subject_claim) },
	{ "subject-header", NULL,
	  "user-service response header exposed as the subject variable (instead of subject-claim)",
	  CFG_FN(cfg_p_subject_header) },
	{ "trace-new-span", "off",
	  "W3C traceparent to the user service: on = a new parent-id (the agent as a span), "
	  "off = the incoming one as is", CFG_NUM(CFG_K_BOOL, trace_new_span, 0, 1) },
	{ "trace-generate", "off",
	  "a request without a valid traceparent gets a new trace (off: none is invented)",
	  CFG_NUM(CFG_K_BOOL, trace_generate, 0, 1) },
	{ "upstream-http-version", "1.1",
	  "to the user service: 1.1 (keep-alive) or h2c (HTTP/2 cleartext, prior knowledge, "
	  "one multiplexed connection per worker, native client over libnghttp2; http:// only)",
	  CFG_FN(cfg_p_http_version) },
	{ "breaker", "off",
	  "circuit breaker: after breaker-failures consecutive failures (no answer or 5xx) "
	  "answer outcome=error without calling, one probe per breaker-open-time",
	  CFG_NUM(CFG_K_BOOL, breaker, 0, 1) },
	{ "breaker-failures", "5", "consecutive user-service failures that open the breaker",
	  CFG_NUM(CFG_K_UINT, breaker_failures, 1, 1000000) },
	{ "breaker-open-time", "5s", "how long the breaker stays open before one probe request",
	  CFG_NUM(CFG_K_DUR, breaker_open_ms, 1, 3600000) },
	{ "breaker-failure-ratio", "0",
	  "also open the breaker when at least this share (0..1, e.g. 0.5) of the calls in "
	  "breaker-window failed; 0 = off", CFG_FN(cfg_p_ratio) },
	{ "breaker-window", "10s", "sliding window of breaker-failure-ratio",
	  CFG_NUM(CFG_K_DUR, breaker_window_ms, 10, 3600000) },
	{ "breaker-min-requests", "20",
	  "calls the window must hold before breaker-failure-ratio can open the breaker",
	  CFG_NUM(CFG_K_UINT, breaker_min_requests, 1, 1000000) },
	{ "ca-file", NULL, "CA bundle for https (default: system store)", CFG_FN(cfg_p_ca) },
	{ "client-cert", NULL, "client certificate for https", CFG_FN(cfg_p_cert) },
	{ "client-key", NULL, "client private key for https", CFG_FN(cfg_p_key) },
	{ "tls-verify", "on", "https peer and host verification", CFG_NUM(CFG_K_BOOL, tls_verify, 0, 1) },
	{ "var-prefix", "auth",
	  "must equal the SPOE option var-prefix (used for name-length checks)", CFG_FN(cfg_p_prefix) },
	{ "copy-header", NULL,
	  "response headers copied as hdr.<name> (repeatable, space-separated)", CFG_FN(cfg_p_copy) },
	{ "log-level", "info", "error, warn, info, access or debug", CFG_FN(cfg_p_log_level) },
	{ "drain-timeout", "5s",
	  "on SIGTERM, how long in-flight exchanges may take", CFG_NUM(CFG_K_DUR, drain_timeout_ms, 0, 3600000) },
	{ "admin-listen", CFG_DEFAULT_ADMIN_LISTEN,
	  "HTTP listener for /metrics, /healthz, POST /cache/invalidate (host:port, [v6]:port, or off)",
	  CFG_FN(cfg_p_admin_listen) },
	{ "admin-token", NULL,
	  "bearer token for POST /cache/invalidate (>= 16 chars); unset = endpoint answers 403",
	  CFG_FN(cfg_p_admin_token) },
	{ "log-hash-key", NULL,
	  "key of the access log's cred= hash (>= 16 bytes, or file:PATH); unset = random "
	  "per process (hashes then match only within one process)",
	  CFG_FN(cfg_p_log_hash_key) },
	{ "cache", "off",
	  "decision cache (on/off); off by default: a cached allow outlives a revocation "
	  "at the user service by up to cache-ttl", CFG_NUM(CFG_K_BOOL, cache, 0, 1) },
	{ "cache-max-entries", "100000", "cache entry bound (whole process)", CFG_FN(cfg_p_cache_entries) },
	{ "cache-max-bytes", "64m", "cache byte bound (per entry: 120 + decision size)",
	  CFG_NUM(CFG_K_SIZE, cache_max_bytes, 4096, 1ull << 40) },
	{ "cache-shards", "64", "cache shards, a power of two (lowered for small bounds)",
	  CFG_FN(cfg_p_cache_shards) },
	{ "cache-ttl", "10s", "TTL of a 2xx without Cache-Control max-age/s-maxage",
	  CFG_NUM(CFG_K_DUR, cache_ttl_ms, 0, CFG_CACHE_DUR_MAX) },
	{ "cache-deny-ttl", "2s", "TTL bound for 3xx/4xx answers (0 = never cache denials)",
	  CFG_NUM(CFG_K_DUR, cache_deny_ttl_ms, 0, CFG_CACHE_DUR_MAX) },
	{ "cache-max-ttl", "5m", "cap on every TTL, the service's max-age included (0 = none)",
	  CFG_NUM(CFG_K_DUR, cache_max_ttl_ms, 0, CFG_CACHE_DUR_MAX) },
	{ "cache-stale-grace", "0",
	  "stale-if-error: serve an entry this long past expiry when the service fails (0 = off)",
	  CFG_NUM(CFG_K_DUR, cache_stale_grace_ms, 0, CFG_CACHE_DUR_MAX) },
	{ "cache-logout-hold", "2s",
	  "after a logout, answers for that session are not stored this long", CFG_NUM(CFG_K_DUR, cache_logout_hold_ms, 0, 3600000) },
	{ "cache-key-uri", "on", "the request URI is part of the cache key", CFG_NUM(CFG_K_BOOL, cache_key_uri, 0, 1) },
	{ "cache-key-client", "on", "the X-Forwarded-For sent is part of the cache key",
	  CFG_NUM(CFG_K_BOOL, cache_key_client, 0, 1) },
	{ "cache-key-cookies", NULL,
	  "keep only these cookies of the Cookie header in the key (space-separated, repeatable)",
	  CFG_FN(cfg_p_cache_key_cookies) },
	{ "l1-max-ttl", "5s",
	  "cap on how long HAProxy's L1 may keep an allow (txn.<prefix>.l1_ttl, whole seconds; "
	  "0 = no decision is L1-eligible)", CFG_NUM(CFG_K_DUR, l1_max_ttl_ms, 0, CFG_L1_TTL_MAX) },
	{ "haproxy-runtime-socket", "off",
	  "HAProxy runtime API (stats socket, level admin): unix path or IP:port; POST "
	  "/cache/invalidate then also reaches the L1 (off: the L1 TTL bounds staleness)",
	  CFG_FN(cfg_p_hapi_socket) },
	{ "haproxy-l1-map", "virt@l1",
	  "name of the L1 map on the runtime socket (HAProxy 2.6: the map file's path)",
	  CFG_FN(cfg_p_hapi_map) },
	{ "haproxy-l1-tombstones", "l1_tomb",
	  "name of the L1 tombstone stick table on the runtime socket", CFG_FN(cfg_p_hapi_tomb) },
	{ "redis-address", "none",
	  "fleet: Redis as a second cache level and revocation stream (host:port, [v6]:port, "
	  "unix:/path, or none = single node); read at start only", CFG_FN(cfg_p_redis_address) },
	{ "redis-user", NULL, "fleet: Redis ACL user (AUTH user password)", CFG_FN(cfg_p_redis_user) },
	{ "redis-password", NULL, "fleet: Redis password (AUTH); unset = no AUTH",
	  CFG_FN(cfg_p_redis_password) },
	{ "redis-prefix", "spoa-auth:", "fleet: prefix of every Redis key the agent uses",
	  CFG_FN(cfg_p_redis_prefix) },
	{ "redis-timeout", "20ms",
	  "fleet: per-command budget; a command past it counts as failed (a read is then a miss)",
	  CFG_NUM(CFG_K_DUR, redis_timeout_ms, 1, 10000) },
	{ "redis-key-secret", NULL,
	  "fleet: shared secret (>= 32 bytes, or file:PATH) keying Redis names, value tags "
	  "and cache keys; the same on every agent; required with redis-address",
	  CFG_FN(cfg_p_redis_key_secret) },
	{ "redis-stream-maxlen", "100000", "fleet: approximate length bound of the revocation stream",
	  CFG_NUM(CFG_K_UINT, redis_stream_maxlen, 100, 100000000) },
	{ "redis-disconnected-max-ttl", "5s",
	  "fleet: cap on local cache TTLs while the revocation stream is disconnected",
	  CFG_NUM(CFG_K_DUR, redis_disconnected_max_ttl_ms, 0, CFG_CACHE_DUR_MAX) },
	{ "redis-breaker-failures", "5", "fleet: consecutive Redis command failures that skip Redis",
	  CFG_NUM(CFG_K_UINT, redis_breaker_failures, 1, 1000000) },
	{ "redis-breaker-open-time", "2s", "fleet: how long Redis is skipped before one probe command",
	  CFG_NUM(CFG_K_DUR, redis_breaker_open_ms, 1, 3600000) },
};

#define CFG_NKEYS (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

static const struct cfg_key *cfg_key_find(const char *name, size_t len)
{
	for (size_t i = 0; i < CFG_NKEYS; i++)
		if (strlen(cfg_keys[i].name) == len && memcmp(cfg_keys[i].name, name, len) == 0)
			return &cfg_keys[i];
	return NULL;
}

/* ---- refcount ---- */

struct cfg *cfg_get(struct cfg *c)
{
	atomic_fetch_add_explicit(&c->refcnt, 1, memory_order_relaxed);
	return c;
}

static void cfg_free(struct cfg *c)
{
	free(c->listen); c->listen = NULL;
	free(c->admin_listen); c->admin_listen = NULL;
	free(c->admin_token); c->admin_token = NULL;
	free(c->haproxy_runtime_socket); c->haproxy_runtime_socket = NULL;
	free(c->haproxy_l1_map); c->haproxy_l1_map = NULL;
	free(c->haproxy_l1_tombstones); c->haproxy_l1_tombstones = NULL;
	OPENSSL_cleanse(c->log_hash_key, sizeof(c->log_hash_key));
	cfg_free_list(&c->cache_key_cookies, &c->n_cache_key_cookies);
	free(c->redis_address); c->redis_address = NULL;
	free(c->redis_host); c->redis_host = NULL;
	free(c->redis_path); c->redis_path = NULL;
	free(c->redis_user); c->redis_user = NULL;
	if (c->redis_password)
		OPENSSL_cleanse(c->redis_password, strlen(c->redis_password));
	free(c->redis_password); c->redis_password = NULL;
	free(c->redis_prefix); c->redis_prefix = NULL;
	if (c->redis_key_secret)
		OPENSSL_cleanse(c->redis_key_secret, c->redis_key_secret_len);
	free(c->redis_key_secret); c->redis_key_secret = NULL;
	free(c->user_service_url); c->user_service_url = NULL;
	free(c->upstream_proxy); c->upstream_proxy = NULL;
	free(c->upstream_host); c->upstream_host = NULL;
	cfg_free_list(&c->forward_headers, &c->n_forward_headers);
	free(c->ca_file); c->ca_file = NULL;
	free(c->client_cert); c->client_cert = NULL;
	free(c->client_key); c->client_key = NULL;
	free(c->var_prefix); c->var_prefix = NULL;
	free(c->subject_claim); c->subject_claim = NULL;
	free(c->subject_header); c->subject_header = NULL;
	for (size_t i = 0; i < c->n_copy_headers; i++) {
		free(c->copy_vars ? c->copy_vars[i] : NULL);
		if (c->copy_vars)
			c->copy_vars[i] = NULL;
	}
	free(c->copy_vars); c->copy_vars = NULL;
	cfg_free_list(&c->copy_headers, &c->n_copy_headers);
	free(c);
}

void cfg_put(struct cfg *c)
{
	if (!c)
		return;
	/* acq_rel: the freeing thread must see every other thread's reads done. */
	if (atomic_fetch_sub_explicit(&c->refcnt, 1, memory_order_acq_rel) == 1)
		cfg_free(c);
}

static int cfg_lists_equal(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return 0;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return 0;
	return 1;
}

int cfg_cache_key_changed(const struct cfg *a, const struct cfg *b)
{
	/* The key covers the request; copy-header, var-prefix, subject-claim
	 * (subject-header is a copy slot) and max-frame-size shape the stored
	 * answer (its encoded variables). */
	return strcmp(a->user_service_url, b->user_service_url) != 0 ||
	       strcmp(a->var_prefix, b->var_prefix) != 0 ||
	       strcmp(a->subject_claim ? a->subject_claim : "",
	              b->subject_claim ? b->subject_claim : "") != 0 ||
	       a->max_frame_size != b->max_frame_size ||
	       !cfg_lists_equal(a->copy_headers, a->n_copy_headers,
	                        b->copy_headers, b->n_copy_headers) ||
	       !cfg_lists_equal(a->forward_headers, a->n_forward_headers,
	                        b->forward_headers, b->n_forward_headers) ||
	       a->cache_key_uri != b->cache_key_uri ||
	       a->cache_key_client != b->cache_key_client ||
	       !cfg_lists_equal(a->cache_key_cookies, a->n_cache_key_cookies,
	                        b->cache_key_cookies, b->n_cache_key_cookies);
}

static int cfg_str_eq0(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

int cfg_redis_changed(const struct cfg *a, const struct cfg *b)
{
	return !cfg_str_eq0(a->redis_address, b->redis_address) ||
	       !cfg_str_eq0(a->redis_user, b->redis_user) ||
	       !cfg_str_eq0(a->redis_password, b->redis_password) ||
	       !cfg_str_eq0(a->redis_prefix, b->redis_prefix) ||
	       a->redis_key_secret_len != b->redis_key_secret_len ||
	       (a->redis_key_secret && b->redis_key_secret &&
	        CRYPTO_memcmp(a->redis_key_secret, b->redis_key_secret,
	                      a->redis_key_secret_len) != 0) ||
	       a->redis_timeout_ms != b->redis_timeout_ms ||
	       a->redis_stream_maxlen != b->redis_stream_maxlen ||
	       a->redis_disconnected_max_ttl_ms != b->redis_disconnected_max_ttl_ms ||
	       a->redis_breaker_failures != b->redis_breaker_failures ||
	       a->redis_breaker_open_ms != b->redis_breaker_open_ms;
}

int cfg_forwards_header(const struct cfg *c, const char *name, size_t len)
{
	for (size_t i = 0; i < c->n_forward_headers; i++)
		if (strlen(c->forward_headers[i]) == len &&
		    strncasecmp(c->forward_headers[i], name, len) == 0)
			return 1;
	return 0;
}

/* ---- loading ---- */

/* Applies one key/value. <kname>/<klen> is the key as written. */
static int cfg_apply(struct cfg_builder *b, const char *kname, size_t klen,
                     const char *val, int cmdline, char *err, size_t errlen)
{
	const struct cfg_key *k = cfg_key_find(kname, klen);
	char why[CFG_WHY_MAX];

	if (!k) {
		snprintf(err, errlen, "%s: %s '%s%.*s': unknown %s", b->where,
		         cmdline ? "option" : "key", cmdline ? "--" : "", (int)klen, kname,
		         cmdline ? "option" : "key");
		return -1;
	}
	if (*val == 0) {
		snprintf(err, errlen, "%s: %s '%s%s': missing value", b->where,
		         cmdline ? "option" : "key", cmdline ? "--" : "", k->name);
		return -1;
	}
	why[0] = 0;
	if ((k->kind == CFG_K_FN ? k->parse(b, val, why) : cfg_p_num(b->c, k, val, why)) < 0) {
		snprintf(err, errlen, "%s: %s '%s%s': %s", b->where,
		         cmdline ? "option" : "key", cmdline ? "--" : "", k->name, why);
		return -1;
	}
	return 0;
}

static int cfg_load_file(struct cfg_builder *b, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	int ret = -1;

	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	b->src = CFG_SRC_FILE;
	while (getline(&line, &cap, f) >= 0) {
		char *p = line, *key, *val, *end;
		size_t klen;

		lineno++;
		/* '#' starts a comment at the start of a line or after blanks. */
		for (char *q = p; *q; q++) {
			if (*q == '#' && (q == p || q[-1] == ' ' || q[-1] == '\t')) {
				*q = 0;
				break;
			}
		}
		while (*p == ' ' || *p == '\t')
			p++;
		end = p + strlen(p);
		while (end > p && isspace((unsigned char)end[-1]))
			*--end = 0;
		if (*p == 0)
			continue;
		key = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
		klen = (size_t)(p - key);
		while (*p == ' ' || *p == '\t')
			p++;
		val = p;
		snprintf(b->where, sizeof(b->where), "%s:%u", path, lineno);
		if (cfg_apply(b, key, klen, val, 0, err, errlen) < 0)
			goto out_close;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
		goto out_close;
	}
	ret = 0;
out_close:
	free(line);
	line = NULL;
	fclose(f);
	return ret;
}

static int cfg_load_argv(struct cfg_builder *b, int argc, char *const argv[],
                         char *err, size_t errlen)
{
	b->src = CFG_SRC_CMDLINE;
	snprintf(b->where, sizeof(b->where), "command line");
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *eq, *val;
		size_t klen;

		if (strncmp(a, "--", 2) != 0 || a[2] == 0) {
			snprintf(err, errlen, "command line: '%s': expected --key value", a);
			return -1;
		}
		a += 2;
		eq = strchr(a, '=');
		if (eq) {
			klen = (size_t)(eq - a);
			val = eq + 1;
		} else {
			klen = strlen(a);
			if (!cfg_key_find(a, klen))
				val = "";  /* reported as unknown below */
			else if (i + 1 >= argc)
				val = "";  /* reported as missing below */
			else
				val = argv[++i];
		}
		if (cfg_apply(b, a, klen, val, 1, err, errlen) < 0)
			return -1;
	}
	return 0;
}

/* Checks across keys done once every key is in: h2c needs http:// and a
 * libcurl able to reuse h2c connections unless the native client takes it
 * (http:// to an IP literal, or upstream-client native); subject-claim and subject-header
 * exclude each other; subject-header is captured through the copy-header
 * slots (upstream.c reads those), with no hdr.* variable unless it is also
 * a copy-header. */
static int cfg_validate_late(struct cfg *c, char *err, size_t errlen)
{
	char **nh, **nv;

	if (c->upstream_http_version == CFG_HTTP_H2C &&
	    strncmp(c->user_service_url, "http://", 7) != 0) {
		snprintf(err, errlen, "key 'upstream-http-version': h2c is HTTP/2 without TLS: "
		         "user-service-url must be http://");
		return -1;
	}
	if (c->upstream_http_version == CFG_HTTP_H2C && !c->upstream_native) {
		char why[CFG_WHY_MAX];

		if (!upstream_h2c_supported(why, sizeof(why))) {
			snprintf(err, errlen, "key 'upstream-http-version': h2c: %s", why);
			return -1;
		}
	}
	if (c->redis_address && !c->redis_key_secret) {
		snprintf(err, errlen, "key 'redis-key-secret': required with redis-address (the "
		         "fleet's shared secret, >= %d bytes)", CFG_REDIS_SECRET_MIN);
		return -1;
	}
	if (c->redis_address && !c->cache) {
		snprintf(err, errlen, "key 'redis-address': the fleet is a second level of the "
		         "decision cache: set cache on");
		return -1;
	}
	if (c->redis_user && !c->redis_password) {
		snprintf(err, errlen, "key 'redis-user': needs redis-password (AUTH user password)");
		return -1;
	}
	if (c->subject_claim && c->subject_header) {
		snprintf(err, errlen, "key 'subject-header': set either subject-claim or "
		         "subject-header, not both");
		return -1;
	}
	if (!c->subject_header)
		return 0;
	for (size_t i = 0; i < c->n_copy_headers; i++) {
		if (strcasecmp(c->copy_headers[i], c->subject_header) == 0) {
			c->subject_copy_idx = i;
			return 0;
		}
	}
	nh = realloc(c->copy_headers, (c->n_copy_headers + 1) * sizeof(*nh));
	if (nh)
		c->copy_headers = nh;
	nv = nh ? realloc(c->copy_vars, (c->n_copy_headers + 1) * sizeof(*nv)) : NULL;
	if (nv)
		c->copy_vars = nv;
	if (!nh || !nv || !(nh[c->n_copy_headers] = strdup(c->subject_header))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	nv[c->n_copy_headers] = NULL;
	c->subject_copy_idx = c->n_copy_headers++;
	return 0;
}

/* Cross-key checks: variable names depend on var-prefix. */
static int cfg_validate(struct cfg_builder *b, char *err, size_t errlen)
{
	static const char *const fixed[] = {
		"status", "outcome", "token", "body", "content_type", "location",
		"www_authenticate", "set_cookie", "set_cookie2", "set_cookie3",
		"set_cookie4", "cache", "noop", "invalidated", "trace_id", "subject",
	};
	struct cfg *c = b->c;
	char why[CFG_WHY_MAX];
	int rc;

	/* Which client: the native one needs the address now (names are
	 * resolved here, on the main thread, only when forced to native). */
	c->upstream_native = 0;
	if (c->upstream_proxy && c->upstream_client == CFG_UPC_NATIVE) {
		snprintf(err, errlen, "%s: key 'upstream-client': 'native' never uses a proxy; "
		         "with 'upstream-proxy' set, use 'auto' or 'curl'", b->client_where);
		return -1;
	}
	/* A configured proxy is libcurl's job: auto then means curl. h2c to
	 * an http:// IP (or, forced native, a name) is the native h2c client. */
	if (c->upstream_client != CFG_UPC_CURL && !c->upstream_proxy) {
		rc = h1c_url_parse(c->user_service_url, c->upstream_client == CFG_UPC_NATIVE,
		                   &c->upstream_addr, &c->upstream_addrlen, &c->upstream_host,
		                   &c->upstream_path_off, why, sizeof(why));
		if (rc < 0) {
			snprintf(err, errlen, "%s: key 'user-service-url': %s", b->url_where, why);
			return -1;
		}
		if (rc == 1 && c->upstream_client == CFG_UPC_NATIVE) {
			snprintf(err, errlen, "%s: key 'upstream-client': 'native' needs an http:// "
			         "user-service-url without user:password@ (https goes through libcurl)",
			         b->client_where);
			return -1;
		}
		c->upstream_native = rc == 0;
	}

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		if (varname_check(c->var_prefix, fixed[i], strlen(fixed[i])) != 0) {
			snprintf(err, errlen, "%s: key 'var-prefix': variable 'txn.%s.%s' "
			         "would be invalid (charset [A-Za-z0-9._], at most 63 chars)",
			         b->prefix_where, c->var_prefix, fixed[i]);
			return -1;
		}
	}
	c->copy_vars = calloc(c->n_copy_headers ? c->n_copy_headers : 1, sizeof(*c->copy_vars));
	if (!c->copy_vars) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < c->n_copy_headers; i++) {
		const char *h = c->copy_headers[i];
		char name[128];
		size_t n;

		/* "X-User-Id" -> "hdr.x_user_id" */
		memcpy(name, "hdr.", 4);
		n = varname_from_header(name + 4, sizeof(name) - 4, h, strlen(h));
		if (n)
			n += 4;
		if (n == 0 || varname_check(c->var_prefix, name, n) != 0) {
			snprintf(err, errlen, "%s: key 'copy-header': '%s' gives an invalid "
			         "variable name (charset [A-Za-z0-9._], 'txn.%s.hdr.<name>' at most 63 chars)",
			         b->copy_where ? b->copy_where[i] : b->where, h, c->var_prefix);
			return -1;
		}
		c->copy_vars[i] = strndup(name, n);
		if (!c->copy_vars[i]) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	return 0;
}

struct cfg *cfg_load(const char *path, int argc, char *const argv[],
                     char *err, size_t errlen)
{
	struct cfg_builder b;
	struct cfg *c;

	memset(&b, 0, sizeof(b));
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	atomic_init(&c->refcnt, 1);
	b.c = c;

	b.src = CFG_SRC_DEFAULT;
	for (size_t i = 0; i < CFG_NKEYS; i++) {
		if (!cfg_keys[i].def)
			continue;
		snprintf(b.where, sizeof(b.where), "default");
		if (cfg_apply(&b, cfg_keys[i].name, strlen(cfg_keys[i].name),
		              cfg_keys[i].def, 0, err, errlen) < 0)
			goto out_free_cfg;
	}
	if (path && cfg_load_file(&b, path, err, errlen) < 0)
		goto out_free_cfg;
	if (cfg_load_argv(&b, argc, argv, err, errlen) < 0)
		goto out_free_cfg;
	if (cfg_validate(&b, err, errlen) < 0)
		goto out_free_cfg;

	for (size_t i = 0; i < c->n_copy_headers; i++) {
		free(b.copy_where[i]);
		b.copy_where[i] = NULL;
	}
	free(b.copy_where);
	b.copy_where = NULL;
	/* After copy_where is gone: it may add a copy slot of its own. */
	if (cfg_validate_late(c, err, errlen) < 0) {
		cfg_free(c);
		return NULL;
	}
	return c;

out_free_cfg:
	for (size_t i = 0; i < c->n_copy_headers && b.copy_where; i++) {
		free(b.copy_where[i]);
		b.copy_where[i] = NULL;
	}
	free(b.copy_where);
	b.copy_where = NULL;
	cfg_free(c);
	return NULL;
}

void cfg_print_help(FILE *out)
{
	fprintf(out, "Configuration keys (file: 'key value'; command line: --key value or --key=value):\n");
	for (size_t i = 0; i < CFG_NKEYS; i++) {
		fprintf(out, "  --%-20s %s\n", cfg_keys[i].name, cfg_keys[i].help);
		fprintf(out, "  %-22s (default: %s)\n", "", cfg_keys[i].def ? cfg_keys[i].def : "unset");
	}
	fprintf(out, "Durations: 123ms, 2s, 1m, bare number = ms. Sizes: bytes, k, m.\n");
}
