/* chaos-load: an open-loop HTTP/1.1 load generator that checks every answer.
 *
 * Sends requests at a fixed rate (scheduled times, so a stalled gateway does
 * not lower the offered load and latencies count from the scheduled time) on
 * up to --max-conns keep-alive connections to one gateway on loopback. Each
 * protected request carries the session of a known user, "Cookie: sid=v<N>",
 * or a session the user service must refuse, "Cookie: sid=x<N>". The bench
 * business service behind the gateway echoes the identity header it got in
 * its body, and the number of copies in "X-Id-Count"; each answer is checked:
 *
 *   valid session   200 with body "id-<N>" and one copy     expected
 *                   503 (fail closed)                        degraded
 *                   200 with any other identity              WRONG
 *   bad session     401                                      expected
 *                   503                                      degraded
 *                   any 2xx                                  WRONG
 *   anything else   (other status, connection error, timeout) failed
 *
 * Optional public requests (--logout-every: POST /api/user/logout with the
 * session) are counted apart (statuses, slow): they never go through the
 * agent's decision.
 *
 * Never: sends anything but to --host:--port; runs longer than --duration
 * plus --timeout-ms; samples (every answer is checked).
 *
 * Output: one JSON object on stdout (totals, statuses, latency quantiles,
 * the send times of the first and last non-expected answers, and per-second
 * counts for plots).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LOAD_BUF_SIZE        16384	/* one answer of the bench services fits */
#define LOAD_REQ_SIZE        512
#define LOAD_MAX_EVENTS      256
#define LOAD_TICK_MS         2		/* epoll_wait bound: send schedule resolution */
#define LOAD_MAX_SECONDS     7200
#define LOAD_LAT_BUCKETS     20000	/* 1 ms buckets up to 20 s, then the last one */
#define LOAD_MAX_WRONG_SHOWN 5
#define LOAD_STATUS_MAX      600

enum load_kind {
	LOAD_GOOD = 0,		/* valid session: expects 200 + its identity */
	LOAD_BAD,		/* refused session: expects 401 */
	LOAD_PUBLIC,		/* logout: public route */
	LOAD_KIND_ENTRIES
};

enum load_verdict {
	LOAD_V_EXPECTED = 0,
	LOAD_V_DEGRADED,	/* 503: fail closed */
	LOAD_V_FAILED,		/* other status, error, timeout */
	LOAD_V_WRONG,		/* an identity that must not be there */
	LOAD_V_ENTRIES
};

struct load_req {
	enum load_kind kind;
	unsigned user;
	double sched;		/* scheduled send time, s since start */
	int retried;
};

struct load_conn {
	int fd;
	int connecting;
	int busy;
	int reused;		/* has answered before: a close before any byte is retried once */
	struct load_req req;
	char out[LOAD_REQ_SIZE];
	size_t out_len, out_off;
	char in[LOAD_BUF_SIZE];
	size_t in_len;
	struct load_conn *next_idle;
};

struct load_opts {
	const char *host;
	int port;
	double rate;
	double duration;
	int max_conns;
	unsigned users;
	double zipf_s;
	unsigned bad_every;
	unsigned logout_every;
	double slow_ms;
	double timeout_ms;
	unsigned seed;
	const char *path;
	double late_503_ms;
	const char *trace;
};

struct load_stats {
	unsigned long sent, done, retries, slow, timeouts, conn_errors, queue_max;
	unsigned long status[LOAD_STATUS_MAX + 1];	/* protected requests only */
	unsigned long verdict[LOAD_KIND_ENTRIES][LOAD_V_ENTRIES];
	unsigned long public_status_2xx, public_other, public_slow;
	double first_unexp, last_unexp;	/* send times of non-expected protected answers */
	unsigned long lat[LOAD_LAT_BUCKETS];
	double lat_max;
	double vmax[LOAD_V_ENTRIES];	/* slowest answer per verdict, protected requests */
	unsigned long per_sec_done[LOAD_MAX_SECONDS];
	unsigned long per_sec_unexp[LOAD_MAX_SECONDS];
	unsigned long per_sec_slow[LOAD_MAX_SECONDS];
	int wrong_shown;
	unsigned long late_503;	/* 503s slower than --late-503-ms */
};

