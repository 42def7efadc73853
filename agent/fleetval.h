/*
 * fleetval.h: the encoding of a decision stored in the fleet's shared level
 * (Redis, docs/fleet.md), and the names it is stored under.
 *
 * Pure: no I/O, no clock, no allocation, no logging. The caller passes the
 * wall-clock time (expiries are absolute, shared between hosts) and owns
 * every buffer. Keys and tags come from HMAC-SHA256 under subkeys of the
 * fleet secret (redis-key-secret), so what Redis holds reveals no
 * credential; values are sealed with AES-256-GCM under another subkey, so
 * they are neither readable (the token, the claims) nor forgeable, nor
 * movable between keys, without the secret.
 *
 * Value, version 2 (integers big-endian):
 *   "SAF" 0x02 | 12-byte nonce | sealed body | 16-byte GCM tag
 *   body = u64 expires_ms (wall) | u64 l1_until_ms (wall, 0 = not
 *          L1-eligible) | u16 status | u8 outcome |
 *          u32 claims_skipped | u32 actions_len | actions
 * A value of version 1 (no l1_until_ms) or any other is FLEETVAL_BAD.
 * The additional data is the value's Redis name and the 4-byte header. The
 * actions are the decision's encoded ACK actions (decision.h) and must parse
 * as set-var/unset-var actions (spop_action_next()).
 */
#ifndef SPOA_FLEETVAL_H
#define SPOA_FLEETVAL_H

#include <stddef.h>
#include <stdint.h>

#define FLEETVAL_MAGIC_LEN 4             /* "SAF" + version */
#define FLEETVAL_NONCE_LEN 12
#define FLEETVAL_TAG_LEN 16
#define FLEETVAL_BODY_HDR_LEN 27         /* expires .. actions_len */
#define FLEETVAL_OVERHEAD (FLEETVAL_MAGIC_LEN + FLEETVAL_NONCE_LEN + FLEETVAL_BODY_HDR_LEN + \
                           FLEETVAL_TAG_LEN)
#define FLEETVAL_SUBKEY_LEN 32
#define FLEETVAL_HEX_LEN 64              /* a key or credential tag in hex */
#define FLEETVAL_SECRET_MIN 16           /* bytes of redis-key-secret at least */
#define FLEETVAL_PREFIX_MAX 64           /* bytes of redis-prefix at most */
/* prefix + "v:{" + cred tag + "}" + key tag, and a NUL. */
#define FLEETVAL_NAME_MAX (FLEETVAL_PREFIX_MAX + 4 + 2 * FLEETVAL_HEX_LEN + 1)

/* Subkeys derived once from the fleet secret. */
struct fleetval_keys {
	uint8_t key[FLEETVAL_SUBKEY_LEN];   /* value key names */
	uint8_t cred[FLEETVAL_SUBKEY_LEN];  /* credential tags (index, tombstone) */
	uint8_t seal[FLEETVAL_SUBKEY_LEN];  /* AES-256-GCM key of the values */
	uint8_t salt[FLEETVAL_SUBKEY_LEN];  /* the local cache key salt of every
	                                     * agent of the fleet (cachekey.h) */
};

/* A decoded value; <actions> borrows the <plain> buffer given to
 * fleetval_decode() (or, to fleetval_encode(), the caller's bytes). */
struct fleetval {
	uint64_t expires_ms;
	uint64_t l1_until_ms;      /* until when HAProxy's L1 may keep it; 0 = never
	                            * (the writer's decision.l1_until_ms) */
	int status;
	int outcome;               /* enum decision_outcome */
	uint32_t claims_skipped;
	const uint8_t *actions;
	size_t actions_len;
};

enum fleetval_res {
	FLEETVAL_OK = 0,
	FLEETVAL_EXPIRED,          /* well formed and authentic, but past its expiry */
	FLEETVAL_BAD,              /* anything else: never an answer */
};

/* Derives the subkeys from <secret>/<len> (at least FLEETVAL_SECRET_MIN
 * bytes). Returns 0, or -1 (too short, OpenSSL failed). */
int fleetval_keys_derive(struct fleetval_keys *k, const uint8_t *secret, size_t len);

/* Binds the value names to <shape>/<len>: what shapes a stored answer but is
 * not in the local cache key (var-prefix, copy-header, subject-claim,
 * max-frame-size), so that agents configured differently never read each
 * other's values. Credential tags (tombstones, index) stay fleet-wide.
 * Returns 0 or -1. */
int fleetval_keys_bind(struct fleetval_keys *k, const void *shape, size_t len);

/* Writes the value name for local cache <key> and credential <cred> (32
 * bytes each) under <prefix> into <out> (FLEETVAL_NAME_MAX bytes): the
 * credential tag is the hash tag, so one credential's values share a slot.
 * Returns the length, or -1 (prefix too long, OpenSSL failed). */
int fleetval_name_value(const struct fleetval_keys *k, const char *prefix,
                        const uint8_t key[32], const uint8_t cred[32], char *out);

/* Writes the hex credential tag of <cred> (FLEETVAL_HEX_LEN chars + NUL) into
 * <out>. The tombstone is prefix "t:{" tag "}", the index prefix "i:{" tag
 * "}". Returns 0 or -1. */
