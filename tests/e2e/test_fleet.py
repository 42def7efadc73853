"""A fleet of two gateways (HAProxy + agent each) sharing one real Redis as
the second cache level and the revocation stream (docs/fleet.md), and one
fake user service that counts its calls per session (Cookie case=<id>).

- a session answered on node A is answered on node B with no user-service call;
- a logout through A makes B refuse (polled with a bounded deadline), and the
  propagation latency over LOGOUT_ROUNDS logouts is written to the output
  (p50/p99; never asserted);
- POST /cache/invalidate on one agent (one session, or all) reaches the other;
- neither Redis nor any log holds a session cookie value or an identity token.
"""
import contextlib
import json
import sys

import pytest

from harness import (FLEET_ADMIN_TOKEN, FLEET_KEY_SECRET, fleet_invalidate, fleet_node, metric,
                     new_case, percentile, RedisServer, wait_metric, wait_status)

LOGOUT_ROUNDS = 100
REFUSE_DEADLINE_S = 5.0         # bound of every poll for a refusal (not a latency target)
CONNECT_DEADLINE_S = 10.0
PATH = "/api/business/fleet"

USED = []                       # (case, token) of every session this module made


@pytest.fixture(scope="module")
def redis(fleet_agent, logdir):
    r = RedisServer(logdir, name="redis-fleet").start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def fleet(fleet_agent, haproxy_bin, fake_user, demo_services, redis, logdir):
    """Nodes A and B: each its own HAProxy and agent, one Redis, one fake
    user service."""
    with contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(fleet_node(logdir, haproxy_bin, fleet_agent, name,
                                                fake_user.url, fake_user.port,
                                                demo_services["biz_port"], redis.address))
                 for name in ("a", "b")]
        for n in nodes:
            n.user = fake_user
            assert wait_metric(n.admin_port, "spoa_auth_redis_up", 1,
                               CONNECT_DEADLINE_S) == 1, n.agent.describe()
            assert wait_metric(n.admin_port, "spoa_auth_redis_stream_up", 1,
                               CONNECT_DEADLINE_S) == 1, n.agent.describe()
        yield nodes


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def session(user):
    """A fresh session the fake user service allows."""
    case = new_case()
    token = "tok-" + case
    user.program(case, status=200, body=token)
    USED.append((case, token))
    return case


def logged_out(user, case):
    user.program(case, status=401, body='{"error":"logged out"}', content_type="application/json")


def calls(user, case):
    return len(user.calls(case))


def warm_both(a, b, case):
    """A asks the user service (one call); B answers from the fleet level
    and then from its own cache, without a call."""
    r = a.get(PATH, cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "miss"), r
    assert calls(a.user, case) == 1
    r = b.get(PATH, cookie(case))
    assert r.status == 200, r
    r = b.get(PATH, cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "hit"), r
    assert calls(a.user, case) == 1, "B asked the user service for a session A knows"


# ---- tests ------------------------------------------------------------------
def test_session_answered_on_a_is_a_hit_on_b(fleet):
    a, b = fleet
    hits_before = metric(b.admin_port, "spoa_auth_redis_l2_results_total", result="hit") or 0
    for _ in range(5):
        case = session(a.user)
        r = a.get(PATH, cookie(case))
        assert (r.status, r.header("X-Auth-Cache")) == (200, "miss"), r
        assert calls(a.user, case) == 1
        r = b.get(PATH, cookie(case))
        assert r.status == 200, r
        assert r.header("X-Auth-Cache") != "miss", r
        assert calls(a.user, case) == 1, "node B called the user service"
        # Filled locally from the fleet level: a local hit next.
        r = b.get(PATH, cookie(case))
        assert (r.status, r.header("X-Auth-Cache")) == (200, "hit"), r
    assert metric(b.admin_port, "spoa_auth_redis_l2_results_total",
                  result="hit") >= hits_before + 5


def test_refusal_is_shared_too(fleet):
    """A cached refusal (401) on A is B's answer too, without a call."""
    a, b = fleet
    case = session(a.user)
    logged_out(a.user, case)
    assert a.get(PATH, cookie(case)).status == 401
    assert calls(a.user, case) == 1
    r = b.get(PATH, cookie(case))
    assert r.status == 401, r
    assert calls(a.user, case) == 1


def test_logout_on_a_makes_b_refuse(fleet):
    a, b = fleet
    case = session(a.user)
    warm_both(a, b, case)
    sent = metric(a.admin_port, "spoa_auth_redis_revocations_total", direction="sent") or 0
    logged_out(a.user, case)
    r = a.request("POST", "/api/user/logout", cookie(case), body="")
    assert r.status == 200, r
    r, waited, polls = wait_status(b, PATH, cookie(case), 401, REFUSE_DEADLINE_S)
    assert r.status == 401, "B still allows a session logged out on A after %.1fs: %r" % (
        waited, r)
    assert a.get(PATH, cookie(case)).status == 401
    assert metric(a.admin_port, "spoa_auth_redis_revocations_total",
                  direction="sent") >= sent + 1
    assert (metric(b.admin_port, "spoa_auth_redis_revocations_total", direction="received")
            or 0) >= 1


