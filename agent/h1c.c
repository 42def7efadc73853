/*
 * h1c.c: the native HTTP/1.1 user-service client (see h1c.h).
 *
 * States. A request is QUEUED (no connection free, waiting in c->qhead),
 * CONNECTING (its own new connection), SENDING, WAITING (for the answer) or
 * BACKOFF (between attempts); one ev_timer per request fires at the nearest
 * of: the exchange deadline, the attempt's end, the connect timeout, the end
 * of the backoff, or "now" for a failure found while starting an attempt
 * (reported from the loop, never from inside h1c_start()). A connection is
 * CONNECTING, BUSY (owned by one request) or IDLE (in c->idle, watched for
 * the server closing it).
 *
 * Ownership: struct h1c owns every connection and every request; a busy
 * connection points at its request and back. Never logs header values or
 * bodies; never reads the environment (no proxy).
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <llhttp.h>

#include "cfg.h"
#include "h1c.h"

/* Bytes read per recv(): a usual answer in one call. */
#define H1C_RBUF 16384
/* Header names kept for matching; longer ones match nothing we keep. */
#define H1C_NAME_MAX 64
/* First allocation of the header-value scratch buffer. */
#define H1C_HV_INIT 256
/* Header bytes an answer may send before its final header block ends
 * (interim 1xx answers included): llhttp has no bound of its own; 80 KiB
 * is what libhttp-parser, the parser before it, allowed. */
#define H1C_HEADER_MAX (80 * 1024)
/* First allocation of a body whose length is not announced, past the
 * request's own H1C_BODY_SMALL bytes. */
#define H1C_BODY_INIT 1024
/* A body (the usual token) up to this size, with its NUL, and the kept header
 * values (Content-Type, Cache-Control, ...) up to H1C_ARENA bytes live in the
 * request itself: no malloc for a usual answer. */
#define H1C_BODY_SMALL 1024
#define H1C_ARENA 256
/* Finished requests' allocations kept per client for the next ones: the
 * usual number in flight, so steady load allocates none. */
#define H1C_SPARE_MAX 64
#define H1C_DEFAULT_PORT 80
#define H1C_MS 1000.0

enum h1c_phase {
	H1C_P_QUEUED = 0,
	H1C_P_CONNECTING,
	H1C_P_SENDING,
	H1C_P_WAITING,
	H1C_P_BACKOFF,
	H1C_P_ENTRIES
};

enum h1c_conn_st {
	H1C_C_CONNECTING = 0,
	H1C_C_BUSY,
	H1C_C_IDLE,
	H1C_C_ENTRIES
};

/* What the request's timer was last armed for. */
enum h1c_tkind {
	H1C_T_DEADLINE = 0,     /* the exchange timeout: final */
	H1C_T_ATTEMPT,          /* upstream-attempt-timeout */
	H1C_T_CONNECT,          /* connect-timeout */
	H1C_T_BACKOFF,          /* start the next attempt */
	H1C_T_PENDING,          /* report a failure found while starting */
	H1C_T_ENTRIES
};

struct h1c_conn {
	ev_io io;                       /* first: the callback casts back */
	struct h1c *c;
	struct h1c_req *q;              /* the request using it; NULL when idle */
	int fd;
	int events;                     /* EV_READ/EV_WRITE watched */
	enum h1c_conn_st st;
	unsigned uses;                  /* exchanges completed on it */
	ev_tstamp idle_since;           /* when it went back to the pool */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	struct h1c_conn *prev, *next;   /* c->idle or c->busy */
};

struct h1c_req {
	struct h1c *c;
	const struct cfg *cfg;          /* borrowed: the caller holds a ref */
	upstream_done_fn done;
	void *arg;
	struct upstream_response resp;  /* owned strings */
	ev_timer timer;
	enum h1c_tkind tkind;
	ev_tstamp deadline, attempt_end, connect_end, backoff_end;
	enum h1c_phase phase;
	struct h1c_conn *conn;
	llhttp_t hp;
	unsigned attempt;               /* policy attempts started, from 1 */
	int stale_retried;
	int got_bytes;                  /* a response byte arrived this attempt */
	int final_done;                 /* the final answer is complete */
	int keep;                       /* ... and its connection may be reused */
	int hdrs_done;                  /* the final answer's headers are complete */
	size_t hdr_bytes;               /* bytes read while they were not */
	int oversize;
	enum h1c_fail pend_fail;        /* for H1C_T_PENDING */
	const char *pend_err;
	size_t sent, req_len;
	char *req;                      /* the formatted request, in this allocation */
	char hf[H1C_NAME_MAX];          /* header name being read */
	size_t hf_len;
	int hf_long, in_value, want;
	char *hv;                       /* value being read, when wanted: hv_small
	                                 * or, when longer, owned heap */
	size_t hv_len, hv_cap;
	size_t body_cap;
	struct timespec start;
	struct h1c_req *prev, *next;    /* c->qhead list or c->reqs list */
	size_t alloc_size;              /* of this allocation, for the spare */
	size_t arena_used;
	/* Storage, not state: h1c_start() zeroes what is above, not this. */
	char hv_small[H1C_HV_INIT];
	char arena[H1C_ARENA];          /* header values kept, NUL-terminated */
	char body_small[H1C_BODY_SMALL];
};

