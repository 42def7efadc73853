/*
 * args.c: NOTIFY arguments -> struct args (see args.h).
 *
 * Pure: no I/O, no allocation, no logging, no global state. The HMAC for
 * the access-log hash uses the low-level SHA256_* functions for the reason
 * given in cachekey.c (no allocation per request).
 */
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "args.h"
#include "cfg.h"
#include "spop.h"

#define ARGS_HMAC_BLOCK 64  /* SHA-256 block size */

void args_init(struct args *a)
{
	a->uri = NULL;
	a->uri_len = 0;
	a->scope = NULL;
	a->scope_len = 0;
	a->n_bad_scope = 0;
	a->xff = NULL;
	a->xff_len = 0;
	a->src_kind = CACHEKEY_ADDR_NONE;
	a->src_text = NULL;
	a->src_len = 0;
	a->traceparent = NULL;
	a->traceparent_len = 0;
	a->tracestate = NULL;
	a->tracestate_len = 0;
	a->n_hdrs = 0;
	a->n_unsafe = 0;
	a->unsafe_name = NULL;
	a->unsafe_name_len = 0;
}

/* A value must not smuggle a line break (or NUL) into the request. */
static int args_value_ok(const char *v, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (v[i] == '\r' || v[i] == '\n' || v[i] == 0)
			return 0;
	return 1;
}

