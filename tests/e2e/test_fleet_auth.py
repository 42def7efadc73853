"""The fleet level's link to Redis: a password (requirepass), an ACL user
limited to the agent's key prefix, a wrong password (a clear error at start
naming the key, within a bounded wait, not a hang), and Redis unreachable at
start (the agent starts as a single node and joins the fleet once Redis is
there, without a restart)."""
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness import (HOST, fleet_agent_args, free_ports, metric, new_case, RedisServer,
                     wait_metric)

START_DEADLINE_S = 15.0         # a wrong password must end the start within this
CONNECT_DEADLINE_S = 10.0
PATH = "/api/business/fleet-auth"
PREFIX = "fleettest:"
# The commands docs/fleet.md lists for the agent's own ACL user, and nothing else.
ACL_COMMANDS = ("get set del sadd smembers exists pttl pexpire incr eval xadd xread xinfo "
                "ping auth")


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def nodes_at(env, names, address, extra=()):
    """One fleet node per name (env["bringup"]: stopped at the test's end,
    strictly, before what the test registered earlier, e.g. its Redis)."""
    return [env["bringup"].fleet_node(name, env["user"].url, env["user"].port,
                                      env["biz_port"], address, extra=extra) for name in names]


def with_redis(env, redis):
    """<redis>, stopped at the test's end once the nodes started after it are."""
    env["bringup"].callback(redis.stop)
    return redis


def two_nodes(env, redis, extra):
    nodes = nodes_at(env, ("pa", "pb"), redis.address, extra)
    for n in nodes:
        assert wait_metric(n.admin_port, "spoa_auth_redis_up", 1,
                           CONNECT_DEADLINE_S) == 1, n.agent.describe()
    return nodes


def shared(nodes, user):
    a, b = nodes
    case = new_case()
    user.program(case, status=200, body="tok-" + case)
    assert a.get(PATH, cookie(case)).status == 200
    assert b.get(PATH, cookie(case)).status == 200
    assert len(user.calls(case)) == 1, "node B asked the user service"
    return case


@pytest.fixture
def env(fleet_agent, haproxy_bin, fake_user, demo_services, logdir, bringup):
    return {"agent_bin": fleet_agent, "haproxy_bin": haproxy_bin, "user": fake_user,
            "biz_port": demo_services["biz_port"], "logdir": logdir, "bringup": bringup}


def test_password(env):
    pw = "rp-" + secrets.token_hex(12)
    redis = with_redis(env, RedisServer(env["logdir"], password=pw, name="redis-pass").start())
    nodes = two_nodes(env, redis, ["--redis-password", pw])
    shared(nodes, env["user"])
    for n in nodes:
        assert pw not in n.agent.tail(1 << 22), "the Redis password is in the agent's log"


def test_acl_user_limited_to_the_prefix(env):
    """The agent's own ACL user may touch only keys under its prefix and run
    only the commands docs/fleet.md lists: the fleet works (sharing and a
    logout), no command failed, and every key it wrote is under the prefix."""
    pw = "acl-" + secrets.token_hex(12)
    redis = RedisServer(env["logdir"], password="admin-" + secrets.token_hex(8),
                        users={"spoa": (pw, "resetkeys ~%s* -@all %s" % (
                            PREFIX, " ".join("+" + c for c in ACL_COMMANDS.split())))},
                        name="redis-acl").start()
    with_redis(env, redis)
    nodes = two_nodes(env, redis, ["--redis-user", "spoa", "--redis-password", pw,
                                   "--redis-prefix", PREFIX])
    case = shared(nodes, env["user"])
    env["user"].program(case, status=401, body='{"error":"logged out"}',
                        content_type="application/json")
    a, b = nodes
    assert a.request("POST", "/api/user/logout", cookie(case), body="").status == 200
    deadline = time.monotonic() + 5
    while b.get(PATH, cookie(case)).status != 401:
        assert time.monotonic() < deadline, "logout on A not applied on B"
        time.sleep(0.01)
    keys = [k for k, _, _ in redis.dump()]
    assert keys, "nothing written to Redis"
    assert all(k.startswith(PREFIX.encode()) for k in keys), keys[:5]
    for n in nodes:
        assert (metric(n.admin_port, "spoa_auth_redis_commands_total",
                       result="error") or 0) == 0, "a command the ACL user may not run"


