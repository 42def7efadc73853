/*
 * sdnotify.h: systemd readiness notification (Type=notify), without libsystemd.
 *
 * The protocol is one datagram, newline-separated "KEY=VALUE" assignments,
 * sent to the AF_UNIX datagram socket named by $NOTIFY_SOCKET: a filesystem
 * path ("/run/systemd/notify") or, when it starts with '@', an abstract
 * socket name ('@' stands for the leading NUL byte). See sd_notify(3).
 *
 * Every function here is thread-safe (nothing is cached: the environment is
 * read on each call, and the process never modifies NOTIFY_SOCKET), uses a
 * fresh non-blocking socket per call and never blocks: a receiver whose queue
 * is full makes the call fail with EAGAIN instead. No allocation.
 *
 * Return value, for every function: 0 when the datagram was sent or when
 * NOTIFY_SOCKET is unset or empty (not run by systemd: nothing to do); -1 with
 * errno set on error (EINVAL: bad argument or bad NOTIFY_SOCKET value,
 * ENAMETOOLONG: socket name too long, EMSGSIZE: state too long, or the errno
 * of socket(2)/sendto(2)). A failure to notify is never fatal for the agent:
 * callers log it at debug level and carry on.
 */
#ifndef SPOA_SDNOTIFY_H
#define SPOA_SDNOTIFY_H

/* Longest message the formatting helpers build (the raw sdnotify() accepts
 * any length the socket accepts). */
#define SDNOTIFY_MAX 512

/*
 * Sends <state> as is, e.g. "READY=1", "STOPPING=1", "STATUS=draining".
 * <state> must be non-NULL and non-empty (EINVAL otherwise).
 */
int sdnotify(const char *state);

/*
 * Sends "RELOADING=1\nMONOTONIC_USEC=<now>" (CLOCK_MONOTONIC, microseconds),
 * the form systemd >= 253 requires for reload notifications and older
 * versions accept. Follow it with sdnotify("READY=1") once the new
 * configuration is in force.
 */
int sdnotify_reloading(void);

/*
 * Sends "STATUS=<printf-formatted text>" (at most SDNOTIFY_MAX bytes in all,
 * EMSGSIZE beyond): the one-line status `systemctl status` shows.
 */
int sdnotify_status(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

#endif /* SPOA_SDNOTIFY_H */
