/*
 * null-agent.c: a SPOP agent that answers every NOTIFY at once with one
 * constant ACK, for the "SPOE limit" scenario of make bench: the cost of
 * HAProxy's SPOE filter with an agent that does (almost) nothing.
 *
 * The ACK sets what spoa-auth sets on an allowed request:
 *   txn.<prefix>.status = 200, .outcome = "allow", .token = <fixed token>
 * so HAProxy applies the same variables as with the real agent.
 *
 * SPOP: HELLO with version "2.0", max-frame-size = min(HAProxy's, 16380),
 * capabilities "pipelining"; health-check HELLO answered then closed; NOTIFY
 * -> ACK echoing the SID/FID bytes; HAPROXY-DISCONNECT -> AGENT-DISCONNECT 0
 * then close; anything malformed -> close. Every frame is written whole in
 * one send() (several ACKs may share one send()).
 *
 * One epoll loop per thread, each with its own SO_REUSEPORT listener.
 *
 * usage: null-agent [-l host:port] [-t threads] [-s token_bytes]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "spop-mini.h"

#define OWN_MAX_FRAME   16380u
#define PRE_HELLO_MAX   65536u
#define RBUF_SIZE       (PRE_HELLO_MAX + 4)

struct conn {
	int fd;
	int hello_done;
	int close_after_flush;
	uint32_t max_frame;
	uint8_t *rbuf;                  /* owned, RBUF_SIZE bytes */
	size_t rlen;
	uint8_t *wbuf;                  /* owned, grows */
	size_t wlen, woff, wcap;
	int want_out;
};

static struct sockaddr_in listen_addr;
static uint8_t ack_actions[4096];       /* pre-encoded ACK payload */
static size_t ack_actions_len;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void build_actions(size_t token_bytes)
{
	uint8_t *p = ack_actions, *end = ack_actions + sizeof(ack_actions);
	char token[2048];
	size_t i;

	if (token_bytes > sizeof(token))
		token_bytes = sizeof(token);
	for (i = 0; i < token_bytes; i++)
		token[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[i % 36];

	/* set-var txn status (INT32) 200 */
	*p++ = 1; *p++ = 3; *p++ = SM_SCOPE_TXN;
	sm_str_put(&p, end, "status", 6);
	*p++ = SM_T_INT32;
	sm_varint_put(&p, end, 200);
	/* set-var txn outcome "allow" */
	*p++ = 1; *p++ = 3; *p++ = SM_SCOPE_TXN;
	sm_str_put(&p, end, "outcome", 7);
	sm_tstr_put(&p, end, "allow", 5);
	/* set-var txn token <token> */
	*p++ = 1; *p++ = 3; *p++ = SM_SCOPE_TXN;
	sm_str_put(&p, end, "token", 5);
	sm_tstr_put(&p, end, token, token_bytes);
	ack_actions_len = (size_t)(p - ack_actions);
}

/* Reserves <n> bytes at the end of the write buffer; returns the place. */
static uint8_t *wbuf_reserve(struct conn *c, size_t n)
{
	if (c->woff && c->woff == c->wlen)
		c->woff = c->wlen = 0;
	if (c->wcap - c->wlen < n) {
		size_t cap = c->wcap ? c->wcap : 16384;

		while (cap - c->wlen < n)
			cap *= 2;
		c->wbuf = realloc(c->wbuf, cap);
		if (!c->wbuf)
			die("realloc");
		c->wcap = cap;
	}
	return c->wbuf + c->wlen;
}

static void send_hello(struct conn *c, uint32_t max_frame)
{
	static const uint8_t zero_ids[2] = { 0, 0 };
	uint8_t *b = wbuf_reserve(c, 256), *end = b + 256, *p;

	p = sm_frame_begin(b, end, SM_AGENT_HELLO, zero_ids, 2);
	sm_str_put(&p, end, "version", 7);
	sm_tstr_put(&p, end, "2.0", 3);
	sm_str_put(&p, end, "max-frame-size", 14);
	sm_tuint_put(&p, end, max_frame);
	sm_str_put(&p, end, "capabilities", 12);
	sm_tstr_put(&p, end, "pipelining", 10);
	c->wlen += sm_frame_end(b, p);
}

static void send_disconnect(struct conn *c, unsigned status, const char *msg)
{
	static const uint8_t zero_ids[2] = { 0, 0 };
	uint8_t *b = wbuf_reserve(c, 512), *end = b + 512, *p;

	p = sm_frame_begin(b, end, SM_AGENT_DISCON, zero_ids, 2);
	sm_str_put(&p, end, "status-code", 11);
	sm_tuint_put(&p, end, status);
	sm_str_put(&p, end, "message", 7);
	sm_tstr_put(&p, end, msg, strlen(msg));
	c->wlen += sm_frame_end(b, p);
	c->close_after_flush = 1;
}

static void send_ack(struct conn *c, const struct sm_frame *f)
{
	size_t n = 9 + f->ids_len + ack_actions_len;
	uint8_t *b = wbuf_reserve(c, n), *p;

	if (n - 4 > c->max_frame) {
		send_disconnect(c, 3, "ack too big");
		return;
	}
	p = sm_frame_begin(b, b + n, SM_ACK, f->ids_raw, f->ids_len);
	memcpy(p, ack_actions, ack_actions_len);
	c->wlen += sm_frame_end(b, p + ack_actions_len);
}

/* Handles a HAPROXY-HELLO: returns 0, or -1 to drop the connection. */
static int on_hello(struct conn *c, const struct sm_frame *f)
{
	const uint8_t *p = f->payload;
	uint64_t hap_max = 0;
	int healthcheck = 0, has_version = 0;

	while (p < f->end) {
		const char *k;
		size_t klen;
		struct sm_data d;

		if (sm_str_get(&p, f->end, &k, &klen) != 1 || sm_data_get(&p, f->end, &d) != 1)
			return -1;
		if (klen == 14 && memcmp(k, "max-frame-size", 14) == 0)
			hap_max = d.u;
		else if (klen == 11 && memcmp(k, "healthcheck", 11) == 0)
			healthcheck = d.type == SM_T_BOOL && d.u;
		else if (klen == 18 && memcmp(k, "supported-versions", 18) == 0)
			has_version = d.type == SM_T_STR && memmem(d.s, d.len, "2.0", 3);
	}
	if (!has_version) {
		send_disconnect(c, 8, "unsupported version");
		return 0;
	}
	if (hap_max < 256) {
		send_disconnect(c, 9, "bad max-frame-size");
		return 0;
	}
	c->max_frame = hap_max < OWN_MAX_FRAME ? (uint32_t)hap_max : OWN_MAX_FRAME;
	c->hello_done = 1;
	send_hello(c, c->max_frame);
	if (healthcheck)
		c->close_after_flush = 1;
	return 0;
}

/* Parses every whole frame in the read buffer. Returns -1 to drop. */
static int on_frames(struct conn *c)
{
	size_t off = 0;

	while (!c->close_after_flush) {
		struct sm_frame f;
		int r = sm_frame_get(c->rbuf + off, c->rlen - off,
		                     c->hello_done ? c->max_frame : PRE_HELLO_MAX, &f);

		if (r == 0)
			break;
		if (r < 0 || !(f.flags & 1))
			return -1;
		off += f.size;
		switch (f.type) {
		case SM_HAPROXY_HELLO:
			if (c->hello_done || on_hello(c, &f) < 0)
				return -1;
			break;
		case SM_NOTIFY:
			if (!c->hello_done)
				return -1;
			send_ack(c, &f);
			break;
		case SM_HAPROXY_DISCON:
			send_disconnect(c, 0, "");
			break;
		default:
			break;
		}
	}
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	return 0;
}

/* Sends what is queued. Returns 1 if all was sent, 0 if some is left, -1 on error. */
static int flush(struct conn *c)
{
	while (c->woff < c->wlen) {
		ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);

		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		c->woff += (size_t)n;
	}
	c->woff = c->wlen = 0;
	return 1;
}

