"""Retries to the user service (upstream-retries, upstream-retry-on,
upstream-attempt-timeout, upstream-retry-backoff) on both client paths: the
native client and libcurl (--upstream-client curl with an http:// URL forces
the libcurl path; an https user service has no other, and the https cases
run the same fake behind TLS).

The user service is a scripted raw-socket fake on a free loopback port: each
connection it accepts reads one request and plays the next step of its
script (reset before any byte, close without an answer, 503, a response cut
by a reset after some bytes, hang, or 200), so every attempt the agent makes
is a connection and a recorded request. Tests assert statuses and counts
(requests seen by the fake, attempts and retries in /metrics), never timing.
"""
import socket
import ssl
import subprocess
import struct
import threading
import time

import pytest

from harness import HOST, free_ports, metric, new_case, start_agent_args, stop_all, wait_metric
from spop import ACK, NOTIFY, Client, frame, notify_payload

CLIENTS = ["native", "curl"]
ANSWER_200 = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
              b"Connection: close\r\n\r\ntok")
ANSWER_503 = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 4\r\nConnection: close\r\n\r\nbusy")
# The status line and headers of a 200, some of its body, then a reset.
ANSWER_CUT = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n"
              b"Connection: close\r\n\r\ntok-")
HANG_S = 5.0    # a hanging step holds its connection at most this long


class ScriptedUser:
    """A user service on a free port playing <script> (one step per accepted
    connection, the last step repeated). <listen_after>: seconds before it
    starts listening (until then connects are refused: the port is bound but
    not listening). <tls>: an ssl.SSLContext to serve https with."""

    def __init__(self, script, listen_after=0.0, tls=None):
        self.script, self.requests, self.lock = list(script), 0, threading.Lock()
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.tls = tls
        self.url = "%s://%s:%d/api/user/token" % ("https" if tls else "http", HOST, self.port)
        self.listen_after = listen_after
        self.thread = threading.Thread(target=self._run, daemon=True)
        if not listen_after:
            self.sock.listen(16)
        self.thread.start()

    def _run(self):
        if self.listen_after:
            self.stop.wait(self.listen_after)
            self.sock.listen(16)
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(HANG_S)
        buf = b""
        try:
            if self.tls:
                c = self.tls.wrap_socket(c, server_side=True)
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            with self.lock:
                step = self.script[min(self.requests, len(self.script) - 1)]
                self.requests += 1
            if step == "reset":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif step == "close":
                pass
            elif step == "503":
                c.sendall(ANSWER_503)
            elif step == "cut":
                c.sendall(ANSWER_CUT)
                time.sleep(0.05)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif step == "hang":
                self.stop.wait(HANG_S)
            else:
                c.sendall(ANSWER_200)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=2)


@pytest.fixture
def scripted():
    made = []

    def make(script, listen_after=0.0, tls=None):
        s = ScriptedUser(script, listen_after, tls)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def start(logdir, agent_bin, client, user, *extra):
    spop_port, admin_port = free_ports(2)
    p = start_agent_args(logdir, agent_bin,
                         ["--listen", "%s:%d" % (HOST, spop_port),
                          "--admin-listen", "%s:%d" % (HOST, admin_port), "--workers", "1",
                          "--user-service-url", user.url, "--upstream-client", client, *extra],
                         name="agent-retry-" + client, ports=(spop_port, admin_port))
    p.spop_port, p.admin_port = spop_port, admin_port
    return p


def exchange(p):
    """One exchange over SPOP; the ACK's variables."""
    with Client(p.spop_port) as c:
        c.hello()
        c.send(frame(NOTIFY, notify_payload([("exchange", [("uri", "/api/business/x"),
                                                            ("src", "127.0.0.1"),
                                                            ("cookie", "case=" + new_case())])]),
                     sid=1, fid=1))
        f = c.recv_frame(timeout=15)
        assert f is not None and f.type == ACK, f
        return f.vars()


def status(v):
    return v.get("status")


def attempts(p, client):
    return metric(p.admin_port, "spoa_auth_upstream_attempts_total", client=client) or 0


def retries(p, reason):
    return metric(p.admin_port, "spoa_auth_upstream_retries_total", reason=reason) or 0


def settle(p, client, want):
    """The attempts counter once the exchange was counted (bounded wait)."""
    return wait_metric(p.admin_port, "spoa_auth_upstream_attempts_total", want, timeout=5,
                       client=client)


def settle_attempts(p, client):
    """The attempts of the one exchange made (counted before its ACK is
    built), after checking it is the only one counted."""
    assert wait_metric(p.admin_port, "spoa_auth_upstream_duration_seconds_count", 1,
                       timeout=5) == 1
    return attempts(p, client)


@pytest.mark.parametrize("client", CLIENTS)
def test_connect_refused_then_success(scripted, agent_bin, logdir, client):
    # Refused until the fake listens; retries with a doubling backoff outlast that.
    user = scripted(["200"], listen_after=0.3)
    p = start(logdir, agent_bin, client, user, "--timeout", "8s", "--upstream-retries", "6",
              "--upstream-retry-backoff", "200ms")
    try:
        v = exchange(p)
        assert status(v) == 200, v
        assert user.requests == 1
        n = retries(p, "connect")
        assert n >= 1
        assert settle(p, client, n + 1) == n + 1
        p.terminate()
    finally:
        stop_all([p])


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("step", ["reset", "close"])
def test_reset_before_any_byte(scripted, agent_bin, logdir, client, step):
    user = scripted([step, "200"])
    p = start(logdir, agent_bin, client, user, "--timeout", "3s",
              "--upstream-retry-on", "connect,reset")
    try:
        v = exchange(p)
        assert status(v) == 200, v
        assert user.requests == 2
        assert retries(p, "reset") == 1
        assert settle(p, client, 2) == 2
        p.terminate()
    finally:
        stop_all([p])


