"""Redis faults under load, on a fleet of two gateways: node A talks to the
real Redis directly, node B through a FakeResp in front of it (so that B's
link can be broken in every way a RESP server can break it). During each
fault, bounded load (LOAD_S seconds, LOAD_THREADS keep-alive clients over
both nodes, known sessions and fresh ones) must get exactly the answers the
single-node path gives (the fake user service's programmed status), never an
SPOE error (a request past HAProxy's "timeout processing" is one), and the
fleet level must come back without restarting an agent, revocations
included."""
import contextlib
import http.client as httpclient
import re
import sys
import threading
import time

import pytest

from harness import (HOST, FakeResp, fleet_node, metric, new_case, RedisServer, wait_metric,
                     wait_status)

LOAD_S = 3.0
LOAD_THREADS = 4
WARM_SESSIONS = 20
FRESH_EVERY = 5                 # one request in FRESH_EVERY uses a brand new session
RECONNECT_DEADLINE_S = 15.0
RECOVER_DEADLINE_S = 10.0
REFUSE_DEADLINE_S = 5.0
PATH = "/api/business/fleet-faults"
STREAM_MAXLEN = 100             # the smallest the agent takes
TRIM_LOGOUTS = 500              # > MAXLEN + a stream node (100 entries): MAXLEN ~ trims whole nodes


@pytest.fixture(scope="module")
def redis(fleet_agent, logdir):
    r = RedisServer(logdir, name="redis-faults").start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def proxy(redis):
    f = FakeResp(redis.port)
    yield f
    f.stop()


@pytest.fixture(scope="module")
def fleet(fleet_agent, haproxy_bin, fake_user, demo_services, redis, proxy, logdir):
    with contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(fleet_node(logdir, haproxy_bin, fleet_agent, name,
                                                fake_user.url, fake_user.port,
                                                demo_services["biz_port"], addr))
                 for name, addr in (("fa", redis.address), ("fb", proxy.address))]
        for n in nodes:
            n.user = fake_user
        wait_connected(nodes)
        yield nodes


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def wait_connected(nodes):
    for n in nodes:
        for name in ("spoa_auth_redis_up", "spoa_auth_redis_stream_up"):
            v = wait_metric(n.admin_port, name, 1, RECONNECT_DEADLINE_S)
            assert v == 1, "%s: %s is %r after %.0fs\n%s" % (
                n.name, name, v, RECONNECT_DEADLINE_S, n.agent.describe())


def spoe_errors(nodes):
    """HAProxy log lines of the fleet with an SPOE error (spoe_err=<not ->)."""
    bad = []
    for n in nodes:
        for line in n.haproxy.tail(1 << 24).splitlines():
            m = re.search(r"spoe_err=(\S+)", line)
            if m and m.group(1) != "-":
                bad.append(line)
    return bad


class Load:
    """LOAD_THREADS clients, each on a keep-alive connection to one node in
    turn, for <seconds>: WARM_SESSIONS known sessions (half allowed, half
    refused) and a fresh allowed session every FRESH_EVERY requests. Records
    (node, expected status, status, seconds) per request."""

    def __init__(self, nodes, user, seconds=LOAD_S):
        self.nodes, self.user, self.seconds = nodes, user, seconds
        self.warm = []
        for i in range(WARM_SESSIONS):
            case = new_case()
            if i % 2:
                user.program(case, status=401, body='{"error":"no"}',
                             content_type="application/json")
                self.warm.append((case, 401))
            else:
                user.program(case, status=200, body="tok-" + case)
                self.warm.append((case, 200))
        self.results = []
        self.lock = threading.Lock()
        self.threads = []

    def _run(self, i):
        conns = [httpclient.HTTPConnection(HOST, n.port, timeout=10) for n in self.nodes]
        out = []
        k = 0
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            node = (i + k) % len(self.nodes)
            if k % FRESH_EVERY == 0:
                case = new_case()
                self.user.program(case, status=200, body="tok-" + case)
                want = 200
            else:
                case, want = self.warm[(i * 7 + k) % len(self.warm)]
            k += 1
            t0 = time.monotonic()
            try:
                c = conns[node]
                c.request("GET", PATH, headers={"Cookie": "case=" + case})
                r = c.getresponse()
                r.read()
                status = r.status
            except (OSError, httpclient.HTTPException) as e:
                status = "exception %r" % e
                conns[node].close()
                conns[node] = httpclient.HTTPConnection(HOST, self.nodes[node].port, timeout=10)
            out.append((self.nodes[node].name, want, status, time.monotonic() - t0))
        for c in conns:
            c.close()
        with self.lock:
            self.results.extend(out)

    def start(self):
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(LOAD_THREADS)]
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join(self.seconds + 30)
        assert not any(t.is_alive() for t in self.threads), "load threads stuck"
        return self

    def wrong(self):
        return [r for r in self.results if r[1] != r[2]]

    def report(self, label):
        n = len(self.results)
        slowest = max((r[3] for r in self.results), default=0)
        sys.stdout.write("\n%s: %d requests, %d wrong, slowest %.0f ms\n" % (
            label, n, len(self.wrong()), slowest * 1000))


