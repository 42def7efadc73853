"""A fleet whose gateways run HAProxy's L1 (docs/fleet.md "The HAProxy L1",
docs/cache.md "L1"): two gateways, one real Redis, one fake user service
counting its calls per session (Cookie case=<id>), L1_CACHE=on keyed on the
"case" cookie and the runtime socket on both nodes.

- a session in B's L1, logged out through A: B's next answers stop being L1
  hits and are refused (bounded poll), and B's HAProxy holds the tombstone;
  the propagation over LOGOUT_ROUNDS logouts goes to the output (p50/p99,
  never asserted);
- POST /cache/invalidate of one session on A removes B's L1 entry; all=1 on
  A clears B's L1 map;
- a session answered on B from Redis (A's answer) is an L1 hit on B's next
  request;
- the L1 session hash never reaches Redis in clear.

The L1 TTL here (L1_TTL_S) is far above every poll's bound, so a refusal
within the bound comes from the revocation, not from the entry's expiry.
Run it on 2.6 and on 3.x (HAPROXY_BIN)."""
import json
import re
import sys

import pytest

from harness import (FLEET_ADMIN_TOKEN, fleet_invalidate, haproxy_major, l1_cred, metric, new_case,
                     percentile, RedisServer, runtime, start_fleet_node, stop_all, wait_metric,
                     wait_status)

L1_TTL_S = 30                   # L1_MAX_TTL, l1-max-ttl: well past every poll's bound
TOMB_EXPIRE = "60s"             # L1_TOMB_EXPIRE, above L1_TTL_S + timeout processing
LOGOUT_ROUNDS = 30
DEADLINE_S = 5.0                # bound of every poll (not a latency target)
CONNECT_DEADLINE_S = 10.0
RECONNECT_DEADLINE_S = 15.0     # a restarted Redis: reconnect backoff up to 5 s, then XINFO
PATH = "/api/business/fleet-l1"

USED = []                       # every case this module made


@pytest.fixture(scope="module")
def redis(fleet_agent, logdir):
    r = RedisServer(logdir, name="redis-fleet-l1").start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def fleet(fleet_agent, haproxy_bin, fake_user, demo_services, redis, logdir,
          tmp_path_factory):
    """Nodes A and B, each HAProxy with the L1 on and its runtime socket, and
    an agent that writes to that socket."""
    nodes = []
    try:
        for name in ("a", "b"):
            tmp = tmp_path_factory.mktemp("fleet-l1-" + name)
            sock = str(tmp / "rt.sock")
            env = {"L1_CACHE": "on", "L1_COOKIE": "case", "L1_MAX_TTL": str(L1_TTL_S),
                   "L1_TOMB_EXPIRE": TOMB_EXPIRE, "HAPROXY_RUNTIME_SOCKET": sock}
            if haproxy_major(haproxy_bin) < 3:
                (tmp / "l1.map").write_text("")
                env["L1_MAP"] = str(tmp / "l1.map")
            else:
                env["L1_MAP"] = "virt@l1"
            extra = ["--cache-key-client", "off", "--cache-key-cookies", "case",
                     "--cache-ttl", "%ds" % (2 * L1_TTL_S), "--l1-max-ttl", "%ds" % L1_TTL_S,
                     "--haproxy-runtime-socket", sock, "--haproxy-l1-map", env["L1_MAP"]]
            n = start_fleet_node(logdir, haproxy_bin, fleet_agent, name, fake_user.url,
                                 fake_user.port, demo_services["biz_port"], redis.address,
                                 extra=extra, haproxy_env=env)
            n.sock, n.map_name, n.user = sock, env["L1_MAP"], fake_user
            nodes.append(n)
        for n in nodes:
            assert wait_metric(n.admin_port, "spoa_auth_redis_up", 1,
                               CONNECT_DEADLINE_S) == 1, n.agent.describe()
            assert wait_metric(n.admin_port, "spoa_auth_redis_stream_up", 1,
                               CONNECT_DEADLINE_S) == 1, n.agent.describe()
        yield nodes
    finally:
        procs = [p for n in nodes for p in n.procs]
        stop_all(procs, strict=[p.name for p in procs if p.name.startswith("agent-")])


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def session(user):
    case = new_case()
    user.program(case, status=200, body="tok-" + case)
    USED.append(case)
    return case


def logged_out(user, case):
    user.program(case, status=401, body='{"error":"logged out"}', content_type="application/json")


def calls(user, case):
    return len(user.calls(case))