static void conn_free(int ep, struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->rbuf); c->rbuf = NULL;
	free(c->wbuf); c->wbuf = NULL;
	free(c);
}

static void set_out(int ep, struct conn *c, int want)
{
	struct epoll_event ev;

	if (c->want_out == want)
		return;
	ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
	ev.data.ptr = c;
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->want_out = want;
}

static void on_conn_event(int ep, struct conn *c, uint32_t events)
{
	int r;

	if (events & EPOLLIN) {
		for (;;) {
			ssize_t n = recv(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen, 0);

			if (n == 0)
				goto drop;
			if (n == -1) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				goto drop;
			}
			c->rlen += (size_t)n;
			if (on_frames(c) < 0)
				goto drop;
			if (c->rlen < RBUF_SIZE && (size_t)n < 16384)
				break;
		}
	} else if (events & (EPOLLERR | EPOLLHUP)) {
		goto drop;
	}
	r = flush(c);
	if (r < 0)
		goto drop;
	if (r == 1 && c->close_after_flush)
		goto drop;
	set_out(ep, c, r == 0);
	return;
drop:
	conn_free(ep, c);
}

static void *worker(void *arg)
{
	int one = 1, lfd, ep;
	struct epoll_event ev, evs[256];

	(void)arg;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (lfd == -1)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&listen_addr, sizeof(listen_addr)) == -1)
		die("bind");
	if (listen(lfd, 1024) == -1)
		die("listen");
	ep = epoll_create1(0);
	if (ep == -1)
		die("epoll_create1");
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

	for (;;) {
		int i, n = epoll_wait(ep, evs, 256, -1);

		if (n == -1) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (c) {
				on_conn_event(ep, c, evs[i].events);
				continue;
			}
			for (;;) {
				int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);

				if (fd == -1)
					break;
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				c = calloc(1, sizeof(*c));
				if (!c || !(c->rbuf = malloc(RBUF_SIZE)))
					die("malloc");
				c->fd = fd;
				ev.events = EPOLLIN;
				ev.data.ptr = c;
				epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
			}
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *listen_s = "127.0.0.1:12346";
	int threads = 1, opt, i;
	size_t token_bytes = 300;
	char host[256];
	const char *colon;
	pthread_t *tids;

	while ((opt = getopt(argc, argv, "l:t:s:h")) != -1) {
		switch (opt) {
		case 'l': listen_s = optarg; break;
		case 't': threads = atoi(optarg); break;
		case 's': token_bytes = (size_t)atol(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-l host:port] [-t threads] [-s token_bytes]\n", argv[0]);
			return opt == 'h' ? 0 : 1;
		}
	}
	colon = strrchr(listen_s, ':');
	if (!colon || (size_t)(colon - listen_s) >= sizeof(host) || threads < 1) {
		fprintf(stderr, "null-agent: bad -l or -t\n");
		return 1;
	}
	memcpy(host, listen_s, (size_t)(colon - listen_s));
	host[colon - listen_s] = 0;
	listen_addr.sin_family = AF_INET;
	listen_addr.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &listen_addr.sin_addr) != 1) {
		fprintf(stderr, "null-agent: bad address %s\n", host);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	build_actions(token_bytes);

	tids = calloc((size_t)threads, sizeof(*tids));
	for (i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, worker, NULL) != 0)
			die("pthread_create");
	for (i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	return 0;
}
