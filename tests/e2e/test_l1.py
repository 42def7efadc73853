"""L1 decision cache inside HAProxy (docs/cache.md, "L1") end to end: the
shipped haproxy.cfg with L1_CACHE=on keyed on the fake user service's
"case" cookie, the agent with its cache and L1 marks on, and the
programmable fake user service. Run it on 2.6 and on 3.x (HAPROXY_BIN): 2.x
keeps the L1 in an empty map file, 3.x in the memory-only virt@l1.

Every test reads the L1 result from X-Auth-Cache ("l1" on a hit), counts the
token calls of its own case at the fake, and the decisions the agent made
(spoa_auth_decisions_total on its /metrics) to prove a hit reaches neither."""
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

from harness import (HAPROXY_CFG, HOST, REPO, SPOE_CONF, free_ports, Gateway, haproxy_major, http,
                     l1_cred, new_case, Proc, runtime, start_agent, start_haproxy, stop_all,
                     wait_agent_up, wait_log, wait_port)

ADMIN_TOKEN = "t-" + secrets.token_hex(16)
L1_TTL_S = 3             # L1_MAX_TTL and the agent's l1-max-ttl
SLOW_S = 0.35            # a slow user-service answer, below the agent's 500 ms timeout


def l1_env(haproxy_bin, tmp, sock, slots=None):
    """The L1 part of HAProxy's environment, and the map's runtime-API name."""
    env = {"L1_CACHE": "on", "L1_COOKIE": "case", "L1_MAX_TTL": str(L1_TTL_S),
           "HAPROXY_RUNTIME_SOCKET": sock}
    if haproxy_major(haproxy_bin) < 3:
        mp = tmp / "l1.map"
        mp.write_text("")
        env["L1_MAP"] = str(mp)
    else:
        env["L1_MAP"] = "virt@l1"
    if slots:
        env["L1_SLOTS"] = str(slots)
    return env, env["L1_MAP"]


def agent_args(sock, map_name, admin_port):
    return ["--cache", "on", "--cache-key-client", "off", "--cache-key-cookies", "case",
            "--l1-max-ttl", "%ds" % L1_TTL_S, "--haproxy-runtime-socket", sock,
            "--haproxy-l1-map", map_name, "--admin-listen", "%s:%d" % (HOST, admin_port),
            "--admin-token", ADMIN_TOKEN]


@pytest.fixture(scope="module")
def l1(fake_user, demo_services, haproxy_bin, agent_bin, logdir, tmp_path_factory):
    """HAProxy with the L1 on + agent (cache on) + the fake user service; a
    second HAProxy with one single L1 slot (every session collides) on the
    same agent."""
    tmp = tmp_path_factory.mktemp("l1")
    sock = str(tmp / "rt.sock")
    env, map_name = l1_env(haproxy_bin, tmp, sock)
    tiny_tmp = tmp_path_factory.mktemp("l1tiny")
    tiny_env, _ = l1_env(haproxy_bin, tiny_tmp, str(tiny_tmp / "rt.sock"), slots=1)
    sc_tmp = tmp_path_factory.mktemp("l1scope")
    sc_env, _ = l1_env(haproxy_bin, sc_tmp, str(sc_tmp / "rt.sock"))
    sc_env["SCOPE_MAP"] = str(REPO / "haproxy" / "scopes.map")
    gw_port, tiny_port, sc_port, agent_port, admin_port = free_ports(5)
    procs = []
    try:
        procs.append(start_agent(logdir, agent_bin, agent_port, fake_user.url,
                                 extra=agent_args(sock, map_name, admin_port)))
        wait_port(admin_port, procs[-1])
        procs.append(start_haproxy(logdir, haproxy_bin, gw_port, fake_user.port,
                                   demo_services["biz_port"], agent_port, env_extra=env))
        procs.append(start_haproxy(logdir, haproxy_bin, tiny_port, fake_user.port,
                                   demo_services["biz_port"], agent_port, env_extra=tiny_env))
        procs.append(start_haproxy(logdir, haproxy_bin, sc_port, fake_user.port,
                                   demo_services["biz_port"], agent_port, env_extra=sc_env))
        wait_agent_up(gw_port, procs)
        wait_agent_up(tiny_port, procs)
        wait_agent_up(sc_port, procs)
        gw = Gateway(gw_port, procs, agent_port=agent_port, admin_port=admin_port,
                     user=fake_user, haproxy=procs[1], sock=sock, map_name=map_name,
                     **demo_services)
        gw.tiny = Gateway(tiny_port, procs, user=fake_user, haproxy=procs[2])
        gw.scoped = Gateway(sc_port, procs, user=fake_user, haproxy=procs[3])
        yield gw
    finally:
        stop_all(procs, strict=("agent",))


