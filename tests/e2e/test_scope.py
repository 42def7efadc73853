"""Decision scopes end to end: HAProxy with the shipped configuration and
SCOPE_MAP=haproxy/scopes.map (txn.auth_scope, sent as SPOE argument
"scope"), the agent with --cache on, and the programmable fake user service
(or the demo one). The fake decides on the real request_uri (uri_rules:
"admin" anywhere in the decoded, lowercased URI is a 403), so a decision
served for the wrong scope shows as a wrong status, and every test counts
the token calls of its own case (Cookie case=<id>) and reads X-Auth-Cache.

Run it on HAProxy 2.6 (Debian) and on 3.x through HAPROXY_BIN."""
import http.client as httpclient
import threading
import urllib.parse

import pytest

from harness import HOST, REPO, gateway, http, new_case, user_stats
from rawhttp import raw_request
from spop import NOTIFY, T_IPV4, Client, Typed, frame, notify_payload

SCOPE_MAP = REPO / "haproxy" / "scopes.map"
ADMIN_TOKEN = "t-scope-admin-token-0123456789abcdef"
ADMIN_DENY = ("admin", 403, '{"error":"admin only"}', [])


@pytest.fixture(scope="module")
def sgw(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    """HAProxy (scopes on) + agent (cache on, admin endpoint) + the fake."""
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=[
                     "--cache", "on", "--cache-deny-ttl", "30s", "--cache-logout-hold", "0",
                     "--admin-token", ADMIN_TOKEN], admin=True,
                 haproxy_env={"SCOPE_MAP": str(SCOPE_MAP)}, user=fake_user,
                 secret=demo_services["secret"]) as gw:
        yield gw


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def scoped_case(gw, headers=(), rules=(ADMIN_DENY,), **kw):
    """A session whose user service allows everything but admin URIs."""
    case = new_case()
    gw.user.program(case, status=200, body="tok-" + case, headers=headers,
                    uri_rules=list(rules), **kw)
    return case


def calls(gw, case):
    return len(gw.user.calls(case))


def get(gw, path, case):
    r = gw.get(path, cookie(case))
    return r.status, r.header("X-Auth-Cache")


class KeepAlive:
    """One keep-alive client connection to the gateway."""

    def __init__(self, port):
        self.c = httpclient.HTTPConnection(HOST, port, timeout=10)

    def get(self, path, headers=()):
        self.c.request("GET", path, headers=dict(headers))
        r = self.c.getresponse()
        r.read()
        return r.status, r.getheader("X-Auth-Cache")

    def close(self):
        self.c.close()


def raw_get(gw, path, case):
    """GET with the request target sent byte for byte (no client-side
    normalisation or quoting). Returns (status, X-Auth-Cache)."""
    if isinstance(path, str):
        path = path.encode("latin-1")
    r = raw_request(gw.port, b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\nCookie: case=" +
                    case.encode() + b"\r\nConnection: close\r\n\r\n")
    assert r is not None, path
    return r.status, r.header("X-Auth-Cache")


def admin_post(gw, body):
    return http(gw.admin_port, "POST", "/cache/invalidate",
                [("Content-Type", "application/x-www-form-urlencoded"),
                 ("Authorization", "Bearer " + ADMIN_TOKEN)], body)


# ---- one call per scope -----------------------------------------------------
N_URIS = 1000


def test_thousand_uris_of_one_scope_one_call(sgw):
    case = scoped_case(sgw)
    ka = KeepAlive(sgw.port)
    try:
        results = [ka.get("/api/business/orders/%d?page=%d" % (i, i % 7), cookie(case))
                   for i in range(N_URIS)]
    finally:
        ka.close()
    assert all(st == 200 for st, _ in results), [r for r in results if r[0] != 200][:5]
    assert results[0][1] == "miss"
    assert [c for _, c in results[1:]] == ["hit"] * (N_URIS - 1)
    got = sgw.user.calls(case)
    assert len(got) == 1
    # the user service decided on the full, real URI of the first request
    assert got[0]["request_uri"] == "/api/business/orders/0?page=0"


def test_admin_deny_never_served_on_business(sgw):
    case = scoped_case(sgw)
    assert get(sgw, "/api/business/admin/users", case) == (403, "miss")
    assert get(sgw, "/api/business/orders/1", case) == (200, "miss")
    assert get(sgw, "/api/business/admin", case) == (403, "hit")
    assert get(sgw, "/api/business/admin/users/7", case) == (403, "hit")
    assert get(sgw, "/api/business/orders/2", case) == (200, "hit")
    # a longer name is not the admin prefix: the business scope
    assert get(sgw, "/api/business/administrators", case) == (200, "hit")
    assert calls(sgw, case) == 2