struct h1c {
	struct ev_loop *loop;           /* borrowed: the worker's */
	const struct cfg *cfg;          /* borrowed: the worker's current cfg */
	struct h1c_conn *idle, *busy;   /* owned */
	unsigned n_idle, n_conns;
	uint64_t opened;
	struct h1c_req *reqs;           /* owned: not queued */
	struct h1c_req *qhead, *qtail;  /* owned: FIFO of QUEUED */
	struct h1c_req *spare;          /* owned: finished requests' allocations
	                                 * (linked by ->next), for h1c_start() */
	unsigned n_spare;
	unsigned n_reqs;                /* both lists */
	unsigned keepalive_max, max_conns;
	uint32_t rnd;                   /* xorshift32 state, for the jitter */
	llhttp_settings_t hs;
};

static void h1c_attempt_go(struct h1c_req *q);
static void h1c_dispatch(struct h1c *c);

/* ---- pure helpers ---- */

int h1c_url_parse(const char *url, int resolve, struct sockaddr_storage *ss,
                  socklen_t *sslen, char **host, size_t *path_off,
                  char *why, size_t whylen)
{
	const char *auth, *end, *h, *hend, *port = NULL;
	char hbuf[256], pbuf[8];
	unsigned long pnum = H1C_DEFAULT_PORT;
	struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)ss;

	if (strncasecmp(url, "https://", 8) == 0)
		return 1;
	if (strncasecmp(url, "http://", 7) != 0) {
		snprintf(why, whylen, "'%s': not an http:// URL", url);
		return -1;
	}
	auth = url + 7;
	end = auth + strcspn(auth, "/?");
	if (memchr(auth, '@', (size_t)(end - auth)))
		return 1;       /* user:password@ stays with libcurl */
	if (*auth == '[') {
		h = auth + 1;
		hend = memchr(h, ']', (size_t)(end - h));
		if (!hend) {
			snprintf(why, whylen, "'%s': unterminated [IPv6] host", url);
			return -1;
		}
		if (hend + 1 < end) {
			if (hend[1] != ':') {
				snprintf(why, whylen, "'%s': junk after [IPv6] host", url);
				return -1;
			}
			port = hend + 2;
		}
	} else {
		h = auth;
		hend = memchr(h, ':', (size_t)(end - h));
		if (hend)
			port = hend + 1;
		else
			hend = end;
	}
	if (hend == h || (size_t)(hend - h) >= sizeof(hbuf)) {
		snprintf(why, whylen, "'%s': bad host", url);
		return -1;
	}
	memcpy(hbuf, h, (size_t)(hend - h));
	hbuf[hend - h] = 0;
	if (port) {
		char *e;

		if (port == end || (size_t)(end - port) >= sizeof(pbuf)) {
			snprintf(why, whylen, "'%s': bad port", url);
			return -1;
		}
		memcpy(pbuf, port, (size_t)(end - port));
		pbuf[end - port] = 0;
		errno = 0;
		pnum = strtoul(pbuf, &e, 10);
		if (*e || errno || pnum == 0 || pnum > 65535) {
			snprintf(why, whylen, "'%s': bad port", url);
			return -1;
		}
	}
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, hbuf, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)pnum);
		*sslen = sizeof(*s4);
	} else if (inet_pton(AF_INET6, hbuf, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)pnum);
		*sslen = sizeof(*s6);
	} else if (!resolve) {
		return 1;
	} else {
		struct addrinfo hints, *res = NULL;
		int rc;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICSERV;
		snprintf(pbuf, sizeof(pbuf), "%lu", pnum);
		rc = getaddrinfo(hbuf, pbuf, &hints, &res);
		if (rc != 0 || !res || res->ai_addrlen > sizeof(*ss)) {
			snprintf(why, whylen, "'%s': cannot resolve '%s': %s", url, hbuf,
			         rc ? gai_strerror(rc) : "no address");
			if (res)
				freeaddrinfo(res);
			return -1;
		}
		memcpy(ss, res->ai_addr, res->ai_addrlen);
		*sslen = (socklen_t)res->ai_addrlen;
		freeaddrinfo(res);
	}
	*host = strndup(auth, (size_t)(end - auth));
	if (!*host) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	*path_off = (size_t)(end - url);
	return 0;
}

long h1c_retry_delay(enum h1c_fail fail, long status, unsigned attempt, unsigned retries,
                     unsigned retry_on, unsigned backoff_ms, long left_ms, uint32_t rnd)
{
	unsigned bit;
	unsigned long base, half;
	long d;

	switch (fail) {
	case H1C_FAIL_CONNECT: bit = H1C_RETRY_CONNECT; break;
	case H1C_FAIL_RESET:   bit = H1C_RETRY_RESET; break;
	case H1C_FAIL_TIMEOUT: bit = H1C_RETRY_TIMEOUT; break;
	case H1C_FAIL_NONE:
		bit = status == 502 ? H1C_RETRY_502 : status == 503 ? H1C_RETRY_503 :
		      status == 504 ? H1C_RETRY_504 : 0;
		break;
	default:
		return -1;
	}
	if (!bit || !(retry_on & bit) || attempt == 0 || attempt > retries || left_ms <= 0)
		return -1;
	/* base * 2^(attempt-1), capped well before overflow */
	base = backoff_ms;
	for (unsigned i = 1; i < attempt && base < (unsigned long)LONG_MAX / 4; i++)
		base *= 2;
	half = base / 2;
	d = (long)(half + (half ? rnd % (base - half + 1) : (base ? rnd % (base + 1) : 0)));
	/* A retry needs time left for the attempt itself. */
	if (d >= left_ms)
		return -1;
	return d;
}