def test_logout_propagation_latency(fleet, capsys, record_property):
    """LOGOUT_ROUNDS logouts through A, each polled on B until refused; the
    latency distribution goes to the output, the test only asserts that every
    one was refused within the bound."""
    a, b = fleet
    lat_ms, polls_all = [], []
    for _ in range(LOGOUT_ROUNDS):
        case = session(a.user)
        warm_both(a, b, case)
        logged_out(a.user, case)
        r = a.request("POST", "/api/user/logout", cookie(case), body="")
        assert r.status == 200, r
        # The clock starts when the logout has been answered on A.
        r, waited, polls = wait_status(b, PATH, cookie(case), 401, REFUSE_DEADLINE_S)
        assert r.status == 401, "B still allowed after %.1fs: %r" % (waited, r)
        lat_ms.append(waited * 1000)
        polls_all.append(polls)
    p50, p99 = percentile(lat_ms, 50), percentile(lat_ms, 99)
    line = ("fleet logout propagation A->B over %d logouts: p50 %.2f ms, p99 %.2f ms, "
            "max %.2f ms, polls of B per logout: max %d" % (
                len(lat_ms), p50, p99, max(lat_ms), max(polls_all)))
    record_property("logout_propagation", json.dumps({"n": len(lat_ms), "p50_ms": p50,
                                                      "p99_ms": p99, "max_ms": max(lat_ms)}))
    with capsys.disabled():
        sys.stdout.write("\n" + line + "\n")


def test_admin_invalidation_of_one_session_is_fleet_wide(fleet):
    a, b = fleet
    case, other = session(a.user), session(a.user)
    warm_both(a, b, case)
    warm_both(a, b, other)
    logged_out(a.user, case)
    r = fleet_invalidate(b, "cookie=case%%3D%s" % case)
    assert r.status == 200, r
    # Invalidated on B, the agent it was sent to, and on A through Redis.
    r = b.get(PATH, cookie(case))
    assert r.status == 401, r
    r, waited, _ = wait_status(a, PATH, cookie(case), 401, REFUSE_DEADLINE_S)
    assert r.status == 401, "A still allows a session invalidated on B: %r" % r
    # The other session is untouched on both nodes.
    for n in (a, b):
        r = n.get(PATH, cookie(other))
        assert (r.status, r.header("X-Auth-Cache")) == (200, "hit"), (n.name, r)
    assert calls(a.user, other) == 1


def test_admin_invalidation_of_all_is_fleet_wide(fleet):
    a, b = fleet
    case = session(a.user)
    warm_both(a, b, case)
    logged_out(a.user, case)
    r = fleet_invalidate(a, "all=1")
    assert r.status == 200, r
    r, waited, _ = wait_status(b, PATH, cookie(case), 401, REFUSE_DEADLINE_S)
    assert r.status == 401, "B still allows after all=1 on A: %r" % r


def test_admin_invalidation_needs_the_token(fleet):
    """A wrong admin token changes nothing on either node."""
    a, b = fleet
    case = session(a.user)
    warm_both(a, b, case)
    r = fleet_invalidate(a, "all=1", token="wrong-" + FLEET_ADMIN_TOKEN)
    assert r.status == 403, r
    for n in (a, b):
        assert n.get(PATH, cookie(case)).header("X-Auth-Cache") == "hit"


def test_no_credential_in_redis_or_logs(fleet, redis):
    """Runs last in this module: every session cookie value and identity token
    used above, and the fleet key secret, are absent from a dump of Redis
    (SCAN + GET/XRANGE) and from every log of the fleet."""
    a, b = fleet
    assert len(USED) > LOGOUT_ROUNDS
    dump = redis.dump()
    assert dump, "Redis holds nothing: the fleet level was not used"
    blob = b"\n".join(k + b"\n" + t + b"\n" + b"\n".join(vs) for k, t, vs in dump)
    secrets_ = [FLEET_KEY_SECRET.encode(), FLEET_ADMIN_TOKEN.encode()]
    for case, token in USED:
        secrets_ += [case.encode(), token.encode()]
    leaked = [s for s in secrets_ if s in blob]
    assert not leaked, "in Redis: %r" % leaked[:5]
    for n in (a, b):
        for p in n.procs:
            text = p.tail(1 << 24).encode()
            leaked = [s for s in secrets_ if s in text]
            assert not leaked, "in the log of %s: %r" % (p.name, leaked[:5])
    # Every key is under the prefix.
    assert all(k.startswith(b"spoa-auth:") for k, _, _ in dump), [k for k, _, _ in dump][:5]