int fleetval_cred_tag(const struct fleetval_keys *k, const uint8_t cred[32],
                      char out[FLEETVAL_HEX_LEN + 1]);

/* Bytes fleetval_encode() writes for <actions_len> bytes of actions. */
static inline size_t fleetval_size(size_t actions_len)
{
	return FLEETVAL_OVERHEAD + actions_len;
}

/* Encodes <v> for value name <name>/<name_len> into <out> (room for
 * fleetval_size(v->actions_len)), sealed with <nonce> (random, never reused
 * under one secret: RAND_bytes per value). Returns the length, or -1
 * (status out of 0..999, outcome out of range, OpenSSL failed). */
long fleetval_encode(const struct fleetval_keys *k, const char *name, size_t name_len,
                     const uint8_t nonce[FLEETVAL_NONCE_LEN], const struct fleetval *v,
                     uint8_t *out);

/* Decodes <buf>/<len> read under <name>/<name_len> at wall time <now_ms>,
 * refusing actions longer than <max_actions>. <plain> (room for <len>
 * bytes) receives the opened body; <v>'s actions point into it. Never reads
 * past <len>; fills <v> only on FLEETVAL_OK or FLEETVAL_EXPIRED. */
enum fleetval_res fleetval_decode(const struct fleetval_keys *k, const char *name,
                                  size_t name_len, const uint8_t *buf, size_t len,
                                  uint64_t now_ms, size_t max_actions, uint8_t *plain,
                                  struct fleetval *v);

/* Revocation events, as carried in the stream's `c` field: 64 hex chars of a
 * local credential hash (salted by the fleet salt: not a credential and not
 * testable without the secret), or "*" for every entry. Parses <s>/<len>
 * into <cred>; returns 1 (one credential), 0 ("*"), -1 (malformed). */
int fleetval_event_parse(const char *s, size_t len, uint8_t cred[32]);

/* Writes the event text of <cred> (NULL: "*") into <out> (65 bytes). */
void fleetval_event_format(const uint8_t *cred, char out[FLEETVAL_HEX_LEN + 1]);

/* The stream event's optional `l` field: the L1 session hash (hapi.h, the
 * 32 bytes of hapi_l1_cred()) sealed with AES-256-GCM under the value seal
 * key, the event's credential as additional data (with a label apart from
 * the values'), as lowercase hex of nonce | ciphertext | tag. Redis never
 * sees the hash; without the secret an event cannot be given a hash, nor a
 * sealed hash be moved to another event's credential. */
#define FLEETVAL_L1_LEN 32
#define FLEETVAL_L1EV_HEX (2 * (FLEETVAL_NONCE_LEN + FLEETVAL_L1_LEN + FLEETVAL_TAG_LEN))

/* Seals <l1> for the event of <cred> with <nonce> (random, never reused)
 * into <out> (FLEETVAL_L1EV_HEX chars + NUL). Returns 0, or -1 (OpenSSL
 * failed). */
int fleetval_l1ev_seal(const struct fleetval_keys *k, const uint8_t cred[32],
                       const uint8_t l1[FLEETVAL_L1_LEN], const uint8_t nonce[FLEETVAL_NONCE_LEN],
                       char out[FLEETVAL_L1EV_HEX + 1]);

/* Opens the field <s>/<len> of the event of <cred> into <l1>. Accepts any
 * bytes; returns 0, or -1 (wrong length, not hex, not authentic). */
int fleetval_l1ev_open(const struct fleetval_keys *k, const uint8_t cred[32], const char *s,
                       size_t len, uint8_t l1[FLEETVAL_L1_LEN]);

/* ---- the revocation stream's replay rule ---- */

#define FLEETVAL_ID_MAX 48     /* a stream id "<ms>-<seq>" and its NUL */

/* -1, 0, 1 as stream id <a> is before, equal to, after <b>, compared as
 * numbers; an id that does not parse sorts as "0-0". */
int fleetval_id_cmp(const char *a, const char *b);

/* What the stream reader does on (re)connect, from XINFO STREAM:
 * <last> the last id it applied ("" before its first connection), <absent>
 * 1 if the stream does not exist, <last_gen> / <max_del> / <first> its
 * last-generated-id, max-deleted-entry-id and first retained entry's id
 * (recorded-first-entry-id; "" when empty), <has_entries> whether the local
 * cache holds anything. Writes where to resume into <resume>. Returns 1 if
 * it must flush its local cache first (revocations may have been missed:
 * trimmed past <last> (MAXLEN moves the first entry, not max-deleted-entry-id),
 * deleted with XDEL, the stream deleted or recreated, or a first connection
 * after entries were cached without it), else 0. A first retained entry
 * after <last> counts as a gap even when it is <last>'s direct successor:
 * the stream cannot tell, and a flush is the safe side. */
int fleetval_stream_resume(const char *last, int absent, const char *last_gen,
                           const char *max_del, const char *first, int has_entries,
                           char resume[FLEETVAL_ID_MAX]);

#endif /* SPOA_FLEETVAL_H */