static uint32_t h1c_rand(struct h1c *c)
{
	uint32_t x = c->rnd;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	c->rnd = x;
	return x;
}

/* ---- response capture ---- */

/* Forgets what <q>'s response captured; frees only what is not in <q>. */
static void h1c_resp_clear(struct h1c_req *q)
{
	struct upstream_response *r = &q->resp;

	upstream_resp_clear_headers_in(r, q->arena, q->arena + sizeof(q->arena));
	q->arena_used = 0;
	if (r->body != q->body_small)
		free(r->body);
	r->body = NULL;
	r->body_len = 0;
	q->body_cap = 0;
}

/* upstream_dup_fn: header values into <q>'s arena while there is room. */
static char *h1c_dup(void *ctx, const char *v, size_t n)
{
	struct h1c_req *q = ctx;
	char *p;

	if (n >= sizeof(q->arena) - q->arena_used)
		return strndup(v, n);
	p = q->arena + q->arena_used;
	memcpy(p, v, n);
	p[n] = 0;
	q->arena_used += n + 1;
	return p;
}

/* 1 if the header being read is one the response keeps. */
static int h1c_wanted(const struct h1c_req *q)
{
	return !q->hf_long && upstream_resp_wants(&q->resp, q->cfg, q->hf, q->hf_len);
}

/* The value of a wanted header is complete: store it where it belongs. */
static void h1c_commit(struct h1c_req *q)
{
	const char *v = q->hv ? q->hv : "";
	size_t n = q->hv_len;

	q->in_value = 0;
	if (!q->want)
		return;
	q->want = 0;
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	upstream_resp_header_dup(&q->resp, q->cfg, q->hf, q->hf_len, v, n, h1c_dup, q);
}

static int h1c_on_header_field(llhttp_t *hp, const char *at, size_t len)
{
	struct h1c_req *q = hp->data;

	if (q->in_value) {
		h1c_commit(q);
		q->hf_len = 0;
		q->hf_long = 0;
	}
	if (len > sizeof(q->hf) - q->hf_len) {
		q->hf_long = 1;
		return 0;
	}
	memcpy(q->hf + q->hf_len, at, len);
	q->hf_len += len;
	return 0;
}

static int h1c_on_header_value(llhttp_t *hp, const char *at, size_t len)
{
	struct h1c_req *q = hp->data;

	if (!q->in_value) {
		q->in_value = 1;
		q->want = h1c_wanted(q);
		q->hv_len = 0;
	}
	if (!q->want)
		return 0;
	if (q->hv_len + len + 1 > q->hv_cap) {
		size_t cap = q->hv_cap * 2;
		char *nb;

		while (cap < q->hv_len + len + 1)
			cap *= 2;
		nb = q->hv == q->hv_small ? malloc(cap) : realloc(q->hv, cap);
		if (!nb)
			return -1;
		if (q->hv == q->hv_small)
			memcpy(nb, q->hv_small, q->hv_len);
		q->hv = nb;
		q->hv_cap = cap;
	}
	memcpy(q->hv + q->hv_len, at, len);
	q->hv_len += len;
	return 0;
}

static int h1c_on_headers_complete(llhttp_t *hp)
{
	struct h1c_req *q = hp->data;
	size_t max = q->cfg->max_response_size;

	if (q->in_value)
		h1c_commit(q);
	q->hf_len = 0;
	q->hf_long = 0;
	if (hp->status_code >= 200)
		q->hdrs_done = 1;
	if (hp->status_code >= 200 && (hp->flags & F_CONTENT_LENGTH)) {
		if (hp->content_length > max) {
			q->oversize = 1;
			return -1;
		}
		/* The whole body in one allocation (none when it fits the
		 * request's own bytes: h1c_on_body()). */
		if (hp->content_length >= sizeof(q->body_small) && !q->resp.body) {
			q->resp.body = malloc((size_t)hp->content_length + 1);
			if (!q->resp.body)
				return -1;
			q->body_cap = (size_t)hp->content_length + 1;
		}
	}
	return 0;
}

static int h1c_on_body(llhttp_t *hp, const char *at, size_t len)
{
	struct h1c_req *q = hp->data;
	struct upstream_response *r = &q->resp;
	size_t max = q->cfg->max_response_size;

	if (len > max - r->body_len) {
		q->oversize = 1;
		return -1;
	}
	if (!r->body) {
		r->body = q->body_small;
		q->body_cap = sizeof(q->body_small);
	}
	if (r->body_len + len + 1 > q->body_cap) {
		size_t cap = q->body_cap > H1C_BODY_INIT ? q->body_cap : H1C_BODY_INIT;
		char *nb;

		while (cap < r->body_len + len + 1)
			cap *= 2;
		if (cap > max + 1)
			cap = max + 1;
		if (r->body == q->body_small) {
			nb = malloc(cap);
			if (nb)
				memcpy(nb, r->body, r->body_len);
		} else {
			nb = realloc(r->body, cap);
		}
		if (!nb)
			return -1;
		r->body = nb;
		q->body_cap = cap;
	}
	memcpy(r->body + r->body_len, at, len);
	r->body_len += len;
	r->body[r->body_len] = 0;
	return 0;
}

