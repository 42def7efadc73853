/*
 * test_claims.c: unit tests of msgpack claims -> set-var actions
 * (agent/claims.c).
 *
 * What it does: packs test documents with msgpack-c, runs claims_encode()
 * and decodes the actions it wrote with the SPOP decoders; checks skipped
 * keys, refused documents (not a map, garbage, truncated, trailing bytes,
 * absurd declared sizes) and short output buffers (-2, cursor restored).
 *
 * What it never does: network I/O. Inputs are exact-size heap copies so
 * ASan reports any over-read.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "claims.h"
#include "spop.h"
#include "tap.h"

static char *dup_exact(const void *p, size_t n)
{
	char *b = malloc(n ? n : 1);

	if (!b)
		exit(2);
	if (n)
		memcpy(b, p, n);
	return b;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

static int str_is(struct spop_str s, const char *lit)
{
	return s.len == strlen(lit) && (s.len == 0 || memcmp(s.ptr, lit, s.len) == 0);
}

#define LONG_KEY "k234567890123456789012345678901234567890123456789"  /* 49 */

/* The main test document: 21 keys, 11 usable. */
static void pack_doc(msgpack_sbuffer *sb)
{
	msgpack_packer pk;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 21);
	pack_str(&pk, "uid");       msgpack_pack_uint64(&pk, 42);
	pack_str(&pk, "neg");       msgpack_pack_int64(&pk, -7);
	pack_str(&pk, "big");       msgpack_pack_uint64(&pk, UINT64_MAX);
	pack_str(&pk, "i64max");    msgpack_pack_uint64(&pk, (uint64_t)INT64_MAX);
	pack_str(&pk, "min");       msgpack_pack_int64(&pk, INT64_MIN);
	pack_str(&pk, "admin");     msgpack_pack_true(&pk);
	pack_str(&pk, "off");       msgpack_pack_false(&pk);
	pack_str(&pk, "name");      pack_str(&pk, "alice");
	pack_str(&pk, "raw");       msgpack_pack_bin(&pk, 3); msgpack_pack_bin_body(&pk, "\0\1\2", 3);
	pack_str(&pk, "user-id");   pack_str(&pk, "u-1");
	pack_str(&pk, "\xc3\xa9");  msgpack_pack_uint64(&pk, 0);
	/* skipped from here */
	pack_str(&pk, "score");     msgpack_pack_double(&pk, 1.5);
	pack_str(&pk, "nil");       msgpack_pack_nil(&pk);
	pack_str(&pk, "roles");     msgpack_pack_array(&pk, 2); pack_str(&pk, "a"); pack_str(&pk, "b");
	pack_str(&pk, "obj");       msgpack_pack_map(&pk, 1); pack_str(&pk, "k"); msgpack_pack_int(&pk, 1);
	msgpack_pack_int(&pk, 7);   pack_str(&pk, "int key");
	msgpack_pack_true(&pk);     pack_str(&pk, "bool key");
	pack_str(&pk, "ext");       msgpack_pack_ext(&pk, 1, 5); msgpack_pack_ext_body(&pk, "\1", 1);
	pack_str(&pk, LONG_KEY);    pack_str(&pk, "too long: txn.auth.claim. + 49 = 64");
	pack_str(&pk, "");          pack_str(&pk, "empty key");
	pack_str(&pk, "f32");       msgpack_pack_float(&pk, 2.5f);
}

struct want {
	const char *name;
	enum spop_type type;
	int64_t s64;
	uint64_t u64;
	const char *str;
	size_t slen;
};

static const struct want want_doc[] = {
	{ "claim.uid", SPOP_T_INT64, 42, 0, NULL, 0 },
	{ "claim.neg", SPOP_T_INT64, -7, 0, NULL, 0 },
	{ "claim.big", SPOP_T_UINT64, 0, UINT64_MAX, NULL, 0 },
	{ "claim.i64max", SPOP_T_INT64, INT64_MAX, 0, NULL, 0 },
	{ "claim.min", SPOP_T_INT64, INT64_MIN, 0, NULL, 0 },
	{ "claim.admin", SPOP_T_BOOL, 1, 0, NULL, 0 },
	{ "claim.off", SPOP_T_BOOL, 0, 0, NULL, 0 },
	{ "claim.name", SPOP_T_STR, 0, 0, "alice", 5 },
	{ "claim.raw", SPOP_T_BIN, 0, 0, "\0\1\2", 3 },
	{ "claim.user_id", SPOP_T_STR, 0, 0, "u-1", 3 },
	{ "claim.__", SPOP_T_INT64, 0, 0, NULL, 0 },
};
#define WANT_N (sizeof(want_doc) / sizeof(want_doc[0]))
#define WANT_SKIPPED 10u

