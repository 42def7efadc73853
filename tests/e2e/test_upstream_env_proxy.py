"""The user-service client takes nothing from the environment or the home
directory: no proxy unless `upstream-proxy` names one (the proxy variables
libcurl reads by default used to send Cookie and Authorization to whatever
they named, and its 200 became an allow), no redirect followed, no netrc, no
cookie engine.

Each test plays HAProxy over SPOP against the real agent, with the fake user
service behind it and a fake proxy on loopback that records every byte it
gets and, if it ever got a request, would answer an allow of its own. The
first test is the control: with `upstream-proxy` set, the proxy does see the
request, so the fake proxy can tell. Kept in its own file so that it runs
against whichever client path the agent uses for a given URL."""
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from fake_user_service import FakeUserService
from harness import HOST, new_case, solo_agent
from spop import ACK, NOTIFY, Client, frame, notify_payload

PROXY_TOKEN = b"proxy-token"
PROXY_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(PROXY_TOKEN), PROXY_TOKEN))
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY")


class FakeProxy:
    """Accepts, records what arrives, answers 200 with PROXY_TOKEN."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = "http://%s:%d" % (HOST, self.port)
        self.lock = threading.Lock()
        self.conns = 0
        self.data = b""
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(2)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                b = c.recv(4096)
                if not b:
                    break
                buf += b
            with self.lock:
                self.data += buf
            c.sendall(PROXY_ANSWER)
        except OSError:
            pass
        finally:
            c.close()

    def seen(self):
        with self.lock:
            return self.conns, self.data

    def close(self):
        self.sock.close()


@pytest.fixture
def proxy():
    p = FakeProxy()
    yield p
    p.close()


def env_pointing_at(proxy_url):
    env = {v: proxy_url for v in PROXY_VARS}
    # A NO_PROXY that would not exempt loopback: only the agent's own rule
    # may keep the proxy out.
    env.update({"NO_PROXY": "", "no_proxy": ""})
    return env


@pytest.fixture
def agent_with(bringup, fake_user):
    """Starts an agent with <env> and <extra>, returns its port; stops every
    one at the end."""

    def start(env=None, extra=()):
        return bringup.agent(fake_user.url, extra=extra, env=env).port

    return start


def exchange(port, case, sid=1, authorization=None):
    """One NOTIFY for <case> on a new connection; returns the ACK's variables."""
    args = [("uri", "/api/business/x"), ("src", "127.0.0.1"), ("cookie", "case=" + case)]
    if authorization:
        args.append(("authorization", authorization))
    with Client(port) as c:
        c.hello()
        c.send(frame(NOTIFY, notify_payload([("exchange", args)]), sid=sid, fid=1))
        f = c.recv_frame(timeout=10)
        assert f is not None and f.type == ACK and f.sid == sid, f
        return f.vars()


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def test_configured_proxy_is_used(agent_with, fake_user, proxy):
    """Control: upstream-proxy set, the fake proxy gets the request."""
    case = new_case()
    fake_user.program(case, status=200, body="user-token")
    port = agent_with(extra=("--upstream-proxy", proxy.url))
    v = exchange(port, case)
    conns, data = proxy.seen()
    assert conns >= 1 and b"GET http://" in data, (conns, data)
    assert text(v.get("token")) == PROXY_TOKEN.decode(), v


def test_proxy_environment_ignored(agent_with, fake_user, proxy):
    case = new_case()
    fake_user.program(case, status=200, body="user-token")
    port = agent_with(env=env_pointing_at(proxy.url))
    v = exchange(port, case, authorization="Bearer secret-credential")
    assert text(v.get("outcome")) == "allow" and text(v.get("token")) == "user-token", v
    calls = fake_user.calls(case)
    assert len(calls) == 1, calls
    time.sleep(0.2)  # a connection to the proxy would have been made by now
    assert proxy.seen() == (0, b""), proxy.seen()


def test_socks_environment_ignored(agent_with, fake_user, proxy):
    case = new_case()
    fake_user.program(case, status=200, body="user-token")
    socks = "socks5h://%s:%d" % (HOST, proxy.port)
    port = agent_with(env={"ALL_PROXY": socks, "all_proxy": socks, "NO_PROXY": ""})
    v = exchange(port, case)
    assert text(v.get("token")) == "user-token", v
    time.sleep(0.2)
    assert proxy.seen() == (0, b""), proxy.seen()


@pytest.mark.parametrize("location", ["{proxy}/elsewhere", "file:///etc/passwd",
                                      "gopher://127.0.0.1:{port}/x"])
def test_redirect_is_a_refusal_not_followed(agent_with, fake_user, proxy, location):
    case = new_case()
    location = location.format(proxy=proxy.url, port=proxy.port)
    fake_user.program(case, status=302, body="", headers=[("Location", location)])
    port = agent_with()
    v = exchange(port, case)
    assert v.get("status") == 302 and text(v.get("outcome")) == "deny", v
    assert text(v.get("location")) == location, v
    time.sleep(0.2)
    assert proxy.seen() == (0, b""), proxy.seen()
    assert len(fake_user.calls(case)) == 1


def test_netrc_in_home_not_used(agent_with, fake_user, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine %s login netrc-user password netrc-password\n"
                     "default login netrc-user password netrc-password\n" % HOST)
    os.chmod(netrc, 0o600)
    case = new_case()
    fake_user.program(case, status=200, body="user-token")
    port = agent_with(env={"HOME": str(home), "NETRC": str(netrc)})
    exchange(port, case)
    calls = fake_user.calls(case)
    assert len(calls) == 1
    names = [k.lower() for k, _ in calls[0]["headers"]]
    assert "authorization" not in names, calls[0]["headers"]


def test_no_cookie_engine(agent_with, fake_user):
    """A Set-Cookie from the user service never comes back on a later call
    (same worker, same pooled handle and connection)."""
    case = new_case()
    fake_user.program(case, status=200, body="user-token",
                      headers=[("Set-Cookie", "engine=replayed; Path=/")])
    port = agent_with(extra=("--workers", "1"))
    for sid in (1, 3, 5):
        exchange(port, case, sid=sid)
    calls = fake_user.calls(case)
    assert len(calls) == 3
    for c in calls:
        cookies = [v for k, v in c["headers"] if k.lower() == "cookie"]
        assert cookies == ["case=" + case], c["headers"]


@pytest.fixture
def tls_user(tmp_path):
    """The fake user service over https, with a throw-away certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=" + HOST,
                    "-addext", "subjectAltName=IP:" + HOST, "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=30)
    fake = FakeUserService()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    fake.server.socket = ctx.wrap_socket(fake.server.socket, server_side=True)
    fake.url = fake.url.replace("http://", "https://")
    fake.cert = cert
    fake.start()
    yield fake
    fake.stop()


def test_sslkeylogfile_ignored(agent_bin, logdir, tls_user, tmp_path):
    """libcurl's OpenSSL backend writes TLS secrets to $SSLKEYLOGFILE: the
    agent must not, or whoever reads that file reads the credentials."""
    keylog = tmp_path / "keys.log"
    case = new_case()
    tls_user.program(case, status=200, body="user-token")
    with solo_agent(logdir, agent_bin, tls_user.url, ("--ca-file", str(tls_user.cert)),
                    env={"SSLKEYLOGFILE": str(keylog)}) as p:
        v = exchange(p.port, case)
        assert text(v.get("token")) == "user-token", v
    assert not keylog.exists() or keylog.read_text() == "", keylog.read_text()[:200]
