/*
 * worker.c: a worker thread: listener, accept, connection list, inbox,
 * drain.
 *
 * The listening socket is created by worker_new() on the main thread so that
 * a bad address stops the start with a clear error; from worker_start() on,
 * everything but the inbox belongs to the worker thread. The inbox is the only
 * cross-thread path: a mutex-protected FIFO of struct worker_msg (each with
 * its own run and drop functions) plus an ev_async to wake the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "cache.h"
#include "cachekey.h"
#include "cfg.h"
#include "conn.h"
#include "fleet.h"
#include "list.h"
#include "log.h"
#include "spop.h"
#include "upstream.h"
#include "worker.h"

/* Connections accepted per wakeup, for fairness with established ones. */
#define WORKER_ACCEPTS_PER_EVENT 64
/* Pause after EMFILE/ENFILE before trying accept() again. */
#define WORKER_ACCEPT_PAUSE_S 0.5

/* Backlog of the listening socket. */
#define WORKER_LISTEN_BACKLOG 1024
/* Bytes of a worker's thread name ("w<id>"; Linux keeps 15 and the NUL). */
#define WORKER_NAME_MAX 16
/* Bytes of a key-builder error message. */
#define WORKER_ERR_MAX 160

struct worker {
	struct worker_env env;          /* first (worker_env()): loop, upstream, ck,
	                                 * fw owned; cfg a reference; cache shared;
	                                 * met = &met */
	unsigned id;
	pthread_t thread;
	const uint8_t *salt;            /* process-wide key salt (main's storage) */
	worker_notify_fn notify;        /* every NOTIFY of its connections */
	int lfd;                        /* listening socket, -1 once closed */
	ev_io accept_w;
	ev_timer accept_pause;          /* EMFILE back-off */
	ev_async inbox_w;
	pthread_mutex_t inbox_lock;
	struct worker_msg *inbox;       /* FIFO, oldest first; protected by inbox_lock */
	struct worker_msg **inbox_tail; /* &inbox or the last one's next */
	void *spare;                    /* owned: one preallocated exchange, so that
	                                 * a cache hit allocates nothing */
	struct list conns;              /* owned: of struct conn (conn_link()) */
	unsigned n_conns;               /* reserve slots included */
	unsigned n_reserve;             /* of n_conns: on a health-check reserve slot */
	unsigned n_work;                /* running exchanges, orphans included */
	int draining;
	ev_timer drain_timer;
	ev_timer listen_grace;          /* drain: closes the listener when the grace ends */
	struct metrics met;
	char name[WORKER_NAME_MAX];
};

/* RELOAD and DRAIN, which main posts: allocated, unlike the cache's. */
struct worker_ctl {
	struct worker_msg m;            /* first: a message is its ctl */
	struct cfg *cfg;                /* RELOAD: a reference */
};

_Static_assert(offsetof(struct worker, env) == 0, "worker_env() casts the worker");

static void worker_peer_str(const struct sockaddr_storage *ss, char *out, size_t outsz)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, outsz, "%s:%u", ip, ntohs(s4->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, outsz, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		snprintf(out, outsz, "?");
	}
}

static void worker_close_listener(struct worker *w)
{
	ev_io_stop(w->env.loop, &w->accept_w);
	ev_timer_stop(w->env.loop, &w->accept_pause);
	if (w->lfd >= 0) {
		close(w->lfd);
		w->lfd = -1;
	}
}

/* Lets a draining worker finish once nothing runs any more. */
static void worker_maybe_done(struct worker *w)
{
	if (w->draining && w->n_conns == 0 && w->n_work == 0)
		ev_break(w->env.loop, EVBREAK_ALL);
}

void worker_work_begin(struct worker *w)
{
	w->n_work++;
}

void worker_work_end(struct worker *w)
{
	w->n_work--;
	worker_maybe_done(w);
}

void *worker_spare_take(struct worker *w)
{
	void *p = w->spare;

	w->spare = NULL;
	return p;
}

int worker_spare_offer(struct worker *w, void *p)
{
	if (w->spare)
		return 0;
	w->spare = p;
	return 1;
}

unsigned worker_n_conns(const struct worker *w)
{
	return w->n_conns;
}

int worker_conns_full(const struct worker *w)
{
	return w->n_conns - w->n_reserve >= w->env.cfg->max_connections;
}

void worker_reserve_release(struct worker *w)
{
	w->n_reserve--;
}

double worker_drain_left(const struct worker *w)
{
	return w->draining ? ev_timer_remaining(w->env.loop, (ev_timer *)&w->drain_timer) : 0.;
}

