"""Refusals from the user service reach the client: status (mapped as in
haproxy/haproxy.cfg), body, Content-Type, Location, WWW-Authenticate,
Set-Cookie; the backend is never contacted. Uses the fake user service."""
import json

import pytest

from harness import biz_requests, new_case

MAPPED = [301, 302, 303, 307, 308, 400, 401, 402, 403, 404, 405, 407, 408, 409, 410, 413, 415,
          422, 423, 429, 451, 500, 502, 503, 504]
# (status from the user service, status the client gets): the documented fallback
FALLBACK = [(300, 302), (304, 302), (305, 302), (399, 302),
            (406, 403), (411, 403), (418, 403), (425, 403), (431, 403), (499, 403),
            (501, 502), (505, 502), (511, 502), (599, 502)]


def cookie(case):
    return [("Cookie", "case=%s; theme=dark" % case)]


@pytest.mark.parametrize("status", MAPPED)
def test_mapped_status_passes_with_body_and_content_type(fake, status):
    case = new_case()
    body = json.dumps({"error": "e%d" % status, "case": case, "text": "quote\" <tag> & tab\t"})
    headers = [("X-Other", "not-copied")]
    if 300 <= status < 400:
        headers.append(("Location", "https://login.example.com/?next=%2Fapi%2Fbusiness%2Fx&s=" + case))
    fake.user.program(case, status=status, body=body, content_type="application/problem+json",
                      headers=headers)
    before = biz_requests(fake)
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == status, r
    assert r.body == body.encode()
    assert r.header_all("Content-Type") == ["application/problem+json"]
    if 300 <= status < 400:
        assert r.header("Location") == "https://login.example.com/?next=%2Fapi%2Fbusiness%2Fx&s=" + case
    else:
        assert r.header("Location") is None
    assert r.header("X-Other") is None
    assert len(fake.user.calls(case)) == 1
    assert biz_requests(fake) == before, "the backend was contacted on a refusal"


def test_401_passes_www_authenticate(fake):
    case = new_case()
    fake.user.program(case, status=401, body='{"error":"login"}', content_type="application/json",
                      headers=[("WWW-Authenticate", 'Bearer realm="example", error="invalid_token"')])
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == 401
    assert r.header_all("WWW-Authenticate") == ['Bearer realm="example", error="invalid_token"']
    assert r.json() == {"error": "login"}


def test_redirect_without_body(fake):
    case = new_case()
    fake.user.program(case, status=302, body=b"", content_type=None, headers=[("Location", "/login")])
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == 302 and r.header("Location") == "/login" and r.body == b""


@pytest.mark.parametrize("status,expected", FALLBACK)
def test_unmapped_status_hits_the_documented_fallback(fake, status, expected):
    case = new_case()
    headers = [("Location", "/elsewhere")] if 300 <= status < 400 else []
    body = b"" if status == 304 else b"refused %d" % status     # 304 has no body
    fake.user.program(case, status=status, body=body, headers=headers)
    before = biz_requests(fake)
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == expected, r
    assert r.body == body
    if body:
        assert r.header("Content-Type") == "text/plain"
    if expected == 302:
        assert r.header("Location") == "/elsewhere"
    assert biz_requests(fake) == before


def test_refusal_passes_set_cookie(fake):
    case = new_case()
    fake.user.program(case, status=401, body="{}", content_type="application/json",
                      headers=[("Set-Cookie", "session=; Path=/; Max-Age=0; HttpOnly")])
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == 401
    assert r.header_all("Set-Cookie") == ["session=; Path=/; Max-Age=0; HttpOnly"]


def test_identity_is_exactly_the_user_service_body(fake):
    case = new_case()
    token = "tok-" + case + ".abc_DEF-123~+/="
    fake.user.program(case, status=200, body=token)
    r = fake.get("/api/business/orders", cookie(case))
    assert r.status == 200, r
    assert r.json()["x_example_authorization"] == [token]


@pytest.mark.parametrize("status", [200, 201, 203])
def test_any_2xx_allows(fake, status):
    case = new_case()
    fake.user.program(case, status=status, body="tok-" + case)
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == 200, r
    assert r.json()["x_example_authorization"] == ["tok-" + case]


@pytest.mark.parametrize("body", [b"", b"two words", b"line\r\nX-Injected: 1"])
def test_2xx_with_an_unusable_identity_fails_closed(fake, body):
    """An empty identity, or one that is not a single visible-ASCII token,
    must not reach the backend: 503 (never a pass without identity)."""
    case = new_case()
    fake.user.program(case, status=200, body=body)
    before = biz_requests(fake)
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == 503, r
    assert biz_requests(fake) == before


def test_set_cookies_on_2xx_reach_the_client(fake):
    case = new_case()
    cookies = ["session=new1; Path=/; HttpOnly; SameSite=Lax", "csrf=abc; Path=/",
               "pref=1; Max-Age=60", "old=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure"]
    fake.user.program(case, status=200, body="tok-" + case,
                      headers=[("Set-Cookie", c) for c in cookies])
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == 200, r
    assert r.header_all("Set-Cookie") == cookies
    assert r.json()["x_example_authorization"] == ["tok-" + case]
    # the backend never sees them as request headers
    names = [k.lower() for k, _ in r.json()["headers"]]
    assert "set-cookie" not in names


def test_one_set_cookie_on_2xx(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case,
                      headers=[("Set-Cookie", "session=refreshed; Path=/; HttpOnly")])
    r = fake.get("/api/business/x", cookie(case))
    assert r.status == 200
    assert r.header_all("Set-Cookie") == ["session=refreshed; Path=/; HttpOnly"]
