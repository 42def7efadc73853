"""WebSocket handshakes are authenticated like any protected request. The
token a client offers in Sec-WebSocket-Protocol (the entry
"X-Example-Authorization.<token>") is its identity credential: HAProxy sends
it to the user service as X-Example-Authorization, and the handshake reaches
the backend on allow only, with the user service's token as identity and as
subprotocol. Only a genuine handshake (HTTP/1.1 GET, Connection: upgrade,
Upgrade: websocket, a Sec-WebSocket-Key, version 13) may use that entry or
keep the header; the legacy passthrough (WS_LEGACY_PASSTHROUGH=on, off by
default) passes only genuine handshakes unexchanged."""
import json

import pytest

from harness import biz_requests, gateway, new_case, user_stats
from rawhttp import raw_request

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
      ("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Version", "13")]
APP_PROTO = "v1.token.websocket.example.com"


def proto(token):
    return "%s, X-Example-Authorization.%s" % (APP_PROTO, token)


def hdr(body, name):
    return [v for k, v in body["headers"] if k.lower() == name.lower()]


def identity_of(call):
    return [v for k, v in call["headers"] if k.lower() == "x-example-authorization"]


def demo_jwt(demo, user):
    """A token the demo user service issued to <user>, as a client holds it."""
    cookie, _ = demo.login(user)
    r = demo.get("/api/user/token?request_uri=/api/business/ws", [("Cookie", cookie)])
    assert r.status == 200, r
    return r.body.decode()


# ---- authenticated handshakes ------------------------------------------------
def test_subprotocol_token_is_the_credential(demo):
    token = demo_jwt(demo, "alice")
    before, calls = biz_requests(demo), user_stats(demo)["token_calls"]
    r = demo.get("/api/business/ws", WS + [("Sec-WebSocket-Protocol", proto(token))])
    assert r.status == 200, r          # the demo backend answers JSON, not 101
    body = r.json()
    assert biz_requests(demo) == before + 1
    assert user_stats(demo)["token_calls"] == calls + 1
    assert body["claims"]["sub"] == "alice"
    issued = body["x_example_authorization"]
    assert len(issued) == 1
    assert hdr(body, "Sec-WebSocket-Protocol") == [proto(issued[0])]


@pytest.mark.parametrize("offer", [
    proto("forged.token.value"),
    "X-Example-Authorization.forged",
    "x-example-authorization.forged, " + APP_PROTO,
    APP_PROTO,
])
def test_handshake_without_a_valid_credential_never_reaches_the_backend(demo, offer):
    before = biz_requests(demo)
    r = demo.get("/api/business/ws", WS + [("Sec-WebSocket-Protocol", offer)])
    assert r.status == 401, r
    assert biz_requests(demo) == before


