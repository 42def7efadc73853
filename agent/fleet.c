/*
 * fleet.c: the Redis second level and the revocation stream (fleet.h,
 * docs/fleet.md).
 *
 * Connections (hiredis async, RESP2, on libev):
 *   - one command connection per worker, on the worker's loop: GET and SET
 *     of shared decisions, each with an ev_timer budget;
 *   - on the fleet thread's own loop: the stream connection (XINFO, then
 *     XREAD BLOCK in a loop) and a command connection for revocations.
 * Every connection authenticates and PINGs before it counts as up, has a
 * connect/handshake deadline, and reconnects with a doubling backoff. The
 * scripts (EVAL, sent as plain commands) keep each step atomic in Redis:
 *   read:    GET of the value under the current epoch;
 *   write:   refused while the credential's tombstone exists; indexes the
 *            value under the credential;
 *   revoke:  deletes the credential's values, sets its tombstone, XADDs;
 *   all:     bumps the epoch (every value becomes unreachable), XADDs.
 * An event applied from the stream also reaches this node's HAProxy L1
 * when haproxy-runtime-socket is set: the session's tombstone (the event's
 * sealed `l` field) or a cleared map, one bounded runtime-API exchange on
 * the fleet thread (never a worker loop).
 * Logs are rate-limited and never carry a key, a value or a credential.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libev.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "breaker.h"
#include "cache.h"
#include "cfg.h"
#include "decision.h"
#include "fleet.h"
#include "fleetval.h"
#include "hapi.h"
#include "hex.h"
#include "log.h"

#define FLEET_HANDSHAKE_MS 1000      /* connect + AUTH + PING */
#define FLEET_START_CHECK_MS 1000    /* fleet_start()'s blocking check, per step */
#define FLEET_BACKOFF_MIN_MS 100
#define FLEET_BACKOFF_MAX_MS 5000
#define FLEET_XREAD_BLOCK_MS 1000    /* XREAD BLOCK; the watchdog allows this plus */
#define FLEET_XREAD_SLACK_MS 2000
#define FLEET_XREAD_COUNT "256"
#define FLEET_XREAD_COUNT_N 256      /* the same, as a number */
#define FLEET_REVOKE_BUDGET_MS 2000  /* revocations are off the request path */
#define FLEET_REVOKE_QUEUE 4096      /* revocations kept while disconnected */
#define FLEET_ID_MAX FLEETVAL_ID_MAX
#define FLEET_LOG_EVERY_FAILS 50      /* a failing reconnect loop logs once per this many */
#define FLEET_ONE_DAY_MS 86400000u
#define FLEET_SHAPE_MAX_COPY 256         /* copy-header names bound at most */
#define FLEET_HAPI_TIMEOUT_MS 200        /* one runtime-API exchange on the fleet thread */
#define FLEET_HAPI_BACKOFF_MS 1000       /* after a failed one: L1 writes not tried */
#define FLEET_HAPI_BATCH_MS 1000         /* L1 writes of one XREAD reply, at most */

static const char fleet_lua_get[] =
	"return redis.call('GET', KEYS[1] .. ':' .. (redis.call('GET', KEYS[2]) or '0'))";
static const char fleet_lua_set[] =
	"if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end "
	"local n = KEYS[1] .. ':' .. (redis.call('GET', KEYS[4]) or '0') "
	"redis.call('SET', n, ARGV[1], 'PX', ARGV[2]) "
	"redis.call('SADD', KEYS[3], n) "
	"if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[2]) then "
	"redis.call('PEXPIRE', KEYS[3], ARGV[2]) end "
	"return 1";
static const char fleet_lua_revoke[] =
	"local m = redis.call('SMEMBERS', KEYS[1]) "
	"for i = 1, #m do redis.call('DEL', m[i]) end "
	"redis.call('DEL', KEYS[1]) "
	"redis.call('SET', KEYS[2], '1', 'PX', ARGV[1]) "
	"if ARGV[4] ~= '' then "
	"return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'c', ARGV[3], 'l', ARGV[4]) "
	"end "
	"return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'c', ARGV[3])";
static const char fleet_lua_all[] =
	"redis.call('INCR', KEYS[1]) "
	"return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'c', '*')";

struct fleet_conn;
typedef void (*fleet_conn_fn)(struct fleet_conn *fc);

/* One hiredis connection with its reconnect logic. Owned by one loop. */
struct fleet_conn {
	struct ev_loop *loop;
	redisAsyncContext *ac;       /* NULL while disconnected */
	int up;                      /* authenticated and answering */
	int freeing;                 /* being freed: callbacks deliver nothing */
	unsigned backoff_ms;
	unsigned fails;              /* connection attempts failed in a row */
	int was_lost;                /* lost or failed before: log the next "up" */
	int auth_failed;             /* this connection's AUTH was refused */
	ev_timer retry;              /* reconnect */
	ev_timer deadline;           /* handshake deadline, or the stream watchdog */
	fleet_conn_fn on_up, on_down;
	const char *what;            /* "command" or "stream", for logs */
};

struct fleet_worker {
	struct fleet_conn conn;
	unsigned timeouts;           /* commands past their budget in a row */
};

/* One command in flight on a worker connection. Freed by its reply
 * callback, which hiredis always calls (NULL reply when the connection
 * goes away); the budget timer may have answered the caller before. */
struct fleet_req {
	struct fleet_worker *fw;
	ev_timer budget;
	int cmd;                     /* enum fleet_cmd */
	int done;                    /* the caller has its answer */
	int ticket;                  /* enum breaker_ticket (GET) */
	fleet_get_cb cb;
	void *arg;
	size_t max_actions;
	size_t name_len;
	char name[FLEETVAL_NAME_MAX];
};

struct fleet_revocation {
	int all;
	int has_l1;                  /* <l1> holds the L1 session hash */
	uint8_t cred[32];
	uint8_t l1[FLEETVAL_L1_LEN];
};

static struct {
	int on;
	struct fleetval_keys keys;
	char *prefix, *host, *path, *user, *password;
	int port;
	unsigned timeout_ms, disc_ttl_ms, tomb_ms, brk_failures, brk_open_ms;
	char maxlen[24];
	char stream_name[FLEETVAL_PREFIX_MAX + 16];
	char epoch_name[FLEETVAL_PREFIX_MAX + 16];
	struct cache *cache;
	struct breaker breaker;
	/* HAProxy's L1 (hapi.h), read at start; NULL socket = not reached */
	char *hapi_socket, *hapi_map, *hapi_tombs;
	uint64_t hapi_skip_until;    /* fleet thread: mono ms of the backoff's end */
	/* fleet thread: the L1 writes of the XREAD reply being applied, sent
	 * after every local eviction of that reply */
	struct { int all; uint8_t l1[FLEETVAL_L1_LEN]; } l1_pending[FLEET_XREAD_COUNT_N];
	unsigned n_l1_pending;

	/* the fleet thread */
	pthread_t thread;
	int thread_started;
	struct ev_loop *loop;
	ev_async wake;
	pthread_mutex_t lock;        /* protects the queue and stopping */
	struct fleet_revocation queue[FLEET_REVOKE_QUEUE];
	unsigned q_head, q_len;
	int stopping;
	struct fleet_conn stream, cmd;
	char last_id[FLEET_ID_MAX];  /* last stream id applied; "" = none yet */
	unsigned stream_connects;

	/* state and counters (any thread) */
	_Atomic int stream_up;
	atomic_uint n_workers, n_up;
	_Atomic uint64_t commands[FLEET_CMD_ENTRIES][FLEET_CR_ENTRIES];
	_Atomic uint64_t l2[FLEET_L2_ENTRIES];
	_Atomic uint64_t revocations_sent, revocations_received, local_flushes;
} fleet;

