"""The main flow with the demo services: login, identity to the backend,
refusals passed through, public routes untouched."""
import json

from harness import biz_requests, sha256_hex, user_stats

LOGIN_401 = {"error": "unauthorized", "message": "login required"}


def test_login_then_protected_request_carries_the_identity(demo):
    cookie, login = demo.login("alice")
    before = user_stats(demo)["token_calls"]
    r = demo.get("/api/business/hello?x=1", [("Cookie", cookie)])
    assert r.status == 200, r
    body = r.json()
    assert body["service"] == "business" and body["path"] == "/api/business/hello?x=1"
    idents = body["x_example_authorization"]
    assert len(idents) == 1, idents
    stats = user_stats(demo)
    assert stats["token_calls"] == before + 1
    # exactly a token the user service issued, and it verifies at the backend
    assert sha256_hex(idents[0]) in stats["recent_token_sha256"]
    assert body["claims"]["sub"] == "alice" and body["claims"]["role"] == "user"
    assert body["claims"]["sid"] == login["sid"]


def test_bearer_token_is_a_credential(demo):
    cookie, _ = demo.login("bob")
    token = demo.get("/api/business/t", [("Cookie", cookie)]).json()["x_example_authorization"][0]
    r = demo.get("/api/business/bearer", [("Authorization", "Bearer " + token)])
    assert r.status == 200, r
    assert r.json()["claims"]["sub"] == "bob"


def test_anonymous_gets_the_user_service_401(demo):
    before = biz_requests(demo)
    r = demo.get("/api/business/hello")
    assert r.status == 401, r
    assert json.loads(r.body) == LOGIN_401
    assert r.header("Content-Type") == "application/json"
    assert r.header("WWW-Authenticate") == 'Bearer realm="example"'
    assert len(r.header_all("Content-Type")) == 1
    assert biz_requests(demo) == before, "the backend was contacted"


def test_bad_session_cookie_is_401(demo):
    r = demo.get("/api/business/hello", [("Cookie", "session=eyJzdWIiOiJhZG1pbiJ9.forged")])
    assert r.status == 401, r


def test_alice_on_admin_route_gets_403_body(demo):
    cookie, _ = demo.login("alice")
    before = biz_requests(demo)
    for path in ("/api/business/admin", "/api/business/admin/users?x=1",
                 "/api/business/%61dmin", "/api/business//admin", "/api/business/x/../admin",
                 "http://127.0.0.1:%d/api/business/admin" % demo.port):
        r = demo.get(path, [("Cookie", cookie)])
        assert r.status == 403, (path, r)
        assert r.json() == {"error": "forbidden", "message": "admin role required"}
        assert r.header("Content-Type") == "application/json"
    assert biz_requests(demo) == before


def test_admin_on_admin_route_gets_200(demo):
    cookie, _ = demo.login("admin")
    r = demo.get("/api/business/admin/panel", [("Cookie", cookie)])
    assert r.status == 200, r
    assert r.json()["claims"]["role"] == "admin"


def test_public_routes_are_proxied_without_exchange(demo):
    before = user_stats(demo)["token_calls"]
    r = demo.request("POST", "/api/user/login", [("Content-Type", "application/x-www-form-urlencoded")],
                     "username=alice&password=wrong")
    assert r.status == 401 and r.json() == {"error": "invalid_credentials"}
    cookie, _ = demo.login("alice")
    me = demo.get("/api/user/me", [("Cookie", cookie)])
    assert me.status == 200 and me.json()["user"]["sub"] == "alice"
    out = demo.request("POST", "/api/user/logout", [("Cookie", cookie)], b"")
    assert out.status == 200
    assert "Max-Age=0" in out.header("Set-Cookie")
    assert user_stats(demo)["token_calls"] == before, "public routes must not call the exchange"


def test_unknown_routes_are_404_without_exchange(demo):
    before = user_stats(demo)["token_calls"]
    for path in ("/", "/api", "/api/other", "/API/business/x", "/__stats"):
        r = demo.get(path)
        assert r.status == 404, (path, r)
    assert user_stats(demo)["token_calls"] == before
