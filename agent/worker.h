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

struct cfg;
struct conn;
struct upstream;
struct worker_msg;

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
	struct conn *conns;             /* owned */
	unsigned n_conns;
	unsigned n_exchanges;           /* running, orphans included */
	int draining;
	ev_timer drain_timer;
	struct metrics met;
	char name[16];
};

/* Creates worker <id> with a reference on <cfg>: binds its listening socket
 * now (so address errors stop the start), creates its loop and upstream.
 * Returns NULL with a message in <err>. Main thread. */
struct worker *worker_new(unsigned id, struct cfg *cfg, char *err, size_t errlen);

/* Starts the thread. Returns 0 or -1 (errno). */
int worker_start(struct worker *w);

/* Hands a new cfg to the worker (takes its own reference). Any thread. */
void worker_post_reload(struct worker *w, struct cfg *cfg);

/* Asks the worker to drain and stop. Any thread. */
void worker_post_drain(struct worker *w);

/* Joins the thread (after a drain) and frees everything. Main thread. */
void worker_join_free(struct worker *w);

/* Frees a worker whose thread never started. */
void worker_free(struct worker *w);

/* Called by exchanges/conns when the number of running things dropped: lets
 * a draining worker finish. Worker thread. */
void worker_maybe_done(struct worker *w);

/* Unlinks a freed connection from the worker. Worker thread. */
void worker_conn_gone(struct worker *w, struct conn *c);

#endif /* SPOA_WORKER_H */