def ok_case(gw, **kw):
    case = new_case()
    gw.user.program(case, status=200, body="tok-" + case, **kw)
    return case


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def calls(gw, case):
    return len(gw.user.calls(case))


def agent_decisions(gw):
    """Decisions the agent made so far (every outcome)."""
    body = http(gw.admin_port, "GET", "/metrics").body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("spoa_auth_decisions_total{"))


def metric(gw, name):
    body = http(gw.admin_port, "GET", "/metrics").body.decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("%s not in /metrics" % name)


def get(gw, case, path="/api/business/x", extra=()):
    r = gw.get(path, list(cookie(case)) + list(extra))
    return r


def identity(r):
    """The identity header the business service received (its echo)."""
    return r.json()["x_example_authorization"]


def primed(gw, case, path="/api/business/x"):
    """Asks until the L1 holds <case> at <path> (a miss stores it)."""
    r = get(gw, case, path)
    assert r.status == 200 and r.header("X-Auth-Cache") in ("miss", "hit"), r
    r = get(gw, case, path)
    assert (r.status, r.header("X-Auth-Cache")) == (200, "l1"), r
    return r


def l1_key(case, path):
    """The key of the entry for <case> at <path> (no scope applies): the URL,
    the tag "u", the session hash."""
    return path + "u" + l1_cred(case)


def admin_post(gw, body):
    return http(gw.admin_port, "POST", "/cache/invalidate",
                [("Authorization", "Bearer " + ADMIN_TOKEN),
                 ("Content-Type", "application/x-www-form-urlencoded")], body)


def test_hit_reaches_neither_agent_nor_user_service(l1):
    case = ok_case(l1)
    r = get(l1, case)
    assert (r.status, r.header("X-Auth-Cache")) == (200, "miss"), r
    d0, c0 = agent_decisions(l1), calls(l1, case)
    for _ in range(5):
        r = get(l1, case)
        assert (r.status, r.header("X-Auth-Cache")) == (200, "l1"), r
        assert identity(r) == ["tok-" + case]
    assert agent_decisions(l1) == d0
    assert calls(l1, case) == c0 == 1
    log = l1.haproxy.tail(1 << 20)
    assert "l1=hit" in log and "l1=miss" in log
    # a hit logs what an agent's allow would: outcome, status, the L1 as its cache
    assert re.search(r" auth=allow/200 .* l1=hit .* spoe_ms=- cache=l1 ", log), log[-600:]
    # the cookie never reaches HAProxy's log, nor its hash
    assert case not in log


def test_public_route_logs_l1_none_protected_without_cookie_none(l1):
    r = l1.get("/api/business/x")
    assert r.status == 401
    assert "l1=none" in l1.haproxy.tail(1 << 20)


@pytest.mark.parametrize("what", ["two-cookies", "authorization", "identity-header",
                                  "identity-header-underscore", "websocket"])
def test_other_credentials_always_miss(l1, what):
    case = ok_case(l1)
    primed(l1, case)
    if what == "two-cookies":
        hdrs = [("Cookie", "case=%s; case=%s" % (case, case))]
    elif what == "authorization":
        hdrs = cookie(case) + [("Authorization", "Bearer other")]
    elif what == "identity-header":
        hdrs = cookie(case) + [("X-Example-Authorization", "forged")]
    elif what == "identity-header-underscore":
        # HAProxy drops this spelling before any backend; it never is a
        # credential, so the request stays a candidate: the L1 answers.
        hdrs = cookie(case) + [("X_Example_Authorization", "forged")]
    else:
        hdrs = cookie(case) + [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                               ("Sec-WebSocket-Version", "13")]
    d0 = agent_decisions(l1)
    r = l1.get("/api/business/x", hdrs)
    if what == "identity-header-underscore":
        assert r.header("X-Auth-Cache") == "l1", r
        assert identity(r) == ["tok-" + case]
        return
    assert r.header("X-Auth-Cache") != "l1", r
    assert agent_decisions(l1) == d0 + 1, "the agent decided it"