@pytest.mark.parametrize("client", CLIENTS)
def test_reset_not_retried_by_default(scripted, agent_bin, logdir, client):
    # Default policy: one retry on connect failure only; the server saw this one.
    user = scripted(["reset", "200"])
    p = start(logdir, agent_bin, client, user, "--timeout", "3s")
    try:
        v = exchange(p)
        assert status(v) == 0, v
        assert user.requests == 1
        assert settle(p, client, 1) == 1
        assert retries(p, "reset") == 0
        p.terminate()
    finally:
        stop_all([p])


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("configured", [True, False])
def test_503(scripted, agent_bin, logdir, client, configured):
    user = scripted(["503", "200"])
    retry_on = "connect,503" if configured else "connect,502,504"
    p = start(logdir, agent_bin, client, user, "--timeout", "3s", "--upstream-retry-on", retry_on)
    try:
        v = exchange(p)
        if configured:
            assert status(v) == 200, v
            assert user.requests == 2
            assert retries(p, "status") == 1
            assert settle(p, client, 2) == 2
        else:
            assert status(v) == 503, v
            assert user.requests == 1
            assert retries(p, "status") == 0
            assert settle(p, client, 1) == 1
        p.terminate()
    finally:
        stop_all([p])


@pytest.mark.parametrize("client", CLIENTS)
def test_reset_after_response_bytes_not_retried(scripted, agent_bin, logdir, client):
    user = scripted(["cut", "200"])
    p = start(logdir, agent_bin, client, user, "--timeout", "3s", "--upstream-retries", "3",
              "--upstream-retry-on", "connect,reset,timeout,502,503,504",
              "--upstream-attempt-timeout", "1s")
    try:
        v = exchange(p)
        assert status(v) == 0, v
        assert user.requests == 1
        assert settle(p, client, 1) == 1
        assert sum(retries(p, r) for r in ("connect", "reset", "timeout", "status")) == 0
        p.terminate()
    finally:
        stop_all([p])


@pytest.mark.parametrize("client", CLIENTS)
def test_budget_bounds_status_retries(scripted, agent_bin, logdir, client):
    # Ten retries allowed, but the backoff (100 ms doubling) spends a 1 s
    # budget after a few: the last 503 is the answer, never an 11th attempt.
    user = scripted(["503"])
    p = start(logdir, agent_bin, client, user, "--timeout", "1s", "--upstream-retries", "10",
              "--upstream-retry-on", "503", "--upstream-retry-backoff", "100ms")
    try:
        v = exchange(p)
        # The last attempt may be one the budget ends before its answer.
        assert status(v) in (503, 0), v
        n = settle_attempts(p, client)
        assert 2 <= n <= 5, n
        assert retries(p, "status") == n - 1
        assert n - 1 <= user.requests <= n
        p.terminate()
    finally:
        stop_all([p])


@pytest.mark.parametrize("client", CLIENTS)
def test_attempt_timeouts_within_the_budget(scripted, agent_bin, logdir, client):
    # Each attempt hangs; each ends at upstream-attempt-timeout (300 ms) and
    # is retried while the 1 s budget lasts: a handful, never the 11 allowed.
    user = scripted(["hang"])
    p = start(logdir, agent_bin, client, user, "--timeout", "1s", "--upstream-retries", "10",
              "--upstream-retry-on", "timeout", "--upstream-attempt-timeout", "300ms",
              "--upstream-retry-backoff", "0ms")
    try:
        v = exchange(p)
        assert status(v) == 0, v
        n = settle_attempts(p, client)
        assert 2 <= n <= 5, n
        assert retries(p, "timeout") == n - 1
        # The fake may not have read the last request (the budget's end) yet.
        assert 1 <= user.requests <= n
        p.terminate()
    finally:
        stop_all([p])


@pytest.fixture
def tls_cert(tmp_path):
    """A throw-away certificate for 127.0.0.1: (server context, CA file)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=" + HOST,
                    "-addext", "subjectAltName=IP:" + HOST, "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=30)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx, str(cert)


@pytest.mark.parametrize("script,retry_on,want_status,want_requests,reason", [
    (["reset", "200"], "connect,reset", 200, 2, "reset"),
    (["503", "200"], "connect,503", 200, 2, "status"),
    (["503", "200"], "connect", 503, 1, None),
    (["cut", "200"], "connect,reset,timeout,502,503,504", 0, 1, None),
])
def test_https(scripted, tls_cert, agent_bin, logdir, script, retry_on, want_status,
               want_requests, reason):
    # https: libcurl is the only client (upstream-client auto picks it).
    ctx, ca = tls_cert
    user = scripted(script, tls=ctx)
    p = start(logdir, agent_bin, "auto", user, "--timeout", "3s", "--ca-file", ca,
              "--upstream-retry-on", retry_on)
    try:
        v = exchange(p)
        assert status(v) == want_status, v
        assert user.requests == want_requests
        assert settle(p, "curl", want_requests) == want_requests
        if reason:
            assert retries(p, reason) == want_requests - 1
        p.terminate()
    finally:
        stop_all([p])
