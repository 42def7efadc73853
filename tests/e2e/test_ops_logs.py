"""The agent's log (stderr) through a real HAProxy: a dead user service does
not flood it (rate-limited error lines with a suppressed-count summary), the
access level writes one structured line per decision, and no cookie, token,
Authorization or identity value appears at the debug or access level."""
import re
import threading
import time

import pytest

from harness import HOST, free_ports, http, new_case

LOG_RL_BURST = 5        # agent/log.h


@pytest.fixture
def stack_factory(bringup, demo_services):
    def make(user_url, user_port, *extra, ready=True):
        # Not <ready>: every answer is 503 anyway, wait for the agent itself.
        gw = bringup.gateway(user_url, user_port, demo_services["biz_port"], agent_extra=extra,
                             ready=ready, agent_started=not ready)
        return gw.port, gw.agent

    return make


def test_dead_user_service_does_not_flood_the_log(stack_factory):
    dead, = free_ports(1)
    gw_port, agent = stack_factory("http://%s:%d/api/user/token" % (HOST, dead), dead,
                                  ready=False)
    n_requests, statuses, lock = 500, [], threading.Lock()
    t0 = time.monotonic()

    def client(n):
        for i in range(n):
            st = http(gw_port, "GET", "/api/business/x", timeout=5).status
            with lock:
                statuses.append(st)

    threads = [threading.Thread(target=client, args=(n_requests // 10,)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    assert statuses == [503] * n_requests
    # The summary of a window is written with the first line of a later one.
    time.sleep(1.1)
    assert http(gw_port, "GET", "/api/business/x").status == 503
    time.sleep(0.2)
    log = agent.tail(1 << 22)
    lines = [l for l in log.splitlines() if "user service: no usable answer" in l]
    printed = [l for l in lines if "suppressed" not in l]
    summaries = [int(m.group(1)) for m in
                 (re.search(r"suppressed (\d+) similar messages", l) for l in lines) if m]
    # At most LOG_RL_BURST lines per second (+1 for partial windows), far below one per request.
    bound = LOG_RL_BURST * (int(elapsed) + 3)
    assert 1 <= len(printed) <= bound and len(printed) < n_requests // 10, (len(printed), elapsed)
    assert summaries and sum(summaries) > 0, "no suppressed-count summary:\n" + "\n".join(lines)
    assert len(printed) + sum(summaries) <= n_requests + 1
    assert len(printed) + sum(summaries) >= n_requests - LOG_RL_BURST * 2
    for l in printed + [l for l in lines if "suppressed" in l]:
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (warn|error) \[\w+\] ", l), l


SECRETS = {
    "cookie": "sess-" + "c0ffee" * 6,
    "authorization": "Bearer tok-" + "5ec7e7" * 6,
    "identity": "forged-id-" + "1dbadd" * 6,
    "token": "issued-" + "7a7a7a" * 6,
    "set_cookie": "refresh-" + "5e7c00" * 6,
}


@pytest.mark.parametrize("level", ["debug", "access"])
def test_no_credentials_in_the_log(stack_factory, fake_user, level):
    gw_port, agent = stack_factory(fake_user.url, fake_user.port, "--log-level", level)
    allow, deny = new_case(), new_case()
    fake_user.program(allow, status=200, body=SECRETS["token"].encode(),
                      headers=[("Set-Cookie", "s=%s; Path=/" % SECRETS["set_cookie"])])
    fake_user.program(deny, status=401, body=b'{"error":"%s"}' % SECRETS["token"].encode(),
                      headers=[("WWW-Authenticate", "Bearer")])
    sent = 0
    for case, want in ((allow, 200), (deny, 401), (allow, 200)):
        r = http(gw_port, "GET", "/api/business/secret?q=1", [
            ("Cookie", "case=%s; session=%s" % (case, SECRETS["cookie"])),
            ("Authorization", SECRETS["authorization"]),
            ("X-Example-Authorization", SECRETS["identity"])])
        assert r.status == want, r
        sent += 1
    time.sleep(0.3)
    log = agent.tail(1 << 22)
    for what, secret in SECRETS.items():
        assert secret not in log, "%s value in the agent's log at level %s" % (what, level)
        assert secret[-12:] not in log, "part of the %s value in the log" % what
    access = [l for l in log.splitlines() if " access [" in l]
    assert len(access) >= sent, "\n".join(access) or log[-3000:]
    outcomes = []
    for l in access:
        m = re.search(r"outcome=(\w+) status=(\d+) .*latency_ms=[\d.]+ cred=([0-9a-f]{8})\b", l)
        assert m, "unstructured access line: %r" % l
        outcomes.append((m.group(1), m.group(2)))
    assert outcomes[-sent:] == [("allow", "200"), ("deny", "401"), ("allow", "200")], outcomes
