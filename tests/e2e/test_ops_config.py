"""The shipped configuration (scripts/spoa-auth.conf) and the man page stay in
step with docs/design.md and with the agent: every key is there with its
default, the agent accepts the file as shipped and with every default
uncommented, and every key `spoa-auth --help` lists is documented."""
import os
import re
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONF = os.path.join(REPO, "scripts", "spoa-auth.conf")
MAN = os.path.join(REPO, "docs", "spoa-auth.8")

# "#key value": a default, to uncomment; "# key value" after a "# ...Example(s):" line,
# in the same comment block: an example for a key unset by default.
DEFAULT_LINE = re.compile(r"^#([a-z][a-z0-9-]+) (.+)$")
EXAMPLE_LINE = re.compile(r"^# ([a-z][a-z0-9-]+) (\S.*)$")


def design_keys():
    """{key: default cell} from the Configuration table of docs/design.md."""
    text = open(os.path.join(REPO, "docs", "design.md")).read()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    keys = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for k in re.findall(r"`([a-z][a-z0-9-]+)`", cells[0]):
            keys[k] = cells[1]
    return keys


def conf_lines():
    return open(CONF).read().splitlines()


def conf_defaults():
    return {m.group(1): m.group(2) for m in map(DEFAULT_LINE.match, conf_lines()) if m}


def conf_examples():
    keys, in_examples = set(), False
    for line in conf_lines():
        if not line.startswith("#"):
            in_examples = False
        elif re.search(r"Examples?:$", line):
            in_examples = True
        elif in_examples and EXAMPLE_LINE.match(line):
            keys.add(EXAMPLE_LINE.match(line).group(1))
    return keys


def test_design_keys_in_conf_with_defaults():
    keys = design_keys()
    assert len(keys) >= 16, keys
    defaults, examples = conf_defaults(), conf_examples()
    for k, cell in keys.items():
        assert k in defaults or k in examples, f"{k} missing from spoa-auth.conf"
        m = re.fullmatch(r"`([^`]+)`(?: \(.*\))?", cell)
        if m and k in defaults:
            assert defaults[k] == m.group(1), f"{k}: conf says {defaults[k]}, design {cell}"


def test_design_keys_in_man_page():
    text = open(MAN).read().replace("\\-", "-")
    for k in design_keys():
        assert re.search(r"^\.B[IR]? %s\b" % re.escape(k), text, re.M) or \
            re.search(r"\\fP%s \"|^\.BI %s " % (re.escape(k), re.escape(k)), text, re.M), \
            f"{k} not documented in spoa-auth.8"


@pytest.fixture
def agent_bin():
    exe = os.environ.get("SPOA_AUTH_BIN") or os.path.join(REPO, "build", "spoa-auth")
    if not os.access(exe, os.X_OK):
        pytest.skip(f"no agent binary at {exe}")
    return exe


def check(agent_bin, path):
    return subprocess.run([agent_bin, "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)


def test_shipped_conf_accepted(agent_bin):
    r = check(agent_bin, CONF)
    assert r.returncode == 0, r.stderr


def help_keys(agent_bin):
    r = subprocess.run([agent_bin, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return set(re.findall(r"--([a-z][a-z0-9-]+)", r.stdout)) - {"help", "key", "version"}


def test_uncommented_defaults_accepted(agent_bin, tmp_path):
    known = help_keys(agent_bin)
    out = []
    for line in conf_lines():
        m = DEFAULT_LINE.match(line)
        # A key documented ahead of the agent supporting it stays commented.
        out.append(f"{m.group(1)} {m.group(2)}" if m and m.group(1) in known else line)
    p = tmp_path / "all-defaults.conf"
    p.write_text("\n".join(out) + "\n")
    r = check(agent_bin, p)
    assert r.returncode == 0, r.stderr


def test_bad_key_is_refused(agent_bin, tmp_path):
    p = tmp_path / "bad.conf"
    p.write_text("# ok\nno-such-key 1\n")
    r = check(agent_bin, p)
    assert r.returncode == 1
    assert "2" in r.stderr and "no-such-key" in r.stderr, r.stderr


def test_help_keys_documented(agent_bin):
    keys = help_keys(agent_bin)
    assert len(keys) >= 16, keys
    documented = set(conf_defaults()) | conf_examples()
    text = open(MAN).read().replace("\\-", "-")
    for k in sorted(keys):
        assert k in documented, f"--{k} missing from scripts/spoa-auth.conf"
        assert k in text, f"--{k} missing from docs/spoa-auth.8"
