/*
 * claims.c: msgpack claims -> SPOP set-var actions (see claims.h).
 *
 * What it does: validates the shape of a msgpack document with a bounded
 * scan, unpacks it with msgpack-c, and encodes each usable top-level key as
 * a "claim.<key>" txn variable through the SPOP codec.
 *
 * What it never does: hand msgpack-c a document before the scan has
 * checked it. msgpack-c allocates every array/map at the size the document
 * declares, before reading the elements, so a 5-byte "map32 0xffffffff"
 * would ask for 128 GiB; the scan refuses any container that declares more
 * elements than there are bytes left. It never logs or keeps the values
 * (claims may be personal data).
 */
#include <string.h>

#include <msgpack.h>

#include "claims.h"
#include "spop.h"
#include "varname.h"

/* Walks one msgpack object from <buf>/<len> without allocating. Returns the
 * number of bytes it spans, or 0 if it is truncated, uses the reserved type
 * 0xc1, or at some point declares more pending elements than bytes remain
 * (each element takes at least one byte, so such a document cannot be
 * complete). */
static size_t claims_msgpack_span(const uint8_t *buf, size_t len)
{
	uint64_t pending = 1;      /* objects still to read */
	size_t off = 0;

	while (pending) {
		uint64_t n = 0;        /* children (array/map) */
		uint64_t skip = 0;     /* payload bytes after the header */
		size_t hdr = 1, lenb = 0;
		uint8_t b;

		if (off >= len)
			return 0;
		b = buf[off];
		pending--;
		if (b <= 0x7f || b >= 0xe0) {
			/* positive / negative fixint */
		} else if (b <= 0x8f) {
			n = 2u * (b & 0x0f);
		} else if (b <= 0x9f) {
			n = b & 0x0f;
		} else if (b <= 0xbf) {
			skip = b & 0x1f;
		} else {
			switch (b) {
			case 0xc0: case 0xc2: case 0xc3:
				break;
			case 0xc4: case 0xd9: lenb = 1; break;   /* bin8, str8 */
			case 0xc5: case 0xda: lenb = 2; break;   /* bin16, str16 */
			case 0xc6: case 0xdb: lenb = 4; break;   /* bin32, str32 */
			case 0xc7: lenb = 1; skip = 1; break;    /* ext8: + type */
			case 0xc8: lenb = 2; skip = 1; break;
			case 0xc9: lenb = 4; skip = 1; break;
			case 0xca: skip = 4; break;              /* float32 */
			case 0xcb: skip = 8; break;              /* float64 */
			case 0xcc: case 0xd0: skip = 1; break;
			case 0xcd: case 0xd1: skip = 2; break;
			case 0xce: case 0xd2: skip = 4; break;
			case 0xcf: case 0xd3: skip = 8; break;
			case 0xd4: skip = 2; break;              /* fixext1: type + 1 */
			case 0xd5: skip = 3; break;
			case 0xd6: skip = 5; break;
			case 0xd7: skip = 9; break;
			case 0xd8: skip = 17; break;
			case 0xdc: case 0xde: lenb = 2; break;   /* array16, map16 */
			case 0xdd: case 0xdf: lenb = 4; break;   /* array32, map32 */
			default:
				return 0;                        /* 0xc1: never used */
			}
		}
		if (lenb) {
			uint64_t v = 0;
			size_t i;

			if (len - off - 1 < lenb)
				return 0;
			for (i = 0; i < lenb; i++)
				v = v << 8 | buf[off + 1 + i];
			hdr += lenb;
			if (b >= 0xdc)
				n = b >= 0xde ? 2 * v : v;
			else
				skip += v;
		}
		if (len - off < hdr || len - off - hdr < skip)
			return 0;
		off += hdr + (size_t)skip;
		pending += n;
		if (pending > len - off)
			return 0;
	}
	return off;
}

/* Builds "claim.<sanitized key>" into <name>; returns its length, 0 if the
 * key is empty or too long for any variable name. */
static size_t claims_var_name(char *name, size_t namesz, const char *key, size_t klen)
{
	size_t pl = sizeof(CLAIMS_VAR_PREFIX) - 1, n;

	if (namesz <= pl)
		return 0;
	memcpy(name, CLAIMS_VAR_PREFIX, pl);
	n = varname_sanitize(name + pl, namesz - pl, key, klen);
	return n ? pl + n : 0;
}

/* Maps a msgpack value to SPOP typed data. Returns 1, or 0 for a type that
 * has no SPOP counterpart. Strings borrow <o>. */
static int claims_value(const msgpack_object *o, struct spop_data *d)
{
	memset(d, 0, sizeof(*d));
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		if (o->via.u64 <= (uint64_t)INT64_MAX) {
			d->type = SPOP_T_INT64;
			d->u.s64 = (int64_t)o->via.u64;
		} else {
			d->type = SPOP_T_UINT64;
			d->u.u64 = o->via.u64;
		}
		return 1;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		d->type = SPOP_T_INT64;
		d->u.s64 = o->via.i64;
		return 1;
	case MSGPACK_OBJECT_BOOLEAN:
		d->type = SPOP_T_BOOL;
		d->u.b = o->via.boolean ? 1 : 0;
		return 1;
	case MSGPACK_OBJECT_STR:
		d->type = SPOP_T_STR;
		d->u.str.ptr = o->via.str.ptr;
		d->u.str.len = o->via.str.size;
		return 1;
	case MSGPACK_OBJECT_BIN:
		d->type = SPOP_T_BIN;
		d->u.str.ptr = o->via.bin.ptr;
		d->u.str.len = o->via.bin.size;
		return 1;
	default:
		return 0;
	}
}

int claims_encode(const char *buf, size_t len, const char *var_prefix,
                  uint8_t **p, const uint8_t *end, unsigned *skipped)
{
	msgpack_unpacked up;
	uint8_t *start = *p, *cur = *p;
	unsigned nskip = 0;
	size_t off = 0;
	uint32_t i;
	int ret = -1, count = 0;

	if (skipped)
		*skipped = 0;
	if (!buf || len == 0 || claims_msgpack_span((const uint8_t *)buf, len) != len)
		return -1;

	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
	    off != len || up.data.type != MSGPACK_OBJECT_MAP)
		goto out_destroy;

	for (i = 0; i < up.data.via.map.size; i++) {
		const msgpack_object_kv *kv = &up.data.via.map.ptr[i];
		char name[VARNAME_FULL_MAX + 1];
		struct spop_data d;
		size_t nlen;

		if (kv->key.type != MSGPACK_OBJECT_STR ||
		    !claims_value(&kv->val, &d) ||
		    (nlen = claims_var_name(name, sizeof(name), kv->key.via.str.ptr,
		                            kv->key.via.str.size)) == 0 ||
		    varname_check(var_prefix, name, nlen) != 0) {
			nskip++;
			continue;
		}
		if (!spop_put_set_var(&cur, end, SPOP_SCOPE_TXN, name, nlen, &d)) {
			ret = -2;
			goto out_destroy;
		}
		count++;
	}
	*p = cur;
	if (skipped)
		*skipped = nskip;
	ret = count;

out_destroy:
	msgpack_unpacked_destroy(&up);
	if (ret < 0)
		*p = start;
	return ret;
}