#define FLEET_COUNT(x) atomic_fetch_add_explicit(&(x), 1, memory_order_relaxed)

static uint64_t fleet_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t fleet_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *const fleet_cmd_names[FLEET_CMD_ENTRIES] = {
	"get", "set", "revoke", "xread", "auth",
};
static const char *const fleet_cres_names[FLEET_CR_ENTRIES] = { "ok", "error", "timeout" };
static const char *const fleet_l2_names[FLEET_L2_ENTRIES] = {
	"hit", "miss", "error", "skipped", "bad_value",
};

const char *fleet_cmd_to_str(int c)
{
	return c >= 0 && c < FLEET_CMD_ENTRIES ? fleet_cmd_names[c] : "?";
}

const char *fleet_cres_to_str(int r)
{
	return r >= 0 && r < FLEET_CR_ENTRIES ? fleet_cres_names[r] : "?";
}

const char *fleet_l2_to_str(int r)
{
	return r >= 0 && r < FLEET_L2_ENTRIES ? fleet_l2_names[r] : "?";
}

int fleet_on(void)
{
	return fleet.on;
}

const uint8_t *fleet_cache_salt(void)
{
	return fleet.on ? fleet.keys.salt : NULL;
}

uint32_t fleet_local_ttl(uint32_t ttl_ms)
{
	if (!fleet.on || atomic_load_explicit(&fleet.stream_up, memory_order_relaxed))
		return ttl_ms;
	return ttl_ms < fleet.disc_ttl_ms ? ttl_ms : fleet.disc_ttl_ms;
}

/* ---- connections ---- */

static void fleet_conn_connect(struct fleet_conn *fc);

static void fleet_conn_schedule(struct fleet_conn *fc)
{
	if (fc->freeing)
		return;
	if (!fc->backoff_ms)
		fc->backoff_ms = FLEET_BACKOFF_MIN_MS;
	ev_timer_stop(fc->loop, &fc->retry);
	ev_timer_set(&fc->retry, fc->backoff_ms / 1000.0, 0.);
	ev_timer_start(fc->loop, &fc->retry);
	fc->backoff_ms = fc->backoff_ms * 2 > FLEET_BACKOFF_MAX_MS ? FLEET_BACKOFF_MAX_MS
	                                                          : fc->backoff_ms * 2;
}

/* The connection is gone (or given up on): state, log, reconnect. */
static void fleet_conn_lost(struct fleet_conn *fc, const char *why)
{
	int was_up = fc->up;

	fc->up = 0;
	fc->was_lost = 1;
	ev_timer_stop(fc->loop, &fc->deadline);
	if (fc->freeing)
		return;
	if (!was_up)
		fc->fails++;
	if (was_up) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "redis: %s connection down: %s", fc->what, why);
		if (fc->on_down)
			fc->on_down(fc);
	} else if (fc->fails == 1 || fc->fails % FLEET_LOG_EVERY_FAILS == 0) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "redis: %s connection to %s failed: %s "
		                "(attempt %u; retrying with backoff)", fc->what,
		                fleet.path ? fleet.path : fleet.host, why, fc->fails);
	}
	fleet_conn_schedule(fc);
}

/* Drops the current connection from outside a hiredis callback (a timer):
 * pending callbacks get a NULL reply. */
static void fleet_conn_drop(struct fleet_conn *fc, const char *why)
{
	redisAsyncContext *ac = fc->ac;

	fc->ac = NULL;
	if (ac)
		redisAsyncFree(ac);
	fleet_conn_lost(fc, why);
}

static void fleet_conn_connect_cb(const redisAsyncContext *ac, int status)
{
	struct fleet_conn *fc = ac->data;

	if (status == REDIS_OK || fc->ac != ac)
		return;
	fc->ac = NULL;  /* hiredis frees it after this callback */
	fleet_conn_lost(fc, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void fleet_conn_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct fleet_conn *fc = ac->data;

	(void)status;
	if (fc->ac != ac)
		return;
	fc->ac = NULL;
	fleet_conn_lost(fc, ac->errstr[0] ? ac->errstr : "closed");
}

static void fleet_conn_ping_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct fleet_conn *fc = priv;
	redisReply *r = reply;

	if (!r || fc->ac != ac || fc->freeing || fc->auth_failed)
		return;
	if (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0) {
		ev_timer_stop(fc->loop, &fc->deadline);
		if (fc->was_lost) {
			static struct log_rl rl;

			log_ratelimited(LOG_LVL_INFO, &rl, "redis: %s connection up", fc->what);
		}
		fc->up = 1;
		fc->fails = 0;
		fc->backoff_ms = 0;
		if (fc->on_up)
			fc->on_up(fc);
		return;
	}
	{
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_ERROR, &rl, "redis: %s connection: PING refused%s "
		                "(check redis-password and redis-user)", fc->what,
		                r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0
		                ? ": a password is required" : "");
	}
	redisAsyncDisconnect(ac);
}

static void fleet_conn_auth_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct fleet_conn *fc = priv;
	redisReply *r = reply;

	if (!r || fc->ac != ac || fc->freeing)
		return;
	if (r->type == REDIS_REPLY_STATUS) {
		FLEET_COUNT(fleet.commands[FLEET_CMD_AUTH][FLEET_CR_OK]);
		return;
	}
	FLEET_COUNT(fleet.commands[FLEET_CMD_AUTH][FLEET_CR_ERROR]);
	fc->auth_failed = 1;
	{
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_ERROR, &rl, "redis: %s connection: AUTH refused "
		                "(check redis-password and redis-user)", fc->what);
	}
	redisAsyncDisconnect(ac);
}

static void fleet_conn_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct fleet_conn *fc = (struct fleet_conn *)(void *)((char *)t -
	                        offsetof(struct fleet_conn, deadline));

	(void)loop;
	(void)revents;
	fleet_conn_drop(fc, fc->up ? "no answer in time" : "handshake timed out");
}

static void fleet_conn_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct fleet_conn *fc = (struct fleet_conn *)(void *)((char *)t -
	                        offsetof(struct fleet_conn, retry));

	(void)loop;
	(void)revents;
	fleet_conn_connect(fc);
}

/* Starts a connection and queues AUTH (if configured) and PING; it is up
 * when PONG comes back within FLEET_HANDSHAKE_MS. */
static void fleet_conn_connect(struct fleet_conn *fc)
{
	redisAsyncContext *ac;
	const char *argv[3];
	size_t lens[3];
	int n = 0;

	if (fc->freeing || fc->ac)
		return;
	ac = fleet.path ? redisAsyncConnectUnix(fleet.path)
	                : redisAsyncConnect(fleet.host, fleet.port);
	if (!ac || ac->err) {
		char why[128];

		snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		fleet_conn_lost(fc, why);
		return;
	}
	ac->data = fc;
	if (redisLibevAttach(fc->loop, ac) != REDIS_OK) {
		redisAsyncFree(ac);
		fleet_conn_lost(fc, "cannot attach to the loop");
		return;
	}
	redisAsyncSetConnectCallback(ac, fleet_conn_connect_cb);
	redisAsyncSetDisconnectCallback(ac, fleet_conn_disconnect_cb);
	fc->ac = ac;
	fc->auth_failed = 0;
	if (fleet.password) {
		argv[n] = "AUTH";
		lens[n++] = 4;
		if (fleet.user) {
			argv[n] = fleet.user;
			lens[n] = strlen(fleet.user);
			n++;
		}
		argv[n] = fleet.password;
		lens[n] = strlen(fleet.password);
		n++;
		redisAsyncCommandArgv(ac, fleet_conn_auth_cb, fc, n, argv, lens);
	}
	argv[0] = "PING";
	lens[0] = 4;
	redisAsyncCommandArgv(ac, fleet_conn_ping_cb, fc, 1, argv, lens);
	ev_timer_set(&fc->deadline, FLEET_HANDSHAKE_MS / 1000.0, 0.);
	ev_timer_start(fc->loop, &fc->deadline);
}