static int h1c_on_message_complete(llhttp_t *hp)
{
	struct h1c_req *q = hp->data;

	if (hp->status_code >= 100 && hp->status_code < 200 && hp->status_code != 101) {
		/* Interim answer: the final one follows on the same connection. */
		h1c_resp_clear(q);
		return 0;
	}
	q->final_done = 1;
	q->keep = !hp->upgrade && llhttp_should_keep_alive(hp);
	/* Stop right after the answer: bytes beyond it mean the connection
	 * cannot be reused. */
	return HPE_PAUSED;
}

/* ---- connections ---- */

static void h1c_list_add(struct h1c_conn **head, struct h1c_conn *k)
{
	k->prev = NULL;
	k->next = *head;
	if (*head)
		(*head)->prev = k;
	*head = k;
}

static void h1c_list_del(struct h1c_conn **head, struct h1c_conn *k)
{
	if (k->prev)
		k->prev->next = k->next;
	else
		*head = k->next;
	if (k->next)
		k->next->prev = k->prev;
	k->prev = k->next = NULL;
}

static void h1c_conn_watch(struct h1c_conn *k, int events)
{
	struct ev_loop *loop = k->c->loop;

	if (k->events == events)
		return;
	ev_io_stop(loop, &k->io);
	ev_io_set(&k->io, k->fd, events);
	k->events = events;
	if (events)
		ev_io_start(loop, &k->io);
}

/* Closes <k> and frees it; its request, if any, must have let go of it. */
static void h1c_conn_close(struct h1c_conn *k)
{
	struct h1c *c = k->c;

	ev_io_stop(c->loop, &k->io);
	if (k->st == H1C_C_IDLE) {
		h1c_list_del(&c->idle, k);
		c->n_idle--;
	} else {
		h1c_list_del(&c->busy, k);
	}
	close(k->fd);
	c->n_conns--;
	free(k);
}

static void h1c_io_cb(struct ev_loop *loop, ev_io *w, int revents);

/* A new connection to <q>'s address, connect started. NULL with errno set
 * when it failed at once. */
static struct h1c_conn *h1c_conn_open(struct h1c *c, const struct cfg *cfg)
{
	struct h1c_conn *k;
	int one = 1, fd;

