"""`make install` / `make uninstall` into a DESTDIR: what lands where, the
unit's paths follow SBINDIR/SYSCONFDIR, the configuration file is never
overwritten, and uninstall keeps it only when it was modified."""
import os
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def make_env():
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env


@pytest.fixture
def agent_bin():
    exe = os.environ.get("SPOA_AUTH_BIN") or os.path.join(REPO, "build", "spoa-auth")
    if not os.access(exe, os.X_OK):
        pytest.skip(f"no agent binary at {exe}")
    return os.path.abspath(exe)


def make(target, destdir, agent_bin, *extra):
    r = subprocess.run(["make", "--no-print-directory", "-C", REPO, target,
                        f"DESTDIR={destdir}", f"INSTALL_BIN={agent_bin}", *extra],
                       env=make_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def files_under(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def test_install_default_prefix(tmp_path, agent_bin):
    dest = tmp_path / "root"
    make("install", dest, agent_bin)
    got = files_under(dest)
    want = {
        "usr/local/sbin/spoa-auth",
        "etc/spoa-auth/spoa-auth.conf",
        "lib/systemd/system/spoa-auth.service",
        "usr/local/share/man/man8/spoa-auth.8",
        "usr/local/share/doc/spoa-auth/operations.md",
        "usr/local/share/doc/spoa-auth/spoa-auth.rules.yml",
    }
    assert want <= got, sorted(got)
    for ex in ("haproxy.cfg", "spoe-auth.conf"):
        if os.path.exists(os.path.join(REPO, "haproxy", ex)):
            assert f"usr/local/share/doc/spoa-auth/{ex}" in got
    assert os.access(dest / "usr/local/sbin/spoa-auth", os.X_OK)
    unit = (dest / "lib/systemd/system/spoa-auth.service").read_text()
    assert "ExecStart=/usr/local/sbin/spoa-auth -f /etc/spoa-auth/spoa-auth.conf\n" in unit
    assert "/usr/sbin/spoa-auth" not in unit
    with open(os.path.join(REPO, "scripts", "spoa-auth.conf")) as f:
        assert (dest / "etc/spoa-auth/spoa-auth.conf").read_text() == f.read()


def test_install_keeps_config_and_uninstall(tmp_path, agent_bin):
    dest = tmp_path / "root"
    args = ("PREFIX=/opt/sa", "SYSCONFDIR=/opt/sa/etc", "UNITDIR=/opt/sa/units")
    make("install", dest, agent_bin, *args)
    conf = dest / "opt/sa/etc/spoa-auth/spoa-auth.conf"
    unit = (dest / "opt/sa/units/spoa-auth.service").read_text()
    assert "ExecStart=/opt/sa/sbin/spoa-auth -f /opt/sa/etc/spoa-auth/spoa-auth.conf\n" in unit

    conf.write_text(conf.read_text() + "log-level debug\n")
    out = make("install", dest, agent_bin, *args)
    assert "keeping" in out
    assert conf.read_text().endswith("log-level debug\n"), "install overwrote the config"

    out = make("uninstall", dest, agent_bin, *args)
    assert "keeping modified" in out
    assert files_under(dest) == {"opt/sa/etc/spoa-auth/spoa-auth.conf"}

    # An unmodified config goes away with the rest.
    make("install", tmp_path / "clean", agent_bin, *args)
    make("uninstall", tmp_path / "clean", agent_bin, *args)
    assert files_under(tmp_path / "clean") == set()
