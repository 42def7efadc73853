/*
 * main.c: spoa-auth entry point: command line, configuration, workers,
 * signals (SIGTERM/SIGINT drain, SIGHUP reload, SIGPIPE ignored).
 *
 * The main thread runs libev's default loop, which only watches signals; the
 * workers do all the serving. Under systemd (Type=notify) it reports READY=1,
 * RELOADING=1 ... READY=1 around a reload, and STOPPING=1. This file is the
 * only caller of exit().
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "admin.h"
#include "cache.h"
#include "cachekey.h"
#include "cfg.h"
#include "decision.h"
#include "exchange.h"
#include "fleet.h"
#include "log.h"
#include "sdnotify.h"
#include "worker.h"

#ifndef SPOA_VERSION
#define SPOA_VERSION "0.1.0"
#endif

#define MAIN_ERR_MAX 512

struct main_state {
	const char *cfg_path;           /* -f, or NULL */
	int n_opts;                     /* command-line overrides, kept for reloads */
	char **opts;
	struct cfg *cfg;                /* current */
	struct worker **workers;
	unsigned n_workers;
	int stopping;
	struct cache *cache;            /* NULL when `cache off` at start */
	uint8_t salt[CACHEKEY_SALT_LEN];/* key salt, for every worker's key builder */
};

/* One cache for the whole process, shared by every worker. Returns 0, or -1
 * with a message in <err>. */
static int main_cache_new(struct main_state *st, char *err, size_t errlen)
{
	struct cache_opts o;

	if (!st->cfg->cache)
		return 0;
	if (cachekey_salt_new(st->salt) < 0) {
		snprintf(err, errlen, "cache: cannot get random bytes for the key salt");
		return -1;
	}
	memset(&o, 0, sizeof(o));
	o.max_entries = st->cfg->cache_max_entries;
	o.max_bytes = st->cfg->cache_max_bytes;
	o.shards = st->cfg->cache_shards;
	o.stale_grace_ms = st->cfg->cache_stale_grace_ms;
	o.logout_hold_ms = st->cfg->cache_logout_hold_ms;
	decision_cache_hooks(&o);
	st->cache = cache_new(&o, err, errlen);
	return st->cache ? 0 : -1;
}

/* Reload rules for the cache: kept across SIGHUP (entries stay valid while
 * what they were computed from is unchanged); dropped whole when a key input
 * changes; its bounds and windows are fixed at start. */
static void main_cache_reload(struct main_state *st, const struct cfg *nc)
{
	const struct cfg *oc = st->cfg;

	if (!st->cache) {
		if (nc->cache)
			log_warn("reload: 'cache on' requires a restart (the cache was off at start), "
			         "ignored");
		return;
	}
	if (nc->cache_max_entries != oc->cache_max_entries ||
	    nc->cache_max_bytes != oc->cache_max_bytes || nc->cache_shards != oc->cache_shards ||
	    nc->cache_stale_grace_ms != oc->cache_stale_grace_ms ||
	    nc->cache_logout_hold_ms != oc->cache_logout_hold_ms)
		log_warn("reload: cache-max-entries, cache-max-bytes, cache-shards, "
		         "cache-stale-grace and cache-logout-hold require a restart, ignored");
	if (!nc->cache || nc->cache != oc->cache || cfg_cache_key_changed(oc, nc)) {
		/* Off: nothing is served from it, and whatever it holds would
		 * be stale if it came back on. */
		cache_invalidate_all(st->cache);
		log_info("reload: decision cache %s",
		         nc->cache ? "emptied (what keys or answers depend on changed)" :
		         "off and emptied");
	}
}

static void main_usage(FILE *out)
{
	fprintf(out,
	        "Usage: spoa-auth [-f FILE] [-c] [--key value ...] [-h|--help] [-v|--version]\n"
	        "  -f FILE     configuration file ('key value' lines, # comments)\n"
	        "  -c          check the configuration and exit (0 = valid)\n"
	        "  -h, --help  this help\n"
	        "  -v, --version\n"
	        "Every configuration key is also a --key option; options override the file.\n"
	        "SIGTERM/SIGINT drain and stop; SIGHUP reloads the file and options.\n\n");
	cfg_print_help(out);
}

/* Environment variables libcurl acts on by itself that would let whoever
 * sets them read the user-service traffic (credentials): SSLKEYLOGFILE makes
 * libcurl's OpenSSL backend write every TLS session secret to that file.
 * Removed before libcurl's global init, before any thread exists. Proxy
 * variables are overridden per handle instead (upstream.c). */
static void main_scrub_env(void)
{
	static const char *const vars[] = { "SSLKEYLOGFILE" };

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		if (!getenv(vars[i]))
			continue;
		log_warn("environment variable %s ignored: TLS secrets of user-service calls "
		         "are never written out", vars[i]);
		unsetenv(vars[i]);
	}
}