void worker_conn_gone(struct worker *w, struct conn *c)
{
	list_delete(conn_link(c));
	w->n_conns--;
	if (conn_on_reserve(c))
		w->n_reserve--;
	METRICS_DEC(w->met.conns);
	worker_maybe_done(w);
}

static void worker_accept_cb(struct ev_loop *loop, ev_io *iow, int revents)
{
	struct worker *w = iow->data;

	(void)revents;
	for (int i = 0; i < WORKER_ACCEPTS_PER_EVENT && w->lfd >= 0; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char peer[CONN_PEER_MAX];
		int fd, one = 1, reserve;

		fd = accept4(w->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				static struct log_rl rl;

				/* The pending connection keeps the listener readable:
				 * without a pause the loop would spin. */
				log_ratelimited(LOG_LVL_ERROR, &rl, "accept: %s: pausing the listener",
				                strerror(errno));
				ev_io_stop(loop, &w->accept_w);
				/* Set again: a fired one-shot timer restarted as is
				 * would keep its spent (zero) delay. */
				ev_timer_set(&w->accept_pause, WORKER_ACCEPT_PAUSE_S, 0.);
				ev_timer_start(loop, &w->accept_pause);
			}
			break;
		}
		/* Full: make room by closing a connection that serves nothing
		 * (pre-HELLO, stalled mid-frame, or idle the longest), so that
		 * idle or half-open sockets of another local process cannot
		 * lock HAProxy out. When every slot is working, a reserve slot
		 * (health checks only) is used; refuse only when those are
		 * taken too. */
		reserve = 0;
		if (worker_conns_full(w)) {
			struct conn *v = conn_pick_victim(&w->conns);

			if (v)
				conn_evict(v);  /* frees <v>: n_conns drops */
		}
		if (worker_conns_full(w)) {
			static struct log_rl rl;

			if (w->n_reserve < WORKER_HC_RESERVE) {
				reserve = 1;
			} else {
				METRICS_INC(w->met.conns_refused);
				log_ratelimited(LOG_LVL_WARN, &rl, "max-connections (%u) reached, "
				                "health-check reserve (%u) in use: refusing a "
				                "connection", w->env.cfg->max_connections,
				                WORKER_HC_RESERVE);
				close(fd);
				continue;
			}
		}
		/* ACKs are small and latency-bound: no Nagle. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		worker_peer_str(&ss, peer, sizeof(peer));
		if (!worker_conn_add(w, fd, peer, reserve) && !w->draining) {
			static struct log_rl rl;

			log_ratelimited(LOG_LVL_ERROR, &rl, "out of memory accepting a connection");
			continue;
		}
	}
}

struct conn *worker_conn_add(struct worker *w, int fd, const char *peer, int reserve)
{
	struct conn *c = conn_new(w, fd, peer, reserve, w->notify, w);

	if (!c)
		return NULL;
	list_insert(&w->conns, conn_link(c));
	w->n_conns++;
	if (reserve)
		w->n_reserve++;
	METRICS_INC(w->met.conns);
	METRICS_INC(w->met.conns_total);
	log_debug("%s: connected", peer);
	/* During the drain grace a new connection is served (its
	 * health-check HELLO is refused): it may free <c>. */
	if (w->draining) {
		conn_drain(c);
		return NULL;
	}
	return c;
}

static void worker_accept_resume_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	(void)revents;
	if (w->lfd >= 0)
		ev_io_start(loop, &w->accept_w);
}

/* Drain deadline: whatever still runs is cut. */
/* Calls <fn> for every connection of <w>; <fn> may free the one it gets. */
static void worker_conns_each(struct worker *w, void (*fn)(struct conn *c))
{
	struct list *l, *nx;

	for (l = w->conns.next; l != &w->conns; l = nx) {
		nx = l->next;
		fn(conn_of_link(l));
	}
}

static void worker_conns_free(struct worker *w)
{
	while (!list_empty(&w->conns))
		conn_free(conn_of_link(w->conns.next));
}

static void worker_conn_shut(struct conn *c)
{
	conn_disconnect(c, SPOP_ERR_NONE, "shutting down");
}

static void worker_drain_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	(void)revents;
	log_warn("drain timeout: closing %u connection(s), aborting %u exchange(s)",
	         w->n_conns, w->n_work);
	/* Best effort: tell HAProxy (a DISCONNECT written now, if the socket
	 * takes it), then close regardless of what is still queued. */
	worker_conns_each(w, worker_conn_shut);
	worker_conns_free(w);
	upstream_abort_all(w->env.up);
	ev_break(loop, EVBREAK_ALL);
}

