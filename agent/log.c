/*
 * log.c: leveled, rate-limited logging to stderr.
 *
 * Formatting happens into a stack buffer and the line goes out in one
 * write(2): stderr is shared by all threads and stdio would interleave. The
 * level is a relaxed atomic so a reload can change it while workers log.
 * Never logs anything by itself; it is the callers' job not to pass secrets.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX 1024

static atomic_int log_level = LOG_LVL_INFO;
static _Thread_local char log_thread[16] = "main";
static pthread_mutex_t log_rl_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_names[LOG_LVL_ENTRIES] = {
	[LOG_LVL_ERROR] = "error",
	[LOG_LVL_WARN] = "warn",
	[LOG_LVL_INFO] = "info",
	[LOG_LVL_ACCESS] = "access",
	[LOG_LVL_DEBUG] = "debug",
};

void log_set_level(enum log_level lvl)
{
	atomic_store_explicit(&log_level, (int)lvl, memory_order_relaxed);
}

int log_enabled(enum log_level lvl)
{
	return (int)lvl <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

int log_level_parse(const char *s)
{
	for (int i = 0; i < LOG_LVL_ENTRIES; i++)
		if (strcmp(s, log_names[i]) == 0)
			return i;
	return -1;
}

const char *log_level_to_str(enum log_level lvl)
{
	if ((int)lvl < 0 || lvl >= LOG_LVL_ENTRIES)
		return "?";
	return log_names[lvl];
}

void log_set_thread_name(const char *name)
{
	snprintf(log_thread, sizeof(log_thread), "%s", name);
}

/* Formats and writes one line: timestamp, level, thread, message. */
static void log_vline(enum log_level lvl, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
static void log_vline(enum log_level lvl, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	struct timeval tv;
	struct tm tm;
	size_t n;
	int r;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	r = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
	             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	             tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
	             log_level_to_str(lvl), log_thread);
	n = r < 0 ? 0 : (size_t)r;
	if (n < sizeof(line)) {
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (r > 0)
			n += (size_t)r;
	}
	/* Truncate over-long lines but always end with one newline. */
	if (n > sizeof(line) - 1)
		n = sizeof(line) - 1;
	line[n++] = '\n';
	/* One write per line; a short write to stderr is not worth retrying. */
	while (write(STDERR_FILENO, line, n) < 0 && errno == EINTR)
		;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	log_vline(lvl, fmt, ap);
	va_end(ap);
}

void log_ratelimited(enum log_level lvl, struct log_rl *rl, const char *fmt, ...)
{
	unsigned long suppressed = 0;
	time_t now = time(NULL);
	int print;
	va_list ap;

	if (!log_enabled(lvl))
		return;
	pthread_mutex_lock(&log_rl_lock);
	if (rl->window != now) {
		suppressed = rl->suppressed;
		rl->window = now;
		rl->count = 0;
		rl->suppressed = 0;
	}
	print = rl->count < LOG_RL_BURST;
	if (print)
		rl->count++;
	else
		rl->suppressed++;
	pthread_mutex_unlock(&log_rl_lock);

	/* The format (never the values) says which messages were dropped. */
	if (suppressed)
		log_msg(lvl, "suppressed %lu similar messages: \"%s\"", suppressed, fmt);
	if (!print)
		return;
	va_start(ap, fmt);
	log_vline(lvl, fmt, ap);
	va_end(ap);
}
