"""The demo user service: its admin-route check matches path segments as a
lenient backend would route them (percent-decoding, ";params", dot segments,
suffixes, case) and counts anything ambiguous as admin; its logout ends the
session on the server, so a copied cookie or a token issued for the session
stops working."""
import urllib.parse

import pytest

from harness import biz_requests, http

ADMIN_SPELLINGS = [
    "/api/business/admin",
    "/api/business/admin;x=1",
    "/api/business/admin;x=1/users",
    "/api/business/admin%3Bx/users",
    "/api/business/admin%3bx",
    "/api/business/admin.json",
    "/api/business/admin.json/users",
    "/api/business/ADMIN",
    "/api/business/Admin/users",
    "/api/business/admin/",
    "/api/business//admin",
    "/api/business/./admin",
    "/api/business/x/../admin",
    "/api/business/x/%2e%2e/admin",
    "/api/business/x/%2E%2E/admin",
    "/api/business/foo/..;/admin",
    "/api/business/%61dmin",
    "/api/business/%2561dmin",
    "/api/business/admin%2Fusers",
    "/api/business/admin/..%2F..%2Fother",
    "/api/business/admin%3Fx",
    "/api/business/admin%23x",
    "/api/business/admin%00.png",
    "/api/business/admin%20",
    "/api/business/%2525252561dmin",
]
NOT_ADMIN = ["/api/business/hello", "/api/business/administrator", "/api/business/admins",
             "/api/business/hello?next=/api/business/admin", "/api/business/adm/in"]


def token_call(svc, cookie, uri):
    return http(svc["user_port"], "GET", "/api/user/token?request_uri=" +
                urllib.parse.quote(uri, safe=""), [("Cookie", cookie)])


@pytest.mark.parametrize("uri", ADMIN_SPELLINGS + ["http://gateway" + ADMIN_SPELLINGS[1],
                                                   "/api/business\\admin"])
def test_user_service_refuses_every_admin_spelling_to_a_user(demo, uri):
    cookie, _ = demo.login("alice")
    r = token_call(demo.__dict__, cookie, uri)
    assert r.status == 403, (uri, r)
    admin_cookie, _ = demo.login("admin")
    assert token_call(demo.__dict__, admin_cookie, uri).status == 200


@pytest.mark.parametrize("uri", NOT_ADMIN)
def test_user_service_allows_other_routes(demo, uri):
    cookie, _ = demo.login("alice")
    assert token_call(demo.__dict__, cookie, uri).status == 200, uri


@pytest.mark.parametrize("path", ADMIN_SPELLINGS)
def test_gateway_keeps_a_user_out_of_every_admin_spelling(demo, path):
    cookie, _ = demo.login("bob")
    before = biz_requests(demo)
    r = demo.get(path, [("Cookie", cookie)])
    # 403 from the user service, or 400 when HAProxy refuses the URI itself.
    assert r.status in (400, 403), (path, r)
    assert biz_requests(demo) == before


def test_logout_revokes_the_session_on_the_server(demo):
    cookie, _ = demo.login("alice")
    token = demo.get("/api/user/token?request_uri=/api/business/ws", [("Cookie", cookie)]).body.decode()
    assert demo.get("/api/business/hello", [("Cookie", cookie)]).status == 200
    assert demo.get("/api/user/me", [("Authorization", "Bearer " + token)]).status == 200
    out = demo.request("POST", "/api/user/logout", [("Cookie", cookie)], b"")
    assert out.status == 200 and "Max-Age=0" in out.header("Set-Cookie")
    # A copy of the cookie (or of a token issued for the session) held
    # elsewhere no longer works, through the gateway or at the service.
    before = biz_requests(demo)
    assert demo.get("/api/user/me", [("Cookie", cookie)]).status == 401
    assert demo.get("/api/business/hello", [("Cookie", cookie)]).status == 401
    assert demo.get("/api/user/me", [("Authorization", "Bearer " + token)]).status == 401
    assert demo.get("/api/business/ws", [
        ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "X-Example-Authorization." + token)]).status == 401
    assert biz_requests(demo) == before


def test_logout_ends_only_that_session(demo):
    first, _ = demo.login("alice")
    second, _ = demo.login("alice")
    assert demo.request("POST", "/api/user/logout", [("Cookie", first)], b"").status == 200
    assert demo.get("/api/user/me", [("Cookie", first)]).status == 401
    me = demo.get("/api/user/me", [("Cookie", second)])
    assert me.status == 200 and me.json()["user"]["sub"] == "alice"
