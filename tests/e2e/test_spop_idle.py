"""SPOP connections past HELLO are time-bounded too, and max-connections
degrades gracefully.

- idle-timeout: a connection past HELLO with nothing in flight gets
  AGENT-DISCONNECT 2 (timeout) and is closed; one that keeps exchanging is not.
- frame-timeout: a frame whose bytes do not all arrive within it (slow writer,
  also one byte at a time) gets AGENT-DISCONNECT 2 and is closed.
- At max-connections the agent evicts a connection that serves nothing
  (pre-HELLO, stalled mid-frame, idle longest) for the new one: another local
  process holding idle and half-sent connections used to exhaust the slots
  (31 idle against 16) and HAProxy's protected requests got 503.
"""
import select
import socket
import threading
import time
import urllib.request

import pytest

from harness import HOST, gateway, solo_agent
from spop import AGENT_DISCONNECT, NOTIFY, Client, frame, notify_payload

CLOSE_BOUND_S = 6.0     # liveness bound for a close expected after ~1 s


def notify_bytes(sid, case="none"):
    return frame(NOTIFY, notify_payload([("exchange", [("uri", "/api/business/x"),
                                                       ("src", "127.0.0.1"),
                                                       ("cookie", "case=" + case)])]),
                 sid=sid, fid=1)


def disconnect_then_close(client, limit):
    """Frames until EOF within <limit>: returns the AGENT-DISCONNECT's KV
    (None if none came), or raises if the connection stays open."""
    deadline = time.monotonic() + limit
    disc = None
    while time.monotonic() < deadline:
        try:
            f = client.recv_frame(timeout=max(0.05, deadline - time.monotonic()))
        except socket.timeout:
            continue
        except OSError:         # reset
            return disc
        if f is None:
            return disc
        if f.type == AGENT_DISCONNECT:
            disc = f.kv()
    raise AssertionError("connection still open after %.0fs" % limit)


@pytest.fixture
def short_agent(agent_bin, fake_user, logdir):
    with solo_agent(logdir, agent_bin, fake_user.url,
                    ("--idle-timeout", "1s", "--frame-timeout", "1s")) as p:
        yield p.port


def status_of(kv):
    """(status-code, message) of an AGENT-DISCONNECT's KV, or None."""
    if not kv or "status-code" not in kv:
        return None
    msg = kv.get("message", (None, b""))[1]
    return kv["status-code"][1], msg.decode() if isinstance(msg, bytes) else msg


def test_idle_connection_disconnected(short_agent):
    with Client(short_agent) as c:
        c.hello()
        kv = disconnect_then_close(c, CLOSE_BOUND_S)
        assert status_of(kv) == (2, "idle timeout"), kv


def test_busy_connection_stays(short_agent, fake_user):
    fake_user.program("idle-busy", status=200, body="tok")
    with Client(short_agent) as c:
        c.hello()
        t_end = time.monotonic() + 2.5  # > 2 x idle-timeout
        sid = 1
        while time.monotonic() < t_end:
            c.send(notify_bytes(sid, "idle-busy"))
            f = c.recv_frame(timeout=5)
            assert f is not None and f.sid == sid, f
            sid += 2
            time.sleep(0.3)
        # Then idle: closed.
        assert status_of(disconnect_then_close(c, CLOSE_BOUND_S)) == (2, "idle timeout")


@pytest.mark.parametrize("drip", [False, True], ids=["half-frame", "one-byte-at-a-time"])
def test_slow_writer_disconnected(short_agent, drip):
    with Client(short_agent) as c:
        c.hello()
        data = notify_bytes(1)
        if drip:
            # One byte every 0.2 s: each read is progress, but the frame
            # cannot complete within frame-timeout (it would take
            # len(data) * 0.2 s); stop once the agent has answered or closed.
            assert len(data) * 0.2 > 2 * 1.0
            for b in data[:-1]:
                if select.select([c.sock], [], [], 0.2)[0]:
                    break
                try:
                    c.send(bytes([b]))
                except OSError:
                    break
            else:
                raise AssertionError("the whole frame minus a byte was accepted")
        else:
            c.send(data[:12])
        kv = disconnect_then_close(c, CLOSE_BOUND_S)
        assert status_of(kv) == (2, "frame timeout"), kv


# ---- exhaustion through a real HAProxy --------------------------------------
MAX_CONNS = 16          # one worker: 31 idle against 16, as reported
IDLE, HALF, SILENT = 31, 8, 4
REQUESTS, PARALLEL = 24, 4
EVICT_MIN_AGE_S = 1.0   # CONN_EVICT_MIN_AGE_S: younger connections are not evicted


@pytest.fixture
def small_gateway(demo_services, haproxy_bin, agent_bin, logdir):
    user_url = "http://%s:%d/api/user/token" % (HOST, demo_services["user_port"])
    with gateway(logdir, haproxy_bin, agent_bin, user_url, demo_services["user_port"],
                 demo_services["biz_port"],
                 agent_extra=("--max-connections", str(MAX_CONNS), "--workers", "1"),
                 admin=True, secret=demo_services["secret"]) as gw:
        yield gw


def hold(port, kind):
    """One attacking connection: idle past HELLO, half a frame sent past
    HELLO, or silent (no HELLO). None if the agent closed it at once."""
    try:
        if kind == "silent":
            return socket.create_connection((HOST, port), timeout=5)
        c = Client(port)
        c.hello()
        if kind == "half":
            c.send(notify_bytes(1)[:12])
        return c
    except (AssertionError, OSError):
        return None


def closed_counts(admin_port):
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, admin_port), timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("spoa_auth_spop_connections_closed_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = int(float(line.rsplit(" ", 1)[1]))
    return out


def test_held_connections_do_not_lock_haproxy_out(small_gateway):
    gw = small_gateway
    cookie, _ = gw.login("alice")
    assert gw.get("/api/business/hello", [("Cookie", cookie)]).status == 200
    held = []
    try:
        for kind, n in (("idle", IDLE), ("half", HALF), ("silent", SILENT)):
            held += [hold(gw.agent_port, kind) for _ in range(n)]
        # Once they are old enough to give up, a newcomer takes a slot
        # instead of being refused.
        time.sleep(EVICT_MIN_AGE_S + 0.3)
        late = hold(gw.agent_port, "idle")
        held.append(late)
        assert late is not None, "a new connection was refused although slots serve nothing"
        assert closed_counts(gw.admin_port).get("evicted", 0) >= 1

        statuses = []

        def client(k):
            for i in range(REQUESTS // PARALLEL):
                statuses.append(gw.get("/api/business/hello?c=%d&i=%d" % (k, i),
                                       [("Cookie", cookie)]).status)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(PARALLEL)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * REQUESTS, statuses
    finally:
        for h in held:
            if h is not None:
                h.close()
