/*
 * test_spop.c: unit tests of the SPOP codec (agent/spop.c).
 *
 * What it does: decodes every real HAProxy capture in tests/vectors (or the
 * directory named by $SPOP_VECTORS), checks every field against the capture
 * notes, re-encodes the agent frames byte for byte, checks the varint
 * vectors of the SPOP notes, and feeds the decoders truncated, oversized and
 * malformed input. Every input under test is an exact-size heap copy so that
 * ASan reports any read past the end; every encoder is run into exact-size
 * heap buffers of every size too small to hold its output.
 *
 * What it never does: network I/O, or depend on anything but spop.c.
 * Run from the repository root (make unit does).
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spop.h"
#include "tap.h"

#define MAX_VECS 64

struct vec {
	char name[128];
	uint8_t *b;
	size_t len;
};

static struct vec vecs[MAX_VECS];
static size_t nvecs;

/* ---- helpers ---- */

/* Exact-size heap copy of <p>/<n>, so ASan sees any over-read. */
static uint8_t *dup_exact(const void *p, size_t n)
{
	uint8_t *b = malloc(n ? n : 1);

	if (!b) {
		perror("malloc");
		exit(2);
	}
	if (n)
		memcpy(b, p, n);
	return b;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes the hex string <hex> (whitespace ignored) into a malloc'ed
 * exact-size buffer. Returns NULL on a bad digit or odd count. */
static uint8_t *unhex(const char *hex, size_t *len)
{
	size_t n = 0, cap = strlen(hex) / 2 + 1;
	uint8_t *tmp = malloc(cap), *out;
	int hi = -1;

	if (!tmp)
		exit(2);
	for (; *hex; hex++) {
		int v;

		if (*hex == ' ' || *hex == '\n' || *hex == '\r' || *hex == '\t')
			continue;
		v = hexval((unsigned char)*hex);
		if (v < 0) {
			free(tmp);
			return NULL;
		}
		if (hi < 0) {
			hi = v;
		} else {
			tmp[n++] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
	}
	if (hi >= 0) {
		free(tmp);
		return NULL;
	}
	out = dup_exact(tmp, n);
	free(tmp);
	*len = n;
	return out;
}

static int vec_cmp(const void *a, const void *b)
{
	return strcmp(((const struct vec *)a)->name, ((const struct vec *)b)->name);
}

static void load_vectors(const char *dir)
{
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d) {
		diag("cannot open vector directory %s", dir);
		return;
	}
	while ((de = readdir(d)) != NULL && nvecs < MAX_VECS) {
		size_t nl = strlen(de->d_name);
		char path[1024], *text;
		FILE *fp;
		long sz;

		if (nl < 5 || strcmp(de->d_name + nl - 4, ".hex") != 0 ||
		    nl >= sizeof(vecs[0].name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fp = fopen(path, "rb");
		if (!fp)
			continue;
		fseek(fp, 0, SEEK_END);
		sz = ftell(fp);
		fseek(fp, 0, SEEK_SET);
		text = calloc(1, (size_t)(sz > 0 ? sz : 0) + 1);
		if (!text || fread(text, 1, (size_t)sz, fp) != (size_t)sz) {
			free(text);
			fclose(fp);
			continue;
		}
		fclose(fp);
		vecs[nvecs].b = unhex(text, &vecs[nvecs].len);
		free(text);
		if (!vecs[nvecs].b) {
			diag("%s: not hex", path);
			continue;
		}
		memcpy(vecs[nvecs].name, de->d_name, nl + 1);
		nvecs++;
	}
	closedir(d);
	qsort(vecs, nvecs, sizeof(vecs[0]), vec_cmp);
}

static const struct vec *find_vec(const char *name)
{
	size_t i;

	for (i = 0; i < nvecs; i++)
		if (strcmp(vecs[i].name, name) == 0)
			return &vecs[i];
	return NULL;
}

static int str_is(struct spop_str s, const char *lit)
{
	return s.len == strlen(lit) && (s.len == 0 || memcmp(s.ptr, lit, s.len) == 0);
}

/* Decodes frame <b>/<len> completely, whatever its type, the way the
 * connection code would. Returns 0 if everything decoded, <0 on the first
 * error. Only the return codes matter; ASan watches the reads. */
static int decode_all(const uint8_t *b, size_t len)
{
	struct spop_frame f;
	struct spop_hello h;
	struct spop_disconnect dc;
	struct spop_action act;
	struct spop_str name;
	struct spop_data val;
	const uint8_t *p;
	unsigned nargs;
	uint32_t neg;
	long r;
	int rc;

	r = spop_frame_decode(b, len, 16380, &f, NULL);
	if (r <= 0)
		return r == 0 ? -100 : (int)r;
	if (f.payload < b + 9 || f.payload > f.end || f.end != b + r)
		return -200;
	switch (f.type) {
	case SPOP_FRM_HAPROXY_HELLO:
	case SPOP_FRM_AGENT_HELLO:
		rc = spop_hello_decode(&f, &h);
		if (rc == 0)
			(void)spop_hello_check(&h, 16380, &neg);
		return rc;
	case SPOP_FRM_HAPROXY_DISCON:
	case SPOP_FRM_AGENT_DISCON:
		return spop_disconnect_decode(&f, &dc);
	case SPOP_FRM_NOTIFY:
		p = f.payload;
		while ((rc = spop_msg_next(&p, f.end, &name, &nargs)) == 1) {
			while (nargs--)
				if (spop_arg_next(&p, f.end, &name, &val) != 1)
					return -1;
		}
		return rc;
	case SPOP_FRM_ACK:
		p = f.payload;
		while ((rc = spop_action_next(&p, f.end, &act)) == 1)
			;
		return rc;
	default:
		return 0;
	}
}

/* ---- varints ---- */

struct varint_vec {
	uint64_t v;
	const char *hex;
};

static const struct varint_vec varint_vecs[] = {
	{ 0, "00" },
	{ 239, "ef" },
	{ 240, "f000" },
	{ 300, "fc03" },
	{ 2287, "ff7f" },
	{ 2288, "f08000" },
	{ 16380, "fcf006" },
	{ 4294967295u, "fff0fefe7e" },
	{ UINT64_MAX, "fff0fefefefefefefe0e" },
};

/* Encodes <v> with a big buffer; returns the length. */
static size_t varint_len(uint64_t v)
{
	uint8_t buf[16], *p = buf;

	spop_varint_encode(&p, buf + sizeof(buf), v);
	return (size_t)(p - buf);
}

static void check_varint_roundtrip(uint64_t v, unsigned *bad)
{
	uint8_t buf[SPOP_VARINT_MAX], *p = buf;
	const uint8_t *q;
	uint64_t got;
	size_t n, cut;

	if (spop_varint_encode(&p, buf + sizeof(buf), v) != 1) {
		(*bad)++;
		return;
	}
	n = (size_t)(p - buf);
	/* every prefix: need more data, cursor unchanged */
	for (cut = 0; cut <= n; cut++) {
		uint8_t *c = dup_exact(buf, cut);
		int r;

		q = c;
		r = spop_varint_decode(&q, c + cut, &got);
		if (cut < n && (r != 0 || q != c))
			(*bad)++;
		if (cut == n && (r != 1 || got != v || q != c + n))
			(*bad)++;
		free(c);
	}
	/* every too-small output buffer: 0, nothing written, cursor unchanged */
	for (cut = 0; cut < n; cut++) {
		uint8_t *o = malloc(cut ? cut : 1), *op = o;

		if (spop_varint_encode(&op, o + cut, v) != 0 || op != o)
			(*bad)++;
		free(o);
	}
}

static void test_varints(void)
{
	size_t i;
	unsigned bad = 0, count = 0;
	int k;

	for (i = 0; i < sizeof(varint_vecs) / sizeof(varint_vecs[0]); i++) {
		const struct varint_vec *vv = &varint_vecs[i];
		size_t wlen;
		uint8_t *want = unhex(vv->hex, &wlen);
		uint8_t out[SPOP_VARINT_MAX + 4], *p = out;
		const uint8_t *q = want;
		uint64_t got = 0;
		char name[96];

		snprintf(name, sizeof(name), "varint encode %" PRIu64, vv->v);
		ok(spop_varint_encode(&p, out + sizeof(out), vv->v) == 1, "%s returns 1", name);
		is_mem(out, (size_t)(p - out), want, wlen, name);
		snprintf(name, sizeof(name), "varint decode %s", vv->hex);
		ok(spop_varint_decode(&q, want + wlen, &got) == 1 && got == vv->v &&
		   q == want + wlen, "%s = %" PRIu64, name, vv->v);
		free(want);
	}

	/* round trips: small values, powers of two +-1, pseudo-random values */
	for (i = 0; i <= 5000; i++, count++)
		check_varint_roundtrip(i, &bad);
	for (k = 0; k < 64; k++) {
		uint64_t v = (uint64_t)1 << k;

		check_varint_roundtrip(v - 1, &bad);
		check_varint_roundtrip(v, &bad);
		check_varint_roundtrip(v + 1, &bad);
		check_varint_roundtrip(~v, &bad);
		count += 4;
	}
	check_varint_roundtrip(UINT64_MAX, &bad);
	check_varint_roundtrip(UINT64_MAX - 1, &bad);
	{
		uint64_t x = 0x9E3779B97F4A7C15u;

		for (i = 0; i < 20000; i++, count++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			check_varint_roundtrip(x >> (i % 64), &bad);
		}
	}
	ok(bad == 0, "varint round trips over %u values (%u failures)", count + 2, bad);

	/* lengths: 1 byte below 240, 10 bytes for the top of the range */
	is_int(varint_len(239), 1, "varint 239 is 1 byte");
	is_int(varint_len(240), 2, "varint 240 is 2 bytes");
	is_int(varint_len(UINT64_MAX), 10, "varint UINT64_MAX is 10 bytes");

	/* malformed */
	{
		static const struct {
			const char *hex;
			int want;
			const char *what;
		} bad_vecs[] = {
			{ "ffffffffffffffffffff00", -1, "11-byte varint" },
			{ "ffffffffffffffffffff", -1, "10 continuation bytes, no end" },
			{ "f0808080808080808080", -1, "10 bytes, 10th still continuing" },
			{ "fff0fefefefefefefe0f", -1, "UINT64_MAX + 2^60 overflows" },
			{ "ffffffffffffffffff7f", -1, "10-byte value above 2^64" },
			{ "ff", 0, "1 of 2+ bytes: need more" },
			{ "ffffffffffffffffff", 0, "9 continuation bytes: need more" },
			{ "", 0, "empty: need more" },
		};

		for (i = 0; i < sizeof(bad_vecs) / sizeof(bad_vecs[0]); i++) {
			size_t n = 0;
			uint8_t *b = unhex(bad_vecs[i].hex, &n);
			const uint8_t *q = b;
			uint64_t v;

			is_int(spop_varint_decode(&q, b + n, &v), bad_vecs[i].want, bad_vecs[i].what);
			ok(q == b, "%s: cursor unchanged", bad_vecs[i].what);
			free(b);
		}
	}
}

/* ---- the captures ---- */

static void test_vectors_present(void)
{
	static const char *const expected[] = {
		"agent-ack-sid0-fid1.hex", "agent-ack-sid1-fid1.hex",
		"agent-disconnect.hex", "agent-hello.hex",
		"haproxy-2.6-disconnect-idle.hex", "haproxy-2.6-hello-healthcheck.hex",
		"haproxy-2.6-hello.hex", "haproxy-2.6-notify.hex",
		"haproxy-3.4-hello-healthcheck.hex", "haproxy-3.4-hello.hex",
		"haproxy-3.4-notify.hex",
	};
	size_t i;

	for (i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
		ok(find_vec(expected[i]) != NULL, "vector %s loaded", expected[i]);
}

/* Every vector decodes as one whole frame with the expected header. */
static void test_frames(void)
{
	size_t i;

	for (i = 0; i < nvecs; i++) {
		const struct vec *v = &vecs[i];
		uint8_t *b = dup_exact(v->b, v->len);
		struct spop_frame f;
		size_t need = 0;
		long r = spop_frame_decode(b, v->len, 16380, &f, &need);

		is_int(r, (long)v->len, v->name);
		if (r > 0) {
			ok(f.flags == SPOP_FL_FIN, "%s: flags exactly FIN", v->name);
			ok(f.end == b + v->len && f.payload > b && f.payload <= f.end,
			   "%s: payload bounds", v->name);
			is_int(decode_all(b, v->len), 0, "decodes completely");
		}
		/* LEN is within max: just at the limit still decodes */
		r = spop_frame_decode(b, v->len, (uint32_t)(v->len - 4), &f, NULL);
		is_int(r, (long)v->len, "LEN == max_len accepted");
		r = spop_frame_decode(b, v->len, (uint32_t)(v->len - 5), &f, NULL);
		is_int(r, -SPOP_ERR_TOO_BIG, "LEN == max_len + 1 is TOO_BIG");
		free(b);
	}
}

static void test_hellos(void)
{
	static const struct {
		const char *file;
		const char *caps;
		int healthcheck;
		size_t engine_len;
	} hv[] = {
		{ "haproxy-2.6-hello.hex", "pipelining,async", 0, 36 },
		{ "haproxy-3.4-hello.hex", "pipelining", 0, 36 },
		{ "haproxy-2.6-hello-healthcheck.hex", "", 1, 0 },
		{ "haproxy-3.4-hello-healthcheck.hex", "", 1, 0 },
	};
	size_t i;

	for (i = 0; i < sizeof(hv) / sizeof(hv[0]); i++) {
		const struct vec *v = find_vec(hv[i].file);
		struct spop_frame f;
		struct spop_hello h;
		uint32_t mx = 0;
		uint8_t *b;

		if (!ok(v != NULL, "%s present", hv[i].file))
			continue;
		b = dup_exact(v->b, v->len);
		if (!ok(spop_frame_decode(b, v->len, 16380, &f, NULL) > 0, "%s: frame", v->name)) {
			free(b);
			continue;
		}
		is_int(f.type, SPOP_FRM_HAPROXY_HELLO, "type HAPROXY-HELLO");
		ok(f.sid == 0 && f.fid == 0, "%s: sid 0 fid 0", v->name);
		is_int(spop_hello_decode(&f, &h), 0, "hello decodes");
		ok(h.has_versions && str_is(h.versions, "2.0"), "%s: versions \"2.0\"", v->name);
		ok(h.has_max_frame_size && h.max_frame_size == 16380,
		   "%s: max-frame-size 16380", v->name);
		ok(h.has_capabilities && str_is(h.capabilities, hv[i].caps),
		   "%s: capabilities \"%s\"", v->name, hv[i].caps);
		is_int(h.healthcheck, hv[i].healthcheck, "healthcheck flag");
		is_int(h.engine_id.len, hv[i].engine_len, "engine-id length");
		is_int(spop_hello_check(&h, 16380, &mx), 0, "hello check passes");
		is_int(mx, 16380, "negotiated 16380");
		is_int(spop_hello_check(&h, 4096, &mx), 0, "hello check, own max 4096");
		is_int(mx, 4096, "negotiated min(own, haproxy)");
		is_int(spop_hello_check(&h, 65536, &mx), 0, "hello check, own max 65536");
		is_int(mx, 16380, "negotiated never above HAProxy's");
		free(b);
	}
}

struct want_arg {
	const char *name;
	enum spop_type type;
	const char *str;          /* STR */
	int64_t s64;              /* INT64 */
	int b;                    /* BOOL */
	const char *ip;           /* IPV4 / IPV6 as hex */
};

static const struct want_arg notify_args[] = {
	{ "cookie", SPOP_T_STR, "session=valid-42; theme=dark", 0, 0, NULL },
	{ "authorization", SPOP_T_STR, "Bearer abc.def", 0, 0, NULL },
	{ "token", SPOP_T_NULL, NULL, 0, 0, NULL },
	{ "xff", SPOP_T_STR, "10.1.2.3", 0, 0, NULL },
	{ "client_ip", SPOP_T_IPV4, NULL, 0, 0, "7f000001" },
	{ "uri", SPOP_T_STR, "/api/business/orders?id=7", 0, 0, NULL },
	{ "method", SPOP_T_STR, "GET", 0, 0, NULL },
	{ "host", SPOP_T_STR, "127.0.0.1:18400", 0, 0, NULL },
	{ "negative", SPOP_T_INT64, NULL, -5, 0, NULL },
	{ "big", SPOP_T_INT64, NULL, INT64_C(4294967296), 0, NULL },
	{ "flag", SPOP_T_BOOL, NULL, 0, 1, NULL },
	{ "noflag", SPOP_T_BOOL, NULL, 0, 0, NULL },
	{ "ip6", SPOP_T_IPV6, NULL, 0, 0, "00000000000000000000000000000001" },
	{ "bin", SPOP_T_BIN, NULL, 0, 0, NULL },
	{ "missing", SPOP_T_NULL, NULL, 0, 0, NULL },
};
#define NOTIFY_NARGS (sizeof(notify_args) / sizeof(notify_args[0]))

/* Checks one decoded argument against the capture notes. */
static void check_arg(const char *file, const struct want_arg *w,
                      struct spop_str name, const struct spop_data *d)
{
	ok(str_is(name, w->name), "%s: arg name %s", file, w->name);
	if (!ok(d->type == w->type, "%s: %s type %d", file, w->name, (int)w->type)) {
		diag("got type %d", (int)d->type);
		return;
	}
	switch (w->type) {
	case SPOP_T_STR:
		ok(str_is(d->u.str, w->str), "%s: %s = \"%s\"", file, w->name, w->str);
		break;
	case SPOP_T_INT64:
		ok(d->u.s64 == w->s64, "%s: %s = %" PRId64, file, w->name, w->s64);
		break;
	case SPOP_T_BOOL:
		is_int(d->u.b, w->b, w->b ? "bool true" : "bool false");
		break;
	case SPOP_T_IPV4:
	case SPOP_T_IPV6: {
		size_t n;
		uint8_t *ip = unhex(w->ip, &n);

		is_mem(d->u.ip, w->type == SPOP_T_IPV4 ? 4u : 16u, ip, n, w->name);
		free(ip);
		break;
	}
	case SPOP_T_BIN:
		/* req.hdrs_bin: (name, value) varint-length pairs ending 00 00 */
		ok(d->u.str.len == 0x93 && memcmp(d->u.str.ptr, "\x04host\x0f" "127.0.0.1:18400", 21) == 0 &&
		   memcmp(d->u.str.ptr + d->u.str.len - 2, "\0\0", 2) == 0,
		   "%s: bin = req.hdrs_bin, 147 bytes", file);
		break;
	default:
		break;
	}
}

static void test_notifies(void)
{
	static const struct {
		const char *file;
		uint64_t sid, fid;
	} nv[] = {
		{ "haproxy-2.6-notify.hex", 0, 1 },
		{ "haproxy-3.4-notify.hex", 1, 1 },
	};
	size_t i, k;

	for (i = 0; i < sizeof(nv) / sizeof(nv[0]); i++) {
		const struct vec *v = find_vec(nv[i].file);
		struct spop_frame f;
		struct spop_str name;
		struct spop_data d;
		const uint8_t *p, *start;
		unsigned nargs = 0;
		uint8_t *b;

		if (!ok(v != NULL, "%s present", nv[i].file))
			continue;
		b = dup_exact(v->b, v->len);
		if (!ok(spop_frame_decode(b, v->len, 16380, &f, NULL) == (long)v->len,
		        "%s: frame", v->name)) {
			free(b);
			continue;
		}
		is_int(f.type, SPOP_FRM_NOTIFY, "type NOTIFY");
		ok(f.sid == nv[i].sid && f.fid == nv[i].fid, "%s: sid %" PRIu64 " fid %" PRIu64,
		   v->name, nv[i].sid, nv[i].fid);
		p = f.payload;
		is_int(spop_msg_next(&p, f.end, &name, &nargs), 1, "first message");
		ok(str_is(name, "exchange"), "%s: message \"exchange\"", v->name);
		is_int(nargs, NOTIFY_NARGS, "15 arguments");
		start = p;
		for (k = 0; k < NOTIFY_NARGS && k < nargs; k++) {
			const uint8_t *before = p;
			size_t cut;
			unsigned bad = 0;

			if (!ok(spop_arg_next(&p, f.end, &name, &d) == 1, "%s: arg %zu decodes",
			        v->name, k))
				break;
			check_arg(v->name, &notify_args[k], name, &d);
			/* the same argument cut short anywhere is malformed */
			for (cut = 0; cut < (size_t)(p - before); cut++) {
				uint8_t *c = dup_exact(before, cut);
				const uint8_t *q = c;

				if (spop_arg_next(&q, c + cut, &name, &d) != -1 || q != c)
					bad++;
				free(c);
			}
			ok(bad == 0, "%s: arg %s truncated at every byte: -1", v->name,
			   notify_args[k].name);
		}
		is_int(spop_msg_next(&p, f.end, &name, &nargs), 0, "no second message");
		ok(p == f.end, "%s: cursor at the end", v->name);

		/* spop_msg_skip_args consumes exactly the same bytes */
		{
			const uint8_t *q = start;

			is_int(spop_msg_skip_args(&q, f.end, NOTIFY_NARGS), 1, "skip 15 args");
			ok(q == f.end, "%s: skip lands on the end", v->name);
			q = start;
			is_int(spop_msg_skip_args(&q, f.end, NOTIFY_NARGS + 1), -1,
			       "skip 16 args: -1");
			ok(q == start, "%s: failed skip leaves the cursor", v->name);
		}

		/* nargs larger than present: the 16th argument is malformed */
		{
			uint8_t *c = dup_exact(b, v->len);
			struct spop_frame f2;
			const uint8_t *q;
			unsigned n2 = 0;
			int r = 0;

			c[(size_t)(start - b) - 1] = (uint8_t)(NOTIFY_NARGS + 1);
			spop_frame_decode(c, v->len, 16380, &f2, NULL);
			q = f2.payload;
			spop_msg_next(&q, f2.end, &name, &n2);
			is_int(n2, NOTIFY_NARGS + 1, "patched nargs 16");
			for (k = 0; k < n2; k++)
				if ((r = spop_arg_next(&q, f2.end, &name, &d)) != 1)
					break;
			ok(k == NOTIFY_NARGS && r == -1, "%s: 16th arg is malformed", v->name);
			is_int(decode_all(c, v->len), -1, "decode_all: -1");
			free(c);
		}

		/* reserved type byte in place of the NULL of "token" */
		{
			uint8_t *c = dup_exact(b, v->len);
			const uint8_t *tok = (const uint8_t *)memmem(c, v->len, "\x05token\x00", 7);
			unsigned t, bad = 0;

			for (t = 10; tok && t <= 0xff; t++) {
				if ((t & 0x0F) < 10)
					continue;
				c[(size_t)(tok - c) + 6] = (uint8_t)t;
				if (decode_all(c, v->len) != -1)
					bad++;
			}
			ok(tok && bad == 0, "%s: reserved types 10..15 (any flags) in an arg: -1",
			   v->name);
			free(c);
		}
		free(b);
	}
}

static void test_disconnects(void)
{
	static const struct {
		const char *file;
		uint8_t type;
		uint64_t status;
		const char *msg;
	} dv[] = {
		{ "haproxy-2.6-disconnect-idle.hex", SPOP_FRM_HAPROXY_DISCON, 2, "a timeout occurred" },
		{ "agent-disconnect.hex", SPOP_FRM_AGENT_DISCON, 0, "bye" },
	};
	size_t i;

	for (i = 0; i < sizeof(dv) / sizeof(dv[0]); i++) {
		const struct vec *v = find_vec(dv[i].file);
		struct spop_frame f;
		struct spop_disconnect d;
		uint8_t *b;

		if (!ok(v != NULL, "%s present", dv[i].file))
			continue;
		b = dup_exact(v->b, v->len);
		spop_frame_decode(b, v->len, 16380, &f, NULL);
		is_int(f.type, dv[i].type, "disconnect frame type");
		is_int(spop_disconnect_decode(&f, &d), 0, "disconnect decodes");
		ok(d.status == dv[i].status, "%s: status %" PRIu64, v->name, dv[i].status);
		ok(str_is(d.message, dv[i].msg), "%s: message \"%s\"", v->name, dv[i].msg);
		free(b);
	}
}

/* ---- encoders ---- */

/* Builds the ACK of the vectors: txn status=200 (INT32), token="tok-abc". */
static size_t build_ack(uint8_t *buf, const uint8_t *end, uint64_t sid, uint64_t fid)
{
	struct spop_data st = { .type = SPOP_T_INT32, .u.s64 = 200 };
	struct spop_data tok = { .type = SPOP_T_STR, .u.str = { "tok-abc", 7 } };
	uint8_t *p = spop_frame_begin(buf, end, SPOP_FRM_ACK, sid, fid);

	if (!p || !spop_put_set_var(&p, end, SPOP_SCOPE_TXN, "status", 6, &st) ||
	    !spop_put_set_var(&p, end, SPOP_SCOPE_TXN, "token", 5, &tok))
		return 0;
	return spop_frame_end(buf, p);
}

static void test_agent_frames(void)
{
	uint8_t buf[512];
	const struct vec *v;
	size_t n;

	v = find_vec("agent-hello.hex");
	n = spop_agent_hello_encode(buf, buf + sizeof(buf), 16380, "pipelining");
	if (v)
		is_mem(buf, n, v->b, v->len, "AGENT-HELLO(16380, pipelining) == agent-hello.hex");

	v = find_vec("agent-disconnect.hex");
	n = spop_agent_disconnect_encode(buf, buf + sizeof(buf), SPOP_ERR_NONE, "bye");
	if (v)
		is_mem(buf, n, v->b, v->len, "AGENT-DISCONNECT(0, bye) == agent-disconnect.hex");

	v = find_vec("agent-ack-sid0-fid1.hex");
	n = build_ack(buf, buf + sizeof(buf), 0, 1);
	if (v)
		is_mem(buf, n, v->b, v->len, "ACK sid 0 fid 1 == agent-ack-sid0-fid1.hex");

	v = find_vec("agent-ack-sid1-fid1.hex");
	n = build_ack(buf, buf + sizeof(buf), 1, 1);
	if (v)
		is_mem(buf, n, v->b, v->len, "ACK sid 1 fid 1 == agent-ack-sid1-fid1.hex");

	/* the ACK decodes back into the two actions */
	if (v) {
		uint8_t *b = dup_exact(v->b, v->len);
		struct spop_frame f;
		struct spop_action a;
		const uint8_t *p;

		spop_frame_decode(b, v->len, 16380, &f, NULL);
		is_int(f.type, SPOP_FRM_ACK, "ACK type 103");
		p = f.payload;
		ok(spop_action_next(&p, f.end, &a) == 1 && a.type == SPOP_ACT_SET_VAR &&
		   a.scope == SPOP_SCOPE_TXN && str_is(a.name, "status") &&
		   a.value.type == SPOP_T_INT32 && a.value.u.s64 == 200,
		   "ACK action 1: set-var txn status INT32 200");
		ok(spop_action_next(&p, f.end, &a) == 1 && a.type == SPOP_ACT_SET_VAR &&
		   str_is(a.name, "token") && a.value.type == SPOP_T_STR &&
		   str_is(a.value.u.str, "tok-abc"),
		   "ACK action 2: set-var txn token STR tok-abc");
		is_int(spop_action_next(&p, f.end, &a), 0, "ACK: no third action");
		free(b);
	}

	/* our AGENT-HELLO reads back as a KV-list (key "version", not
	 * "supported-versions": the HELLO decoder is HAProxy's side) */
	{
		struct spop_frame f;
		struct spop_str k;
		struct spop_data d;
		const uint8_t *p;

		n = spop_agent_hello_encode(buf, buf + sizeof(buf), 1000, NULL);
		ok(n > 0 && spop_frame_decode(buf, n, 16380, &f, NULL) == (long)n,
		   "AGENT-HELLO with NULL capabilities encodes");
		p = f.payload;
		ok(spop_kv_next(&p, f.end, &k, &d) == 1 && str_is(k, "version") &&
		   d.type == SPOP_T_STR && str_is(d.u.str, "2.0"), "version \"2.0\"");
		ok(spop_kv_next(&p, f.end, &k, &d) == 1 && str_is(k, "max-frame-size") &&
		   d.type == SPOP_T_UINT32 && d.u.u64 == 1000, "max-frame-size UINT32 1000");
		ok(spop_kv_next(&p, f.end, &k, &d) == 1 && str_is(k, "capabilities") &&
		   d.type == SPOP_T_STR && d.u.str.len == 0, "capabilities sent empty");
		is_int(spop_kv_next(&p, f.end, &k, &d), 0, "three keys exactly");
	}

	/* a DISCONNECT message is cut at 255 bytes */
	{
		char longmsg[400];
		struct spop_frame f;
		struct spop_disconnect d;

		memset(longmsg, 'x', sizeof(longmsg) - 1);
		longmsg[sizeof(longmsg) - 1] = 0;
		n = spop_agent_disconnect_encode(buf, buf + sizeof(buf), SPOP_ERR_TOO_BIG, longmsg);
		ok(n > 0 && spop_frame_decode(buf, n, 16380, &f, NULL) == (long)n,
		   "long DISCONNECT encodes");
		ok(spop_disconnect_decode(&f, &d) == 0 && d.status == 3 && d.message.len == 255,
		   "message truncated to 255 bytes, status 3");
	}
}

/* Runs <enc> into exact-size buffers of every size below the needed one. */
enum enc_kind { ENC_HELLO, ENC_DISCON, ENC_ACK, ENC_BEGIN };

static size_t run_enc(enum enc_kind k, uint8_t *buf, const uint8_t *end)
{
	uint8_t *p;

	switch (k) {
	case ENC_HELLO:
		return spop_agent_hello_encode(buf, end, 16380, "pipelining");
	case ENC_DISCON:
		return spop_agent_disconnect_encode(buf, end, SPOP_ERR_TOUT, "a timeout occurred");
	case ENC_ACK:
		return build_ack(buf, end, UINT64_MAX, 1u << 20);
	case ENC_BEGIN:
		p = spop_frame_begin(buf, end, SPOP_FRM_ACK, UINT64_MAX, UINT64_MAX);
		return p ? (size_t)(p - buf) : 0;
	}
	return 0;
}

static void test_encoders_short(void)
{
	static const char *const names[] = { "AGENT-HELLO", "AGENT-DISCONNECT", "ACK",
	                                     "frame_begin" };
	enum enc_kind k;

	for (k = ENC_HELLO; k <= ENC_BEGIN; k++) {
		uint8_t big[512];
		size_t need = run_enc(k, big, big + sizeof(big)), n;
		unsigned bad = 0;

		ok(need > 0, "%s fits 512 bytes (%zu)", names[k], need);
		for (n = 0; n < need; n++) {
			uint8_t *b = malloc(n ? n : 1);

			if (run_enc(k, b, b + n) != 0)
				bad++;
			free(b);
		}
		ok(bad == 0, "%s: every size 0..%zu fails cleanly", names[k], need - 1);
		{
			uint8_t *b = malloc(need);

			ok(run_enc(k, b, b + need) == need && memcmp(b, big, need) == 0,
			   "%s: exact size works", names[k]);
			free(b);
		}
	}
	{
		uint8_t b[4];
		ok(spop_frame_begin(b, b + sizeof(b), SPOP_FRM_ACK, 0, 0) == NULL,
		   "frame_begin into 4 bytes: NULL");
	}
}

/* spop_ack_header(): the header of a frame whose payload follows from the
 * caller's buffers, the same bytes as spop_frame_begin()/end() around that
 * payload, and the one size check: a frame of exactly max-frame-size
 * passes, one byte more (payload or headroom) does not. */
static void test_ack_header(void)
{
	static const uint8_t pay[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
	uint8_t hdr[SPOP_FRAME_HDR_MAX], whole[SPOP_FRAME_HDR_MAX + sizeof(pay)], *p;
	size_t hlen, n, frame;
	struct spop_frame f;

	hlen = spop_ack_header(hdr, hdr + sizeof(hdr), 300, 70000, sizeof(pay), 0, 1u << 20);
	p = spop_frame_begin(whole, whole + sizeof(whole), SPOP_FRM_ACK, 300, 70000);
	memcpy(p, pay, sizeof(pay));
	n = spop_frame_end(whole, p + sizeof(pay));
	ok(hlen > 0 && hlen + sizeof(pay) == n && memcmp(hdr, whole, hlen) == 0,
	   "ack_header: the header of the whole frame (%zu bytes)", hlen);
	ok(spop_frame_decode(whole, n, 1u << 20, &f, NULL) == (long)n && f.type == SPOP_FRM_ACK &&
	   f.sid == 300 && f.fid == 70000 && f.end - f.payload == (long)sizeof(pay),
	   "ack_header: decodes as an ACK with its ids and payload");
	frame = hlen - SPOP_FRAME_LEN_SIZE + sizeof(pay);  /* LEN */
	ok(spop_ack_header(hdr, hdr + sizeof(hdr), 300, 70000, sizeof(pay), 0,
	                   (uint32_t)frame) == hlen, "ack_header: a frame of exactly the limit");
	is_int(spop_ack_header(hdr, hdr + sizeof(hdr), 300, 70000, sizeof(pay), 0,
	                       (uint32_t)frame - 1), 0, "ack_header: one byte over: refused");
	ok(spop_ack_header(hdr, hdr + sizeof(hdr), 300, 70000, sizeof(pay) - 4, 4,
	                   (uint32_t)frame) == hlen, "ack_header: headroom counted up to the limit");
	is_int(spop_ack_header(hdr, hdr + sizeof(hdr), 300, 70000, sizeof(pay) - 4, 5,
	                       (uint32_t)frame), 0, "ack_header: headroom one byte over: refused");
	is_int(spop_ack_header(hdr, hdr + sizeof(hdr), 1, 1, SIZE_MAX - 2, 8, UINT32_MAX), 0,
	       "ack_header: a size that wraps is refused");
	is_int(spop_ack_header(hdr, hdr + 8, 1, 1, 0, 0, 1u << 20), 0,
	       "ack_header: a short header buffer is refused");
}

/* put_data/put_str/put_set_var/put_unset_var at every too-small size. */
static void test_put_short(void)
{
	static const uint8_t ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
	struct spop_data ds[12];
	size_t nd = 0, i, n;
	unsigned bad = 0, cnt = 0;

	memset(ds, 0, sizeof(ds));
	ds[nd++].type = SPOP_T_NULL;
	ds[nd].type = SPOP_T_BOOL; ds[nd++].u.b = 1;
	ds[nd].type = SPOP_T_INT32; ds[nd++].u.s64 = -1;
	ds[nd].type = SPOP_T_UINT32; ds[nd++].u.u64 = 4294967295u;
	ds[nd].type = SPOP_T_INT64; ds[nd++].u.s64 = INT64_MIN;
	ds[nd].type = SPOP_T_UINT64; ds[nd++].u.u64 = UINT64_MAX;
	ds[nd].type = SPOP_T_IPV4; memcpy(ds[nd++].u.ip, "\x0a\x01\x02\x03", 4);
	ds[nd].type = SPOP_T_IPV6; memcpy(ds[nd++].u.ip, ip6, 16);
	ds[nd].type = SPOP_T_STR; ds[nd].u.str.ptr = "hello world"; ds[nd++].u.str.len = 11;
	ds[nd].type = SPOP_T_BIN; ds[nd].u.str.ptr = "\0\1\2"; ds[nd++].u.str.len = 3;
	ds[nd].type = SPOP_T_STR; ds[nd].u.str.ptr = ""; ds[nd++].u.str.len = 0;

	for (i = 0; i < nd; i++) {
		uint8_t big[64], *p = big;
		size_t need;
		const uint8_t *q;
		struct spop_data back;

		if (!spop_put_data(&p, big + sizeof(big), &ds[i])) {
			bad++;
			continue;
		}
		need = (size_t)(p - big);
		for (n = 0; n < need; n++, cnt++) {
			uint8_t *b = malloc(n ? n : 1), *c = b;

			if (spop_put_data(&c, b + n, &ds[i]) != 0 || c != b)
				bad++;
			free(b);
		}
		/* round trip through the decoder */
		q = big;
		if (spop_data_decode(&q, big + need, &back) != 1 || q != big + need ||
		    back.type != ds[i].type)
			bad++;
		cnt++;
		/* set-var with this value, every size */
		p = big;
		if (!spop_put_set_var(&p, big + sizeof(big), SPOP_SCOPE_TXN, "v.x_1", 5, &ds[i])) {
			bad++;
			continue;
		}
		need = (size_t)(p - big);
		for (n = 0; n < need; n++, cnt++) {
			uint8_t *b = malloc(n ? n : 1), *c = b;

			if (spop_put_set_var(&c, b + n, SPOP_SCOPE_TXN, "v.x_1", 5, &ds[i]) != 0 ||
			    c != b)
				bad++;
			free(b);
		}
	}
	ok(bad == 0, "put_data / put_set_var: %u short-buffer and round-trip checks", cnt);

	/* put_str and put_unset_var */
	{
		uint8_t big[300], *p = big;
		char s[260];

		memset(s, 'a', sizeof(s));
		bad = 0;
		ok(spop_put_str(&p, big + sizeof(big), s, sizeof(s)) == 1 &&
		   (size_t)(p - big) == 2 + sizeof(s), "put_str 260 bytes: 2-byte length");
		for (n = 0; n < 2 + sizeof(s); n++) {
			uint8_t *b = malloc(n ? n : 1), *c = b;

			if (spop_put_str(&c, b + n, s, sizeof(s)) != 0 || c != b)
				bad++;
			free(b);
		}
		ok(bad == 0, "put_str: every short size fails, cursor unchanged");

		p = big;
		ok(spop_put_unset_var(&p, big + sizeof(big), SPOP_SCOPE_TXN, "noop", 4) == 1,
		   "put_unset_var");
		is_mem(big, (size_t)(p - big), "\x02\x02\x02\x04noop", 8, "unset-var txn noop bytes");
		bad = 0;
		for (n = 0; n < 8; n++) {
			uint8_t *b = malloc(n ? n : 1), *c = b;

			if (spop_put_unset_var(&c, b + n, SPOP_SCOPE_TXN, "noop", 4) != 0 || c != b)
				bad++;
			free(b);
		}
		ok(bad == 0, "put_unset_var: every short size fails");
		{
			const uint8_t *q = big;
			struct spop_action a;

			ok(spop_action_next(&q, big + 8, &a) == 1 && a.type == SPOP_ACT_UNSET_VAR &&
			   a.scope == SPOP_SCOPE_TXN && str_is(a.name, "noop") &&
			   a.value.type == SPOP_T_NULL && q == big + 8, "unset-var decodes back");
		}
	}

	/* a reserved type cannot be encoded */
	{
		uint8_t big[16], *p = big;
		struct spop_data d;

		memset(&d, 0, sizeof(d));
		d.type = SPOP_T_ENTRIES;
		ok(spop_put_data(&p, big + sizeof(big), &d) == 0 && p == big,
		   "put_data refuses a reserved type");
	}
}

static void test_typed_data(void)
{
	static const struct {
		const char *hex;
		enum spop_type type;
		int b;
		const char *what;
	} bools[] = {
		{ "11", SPOP_T_BOOL, 1, "0x11 is true" },
		{ "01", SPOP_T_BOOL, 0, "0x01 is false" },
		{ "21", SPOP_T_BOOL, 0, "0x21 is false (flag nibble not exactly 1)" },
		{ "31", SPOP_T_BOOL, 0, "0x31 is false" },
		{ "f1", SPOP_T_BOOL, 0, "0xf1 is false" },
		{ "10", SPOP_T_NULL, 0, "0x10 is NULL, not false" },
	};
	size_t i;

	for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		size_t n;
		uint8_t *b = unhex(bools[i].hex, &n);
		const uint8_t *q = b;
		struct spop_data d;

		ok(spop_data_decode(&q, b + n, &d) == 1 && d.type == bools[i].type &&
		   (d.type != SPOP_T_BOOL || d.u.b == bools[i].b), "%s", bools[i].what);
		free(b);
	}

	/* BOOL encodes 0x11 / 0x01; any non-zero is true */
	{
		uint8_t out[2], *p = out;
		struct spop_data d = { .type = SPOP_T_BOOL, .u.b = 5 };

		spop_put_data(&p, out + 2, &d);
		d.u.b = 0;
		spop_put_data(&p, out + 2, &d);
		is_mem(out, (size_t)(p - out), "\x11\x01", 2, "BOOL true, false = 11 01");
	}

	/* negatives as two's complement, matching HAProxy's int(-5) */
	{
		uint8_t out[16], *p = out;
		struct spop_data d = { .type = SPOP_T_INT64, .u.s64 = -5 };
		size_t n;
		uint8_t *want = unhex("04fbf0fefefefefefefe0e", &n);
		const uint8_t *q;

		spop_put_data(&p, out + sizeof(out), &d);
		is_mem(out, (size_t)(p - out), want, n, "INT64 -5 = 04 fb f0 fe.. 0e");
		free(want);
		p = out;
		d.u.s64 = INT64_MIN;
		spop_put_data(&p, out + sizeof(out), &d);
		q = out;
		ok(spop_data_decode(&q, p, &d) == 1 && d.type == SPOP_T_INT64 &&
		   d.u.s64 == INT64_MIN, "INT64_MIN round trip");
		/* INT32 with a big varint still casts to s64 */
		q = (const uint8_t *)"\x02\xff\xf0\xfe\xfe\xfe\xfe\xfe\xfe\xfe\x0e";
		ok(spop_data_decode(&q, q + 11, &d) == 1 && d.type == SPOP_T_INT32 &&
		   d.u.s64 == -1, "INT32 all-ones varint is -1");
		q = (const uint8_t *)"\x05\xff\xf0\xfe\xfe\xfe\xfe\xfe\xfe\xfe\x0e";
		ok(spop_data_decode(&q, q + 11, &d) == 1 && d.type == SPOP_T_UINT64 &&
		   d.u.u64 == UINT64_MAX, "UINT64 all-ones varint is UINT64_MAX");
	}

	/* reserved types, alone and followed by plenty of bytes */
	{
		unsigned t, bad = 0;

		for (t = 0; t < 256; t++) {
			uint8_t b[24] = { (uint8_t)t, 1, 2, 3, 4, 5, 6, 7 };
			const uint8_t *q = b;
			struct spop_data d;
			int r = spop_data_decode(&q, b + sizeof(b), &d);

			if ((t & 0x0F) >= 10 && (r != -1 || q != b))
				bad++;
			if ((t & 0x0F) < 10 && r != 1)
				bad++;
		}
		ok(bad == 0, "type bytes 0..255: reserved low nibble 10..15 refused, others read");
	}

	/* lengths and sizes past the end */
	{
		static const struct {
			const char *hex;
			const char *what;
		} past[] = {
			{ "0805abcd", "STR length 5, 2 bytes present" },
			{ "09fff0fefefefefefefe0e", "BIN length UINT64_MAX" },
			{ "08ff", "STR length varint cut" },
			{ "067f0000", "IPV4 with 3 bytes" },
			{ "070000000000000000000000000000", "IPV6 with 15 bytes" },
			{ "04ffffffffffffffffffff00", "INT64 with an 11-byte varint" },
			{ "04", "INT64 without its varint" },
			{ "", "empty" },
		};

		for (i = 0; i < sizeof(past) / sizeof(past[0]); i++) {
			size_t n;
			uint8_t *b = unhex(past[i].hex, &n);
			const uint8_t *q = b;
			struct spop_data d;
			struct spop_str s;

			is_int(spop_data_decode(&q, b + n, &d), -1, past[i].what);
			ok(q == b, "%s: cursor unchanged", past[i].what);
			if (n > 0) {
				q = b + 1;
				if (past[i].hex[1] == '8' || past[i].hex[1] == '9')
					is_int(spop_str_decode(&q, b + n, &s), -1, "bare string too");
			}
			free(b);
		}
	}
}

/* Truncations: every prefix of every frame, every payload cut. */
static void test_truncations(void)
{
	size_t i, n;

	for (i = 0; i < nvecs; i++) {
		const struct vec *v = &vecs[i];
		unsigned bad = 0, errs = 0, oks = 0;
		struct spop_frame f;

		/* receive-buffer prefixes: need more, with the right <need> */
		for (n = 0; n < v->len; n++) {
			uint8_t *b = dup_exact(v->b, n);
			size_t need = 0;
			long r = spop_frame_decode(b, n, 16380, &f, &need);

			if (r != 0 || need != (n < 4 ? 4 : v->len))
				bad++;
			free(b);
		}
		ok(bad == 0, "%s: every prefix 0..%zu needs more data", v->name, v->len - 1);

		/* frames cut short with LEN patched: decode what is there */
		bad = 0;
		for (n = 4; n < v->len; n++) {
			uint8_t *b = dup_exact(v->b, n);
			int r;

			b[0] = (uint8_t)((n - 4) >> 24);
			b[1] = (uint8_t)((n - 4) >> 16);
			b[2] = (uint8_t)((n - 4) >> 8);
			b[3] = (uint8_t)(n - 4);
			r = decode_all(b, n);
			if (r == 0)
				oks++;
			else if (r < 0 && r != -100 && r != -200)
				errs++;
			else
				bad++;
			free(b);
		}
		ok(bad == 0, "%s: %zu short frames: %u decode, %u refused, none overran",
		   v->name, v->len - 4, oks, errs);
	}
}

static void test_frame_errors(void)
{
	struct spop_frame f;
	size_t need;
	uint32_t l;
	long r;

	/* only the 4-byte prefix: TOO_BIG / INVALID decided from it alone */
	{
		static const struct {
			const char *hex;
			long want;
			const char *what;
		} pre[] = {
			{ "00003ffd", -SPOP_ERR_TOO_BIG, "LEN 16381 > 16380 from 4 bytes" },
			{ "ffffffff", -SPOP_ERR_TOO_BIG, "LEN 0xffffffff" },
			{ "47455420", -SPOP_ERR_TOO_BIG, "\"GET \" probe" },
			{ "16030106", -SPOP_ERR_TOO_BIG, "TLS ClientHello" },
			{ "00003ffc", 0, "LEN 16380 from 4 bytes: need more" },
			{ "00000007", 0, "LEN 7 from 4 bytes: need more" },
		};
		size_t i;

		for (i = 0; i < sizeof(pre) / sizeof(pre[0]); i++) {
			size_t n;
			uint8_t *b = unhex(pre[i].hex, &n);

			need = 0;
			is_int(spop_frame_decode(b, n, 16380, &f, &need), pre[i].want, pre[i].what);
			if (pre[i].want == 0)
				is_int(need, 4 + ((size_t)b[2] << 8 | b[3]), "need = 4 + LEN");
			free(b);
		}
		for (l = 0; l < 7; l++) {
			uint8_t *b = dup_exact("\0\0\0", 4);
			char name[64];

			b[3] = (uint8_t)l;
			snprintf(name, sizeof(name), "LEN %u < 7 from 4 bytes: INVALID", l);
			is_int(spop_frame_decode(b, 4, 16380, &f, NULL), -SPOP_ERR_INVALID, name);
			free(b);
		}
		{
			uint8_t *b = dup_exact("\0\0", 3);

			need = 0;
			is_int(spop_frame_decode(b, 3, 16380, &f, &need), 0, "3 bytes: need more");
			is_int(need, 4, "need 4");
			is_int(spop_frame_decode(b, 0, 16380, &f, NULL), 0, "0 bytes, NULL need");
			free(b);
		}
	}

	/* FIN clear, ABORT only, type 0 */
	{
		const struct vec *v = find_vec("haproxy-2.6-notify.hex");

		if (v) {
			uint8_t *b = dup_exact(v->b, v->len);

			b[8] = 0;
			is_int(spop_frame_decode(b, v->len, 16380, &f, NULL),
			       -SPOP_ERR_FRAG_NOT_SUPPORTED, "NOTIFY with FIN clear");
			b[8] = SPOP_FL_ABORT;
			is_int(spop_frame_decode(b, v->len, 16380, &f, NULL),
			       -SPOP_ERR_FRAG_NOT_SUPPORTED, "NOTIFY with ABORT, no FIN");
			b[8] = SPOP_FL_FIN;
			b[4] = SPOP_FRM_UNSET;
			is_int(spop_frame_decode(b, v->len, 16380, &f, NULL),
			       -SPOP_ERR_FRAG_NOT_SUPPORTED, "type 0 (UNSET) with FIN");
			b[4] = 200;
			is_int(spop_frame_decode(b, v->len, 16380, &f, NULL), (long)v->len,
			       "unknown type 200 is a frame (the caller ignores it)");
			b[8] = SPOP_FL_FIN | SPOP_FL_ABORT;
			b[4] = SPOP_FRM_NOTIFY;
			is_int(spop_frame_decode(b, v->len, 16380, &f, NULL), (long)v->len,
			       "FIN|ABORT is a frame");
			free(b);
		}
	}

	/* bad SID / FID varints */
	{
		static const struct {
			const char *hex;
			long want;
			const char *what;
		} sf[] = {
			{ "0000000703000000010000", 11, "minimal frame, LEN 7" },
			{ "00000007030000000100ff", -SPOP_ERR_INVALID, "FID varint runs past LEN" },
			{ "0000000703000000010100", 11, "SID 1 FID 0 (the caller judges)" },
			{ "0000001103" "00000001" "ffffffffffffffffffff00" "00", -SPOP_ERR_INVALID,
			  "SID: 11-byte varint" },
			{ "0000001103" "00000001" "00" "ffffffffffffffffffff00", -SPOP_ERR_INVALID,
			  "FID: 11-byte varint" },
			{ "0000001003" "00000001" "00" "fff0fefefefefefefe0e", 20,
			  "FID UINT64_MAX, 10 bytes" },
			{ "0000001003" "00000001" "fff0fefefefefefefe0f" "00", -SPOP_ERR_INVALID,
			  "SID overflowing 64 bits" },
		};
		size_t i;

		for (i = 0; i < sizeof(sf) / sizeof(sf[0]); i++) {
			size_t n;
			uint8_t *b = unhex(sf[i].hex, &n);

			if (!ok(b != NULL, "hex of %s", sf[i].what))
				continue;
			r = spop_frame_decode(b, n, 16380, &f, NULL);
			is_int(r, sf[i].want, sf[i].what);
			free(b);
		}
	}

	/* two frames back to back in one buffer */
	{
		const struct vec *a = find_vec("haproxy-3.4-hello.hex");
		const struct vec *c = find_vec("haproxy-3.4-notify.hex");

		if (a && c) {
			uint8_t *b = malloc(a->len + c->len);

			memcpy(b, a->b, a->len);
			memcpy(b + a->len, c->b, c->len);
			r = spop_frame_decode(b, a->len + c->len, 16380, &f, NULL);
			is_int(r, (long)a->len, "first of two frames");
			r = spop_frame_decode(b + a->len, c->len, 16380, &f, NULL);
			ok(r == (long)c->len && f.type == SPOP_FRM_NOTIFY, "then the second");
			free(b);
		}
	}
}

/* Builds a HAPROXY-HELLO from KV pairs into <buf>; returns its size. */
struct kv {
	const char *key;
	struct spop_data val;
};

static size_t build_hello(uint8_t *buf, size_t cap, const struct kv *kvs, size_t n)
{
	uint8_t *end = buf + cap, *p = spop_frame_begin(buf, end, SPOP_FRM_HAPROXY_HELLO, 0, 0);
	size_t i;

	for (i = 0; p && i < n; i++)
		if (!spop_put_str(&p, end, kvs[i].key, strlen(kvs[i].key)) ||
		    !spop_put_data(&p, end, &kvs[i].val))
			return 0;
	return p ? spop_frame_end(buf, p) : 0;
}

#define KV_STR(k, s) { (k), { .type = SPOP_T_STR, .u.str = { (s), sizeof(s) - 1 } } }
#define KV_U32(k, v) { (k), { .type = SPOP_T_UINT32, .u.u64 = (v) } }
#define KV_I64(k, v) { (k), { .type = SPOP_T_INT64, .u.s64 = (v) } }
#define KV_BOOL(k, v) { (k), { .type = SPOP_T_BOOL, .u.b = (v) } }

static void test_hello_check(void)
{
	static const struct {
		struct kv kvs[5];
		size_t n;
		int decode, check;
		uint32_t mx;
		const char *what;
	} hc[] = {
		{ { KV_STR("supported-versions", "2.0"), KV_U32("max-frame-size", 16380) }, 2, 0, 0,
		  16380, "no capabilities: accepted" },
		{ { KV_STR("supported-versions", "1.0, 2.0 "), KV_U32("max-frame-size", 300),
		    KV_STR("capabilities", "") }, 3, 0, 0, 300, "\"1.0, 2.0 \" lists 2.0" },
		{ { KV_STR("supported-versions", " 2.0 ,3.0"), KV_U32("max-frame-size", 256) }, 2,
		  0, 0, 256, "\" 2.0 ,3.0\", size 256" },
		{ { KV_STR("supported-versions", "2.01"), KV_U32("max-frame-size", 16380) }, 2, 0,
		  -SPOP_ERR_BAD_VSN, 0, "\"2.01\" is not 2.0" },
		{ { KV_STR("supported-versions", ""), KV_U32("max-frame-size", 16380) }, 2, 0,
		  -SPOP_ERR_BAD_VSN, 0, "empty version list" },
		{ { KV_STR("supported-versions", "1.0,,2"), KV_U32("max-frame-size", 16380) }, 2, 0,
		  -SPOP_ERR_BAD_VSN, 0, "no 2.0 in \"1.0,,2\"" },
		{ { KV_U32("max-frame-size", 16380), KV_STR("capabilities", "") }, 2, 0,
		  -SPOP_ERR_NO_VSN, 0, "no versions: NO_VSN" },
		{ { KV_STR("supported-versions", "2.0"), KV_STR("capabilities", "") }, 2, 0,
		  -SPOP_ERR_NO_FRAME_SIZE, 0, "no size: NO_FRAME_SIZE" },
		{ { KV_STR("supported-versions", "2.0"), KV_U32("max-frame-size", 255) }, 2, 0,
		  -SPOP_ERR_BAD_FRAME_SIZE, 0, "size 255: BAD_FRAME_SIZE" },
		{ { KV_STR("supported-versions", "2.0"), KV_I64("max-frame-size", -16380) }, 2, 0,
		  -SPOP_ERR_BAD_FRAME_SIZE, 0, "negative size: BAD_FRAME_SIZE" },
		{ { KV_STR("supported-versions", "2.0"), KV_I64("max-frame-size", 20000) }, 2, 0, 0,
		  16380, "INT64 size accepted, clamped to own max" },
		{ { KV_STR("supported-versions-x", "2.0"), KV_U32("max-frame-size", 16380) }, 2, 0,
		  -SPOP_ERR_NO_VSN, 0, "key \"supported-versions-x\" is not a prefix match" },
		{ { KV_STR("supported-version", "2.0"), KV_U32("max-frame-size", 16380) }, 2, 0,
		  -SPOP_ERR_NO_VSN, 0, "key \"supported-version\" is not a match" },
		{ { KV_STR("supported-versions", "2.0"), KV_U32("max-frame-sizes", 16380) }, 2, 0,
		  -SPOP_ERR_NO_FRAME_SIZE, 0, "key \"max-frame-sizes\" is skipped" },
		{ { KV_STR("x-unknown", "zz"), KV_STR("supported-versions", "2.0"),
		    KV_BOOL("future", 1), KV_U32("max-frame-size", 16380) }, 4, 0, 0, 16380,
		  "unknown keys skipped" },
		{ { KV_U32("supported-versions", 2), KV_U32("max-frame-size", 16380) }, 2,
		  -SPOP_ERR_INVALID, 0, 0, "versions not a string: INVALID" },
		{ { KV_STR("supported-versions", "2.0"), KV_STR("max-frame-size", "16380") }, 2,
		  -SPOP_ERR_INVALID, 0, 0, "size not an integer: INVALID" },
		{ { KV_STR("supported-versions", "2.0"), KV_U32("max-frame-size", 16380),
		    KV_U32("capabilities", 1) }, 3, -SPOP_ERR_INVALID, 0, 0,
		  "capabilities not a string: INVALID" },
	};
	size_t i;

	for (i = 0; i < sizeof(hc) / sizeof(hc[0]); i++) {
		uint8_t buf[256], *b;
		size_t n = build_hello(buf, sizeof(buf), hc[i].kvs, hc[i].n);
		struct spop_frame f;
		struct spop_hello h;
		uint32_t mx = 0;
		int r;

		b = dup_exact(buf, n);
		if (!ok(n > 0 && spop_frame_decode(b, n, 16380, &f, NULL) == (long)n,
		        "hello %s: frame", hc[i].what)) {
			free(b);
			continue;
		}
		r = spop_hello_decode(&f, &h);
		is_int(r, hc[i].decode, hc[i].what);
		if (r == 0) {
			r = spop_hello_check(&h, 16380, &mx);
			is_int(r, hc[i].check, hc[i].what);
			if (r == 0)
				is_int(mx, hc[i].mx, "negotiated size");
		}
		free(b);
	}
}

static void test_err_to_str(void)
{
	static const int codes[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 99, 14, 1000 };
	size_t i;
	unsigned bad = 0;

	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = spop_err_to_str((enum spop_error)codes[i]);

		if (!s || !*s)
			bad++;
	}
	ok(bad == 0, "spop_err_to_str never NULL or empty");
	ok(strcmp(spop_err_to_str(SPOP_ERR_TOO_BIG), "frame is too big") == 0, "3: frame is too big");
	ok(strcmp(spop_err_to_str(SPOP_ERR_FRAG_NOT_SUPPORTED), spop_err_to_str(SPOP_ERR_NONE)) != 0,
	   "distinct messages");
}

int main(void)
{
	const char *dir = getenv("SPOP_VECTORS");

	load_vectors(dir && *dir ? dir : "tests/vectors");
	diag("%zu vectors loaded", nvecs);

	test_vectors_present();
	test_varints();
	test_frames();
	test_hellos();
	test_notifies();
	test_disconnects();
	test_agent_frames();
	test_encoders_short();
	test_ack_header();
	test_put_short();
	test_typed_data();
	test_truncations();
	test_frame_errors();
	test_hello_check();
	test_err_to_str();

	while (nvecs)
		free(vecs[--nvecs].b);
	return done_testing();
}