static void worker_listen_grace_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	worker_close_listener(t->data);
}

/* The listener stays open for the drain grace: until HAProxy's health check
 * (refused from now on) marks this agent DOWN, HAProxy may still open
 * connections here, and a refused connect fails the NOTIFYs queued for it
 * (HAProxy 2.6), where an accepted one serves them. */
static void worker_start_drain(struct worker *w)
{
	double drain = (double)w->env.cfg->drain_timeout_ms / 1000.0;

	if (w->draining)
		return;
	w->draining = 1;
	log_debug("draining %u connection(s), %u exchange(s)", w->n_conns, w->n_work);
	ev_timer_set(&w->drain_timer, drain, 0.);
	ev_timer_start(w->env.loop, &w->drain_timer);
	ev_timer_set(&w->listen_grace, drain * CONN_DRAIN_GRACE_FRACTION, 0.);
	ev_timer_start(w->env.loop, &w->listen_grace);
	worker_conns_each(w, conn_drain);  /* conn_drain may free its connection */
	worker_maybe_done(w);
}

/* Key options and the user-service URL live in the cfg: a new cfg needs a
 * new key builder. Without one the worker bypasses the cache (answers stay
 * right, just uncached). */
static void worker_rebuild_cachekey(struct worker *w)
{
	char err[WORKER_ERR_MAX];

	cachekey_free(w->env.ck);
	w->env.ck = NULL;
	if (!w->env.cache)
		return;
	w->env.ck = cachekey_from_cfg(w->env.cfg, w->salt, err, sizeof(err));
	if (!w->env.ck)
		log_error("decision cache bypassed: %s", err);
}

static void worker_inbox_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct worker *w = a->data;
	struct worker_msg *m, *todo;

	(void)loop;
	(void)revents;
	pthread_mutex_lock(&w->inbox_lock);
	todo = w->inbox;
	w->inbox = NULL;
	w->inbox_tail = &w->inbox;
	pthread_mutex_unlock(&w->inbox_lock);
	while ((m = todo)) {
		todo = m->next;
		m->next = NULL;
		m->ops->run(w, m);  /* may free <m> */
	}
}

void worker_post(struct worker *w, struct worker_msg *m)
{
	m->next = NULL;
	pthread_mutex_lock(&w->inbox_lock);
	*w->inbox_tail = m;
	w->inbox_tail = &m->next;
	pthread_mutex_unlock(&w->inbox_lock);
	ev_async_send(w->env.loop, &w->inbox_w);
}

static void worker_ctl_drop(struct worker_msg *m)
{
	struct worker_ctl *ctl = (struct worker_ctl *)(void *)m;  /* its first member */

	cfg_put(ctl->cfg);
	free(ctl);
}

static void worker_reload_run(struct worker *w, struct worker_msg *m)
{
	struct worker_ctl *ctl = (struct worker_ctl *)(void *)m;
	struct cfg *old = w->env.cfg;
	int reshaped;

	w->env.cfg = ctl->cfg;      /* the message's reference */
	ctl->cfg = NULL;
	/* main empties the cache before posting, but until this worker
	 * switches, its lookups still build old-shape answers under keys the
	 * new config shares: empty it again now, which also keeps leaders
	 * started before this point from storing. */
	reshaped = w->env.cache && (!w->env.cfg->cache || w->env.cfg->cache != old->cache ||
	                            cfg_cache_key_changed(old, w->env.cfg));
	cfg_put(old);
	upstream_set_cfg(w->env.up, w->env.cfg);
	worker_rebuild_cachekey(w);
	if (reshaped)
		cache_invalidate_all(w->env.cache);
	free(ctl);
}

static void worker_drain_run(struct worker *w, struct worker_msg *m)
{
	worker_ctl_drop(m);
	worker_start_drain(w);
}

static const struct worker_msg_ops worker_reload_ops = { worker_reload_run, worker_ctl_drop };
static const struct worker_msg_ops worker_drain_ops = { worker_drain_run, worker_ctl_drop };

static int worker_post_ctl(struct worker *w, const struct worker_msg_ops *ops, struct cfg *cfg)
{
	struct worker_ctl *ctl = calloc(1, sizeof(*ctl));

	if (!ctl)
		return -1;
	ctl->m.ops = ops;
	ctl->cfg = cfg ? cfg_get(cfg) : NULL;
	worker_post(w, &ctl->m);
	return 0;
}

void worker_post_reload(struct worker *w, struct cfg *cfg)
{
	if (worker_post_ctl(w, &worker_reload_ops, cfg) < 0)
		log_error("worker %u: out of memory: reload not delivered", w->id);
}

