/*
 * fleetval.c: stored-decision codec and fleet key names (fleetval.h).
 *
 * Accepts any bytes in fleetval_decode() (the input is whatever Redis, or
 * whoever wrote to it, returned); never reads a clock, never logs, allocates
 * only OpenSSL's cipher and digest contexts. GCM checks the tag.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "decision.h"
#include "fleetval.h"
#include "hex.h"
#include "spop.h"

#define FLEETVAL_VERSION 2
#define FLEETVAL_STATUS_MAX 999

static const uint8_t fleetval_magic[3] = { 'S', 'A', 'F' };
/* The additional data's 4 bytes after the credential in a sealed L1 hash:
 * never a value's header ("SAF"), so neither opens as the other. */
static const uint8_t fleetval_l1ev_label[FLEETVAL_MAGIC_LEN] = { 'S', 'A', 'E', 1 };

#define FLEETVAL_HMAC_BLOCK 64  /* SHA-256 block size */

/* HMAC-SHA256 (RFC 2104) of the two parts <a> and <b> under <key>, through
 * EVP digests (OpenSSL 3 deprecates HMAC_CTX). Returns 0 or -1. */
static int fleetval_hmac2(const uint8_t *key, size_t klen, const void *a, size_t alen,
                          const void *b, size_t blen, uint8_t out[32])
{
	uint8_t k0[FLEETVAL_HMAC_BLOCK], pad[FLEETVAL_HMAC_BLOCK], inner[32];
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	int ok = 0;

	if (!c)
		return -1;
	memset(k0, 0, sizeof(k0));
	if (klen > sizeof(k0)) {
		if (EVP_Digest(key, klen, k0, NULL, EVP_sha256(), NULL) != 1)
			goto out;
	} else if (klen) {
		memcpy(k0, key, klen);
	}
	for (size_t i = 0; i < sizeof(pad); i++)
		pad[i] = k0[i] ^ 0x36;
	if (EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(c, pad, sizeof(pad)) != 1 || EVP_DigestUpdate(c, a, alen) != 1 ||
	    (blen && EVP_DigestUpdate(c, b, blen) != 1) || EVP_DigestFinal_ex(c, inner, NULL) != 1)
		goto out;
	for (size_t i = 0; i < sizeof(pad); i++)
		pad[i] = k0[i] ^ 0x5c;
	if (EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(c, pad, sizeof(pad)) != 1 ||
	    EVP_DigestUpdate(c, inner, sizeof(inner)) != 1 || EVP_DigestFinal_ex(c, out, NULL) != 1)
		goto out;
	ok = 1;
out:
	OPENSSL_cleanse(k0, sizeof(k0));
	OPENSSL_cleanse(pad, sizeof(pad));
	EVP_MD_CTX_free(c);
	return ok ? 0 : -1;
}

int fleetval_keys_derive(struct fleetval_keys *k, const uint8_t *secret, size_t len)
{
	static const char *const labels[4] = {
		"spoa-auth fleet key names", "spoa-auth fleet credential tags",
		"spoa-auth fleet value seal", "spoa-auth fleet cache salt",
	};
	uint8_t *outs[4] = { k->key, k->cred, k->seal, k->salt };

	if (len < FLEETVAL_SECRET_MIN)
		return -1;
	for (int i = 0; i < 4; i++)
		if (fleetval_hmac2(secret, len, labels[i], strlen(labels[i]), NULL, 0, outs[i]) < 0) {
			OPENSSL_cleanse(k, sizeof(*k));
			return -1;
		}
	return 0;
}

int fleetval_keys_bind(struct fleetval_keys *k, const void *shape, size_t len)
{
	uint8_t out[32];

	if (fleetval_hmac2(k->key, sizeof(k->key), "shape", 5, shape, len, out) < 0)
		return -1;
	memcpy(k->key, out, sizeof(out));
	OPENSSL_cleanse(out, sizeof(out));
	return 0;
}