	fd = socket(cfg->upstream_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	k = calloc(1, sizeof(*k));
	if (!k) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	k->c = c;
	k->fd = fd;
	memcpy(&k->addr, &cfg->upstream_addr, sizeof(k->addr));
	k->addrlen = cfg->upstream_addrlen;
	if (connect(fd, (const struct sockaddr *)&k->addr, k->addrlen) == -1 &&
	    errno != EINPROGRESS) {
		int e = errno;

		close(fd);
		free(k);
		errno = e;
		return NULL;
	}
	ev_io_init(&k->io, h1c_io_cb, fd, 0);
	k->st = H1C_C_CONNECTING;
	h1c_list_add(&c->busy, k);
	c->n_conns++;
	c->opened++;
	return k;
}

static int h1c_same_addr(const struct h1c_conn *k, const struct cfg *cfg)
{
	return k->addrlen == cfg->upstream_addrlen &&
	       memcmp(&k->addr, &cfg->upstream_addr, k->addrlen) == 0;
}

/* ---- requests ---- */

static void h1c_req_link(struct h1c_req **head, struct h1c_req *q)
{
	q->prev = NULL;
	q->next = *head;
	if (*head)
		(*head)->prev = q;
	*head = q;
}

static void h1c_req_unlink(struct h1c *c, struct h1c_req *q)
{
	if (q->phase == H1C_P_QUEUED) {
		if (q->prev)
			q->prev->next = q->next;
		else
			c->qhead = q->next;
		if (q->next)
			q->next->prev = q->prev;
		else
			c->qtail = q->prev;
	} else {
		if (q->prev)
			q->prev->next = q->next;
		else
			c->reqs = q->next;
		if (q->next)
			q->next->prev = q->prev;
	}
	q->prev = q->next = NULL;
}

/* Arms <q>'s timer for the nearest of what its phase waits for. */
static void h1c_arm(struct h1c_req *q)
{
	struct ev_loop *loop = q->c->loop;
	ev_tstamp t = q->deadline;
	enum h1c_tkind kind = H1C_T_DEADLINE;

	if (q->phase == H1C_P_BACKOFF) {
		t = q->backoff_end;
		kind = H1C_T_BACKOFF;
	} else {
		if (q->attempt_end < t) {
			t = q->attempt_end;
			kind = H1C_T_ATTEMPT;
		}
		if (q->phase == H1C_P_CONNECTING && q->connect_end < t) {
			t = q->connect_end;
			kind = H1C_T_CONNECT;
		}
	}
	q->tkind = kind;
	ev_timer_stop(loop, &q->timer);
	t -= ev_now(loop);
	ev_timer_set(&q->timer, t > 0 ? t : 0., 0.);
	ev_timer_start(loop, &q->timer);
}

/* Hands the answer (or the error <err>) to the caller and frees <q>. <q>
 * holds no connection any more. */
static void h1c_finish(struct h1c_req *q, const char *err)
{
	struct h1c *c = q->c;
	struct upstream_response *r = &q->resp;

	ev_timer_stop(c->loop, &q->timer);
	h1c_req_unlink(c, q);
	c->n_reqs--;
	r->latency_us = upstream_elapsed_us(&q->start);
	if (err) {
		r->status = 0;
		r->error = err;
	} else {
		r->status = (long)q->hp.status_code;
		if (r->status < 200 || r->status > 599) {
			r->status = 0;
			r->error = "unusable HTTP status";
		}
	}
	if (r->status == 0)
		h1c_resp_clear(q);   /* nothing captured may leak into a decision */
	q->done(q->arg, r);
	h1c_resp_clear(q);
	r->copy = NULL;   /* in <q>'s allocation */
	if (q->hv != q->hv_small)
		free(q->hv);
	q->hv = NULL;
	/* Kept for a next request, up to H1C_SPARE_MAX. */
	if (c->n_spare < H1C_SPARE_MAX) {
		q->next = c->spare;
		c->spare = q;
		c->n_spare++;
	} else {
		free(q);
	}
}

/* Gives <q>'s connection back: to the idle pool when <keep> and there is
 * room, else closed. */
static void h1c_release(struct h1c_req *q, int keep)
{
	struct h1c_conn *k = q->conn;
	struct h1c *c = q->c;

	if (!k)
		return;
	q->conn = NULL;
	k->q = NULL;
	if (keep && c->n_idle < c->keepalive_max && c->cfg && h1c_same_addr(k, c->cfg)) {
		h1c_list_del(&c->busy, k);
		k->st = H1C_C_IDLE;
		k->uses++;
		k->idle_since = ev_now(c->loop);
		h1c_list_add(&c->idle, k);
		c->n_idle++;
		h1c_conn_watch(k, EV_READ);   /* the server closing it */
	} else {
		h1c_conn_close(k);
	}
}

static enum upstream_retry_reason h1c_reason(enum h1c_fail f)
{
	switch (f) {
	case H1C_FAIL_CONNECT: return UPSTREAM_RETRY_CONNECT;
	case H1C_FAIL_RESET:   return UPSTREAM_RETRY_RESET;
	case H1C_FAIL_TIMEOUT: return UPSTREAM_RETRY_TIMEOUT;
	default:               return UPSTREAM_RETRY_STATUS;
	}
}

/* Starts the backoff before another attempt, if the policy allows one for
 * <fail>/<status>. Returns 1 if so, 0 if not. <q> holds no connection. */
static int h1c_maybe_retry(struct h1c_req *q, enum h1c_fail fail, long status)
{
	const struct cfg *cfg = q->cfg;
	ev_tstamp now = ev_now(q->c->loop);
	long left_ms = (long)((q->deadline - now) * H1C_MS), d;

	d = h1c_retry_delay(fail, status, q->attempt, cfg->upstream_retries,
	                    cfg->upstream_retry_on, cfg->upstream_retry_backoff_ms,
	                    left_ms, h1c_rand(q->c));
	if (d < 0)
		return 0;
	q->resp.retries[h1c_reason(fail)]++;
	q->phase = H1C_P_BACKOFF;
	q->backoff_end = now + (ev_tstamp)d / H1C_MS;
	h1c_arm(q);
	return 1;
}

/* The attempt failed with <fail>: the connection is dropped; then a stale
 * retry, a policy retry, or the end. */
static void h1c_attempt_fail(struct h1c_req *q, enum h1c_fail fail, const char *err)
{
	struct h1c *c = q->c;
	int reused = q->conn && q->conn->uses > 0;

	if (q->conn) {
		struct h1c_conn *k = q->conn;

		q->conn = NULL;
		k->q = NULL;
		h1c_conn_close(k);
	}
	if (fail == H1C_FAIL_RESET && reused && !q->stale_retried && !q->got_bytes) {
		/* The server closed the kept-alive connection while idle: once,
		 * at once, on a new connection. */
		q->stale_retried = 1;
		q->resp.retries[UPSTREAM_RETRY_STALE]++;
		h1c_attempt_go(q);
	} else if (!h1c_maybe_retry(q, fail, 0)) {
		h1c_finish(q, err);
	}
	h1c_dispatch(c);
}

/* A failure found while starting an attempt, reported from the loop. */
static void h1c_fail_later(struct h1c_req *q, enum h1c_fail fail, const char *err)
{
	struct ev_loop *loop = q->c->loop;

	if (q->conn)
		h1c_conn_watch(q->conn, 0);   /* nothing more from it */
	q->pend_fail = fail;
	q->pend_err = err;
	q->tkind = H1C_T_PENDING;
	ev_timer_stop(loop, &q->timer);
	ev_timer_set(&q->timer, 0., 0.);
	ev_timer_start(loop, &q->timer);
}

/* Writes what is left of the request. Returns 0, or -1 after the failure
 * was handled. */
static int h1c_send(struct h1c_req *q, int from_loop)
{
	struct h1c_conn *k = q->conn;

	for (;;) {
		struct iovec iov = { q->req + q->sent, q->req_len - q->sent };
		struct msghdr m;
		ssize_t n;

		memset(&m, 0, sizeof(m));
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		n = sendmsg(k->fd, &m, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				h1c_conn_watch(k, EV_WRITE);
				return 0;
			}
			if (from_loop)
				h1c_attempt_fail(q, H1C_FAIL_RESET, "connection reset sending the request");
			else
				h1c_fail_later(q, H1C_FAIL_RESET, "connection reset sending the request");
			return -1;
		}
		q->sent += (size_t)n;
		if (q->sent == q->req_len)
			break;
	}
	q->phase = H1C_P_WAITING;
	h1c_conn_watch(k, EV_READ);
	return 0;
}

