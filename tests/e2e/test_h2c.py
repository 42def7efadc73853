"""h2c to the user service (upstream-http-version h2c): libcurl speaks
HTTP/2 with prior knowledge to a user service that speaks only that (nginx
with "listen ... http2" and no TLS) and multiplexes the exchanges of a worker
on one connection; with 1.1 the same service gives no usable answer (503)."""
import shutil
import socket
import subprocess
import threading
import time

import pytest

import harness
from harness import HOST, Proc, free_ports, stop_all, wait_log, wait_port

CONCURRENT = 24
H2C_MIN_CURL = 0x080000     # first libcurl that reuses prior-knowledge connections


def libcurl_version():
    """The libcurl the agent links (Debian: the one curl-config describes)."""
    out = subprocess.run(["curl-config", "--vernum"], capture_output=True, text=True)
    return int(out.stdout.strip(), 16)


def test_h2c_through_libcurl_needs_a_libcurl_that_reuses_connections(agent_bin):
    r = subprocess.run([agent_bin, "-c", "--upstream-http-version", "h2c",
                        "--upstream-client", "curl"], capture_output=True, text=True)
    if libcurl_version() < H2C_MIN_CURL:
        assert r.returncode == 1, r
        assert "'upstream-http-version'" in r.stderr and "8.0.0" in r.stderr, r.stderr
    else:
        assert r.returncode == 0, r.stderr


GOAWAY_AFTER = 4           # nginx keepalive_requests: GOAWAY after that many streams
BIG_BODY = 300             # bytes of /api/user/big, above the oversize agent's bound


@pytest.fixture(scope="module")
def h2_user(logdir, tmp_path_factory):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    d = tmp_path_factory.mktemp("nginx-h2c")
    port, goaway_port, h1_port, hole_port = free_ports(4)
    # a listener that accepts (kernel backlog) and never answers: /slow hangs
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind((HOST, hole_port))
    hole.listen(64)
    conf = d / "nginx.conf"
    conf.write_text("""
daemon off;
master_process off;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 1024; }
http {
    log_format proto '$server_port $server_protocol $connection $connection_requests';
    access_log %(d)s/access.log proto;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    default_type text/plain;
    server {
        listen %(host)s:%(port)d http2;
        location /api/user/token {
            if ($http_cookie !~ "session=ok") { return 401 "no"; }
            return 200 "tok-$server_protocol-c$connection";
        }
        location /api/user/big { return 200 "%(big)s"; }
        location /api/user/slow {
            proxy_pass http://%(host)s:%(hole)d;
            proxy_read_timeout 60s;
        }
    }
    server {
        listen %(host)s:%(goaway)d http2;
        keepalive_requests %(after)d;
        location /api/user/token { return 200 "tok-$server_protocol-c$connection"; }
    }
    server {
        listen %(host)s:%(h1)d;
        location /api/user/token { return 200 "tok-$server_protocol-c$connection"; }
    }
}
""" % {"d": d, "host": HOST, "port": port, "goaway": goaway_port, "h1": h1_port,
       "hole": hole_port, "after": GOAWAY_AFTER, "big": "b" * BIG_BODY})
    p = Proc("nginx-h2c", [nginx, "-p", "%s/" % d, "-e", d / "error.log", "-c", conf], logdir)
    try:
        wait_port(port, p)
        yield {"port": port, "url": "http://%s:%d/api/user/token" % (HOST, port),
               "big_url": "http://%s:%d/api/user/big" % (HOST, port),
               "slow_url": "http://%s:%d/api/user/slow" % (HOST, port),
               "goaway_port": goaway_port,
               "goaway_url": "http://%s:%d/api/user/token" % (HOST, goaway_port),
               "h1_url": "http://%s:%d/api/user/token" % (HOST, h1_port),
               "access": d / "access.log"}
    finally:
        stop_all([p])
        hole.close()


def access_lines(h2_user, port):
    """(protocol, connection number) of each request nginx logged on <port>."""
    out = []
    for line in h2_user["access"].read_text().split("\n"):
        f = line.split()
        if len(f) == 4 and f[0] == str(port):
            out.append((f[1], f[2]))
    return out


def gateway(h2_user, demo_services, haproxy_bin, agent_bin, logdir, version, name, url=None,
            extra=(), ready=True):
    """harness.gateway() with one worker speaking <version> to the nginx user
    service at <url> (default: the h2c one)."""
    return harness.gateway(logdir, haproxy_bin, agent_bin, url or h2_user["url"],
                           demo_services["user_port"], demo_services["biz_port"],
                           agent_extra=["--upstream-http-version", version, "--workers", "1",
                                        *extra],
                           agent_name=name, ready=ready, secret=demo_services["secret"])


@pytest.fixture(scope="module")
def h2gw(h2_user, demo_services, haproxy_bin, agent_bin, logdir):
    with gateway(h2_user, demo_services, haproxy_bin, agent_bin, logdir, "h2c",
                 "agent-h2c") as gw:
        yield gw


def identity(r):
    assert r.status == 200, r
    (tok,) = r.json()["x_example_authorization"]
    return tok