/* Resolves workers = 0 to the CPU count. */
static unsigned main_worker_count(const struct cfg *cfg)
{
	long n;

	if (cfg->workers)
		return cfg->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

static void main_sigterm_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct main_state *st = w->data;

	(void)revents;
	if (st->stopping)
		return;
	st->stopping = 1;
	if (sdnotify("STOPPING=1") < 0)
		log_debug("sd_notify STOPPING: %s", strerror(errno));
	admin_set_draining();
	log_info("signal %d: draining (up to %ums)", w->signum, st->cfg->drain_timeout_ms);
	for (unsigned i = 0; i < st->n_workers; i++)
		worker_post_drain(st->workers[i]);
	ev_break(loop, EVBREAK_ALL);
}

static void main_sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct main_state *st = w->data;
	char err[MAIN_ERR_MAX];
	struct cfg *nc;

	(void)loop;
	(void)revents;
	if (sdnotify_reloading() < 0)
		log_debug("sd_notify RELOADING: %s", strerror(errno));
	nc = cfg_load(st->cfg_path, st->n_opts, st->opts, err, sizeof(err));
	if (!nc) {
		log_error("reload failed, keeping the current configuration: %s", err);
		/* The reloading state must end either way. */
		if (sdnotify("READY=1") < 0)
			log_debug("sd_notify READY: %s", strerror(errno));
		return;
	}
	if (strcmp(nc->listen, st->cfg->listen) != 0)
		log_warn("reload: 'listen' changed (%s -> %s): requires a restart, ignored",
		         st->cfg->listen, nc->listen);
	if (nc->workers != st->cfg->workers)
		log_warn("reload: 'workers' changed: requires a restart, ignored");
	if (strcmp(nc->admin_listen, st->cfg->admin_listen) != 0)
		log_warn("reload: 'admin-listen' changed: requires a restart, ignored");
	if (cfg_redis_changed(st->cfg, nc))
		log_warn("reload: a redis-* key changed: requires a restart, ignored");
	log_set_level((enum log_level)nc->log_level);
	main_cache_reload(st, nc);
	admin_set_cfg(nc);
	for (unsigned i = 0; i < st->n_workers; i++)
		worker_post_reload(st->workers[i], nc);
	cfg_put(st->cfg);
	st->cfg = nc;
	log_info("configuration reloaded");
	/* Workers switch when they read their inbox, right away: close enough
	 * to "in force" for systemctl reload. */
	if (sdnotify("READY=1") < 0)
		log_debug("sd_notify READY: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	struct main_state st;
	char err[MAIN_ERR_MAX];
	struct ev_loop *loop;
	ev_signal sig_term, sig_int, sig_hup;
	int check_only = 0, rc = 1, claim_fd = -1;
	unsigned started = 0;

	memset(&st, 0, sizeof(st));
	st.opts = calloc((size_t)argc + 1, sizeof(*st.opts));
	if (!st.opts) {
		fprintf(stderr, "spoa-auth: out of memory\n");
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			main_usage(stdout);
			free(st.opts);
			return 0;
		} else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
			printf("spoa-auth %s\n", SPOA_VERSION);
			free(st.opts);
			return 0;
		} else if (strcmp(a, "-c") == 0) {
			check_only = 1;
		} else if (strcmp(a, "-f") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "spoa-auth: -f needs a file name\n");
				goto out_free_opts;
			}
			st.cfg_path = argv[++i];
		} else if (strncmp(a, "--", 2) == 0 && a[2]) {
			/* Left to cfg_load, which knows which keys take a value. */
			st.opts[st.n_opts++] = argv[i];
			if (!strchr(a, '=') && i + 1 < argc)
				st.opts[st.n_opts++] = argv[++i];
		} else {
			fprintf(stderr, "spoa-auth: unexpected argument '%s' (see --help)\n", a);
			goto out_free_opts;
		}
	}

	st.cfg = cfg_load(st.cfg_path, st.n_opts, st.opts, err, sizeof(err));
	if (!st.cfg) {
		fprintf(stderr, "spoa-auth: %s\n", err);
		goto out_free_opts;
	}
	if (check_only) {
		printf("spoa-auth: configuration is valid\n");
		rc = 0;
		goto out_put_cfg;
	}
	log_set_level((enum log_level)st.cfg->log_level);
	log_set_thread_name("main");
	signal(SIGPIPE, SIG_IGN);
	main_scrub_env();

	/* The default loop owns signals; create it before any thread. */
	loop = ev_default_loop(EVFLAG_AUTO);
	if (!loop) {
		fprintf(stderr, "spoa-auth: cannot create the main event loop\n");
		goto out_put_cfg;
	}
	/* Watchers first: every exit path below stops them. Their callbacks
	 * only run inside ev_run(), once every worker exists. */
	ev_signal_init(&sig_term, main_sigterm_cb, SIGTERM);
	ev_signal_init(&sig_int, main_sigterm_cb, SIGINT);
	ev_signal_init(&sig_hup, main_sighup_cb, SIGHUP);
	sig_term.data = sig_int.data = sig_hup.data = &st;
	ev_signal_start(loop, &sig_term);
	ev_signal_start(loop, &sig_int);
	ev_signal_start(loop, &sig_hup);

	st.n_workers = main_worker_count(st.cfg);
	st.workers = calloc(st.n_workers, sizeof(*st.workers));
	if (!st.workers) {
		fprintf(stderr, "spoa-auth: out of memory\n");
		st.n_workers = 0;
		goto out_free_workers;
	}
	if (main_cache_new(&st, err, sizeof(err)) < 0) {
		fprintf(stderr, "spoa-auth: %s\n", err);
		goto out_free_workers;
	}
	/* Before the workers: their key builders take the fleet's salt, so
	 * that every agent of the fleet computes the same keys. */
	if (fleet_start(st.cfg, st.cache, err, sizeof(err)) < 0) {
		fprintf(stderr, "spoa-auth: %s\n", err);
		goto out_free_workers;
	}
	if (fleet_cache_salt())
		memcpy(st.salt, fleet_cache_salt(), sizeof(st.salt));
	claim_fd = worker_claim_listen(st.cfg, err, sizeof(err));
	if (claim_fd < 0) {
		fprintf(stderr, "spoa-auth: %s\n", err);
		goto out_free_workers;
	}
	for (unsigned i = 0; i < st.n_workers; i++) {
		st.workers[i] = worker_new(i, st.cfg, st.cache, st.salt, exchange_notify, err,
		                           sizeof(err));
		if (!st.workers[i]) {
			fprintf(stderr, "spoa-auth: %s\n", err);
			goto out_free_workers;
		}
	}

	/* Bound before any worker serves: a bad admin address stops the start
	 * like a bad listen address. */
	admin_set_cache(st.cache, st.salt);
	admin_set_cfg(st.cfg);
	if (admin_start((const struct sockaddr *)&st.cfg->admin_addr, st.cfg->admin_addrlen,
	                err, sizeof(err)) < 0) {
		fprintf(stderr, "spoa-auth: %s\n", err);
		goto out_free_workers;
	}
	if (st.cfg->admin_addrlen)
		log_info("metrics and health on http://%s/", st.cfg->admin_listen);
	for (; started < st.n_workers; started++) {
		if (worker_start(st.workers[started]) < 0) {
			log_error("cannot start worker %u: %s", started, strerror(errno));
			goto out_drain;
		}
	}
	log_info("listening on %s with %u workers", st.cfg->listen, st.n_workers);
	if (sdnotify("READY=1") < 0)
		log_debug("sd_notify READY: %s", strerror(errno));
	sdnotify_status("listening on %s with %u workers", st.cfg->listen, st.n_workers);
	ev_run(loop, 0);
	rc = 0;

