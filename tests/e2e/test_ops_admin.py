"""The admin listener of the real agent (admin-listen): /healthz while serving
and while draining, /metrics as valid Prometheus text (HELP/TYPE for every
family, cumulative histogram whose +Inf bucket equals _count) whose counters
move when HAProxy's side (played here over SPOP) sends exchanges. Every
agent runs through the harness: a clean exit and no sanitizer report are
part of each test."""
import math
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from harness import AGENT_STARTED, free_ports, start_agent, start_agent_args, stop_all, wait_log
from spop import ACK, NOTIFY, Client, frame, notify_payload

FAMILIES = {
    "spoa_auth_decisions_total": "counter",
    "spoa_auth_upstream_requests_total": "counter",
    "spoa_auth_upstream_duration_seconds": "histogram",
    "spoa_auth_upstream_attempts_total": "counter",
    "spoa_auth_upstream_retries_total": "counter",
    "spoa_auth_exchanges_in_flight": "gauge",
    "spoa_auth_spop_connections": "gauge",
    "spoa_auth_spop_connections_accepted_total": "counter",
    "spoa_auth_spop_connections_refused_total": "counter",
    "spoa_auth_spop_frames_received_total": "counter",
    "spoa_auth_spop_frames_sent_total": "counter",
    "spoa_auth_spop_protocol_errors_total": "counter",
    "spoa_auth_ack_too_big_total": "counter",
    "spoa_auth_claims_skipped_total": "counter",
    "spoa_auth_draining": "gauge",
}


