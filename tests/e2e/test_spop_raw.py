"""The agent's SPOP side, driven by a raw client playing HAProxy: handshake,
health check, pipelining, claims, and malformed frames (which must cost only
their own connection)."""
import ipaddress
import socket
import struct
import threading
import time

import pytest

import spop
from fake_user_service import GARBAGE
from harness import HOST, gateway, new_case
from pathlib import Path

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
VAR_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._")


def vector(name):
    return bytes.fromhex((VECTORS / name).read_text().strip())


def exchange(uri="/api/business/x", cookie=None, authorization=None, ident=None, xff=None,
             src="127.0.0.1"):
    return spop.notify_payload([("exchange", [
        ("uri", uri), ("src", ipaddress.ip_address(src)), ("xff", xff), ("cookie", cookie),
        ("authorization", authorization), ("x-example-authorization", ident)])])


def check_var_names(ack):
    for act, scope, name, _ in ack.actions():
        assert set(name) <= VAR_NAME_OK, name
        assert len("txn.auth." + name) <= 63, name


def expect_disconnect_then_close(c, statuses, what):
    closed, frames = c.wait_closed(timeout=3.0)
    assert closed, "%s: the agent kept the connection open" % what
    discs = [f for f in frames if f.type == spop.AGENT_DISCONNECT]
    assert discs, "%s: closed without AGENT-DISCONNECT (frames: %r)" % (what, frames)
    status = discs[0].kv().get("status-code", (None, None))[1]
    assert status in statuses, "%s: DISCONNECT status %r, want %r" % (what, status, statuses)
    msg = discs[0].kv().get("message")
    assert msg is None or len(msg[1]) <= 255
    assert discs[0].flags == spop.FIN and (discs[0].sid, discs[0].fid) == (0, 0)


# ---- handshake ------------------------------------------------------------
@pytest.mark.parametrize("name", ["haproxy-2.6-hello-healthcheck.hex", "haproxy-3.4-hello-healthcheck.hex"])
def test_healthcheck_hello_is_answered_then_closed(demo, name):
    with spop.Client(demo.agent_port) as c:
        c.send(vector(name))
        h = c.recv_frame()
        assert h is not None and h.type == spop.AGENT_HELLO, h
        assert h.flags == spop.FIN and (h.sid, h.fid) == (0, 0)
        kv = h.kv()
        assert kv["version"][1].strip() == b"2.0"
        assert 256 <= kv["max-frame-size"][1] <= 16380
        assert "capabilities" in kv and kv["capabilities"][0] == spop.T_STR
        closed, extra = c.wait_closed(timeout=3.0)
        assert closed and not [f for f in extra if f.type != spop.AGENT_DISCONNECT]


@pytest.mark.parametrize("name", ["haproxy-2.6-hello.hex", "haproxy-3.4-hello.hex"])
def test_hello_announces_pipelining_only(demo, name):
    with spop.Client(demo.agent_port) as c:
        c.send(vector(name))
        h = c.recv_frame()
        assert h.type == spop.AGENT_HELLO and h.flags == spop.FIN
        kv = h.kv()
        caps = [x.strip() for x in kv["capabilities"][1].decode().split(",")]
        assert "pipelining" in caps
        assert "async" not in caps and "fragmentation" not in caps
        assert kv["max-frame-size"][1] <= 16380
        # the connection stays open for NOTIFYs
        c.send(spop.frame(spop.NOTIFY, exchange(), sid=1, fid=1))
        ack = c.recv_frame()
        assert ack.type == spop.ACK and (ack.sid, ack.fid) == (1, 1)


def test_hello_with_smaller_frame_size_is_honoured(demo):
    with spop.Client(demo.agent_port) as c:
        h = c.hello(max_frame_size=1024)
        assert 256 <= h.kv()["max-frame-size"][1] <= 1024


