/*
 * worker.h: one worker thread: its own ev_loop, CURLM (struct upstream),
 * listening socket (SO_REUSEPORT, same address as the others), inbox
 * (ev_async + mutex-protected queue) and counters.
 *
 * Everything in struct worker except the inbox belongs to the worker thread
 * once worker_start() returns; other threads talk to it only through
 * worker_post_*().
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
struct upstream;
struct worker_msg;

/* Connection slots per worker beyond max-connections, for health checks
 * only: when every slot is busy (nothing to evict) a new connection gets one
 * of these, with a short HELLO timeout (CONN_RESERVE_HELLO_TIMEOUT_S). A
 * health-check HELLO on it is answered as usual (then closed); any other
 * HELLO gets AGENT-DISCONNECT 13, so HAProxy's check keeps the server UP
 * while a full agent still refuses new work cleanly. */
#define WORKER_HC_RESERVE 4

struct worker {
	unsigned id;
	pthread_t thread;
	struct ev_loop *loop;           /* owned */
	struct upstream *up;            /* owned */
	struct cfg *cfg;                /* reference: current cfg */
	int lfd;                        /* listening socket, -1 once closed */
	ev_io accept_w;
	ev_timer accept_pause;          /* EMFILE back-off */
	ev_async inbox_w;
	pthread_mutex_t inbox_lock;
	struct worker_msg *inbox;       /* protected by inbox_lock */
	struct exchange *cache_inbox;   /* protected by inbox_lock: coalesced exchanges
	                                 * whose answer a leader delivered (LIFO) */
	struct cache *cache;            /* shared by every worker; NULL = cache off */
	const uint8_t *salt;            /* process-wide key salt (main's storage) */
	struct cachekey *ck;            /* owned, per-worker key builder; NULL = bypass */
	struct fleet_worker *fw;        /* owned: Redis command connection; NULL = fleet off */
	struct exchange *x_spare;       /* owned: one preallocated exchange, so that a
	                                 * cache hit allocates nothing */
	struct conn *conns;             /* owned */
	unsigned n_conns;               /* reserve slots included */
	unsigned n_reserve;             /* of n_conns: on a health-check reserve slot */
	unsigned n_exchanges;           /* running, orphans included */
	int draining;
	ev_timer drain_timer;
	ev_timer listen_grace;          /* drain: closes the listener when the grace ends */
	struct metrics met;
	char name[16];
};

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
 * <salt> (CACHEKEY_SALT_LEN bytes, read again on reload) too.
 * Returns NULL with a message in <err>. Main thread. */
struct worker *worker_new(unsigned id, struct cfg *cfg, struct cache *cache,
                          const uint8_t *salt, char *err, size_t errlen);

/* Starts the thread. Returns 0 or -1 (errno). */
int worker_start(struct worker *w);

/* Hands a new cfg to the worker (takes its own reference). Any thread. */
void worker_post_reload(struct worker *w, struct cfg *cfg);

/* Asks the worker to drain and stop. Any thread. */
void worker_post_drain(struct worker *w);

/* Hands coalesced exchange <x> (its answer stored in it) to its worker <w>,
 * which ACKs it from its loop. Never allocates, never fails. Any thread: the
 * cache calls it from the leader's thread. */
void worker_post_cache(struct worker *w, struct exchange *x);

/* Joins the thread (after a drain). Main thread. Join every worker before
 * freeing any: a leader on one worker may still post to another's inbox. */
void worker_join(struct worker *w);

/* Frees a worker whose thread was joined or never started, dropping cache
 * deliveries still in its inbox. */
void worker_free(struct worker *w);

/* Called by exchanges/conns when the number of running things dropped: lets
 * a draining worker finish. Worker thread. */
void worker_maybe_done(struct worker *w);

/* Unlinks a freed connection from the worker. Worker thread. */
void worker_conn_gone(struct worker *w, struct conn *c);

/* Owner thread: makes connected socket <fd> (non-blocking) a connection of
 * <w> from <peer> ("ip:port", for logs), on a health-check reserve slot if
 * <reserve>; counted and listed, drained at once if <w> is draining (which
 * may already have closed it). The accept path's, and the unit tests' way in
 * (a socketpair end). Returns 1, or 0 (fd closed) when out of memory. */
int worker_conn_add(struct worker *w, int fd, const char *peer, int reserve);

#endif /* SPOA_WORKER_H */
