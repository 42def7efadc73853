"""A connection that never completes its HAPROXY-HELLO (sends nothing, or
half a frame) is closed by the agent after CONN_HELLO_TIMEOUT_S (5 s), so
that such peers cannot hold max-connections slots for ever; a connection
that completed its HELLO may stay idle (HAProxy pools them)."""
import socket
import time

import pytest

from spop import HAPROXY_HELLO, Client, frame, hello_payload
from harness import solo_agent

HELLO_TIMEOUT_S = 5.0


@pytest.fixture
def agent_port(fake_user, agent_bin, logdir):
    with solo_agent(logdir, agent_bin, fake_user.url) as p:
        yield p.port


def closed_after(sock, limit):
    """Seconds until the peer closes <sock> (None if still open at <limit>)."""
    t0 = time.monotonic()
    sock.settimeout(limit)
    try:
        while True:
            if not sock.recv(4096):
                return time.monotonic() - t0
    except ConnectionResetError:
        return time.monotonic() - t0
    except socket.timeout:
        return None


def test_silent_and_half_hello_connections_are_closed(agent_port):
    silent = socket.create_connection(("127.0.0.1", agent_port), timeout=5)
    half = socket.create_connection(("127.0.0.1", agent_port), timeout=5)
    half.sendall(frame(HAPROXY_HELLO, hello_payload())[:9])
    with Client(agent_port) as idle:
        idle.hello()
        try:
            waited = closed_after(silent, HELLO_TIMEOUT_S + 3)
            assert waited is not None, "silent connection still open"
            assert waited > HELLO_TIMEOUT_S - 1.5, waited
            assert closed_after(half, 1.0) is not None, "half-HELLO connection still open"
            # Past the HELLO the timer is gone: an idle connection stays.
            assert closed_after(idle.sock, 0.5) is None
        finally:
            silent.close()
            half.close()
