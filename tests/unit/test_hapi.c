/*
 * test_hapi.c: unit tests of the HAProxy runtime API client (agent/hapi.c).
 *
 * What it does: checks the L1 session hash against a vector computed outside
 * the agent (Python's hashlib over the same bytes, which is what
 * haproxy.cfg's sha2(256),hex gives: uppercase hex), the command builders
 * (exact lines, names that could smuggle a second command or a line
 * refused, hashes of the wrong shape refused, no room refused), the reply
 * check, address parsing, and one real exchange over a unix socket in a
 * temporary directory served by a thread of this test: the exact bytes
 * received, a success reply, an error reply, a server that never answers
 * (the timeout), and a socket path nobody listens on.
 *
 * It also checks the L1 configuration keys: their defaults, and that a bad
 * value stops the load with an error naming the key.
 *
 * What it never does: talk to a real HAProxy (tests/e2e/test_l1.py does).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "cfg.h"
#include "hapi.h"
#include "tap.h"

/* sha256("spoa-l1-v1|session=abc"), uppercase hex (Python hashlib). */
#define VEC_COOKIE "session=abc"
#define VEC_CRED "63D20846AA5E007FC35B154784E854122EC2A4F6AC86CEC56F74400424561421"

struct srv {
	int lfd;
	const char *answer;   /* NULL: never answer, keep the connection open */
	char got[512];
	size_t got_len;
};

static void *srv_run(void *arg)
{
	struct srv *s = arg;
	int fd = accept(s->lfd, NULL, NULL);
	ssize_t r;

	if (fd == -1)
		return NULL;
	s->got_len = 0;
	/* one line: read up to the newline */
	while (s->got_len < sizeof(s->got) - 1 &&
	       (r = read(fd, s->got + s->got_len, sizeof(s->got) - 1 - s->got_len)) > 0) {
		s->got_len += (size_t)r;
		if (memchr(s->got, '\n', s->got_len))
			break;
	}
	s->got[s->got_len] = 0;
	if (s->answer) {
		if (write(fd, s->answer, strlen(s->answer)) < 0)
			diag("server write failed");
	} else {
		usleep(400 * 1000);
	}
	close(fd);
	return NULL;
}

static int srv_listen(const char *path)
{
	struct sockaddr_un un;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
	unlink(path);
	if (fd == -1 || bind(fd, (struct sockaddr *)&un, sizeof(un)) == -1 || listen(fd, 4) == -1)
		return -1;
	return fd;
}

static int exec_against(struct srv *s, const char *path, const char *cmd, int timeout_ms,
                        char *err, size_t errlen)
{
	pthread_t t;
	char reply[256];
	size_t rlen;
	int rc;

	pthread_create(&t, NULL, srv_run, s);
	rc = hapi_exec(path, cmd, timeout_ms, reply, sizeof(reply), &rlen, err, errlen);
	pthread_join(t, NULL);
	return rc;
}

/* cfg_load() of defaults + one option <key> <val>: expects a refusal naming
 * the key. */
static void cfg_refused(const char *key, const char *val)
{
	char opt[64], err[256];
	char *argv[2];
	struct cfg *c;

	snprintf(opt, sizeof(opt), "--%s", key);
	argv[0] = opt;
	argv[1] = (char *)val;
	c = cfg_load(NULL, 2, argv, err, sizeof(err));
	ok(c == NULL && strstr(err, opt) != NULL, "cfg: %s '%s' refused, naming the key (%s)",
	   key, val, err);
	cfg_put(c);
}

static void test_cfg_keys(void)
{
	char err[256];
	struct cfg *c = cfg_load(NULL, 0, NULL, err, sizeof(err));

	ok(c != NULL, "cfg: defaults load");
	if (c) {
		is_int(c->l1_max_ttl_ms, 5000, "cfg: l1-max-ttl defaults to 5s");
		ok(c->haproxy_runtime_socket == NULL, "cfg: haproxy-runtime-socket off by default");
		ok(c->haproxy_l1_map && strcmp(c->haproxy_l1_map, "virt@l1") == 0,
		   "cfg: haproxy-l1-map defaults to virt@l1");
		ok(c->haproxy_l1_tombstones && strcmp(c->haproxy_l1_tombstones, "l1_tomb") == 0,
		   "cfg: haproxy-l1-tombstones defaults to l1_tomb");
	}
	cfg_put(c);
	cfg_refused("l1-max-ttl", "2h");
	cfg_refused("l1-max-ttl", "-1");
	cfg_refused("l1-max-ttl", "3600001");
	cfg_refused("haproxy-runtime-socket", "relative.sock");
	cfg_refused("haproxy-runtime-socket", "localhost:9999");
	cfg_refused("haproxy-l1-map", "virt@l1;clear");
	cfg_refused("haproxy-l1-tombstones", "a b");
}

