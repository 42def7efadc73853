/*
 * spop.h: SPOP 2.0 codec (HAProxy's Stream Processing Offload Protocol).
 *
 * A pure module: no I/O, no allocation, no libev, no global state. Every
 * decoder works on a cursor (<*p> advanced only on success) bounded by <end>
 * and never reads past it; every encoder writes into a caller buffer bounded by
 * <end> and fails rather than overflow. Decoded strings borrow the input
 * buffer (struct spop_str): they are valid as long as the frame bytes are.
 *
 * Wire reference: doc/SPOE.txt and the project's notes on SPOP; the test
 * vectors in tests/vectors are real HAProxy 2.6 and 3.4 captures.
 *
 * Every frame the agent sends is encoded here, the ACK's header and its one
 * size check included (spop_ack_header()). Callers: conn.c (frames),
 * exchange.c and decision.c (messages, actions), the tests and fuzzers.
 *
 * Return convention: cursor decoders return 1 (decoded), 0 (end of the
 * input, where documented) or -1 (malformed); spop_frame_decode() returns a
 * byte count, 0 (incomplete) or -(enum spop_error), the payload decoders
 * (HELLO, DISCONNECT) 0 or -(enum spop_error); cursor writers return 1 or 0
 * (does not fit, cursor unchanged); frame encoders return the bytes written
 * or 0 (does not fit).
 */
#ifndef SPOA_SPOP_H
#define SPOA_SPOP_H

#include <stddef.h>
#include <stdint.h>

/* Frame types (TYPE byte). */
enum spop_frame_type {
	SPOP_FRM_UNSET            = 0,   /* 2.x fragment continuation: refused */
	SPOP_FRM_HAPROXY_HELLO    = 1,
	SPOP_FRM_HAPROXY_DISCON   = 2,
	SPOP_FRM_NOTIFY           = 3,
	SPOP_FRM_AGENT_HELLO      = 101,
	SPOP_FRM_AGENT_DISCON     = 102,
	SPOP_FRM_ACK              = 103,
};

#define SPOP_FL_FIN    0x00000001u
#define SPOP_FL_ABORT  0x00000002u

/* SPOP status codes, as sent in DISCONNECT frames (SPOE.txt 3.5). */
enum spop_error {
	SPOP_ERR_NONE = 0,
	SPOP_ERR_IO = 1,
	SPOP_ERR_TOUT = 2,
	SPOP_ERR_TOO_BIG = 3,
	SPOP_ERR_INVALID = 4,
	SPOP_ERR_NO_VSN = 5,
	SPOP_ERR_NO_FRAME_SIZE = 6,
	SPOP_ERR_NO_CAP = 7,
	SPOP_ERR_BAD_VSN = 8,
	SPOP_ERR_BAD_FRAME_SIZE = 9,
	SPOP_ERR_FRAG_NOT_SUPPORTED = 10,
	SPOP_ERR_INTERLACED_FRAMES = 11,
	SPOP_ERR_FRAMEID_NOTFOUND = 12,
	SPOP_ERR_RES = 13,
	SPOP_ERR_UNKNOWN = 99,
};

/* Typed data: the type is the LOW nibble of the type byte, flags the high one. */
enum spop_type {
	SPOP_T_NULL = 0,
	SPOP_T_BOOL = 1,
	SPOP_T_INT32 = 2,
	SPOP_T_UINT32 = 3,
	SPOP_T_INT64 = 4,
	SPOP_T_UINT64 = 5,
	SPOP_T_IPV4 = 6,
	SPOP_T_IPV6 = 7,
	SPOP_T_STR = 8,
	SPOP_T_BIN = 9,
	SPOP_T_ENTRIES /* 10..15 are reserved: decoding them is an error */
};

/* Variable scopes in set-var/unset-var actions. */
enum spop_scope {
	SPOP_SCOPE_PROC = 0,
	SPOP_SCOPE_SESS = 1,
	SPOP_SCOPE_TXN = 2,
	SPOP_SCOPE_REQ = 3,
	SPOP_SCOPE_RES = 4,
};

#define SPOP_ACT_SET_VAR    1
#define SPOP_ACT_UNSET_VAR  2

/* Smallest legal frame: TYPE(1) + FLAGS(4) + SID(>=1) + FID(>=1). */
#define SPOP_FRAME_MIN_LEN  7
/* Bytes of the LEN prefix, which LEN itself does not count. */
#define SPOP_FRAME_LEN_SIZE 4
/* Bytes before the payload at most: LEN(4) TYPE(1) FLAGS(4) SID(10) FID(10). */
#define SPOP_FRAME_HDR_MAX  29
#define SPOP_MAX_FRAME_MIN  256     /* smallest max-frame-size HAProxy accepts */
#define SPOP_VARINT_MAX     10      /* bytes in the longest (64-bit) varint */

/* A borrowed byte string: <ptr> points into the frame, <len> bytes, no NUL. */
struct spop_str {
	const char *ptr;
	size_t len;
};