def test_native_h2c_starts_whatever_the_libcurl(agent_bin):
    # http:// to an IP literal: the native client, on any libcurl
    for client in ("auto", "native"):
        r = subprocess.run([agent_bin, "-c", "--upstream-http-version", "h2c",
                            "--upstream-client", client], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_h2c_exchanges_share_one_connection(h2gw, h2_user):
    tok = identity(h2gw.get("/api/business/x", [("Cookie", "session=ok")]))
    assert tok.startswith("tok-HTTP/2.0-c"), tok
    assert h2gw.get("/api/business/x", [("Cookie", "session=no")]).status == 401

    toks, errors = [], []

    def one():
        try:
            toks.append(identity(h2gw.get("/api/business/x", [("Cookie", "session=ok")])))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(toks) == CONCURRENT
    # one worker, one multiplexed connection for every exchange
    assert set(toks) == {tok}, set(toks)
    lines = access_lines(h2_user, h2_user["port"])
    assert len(lines) >= CONCURRENT + 2
    assert all(proto == "HTTP/2.0" for proto, _ in lines), lines
    # nginx saw every exchange on one TCP connection
    assert len({conn for _, conn in lines}) == 1, lines


def test_http11_to_an_h2c_only_service_fails_closed(h2_user, demo_services, haproxy_bin,
                                                     agent_bin, logdir):
    with gateway(h2_user, demo_services, haproxy_bin, agent_bin, logdir, "1.1", "agent-h11",
                 ready=False) as gw:
        r = until_agent_answers(gw)
        assert r.status == 503, r


@pytest.mark.parametrize("args", [["--upstream-http-version", "2"],
                                  ["--upstream-http-version", "h2c", "--user-service-url",
                                   "https://127.0.0.1:1/t"]])
def test_bad_values_stop_the_start(agent_bin, args):
    import subprocess
    r = subprocess.run([agent_bin, "-c", *args], capture_output=True, text=True)
    assert r.returncode == 1 and "upstream-http-version" in r.stderr, r.stderr


def concurrent_gets(gw, n, cookie="session=ok"):
    """<n> requests at once through <gw>; the list of responses."""
    out, errors = [], []

    def one():
        try:
            out.append(gw.get("/api/business/x", [("Cookie", cookie)]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(out) == n
    return out


def until_agent_answers(gw):
    """The first answer HAProxy gets with the agent's verdict (it may take a
    moment before HAProxy sees the agent up)."""
    r = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = gw.get("/api/business/x", [("Cookie", "session=ok")])
        if r.header("X-Auth-Cache") is not None:
            return r
        time.sleep(0.05)
    # HAProxy's own 503 (agent not seen up) would pass for the agent's.
    raise AssertionError("no answer carried the agent's verdict: %r" % r)


def test_h2c_goaway_mid_load_loses_nothing(h2_user, demo_services, haproxy_bin, agent_bin,
                                           logdir):
    # nginx closes each connection with GOAWAY after GOAWAY_AFTER streams:
    # streams it did not take are retried on a new connection, none fails.
    with gateway(h2_user, demo_services, haproxy_bin, agent_bin, logdir, "h2c", "agent-goaway",
                 url=h2_user["goaway_url"]) as gw:
        n = 6 * GOAWAY_AFTER
        rs = concurrent_gets(gw, n)
        assert all(r.status == 200 for r in rs), [r.status for r in rs]
        lines = access_lines(h2_user, h2_user["goaway_port"])
        conns = {conn for _, conn in lines}
        assert len(conns) >= n // GOAWAY_AFTER, lines
        assert all(proto == "HTTP/2.0" for proto, _ in lines), lines


def test_h2c_timeout_fails_closed_and_the_connection_goes_on(h2_user, demo_services,
                                                             haproxy_bin, agent_bin, logdir):
    with gateway(h2_user, demo_services, haproxy_bin, agent_bin, logdir, "h2c", "agent-slow",
                 url=h2_user["slow_url"], extra=["--timeout", "300ms"], ready=False) as gw:
        r = until_agent_answers(gw)
        assert r.status == 503, r
        wait_log(gw.agent, "no usable answer: timeout")
        assert gw.agent.alive()


def test_h2c_oversize_answer_fails_that_exchange_only(h2_user, demo_services, haproxy_bin,
                                                      agent_bin, logdir):
    with gateway(h2_user, demo_services, haproxy_bin, agent_bin, logdir, "h2c", "agent-big",
                 url=h2_user["big_url"], extra=["--max-response-size", str(BIG_BODY // 2)],
                 ready=False) as gw:
        r = until_agent_answers(gw)
        assert r.status == 503, r
        wait_log(gw.agent, "no usable answer: response too large")


def test_h2c_to_an_http11_only_service_is_a_clear_error_not_a_hang(
        h2_user, demo_services, haproxy_bin, agent_bin, logdir):
    # a long exchange timeout: a hang would show as the client's timeout
    with gateway(h2_user, demo_services, haproxy_bin, agent_bin, logdir, "h2c", "agent-h1only",
                 url=h2_user["h1_url"], extra=["--timeout", "30s"], ready=False) as gw:
        r = until_agent_answers(gw)
        assert r.status == 503, r
        # nginx without http2 on its listen line closes on our preface
        wait_log(gw.agent, "speak h2c")
