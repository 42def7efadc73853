"""Fixtures for the end-to-end tests: a real HAProxy with the shipped
haproxy/haproxy.cfg and haproxy/spoe-auth.conf, the real agent, the demo
services or programmable fakes, all on free loopback ports.

Environment:
  HAPROXY_BIN    HAProxy to run (default: "haproxy" on PATH). Missing: the
                 tests that need it are skipped, with that reason.
  SPOA_AUTH_BIN  the agent (default: build/spoa-auth in the repository).
                 Missing: the tests that need it error out.
  SPOA_AUTH_TEST_HOLD_DEFAULT_PORTS=1
                 for the whole session, dummy listeners hold the ports `make run`
                 uses (DEFAULT_PORTS), so a test that starts anything on a
                 default port, or talks to one, fails instead of passing by
                 luck; ports already taken (a running `make run`) count as held.
                 `make e2e` sets it.
Every process writes stdout+stderr to a log file; the logs of the processes
still running (or that died) are attached to every failure report.
"""
import os
import secrets
import shutil
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_user_service import FakeUserService  # noqa: E402
from harness import (HOST, PROCS, REPO, Bringup, agent_has_redis, free_ports, gateway,  # noqa: E402
                     start_python_service, stop_all)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for p in PROCS:
            if p.alive() or not p.stopped:
                rep.sections.append(("process %s" % p.name, p.describe()))


# ---- fixtures -------------------------------------------------------------
# What `make run` listens on: gateway, user service, business service, agent
# SPOP, agent admin (scripts/run-demo, agent/cfg.h defaults).
DEFAULT_PORTS = (8100, 8101, 8102, 12345, 12346)


@pytest.fixture(scope="session", autouse=True)
def hold_default_ports():
    """Occupies DEFAULT_PORTS on loopback with listeners that never accept
    (see SPOA_AUTH_TEST_HOLD_DEFAULT_PORTS above). Yields the ports this
    session holds itself."""
    if os.environ.get("SPOA_AUTH_TEST_HOLD_DEFAULT_PORTS") != "1":
        yield ()
        return
    socks, held = [], []
    for port in DEFAULT_PORTS:
        s = socket.socket()
        try:
            s.bind((HOST, port))
            s.listen(1)
        except OSError:
            s.close()       # taken already: by `make run`, which is the point
            continue
        socks.append(s)
        held.append(port)
    try:
        yield tuple(held)
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="session")
def haproxy_bin():
    name = os.environ.get("HAPROXY_BIN", "haproxy")
    path = shutil.which(name)
    if not path:
        pytest.skip("HAProxy not found (HAPROXY_BIN=%s): install haproxy or set HAPROXY_BIN" % name)
    return path


@pytest.fixture(scope="session")
def agent_bin():
    path = Path(os.environ.get("SPOA_AUTH_BIN") or REPO / "build" / "spoa-auth")
    if not path.is_absolute():
        path = REPO / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail("agent binary %s not found: run 'make build' or set SPOA_AUTH_BIN" % path,
                    pytrace=False)
    return str(path)


@pytest.fixture(scope="session")
def logdir(tmp_path_factory):
    return tmp_path_factory.mktemp("logs")


@pytest.fixture
def bringup(request, logdir, agent_bin):
    """A harness.Bringup for this test: bringup.agent(user_url, ...) and
    bringup.gateway(user_url, user_port, biz_port, ...) start what the test
    needs as it goes; all of it is stopped (strictly, for the agents) at its
    end. HAProxy is looked up (or the test skipped) only for a gateway."""
    b = Bringup(logdir, agent_bin, lambda: request.getfixturevalue("haproxy_bin"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def jwt_secret():
    return secrets.token_hex(32)


@pytest.fixture(scope="session")
def demo_services(logdir, jwt_secret):
    user_port, biz_port = free_ports(2)
    procs = []
    try:
        procs.append(start_python_service(logdir, "user-service.py", user_port, jwt_secret))
        procs.append(start_python_service(logdir, "business-service.py", biz_port, jwt_secret))
        yield {"user_port": user_port, "biz_port": biz_port, "secret": jwt_secret}
    finally:
        stop_all(procs)


@pytest.fixture(scope="session")
def demo(demo_services, haproxy_bin, agent_bin, logdir):
    """HAProxy + agent + demo user and business services."""
    with gateway(logdir, haproxy_bin, agent_bin,
                 "http://%s:%d/api/user/token" % (HOST, demo_services["user_port"]),
                 demo_services["user_port"], demo_services["biz_port"],
                 secret=demo_services["secret"]) as gw:
        yield gw


@pytest.fixture(scope="session")
def fake_user():
    f = FakeUserService().start()
    yield f
    f.stop()


# Every client path the agent keeps for the user service (upstream-client):
# the tests using the fake user service run once per path.
UPSTREAM_CLIENTS = ("native", "curl")


@pytest.fixture(scope="session", params=UPSTREAM_CLIENTS)
def upstream_client(request):
    return request.param


@pytest.fixture(scope="session")
def fake(fake_user, demo_services, haproxy_bin, agent_bin, logdir, upstream_client):
    """HAProxy + agent + the programmable fake user service (also behind the
    public routes) + the demo business service; once per client path."""
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=("--upstream-client", upstream_client),
                 agent_name="agent-" + upstream_client, user=fake_user,
                 secret=demo_services["secret"]) as gw:
        yield gw


@pytest.fixture(scope="module")
def fleet_agent(agent_bin):
    """The agent binary, for tests of the fleet level: skipped on a build
    without it (no redis-address option)."""
    if not agent_has_redis(agent_bin):
        pytest.skip("this agent build has no redis-address option (the fleet level)")
    return agent_bin