def test_other_cookies_never_reach_the_decision_of_a_candidate(l1):
    """The L1 key is the session cookie: the agent (and the user service)
    then decide on that cookie alone, the very bytes the key was made of."""
    case = ok_case(l1)
    hdrs = [("Cookie", "theme=dark; case=%s; _ga=GA1.2" % case)]
    r = l1.get("/api/business/x", hdrs)
    assert (r.status, r.header("X-Auth-Cache")) == (200, "miss"), r
    sent = [v for k, v in l1.user.calls(case)[-1]["headers"] if k.lower() == "cookie"]
    assert sent == ["case=" + case]
    r = l1.get("/api/business/x", [("Cookie", "other=1; case=%s" % case)])
    assert (r.status, r.header("X-Auth-Cache")) == (200, "l1"), r
    # not a candidate: the Cookie header goes as received
    r = l1.get("/api/business/x", hdrs + [("Authorization", "Bearer b")])
    sent = [v for k, v in l1.user.calls(case)[-1]["headers"] if k.lower() == "cookie"]
    assert sent == ["theme=dark; case=%s; _ga=GA1.2" % case]


def test_slot_collision_never_serves_another_session(l1):
    gw = l1.tiny        # one slot: every session shares it
    a, b = ok_case(l1), ok_case(l1)
    for _ in range(3):
        for me in (a, b):
            r = get(gw, me)
            assert r.status == 200, r
            assert identity(r) == ["tok-" + me], (me, r.header("X-Auth-Cache"))
            # the other session had the slot: this is never an L1 hit
            assert r.header("X-Auth-Cache") != "l1", r
    r = get(gw, b)
    assert (r.header("X-Auth-Cache"), identity(r)) == ("l1", ["tok-" + b])


def test_deny_is_never_stored(l1):
    case = new_case()
    l1.user.program(case, status=403, body="no")
    for _ in range(3):
        r = get(l1, case)
        assert r.status == 403 and r.header("X-Auth-Cache") != "l1", r


def test_set_cookie_answer_is_never_stored(l1):
    case = ok_case(l1, headers=[("Set-Cookie", "refresh=1; Path=/")])
    for _ in range(3):
        r = get(l1, case)
        assert r.status == 200 and r.header("X-Auth-Cache") != "l1", r
        assert r.header("Set-Cookie") == "refresh=1; Path=/"


def test_no_store_answer_is_never_stored(l1):
    case = ok_case(l1, headers=[("Cache-Control", "no-store")])
    for _ in range(3):
        r = get(l1, case)
        assert r.status == 200 and r.header("X-Auth-Cache") != "l1", r


def test_expiry_honoured(l1):
    case = ok_case(l1)
    primed(l1, case)
    time.sleep(L1_TTL_S + 0.2)
    r = get(l1, case)
    # the L1 entry is past its expiry; the agent's own (10 s) still answers
    assert (r.status, r.header("X-Auth-Cache")) == (200, "hit"), r


def test_scope_or_uri_is_part_of_the_key(l1):
    case = ok_case(l1)
    primed(l1, case, "/api/business/a")
    r = get(l1, case, "/api/business/b")
    assert r.header("X-Auth-Cache") != "l1", r


def test_scope_keys_the_l1_across_uris_of_one_scope(l1):
    gw = l1.scoped
    case = ok_case(l1)
    r = get(gw, case, "/api/business/orders/1")
    assert r.header("X-Auth-Cache") == "miss", r
    for i in range(2, 6):
        r = get(gw, case, "/api/business/orders/%d" % i)
        assert (r.status, r.header("X-Auth-Cache")) == (200, "l1"), r
    assert calls(l1, case) == 1
    # another scope is another key
    r = get(gw, case, "/api/business/admin/x")
    assert r.header("X-Auth-Cache") != "l1", r


def test_answer_narrowed_to_its_uri_is_not_stored_for_the_scope(l1):
    gw = l1.scoped
    case = ok_case(l1, headers=[("X-Auth-Scope", "uri")])
    for i in range(3):
        r = get(gw, case, "/api/business/orders/%d" % i)
        assert r.status == 200 and r.header("X-Auth-Cache") != "l1", r


