/*
 * admin.c: the operations HTTP listener (/metrics, /healthz) on libmicrohttpd.
 *
 * libmicrohttpd runs its own polling thread (MHD_USE_INTERNAL_POLLING_THREAD,
 * epoll or poll as available); the handler only sums the workers' counters
 * (metrics_sum(), a short mutex-protected loop) and formats text, so it never
 * touches a worker's loop. The thread is created with every signal blocked,
 * so process signals keep going to the main thread's libev loop.
 */
#include "admin.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>

#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "args.h"
#include "breaker.h"
#include "cache.h"
#include "cachekey.h"
#include "cfg.h"
#include "fleet.h"
#include "hapi.h"
#include "hex.h"
#include "list.h"
#include "log.h"
#include "metrics.h"

#define ADMIN_ERR_MAX 160

static struct {
	struct MHD_Daemon *daemon;
	atomic_int draining;
	pthread_t starter;              /* thread inside admin_start() */
	int starting;
	char last_err[ADMIN_ERR_MAX];   /* last MHD message during admin_start() */
	struct cache *cache;            /* set before admin_start(), cleared after admin_stop() */
	const uint8_t *salt;
	pthread_mutex_t cfg_lock;       /* guards cfg: swapped by reloads */
	struct cfg *cfg;                /* a reference */
} admin = { .cfg_lock = PTHREAD_MUTEX_INITIALIZER };

/* A connection of the admin listener, tracked for eviction. The list is
 * only touched from libmicrohttpd's callbacks, which all run on its one
 * polling thread (MHD_USE_INTERNAL_POLLING_THREAD without thread-per-
 * connection), and at MHD_stop_daemon() once that thread is gone: no lock. */
struct admin_conn {
	int fd;                         /* libmicrohttpd's socket: never closed here */
	int busy;                       /* a request's headers are in, not answered yet */
	int evicted;                    /* shut down, waiting for libmicrohttpd's close */
	struct list link;               /* admin_conns.list */
};

static struct {
	struct list list;               /* of struct admin_conn, least recently
	                                 * active first */
	unsigned n;                     /* tracked and not evicted */
} admin_conns = { LIST_HEAD_INIT(admin_conns.list), 0 };

/* POST bodies kept for /cache/invalidate (form-encoded credentials). */
#define ADMIN_BODY_MAX 16384

struct admin_req {
	size_t len;
	int too_big;
	char body[ADMIN_BODY_MAX + 1];
};

static const char admin_ct_metrics[] = "text/plain; version=0.0.4; charset=utf-8";
static const char admin_ct_text[] = "text/plain; charset=utf-8";

/* libmicrohttpd's messages: to our log; during start also kept for <err>. */
__attribute__((format(printf, 2, 0)))
static void admin_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[ADMIN_ERR_MAX];
	size_t n;

	(void)cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	n = strlen(buf);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (admin.starting && pthread_equal(pthread_self(), admin.starter))
		memcpy(admin.last_err, buf, n + 1);
	log_warn("admin: %s", buf);
}

/* ---- /metrics rendering --------------------------------------------- */

/* An snprintf-style appender: <len> keeps counting past <size>. */
struct admin_out {
	char *buf;
	size_t size;
	size_t len;
};

