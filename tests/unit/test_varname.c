/*
 * test_varname.c: unit tests of the HAProxy variable-name helpers
 * (agent/varname.c).
 *
 * What it does: charset and 63-character checks of varname_check(), header
 * and claim-key mapping, buffer-size limits.
 *
 * What it never does: depend on anything but varname.c.
 */
#include <string.h>

#include "tap.h"
#include "varname.h"

static void test_check(void)
{
	char name[80];
	size_t n;
	int c;

	is_int(varname_check("auth", "status", 6), 0, "auth/status ok");
	is_int(varname_check("auth", "hdr.x_user_id", 13), 0, "dots and underscores ok");
	is_int(varname_check("auth", "AZaz09._", 8), 0, "whole charset ok");
	is_int(varname_check("auth", "x-user", 6), -1, "'-' refused");
	is_int(varname_check("auth", "a b", 3), -1, "space refused");
	is_int(varname_check("auth", "caf\xc3\xa9", 5), -1, "8-bit refused");
	is_int(varname_check("auth", "a\0b", 3), -1, "NUL refused");
	is_int(varname_check("auth", "", 0), -1, "empty refused");
	is_int(varname_check("auth", "status", 3), 0, "only <len> bytes are read");
	is_int(varname_check(NULL, "status", 6), 0, "NULL prefix is \"\"");

	/* txn. (4) + auth (4) + . (1) = 9: 54 bytes fit, 55 do not */
	memset(name, 'a', sizeof(name));
	is_int(varname_check("auth", name, 54), 0, "txn.auth. + 54 = 63: ok");
	is_int(varname_check("auth", name, 55), -1, "txn.auth. + 55 = 64: refused");
	is_int(varname_check("", name, 58), 0, "empty prefix: txn.. + 58 = 63 ok");
	is_int(varname_check("", name, 59), -1, "empty prefix: 59 refused");
	is_int(varname_check("a_very_long_prefix_name", name, 35), 0, "long prefix, 63");
	is_int(varname_check("a_very_long_prefix_name", name, 36), -1, "long prefix, 64");
	{
		char pfx[100];

		memset(pfx, 'p', sizeof(pfx) - 1);
		pfx[sizeof(pfx) - 1] = 0;
		is_int(varname_check(pfx, "a", 1), -1, "prefix alone too long");
	}
	is_int(varname_check("auth", name, (size_t)-1), -1, "huge len, no overflow");

	/* every byte value, alone */
	n = 0;
	for (c = 0; c < 256; c++) {
		char ch = (char)c;
		int want = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		            (c >= '0' && c <= '9') || c == '.' || c == '_') ? 0 : -1;

		if (varname_check("auth", &ch, 1) != want)
			n++;
	}
	is_int(n, 0, "each of the 256 byte values classified");
}

static void test_from_header(void)
{
	char out[64];
	size_t n;

	n = varname_from_header(out, sizeof(out), "X-User-Id", 9);
	is_int(n, 9, "X-User-Id: length 9");
	ok(strcmp(out, "x_user_id") == 0, "X-User-Id -> x_user_id");
	n = varname_from_header(out, sizeof(out), "WWW-Authenticate", 16);
	ok(n == 16 && strcmp(out, "www_authenticate") == 0, "WWW-Authenticate -> www_authenticate");
	n = varname_from_header(out, sizeof(out), "a.b_C d:e\xff", 10);
	ok(n == 10 && strcmp(out, "a.b_c_d_e_") == 0, "dots kept, others -> _");
	n = varname_from_header(out, sizeof(out), "Set-Cookie", 3);
	ok(n == 3 && strcmp(out, "set") == 0, "only <len> bytes");

	memset(out, '#', sizeof(out));
	is_int(varname_from_header(out, 4, "abcd", 4), 0, "4 chars + NUL in 4 bytes: 0");
	ok(out[0] == '#', "out untouched when it does not fit");
	is_int(varname_from_header(out, 5, "ABCD", 4), 4, "4 chars in 5 bytes");
	ok(strcmp(out, "abcd") == 0, "NUL-terminated");
	is_int(varname_from_header(out, 0, "a", 1), 0, "outsz 0");
	is_int(varname_from_header(out, sizeof(out), "", 0), 0, "empty header");
}

static void test_sanitize(void)
{
	char out[64];
	size_t n;

	n = varname_sanitize(out, sizeof(out), "User-ID", 7);
	ok(n == 7 && strcmp(out, "User_ID") == 0, "User-ID -> User_ID (case kept)");
	n = varname_sanitize(out, sizeof(out), "a.b_c9", 6);
	ok(n == 6 && strcmp(out, "a.b_c9") == 0, "valid key unchanged");
	n = varname_sanitize(out, sizeof(out), "r\xc3\xb4le\0x", 7);
	ok(n == 7 && memcmp(out, "r__le_x", 8) == 0, "8-bit and NUL -> _");
	n = varname_sanitize(out, sizeof(out), "http://x/y z", 12);
	ok(n == 12 && strcmp(out, "http___x_y_z") == 0, "URL-ish key");
	memset(out, '#', sizeof(out));
	is_int(varname_sanitize(out, 3, "abc", 3), 0, "does not fit: 0");
	ok(out[0] == '#', "out untouched");
	is_int(varname_sanitize(out, 4, "abc", 3), 3, "fits exactly");
	is_int(varname_sanitize(out, sizeof(out), "", 0), 0, "empty key: 0");
	is_int(varname_check("auth", out, varname_sanitize(out, sizeof(out), "a-b", 3)), 0,
	       "sanitized names pass varname_check");
}

int main(void)
{
	test_check();
	test_from_header();
	test_sanitize();
	return done_testing();
}