/* Starts one attempt: a free connection, a new one, or the queue. Never
 * completes <q> synchronously. */
static void h1c_attempt_go(struct h1c_req *q)
{
	struct h1c *c = q->c;
	const struct cfg *cfg = q->cfg;
	ev_tstamp now = ev_now(c->loop);
	struct h1c_conn *k, *next;

	if (q->phase == H1C_P_QUEUED) {
		/* from the queue: into the running list */
		h1c_req_unlink(c, q);
		q->phase = H1C_P_BACKOFF;
		h1c_req_link(&c->reqs, q);
	}
	/* Idle too long: a middlebox may have dropped it without a word, and
	 * a request on it would only find out at its timeout. */
	for (k = c->idle; k; k = next) {
		next = k->next;
		if (now - k->idle_since > cfg->keepalive_idle_timeout_ms / H1C_MS)
			h1c_conn_close(k);
	}
	for (k = c->idle; k; k = k->next)
		if (h1c_same_addr(k, cfg))
			break;
	if (!k && c->max_conns && c->n_conns >= c->max_conns) {
		if (c->idle) {
			h1c_conn_close(c->idle);   /* idle, to another address */
		} else {
			h1c_req_unlink(c, q);
			q->phase = H1C_P_QUEUED;
			q->prev = c->qtail;
			q->next = NULL;
			if (c->qtail)
				c->qtail->next = q;
			else
				c->qhead = q;
			c->qtail = q;
			h1c_arm(q);
			return;
		}
	}
	q->resp.attempts++;
	q->sent = 0;
	q->got_bytes = 0;
	q->final_done = 0;
	q->keep = 0;
	q->hdrs_done = 0;
	q->hdr_bytes = 0;
	q->oversize = 0;
	q->in_value = q->want = 0;
	q->hf_len = 0;
	q->hf_long = 0;
	h1c_resp_clear(q);
	llhttp_init(&q->hp, HTTP_RESPONSE, &c->hs);
	q->hp.data = q;
	if (cfg->upstream_attempt_timeout_ms) {
		ev_tstamp end = now + cfg->upstream_attempt_timeout_ms / H1C_MS;

		q->attempt_end = end < q->deadline ? end : q->deadline;
	} else {
		q->attempt_end = q->deadline;
	}
	if (k) {
		h1c_list_del(&c->idle, k);
		c->n_idle--;
		k->st = H1C_C_BUSY;
		h1c_list_add(&c->busy, k);
		k->q = q;
		q->conn = k;
		q->phase = H1C_P_SENDING;
		h1c_arm(q);
		h1c_send(q, 0);
		return;
	}
	k = h1c_conn_open(c, cfg);
	if (!k) {
		q->phase = H1C_P_CONNECTING;
		h1c_fail_later(q, H1C_FAIL_CONNECT,
		               errno == ECONNREFUSED ? "connection refused" : "cannot connect");
		return;
	}
	k->q = q;
	q->conn = k;
	q->phase = H1C_P_CONNECTING;
	q->connect_end = now + cfg->connect_timeout_ms / H1C_MS;
	h1c_conn_watch(k, EV_WRITE);
	h1c_arm(q);
}

/* Starts queued requests while connections are free. */
static void h1c_dispatch(struct h1c *c)
{
	while (c->qhead) {
		struct h1c_req *q = c->qhead;
		int free_conn = 0;

		for (struct h1c_conn *k = c->idle; k; k = k->next)
			if (h1c_same_addr(k, q->cfg)) {
				free_conn = 1;
				break;
			}
		if (!free_conn && c->max_conns && c->n_conns >= c->max_conns && !c->idle)
			break;
		h1c_attempt_go(q);
		if (q->phase == H1C_P_QUEUED)
			break;   /* went back: no progress possible */
	}
}

/* The final answer is complete (<extra>: bytes followed it). */
static void h1c_complete(struct h1c_req *q, int extra)
{
	struct h1c *c = q->c;
	long status = (long)q->hp.status_code;
	int keep = !extra && q->keep;

	h1c_release(q, keep);
	if (status >= 500 && h1c_maybe_retry(q, H1C_FAIL_NONE, status)) {
		h1c_resp_clear(q);
	} else {
		h1c_finish(q, NULL);
	}
	h1c_dispatch(c);
}