__attribute__((format(printf, 2, 3)))
static void admin_out_printf(struct admin_out *o, const char *fmt, ...)
{
	va_list ap;
	size_t room = o->len < o->size ? o->size - o->len : 0;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

static void admin_out_head(struct admin_out *o, const char *name, const char *type,
                           const char *help)
{
	admin_out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void admin_out_scalar(struct admin_out *o, const char *name, const char *type,
                             const char *help, uint64_t v)
{
	admin_out_head(o, name, type, help);
	admin_out_printf(o, "%s %llu\n", name, (unsigned long long)v);
}

/* The fleet's Redis metrics (fleet.h); all zero with the fleet off. */
static void admin_fleet_metrics(struct admin_out *o)
{
	struct fleet_stats fs;

	fleet_stats_get(&fs);
	admin_out_scalar(o, "spoa_auth_redis_up", "gauge",
	                 "1 when every worker's Redis command connection is up (0 with the "
	                 "fleet off).", (uint64_t)fs.up);
	admin_out_scalar(o, "spoa_auth_redis_stream_up", "gauge",
	                 "1 while the revocation stream is read (local TTLs are capped to "
	                 "redis-disconnected-max-ttl otherwise).", (uint64_t)fs.stream_up);
	admin_out_head(o, "spoa_auth_redis_commands_total", "counter",
	               "Redis commands by command and result (timeout: past redis-timeout).");
	for (int c = 0; c < FLEET_CMD_ENTRIES; c++)
		for (int r = 0; r < FLEET_CR_ENTRIES; r++)
			admin_out_printf(o, "spoa_auth_redis_commands_total{command=\"%s\","
			                 "result=\"%s\"} %llu\n", fleet_cmd_to_str(c),
			                 fleet_cres_to_str(r), (unsigned long long)fs.commands[c][r]);
	admin_out_head(o, "spoa_auth_redis_l2_results_total", "counter",
	               "Local misses that consulted Redis, by result (skipped: Redis down, "
	               "connecting or its breaker open; bad_value: did not decode or verify).");
	for (int r = 0; r < FLEET_L2_ENTRIES; r++)
		admin_out_printf(o, "spoa_auth_redis_l2_results_total{result=\"%s\"} %llu\n",
		                 fleet_l2_to_str(r), (unsigned long long)fs.l2[r]);
	admin_out_head(o, "spoa_auth_redis_revocations_total", "counter",
	               "Fleet revocations written to the stream (sent) and applied from it "
	               "(received, this agent's own included).");
	admin_out_printf(o, "spoa_auth_redis_revocations_total{direction=\"sent\"} %llu\n",
	                 (unsigned long long)fs.revocations_sent);
	admin_out_printf(o, "spoa_auth_redis_revocations_total{direction=\"received\"} %llu\n",
	                 (unsigned long long)fs.revocations_received);
	admin_out_scalar(o, "spoa_auth_redis_breaker_state", "gauge",
	                 "Redis breaker: 0 closed, 1 open (Redis skipped), 2 half-open.",
	                 (uint64_t)fs.breaker_state);
	admin_out_scalar(o, "spoa_auth_redis_local_flushes_total", "counter",
	                 "Local cache flushes because revocations may have been missed "
	                 "(stream trimmed, deleted, or reached late).", fs.local_flushes);
}


size_t admin_render_metrics(char *buf, size_t size)
{
	static const char *const outcomes[METRICS_OUT_ENTRIES] = { "allow", "deny", "error" };
	static const char *const retry_reasons[METRICS_RETRY_REASONS] = {
		"stale", "connect", "reset", "timeout", "status",
	};
	static const char *const classes[METRICS_UP_CLASSES] = {
		"none", "1xx", "2xx", "3xx", "4xx", "5xx",
	};
	struct admin_out o = { buf, size, 0 };
	struct metrics_snapshot s;
	uint64_t cum = 0;
	int i;

	metrics_sum(&s);

	admin_out_head(&o, "spoa_auth_decisions_total", "counter",
	               "Exchanges answered to HAProxy, by outcome (allow: 2xx, deny: other "
	               "status, error: no usable answer).");
	for (i = 0; i < METRICS_OUT_ENTRIES; i++)
		admin_out_printf(&o, "spoa_auth_decisions_total{outcome=\"%s\"} %llu\n",
		                 outcomes[i], (unsigned long long)s.decisions[i]);

	admin_out_head(&o, "spoa_auth_upstream_requests_total", "counter",
	               "User-service requests by HTTP status class (none: no answer: "
	               "connection error, timeout, response too big).");
	for (i = 0; i < METRICS_UP_CLASSES; i++)
		admin_out_printf(&o, "spoa_auth_upstream_requests_total{class=\"%s\"} %llu\n",
		                 classes[i], (unsigned long long)s.upstream[i]);

	admin_out_head(&o, "spoa_auth_upstream_attempts_total", "counter",
	               "User-service attempts (first tries and retries) by client "
	               "(native: the HTTP/1.1 client, curl: libcurl).");
	for (i = 0; i < METRICS_UP_CLIENTS; i++)
		admin_out_printf(&o, "spoa_auth_upstream_attempts_total{client=\"%s\"} %llu\n",
		                 i ? "native" : "curl", (unsigned long long)s.upstream_attempts[i]);
	admin_out_head(&o, "spoa_auth_upstream_retries_total", "counter",
	               "User-service retries by reason (stale: a reused connection closed "
	               "before any byte; connect, reset, timeout, status: upstream-retry-on).");
	for (i = 0; i < METRICS_RETRY_REASONS; i++)
		admin_out_printf(&o, "spoa_auth_upstream_retries_total{reason=\"%s\"} %llu\n",
		                 retry_reasons[i], (unsigned long long)s.upstream_retries[i]);

	/* _count is the +Inf bucket, computed here so the two always agree. */
	admin_out_head(&o, "spoa_auth_upstream_duration_seconds", "histogram",
	               "User-service request duration.");
	for (i = 0; i < METRICS_LAT_BUCKETS; i++) {
		cum += s.upstream_lat[i];
		if (i < METRICS_LAT_BUCKETS - 1)
			admin_out_printf(&o, "spoa_auth_upstream_duration_seconds_bucket{le=\"%g\"} %llu\n",
			                 metrics_lat_bounds_ms[i] / 1000.0, (unsigned long long)cum);
		else
			admin_out_printf(&o, "spoa_auth_upstream_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
			                 (unsigned long long)cum);
	}
	admin_out_printf(&o, "spoa_auth_upstream_duration_seconds_sum %llu.%06llu\n",
	                 (unsigned long long)(s.upstream_lat_sum_us / 1000000u),
	                 (unsigned long long)(s.upstream_lat_sum_us % 1000000u));
	admin_out_printf(&o, "spoa_auth_upstream_duration_seconds_count %llu\n",
	                 (unsigned long long)cum);

	admin_out_scalar(&o, "spoa_auth_exchanges_in_flight", "gauge",
	                 "Exchanges waiting for the user service.", s.inflight);
	admin_out_scalar(&o, "spoa_auth_spop_connections", "gauge",
	                 "Open SPOP connections from HAProxy.", s.conns);
	admin_out_scalar(&o, "spoa_auth_spop_connections_accepted_total", "counter",
	                 "SPOP connections accepted.", s.conns_total);
	admin_out_scalar(&o, "spoa_auth_spop_connections_refused_total", "counter",
	                 "SPOP connections refused: max-connections reached and the "
	                 "health-check reserve in use.", s.conns_refused);
	admin_out_head(&o, "spoa_auth_spop_connections_closed_total", "counter",
	               "SPOP connections the agent closed itself, by reason (hello: no "
	               "HAPROXY-HELLO in time, idle: idle-timeout, frame: a frame not complete "
	               "within frame-timeout, evicted: made room for a new connection at "
	               "max-connections, reserve: a non-health-check HELLO on a health-check "
	               "reserve slot, every slot busy).");
	for (i = 0; i < METRICS_CLOSE_ENTRIES; i++) {
		static const char *const reasons[METRICS_CLOSE_ENTRIES] = {
			"hello", "idle", "frame", "evicted", "reserve",
		};

		admin_out_printf(&o, "spoa_auth_spop_connections_closed_total{reason=\"%s\"} %llu\n",
		                 reasons[i], (unsigned long long)s.conns_closed[i]);
	}
	admin_out_scalar(&o, "spoa_auth_spop_frames_received_total", "counter",
	                 "SPOP frames received.", s.frames_in);
	admin_out_scalar(&o, "spoa_auth_spop_frames_sent_total", "counter",
	                 "SPOP frames sent.", s.frames_out);
	admin_out_scalar(&o, "spoa_auth_spop_writes_total", "counter",
	                 "Write system calls on SPOP connections (several frames ready in one "
	                 "loop turn leave in one).", s.writes);

	admin_out_head(&o, "spoa_auth_spop_protocol_errors_total", "counter",
	               "Connections closed with AGENT-DISCONNECT for a protocol error, by SPOP "
	               "status code (3: frame too big, 4: invalid frame, ...).");
	for (i = 1; i < METRICS_PROTO_SLOTS - 1; i++)
		admin_out_printf(&o, "spoa_auth_spop_protocol_errors_total{status=\"%d\"} %llu\n",
		                 i, (unsigned long long)s.proto_errors[i]);
	admin_out_printf(&o, "spoa_auth_spop_protocol_errors_total{status=\"other\"} %llu\n",
	                 (unsigned long long)(s.proto_errors[0] +
	                                      s.proto_errors[METRICS_PROTO_SLOTS - 1]));

	admin_out_scalar(&o, "spoa_auth_ack_too_big_total", "counter",
	                 "Decisions replaced by status=0 outcome=error: the ACK would not fit "
	                 "the negotiated frame size.", s.ack_too_big);
	admin_out_scalar(&o, "spoa_auth_claims_skipped_total", "counter",
	                 "msgpack claims skipped: unusable type or variable name too long.",
	                 s.claims_skipped);
	admin_out_head(&o, "spoa_auth_cache_results_total", "counter",
	               "Decisions that consulted the decision cache, by result (hit: fresh "
	               "entry, miss: user service called, coalesced: waited for another "
	               "request's call, stale: expired entry served because the service failed).");
	admin_out_printf(&o, "spoa_auth_cache_results_total{result=\"hit\"} %llu\n",
	                 (unsigned long long)s.cache_hit);
	admin_out_printf(&o, "spoa_auth_cache_results_total{result=\"miss\"} %llu\n",
	                 (unsigned long long)s.cache_miss);
	admin_out_printf(&o, "spoa_auth_cache_results_total{result=\"coalesced\"} %llu\n",
	                 (unsigned long long)s.cache_coalesced);
	admin_out_printf(&o, "spoa_auth_cache_results_total{result=\"stale\"} %llu\n",
	                 (unsigned long long)s.cache_stale);
	{
		struct cache_stats cs;

		memset(&cs, 0, sizeof(cs));
		if (admin.cache)
			cache_stats(admin.cache, &cs);
		admin_out_scalar(&o, "spoa_auth_cache_entries", "gauge",
		                 "Decisions stored in the cache.", cs.entries);
		admin_out_scalar(&o, "spoa_auth_cache_bytes", "gauge",
		                 "Bytes charged to cache-max-bytes.", cs.bytes);
		admin_out_scalar(&o, "spoa_auth_cache_pending", "gauge",
		                 "User-service calls in flight that others may wait for.", cs.pending);
		admin_out_scalar(&o, "spoa_auth_cache_evictions_total", "counter",
		                 "Live entries evicted to respect the bounds.", cs.evictions);
		admin_out_scalar(&o, "spoa_auth_cache_expired_total", "counter",
		                 "Expired entries reclaimed.", cs.expired);
		admin_out_scalar(&o, "spoa_auth_cache_invalidated_total", "counter",
		                 "Entries dropped by logout or POST /cache/invalidate.",
		                 cs.invalidated);
	}
	{
		struct hapi_stats hs;

		hapi_stats_get(&hs);
		admin_out_scalar(&o, "spoa_auth_l1_runtime_commands_total", "counter",
		                 "L1 invalidations HAProxy's runtime API accepted.", hs.ok);
		admin_out_scalar(&o, "spoa_auth_l1_runtime_errors_total", "counter",
		                 "L1 invalidations that failed (socket or HAProxy error).", hs.failed);
	}
	{
		struct breaker *b = breaker_process();

		admin_out_scalar(&o, "spoa_auth_breaker_state", "gauge",
		                 "User-service circuit breaker: 0 closed, 1 open, 2 half-open "
		                 "(always 0 with breaker off).", (uint64_t)breaker_state_get(b));
		admin_out_head(&o, "spoa_auth_breaker_transitions_total", "counter",
		               "Circuit breaker transitions, by state entered.");
		for (i = 0; i < BREAKER_ST_ENTRIES; i++)
			admin_out_printf(&o, "spoa_auth_breaker_transitions_total{to=\"%s\"} %llu\n",
			                 breaker_state_to_str(i),
			                 (unsigned long long)atomic_load(&b->transitions[i]));
		admin_out_scalar(&o, "spoa_auth_breaker_rejected_total", "counter",
		                 "Exchanges answered outcome=error by the open breaker, without "
		                 "calling the user service.", atomic_load(&b->rejected));
	}
	admin_fleet_metrics(&o);
	admin_out_scalar(&o, "spoa_auth_draining", "gauge",
	                 "1 once the agent is draining (SIGTERM/SIGINT), else 0.",
	                 (uint64_t)atomic_load(&admin.draining));

	if (size)
		buf[o.len < size ? o.len : size - 1] = '\0';
	return o.len;
}

/* ---- HTTP ------------------------------------------------------------- */

static enum MHD_Result admin_reply_allow(struct MHD_Connection *conn, unsigned status,
                                         const char *ctype, char *body, size_t len,
                                         int owned, const char *allow)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (owned)
		resp = MHD_create_response_from_buffer_with_free_callback(len, body, free);
	else
		resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		if (owned)
			free(body);
		return MHD_NO;
	}
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) == MHD_NO ||
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_NO ||
	    (status == MHD_HTTP_METHOD_NOT_ALLOWED &&
	     MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) == MHD_NO)) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result admin_reply(struct MHD_Connection *conn, unsigned status,
                                   const char *ctype, char *body, size_t len, int owned)
{
	return admin_reply_allow(conn, status, ctype, body, len, owned, "GET, HEAD");
}

