"""End-to-end test harness: processes with captured logs, free ports, a
plain HTTP client that sends headers exactly as given, and starters for the
demo services, the agent and HAProxy (with the shipped configuration)."""
import atexit
import contextlib
import http.client as httpclient
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HAPROXY_CFG = REPO / "haproxy" / "haproxy.cfg"
SPOE_CONF = REPO / "haproxy" / "spoe-auth.conf"
PYTHON = sys.executable or "/usr/bin/python3"
HOST = "127.0.0.1"
AGENT_TIMEOUT_S = 0.5           # --timeout 500ms, below
READY_TIMEOUT_S = 15.0

PROCS = []                      # every Proc started in this session
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")
AGENT_STARTED = "listening on"  # logged once the signal handlers are in place


@atexit.register
def _kill_leftovers():
    """Last resort (interrupted run): no process outlives the test session."""
    for p in PROCS:
        if p.alive():
            p.p.kill()


# ---- processes ------------------------------------------------------------
class Proc:
    def __init__(self, name, argv, logdir, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.logpath = Path(logdir) / ("%s-%d.log" % (name, len(PROCS)))
        self.stopped = False
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.log = open(self.logpath, "wb")
        self.p = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=full_env, cwd=cwd or REPO)
        PROCS.append(self)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def tail(self, n=6000):
        try:
            data = self.logpath.read_bytes()
        except OSError as e:
            return "(no log: %s)" % e
        text = data[-n:].decode("utf-8", "replace")
        return ("...\n" if len(data) > n else "") + text

    def describe(self):
        state = "running" if self.alive() else "exited %s" % self.p.returncode
        return "%s pid %d (%s): %s\n--- log %s ---\n%s" % (
            self.name, self.pid, state, " ".join(self.argv), self.logpath, self.tail())

    def sanitizer_report(self):
        """The first sanitizer marker in the whole log, or None."""
        text = self.tail(1 << 22)
        for marker in SANITIZER_MARKERS:
            if marker in text:
                return marker
        return None

    def signal(self, sig):
        self.p.send_signal(sig)

    def wait_exit(self, status=0, timeout=10.0):
        """Waits up to <timeout> for an exit the test caused (a signal it sent,
        a bad configuration) and asserts its <status> and that the log holds
        no sanitizer report. Kills the process if it does not exit."""
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            rc = None
        self.stopped = True
        self.log.close()
        report = self.sanitizer_report()
        assert rc == status and report is None, "%s: exit %s (want %s), sanitizer %s\n%s" % (
            self.name, rc, status, report, self.describe())
        return rc

    def terminate(self, timeout=10.0):
        """SIGTERM, then wait_exit(0): the clean stop of a test that checks it."""
        assert self.alive(), "%s exited before SIGTERM\n%s" % (self.name, self.describe())
        self.signal(signal.SIGTERM)
        return self.wait_exit(0, timeout)

    def stop(self, timeout=8.0):
        """Stops the process (SIGTERM, then SIGKILL after <timeout>). Returns
        a string describing a problem (crash before stop, sanitizer report,
        no exit on SIGTERM), or None."""
        problem = None
        if self.stopped:
            return None
        self.stopped = True
        if not self.alive():
            problem = "exited on its own with status %s" % self.p.returncode
        else:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                problem = "did not exit within %.0fs of SIGTERM" % timeout
        self.log.close()
        marker = self.sanitizer_report()
        if marker:
            problem = (problem + "; " if problem else "") + "sanitizer report (%s)" % marker
        return problem


def stop_all(procs, strict=()):
    """Stops <procs> (in reverse order); raises if one of those named in
    <strict> had a problem."""
    problems = []
    for p in reversed(procs):
        problem = p.stop()
        if problem and p.name in strict:
            problems.append("%s: %s\n%s" % (p.name, problem, p.describe()))
    if problems:
        raise AssertionError("process problems at teardown:\n" + "\n\n".join(problems))


_GIVEN_PORTS = set()


def free_ports(n):
    """<n> free loopback ports, never one this process handed out before:
    the ports are released before their user binds them, so without the
    memory a later call could get the same port (the kernel hands a freed
    port out again) and two services would race for it."""
    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
        port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            ports.append(port)
    for s in socks:
        s.close()
    return ports


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise AssertionError("%s exited before listening on %d\n%s" % (proc.name, port, proc.describe()))
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on %s:%d after %.0fs%s" % (
        HOST, port, timeout, "\n" + proc.describe() if proc else ""))


# ---- HTTP client ----------------------------------------------------------
class Resp:
    def __init__(self, status, reason, headers, body, elapsed):
        self.status, self.reason, self.headers, self.body, self.elapsed = status, reason, headers, body, elapsed

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Resp %d %r headers=%r body=%r>" % (self.status, self.reason, self.headers, self.body[:300])


def http(port, method, path, headers=(), body=None, timeout=10.0):
    """One request on a fresh connection. <headers>: [(name, value)], sent
    exactly as given (case, repetitions, order)."""
    conn = httpclient.HTTPConnection(HOST, port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.getheaders(), data, time.monotonic() - t0)
    finally:
        conn.close()


class Gateway:
    """A running HAProxy (with what it was started for)."""

    def __init__(self, port, procs, **info):
        self.port, self.procs = port, procs
        self.__dict__.update(info)

    def request(self, method, path, headers=(), body=None, timeout=10.0):
        return http(self.port, method, path, headers, body, timeout)

    def get(self, path, headers=(), timeout=10.0):
        return http(self.port, "GET", path, headers, None, timeout)

    def login(self, username, password=None):
        """Logs in through the gateway; returns (cookie header value, json)."""
        r = self.request("POST", "/api/user/login", [("Content-Type", "application/json")],
                         json.dumps({"username": username, "password": password or username}))
        assert r.status == 200, r
        cookie = r.header("Set-Cookie").split(";", 1)[0]
        return cookie, r.json()