def test_business_allow_never_served_on_admin(sgw):
    case = scoped_case(sgw)
    assert get(sgw, "/api/business/orders/1", case) == (200, "miss")
    assert get(sgw, "/api/business/admin", case) == (403, "miss")
    assert get(sgw, "/api/business/admin/", case) == (403, "hit")
    assert get(sgw, "/api/business/adminx", case) == (200, "hit")
    assert get(sgw, "/api/business", case) == (200, "hit")
    assert calls(sgw, case) == 2


def test_uri_outside_every_scope_keyed_as_before(sgw):
    case = scoped_case(sgw)
    # protected (path_beg /api/business) but no scope prefix matches
    assert get(sgw, "/api/businessfoo/1", case) == (200, "miss")
    assert get(sgw, "/api/businessfoo/2", case) == (200, "miss")
    assert get(sgw, "/api/businessfoo/1", case) == (200, "hit")
    assert calls(sgw, case) == 2


def test_query_is_not_part_of_the_scope(sgw):
    case = scoped_case(sgw)
    assert get(sgw, "/api/business/orders/1", case) == (200, "miss")
    # the backend's path is /api/business/orders/1: business, whatever the query
    assert raw_get(sgw, "/api/business/orders/1?next=/api/business/admin/../x", case) == \
        (200, "hit")
    assert calls(sgw, case) == 1


# Paths a backend could read differently from the scope map: never scoped,
# so never answered from the business scope's entry. Each first request must
# be a miss that the user service decides on its real URI (403 when it holds
# "admin" once decoded), or a request HAProxy itself refuses (400).
ATTACK_PATHS = [  # (request target, the fake's answer for it: 403 if "admin" decoded)
    (b"/api/business/x/../admin/users", 403),
    (b"/api/business/./admin/users", 403),
    (b"/api/business/orders/..", 200),
    (b"/api/business/orders/.", 200),
    (b"/api/business/admin/../orders", 403),
    (b"/api/business//admin/users", 403),
    (b"/api/business/%61dmin/users", 403),
    (b"/api/business/admin%2fusers", 403),
    (b"/api/business/orders%2F1", 200),
    (b"/api/business/%2e%2e/business/admin", 403),
    (b"/api/business/%252e%252e/admin", 403),
    (b"/api/business/a\\..\\admin", 403),
    (b"/api/business/admin\\users", 403),
    (b"/api/business/x;/../admin", 403),
    (b"/api/business/admin;v=1/users", 403),
    (b"/api/business/orders;jsessionid=1", 200),
    (b"/api/business/ADMIN/users", 403),
    (b"/api/business/Admin", 403),
    (b"/api/business/admin.json", 403),
    (b"/api/business/admin:list", 403),
    (b"/api/business/ADMINI~1/users", 403),
    (b"/api/business/admin@x", 403),
    (b"/api/business/admin,x", 403),
    (b"/api/business/admin+x", 403),
    (b"/api/business/ADMIN.json/x", 403),
    (b"/api/business/\xc3\xa9/../admin", 403),
    (b"/api/business/adm\xc4\xb1n", 200),
]


@pytest.mark.parametrize("path,want", ATTACK_PATHS,
                         ids=[p.decode("latin-1") for p, _ in ATTACK_PATHS])
def test_ambiguous_path_gets_no_scope(sgw, path, want):
    case = scoped_case(sgw)
    assert get(sgw, "/api/business/orders/1", case) == (200, "miss")
    n = calls(sgw, case)
    st, label = raw_get(sgw, path, case)
    if st == 400:      # refused by HAProxy before any decision: never served
        assert calls(sgw, case) == n
        return
    # not the business scope's entry: a call about its own URI
    assert (st, label) == (want, "miss"), path
    assert calls(sgw, case) == n + 1
    # keyed on its URI, as without scopes: the same URI again is a hit
    assert raw_get(sgw, path, case) == (want, "hit")
    assert calls(sgw, case) == n + 1


# ---- the agent's own check of the argument (raw SPOP, no HAProxy) -------------
def spop_decide(gw, case, uri, scope):
    """One NOTIFY `exchange` straight to the agent; returns its variables."""
    args = [("scope", scope), ("uri", uri), ("src", Typed(T_IPV4, "127.0.0.1")),
            ("cookie", "case=%s" % case)]
    with Client(gw.agent_port) as c:
        c.hello()
        c.send(frame(NOTIFY, notify_payload([("exchange", args)]), sid=1, fid=1))
        return c.recv_frame().vars()