int fleetval_cred_tag(const struct fleetval_keys *k, const uint8_t cred[32],
                      char out[FLEETVAL_HEX_LEN + 1])
{
	uint8_t t[32];

	if (fleetval_hmac2(k->cred, sizeof(k->cred), cred, 32, NULL, 0, t) < 0)
		return -1;
	hex_encode(out, t, sizeof(t), 0);
	return 0;
}

int fleetval_name_value(const struct fleetval_keys *k, const char *prefix,
                        const uint8_t key[32], const uint8_t cred[32], char *out)
{
	size_t plen = strlen(prefix);
	uint8_t t[32];
	char *o = out;

	if (plen > FLEETVAL_PREFIX_MAX)
		return -1;
	memcpy(o, prefix, plen);
	o += plen;
	memcpy(o, "v:{", 3);
	o += 3;
	if (fleetval_cred_tag(k, cred, o) < 0)
		return -1;
	o += FLEETVAL_HEX_LEN;
	*o++ = '}';
	if (fleetval_hmac2(k->key, sizeof(k->key), key, 32, NULL, 0, t) < 0)
		return -1;
	hex_encode(o, t, sizeof(t), 0);
	o += FLEETVAL_HEX_LEN;
	return (int)(o - out);
}

static void fleetval_put_be(uint8_t *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t fleetval_get_be(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* AES-256-GCM over <in>/<n> into <out> (same length) with additional data
 * <name> + <hdr>; <enc> 1 seals (writes <tag>), 0 opens (checks <tag>).
 * Returns 0, or -1 (OpenSSL failed, or the tag does not match). */
static int fleetval_gcm(const struct fleetval_keys *k, int enc, const uint8_t *nonce,
                        const char *name, size_t name_len, const uint8_t *hdr,
                        const uint8_t *in, size_t n, uint8_t *out, uint8_t *tag)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int len = 0, ok = 0;

	if (!c || n > INT32_MAX || name_len > INT32_MAX)
		goto out;
	if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, FLEETVAL_NONCE_LEN, NULL) != 1 ||
	    EVP_CipherInit_ex(c, NULL, NULL, k->seal, nonce, enc) != 1 ||
	    EVP_CipherUpdate(c, NULL, &len, (const uint8_t *)name, (int)name_len) != 1 ||
	    EVP_CipherUpdate(c, NULL, &len, hdr, FLEETVAL_MAGIC_LEN) != 1 ||
	    (n && EVP_CipherUpdate(c, out, &len, in, (int)n) != 1))
		goto out;
	if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, FLEETVAL_TAG_LEN, tag) != 1)
		goto out;
	if (EVP_CipherFinal_ex(c, out + n, &len) != 1)
		goto out;
	if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, FLEETVAL_TAG_LEN, tag) != 1)
		goto out;
	ok = 1;
out:
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -1;
}

long fleetval_encode(const struct fleetval_keys *k, const char *name, size_t name_len,
                     const uint8_t nonce[FLEETVAL_NONCE_LEN], const struct fleetval *v,
                     uint8_t *out)
{
	uint8_t *body = out + FLEETVAL_MAGIC_LEN + FLEETVAL_NONCE_LEN;
	size_t blen = FLEETVAL_BODY_HDR_LEN + v->actions_len;

	if (v->status < 0 || v->status > FLEETVAL_STATUS_MAX || v->outcome < 0 ||
	    v->outcome >= DECISION_OUTCOME_ENTRIES || v->actions_len > UINT32_MAX)
		return -1;
	memcpy(out, fleetval_magic, sizeof(fleetval_magic));
	out[3] = FLEETVAL_VERSION;
	memcpy(out + FLEETVAL_MAGIC_LEN, nonce, FLEETVAL_NONCE_LEN);
	fleetval_put_be(body, v->expires_ms, 8);
	fleetval_put_be(body + 8, v->l1_until_ms, 8);
	fleetval_put_be(body + 16, (uint64_t)v->status, 2);
	body[18] = (uint8_t)v->outcome;
	fleetval_put_be(body + 19, v->claims_skipped, 4);
	fleetval_put_be(body + 23, v->actions_len, 4);
	if (v->actions_len)
		memcpy(body + FLEETVAL_BODY_HDR_LEN, v->actions, v->actions_len);
	/* in place: GCM is a stream mode */
	if (fleetval_gcm(k, 1, nonce, name, name_len, out, body, blen, body, body + blen) < 0)
		return -1;
	return (long)fleetval_size(v->actions_len);
}

