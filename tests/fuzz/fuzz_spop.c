/*
 * fuzz_spop.c: libFuzzer target for the SPOP codec (agent/spop.c).
 *
 * What it does: treats the input as a connection's receive buffer and
 * decodes frames in a loop the way the connection code does
 * (spop_frame_decode with a 16380 limit, then per type: HELLO decode and
 * check, NOTIFY message/argument iteration, DISCONNECT decode, ACK action
 * iteration, plus a raw KV walk of every payload). It checks that cursors
 * stay inside the frame, that consumed <= size, and that every decoded item
 * re-encodes to the same bytes (the varint encoding is a bijection, so only
 * the flag nibble of a type byte may differ) and decodes back equal.
 *
 * What it never does: I/O or allocation beyond libFuzzer's own; a failed
 * invariant calls abort() so libFuzzer records the input.
 *
 * Build: make fuzz (clang -fsanitize=fuzzer,address,undefined).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spop.h"
#include "fuzz.h"

#define FUZZ_MAX_FRAME 16380


/* <lo> <= <p> <= <hi> */
static int in_range(const uint8_t *p, const uint8_t *lo, const uint8_t *hi)
{
	return p >= lo && p <= hi;
}

static int data_equal(const struct spop_data *a, const struct spop_data *b)
{
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case SPOP_T_NULL:
		return 1;
	case SPOP_T_BOOL:
		return a->u.b == b->u.b;
	case SPOP_T_INT32:
	case SPOP_T_INT64:
		return a->u.s64 == b->u.s64;
	case SPOP_T_UINT32:
	case SPOP_T_UINT64:
		return a->u.u64 == b->u.u64;
	case SPOP_T_IPV4:
		return memcmp(a->u.ip, b->u.ip, 4) == 0;
	case SPOP_T_IPV6:
		return memcmp(a->u.ip, b->u.ip, 16) == 0;
	case SPOP_T_STR:
	case SPOP_T_BIN:
		return a->u.str.len == b->u.str.len &&
		       (a->u.str.len == 0 || memcmp(a->u.str.ptr, b->u.str.ptr, a->u.str.len) == 0);
	default:
		return 0;
	}
}

/* <d> was decoded from <src>..<src_end>: re-encode, compare bytes (type byte:
 * low nibble only, BOOL: the canonical byte), decode back, compare values. */
static void roundtrip_data(const struct spop_data *d, const uint8_t *src, const uint8_t *src_end)
{
	static uint8_t out[FUZZ_MAX_FRAME + 64];
	size_t n = (size_t)(src_end - src);
	uint8_t *p = out;
	const uint8_t *q;
	struct spop_data back;

	CHECK(n >= 1 && n <= sizeof(out));
	CHECK(spop_put_data(&p, out + sizeof(out), d) == 1);
	CHECK((size_t)(p - out) == n);
	if (d->type == SPOP_T_BOOL)
		CHECK(out[0] == (d->u.b ? 0x11 : 0x01));
	else
		CHECK(out[0] == (src[0] & 0x0F));
	CHECK(memcmp(out + 1, src + 1, n - 1) == 0);
	q = out;
	CHECK(spop_data_decode(&q, p, &back) == 1 && q == p);
	CHECK(data_equal(d, &back));

	/* every smaller output buffer fails without moving the cursor */
	if (n > 1) {
		size_t cut = n - 1 - (size_t)src[n - 1] % n;

		p = out;
		CHECK(spop_put_data(&p, out + cut, d) == 0 && p == out);
	}
}

static void roundtrip_str(const struct spop_str *s, const uint8_t *src, const uint8_t *src_end)
{
	static uint8_t out[FUZZ_MAX_FRAME + 64];
	uint8_t *p = out;

	CHECK(spop_put_str(&p, out + sizeof(out), s->ptr, s->len) == 1);
	CHECK(p - out == src_end - src);
	CHECK(memcmp(out, src, (size_t)(p - out)) == 0);
}

static void walk_kv(const struct spop_frame *f)
{
	const uint8_t *p = f->payload;
	struct spop_str k;
	struct spop_data v;
	int r;

	for (;;) {
		const uint8_t *before = p;

		r = spop_kv_next(&p, f->end, &k, &v);
		CHECK(in_range(p, f->payload, f->end));
		if (r != 1) {
			CHECK(p == before);
			CHECK(r == 0 ? p == f->end : r == -1);
			break;
		}
		CHECK(p > before);
		CHECK(in_range((const uint8_t *)k.ptr, before, p));
		CHECK(in_range((const uint8_t *)k.ptr + k.len, before, p));
		{
			/* the key is a bare string ending where the value starts */
			const uint8_t *vstart = (const uint8_t *)k.ptr + k.len;

			roundtrip_str(&k, before, vstart);
			roundtrip_data(&v, vstart, p);
		}
	}
}