@pytest.mark.parametrize("bad", ["", "a" * 65, "bad/scope", "b%75siness", "caf\u00e9",
                                 "a b", b"business"],
                         ids=["empty", "65-bytes", "slash", "percent", "non-ascii", "space",
                              "binary"])
def test_agent_ignores_a_bad_scope_name(sgw, bad):
    case = scoped_case(sgw)
    for i in (1, 2):
        v = spop_decide(sgw, case, "/api/business/orders/%d" % i, bad)
        assert (v["status"], v["cache"]) == (200, b"miss"), v
    assert calls(sgw, case) == 2        # keyed on each URI


def test_agent_keys_a_good_scope_name(sgw):
    case = scoped_case(sgw)
    longest = "S" * 64
    for i, want in ((1, b"miss"), (2, b"hit")):
        v = spop_decide(sgw, case, "/api/business/orders/%d" % i, longest)
        assert (v["status"], v["cache"]) == (200, want), v
    v = spop_decide(sgw, case, "/api/business/orders/3", None)   # no scope: its URI
    assert (v["status"], v["cache"]) == (200, b"miss"), v
    got = sgw.user.calls(case)
    assert [c["request_uri"] for c in got] == ["/api/business/orders/1",
                                               "/api/business/orders/3"]


# ---- the user service narrows ------------------------------------------------
def test_narrowing_to_uri_is_not_stored_under_the_scope(sgw):
    case = scoped_case(sgw, headers=[("X-Auth-Scope", "uri")])
    for i in range(3):
        assert get(sgw, "/api/business/orders/%d" % i, case) == (200, "miss")
    assert calls(sgw, case) == 3


def test_narrowing_to_another_scope_is_not_stored(sgw):
    case = scoped_case(sgw, headers=[("X-Auth-Scope", "admin")])
    assert get(sgw, "/api/business/orders/1", case) == (200, "miss")
    assert get(sgw, "/api/business/orders/2", case) == (200, "miss")
    assert calls(sgw, case) == 2


def test_naming_the_same_scope_is_stored(sgw):
    case = scoped_case(sgw, headers=[("X-Auth-Scope", "business")])
    assert get(sgw, "/api/business/orders/1", case) == (200, "miss")
    assert get(sgw, "/api/business/orders/2", case) == (200, "hit")
    assert calls(sgw, case) == 1


def test_narrowing_on_an_unscoped_uri_changes_nothing(sgw):
    case = scoped_case(sgw, headers=[("X-Auth-Scope", "uri")])
    assert get(sgw, "/api/businessfoo/1", case) == (200, "miss")
    assert get(sgw, "/api/businessfoo/1", case) == (200, "hit")
    assert calls(sgw, case) == 1


def test_narrowed_answer_is_not_handed_to_coalesced_requests(sgw):
    """Concurrent first requests of one scope coalesce on the leader's call;
    when its answer is narrowed, each of them asks for its own URI."""
    n = 8
    case = scoped_case(sgw, headers=[("X-Auth-Scope", "uri")], delay=0.3)
    out = [None] * n
    gate = threading.Barrier(n)

    def run(i):
        gate.wait()
        out[i] = get(sgw, "/api/business/orders/%d" % i, case)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert [st for st, _ in out] == [200] * n, out
    got = sgw.user.calls(case)
    assert len(got) == n
    assert sorted(c["request_uri"] for c in got) == \
        sorted("/api/business/orders/%d" % i for i in range(n))


# ---- invalidation ------------------------------------------------------------
def fill_both_scopes(gw, case):
    assert get(gw, "/api/business/orders/1", case) == (200, "miss")
    assert get(gw, "/api/business/admin", case) == (403, "miss")
    assert get(gw, "/api/businessfoo/1", case) == (200, "miss")
    assert get(gw, "/api/business/orders/2", case) == (200, "hit")
    assert get(gw, "/api/business/admin/x", case) == (403, "hit")
    assert calls(gw, case) == 3


