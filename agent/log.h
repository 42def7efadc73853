/*
 * log.h: leveled logging to stderr, one line per call, with rate limiting.
 *
 * Every line carries a timestamp, the level and the calling thread's name, and
 * is written with a single write(2) so lines from several threads never mix.
 * This module never sees a credential: callers must not pass cookies, tokens,
 * Authorization or identity header values, bodies or Set-Cookie values, at any
 * level. The access line carries a short hash of the credentials instead.
 */
#ifndef SPOA_LOG_H
#define SPOA_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_WARN = 1,
	LOG_LVL_INFO = 2,
	LOG_LVL_ACCESS = 3,
	LOG_LVL_DEBUG = 4,
	LOG_LVL_ENTRIES  /* count, not a level */
};

/* One rate-limit key: a call site declares one `static struct log_rl`.
 * Zero-initialised is the valid initial state. Fields are owned by log.c and
 * protected by its lock, so one key may be shared by every thread. */
struct log_rl {
	time_t window;          /* second the current window started */
	unsigned count;         /* lines printed in that window */
	unsigned long suppressed;
};

/* Lines printed per key per second by log_ratelimited(). */
#define LOG_RL_BURST 5

/* Sets the maximum level printed (thread-safe; read with relaxed atomics). */
void log_set_level(enum log_level lvl);

/* Returns 1 if a line at <lvl> would be printed. Cheap: use it to skip
 * building expensive arguments. */
int log_enabled(enum log_level lvl);

/* Parses "error", "warn", "info", "access", "debug". Returns the level, or -1. */
int log_level_parse(const char *s);

/* Name of <lvl> ("info"...). Never NULL. */
const char *log_level_to_str(enum log_level lvl);

/* Names the calling thread in its log lines ("main", "w0"...). <name> is
 * copied (truncated to 15 bytes). */
void log_set_thread_name(const char *name);

/* Prints one line at <lvl> if enabled. The format must not carry secrets. */
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Like log_msg(), but at most LOG_RL_BURST lines per second for key <rl>; the
 * first line of a later window reports how many were suppressed. */
void log_ratelimited(enum log_level lvl, struct log_rl *rl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_error(...)  log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)   log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)   log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_access(...) log_msg(LOG_LVL_ACCESS, __VA_ARGS__)
#define log_debug(...)  do { if (log_enabled(LOG_LVL_DEBUG)) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

#endif /* SPOA_LOG_H */