static void do_hello(const struct spop_frame *f)
{
	static uint8_t out[512];
	struct spop_hello h;
	uint32_t mx = 0;
	int r = spop_hello_decode(f, &h);

	CHECK(r == 0 || r == -SPOP_ERR_INVALID);
	if (r != 0)
		return;
	if (h.has_versions)
		CHECK(in_range((const uint8_t *)h.versions.ptr + h.versions.len, f->payload, f->end));
	if (h.has_capabilities)
		CHECK(in_range((const uint8_t *)h.capabilities.ptr + h.capabilities.len,
		               f->payload, f->end));
	r = spop_hello_check(&h, FUZZ_MAX_FRAME, &mx);
	CHECK(r == 0 || r == -SPOP_ERR_NO_VSN || r == -SPOP_ERR_BAD_VSN ||
	      r == -SPOP_ERR_NO_FRAME_SIZE || r == -SPOP_ERR_BAD_FRAME_SIZE);
	if (r == 0) {
		struct spop_frame af;
		size_t n;

		CHECK(mx >= SPOP_MAX_FRAME_MIN && mx <= FUZZ_MAX_FRAME && mx <= h.max_frame_size);
		n = spop_agent_hello_encode(out, out + sizeof(out), mx, "pipelining");
		CHECK(n > 0);
		CHECK(spop_frame_decode(out, n, FUZZ_MAX_FRAME, &af, NULL) == (long)n);
		CHECK(af.type == SPOP_FRM_AGENT_HELLO && af.flags == SPOP_FL_FIN);
	}
}

static void do_disconnect(const struct spop_frame *f)
{
	static uint8_t out[512];
	char msg[256];
	struct spop_disconnect d, back;
	struct spop_frame af;
	size_t n, ml;

	if (spop_disconnect_decode(f, &d) != 0)
		return;
	CHECK(d.message.len == 0 ||
	      in_range((const uint8_t *)d.message.ptr + d.message.len, f->payload, f->end));
	/* answer it: AGENT-DISCONNECT with the same status and message */
	ml = d.message.len < 255 ? d.message.len : 255;
	memcpy(msg, d.message.ptr, ml);
	msg[ml] = 0;
	ml = strlen(msg);
	n = spop_agent_disconnect_encode(out, out + sizeof(out), (enum spop_error)(d.status & 0xffff),
	                                 msg);
	CHECK(n > 0);
	CHECK(spop_frame_decode(out, n, FUZZ_MAX_FRAME, &af, NULL) == (long)n);
	CHECK(spop_disconnect_decode(&af, &back) == 0);
	CHECK(back.status == (d.status & 0xffff));
	CHECK(back.message.len == ml && memcmp(back.message.ptr, msg, ml) == 0);
}

static void do_notify(const struct spop_frame *f)
{
	const uint8_t *p = f->payload;
	struct spop_str name;
	unsigned nargs;
	int r;

	for (;;) {
		const uint8_t *before = p, *args;

		r = spop_msg_next(&p, f->end, &name, &nargs);
		CHECK(in_range(p, f->payload, f->end));
		if (r != 1) {
			CHECK(p == before && (r == 0 ? p == f->end : r == -1));
			return;
		}
		CHECK(nargs <= 255);
		roundtrip_str(&name, before, p - 1);
		args = p;
		/* skip_args and the argument loop agree */
		{
			const uint8_t *s = args;
			int sr = spop_msg_skip_args(&s, f->end, nargs);
			unsigned i;

			for (i = 0; i < nargs; i++) {
				const uint8_t *ab = p;
				struct spop_str an;
				struct spop_data av;

				if (spop_arg_next(&p, f->end, &an, &av) != 1) {
					CHECK(p == ab);
					break;
				}
				CHECK(in_range(p, ab + 2, f->end));
				roundtrip_str(&an, ab, (const uint8_t *)an.ptr + an.len);
				roundtrip_data(&av, (const uint8_t *)an.ptr + an.len, p);
			}
			if (i < nargs) {
				CHECK(sr == -1 && s == args);
				return;
			}
			CHECK(sr == 1 && s == p);
		}
	}
}

