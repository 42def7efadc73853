"""The user-service client paths (upstream-client native|curl), end to end:
the agent's own HTTP client talks to the programmable fake user service.

- Through HAProxy (the `fake` fixture, once per path): steady sequential load
  reuses kept-alive connections instead of opening one per request.
- Over SPOP directly to an agent started with every proxy variable of the
  environment pointing at a dead port: answers still come (no proxy from the
  environment), and /metrics shows the path that really served them."""
import re
import urllib.request

import pytest

from harness import HOST, free_ports, new_case, start_agent_args, stop_all
from spop import ACK, NOTIFY, Client, frame, notify_payload

REQUESTS = 40


def test_steady_load_reuses_connections(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    for _ in range(REQUESTS):
        assert fake.get("/api/business/x", [("Cookie", "case=" + case)]).status == 200
    peers = {c["peer"] for c in fake.user.calls(case)}
    assert len(fake.user.calls(case)) == REQUESTS
    # Sequential requests: at most one connection per worker (2), not one per request.
    assert len(peers) <= 2, peers


def _exchange(client, sid, case):
    client.send(frame(NOTIFY, notify_payload([("exchange", [("uri", "/api/business/x"),
                                                            ("src", "127.0.0.1"),
                                                            ("cookie", "case=" + case)])]),
                      sid=sid, fid=1))
    f = client.recv_frame(timeout=10)
    assert f is not None and f.type == ACK and f.sid == sid, f
    return f.vars()


def _metric(port, name, labels):
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, port), timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


@pytest.mark.parametrize("client_path", ["native", "curl"])
def test_no_proxy_from_the_environment(fake_user, agent_bin, logdir, client_path):
    spop_port, admin_port, dead = free_ports(3)
    proxy = "http://%s:%d" % (HOST, dead)
    env = {k: proxy for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                              "all_proxy", "ALL_PROXY")}
    env["no_proxy"] = env["NO_PROXY"] = ""
    p = start_agent_args(logdir, agent_bin,
                         ["--listen", "%s:%d" % (HOST, spop_port),
                          "--admin-listen", "%s:%d" % (HOST, admin_port), "--workers", "1",
                          "--timeout", "2s", "--user-service-url", fake_user.url,
                          "--upstream-client", client_path],
                         name="agent-proxyenv-" + client_path, env=env,
                         ports=(spop_port, admin_port))
    try:
        case = new_case()
        fake_user.program(case, status=200, body="tok-" + case)
        with Client(spop_port) as c:
            c.hello()
            for sid in (1, 3, 5):
                v = _exchange(c, sid, case)
                assert v.get("status") == 200, v
        assert len(fake_user.calls(case)) == 3
        assert _metric(admin_port, "spoa_auth_upstream_attempts_total",
                       '{client="%s"}' % client_path) == 3
        p.terminate()
    finally:
        stop_all([p])