static void fleet_conn_init(struct fleet_conn *fc, struct ev_loop *loop, const char *what,
                            fleet_conn_fn on_up, fleet_conn_fn on_down)
{
	memset(fc, 0, sizeof(*fc));
	fc->loop = loop;
	fc->what = what;
	fc->on_up = on_up;
	fc->on_down = on_down;
	ev_timer_init(&fc->retry, fleet_conn_retry_cb, 0., 0.);
	ev_timer_init(&fc->deadline, fleet_conn_deadline_cb, 0., 0.);
}

/* Loop thread. Pending callbacks run with NULL replies and deliver nothing. */
static void fleet_conn_close(struct fleet_conn *fc)
{
	redisAsyncContext *ac = fc->ac;

	fc->freeing = 1;
	fc->ac = NULL;
	ev_timer_stop(fc->loop, &fc->retry);
	ev_timer_stop(fc->loop, &fc->deadline);
	if (ac)
		redisAsyncFree(ac);
	fc->up = 0;
}

/* ---- worker connections: GET and SET ---- */

static void fleet_worker_up(struct fleet_conn *fc)
{
	struct fleet_worker *fw = (struct fleet_worker *)(void *)fc;

	fw->timeouts = 0;
	atomic_fetch_add(&fleet.n_up, 1);
	/* A new connection that answered PING is a successful probe: without
	 * this, write-backs (never sent while it is not closed) would wait for
	 * the next read to probe it. */
	if (breaker_state_get(&fleet.breaker) != BREAKER_CLOSED && breaker_close(&fleet.breaker)) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_INFO, &rl, "redis: breaker closed: a new connection answers");
	}
}

static void fleet_worker_down(struct fleet_conn *fc)
{
	(void)fc;
	atomic_fetch_sub(&fleet.n_up, 1);
}

struct fleet_worker *fleet_worker_new(struct ev_loop *loop)
{
	struct fleet_worker *fw;

	if (!fleet.on)
		return NULL;
	fw = calloc(1, sizeof(*fw));
	if (!fw)
		return NULL;
	fleet_conn_init(&fw->conn, loop, "command", fleet_worker_up, fleet_worker_down);
	atomic_fetch_add(&fleet.n_workers, 1);
	fleet_conn_connect(&fw->conn);
	return fw;
}

void fleet_worker_free(struct fleet_worker *fw)
{
	if (!fw)
		return;
	if (fw->conn.up)
		atomic_fetch_sub(&fleet.n_up, 1);
	fw->conn.on_down = NULL;
	fleet_conn_close(&fw->conn);
	atomic_fetch_sub(&fleet.n_workers, 1);
	free(fw);
}

static void fleet_breaker_log(int entered)
{
	static struct log_rl rl;

	if (entered == BREAKER_OPEN)
		log_ratelimited(LOG_LVL_WARN, &rl, "redis: breaker open: %u commands failed in a "
		                "row; Redis skipped for %ums (single node)", fleet.brk_failures,
		                fleet.brk_open_ms);
	else if (entered == BREAKER_HALF_OPEN)
		log_ratelimited(LOG_LVL_INFO, &rl, "redis: breaker half_open: one probe command");
	else if (entered == BREAKER_CLOSED)
		log_ratelimited(LOG_LVL_INFO, &rl, "redis: breaker closed: Redis answers again");
}

static void fleet_req_breaker_done(struct fleet_req *rq, int ok)
{
	struct breaker_params p = { fleet.brk_failures, fleet.brk_open_ms };
	int entered = -1;

	if (rq->ticket == BREAKER_NONE || rq->ticket == BREAKER_REJECT)
		return;
	breaker_done(&fleet.breaker, &p, (enum breaker_ticket)rq->ticket, ok, fleet_mono_ms(),
	             &entered);
	rq->ticket = BREAKER_NONE;
	fleet_breaker_log(entered);
}

static void fleet_req_deliver(struct fleet_req *rq, enum fleet_l2 res, struct decision *d,
                              uint32_t ttl)
{
	FLEET_COUNT(fleet.l2[res]);
	rq->done = 1;
	if (rq->cb)
		rq->cb(rq->arg, res, d, ttl);
	else
		decision_put(d);
}

static void fleet_req_budget_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct fleet_req *rq = (struct fleet_req *)(void *)((char *)t -
	                       offsetof(struct fleet_req, budget));

	struct fleet_worker *fw = rq->fw;

	(void)loop;
	(void)revents;
	FLEET_COUNT(fleet.commands[rq->cmd][FLEET_CR_TIMEOUT]);
	fleet_req_breaker_done(rq, 0);
	if (rq->cmd == FLEET_CMD_GET)
		fleet_req_deliver(rq, FLEET_L2_ERROR, NULL, 0);
	else
		rq->done = 1;
	/* A connection whose answers stopped (a server stopped, a reply that
	 * never ends) is dropped and made again, rather than kept up with
	 * every command timing out. <rq> is freed by the drop. */
	if (++fw->timeouts >= fleet.brk_failures && fw->conn.ac)
		fleet_conn_drop(&fw->conn, "commands past redis-timeout in a row");
}

/* A decision from decoded value <v>: shareable (no Set-Cookie), one reference. */
static struct decision *fleet_decision_new(const struct fleetval *v)
{
	struct decision *d = malloc(sizeof(*d) + v->actions_len);

	if (!d)
		return NULL;
	atomic_init(&d->refcnt, 1);
	d->status = v->status;
	d->outcome = (enum decision_outcome)v->outcome;
	d->claims_skipped = v->claims_skipped;
	d->set_cookie = 0;
	/* the writer's L1 mark, never past the value's own expiry */
	d->l1_until_ms = (int64_t)(v->l1_until_ms < v->expires_ms ? v->l1_until_ms
	                                                          : v->expires_ms);
	d->actions_len = v->actions_len;
	memcpy(d->actions, v->actions, v->actions_len);
	return d;
}

static void fleet_get_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct fleet_req *rq = priv;
	redisReply *r = reply;
	struct fleetval v;
	struct decision *d;
	uint8_t *plain = NULL;
	uint64_t now;
	enum fleetval_res res;

	(void)ac;
	if (r)
		rq->fw->timeouts = 0;
	if (!rq->done)
		ev_timer_stop(rq->fw->conn.loop, &rq->budget);
	if (rq->done || rq->fw->conn.freeing)
		goto out;
	if (!r) {
		FLEET_COUNT(fleet.commands[FLEET_CMD_GET][FLEET_CR_ERROR]);
		fleet_req_breaker_done(rq, 0);
		fleet_req_deliver(rq, FLEET_L2_ERROR, NULL, 0);
		goto out;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "redis: read refused: %.80s", r->str);
		FLEET_COUNT(fleet.commands[FLEET_CMD_GET][FLEET_CR_ERROR]);
		fleet_req_breaker_done(rq, 0);
		fleet_req_deliver(rq, FLEET_L2_ERROR, NULL, 0);
		goto out;
	}
	FLEET_COUNT(fleet.commands[FLEET_CMD_GET][FLEET_CR_OK]);
	fleet_req_breaker_done(rq, 1);
	if (r->type == REDIS_REPLY_NIL) {
		fleet_req_deliver(rq, FLEET_L2_MISS, NULL, 0);
		goto out;
	}
	now = fleet_wall_ms();
	plain = r->type == REDIS_REPLY_STRING ? malloc(r->len ? r->len : 1) : NULL;
	if (r->type == REDIS_REPLY_STRING && !plain) {
		fleet_req_deliver(rq, FLEET_L2_ERROR, NULL, 0);
		goto out;
	}
	res = plain ? fleetval_decode(&fleet.keys, rq->name, rq->name_len,
	                              (const uint8_t *)r->str, r->len, now, rq->max_actions,
	                              plain, &v)
	            : FLEETVAL_BAD;
	if (res == FLEETVAL_BAD) {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "redis: a stored value does not decode or is "
		                "not authentic: treated as a miss");
		fleet_req_deliver(rq, FLEET_L2_BAD_VALUE, NULL, 0);
		goto out;
	}
	if (res == FLEETVAL_EXPIRED) {
		fleet_req_deliver(rq, FLEET_L2_MISS, NULL, 0);
		goto out;
	}
	d = fleet_decision_new(&v);
	if (!d) {
		fleet_req_deliver(rq, FLEET_L2_ERROR, NULL, 0);
		goto out;
	}
	fleet_req_deliver(rq, FLEET_L2_HIT, d, v.expires_ms - now > UINT32_MAX
	                                       ? UINT32_MAX : (uint32_t)(v.expires_ms - now));