def check_load(load, nodes, label, capsys):
    with capsys.disabled():
        load.report(label)
    assert len(load.results) > 0
    wrong = load.wrong()
    assert not wrong, "%s: %d of %d answers differ from the user service's: %r" % (
        label, len(wrong), len(load.results), wrong[:5])
    bad = spoe_errors(nodes)
    assert not bad, "%s: SPOE errors (timeout processing?): %r" % (label, bad[:3])


def check_shared(nodes):
    """The fleet level is back within RECOVER_DEADLINE_S (a breaker opened by
    the fault closes only after its open time and a probe): a session
    answered on one node is answered on the other without a user-service
    call, both ways. Returns the sessions it took."""
    a, b = nodes
    tries = 0
    for first, second in ((a, b), (b, a)):
        deadline = time.monotonic() + RECOVER_DEADLINE_S
        while True:
            tries += 1
            case = new_case()
            a.user.program(case, status=200, body="tok-" + case)
            assert first.get(PATH, cookie(case)).status == 200
            assert len(a.user.calls(case)) == 1
            assert second.get(PATH, cookie(case)).status == 200
            if len(a.user.calls(case)) == 1:
                break
            assert time.monotonic() < deadline, (
                "%s still asks the user service for sessions %s answered, %.0fs after the "
                "fault (breaker %r)" % (second.name, first.name, RECOVER_DEADLINE_S,
                                        metric(second.admin_port,
                                               "spoa_auth_redis_breaker_state")))
            time.sleep(0.1)
    return tries


def check_revocation(nodes, origin, target):
    """A logout through <origin> makes <target> refuse."""
    case = new_case()
    origin.user.program(case, status=200, body="tok-" + case)
    assert origin.get(PATH, cookie(case)).status == 200
    assert target.get(PATH, cookie(case)).status == 200
    origin.user.program(case, status=401, body='{"error":"logged out"}',
                        content_type="application/json")
    assert origin.request("POST", "/api/user/logout", cookie(case), body="").status == 200
    r, waited, _ = wait_status(target, PATH, cookie(case), 401, REFUSE_DEADLINE_S)
    assert r.status == 401, "%s still allows a session logged out on %s: %r" % (
        target.name, origin.name, r)


# ---- tests ------------------------------------------------------------------
def test_baseline_load_without_fault(fleet, capsys):
    load = Load(fleet, fleet[0].user).start().join()
    check_load(load, fleet, "no fault", capsys)
    check_shared(fleet)


def test_redis_sigkill_then_restart(fleet, redis, capsys):
    # Both agents have applied a stream entry: an empty stream after the
    # restart cannot be what they read.
    check_revocation(fleet, fleet[0], fleet[1])
    for n in fleet:
        assert wait_metric(n.admin_port, "spoa_auth_redis_revocations_total", 1,
                           RECONNECT_DEADLINE_S, direction="received") >= 1
    flushes = [metric(n.admin_port, "spoa_auth_redis_local_flushes_total") or 0 for n in fleet]
    load = Load(fleet, fleet[0].user).start()
    time.sleep(LOAD_S / 3)
    redis.kill()
    time.sleep(LOAD_S / 3)
    load.join()
    check_load(load, fleet, "redis SIGKILL", capsys)
    for n in fleet:
        assert wait_metric(n.admin_port, "spoa_auth_redis_up", 0, RECONNECT_DEADLINE_S) == 0
    # Still one gateway each while Redis is gone.
    load = Load(fleet, fleet[0].user, seconds=1.0).start().join()
    check_load(load, fleet, "redis down", capsys)
    redis.restart()
    wait_connected(fleet)
    # The stream came back empty: what was revoked meanwhile cannot be known.
    for n, before in zip(fleet, flushes):
        assert metric(n.admin_port, "spoa_auth_redis_local_flushes_total") > before, n.name
    check_shared(fleet)
    check_revocation(fleet, fleet[0], fleet[1])
    check_revocation(fleet, fleet[1], fleet[0])


def test_redis_sigstop_then_sigcont(fleet, redis, capsys):
    load = Load(fleet, fleet[0].user).start()
    time.sleep(LOAD_S / 4)
    redis.pause()
    try:
        time.sleep(LOAD_S / 2)
    finally:
        redis.resume()
    load.join()
    check_load(load, fleet, "redis SIGSTOP", capsys)
    wait_connected(fleet)
    check_shared(fleet)
    check_revocation(fleet, fleet[0], fleet[1])