static enum MHD_Result admin_reply_static(struct MHD_Connection *conn, unsigned status,
                                          const char *text)
{
	return admin_reply(conn, status, admin_ct_text, (char *)text, strlen(text), 0);
}

static enum MHD_Result admin_metrics(struct MHD_Connection *conn)
{
	size_t size = 8192, len;
	char *buf = NULL;

	/* Grows once if the document outgrew the first guess. */
	for (int tries = 0; tries < 2; tries++) {
		char *nbuf = realloc(buf, size);

		if (!nbuf)
			break;
		buf = nbuf;
		len = admin_render_metrics(buf, size);
		if (len < size)
			return admin_reply(conn, MHD_HTTP_OK, admin_ct_metrics, buf, len, 1);
		size = len + 1;
	}
	free(buf);
	return admin_reply_static(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
}

/* ---- POST /cache/invalidate ------------------------------------------ */

void admin_set_cache(struct cache *c, const unsigned char *salt)
{
	admin.cache = c;
	admin.salt = salt;
}

void admin_set_cfg(struct cfg *cfg)
{
	struct cfg *old;

	pthread_mutex_lock(&admin.cfg_lock);
	old = admin.cfg;
	admin.cfg = cfg ? cfg_get(cfg) : NULL;
	pthread_mutex_unlock(&admin.cfg_lock);
	cfg_put(old);
}

/* The 200 of an invalidation: what the agent dropped (<what>) and what
 * became of the L1's copy (<l1>: off, ok or failed). */
static enum MHD_Result admin_reply_inval(struct MHD_Connection *conn, const char *what,
                                         const char *l1)
{
	char buf[96], *body;

	snprintf(buf, sizeof(buf), "{\"invalidated\":\"%s\",\"l1\":\"%s\"}\n", what, l1);
	body = strdup(buf);
	if (!body)
		return admin_reply_static(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return admin_reply(conn, MHD_HTTP_OK, admin_ct_text, body, strlen(body), 1);
}

/* Decodes application/x-www-form-urlencoded <s> (<n> bytes) in place;
 * returns the decoded length. */
static size_t admin_form_decode(char *s, size_t n)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		if (s[i] == '+') {
			s[o++] = ' ';
		} else if (s[i] == '%' && i + 2 < n && hex_digit(s[i + 1]) >= 0 &&
		           hex_digit(s[i + 2]) >= 0) {
			s[o++] = (char)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
			i += 2;
		} else {
			s[o++] = s[i];
		}
	}
	return o;
}

