"""/metrics through a real HAProxy: the exposition parses under a strict
Prometheus text-format parser, and its counters match what was sent
(N allowed + M denied + K errors, upstream calls by class, the latency
histogram, frames, connections, protocol errors after a raw bad frame)."""
import math
import re
import struct
import time

import pytest

import spop
from harness import gateway, http, new_case

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z|[+-]Inf\Z|NaN\Z")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count"),
            "counter": ("",), "gauge": ("",), "untyped": ("",)}


def parse_labels(text):
    """'{a="x",b="y"}' -> (("a","x"),("b","y")), strictly."""
    assert text.startswith("{") and text.endswith("}"), text
    body, out, pos = text[1:-1], [], 0
    while pos < len(body):
        m = LABEL.match(body, pos)
        assert m, "bad label syntax at %r" % body[pos:]
        out.append((m.group(1), m.group(2)))
        pos = m.end()
        if pos < len(body):
            assert body[pos] == ",", "bad label separator in %r" % text
            pos += 1
    names = [k for k, _ in out]
    assert len(names) == len(set(names)), "repeated label in %r" % text
    return tuple(out)


def parse_exposition(text):
    """Strict text format 0.0.4: returns {family: {"type", "help", "samples":
    {(name, labels): value}}}. HELP/TYPE at most once per family and before
    its samples, samples of a family contiguous, names and labels in their
    charsets, values floats, histograms cumulative with +Inf == _count."""
    assert text.endswith("\n"), "no final newline"
    fams, current = {}, None
    for line in text.split("\n")[:-1]:
        assert line == line.strip() and line, "blank or padded line %r" % line
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert NAME.match(name), line
                f = fams.setdefault(name, {"samples": {}})
                key = parts[1].lower()
                assert key not in f, "second %s for %s" % (parts[1], name)
                assert not f["samples"], "%s after samples of %s" % (parts[1], name)
                f[key] = parts[3] if len(parts) > 3 else ""
                if key == "type":
                    assert f["type"] in SUFFIXES, line
                current = name
            continue
        m = re.match(r"([^{ ]+)(\{.*\})? (\S+)( -?\d+)?\Z", line)
        assert m, "bad sample line %r" % line
        name, labels, value = m.group(1), m.group(2), m.group(3)
        assert NAME.match(name), line
        assert FLOAT.match(value), "bad value in %r" % line
        labels = parse_labels(labels) if labels else ()
        family = None
        for fam, f in fams.items():
            if any(name == fam + s for s in SUFFIXES[f.get("type", "untyped")]):
                family = fam
        assert family is not None and "type" in fams[family] and "help" in fams[family], \
            "%s: no HELP/TYPE before it" % name
        assert family == current, "samples of %s not contiguous" % family
        key = (name, labels)
        assert key not in fams[family]["samples"], "duplicate sample %r" % line
        fams[family]["samples"][key] = float(value)
    for fam, f in fams.items():
        if f.get("type") != "histogram":
            continue
        s = f["samples"]
        buckets = sorted((float(dict(lab)["le"]), v) for (n, lab), v in s.items()
                         if n == fam + "_bucket")
        assert buckets and math.isinf(buckets[-1][0]), "%s: no +Inf bucket" % fam
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), \
            "%s: buckets not cumulative %r" % (fam, buckets)
        assert buckets[-1][1] == s[(fam + "_count", ())], "%s: +Inf != _count" % fam
        # Observations are durations of real calls: with any counted, the sum
        # is above 0; with none, it is 0.
        count, total = s[(fam + "_count", ())], s[(fam + "_sum", ())]
        assert (total > 0) if count > 0 else (total == 0), \
            "%s: _sum %r for _count %r" % (fam, total, count)
    return fams


def value(fams, name, **labels):
    for f in fams.values():
        for (n, lab), v in f["samples"].items():
            if n == name and dict(lab) == labels:
                return v
    raise KeyError("%s%r not exposed" % (name, labels))


def scrape(port):
    r = http(port, "GET", "/metrics")
    assert r.status == 200 and r.header("Content-Type").startswith("text/plain; version=0.0.4")
    return parse_exposition(r.body.decode())


def test_parser_rejects_bad_expositions():
    good = ("# HELP x_total A counter.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\n"
            "# HELP h A histogram.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
            "h_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n")
    parse_exposition(good)
    for bad in (good.replace("x_total{a=\"1\"} 3", "x_total{a=1} 3"),
                good.replace(" 3\n", " three\n"),
                good.replace("h_count 2", "h_count 3"),
                good.replace("h_sum 0.5", "h_sum 0"),
                good.replace("h_sum 0.5", "h_sum -1"),
                good.replace("le=\"1\"} 1", "le=\"1\"} 5"),
                good.replace("# TYPE x_total counter\n", ""),
                good.replace("x_total{", "1x_total{"),
                good[:-1]):
        with pytest.raises(AssertionError):
            parse_exposition(bad)