struct spop_data {
	enum spop_type type;
	union {
		int b;                 /* BOOL: 1 if the flag nibble is exactly 1 */
		int64_t s64;           /* INT32, INT64 (sign-extended by HAProxy's rule) */
		uint64_t u64;          /* UINT32, UINT64 */
		uint8_t ip[16];        /* IPV4: ip[0..3]; IPV6: ip[0..15], network order */
		struct spop_str str;   /* STR, BIN */
	} u;
};

/* A decoded frame header; <payload>..<end> borrow the caller's buffer. */
struct spop_frame {
	uint8_t type;
	uint32_t flags;
	uint64_t sid;
	uint64_t fid;
	const uint8_t *payload;
	const uint8_t *end;
};

/* Decoded HAPROXY-HELLO. Absent keys leave their has_* at 0. */
struct spop_hello {
	int has_versions, has_max_frame_size, has_capabilities;
	struct spop_str versions;       /* e.g. "2.0" */
	uint64_t max_frame_size;
	struct spop_str capabilities;   /* comma separated */
	int healthcheck;                /* 1 for option spop-check's HELLO */
	struct spop_str engine_id;      /* len 0 when absent */
};

/* Decoded HAPROXY-DISCONNECT. */
struct spop_disconnect {
	uint64_t status;
	struct spop_str message;
};

/* ---- varint ("peers" encoding) ---- */

/* Decodes a varint at <*p>. Returns 1 and advances <*p> on success, 0 if the
 * buffer ends before the varint does (need more data), -1 if it runs past
 * SPOP_VARINT_MAX bytes or overflows 64 bits (malformed). */
int spop_varint_decode(const uint8_t **p, const uint8_t *end, uint64_t *v);

/* Encodes <v> at <*p>. Returns 1 and advances <*p>, or 0 if it does not fit. */
int spop_varint_encode(uint8_t **p, const uint8_t *end, uint64_t v);

/* ---- frames ---- */

/* Looks at the start of a receive buffer <buf>/<len>. Reads the 4-byte length
 * first and checks it against [SPOP_FRAME_MIN_LEN, <max_len>] BEFORE anything
 * else, so a caller can reject garbage (TLS, HTTP probes) without buffering it.
 * Returns:
 *   > 0   the whole frame (4 + LEN bytes) is present; <*f> is filled;
 *   0     more bytes are needed (<*need>, if not NULL, is the total frame size
 *         when known, else 4);
 *   < 0   -(enum spop_error): SPOP_ERR_TOO_BIG for LEN > max_len,
 *         SPOP_ERR_INVALID for LEN < 7 or bad SID/FID varints,
 *         SPOP_ERR_FRAG_NOT_SUPPORTED for a frame without FIN (or type UNSET).
 * The return value, when > 0, is the number of bytes the frame occupies. */
long spop_frame_decode(const uint8_t *buf, size_t len, uint32_t max_len,
                       struct spop_frame *f, size_t *need);

/* ---- KV lists, typed data, bare strings ---- */

/* Bare string (varint length + bytes). Returns 1, or -1 if malformed or past <end>. */
int spop_str_decode(const uint8_t **p, const uint8_t *end, struct spop_str *s);

/* Typed data. Returns 1, or -1 if malformed, reserved type, or past <end>. */
int spop_data_decode(const uint8_t **p, const uint8_t *end, struct spop_data *d);

/* Next KV pair of a KV-list. Returns 1 with <*key>/<*val> filled, 0 at <end>
 * (list finished), -1 if malformed. */
int spop_kv_next(const uint8_t **p, const uint8_t *end,
                 struct spop_str *key, struct spop_data *val);

/* ---- HELLO / DISCONNECT ---- */

/* Decodes a HAPROXY-HELLO payload. Unknown keys are skipped. Returns 0 or
 * -(enum spop_error): SPOP_ERR_INVALID if malformed. Semantic checks (version
 * "2.0" listed, max-frame-size present) are spop_hello_check()'s.
 * Keys match exactly (HAProxy matches by prefix; "max-frame-sizes" is not
 * "max-frame-size" here). A known key with a value of the wrong type is
 * malformed: versions/capabilities/engine-id must be STR, healthcheck BOOL,
 * max-frame-size any integer type (a negative one reads as 0). */
int spop_hello_decode(const struct spop_frame *f, struct spop_hello *h);

/* Checks a decoded HELLO and negotiates the frame size: <*max_out> =
 * min(<own_max>, h->max_frame_size). Returns 0, or -(SPOP_ERR_NO_VSN,
 * SPOP_ERR_BAD_VSN, SPOP_ERR_NO_FRAME_SIZE, SPOP_ERR_BAD_FRAME_SIZE), checked
 * in that order. A version list is accepted if one comma-separated entry,
 * trimmed of spaces and tabs, is "2.0"; a size below 256 is
 * SPOP_ERR_BAD_FRAME_SIZE. Missing capabilities are accepted as "" (never
 * SPOP_ERR_NO_CAP: HAProxy always sends them, and a peer that does not
 * cannot be asked for pipelining anyway). <*max_out> is set only on 0. */
int spop_hello_check(const struct spop_hello *h, uint32_t own_max, uint32_t *max_out);