out:
	free(plain);
	free(rq);
}

static struct fleet_req *fleet_req_new(struct fleet_worker *fw, int cmd)
{
	struct fleet_req *rq = calloc(1, sizeof(*rq));

	if (!rq)
		return NULL;
	rq->fw = fw;
	rq->cmd = cmd;
	ev_timer_init(&rq->budget, fleet_req_budget_cb, fleet.timeout_ms / 1000.0, 0.);
	return rq;
}

int fleet_get(struct fleet_worker *fw, const uint8_t key[32], const uint8_t cred[32],
              size_t max_actions, fleet_get_cb cb, void *arg)
{
	const char *argv[5];
	size_t lens[5];
	struct fleet_req *rq;
	int entered = -1, n;
	enum breaker_ticket t;

	if (!fw || !fw->conn.up || !fw->conn.ac)
		goto skip;
	t = breaker_admit(&fleet.breaker, fleet_mono_ms(), &entered);
	fleet_breaker_log(entered);
	if (t == BREAKER_REJECT)
		goto skip;
	rq = fleet_req_new(fw, FLEET_CMD_GET);
	if (!rq)
		goto skip_ticket;
	rq->ticket = t;
	n = fleetval_name_value(&fleet.keys, fleet.prefix, key, cred, rq->name);
	if (n < 0) {
		free(rq);
		goto skip_ticket;
	}
	rq->name_len = (size_t)n;
	rq->cb = cb;
	rq->arg = arg;
	rq->max_actions = max_actions;
	argv[0] = "EVAL"; lens[0] = 4;
	argv[1] = fleet_lua_get; lens[1] = sizeof(fleet_lua_get) - 1;
	argv[2] = "2"; lens[2] = 1;
	argv[3] = rq->name; lens[3] = rq->name_len;
	argv[4] = fleet.epoch_name; lens[4] = strlen(fleet.epoch_name);
	if (redisAsyncCommandArgv(fw->conn.ac, fleet_get_reply_cb, rq, 5, argv, lens) != REDIS_OK) {
		rq->ticket = BREAKER_NONE;
		free(rq);
		goto skip_ticket;
	}
	ev_timer_start(fw->conn.loop, &rq->budget);
	return 0;
skip_ticket:
	{
		struct breaker_params p = { fleet.brk_failures, fleet.brk_open_ms };

		breaker_done(&fleet.breaker, &p, t, 1, fleet_mono_ms(), &entered);
	}
skip:
	FLEET_COUNT(fleet.l2[FLEET_L2_SKIPPED]);
	return -1;
}

static void fleet_set_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct fleet_req *rq = priv;
	redisReply *r = reply;

	(void)ac;
	if (r)
		rq->fw->timeouts = 0;
	if (!rq->done) {
		ev_timer_stop(rq->fw->conn.loop, &rq->budget);
		if (!rq->fw->conn.freeing)
			FLEET_COUNT(fleet.commands[FLEET_CMD_SET][!r || r->type == REDIS_REPLY_ERROR
			                                         ? FLEET_CR_ERROR : FLEET_CR_OK]);
	}
	free(rq);
}

void fleet_put(struct fleet_worker *fw, const uint8_t key[32], const uint8_t cred[32],
               const struct decision *d, uint32_t ttl_ms)
{
	char tomb[FLEETVAL_PREFIX_MAX + 8 + FLEETVAL_HEX_LEN];
	char index[FLEETVAL_PREFIX_MAX + 8 + FLEETVAL_HEX_LEN];
	char tag[FLEETVAL_HEX_LEN + 1], px[24];
	uint8_t nonce[FLEETVAL_NONCE_LEN];
	const char *argv[9];
	size_t lens[9];
	struct fleet_req *rq;
	struct fleetval v;
	uint8_t *val;
	long vlen;
	int n;

	if (!fw || !fw->conn.up || !fw->conn.ac || !ttl_ms || d->set_cookie ||
	    d->outcome == DECISION_ERROR ||
	    breaker_state_get(&fleet.breaker) != BREAKER_CLOSED)
		return;
	if (fleetval_cred_tag(&fleet.keys, cred, tag) < 0)
		return;
	rq = fleet_req_new(fw, FLEET_CMD_SET);
	val = malloc(fleetval_size(d->actions_len));
	if (!rq || !val)
		goto out;
	n = fleetval_name_value(&fleet.keys, fleet.prefix, key, cred, rq->name);
	if (n < 0)
		goto out;
	rq->name_len = (size_t)n;
	v.expires_ms = fleet_wall_ms() + ttl_ms;
	v.l1_until_ms = d->l1_until_ms > 0 ? (uint64_t)d->l1_until_ms : 0;
	if (v.l1_until_ms > v.expires_ms)
		v.l1_until_ms = v.expires_ms;
	v.status = d->status;
	v.outcome = (int)d->outcome;
	v.claims_skipped = d->claims_skipped;
	v.actions = d->actions;
	v.actions_len = d->actions_len;
	if (RAND_bytes(nonce, sizeof(nonce)) != 1)
		goto out;
	vlen = fleetval_encode(&fleet.keys, rq->name, rq->name_len, nonce, &v, val);
	if (vlen < 0)
		goto out;
	snprintf(tomb, sizeof(tomb), "%st:{%s}", fleet.prefix, tag);
	snprintf(index, sizeof(index), "%si:{%s}", fleet.prefix, tag);
	snprintf(px, sizeof(px), "%u", ttl_ms);
	argv[0] = "EVAL"; lens[0] = 4;
	argv[1] = fleet_lua_set; lens[1] = sizeof(fleet_lua_set) - 1;
	argv[2] = "4"; lens[2] = 1;
	argv[3] = rq->name; lens[3] = rq->name_len;
	argv[4] = tomb; lens[4] = strlen(tomb);
	argv[5] = index; lens[5] = strlen(index);
	argv[6] = fleet.epoch_name; lens[6] = strlen(fleet.epoch_name);
	argv[7] = (const char *)val; lens[7] = (size_t)vlen;
	argv[8] = px; lens[8] = strlen(px);
	if (redisAsyncCommandArgv(fw->conn.ac, fleet_set_reply_cb, rq, 9, argv, lens) != REDIS_OK)
		goto out;
	ev_timer_start(fw->conn.loop, &rq->budget);
	free(val);
	return;
out:
	free(val);
	free(rq);
}

/* ---- the fleet thread: revocations and the stream ---- */

static void fleet_stream_read(void);
static void fleet_l1_apply(int all, const uint8_t *l1);

