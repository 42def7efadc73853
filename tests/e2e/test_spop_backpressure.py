"""Write back-pressure from the wire: an SPOP peer that floods NOTIFYs and
never reads its ACKs must not make the agent buffer without bound.

Cache hits are answered at once (no exchange kept, nothing counted in flight),
and a hit's ACK can be far bigger than its NOTIFY (a 60-byte NOTIFY, an 8 KB
token). The agent stops reading when its queue of unsent bytes passes
8 x max-frame-size; that limit must hold per frame, not only between two
read events, or one read event (16 reads of up to a frame each) turns into
hundreds of megabytes queued."""
import signal
import socket
import time

import pytest

from spop import AGENT_HELLO, HAPROXY_HELLO, NOTIFY, T_IPV4, Client, Typed, frame, \
    hello_payload, notify_payload
from harness import new_case, solo_agent

CONNS = 8
BODY = 8000                      # fits max-response-size 8192: an 8 KB ACK
FLOOD = 96 * 1024                # NOTIFY bytes sent per connection, unread answers


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def small_rcvbuf_client(port):
    """A Client whose receive buffer is tiny, so the kernel holds few ACKs."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5.0)
    s.connect(("127.0.0.1", port))
    c = Client.__new__(Client)
    c.sock, c.buf = s, b""
    c.send(frame(HAPROXY_HELLO, hello_payload()))
    f = c.recv_frame()
    assert f is not None and f.type == AGENT_HELLO, f
    return c


@pytest.fixture
def cache_agent(fake_user, agent_bin, logdir):
    with solo_agent(logdir, agent_bin, fake_user.url, extra=["--cache", "on"]) as p:
        yield p.port, p


def test_unread_hit_acks_stay_bounded(cache_agent, fake_user):
    port, agent = cache_agent
    case = new_case()
    fake_user.program(case, status=200, body="t" * BODY)
    msg = notify_payload([("exchange", [("uri", "/api/business/bp"),
                                        ("src", Typed(T_IPV4, "127.0.0.1")),
                                        ("cookie", "case=%s" % case)])])
    # Prime the cache (one call), and check the answer is the big one.
    with Client(port) as c:
        c.hello()
        c.send(frame(NOTIFY, msg, sid=1, fid=1))
        v = c.recv_frame().vars()
        assert v["status"] == 200 and len(v["token"]) == BODY, v.keys()
    flood = b"".join(frame(NOTIFY, msg, sid=2, fid=i + 1) for i in range(FLOOD // 80))
    cs = [small_rcvbuf_client(port) for _ in range(CONNS)]
    try:
        before = rss_kib(agent.pid)
        # Stopped, the agent finds each flood whole in its socket on resume:
        # what one read event does is what is measured.
        agent.p.send_signal(signal.SIGSTOP)
        try:
            for c in cs:
                c.sock.setblocking(False)
                sent = 0
                while sent < len(flood):
                    try:
                        sent += c.sock.send(flood[sent:])
                    except BlockingIOError:
                        break
        finally:
            agent.p.send_signal(signal.SIGCONT)
        time.sleep(1.5)
        grown = rss_kib(agent.pid) - before
        assert agent.alive(), agent.describe()
    finally:
        for c in cs:
            c.close()
    # Bound: 8 x 16380 queued plus one ACK per connection, plus allocator slack.
    assert grown < 16 * 1024, "agent RSS grew by %d KiB for %d unread connections" % (
        grown, CONNS)
    assert len(fake_user.calls(case)) == 1