#define ADMIN_MAX_PARAMS 32

struct admin_param {
	const char *name, *value;
	size_t name_len, value_len;
};

/* Splits and decodes the form body in place into <ps>. Returns the count. */
static size_t admin_form_parse(char *body, size_t len, struct admin_param *ps)
{
	size_t n = 0;
	char *p = body, *end = body + len;

	while (p < end && n < ADMIN_MAX_PARAMS) {
		char *amp = memchr(p, '&', (size_t)(end - p));
		char *pe = amp ? amp : end;
		char *eq = memchr(p, '=', (size_t)(pe - p));

		if (eq && eq > p) {
			ps[n].name = p;
			ps[n].name_len = admin_form_decode(p, (size_t)(eq - p));
			ps[n].value = eq + 1;
			ps[n].value_len = admin_form_decode(eq + 1, (size_t)(pe - eq - 1));
			n++;
		}
		p = pe + 1;
	}
	return n;
}

/* A form parameter, else a query parameter (decoded by libmicrohttpd). */
static int admin_param_get(struct MHD_Connection *conn, const struct admin_param *ps,
                           size_t n, const char *name, const char **v, size_t *vlen)
{
	for (size_t i = 0; i < n; i++) {
		if (ps[i].name_len == strlen(name) && strncasecmp(ps[i].name, name, ps[i].name_len) == 0) {
			*v = ps[i].value;
			*vlen = ps[i].value_len;
			return 1;
		}
	}
	*v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
	if (!*v)
		return 0;
	*vlen = strlen(*v);
	return 1;
}