def test_user_service_gets_the_subprotocol_token_exactly(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    offered = "client.tok-" + case
    r = fake.get("/api/business/ws", WS + [
        ("Cookie", "case=" + case),
        ("Sec-WebSocket-Protocol", "%s,X-Example-Authorization.%s , other" % (APP_PROTO, offered))])
    assert r.status == 200, r
    calls = fake.user.calls(case)
    assert len(calls) == 1 and identity_of(calls[0]) == [offered]
    body = r.json()
    assert body["x_example_authorization"] == ["tok-" + case]
    assert hdr(body, "Sec-WebSocket-Protocol") == [proto("tok-" + case)]


def test_handshake_without_subprotocol_is_exchanged_and_offered_the_token(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    r = fake.get("/api/business/ws", WS + [("Cookie", "case=" + case),
                                           ("X_Example_Authorization", "forged")])
    assert r.status == 200, r
    body = r.json()
    assert len(fake.user.calls(case)) == 1
    assert body["x_example_authorization"] == ["tok-" + case]
    assert hdr(body, "Sec-WebSocket-Protocol") == [proto("tok-" + case)]


def test_handshake_without_credentials_is_refused(fake):
    before = biz_requests(fake)
    r = fake.get("/api/business/ws", WS)
    assert r.status == 401, r
    assert biz_requests(fake) == before


def test_handshake_with_demo_session(demo):
    cookie, _ = demo.login("alice")
    r = demo.get("/api/business/ws", WS + [("Cookie", cookie)])
    assert r.status == 200, r
    body = r.json()
    token = body["x_example_authorization"][0]
    assert body["claims"]["sub"] == "alice"
    assert hdr(body, "Sec-WebSocket-Protocol") == [proto(token)]


@pytest.mark.parametrize("extra", [
    [("Sec-WebSocket-Protocol", proto("a") + ", X-Example-Authorization.b")],
    [("Sec-WebSocket-Protocol", proto("a")), ("Sec-WebSocket-Protocol", APP_PROTO)],
    [("Sec-WebSocket-Protocol", proto("a")), ("X-Example-Authorization", "b")],
], ids=["two-entries", "two-lines", "entry-and-header"])
def test_ambiguous_identity_offers_are_refused(fake, extra):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    before = biz_requests(fake)
    r = fake.get("/api/business/ws", WS + [("Cookie", "case=" + case)] + extra)
    assert r.status == 400, r
    assert biz_requests(fake) == before and fake.user.calls(case) == []


# ---- not a genuine handshake ---------------------------------------------------
NOT_GENUINE = {
    "http10": b"GET /api/business/ws HTTP/1.0\r\nHost: gw\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
    "no-connection": b"GET /api/business/ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
                     b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
    "connection-close": b"GET /api/business/ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
                        b"Connection: close\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
    "no-key": b"GET /api/business/ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
    "bad-key": b"GET /api/business/ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n",
    "version-8": b"GET /api/business/ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 8\r\n",
    "no-upgrade": b"GET /api/business/ws HTTP/1.1\r\nHost: gw\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
    "h2c-upgrade": b"GET /api/business/ws HTTP/1.1\r\nHost: gw\r\nUpgrade: h2c\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
    "plain-get": b"GET /api/business/ws HTTP/1.1\r\nHost: gw\r\n",
}


# HAProxy's own H1 parser answers 400 to a websocket upgrade without a valid
# Sec-WebSocket-Key; the others reach the rules.
PARSER_REFUSES = {"no-key", "bad-key"}


def refused_or(name, want):
    return (400,) if name in PARSER_REFUSES else (want,)


def not_genuine(name, extra):
    head = NOT_GENUINE[name]
    if b"%s" in head:
        head = head % KEY.encode()
    return head + extra + b"\r\n"


@pytest.mark.parametrize("name", sorted(NOT_GENUINE))
def test_not_a_handshake_gets_no_credential_from_the_subprotocol(fake, name):
    # Without a session: the identity entry is no credential, so 401.
    before = biz_requests(fake)
    r = raw_request(fake.port, not_genuine(
        name, b"Sec-WebSocket-Protocol: X-Example-Authorization.forged\r\n"))
    assert r is not None and r.status in refused_or(name, 401), r
    assert biz_requests(fake) == before


@pytest.mark.parametrize("name", sorted(NOT_GENUINE))
def test_not_a_handshake_carries_no_subprotocol_to_the_backend(fake, name):
    # With a session: allowed, but neither the user service nor the backend
    # sees the client's identity entry.
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    r = raw_request(fake.port, not_genuine(
        name, b"Cookie: case=%s\r\nSec-WebSocket-Protocol: %s\r\n" % (
            case.encode(), proto("client-held").encode())))
    assert r is not None and r.status in refused_or(name, 200), r
    if r.status == 400:
        assert fake.user.calls(case) == []
        return
    calls = fake.user.calls(case)
    assert len(calls) == 1 and identity_of(calls[0]) == []
    body = json.loads(r.body)
    assert body["x_example_authorization"] == ["tok-" + case]
    assert not any("client-held" in v for v in hdr(body, "Sec-WebSocket-Protocol")), body


def test_public_route_gets_no_client_subprotocol_outside_a_handshake(fake):
    marker = new_case()
    r = fake.get("/api/user/profile?m=" + marker,
                 [("Sec-WebSocket-Protocol", proto("client-held"))])
    assert r.status == 200, r
    seen = [q for q in fake.user.requests_to("/api/user/profile") if marker in q["raw_path"]]
    assert len(seen) == 1
    assert [v for k, v in seen[0]["headers"] if k.lower() == "sec-websocket-protocol"] == []


def test_websocket_upgrade_value_is_case_insensitive(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    headers = [("Upgrade", "WebSocket"), ("Connection", "keep-alive, Upgrade"),
               ("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Version", "13"),
               ("Cookie", "case=" + case),
               ("Sec-WebSocket-Protocol", proto("offered-" + case))]
    r = fake.get("/api/business/ws", headers)
    assert r.status == 200, r
    calls = fake.user.calls(case)
    assert len(calls) == 1 and identity_of(calls[0]) == ["offered-" + case]


# ---- the cache keys on the subprotocol credential --------------------------------
@pytest.fixture(scope="module")
def cached(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=("--cache", "on"), user=fake_user,
                 secret=demo_services["secret"]) as gw:
        yield gw


def test_cache_key_holds_the_subprotocol_token(cached):
    case = new_case()
    cached.user.program(case, status=200, body="tok-" + case,
                        headers=[("Cache-Control", "max-age=60")])

    def shake(token):
        return cached.get("/api/business/ws", WS + [("Cookie", "case=" + case),
                                                    ("Sec-WebSocket-Protocol", proto(token))])
    first, other, again = shake("A-" + case), shake("B-" + case), shake("A-" + case)
    assert [x.status for x in (first, other, again)] == [200, 200, 200]
    assert [x.header("X-Auth-Cache") for x in (first, other, again)] == ["miss", "miss", "hit"]
    assert [identity_of(c) for c in cached.user.calls(case)] == [["A-" + case], ["B-" + case]]


# ---- legacy passthrough -------------------------------------------------------
@pytest.fixture(scope="module")
def legacy(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], haproxy_env={"WS_LEGACY_PASSTHROUGH": "on"},
                 user=fake_user, secret=demo_services["secret"]) as gw:
        yield gw


def test_legacy_passes_a_genuine_handshake_without_exchange(legacy):
    offer = proto("backend-verifies-me")
    calls = legacy.user.total_calls()
    before = biz_requests(legacy)
    r = legacy.get("/api/business/ws", WS + [("Sec-WebSocket-Protocol", offer),
                                             ("X_Example_Authorization", "forged")])
    assert r.status == 200, r
    body = r.json()
    assert legacy.user.total_calls() == calls, "the exchange was called"
    assert biz_requests(legacy) == before + 1
    assert body["x_example_authorization"] == []
    assert hdr(body, "Sec-WebSocket-Protocol") == [offer]


@pytest.mark.parametrize("name", sorted(NOT_GENUINE))
def test_legacy_exchanges_anything_but_a_genuine_handshake(legacy, name):
    before = biz_requests(legacy)
    r = raw_request(legacy.port, not_genuine(
        name, b"Sec-WebSocket-Protocol: %s\r\n" % proto("forged").encode()))
    assert r is not None and r.status in refused_or(name, 401), r
    assert biz_requests(legacy) == before


def test_legacy_exchanges_a_handshake_without_identity_entry(legacy):
    before = biz_requests(legacy)
    r = legacy.get("/api/business/ws", WS + [("Sec-WebSocket-Protocol", APP_PROTO)])
    assert r.status == 401, r
    assert biz_requests(legacy) == before


def test_passthrough_is_off_by_default(fake):
    calls = fake.user.total_calls()
    r = fake.get("/api/business/ws", WS + [("Sec-WebSocket-Protocol", proto("backend-verifies-me"))])
    assert r.status == 401, r
    assert fake.user.total_calls() == calls + 1