void worker_post_drain(struct worker *w)
{
	if (worker_post_ctl(w, &worker_drain_ops, NULL) < 0)
		log_error("worker %u: out of memory: drain not delivered", w->id);
}

/* Name of the claim on the listen address: an abstract AF_UNIX socket (no
 * file, released by the kernel when the process dies, however it dies). */
#define WORKER_CLAIM_PREFIX "spoa-auth/listen/"

/* Builds the abstract name for <cfg>'s listen address in <sun> (numeric, so
 * "localhost:1" and "127.0.0.1:1" are the same claim). Returns its length. */
static socklen_t worker_claim_name(const struct cfg *cfg, struct sockaddr_un *sun)
{
	char host[INET6_ADDRSTRLEN], port[8];
	int n;

	if (getnameinfo((const struct sockaddr *)&cfg->listen_addr, cfg->listen_addrlen,
	                host, sizeof(host), port, sizeof(port),
	                NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(host, sizeof(host), "%s", cfg->listen);
		port[0] = 0;
	}
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	/* sun_path[0] = 0: the abstract namespace. */
	n = snprintf(sun->sun_path + 1, sizeof(sun->sun_path) - 1, WORKER_CLAIM_PREFIX "%s:%s",
	             host, port);
	if (n < 0 || (size_t)n >= sizeof(sun->sun_path) - 1)
		n = (int)sizeof(sun->sun_path) - 2;
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* The pid holding claim <sun>/<len>, or 0 if it cannot be told. */
static long worker_claim_holder(const struct sockaddr_un *sun, socklen_t len)
{
	struct ucred cr;
	socklen_t crlen = sizeof(cr);
	long pid = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	/* The holder listens (without ever accepting): the connection lands in
	 * its backlog and carries its credentials, taken at listen(). */
	if (connect(fd, (const struct sockaddr *)sun, len) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0)
		pid = (long)cr.pid;
	close(fd);
	return pid;
}

int worker_claim_listen(const struct cfg *cfg, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	socklen_t len = worker_claim_name(cfg, &sun);
	int fd, probe, one = 1;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (const struct sockaddr *)&sun, len) < 0) {
		int e = errno;
		long pid = e == EADDRINUSE ? worker_claim_holder(&sun, len) : 0;

		close(fd);
		if (e != EADDRINUSE) {
			snprintf(err, errlen, "cannot claim %s: %s", cfg->listen, strerror(e));
		} else if (pid > 0) {
			snprintf(err, errlen, "cannot listen on %s: another spoa-auth (pid %ld) "
			         "already listens there", cfg->listen, pid);
		} else {
			snprintf(err, errlen, "cannot listen on %s: another spoa-auth already "
			         "listens there", cfg->listen);
		}
		return -1;
	}
	if (listen(fd, 1) < 0) {
		snprintf(err, errlen, "cannot claim %s: %s", cfg->listen, strerror(errno));
		goto out_close;
	}
	/* Anything else on the address (an older agent, another program): a
	 * socket without SO_REUSEPORT cannot bind next to any listener there. */
	probe = socket(cfg->listen_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto out_close;
	}
	if (setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(probe, (const struct sockaddr *)&cfg->listen_addr, cfg->listen_addrlen) < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot listen on %s: %s%s", cfg->listen, strerror(e),
		         e == EADDRINUSE ? " (another process listens there)" : "");
		close(probe);
		goto out_close;
	}
	close(probe);
	return fd;

out_close:
	close(fd);
	return -1;
}