static struct load_opts opts = {
	.host = "127.0.0.1", .rate = 100, .duration = 10, .max_conns = 200, .users = 100,
	.zipf_s = 0, .bad_every = 10, .logout_every = 0, .slow_ms = 2500, .timeout_ms = 10000,
	.seed = 1, .path = "/api/business/chaos", .late_503_ms = 1000,
};
static FILE *trace;	/* --trace: one line per answer, for analysis */
static struct load_stats st = { .first_unexp = -1, .last_unexp = -1 };
static struct timespec t0;
static int epfd = -1;
static struct load_conn *conns;
static int nconns;		/* open or connecting */
static struct load_conn *idle;
static struct load_req *queue;	/* requests waiting for a connection (ring) */
static size_t q_head, q_len, q_cap;
static double *zipf_cdf;
static uint64_t rng_state;

static double load_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
}

/* xorshift64*: deterministic per --seed, no libc state. */
static uint64_t load_rand(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static double load_rand01(void)
{
	return (double)(load_rand() >> 11) / (double)(1ULL << 53);
}

/* Accepts opts.users >= 1. Builds the Zipf CDF when zipf_s > 0. Returns 0 or -1. */
static int load_zipf_init(void)
{
	double sum = 0;
	unsigned k;

	if (opts.zipf_s <= 0)
		return 0;
	zipf_cdf = malloc(sizeof(*zipf_cdf) * opts.users);
	if (!zipf_cdf)
		return -1;
	for (k = 0; k < opts.users; k++) {
		sum += 1.0 / pow((double)(k + 1), opts.zipf_s);
		zipf_cdf[k] = sum;
	}
	for (k = 0; k < opts.users; k++)
		zipf_cdf[k] /= sum;
	return 0;
}

static unsigned load_pick_user(void)
{
	double u;
	unsigned lo = 0, hi;

	if (!zipf_cdf)
		return (unsigned)(load_rand() % opts.users);
	u = load_rand01();
	hi = opts.users - 1;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (zipf_cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void load_conn_close(struct load_conn *c)
{
	struct load_conn **pp;

	if (c->fd == -1)
		return;
	for (pp = &idle; *pp; pp = &(*pp)->next_idle) {
		if (*pp == c) {
			*pp = c->next_idle;
			break;
		}
	}
	close(c->fd);
	c->fd = -1;
	c->busy = c->connecting = c->reused = 0;
	c->in_len = c->out_len = c->out_off = 0;
	nconns--;
}

/* Accepts a free slot <c>. Opens a non-blocking connection. Returns 0 or -1
 * (counted as a connection error by the caller). */
static int load_conn_open(struct load_conn *c)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opts.port) };
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
	int one = 1;

	if (inet_pton(AF_INET, opts.host, &sa.sin_addr) != 1)
		return -1;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1)
		return -1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	nconns++;
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 && errno != EINPROGRESS) {
		load_conn_close(c);
		return -1;
	}
	c->connecting = 1;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) == -1) {
		load_conn_close(c);
		return -1;
	}
	return 0;
}

static void load_format(struct load_conn *c)
{
	const struct load_req *r = &c->req;
	int n;

	if (r->kind == LOAD_PUBLIC)
		n = snprintf(c->out, sizeof(c->out),
			     "POST /api/user/logout HTTP/1.1\r\nHost: chaos\r\nCookie: sid=v%u\r\n"
			     "Content-Length: 0\r\n\r\n", r->user);
	else
		n = snprintf(c->out, sizeof(c->out),
			     "GET %s/%u HTTP/1.1\r\nHost: chaos\r\nCookie: sid=%c%u\r\n\r\n",
			     opts.path, r->user, r->kind == LOAD_GOOD ? 'v' : 'x', r->user);
	c->out_len = (size_t)n;
	c->out_off = 0;
	c->in_len = 0;
}

static void load_flush(struct load_conn *c);

/* Puts <r> on connection <c> (connected and idle). */
static void load_start_on(struct load_conn *c, const struct load_req *r)
{
	c->req = *r;
	c->busy = 1;
	load_format(c);
	load_flush(c);
}

static void load_mark_idle(struct load_conn *c)
{
	c->busy = 0;
	c->next_idle = idle;
	idle = c;
}