def test_client_address_in_the_decision_means_no_l1(fake_user, demo_services, haproxy_bin,
                                                    agent_bin, logdir, tmp_path):
    """cache-key-client on (the agent's default): the decision may depend on
    the client address, which the L1 key does not hold."""
    sock = str(tmp_path / "rt.sock")
    env, map_name = l1_env(haproxy_bin, tmp_path, sock)
    gw_port, agent_port, admin_port = free_ports(3)
    args = agent_args(sock, map_name, admin_port)
    i = args.index("--cache-key-client")
    args[i + 1] = "on"
    procs = []
    try:
        procs.append(start_agent(logdir, agent_bin, agent_port, fake_user.url, extra=args))
        procs.append(start_haproxy(logdir, haproxy_bin, gw_port, fake_user.port,
                                   demo_services["biz_port"], agent_port, env_extra=env))
        wait_agent_up(gw_port, procs)
        gw = Gateway(gw_port, procs, user=fake_user)
        case = ok_case(gw)
        labels = [get(gw, case).header("X-Auth-Cache") for _ in range(3)]
        assert labels == ["miss", "hit", "hit"], labels
    finally:
        stop_all(procs, strict=("agent",))


def test_logout_tombstone_blocks_an_in_flight_miss(l1):
    case = ok_case(l1)
    primed(l1, case, "/api/business/a")
    l1.user.program(case, status=200, body="tok-" + case, delay=SLOW_S)
    out = {}

    def slow_miss():
        out["r"] = get(l1, case, "/api/business/b")

    t = threading.Thread(target=slow_miss)
    t.start()
    time.sleep(SLOW_S / 3)
    r = l1.request("POST", "/api/user/logout", cookie(case))
    assert r.status == 200, r
    t.join(10)
    assert out["r"].status == 200 and out["r"].header("X-Auth-Cache") == "miss", out["r"]
    held = runtime(l1, "show map " + l1.map_name)
    assert l1_key(case, "/api/business/a") in held, "the key computed here is HAProxy's"
    assert l1_key(case, "/api/business/b") not in held, "the in-flight answer was not stored"
    assert l1_cred(case) in runtime(l1, "show table l1_tomb")
    # neither the entry held before the logout nor the in-flight answer
    for path in ("/api/business/a", "/api/business/b"):
        r = get(l1, case, path)
        assert r.header("X-Auth-Cache") != "l1", (path, r)


def test_logout_of_a_session_the_l1_never_held_leaves_no_tombstone(l1):
    case = new_case()           # unknown to the fake: 401, never in the L1
    r = l1.request("POST", "/api/user/logout", cookie(case))
    assert r.status == 200, r
    assert l1_cred(case) not in runtime(l1, "show table l1_tomb")


def test_admin_invalidation_reaches_the_l1(l1):
    case = ok_case(l1)
    primed(l1, case)
    ok0 = metric(l1, "spoa_auth_l1_runtime_commands_total")
    r = admin_post(l1, "cookie=" + urllib.parse.quote("case=" + case))
    assert r.status == 200 and b'"l1":"ok"' in r.body, r
    assert l1_cred(case) in runtime(l1, "show table l1_tomb"), "the agent's hash is HAProxy's"
    assert metric(l1, "spoa_auth_l1_runtime_commands_total") == ok0 + 1
    r = get(l1, case)
    assert r.header("X-Auth-Cache") != "l1", r


def test_admin_invalidate_all_clears_the_l1(l1):
    a, b = ok_case(l1), ok_case(l1)
    primed(l1, a)
    primed(l1, b)
    r = admin_post(l1, "all=1")
    assert r.status == 200 and b'"l1":"ok"' in r.body, r
    assert "tok-" not in runtime(l1, "show map " + l1.map_name)
    for case in (a, b):
        r = get(l1, case)
        assert r.header("X-Auth-Cache") != "l1", r


def test_admin_invalidation_failure_is_counted(fake_user, agent_bin, logdir, tmp_path):
    agent_port, admin_port = free_ports(2)
    p = start_agent(logdir, agent_bin, agent_port, fake_user.url,
                    extra=agent_args(str(tmp_path / "nobody.sock"), "virt@l1", admin_port))
    try:
        wait_port(admin_port, p)
        gw = Gateway(0, [p], admin_port=admin_port)
        r = admin_post(gw, "cookie=case%3Dx")
        assert r.status == 200 and b'"l1":"failed"' in r.body, r
        assert metric(gw, "spoa_auth_l1_runtime_errors_total") == 1
        wait_log(p, "L1 invalidation through the HAProxy runtime API failed")
    finally:
        stop_all([p], strict=("agent",))