/* Revocations may have been missed: the local cache and, with the runtime
 * socket, this node's HAProxy L1 are emptied. Fleet thread. */
static void fleet_flush(const char *why)
{
	static struct log_rl rl;

	cache_invalidate_all(fleet.cache);
	FLEET_COUNT(fleet.local_flushes);
	log_ratelimited(LOG_LVL_WARN, &rl, "redis: local cache flushed: %s", why);
	fleet_l1_apply(1, NULL);
}

/* Carries a revocation applied from the stream to this node's HAProxy L1:
 * a tombstone under the session hash <l1> (NULL: none known), or, <all>, a
 * cleared map. Nothing without haproxy-runtime-socket. Fleet thread only:
 * one blocking exchange bounded by FLEET_HAPI_TIMEOUT_MS; after a failure
 * the writes of the next FLEET_HAPI_BACKOFF_MS are not tried (a stopped
 * HAProxy never holds the stream back), and count as failed too. Failures
 * are logged rate-limited, without the hash; the L1 TTL cap bounds what
 * they leave. */
static void fleet_l1_apply(int all, const uint8_t *l1)
{
	char cmd[HAPI_CMD_MAX], hex[HAPI_L1_CRED_HEX + 1], reply[256], err[128];
	size_t rlen;
	uint64_t now;
	int rc;

	if (!fleet.hapi_socket || (!all && !l1))
		return;
	now = fleet_mono_ms();
	if (now < fleet.hapi_skip_until) {
		hapi_count(-1);
		return;
	}
	if (all) {
		rc = hapi_cmd_clear_map(cmd, sizeof(cmd), fleet.hapi_map);
	} else {
		hex_encode(hex, l1, FLEETVAL_L1_LEN, 1);
		rc = hapi_cmd_tombstone(cmd, sizeof(cmd), fleet.hapi_tombs, hex);
		OPENSSL_cleanse(hex, sizeof(hex));
	}
	if (rc < 0)
		snprintf(err, sizeof(err), "cannot build the command");
	else
		rc = hapi_exec(fleet.hapi_socket, cmd, FLEET_HAPI_TIMEOUT_MS, reply, sizeof(reply),
		               &rlen, err, sizeof(err));
	OPENSSL_cleanse(cmd, sizeof(cmd));
	hapi_count(rc);
	if (rc < 0) {
		static struct log_rl rl;

		fleet.hapi_skip_until = fleet_mono_ms() + FLEET_HAPI_BACKOFF_MS;
		log_ratelimited(LOG_LVL_WARN, &rl, "redis: a fleet revocation did not reach the "
		                "HAProxy L1 through the runtime API: %s (the L1 TTL cap bounds "
		                "the entry)", err);
	}
}

static void fleet_stream_apply(const redisReply *e)
{
	const redisReply *id, *fields, *l1v = NULL;
	uint8_t cred[32], l1[FLEETVAL_L1_LEN] = { 0 };
	int rc = -1;

	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
		return;
	id = e->element[0];
	fields = e->element[1];
	if (id->type != REDIS_REPLY_STRING || id->len >= FLEET_ID_MAX)
		return;
	memcpy(fleet.last_id, id->str, id->len);
	fleet.last_id[id->len] = 0;
	if (fields->type != REDIS_REPLY_ARRAY)
		return;
	for (size_t i = 0; i + 1 < fields->elements; i += 2) {
		const redisReply *k = fields->element[i], *v = fields->element[i + 1];

		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || k->len != 1)
			continue;
		if (k->str[0] == 'l')
			l1v = v;
		else if (k->str[0] == 'c' && rc < 0)
			rc = fleetval_event_parse(v->str, v->len, cred);
	}
	if (rc < 0)
		return;
	FLEET_COUNT(fleet.revocations_received);
	if (rc == 0)
		cache_invalidate_all(fleet.cache);
	else
		cache_invalidate_cred(fleet.cache, cred, fleet_mono_ms());
	if (!fleet.hapi_socket)
		return;
	/* A hash that does not open (no secret, moved from another event) is
	 * ignored: the local eviction above stands either way. */
	if (rc == 1 && !(l1v && fleetval_l1ev_open(&fleet.keys, cred, l1v->str, l1v->len,
	                                           l1) == 0))
		return;
	if (fleet.n_l1_pending == FLEET_XREAD_COUNT_N) {
		hapi_count(-1);  /* more than one reply's worth: cannot happen */
	} else {
		fleet.l1_pending[fleet.n_l1_pending].all = rc == 0;
		memcpy(fleet.l1_pending[fleet.n_l1_pending].l1, l1, sizeof(l1));
		fleet.n_l1_pending++;
	}
	OPENSSL_cleanse(l1, sizeof(l1));
}

/* Sends the L1 writes collected while one XREAD reply was applied, in
 * order, within FLEET_HAPI_BATCH_MS in all: the ones past it are not tried
 * (counted as failed; the L1 TTL cap bounds them). */
static void fleet_l1_flush(void)
{
	uint64_t end = fleet_mono_ms() + FLEET_HAPI_BATCH_MS;

	for (unsigned i = 0; i < fleet.n_l1_pending; i++) {
		if (fleet_mono_ms() >= end)
			hapi_count(-1);
		else
			fleet_l1_apply(fleet.l1_pending[i].all,
			               fleet.l1_pending[i].all ? NULL : fleet.l1_pending[i].l1);
	}
	OPENSSL_cleanse(fleet.l1_pending, sizeof(fleet.l1_pending[0]) * fleet.n_l1_pending);
	fleet.n_l1_pending = 0;
}

static void fleet_xread_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *r = reply;

	(void)priv;
	if (!r || fleet.stream.ac != ac || fleet.stream.freeing)
		return;
	ev_timer_stop(fleet.loop, &fleet.stream.deadline);
	if (r->type == REDIS_REPLY_ERROR) {
		static struct log_rl rl;

		FLEET_COUNT(fleet.commands[FLEET_CMD_XREAD][FLEET_CR_ERROR]);
		log_ratelimited(LOG_LVL_WARN, &rl, "redis: XREAD refused: %.80s", r->str);
		redisAsyncDisconnect(ac);
		return;
	}
	FLEET_COUNT(fleet.commands[FLEET_CMD_XREAD][FLEET_CR_OK]);
	if (r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < r->elements; i++) {
			const redisReply *s = r->element[i];

			if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
			    s->element[1]->type != REDIS_REPLY_ARRAY)
				continue;
			for (size_t j = 0; j < s->element[1]->elements; j++)
				fleet_stream_apply(s->element[1]->element[j]);
		}
	}
	/* Every local eviction first: HAProxy's answers never delay them. */
	fleet_l1_flush();
	fleet_stream_read();
}

static void fleet_stream_read(void)
{
	const char *argv[7];
	size_t lens[7];
	char block[16];

	if (!fleet.stream.ac)
		return;
	snprintf(block, sizeof(block), "%u", FLEET_XREAD_BLOCK_MS);
	argv[0] = "XREAD"; argv[1] = "COUNT"; argv[2] = FLEET_XREAD_COUNT; argv[3] = "BLOCK";
	argv[4] = block; argv[5] = "STREAMS"; argv[6] = fleet.stream_name;
	for (int i = 0; i < 7; i++)
		lens[i] = strlen(argv[i]);
	{
		const char *av[8];
		size_t lv[8];

		memcpy(av, argv, sizeof(argv));
		memcpy(lv, lens, sizeof(lens));
		av[7] = fleet.last_id;
		lv[7] = strlen(fleet.last_id);
		redisAsyncCommandArgv(fleet.stream.ac, fleet_xread_cb, NULL, 8, av, lv);
	}
	ev_timer_set(&fleet.stream.deadline,
	             (FLEET_XREAD_BLOCK_MS + FLEET_XREAD_SLACK_MS) / 1000.0, 0.);
	ev_timer_start(fleet.loop, &fleet.stream.deadline);
}

