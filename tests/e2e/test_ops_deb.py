"""The Debian package built by scripts/build-deb: control fields, conffiles,
contents, maintainer scripts. The full `dpkg -i / -r / -P` cycle changes the
machine (a package, a system user), so it runs only when asked for:
SPOA_AUTH_TEST_DPKG=1, as root, with no spoa-auth package already installed."""
import os
import shutil
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None or
                                shutil.which("dpkg-shlibdeps") is None,
                                reason="dpkg-deb/dpkg-shlibdeps not installed")


def make_env():
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env


def run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    exe = os.environ.get("SPOA_AUTH_BIN") or os.path.join(REPO, "build", "spoa-auth")
    if not os.access(exe, os.X_OK):
        pytest.skip(f"no agent binary at {exe}")
    out = tmp_path_factory.mktemp("deb")
    env = make_env()
    env.update(OUT=str(out), VERSION="9.9.9~test1")
    path = run("sh", os.path.join(REPO, "scripts", "build-deb"), os.path.abspath(exe),
               env=env).strip().splitlines()[-1]
    assert os.path.basename(path).startswith("spoa-auth_9.9.9~test1_")
    return path


def field(control, name):
    for line in control.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


def test_control(deb):
    control = run("dpkg-deb", "-f", deb)
    assert field(control, "Package") == "spoa-auth"
    assert field(control, "Version") == "9.9.9~test1"
    deps = [d.strip().split()[0] for d in field(control, "Depends").split(",")]
    for lib in ("libev4", "libcurl4", "libssl3", "libmsgpackc2", "adduser"):
        assert lib in deps, deps


def test_contents_and_conffiles(deb, tmp_path):
    listing = run("dpkg-deb", "-c", deb)
    for p in ("./usr/sbin/spoa-auth", "./etc/spoa-auth/spoa-auth.conf",
              "./lib/systemd/system/spoa-auth.service", "./usr/share/man/man8/spoa-auth.8.gz",
              "./usr/share/doc/spoa-auth/operations.md"):
        assert p in listing, p
    for line in listing.splitlines():
        assert " root/root " in line, line
    ctl = tmp_path / "ctl"
    run("dpkg-deb", "-e", deb, str(ctl))
    assert (ctl / "conffiles").read_text().split() == ["/etc/spoa-auth/spoa-auth.conf"]
    for script in ("postinst", "prerm", "postrm"):
        p = ctl / script
        assert os.access(p, os.X_OK), script
        run("sh", "-n", str(p))
    postinst = (ctl / "postinst").read_text()
    assert "adduser --system --group --no-create-home" in postinst
    assert "[ -d /run/systemd/system ]" in postinst
    unit = tmp_path / "root"
    run("dpkg-deb", "-x", deb, str(unit))
    assert "ExecStart=/usr/sbin/spoa-auth -f /etc/spoa-auth/spoa-auth.conf\n" in \
        (unit / "lib/systemd/system/spoa-auth.service").read_text()


def installed():
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "spoa-auth"],
                       capture_output=True, text=True)
    return r.returncode == 0 and "not-installed" not in r.stdout


def user_exists():
    return subprocess.run(["getent", "passwd", "spoa-auth"], capture_output=True).returncode == 0


@pytest.mark.skipif(os.environ.get("SPOA_AUTH_TEST_DPKG") != "1" or os.geteuid() != 0,
                    reason="set SPOA_AUTH_TEST_DPKG=1 and run as root to install the package")
def test_dpkg_install_remove_purge(deb):
    if installed():
        pytest.skip("a spoa-auth package is already installed here")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run("dpkg", "-i", deb, env=env)
        assert os.access("/usr/sbin/spoa-auth", os.X_OK)
        assert os.path.exists("/etc/spoa-auth/spoa-auth.conf")
        assert os.path.exists("/lib/systemd/system/spoa-auth.service")
        assert user_exists()
        # Upgrade path: same package again runs postinst with the old version.
        run("dpkg", "-i", deb, env=env)
        run("dpkg", "-r", "spoa-auth", env=env)
        assert not os.path.exists("/usr/sbin/spoa-auth")
        assert os.path.exists("/etc/spoa-auth/spoa-auth.conf"), "remove must keep conffiles"
        run("dpkg", "-P", "spoa-auth", env=env)
        assert not os.path.exists("/etc/spoa-auth")
        assert not user_exists()
        assert not os.path.lexists("/etc/systemd/system/multi-user.target.wants/spoa-auth.service")
        assert not os.path.lexists("/etc/systemd/system/spoa-auth.service")
    finally:
        if installed():
            subprocess.run(["dpkg", "-P", "spoa-auth"], env=env, capture_output=True)
