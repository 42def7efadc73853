"""Per-route failure policy in haproxy/haproxy.cfg: the routes listed in
FAIL_OPEN_ROUTES reach the backend when authentication is unavailable, with
X-Auth-Failure-Mode-Allowed and no identity; every other protected route
fails closed with AUTH_UNAVAILABLE_STATUS/CTYPE/BODY (default 503 JSON); a
refusal is never turned into a pass, and a client cannot forge the marker."""
import pytest

from harness import biz_requests, free_ports, gateway, haproxy_gateway, new_case

OPEN_PREFIX = "/api/business/open"
STATUS, CTYPE, BODY = 521, "application/problem+json", '{"title":"auth down","retry":true}'
MARKER = "X-Auth-Failure-Mode-Allowed"


def policy_env(tmp_path):
    routes = tmp_path / "fail-open.lst"
    routes.write_text("# routes that fail open\n%s\n" % OPEN_PREFIX)
    return {"FAIL_OPEN_ROUTES": str(routes), "AUTH_UNAVAILABLE_STATUS": str(STATUS),
            "AUTH_UNAVAILABLE_CTYPE": CTYPE, "AUTH_UNAVAILABLE_BODY": BODY}


@pytest.fixture(scope="module")
def pgw(fake_user, demo_services, haproxy_bin, agent_bin, logdir, tmp_path_factory):
    """The agent and the fake user service, with a fail-open route and a
    configured unavailable answer."""
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], user=fake_user, secret=demo_services["secret"],
                 haproxy_env=policy_env(tmp_path_factory.mktemp("policy"))) as gw:
        yield gw


@pytest.fixture(scope="module")
def nogw(demo_services, haproxy_bin, logdir, tmp_path_factory):
    """The same policy, and no agent at all (HAProxy sets txn.auth.error)."""
    dead_agent, = free_ports(1)
    with haproxy_gateway(logdir, haproxy_bin, demo_services["user_port"],
                         demo_services["biz_port"], dead_agent,
                         haproxy_env=policy_env(tmp_path_factory.mktemp("policy")),
                         secret=demo_services["secret"]) as gw:
        yield gw


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def assert_failed_open(gw, r, before):
    assert r.status == 200, r
    got = r.json()
    assert got["service"] == "business"
    assert got["x_example_authorization"] == [], got      # no identity
    hdrs = {k.lower(): v for k, v in got["headers"]}
    assert hdrs.get(MARKER.lower()) == "true", got
    assert biz_requests(gw) == before + 1


def assert_closed(gw, r, before):
    assert r.status == STATUS, r
    assert r.header("Content-Type") == CTYPE
    assert r.body.decode() == BODY
    assert biz_requests(gw) == before


def test_open_route_fails_open_without_identity(pgw):
    case = new_case()
    pgw.user.program(case, close=True)                     # outcome error
    before = biz_requests(pgw)
    r = pgw.get(OPEN_PREFIX + "/list", cookie(case) + [("X-Example-Authorization", "forged")])
    assert_failed_open(pgw, r, before)


def test_other_routes_fail_closed_with_the_configured_answer(pgw):
    case = new_case()
    pgw.user.program(case, close=True)
    before = biz_requests(pgw)
    assert_closed(pgw, pgw.get("/api/business/x", cookie(case)), before)
    # garbage from the user service too
    pgw.user.program(case, garbage=b"\x00\x01 junk\r\n\r\n")
    assert_closed(pgw, pgw.get("/api/business/other", cookie(case)), before)


@pytest.mark.parametrize("status", [401, 403, 302, 500, 503, 418])
def test_a_refusal_is_never_turned_into_a_pass(pgw, status):
    case = new_case()
    pgw.user.program(case, status=status, body="no", headers=[("Location", "/login")])
    before = biz_requests(pgw)
    r = pgw.get(OPEN_PREFIX + "/list", cookie(case))
    assert r.status != 200 and r.status != STATUS, r
    assert r.header(MARKER) is None
    assert biz_requests(pgw) == before


def test_allowed_request_on_open_route_has_identity_and_no_marker(pgw):
    case = new_case()
    pgw.user.program(case, status=200, body="tok-" + case)
    r = pgw.get(OPEN_PREFIX + "/list", cookie(case) + [(MARKER, "true"), ("x_auth_failure_mode_allowed", "1")])
    assert r.status == 200, r
    got = r.json()
    assert got["x_example_authorization"] == ["tok-" + case]
    hdrs = [k.lower() for k, _ in got["headers"]]
    assert MARKER.lower() not in hdrs and "x_auth_failure_mode_allowed" not in hdrs, got


def test_allow_with_unusable_token_fails_open_only_on_open_route(pgw):
    case = new_case()
    pgw.user.program(case, status=200, body="two words")   # not one run of visible ASCII
    before = biz_requests(pgw)
    assert_failed_open(pgw, pgw.get(OPEN_PREFIX, cookie(case)), before)
    assert_closed(pgw, pgw.get("/api/business/x", cookie(case)), before + 1)


def test_agent_down_open_route_passes_closed_route_does_not(nogw):
    before = biz_requests(nogw)
    r = nogw.get(OPEN_PREFIX + "/list", [("Cookie", "session=whatever")])
    assert_failed_open(nogw, r, before)
    assert_closed(nogw, nogw.get("/api/business/x"), before + 1)
    # public routes are untouched by the policy
    assert nogw.login("alice")[1]["ok"] is True


def test_default_unavailable_answer_is_503_json(fake):
    case = new_case()
    fake.user.program(case, close=True)
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == 503 and r.json() == {"error": "authentication_unavailable"}, r
    assert r.header("Content-Type") == "application/json"
    # no route fails open by default
    r = fake.get(OPEN_PREFIX, cookie(case))
    assert r.status == 503 and r.header(MARKER) is None, r
