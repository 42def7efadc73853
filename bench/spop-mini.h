/*
 * spop-mini.h: the few SPOP 2.0 encoders and decoders the benchmark tools
 * need (null-agent.c, spop-load.c), as static inline functions.
 *
 * Standalone on purpose: the tools must build and behave the same whatever
 * state agent/spop.c is in, so that a benchmark never measures a codec bug.
 * Cursor style as in agent/spop.h: decoders advance <*p> only on success and
 * never read past <end>; encoders fail rather than write past <end>.
 */
#ifndef BENCH_SPOP_MINI_H
#define BENCH_SPOP_MINI_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SM_HAPROXY_HELLO   1
#define SM_HAPROXY_DISCON  2
#define SM_NOTIFY          3
#define SM_AGENT_HELLO     101
#define SM_AGENT_DISCON    102
#define SM_ACK             103

#define SM_T_NULL   0
#define SM_T_BOOL   1
#define SM_T_INT32  2
#define SM_T_UINT32 3
#define SM_T_INT64  4
#define SM_T_UINT64 5
#define SM_T_IPV4   6
#define SM_T_IPV6   7
#define SM_T_STR    8
#define SM_T_BIN    9

#define SM_SCOPE_TXN 2

/* Returns 1 and advances <*p>, 0 if the buffer ends first, -1 if malformed. */
static inline int sm_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	const uint8_t *q = *p;
	uint64_t r;
	unsigned shift = 4, n = 1;

	if (q >= end)
		return 0;
	r = *q++;
	if (r >= 240) {
		for (;;) {
			if (q >= end)
				return 0;
			if (++n > 10)
				return -1;
			r += (uint64_t)*q << shift;
			shift += 7;
			if (*q++ < 128)
				break;
		}
	}
	*p = q;
	*v = r;
	return 1;
}

static inline int sm_varint_put(uint8_t **p, const uint8_t *end, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	if (v < 240) {
		tmp[n++] = (uint8_t)v;
	} else {
		tmp[n++] = (uint8_t)((v & 0xFF) | 0xF0);
		v = (v - 240) >> 4;
		while (v >= 128) {
			tmp[n++] = (uint8_t)((v & 0xFF) | 0x80);
			v = (v - 128) >> 7;
		}
		tmp[n++] = (uint8_t)v;
	}
	if ((size_t)(end - *p) < n)
		return 0;
	memcpy(*p, tmp, n);
	*p += n;
	return 1;
}

/* Bare string: varint length + bytes. */
static inline int sm_str_put(uint8_t **p, const uint8_t *end, const char *s, size_t len)
{
	uint8_t *q = *p;

	if (!sm_varint_put(&q, end, len) || (size_t)(end - q) < len)
		return 0;
	memcpy(q, s, len);
	*p = q + len;
	return 1;
}

static inline int sm_str_get(const uint8_t **p, const uint8_t *end,
                             const char **s, size_t *len)
{
	const uint8_t *q = *p;
	uint64_t l;

	if (sm_varint_get(&q, end, &l) != 1 || l > (uint64_t)(end - q))
		return -1;
	*s = (const char *)q;
	*len = (size_t)l;
	*p = q + l;
	return 1;
}

/* Typed string (type byte 8 + bare string). */
static inline int sm_tstr_put(uint8_t **p, const uint8_t *end, const char *s, size_t len)
{
	uint8_t *q = *p;

	if (q >= end)
		return 0;
	*q++ = SM_T_STR;
	if (!sm_str_put(&q, end, s, len))
		return 0;
	*p = q;
	return 1;
}

/* Typed unsigned integer (UINT32 when it fits, else UINT64). */
static inline int sm_tuint_put(uint8_t **p, const uint8_t *end, uint64_t v)
{
	uint8_t *q = *p;

	if (q >= end)
		return 0;
	*q++ = v <= 0xFFFFFFFFu ? SM_T_UINT32 : SM_T_UINT64;
	if (!sm_varint_put(&q, end, v))
		return 0;
	*p = q;
	return 1;
}