def test_reload_empties_the_l1(fake_user, demo_services, haproxy_bin, agent_bin, logdir,
                               tmp_path):
    sock = str(tmp_path / "rt.sock")
    env, map_name = l1_env(haproxy_bin, tmp_path, sock)
    gw_port, agent_port, admin_port = free_ports(3)
    procs = []
    try:
        procs.append(start_agent(logdir, agent_bin, agent_port, fake_user.url,
                                 extra=agent_args(sock, map_name, admin_port)))
        full = {"GW_ADDR": "%s:%d" % (HOST, gw_port),
                "USER_ADDR": "%s:%d" % (HOST, fake_user.port),
                "BIZ_ADDR": "%s:%d" % (HOST, demo_services["biz_port"]),
                "AGENT_ADDR": "%s:%d" % (HOST, agent_port), "SPOE_CONF": str(SPOE_CONF)}
        full.update(env)
        hp = Proc("haproxy", [haproxy_bin, "-W", "-db", "-f", HAPROXY_CFG], logdir, env=full)
        procs.append(hp)
        wait_port(gw_port, hp)
        wait_agent_up(gw_port, procs)
        gw = Gateway(gw_port, procs, user=fake_user, admin_port=admin_port)
        gw.sock, gw.map_name = sock, map_name
        case = ok_case(gw)
        primed(gw, case)
        assert l1_key(case, "/api/business/x") in runtime(gw, "show map " + map_name)

        def worker_pid():
            try:
                return re.search(r"^Pid: (\d+)", runtime(gw, "show info"), re.M).group(1)
            except (OSError, AttributeError):
                return None

        old = worker_pid()
        # 2.6's master sometimes drops a SIGUSR2 that comes soon after its
        # start: send it again until a new worker answers.
        deadline = time.monotonic() + 30
        resend = 0.0
        while worker_pid() in (old, None):
            assert time.monotonic() < deadline, hp.describe()
            if time.monotonic() >= resend:
                hp.p.send_signal(signal.SIGUSR2)
                resend = time.monotonic() + 3
            time.sleep(0.05)
        # The old worker keeps its listeners until the master tells it the
        # new one is ready: wait for it to be gone, so that the next
        # connection can only reach the new worker.
        while os.path.exists("/proc/%s" % old):
            assert time.monotonic() < deadline, hp.describe()
            time.sleep(0.05)
        # the new worker's map is empty: expiry alone never removes an entry
        assert "|" not in runtime(gw, "show map " + map_name)
        r = get(gw, case)       # a new connection: the new worker
        assert r.status == 200 and r.header("X-Auth-Cache") != "l1", r
    finally:
        stop_all(procs, strict=("agent",))


def test_hit_drops_client_identity_marker_and_subprotocol(l1):
    """A hit ends the frontend's rules early: it still drops every client
    copy of the identity header and of the fail-open marker (any spelling)
    and the client's Sec-WebSocket-Protocol, as every other path does."""
    case = ok_case(l1)
    primed(l1, case)
    forged = [("X_Example_Authorization", "forged"), ("x-example_authorization", "f2"),
              ("X-Auth-Failure-Mode-Allowed", "true"), ("x_auth_failure_mode_allowed", "1"),
              ("Sec-WebSocket-Protocol", "X-Example-Authorization.forged")]
    r = get(l1, case, extra=forged)
    assert (r.status, r.header("X-Auth-Cache")) == (200, "l1"), r
    got = r.json()
    assert got["x_example_authorization"] == ["tok-" + case]
    names = [k.lower().replace("_", "-") for k, _ in got["headers"]]
    assert names.count("x-example-authorization") == 1, got
    assert "x-auth-failure-mode-allowed" not in names, got
    assert "sec-websocket-protocol" not in names, got


def test_long_url_is_never_stored(l1):
    """Without a scope the key holds the URL: over 256 bytes it is no
    candidate (the agent's own cache still answers)."""
    case = ok_case(l1)
    path = "/api/business/" + "x" * 250
    labels = [get(l1, case, path).header("X-Auth-Cache") for _ in range(3)]
    assert labels == ["miss", "hit", "hit"], labels
    path = "/api/business/" + "x" * 240
    labels = [get(l1, case, path).header("X-Auth-Cache") for _ in range(2)]
    assert labels == ["miss", "l1"], labels


def test_key_holding_a_bar_is_never_stored(l1):
    """A hit reads the entry's key as its value's last "|" field: a URL
    holding "|" would store an answer under a key whose last field is another
    URL's. With one slot every key shares it: the session's answer for the
    crafted URL (200) must never serve /api/business/admin (403)."""
    gw = l1.tiny
    case = new_case()
    l1.user.program(case, status=403, body="no",
                    uri_rules=[("q-crafted", 200, "tok-crafted-" + case, [])])
    crafted = "/api/business/q-crafted|/api/business/admin"
    for _ in range(2):
        r = get(gw, case, crafted)
        assert r.status == 200 and r.header("X-Auth-Cache") != "l1", r
        assert identity(r) == ["tok-crafted-" + case]
    r = get(gw, case, "/api/business/admin")
    assert r.status == 403 and r.header("X-Auth-Cache") != "l1", r


