"""The shipped HAProxy configuration is valid as is, without warnings, with
the environment the tests and run-demo give it and with its defaults."""
import subprocess

from harness import HAPROXY_CFG, REPO, SPOE_CONF


def check(haproxy_bin, env, cwd):
    r = subprocess.run([haproxy_bin, "-c", "-f", str(HAPROXY_CFG)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "WARNING" not in out and "ALERT" not in out, out
    return out


def test_valid_with_environment(haproxy_bin, tmp_path):
    check(haproxy_bin, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GW_ADDR": "127.0.0.1:1",
                        "USER_ADDR": "127.0.0.1:2", "BIZ_ADDR": "127.0.0.1:3",
                        "AGENT_ADDR": "127.0.0.1:4", "SPOE_CONF": str(SPOE_CONF)}, tmp_path)


def test_valid_with_defaults_from_its_directory(haproxy_bin):
    check(haproxy_bin, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, REPO / "haproxy")
