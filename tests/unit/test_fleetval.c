/*
 * test_fleetval.c: unit tests of the stored-decision codec and the fleet's
 * names (agent/fleetval.c).
 *
 * What it does: round trips; every byte of a value flipped, every
 * truncation, a value moved to another name, another secret, another
 * version: all refused; expiry; the actions bound; malformed actions under
 * a valid seal; the names and tags against HMAC-SHA256 computed by OpenSSL
 * (EVP_Q_mac); that no name or value contains its inputs; event parsing;
 * a genuine version-1 value (sealed here with OpenSSL, the old layout) is
 * refused; the L1 mark survives; the sealed L1 hash of an event: round
 * trip, not in clear, bound to its credential and secret, every change and
 * truncation refused.
 *
 * What it never does: talk to Redis, read a clock (times are parameters).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "decision.h"
#include "fleetval.h"
#include "spop.h"
#include "tap.h"

#define NOW 1700000000000ull

static const char secret[] = "0123456789abcdef0123456789abcdef-fleet";
static const uint8_t nonce[FLEETVAL_NONCE_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };

/* Encoded actions of one set-var txn.x = <v>. */
static size_t one_action(uint8_t *buf, size_t room, const char *v)
{
	uint8_t *p = buf;
	struct spop_data d;

	d.type = SPOP_T_STR;
	d.u.str.ptr = v;
	d.u.str.len = strlen(v);
	if (spop_put_set_var(&p, buf + room, SPOP_SCOPE_TXN, "token", 5, &d) < 0)
		return 0;
	return (size_t)(p - buf);
}

static void hex(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

static int contains(const void *hay, size_t hn, const void *needle, size_t nn)
{
	return memmem(hay, hn, needle, nn) != NULL;
}

/* A value in the version-1 layout (no l1_until_ms) for <name>, sealed under
 * <k>'s seal key exactly as version 1 did, into <out>. Returns its length,
 * or -1. */
static long v1_value(const struct fleetval_keys *k, const char *name, size_t name_len,
                     const uint8_t *acts, size_t alen, uint8_t *out)
{
	static const uint8_t hdr[FLEETVAL_MAGIC_LEN] = { 'S', 'A', 'F', 1 };
	uint8_t body[19 + 256];
	size_t blen = 19 + alen;
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int len = 0;
	long r = -1;
	uint64_t exp = NOW + 5000;

	if (!c || alen > 256)
		goto out;
	for (int i = 0; i < 8; i++)
		body[i] = (uint8_t)(exp >> (56 - 8 * i));
	body[8] = 0; body[9] = 200;                    /* status */
	body[10] = DECISION_ALLOW;
	memset(body + 11, 0, 4);                       /* claims_skipped */
	body[15] = 0; body[16] = 0; body[17] = (uint8_t)(alen >> 8); body[18] = (uint8_t)alen;
	memcpy(body + 19, acts, alen);
	memcpy(out, hdr, sizeof(hdr));
	memcpy(out + FLEETVAL_MAGIC_LEN, nonce, FLEETVAL_NONCE_LEN);
	if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, FLEETVAL_NONCE_LEN, NULL) != 1 ||
	    EVP_EncryptInit_ex(c, NULL, NULL, k->seal, nonce) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &len, (const uint8_t *)name, (int)name_len) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &len, hdr, sizeof(hdr)) != 1 ||
	    EVP_EncryptUpdate(c, out + 16, &len, body, (int)blen) != 1 ||
	    EVP_EncryptFinal_ex(c, out + 16 + blen, &len) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, FLEETVAL_TAG_LEN, out + 16 + blen) != 1)
		goto out;
	r = (long)(16 + blen + FLEETVAL_TAG_LEN);
out:
	EVP_CIPHER_CTX_free(c);
	return r;
}

