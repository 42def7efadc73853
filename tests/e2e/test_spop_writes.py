"""ACK write batching: the ACKs a connection has ready in one loop turn leave
in one write system call (counted by spoa_auth_spop_writes_total next to
spoa_auth_spop_frames_sent_total), each frame whole and in order."""
import re

import pytest

import spop
from harness import free_ports, http, solo_agent

# NOTIFYs sent in one sendall(): small frames, so they arrive in one read.
BURST = 32


def counter(admin_port, name):
    body = http(admin_port, "GET", "/metrics").body.decode()
    m = re.search(r"^%s (\d+)$" % re.escape(name), body, re.M)
    assert m, "%s missing from /metrics" % name
    return int(m.group(1))


@pytest.fixture
def agent(agent_bin, logdir):
    # The user service is never called: the NOTIFYs carry no exchange message.
    dead, = free_ports(1)
    with solo_agent(logdir, agent_bin, "http://127.0.0.1:%d/api/user/token" % dead,
                    extra=["--workers", "1"], admin=True, name="agent-writes") as p:
        yield p.port, p


def test_acks_ready_in_one_turn_leave_in_one_write(agent):
    port, p = agent
    with spop.Client(port) as c:
        c.hello()
        w0 = counter(p.admin_port, "spoa_auth_spop_writes_total")
        f0 = counter(p.admin_port, "spoa_auth_spop_frames_sent_total")
        burst = b"".join(spop.frame(spop.NOTIFY, spop.notify_payload([("other", [])]),
                                    sid=1, fid=i + 1) for i in range(BURST))
        c.send(burst)
        acks = [c.recv_frame() for _ in range(BURST)]
        assert all(a is not None and a.type == spop.ACK for a in acks), acks
        assert [(a.sid, a.fid) for a in acks] == [(1, i + 1) for i in range(BURST)]
        frames = counter(p.admin_port, "spoa_auth_spop_frames_sent_total") - f0
        writes = counter(p.admin_port, "spoa_auth_spop_writes_total") - w0
    assert frames == BURST
    # One write per loop turn: the burst may arrive in a few reads, never in
    # one read per frame; one write per ACK is what batching removes.
    assert writes <= 4, "%d writes for %d ACKs ready together" % (writes, BURST)