def test_haproxy_disconnect_gets_agent_disconnect_0(demo):
    with spop.Client(demo.agent_port) as c:
        c.hello()
        c.send(vector("haproxy-2.6-disconnect-idle.hex"))
        f = c.recv_frame()
        assert f is not None and f.type == spop.AGENT_DISCONNECT, f
        assert f.kv()["status-code"][1] == 0
        assert c.wait_closed()[0]


# ---- NOTIFY / ACK ---------------------------------------------------------
def test_pipelined_notifies_get_acks_with_the_same_ids(demo):
    cookie, _ = demo.login("alice")
    ids = [(0, 1), (1, 1), (2, 1), (3, 1), (5, 2), (7, 1), (239, 1), (240, 1), (2288, 3), (70001, 1),
           (2**32 + 5, 1), (11, 9)]
    expected = {}
    data = b""
    for i, (sid, fid) in enumerate(ids):
        anonymous = i % 3 == 2
        data += spop.frame(spop.NOTIFY, exchange("/api/business/p%d?i=%d" % (i, i),
                                                 None if anonymous else cookie), sid, fid)
        expected[(sid, fid)] = 401 if anonymous else 200
    with spop.Client(demo.agent_port) as c:
        c.hello()
        c.send(data)                     # all at once, in one write
        got = {}
        while len(got) < len(ids):
            ack = c.recv_frame(timeout=5.0)
            assert ack is not None, "EOF after %d ACKs" % len(got)
            assert ack.type == spop.ACK and ack.flags == spop.FIN, ack
            key = (ack.sid, ack.fid)
            assert key in expected and key not in got, key
            assert ack.actions(), "ACK without action"
            check_var_names(ack)
            got[key] = ack.vars()
    for key, status in expected.items():
        v = got[key]
        assert v["status"] == status, (key, v)
        if status == 200:
            assert v["outcome"] == b"allow" and v["token"].count(b".") == 2
        else:
            assert v["outcome"] == b"deny"
            assert v["www_authenticate"] == b'Bearer realm="example"'
            assert b"unauthorized" in v["body"] and v["content_type"] == b"application/json"


def test_notify_without_message_gets_an_ack_with_an_action(demo):
    with spop.Client(demo.agent_port) as c:
        c.hello()
        c.send(spop.frame(spop.NOTIFY, b"", sid=9, fid=1))
        ack = c.recv_frame()
        assert ack.type == spop.ACK and (ack.sid, ack.fid) == (9, 1)
        assert len(ack.actions()) >= 1


def test_msgpack_claims_become_typed_variables(fake):
    case = new_case()
    long_key = "k" * 60
    fake.user.program(case, status=200, msgpack={
        "sub": "alice", "name": "Alice L.", "uid": 42, "neg": -7, "big": 2**40, "admin": True,
        "guest": False, "blob": b"\x00\xffbin", "bad-key": "x", long_key: 1})
    with spop.Client(fake.agent_port) as c:
        c.hello()
        c.send(spop.frame(spop.NOTIFY, exchange(cookie="case=" + case), sid=1, fid=1))
        ack = c.recv_frame()
    assert ack.type == spop.ACK
    check_var_names(ack)
    typed = {name: tv for act, scope, name, tv in ack.actions() if act == spop.SET_VAR}
    assert typed["status"][1] == 200 and typed["outcome"][1] == b"allow"
    assert typed["claim.sub"] == (spop.T_STR, b"alice")
    assert typed["claim.name"] == (spop.T_STR, b"Alice L.")
    assert typed["claim.uid"][0] in (spop.T_INT32, spop.T_UINT32, spop.T_INT64, spop.T_UINT64)
    assert typed["claim.uid"][1] == 42
    assert typed["claim.neg"][1] == -7 and typed["claim.neg"][0] in (spop.T_INT32, spop.T_INT64)
    assert typed["claim.big"][1] == 2**40
    assert typed["claim.admin"] == (spop.T_BOOL, True)
    assert typed["claim.guest"] == (spop.T_BOOL, False)
    assert typed["claim.blob"] == (spop.T_BIN, b"\x00\xffbin")
    assert "claim.bad-key" not in typed and "claim." + long_key not in typed