static int action_matches(const struct spop_action *a, const struct want *w)
{
	if (a->type != SPOP_ACT_SET_VAR || a->scope != SPOP_SCOPE_TXN ||
	    !str_is(a->name, w->name) || a->value.type != w->type)
		return 0;
	switch (w->type) {
	case SPOP_T_INT64:
		return a->value.u.s64 == w->s64;
	case SPOP_T_UINT64:
		return a->value.u.u64 == w->u64;
	case SPOP_T_BOOL:
		return a->value.u.b == (int)w->s64;
	case SPOP_T_STR:
	case SPOP_T_BIN:
		return a->value.u.str.len == w->slen &&
		       memcmp(a->value.u.str.ptr, w->str, w->slen) == 0;
	default:
		return 0;
	}
}

static void test_doc(void)
{
	msgpack_sbuffer sb;
	uint8_t out[1024], first[1024], *p = out;
	unsigned skipped = 99;
	const uint8_t *q;
	struct spop_action a;
	size_t i, need;
	char *doc;
	int r;

	pack_doc(&sb);
	doc = dup_exact(sb.data, sb.size);
	r = claims_encode(doc, sb.size, "auth", &p, out + sizeof(out), &skipped);
	is_int(r, WANT_N, "11 actions written");
	is_int(skipped, WANT_SKIPPED, "10 keys skipped");
	q = out;
	for (i = 0; i < WANT_N; i++) {
		if (!ok(spop_action_next(&q, p, &a) == 1, "action %zu decodes", i))
			break;
		ok(action_matches(&a, &want_doc[i]), "action %zu is %s", i, want_doc[i].name);
	}
	is_int(spop_action_next(&q, p, &a), 0, "nothing after the last action");
	need = (size_t)(p - out);
	memcpy(first, out, need);

	/* a shorter prefix: the 49-byte key now fits (txn.ab. + claim. + 49 = 62) */
	p = out;
	r = claims_encode(doc, sb.size, "ab", &p, out + sizeof(out), &skipped);
	ok(r == (int)WANT_N + 1 && skipped == WANT_SKIPPED - 1,
	   "prefix \"ab\": the 49-char key fits (%d actions, %u skipped)", r, skipped);
	/* a long prefix: nothing fits */
	p = out;
	r = claims_encode(doc, sb.size, "a_prefix_so_long_that_no_claim_name_fits_at_all_xxxxxxx",
	                  &p, out + sizeof(out), &skipped);
	ok(r == 0 && skipped == WANT_SKIPPED + WANT_N && p == out,
	   "long prefix: 0 actions, all %u skipped", skipped);

	/* every output size too small: -2, cursor restored; offset cursor too */
	{
		unsigned bad = 0;
		size_t n;

		for (n = 0; n < need; n++) {
			uint8_t *b = malloc(n + 7), *c = b + 7;

			r = claims_encode(doc, sb.size, "auth", &c, b + 7 + n, NULL);
			if (r != -2 || c != b + 7)
				bad++;
			free(b);
		}
		ok(bad == 0, "every output size 0..%zu: -2 and cursor restored", need - 1);
		{
			uint8_t *b = malloc(need), *c = b;

			r = claims_encode(doc, sb.size, "auth", &c, b + need, NULL);
			ok(r == (int)WANT_N && c == b + need && memcmp(b, first, need) == 0,
			   "exact output size works, NULL <skipped> accepted");
			free(b);
		}
	}

	/* truncations and trailing bytes */
	{
		unsigned bad = 0;
		size_t n;

		for (n = 0; n < sb.size; n++) {
			char *t = dup_exact(sb.data, n);

			p = out;
			r = claims_encode(t, n, "auth", &p, out + sizeof(out), &skipped);
			if (r != -1 || p != out)
				bad++;
			free(t);
		}
		ok(bad == 0, "every truncation 0..%zu: -1, cursor unchanged", sb.size - 1);
		{
			char *t = malloc(sb.size + 1);

			memcpy(t, sb.data, sb.size);
			t[sb.size] = 0;
			p = out;
			is_int(claims_encode(t, sb.size + 1, "auth", &p, out + sizeof(out), NULL), -1,
			       "trailing byte: -1");
			free(t);
		}
	}
	free(doc);
	msgpack_sbuffer_destroy(&sb);
}