/* Finds field <name> in a flat key/value reply <r>; NULL if absent. */
static const redisReply *fleet_info_field(const redisReply *r, const char *name)
{
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *k = r->element[i];

		if ((k->type == REDIS_REPLY_STRING || k->type == REDIS_REPLY_STATUS) &&
		    strcmp(k->str, name) == 0)
			return r->element[i + 1];
	}
	return NULL;
}

/* XINFO STREAM's answer on (re)connect: where to resume, and whether the
 * events since the last one applied are still all there. */
static void fleet_xinfo_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *r = reply;
	char last_gen[FLEET_ID_MAX] = "0-0", max_del[FLEET_ID_MAX] = "0-0", first_id[FLEET_ID_MAX] = "";
	int absent = 0, first = fleet.stream_connects == 0;

	(void)priv;
	if (!r || fleet.stream.ac != ac || fleet.stream.freeing)
		return;
	ev_timer_stop(fleet.loop, &fleet.stream.deadline);
	if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "no such key")) {
		absent = 1;
	} else if (r->type == REDIS_REPLY_ARRAY) {
		const redisReply *g = fleet_info_field(r, "last-generated-id");
		const redisReply *m = fleet_info_field(r, "max-deleted-entry-id");

		if (g && g->type == REDIS_REPLY_STRING && g->len < FLEET_ID_MAX)
			snprintf(last_gen, sizeof(last_gen), "%s", g->str);
		const redisReply *f = fleet_info_field(r, "recorded-first-entry-id");
		const redisReply *fe = fleet_info_field(r, "first-entry");

		if (m && m->type == REDIS_REPLY_STRING && m->len < FLEET_ID_MAX)
			snprintf(max_del, sizeof(max_del), "%s", m->str);
		/* Redis 7 records the first id; older ones give the first entry */
		if (f && f->type == REDIS_REPLY_STRING && f->len < FLEET_ID_MAX)
			snprintf(first_id, sizeof(first_id), "%s", f->str);
		else if (fe && fe->type == REDIS_REPLY_ARRAY && fe->elements >= 1 &&
		         fe->element[0]->type == REDIS_REPLY_STRING &&
		         fe->element[0]->len < FLEET_ID_MAX)
			snprintf(first_id, sizeof(first_id), "%s", fe->element[0]->str);
	} else {
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_WARN, &rl, "redis: XINFO STREAM refused%s%.80s",
		                r->type == REDIS_REPLY_ERROR ? ": " : "",
		                r->type == REDIS_REPLY_ERROR ? r->str : "");
		redisAsyncDisconnect(ac);
		return;
	}
	{
		struct cache_stats cs;
		char resume[FLEETVAL_ID_MAX];

		memset(&cs, 0, sizeof(cs));
		if (first)
			cache_stats(fleet.cache, &cs);
		if (fleetval_stream_resume(first ? "" : fleet.last_id, absent, last_gen, max_del,
		                           first_id, cs.entries > 0, resume))
			fleet_flush(first ? "revocation stream reached late: events before it are "
			                    "unknown"
			                  : absent ? "the revocation stream is gone"
			                  : "revocation events were trimmed or the stream was "
			                    "recreated while disconnected");
		snprintf(fleet.last_id, sizeof(fleet.last_id), "%s", resume);
	}
	fleet.stream_connects++;
	atomic_store(&fleet.stream_up, 1);
	{
		static struct log_rl rl;

		log_ratelimited(LOG_LVL_INFO, &rl, "redis: revocation stream connected");
	}
	fleet_stream_read();
}

static void fleet_stream_up(struct fleet_conn *fc)
{
	const char *argv[3] = { "XINFO", "STREAM", fleet.stream_name };
	size_t lens[3] = { 5, 6, strlen(fleet.stream_name) };

	redisAsyncCommandArgv(fc->ac, fleet_xinfo_cb, NULL, 3, argv, lens);
	ev_timer_set(&fc->deadline, FLEET_HANDSHAKE_MS / 1000.0, 0.);
	ev_timer_start(fc->loop, &fc->deadline);
}

static void fleet_stream_down(struct fleet_conn *fc)
{
	(void)fc;
	atomic_store(&fleet.stream_up, 0);
}

/* One revocation on the fleet thread's command connection. */
struct fleet_rev_req {
	ev_timer budget;
	int done;
	struct fleet_revocation rv;
};

static void fleet_requeue(const struct fleet_revocation *rv);

static void fleet_rev_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct fleet_rev_req *rq = priv;
	redisReply *r = reply;

	(void)ac;
	if (!rq->done)
		ev_timer_stop(fleet.loop, &rq->budget);
	if (!r) {
		/* Connection lost (or dropped after a timeout): whether Redis ran
		 * it is unknown, and running it twice is harmless (a second DEL,
		 * tombstone and event): send it again. */
		if (!fleet.cmd.freeing)
			fleet_requeue(&rq->rv);
	} else if (!rq->done && r->type == REDIS_REPLY_ERROR) {
		static struct log_rl rl;

		FLEET_COUNT(fleet.commands[FLEET_CMD_REVOKE][FLEET_CR_ERROR]);
		log_ratelimited(LOG_LVL_WARN, &rl, "redis: revocation refused: %.80s", r->str);
	} else if (r->type != REDIS_REPLY_ERROR) {
		if (!rq->done)
			FLEET_COUNT(fleet.commands[FLEET_CMD_REVOKE][FLEET_CR_OK]);
		FLEET_COUNT(fleet.revocations_sent);
	}
	free(rq);
}

static void fleet_rev_budget_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct fleet_rev_req *rq = (struct fleet_rev_req *)(void *)t;

	(void)loop;
	(void)revents;
	rq->done = 1;
	FLEET_COUNT(fleet.commands[FLEET_CMD_REVOKE][FLEET_CR_TIMEOUT]);
	/* Redis stopped answering: make the connection again; the pending
	 * revocations come back to the queue (NULL replies) and are resent
	 * once it answers. <rq> is freed by the drop. */
	if (fleet.cmd.ac)
		fleet_conn_drop(&fleet.cmd, "a revocation got no answer in time");
}

/* Sends <rv>; returns 0, or -1 if it could not be queued in hiredis. */
static int fleet_rev_send(const struct fleet_revocation *rv)
{
	char tag[FLEETVAL_HEX_LEN + 1], ev[FLEETVAL_HEX_LEN + 1], px[24];
	char tomb[FLEETVAL_PREFIX_MAX + 8 + FLEETVAL_HEX_LEN];
	char index[FLEETVAL_PREFIX_MAX + 8 + FLEETVAL_HEX_LEN];
	char l1ev[FLEETVAL_L1EV_HEX + 1] = "";
	uint8_t nonce[FLEETVAL_NONCE_LEN];
	const char *argv[10];
	size_t lens[10];
	struct fleet_rev_req *rq;
	int n, rc;

	rq = calloc(1, sizeof(*rq));
	if (!rq)
		return -1;
	rq->rv = *rv;
	if (rv->all) {
		argv[0] = "EVAL"; argv[1] = fleet_lua_all; argv[2] = "2";
		argv[3] = fleet.epoch_name; argv[4] = fleet.stream_name; argv[5] = fleet.maxlen;
		n = 6;
	} else {
		if (fleetval_cred_tag(&fleet.keys, rv->cred, tag) < 0) {
			free(rq);
			return 0;
		}
		fleetval_event_format(rv->cred, ev);
		/* No hash if it cannot be sealed: the event still evicts. */
		if (rv->has_l1 && (RAND_bytes(nonce, sizeof(nonce)) != 1 ||
		                   fleetval_l1ev_seal(&fleet.keys, rv->cred, rv->l1, nonce,
		                                      l1ev) < 0))
			l1ev[0] = 0;
		snprintf(tomb, sizeof(tomb), "%st:{%s}", fleet.prefix, tag);
		snprintf(index, sizeof(index), "%si:{%s}", fleet.prefix, tag);
		snprintf(px, sizeof(px), "%u", fleet.tomb_ms);
		argv[0] = "EVAL"; argv[1] = fleet_lua_revoke; argv[2] = "3";
		argv[3] = index; argv[4] = tomb; argv[5] = fleet.stream_name;
		argv[6] = px; argv[7] = fleet.maxlen; argv[8] = ev; argv[9] = l1ev;
		n = 10;
	}
	for (int i = 0; i < n; i++)
		lens[i] = strlen(argv[i]);
	rc = redisAsyncCommandArgv(fleet.cmd.ac, fleet_rev_reply_cb, rq, n, argv, lens);
	if (rc != REDIS_OK) {
		free(rq);
		return -1;
	}
	ev_timer_init(&rq->budget, fleet_rev_budget_cb, FLEET_REVOKE_BUDGET_MS / 1000.0, 0.);
	ev_timer_start(fleet.loop, &rq->budget);
	return 0;
}

