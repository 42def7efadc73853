"""The systemd unit (scripts/spoa-auth.service): `make verify-unit` passes
(systemd-analyze verify, man page found, exposure score under the bound) and
the unit keeps the settings the operations issue requires."""
import os
import re
import shutil
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UNIT = os.path.join(REPO, "scripts", "spoa-auth.service")


def make_env():
    """The environment without the parent make's flags (pytest may run under make)."""
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env


def unit_settings(path=UNIT):
    """[(section, key, value)] in file order; repeated keys kept."""
    out, section = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            k, _, v = line.partition("=")
            out.append((section, k.strip(), v.strip()))
    return out


def one(settings, key):
    vals = [v for _, k, v in settings if k == key]
    assert len(vals) == 1, f"{key}: {vals}"
    return vals[0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_verify_unit_and_exposure(tmp_path):
    exe = os.environ.get("SPOA_AUTH_BIN")
    if not exe or not os.access(exe, os.X_OK):
        exe = "/bin/true"
    r = subprocess.run(["make", "--no-print-directory", "-C", REPO, "verify-unit",
                        f"BUILD={tmp_path}", f"VERIFY_EXEC={exe}"],
                       env=make_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Overall exposure level for spoa-auth\.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) <= 2.0, r.stdout


def test_unit_contract():
    s = unit_settings()
    assert one(s, "Type") == "notify"
    assert one(s, "ExecStart") == "/usr/sbin/spoa-auth -f /etc/spoa-auth/spoa-auth.conf"
    assert one(s, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(s, "Restart") == "on-failure"
    assert one(s, "User") == "spoa-auth" and one(s, "Group") == "spoa-auth"
    assert one(s, "CapabilityBoundingSet") == ""
    assert one(s, "AmbientCapabilities") == ""
    assert one(s, "RestrictAddressFamilies") == "AF_INET AF_INET6 AF_UNIX"
    assert one(s, "SystemCallArchitectures") == "native"
    assert "@system-service" in [v for _, k, v in s if k == "SystemCallFilter"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
                "LockPersonality", "MemoryDenyWriteExecute", "RestrictRealtime",
                "RestrictSUIDSGID"):
        assert one(s, key) == "yes", key
    assert one(s, "ProtectSystem") == "strict"
    for key in ("RestartSec", "LimitNOFILE", "UMask", "TimeoutStopSec"):
        one(s, key)
    assert ("Install", "WantedBy", "multi-user.target") in s