static void load_account(const struct load_req *r, int status, enum load_verdict v, double now,
			 const char *why)
{
	double lat = now - r->sched;
	unsigned long ms = (unsigned long)(lat * 1000.0);
	unsigned long sec = (unsigned long)r->sched;

	st.done++;
	if (ms >= LOAD_LAT_BUCKETS)
		ms = LOAD_LAT_BUCKETS - 1;
	st.lat[ms]++;
	if (lat > st.lat_max)
		st.lat_max = lat;
	if (sec >= LOAD_MAX_SECONDS)
		sec = LOAD_MAX_SECONDS - 1;
	st.per_sec_done[sec]++;
	if (r->kind == LOAD_PUBLIC) {
		/* Public routes never wait for the agent: "timeout processing"
		 * does not bound them, the user service's backend does. */
		if (lat * 1000.0 > opts.slow_ms)
			st.public_slow++;
		if (status >= 200 && status < 300)
			st.public_status_2xx++;
		else
			st.public_other++;
		return;
	}
	if (lat * 1000.0 > opts.slow_ms) {
		st.slow++;
		st.per_sec_slow[sec]++;
	}
	st.verdict[r->kind][v]++;
	if (v == LOAD_V_DEGRADED && lat * 1000.0 > opts.late_503_ms)
		st.late_503++;
	if (trace)
		fprintf(trace, "%.3f %.1f %d %d\n", r->sched, lat * 1000.0, status, (int)v);
	if (lat > st.vmax[v])
		st.vmax[v] = lat;
	if (status >= 0 && status <= LOAD_STATUS_MAX)
		st.status[status]++;
	if (v != LOAD_V_EXPECTED) {
		st.per_sec_unexp[sec]++;
		if (st.first_unexp < 0 || r->sched < st.first_unexp)
			st.first_unexp = r->sched;
		if (r->sched > st.last_unexp)
			st.last_unexp = r->sched;
	}
	if (v == LOAD_V_WRONG && st.wrong_shown < LOAD_MAX_WRONG_SHOWN) {
		st.wrong_shown++;
		fprintf(stderr, "chaos-load: WRONG answer: %s session %c%u: %s\n",
			r->kind == LOAD_GOOD ? "valid" : "refused",
			r->kind == LOAD_GOOD ? 'v' : 'x', r->user, why);
	}
}

/* A request failed without a parsed answer: retried once if it was the first
 * use of a reused keep-alive connection that the server closed before any
 * byte (what every HTTP client does for idempotent requests), else counted. */
static void load_fail(struct load_conn *c, int is_timeout)
{
	struct load_req r = c->req;
	int retry = !is_timeout && c->reused && c->in_len == 0 && !r.retried;

	load_conn_close(c);
	if (retry) {
		r.retried = 1;
		st.retries++;
		if (q_len == q_cap)
			goto count;
		queue[(q_head + q_len++) % q_cap] = r;
		return;
	}
count:
	if (is_timeout)
		st.timeouts++;
	else
		st.conn_errors++;
	load_account(&r, 0, LOAD_V_FAILED, load_now(), is_timeout ? "timeout" : "connection error");
}

/* Level-triggered epoll: EPOLLOUT only while connecting or with bytes to send. */
static void load_want(struct load_conn *c, int out)
{
	struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c };

	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void load_flush(struct load_conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR) {
				load_want(c, 1);
				return;
			}
			load_fail(c, 0);
			return;
		}
		c->out_off += (size_t)n;
	}
	load_want(c, 0);
}

static const char *load_find_header(const char *h, const char *end, const char *name)
{
	size_t nl = strlen(name);
	const char *p = h;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));

		if (!eol)
			return NULL;
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			p += nl + 1;
			while (*p == ' ')
				p++;
			return p;
		}
		p = eol + 1;
	}
	return NULL;
}

/* Checks one complete answer against what its request expects. */
static void load_judge(struct load_conn *c, int status, const char *body, size_t blen, long id_count)
{
	const struct load_req *r = &c->req;
	char want[32];
	char why[160];
	enum load_verdict v;

	if (r->kind == LOAD_PUBLIC) {
		load_account(r, status, LOAD_V_EXPECTED, load_now(), "");
		return;
	}
	snprintf(why, sizeof(why), "status %d", status);
	if (status == 503) {
		v = LOAD_V_DEGRADED;
	} else if (r->kind == LOAD_BAD) {
		if (status == 401)
			v = LOAD_V_EXPECTED;
		else if (status >= 200 && status < 300)
			v = LOAD_V_WRONG;
		else
			v = LOAD_V_FAILED;
	} else if (status == 200) {
		snprintf(want, sizeof(want), "id-%u", r->user);
		if (id_count == 1 && blen == strlen(want) && memcmp(body, want, blen) == 0) {
			v = LOAD_V_EXPECTED;
		} else {
			v = LOAD_V_WRONG;
			snprintf(why, sizeof(why), "200 with identity '%.*s' (%ld copies), wanted %s",
				 (int)(blen > 64 ? 64 : blen), body, id_count, want);
		}
	} else if (status >= 200 && status < 300) {
		v = LOAD_V_WRONG;
	} else {
		v = LOAD_V_FAILED;
	}
	load_account(r, status, v, load_now(), why);
}