def test_token_starting_with_digits_still_expires(l1):
    """The value starts with expiry and status read as one integer: a token
    starting with digits must not extend it (an entry that never expires
    would also outlive its session's tombstone)."""
    case = new_case()
    token = "9" * 12 + "-" + case
    l1.user.program(case, status=200, body=token)
    primed(l1, case)
    r = get(l1, case)
    assert (r.status, r.header("X-Auth-Cache"), identity(r)) == (200, "l1", [token]), r
    time.sleep(L1_TTL_S + 0.2)
    r = get(l1, case)
    # past the L1's expiry; the agent's own cache entry (10 s) answers
    assert (r.status, r.header("X-Auth-Cache")) == (200, "hit"), r


def test_one_connection_never_reuses_another_cookies_hash(l1):
    """A connection keeps its last session cookie and hash (sess.l1_*): the
    next request on it with another cookie, or with none, must be keyed on
    its own, never on the one before."""
    import http.client
    a, b = ok_case(l1), ok_case(l1)
    primed(l1, a)
    primed(l1, b)
    unknown = new_case()        # the fake answers 401
    conn = http.client.HTTPConnection(HOST, l1.port, timeout=10)
    try:
        def ask(hdrs):
            conn.request("GET", "/api/business/x", headers=dict(hdrs))
            r = conn.getresponse()
            body = r.read()
            return r.status, r.getheader("X-Auth-Cache"), body
        for me in (a, b, a):
            status, label, body = ask(cookie(me))
            assert (status, label) == (200, "l1"), (me, status, label)
            assert ("tok-" + me).encode() in body and ("tok-" + (b if me == a else a)).encode() \
                not in body
        status, label, _ = ask(cookie(unknown))
        assert status == 401 and label != "l1", (status, label)
        status, label, _ = ask([])
        assert status == 401 and label != "l1", (status, label)
        status, label, body = ask(cookie(a))
        assert (status, label) == (200, "l1") and ("tok-" + a).encode() in body
    finally:
        conn.close()


def test_hit_with_identity_trailer_never_reaches_the_backend(fake_user, haproxy_bin, agent_bin,
                                                            logdir, tmp_path):
    """A hit goes to its own backend (business_service_l1): like every HTTP
    backend it drops request trailers on 3.2+, where chunked bodies pass;
    before 3.2 the frontend refuses chunked bodies first. Checked on the
    bytes a raw TCP backend receives."""
    from harness import gateway
    from rawhttp import CaptureServer, raw_request
    sock = str(tmp_path / "rt.sock")
    env, map_name = l1_env(haproxy_bin, tmp_path, sock)
    admin_port = free_ports(1)[0]
    out = subprocess.run([haproxy_bin, "-v"], capture_output=True, text=True).stdout
    drops = tuple(int(x) for x in re.search(r"version (\d+)\.(\d+)", out).groups()) >= (3, 2)
    cap = CaptureServer().start()
    try:
        with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port, cap.port,
                     agent_extra=agent_args(sock, map_name, admin_port), haproxy_env=env,
                     user=fake_user) as gw:
            case = ok_case(gw)
            head = b"POST /api/business/upload HTTP/1.1\r\nHost: gateway\r\nCookie: case=%s\r\n" \
                % case.encode()
            for _ in range(2):          # the first one fills the L1
                r = raw_request(gw.port, head + b"Content-Length: 5\r\n\r\nhello")
                assert r is not None and r.status == 200, r
            before = len(cap.data())
            r = raw_request(gw.port, head + b"Transfer-Encoding: chunked\r\n"
                            b"Trailer: X-Example-Authorization\r\n\r\n"
                            b"5\r\nhello\r\n0\r\nX-Example-Authorization: FORGED\r\n"
                            b"x_example_authorization: FORGED\r\n\r\n")
            got = cap.data()[before:]
            assert b"forged" not in got.lower(), got
            if drops:
                assert r is not None and r.status == 200, r
                assert r.header("X-Auth-Cache") == "l1", r
                assert b"\r\nx-example-authorization: tok-" + case.encode() in got.lower(), got
            else:
                assert r is not None and r.status == 411, r
    finally:
        cap.stop()