/* Bound on one runtime API exchange: the admin thread waits at most this. */
#define ADMIN_HAPI_TIMEOUT_MS 500

/* Carries an invalidation to HAProxy's L1 through its runtime API, when
 * <cfg> names the socket: every entry (<all>), or the session whose SPOE
 * `cookie` argument was <cookie>/<len> (a tombstone under its hash, which
 * every L1 hit checks). Runs on the admin thread (blocking, bounded by
 * ADMIN_HAPI_TIMEOUT_MS), never on a worker loop. Failures are counted and
 * logged, rate-limited, without the hash. Returns "off" (no socket, or
 * nothing to send), "ok" or "failed", for the reply. */
static const char *admin_l1_invalidate(const struct cfg *cfg, int all, const char *cookie,
                                       size_t len)
{
	char cmd[HAPI_CMD_MAX], cred[HAPI_L1_CRED_HEX + 1], reply[256], err[128];
	size_t rlen;
	int rc;

	if (!cfg->haproxy_runtime_socket)
		return "off";
	if (all)
		rc = hapi_cmd_clear_map(cmd, sizeof(cmd), cfg->haproxy_l1_map);
	else if (!cookie)
		return "off";
	else if (hapi_l1_cred(cookie, len, cred) < 0)
		rc = -1;
	else
		rc = hapi_cmd_tombstone(cmd, sizeof(cmd), cfg->haproxy_l1_tombstones, cred);
	OPENSSL_cleanse(cred, sizeof(cred));
	if (rc < 0) {
		snprintf(err, sizeof(err), "cannot build the command");
	} else {
		rc = hapi_exec(cfg->haproxy_runtime_socket, cmd, ADMIN_HAPI_TIMEOUT_MS, reply,
		               sizeof(reply), &rlen, err, sizeof(err));
	}
	OPENSSL_cleanse(cmd, sizeof(cmd));
	hapi_count(rc);
	if (rc < 0) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "admin: L1 invalidation through the HAProxy "
		                "runtime API failed: %s (the L1 TTL cap bounds the entry)", err);
		return "failed";
	}
	return "ok";
}

/* <*v>/<*len> less the SP and HT around it (RFC 9110 5.5: not part of a
 * field value; HAProxy never sends them, so a pasted header matches what
 * the agent and HAProxy's L1 hashed). */