/* Parses <c>'s input. Returns 1 when an answer was complete (and judged), 0
 * when more bytes are needed, -1 on a malformed answer (judged as failed). */
static int load_parse(struct load_conn *c, int *close_after)
{
	char *hend = memmem(c->in, c->in_len, "\r\n\r\n", 4);
	const char *cl, *idc, *cn;
	size_t hlen, blen;
	int status;

	if (!hend)
		return c->in_len == sizeof(c->in) ? -1 : 0;
	hlen = (size_t)(hend - c->in) + 4;
	if (c->in_len < 12 || memcmp(c->in, "HTTP/1.", 7) != 0)
		return -1;
	status = atoi(c->in + 9);
	cl = load_find_header(c->in, hend + 2, "content-length");
	if (!cl)
		return -1;
	blen = (size_t)strtoul(cl, NULL, 10);
	if (hlen + blen > sizeof(c->in))
		return -1;
	if (c->in_len < hlen + blen)
		return 0;
	idc = load_find_header(c->in, hend + 2, "x-id-count");
	cn = load_find_header(c->in, hend + 2, "connection");
	*close_after = cn && strncasecmp(cn, "close", 5) == 0;
	load_judge(c, status, c->in + hlen, blen, idc ? strtol(idc, NULL, 10) : -1);
	if (c->in_len > hlen + blen)	/* nothing is pipelined: extra bytes are an error */
		*close_after = 1;
	return 1;
}

static void load_on_event(struct load_conn *c, uint32_t events)
{
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err) {
			if (c->busy) {
				load_fail(c, 0);
			} else {
				load_conn_close(c);
				st.conn_errors++;
			}
			return;
		}
		if (!(events & (EPOLLOUT | EPOLLIN | EPOLLERR | EPOLLHUP)))
			return;
		c->connecting = 0;
		if (c->busy) {
			load_flush(c);
		} else {
			load_want(c, 0);
			load_mark_idle(c);
		}
		return;
	}
	if (events & EPOLLOUT && c->busy && c->out_off < c->out_len) {
		load_flush(c);
		if (c->fd == -1)
			return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (;;) {
			ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
			int close_after = 0, rc;

			if (n == -1 && (errno == EAGAIN || errno == EINTR))
				return;
			if (n <= 0) {
				if (c->busy)
					load_fail(c, 0);
				else
					load_conn_close(c);
				return;
			}
			if (!c->busy) {	/* bytes nobody asked for */
				load_conn_close(c);
				return;
			}
			c->in_len += (size_t)n;
			rc = load_parse(c, &close_after);
			if (rc == 0)
				continue;
			if (rc < 0) {
				load_account(&c->req, 0, LOAD_V_FAILED, load_now(), "malformed answer");
				load_conn_close(c);
				return;
			}
			c->reused = 1;
			if (close_after) {
				load_conn_close(c);
			} else {
				c->in_len = 0;
				load_mark_idle(c);
			}
			return;
		}
	}
}

static struct load_conn *load_free_slot(void)
{
	int i;

	for (i = 0; i < opts.max_conns; i++)
		if (conns[i].fd == -1)
			return &conns[i];
	return NULL;
}

/* Hands queued requests to idle connections, opening new ones up to
 * --max-conns. */
static void load_dispatch(void)
{
	while (q_len) {
		struct load_conn *c = idle;
		struct load_req r = queue[q_head];

		if (c) {
			idle = c->next_idle;
		} else {
			c = load_free_slot();
			if (!c)
				return;
			if (load_conn_open(c) == -1) {
				st.conn_errors++;
				q_head = (q_head + 1) % q_cap;
				q_len--;
				load_account(&r, 0, LOAD_V_FAILED, load_now(), "connect failed");
				continue;
			}
			c->req = r;
			c->busy = 1;
			load_format(c);
			q_head = (q_head + 1) % q_cap;
			q_len--;
			continue;
		}
		q_head = (q_head + 1) % q_cap;
		q_len--;
		load_start_on(c, &r);
	}
}

