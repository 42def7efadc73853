"""SIGHUP under load through a real HAProxy: a valid new configuration is
taken without dropping SPOP connections or exchanges in flight; an invalid
one is refused with a log line naming the key, and the old one keeps
serving. `spoa-auth -c -f` on the shipped file and on broken copies."""
import signal
import subprocess
import time

from harness import REPO, gateway, http, new_case, wait_log
from test_ops_drain import Load
from test_ops_metrics import scrape, value

SHIPPED = REPO / "scripts" / "spoa-auth.conf"


def test_check_shipped_and_broken_configs(agent_bin, tmp_path):
    r = subprocess.run([agent_bin, "-c", "-f", str(SHIPPED)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    for line, key in (("timeout soon", "timeout"), ("workers -3", "workers"),
                      ("no-such-key 1", "no-such-key"), ("max-frame-size 10", "max-frame-size")):
        bad = tmp_path / "bad.conf"
        bad.write_text(SHIPPED.read_text() + "\n" + line + "\n")
        r = subprocess.run([agent_bin, "-c", "-f", str(bad)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1, (line, r.stdout, r.stderr)
        assert "key '%s'" % key in r.stderr and str(bad) in r.stderr, r.stderr


def test_reload_under_load(fake_user, demo_services, haproxy_bin, agent_bin, logdir, tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("timeout 500ms\n")
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=("-f", str(conf)), admin=True,
                 agent_started=True) as gw:
        agent, gw_port = gw.agent, gw.port
        case = new_case()
        fake_user.program(case, status=200, body=b"tok", delay=0.02)
        with Load(gw_port, case) as load:
            time.sleep(0.5)
            accepted = value(scrape(agent.admin_port), "spoa_auth_spop_connections_accepted_total")
            conf.write_text("timeout 700ms\nlog-level info\n")
            agent.p.send_signal(signal.SIGHUP)
            wait_log(agent, "configuration reloaded")
            time.sleep(0.3)
            conf.write_text("timeout 700ms\nmax-connections lots\n")
            agent.p.send_signal(signal.SIGHUP)
            wait_log(agent, "reload failed, keeping the current configuration")
            time.sleep(0.4)
            after = value(scrape(agent.admin_port), "spoa_auth_spop_connections_accepted_total")
        total = load.count()
        assert set(total) == {200} and total[200] > 50, total
        assert "key 'max-connections'" in agent.tail(1 << 22)
        # No connection was dropped and re-opened because of the reloads:
        # HAProxy's SPOE applets stayed on the connections they had (it may
        # open a few more as load varies, never one per connection).
        assert after - accepted <= 4, (accepted, after)
        assert agent.alive()
        assert http(gw_port, "GET", "/api/business/x",
                    [("Cookie", "case=%s" % case)]).status == 200