static void h1c_read(struct h1c_req *q)
{
	struct h1c_conn *k = q->conn;
	char buf[H1C_RBUF];
	ssize_t n;
	llhttp_errno_t err;

	n = recv(k->fd, buf, sizeof(buf), 0);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		if (!q->got_bytes)
			h1c_attempt_fail(q, H1C_FAIL_RESET, "connection reset before the answer");
		else
			h1c_attempt_fail(q, H1C_FAIL_OTHER, "connection reset mid-response");
		return;
	}
	if (n == 0) {
		if (!q->got_bytes) {
			h1c_attempt_fail(q, H1C_FAIL_RESET, "connection closed without an answer");
			return;
		}
		llhttp_finish(&q->hp);
		if (q->final_done)
			h1c_complete(q, 1);   /* 1: closed, not reusable */
		else
			h1c_attempt_fail(q, H1C_FAIL_OTHER, "connection closed mid-response");
		return;
	}
	q->got_bytes = 1;
	err = llhttp_execute(&q->hp, buf, (size_t)n);
	if (q->final_done) {
		/* paused by h1c_on_message_complete(), at the answer's end */
		h1c_complete(q, err != HPE_PAUSED || llhttp_get_error_pos(&q->hp) != buf + n);
		return;
	}
	if (err != HPE_OK) {
		h1c_attempt_fail(q, H1C_FAIL_OTHER,
		                 q->oversize ? "response too large" : "malformed HTTP response");
		return;
	}
	/* still in a header block: every byte of this read was a header byte */
	if (!q->hdrs_done && (q->hdr_bytes += (size_t)n) > H1C_HEADER_MAX)
		h1c_attempt_fail(q, H1C_FAIL_OTHER, "response too large");
}

static void h1c_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct h1c_conn *k = (struct h1c_conn *)w;
	struct h1c_req *q = k->q;
	struct h1c *c = k->c;

	(void)loop;
	if (k->st == H1C_C_IDLE) {
		/* Readable while idle: closed by the server, or junk. */
		h1c_conn_close(k);
		h1c_dispatch(c);
		return;
	}
	if (!q)
		return;
	if (k->st == H1C_C_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err) {
			h1c_attempt_fail(q, H1C_FAIL_CONNECT, err == ECONNREFUSED ?
			                 "connection refused" : "cannot connect");
			return;
		}
		k->st = H1C_C_BUSY;
		q->phase = H1C_P_SENDING;
		h1c_arm(q);   /* the connect timeout no longer applies */
		h1c_send(q, 1);
		return;
	}
	if ((revents & EV_WRITE) && q->phase == H1C_P_SENDING) {
		h1c_send(q, 1);
		return;
	}
	if (revents & EV_READ)
		h1c_read(q);
}

static void h1c_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct h1c_req *q = (struct h1c_req *)((char *)w - offsetof(struct h1c_req, timer));
	struct h1c *c = q->c;

	(void)loop;
	(void)revents;
	switch (q->tkind) {
	case H1C_T_PENDING:
		h1c_attempt_fail(q, q->pend_fail, q->pend_err);
		break;
	case H1C_T_BACKOFF:
		if (ev_now(c->loop) >= q->deadline) {
			h1c_finish(q, "timeout");
			break;
		}
		q->attempt++;
		h1c_attempt_go(q);
		break;
	case H1C_T_CONNECT:
		h1c_attempt_fail(q, H1C_FAIL_CONNECT, "connect timeout");
		break;
	case H1C_T_ATTEMPT:
		if (q->phase == H1C_P_QUEUED) {
			/* No connection came within the attempt: the rest of
			 * the budget is for waiting too. */
			q->attempt_end = q->deadline;
			h1c_arm(q);
			break;
		}
		h1c_attempt_fail(q, q->got_bytes ? H1C_FAIL_OTHER : H1C_FAIL_TIMEOUT,
		                 "attempt timeout");
		break;
	default:
		if (q->conn) {
			struct h1c_conn *k = q->conn;

			q->conn = NULL;
			k->q = NULL;
			h1c_conn_close(k);
		}
		h1c_finish(q, "timeout");
		h1c_dispatch(c);
		break;
	}
}

/* ---- public API ---- */

struct h1c *h1c_new(struct ev_loop *loop, const struct cfg *cfg)
{
	struct h1c *c = calloc(1, sizeof(*c));
	struct timespec ts;

	if (!c)
		return NULL;
	c->loop = loop;
	llhttp_settings_init(&c->hs);
	c->hs.on_header_field = h1c_on_header_field;
	c->hs.on_header_value = h1c_on_header_value;
	c->hs.on_headers_complete = h1c_on_headers_complete;
	c->hs.on_body = h1c_on_body;
	c->hs.on_message_complete = h1c_on_message_complete;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	c->rnd = (uint32_t)ts.tv_nsec ^ (uint32_t)(uintptr_t)c ^ 0x9e3779b9u;
	if (!c->rnd)
		c->rnd = 1;
	h1c_set_cfg(c, cfg);
	return c;
}

void h1c_set_cfg(struct h1c *c, const struct cfg *cfg)
{
	struct h1c_conn *k, *next;

	c->cfg = cfg;
	c->keepalive_max = cfg->keepalive_max;
	c->max_conns = cfg->max_upstream_conns;
	for (k = c->idle; k; k = next) {
		next = k->next;
		if (!cfg->upstream_native || !h1c_same_addr(k, cfg))
			h1c_conn_close(k);
	}
	while (c->n_idle > c->keepalive_max && c->idle)
		h1c_conn_close(c->idle);
	h1c_dispatch(c);
}