static void load_check_timeouts(double now)
{
	int i;

	for (i = 0; i < opts.max_conns; i++) {
		struct load_conn *c = &conns[i];

		if (c->fd != -1 && c->busy && (now - c->req.sched) * 1000.0 > opts.timeout_ms)
			load_fail(c, 1);
	}
}

static double load_quantile(double q)
{
	unsigned long want, acc = 0;
	unsigned long i;

	if (!st.done)
		return 0;
	want = (unsigned long)ceil(q * (double)st.done);
	for (i = 0; i < LOAD_LAT_BUCKETS; i++) {
		acc += st.lat[i];
		if (acc >= want)
			return (double)i;
	}
	return (double)(LOAD_LAT_BUCKETS - 1);
}

static void load_report(void)
{
	static const char *const vname[LOAD_V_ENTRIES] = { "expected", "degraded", "failed", "wrong" };
	static const char *const kname[LOAD_KIND_ENTRIES] = { "good", "bad", "public" };
	unsigned long secs = (unsigned long)ceil(opts.duration);
	int k, v, s, first = 1;
	unsigned long i;

	printf("{\"sent\":%lu,\"done\":%lu,\"retries\":%lu,\"slow\":%lu,\"slow_ms\":%.0f,"
	       "\"timeouts\":%lu,\"conn_errors\":%lu,\"queue_max\":%lu,",
	       st.sent, st.done, st.retries, st.slow, opts.slow_ms, st.timeouts, st.conn_errors,
	       st.queue_max);
	printf("\"wrong\":%lu,", st.verdict[LOAD_GOOD][LOAD_V_WRONG] + st.verdict[LOAD_BAD][LOAD_V_WRONG]);
	printf("\"status\":{");
	for (s = 0; s <= LOAD_STATUS_MAX; s++) {
		if (!st.status[s])
			continue;
		printf("%s\"%d\":%lu", first ? "" : ",", s, st.status[s]);
		first = 0;
	}
	printf("},\"verdict\":{");
	for (k = 0; k < LOAD_PUBLIC; k++) {
		printf("%s\"%s\":{", k ? "," : "", kname[k]);
		for (v = 0; v < LOAD_V_ENTRIES; v++)
			printf("%s\"%s\":%lu", v ? "," : "", vname[v], st.verdict[k][v]);
		printf("}");
	}
	printf("},\"public_2xx\":%lu,\"public_other\":%lu,\"public_slow\":%lu,", st.public_status_2xx,
	       st.public_other, st.public_slow);
	printf("\"p50_ms\":%.0f,\"p99_ms\":%.0f,\"max_ms\":%.0f,", load_quantile(0.5),
	       load_quantile(0.99), st.lat_max * 1000.0);
	printf("\"late_503\":%lu,\"late_503_ms\":%.0f,", st.late_503, opts.late_503_ms);
	printf("\"expected_max_ms\":%.0f,\"degraded_max_ms\":%.0f,", st.vmax[LOAD_V_EXPECTED] * 1000.0,
	       st.vmax[LOAD_V_DEGRADED] * 1000.0);
	printf("\"first_unexpected_s\":%.3f,\"last_unexpected_s\":%.3f,", st.first_unexp, st.last_unexp);
	printf("\"per_sec\":[");
	for (i = 0; i < secs && i < LOAD_MAX_SECONDS; i++)
		printf("%s[%lu,%lu,%lu]", i ? "," : "", st.per_sec_done[i], st.per_sec_unexp[i],
		       st.per_sec_slow[i]);
	printf("]}\n");
}

static void load_usage(void)
{
	fprintf(stderr,
		"usage: chaos-load --port P [--host 127.0.0.1] [--rate 100] [--duration 10]\n"
		"       [--max-conns 200] [--users 100] [--zipf S] [--bad-every 10]\n"
		"       [--logout-every 0] [--slow-ms 2500] [--timeout-ms 10000] [--seed 1]\n"
		"       [--path /api/business/chaos] [--late-503-ms 1000] [--trace FILE]\n");
}