def get(port, path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse_metrics(text):
    """Checks the text format; returns {(name, labels): value}."""
    assert text.endswith("\n")
    help_, type_, samples = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert doc and name not in help_, line
            help_[name] = doc
        elif line.startswith("# TYPE "):
            name, _, t = line[7:].partition(" ")
            assert t in ("counter", "gauge", "histogram") and name not in type_, line
            type_[name] = t
        else:
            m = SAMPLE.match(line)
            assert m, f"bad sample line: {line!r}"
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            family = base if type_.get(base) == "histogram" else name
            assert family in type_ and family in help_, f"{name}: no HELP/TYPE before it"
            samples[(name, labels)] = float(value)
    for name, t in FAMILIES.items():
        assert type_.get(name) == t, f"{name}: TYPE {type_.get(name)}, want {t}"
    # Histogram: le ascending, cumulative, +Inf == _count.
    h = "spoa_auth_upstream_duration_seconds"
    buckets = [(float(re.search(r'le="([^"]+)"', lab).group(1).replace("+Inf", "inf")), v)
               for (n, lab), v in samples.items() if n == h + "_bucket"]
    assert buckets and buckets == sorted(buckets), buckets
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets
    assert math.isinf(buckets[-1][0]) and buckets[-1][1] == samples[(h + "_count", "")]
    # Every observation is a real call (microseconds at least): a sum of 0
    # with calls counted, or a negative one, is a broken histogram.
    count, total = samples[(h + "_count", "")], samples[(h + "_sum", "")]
    assert (total > 0) if count > 0 else (total == 0), (count, total)
    return samples


def exchange(client, sid, uri="/api/business/x"):
    client.send(frame(NOTIFY, notify_payload([("exchange", [("uri", uri), ("src", "127.0.0.1"),
                                                            ("cookie", "session=abc")])]),
                      sid=sid, fid=1))
    f = client.recv_frame(timeout=10)
    assert f is not None and f.type == ACK and f.sid == sid, f
    return f.vars()


class BlackHole:
    """A user service that accepts and never answers: exchanges stay in flight."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        try:
            while True:
                c, _ = self.sock.accept()
                self.conns.append(c)
        except OSError:
            pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def start(agent_bin, logdir, spop_port, user_url, *extra):
    """The agent on <spop_port> with its admin listener on a free port
    (p.admin_port), through the harness (its log, its sanitizer scan)."""
    p = start_agent(logdir, agent_bin, spop_port, user_url, extra=extra, admin=True)
    wait_log(p, AGENT_STARTED)
    return p


def test_metrics_and_health(agent_bin, logdir):
    spop_port, dead_port = free_ports(2)
    p = start(agent_bin, logdir, spop_port, f"http://127.0.0.1:{dead_port}/api/user/token",
              "--timeout", "500ms")
    admin_port = p.admin_port
    try:
        st, hdrs, body = get(admin_port, "/healthz")
        assert (st, body) == (200, "ok\n")

        st, hdrs, body = get(admin_port, "/metrics")
        assert st == 200 and hdrs["Content-Type"].startswith("text/plain; version=0.0.4")
        before = parse_metrics(body)

        with Client(spop_port) as c:
            c.hello()
            for sid in (1, 3):
                v = exchange(c, sid)
                assert v.get("outcome") in ("error", b"error") and v.get("status") == 0, v
            conns = parse_metrics(get(admin_port, "/metrics")[2])
            assert conns[("spoa_auth_spop_connections", "")] >= 1

        want = {
            ("spoa_auth_decisions_total", '{outcome="error"}'): lambda d: d == 2,
            ("spoa_auth_decisions_total", '{outcome="allow"}'): lambda d: d == 0,
            ("spoa_auth_upstream_requests_total", '{class="none"}'): lambda d: d == 2,
            ("spoa_auth_upstream_duration_seconds_count", ""): lambda d: d == 2,
            # refused: the default retries once on connect failure
            ("spoa_auth_upstream_attempts_total", '{client="native"}'): lambda d: d == 4,
            ("spoa_auth_upstream_retries_total", '{reason="connect"}'): lambda d: d == 2,
            ("spoa_auth_spop_connections_accepted_total", ""): lambda d: d >= 1,
            ("spoa_auth_spop_frames_received_total", ""): lambda d: d >= 3,
            ("spoa_auth_spop_frames_sent_total", ""): lambda d: d >= 3,
        }
        # A worker counts a frame after writing it: the client may be faster.
        deadline = time.monotonic() + 3
        while True:
            after = parse_metrics(get(admin_port, "/metrics")[2])
            bad = {k: after[k] - before.get(k, 0) for k, ok in want.items()
                   if not ok(after[k] - before.get(k, 0))}
            if not bad or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not bad, bad
        assert after[("spoa_auth_draining", "")] == 0

        assert get(admin_port, "/nope")[0] == 404
        assert get(admin_port, "/metrics", method="POST")[0] == 405
        assert get(admin_port, "/healthz", method="HEAD")[0] == 200

        p.terminate()
    finally:
        stop_all([p])


def test_healthz_503_while_draining(agent_bin, logdir):
    hole = BlackHole()
    spop_port, = free_ports(1)
    p = start(agent_bin, logdir, spop_port, f"http://127.0.0.1:{hole.port}/api/user/token",
              "--timeout", "4000ms", "--drain-timeout", "3s")
    admin_port = p.admin_port
    try:
        with Client(spop_port) as c:
            c.hello()
            c.send(frame(NOTIFY, notify_payload([("exchange", [("uri", "/api/business/slow")])]),
                         sid=1, fid=1))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not hole.conns:
                time.sleep(0.02)
            assert hole.conns, "the agent never called the user service"
            p.signal(signal.SIGTERM)
            # In-flight exchange keeps the agent draining; /healthz must say so.
            seen = None
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    seen = get(admin_port, "/healthz")
                except OSError:
                    break
                if seen[0] == 503:
                    break
                time.sleep(0.02)
            assert seen is not None and seen[0] == 503 and "draining" in seen[2], seen
        p.wait_exit(0)
    finally:
        stop_all([p])
        hole.close()


def test_admin_off(agent_bin, logdir):
    spop_port, = free_ports(1)
    p = start_agent_args(logdir, agent_bin, ["--listen", f"127.0.0.1:{spop_port}",
                                             "--admin-listen", "off", "--workers", "1"],
                         ports=(spop_port,))
    try:
        p.terminate()
    finally:
        stop_all([p])
    assert "admin: serving" not in p.tail(1 << 22)
    assert "listening on" in p.tail(1 << 22)


def test_monitoring_answers_while_connections_are_held(agent_bin, logdir):
    """Another local process holding idle connections (and some with half a
    request sent) to the admin port must not lock /healthz and /metrics out:
    eight used to be enough (libmicrohttpd's per-address limit)."""
    spop_port, dead_port = free_ports(2)
    p = start(agent_bin, logdir, spop_port, f"http://127.0.0.1:{dead_port}/api/user/token")
    admin_port = p.admin_port
    held = []
    try:
        for i in range(32):
            s = socket.create_connection(("127.0.0.1", admin_port), timeout=5)
            if i % 4 == 0:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            held.append(s)
        for _ in range(3):
            st, _, body = get(admin_port, "/healthz")
            assert (st, body) == (200, "ok\n")
            st, _, body = get(admin_port, "/metrics")
            assert st == 200 and "spoa_auth_spop_connections " in body
            # And again after the attacker opens as many more.
            for _ in range(8):
                held.append(socket.create_connection(("127.0.0.1", admin_port), timeout=5))
        p.terminate()
    finally:
        for s in held:
            s.close()
        stop_all([p])
