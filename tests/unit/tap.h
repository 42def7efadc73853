/*
 * tap.h: tiny TAP (Test Anything Protocol) helpers for the unit tests.
 *
 * What it does: numbered "ok N - name" / "not ok N - name" lines, "# " diag
 * lines showing both sides of a failed comparison, a trailing plan "1..N"
 * and a summary line "N passed, M failed".
 *
 * What it never does: abort on a failure, allocate, or keep state beyond the
 * one test program that includes it (every function is static inline, the
 * counters are per translation unit). Include it from exactly one file.
 *
 *   ok(cond, fmt, ...)               any condition, printf-style name
 *   is_int(got, want, name)          integers (compared as long long)
 *   is_mem(got, glen, want, wlen, name)  byte strings, hex dump on mismatch
 *   diag(fmt, ...)                   a "# " comment line
 *   return done_testing();           exit status: 0 if nothing failed
 */
#ifndef SPOA_TAP_H
#define SPOA_TAP_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define TAP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TAP_PRINTF(f, a)
#endif

static unsigned tap_run, tap_failed;

/* Prints a "# " diagnostic line. */
static inline TAP_PRINTF(1, 2) void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
}

/* Records one test result <cond> named by <fmt>; returns <cond>. */
static inline TAP_PRINTF(4, 5) int tap_ok(int cond, const char *file, int line,
                                          const char *fmt, ...)
{
	va_list ap;

	tap_run++;
	if (!cond)
		tap_failed++;
	printf("%sok %u - ", cond ? "" : "not ", tap_run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	if (!cond)
		diag("  failed at %s:%d", file, line);
	fflush(stdout);
	return cond;
}

static inline int tap_is_int(long long got, long long want, const char *file,
                             int line, const char *name)
{
	int r = tap_ok(got == want, file, line, "%s", name);

	if (!r) {
		diag("       got: %lld (0x%llx)", got, (unsigned long long)got);
		diag("  expected: %lld (0x%llx)", want, (unsigned long long)want);
	}
	return r;
}

static inline void tap_hexdump(const char *label, const void *p, size_t len)
{
	const unsigned char *b = p;
	size_t i, shown = len > 512 ? 512 : len;

	printf("# %s (%zu bytes):", label, len);
	if (!p && len) {
		fputs(" (null)\n", stdout);
		return;
	}
	for (i = 0; i < shown; i++)
		printf("%s%02x", i % 32 ? "" : "\n#   ", b[i]);
	printf("%s\n", shown < len ? " ..." : "");
}

static inline int tap_is_mem(const void *got, size_t glen, const void *want,
                             size_t wlen, const char *file, int line, const char *name)
{
	int same = glen == wlen && (glen == 0 || (got && want && memcmp(got, want, glen) == 0));
	int r = tap_ok(same, file, line, "%s", name);

	if (!r) {
		const unsigned char *g = got, *w = want;
		size_t i, n = glen < wlen ? glen : wlen;

		for (i = 0; g && w && i < n && g[i] == w[i]; i++)
			;
		diag("  first difference at offset %zu", i);
		tap_hexdump("     got", got, glen);
		tap_hexdump("expected", want, wlen);
	}
	return r;
}

/* Prints the plan and the summary; returns the process exit status. */
static inline int done_testing(void)
{
	printf("1..%u\n", tap_run);
	printf("%u passed, %u failed\n", tap_run - tap_failed, tap_failed);
	fflush(stdout);
	return tap_failed ? 1 : 0;
}

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, name) \
	tap_is_int((long long)(got), (long long)(want), __FILE__, __LINE__, (name))
#define is_mem(got, glen, want, wlen, name) \
	tap_is_mem((got), (glen), (want), (wlen), __FILE__, __LINE__, (name))

#endif /* SPOA_TAP_H */