static void admin_trim_ows(const char **v, size_t *len)
{
	while (*len && (**v == ' ' || **v == '\t')) {
		(*v)++;
		(*len)--;
	}
	while (*len && ((*v)[*len - 1] == ' ' || (*v)[*len - 1] == '\t'))
		(*len)--;
}

/* Constant time in the token's content. */
static int admin_token_ok(const char *auth, const char *token)
{
	size_t n;

	if (!auth || !token || strncasecmp(auth, "Bearer ", 7) != 0)
		return 0;
	auth += 7;
	while (*auth == ' ')
		auth++;
	n = strlen(token);
	return strlen(auth) == n && CRYPTO_memcmp(auth, token, n) == 0;
}

/*
 * Drops one session's entries (credential headers given as form or query
 * parameters named like the SPOE arguments / forward-headers: cookie=...,
 * authorization=..., x-example-authorization=...) or all of them (all=1).
 * The credential digest is computed exactly as for the `logout` message,
 * by the same rules (args_add_header(), args_key()); the headers are taken in
 * forward-headers order, which must be the order of the SPOE message's
 * arguments (it is in the shipped files); the SP/HT around a value are
 * dropped, as HAProxy drops them. With haproxy-runtime-socket set, a
 * `cookie` that is not one name=value pair (the only form HAProxy's L1 key
 * is made of) is a 400 and drops nothing. Values are never logged.
 */
static enum MHD_Result admin_invalidate(struct MHD_Connection *conn, struct admin_req *rq)
{
	struct admin_param ps[ADMIN_MAX_PARAMS];
	const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	struct cfg *cfg;
	struct cachekey *ck = NULL;
	struct args *a = NULL;  /* ~8 KiB: not on this thread's stack */
	uint8_t key[CACHE_KEY_LEN], cred[CACHE_KEY_LEN];
	const char *v, *cv = NULL;
	size_t vlen, cvlen = 0, np, given = 0;
	int has_cookie, l1_cookie;
	enum MHD_Result ret;
	char err[160];

