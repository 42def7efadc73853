"""CORS for local development origins: preflights answered by the gateway
without authentication; allow-origin on the answers to those origins only."""
import pytest

from harness import new_case

ALLOWED = ["http://localhost", "http://localhost:3000", "https://localhost:8443", "https://localhost"]
REFUSED = ["http://localhost.evil.com", "https://evil.com", "http://localhost:3000.evil.com",
           "http://127.0.0.1:3000", "null", "http://localhost:", "http://evil.com/http://localhost",
           "ftp://localhost"]


def preflight(gw, origin, path="/api/business/orders"):
    return gw.request("OPTIONS", path, [("Origin", origin),
                                        ("Access-Control-Request-Method", "POST"),
                                        ("Access-Control-Request-Headers", "content-type")])


@pytest.mark.parametrize("origin", ALLOWED)
def test_preflight_is_answered_without_auth(fake, origin):
    calls = fake.user.total_calls()
    for path in ("/api/business/orders", "/api/user/login"):
        r = preflight(fake, origin, path)
        assert r.status == 204, r
        assert r.header_all("Access-Control-Allow-Origin") == [origin]
        assert r.header("Access-Control-Allow-Credentials") == "true"
        assert "POST" in r.header("Access-Control-Allow-Methods")
        assert "content-type" in r.header("Access-Control-Allow-Headers").lower()
        assert "Origin" in [v.strip() for h in r.header_all("Vary") for v in h.split(",")]
        assert r.body == b""
    assert fake.user.total_calls() == calls, "a preflight called the exchange"


@pytest.mark.parametrize("origin", REFUSED)
def test_preflight_from_other_origins_is_not_answered(fake, origin):
    r = preflight(fake, origin)
    assert r.status == 401, r          # it went to the exchange like any request
    assert r.header("Access-Control-Allow-Origin") is None
    assert r.header("Access-Control-Allow-Credentials") is None


def test_allowed_origin_on_get_post_and_refusals(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    origin = "http://localhost:5173"
    for method in ("GET", "POST"):
        r = fake.request(method, "/api/business/x", [("Origin", origin), ("Cookie", "case=" + case)],
                         b"{}" if method == "POST" else None)
        assert r.status == 200, r
        assert r.header_all("Access-Control-Allow-Origin") == [origin]
        assert r.header("Access-Control-Allow-Credentials") == "true"
    r = fake.get("/api/business/x", [("Origin", origin)])       # refused: browser can read it
    assert r.status == 401
    assert r.header("Access-Control-Allow-Origin") == origin
    r = fake.get("/api/user/me", [("Origin", origin)])          # public route
    assert r.header("Access-Control-Allow-Origin") == origin


@pytest.mark.parametrize("origin", REFUSED)
def test_other_origins_get_no_allow_origin(fake, origin):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    r = fake.get("/api/business/x", [("Origin", origin), ("Cookie", "case=" + case)])
    assert r.status == 200
    assert r.header("Access-Control-Allow-Origin") is None
    assert r.header("Access-Control-Allow-Credentials") is None