static void test_refused(void)
{
	static const struct {
		const char *bytes;
		size_t len;
		int want;
		const char *what;
	} docs[] = {
		{ "\x80", 1, 0, "empty map: 0 actions" },
		{ "\x92\x01\x02", 3, -1, "array: -1" },
		{ "\x2a", 1, -1, "integer: -1" },
		{ "\xa3" "abc", 4, -1, "string: -1" },
		{ "\xc0", 1, -1, "nil: -1" },
		{ "\xc1", 1, -1, "reserved 0xc1: -1" },
		{ "", 0, -1, "empty input: -1" },
		{ "{\"a\":1}", 7, -1, "JSON: -1" },
		{ "\xdf\xff\xff\xff\xff", 5, -1, "map32 declaring 2^32-1 pairs: -1" },
		{ "\xdd\xff\xff\xff\xff", 5, -1, "array32 declaring 2^32-1: -1" },
		{ "\x81\xa1" "a\xdd\x7f\xff\xff\xff\x01", 9, -1, "nested array32 2^31-1: -1" },
		{ "\x81\xa1" "a\xdb\xff\xff\xff\xff", 8, -1, "str32 longer than the input: -1" },
		{ "\x81\xa1" "a\xc1", 4, -1, "0xc1 as a value: -1" },
		{ "\x81\xa1" "a\x01\x01", 5, -1, "trailing byte: -1" },
		{ "\x81\xa1" "a\x01", 4, 1, "one pair: 1 action" },
		{ "\xde\x00\x01\xa1" "a\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 14, 1,
		  "map16, uint64 max: 1 action" },
		{ "\x82\xa1" "a\xd4\x01\x01\xa1" "b\xc7\x02\x05xy", 13, 0, "ext values: skipped" },
	};
	size_t i;

	for (i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		uint8_t out[64], *p = out;
		char *d = dup_exact(docs[i].bytes, docs[i].len);
		int r = claims_encode(d, docs[i].len, "auth", &p, out + sizeof(out), NULL);

		is_int(r, docs[i].want, docs[i].what);
		if (r < 0)
			ok(p == out, "%s: cursor unchanged", docs[i].what);
		free(d);
	}

	/* nesting deeper than msgpack-c's stack (32) inside a value: refused */
	{
		char d[64];
		uint8_t out[64], *p = out;
		size_t n = 0, k;

		d[n++] = (char)0x81;
		d[n++] = (char)0xa1;
		d[n++] = 'a';
		for (k = 0; k < 40; k++)
			d[n++] = (char)0x91;
		d[n++] = 0x01;
		{
			char *e = dup_exact(d, n);

			is_int(claims_encode(e, n, "auth", &p, out + sizeof(out), NULL), -1,
			       "40-deep array value: -1");
			free(e);
		}
	}

	/* garbage: pseudo-random inputs never crash and never write on error */
	{
		uint64_t x = 0x243F6A8885A308D3u;
		unsigned bad = 0, maps = 0;
		size_t k, n;

		for (k = 0; k < 20000; k++) {
			char buf[40], *e;
			uint8_t out[256], *p = out;
			int r;

			n = (size_t)(k % sizeof(buf));
			for (i = 0; i < n; i++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				buf[i] = (char)x;
			}
			if (n && k % 3 == 0)
				buf[0] = (char)(0x80 | (k % 4));   /* small fixmap */
			e = dup_exact(buf, n);
			r = claims_encode(e, n, "auth", &p, out + sizeof(out), NULL);
			if (r >= 0)
				maps++;
			if ((r < 0 && p != out) || r < -2 || (r >= 0 && p < out))
				bad++;
			free(e);
		}
		ok(bad == 0, "20000 random inputs: consistent results (%u maps)", maps);
	}
}

/* Every msgpack format msgpack-c produces: the pre-scan must accept them
 * all (str/bin/ext 8/16/32, array/map 16/32, every int and float width). */
