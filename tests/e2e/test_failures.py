"""Failures fail closed: 503 on protected routes (never 401/403, never a
pass), public routes unaffected."""
import pytest

from fake_agent import NOACK, FakeAgent
from fake_user_service import GARBAGE
from harness import HOST, biz_requests, free_ports, gateway, haproxy_gateway, new_case

UNAVAILABLE = {"error": "authentication_unavailable"}


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def assert_unavailable(r):
    assert r.status == 503, r
    assert r.json() == UNAVAILABLE
    assert r.header("WWW-Authenticate") is None


# ---- the user service fails -------------------------------------------------
@pytest.fixture(scope="module")
def dead_user(demo_services, haproxy_bin, agent_bin, logdir, upstream_client):
    """The agent points at a port where nothing listens."""
    dead_port, = free_ports(1)
    with gateway(logdir, haproxy_bin, agent_bin, "http://%s:%d/api/user/token" % (HOST, dead_port),
                 demo_services["user_port"], demo_services["biz_port"],
                 agent_extra=("--upstream-client", upstream_client),
                 agent_name="agent-" + upstream_client, ready=False,
                 secret=demo_services["secret"]) as gw:
        yield gw


def test_user_service_down_is_503(dead_user):
    before = biz_requests(dead_user)
    for headers in ([], [("Cookie", "session=whatever")], [("Authorization", "Bearer x")]):
        r = dead_user.get("/api/business/x", headers)
        assert_unavailable(r)
        assert r.elapsed < 3.0
    assert biz_requests(dead_user) == before
    # public routes still work
    assert dead_user.login("alice")[1]["ok"] is True


