/*
 * spop-load.c: a deterministic SPOP client (plays HAProxy) for make bench.
 *
 * Opens <conns> connections to an agent, does the HELLO handshake on each,
 * then sends <n> NOTIFYs in total, at most <window> in flight per connection,
 * reads the ACKs and counts outcomes (txn.<prefix>.outcome allow/deny/error).
 * Ends each connection with HAPROXY-DISCONNECT. Same input, same frames:
 * usable under valgrind --tool=callgrind and to fill a cache with <n>
 * distinct sessions.
 *
 * Each NOTIFY carries one message (default "exchange") with the arguments
 *   uri (STR), src (IPV4 127.0.0.1), xff (NULL), cookie (STR),
 *   authorization (NULL), x-example-authorization (NULL)
 * (what haproxy/spoe-auth.conf sends for a request with only a cookie)
 * plus any -A name=value (STR). The cookie is -k as given (mode fixed) or
 * "<-k>-<i>" with i = 0..n-1 (mode unique: a distinct session per NOTIFY).
 *
 * usage: spop-load [-a host:port] [-n notifies] [-w window] [-c conns]
 *                  [-m fixed|unique] [-k cookie] [-u uri] [-M message]
 *                  [-A name=value]... [-T timeout_s] [-s start_index]
 * Prints one line: notifies= acks= allow= deny= error= other= seconds= rate=
 * Exit status 0 if every NOTIFY got an ACK before the timeout, else 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "spop-mini.h"

#define MAX_CONNS   256
#define MAX_XARGS   16
#define BUF_SIZE    (1u << 20)

struct lconn {
	int fd;
	int state;              /* 0 hello sent, 1 running, 2 disconnect sent, 3 closed */
	uint32_t max_frame;
	uint64_t quota;         /* NOTIFYs this connection must send */
	uint64_t sent, acked;
	uint64_t next_sid;
	uint8_t *rbuf;          /* owned */
	size_t rlen;
	uint8_t *wbuf;          /* owned */
	size_t wlen, woff;
};

static const char *opt_msg = "exchange", *opt_cookie = "session=valid", *opt_uri = "/api/business";
static int opt_unique;
static uint64_t opt_start;
static const char *xarg_name[MAX_XARGS], *xarg_val[MAX_XARGS];
static int nxargs;
static uint64_t next_index;     /* shared across connections: 0..n-1 */
static uint64_t n_allow, n_deny, n_error, n_other;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int queue_room(struct lconn *c, size_t n)
{
	if (c->woff == c->wlen)
		c->woff = c->wlen = 0;
	if (BUF_SIZE - c->wlen < n && c->woff) {
		memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
		c->wlen -= c->woff;
		c->woff = 0;
	}
	return BUF_SIZE - c->wlen >= n;
}

static void queue_hello(struct lconn *c)
{
	static const uint8_t ids[2] = { 0, 0 };
	uint8_t *b = c->wbuf + c->wlen, *end = c->wbuf + BUF_SIZE, *p;

	p = sm_frame_begin(b, end, SM_HAPROXY_HELLO, ids, 2);
	sm_str_put(&p, end, "supported-versions", 18);
	sm_tstr_put(&p, end, "2.0", 3);
	sm_str_put(&p, end, "max-frame-size", 14);
	sm_tuint_put(&p, end, 16380);
	sm_str_put(&p, end, "capabilities", 12);
	sm_tstr_put(&p, end, "pipelining", 10);
	sm_str_put(&p, end, "engine-id", 9);
	sm_tstr_put(&p, end, "spop-load-0000-0000-0000-000000000000", 36);
	c->wlen += sm_frame_end(b, p);
}

static void queue_disconnect(struct lconn *c)
{
	static const uint8_t ids[2] = { 0, 0 };
	uint8_t *b, *end, *p;

	if (!queue_room(c, 64))
		return;
	b = c->wbuf + c->wlen;
	end = c->wbuf + BUF_SIZE;
	p = sm_frame_begin(b, end, SM_HAPROXY_DISCON, ids, 2);
	sm_str_put(&p, end, "status-code", 11);
	sm_tuint_put(&p, end, 0);
	sm_str_put(&p, end, "message", 7);
	sm_tstr_put(&p, end, "done", 4);
	c->wlen += sm_frame_end(b, p);
	c->state = 2;
}