/* 1 if <p>/<n> is a non-empty run of well-formed ACK actions. */
static int fleetval_actions_ok(const uint8_t *p, size_t n)
{
	const uint8_t *end = p + n;
	struct spop_action a;
	int r, any = 0;

	while ((r = spop_action_next(&p, end, &a)) == 1)
		any = 1;
	return r == 0 && any;
}

enum fleetval_res fleetval_decode(const struct fleetval_keys *k, const char *name,
                                  size_t name_len, const uint8_t *buf, size_t len,
                                  uint64_t now_ms, size_t max_actions, uint8_t *plain,
                                  struct fleetval *v)
{
	const uint8_t *sealed = buf + FLEETVAL_MAGIC_LEN + FLEETVAL_NONCE_LEN;
	uint8_t tag[FLEETVAL_TAG_LEN];
	uint64_t alen, status;
	struct fleetval d;
	size_t blen;

	if (len < FLEETVAL_OVERHEAD || memcmp(buf, fleetval_magic, sizeof(fleetval_magic)) != 0 ||
	    buf[3] != FLEETVAL_VERSION || len - FLEETVAL_OVERHEAD > max_actions)
		return FLEETVAL_BAD;
	blen = len - FLEETVAL_MAGIC_LEN - FLEETVAL_NONCE_LEN - FLEETVAL_TAG_LEN;
	memcpy(tag, buf + len - FLEETVAL_TAG_LEN, sizeof(tag));
	/* Authentic first: nothing of a forged value is looked at. */
	if (fleetval_gcm(k, 0, buf + FLEETVAL_MAGIC_LEN, name, name_len, buf, sealed, blen,
	                 plain, tag) < 0)
		return FLEETVAL_BAD;
	alen = fleetval_get_be(plain + 23, 4);
	status = fleetval_get_be(plain + 16, 2);
	if (alen != blen - FLEETVAL_BODY_HDR_LEN || status > FLEETVAL_STATUS_MAX ||
	    plain[18] >= DECISION_OUTCOME_ENTRIES)
		return FLEETVAL_BAD;
	d.expires_ms = fleetval_get_be(plain, 8);
	d.l1_until_ms = fleetval_get_be(plain + 8, 8);
	d.status = (int)status;
	d.outcome = plain[18];
	d.claims_skipped = (uint32_t)fleetval_get_be(plain + 19, 4);
	d.actions = plain + FLEETVAL_BODY_HDR_LEN;
	d.actions_len = (size_t)alen;
	if (!fleetval_actions_ok(d.actions, d.actions_len))
		return FLEETVAL_BAD;
	*v = d;
	return d.expires_ms <= now_ms ? FLEETVAL_EXPIRED : FLEETVAL_OK;
}