static void test_all_formats(void)
{
	static char blob[70000];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t outsz = 1u << 21, i;
	uint8_t *out = malloc(outsz), *p = out;
	unsigned skipped = 0;
	char *doc;
	int r;

	memset(blob, 'z', sizeof(blob));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 31);
	pack_str(&pk, "s8");  msgpack_pack_str(&pk, 40); msgpack_pack_str_body(&pk, blob, 40);
	pack_str(&pk, "s16"); msgpack_pack_str(&pk, 300); msgpack_pack_str_body(&pk, blob, 300);
	pack_str(&pk, "s32"); msgpack_pack_str(&pk, 70000); msgpack_pack_str_body(&pk, blob, 70000);
	pack_str(&pk, "b8");  msgpack_pack_bin(&pk, 10); msgpack_pack_bin_body(&pk, blob, 10);
	pack_str(&pk, "b16"); msgpack_pack_bin(&pk, 300); msgpack_pack_bin_body(&pk, blob, 300);
	pack_str(&pk, "b32"); msgpack_pack_bin(&pk, 70000); msgpack_pack_bin_body(&pk, blob, 70000);
	pack_str(&pk, "u8");  msgpack_pack_uint8(&pk, 200);
	pack_str(&pk, "u16"); msgpack_pack_uint16(&pk, 60000);
	pack_str(&pk, "u32"); msgpack_pack_uint32(&pk, 4000000000u);
	pack_str(&pk, "u64"); msgpack_pack_uint64(&pk, (uint64_t)1 << 40);
	pack_str(&pk, "i8");  msgpack_pack_int8(&pk, -100);
	pack_str(&pk, "i16"); msgpack_pack_int16(&pk, -1000);
	pack_str(&pk, "i32"); msgpack_pack_int32(&pk, -100000);
	pack_str(&pk, "i64"); msgpack_pack_int64(&pk, -((int64_t)1 << 40));
	pack_str(&pk, "t");   msgpack_pack_true(&pk);
	pack_str(&pk, "f");   msgpack_pack_false(&pk);
	/* skipped values, still walked by the scan */
	pack_str(&pk, "a16"); msgpack_pack_array(&pk, 20);
	for (i = 0; i < 20; i++)
		msgpack_pack_int(&pk, (int)i);
	pack_str(&pk, "a32"); msgpack_pack_array(&pk, 70000);
	for (i = 0; i < 70000; i++)
		msgpack_pack_nil(&pk);
	pack_str(&pk, "m16"); msgpack_pack_map(&pk, 20);
	for (i = 0; i < 20; i++) {
		msgpack_pack_int(&pk, (int)i);
		msgpack_pack_nil(&pk);
	}
	pack_str(&pk, "m32"); msgpack_pack_map(&pk, 70000);
	for (i = 0; i < 70000; i++) {
		msgpack_pack_int(&pk, (int)i);
		msgpack_pack_true(&pk);
	}
	pack_str(&pk, "f32"); msgpack_pack_float(&pk, 1.25f);
	pack_str(&pk, "f64"); msgpack_pack_double(&pk, 1.25);
	pack_str(&pk, "x1");  msgpack_pack_ext(&pk, 1, 1); msgpack_pack_ext_body(&pk, blob, 1);
	pack_str(&pk, "x2");  msgpack_pack_ext(&pk, 2, 1); msgpack_pack_ext_body(&pk, blob, 2);
	pack_str(&pk, "x4");  msgpack_pack_ext(&pk, 4, 1); msgpack_pack_ext_body(&pk, blob, 4);
	pack_str(&pk, "x8");  msgpack_pack_ext(&pk, 8, 1); msgpack_pack_ext_body(&pk, blob, 8);
	pack_str(&pk, "x16"); msgpack_pack_ext(&pk, 16, 1); msgpack_pack_ext_body(&pk, blob, 16);
	pack_str(&pk, "xe8"); msgpack_pack_ext(&pk, 3, 1); msgpack_pack_ext_body(&pk, blob, 3);
	pack_str(&pk, "xe16"); msgpack_pack_ext(&pk, 300, 1); msgpack_pack_ext_body(&pk, blob, 300);
	pack_str(&pk, "xe32"); msgpack_pack_ext(&pk, 70000, 1); msgpack_pack_ext_body(&pk, blob, 70000);
	pack_str(&pk, "nil"); msgpack_pack_nil(&pk);

	doc = dup_exact(sb.data, sb.size);
	ok((unsigned char)doc[0] == 0xde, "top level is a map16");
	r = claims_encode(doc, sb.size, "auth", &p, out + outsz, &skipped);
	is_int(r, 16, "all formats: 16 actions");
	is_int(skipped, 15, "all formats: 15 skipped");
	free(doc);
	msgpack_sbuffer_destroy(&sb);

	/* map32 at the top level: 70000 keys */
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 70000);
	for (i = 0; i < 70000; i++) {
		char k[16];
		int kl = snprintf(k, sizeof(k), "k%zu", i);

		msgpack_pack_str(&pk, (size_t)kl);
		msgpack_pack_str_body(&pk, k, (size_t)kl);
		msgpack_pack_uint64(&pk, i);
	}
	doc = dup_exact(sb.data, sb.size);
	p = out;
	r = claims_encode(doc, sb.size, "auth", &p, out + outsz, &skipped);
	ok((unsigned char)doc[0] == 0xdf && r == 70000 && skipped == 0,
	   "map32 with 70000 keys: 70000 actions");
	free(doc);
	msgpack_sbuffer_destroy(&sb);
	free(out);
}

int main(void)
{
	test_doc();
	test_all_formats();
	test_refused();
	return done_testing();
}
