"""Attacks on the decision cache, end to end (HAProxy with the shipped
configuration, the agent with the cache on and `cache-key-cookies case`, the
programmable fake user service, which reads cookies like Python code does:
part.strip().partition("=")):

* a cookie the filter cannot classify with certainty (NBSP before the name)
  must not let another request share the victim's key;
* a refusal carrying Set-Cookie (a login nonce) must never reach another
  client, neither from the cache nor through coalescing;
* a flood of logouts with random cookies must not stop other sessions from
  being cached;
* the access log's credential hash is keyed: random per process, or
  log-hash-key for correlation across nodes."""
import hashlib
import re
import secrets
import subprocess
import threading
import time

import pytest

from spop import NOTIFY, T_IPV4, Client, Typed, frame, notify_payload
from harness import gateway, new_case, solo_agent


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


@pytest.fixture(scope="module")
def hgw(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=[
                     "--cache", "on", "--cache-key-cookies", "case", "--cache-deny-ttl", "5s",
                     "--cache-logout-hold", "2s"], agent_name="agent-hardening",
                 user=fake_user, secret=demo_services["secret"]) as gw:
        yield gw


def test_nbsp_cookie_does_not_share_the_victims_key(hgw):
    """The issue's attack: the user service strips NBSP and authenticates
    '\\xa0case=<bob>'; the agent's filter must not then treat that header as
    one without a kept cookie, which any 'Cookie: theme=dark' shares."""
    bob = new_case()
    hgw.user.program(bob, status=200, body="tok-" + bob)
    path = "/api/business/nbsp-" + bob
    r = hgw.get(path, [("Cookie", "\xa0case=%s" % bob)])
    assert r.status == 200, r  # the lenient service took it for bob
    assert len(hgw.user.calls(bob)) == 1
    for other in ("theme=dark", "theme=light; x=1", "\xa0case=%s" % new_case()):
        r = hgw.get(path, [("Cookie", other)])
        # anonymous: a refusal (possibly the cached refusal of another
        # anonymous header), never bob's allow
        assert r.status == 401, (other, r)
    # the victim's own header still hits: the raw header is its key
    r = hgw.get(path, [("Cookie", "\xa0case=%s" % bob)])
    assert r.status == 200 and r.header("X-Auth-Cache") == "hit", r
    assert len(hgw.user.calls(bob)) == 1


def test_case_variant_does_not_share_the_key(hgw):
    bob = new_case()
    hgw.user.program(bob, status=200, body="tok-" + bob)
    path = "/api/business/variant-" + bob
    assert hgw.get(path, [("Cookie", "case=%s" % bob)]).status == 200
    r = hgw.get(path, [("Cookie", "Case=x; case=%s" % bob)])
    assert r.header("X-Auth-Cache") != "hit", r
    assert len(hgw.user.calls(bob)) == 2


def nonces(resps):
    out = []
    for r in resps:
        cookies = [v for v in r.header_all("Set-Cookie") if v.startswith("oauth_state=")]
        assert len(cookies) == 1, r
        out.append(cookies[0].split(";")[0])
    return out


def test_set_cookie_refusal_is_never_replayed(hgw):
    """A 302 login redirect with a per-call oauth_state nonce: each client
    gets its own, none is a cache hit."""
    case = new_case()
    hgw.user.program(case, status=302, headers=[("Location", "/login")],
                     nonce_cookie="oauth_state")
    resps = [hgw.get("/api/business/login-" + case, [("Cookie", "case=%s" % case)])
             for _ in range(3)]
    assert [r.status for r in resps] == [302] * 3, resps
    assert [r.header("X-Auth-Cache") for r in resps] == ["miss"] * 3, resps
    got = nonces(resps)
    assert len(set(got)) == 3, got
    sent = ["oauth_state=" + c["nonce"] for c in hgw.user.calls(case)]
    assert sorted(sent) == sorted(got)