static int args_name_is(const struct spop_str *s, const char *lit, size_t n)
{
	return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

int args_add_header(struct args *a, const struct cfg *cfg, const char *name, size_t name_len,
                    const char *value, size_t value_len)
{
	struct args_hdr *h;

	if (!name_len || !value || !cfg_forwards_header(cfg, name, name_len))
		return 0;
	if (!args_value_ok(value, value_len)) {
		if (!a->n_unsafe++) {
			a->unsafe_name = name;
			a->unsafe_name_len = name_len;
		}
		return -1;
	}
	if (a->n_hdrs >= ARGS_MAX)
		return 0;  /* unreachable from args_classify(): one per argument */
	h = &a->hdrs[a->n_hdrs++];
	h->name = name;
	h->name_len = name_len;
	h->value = value;
	h->value_len = value_len;
	return 1;
}

int args_scope_ok(const char *s, size_t len)
{
	if (!s || len == 0 || len > ARGS_SCOPE_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return 0;
	}
	return 1;
}

/* `scope`: HAProxy sends a null when txn.auth_scope is unset (no scope). */
static void args_set_scope(struct args *a, const struct spop_data *v)
{
	a->scope = NULL;
	a->scope_len = 0;
	if (v->type == SPOP_T_NULL)
		return;
	if (v->type == SPOP_T_STR && args_scope_ok(v->u.str.ptr, v->u.str.len)) {
		a->scope = v->u.str.ptr;
		a->scope_len = v->u.str.len;
		return;
	}
	a->n_bad_scope++;
}

static void args_set_src(struct args *a, const struct spop_data *v)
{
	a->src_kind = CACHEKEY_ADDR_NONE;
	a->src_text = NULL;
	a->src_len = 0;
	if (v->type == SPOP_T_IPV4 || v->type == SPOP_T_IPV6) {
		/* v->u.ip is a copy in the decoded value: keep the bytes */
		a->src_len = v->type == SPOP_T_IPV4 ? 4 : 16;
		a->src_kind = v->type == SPOP_T_IPV4 ? CACHEKEY_ADDR_IPV4 : CACHEKEY_ADDR_IPV6;
		memcpy(a->src_ip, v->u.ip, a->src_len);
	} else if (v->type == SPOP_T_STR && v->u.str.len <= ARGS_SRC_TEXT_MAX &&
	           args_value_ok(v->u.str.ptr, v->u.str.len)) {
		a->src_kind = CACHEKEY_ADDR_TEXT;
		a->src_text = v->u.str.ptr;
		a->src_len = v->u.str.len;
	}
}

int args_classify(struct args *a, const struct cfg *cfg, const uint8_t **p, const uint8_t *end,
                  unsigned nargs)
{
	args_init(a);
	if (nargs > ARGS_MAX)
		return -1;
	for (unsigned i = 0; i < nargs; i++) {
		struct spop_str name;
		struct spop_data v;
		int is_str;

		if (spop_arg_next(p, end, &name, &v) < 0)
			return -1;
		is_str = v.type == SPOP_T_STR || v.type == SPOP_T_BIN;
		if (args_name_is(&name, "uri", 3)) {
			if (is_str) {
				a->uri = v.u.str.ptr ? v.u.str.ptr : "";
				a->uri_len = v.u.str.len;
			}
		} else if (args_name_is(&name, "scope", 5)) {
			args_set_scope(a, &v);
		} else if (args_name_is(&name, "src", 3)) {
			args_set_src(a, &v);
		} else if (args_name_is(&name, "xff", 3)) {
			if (v.type == SPOP_T_STR && v.u.str.len &&
			    args_value_ok(v.u.str.ptr, v.u.str.len)) {
				a->xff = v.u.str.ptr;
				a->xff_len = v.u.str.len;
			}
		} else if (is_str) {
			if (v.type == SPOP_T_STR && args_name_is(&name, "traceparent", 11)) {
				a->traceparent = v.u.str.ptr;
				a->traceparent_len = v.u.str.len;
			} else if (v.type == SPOP_T_STR && args_name_is(&name, "tracestate", 10)) {
				a->tracestate = v.u.str.ptr;
				a->tracestate_len = v.u.str.len;
			}
			args_add_header(a, cfg, name.ptr, name.len,
			                v.u.str.ptr ? v.u.str.ptr : "", v.u.str.len);
		}
	}
	return 0;
}

int args_key(const struct args *a, struct cachekey *ck, uint8_t key[CACHEKEY_LEN],
             uint8_t cred[CACHEKEY_LEN])
{
	const void *addr = a->src_kind == CACHEKEY_ADDR_TEXT ? (const void *)a->src_text
	                                                     : (const void *)a->src_ip;

	if (cachekey_begin(ck) < 0)
		return -1;
	for (size_t i = 0; i < a->n_hdrs; i++)
		if (cachekey_header(ck, a->hdrs[i].name, a->hdrs[i].name_len, a->hdrs[i].value,
		                    a->hdrs[i].value_len) < 0)
			return -1;
	if (a->scope)
		return cachekey_end_scope(ck, a->xff, a->xff_len, a->src_kind, addr, a->src_len,
		                          a->scope, a->scope_len, key, cred);
	return cachekey_end_client(ck, a->xff, a->xff_len, a->src_kind, addr, a->src_len, a->uri,
	                           a->uri_len, key, cred);
}

/* Longest dotted quad, "255.255.255.255", with its NUL. */
#define ARGS_IPV4_TEXT 16

/* Writes the dotted quad of <ip> (4 bytes, network order) at <out> (room
 * for ARGS_IPV4_TEXT) and NUL-terminates it: what inet_ntop(AF_INET) writes,
 * without the printf machinery it goes through (glibc formats each octet
 * with sprintf), which was the miss path's whole vfprintf share. */
static void args_ipv4_text(const uint8_t ip[4], char *out)
{
	for (int i = 0; i < 4; i++) {
		unsigned v = ip[i];

		if (v >= 100)
			*out++ = (char)('0' + v / 100);
		if (v >= 10)
			*out++ = (char)('0' + v / 10 % 10);
		*out++ = (char)('0' + v % 10);
		*out++ = i < 3 ? '.' : 0;
	}
}

int args_src_text(const struct args *a, char *out, size_t outsz)
{
	switch (a->src_kind) {
	case CACHEKEY_ADDR_IPV4:
		if (outsz < ARGS_IPV4_TEXT)
			return -1;
		args_ipv4_text(a->src_ip, out);
		return 0;
	case CACHEKEY_ADDR_IPV6:
		return inet_ntop(AF_INET6, a->src_ip, out, (socklen_t)outsz) ? 0 : -1;
	case CACHEKEY_ADDR_TEXT:
		if (a->src_len >= outsz)
			return -1;
		memcpy(out, a->src_text, a->src_len);
		out[a->src_len] = 0;
		return 0;
	default:
		return -1;
	}
}

/* HMAC-SHA256 (RFC 2104) over <a>'s header lines. */
static int args_hmac(const struct args *a, const uint8_t key[ARGS_LOG_KEY_LEN],
                     uint8_t out[SHA256_DIGEST_LENGTH])
{
	uint8_t pad[ARGS_HMAC_BLOCK], inner[SHA256_DIGEST_LENGTH];
	SHA256_CTX md;
	size_t i;
	int ok;

	memset(pad, 0x36, sizeof(pad));
	for (i = 0; i < ARGS_LOG_KEY_LEN; i++)
		pad[i] ^= key[i];
	ok = SHA256_Init(&md) == 1 && SHA256_Update(&md, pad, sizeof(pad)) == 1;
	for (i = 0; ok && i < a->n_hdrs; i++)
		ok = SHA256_Update(&md, a->hdrs[i].name, a->hdrs[i].name_len) == 1 &&
		     SHA256_Update(&md, ": ", 2) == 1 &&
		     SHA256_Update(&md, a->hdrs[i].value, a->hdrs[i].value_len) == 1 &&
		     SHA256_Update(&md, "\n", 1) == 1;
	ok = ok && SHA256_Final(inner, &md) == 1;
	for (i = 0; i < sizeof(pad); i++)
		pad[i] ^= 0x36 ^ 0x5c;
	ok = ok && SHA256_Init(&md) == 1 && SHA256_Update(&md, pad, sizeof(pad)) == 1 &&
	     SHA256_Update(&md, inner, sizeof(inner)) == 1 && SHA256_Final(out, &md) == 1;
	OPENSSL_cleanse(pad, sizeof(pad));
	OPENSSL_cleanse(&md, sizeof(md));
	return ok ? 0 : -1;
}

void args_log_hash(const struct args *a, const uint8_t key[ARGS_LOG_KEY_LEN],
                   char out[ARGS_LOG_HASH_SIZE])
{
	uint8_t dg[SHA256_DIGEST_LENGTH];

	if (args_hmac(a, key, dg) < 0) {
		strcpy(out, "-");
		return;
	}
	snprintf(out, ARGS_LOG_HASH_SIZE, "%02x%02x%02x%02x", dg[0], dg[1], dg[2], dg[3]);
}
