"""One address, one agent: starting spoa-auth on a SPOP or admin address that
another process holds fails at once, non-zero, with a message naming the
address. The workers' SO_REUSEPORT listeners used to let a second agent (a
stale process, `make run` twice) join the port silently and take half of
HAProxy's connections with a cache of its own."""
import socket
import subprocess

import pytest

from harness import HOST, free_ports, solo_agent
from spop import Client

START_TIMEOUT_S = 10


def run_second(agent_bin, tmp_path, spop_port, admin):
    """Runs an agent that must refuse to start; returns (status, output)."""
    r = subprocess.run([agent_bin, "--listen", "%s:%d" % (HOST, spop_port), "--workers", "2",
                        "--admin-listen", admin,
                        "--user-service-url", "http://%s:9/api/user/token" % HOST],
                       capture_output=True, text=True, timeout=START_TIMEOUT_S)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture
def first(agent_bin, fake_user, logdir):
    with solo_agent(logdir, agent_bin, fake_user.url, admin=True) as p:
        yield p, p.port


def test_second_agent_on_spop_port_refused(agent_bin, tmp_path, first):
    p, port = first
    status, out = run_second(agent_bin, tmp_path, port, "off")
    assert status != 0, out
    assert "127.0.0.1:%d" % port in out and "another spoa-auth" in out, out
    assert ("pid %d" % p.pid) in out, out
    # The first one still owns the port and serves it.
    for _ in range(4):
        with Client(port) as c:
            assert c.hello().type == 101


def test_second_agent_on_admin_port_refused(agent_bin, tmp_path, first):
    p, _ = first
    other, = free_ports(1)
    status, out = run_second(agent_bin, tmp_path, other, "%s:%d" % (HOST, p.admin_port))
    assert status != 0, out
    assert "admin-listen 127.0.0.1:%d" % p.admin_port in out, out
    assert "in use" in out, out


@pytest.mark.parametrize("reuseport", [False, True], ids=["plain", "reuseport"])
def test_address_held_by_another_program_refused(agent_bin, tmp_path, reuseport):
    """Anything listening there, SO_REUSEPORT or not (an older agent)."""
    s = socket.socket()
    try:
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((HOST, 0))
        s.listen(8)
        port = s.getsockname()[1]
        status, out = run_second(agent_bin, tmp_path, port, "off")
        assert status != 0, out
        assert "cannot listen on 127.0.0.1:%d" % port in out, out
    finally:
        s.close()