out_drain:
	/* /healthz says "draining" until the workers are gone, then stops. */
	admin_set_draining();
	if (!st.stopping)
		for (unsigned i = 0; i < started; i++)
			worker_post_drain(st.workers[i]);
	/* Join all before freeing any: a leader's answer may still be posted
	 * to another worker's inbox until that leader's thread is done. */
	for (unsigned i = 0; i < started; i++)
		worker_join(st.workers[i]);
	for (unsigned i = 0; i < started; i++) {
		worker_free(st.workers[i]);
		st.workers[i] = NULL;
	}
	admin_stop();
	if (rc == 0)
		log_info("stopped");
out_free_workers:
	for (unsigned i = started; i < st.n_workers; i++) {
		worker_free(st.workers[i]);
		st.workers[i] = NULL;
	}
	free(st.workers);
	st.workers = NULL;
	/* The admin listener reads the cache: stopped first (idempotent). */
	admin_stop();
	admin_set_cache(NULL, NULL);
	admin_set_cfg(NULL);
	fleet_stop();  /* its thread evicts from the cache */
	cache_free(st.cache);
	st.cache = NULL;
	/* Held until every listener is closed. */
	if (claim_fd >= 0) {
		close(claim_fd);
		claim_fd = -1;
	}
	ev_signal_stop(loop, &sig_term);
	ev_signal_stop(loop, &sig_int);
	ev_signal_stop(loop, &sig_hup);
out_put_cfg:
	cfg_put(st.cfg);
	st.cfg = NULL;
out_free_opts:
	free(st.opts);
	st.opts = NULL;
	return rc;
}