int main(void)
{
	struct fleetval_keys k, k2;
	uint8_t key[32], cred[32], acts[256], val[512], plain[512];
	char name[FLEETVAL_NAME_MAX], name2[FLEETVAL_NAME_MAX], tag[FLEETVAL_HEX_LEN + 1];
	struct fleetval v, out;
	size_t alen;
	long vlen;
	int n, n2;

	memset(key, 0x11, sizeof(key));
	memset(cred, 0x22, sizeof(cred));
	ok(fleetval_keys_derive(&k, (const uint8_t *)"short", 5) < 0, "a short secret is refused");
	ok(fleetval_keys_derive(&k, (const uint8_t *)secret, strlen(secret)) == 0, "derive");
	ok(memcmp(k.key, k.cred, 32) && memcmp(k.key, k.seal, 32) && memcmp(k.key, k.salt, 32) &&
	   memcmp(k.cred, k.salt, 32) && memcmp(k.seal, k.salt, 32), "four distinct subkeys");
	{
		uint8_t want[32];
		size_t wl = 0;
		static const char label[] = "spoa-auth fleet credential tags";

		EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, strlen(secret),
		          (const uint8_t *)label, strlen(label), want, sizeof(want), &wl);
		is_mem(k.cred, 32, want, wl, "credential subkey = HMAC-SHA256(secret, label)");
	}

	/* names */
	n = fleetval_name_value(&k, "spoa-auth:", key, cred, name);
	ok(n == (int)(10 + 3 + 64 + 1 + 64), "value name length");
	ok(strncmp(name, "spoa-auth:v:{", 13) == 0 && name[13 + 64] == '}', "value name shape");
	{
		uint8_t t[32];
		size_t tl = 0;
		char th[65];

		EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, k.cred, 32, cred, 32, t, sizeof(t), &tl);
		hex(t, 32, th);
		ok(fleetval_cred_tag(&k, cred, tag) == 0 && strcmp(tag, th) == 0,
		   "credential tag = HMAC-SHA256(credential subkey, cred)");
		ok(memcmp(name + 13, th, 64) == 0, "the hash tag of the name is the credential tag");
		EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, k.key, 32, key, 32, t, sizeof(t), &tl);
		hex(t, 32, th);
		ok(memcmp(name + 13 + 65, th, 64) == 0, "key part = HMAC-SHA256(key subkey, key)");
	}
	{
		char rawk[65], rawc[65];

		hex(key, 32, rawk);
		hex(cred, 32, rawc);
		ok(!strstr(name, rawk) && !strstr(name, rawc), "the name holds neither digest");
	}
	{
		char longp[FLEETVAL_PREFIX_MAX + 2];

		memset(longp, 'p', sizeof(longp) - 1);
		longp[sizeof(longp) - 1] = 0;
		ok(fleetval_name_value(&k, longp, key, cred, name2) < 0, "prefix too long refused");
	}
	{
		struct fleetval_keys kb = k, kc = k;
		char nb[FLEETVAL_NAME_MAX], nc[FLEETVAL_NAME_MAX], tb[FLEETVAL_HEX_LEN + 1];

		ok(fleetval_keys_bind(&kb, "5:auth", 6) == 0 && fleetval_keys_bind(&kc, "5:authz", 7) == 0,
		   "bind two shapes");
		ok(fleetval_name_value(&kb, "spoa-auth:", key, cred, nb) == n &&
		   fleetval_name_value(&kc, "spoa-auth:", key, cred, nc) == n &&
		   strcmp(nb, nc) != 0 && strcmp(nb, name) != 0,
		   "another answer shape, another value name");
		ok(fleetval_cred_tag(&kb, cred, tb) == 0 && strcmp(tb, tag) == 0 &&
		   memcmp(nb, name, 13 + 65) == 0, "the credential tag stays fleet-wide");
	}
	memset(key, 0x12, sizeof(key));
	n2 = fleetval_name_value(&k, "spoa-auth:", key, cred, name2);
	ok(n2 == n && memcmp(name, name2, 13 + 65) == 0 && memcmp(name, name2, (size_t)n) != 0,
	   "same credential, other key: same hash tag, other name");

	/* round trip */
	alen = one_action(acts, sizeof(acts), "secret-token-value");
	ok(alen > 0, "actions encoded");
	v.expires_ms = NOW + 5000;
	v.l1_until_ms = NOW + 3000;
	v.status = 200;
	v.outcome = DECISION_ALLOW;
	v.claims_skipped = 3;
	v.actions = acts;
	v.actions_len = alen;
	vlen = fleetval_encode(&k, name, (size_t)n, nonce, &v, val);
	is_int(vlen, (long long)fleetval_size(alen), "encoded length");
	ok(!contains(val, (size_t)vlen, "secret-token-value", 18), "the token is not in clear");
	is_int(fleetval_decode(&k, name, (size_t)n, val, (size_t)vlen, NOW, 4096, plain, &out),
	       FLEETVAL_OK, "decodes");
	ok(out.expires_ms == v.expires_ms && out.status == 200 && out.outcome == DECISION_ALLOW &&
	   out.claims_skipped == 3, "fields survive");
	ok(out.l1_until_ms == NOW + 3000, "the L1 mark survives");
	is_mem(out.actions, out.actions_len, acts, alen, "actions survive");
	is_int(val[3], 2, "version 2 in the header");
	{
		uint8_t v1[512];
		long l1len = v1_value(&k, name, (size_t)n, acts, alen, v1);

		ok(l1len > 0, "a version-1 value sealed with the same key");
		is_int(fleetval_decode(&k, name, (size_t)n, v1, (size_t)l1len, NOW, 4096, plain,
		                       &out), FLEETVAL_BAD, "an authentic version-1 value: refused");
		v1[3] = 2;
		is_int(fleetval_decode(&k, name, (size_t)n, v1, (size_t)l1len, NOW, 4096, plain,
		                       &out), FLEETVAL_BAD, "relabelled version 2: refused (the seal)");
	}
	is_int(fleetval_decode(&k, name, (size_t)n, val, (size_t)vlen, NOW + 5000, 4096, plain,
	                       &out), FLEETVAL_EXPIRED, "expired at its expiry");
	is_int(fleetval_decode(&k, name, (size_t)n, val, (size_t)vlen, NOW, alen - 1, plain, &out),
	       FLEETVAL_BAD, "actions over the bound refused");

	/* tampering */
	{
		int all_bad = 1;

		for (long i = 0; i < vlen; i++) {
			for (int bit = 0; bit < 8; bit++) {
				val[i] ^= (uint8_t)(1u << bit);
				if (fleetval_decode(&k, name, (size_t)n, val, (size_t)vlen, NOW, 4096,
				                    plain, &out) != FLEETVAL_BAD) {
					all_bad = 0;
					diag("byte %ld bit %d flipped still decodes", i, bit);
				}
				val[i] ^= (uint8_t)(1u << bit);
			}
		}
		ok(all_bad, "every single bit flipped: refused");
	}
	{
		int all_bad = 1;

		for (long l = 0; l < vlen; l++)
			if (fleetval_decode(&k, name, (size_t)n, val, (size_t)l, NOW, 4096, plain,
			                    &out) != FLEETVAL_BAD)
				all_bad = 0;
		ok(all_bad, "every truncation: refused");
	}
	is_int(fleetval_decode(&k, name2, (size_t)n2, val, (size_t)vlen, NOW, 4096, plain, &out),
	       FLEETVAL_BAD, "moved to another name: refused");
	ok(fleetval_keys_derive(&k2, (const uint8_t *)"another secret of at least 32 bytes!", 36)
	   == 0, "second secret");
	is_int(fleetval_decode(&k2, name, (size_t)n, val, (size_t)vlen, NOW, 4096, plain, &out),
	       FLEETVAL_BAD, "another fleet's secret: refused");

	/* a valid seal over bad content is still refused */
	v.actions_len = 0;
	vlen = fleetval_encode(&k, name, (size_t)n, nonce, &v, val);
	is_int(fleetval_decode(&k, name, (size_t)n, val, (size_t)vlen, NOW, 4096, plain, &out),
	       FLEETVAL_BAD, "no actions: refused");
	memset(acts, 0xee, 8);
	v.actions_len = 8;
	vlen = fleetval_encode(&k, name, (size_t)n, nonce, &v, val);
	is_int(fleetval_decode(&k, name, (size_t)n, val, (size_t)vlen, NOW, 4096, plain, &out),
	       FLEETVAL_BAD, "malformed actions: refused");
	v.actions_len = alen = one_action(acts, sizeof(acts), "t");
	v.status = 1000;
	ok(fleetval_encode(&k, name, (size_t)n, nonce, &v, val) < 0, "status 1000 not encoded");
	v.status = 200;
	v.outcome = DECISION_OUTCOME_ENTRIES;
	ok(fleetval_encode(&k, name, (size_t)n, nonce, &v, val) < 0, "bad outcome not encoded");

	/* events */
	{
		char ev[FLEETVAL_HEX_LEN + 1];
		uint8_t back[32];

		fleetval_event_format(cred, ev);
		is_int(fleetval_event_parse(ev, strlen(ev), back), 1, "event: one credential");
		is_mem(back, 32, cred, 32, "event round trip");
		fleetval_event_format(NULL, ev);
		is_int(fleetval_event_parse(ev, strlen(ev), back), 0, "event: everything");
		is_int(fleetval_event_parse("zz", 2, back), -1, "event: malformed");
		memset(ev, 'g', 64);
		is_int(fleetval_event_parse(ev, 64, back), -1, "event: not hex");
	}
	/* the sealed L1 hash of an event */
	{
		uint8_t l1[FLEETVAL_L1_LEN], back[FLEETVAL_L1_LEN], cred2[32];
		char sl[FLEETVAL_L1EV_HEX + 1], sl2[FLEETVAL_L1EV_HEX + 1], l1hex[65], l1HEX[65];
		static const uint8_t nonce2[FLEETVAL_NONCE_LEN] = { 9 };
		int all_bad = 1;

		for (int i = 0; i < FLEETVAL_L1_LEN; i++)
			l1[i] = (uint8_t)(0xa0 + i);
		hex(l1, sizeof(l1), l1hex);
		for (int i = 0; i < 64; i++)
			l1HEX[i] = (char)(l1hex[i] >= 'a' ? l1hex[i] - 32 : l1hex[i]);
		l1HEX[64] = 0;
		ok(fleetval_l1ev_seal(&k, cred, l1, nonce, sl) == 0, "L1 hash sealed");
		is_int((long long)strlen(sl), FLEETVAL_L1EV_HEX, "sealed L1 hash length");
		ok(!strstr(sl, l1hex) && !strstr(sl, l1HEX), "the L1 hash is not in clear");
		ok(fleetval_l1ev_open(&k, cred, sl, strlen(sl), back) == 0, "opens");
		is_mem(back, sizeof(back), l1, sizeof(l1), "L1 hash round trip");
		ok(fleetval_l1ev_seal(&k, cred, l1, nonce2, sl2) == 0 && strcmp(sl, sl2) != 0,
		   "another nonce, another field");
		memcpy(cred2, cred, 32);
		cred2[0] ^= 1;
		ok(fleetval_l1ev_open(&k, cred2, sl, strlen(sl), back) < 0,
		   "moved to another credential's event: refused");
		ok(fleetval_l1ev_open(&k2, cred, sl, strlen(sl), back) < 0,
		   "another fleet's secret: refused");
		for (size_t i = 0; i < strlen(sl); i++) {
			char c = sl[i];

			sl[i] = c == '0' ? '1' : '0';
			if (fleetval_l1ev_open(&k, cred, sl, strlen(sl), back) == 0)
				all_bad = 0;
			sl[i] = c;
		}
		ok(all_bad, "every hex digit changed: refused");
		all_bad = 1;
		for (size_t l = 0; l < strlen(sl); l++)
			if (fleetval_l1ev_open(&k, cred, sl, l, back) == 0)
				all_bad = 0;
		ok(all_bad, "every truncation: refused");
		sl[0] = 'g';
		ok(fleetval_l1ev_open(&k, cred, sl, strlen(sl), back) < 0, "not hex: refused");
		{
			uint8_t raw[FLEETVAL_L1EV_HEX / 2];

			ok(fleetval_l1ev_seal(&k, cred, l1, nonce, sl) == 0, "sealed again");
			for (size_t i = 0; i < sizeof(raw); i++) {
				unsigned b;

				sscanf(sl + 2 * i, "%2x", &b);
				raw[i] = (uint8_t)b;
			}
			is_int(fleetval_decode(&k, (const char *)cred, 32, raw, sizeof(raw), NOW, 4096,
			                       plain, &out), FLEETVAL_BAD,
			       "a sealed L1 hash never opens as a value");
		}
	}
	/* the stream's replay rule */
	{
		char r[FLEETVAL_ID_MAX];

		ok(fleetval_id_cmp("10-0", "9-5") > 0 && fleetval_id_cmp("9-5", "9-10") < 0 &&
		   fleetval_id_cmp("7-1", "7-1") == 0, "ids compare as numbers");
		ok(fleetval_id_cmp("junk", "0-0") == 0 && fleetval_id_cmp("1-", "0-0") == 0 &&
		   fleetval_id_cmp("99999999999999999999999-0", "0-0") == 0,
		   "unparsable ids sort as 0-0");
		is_int(fleetval_stream_resume("", 0, "50-0", "0-0", "10-0", 0, r), 0,
		       "first connection, empty cache: no flush");
		ok(strcmp(r, "50-0") == 0, "first connection resumes after the newest event");
		is_int(fleetval_stream_resume("", 1, "", "", "", 1, r), 1,
		       "first connection with entries cached meanwhile: flush");
		ok(strcmp(r, "0-0") == 0, "absent stream: resume from 0-0");
		is_int(fleetval_stream_resume("40-0", 0, "50-0", "0-0", "30-0", 1, r), 0,
		       "reconnect, nothing trimmed after the last applied: replay");
		ok(strcmp(r, "40-0") == 0, "replay from the last applied id");
		is_int(fleetval_stream_resume("40-0", 0, "50-0", "0-0", "40-0", 1, r), 0,
		       "the last applied is still the first retained: nothing missed");
		is_int(fleetval_stream_resume("40-0", 0, "50-0", "0-0", "45-0", 1, r), 1,
		       "MAXLEN trimmed past the last applied (max-deleted stays 0-0): flush");
		is_int(fleetval_stream_resume("40-0", 0, "50-0", "41-0", "30-0", 1, r), 1,
		       "an entry after the last applied deleted (XDEL): flush");
		ok(strcmp(r, "50-0") == 0, "after a flush, resume after the newest");
		is_int(fleetval_stream_resume("40-0", 1, "", "", "", 1, r), 1,
		       "stream deleted while away: flush");
		is_int(fleetval_stream_resume("0-0", 1, "", "", "", 1, r), 0,
		       "stream still absent, nothing ever applied: no flush");
		is_int(fleetval_stream_resume("40-0", 0, "3-0", "0-0", "1-0", 1, r), 1,
		       "stream recreated (ids below the last applied): flush");
		ok(strcmp(r, "3-0") == 0, "resume after the recreated stream's newest");
	}
	return done_testing();
}
