"""The Makefile's dependency tracking, on a copy of the tree in a temporary
directory: a plain `make` never runs apt-get; after one build everything is up
to date (`make -q`); touching a header makes `make -n` rebuild exactly the
objects, unit tests, fuzz targets and bench tools whose sources include it
(directly or through another header), and changing the compiler or its flags
rebuilds everything of that build directory.

One real build at -O0 (agent, unit tests, bench tools; the fuzz targets when
clang is installed); every later check is a dry run."""
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness import REPO

BUILD_TIMEOUT_S = 600
DRY_TIMEOUT_S = 60
COPY_DIRS = ("agent", "bench", "tests/unit", "tests/fuzz", "scripts")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


# What an enclosing make (make asan: BUILD=build-asan ...) exports: the copy
# is built with the Makefile's defaults, whatever runs this test.
MAKE_ENV_DROP = ("MAKEFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MFLAGS", "BUILD", "CC", "CFLAGS",
                 "LDFLAGS", "SANITIZER", "ERR", "DEBUG", "FUZZ_CC")


def make(tree, *args, timeout=DRY_TIMEOUT_S, check=True):
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV_DROP}
    r = subprocess.run(["nice", "make", "--no-print-directory", *args], cwd=tree, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, "make %s failed:\n%s" % (" ".join(args), r.stdout[-4000:])
    return r


def includes(path, search):
    """Every file <path> includes with #include "...", transitively, resolved
    like the compiler does (the file's directory first, then <search>)."""
    seen, todo = set(), [Path(path)]
    while todo:
        f = todo.pop()
        for name in INCLUDE_RE.findall(f.read_text(errors="replace")):
            for d in (f.parent, *search):
                cand = (d / name).resolve()
                if cand.is_file():
                    if cand not in seen:
                        seen.add(cand)
                        todo.append(cand)
                    break
    return seen


# The parser sources the Makefile compiles in from Debian's node-llhttp
# (LLHTTP_DIR, LLHTTP_SRCS): rebuilt with the agent objects.
LLHTTP = {"/usr/share/llhttp/" + n for n in ("llhttp.c", "api.c", "http.c")}


def compiled(out, ext_re=r"\S+\.c"):
    """The .c files a `make -n` transcript compiles (the last .c word of each
    compiler line)."""
    files = set()
    for line in out.splitlines():
        words = line.split()
        if not words or not re.match(r"^(nice )?(cc|gcc|clang)\S*$", words[0]):
            continue
        cs = [w for w in words if re.fullmatch(ext_re, w)]
        if cs:
            files.add(cs[-1])
    return files


def touch_later(path):
    """Makes <path> newer than every output of the build before (the clock
    has moved on since: nanosecond mtimes)."""
    time.sleep(0.01)
    os.utime(path)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    shutil.copy2(REPO / "Makefile", root / "Makefile")
    for d in COPY_DIRS:
        shutil.copytree(REPO / d, root / d, symlinks=True)
    return root


def targets(tree):
    unit = ["build/tests/%s" % p.stem for p in sorted((tree / "tests/unit").glob("test_*.c"))]
    bench = ["build/bench/null-agent", "build/bench/spop-load", "build/bench/chaos-load"]
    fuzz = ["build-fuzz/%s" % p.stem for p in sorted((tree / "tests/fuzz").glob("fuzz_*.c"))]
    return unit, bench, fuzz


BIN = "build/spoa-auth"
HAVE_CLANG = shutil.which("clang") is not None


@pytest.fixture(scope="module")
def built(tree):
    r = make(tree, "-n", check=False)
    plain_make = r.stdout
    unit, bench, fuzz = targets(tree)
    make(tree, "-j2", "CFLAGS=-O0", BIN, *unit, *bench, timeout=BUILD_TIMEOUT_S)
    if HAVE_CLANG:
        make(tree, "-j2", *fuzz, timeout=BUILD_TIMEOUT_S)
    return tree, plain_make


def test_plain_make_does_not_run_apt(built):
    tree, plain_make = built
    assert "install-deps" not in plain_make and "apt-get" not in plain_make, plain_make
    assert "cc " in plain_make or "cc\t" in plain_make, plain_make
    # The commands of the README still install what they need.
    for goal in ("run", "test", "bench"):
        out = make(tree, "-n", goal, check=False).stdout
        assert "install-deps" in out, (goal, out[:2000])


def test_up_to_date_after_build(built):
    tree, _ = built
    unit, bench, _fuzz = targets(tree)
    r = make(tree, "-q", "CFLAGS=-O0", BIN, *unit, *bench, check=False)
    assert r.returncode == 0, "not up to date after a build:\n" + make(
        tree, "-n", "CFLAGS=-O0", BIN, *unit, *bench, check=False).stdout


@pytest.mark.parametrize("header", ["agent/hex.h", "agent/spop.h", "tests/unit/tap.h",
                                    "bench/spop-mini.h"])
def test_header_rebuilds_exactly_its_dependants(built, header):
    tree, _ = built
    unit, bench, _fuzz = targets(tree)
    agent_dir, unit_dir = tree / "agent", tree / "tests/unit"
    h = (tree / header).resolve()
    expected = set()
    for c in sorted(agent_dir.glob("*.c")):
        if h in includes(c, [agent_dir]):
            expected.add("agent/" + c.name)
    # The unit tests link build/libagent.a: a rebuilt agent object rebuilds
    # them all (each is compiled and linked in one step).
    in_lib = any(s != "agent/main.c" for s in expected)
    for c in sorted(unit_dir.glob("test_*.c")):
        if in_lib or h in includes(c, [unit_dir, agent_dir]):
            expected.add("tests/unit/" + c.name)
    for name in ("null-agent", "spop-load", "chaos-load"):
        c = tree / "bench" / (name + ".c")
        if h in includes(c, [tree / "bench"]):
            expected.add("bench/%s.c" % name)
    assert expected, "no source includes %s: the test would prove nothing" % header
    touch_later(h)
    out = make(tree, "-n", "CFLAGS=-O0", BIN, *unit, *bench).stdout
    got = compiled(out)
    assert got == expected, "touching %s compiles %s, expected %s" % (
        header, sorted(got), sorted(expected))
    make(tree, "-j2", "CFLAGS=-O0", BIN, *unit, *bench, timeout=BUILD_TIMEOUT_S)


@pytest.mark.skipif(not HAVE_CLANG, reason="clang not installed (FUZZ_CC default)")
def test_fuzz_targets_follow_headers_and_flags(built):
    tree, _ = built
    _unit, _bench, fuzz = targets(tree)
    make(tree, "-j2", *fuzz, timeout=BUILD_TIMEOUT_S)    # after the other tests' touches
    assert make(tree, "-q", *fuzz, check=False).returncode == 0
    fuzz_dir, agent_dir = tree / "tests/fuzz", tree / "agent"
    h = (fuzz_dir / "fuzz.h").resolve()
    expected = {"tests/fuzz/" + c.name for c in sorted(fuzz_dir.glob("fuzz_*.c"))
                if h in includes(c, [fuzz_dir, agent_dir])}
    assert expected
    touch_later(h)
    assert compiled(make(tree, "-n", *fuzz).stdout) == expected
    # An agent header: the instrumented agent objects that include it.
    h = (agent_dir / "hex.h").resolve()
    expected = {"agent/" + c.name for c in sorted(agent_dir.glob("*.c"))
                if c.name != "main.c" and h in includes(c, [agent_dir])}
    touch_later(h)
    got = compiled(make(tree, "-n", *fuzz).stdout)
    assert {g for g in got if g.startswith("agent/")} == expected, sorted(got)
    # Another fuzz compiler: everything, with that compiler.
    out = make(tree, "-n", "FUZZ_CC=clang -DFUZZ_FLAGS_CHANGED", *fuzz).stdout
    n_agent = len([c for c in agent_dir.glob("*.c") if c.name != "main.c"])
    assert LLHTTP <= compiled(out), out[:3000]
    assert len(compiled(out)) == n_agent + len(LLHTTP) + len(fuzz), out[:3000]


def test_flags_change_rebuilds_all(built):
    tree, _ = built
    unit, bench, _fuzz = targets(tree)
    make(tree, "-j2", "CFLAGS=-O0", BIN, *unit, *bench, timeout=BUILD_TIMEOUT_S)
    out = make(tree, "-n", "CFLAGS=-O0 -DFLAGS_CHANGED", BIN, *unit, *bench).stdout
    n = len(list((tree / "agent").glob("*.c"))) + len(LLHTTP) + len(unit) + len(bench)
    assert LLHTTP <= compiled(out), out[:3000]
    assert len(compiled(out)) == n, out[:3000]
    # A dry run leaves the stamp alone: the old flags are still up to date.
    assert make(tree, "-q", "CFLAGS=-O0", BIN, *unit, *bench, check=False).returncode == 0