def test_slow_user_service_is_503_within_the_timeout(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-late", delay=4.0)
    r = fake.get("/api/business/slow", cookie(case))
    assert_unavailable(r)
    # the agent's timeout is 500ms and HAProxy's 1.5s: anything close to the
    # 4s delay means nobody timed out
    assert r.elapsed < 3.0, r.elapsed
    # and the agent still serves the next one
    ok = new_case()
    fake.user.program(ok, status=200, body="tok-" + ok)
    r = fake.get("/api/business/x", cookie(ok))
    assert r.status == 200, r




@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_from_the_user_service_is_503(fake, name):
    case = new_case()
    fake.user.program(case, garbage=GARBAGE[name])
    before = biz_requests(fake)
    r = fake.get("/api/business/x", cookie(case))
    assert_unavailable(r)
    assert biz_requests(fake) == before


def test_connection_closed_without_answer_is_503(fake):
    case = new_case()
    fake.user.program(case, close=True)
    assert_unavailable(fake.get("/api/business/x", cookie(case)))


@pytest.mark.parametrize("status", [200, 401])
def test_oversized_answer_is_503(fake, status):
    """max-response-size defaults to 8192 bytes; bigger is an error."""
    case = new_case()
    fake.user.program(case, status=status, body="x" * 9000)
    assert_unavailable(fake.get("/api/business/x", cookie(case)))


# ---- the agent fails ----------------------------------------------------------
@pytest.fixture(scope="module")
def no_agent(demo_services, haproxy_bin, logdir):
    """HAProxy pointing at a port where no agent listens."""
    agent_port, = free_ports(1)
    with haproxy_gateway(logdir, haproxy_bin, demo_services["user_port"],
                         demo_services["biz_port"], agent_port,
                         secret=demo_services["secret"]) as gw:
        yield gw


def test_agent_down_is_503_and_public_routes_work(no_agent):
    before = biz_requests(no_agent)
    cookie_, _ = no_agent.login("alice")
    for _ in range(3):
        r = no_agent.get("/api/business/hello", [("Cookie", cookie_)])
        assert_unavailable(r)
        assert r.elapsed < 3.0
    assert_unavailable(no_agent.get("/api/business/hello"))
    assert biz_requests(no_agent) == before
    me = no_agent.get("/api/user/me", [("Cookie", cookie_)])
    assert me.status == 200 and me.json()["user"]["sub"] == "alice"


@pytest.fixture(scope="module")
def scripted(demo_services, haproxy_bin, logdir):
    """HAProxy in front of a scripted fake agent, to check what the shipped
    configuration does with each kind of verdict."""
    agent = FakeAgent().start()
    agent.program("/api/business/__ready", [("status", 401), ("outcome", "deny")])
    try:
        with haproxy_gateway(logdir, haproxy_bin, demo_services["user_port"],
                             demo_services["biz_port"], agent.port, ready=True, agent=agent,
                             secret=demo_services["secret"]) as gw:
            yield gw
    finally:
        agent.stop()


def test_agent_that_never_answers_is_503(scripted):
    scripted.agent.program("/api/business/hang", NOACK)
    r = scripted.get("/api/business/hang")
    assert_unavailable(r)
    assert r.elapsed < 4.0, r.elapsed     # timeout processing 1500ms


@pytest.mark.parametrize("name,pairs,expected", [
    ("no-decision", [], 503),
    ("allow-without-token", [("status", 200), ("outcome", "allow")], 503),
    ("allow-empty-token", [("status", 200), ("outcome", "allow"), ("token", "")], 503),
    ("allow-token-with-space", [("status", 200), ("outcome", "allow"), ("token", "a b")], 503),
    # The token check is anchored exactly: no final newline, no control byte.
    ("allow-token-trailing-lf", [("status", 200), ("outcome", "allow"), ("token", "tok\n")], 503),
    ("allow-token-trailing-crlf", [("status", 200), ("outcome", "allow"), ("token", "tok\r\n")], 503),
    ("allow-token-inner-lf", [("status", 200), ("outcome", "allow"), ("token", "to\nk")], 503),
    ("allow-token-leading-lf", [("status", 200), ("outcome", "allow"), ("token", "\ntok")], 503),
    ("allow-token-nul", [("status", 200), ("outcome", "allow"), ("token", "tok\x00x")], 503),
    ("allow-token-del", [("status", 200), ("outcome", "allow"), ("token", "tok\x7f")], 503),
    ("allow-token-8bit", [("status", 200), ("outcome", "allow"), ("token", "tok\xe9")], 503),
    ("token-without-outcome", [("status", 200), ("token", "tok")], 503),
    ("unknown-outcome", [("status", 200), ("outcome", "maybe"), ("token", "tok")], 503),
    ("error-outcome", [("status", 0), ("outcome", "error")], 503),
    ("error-var", [("status", 200), ("outcome", "allow"), ("token", "tok"), ("error", 1)], 503),
    ("deny-without-status", [("outcome", "deny"), ("body", "no")], 502),
    ("deny-status-0", [("status", 0), ("outcome", "deny"), ("body", "no")], 502),
    ("deny-2xx", [("status", 200), ("outcome", "deny"), ("body", "no")], 502),
    ("allow", [("status", 200), ("outcome", "allow"), ("token", "tok-ok")], 200),
])
def test_only_allow_with_a_token_passes(scripted, name, pairs, expected):
    path = "/api/business/v-" + name
    scripted.agent.program(path, pairs)
    before = biz_requests(scripted)
    r = scripted.get(path, [("X-Example-Authorization", "forged")])
    assert r.status == expected, r
    if expected == 200:
        assert r.json()["x_example_authorization"] == ["tok-ok"]
        assert biz_requests(scripted) == before + 1
    else:
        assert biz_requests(scripted) == before


def test_variables_with_control_characters_cannot_inject_headers(scripted):
    path = "/api/business/inject"
    scripted.agent.program(path, [("status", 302), ("outcome", "deny"), ("body", ""),
                                  ("location", "/x\r\nX-Injected: 1"),
                                  ("set_cookie", "a=1\r\nX-Injected: 2")])
    r = scripted.get(path)
    assert r.status == 302
    assert r.header("X-Injected") is None
