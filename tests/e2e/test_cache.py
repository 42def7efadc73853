"""Decision cache (docs/cache.md) end to end: HAProxy with the shipped configuration,
the agent with --cache on, the programmable fake user service. Every test
counts the token calls the fake received for its own case (Cookie case=<id>),
and reads the cache result from the X-Auth-Cache response header that the
shipped haproxy.cfg sets from txn.auth.cache."""
import http.client as httpclient
import secrets
import signal
import threading
import time
import urllib.parse

import pytest

from spop import NOTIFY, T_IPV4, Client, Typed, frame, notify_payload
from harness import HOST, gateway, http, new_case

DENY_TTL_S = 1.0
STALE_GRACE_S = 2.0
ADMIN_TOKEN = "t-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def cgw(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    """HAProxy + agent with the cache on (2 workers) + the fake user service."""
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=[
                     "--cache", "on", "--cache-deny-ttl", "%dms" % (DENY_TTL_S * 1000),
                     "--cache-stale-grace", "%dms" % (STALE_GRACE_S * 1000),
                     "--admin-token", ADMIN_TOKEN],
                 admin=True, user=fake_user, secret=demo_services["secret"]) as gw:
        yield gw


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def ok_case(gw, **kw):
    case = new_case()
    gw.user.program(case, status=200, body="tok-" + case, **kw)
    return case


def calls(gw, case):
    return len(gw.user.calls(case))


class KeepAlive:
    """One keep-alive client connection to the gateway (fast loops)."""

    def __init__(self, port):
        self.c = httpclient.HTTPConnection(HOST, port, timeout=10)

    def get(self, path, headers=()):
        self.c.request("GET", path, headers=dict(headers))
        r = self.c.getresponse()
        r.read()
        return r.status, r.getheader("X-Auth-Cache")

    def close(self):
        self.c.close()


def parallel(n, fn):
    """Runs fn(i) in <n> threads released together; returns the results."""
    out = [None] * n
    gate = threading.Barrier(n)

    def run(i):
        gate.wait()
        out[i] = fn(i)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out


def admin_post(gw, body, token=ADMIN_TOKEN):
    headers = [("Content-Type", "application/x-www-form-urlencoded")]
    if token is not None:
        headers.append(("Authorization", "Bearer " + token))
    return http(gw.admin_port, "POST", "/cache/invalidate", headers, body)


# ---- tests ------------------------------------------------------------------
def test_thousand_requests_one_call(cgw):
    case = ok_case(cgw)
    ka = KeepAlive(cgw.port)
    try:
        results = [ka.get("/api/business/x", cookie(case)) for _ in range(1000)]
    finally:
        ka.close()
    assert all(st == 200 for st, _ in results), results[:5]
    assert results[0][1] == "miss"
    assert all(c == "hit" for _, c in results[1:])
    assert calls(cgw, case) == 1


def test_concurrent_cold_misses_coalesce(cgw):
    case = ok_case(cgw, delay=0.3)
    res = parallel(50, lambda i: cgw.get("/api/business/x", cookie(case)))
    assert [r.status for r in res] == [200] * 50, [r for r in res if r.status != 200][:3]
    labels = [r.header("X-Auth-Cache") for r in res]
    assert calls(cgw, case) == 1
    assert labels.count("miss") == 1, labels
    assert set(labels) <= {"miss", "coalesced", "hit"}
    assert "coalesced" in labels


def test_cross_worker_hits(cgw):
    """Many gateway connections, hence SPOP connections spread over both
    workers: one call in all."""
    case = ok_case(cgw)
    assert cgw.get("/api/business/x", cookie(case)).status == 200
    res = parallel(40, lambda i: [cgw.get("/api/business/x", cookie(case)) for _ in range(5)])
    flat = [r for rs in res for r in rs]
    assert all(r.status == 200 and r.header("X-Auth-Cache") == "hit" for r in flat), flat[:3]
    assert calls(cgw, case) == 1


def raw_clients(cgw, n):
    """<n> SPOP connections straight to the agent (SO_REUSEPORT spreads them
    over its 2 workers: all on one worker has probability 2^-(n-1))."""
    cs = []
    for _ in range(n):
        c = Client(cgw.agent_port)
        c.hello()
        cs.append(c)
    return cs


def raw_notify(case):
    return notify_payload([("exchange", [("uri", "/api/business/raw"),
                                         ("src", Typed(T_IPV4, "127.0.0.1")),
                                         ("cookie", "case=%s" % case)])])


def test_cross_worker_raw_spop(cgw):
    """Coalescing and hits across workers, without HAProxy's connection
    reuse in the way: 16 connections ask at once (one call, the others wait
    for it, on either worker), then again (all hits)."""
    case = ok_case(cgw, delay=0.3)
    cs = raw_clients(cgw, 16)
    try:
        msg = raw_notify(case)
        for i, c in enumerate(cs):
            c.send(frame(NOTIFY, msg, sid=1, fid=i + 1))
        first = [c.recv_frame().vars() for c in cs]
        for i, c in enumerate(cs):
            c.send(frame(NOTIFY, msg, sid=2, fid=i + 1))
        second = [c.recv_frame().vars() for c in cs]
    finally:
        for c in cs:
            c.close()
    labels = sorted(v["cache"] for v in first)
    assert labels == [b"coalesced"] * 15 + [b"miss"], labels
    assert all(v["status"] == 200 for v in first + second)
    assert [v["cache"] for v in second] == [b"hit"] * 16
    assert calls(cgw, case) == 1


def test_deny_cached_for_deny_ttl(cgw):
    case = new_case()   # not programmed: the fake answers 401
    r1 = cgw.get("/api/business/x", cookie(case))
    r2 = cgw.get("/api/business/x", cookie(case))
    assert (r1.status, r1.header("X-Auth-Cache")) == (401, "miss")
    assert (r2.status, r2.header("X-Auth-Cache")) == (401, "hit")
    assert r2.header("WWW-Authenticate") == 'Bearer realm="fake"'
    assert calls(cgw, case) == 1
    time.sleep(DENY_TTL_S + 0.3)
    r3 = cgw.get("/api/business/x", cookie(case))
    assert (r3.status, r3.header("X-Auth-Cache")) == (401, "miss")
    assert calls(cgw, case) == 2


def test_logout_invalidates_session(cgw):
    case = ok_case(cgw)
    assert cgw.get("/api/business/x", cookie(case)).header("X-Auth-Cache") == "miss"
    assert cgw.get("/api/business/y", cookie(case)).header("X-Auth-Cache") == "miss"
    assert cgw.get("/api/business/x", cookie(case)).header("X-Auth-Cache") == "hit"
    # The service ends the session; the logout goes through the gateway.
    cgw.user.program(case, status=401, body='{"error":"logged out"}',
                     content_type="application/json")
    n_logout = len(cgw.user.requests_to("/api/user/logout"))
    r = cgw.request("POST", "/api/user/logout", cookie(case), body="")
    assert r.status == 200, r
    assert len(cgw.user.requests_to("/api/user/logout")) == n_logout + 1  # still public
    for path in ("/api/business/x", "/api/business/y"):
        r = cgw.get(path, cookie(case))
        assert (r.status, r.header("X-Auth-Cache")) == (401, "miss"), (path, r)
    assert calls(cgw, case) == 4


def test_uri_is_part_of_the_default_key(cgw):
    case = new_case()
    cgw.user.program(case, status=403, body='{"error":"forbidden"}',
                     content_type="application/json")
    r = cgw.get("/api/business/admin", cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (403, "miss")
    cgw.user.program(case, status=200, body="tok-" + case)
    r = cgw.get("/api/business/x", cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "miss")   # not admin's 403
    r = cgw.get("/api/business/admin", cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (403, "hit")    # not x's 200
    r = cgw.get("/api/business/x", cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "hit")
    assert calls(cgw, case) == 2


def test_stale_if_error(cgw):
    case = ok_case(cgw, headers=[("Cache-Control", "max-age=1")])
    t0 = time.monotonic()
    r = cgw.get("/api/business/x", cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "miss")
    cgw.user.program(case, close=True)   # the service stops answering
    time.sleep(1.3)
    r = cgw.get("/api/business/x", cookie(case))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "stale"), r
    time.sleep(max(0.0, t0 + 1 + STALE_GRACE_S + 0.4 - time.monotonic()))
    r = cgw.get("/api/business/x", cookie(case))
    assert r.status == 503 and r.header("X-Auth-Cache") == "miss", r


def test_no_store_is_never_cached(cgw):
    case = ok_case(cgw, headers=[("Cache-Control", "no-store")])
    for _ in range(5):
        r = cgw.get("/api/business/x", cookie(case))
        assert (r.status, r.header("X-Auth-Cache")) == (200, "miss")
    assert calls(cgw, case) == 5


def test_5xx_is_never_cached(cgw):
    case = new_case()
    cgw.user.program(case, status=503, body="busy")
    for _ in range(3):
        assert cgw.get("/api/business/x", cookie(case)).status == 503
    assert calls(cgw, case) == 3


def test_admin_invalidate(cgw):
    case = ok_case(cgw)
    other = ok_case(cgw)
    for c in (case, other):
        assert cgw.get("/api/business/x", cookie(c)).header("X-Auth-Cache") == "miss"
    form = "cookie=" + urllib.parse.quote("case=%s" % case, safe="")
    assert admin_post(cgw, form, token=None).status == 403
    assert admin_post(cgw, form, token="wrong-" + ADMIN_TOKEN).status == 403
    assert cgw.get("/api/business/x", cookie(case)).header("X-Auth-Cache") == "hit"
    r = admin_post(cgw, form)
    assert r.status == 200 and b"session" in r.body, r
    assert cgw.get("/api/business/x", cookie(case)).header("X-Auth-Cache") == "miss"
    assert cgw.get("/api/business/x", cookie(other)).header("X-Auth-Cache") == "hit"
    r = admin_post(cgw, "all=1")
    assert r.status == 200 and b"all" in r.body, r
    assert cgw.get("/api/business/x", cookie(other)).header("X-Auth-Cache") == "miss"
    assert admin_post(cgw, "").status == 400
    assert http(cgw.admin_port, "GET", "/cache/invalidate").status == 405


def cache_metrics(gw):
    text = http(gw.admin_port, "GET", "/metrics").body.decode()
    vals = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            vals[k] = float(v)
    return vals


def test_cache_metrics(cgw):
    # An empty cache first: the earlier tests of this module filled it.
    assert admin_post(cgw, "all=1").status == 200
    before = cache_metrics(cgw)
    assert (before["spoa_auth_cache_entries"], before["spoa_auth_cache_bytes"]) == (0, 0), before
    case = ok_case(cgw)
    seen = [cgw.get("/api/business/x", cookie(case)).header("X-Auth-Cache") for _ in range(3)]
    assert seen == ["miss", "hit", "hit"], seen
    after = cache_metrics(cgw)

    def delta(k):
        return after[k] - before[k]
    assert after["spoa_auth_cache_entries"] == 1, after
    assert after["spoa_auth_cache_bytes"] > 0
    assert delta('spoa_auth_cache_results_total{result="hit"}') == 2
    assert delta('spoa_auth_cache_results_total{result="miss"}') == 1
    assert delta('spoa_auth_cache_results_total{result="coalesced"}') == 0
    assert delta("spoa_auth_cache_evictions_total") == 0


def test_cache_off_says_miss(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    for _ in range(2):
        r = fake.get("/api/business/x", cookie(case))
        assert (r.status, r.header("X-Auth-Cache")) == (200, "miss")
    assert len(fake.user.calls(case)) == 2


def test_reload_keeps_cache_and_key_change_empties_it(fake_user, demo_services, haproxy_bin,
                                                      agent_bin, logdir, tmp_path):
    conf = tmp_path / "spoa-auth.conf"
    conf.write_text("cache on\nadmin-listen off\n")
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=["-f", str(conf)], agent_started=True,
                 user=fake_user) as gw:
        agent = gw.agent
        case = ok_case(gw)

        def label():
            r = gw.get("/api/business/x", cookie(case))
            assert r.status == 200, r
            return r.header("X-Auth-Cache")

        def reload_and_wait(text):
            before = agent.tail(1 << 20).count("configuration reloaded")
            conf.write_text(text)
            agent.p.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while agent.tail(1 << 20).count("configuration reloaded") == before:
                assert time.monotonic() < deadline, agent.describe()
                time.sleep(0.05)
            time.sleep(0.1)   # workers take the new cfg from their inbox

        assert [label(), label()] == ["miss", "hit"]
        reload_and_wait("cache on\nadmin-listen off\ncache-ttl 20s\n")
        assert label() == "hit"                       # kept across SIGHUP
        # copy-header is not in the key, but stored answers lack the new
        # variable: only emptying the cache makes this a miss.
        reload_and_wait("cache on\nadmin-listen off\ncache-ttl 20s\ncopy-header X-Foo\n")
        assert [label(), label()] == ["miss", "hit"]
        assert "decision cache emptied" in agent.tail(1 << 20)
        assert calls(gw, case) == 2
