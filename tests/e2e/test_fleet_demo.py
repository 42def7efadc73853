"""The fleet demo (make fleet-demo, scripts/fleet-demo) must not rot: run it
on free ports, run the curl commands it prints, in order, exactly as printed,
and check what each shows (a login on node A answered on node B without a new
user-service call; a logout on A refused on B); then SIGTERM stops it all."""
import json
import re
import subprocess
import time

import pytest

from harness import HOST, REPO, Proc, agent_has_redis, free_ports, wait_log, wait_port

BANNER_END = "Ctrl-C stops everything."
PORT_VARS = ("GW_A_PORT", "GW_B_PORT", "USER_PORT", "BIZ_PORT", "AGENT_A_PORT", "AGENT_B_PORT",
             "ADMIN_A_PORT", "ADMIN_B_PORT", "REDIS_PORT")
CMD_TIMEOUT_S = 10


def printed_commands(text):
    """The shell commands of the banner's "Try:" part, continuation lines
    joined, with the comment before each."""
    lines = text.split("Try:", 1)[1].split(BANNER_END, 1)[0].splitlines()
    cmds, comment, cur = [], None, None
    for line in lines:
        s = line.strip()
        if cur is not None:
            cur += " " + s.rstrip("\\").strip()
            if not s.endswith("\\"):
                cmds.append((comment, cur))
                cur = None
            continue
        if s.startswith("#"):
            comment = s
        elif s:
            if s.endswith("\\"):
                cur = s.rstrip("\\").strip()
            else:
                cmds.append((comment, s))
    return cmds


def token_calls(out):
    return json.loads(out.strip().splitlines()[-1])["token_calls"]


def test_fleet_demo(agent_bin, haproxy_bin, logdir, tmp_path):
    if not agent_has_redis(agent_bin):
        pytest.skip("this agent build has no redis-address option (the fleet level)")
    ports = dict(zip(PORT_VARS, free_ports(len(PORT_VARS))))
    env = {k: str(v) for k, v in ports.items()}
    env.update({"SPOA_AUTH_BIN": agent_bin, "HAPROXY_BIN": haproxy_bin,
                "FLEET_DEMO_DIR": str(tmp_path / "fleet-demo")})
    demo = Proc("fleet-demo", ["sh", REPO / "scripts" / "fleet-demo"], logdir, env=env)
    try:
        wait_log(demo, BANNER_END, timeout=30)
        for var in ("GW_A_PORT", "GW_B_PORT"):
            wait_port(ports[var], demo)
        cmds = printed_commands(demo.tail(1 << 20))
        assert len(cmds) == 10, "the demo's commands changed; update this test: %r" % cmds
        # Wait until both gateways talk to their agent and Redis.
        deadline = time.monotonic() + 15
        while True:
            m = [subprocess.run(["curl", "-s", "http://%s:%d/metrics" % (HOST, ports[v])],
                                stdout=subprocess.PIPE, timeout=CMD_TIMEOUT_S).stdout.decode()
                 for v in ("ADMIN_A_PORT", "ADMIN_B_PORT")]
            if all(re.search(r"^spoa_auth_redis_stream_up 1\b", t, re.M) for t in m):
                break
            assert time.monotonic() < deadline, "the agents never joined Redis: %r" % m
            time.sleep(0.1)
        outs = []
        for comment, cmd in cmds:
            r = subprocess.run(["sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=CMD_TIMEOUT_S, cwd=str(REPO))
            outs.append(r.stdout.decode("utf-8", "replace"))
        show = "\n".join("%s\n$ %s\n%s" % (c, cmd, o) for (c, cmd), o in zip(cmds, outs))
        login, a_hello, stats1, b_hello, stats2, b_again, logout, b_after, metrics, scan = outs
        assert re.search(r"^HTTP/1.1 200", login, re.M), show
        assert re.search(r"^HTTP/1.1 200", a_hello, re.M), show
        assert re.search(r"(?im)^x-auth-cache: miss", a_hello), show
        assert re.search(r"^HTTP/1.1 200", b_hello, re.M), show
        assert token_calls(stats2) == token_calls(stats1), "node B called the user service\n" + show
        assert re.search(r"(?im)^x-auth-cache: hit", b_again), show
        assert re.search(r"^HTTP/1.1 200", logout, re.M), show
        assert re.search(r"^HTTP/1.1 401", b_after, re.M), show
        assert "spoa_auth_redis_revocations_total" in metrics, show
        jar = (tmp_path / "fleet-demo" / "cookies.txt").read_text()
        session = [ln.split("\t")[-1] for ln in jar.splitlines()
                   if ln.strip() and "\tsession\t" in ln]
        assert session and session[0].strip(), jar
        assert scan.strip(), "Redis holds nothing\n" + show
        assert session[0].strip() not in scan, show
    finally:
        problem = demo.stop(timeout=15)
    assert problem is None, "fleet-demo: %s\n%s" % (problem, demo.describe())
    # Everything it started is gone.
    for port in ports.values():
        import socket
        s = socket.socket()
        try:
            assert s.connect_ex((HOST, port)) != 0, "port %d still open after the demo" % port
        finally:
            s.close()