int fleetval_event_parse(const char *s, size_t len, uint8_t cred[32])
{
	if (len == 1 && s[0] == '*')
		return 0;
	if (len != FLEETVAL_HEX_LEN)
		return -1;
	for (size_t i = 0; i < 32; i++) {
		int hi = hex_digit((unsigned char)s[2 * i]), lo = hex_digit((unsigned char)s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		cred[i] = (uint8_t)(hi << 4 | lo);
	}
	return 1;
}

void fleetval_event_format(const uint8_t *cred, char out[FLEETVAL_HEX_LEN + 1])
{
	if (!cred) {
		out[0] = '*';
		out[1] = 0;
		return;
	}
	hex_encode(out, cred, 32, 0);
}

int fleetval_l1ev_seal(const struct fleetval_keys *k, const uint8_t cred[32],
                       const uint8_t l1[FLEETVAL_L1_LEN], const uint8_t nonce[FLEETVAL_NONCE_LEN],
                       char out[FLEETVAL_L1EV_HEX + 1])
{
	uint8_t raw[FLEETVAL_NONCE_LEN + FLEETVAL_L1_LEN + FLEETVAL_TAG_LEN];
	int rc;

	memcpy(raw, nonce, FLEETVAL_NONCE_LEN);
	rc = fleetval_gcm(k, 1, nonce, (const char *)cred, 32, fleetval_l1ev_label, l1,
	                  FLEETVAL_L1_LEN, raw + FLEETVAL_NONCE_LEN,
	                  raw + FLEETVAL_NONCE_LEN + FLEETVAL_L1_LEN);
	if (rc == 0)
		hex_encode(out, raw, sizeof(raw), 0);
	OPENSSL_cleanse(raw, sizeof(raw));
	return rc;
}

int fleetval_l1ev_open(const struct fleetval_keys *k, const uint8_t cred[32], const char *s,
                       size_t len, uint8_t l1[FLEETVAL_L1_LEN])
{
	uint8_t raw[FLEETVAL_NONCE_LEN + FLEETVAL_L1_LEN + FLEETVAL_TAG_LEN];
	uint8_t plain[FLEETVAL_L1_LEN];
	int rc;

	if (len != FLEETVAL_L1EV_HEX)
		return -1;
	for (size_t i = 0; i < sizeof(raw); i++) {
		int hi = hex_digit((unsigned char)s[2 * i]), lo = hex_digit((unsigned char)s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		raw[i] = (uint8_t)(hi << 4 | lo);
	}
	rc = fleetval_gcm(k, 0, raw, (const char *)cred, 32, fleetval_l1ev_label,
	                  raw + FLEETVAL_NONCE_LEN, FLEETVAL_L1_LEN, plain,
	                  raw + FLEETVAL_NONCE_LEN + FLEETVAL_L1_LEN);
	if (rc == 0)
		memcpy(l1, plain, FLEETVAL_L1_LEN);
	OPENSSL_cleanse(plain, sizeof(plain));
	return rc;
}

/* "<ms>-<seq>" -> two numbers; 0 on success. */
static int fleetval_id_parse(const char *s, uint64_t *ms, uint64_t *seq)
{
	uint64_t v[2] = { 0, 0 };

	for (int part = 0; part < 2; part++) {
		const char *start = s;

		while (*s >= '0' && *s <= '9') {
			if (v[part] > (UINT64_MAX - 9) / 10)
				return -1;
			v[part] = v[part] * 10 + (uint64_t)(*s++ - '0');
		}
		if (s == start || *s != (part == 0 ? '-' : 0))
			return -1;
		s++;
	}
	*ms = v[0];
	*seq = v[1];
	return 0;
}

int fleetval_id_cmp(const char *a, const char *b)
{
	uint64_t am = 0, as = 0, bm = 0, bs = 0;

	if (fleetval_id_parse(a, &am, &as) < 0)
		am = as = 0;
	if (fleetval_id_parse(b, &bm, &bs) < 0)
		bm = bs = 0;
	if (am != bm)
		return am < bm ? -1 : 1;
	return as < bs ? -1 : as > bs;
}

int fleetval_stream_resume(const char *last, int absent, const char *last_gen,
                           const char *max_del, const char *first, int has_entries,
                           char resume[FLEETVAL_ID_MAX])
{
	const char *gen = absent ? "0-0" : last_gen;
	int flush;

	if (!last[0]) {
		/* First connection: what was revoked before it is unknowable. */
		flush = has_entries;
	} else if (absent) {
		flush = fleetval_id_cmp(last, "0-0") != 0;
	} else {
		/* Entries after <last> were trimmed (the first retained one is
		 * past it) or deleted, or the stream was recreated (its ids
		 * restarted below what was applied). */
		flush = (first[0] && fleetval_id_cmp(first, last) > 0) ||
		        fleetval_id_cmp(max_del, last) > 0 || fleetval_id_cmp(last_gen, last) < 0;
	}
	snprintf(resume, FLEETVAL_ID_MAX, "%s", flush || !last[0] ? gen : last);
	return flush;
}