def test_admin_invalidation_drops_every_scope(sgw):
    case, other = scoped_case(sgw), scoped_case(sgw)
    fill_both_scopes(sgw, case)
    assert get(sgw, "/api/business/orders/1", other) == (200, "miss")
    r = admin_post(sgw, "cookie=" + urllib.parse.quote("case=%s" % case, safe=""))
    assert r.status == 200 and b"session" in r.body, r
    assert get(sgw, "/api/business/orders/3", case) == (200, "miss")
    assert get(sgw, "/api/business/admin/y", case) == (403, "miss")
    assert get(sgw, "/api/businessfoo/1", case) == (200, "miss")
    assert calls(sgw, case) == 6
    assert get(sgw, "/api/business/orders/9", other) == (200, "hit")


def test_logout_drops_every_scope(sgw):
    case = scoped_case(sgw)
    fill_both_scopes(sgw, case)
    r = sgw.request("POST", "/api/user/logout", cookie(case), body="")
    assert r.status == 200, r
    assert get(sgw, "/api/business/orders/3", case) == (200, "miss")
    assert get(sgw, "/api/business/admin/y", case) == (403, "miss")
    assert get(sgw, "/api/businessfoo/1", case) == (200, "miss")
    assert calls(sgw, case) == 6


# ---- without SCOPE_MAP: no scopes at all ----------------------------------------
@pytest.fixture(scope="module")
def plain_gw(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    """The same gateway without SCOPE_MAP (the shipped default)."""
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=["--cache", "on"], user=fake_user,
                 secret=demo_services["secret"]) as gw:
        yield gw


def test_without_scope_map_every_uri_is_its_own_entry(plain_gw):
    case = scoped_case(plain_gw)
    assert get(plain_gw, "/api/business/orders/1", case) == (200, "miss")
    assert get(plain_gw, "/api/business/orders/2", case) == (200, "miss")
    assert get(plain_gw, "/api/business/orders/1", case) == (200, "hit")
    assert calls(plain_gw, case) == 2


# ---- the demo user service (X-Auth-Scope on every answer) ----------------------
@pytest.fixture(scope="module")
def demo_scoped(demo_services, haproxy_bin, agent_bin, logdir):
    """The demo (as `make run`): demo services, cache keyed on the session
    cookie, scopes on."""
    with gateway(logdir, haproxy_bin, agent_bin,
                 "http://%s:%d/api/user/token" % (HOST, demo_services["user_port"]),
                 demo_services["user_port"], demo_services["biz_port"],
                 agent_extra=["--cache", "on", "--cache-key-cookies", "session"],
                 haproxy_env={"SCOPE_MAP": str(SCOPE_MAP)},
                 secret=demo_services["secret"]) as gw:
        yield gw


def test_demo_scopes(demo_scoped):
    gw = demo_scoped
    cookie_alice, _ = gw.login("alice")
    h = [("Cookie", cookie_alice)]
    before = user_stats(gw)["token_calls"]
    statuses = []
    for path in ("/api/business/hello", "/api/business/orders/1", "/api/business/orders/2",
                 "/api/business/admin", "/api/business/admin/users", "/api/business/hello",
                 "/api/business/admin.json"):
        r = gw.get(path, h)
        statuses.append((path, r.status, r.header("X-Auth-Cache")))
    assert statuses == [
        ("/api/business/hello", 200, "miss"),
        ("/api/business/orders/1", 200, "hit"),
        ("/api/business/orders/2", 200, "hit"),
        ("/api/business/admin", 403, "miss"),
        ("/api/business/admin/users", 403, "hit"),
        ("/api/business/hello", 200, "hit"),
        # no scope (an extension), so its own key; the user service says admin
        ("/api/business/admin.json", 403, "miss"),
    ], statuses
    assert user_stats(gw)["token_calls"] - before == 3


@pytest.mark.parametrize("uri,scope", [
    ("/api/business/hello", "business"), ("/api/business/orders/1?x=1", "business"),
    ("/api/business/admin", "admin"), ("/api/business/admin/users", "admin"),
    ("/api/business/admin.json", "admin"), ("/api/business/x/../admin", "admin"),
    ("/api/business/%61dmin", "admin"), ("/api/businessfoo", "uri"), ("/api/user/me", "uri"),
])
def test_demo_user_service_states_the_scope(demo_scoped, uri, scope):
    gw = demo_scoped
    cookie_alice, _ = gw.login("alice")
    q = urllib.parse.urlencode({"request_uri": uri})
    r = http(gw.user_port, "GET", "/api/user/token?" + q, [("Cookie", cookie_alice)])
    assert r.header("X-Auth-Scope") == scope, (uri, r)
    r = http(gw.user_port, "GET", "/api/user/token?" + q)      # no session: 401, same scope
    assert (r.status, r.header("X-Auth-Scope")) == (401, scope), (uri, r)