def in_l1_of_b(a, b, case):
    """B answers <case> (one user-service call), then from its L1; A never
    saw the session (its revocation does not depend on having it)."""
    r = b.get(PATH, cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "miss"), r
    r = b.get(PATH, cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "l1"), r
    assert calls(b.user, case) == 1


def wait_not_l1(gw, case, deadline=DEADLINE_S):
    """Polls <gw> until <case>'s answer is no L1 hit (bounded); the answer."""
    import time
    t0 = time.monotonic()
    while True:
        r = gw.get(PATH, cookie(case))
        if r.header("X-Auth-Cache") != "l1" or time.monotonic() - t0 > deadline:
            return r, time.monotonic() - t0


# ---- tests ------------------------------------------------------------------
def test_redis_answer_is_an_l1_hit_on_b(fleet):
    """B answers from Redis with an l1_ttl, so its HAProxy keeps the
    decision: B's next request never reaches its agent."""
    a, b = fleet
    hits = metric(b.admin_port, "spoa_auth_redis_l2_results_total", result="hit") or 0
    case = session(a.user)
    r = a.get(PATH, cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "miss"), r
    r = b.get(PATH, cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "hit"), r
    assert metric(b.admin_port, "spoa_auth_redis_l2_results_total", result="hit") >= hits + 1
    decided = metric(b.admin_port, "spoa_auth_decisions_total", outcome="allow")
    r = b.get(PATH, cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "l1"), r
    assert metric(b.admin_port, "spoa_auth_decisions_total", outcome="allow") == decided
    assert calls(a.user, case) == 1


def test_logout_on_a_reaches_b_l1(fleet):
    a, b = fleet
    case = session(a.user)
    in_l1_of_b(a, b, case)
    logged_out(a.user, case)
    r = a.request("POST", "/api/user/logout", cookie(case), body="")
    assert r.status == 200, r
    r, waited, _ = wait_status(b, PATH, cookie(case), 401, DEADLINE_S)
    assert r.status == 401, "B's L1 still allows a session logged out on A after %.1fs: %r" % (
        waited, r)
    assert r.header("X-Auth-Cache") != "l1", r
    assert l1_cred(case) in runtime(b, "show table l1_tomb"), "no tombstone in B's HAProxy"
    assert b.get(PATH, cookie(case)).status == 401


def test_logout_propagation_to_b_l1(fleet, capsys, record_property):
    """LOGOUT_ROUNDS sessions in B's L1, each logged out through A and polled
    on B until refused; the distribution goes to the output."""
    a, b = fleet
    lat_ms = []
    for _ in range(LOGOUT_ROUNDS):
        case = session(a.user)
        in_l1_of_b(a, b, case)
        logged_out(a.user, case)
        r = a.request("POST", "/api/user/logout", cookie(case), body="")
        assert r.status == 200, r
        r, waited, _ = wait_status(b, PATH, cookie(case), 401, DEADLINE_S)
        assert r.status == 401, "B still allowed after %.1fs: %r" % (waited, r)
        lat_ms.append(waited * 1000)
    p50, p99 = percentile(lat_ms, 50), percentile(lat_ms, 99)
    line = ("fleet logout A -> B's HAProxy L1 over %d logouts: p50 %.2f ms, p99 %.2f ms, "
            "max %.2f ms" % (len(lat_ms), p50, p99, max(lat_ms)))
    record_property("l1_logout_propagation", json.dumps(
        {"n": len(lat_ms), "p50_ms": p50, "p99_ms": p99, "max_ms": max(lat_ms)}))
    with capsys.disabled():
        sys.stdout.write("\n" + line + "\n")


def test_admin_invalidation_on_a_reaches_b_l1(fleet):
    a, b = fleet
    case, other = session(a.user), session(a.user)
    in_l1_of_b(a, b, case)
    in_l1_of_b(a, b, other)
    r = fleet_invalidate(a, "cookie=case%%3D%s" % case)
    assert r.status == 200, r
    r, waited = wait_not_l1(b, case)
    assert r.header("X-Auth-Cache") != "l1", "B's L1 still holds an invalidated session " \
        "after %.1fs: %r" % (waited, r)
    assert r.status == 200, r  # still allowed by the user service: asked again
    assert calls(a.user, case) == 2
    assert l1_cred(case) in runtime(b, "show table l1_tomb")
    r = b.get(PATH, cookie(other))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "l1"), r


