"""WebSocket handshakes: with a subprotocol (the token rides in it) they pass
unexchanged; without one they are exchanged and get the token offered as a
subprotocol. The identity header is stripped either way."""
from harness import biz_requests, new_case

WS = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]


def hdr(body, name):
    return [v for k, v in body["headers"] if k.lower() == name.lower()]


def test_upgrade_with_subprotocol_passes_through_without_exchange(fake):
    proto = "v1.token.websocket.example.com, X-Example-Authorization.client-jwt"
    calls = fake.user.total_calls()
    before = biz_requests(fake)
    r = fake.get("/api/business/ws", WS + [("Sec-WebSocket-Protocol", proto),
                                           ("X-Example-Authorization", "forged"),
                                           ("x-example-authorization", "forged2")])
    assert r.status == 200, r          # the demo backend answers JSON, not 101
    body = r.json()
    assert fake.user.total_calls() == calls, "the exchange was called"
    assert biz_requests(fake) == before + 1
    assert body["x_example_authorization"] == []
    assert hdr(body, "Sec-WebSocket-Protocol") == [proto]


def test_upgrade_without_subprotocol_is_exchanged_and_offered_the_token(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    r = fake.get("/api/business/ws", WS + [("Cookie", "case=" + case),
                                           ("X-Example-Authorization", "forged")])
    assert r.status == 200, r
    body = r.json()
    assert len(fake.user.calls(case)) == 1
    assert body["x_example_authorization"] == ["tok-" + case]
    assert hdr(body, "Sec-WebSocket-Protocol") == [
        "v1.token.websocket.example.com, X-Example-Authorization.tok-" + case]


def test_upgrade_without_subprotocol_is_refused_without_credentials(fake):
    before = biz_requests(fake)
    r = fake.get("/api/business/ws", WS)
    assert r.status == 401, r
    assert biz_requests(fake) == before


def test_upgrade_with_demo_session(demo):
    cookie, _ = demo.login("alice")
    r = demo.get("/api/business/ws", WS + [("Cookie", cookie)])
    assert r.status == 200, r
    body = r.json()
    token = body["x_example_authorization"][0]
    assert body["claims"]["sub"] == "alice"
    assert hdr(body, "Sec-WebSocket-Protocol") == [
        "v1.token.websocket.example.com, X-Example-Authorization." + token]


def test_subprotocol_does_not_skip_the_exchange_for_other_upgrades_or_methods(fake):
    # Only a GET with Upgrade: websocket may skip the exchange: any other
    # Upgrade value, or another method, carrying Sec-WebSocket-Protocol is
    # exchanged like any protected request (here: no credentials -> 401).
    # (HAProxy itself answers 400 to a websocket Upgrade on a POST.)
    proto = [("Sec-WebSocket-Protocol", "v1.token.websocket.example.com"),
             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    before = biz_requests(fake)
    for method, upgrade, want in (("GET", "h2c", 401), ("GET", "not-websocket", 401),
                                  ("POST", "websocket", (400, 401))):
        headers = [("Upgrade", upgrade), ("Connection", "Upgrade")] + proto
        r = fake.request(method, "/api/business/ws", headers, body=b"" if method == "POST" else None)
        assert r.status in (want if isinstance(want, tuple) else (want,)), (method, upgrade, r)
    assert biz_requests(fake) == before


def test_websocket_upgrade_value_is_case_insensitive(fake):
    calls = fake.user.total_calls()
    headers = [("Upgrade", "WebSocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
               ("Sec-WebSocket-Protocol", "v1.token.websocket.example.com")]
    r = fake.get("/api/business/ws", headers)
    assert r.status == 200, r
    assert fake.user.total_calls() == calls
