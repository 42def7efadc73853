/*
 * test_sdnotify.c: sdnotify() against real AF_UNIX datagram sockets, bound to
 * a filesystem path and to an abstract name, as systemd's notify socket is.
 * Also: unset/empty/invalid NOTIFY_SOCKET, absent receiver, over-long names,
 * the RELOADING/STATUS helpers, and that a full receiver queue makes the call
 * fail with EAGAIN instead of blocking.
 */
#include "sdnotify.h"
#include "tap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[64];

/* Binds a non-blocking datagram socket to <name> ("/path" or "@abstract"). */
static int receiver(const char *name)
{
	struct sockaddr_un sun;
	socklen_t len;
	size_t n = strlen(name);
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (n >= sizeof(sun.sun_path))
		return -1;
	if (name[0] == '@') {
		memcpy(sun.sun_path + 1, name + 1, n - 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		memcpy(sun.sun_path, name, n + 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sun, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Receives one datagram into <buf> (NUL-terminated); returns its length or -1. */
static ssize_t recv_one(int fd, char *buf, size_t size)
{
	ssize_t n = recv(fd, buf, size - 1, MSG_DONTWAIT);

	if (n >= 0)
		buf[n] = '\0';
	return n;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void test_unset(void)
{
	unsetenv("NOTIFY_SOCKET");
	is_int(sdnotify("READY=1"), 0, "unset NOTIFY_SOCKET: 0, nothing to do");
	setenv("NOTIFY_SOCKET", "", 1);
	is_int(sdnotify("READY=1"), 0, "empty NOTIFY_SOCKET: 0, nothing to do");
	errno = 0;
	ok(sdnotify(NULL) == -1 && errno == EINVAL, "NULL state: -1 EINVAL");
	errno = 0;
	ok(sdnotify("") == -1 && errno == EINVAL, "empty state: -1 EINVAL");
}

static void test_path(void)
{
	char path[128], buf[256];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/notify", tmpdir);
	fd = receiver(path);
	if (!ok(fd >= 0, "bind path receiver"))
		return;
	setenv("NOTIFY_SOCKET", path, 1);

	is_int(sdnotify("READY=1"), 0, "path: READY=1 sent");
	n = recv_one(fd, buf, sizeof(buf));
	is_mem(buf, n < 0 ? 0 : (size_t)n, "READY=1", 7, "path: READY=1 received as one datagram");

	is_int(sdnotify("STOPPING=1"), 0, "path: STOPPING=1 sent");
	n = recv_one(fd, buf, sizeof(buf));
	is_mem(buf, n < 0 ? 0 : (size_t)n, "STOPPING=1", 10, "path: STOPPING=1 received");

	is_int(sdnotify_status("serving on %s, %d workers", "127.0.0.1:12345", 2), 0,
	       "path: STATUS sent");
	n = recv_one(fd, buf, sizeof(buf));
	ok(n > 0 && strcmp(buf, "STATUS=serving on 127.0.0.1:12345, 2 workers") == 0,
	   "path: STATUS formatted: '%s'", n > 0 ? buf : "");

	{
		uint64_t before = now_usec(), after, got = 0;
		const char *prefix = "RELOADING=1\nMONOTONIC_USEC=";
		char *end = NULL;

		is_int(sdnotify_reloading(), 0, "path: RELOADING sent");
		after = now_usec();
		n = recv_one(fd, buf, sizeof(buf));
		ok(n > 0 && strncmp(buf, prefix, strlen(prefix)) == 0,
		   "path: RELOADING=1 then MONOTONIC_USEC");
		if (n > 0)
			got = strtoull(buf + strlen(prefix), &end, 10);
		ok(end && *end == '\0' && got >= before && got <= after,
		   "path: MONOTONIC_USEC is CLOCK_MONOTONIC now (%llu <= %llu <= %llu)",
		   (unsigned long long)before, (unsigned long long)got,
		   (unsigned long long)after);
	}

	{
		char big[SDNOTIFY_MAX + 16];

		memset(big, 'x', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		errno = 0;
		ok(sdnotify_status("%s", big) == -1 && errno == EMSGSIZE,
		   "STATUS longer than SDNOTIFY_MAX: -1 EMSGSIZE");
		ok(recv_one(fd, buf, sizeof(buf)) < 0, "  and nothing was sent");
	}

	/* Receiver gone: an error, not a crash or a hang. */
	close(fd);
	unlink(path);
	{
		int rc, err;

		errno = 0;
		rc = sdnotify("READY=1");
		err = errno;
		ok(rc == -1 && (err == ENOENT || err == ECONNREFUSED),
		   "path without receiver: -1 ENOENT/ECONNREFUSED (errno %d)", err);
	}
}

static void test_abstract(void)
{
	char name[108], buf[256];
	int fd;
	ssize_t n;

	snprintf(name, sizeof(name), "@spoa-auth-test-sdnotify-%ld-%ld",
	         (long)getpid(), (long)now_usec());
	fd = receiver(name);
	if (!ok(fd >= 0, "bind abstract receiver"))
		return;
	setenv("NOTIFY_SOCKET", name, 1);

	is_int(sdnotify("READY=1\nSTATUS=ready"), 0, "abstract: multi-line state sent");
	n = recv_one(fd, buf, sizeof(buf));
	ok(n > 0 && strcmp(buf, "READY=1\nSTATUS=ready") == 0,
	   "abstract: received intact, no trailing NUL (len %zd)", n);

	/*
	 * Never blocks: with nobody reading, the receiver's queue fills up and
	 * the call fails with EAGAIN instead of waiting.
	 */
	{
		int i, rc = 0, err = 0;
		uint64_t t0 = now_usec();

		for (i = 0; i < 100000; i++) {
			rc = sdnotify("STATUS=filling the queue");
			if (rc < 0) {
				err = errno;
				break;
			}
		}
		ok(rc == -1 && (err == EAGAIN || err == EWOULDBLOCK),
		   "full receiver queue: -1 EAGAIN after %d datagrams", i);
		ok(now_usec() - t0 < 10 * 1000000u, "  without blocking");
	}
	close(fd);

	/* Same name, nobody bound: an error. */
	{
		int rc, err;

		errno = 0;
		rc = sdnotify("READY=1");
		err = errno;
		ok(rc == -1 && err == ECONNREFUSED,
		   "abstract without receiver: -1 ECONNREFUSED (errno %d)", err);
	}
}

static void test_bad_values(void)
{
	char longname[200];

	setenv("NOTIFY_SOCKET", "relative/path", 1);
	errno = 0;
	ok(sdnotify("READY=1") == -1 && errno == EINVAL, "relative path: -1 EINVAL");

	setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
	errno = 0;
	ok(sdnotify("READY=1") == -1 && errno == EINVAL, "vsock address: -1 EINVAL");

	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	longname[0] = '/';
	setenv("NOTIFY_SOCKET", longname, 1);
	errno = 0;
	ok(sdnotify("READY=1") == -1 && errno == ENAMETOOLONG, "long path: -1 ENAMETOOLONG");

	longname[0] = '@';
	setenv("NOTIFY_SOCKET", longname, 1);
	errno = 0;
	ok(sdnotify("READY=1") == -1 && errno == ENAMETOOLONG,
	   "long abstract name: -1 ENAMETOOLONG");

	/* 108 bytes: '@' + 107 chars = NUL + 107 bytes, exactly sun_path. */
	longname[108] = '\0';
	setenv("NOTIFY_SOCKET", longname, 1);
	errno = 0;
	ok(sdnotify("READY=1") == -1 && errno == ECONNREFUSED,
	   "abstract name filling sun_path: accepted, no receiver -> ECONNREFUSED");
}

int main(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/sdnotify.XXXXXX",
	         base && *base && strlen(base) < 32 ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_unset();
	test_path();
	test_abstract();
	test_bad_values();
	unsetenv("NOTIFY_SOCKET");
	rmdir(tmpdir);
	return done_testing();
}
