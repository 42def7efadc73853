/*
 * hapi.c: HAProxy runtime API client for the L1 cache (hapi.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <openssl/evp.h>

#include "hapi.h"
#include "hex.h"

static atomic_ullong hapi_n_ok, hapi_n_failed;

int hapi_l1_cookie_ok(const char *v, size_t len)
{
	return len > 1 && v[0] != '=' && memchr(v, '=', len) && !memchr(v, ';', len);
}

int hapi_l1_cred(const char *cookie, size_t len, char out[HAPI_L1_CRED_HEX + 1])
{
	unsigned char md[32];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (!ctx)
		return -1;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, HAPI_L1_DOMAIN, sizeof(HAPI_L1_DOMAIN) - 1) == 1 &&
	     EVP_DigestUpdate(ctx, cookie, len) == 1 &&
	     EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == sizeof(md);
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return -1;
	hex_encode(out, md, sizeof(md), 1);
	return 0;
}

int hapi_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > HAPI_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];

		if (ch <= ' ' || ch >= 0x7f || ch == ';' || ch == '\\' || ch == '"' || ch == '\'')
			return 0;
	}
	return 1;
}

static int hapi_hex_ok(const char *s)
{
	size_t n = strlen(s);

	if (n != HAPI_L1_CRED_HEX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return 0;
	return 1;
}

int hapi_cmd_tombstone(char *buf, size_t cap, const char *table, const char *cred)
{
	int n;

	if (!hapi_name_ok(table) || !hapi_hex_ok(cred))
		return -1;
	n = snprintf(buf, cap, "set table %s key %s data.gpt0 1\n", table, cred);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

int hapi_cmd_clear_map(char *buf, size_t cap, const char *map)
{
	int n;

	if (!hapi_name_ok(map))
		return -1;
	n = snprintf(buf, cap, "clear map %s\n", map);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

int hapi_reply_ok(const char *reply, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (reply[i] != ' ' && reply[i] != '\n' && reply[i] != '\r' && reply[i] != '\t')
			return 0;
	return 1;
}

/* Fills <ss> from <addr>; returns its length, or 0 if <addr> is not usable. */
static socklen_t hapi_addr_parse(const char *addr, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (addr[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;

		if (strlen(addr) >= sizeof(un->sun_path))
			return 0;
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, addr);
		return (socklen_t)sizeof(*un);
	} else {
		char host[INET6_ADDRSTRLEN + 1];
		const char *colon, *h = addr;
		size_t hlen;
		char *end;
		unsigned long port;

		if (addr[0] == '[') {
			const char *close = strchr(addr, ']');

			if (!close || close[1] != ':')
				return 0;
			h = addr + 1;
			hlen = (size_t)(close - h);
			colon = close + 1;
		} else {
			colon = strrchr(addr, ':');
			if (!colon)
				return 0;
			hlen = (size_t)(colon - addr);
		}
		if (hlen == 0 || hlen >= sizeof(host))
			return 0;
		memcpy(host, h, hlen);
		host[hlen] = 0;
		errno = 0;
		port = strtoul(colon + 1, &end, 10);
		if (errno || *end || end == colon + 1 || port == 0 || port > 65535)
			return 0;
		if (addr[0] == '[') {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

			if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
				return 0;
			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons((uint16_t)port);
			return (socklen_t)sizeof(*s6);
		} else {
			struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

			if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
				return 0;
			s4->sin_family = AF_INET;
			s4->sin_port = htons((uint16_t)port);
			return (socklen_t)sizeof(*s4);
		}
	}
}

int hapi_addr_ok(const char *addr)
{
	struct sockaddr_storage ss;

	return hapi_addr_parse(addr, &ss) != 0;
}

static long long hapi_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for <events> on <fd> until <deadline> (monotonic ms). 0 ok, -1 timeout/error. */
static int hapi_wait(int fd, short events, long long deadline)
{
	for (;;) {
		struct pollfd pfd = { fd, events, 0 };
		long long left = deadline - hapi_now_ms();
		int r;

		if (left <= 0)
			return -1;
		r = poll(&pfd, 1, (int)left);
		if (r > 0)
			return 0;
		if (r == 0 || errno != EINTR)
			return -1;
	}
}

int hapi_exec(const char *addr, const char *cmd, int timeout_ms, char *reply, size_t cap,
              size_t *rlen, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen = hapi_addr_parse(addr, &ss);
	long long deadline = hapi_now_ms() + timeout_ms;
	size_t off = 0, clen = strlen(cmd);
	int fd = -1, rc = -1;

	*rlen = 0;
	if (cap)
		reply[0] = 0;
	if (!sslen) {
		snprintf(err, errlen, "bad runtime socket address");
		return -1;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto out;
	}
	if (connect(fd, (struct sockaddr *)&ss, sslen) == -1) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (errno != EINPROGRESS && errno != EAGAIN) {
			snprintf(err, errlen, "connect: %s", strerror(errno));
			goto out;
		}
		if (hapi_wait(fd, POLLOUT, deadline) < 0) {
			snprintf(err, errlen, "connect: timed out");
			goto out;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1 || soerr) {
			snprintf(err, errlen, "connect: %s", strerror(soerr ? soerr : errno));
			goto out;
		}
	}
	while (off < clen) {
		ssize_t w = send(fd, cmd + off, clen - off, MSG_NOSIGNAL);

		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		if (w == -1 && errno != EAGAIN && errno != EINTR) {
			snprintf(err, errlen, "write: %s", strerror(errno));
			goto out;
		}
		if (hapi_wait(fd, POLLOUT, deadline) < 0) {
			snprintf(err, errlen, "write: timed out");
			goto out;
		}
	}
	for (;;) {
		char tmp[512];
		ssize_t r = recv(fd, tmp, sizeof(tmp), 0);

		if (r > 0) {
			size_t keep = cap > *rlen + 1 ? cap - *rlen - 1 : 0;

			if (keep > (size_t)r)
				keep = (size_t)r;
			memcpy(reply + *rlen, tmp, keep);
			*rlen += keep;
			reply[*rlen] = 0;
			continue;
		}
		if (r == 0)
			break;
		if (errno != EAGAIN && errno != EINTR) {
			snprintf(err, errlen, "read: %s", strerror(errno));
			goto out;
		}
		if (hapi_wait(fd, POLLIN, deadline) < 0) {
			snprintf(err, errlen, "read: timed out");
			goto out;
		}
	}
	if (!hapi_reply_ok(reply, *rlen)) {
		snprintf(err, errlen, "HAProxy refused the command");
		goto out;
	}
	rc = 0;
out:
	if (fd != -1)
		close(fd);
	return rc;
}

void hapi_count(int rc)
{
	if (rc == 0)
		atomic_fetch_add_explicit(&hapi_n_ok, 1, memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&hapi_n_failed, 1, memory_order_relaxed);
}

void hapi_stats_get(struct hapi_stats *st)
{
	st->ok = atomic_load_explicit(&hapi_n_ok, memory_order_relaxed);
	st->failed = atomic_load_explicit(&hapi_n_failed, memory_order_relaxed);
}
