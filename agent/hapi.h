/*
 * hapi.h: a small client of HAProxy's runtime API (the "stats socket"), for
 * the L1 decision cache that HAProxy keeps in a map (docs/cache.md, "L1").
 *
 *   hapi_l1_cred()        the L1's session hash, computed exactly as
 *                         haproxy.cfg does: uppercase hex SHA-256 of
 *                         HAPI_L1_DOMAIN followed by the cookie bytes sent
 *                         to the agent ("name=value");
 *   hapi_cmd_*()          one command line, names checked so that no value
 *                         can smuggle a second command (';') or a line;
 *   hapi_reply_ok()       whether a reply is the empty success answer;
 *   hapi_exec()           one connection, one command, the reply to EOF,
 *                         bounded by a timeout. Blocking: for the admin
 *                         thread only, never a worker loop.
 * Never logs, and never sends a credential: only its SHA-256 (the map and
 * the tombstone table hold that, not the cookie).
 */
#ifndef SPOA_HAPI_H
#define SPOA_HAPI_H

#include <stddef.h>

/* Domain-separation prefix of the L1 hashes; haproxy.cfg uses the same. */
#define HAPI_L1_DOMAIN "spoa-l1-v1|"
#define HAPI_L1_CRED_HEX 64          /* hex chars of the session hash */
#define HAPI_NAME_MAX 256            /* longest map/table name accepted */
#define HAPI_CMD_MAX (HAPI_NAME_MAX + HAPI_L1_CRED_HEX + 64)

/* 1 if <v>/<len> is one name=value cookie pair (a non-empty name, no ';'):
 * the form of the SPOE `cookie` argument haproxy.cfg sends for an L1
 * candidate, "<L1_COOKIE>=<value>", and so the only bytes an L1 key is
 * ever hashed from. The one copy of that rule (the exchange's L1 check, the
 * logout's and the admin endpoint's tombstones). */
int hapi_l1_cookie_ok(const char *v, size_t len);

/* Writes the session hash of <cookie>/<len> (the exact bytes of the SPOE
 * `cookie` argument) into <out> (64 uppercase hex chars + NUL). Returns 0,
 * or -1 if OpenSSL failed. */
int hapi_l1_cred(const char *cookie, size_t len, char out[HAPI_L1_CRED_HEX + 1]);

/* 1 if <name> may be a map or table name on a command line: 1 to
 * HAPI_NAME_MAX visible ASCII characters, none of ';', '\\', '"', '\''.
 * Else 0. */
int hapi_name_ok(const char *name);

/* "set table <table> key <cred> data.gpt0 1\n" into <buf> (<cap> bytes).
 * <cred> must be HAPI_L1_CRED_HEX hex chars. Returns the length, or -1 on a
 * bad name or hash, or if it does not fit. */
int hapi_cmd_tombstone(char *buf, size_t cap, const char *table, const char *cred);

/* "clear map <map>\n". Returns the length, or -1 (bad name, no room). */
int hapi_cmd_clear_map(char *buf, size_t cap, const char *map);

/* 1 if the <len> bytes at <reply> are HAProxy's answer to a command that
 * succeeded silently (nothing but whitespace), else 0. */
int hapi_reply_ok(const char *reply, size_t len);

/* 1 if <addr> names a runtime socket hapi_exec() can reach: an absolute
 * unix path (shorter than sun_path), or numeric "IPv4:port" / "[IPv6]:port".
 * Else 0. */
int hapi_addr_ok(const char *addr);

/* Connects to <addr> (see hapi_addr_ok()), writes <cmd>, reads the reply
 * until HAProxy closes (at most <cap> - 1 bytes kept in <reply>, NUL
 * terminated; *<rlen> its length), everything within <timeout_ms>. Returns
 * 0 if the exchange completed and hapi_reply_ok(), else -1 with a reason in
 * <err> (never the command: it may name a hash). Blocks the calling thread. */
int hapi_exec(const char *addr, const char *cmd, int timeout_ms, char *reply, size_t cap,
              size_t *rlen, char *err, size_t errlen);

/* Counters for /metrics: commands that succeeded and that failed. */
struct hapi_stats {
	unsigned long long ok, failed;
};
void hapi_stats_get(struct hapi_stats *st);
/* Counts one result (0 = ok). Any thread. */
void hapi_count(int rc);

#endif /* SPOA_HAPI_H */
