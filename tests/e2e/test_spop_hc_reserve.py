"""At max-connections with every connection busy, health checks still pass.

The chaos suite's max-connections scenario: every slot carries NOTIFYs
waiting for a slow user service, so eviction finds nothing to close. The
agent used to refuse HAProxy's health-check connection too (spop-check, a
HELLO with healthcheck=true): HAProxy marked a working agent DOWN, and with
its connections busy it could not come back (HAProxy 3.4: most requests got
503). A few reserve slots per worker beyond max-connections now complete a
HELLO only:

- a health-check HELLO gets AGENT-HELLO (then the close, as always);
- any other HELLO gets AGENT-DISCONNECT 13 "max-connections reached";
- a reserve slot must HELLO within ~1 s, so silent connections cannot hold
  the reserve; past the reserve, connections are refused (closed at once).
"""
import contextlib
import socket
import time
import urllib.request

import pytest

from harness import HOST, solo_agent
from spop import AGENT_DISCONNECT, AGENT_HELLO, HAPROXY_HELLO, NOTIFY, Client, frame, \
    hello_payload, notify_payload

MAX_CONNS = 2
RESERVE = 4             # WORKER_HC_RESERVE (one worker)
RESERVE_HELLO_S = 1.0   # CONN_RESERVE_HELLO_TIMEOUT_S
HANG_S = 6.0            # the user service's delay: NOTIFYs stay in flight


def closed_counts(admin_port):
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, admin_port), timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("spoa_auth_spop_connections_closed_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("spoa_auth_spop_connections_refused_total "):
            out["refused"] = int(float(line.rsplit(" ", 1)[1]))
    return out


@pytest.fixture
def full_agent(agent_bin, fake_user, logdir):
    """An agent whose MAX_CONNS slots all carry a NOTIFY the user service
    does not answer for HANG_S."""
    fake_user.program("hang", status=200, body=b"tok", delay=HANG_S)
    with solo_agent(logdir, agent_bin, fake_user.url,
                    ("--max-connections", str(MAX_CONNS), "--workers", "1",
                     "--timeout", "%ds" % (HANG_S + 4), "--upstream-retries", "0"),
                    admin=True) as p:
        with busy_slots(p.port, fake_user) as port:
            yield port, p


@contextlib.contextmanager
def busy_slots(port, fake_user):
    """Fills the agent's MAX_CONNS slots (see full_agent); yields <port>."""
    busy = []
    # The fake user service is the session's: earlier tests' calls count too.
    before = len(fake_user.calls("hang"))
    try:
        for sid in range(1, MAX_CONNS + 1):
            c = Client(port)
            busy.append(c)
            c.hello()
            c.send(frame(NOTIFY, notify_payload([("exchange", [
                ("uri", "/api/business/x"), ("src", "127.0.0.1"),
                ("cookie", "case=hang")])]), sid=sid, fid=1))
        # The NOTIFYs reached the user service: the slots are working.
        deadline = time.monotonic() + 5
        while len(fake_user.calls("hang")) < before + MAX_CONNS:
            assert time.monotonic() < deadline, "NOTIFYs never reached the user service"
            time.sleep(0.02)
        # Past the eviction ages (0.1 s new, 1 s used): only work keeps them.
        time.sleep(1.2)
        yield port
    finally:
        for c in busy:
            c.close()


def first_frame(c, timeout=3.0):
    try:
        return c.recv_frame(timeout=timeout)
    except OSError:         # reset: refused
        return None


def test_health_check_answered_when_full(full_agent):
    port, agent = full_agent
    for _ in range(3):      # repeated checks, as HAProxy's inter does
        with Client(port) as hc:
            hc.send(frame(HAPROXY_HELLO, hello_payload(healthcheck=True)))
            f = first_frame(hc)
            assert f is not None and f.type == AGENT_HELLO, \
                "health check refused at max-connections: %r" % (f,)
            closed, _ = hc.wait_closed(3)
            assert closed


def test_normal_connection_refused_cleanly_when_full(full_agent):
    port, agent = full_agent
    with Client(port) as c:
        c.send(frame(HAPROXY_HELLO, hello_payload()))
        f = first_frame(c)
        assert f is not None and f.type == AGENT_DISCONNECT, \
            "expected AGENT-DISCONNECT on a full agent, got %r" % (f,)
        kv = f.kv()
        msg = kv["message"][1]
        assert (kv["status-code"][1], msg.decode() if isinstance(msg, bytes) else msg) == \
            (13, "max-connections reached"), kv
        closed, _ = c.wait_closed(3)
        assert closed
    assert closed_counts(agent.admin_port).get("reserve", 0) >= 1


def test_silent_flood_cannot_hold_the_reserve(full_agent):
    port, agent = full_agent
    silent = [socket.create_connection((HOST, port), timeout=5) for _ in range(RESERVE)]
    try:
        # The reserve is taken: the next one is refused (closed unanswered).
        with Client(port) as extra:
            try:
                extra.send(frame(HAPROXY_HELLO, hello_payload(healthcheck=True)))
            except OSError:
                pass        # already closed
            assert first_frame(extra) is None
        assert closed_counts(agent.admin_port).get("refused", 0) >= 1
        # The silent ones lose their reserve slots within the short HELLO
        # timeout; health checks pass again.
        deadline = time.monotonic() + RESERVE_HELLO_S + 3
        for s in silent:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            assert s.recv(64) == b"", "a silent reserve connection kept its slot"
        with Client(port) as hc:
            hc.send(frame(HAPROXY_HELLO, hello_payload(healthcheck=True)))
            f = first_frame(hc)
            assert f is not None and f.type == AGENT_HELLO, f
    finally:
        for s in silent:
            s.close()