# ---- building blocks --------------------------------------------------------
def start_python_service(logdir, script, port, secret):
    p = Proc(script.replace(".py", ""), [PYTHON, REPO / "scripts" / script, "--host", HOST,
                                         "--port", port, "--quiet"],
             logdir, env={"DEMO_JWT_SECRET": secret})
    wait_port(port, p)
    return p


def start_agent_args(logdir, agent_bin, args, name="agent", env=None, ports=(), started=True):
    """Starts the agent with exactly <args> (no default added), waits until
    each of <ports> listens and, if <started>, until it logged its startup
    line (the signal handlers exist then: a SIGTERM or SIGHUP sent afterwards
    is handled, not fatal). Stop it with stop_all(), or p.terminate() in a
    test that checks the exit."""
    p = Proc(name, [agent_bin, *args], logdir, env=env)
    for port in ports:
        wait_port(port, p)
    if started:
        wait_log(p, AGENT_STARTED)
    return p


def start_agent(logdir, agent_bin, port, user_url, extra=(), admin=False, name="agent",
                env=None):
    """Starts the agent on <port>. The admin listener is off unless <admin>:
    then it listens on a free port, kept in p.admin_port (parallel agents never
    collide on the default 12346). <env>: variables added to its environment."""
    admin_port = free_ports(1)[0] if admin else None
    admin_arg = "%s:%d" % (HOST, admin_port) if admin else "off"
    p = Proc(name, [agent_bin, "--listen", "%s:%d" % (HOST, port), "--user-service-url", user_url,
                    "--workers", "2", "--timeout", "500ms", "--admin-listen", admin_arg, *extra],
             logdir, env=env)
    p.admin_port = admin_port
    wait_port(port, p)
    if admin:
        wait_port(admin_port, p)
    return p


def wait_log(proc, text, timeout=10.0):
    """Waits until <text> appears in <proc>'s log."""
    deadline = time.monotonic() + timeout
    while text not in proc.tail(1 << 22):
        if time.monotonic() > deadline or not proc.alive():
            raise AssertionError("%r never logged\n%s" % (text, proc.describe()))
        time.sleep(0.02)


def start_haproxy(logdir, haproxy_bin, gw_port, user_port, biz_port, agent_port, cfg=None,
                  env_extra=None):
    """Starts HAProxy with the shipped configuration, or <cfg> (a file derived
    from it, e.g. with more agent servers)."""
    env = {"GW_ADDR": "%s:%d" % (HOST, gw_port), "USER_ADDR": "%s:%d" % (HOST, user_port),
           "BIZ_ADDR": "%s:%d" % (HOST, biz_port), "AGENT_ADDR": "%s:%d" % (HOST, agent_port),
           "SPOE_CONF": str(SPOE_CONF)}
    env.update(env_extra or {})
    p = Proc("haproxy", [haproxy_bin, "-db", "-f", cfg or HAPROXY_CFG], logdir, env=env)
    wait_port(gw_port, p)
    return p


def wait_agent_up(gw_port, procs, path="/api/business/__ready"):
    """Polls an anonymous protected request until it is no longer 503 (the
    agent is up and HAProxy talks to it)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        try:
            last = http(gw_port, "GET", path, timeout=3)
            if last.status != 503:
                return last
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError("protected route still 503 after %.0fs (last: %r)\n%s" % (
        READY_TIMEOUT_S, last, "\n\n".join(p.describe() for p in procs)))




@contextlib.contextmanager
def gateway(logdir, haproxy_bin, agent_bin, user_url, user_port, biz_port, agent_extra=(),
            admin=False, agent_name="agent", agent_env=None, cfg=None, haproxy_env=None,
            ready=True, **info):
    """The agent (start_agent: <agent_extra>, <admin>, <agent_name>,
    <agent_env>) and HAProxy in front of it (start_haproxy: the user service
    on <user_port>, the business service on <biz_port>, <cfg>, <haproxy_env>),
    then, if <ready>, wait_agent_up. Yields a Gateway with agent (its Proc),
    haproxy, agent_port, admin_port (None without <admin>), user_port,
    biz_port and <info>. On
    exit both are stopped; a crash, a missed SIGTERM or a sanitizer report of
    the agent fails the test."""
    gw_port, agent_port = free_ports(2)
    procs = []
    try:
        agent = start_agent(logdir, agent_bin, agent_port, user_url, extra=agent_extra,
                            admin=admin, name=agent_name, env=agent_env)
        procs.append(agent)
        hap = start_haproxy(logdir, haproxy_bin, gw_port, user_port, biz_port, agent_port,
                            cfg=cfg, env_extra=haproxy_env)
        procs.append(hap)
        if ready:
            wait_agent_up(gw_port, procs)
        yield Gateway(gw_port, procs, agent=agent, haproxy=hap, agent_port=agent_port,
                      admin_port=agent.admin_port, user_port=user_port, biz_port=biz_port,
                      **info)
    finally:
        stop_all(procs, strict=(agent_name,))


def user_stats(gw):
    """The demo user service's counters (GET /__stats, not via the gateway)."""
    return json.loads(http(gw.user_port, "GET", "/__stats").body)


def new_case():
    return "c" + secrets.token_hex(8)


def biz_requests(gw):
    """How many requests the business service has served."""
    return json.loads(http(gw.biz_port, "GET", "/__stats").body)["requests"]


def sha256_hex(text):
    import hashlib
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()