	pthread_mutex_lock(&admin.cfg_lock);
	cfg = admin.cfg ? cfg_get(admin.cfg) : NULL;
	pthread_mutex_unlock(&admin.cfg_lock);
	if (!cfg || !cfg->admin_token) {
		ret = admin_reply_static(conn, MHD_HTTP_FORBIDDEN,
		                         "forbidden: no admin-token configured\n");
		goto out;
	}
	if (!admin_token_ok(auth, cfg->admin_token)) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "admin: POST /cache/invalidate with a missing "
		                "or wrong token: refused");
		ret = admin_reply_static(conn, MHD_HTTP_FORBIDDEN, "forbidden\n");
		goto out;
	}
	if (!admin.cache || !cfg->cache) {
		ret = admin_reply_static(conn, MHD_HTTP_CONFLICT, "the decision cache is off\n");
		goto out;
	}
	if (rq->too_big) {
		ret = admin_reply_static(conn, MHD_HTTP_CONTENT_TOO_LARGE, "body too large\n");
		goto out;
	}
	np = admin_form_parse(rq->body, rq->len, ps);
	if (admin_param_get(conn, ps, np, "all", &v, &vlen) && vlen == 1 && v[0] == '1') {
		const char *l1 = admin_l1_invalidate(cfg, 1, NULL, 0);

		cache_invalidate_all(admin.cache);
		fleet_revoke(NULL, NULL);  /* every agent of the fleet, through Redis */
		log_info("admin: every cached decision invalidated (L1: %s)", l1);
		ret = admin_reply_inval(conn, "all", l1);
		goto out;
	}
	ck = cachekey_from_cfg(cfg, admin.salt, err, sizeof(err));
	a = malloc(sizeof(*a));
	if (!ck || !a) {
		log_error("admin: cannot build a cache key: %s", ck ? "out of memory" : err);
		ret = admin_reply_static(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot hash\n");
		goto out;
	}
	args_init(a);
	for (size_t i = 0; i < cfg->n_forward_headers; i++) {
		const char *h = cfg->forward_headers[i];

		if (!admin_param_get(conn, ps, np, h, &v, &vlen))
			continue;
		given++;
		admin_trim_ows(&v, &vlen);
		args_add_header(a, cfg, h, strlen(h), v, vlen);
	}
	if (!given) {
		ret = admin_reply_static(conn, MHD_HTTP_BAD_REQUEST,
		                         "give all=1, or the session's credential headers as "
		                         "parameters named like forward-headers (cookie=...)\n");
		goto out;
	}
	/* HAProxy's L1 keys a session on its one "<L1_COOKIE>=<value>" pair
	 * only: any other cookie form would drop the agent's entries (under
	 * cache-key-cookies) and leave the L1's, so it is refused while the L1
	 * is reachable, before anything is dropped. */
	has_cookie = admin_param_get(conn, ps, np, "cookie", &cv, &cvlen);
	if (has_cookie)
		admin_trim_ows(&cv, &cvlen);
	l1_cookie = has_cookie && hapi_l1_cookie_ok(cv, cvlen);
	if (has_cookie && !l1_cookie && cfg->haproxy_runtime_socket) {
		ret = admin_reply_static(conn, MHD_HTTP_BAD_REQUEST,
		                         "with haproxy-runtime-socket set, give cookie= as the "
		                         "session cookie HAProxy's L1 is keyed on: one name=value "
		                         "pair (<L1_COOKIE>=<value>, no ';')\n");
		goto out;
	}
	if (args_key(a, ck, key, cred) < 0) {
		ret = admin_reply_static(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot hash\n");
		goto out;
	}
	{
		struct timespec ts;
		char l1[HAPI_L1_CRED_HEX + 1];
		int has_l1 = l1_cookie && hapi_l1_cred(cv, cvlen, l1) == 0;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		cache_invalidate_cred(admin.cache, cred,
		                      (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
		/* the other agents, and their HAProxy L1s, through Redis */
		fleet_revoke(cred, has_l1 ? l1 : NULL);
		OPENSSL_cleanse(l1, sizeof(l1));
	}
	{
		const char *l1 = l1_cookie ? admin_l1_invalidate(cfg, 0, cv, cvlen) : "off";

		log_info("admin: one session's cached decisions invalidated (L1: %s)", l1);
		ret = admin_reply_inval(conn, "session", l1);
	}
out:
	free(a);
	cachekey_free(ck);
	cfg_put(cfg);
	return ret;
}

/* Marker in *req_cls for requests that keep no state. */
static char admin_seen;

/* Marks <conn>'s request started (<busy> 1) or done (0: the connection is
 * now the most recently active). Untracked connections are ignored. */
static void admin_conn_mark(struct MHD_Connection *conn, int busy)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct admin_conn *ac = ci ? ci->socket_context : NULL;

	if (!ac)
		return;
	ac->busy = busy;
	if (!busy) {
		list_delete(&ac->link);
		list_append(&admin_conns.list, &ac->link);
	}
}

/* Over ADMIN_MAX_CONNS: shuts down the least recently active connection
 * that is not answering a request (else the least recently active one);
 * libmicrohttpd then sees EOF and closes it, as it would a peer's close. */
static void admin_conn_evict(void)
{
	struct admin_conn *v = NULL, *ac;

	LIST_FOR_EACH(ac, &admin_conns.list, struct admin_conn, link) {
		if (ac->evicted)
			continue;
		if (!ac->busy) {
			v = ac;
			break;
		}
		if (!v)
			v = ac;
	}
	if (!v)
		return;
	v->evicted = 1;
	admin_conns.n--;
	shutdown(v->fd, SHUT_RDWR);
	{
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "admin: more than %d connections: closed the "
		                "one least recently active", ADMIN_MAX_CONNS);
	}
}

static void admin_notify_conn(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe)
{
	struct admin_conn *ac = *socket_context;

	(void)cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		ac = ci ? calloc(1, sizeof(*ac)) : NULL;
		if (!ac)
			return;  /* untracked: served, just never evicted */
		ac->fd = ci->connect_fd;
		list_append(&admin_conns.list, &ac->link);
		*socket_context = ac;
		if (++admin_conns.n > ADMIN_MAX_CONNS)
			admin_conn_evict();
	} else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && ac) {
		list_delete(&ac->link);
		if (!ac->evicted)
			admin_conns.n--;
		free(ac);
		*socket_context = NULL;
	}
}

static void admin_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                            enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)toe;
	admin_conn_mark(conn, 0);
	if (*req_cls && *req_cls != (void *)&admin_seen)
		free(*req_cls);
	*req_cls = NULL;
}

/*
 * libmicrohttpd calls this once when the headers are in (*<req_cls> NULL),
 * then again for any body data and once more at the end of the request. We
 * answer on the last call. Only POST /cache/invalidate keeps its body (up to
 * ADMIN_BODY_MAX bytes); other bodies are discarded.
 */
