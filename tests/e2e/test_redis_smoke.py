"""Fleet smoke (the agent side): two gateways (HAProxy + agent
each) sharing one real redis-server on a free loopback port. A session
answered on A is a hit on B without a user-service call; a logout on A makes
B ask the user service again; Redis holds no credential; a wrong Redis
password stops the start with a clear error. The thorough fleet and fault
tests are test_fleet*.py."""
import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import time

import pytest

from harness import HOST, Proc, free_ports, gateway, http, new_case, stop_all, wait_port

REDIS = shutil.which("redis-server")
SECRET = secrets.token_hex(32)
PROPAGATION_S = 2.0      # bound on how long a revocation may take to reach B

pytestmark = pytest.mark.skipif(not REDIS, reason="redis-server not installed")


def redis_cmd(port, *args):
    """One RESP command on a fresh connection; returns the raw reply bytes."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(out)
        data = b""
        s.settimeout(0.5)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    return data


def start_redis(logdir, port, *extra):
    p = Proc("redis", [REDIS, "--port", port, "--bind", HOST, "--save", "", "--appendonly",
                       "no", *extra], logdir)
    wait_port(port, p)
    return p


def metric(admin_port, name):
    body = http(admin_port, "GET", "/metrics").body.decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("%s not in /metrics" % name)


def wait_metric(admin_port, name, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while metric(admin_port, name) != want:
        assert time.monotonic() < deadline, "%s never reached %s" % (name, want)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def fleet2(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    redis_port, = free_ports(1)
    with contextlib.ExitStack() as stack:
        redis = start_redis(logdir, redis_port)
        # the restart test replaces the server: stop the current one
        stack.callback(lambda: stop_all([redis] + _REDIS_RESTARTED))
        gws = []
        for name in ("agent-a", "agent-b"):
            gw = stack.enter_context(gateway(
                logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                demo_services["biz_port"], agent_extra=[
                    "--cache", "on", "--redis-address", "%s:%d" % (HOST, redis_port),
                    "--redis-key-secret", SECRET, "--redis-timeout", "200ms"],
                admin=True, agent_name=name, user=fake_user))
            wait_metric(gw.admin_port, "spoa_auth_redis_stream_up", 1)
            wait_metric(gw.admin_port, "spoa_auth_redis_up", 1)
            gws.append(gw)
        yield gws[0], gws[1], redis_port


_REDIS_RESTARTED = []


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def test_answer_on_a_is_a_hit_on_b(fleet2):
    a, b, _ = fleet2
    case = new_case()
    a.user.program(case, status=200, body="tok-" + case)
    r = a.get("/api/business/x", cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "miss")
    assert len(a.user.calls(case)) == 1
    # The write-back does not wait: give it a moment to land.
    deadline = time.monotonic() + PROPAGATION_S
    while True:
        r = b.get("/api/business/x", cookie(case))
        assert r.status == 200
        if r.header("X-Auth-Cache") == "hit":
            break
        assert time.monotonic() < deadline, "B never answered from Redis"
        time.sleep(0.05)
    hits_before = metric(b.admin_port, 'spoa_auth_redis_l2_results_total{result="hit"}')
    assert hits_before >= 1
    calls = len(a.user.calls(case))
    # B's local cache now holds it: a second request on B is a local hit.
    assert b.get("/api/business/x", cookie(case)).header("X-Auth-Cache") == "hit"
    assert len(a.user.calls(case)) == calls


def test_logout_on_a_reaches_b(fleet2):
    a, b, _ = fleet2
    case = new_case()
    a.user.program(case, status=200, body="tok-" + case)
    assert a.get("/api/business/y", cookie(case)).status == 200
    assert b.get("/api/business/y", cookie(case)).status == 200   # B has it (local or L2)
    assert b.get("/api/business/y", cookie(case)).header("X-Auth-Cache") == "hit"
    a.user.program(case, status=401, body='{"error":"logged out"}',
                   content_type="application/json")
    received = 'spoa_auth_redis_revocations_total{direction="received"}'
    before = metric(b.admin_port, received)
    assert a.request("POST", "/api/user/logout", cookie(case), body="").status == 200
    deadline = time.monotonic() + PROPAGATION_S
    while True:
        r = b.get("/api/business/y", cookie(case))
        if r.status == 401:
            break
        assert time.monotonic() < deadline, "B still serves the session after a logout on A"
        time.sleep(0.02)
    # This logout's revocation (the module's agents are shared).
    assert metric(b.admin_port, received) >= before + 1


def test_redis_holds_no_credential(fleet2):
    a, b, redis_port = fleet2
    case = new_case()
    a.user.program(case, status=200, body="tok-" + case)
    assert a.get("/api/business/z", cookie(case)).status == 200
    time.sleep(0.2)
    keys = redis_cmd(redis_port, "KEYS", "*")
    assert b"spoa-auth:v:{" in keys
    dump = keys
    for line in keys.split(b"\r\n"):
        if line.startswith(b"spoa-auth:v:"):
            dump += redis_cmd(redis_port, "GET", line)
    dump += redis_cmd(redis_port, "XRANGE", "spoa-auth:revocations", "-", "+")
    assert case.encode() not in dump
    assert b"case=" not in dump


def value_names(redis_port):
    keys = redis_cmd(redis_port, "KEYS", "spoa-auth:v:*")
    return {l for l in keys.split(b"\r\n") if l.startswith(b"spoa-auth:v:")}


def wait_new_name(redis_port, before):
    deadline = time.monotonic() + PROPAGATION_S
    while True:
        new = value_names(redis_port) - before
        if new:
            assert len(new) == 1, new
            return new.pop()
        assert time.monotonic() < deadline, "no value written"
        time.sleep(0.02)


def bulk(reply):
    """The payload of a RESP bulk-string reply."""
    head, _, rest = reply.partition(b"\r\n")
    assert head.startswith(b"$") and int(head[1:]) >= 0, reply
    return rest[:int(head[1:])]


def test_a_value_moved_to_another_session_is_refused(fleet2):
    """Someone with write access to Redis (but not the secret) copies an
    allowed session's value under a denied session's name: B must not
    answer the denied session from it."""
    a, b, redis_port = fleet2
    allowed, denied = new_case(), new_case()
    a.user.program(allowed, status=200, body="tok-" + allowed)
    a.user.program(denied, status=401, body='{"error":"no"}', content_type="application/json")
    before = value_names(redis_port)
    assert a.get("/api/business/m", cookie(allowed)).status == 200
    name_allowed = wait_new_name(redis_port, before)
    before = value_names(redis_port)
    assert a.get("/api/business/m", cookie(denied)).status == 401
    name_denied = wait_new_name(redis_port, before)
    value = bulk(redis_cmd(redis_port, "GET", name_allowed))
    assert redis_cmd(redis_port, "SET", name_denied, value, "PX", "60000").startswith(b"+OK")
    bad = metric(b.admin_port, 'spoa_auth_redis_l2_results_total{result="bad_value"}')
    calls = len(a.user.calls(denied))
    r = b.get("/api/business/m", cookie(denied))
    assert (r.status, r.header("X-Auth-Cache")) == (401, "miss"), r
    assert len(a.user.calls(denied)) == calls + 1
    assert metric(b.admin_port, 'spoa_auth_redis_l2_results_total{result="bad_value"}') == bad + 1


def test_set_cookie_answer_is_never_written(fleet2):
    """A login redirect carrying a per-call nonce cookie belongs to the one
    request that asked: never written to Redis, B asks for its own. A plain
    answer right after does reach Redis (the check can fail)."""
    a, b, redis_port = fleet2
    case = new_case()
    a.user.program(case, status=302, headers=[("Location", "/login")],
                   nonce_cookie="oauth_state")
    before = value_names(redis_port)
    r = a.get("/api/business/login", cookie(case))
    assert r.status == 302 and r.header("Set-Cookie"), r
    plain = new_case()
    a.user.program(plain, status=200, body="tok-" + plain)
    assert a.get("/api/business/login", cookie(plain)).status == 200
    wait_new_name(redis_port, before)      # exactly one new value: the plain answer
    r = b.get("/api/business/login", cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (302, "miss"), r
    assert len(a.user.calls(case)) == 2


def test_wrong_password_stops_the_start(agent_bin, fake_user, logdir):
    redis_port, agent_port = free_ports(2)
    r = start_redis(logdir, redis_port, "--requirepass", "right-" + secrets.token_hex(8))
    try:
        # a hang would raise TimeoutExpired
        p = subprocess.run([agent_bin, "--listen", "%s:%d" % (HOST, agent_port),
                            "--admin-listen", "off", "--user-service-url", fake_user.url,
                            "--cache", "on", "--redis-address", "%s:%d" % (HOST, redis_port),
                            "--redis-key-secret", SECRET, "--redis-password", "wrong-password"],
                           capture_output=True, text=True, timeout=15)
        assert p.returncode != 0
        assert "redis-password" in p.stderr, p.stderr
        assert "wrong-password" not in p.stderr + p.stdout
    finally:
        stop_all([r])


ACL_RULES = ("on", ">acl-password-1234", "~spoa-auth:*", "-@all", "+get", "+set", "+del",
             "+sadd", "+smembers", "+exists", "+pttl", "+pexpire", "+incr", "+eval", "+xadd",
             "+xread", "+xinfo", "+ping", "+auth")


def test_acl_user_limited_to_the_prefix(agent_bin, fake_user, demo_services, haproxy_bin,
                                        logdir):
    """The ACL user docs/operations.md gives is enough for every command:
    read, write-back, revocation and the stream all succeed."""
    redis_port, = free_ports(1)
    redis = start_redis(logdir, redis_port, "--user", "spoa-auth", *ACL_RULES)
    try:
        with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                     demo_services["biz_port"], agent_extra=[
                         "--cache", "on", "--redis-address", "%s:%d" % (HOST, redis_port),
                         "--redis-key-secret", SECRET, "--redis-user", "spoa-auth",
                         "--redis-password", "acl-password-1234", "--redis-timeout", "200ms"],
                     admin=True, agent_name="agent-acl", user=fake_user) as gw:
            acl_round_trip(gw, fake_user)
    finally:
        stop_all([redis])


def acl_round_trip(gw, fake_user):
    """Every command the agent uses succeeds as the ACL user."""
    a = gw.agent
    wait_metric(a.admin_port, "spoa_auth_redis_stream_up", 1)
    case = new_case()
    fake_user.program(case, status=200, body="tok-" + case)
    assert gw.get("/api/business/acl", cookie(case)).status == 200
    assert gw.request("POST", "/api/user/logout", cookie(case), body="").status == 200
    c = 'spoa_auth_redis_commands_total{command="%s",result="%s"}'
    deadline = time.monotonic() + PROPAGATION_S
    while metric(a.admin_port, 'spoa_auth_redis_revocations_total{direction="received"}') < 1:
        assert time.monotonic() < deadline, "the revocation never came back"
        time.sleep(0.05)
    for cmd in ("get", "set", "revoke", "xread", "auth"):
        assert metric(a.admin_port, c % (cmd, "ok")) >= 1, cmd
        assert metric(a.admin_port, c % (cmd, "error")) == 0, cmd


def test_missing_or_short_secret_is_refused(agent_bin):
    for extra in ([], ["--redis-key-secret", "short"]):
        p = subprocess.run([agent_bin, "-c", "--cache", "on", "--redis-address",
                            "127.0.0.1:6379", *extra], capture_output=True, text=True,
                           timeout=15)
        assert p.returncode != 0
        assert "redis-key-secret" in p.stderr, p.stderr


def test_redis_stopped_costs_at_most_the_budget(fleet2):
    """SIGSTOP: reads time out within redis-timeout, then Redis is skipped
    (the connection is dropped, or the breaker opens); every request is
    answered by the user service meanwhile."""
    a, b, _ = fleet2
    skipped = metric(b.admin_port, 'spoa_auth_redis_l2_results_total{result="skipped"}')
    redis = [p for p in __import__("harness").PROCS if p.name == "redis" and p.alive()][-1]
    redis.p.send_signal(signal.SIGSTOP)
    try:
        for i in range(12):
            case = new_case()
            a.user.program(case, status=200, body="tok-" + case)
            r = b.get("/api/business/s%d" % i, cookie(case))
            # 200 from the user service's answer: a read stuck past the
            # SPOE's timeout processing would have been an agent error
            assert (r.status, r.header("X-Auth-Cache")) == (200, "miss"), r
        assert metric(b.admin_port,
                      'spoa_auth_redis_l2_results_total{result="skipped"}') > skipped
        assert metric(b.admin_port,
                      'spoa_auth_redis_commands_total{command="get",result="timeout"}') >= 1
    finally:
        redis.p.send_signal(signal.SIGCONT)
    wait_metric(b.admin_port, "spoa_auth_redis_stream_up", 1)


def test_redis_killed_and_restarted(fleet2, logdir):
    """SIGKILL: authentication goes on through the user service; a restart
    brings the fleet back without restarting the agents, and a logout after
    the reconnect still reaches the other node."""
    a, b, redis_port = fleet2
    redis = [p for p in __import__("harness").PROCS if p.name == "redis" and p.alive()][-1]
    redis.p.kill()
    redis.p.wait()
    redis.stopped = True
    case = new_case()
    a.user.program(case, status=200, body="tok-" + case)
    for gw in (a, b):
        for path in ("/api/business/k1", "/api/business/k2"):
            assert gw.get(path, cookie(case)).status == 200
    wait_metric(b.admin_port, "spoa_auth_redis_stream_up", 0)
    wait_metric(b.admin_port, "spoa_auth_redis_up", 0)
    new = start_redis(logdir, redis_port)
    _REDIS_RESTARTED.append(new)
    for gw in (a, b):
        wait_metric(gw.admin_port, "spoa_auth_redis_stream_up", 1)
        wait_metric(gw.admin_port, "spoa_auth_redis_up", 1)
    case = new_case()
    a.user.program(case, status=200, body="tok-" + case)
    assert a.get("/api/business/r", cookie(case)).status == 200
    assert b.get("/api/business/r", cookie(case)).status == 200
    assert b.get("/api/business/r", cookie(case)).header("X-Auth-Cache") == "hit"
    a.user.program(case, status=401, body='{"error":"logged out"}',
                   content_type="application/json")
    assert a.request("POST", "/api/user/logout", cookie(case), body="").status == 200
    deadline = time.monotonic() + PROPAGATION_S
    while b.get("/api/business/r", cookie(case)).status != 401:
        assert time.monotonic() < deadline, "a logout after the reconnect did not reach B"
        time.sleep(0.02)
