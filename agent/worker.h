/*
 * worker.h: one worker thread: its own ev_loop, CURLM (struct upstream),
 * listening socket (SO_REUSEPORT, same address as the others), connection
 * list, inbox (ev_async + a mutex-protected queue of struct worker_msg) and
 * counters.
 *
 * Owns struct worker (private to worker.c) and the list of its connections;
 * lends struct worker_env to the code on its thread. Everything but the
 * inbox belongs to the worker thread once worker_start() returns; other
 * threads talk to it only through worker_post*(). Callers: main.c (life
 * cycle, reload, drain), conn.c (counts, slots, drain time), exchange.c
 * (env, work count, spare, inbox), the cache's waiters through exchange.c.
 *
 * Return convention: constructors return the object or NULL (message in
 * <err>); actions that can fail return 0 or -1; predicates return 1 or 0.
 */
#ifndef SPOA_WORKER_H
#define SPOA_WORKER_H

#include <pthread.h>

#include <ev.h>

#include "metrics.h"

struct cache;
struct cachekey;
struct cfg;
struct conn;
struct exchange;
struct fleet_worker;
struct spop_frame;
struct upstream;

/* Connection slots per worker beyond max-connections, for health checks
 * only: when every slot is busy (nothing to evict) a new connection gets one
 * of these, with a short HELLO timeout (CONN_RESERVE_HELLO_TIMEOUT_S). A
 * health-check HELLO on it is answered as usual (then closed); any other
 * HELLO gets AGENT-DISCONNECT 13, so HAProxy's check keeps the server UP
 * while a full agent still refuses new work cleanly. */
#define WORKER_HC_RESERVE 4

/* Private to worker.c: others use the functions below. */
struct worker;

/* What a worker lends the code that runs on its thread (its connections and
 * exchanges), through worker_env(): set by worker.c only, read by the others,
 * which never keep the pointers past the callback they run in (cfg changes
 * at a reload). The counters in <met> are this thread's to increment. */
struct worker_env {
	struct ev_loop *loop;           /* the worker's loop */
	struct cfg *cfg;                /* current cfg (borrowed: take a reference
	                                 * to keep it) */
	struct upstream *up;            /* the user-service client */
	struct cache *cache;            /* shared by every worker; NULL = cache off */
	struct cachekey *ck;            /* key builder; NULL = bypass the cache */
	struct fleet_worker *fw;        /* Redis command connection; NULL = fleet off */
	struct metrics *met;            /* this worker's counters */
};

/* A message for a worker's loop (worker_post()), in storage the poster
 * chooses (embedded in what it is about: posting never allocates, never
 * fails). <next> is the inbox's while queued. */
struct worker_msg;
struct worker_msg_ops {
	/* On the worker's thread, once, in posting order. */
	void (*run)(struct worker *w, struct worker_msg *m);
	/* Instead of <run>, when the worker is freed with the message still
	 * queued. */
	void (*drop)(struct worker_msg *m);
};

struct worker_msg {
	const struct worker_msg_ops *ops;
	struct worker_msg *next;
};

/* The handler of every decoded NOTIFY of the worker's connections
 * (conn_notify_fn, called with the worker as <arg>). */
typedef int (*worker_notify_fn)(void *w, struct conn *c, const struct spop_frame *f);

/* Claims <cfg>'s listen address for this process before any worker binds
 * it (the workers' sockets use SO_REUSEPORT, which would let a second agent
 * silently share the port): fails if another spoa-auth holds the claim
 * (message names the address and its pid) or if anything else listens on
 * the address. Returns the claim's fd, to keep open until exit, or -1 with a
 * message in <err>. Never binds the address itself past the check. Main
 * thread. */
int worker_claim_listen(const struct cfg *cfg, char *err, size_t errlen);

/* Creates worker <id> with a reference on <cfg>: binds its listening socket
 * now (so address errors stop the start), creates its loop and upstream.
 * <cache> (may be NULL: cache off) is shared and must outlive every worker;
 * <salt> (CACHEKEY_SALT_LEN bytes, read again on reload) too. Every NOTIFY
 * of its connections goes to <notify> (exchange_notify(), or a test's).
 * Returns NULL with a message in <err>. Main thread. */
struct worker *worker_new(unsigned id, struct cfg *cfg, struct cache *cache,
                          const uint8_t *salt, worker_notify_fn notify, char *err,
                          size_t errlen);

/* The worker's environment (see struct worker_env). Worker thread. Never
 * NULL. Inline on the hot path: struct worker begins with its env (worker.c
 * asserts it), the only thing this header knows of its layout. */
static inline const struct worker_env *worker_env(const struct worker *w)
{
	return (const struct worker_env *)(const void *)w;
}

/* Starts the thread. Returns 0 or -1 (errno). */
int worker_start(struct worker *w);

/* Hands a new cfg to the worker (takes its own reference). Any thread. */
void worker_post_reload(struct worker *w, struct cfg *cfg);

/* Asks the worker to drain and stop. Any thread. */
void worker_post_drain(struct worker *w);

/* Queues <m> (m->ops set, not queued already) for <w>'s loop,
 * which runs it in posting order. Never allocates, never fails. Any thread:
 * the cache's leaders post their answers from theirs. */
void worker_post(struct worker *w, struct worker_msg *m);

/* Joins the thread (after a drain). Main thread. Join every worker before
 * freeing any: a leader on one worker may still post to another's inbox. */
void worker_join(struct worker *w);

/* Frees a worker whose thread was joined or never started, dropping the
 * messages still in its inbox (their drop()). */
void worker_free(struct worker *w);

/* The worker's count of running work (exchanges, orphans included): a
 * draining worker stops once it and its connection count are 0. Worker
 * thread. */
void worker_work_begin(struct worker *w);
void worker_work_end(struct worker *w);

/* The worker's one spare block (an exchange kept so that a cache hit
 * allocates nothing): worker_spare_take() hands it over (NULL if none);
 * worker_spare_offer() keeps <p> (malloc'ed; freed by worker_free()) and
 * returns 1 if there was no spare, else returns 0 and the caller frees <p>.
 * Worker thread. */
void *worker_spare_take(struct worker *w);
int worker_spare_offer(struct worker *w, void *p);

/* Connections. Worker thread.
 * worker_conn_add(): makes connected socket <fd> (non-blocking) a
 * connection of <w> from <peer> ("ip:port", for logs), on a health-check
 * reserve slot if <reserve>: counted and listed, drained at once if <w> is
 * draining. The accept path's, and the unit tests' way in (a socketpair
 * end). Returns the connection, or NULL: out of memory (fd closed), or <w>
 * is draining (the connection may be closed already).
 * worker_conn_gone(): a connection being freed leaves the list and counts.
 * worker_n_conns(): connections now, reserve slots included.
 * worker_conns_full(): 1 if the regular slots (max-connections) are taken.
 * worker_reserve_release(): a connection on a reserve slot takes a regular
 * one (checked with worker_conns_full() first).
 * worker_drain_left(): seconds left of the drain deadline (0 when not
 * draining). */
struct conn *worker_conn_add(struct worker *w, int fd, const char *peer, int reserve);
void worker_conn_gone(struct worker *w, struct conn *c);
unsigned worker_n_conns(const struct worker *w);
int worker_conns_full(const struct worker *w);
void worker_reserve_release(struct worker *w);
double worker_drain_left(const struct worker *w);

#endif /* SPOA_WORKER_H */