static int load_parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "host", 1, 0, 'h' }, { "port", 1, 0, 'p' }, { "rate", 1, 0, 'r' },
		{ "duration", 1, 0, 'd' }, { "max-conns", 1, 0, 'c' }, { "users", 1, 0, 'u' },
		{ "zipf", 1, 0, 'z' }, { "bad-every", 1, 0, 'b' }, { "logout-every", 1, 0, 'l' },
		{ "slow-ms", 1, 0, 's' }, { "timeout-ms", 1, 0, 't' }, { "seed", 1, 0, 'S' },
		{ "path", 1, 0, 'P' }, { "late-503-ms", 1, 0, 'L' }, { "trace", 1, 0, 'T' },
		{ 0, 0, 0, 0 }
	};
	int o;

	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'h': opts.host = optarg; break;
		case 'p': opts.port = atoi(optarg); break;
		case 'r': opts.rate = atof(optarg); break;
		case 'd': opts.duration = atof(optarg); break;
		case 'c': opts.max_conns = atoi(optarg); break;
		case 'u': opts.users = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'z': opts.zipf_s = atof(optarg); break;
		case 'b': opts.bad_every = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'l': opts.logout_every = (unsigned)strtoul(optarg, NULL, 10); break;
		case 's': opts.slow_ms = atof(optarg); break;
		case 't': opts.timeout_ms = atof(optarg); break;
		case 'S': opts.seed = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'P': opts.path = optarg; break;
		case 'L': opts.late_503_ms = atof(optarg); break;
		case 'T': opts.trace = optarg; break;
		default: return -1;
		}
	}
	if (opts.port <= 0 || opts.port > 65535 || opts.rate <= 0 || opts.duration <= 0 ||
	    opts.duration > LOAD_MAX_SECONDS - 1 || opts.max_conns <= 0 || opts.users == 0 ||
	    opts.timeout_ms <= 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct epoll_event evs[LOAD_MAX_EVENTS];
	unsigned long total, k = 0;
	double end;
	int i, rc = 1;

	if (load_parse_args(argc, argv) == -1) {
		load_usage();
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	rng_state = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)opts.seed * 0x100000001B3ULL);
	total = (unsigned long)(opts.rate * opts.duration);
	q_cap = total + 1;
	queue = calloc(q_cap, sizeof(*queue));
	conns = calloc((size_t)opts.max_conns, sizeof(*conns));
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!queue || !conns || epfd == -1 || load_zipf_init() == -1) {
		perror("chaos-load: setup");
		goto out;
	}
	if (opts.trace && !(trace = fopen(opts.trace, "w"))) {
		perror("chaos-load: --trace");
		goto out;
	}
	for (i = 0; i < opts.max_conns; i++)
		conns[i].fd = -1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	end = opts.duration + opts.timeout_ms / 1000.0 + 1.0;
	for (;;) {
		double now = load_now();
		int n;

		while (k < total && (double)k / opts.rate <= now) {
			struct load_req r = { .sched = (double)k / opts.rate };

			k++;
			r.user = load_pick_user();
			if (opts.logout_every && k % opts.logout_every == 0)
				r.kind = LOAD_PUBLIC;
			else if (opts.bad_every && k % opts.bad_every == 0)
				r.kind = LOAD_BAD;
			else
				r.kind = LOAD_GOOD;
			queue[(q_head + q_len++) % q_cap] = r;
			st.sent++;
		}
		if (q_len > st.queue_max)
			st.queue_max = q_len;
		load_dispatch();
		load_check_timeouts(now);
		if (k == total && st.done == st.sent)
			break;
		if (now > end)
			break;
		n = epoll_wait(epfd, evs, LOAD_MAX_EVENTS, LOAD_TICK_MS);
		for (i = 0; i < n; i++) {
			struct load_conn *c = evs[i].data.ptr;

			if (c->fd != -1)
				load_on_event(c, evs[i].events);
		}
	}
	/* Whatever is left unanswered past the end counts as timed out. */
	for (i = 0; i < opts.max_conns; i++)
		if (conns[i].fd != -1 && conns[i].busy)
			load_fail(&conns[i], 1);
	while (q_len) {
		struct load_req r = queue[q_head];

		q_head = (q_head + 1) % q_cap;
		q_len--;
		st.timeouts++;
		load_account(&r, 0, LOAD_V_FAILED, load_now(), "never sent");
	}
	load_report();
	rc = 0;
out:
	if (trace)
		fclose(trace);
	free(zipf_cdf);
	free(queue);
	free(conns);
	if (epfd != -1)
		close(epfd);
	return rc;
}