@pytest.fixture(params=("cache-off", "cache-on"))
def stack(request, fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    """HAProxy + an agent with the cache off or on (request.param), fresh for
    each test: its counters start from what this test does."""
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=("--cache", request.param.split("-")[1]),
                 admin=True) as gw:
        yield gw.port, gw.agent_port, gw.admin_port, request.param == "cache-on"


def test_counters_match_requests(stack, fake_user):
    gw_port, agent_port, admin_port, cache_on = stack
    allow, deny, err = new_case(), new_case(), new_case()
    fake_user.program(allow, status=200, body=b"tok-" + allow.encode())
    fake_user.program(deny, status=403, body=b"no")
    fake_user.program(err, close=True)
    N, M, K = 7, 5, 3
    before = scrape(admin_port)
    sent = 0
    for case, n, want in ((allow, N, 200), (deny, M, 403), (err, K, 503)):
        for i in range(n):
            # A distinct cookie each time: every request reaches the user service.
            r = http(gw_port, "GET", "/api/business/m", [("Cookie", "case=%s; n=%d" % (case, i))])
            assert r.status == want, r
            sent += 1

    def delta(name, **labels):
        try:
            old = value(before, name, **labels)
        except KeyError:
            old = 0.0
        return value(after, name, **labels) - old

    want = {
        ("spoa_auth_decisions_total", "allow"): N,
        ("spoa_auth_decisions_total", "deny"): M,
        ("spoa_auth_decisions_total", "error"): K,
    }
    deadline = time.monotonic() + 3
    while True:  # a worker counts a frame after writing it: HAProxy may be faster
        after = scrape(admin_port)
        got = {k: delta(k[0], outcome=k[1]) for k in want}
        if (got == want and delta("spoa_auth_spop_frames_sent_total") >= sent) or \
                time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got == want, got
    assert delta("spoa_auth_upstream_requests_total", **{"class": "2xx"}) == N
    assert delta("spoa_auth_upstream_requests_total", **{"class": "4xx"}) == M
    assert delta("spoa_auth_upstream_requests_total", **{"class": "none"}) == K
    assert delta("spoa_auth_upstream_duration_seconds_count") == N + M + K
    assert delta("spoa_auth_spop_frames_received_total") >= sent
    assert delta("spoa_auth_spop_frames_sent_total") >= sent
    assert value(after, "spoa_auth_spop_connections") > 0
    assert value(after, "spoa_auth_spop_connections_accepted_total") >= 1
    assert value(after, "spoa_auth_exchanges_in_flight") == 0
    assert value(after, "spoa_auth_draining") == 0
    # With the cache on, each decision consulted it once, and missed (all keys
    # distinct), and each answer of the user service was stored (2xx, and the
    # 403s under the default cache-deny-ttl; a failed call is not); with it
    # off, nothing did.
    results = {r: delta("spoa_auth_cache_results_total", result=r)
               for r in ("hit", "miss", "coalesced", "stale")}
    want_results = {"hit": 0, "miss": N + M + K if cache_on else 0, "coalesced": 0, "stale": 0}
    assert results == want_results, (cache_on, results)
    assert delta("spoa_auth_cache_evictions_total") == 0
    if cache_on:
        assert delta("spoa_auth_cache_entries") == N + M, value(after, "spoa_auth_cache_entries")
        assert delta("spoa_auth_cache_bytes") > 0
    else:
        assert value(after, "spoa_auth_cache_entries") == 0
        assert value(after, "spoa_auth_cache_bytes") == 0

    # A raw frame longer than negotiated: DISCONNECT 3, counted by status.
    with spop.Client(agent_port) as c:
        max_size = c.hello().kv()["max-frame-size"][1]
        c.send(struct.pack(">I", max_size + 1) + b"\x03\x01" + b"x" * 64)
        f = c.recv_frame(timeout=5)
        assert f is not None and f.type == spop.AGENT_DISCONNECT, f
    deadline = time.monotonic() + 3
    while True:
        after = scrape(admin_port)
        if delta("spoa_auth_spop_protocol_errors_total", status="3") == 1 or \
                time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert delta("spoa_auth_spop_protocol_errors_total", status="3") == 1
    assert delta("spoa_auth_spop_protocol_errors_total", status="4") == 0