def test_set_cookie_refusal_not_handed_to_coalesced_requests(hgw):
    """Concurrent requests of one key while the leader waits: the waiters
    must not get the leader's nonce; each asks the user service itself."""
    case = new_case()
    hgw.user.program(case, status=302, headers=[("Location", "/login")],
                     nonce_cookie="oauth_state", delay=0.4)
    n = 8
    resps = parallel(n, lambda i: hgw.get("/api/business/co-" + case,
                                          [("Cookie", "case=%s" % case)]))
    assert [r.status for r in resps] == [302] * n, resps
    got = nonces(resps)
    assert len(set(got)) == n, got
    assert len(hgw.user.calls(case)) == n
    assert "hit" not in [r.header("X-Auth-Cache") for r in resps]


def test_logout_flood_keeps_other_sessions_cached(hgw):
    """Logouts with random cookies (a public route, no authentication) must
    not stop the cache from storing answers for other sessions."""
    for _ in range(60):
        r = hgw.request("POST", "/api/user/logout",
                        [("Cookie", "case=flood-" + secrets.token_hex(8))], body="")
        assert r.status == 200, r
    hits = 0
    for i in range(5):
        case = new_case()
        hgw.user.program(case, status=200, body="tok-" + case)
        path = "/api/business/flood-%d" % i
        assert hgw.get(path, [("Cookie", "case=%s" % case)]).header("X-Auth-Cache") == "miss"
        r = hgw.get(path, [("Cookie", "case=%s" % case)])
        hits += r.status == 200 and r.header("X-Auth-Cache") == "hit"
    assert hits == 5, hits


# ---- the access log's credential hash ----------------------------------------
def cred_of(fake_user, agent_bin, logdir, name, extra=()):
    """Starts an agent at log-level access, sends one exchange straight over
    SPOP with a fixed credential, returns the cred= of its access line."""
    with solo_agent(logdir, agent_bin, fake_user.url,
                    extra=["--log-level", "access", *extra], name=name) as p:
        c = Client(p.port)
        try:
            c.hello()
            c.send(frame(NOTIFY, notify_payload([("exchange", [
                ("uri", "/api/business/h"), ("src", Typed(T_IPV4, "127.0.0.1")),
                ("cookie", CRED_COOKIE)])]), sid=1, fid=1))
            assert c.recv_frame() is not None
        finally:
            c.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            m = re.search(r" cred=([0-9a-f]{8}) ", p.tail(1 << 20))
            if m:
                return m.group(1)
            time.sleep(0.05)
        raise AssertionError("no access line\n" + p.describe())


CRED_COOKIE = "case=log-hash-guessable"
UNKEYED = hashlib.sha256(("cookie: %s\n" % CRED_COOKIE).encode()).hexdigest()[:8]


def test_log_hash_is_keyed(fake_user, agent_bin, logdir, tmp_path):
    a = cred_of(fake_user, agent_bin, logdir, "agent-hash-a")
    b = cred_of(fake_user, agent_bin, logdir, "agent-hash-b")
    assert a != b, "two processes without log-hash-key must not agree"
    keyfile = tmp_path / "log-hash.key"
    key = secrets.token_hex(24)
    keyfile.write_text(key + "\n")
    k1 = cred_of(fake_user, agent_bin, logdir, "agent-hash-k1", ["--log-hash-key", key])
    k2 = cred_of(fake_user, agent_bin, logdir, "agent-hash-k2",
                 ["--log-hash-key", "file:%s" % keyfile])
    assert k1 == k2, "the same key (as a value and from a file) gives the same hash"
    assert UNKEYED not in (a, b, k1, k2), "the unkeyed SHA-256 prefix must never appear"


def test_log_hash_key_checked_and_never_echoed(agent_bin, tmp_path):
    conf = tmp_path / "short.conf"
    conf.write_text("log-hash-key sh0rt-s3cret\n")
    r = subprocess.run([agent_bin, "-c", "-f", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "log-hash-key" in r.stderr, r.stderr
    assert "sh0rt-s3cret" not in r.stderr + r.stdout
    conf.write_text("log-hash-key file:%s\n" % (tmp_path / "missing"))
    r = subprocess.run([agent_bin, "-c", "-f", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "log-hash-key" in r.stderr, r.stderr
    conf.write_text("log-hash-key %s\n" % secrets.token_hex(16))
    r = subprocess.run([agent_bin, "-c", "-f", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