def test_admin_all_on_a_clears_b_l1(fleet):
    a, b = fleet
    cases = [session(a.user) for _ in range(3)]
    for case in cases:
        in_l1_of_b(a, b, case)
    r = fleet_invalidate(a, "all=1")
    assert r.status == 200, r
    for case in cases:
        r, waited = wait_not_l1(b, case)
        assert r.header("X-Auth-Cache") != "l1", "B's L1 still answers after all=1 on A " \
            "(%.1fs): %r" % (waited, r)
        assert r.status == 200, r


def test_unreachable_runtime_socket_is_counted_and_never_holds_the_stream(
        fleet, redis, fleet_agent, haproxy_bin, demo_services, logdir, tmp_path_factory):
    """Node C's agent names a runtime socket nothing listens on: the L1
    writes of A's revocations fail and are counted, and C still applies
    every revocation to its own cache (it refuses the sessions)."""
    a, b = fleet
    dead = str(tmp_path_factory.mktemp("fleet-l1-c") / "nobody.sock")
    c = start_fleet_node(logdir, haproxy_bin, fleet_agent, "c", a.user.url, a.user.port,
                         demo_services["biz_port"], redis.address,
                         extra=["--cache-key-client", "off", "--cache-key-cookies", "case",
                                "--haproxy-runtime-socket", dead])
    try:
        assert wait_metric(c.admin_port, "spoa_auth_redis_stream_up", 1,
                           CONNECT_DEADLINE_S) == 1, c.agent.describe()
        cases = [session(a.user) for _ in range(3)]
        for case in cases:
            r = c.get(PATH, cookie(case))
            assert (r.status, r.header("X-Auth-Cache")) == (200, "miss"), r
        ok0 = metric(c.admin_port, "spoa_auth_l1_runtime_commands_total") or 0
        for case in cases:
            logged_out(a.user, case)
            r = a.request("POST", "/api/user/logout", cookie(case), body="")
            assert r.status == 200, r
        for case in cases:
            r, waited, _ = wait_status(c, PATH, cookie(case), 401, DEADLINE_S)
            assert r.status == 401, "C still allows after %.1fs: %r" % (waited, r)
        # One per event: the first tried, the others within its backoff.
        assert (wait_metric(c.admin_port, "spoa_auth_l1_runtime_errors_total", len(cases),
                            DEADLINE_S) or 0) >= len(cases)
        assert (metric(c.admin_port, "spoa_auth_l1_runtime_commands_total") or 0) == ok0
        assert "did not reach the HAProxy L1" in c.agent.tail(1 << 20)
        for case in cases:
            assert l1_cred(case) not in c.agent.tail(1 << 20)
    finally:
        stop_all(c.procs, strict=[c.agent.name])


def test_no_l1_hash_in_redis(fleet, redis):
    """Runs last: the events carried the L1 hashes sealed; no session's L1
    hash (either case), cookie value or token is in a dump of Redis."""
    assert len(USED) > LOGOUT_ROUNDS
    dump = redis.dump()
    assert dump, "Redis holds nothing"
    blob = b"\n".join(k + b"\n" + t + b"\n" + b"\n".join(vs) for k, t, vs in dump)
    sealed = [vs[i + 1] for _, t, vs in dump if t == b"stream"
              for i in range(len(vs) - 1) if vs[i] == b"l"]
    assert sealed and all(re.fullmatch(rb"[0-9a-f]{120}", v) for v in sealed), sealed[:3]
    leaked = []
    for case in USED:
        h = l1_cred(case)
        for s in (h, h.lower(), case, "tok-" + case):
            if s.encode() in blob:
                leaked.append(s)
    assert not leaked, "in Redis: %r" % leaked[:5]
    assert FLEET_ADMIN_TOKEN.encode() not in blob


def test_redis_restarted_empty_clears_b_l1(fleet, redis):
    """Runs after the dump: Redis restarted empty, so B cannot know what was
    revoked meanwhile; its local flush empties its HAProxy L1 too."""
    a, b = fleet
    case = session(a.user)
    in_l1_of_b(a, b, case)
    flushes = metric(b.admin_port, "spoa_auth_redis_local_flushes_total") or 0
    redis.restart()
    got = wait_metric(b.admin_port, "spoa_auth_redis_local_flushes_total", flushes + 1,
                      RECONNECT_DEADLINE_S)
    assert got == flushes + 1, b.agent.describe()
    r, waited = wait_not_l1(b, case)
    assert r.header("X-Auth-Cache") != "l1", "B's L1 kept a session across its local flush " \
        "(%.1fs): %r" % (waited, r)
    assert r.status == 200, r