/* Decodes a HAPROXY-DISCONNECT payload. Returns 0 or -SPOP_ERR_INVALID.
 * status-code: any integer type (negative reads as 0), SPOP_ERR_UNKNOWN when
 * absent; message: STR, "" when absent. Also reads AGENT-DISCONNECT. */
int spop_disconnect_decode(const struct spop_frame *f, struct spop_disconnect *d);

/* ---- NOTIFY ---- */

/* Iterates the messages of a NOTIFY payload. Start with <*p> = f->payload.
 * Returns 1 with <*name> and <*nargs> (0..255), positioned on the first
 * argument; 0 at the end of the payload; -1 if malformed. The caller must then
 * call spop_arg_next() exactly <nargs> times (or spop_msg_skip_args()). */
int spop_msg_next(const uint8_t **p, const uint8_t *end,
                  struct spop_str *name, unsigned *nargs);

/* Next argument of the current message: name (len 0 when unnamed) and value.
 * Returns 1, or -1 if malformed. */
int spop_arg_next(const uint8_t **p, const uint8_t *end,
                  struct spop_str *name, struct spop_data *val);

/* Skips <nargs> arguments. Returns 1, or -1 if malformed. */
int spop_msg_skip_args(const uint8_t **p, const uint8_t *end, unsigned nargs);

/* ---- encoders ----
 * Frame encoders write the whole frame, length prefix included, into
 * <buf>..<end>. They return the frame size, or 0 if it does not fit.
 * A frame being built in pieces uses spop_frame_begin()/spop_frame_end(). */

/* Writes LEN (placeholder), TYPE, FLAGS=FIN, SID, FID. Returns the cursor past
 * the header, or NULL if it does not fit. */
uint8_t *spop_frame_begin(uint8_t *buf, const uint8_t *end, uint8_t type,
                          uint64_t sid, uint64_t fid);

/* Patches the LEN prefix of the frame starting at <buf> whose payload ends at
 * <cur>. Returns the total frame size (4 + LEN). */
size_t spop_frame_end(uint8_t *buf, const uint8_t *cur);

/* The header of an ACK whose payload (<payload_len> bytes of encoded
 * actions) the caller sends from its own buffers, after it: LEN (that of the
 * whole frame), TYPE, FLAGS=FIN, SID, FID, written at <buf>..<end>, which
 * must have room for SPOP_FRAME_HDR_MAX bytes. The one check of an ACK's
 * size: the frame (LEN) with <headroom> more payload bytes must fit
 * <max_frame> (the negotiated max-frame-size). Returns the header's size,
 * or 0 if <buf> is shorter than SPOP_FRAME_HDR_MAX or the frame would be too
 * big (nothing to send then). Never copies the payload. */
size_t spop_ack_header(uint8_t *buf, const uint8_t *end, uint64_t sid, uint64_t fid,
                       size_t payload_len, size_t headroom, uint32_t max_frame);

/* Typed data and bare-string writers. Each returns 1 and advances <*p>, or 0
 * if it does not fit (then <*p> is unchanged). */
int spop_put_str(uint8_t **p, const uint8_t *end, const char *s, size_t len);
int spop_put_data(uint8_t **p, const uint8_t *end, const struct spop_data *d);

/* ACK actions. <name> is a bare name (no scope, no prefix). */
int spop_put_set_var(uint8_t **p, const uint8_t *end, enum spop_scope scope,
                     const char *name, size_t name_len, const struct spop_data *val);
int spop_put_unset_var(uint8_t **p, const uint8_t *end, enum spop_scope scope,
                       const char *name, size_t name_len);

/* AGENT-HELLO with version "2.0", <max_frame_size> (as UINT32) and
 * <capabilities> (always sent, may be ""). */
size_t spop_agent_hello_encode(uint8_t *buf, const uint8_t *end,
                               uint32_t max_frame_size, const char *capabilities);

/* AGENT-DISCONNECT with status-code (UINT32) and message (STRING, truncated
 * to 255 bytes since HAProxy 2.x refuses longer). */
size_t spop_agent_disconnect_encode(uint8_t *buf, const uint8_t *end,
                                    enum spop_error status, const char *message);

/* ---- ACK decoding ----
 * The agent never receives ACKs; this exists for the unit tests, the fuzzers
 * and tools that check what the encoders produce. */

/* One decoded ACK action; <name> and a STR/BIN <value> borrow the frame. */
struct spop_action {
	uint8_t type;                  /* SPOP_ACT_SET_VAR or SPOP_ACT_UNSET_VAR */
	uint8_t scope;                 /* enum spop_scope, as the raw byte sent */
	struct spop_str name;          /* bare variable name */
	struct spop_data value;        /* set-var's value; type NULL for unset-var */
};

/* Next action of an ACK payload (start with <*p> = f->payload). Returns 1
 * with <*a> filled, 0 at <end>, -1 if malformed: truncated, an action type
 * other than set-var/unset-var, or an nb-args other than 3 resp. 2. */
int spop_action_next(const uint8_t **p, const uint8_t *end, struct spop_action *a);

/* Short name of a status code, for logs ("frame too big"...). Never NULL. */
const char *spop_err_to_str(enum spop_error e);

#endif /* SPOA_SPOP_H */
