/*
 * spop.c: SPOP 2.0 codec (see spop.h for the API contract).
 *
 * What it does: varints, frame headers, bare strings, typed data, KV-lists,
 * HELLO / DISCONNECT / NOTIFY decoding, ACK action and agent frame encoding.
 *
 * What it never does: I/O, allocation, logging, global mutable state. Every
 * decoder bounds every read by its <end> argument and advances the caller's
 * cursor only on success; every encoder builds into a local cursor and
 * commits it only when the whole item fitted, so a failed write leaves the
 * caller's cursor untouched (bytes past it may have been scribbled on, but
 * never bytes at or past <end>).
 *
 * Wire details that are easy to get wrong (spop-notes.md 1.2 - 1.8):
 *  - the varint adds whole continuation bytes (bit 7 included), shifted by
 *    4, 11, 18, ... bits; 10 bytes at most for 64 bits;
 *  - the typed-data type is the LOW nibble, the flags the HIGH nibble;
 *  - HAProxy sends every integer as INT64 with a two's complement varint;
 *  - names, the scope byte and the action header are not typed data.
 */
#include <string.h>

#include "spop.h"

/* ---- small helpers ---- */

static uint32_t spop_read_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void spop_write_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Two's complement reinterpretation without implementation-defined casts. */
static int64_t spop_u64_to_s64(uint64_t u)
{
	if (u <= (uint64_t)INT64_MAX)
		return (int64_t)u;
	return -(int64_t)(~u) - 1;
}

/* Bytes left between <p> and <end> (0 if <p> is at or past <end>). */
static size_t spop_room(const uint8_t *p, const uint8_t *end)
{
	return p < end ? (size_t)(end - p) : 0;
}