static enum MHD_Result admin_handler(void *cls, struct MHD_Connection *conn,
                                     const char *url, const char *method,
                                     const char *version, const char *upload_data,
                                     size_t *upload_data_size, void **req_cls)
{
	void *seen = &admin_seen;
	int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
	int head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	int post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	int inval = strcmp(url, "/cache/invalidate") == 0;

	(void)cls;
	(void)version;
	if (*req_cls == NULL) {
		admin_conn_mark(conn, 1);
		if (inval) {
			if (!post)
				return admin_reply_allow(conn, MHD_HTTP_METHOD_NOT_ALLOWED, admin_ct_text,
				                         (char *)"method not allowed\n", 19, 0, "POST");
			*req_cls = calloc(1, sizeof(struct admin_req));
			return *req_cls ? MHD_YES : MHD_NO;
		}
		*req_cls = seen;
		if (!get && !head)
			return admin_reply_static(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
			                          "method not allowed\n");
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		if (*req_cls != seen) {
			struct admin_req *rq = *req_cls;

			if (rq->len + *upload_data_size > ADMIN_BODY_MAX) {
				rq->too_big = 1;
			} else {
				memcpy(rq->body + rq->len, upload_data, *upload_data_size);
				rq->len += *upload_data_size;
			}
		}
		*upload_data_size = 0;  /* other bodies mean nothing here */
		return MHD_YES;
	}
	if (*req_cls != seen)
		return admin_invalidate(conn, *req_cls);
	if (strcmp(url, "/metrics") == 0)
		return admin_metrics(conn);
	if (strcmp(url, "/healthz") == 0) {
		if (atomic_load(&admin.draining))
			return admin_reply_static(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "draining\n");
		return admin_reply_static(conn, MHD_HTTP_OK, "ok\n");
	}
	return admin_reply_static(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /healthz\n");
}

/* ---- lifecycle -------------------------------------------------------- */

static void admin_addr_text(const struct sockaddr *addr, socklen_t len, char *out, size_t size)
{
	char host[64], port[8];

	if (getnameinfo(addr, len, host, sizeof(host), port, sizeof(port),
	                NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(out, size, "?");
		return;
	}
	snprintf(out, size, addr->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

static uint16_t admin_addr_port(const struct sockaddr *addr)
{
	if (addr->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)(const void *)addr)->sin6_port);
	return ntohs(((const struct sockaddr_in *)(const void *)addr)->sin_port);
}

int admin_start(const struct sockaddr *addr, socklen_t len, char *err, size_t errlen)
{
	unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
	char where[96];
	sigset_t all, old;
	struct MHD_Daemon *d;

	if (err && errlen)
		err[0] = '\0';
	if (addr == NULL || len == 0)
		return 0;
	admin_addr_text(addr, len, where, sizeof(where));
	if (admin.daemon) {
		snprintf(err, errlen, "admin-listen %s: already started", where);
		return -1;
	}
	if (addr->sa_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	else if (addr->sa_family != AF_INET) {
		snprintf(err, errlen, "admin-listen %s: not an IPv4 or IPv6 address", where);
		return -1;
	}

	atomic_store(&admin.draining, 0);
	admin.starter = pthread_self();
	admin.last_err[0] = '\0';
	admin.starting = 1;
	/* The polling thread inherits this mask: no process signal lands there. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	/* The port argument is ignored with MHD_OPTION_SOCK_ADDR but appears
	 * in libmicrohttpd's bind error message. */
	d = MHD_start_daemon(flags, admin_addr_port(addr), NULL, NULL, admin_handler, NULL,
	                     MHD_OPTION_EXTERNAL_LOGGER, admin_mhd_log, NULL,
	                     MHD_OPTION_NOTIFY_COMPLETED, admin_completed, NULL,
	                     MHD_OPTION_SOCK_ADDR, addr,
	                     /* 0: no SO_REUSEPORT, so a second agent cannot
	                      * share this port (its bind fails, naming it). */
	                     MHD_OPTION_LISTENING_ADDRESS_REUSE, 0u,
	                     MHD_OPTION_NOTIFY_CONNECTION, admin_notify_conn, NULL,
	                     MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)ADMIN_HARD_CONNS,
	                     MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_HARD_CONNS,
	                     MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)ADMIN_HARD_CONNS,
	                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_TIMEOUT_S,
	                     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024),
	                     MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	admin.starting = 0;
	if (!d) {
		snprintf(err, errlen, "admin-listen %s: %s", where,
		         admin.last_err[0] ? admin.last_err : "cannot start the HTTP listener");
		return -1;
	}
	admin.daemon = d;
	if (admin_addr_port(addr) == 0) {
		/* Port 0: the kernel chose one; log that one. */
		char *colon = strrchr(where, ':');

		if (colon)
			snprintf(colon + 1, sizeof(where) - (size_t)(colon + 1 - where), "%u",
			         admin_port());
	}
	log_info("admin: serving /metrics, /healthz and /cache/invalidate on %s", where);
	return 0;
}

void admin_set_draining(void)
{
	atomic_store(&admin.draining, 1);
}

unsigned admin_port(void)
{
	const union MHD_DaemonInfo *info;

	if (!admin.daemon)
		return 0;
	info = MHD_get_daemon_info(admin.daemon, MHD_DAEMON_INFO_BIND_PORT);
	return info ? info->port : 0;
}

void admin_stop(void)
{
	if (!admin.daemon)
		return;
	MHD_stop_daemon(admin.daemon);
	admin.daemon = NULL;
}