@pytest.mark.parametrize("mode", ["garbage", "wrongtype", "error", "partial", "silent", "close"])
def test_broken_resp_server(fleet, proxy, mode, capsys):
    """B's Redis link answers <mode> (FakeResp) on the connections already
    open and on every new one, under load; then heals."""
    a, b = fleet
    load = Load(fleet, a.user).start()
    time.sleep(LOAD_S / 4)
    proxy.set_mode(mode)
    try:
        time.sleep(LOAD_S / 2)
    finally:
        load.join()
        proxy.set_mode("pass")
    check_load(load, fleet, "B's Redis answers %s" % mode, capsys)
    assert proxy.bad_answers > 0, "the agent sent nothing during the fault"
    # A reply that never comes or never ends leaves a connection the agent
    # must drop itself; the proxy drops the rest so that none lingers.
    proxy.drop_connections()
    wait_connected(fleet)
    check_shared(fleet)
    check_revocation(fleet, a, b)


def test_revocation_missed_while_disconnected_is_applied(fleet, proxy):
    """A logout on A while B cannot reach Redis: once B is back (no agent
    restart), B refuses the session, by replaying the stream (or by dropping
    its local cache when it cannot know what it missed)."""
    a, b = fleet
    case = new_case()
    a.user.program(case, status=200, body="tok-" + case)
    assert a.get(PATH, cookie(case)).status == 200
    assert b.get(PATH, cookie(case)).status == 200
    r = b.get(PATH, cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "hit"), r
    received = metric(b.admin_port, "spoa_auth_redis_revocations_total",
                      direction="received") or 0
    flushes = metric(b.admin_port, "spoa_auth_redis_local_flushes_total") or 0
    proxy.set_mode("close")
    proxy.drop_connections()
    try:
        v = wait_metric(b.admin_port, "spoa_auth_redis_stream_up", 0, RECONNECT_DEADLINE_S)
        assert v == 0, "B's revocation stream still up with its link closed"
        a.user.program(case, status=401, body='{"error":"logged out"}',
                       content_type="application/json")
        assert a.request("POST", "/api/user/logout", cookie(case), body="").status == 200
        assert a.get(PATH, cookie(case)).status == 401
    finally:
        proxy.set_mode("pass")
    wait_connected(fleet)
    r, waited, _ = wait_status(b, PATH, cookie(case), 401, REFUSE_DEADLINE_S)
    assert r.status == 401, "B still allows after reconnecting: %r" % r
    after_received = metric(b.admin_port, "spoa_auth_redis_revocations_total",
                            direction="received") or 0
    after_flushes = metric(b.admin_port, "spoa_auth_redis_local_flushes_total") or 0
    assert after_received > received or after_flushes > flushes, (
        "B refused, but neither replayed a revocation nor flushed its cache")


def test_stream_trimmed_while_disconnected_flushes(fleet_agent, haproxy_bin, fake_user,
                                                   demo_services, logdir):
    """B is cut off while A's logouts trim the revocation stream past what B
    read (redis-stream-maxlen STREAM_MAXLEN): once back, B cannot replay, so
    it flushes its local cache; a session revoked meanwhile is refused."""
    redis = RedisServer(logdir, name="redis-trim").start()
    proxy = FakeResp(redis.port)
    extra = ["--redis-stream-maxlen", str(STREAM_MAXLEN)]
    with contextlib.ExitStack() as stack:
        stack.callback(redis.stop)
        stack.callback(proxy.stop)
        nodes = [stack.enter_context(fleet_node(logdir, haproxy_bin, fleet_agent, name,
                                                fake_user.url, fake_user.port,
                                                demo_services["biz_port"], addr, extra=extra))
                 for name, addr in (("ta", redis.address), ("tb", proxy.address))]
        for n in nodes:
            n.user = fake_user
        wait_connected(nodes)
        a, b = nodes
        case = new_case()
        fake_user.program(case, status=200, body="tok-" + case)
        assert a.get(PATH, cookie(case)).status == 200
        assert b.get(PATH, cookie(case)).status == 200
        assert b.get(PATH, cookie(case)).header("X-Auth-Cache") == "hit"
        flushes = metric(b.admin_port, "spoa_auth_redis_local_flushes_total") or 0
        proxy.set_mode("close")
        proxy.drop_connections()
        try:
            assert wait_metric(b.admin_port, "spoa_auth_redis_stream_up", 0,
                               RECONNECT_DEADLINE_S) == 0
            fake_user.program(case, status=401, body='{"error":"logged out"}',
                              content_type="application/json")
            assert a.request("POST", "/api/user/logout", cookie(case), body="").status == 200
            # Enough other logouts that the approximate MAXLEN trims the entry above.
            for _ in range(TRIM_LOGOUTS):
                other = new_case()
                assert a.request("POST", "/api/user/logout", cookie(other), body="").status == 200
            assert redis.cmd("XLEN", "spoa-auth:revocations") < TRIM_LOGOUTS
        finally:
            proxy.set_mode("pass")
        wait_connected(nodes)
        assert wait_metric(b.admin_port, "spoa_auth_redis_local_flushes_total", flushes + 1,
                           RECONNECT_DEADLINE_S) >= flushes + 1
        r, waited, _ = wait_status(b, PATH, cookie(case), 401, REFUSE_DEADLINE_S)
        assert r.status == 401, "B still allows after reconnecting: %r" % r