/* Returns 1 if queued, 0 if the buffer is full. */
static int queue_notify(struct lconn *c)
{
	uint8_t ids[20], *ip = ids, *b, *end, *p;
	char cookie[512];
	size_t clen;
	int i;

	if (!queue_room(c, 2048))
		return 0;
	sm_varint_put(&ip, ids + sizeof(ids), c->next_sid);
	sm_varint_put(&ip, ids + sizeof(ids), 1);
	c->next_sid += 2;
	if (opt_unique)
		clen = (size_t)snprintf(cookie, sizeof(cookie), "%s-%llu", opt_cookie,
		                        (unsigned long long)(opt_start + next_index));
	else
		clen = (size_t)snprintf(cookie, sizeof(cookie), "%s", opt_cookie);
	if (clen >= sizeof(cookie))
		clen = sizeof(cookie) - 1;
	next_index++;

	b = c->wbuf + c->wlen;
	end = b + (c->max_frame + 4 < 2048 ? c->max_frame + 4 : 2048);
	p = sm_frame_begin(b, end, SM_NOTIFY, ids, (size_t)(ip - ids));
	if (!p || !sm_str_put(&p, end, opt_msg, strlen(opt_msg)) || p + 1 > end)
		goto too_big;
	*p++ = (uint8_t)(6 + nxargs);
	if (!sm_str_put(&p, end, "uri", 3) || !sm_tstr_put(&p, end, opt_uri, strlen(opt_uri)))
		goto too_big;
	if (!sm_str_put(&p, end, "src", 3) || end - p < 5)
		goto too_big;
	*p++ = SM_T_IPV4; *p++ = 127; *p++ = 0; *p++ = 0; *p++ = 1;
	if (!sm_str_put(&p, end, "xff", 3) || p + 1 > end)
		goto too_big;
	*p++ = SM_T_NULL;
	if (!sm_str_put(&p, end, "cookie", 6) || !sm_tstr_put(&p, end, cookie, clen))
		goto too_big;
	if (!sm_str_put(&p, end, "authorization", 13) || p + 1 > end)
		goto too_big;
	*p++ = SM_T_NULL;
	if (!sm_str_put(&p, end, "x-example-authorization", 23) || p + 1 > end)
		goto too_big;
	*p++ = SM_T_NULL;
	for (i = 0; i < nxargs; i++)
		if (!sm_str_put(&p, end, xarg_name[i], strlen(xarg_name[i])) ||
		    !sm_tstr_put(&p, end, xarg_val[i], strlen(xarg_val[i])))
			goto too_big;
	c->wlen += sm_frame_end(b, p);
	c->sent++;
	return 1;
too_big:
	fprintf(stderr, "spop-load: NOTIFY does not fit in %u bytes\n", c->max_frame);
	exit(1);
}

/* Counts the outcome carried by an ACK's set-var actions. */
static void on_ack(const struct sm_frame *f)
{
	const uint8_t *p = f->payload;

	while (p + 2 <= f->end) {
		unsigned type = p[0], nargs = p[1];
		const char *name;
		size_t nlen;
		struct sm_data d;

		p += 2;
		if ((type != 1 && type != 2) || p >= f->end)
			break;
		p++;    /* scope */
		if (sm_str_get(&p, f->end, &name, &nlen) != 1)
			break;
		if (type == 2 || nargs < 3)
			continue;
		if (sm_data_get(&p, f->end, &d) != 1)
			break;
		if (nlen == 7 && memcmp(name, "outcome", 7) == 0 && d.type == SM_T_STR) {
			if (d.len == 5 && memcmp(d.s, "allow", 5) == 0)
				n_allow++;
			else if (d.len == 4 && memcmp(d.s, "deny", 4) == 0)
				n_deny++;
			else if (d.len == 5 && memcmp(d.s, "error", 5) == 0)
				n_error++;
			else
				n_other++;
			return;
		}
	}
	n_other++;
}