/* Exact key comparison: HAProxy compares by prefix; we do not. */
static int spop_str_is(const struct spop_str *s, const char *lit)
{
	size_t n = strlen(lit);

	return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

/* ---- varint ---- */

int spop_varint_decode(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	const uint8_t *q = *p;
	unsigned shift = 4;
	uint64_t r, add;
	uint8_t b;

	if (q >= end)
		return 0;
	r = *q++;
	if (r < 240)
		goto done;
	do {
		/* an 11th byte would be needed: malformed, known without it */
		if (q - *p >= SPOP_VARINT_MAX)
			return -1;
		if (q >= end)
			return 0;
		b = *q++;
		add = (uint64_t)b << shift;
		if ((add >> shift) != b || r + add < r)
			return -1;      /* more than 64 bits */
		r += add;
		shift += 7;
	} while (b >= 128);
done:
	*v = r;
	*p = q;
	return 1;
}

/* Writes <v> as a varint at <p>, which has room for SPOP_VARINT_MAX bytes;
 * returns the bytes written. The one copy of the encoding rule. */
static inline size_t spop_varint_put(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	if (v < 240) {
		p[0] = (uint8_t)v;
		return 1;
	}
	p[n++] = (uint8_t)(v | 0xF0);
	v = (v - 240) >> 4;
	while (v >= 128) {
		p[n++] = (uint8_t)(v | 0x80);
		v = (v - 128) >> 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

int spop_varint_encode(uint8_t **p, const uint8_t *end, uint64_t v)
{
	uint8_t tmp[SPOP_VARINT_MAX];
	size_t n;

	/* Room for the longest: written in place. Else through <tmp>, so that
	 * a varint that does not fit leaves <*p>'s bytes alone. */
	if (spop_room(*p, end) >= SPOP_VARINT_MAX) {
		*p += spop_varint_put(*p, v);
		return 1;
	}
	n = spop_varint_put(tmp, v);
	if (spop_room(*p, end) < n)
		return 0;
	memcpy(*p, tmp, n);
	*p += n;
	return 1;
}

/* ---- frames ---- */

/* spop_varint_decode() with the one-byte case (every sid, fid and short
 * length of the usual frame) decided here, without the call. */
static inline int spop_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	if (*p < end && **p < 240) {
		*v = *(*p)++;
		return 1;
	}
	return spop_varint_decode(p, end, v);
}

long spop_frame_decode(const uint8_t *buf, size_t len, uint32_t max_len,
                       struct spop_frame *f, size_t *need)
{
	const uint8_t *p, *end;
	uint32_t flen, flags;
	uint64_t sid, fid;
	uint8_t type;

	if (len < 4) {
		if (need)
			*need = 4;
		return 0;
	}
	flen = spop_read_be32(buf);
	if (flen < SPOP_FRAME_MIN_LEN)
		return -SPOP_ERR_INVALID;
	if (flen > max_len)
		return -SPOP_ERR_TOO_BIG;
	if (len - 4 < flen) {
		if (need)
			*need = (size_t)flen + 4;
		return 0;
	}

	end = buf + 4 + flen;
	type = buf[4];
	flags = spop_read_be32(buf + 5);
	if (!(flags & SPOP_FL_FIN) || type == SPOP_FRM_UNSET)
		return -SPOP_ERR_FRAG_NOT_SUPPORTED;

	p = buf + 9;
	if (spop_varint_get(&p, end, &sid) != 1 ||
	    spop_varint_get(&p, end, &fid) != 1)
		return -SPOP_ERR_INVALID;

	f->type = type;
	f->flags = flags;
	f->sid = sid;
	f->fid = fid;
	f->payload = p;
	f->end = end;
	return (long)flen + 4;
}

/* ---- bare strings, typed data, KV lists ---- */

int spop_str_decode(const uint8_t **p, const uint8_t *end, struct spop_str *s)
{
	const uint8_t *q = *p;
	uint64_t n;

	if (spop_varint_get(&q, end, &n) != 1)
		return -1;
	if (n > spop_room(q, end))
		return -1;
	s->ptr = (const char *)q;
	s->len = (size_t)n;
	*p = q + n;
	return 1;
}

int spop_data_decode(const uint8_t **p, const uint8_t *end, struct spop_data *d)
{
	const uint8_t *q = *p;
	struct spop_data out;
	uint64_t v;
	uint8_t tb;

	if (q >= end)
		return -1;
	tb = *q++;
	memset(&out, 0, sizeof(out));
	out.type = (enum spop_type)(tb & 0x0F);
	switch (tb & 0x0F) {
	case SPOP_T_NULL:
		break;
	case SPOP_T_BOOL:
		out.u.b = (tb >> 4) == 1;
		break;
	case SPOP_T_INT32:
	case SPOP_T_INT64:
		if (spop_varint_decode(&q, end, &v) != 1)
			return -1;
		out.u.s64 = spop_u64_to_s64(v);
		break;
	case SPOP_T_UINT32:
	case SPOP_T_UINT64:
		if (spop_varint_decode(&q, end, &v) != 1)
			return -1;
		out.u.u64 = v;
		break;
	case SPOP_T_IPV4:
		if (spop_room(q, end) < 4)
			return -1;
		memcpy(out.u.ip, q, 4);
		q += 4;
		break;
	case SPOP_T_IPV6:
		if (spop_room(q, end) < 16)
			return -1;
		memcpy(out.u.ip, q, 16);
		q += 16;
		break;
	case SPOP_T_STR:
	case SPOP_T_BIN:
		if (spop_str_decode(&q, end, &out.u.str) != 1)
			return -1;
		break;
	default:
		return -1;      /* 10..15: reserved */
	}
	*d = out;
	*p = q;
	return 1;
}

int spop_kv_next(const uint8_t **p, const uint8_t *end,
                 struct spop_str *key, struct spop_data *val)
{
	const uint8_t *q = *p;
	struct spop_str k;
	struct spop_data v;

	if (q >= end)
		return 0;
	if (spop_str_decode(&q, end, &k) != 1 ||
	    spop_data_decode(&q, end, &v) != 1)
		return -1;
	*key = k;
	*val = v;
	*p = q;
	return 1;
}

/* ---- HELLO / DISCONNECT ---- */

/* Integer of any of the four integer types as a uint64; a negative signed
 * value gives 0 (the callers treat 0 as out of range). Returns 1, or 0 if
 * <d> is not an integer. */
static int spop_data_to_u64(const struct spop_data *d, uint64_t *v)
{
	switch (d->type) {
	case SPOP_T_INT32:
	case SPOP_T_INT64:
		*v = d->u.s64 < 0 ? 0 : (uint64_t)d->u.s64;
		return 1;
	case SPOP_T_UINT32:
	case SPOP_T_UINT64:
		*v = d->u.u64;
		return 1;
	default:
		return 0;
	}
}

int spop_hello_decode(const struct spop_frame *f, struct spop_hello *h)
{
	const uint8_t *p = f->payload;
	struct spop_str key;
	struct spop_data val;
	int ret;

	memset(h, 0, sizeof(*h));
	while ((ret = spop_kv_next(&p, f->end, &key, &val)) == 1) {
		if (spop_str_is(&key, "supported-versions")) {
			if (val.type != SPOP_T_STR)
				return -SPOP_ERR_INVALID;
			h->versions = val.u.str;
			h->has_versions = 1;
		} else if (spop_str_is(&key, "max-frame-size")) {
			if (!spop_data_to_u64(&val, &h->max_frame_size))
				return -SPOP_ERR_INVALID;
			h->has_max_frame_size = 1;
		} else if (spop_str_is(&key, "capabilities")) {
			if (val.type != SPOP_T_STR)
				return -SPOP_ERR_INVALID;
			h->capabilities = val.u.str;
			h->has_capabilities = 1;
		} else if (spop_str_is(&key, "healthcheck")) {
			if (val.type != SPOP_T_BOOL)
				return -SPOP_ERR_INVALID;
			h->healthcheck = val.u.b;
		} else if (spop_str_is(&key, "engine-id")) {
			if (val.type != SPOP_T_STR)
				return -SPOP_ERR_INVALID;
			h->engine_id = val.u.str;
		}
		/* anything else: skipped */
	}
	return ret == 0 ? 0 : -SPOP_ERR_INVALID;
}

/* 1 if one comma-separated entry of <l>, trimmed of blanks, is "2.0". */
static int spop_versions_have_20(const struct spop_str *l)
{
	const char *s = l->ptr, *e = l->ptr + l->len;

	if (!l->ptr || !l->len)
		return 0;
	while (s <= e) {
		const char *c = memchr(s, ',', (size_t)(e - s));
		const char *a = s, *b = c ? c : e;

		while (a < b && (*a == ' ' || *a == '\t'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
			b--;
		if (b - a == 3 && memcmp(a, "2.0", 3) == 0)
			return 1;
		if (!c)
			break;
		s = c + 1;
	}
	return 0;
}

int spop_hello_check(const struct spop_hello *h, uint32_t own_max, uint32_t *max_out)
{
	if (!h->has_versions)
		return -SPOP_ERR_NO_VSN;
	if (!spop_versions_have_20(&h->versions))
		return -SPOP_ERR_BAD_VSN;
	if (!h->has_max_frame_size)
		return -SPOP_ERR_NO_FRAME_SIZE;
	if (h->max_frame_size < SPOP_MAX_FRAME_MIN)
		return -SPOP_ERR_BAD_FRAME_SIZE;
	/* capabilities absent: accepted as "" (HAProxy always sends them) */
	*max_out = h->max_frame_size < own_max ? (uint32_t)h->max_frame_size : own_max;
	return 0;
}

int spop_disconnect_decode(const struct spop_frame *f, struct spop_disconnect *d)
{
	const uint8_t *p = f->payload;
	struct spop_str key;
	struct spop_data val;
	int ret;

	d->status = SPOP_ERR_UNKNOWN;
	d->message.ptr = "";
	d->message.len = 0;
	while ((ret = spop_kv_next(&p, f->end, &key, &val)) == 1) {
		if (spop_str_is(&key, "status-code")) {
			if (!spop_data_to_u64(&val, &d->status))
				return -SPOP_ERR_INVALID;
		} else if (spop_str_is(&key, "message")) {
			if (val.type != SPOP_T_STR)
				return -SPOP_ERR_INVALID;
			d->message = val.u.str;
		}
	}
	return ret == 0 ? 0 : -SPOP_ERR_INVALID;
}

/* ---- NOTIFY ---- */

int spop_msg_next(const uint8_t **p, const uint8_t *end,
                  struct spop_str *name, unsigned *nargs)
{
	const uint8_t *q = *p;
	struct spop_str n;

	if (q >= end)
		return 0;
	if (spop_str_decode(&q, end, &n) != 1 || q >= end)
		return -1;
	*nargs = *q++;
	*name = n;
	*p = q;
	return 1;
}

/* Largest value a one-byte SPOP varint holds. */
#define SPOP_VARINT_1BYTE_MAX 239

int spop_arg_next(const uint8_t **p, const uint8_t *end,
                  struct spop_str *name, struct spop_data *val)
{
	const uint8_t *q = *p, *t;
	struct spop_str n;
	struct spop_data v;

	/* The usual argument (a short name, then NULL, a short STR/BIN or an
	 * address): decoded in place, the same result as the general path
	 * below. */
	if (end - q >= 2 && q[0] <= SPOP_VARINT_1BYTE_MAX && (size_t)(end - q - 1) > q[0]) {
		t = q + 1 + q[0];  /* the type byte, inside the frame */
		switch (*t & 0x0F) {
		case SPOP_T_NULL:
			memset(val, 0, sizeof(*val));
			val->type = SPOP_T_NULL;
			goto fast;
		case SPOP_T_STR:
		case SPOP_T_BIN:
			if (end - t < 2 || t[1] > SPOP_VARINT_1BYTE_MAX ||
			    (size_t)(end - t - 2) < t[1])
				break;
			memset(val, 0, sizeof(*val));
			val->type = (enum spop_type)(*t & 0x0F);
			val->u.str.ptr = (const char *)t + 2;
			val->u.str.len = t[1];
			t += 1 + t[1];
			goto fast;
		case SPOP_T_IPV4:
		case SPOP_T_IPV6: {
			size_t alen = (*t & 0x0F) == SPOP_T_IPV4 ? 4 : 16;

			if ((size_t)(end - t - 1) < alen)
				break;
			memset(val, 0, sizeof(*val));
			val->type = (enum spop_type)(*t & 0x0F);
			memcpy(val->u.ip, t + 1, alen);
			t += alen;
			goto fast;
		}
		}
	}
	if (spop_str_decode(&q, end, &n) != 1 ||
	    spop_data_decode(&q, end, &v) != 1)
		return -1;
	*name = n;
	*val = v;
	*p = q;
	return 1;

fast:
	name->ptr = (const char *)q + 1;
	name->len = q[0];
	*p = t + 1;
	return 1;
}

int spop_msg_skip_args(const uint8_t **p, const uint8_t *end, unsigned nargs)
{
	const uint8_t *q = *p;
	struct spop_str n;
	struct spop_data v;

	while (nargs--) {
		if (spop_arg_next(&q, end, &n, &v) != 1)
			return -1;
	}
	*p = q;
	return 1;
}

/* ---- encoders ---- */

uint8_t *spop_frame_begin(uint8_t *buf, const uint8_t *end, uint8_t type,
                          uint64_t sid, uint64_t fid)
{
	uint8_t *p = buf;

	if (spop_room(p, end) < 9)
		return NULL;
	spop_write_be32(p, 0);
	p[4] = type;
	spop_write_be32(p + 5, SPOP_FL_FIN);
	p += 9;
	if (!spop_varint_encode(&p, end, sid) || !spop_varint_encode(&p, end, fid))
		return NULL;
	return p;
}

size_t spop_frame_end(uint8_t *buf, const uint8_t *cur)
{
	size_t total = (size_t)(cur - buf);

	spop_write_be32(buf, (uint32_t)(total - SPOP_FRAME_LEN_SIZE));
	return total;
}

size_t spop_ack_header(uint8_t *buf, const uint8_t *end, uint64_t sid, uint64_t fid,
                       size_t payload_len, size_t headroom, uint32_t max_frame)
{
	size_t hlen = SPOP_FRAME_LEN_SIZE, len;

	/* Each term bounded first: the sums cannot wrap. */
	if (spop_room(buf, end) < SPOP_FRAME_HDR_MAX || payload_len > max_frame ||
	    headroom > max_frame)
		return 0;
	buf[hlen++] = SPOP_FRM_ACK;
	spop_write_be32(buf + hlen, SPOP_FL_FIN);
	hlen += 4;
	hlen += spop_varint_put(buf + hlen, sid);
	hlen += spop_varint_put(buf + hlen, fid);
	len = hlen - SPOP_FRAME_LEN_SIZE + payload_len;
	if (len + headroom > max_frame)
		return 0;
	spop_write_be32(buf, (uint32_t)len);
	return hlen;
}

int spop_put_str(uint8_t **p, const uint8_t *end, const char *s, size_t len)
{
	uint8_t *q = *p;

	if (!spop_varint_encode(&q, end, len) || spop_room(q, end) < len)
		return 0;
	if (len)
		memcpy(q, s, len);
	*p = q + len;
	return 1;
}

int spop_put_data(uint8_t **p, const uint8_t *end, const struct spop_data *d)
{
	uint8_t *q = *p;
	int ok = 1;

	if (q >= end)
		return 0;
	switch (d->type) {
	case SPOP_T_NULL:
		*q++ = SPOP_T_NULL;
		break;
	case SPOP_T_BOOL:
		*q++ = d->u.b ? 0x11 : 0x01;
		break;
	case SPOP_T_INT32:
	case SPOP_T_INT64:
		*q++ = (uint8_t)d->type;
		ok = spop_varint_encode(&q, end, (uint64_t)d->u.s64);
		break;
	case SPOP_T_UINT32:
	case SPOP_T_UINT64:
		*q++ = (uint8_t)d->type;
		ok = spop_varint_encode(&q, end, d->u.u64);
		break;
	case SPOP_T_IPV4:
	case SPOP_T_IPV6: {
		size_t n = d->type == SPOP_T_IPV4 ? 4 : 16;

		*q++ = (uint8_t)d->type;
		if (spop_room(q, end) < n)
			return 0;
		memcpy(q, d->u.ip, n);
		q += n;
		break;
	}
	case SPOP_T_STR:
	case SPOP_T_BIN:
		*q++ = (uint8_t)d->type;
		ok = spop_put_str(&q, end, d->u.str.ptr, d->u.str.len);
		break;
	default:
		return 0;
	}
	if (!ok)
		return 0;
	*p = q;
	return 1;
}

/* Action header: type, nb-args, raw scope byte, bare name. */
static int spop_put_action_head(uint8_t **p, const uint8_t *end, uint8_t act,
                                uint8_t nargs, enum spop_scope scope,
                                const char *name, size_t name_len)
{
	uint8_t *q = *p;

	if (spop_room(q, end) < 3)
		return 0;
	q[0] = act;
	q[1] = nargs;
	q[2] = (uint8_t)scope;
	q += 3;
	if (!spop_put_str(&q, end, name, name_len))
		return 0;
	*p = q;
	return 1;
}

int spop_put_set_var(uint8_t **p, const uint8_t *end, enum spop_scope scope,
                     const char *name, size_t name_len, const struct spop_data *val)
{
	uint8_t *q = *p;

	if (!spop_put_action_head(&q, end, SPOP_ACT_SET_VAR, 3, scope, name, name_len) ||
	    !spop_put_data(&q, end, val))
		return 0;
	*p = q;
	return 1;
}

int spop_put_unset_var(uint8_t **p, const uint8_t *end, enum spop_scope scope,
                       const char *name, size_t name_len)
{
	return spop_put_action_head(p, end, SPOP_ACT_UNSET_VAR, 2, scope, name, name_len);
}

/* KV pair: bare key (a literal) then typed value. */
static int spop_put_kv(uint8_t **p, const uint8_t *end, const char *key,
                       const struct spop_data *val)
{
	uint8_t *q = *p;

	if (!spop_put_str(&q, end, key, strlen(key)) || !spop_put_data(&q, end, val))
		return 0;
	*p = q;
	return 1;
}

size_t spop_agent_hello_encode(uint8_t *buf, const uint8_t *end,
                               uint32_t max_frame_size, const char *capabilities)
{
	struct spop_data vsn = { .type = SPOP_T_STR, .u.str = { "2.0", 3 } };
	struct spop_data mfs = { .type = SPOP_T_UINT32, .u.u64 = max_frame_size };
	struct spop_data cap = { .type = SPOP_T_STR };
	uint8_t *p;

	if (!capabilities)
		capabilities = "";
	cap.u.str.ptr = capabilities;
	cap.u.str.len = strlen(capabilities);

	p = spop_frame_begin(buf, end, SPOP_FRM_AGENT_HELLO, 0, 0);
	if (!p ||
	    !spop_put_kv(&p, end, "version", &vsn) ||
	    !spop_put_kv(&p, end, "max-frame-size", &mfs) ||
	    !spop_put_kv(&p, end, "capabilities", &cap))
		return 0;
	return spop_frame_end(buf, p);
}

size_t spop_agent_disconnect_encode(uint8_t *buf, const uint8_t *end,
                                    enum spop_error status, const char *message)
{
	struct spop_data st = { .type = SPOP_T_UINT32, .u.u64 = (uint64_t)status };
	struct spop_data msg = { .type = SPOP_T_STR };
	uint8_t *p;

	if (!message)
		message = "";
	msg.u.str.ptr = message;
	msg.u.str.len = strnlen(message, 255);

	p = spop_frame_begin(buf, end, SPOP_FRM_AGENT_DISCON, 0, 0);
	if (!p ||
	    !spop_put_kv(&p, end, "status-code", &st) ||
	    !spop_put_kv(&p, end, "message", &msg))
		return 0;
	return spop_frame_end(buf, p);
}

/* ---- ACK decoding ---- */

int spop_action_next(const uint8_t **p, const uint8_t *end, struct spop_action *a)
{
	const uint8_t *q = *p;
	struct spop_action out;

	if (q >= end)
		return 0;
	if (spop_room(q, end) < 3)
		return -1;
	memset(&out, 0, sizeof(out));
	out.type = q[0];
	out.scope = q[2];
	if (!((q[0] == SPOP_ACT_SET_VAR && q[1] == 3) ||
	      (q[0] == SPOP_ACT_UNSET_VAR && q[1] == 2)))
		return -1;
	q += 3;
	if (spop_str_decode(&q, end, &out.name) != 1)
		return -1;
	out.value.type = SPOP_T_NULL;
	if (out.type == SPOP_ACT_SET_VAR && spop_data_decode(&q, end, &out.value) != 1)
		return -1;
	*a = out;
	*p = q;
	return 1;
}

const char *spop_err_to_str(enum spop_error e)
{
	switch (e) {
	case SPOP_ERR_NONE:               return "normal (no error occurred)";
	case SPOP_ERR_IO:                 return "I/O error";
	case SPOP_ERR_TOUT:               return "a timeout occurred";
	case SPOP_ERR_TOO_BIG:            return "frame is too big";
	case SPOP_ERR_INVALID:            return "invalid frame received";
	case SPOP_ERR_NO_VSN:             return "version value not found";
	case SPOP_ERR_NO_FRAME_SIZE:      return "max-frame-size value not found";
	case SPOP_ERR_NO_CAP:             return "capabilities value not found";
	case SPOP_ERR_BAD_VSN:            return "unsupported version";
	case SPOP_ERR_BAD_FRAME_SIZE:     return "max-frame-size too big or too small";
	case SPOP_ERR_FRAG_NOT_SUPPORTED: return "fragmentation not supported";
	case SPOP_ERR_INTERLACED_FRAMES:  return "invalid interlaced frames";
	case SPOP_ERR_FRAMEID_NOTFOUND:   return "frame-id not found";
	case SPOP_ERR_RES:                return "resource allocation error";
	case SPOP_ERR_UNKNOWN:            return "an unknown error occurred";
	}
	return "unknown status code";
}