def ask(port, case):
    with spop.Client(port) as c:
        c.hello()
        c.send(spop.frame(spop.NOTIFY, exchange(cookie="case=" + case), sid=1, fid=1))
        ack = c.recv_frame(timeout=5.0)
    assert ack is not None and ack.type == spop.ACK and (ack.sid, ack.fid) == (1, 1), ack
    return ack.vars()


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_answer_is_status_0_outcome_error(fake, name):
    """Contract: no usable answer -> status 0, outcome error (the gateway
    would also refuse an empty identity, but the agent must not call it an
    allow)."""
    case = new_case()
    fake.user.program(case, garbage=GARBAGE[name])
    v = ask(fake.agent_port, case)
    assert (v.get("status"), v.get("outcome")) == (0, b"error"), v
    assert "token" not in v


@pytest.mark.parametrize("how", ["close", "slow"])
def test_no_answer_is_status_0_outcome_error(fake, how):
    case = new_case()
    fake.user.program(case, **({"close": True} if how == "close" else {"delay": 2.0}))
    t0 = time.monotonic()
    v = ask(fake.agent_port, case)
    assert (v.get("status"), v.get("outcome")) == (0, b"error"), v
    assert time.monotonic() - t0 < 1.8      # --timeout 500ms


@pytest.mark.parametrize("src,xff,expected", [
    ("127.0.0.1", None, "127.0.0.1"),
    ("192.0.2.7", "10.0.0.1", "10.0.0.1, 192.0.2.7"),
    ("::1", "10.0.0.1", "10.0.0.1, ::1"),
    ("2001:db8::42", None, "2001:db8::42"),
])
def test_forwarded_for_from_src_and_xff(fake, src, xff, expected):
    case = new_case()
    fake.user.program(case, status=200, body="tok")
    with spop.Client(fake.agent_port) as c:
        c.hello()
        c.send(spop.frame(spop.NOTIFY, exchange(cookie="case=" + case, src=src, xff=xff), 3, 1))
        assert c.recv_frame().vars()["status"] == 200
    call = fake.user.calls(case)[0]
    got = [v for k, v in call["headers"] if k.lower() == "x-forwarded-for"]
    assert [[p.strip() for p in g.split(",")] for g in got] == [[p.strip() for p in expected.split(",")]]


# ---- malformed frames (own agent: a crash here must not hide other results)
@pytest.fixture(scope="module")
def spop_stack(demo_services, haproxy_bin, agent_bin, logdir):
    with gateway(logdir, haproxy_bin, agent_bin,
                 "http://%s:%d/api/user/token" % (HOST, demo_services["user_port"]),
                 demo_services["user_port"], demo_services["biz_port"],
                 secret=demo_services["secret"]) as gw:
        gw.cookie = gw.login("alice")[0]
        yield gw


def gateway_works(gw):
    r = gw.get("/api/business/still-ok", [("Cookie", gw.cookie)])
    assert r.status == 200, r
    assert r.json()["claims"]["sub"] == "alice"


def hdr(ftype, length, flags=spop.FIN):
    """A frame header announcing <length> bytes (TYPE, FLAGS, SID 0, FID 0)."""
    return struct.pack(">IBI", length, ftype, flags) + b"\x00\x00"


def test_frame_longer_than_negotiated_is_disconnect_3(spop_stack):
    with spop.Client(spop_stack.agent_port) as c:
        max_size = c.hello().kv()["max-frame-size"][1]
        c.send(hdr(spop.NOTIFY, max_size + 1) + b"\x01\x01" + b"x" * 64)
        expect_disconnect_then_close(c, {3}, "LEN = max+1")
    with spop.Client(spop_stack.agent_port) as c:
        c.hello()
        c.send(struct.pack(">I", 0x7FFFFFF0) + b"\x03\x00\x00\x00\x01\x01\x01")
        expect_disconnect_then_close(c, {3}, "LEN = 2^31")
    gateway_works(spop_stack)