/* Returns -1 when the connection must close. */
static int on_read(struct lconn *c)
{
	size_t off = 0;

	for (;;) {
		struct sm_frame f;
		int r = sm_frame_get(c->rbuf + off, c->rlen - off, BUF_SIZE - 4, &f);

		if (r == 0)
			break;
		if (r < 0) {
			fprintf(stderr, "spop-load: malformed frame from agent\n");
			return -1;
		}
		off += f.size;
		if (f.type == SM_AGENT_HELLO && c->state == 0) {
			const uint8_t *p = f.payload;

			while (p < f.end) {
				const char *k;
				size_t kl;
				struct sm_data d;

				if (sm_str_get(&p, f.end, &k, &kl) != 1 || sm_data_get(&p, f.end, &d) != 1)
					return -1;
				if (kl == 14 && memcmp(k, "max-frame-size", 14) == 0)
					c->max_frame = (uint32_t)d.u;
			}
			c->state = 1;
		} else if (f.type == SM_ACK) {
			c->acked++;
			on_ack(&f);
		} else if (f.type == SM_AGENT_DISCON) {
			if (c->state != 2) {
				const uint8_t *p = f.payload;
				uint64_t st = 0;

				while (p < f.end) {
					const char *k;
					size_t kl;
					struct sm_data d;

					if (sm_str_get(&p, f.end, &k, &kl) != 1 ||
					    sm_data_get(&p, f.end, &d) != 1)
						break;
					if (kl == 11 && memcmp(k, "status-code", 11) == 0)
						st = d.u;
				}
				fprintf(stderr, "spop-load: agent disconnected, status %llu\n",
				        (unsigned long long)st);
			}
			return -1;
		}
	}
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *addr_s = "127.0.0.1:12345";
	uint64_t n = 1000, window = 20;
	int nconns = 1, opt, i, open_conns;
	double timeout = 60, t0, t1;
	struct sockaddr_in sa;
	char host[256];
	const char *colon;
	struct lconn *conns;
	struct pollfd pfd[MAX_CONNS];
	uint64_t acked = 0;

	while ((opt = getopt(argc, argv, "a:n:w:c:m:k:u:M:A:T:s:h")) != -1) {
		switch (opt) {
		case 'a': addr_s = optarg; break;
		case 'n': n = strtoull(optarg, NULL, 10); break;
		case 'w': window = strtoull(optarg, NULL, 10); break;
		case 'c': nconns = atoi(optarg); break;
		case 'm': opt_unique = strcmp(optarg, "unique") == 0; break;
		case 'k': opt_cookie = optarg; break;
		case 'u': opt_uri = optarg; break;
		case 'M': opt_msg = optarg; break;
		case 'T': timeout = atof(optarg); break;
		case 's': opt_start = strtoull(optarg, NULL, 10); break;
		case 'A': {
			char *eq = strchr(optarg, '=');

			if (!eq || nxargs == MAX_XARGS) {
				fprintf(stderr, "spop-load: bad -A %s\n", optarg);
				return 1;
			}
			*eq = 0;
			xarg_name[nxargs] = optarg;
			xarg_val[nxargs++] = eq + 1;
			break;
		}
		default:
			fprintf(stderr, "usage: %s [-a host:port] [-n notifies] [-w window] [-c conns]\n"
			        "  [-m fixed|unique] [-k cookie] [-u uri] [-M message] [-A name=value]\n"
			        "  [-T timeout_s] [-s start_index]\n", argv[0]);
			return opt == 'h' ? 0 : 1;
		}
	}
	colon = strrchr(addr_s, ':');
	if (!colon || (size_t)(colon - addr_s) >= sizeof(host) || nconns < 1 ||
	    nconns > MAX_CONNS || window < 1) {
		fprintf(stderr, "spop-load: bad -a, -c or -w\n");
		return 1;
	}
	memcpy(host, addr_s, (size_t)(colon - addr_s));
	host[colon - addr_s] = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "spop-load: bad address %s\n", host);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);

	conns = calloc((size_t)nconns, sizeof(*conns));
	t0 = now_s();
	for (i = 0; i < nconns; i++) {
		struct lconn *c = &conns[i];
		int one = 1;

		c->quota = n / (uint64_t)nconns + ((uint64_t)i < n % (uint64_t)nconns);
		c->next_sid = 1;
		c->max_frame = 16380;
		c->rbuf = malloc(BUF_SIZE);
		c->wbuf = malloc(BUF_SIZE);
		if (!c->rbuf || !c->wbuf)
			die("malloc");
		c->fd = socket(AF_INET, SOCK_STREAM, 0);
		if (c->fd == -1)
			die("socket");
		if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
			die("connect");
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		queue_hello(c);
	}
	open_conns = nconns;

	while (open_conns > 0) {
		int r;

		if (now_s() - t0 > timeout) {
			fprintf(stderr, "spop-load: timeout\n");
			break;
		}
		for (i = 0; i < nconns; i++) {
			struct lconn *c = &conns[i];

			pfd[i].fd = c->state == 3 ? -1 : c->fd;
			pfd[i].events = POLLIN;
			if (c->state == 1) {
				while (c->sent < c->quota && c->sent - c->acked < window)
					if (!queue_notify(c))
						break;
				if (c->acked == c->quota)
					queue_disconnect(c);
			}
			if (c->woff < c->wlen)
				pfd[i].events |= POLLOUT;
		}
		r = poll(pfd, (nfds_t)nconns, 200);
		if (r == -1 && errno != EINTR)
			die("poll");
		for (i = 0; i < nconns && r > 0; i++) {
			struct lconn *c = &conns[i];

			if (c->state == 3 || !pfd[i].revents)
				continue;
			if (pfd[i].revents & POLLOUT) {
				ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);

				if (w > 0)
					c->woff += (size_t)w;
				else if (w == -1 && errno != EAGAIN && errno != EINTR)
					goto close_it;
			}
			if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) {
				ssize_t rd = recv(c->fd, c->rbuf + c->rlen, BUF_SIZE - c->rlen, 0);

				if (rd <= 0) {
					if (rd == -1 && (errno == EAGAIN || errno == EINTR))
						continue;
					goto close_it;
				}
				c->rlen += (size_t)rd;
				if (on_read(c) < 0)
					goto close_it;
			}
			continue;
close_it:
			close(c->fd);
			c->state = 3;
			open_conns--;
		}
	}
	t1 = now_s();
	for (i = 0; i < nconns; i++)
		acked += conns[i].acked;
	printf("notifies=%llu acks=%llu allow=%llu deny=%llu error=%llu other=%llu "
	       "seconds=%.3f rate=%.0f\n",
	       (unsigned long long)n, (unsigned long long)acked,
	       (unsigned long long)n_allow, (unsigned long long)n_deny,
	       (unsigned long long)n_error, (unsigned long long)n_other,
	       t1 - t0, t1 > t0 ? (double)acked / (t1 - t0) : 0.0);
	return acked == n ? 0 : 1;
}