/* A decoded typed value: integers in <u>, strings/binaries in <s>/<len>,
 * BOOL in <u> (1 = true), IP addresses in <s>/<len> too. */
struct sm_data {
	unsigned type;
	uint64_t u;
	const char *s;
	size_t len;
};

/* Returns 1 and advances <*p>, or -1 if malformed / past <end>. */
static inline int sm_data_get(const uint8_t **p, const uint8_t *end, struct sm_data *d)
{
	const uint8_t *q = *p;
	unsigned t;

	if (q >= end)
		return -1;
	t = *q & 0x0F;
	d->type = t;
	d->u = 0;
	d->s = NULL;
	d->len = 0;
	if (t == SM_T_BOOL)
		d->u = (*q >> 4) == 1;
	q++;
	switch (t) {
	case SM_T_NULL:
	case SM_T_BOOL:
		break;
	case SM_T_INT32: case SM_T_UINT32: case SM_T_INT64: case SM_T_UINT64:
		if (sm_varint_get(&q, end, &d->u) != 1)
			return -1;
		break;
	case SM_T_IPV4: case SM_T_IPV6:
		d->len = t == SM_T_IPV4 ? 4 : 16;
		if ((size_t)(end - q) < d->len)
			return -1;
		d->s = (const char *)q;
		q += d->len;
		break;
	case SM_T_STR: case SM_T_BIN:
		if (sm_str_get(&q, end, &d->s, &d->len) != 1)
			return -1;
		break;
	default:
		return -1;
	}
	*p = q;
	return 1;
}

/* Big-endian 32-bit helpers. */
static inline uint32_t sm_get32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static inline void sm_put32(uint8_t *b, uint32_t v)
{
	b[0] = (uint8_t)(v >> 24);
	b[1] = (uint8_t)(v >> 16);
	b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}

/* A frame split in place. <sid_raw>/<ids_len> are the SID and FID bytes as
 * received, so that an ACK can echo them byte for byte. */
struct sm_frame {
	uint8_t type;
	uint32_t flags;
	uint64_t sid, fid;
	const uint8_t *ids_raw;
	size_t ids_len;
	const uint8_t *payload, *end;
	size_t size;                    /* 4 + LEN */
};

/* Splits the frame at the start of <buf>/<len>. Returns 1 with <*f> filled,
 * 0 if more bytes are needed, -1 if LEN is outside [7, max_len] or the
 * header is malformed. */
static inline int sm_frame_get(const uint8_t *buf, size_t len, uint32_t max_len,
                               struct sm_frame *f)
{
	uint32_t flen;
	const uint8_t *p, *end;

	if (len < 4)
		return 0;
	flen = sm_get32(buf);
	if (flen < 7 || flen > max_len)
		return -1;
	if (len < 4 + (size_t)flen)
		return 0;
	end = buf + 4 + flen;
	f->type = buf[4];
	f->flags = sm_get32(buf + 5);
	p = buf + 9;
	f->ids_raw = p;
	if (sm_varint_get(&p, end, &f->sid) != 1 || sm_varint_get(&p, end, &f->fid) != 1)
		return -1;
	f->ids_len = (size_t)(p - f->ids_raw);
	f->payload = p;
	f->end = end;
	f->size = 4 + (size_t)flen;
	return 1;
}

/* Writes the header of a frame (LEN patched by sm_frame_end()) with FIN set
 * and the raw SID/FID bytes <ids>/<ids_len>. Returns the payload cursor or
 * NULL if it does not fit. */
static inline uint8_t *sm_frame_begin(uint8_t *buf, const uint8_t *end, uint8_t type,
                                      const uint8_t *ids, size_t ids_len)
{
	if ((size_t)(end - buf) < 9 + ids_len)
		return NULL;
	buf[4] = type;
	sm_put32(buf + 5, 1);
	memcpy(buf + 9, ids, ids_len);
	return buf + 9 + ids_len;
}

static inline size_t sm_frame_end(uint8_t *buf, const uint8_t *cur)
{
	size_t total = (size_t)(cur - buf);

	sm_put32(buf, (uint32_t)(total - 4));
	return total;
}

#endif /* BENCH_SPOP_MINI_H */