@pytest.mark.parametrize("user", [None, "spoa"])
def test_wrong_password_is_a_clear_error_at_start(env, user):
    redis = RedisServer(env["logdir"], password="right-" + secrets.token_hex(8),
                        users={"spoa": ("right-user-pw", "~spoa-auth:* +@all")},
                        name="redis-wrongpw").start()
    port, admin_port = free_ports(2)
    extra = ["--redis-password", "wrong-" + secrets.token_hex(8)]
    if user:
        extra += ["--redis-user", user]
    argv = [env["agent_bin"], "--listen", "%s:%d" % (HOST, port), "--user-service-url",
            env["user"].url, *fleet_agent_args(redis.address, admin_port, extra)]
    try:
        t0 = time.monotonic()
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=START_DEADLINE_S)
        out = r.stdout.decode("utf-8", "replace")
        assert r.returncode != 0, "started with a wrong Redis password:\n" + out
        assert "redis-password" in out or (user and "redis-user" in out), (
            "the error does not name the key:\n" + out)
        assert extra[1] not in out, "the wrong password is echoed:\n" + out
        print("wrong password%s: exit %d after %.2fs: %s" % (
            " (user %s)" % user if user else "", r.returncode, time.monotonic() - t0,
            out.strip().splitlines()[-1]))
    finally:
        redis.stop()


def test_unreachable_at_start_then_joins(env):
    """No Redis at start: the agent starts and answers as a single node; once
    a Redis listens at its address it joins the fleet, with no restart."""
    redis = RedisServer(env["logdir"], name="redis-late")      # not started yet
    with_redis(env, redis)
    nodes = nodes_at(env, ("la", "lb"), redis.address)
    for n in nodes:
        assert metric(n.admin_port, "spoa_auth_redis_up") == 0
        case = new_case()
        env["user"].program(case, status=200, body="tok-" + case)
        assert n.get(PATH, cookie(case)).status == 200
        assert n.get(PATH, cookie(case)).header("X-Auth-Cache") == "hit"
    redis.start()
    for n in nodes:
        assert wait_metric(n.admin_port, "spoa_auth_redis_up", 1,
                           CONNECT_DEADLINE_S) == 1, n.agent.describe()
        assert wait_metric(n.admin_port, "spoa_auth_redis_stream_up", 1,
                           CONNECT_DEADLINE_S) == 1, n.agent.describe()
    shared(nodes, env["user"])


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["unix", "ipv6"])
def test_other_addresses(env, kind):
    """redis-address unix:/path and [::1]:port: the fleet works over both."""
    if kind == "ipv6" and not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    sock = Path(env["logdir"]) / ("redis-%s.sock" % secrets.token_hex(4))
    redis = RedisServer(env["logdir"], name="redis-" + kind,
                        unixsocket=sock if kind == "unix" else None,
                        ipv6=kind == "ipv6").start()
    with_redis(env, redis)
    address = "unix:%s" % sock if kind == "unix" else redis.address6
    nodes = nodes_at(env, ("xa", "xb"), address)
    for n in nodes:
        assert wait_metric(n.admin_port, "spoa_auth_redis_up", 1,
                           CONNECT_DEADLINE_S) == 1, n.agent.describe()
    shared(nodes, env["user"])
    assert redis.dump(), "nothing written through " + address
    # The agents are connected the way asked (unix clients carry flag U).
    clients = redis.cmd("CLIENT", "LIST").decode()
    assert ("addr=[::1]:" if kind == "ipv6" else "flags=U") in clients, clients