/* Queue of revocations: the fleet thread sends them while its command
 * connection is up, and keeps the newest FLEET_REVOKE_QUEUE otherwise. */
static void fleet_queue_push(const struct fleet_revocation *rv, int front)
{
	unsigned at;

	pthread_mutex_lock(&fleet.lock);
	if (fleet.q_len == FLEET_REVOKE_QUEUE) {
		static struct log_rl rl;

		/* drop the oldest: a newer revocation matters more */
		fleet.q_head = (fleet.q_head + 1) % FLEET_REVOKE_QUEUE;
		fleet.q_len--;
		log_ratelimited(LOG_LVL_WARN, &rl, "redis: revocation queue full: oldest dropped");
	}
	if (front) {
		fleet.q_head = (fleet.q_head + FLEET_REVOKE_QUEUE - 1) % FLEET_REVOKE_QUEUE;
		at = fleet.q_head;
	} else {
		at = (fleet.q_head + fleet.q_len) % FLEET_REVOKE_QUEUE;
	}
	fleet.queue[at] = *rv;
	fleet.q_len++;
	pthread_mutex_unlock(&fleet.lock);
}

static void fleet_requeue(const struct fleet_revocation *rv)
{
	fleet_queue_push(rv, 1);
}

static void fleet_queue_drain(void)
{
	struct fleet_revocation rv;

	for (;;) {
		if (!fleet.cmd.up || !fleet.cmd.ac)
			return;
		pthread_mutex_lock(&fleet.lock);
		if (!fleet.q_len) {
			pthread_mutex_unlock(&fleet.lock);
			return;
		}
		rv = fleet.queue[fleet.q_head];
		fleet.q_head = (fleet.q_head + 1) % FLEET_REVOKE_QUEUE;
		fleet.q_len--;
		pthread_mutex_unlock(&fleet.lock);
		if (fleet_rev_send(&rv) < 0) {
			fleet_requeue(&rv);
			return;
		}
	}
}

void fleet_revoke(const uint8_t *cred, const char *l1_hex)
{
	struct fleet_revocation rv;

	if (!fleet.on || !fleet.thread_started)
		return;
	memset(&rv, 0, sizeof(rv));
	rv.all = cred == NULL;
	if (cred)
		memcpy(rv.cred, cred, sizeof(rv.cred));
	if (cred && l1_hex && strlen(l1_hex) == HAPI_L1_CRED_HEX) {
		rv.has_l1 = 1;
		for (size_t i = 0; i < FLEETVAL_L1_LEN && rv.has_l1; i++) {
			int hi = hex_digit((unsigned char)l1_hex[2 * i]);
			int lo = hex_digit((unsigned char)l1_hex[2 * i + 1]);

			if (hi < 0 || lo < 0)
				rv.has_l1 = 0;
			else
				rv.l1[i] = (uint8_t)(hi << 4 | lo);
		}
	}
	fleet_queue_push(&rv, 0);
	OPENSSL_cleanse(&rv, sizeof(rv));
	ev_async_send(fleet.loop, &fleet.wake);
}

static void fleet_cmd_up(struct fleet_conn *fc)
{
	(void)fc;
	fleet_queue_drain();
}

static void fleet_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	int stopping;

	(void)a;
	(void)revents;
	pthread_mutex_lock(&fleet.lock);
	stopping = fleet.stopping;
	pthread_mutex_unlock(&fleet.lock);
	if (stopping) {
		atomic_store(&fleet.stream_up, 0);
		fleet_conn_close(&fleet.stream);
		fleet_conn_close(&fleet.cmd);
		ev_async_stop(loop, &fleet.wake);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	fleet_queue_drain();
}

static void *fleet_thread_main(void *arg)
{
	(void)arg;
	log_set_thread_name("fleet");
	fleet_conn_connect(&fleet.stream);
	fleet_conn_connect(&fleet.cmd);
	ev_run(fleet.loop, 0);
	return NULL;
}

/* ---- start ---- */

/* The one blocking look at Redis, on the main thread before any worker
 * runs: a wrong password must stop the start; an absent Redis must not. */
static int fleet_start_check(char *err, size_t errlen)
{
	struct timeval tv = { FLEET_START_CHECK_MS / 1000, (FLEET_START_CHECK_MS % 1000) * 1000 };
	redisContext *c = fleet.path ? redisConnectUnixWithTimeout(fleet.path, tv)
	                             : redisConnectWithTimeout(fleet.host, fleet.port, tv);
	redisReply *r = NULL;
	const char *argv[3];
	size_t lens[3];
	int n = 0, ret = 0;

	if (!c || c->err) {
		log_warn("redis: cannot reach %s: %s: starting as a single node, reconnecting "
		         "in the background", fleet.path ? fleet.path : fleet.host,
		         c ? c->errstr : "out of memory");
		goto out;
	}
	redisSetTimeout(c, tv);
	if (fleet.password) {
		argv[n] = "AUTH";
		lens[n++] = 4;
		if (fleet.user) {
			argv[n] = fleet.user;
			lens[n++] = strlen(fleet.user);
		}
		argv[n] = fleet.password;
		lens[n] = strlen(fleet.password);
		n++;
		r = redisCommandArgv(c, n, argv, lens);
		if (r && r->type == REDIS_REPLY_ERROR) {
			snprintf(err, errlen, "key '%s': Redis at %s refused AUTH: %.120s",
			         fleet.user ? "redis-user' / 'redis-password" : "redis-password",
			         fleet.path ? fleet.path : fleet.host, r->str);
			ret = -1;
			goto out;
		}
		if (!r) {
			log_warn("redis: no answer to AUTH from %s within %ums: starting as a single "
			         "node, reconnecting in the background",
			         fleet.path ? fleet.path : fleet.host, FLEET_START_CHECK_MS);
			goto out;
		}
		freeReplyObject(r);
		r = NULL;
	}
	argv[0] = "PING";
	lens[0] = 4;
	r = redisCommandArgv(c, 1, argv, lens);
	if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0) {
		snprintf(err, errlen, "key 'redis-password': Redis at %s requires a password",
		         fleet.path ? fleet.path : fleet.host);
		ret = -1;
		goto out;
	}
	if (!r || r->type != REDIS_REPLY_STATUS)
		log_warn("redis: %s does not answer PING: starting as a single node, "
		         "reconnecting in the background", fleet.path ? fleet.path : fleet.host);
	else
		log_info("redis: %s answers: fleet on (prefix %s)",
		         fleet.path ? fleet.path : fleet.host, fleet.prefix);