int main(void)
{
	char cred[HAPI_L1_CRED_HEX + 1], buf[HAPI_CMD_MAX], err[128], dir[] = "/tmp/hapiXXXXXX";
	char path[96];
	struct srv s;
	int n;

	test_cfg_keys();

	/* the hash HAProxy computes */
	ok(hapi_l1_cred(VEC_COOKIE, strlen(VEC_COOKIE), cred) == 0, "cred: computed");
	is_mem(cred, strlen(cred), VEC_CRED, strlen(VEC_CRED), "cred: equals sha2(256),hex");
	hapi_l1_cred("session=abd", 11, buf);
	ok(strcmp(buf, VEC_CRED) != 0, "cred: another cookie, another hash");

	/* commands */
	n = hapi_cmd_tombstone(buf, sizeof(buf), "l1_tomb", VEC_CRED);
	ok(n > 0 && strcmp(buf, "set table l1_tomb key " VEC_CRED " data.gpt0 1\n") == 0,
	   "tombstone: exact line");
	is_int(n, (long long)strlen(buf), "tombstone: length returned");
	ok(hapi_cmd_tombstone(buf, sizeof(buf), "l1_tomb;clear map x", VEC_CRED) == -1,
	   "tombstone: ';' in the table name refused");
	ok(hapi_cmd_tombstone(buf, sizeof(buf), "l1 tomb", VEC_CRED) == -1,
	   "tombstone: space in the table name refused");
	ok(hapi_cmd_tombstone(buf, sizeof(buf), "l1_tomb", "abc") == -1,
	   "tombstone: short hash refused");
	ok(hapi_cmd_tombstone(buf, sizeof(buf), "l1_tomb",
	                      "63d20846aa5e007fc35b154784e854122ec2a4f6ac86cec56f74400424561421") == -1,
	   "tombstone: lowercase hash refused (HAProxy's hex is uppercase)");
	ok(hapi_cmd_tombstone(buf, 20, "l1_tomb", VEC_CRED) == -1, "tombstone: no room refused");
	n = hapi_cmd_clear_map(buf, sizeof(buf), "virt@l1");
	ok(n > 0 && strcmp(buf, "clear map virt@l1\n") == 0, "clear map: exact line");
	ok(hapi_cmd_clear_map(buf, sizeof(buf), "a\nb") == -1, "clear map: newline refused");
	ok(hapi_cmd_clear_map(buf, sizeof(buf), "") == -1, "clear map: empty name refused");
	ok(hapi_name_ok("/etc/haproxy/l1.map"), "name: a file path is fine");
	ok(!hapi_name_ok("x\"y"), "name: a quote is refused");

	/* replies */
	ok(hapi_reply_ok("\n", 1), "reply: empty line is success");
	ok(hapi_reply_ok("", 0), "reply: nothing is success");
	ok(!hapi_reply_ok("Unknown table.\n", 15), "reply: a message is a failure");

	/* addresses */
	ok(hapi_addr_ok("/run/haproxy/admin.sock"), "addr: unix path");
	ok(hapi_addr_ok("127.0.0.1:9999"), "addr: IPv4:port");
	ok(hapi_addr_ok("[::1]:9999"), "addr: [IPv6]:port");
	ok(!hapi_addr_ok("relative.sock"), "addr: relative path refused");
	ok(!hapi_addr_ok("127.0.0.1:0"), "addr: port 0 refused");
	ok(!hapi_addr_ok("localhost:9999"), "addr: names refused (numeric only)");
	ok(!hapi_addr_ok("127.0.0.1:99999"), "addr: port out of range refused");

	/* a real exchange over a unix socket */
	if (!mkdtemp(dir)) {
		ok(0, "mkdtemp");
		return done_testing();
	}
	snprintf(path, sizeof(path), "%s/rt.sock", dir);
	memset(&s, 0, sizeof(s));
	s.lfd = srv_listen(path);
	ok(s.lfd != -1, "exec: test server listens");
	hapi_cmd_tombstone(buf, sizeof(buf), "l1_tomb", VEC_CRED);
	s.answer = "\n";
	ok(exec_against(&s, path, buf, 2000, err, sizeof(err)) == 0, "exec: success reply -> 0");
	is_mem(s.got, s.got_len, buf, strlen(buf), "exec: HAProxy gets exactly the line");
	s.answer = "Unknown table. Did you mean 'l1_live' ?\n";
	ok(exec_against(&s, path, buf, 2000, err, sizeof(err)) == -1, "exec: error reply -> -1");
	ok(strstr(err, "refused") != NULL, "exec: error says HAProxy refused (%s)", err);
	ok(strstr(err, VEC_CRED) == NULL, "exec: the error never carries the hash");
	s.answer = NULL;
	ok(exec_against(&s, path, buf, 100, err, sizeof(err)) == -1, "exec: silent server -> -1");
	ok(strstr(err, "timed out") != NULL, "exec: it timed out (%s)", err);
	close(s.lfd);
	unlink(path);
	ok(hapi_exec(path, buf, 200, s.got, sizeof(s.got), &s.got_len, err, sizeof(err)) == -1,
	   "exec: nobody listening -> -1 (%s)", err);
	rmdir(dir);

	{
		struct hapi_stats st0, st1;

		hapi_stats_get(&st0);
		hapi_count(0);
		hapi_count(-1);
		hapi_count(-1);
		hapi_stats_get(&st1);
		is_int((long long)(st1.ok - st0.ok), 1, "stats: one ok counted");
		is_int((long long)(st1.failed - st0.failed), 2, "stats: two failures counted");
	}
	return done_testing();
}