int h1c_start(struct h1c *c, const struct cfg *cfg, const char *url,
              const char *const *headers, size_t n, upstream_done_fn done, void *arg)
{
	static const char ua[] = "User-Agent: spoa-auth\r\n", acc[] = "Accept: */*\r\n";
	const char *path = url + cfg->upstream_path_off;
	size_t plen = strlen(path), hlen = strlen(cfg->upstream_host), len, need;
	int slash = *path != '/', own_host = 1, own_ua = 1, own_acc = 1;
	struct h1c_req *q;
	char *p;

	/* "GET " [/] path " HTTP/1.1\r\n" "Host: " host "\r\n" ua acc {line "\r\n"}
	 * "\r\n"; a caller's Host, User-Agent or Accept replaces ours (as with
	 * libcurl). */
	len = 4 + (size_t)slash + plen + 11 + 6 + hlen + 2 + sizeof(ua) - 1 + sizeof(acc) - 1 + 2;
	for (size_t i = 0; i < n; i++) {
		len += strlen(headers[i]) + 2;
		/* the first letter, folded, before any strncasecmp() */
		switch (headers[i][0] | 0x20) {
		case 'h':
			if (strncasecmp(headers[i], "host:", 5) == 0)
				own_host = 0;
			break;
		case 'u':
			if (strncasecmp(headers[i], "user-agent:", 11) == 0)
				own_ua = 0;
			break;
		case 'a':
			if (strncasecmp(headers[i], "accept:", 7) == 0)
				own_acc = 0;
			break;
		}
	}
	/* One allocation: the request, the copy-header slots, the request
	 * bytes; the spare one when it is large enough (its state zeroed, its
	 * storage left as it is). */
	need = sizeof(*q) + cfg->n_copy_headers * sizeof(char *) + len;
	q = c->spare;
	if (q) {
		c->spare = q->next;
		c->n_spare--;
		if (q->alloc_size < need) {
			free(q);
			q = NULL;
		} else {
			need = q->alloc_size;
		}
	}
	if (!q && !(q = malloc(need)))
		return -1;
	memset(q, 0, offsetof(struct h1c_req, hv_small));
	memset(q + 1, 0, cfg->n_copy_headers * sizeof(char *));
	q->alloc_size = need;
	q->resp.copy = (char **)(void *)(q + 1);
	q->resp.n_copy = cfg->n_copy_headers;
	q->hv = q->hv_small;
	q->hv_cap = sizeof(q->hv_small);
	q->resp.native = 1;
	q->c = c;
	q->cfg = cfg;
	q->done = done;
	q->arg = arg;
	q->req = p = (char *)(q->resp.copy + q->resp.n_copy);
	memcpy(p, "GET ", 4); p += 4;
	if (slash)
		*p++ = '/';
	memcpy(p, path, plen); p += plen;
	memcpy(p, " HTTP/1.1\r\n", 11); p += 11;
	if (own_host) {
		memcpy(p, "Host: ", 6); p += 6;
		memcpy(p, cfg->upstream_host, hlen); p += hlen;
		*p++ = '\r';
		*p++ = '\n';
	}
	if (own_ua) {
		memcpy(p, ua, sizeof(ua) - 1); p += sizeof(ua) - 1;
	}
	if (own_acc) {
		memcpy(p, acc, sizeof(acc) - 1); p += sizeof(acc) - 1;
	}
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(headers[i]);

		memcpy(p, headers[i], l); p += l;
		*p++ = '\r';
		*p++ = '\n';
	}
	*p++ = '\r';
	*p++ = '\n';
	q->req_len = (size_t)(p - q->req);

	clock_gettime(CLOCK_MONOTONIC, &q->start);
	ev_init(&q->timer, h1c_timer_cb);
	q->deadline = ev_now(c->loop) + cfg->timeout_ms / H1C_MS;
	q->attempt = 1;
	q->phase = H1C_P_BACKOFF;   /* "between attempts": in c->reqs */
	h1c_req_link(&c->reqs, q);
	c->n_reqs++;
	/* A queue ahead of us keeps its order. */
	if (c->qhead) {
		h1c_req_unlink(c, q);
		q->phase = H1C_P_QUEUED;
		q->prev = c->qtail;
		q->next = NULL;
		c->qtail->next = q;
		c->qtail = q;
		q->attempt_end = q->deadline;
		h1c_arm(q);
		return 0;
	}
	h1c_attempt_go(q);
	return 0;
}

unsigned h1c_pending(const struct h1c *c)
{
	return c->n_reqs;
}

unsigned h1c_conns(const struct h1c *c)
{
	return c->n_conns;
}

uint64_t h1c_conns_opened(const struct h1c *c)
{
	return c->opened;
}

void h1c_abort_all(struct h1c *c)
{
	for (;;) {
		struct h1c_req *q = c->reqs ? c->reqs : c->qhead;

		if (!q)
			break;
		if (q->conn) {
			struct h1c_conn *k = q->conn;

			q->conn = NULL;
			k->q = NULL;
			h1c_conn_close(k);
		}
		h1c_finish(q, "aborted");
	}
}

void h1c_free(struct h1c *c)
{
	if (!c)
		return;
	h1c_abort_all(c);
	while (c->spare) {
		struct h1c_req *q = c->spare;

		c->spare = q->next;
		free(q);
	}
	c->n_spare = 0;
	while (c->idle)
		h1c_conn_close(c->idle);
	while (c->busy)
		h1c_conn_close(c->busy);
	free(c);
}
