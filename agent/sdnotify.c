/*
 * sdnotify.c: systemd readiness notification without libsystemd.
 *
 * One datagram per call to $NOTIFY_SOCKET through a fresh SOCK_DGRAM |
 * SOCK_NONBLOCK | SOCK_CLOEXEC socket, sent with MSG_DONTWAIT | MSG_NOSIGNAL.
 * systemd identifies the sender by the kernel-attached credentials (it sets
 * SO_PASSCRED on its side), whose pid is the process id, so any thread of the
 * main process may notify under the default NotifyAccess=main.
 */
#include "sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/*
 * Fills <sun>/<len> from the NOTIFY_SOCKET value <name>: "/path" or "@abstract".
 * Returns 0, or -1 with errno EINVAL (other forms, e.g. relative paths or
 * systemd's newer "vsock:" addresses, which this agent does not support) or
 * ENAMETOOLONG.
 */
static int sdnotify_addr(const char *name, struct sockaddr_un *sun, socklen_t *len)
{
	size_t n = strlen(name);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (name[0] == '@') {
		/* Abstract: NUL then the name, no terminator; the length counts. */
		if (n > sizeof(sun->sun_path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(sun->sun_path + 1, name + 1, n - 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		return 0;
	}
	if (name[0] == '/') {
		if (n >= sizeof(sun->sun_path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(sun->sun_path, name, n + 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
		return 0;
	}
	errno = EINVAL;
	return -1;
}

int sdnotify(const char *state)
{
	struct sockaddr_un sun;
	socklen_t sun_len;
	const char *name;
	size_t len;
	ssize_t sent;
	int fd, saved;

	if (state == NULL || state[0] == '\0') {
		errno = EINVAL;
		return -1;
	}
	name = getenv("NOTIFY_SOCKET");
	if (name == NULL || name[0] == '\0')
		return 0;
	if (sdnotify_addr(name, &sun, &sun_len) < 0)
		return -1;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	len = strlen(state);
	do {
		sent = sendto(fd, state, len, MSG_DONTWAIT | MSG_NOSIGNAL,
		              (const struct sockaddr *)&sun, sun_len);
	} while (sent < 0 && errno == EINTR);
	if (sent < 0)
		goto fail;
	if ((size_t)sent != len) {
		/* Cannot happen for a datagram; be explicit rather than silent. */
		errno = EMSGSIZE;
		goto fail;
	}
	close(fd);
	return 0;

fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

int sdnotify_reloading(void)
{
	char buf[64];
	struct timespec ts;
	unsigned long long usec;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		return -1;
	usec = (unsigned long long)ts.tv_sec * 1000000ull +
	       (unsigned long long)ts.tv_nsec / 1000ull;
	snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu", usec);
	return sdnotify(buf);
}

int sdnotify_status(const char *fmt, ...)
{
	char buf[SDNOTIFY_MAX + 1];
	va_list ap;
	int n;

	if (fmt == NULL) {
		errno = EINVAL;
		return -1;
	}
	memcpy(buf, "STATUS=", 7);
	va_start(ap, fmt);
	n = vsnprintf(buf + 7, sizeof(buf) - 7, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof(buf) - 7) {
		errno = EMSGSIZE;
		return -1;
	}
	return sdnotify(buf);
}