def test_fin_clear_is_disconnect_10(spop_stack):
    with spop.Client(spop_stack.agent_port) as c:
        c.hello()
        c.send(spop.frame(spop.NOTIFY, exchange(), sid=1, fid=1, flags=0))
        expect_disconnect_then_close(c, {10}, "NOTIFY without FIN")
    gateway_works(spop_stack)


MALFORMED = {
    "string-past-end": spop.enc_str("exchange") + b"\x01" + b"\x03uri" + b"\x08\x50/api",
    "nb-args-past-end": spop.enc_str("exchange") + b"\x05" + b"\x03uri\x08\x01/",
    "reserved-type": spop.enc_str("exchange") + b"\x01" + b"\x03uri\x0c\x01/",
    "varint-too-long": spop.enc_str("exchange") + b"\x01" + b"\x03uri\x04" + b"\xff" * 11,
    "message-name-past-end": b"\x40exch",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_notify_is_disconnect_4(spop_stack, name):
    with spop.Client(spop_stack.agent_port) as c:
        c.hello()
        c.send(spop.frame(spop.NOTIFY, MALFORMED[name], sid=1, fid=1))
        expect_disconnect_then_close(c, {4}, name)
    gateway_works(spop_stack)


BEFORE_HELLO = {
    "http-request": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", {3, 4}),
    "tls-client-hello": (bytes.fromhex("160301020001000200fc0303") + b"\x00" * 40, {3, 4}),
    "len-below-7": (struct.pack(">I", 2) + b"\x01\x00", {3, 4}),
    "notify-before-hello": (spop.frame(spop.NOTIFY, exchange(), 1, 1), {4, 5, 6, 7}),
}


@pytest.mark.parametrize("name", sorted(BEFORE_HELLO))
def test_garbage_before_hello_is_refused(spop_stack, name):
    data, statuses = BEFORE_HELLO[name]
    with spop.Client(spop_stack.agent_port) as c:
        c.send(data)
        expect_disconnect_then_close(c, statuses, name)
    gateway_works(spop_stack)


def test_partial_frames_do_not_block_other_connections(spop_stack):
    """A peer that sends half a frame and stalls (or a half HELLO) must not
    delay anyone else."""
    stalled = []
    try:
        for _ in range(4):
            s = socket.create_connection((HOST, spop_stack.agent_port), timeout=5)
            s.sendall(spop.frame(spop.HAPROXY_HELLO, spop.hello_payload())[:9])
            stalled.append(s)
        c = spop.Client(spop_stack.agent_port)
        stalled.append(c.sock)
        c.hello()
        c.send(spop.frame(spop.NOTIFY, exchange(), 1, 1)[:10])
        t0 = time.monotonic()
        for _ in range(5):
            gateway_works(spop_stack)
        assert time.monotonic() - t0 < 5.0
    finally:
        for s in stalled:
            s.close()


def test_bad_connections_while_traffic_flows(spop_stack):
    errors = []
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                gateway_works(spop_stack)
            except Exception as e:      # noqa: BLE001 - reported below
                errors.append(repr(e))
                return

    t = threading.Thread(target=traffic)
    t.start()
    try:
        for i in range(10):
            with spop.Client(spop_stack.agent_port) as c:
                c.hello()
                bad = [hdr(spop.NOTIFY, 1 << 20),
                       spop.frame(spop.NOTIFY, exchange(), 1, 1, flags=0),
                       spop.frame(spop.NOTIFY, b"\x40x", 1, 1)][i % 3]
                c.send(bad)
                c.wait_closed(timeout=3.0)
    finally:
        stop.set()
        t.join(10)
    assert not errors, errors
    gateway_works(spop_stack)