static int worker_listen(const struct cfg *cfg, char *err, size_t errlen)
{
	int fd, one = 1;

	fd = socket(cfg->listen_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	/* One listener per worker on the same address: the kernel spreads
	 * connections, no shared accept lock. SO_REUSEPORT would also let
	 * another process join: worker_claim_listen() ran first. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		snprintf(err, errlen, "setsockopt: %s", strerror(errno));
		goto out_close;
	}
	if (bind(fd, (const struct sockaddr *)&cfg->listen_addr, cfg->listen_addrlen) < 0) {
		snprintf(err, errlen, "cannot bind %s: %s", cfg->listen, strerror(errno));
		goto out_close;
	}
	if (listen(fd, WORKER_LISTEN_BACKLOG) < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen, strerror(errno));
		goto out_close;
	}
	return fd;

out_close:
	close(fd);
	return -1;
}

struct worker *worker_new(unsigned id, struct cfg *cfg, struct cache *cache,
                          const uint8_t *salt, worker_notify_fn notify, char *err,
                          size_t errlen)
{
	struct worker *w = calloc(1, sizeof(*w));

	if (!w) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	w->id = id;
	w->notify = notify;
	w->env.met = &w->met;
	w->inbox_tail = &w->inbox;
	list_init(&w->conns);
	snprintf(w->name, sizeof(w->name), "w%u", id);
	w->lfd = worker_listen(cfg, err, errlen);
	if (w->lfd < 0)
		goto out_free_w;
	w->env.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (!w->env.loop) {
		snprintf(err, errlen, "cannot create an event loop");
		goto out_close_lfd;
	}
	w->env.cfg = cfg_get(cfg);
	w->env.cache = cache;
	w->salt = salt;
	if (cache) {
		w->env.ck = cachekey_from_cfg(cfg, salt, err, errlen);
		if (!w->env.ck)
			goto out_put_cfg;
	}
	w->env.up = upstream_new(w->env.loop, cfg);
	if (!w->env.up) {
		snprintf(err, errlen, "cannot initialise libcurl");
		goto out_put_cfg;
	}
	pthread_mutex_init(&w->inbox_lock, NULL);
	ev_io_init(&w->accept_w, worker_accept_cb, w->lfd, EV_READ);
	w->accept_w.data = w;
	ev_timer_init(&w->accept_pause, worker_accept_resume_cb, WORKER_ACCEPT_PAUSE_S, 0.);
	w->accept_pause.data = w;
	ev_timer_init(&w->drain_timer, worker_drain_timeout_cb, 0., 0.);
	w->drain_timer.data = w;
	ev_timer_init(&w->listen_grace, worker_listen_grace_cb, 0., 0.);
	w->listen_grace.data = w;
	ev_async_init(&w->inbox_w, worker_inbox_cb);
	w->inbox_w.data = w;
	/* Started here, before the thread exists, so a post made right after
	 * worker_start() is never lost. */
	ev_async_start(w->env.loop, &w->inbox_w);
	ev_io_start(w->env.loop, &w->accept_w);
	w->env.fw = fleet_worker_new(w->env.loop);  /* NULL: fleet off, or single node */
	if (metrics_register(&w->met) < 0) {
		snprintf(err, errlen, "too many workers for the metrics registry");
		goto out_free_up;
	}
	return w;

out_free_up:
	fleet_worker_free(w->env.fw);
	w->env.fw = NULL;
	ev_io_stop(w->env.loop, &w->accept_w);
	ev_async_stop(w->env.loop, &w->inbox_w);
	pthread_mutex_destroy(&w->inbox_lock);
	upstream_free(w->env.up);
	w->env.up = NULL;
out_put_cfg:
	cachekey_free(w->env.ck);
	w->env.ck = NULL;
	cfg_put(w->env.cfg);
	w->env.cfg = NULL;
	ev_loop_destroy(w->env.loop);
	w->env.loop = NULL;
out_close_lfd:
	close(w->lfd);
	w->lfd = -1;
out_free_w:
	free(w);
	return NULL;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	log_set_thread_name(w->name);
	ev_run(w->env.loop, 0);
	/* Drained or cut: close what is left, then the transfers. */
	worker_conns_free(w);
	upstream_abort_all(w->env.up);
	log_debug("stopped");
	return NULL;
}

int worker_start(struct worker *w)
{
	sigset_t all, old;
	int rc;

	/* Signals belong to the main thread's loop: workers block them all. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		return -1;
	}
	return 0;
}

void worker_free(struct worker *w)
{
	struct worker_msg *m;

	if (!w)
		return;
	worker_conns_free(w);
	upstream_free(w->env.up);
	w->env.up = NULL;
	/* Every worker was joined, so nobody posts any more: what came too late
	 * for this worker's loop (a leader's answer, a reload) is dropped. */
	while ((m = w->inbox)) {
		w->inbox = m->next;
		m->ops->drop(m);
	}
	w->inbox_tail = &w->inbox;
	free(w->spare);
	w->spare = NULL;
	cachekey_free(w->env.ck);
	w->env.ck = NULL;
	worker_close_listener(w);
	ev_timer_stop(w->env.loop, &w->drain_timer);
	ev_timer_stop(w->env.loop, &w->listen_grace);
	ev_async_stop(w->env.loop, &w->inbox_w);
	pthread_mutex_destroy(&w->inbox_lock);
	metrics_unregister(&w->met);
	fleet_worker_free(w->env.fw);
	w->env.fw = NULL;
	ev_loop_destroy(w->env.loop);
	w->env.loop = NULL;
	cfg_put(w->env.cfg);
	w->env.cfg = NULL;
	free(w);
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
}