static void do_ack(const struct spop_frame *f)
{
	static uint8_t out[FUZZ_MAX_FRAME + 64];
	const uint8_t *p = f->payload;
	struct spop_action a;

	for (;;) {
		const uint8_t *before = p;
		uint8_t *o = out;
		int r = spop_action_next(&p, f->end, &a);

		CHECK(in_range(p, f->payload, f->end));
		if (r != 1) {
			CHECK(p == before && (r == 0 ? p == f->end : r == -1));
			return;
		}
		if (a.type == SPOP_ACT_SET_VAR)
			CHECK(spop_put_set_var(&o, out + sizeof(out), (enum spop_scope)a.scope,
			                       a.name.ptr, a.name.len, &a.value) == 1);
		else
			CHECK(spop_put_unset_var(&o, out + sizeof(out), (enum spop_scope)a.scope,
			                         a.name.ptr, a.name.len) == 1);
		CHECK(o - out == p - before);
		if (a.type == SPOP_ACT_SET_VAR) {
			/* header and name identical; the value as in roundtrip_data */
			size_t vh = (size_t)((const uint8_t *)a.name.ptr + a.name.len - before);

			CHECK(memcmp(out, before, vh) == 0);
			roundtrip_data(&a.value, before + vh, p);
		} else {
			CHECK(memcmp(out, before, (size_t)(o - out)) == 0);
		}
	}
}

/* Frame header: re-encoding TYPE/SID/FID gives the same bytes, bar FLAGS. */
static void roundtrip_header(const uint8_t *buf, const struct spop_frame *f)
{
	uint8_t out[SPOP_FRAME_HDR_MAX];
	uint8_t *p = spop_frame_begin(out, out + sizeof(out), f->type, f->sid, f->fid);

	CHECK(p != NULL);
	CHECK(p - out == f->payload - buf);
	CHECK(out[4] == buf[4]);
	CHECK(memcmp(out + 9, buf + 9, (size_t)(p - out) - 9) == 0);
	CHECK(spop_frame_end(out, p) == (size_t)(p - out));
	/* The ACK writer: the same header for this frame's ids and payload, and
	 * its size check exactly at the frame's LEN. */
	{
		uint8_t ack[SPOP_FRAME_HDR_MAX];
		size_t plen = (size_t)(f->end - f->payload);
		size_t flen = (size_t)(f->end - buf) - SPOP_FRAME_LEN_SIZE;
		size_t h = spop_ack_header(ack, ack + sizeof(ack), f->sid, f->fid, plen, 0,
		                           (uint32_t)flen);

		CHECK(h == (size_t)(p - out));
		CHECK(ack[4] == SPOP_FRM_ACK);
		CHECK(memcmp(ack + 9, out + 9, h - 9) == 0);
		CHECK(memcmp(ack, buf, SPOP_FRAME_LEN_SIZE) == 0);
		CHECK(spop_ack_header(ack, ack + sizeof(ack), f->sid, f->fid, plen, 1,
		                      (uint32_t)flen) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	while (off < size) {
		const uint8_t *buf = data + off;
		size_t avail = size - off, need = 0;
		struct spop_frame f;
		long r = spop_frame_decode(buf, avail, FUZZ_MAX_FRAME, &f, &need);

		if (r == 0) {
			CHECK(need == 4 ? avail < 4 : (need > avail && need >= 4 + SPOP_FRAME_MIN_LEN &&
			                              need <= 4 + FUZZ_MAX_FRAME));
			break;
		}
		if (r < 0) {
			CHECK(r == -SPOP_ERR_TOO_BIG || r == -SPOP_ERR_INVALID ||
			      r == -SPOP_ERR_FRAG_NOT_SUPPORTED);
			CHECK(avail >= 4);
			break;
		}
		CHECK((size_t)r <= avail && r >= 4 + SPOP_FRAME_MIN_LEN);
		CHECK(f.end == buf + r);
		CHECK(f.payload >= buf + 11 && f.payload <= f.end);
		CHECK(f.payload - buf <= SPOP_FRAME_HDR_MAX);
		CHECK((f.flags & SPOP_FL_FIN) && f.type != SPOP_FRM_UNSET);
		roundtrip_header(buf, &f);
		walk_kv(&f);
		switch (f.type) {
		case SPOP_FRM_HAPROXY_HELLO:
			do_hello(&f);
			break;
		case SPOP_FRM_HAPROXY_DISCON:
		case SPOP_FRM_AGENT_DISCON:
			do_disconnect(&f);
			break;
		case SPOP_FRM_NOTIFY:
			do_notify(&f);
			break;
		case SPOP_FRM_ACK:
			do_ack(&f);
			break;
		default:
			break;      /* unknown frame types are ignored */
		}
		off += (size_t)r;
	}
	CHECK(off <= size);
	(void)spop_err_to_str((enum spop_error)(size & 0x7f));
	return 0;
}