out:
	if (r)
		freeReplyObject(r);
	if (c)
		redisFree(c);
	return ret;
}

static char *fleet_dup(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Binds the value names to what shapes a stored answer beyond the local key
 * (fleetval_keys_bind()): each field length-prefixed. Returns 0 or -1. */
static int fleet_bind_shape(const struct cfg *cfg)
{
	size_t cap = 64, len = 0;
	char *buf = malloc(cap), *nb;
	const char *parts[3 + FLEET_SHAPE_MAX_COPY];
	char frame[16];
	size_t n = 0;
	int rc;

	if (!buf)
		return -1;
	snprintf(frame, sizeof(frame), "%u", (unsigned)cfg->max_frame_size);
	parts[n++] = cfg->var_prefix;
	parts[n++] = cfg->subject_claim ? cfg->subject_claim : "";
	parts[n++] = frame;
	for (size_t i = 0; i < cfg->n_copy_headers && n < sizeof(parts) / sizeof(parts[0]); i++)
		parts[n++] = cfg->copy_headers[i];
	for (size_t i = 0; i < n; i++) {
		size_t pl = strlen(parts[i]);

		if (len + pl + 16 > cap) {
			cap = (len + pl + 16) * 2;
			nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				return -1;
			}
			buf = nb;
		}
		len += (size_t)snprintf(buf + len, cap - len, "%zu:", pl);
		memcpy(buf + len, parts[i], pl);
		len += pl;
	}
	rc = fleetval_keys_bind(&fleet.keys, buf, len);
	free(buf);
	return rc;
}

int fleet_start(const struct cfg *cfg, struct cache *cache, char *err, size_t errlen)
{
	int rc;

	if (!cfg->redis_address)
		return 0;
	memset(&fleet.keys, 0, sizeof(fleet.keys));
	if (fleetval_keys_derive(&fleet.keys, cfg->redis_key_secret,
	                         cfg->redis_key_secret_len) < 0) {
		snprintf(err, errlen, "key 'redis-key-secret': cannot derive the fleet keys");
		return -1;
	}
	if (fleet_bind_shape(cfg) < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	fleet.prefix = fleet_dup(cfg->redis_prefix);
	fleet.host = fleet_dup(cfg->redis_host);
	fleet.path = fleet_dup(cfg->redis_path);
	fleet.user = fleet_dup(cfg->redis_user);
	fleet.password = fleet_dup(cfg->redis_password);
	if (!fleet.prefix || (cfg->redis_host && !fleet.host) || (cfg->redis_path && !fleet.path) ||
	    (cfg->redis_user && !fleet.user) || (cfg->redis_password && !fleet.password)) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	fleet.port = cfg->redis_port;
	fleet.timeout_ms = cfg->redis_timeout_ms;
	fleet.disc_ttl_ms = cfg->redis_disconnected_max_ttl_ms;
	fleet.tomb_ms = cfg->cache_max_ttl_ms ? cfg->cache_max_ttl_ms : FLEET_ONE_DAY_MS;
	if (cfg->cache_logout_hold_ms > fleet.tomb_ms)
		fleet.tomb_ms = cfg->cache_logout_hold_ms;
	fleet.brk_failures = cfg->redis_breaker_failures;
	fleet.brk_open_ms = cfg->redis_breaker_open_ms;
	if (cfg->haproxy_runtime_socket) {
		fleet.hapi_socket = fleet_dup(cfg->haproxy_runtime_socket);
		fleet.hapi_map = fleet_dup(cfg->haproxy_l1_map);
		fleet.hapi_tombs = fleet_dup(cfg->haproxy_l1_tombstones);
		if (!fleet.hapi_socket || !fleet.hapi_map || !fleet.hapi_tombs) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	fleet.hapi_skip_until = 0;
	snprintf(fleet.maxlen, sizeof(fleet.maxlen), "%u", cfg->redis_stream_maxlen);
	snprintf(fleet.stream_name, sizeof(fleet.stream_name), "%srevocations", fleet.prefix);
	snprintf(fleet.epoch_name, sizeof(fleet.epoch_name), "%sepoch", fleet.prefix);
	fleet.cache = cache;
	breaker_init(&fleet.breaker);
	fleet.last_id[0] = 0;
	if (fleet_start_check(err, errlen) < 0)
		goto fail;

	pthread_mutex_init(&fleet.lock, NULL);
	fleet.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (!fleet.loop) {
		snprintf(err, errlen, "redis: cannot create the fleet thread's loop");
		goto fail_lock;
	}
	fleet_conn_init(&fleet.stream, fleet.loop, "stream", fleet_stream_up, fleet_stream_down);
	fleet_conn_init(&fleet.cmd, fleet.loop, "revocation", fleet_cmd_up, NULL);
	ev_async_init(&fleet.wake, fleet_wake_cb);
	ev_async_start(fleet.loop, &fleet.wake);
	fleet.on = 1;
	rc = pthread_create(&fleet.thread, NULL, fleet_thread_main, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "redis: cannot start the fleet thread: %s", strerror(rc));
		fleet.on = 0;
		ev_async_stop(fleet.loop, &fleet.wake);
		ev_loop_destroy(fleet.loop);
		fleet.loop = NULL;
		goto fail_lock;
	}
	fleet.thread_started = 1;
	return 0;

fail_lock:
	pthread_mutex_destroy(&fleet.lock);
fail:
	fleet_stop();
	return -1;
}

void fleet_stop(void)
{
	if (fleet.thread_started) {
		pthread_mutex_lock(&fleet.lock);
		fleet.stopping = 1;
		pthread_mutex_unlock(&fleet.lock);
		ev_async_send(fleet.loop, &fleet.wake);
		pthread_join(fleet.thread, NULL);
		fleet.thread_started = 0;
		ev_loop_destroy(fleet.loop);
		fleet.loop = NULL;
		pthread_mutex_destroy(&fleet.lock);
	}
	fleet.on = 0;
	if (fleet.password)
		OPENSSL_cleanse(fleet.password, strlen(fleet.password));
	free(fleet.password); fleet.password = NULL;
	free(fleet.prefix); fleet.prefix = NULL;
	free(fleet.host); fleet.host = NULL;
	free(fleet.path); fleet.path = NULL;
	free(fleet.user); fleet.user = NULL;
	free(fleet.hapi_socket); fleet.hapi_socket = NULL;
	free(fleet.hapi_map); fleet.hapi_map = NULL;
	free(fleet.hapi_tombs); fleet.hapi_tombs = NULL;
	OPENSSL_cleanse(&fleet.keys, sizeof(fleet.keys));
}

void fleet_stats_get(struct fleet_stats *st)
{
	unsigned nw = atomic_load(&fleet.n_workers), nu = atomic_load(&fleet.n_up);

	memset(st, 0, sizeof(*st));
	st->on = fleet.on;
	st->up = fleet.on && nw > 0 && nu == nw;
	st->stream_up = fleet.on && atomic_load(&fleet.stream_up);
	st->breaker_state = (int)breaker_state_get(&fleet.breaker);
	for (int c = 0; c < FLEET_CMD_ENTRIES; c++)
		for (int r = 0; r < FLEET_CR_ENTRIES; r++)
			st->commands[c][r] = atomic_load(&fleet.commands[c][r]);
	for (int i = 0; i < FLEET_L2_ENTRIES; i++)
		st->l2[i] = atomic_load(&fleet.l2[i]);
	st->revocations_sent = atomic_load(&fleet.revocations_sent);
	st->revocations_received = atomic_load(&fleet.revocations_received);
	st->local_flushes = atomic_load(&fleet.local_flushes);
}
