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
import re
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

    def restart_agent(self, name, extra=None):
        """Another agent on this gateway's agent port (after the test killed
        or stopped the first), with the same user service and options unless
        <extra> is given; stopped strictly with the others. Returns its Proc
        (self.agent stays the first one)."""
        r = self._restart
        p = start_agent(r["logdir"], r["agent_bin"], self.agent_port, r["user_url"],
                        extra=r["extra"] if extra is None else extra, admin=r["admin"],
                        name=name, env=r["env"])
        self.procs.append(p)
        r["strict"].append(name)
        return p

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
            ready=True, agent_started=False, **info):
    """The agent (start_agent: <agent_extra>, <admin>, <agent_name>,
    <agent_env>; with <agent_started>, waited for until it logged its
    startup line, as start_agent_args does: a SIGHUP sent afterwards is
    handled) and HAProxy in front of it (start_haproxy: the user service
    on <user_port>, the business service on <biz_port>, <cfg>, <haproxy_env>),
    then, if <ready>, wait_agent_up. Yields a Gateway with agent (its Proc),
    haproxy, agent_port, admin_port (None without <admin>), user_port,
    biz_port and <info>; gw.restart_agent() starts another agent behind it.
    On exit every process is stopped; a crash, a missed SIGTERM or a
    sanitizer report of an agent fails the test (an agent the test stopped
    itself, with terminate() or wait_exit(), is not stopped again)."""
    gw_port, agent_port = free_ports(2)
    procs, strict = [], [agent_name]
    try:
        agent = start_agent(logdir, agent_bin, agent_port, user_url, extra=agent_extra,
                            admin=admin, name=agent_name, env=agent_env)
        procs.append(agent)
        if agent_started:
            wait_log(agent, AGENT_STARTED)
        hap = start_haproxy(logdir, haproxy_bin, gw_port, user_port, biz_port, agent_port,
                            cfg=cfg, env_extra=haproxy_env)
        procs.append(hap)
        if ready:
            wait_agent_up(gw_port, procs)
        gw = Gateway(gw_port, procs, agent=agent, haproxy=hap, agent_port=agent_port,
                     admin_port=agent.admin_port, user_port=user_port, biz_port=biz_port,
                     **info)
        gw._restart = dict(logdir=logdir, agent_bin=agent_bin, user_url=user_url,
                           extra=agent_extra, admin=admin, env=agent_env, strict=strict)
        yield gw
    finally:
        stop_all(procs, strict=strict)


@contextlib.contextmanager
def haproxy_gateway(logdir, haproxy_bin, user_port, biz_port, agent_port, cfg=None,
                    haproxy_env=None, ready=False, **info):
    """HAProxy alone (start_haproxy, <cfg>, <haproxy_env>) in front of
    whatever the test runs on <agent_port>: nothing, or a fake agent; if
    <ready>, wait_agent_up. Yields a Gateway with haproxy, agent_port,
    user_port, biz_port and <info>; HAProxy is stopped on exit."""
    gw_port = free_ports(1)[0]
    procs = []
    try:
        hap = start_haproxy(logdir, haproxy_bin, gw_port, user_port, biz_port, agent_port,
                            cfg=cfg, env_extra=haproxy_env)
        procs.append(hap)
        if ready:
            wait_agent_up(gw_port, procs)
        yield Gateway(gw_port, procs, haproxy=hap, agent_port=agent_port, user_port=user_port,
                      biz_port=biz_port, **info)
    finally:
        stop_all(procs)


@contextlib.contextmanager
def solo_agent(logdir, agent_bin, user_url, extra=(), admin=False, name="agent", env=None,
          started=False):
    """An agent alone (no HAProxy: the test speaks SPOP itself), started as
    start_agent does on a free port, kept in p.port; with <started>, waited
    for until it logged its startup line. Yields its Proc. On exit it is
    stopped; a crash, a missed SIGTERM or a sanitizer report fails the test
    (unless the test stopped it itself with terminate() or wait_exit())."""
    port = free_ports(1)[0]
    p = start_agent(logdir, agent_bin, port, user_url, extra=extra, admin=admin, name=name,
                    env=env)
    p.port = port
    try:
        if started:
            wait_log(p, AGENT_STARTED)
        yield p
    finally:
        stop_all([p], strict=(name,))


class Bringup:
    """What one test starts as it goes (any number of agents and gateways),
    stopped together by close(), with solo_agent() and gateway() above: the same
    strict stop. <haproxy_bin>: a callable giving HAProxy's path, asked only
    when a gateway is started (an agent-only test runs without HAProxy)."""

    def __init__(self, logdir, agent_bin, haproxy_bin):
        self.logdir, self.agent_bin, self.haproxy_bin = logdir, agent_bin, haproxy_bin
        self.exits = contextlib.ExitStack()

    def agent(self, user_url, **kw):
        """solo_agent(...): returns its Proc (p.port, p.admin_port)."""
        return self.exits.enter_context(solo_agent(self.logdir, self.agent_bin, user_url, **kw))

    def gateway(self, user_url, user_port, biz_port, **kw):
        """gateway(...): returns the Gateway."""
        return self.exits.enter_context(gateway(self.logdir, self.haproxy_bin(), self.agent_bin,
                                                user_url, user_port, biz_port, **kw))

    def fleet_node(self, name, user_url, user_port, biz_port, redis_address, **kw):
        """fleet_node(...) on this test's agent binary: returns the Gateway."""
        return self.exits.enter_context(fleet_node(self.logdir, self.haproxy_bin(),
                                                   self.agent_bin, name, user_url, user_port,
                                                   biz_port, redis_address, **kw))

    def callback(self, fn, *args):
        """Calls fn(*args) at close(), after stopping what was started after
        it (a Redis the nodes use: stopped once they are)."""
        self.exits.callback(fn, *args)

    def close(self):
        self.exits.close()


def user_stats(gw):
    """The demo user service's counters (GET /__stats, not via the gateway)."""
    return json.loads(http(gw.user_port, "GET", "/__stats").body)


def new_case():
    return "c" + secrets.token_hex(8)


def biz_requests(gw):
    """How many requests the business service has served."""
    return json.loads(http(gw.biz_port, "GET", "/__stats").body)["requests"]


def haproxy_major(haproxy_bin):
    """The major version of <haproxy_bin> (2 or 3...)."""
    out = subprocess.run([haproxy_bin, "-v"], capture_output=True, text=True).stdout
    return int(re.search(r"version (\d+)\.", out).group(1))


def runtime(gw, cmd):
    """One command on <gw>'s HAProxy runtime socket (gw.sock); its answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(gw.sock)
    s.sendall(cmd.encode() + b"\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode()


def l1_cred(case):
    """The L1 session hash haproxy.cfg computes for the cookie case=<case>
    (and the agent, hapi_l1_cred())."""
    return sha256_hex("spoa-l1-v1|case=" + case).upper()


def sha256_hex(text):
    import hashlib
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


# ---- fleet: Redis, a fake RESP server, two gateways ------------------------
# (tests/e2e/test_fleet*.py, scripts/fleet-demo's test)
REDIS_SERVER_BIN = os.environ.get("REDIS_SERVER_BIN", "redis-server")
REDIS_READY_TIMEOUT_S = 10.0
FLEET_KEY_SECRET = "fleet-test-" + secrets.token_hex(16)
FLEET_ADMIN_TOKEN = "fleet-admin-" + secrets.token_hex(16)


class RespError(Exception):
    """An error reply (-ERR ...) from a RESP server."""


def resp_encode(*args):
    """One RESP2 command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespClient:
    """A blocking RESP2 client, enough for tests: command() returns bytes,
    int, None, a list, or raises RespError for an error reply."""

    def __init__(self, port, host=HOST, timeout=5.0):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.f = self.s.makefile("rb")

    def close(self):
        self.f.close()
        self.s.close()

    def command(self, *args):
        self.s.sendall(resp_encode(*args))
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("RESP reply cut short: %r" % line)
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError("not RESP: %r" % line)


class RedisServer:
    """A real redis-server on a free loopback port, no persistence, started
    by the harness. <password>: requirepass (the default user's password).
    <users>: {name: (password, "ACL rules")}, e.g. a user limited to the
    agent's key prefix: {"agent": ("pw", "~spoa-auth:* +@all -@dangerous")}.
    <unixsocket>: a path to listen on too (the TCP port stays, for cmd()).
    <ipv6>: listen on [::1] too, same port (self.address6).
    kill() (SIGKILL), pause()/resume() (SIGSTOP/SIGCONT) and restart() (on
    the same port, empty) are the faults; cmd() talks to it as the admin."""

    def __init__(self, logdir, password=None, users=None, name="redis", unixsocket=None,
                 ipv6=False):
        self.logdir, self.password, self.users, self.name = Path(logdir), password, users or {}, name
        self.port = free_ports(1)[0]
        self.address = "%s:%d" % (HOST, self.port)
        self.address6 = "[::1]:%d" % self.port
        self.conf = self.logdir / ("%s-%d.conf" % (name, self.port))
        lines = ["port %d" % self.port, "bind %s%s" % (HOST, " ::1" if ipv6 else ""),
                 'save ""', "appendonly no",
                 "dir %s" % self.logdir, "dbfilename %s-%d.rdb" % (name, self.port),
                 "daemonize no", "loglevel notice"]
        if password:
            lines.append("requirepass %s" % password)
        if unixsocket:
            lines += ["unixsocket %s" % unixsocket, "unixsocketperm 700"]
        for user, (pw, rules) in self.users.items():
            lines.append("user %s on >%s %s" % (user, pw, rules))
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None
        self.paused = False

    def start(self):
        self.proc = Proc(self.name, [REDIS_SERVER_BIN, self.conf], self.logdir)
        deadline = time.monotonic() + REDIS_READY_TIMEOUT_S
        while True:
            try:
                if self.cmd("PING") == b"PONG":
                    return self
            except (OSError, RespError, ConnectionError):
                pass
            if not self.proc.alive() or time.monotonic() > deadline:
                raise AssertionError("redis-server not ready on %s\n%s" % (
                    self.address, self.proc.describe()))
            time.sleep(0.05)

    def client(self, user=None, password=None):
        """A RespClient, authenticated as <user> (default: the admin)."""
        c = RespClient(self.port)
        if user is not None:
            c.command("AUTH", user, password)
        elif self.password:
            c.command("AUTH", self.password)
        return c

    def cmd(self, *args):
        c = self.client()
        try:
            return c.command(*args)
        finally:
            c.close()

    def kill(self):
        """SIGKILL: every connection drops at once, the data is gone."""
        if self.paused:
            self.resume()
        self.proc.p.kill()
        self.proc.p.wait()
        self.proc.stop()

    def pause(self):
        """SIGSTOP: connections stay open, nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def restart(self):
        """A fresh, empty server on the same port (after kill() or stop())."""
        if self.proc is not None and self.proc.alive():
            self.stop()
        return self.start()

    def stop(self):
        if self.proc is None:
            return None
        if self.paused:
            self.resume()
        return self.proc.stop()

    def dump(self):
        """Every key and every value, as bytes: [(key, type, [values])], for
        scanning a dump for credentials."""
        c = self.client()
        out = []
        try:
            cursor = b"0"
            while True:
                cursor, keys = c.command("SCAN", cursor, "COUNT", 1000)
                for k in keys:
                    t = c.command("TYPE", k)
                    if t == b"string":
                        vals = [c.command("GET", k) or b""]
                    elif t == b"stream":
                        vals = []
                        for entry_id, fields in c.command("XRANGE", k, "-", "+"):
                            vals.append(entry_id)
                            vals.extend(fields)
                    elif t == b"hash":
                        vals = c.command("HGETALL", k)
                    elif t in (b"set",):
                        vals = c.command("SMEMBERS", k)
                    elif t == b"list":
                        vals = c.command("LRANGE", k, 0, -1)
                    elif t == b"zset":
                        vals = c.command("ZRANGE", k, 0, -1, "WITHSCORES")
                    else:
                        vals = []
                    out.append((k, t, [v for v in vals if v is not None]))
                if cursor == b"0":
                    return out
        finally:
            c.close()


FAKE_RESP_MODES = ("pass", "garbage", "wrongtype", "error", "partial", "silent", "close")


class FakeResp:
    """A TCP server that speaks (or breaks) RESP, in front of a real Redis.
    Mode (set_mode, applies to connections already open too):
      pass       forwards both ways to <upstream> (a RedisServer's port)
      garbage    answers every command with bytes that are not RESP
      wrongtype  answers every command with a well-formed reply of the wrong
                 type (an integer, a nested array)
      error      answers every command with -ERR
      partial    answers with the start of a bulk string, never the rest
      silent     reads commands, never answers
      close      closes the connection on the first command
    counts: connections accepted, commands seen (chunks) in a bad mode."""

    GARBAGE = b"\x00\xff\xfegarbage{}\r\n%%%\r\n"
    WRONGTYPE = b"*2\r\n:42\r\n*1\r\n$3\r\nodd\r\n"

    def __init__(self, upstream_port=None, mode="pass"):
        import threading
        self.threading = threading
        self.upstream_port = upstream_port
        self.mode = mode
        self.lock = threading.Lock()
        self.socks = []
        self.accepted = 0
        self.bad_answers = 0
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((HOST, 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.address = "%s:%d" % (HOST, self.port)
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def set_mode(self, mode):
        assert mode in FAKE_RESP_MODES, mode
        self.mode = mode

    def drop_connections(self):
        """Resets every open connection (the agent must reconnect)."""
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self):
        self.running = False
        self.ls.close()
        self.drop_connections()

    def _accept(self):
        while self.running:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = None
            if self.upstream_port is not None:
                try:
                    up = socket.create_connection((HOST, self.upstream_port), timeout=2)
                    up.settimeout(None)
                except OSError:
                    up = None
            with self.lock:
                self.accepted += 1
                self.socks.append(c)
                if up is not None:
                    self.socks.append(up)
            self.threading.Thread(target=self._client, args=(c, up), daemon=True).start()
            if up is not None:
                self.threading.Thread(target=self._upstream, args=(up, c), daemon=True).start()

    def _upstream(self, up, c):
        """Upstream replies reach the client only in pass mode."""
        try:
            while True:
                data = up.recv(65536)
                if not data:
                    break
                if self.mode == "pass":
                    c.sendall(data)
        except OSError:
            pass
        for s in (c, up):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _client(self, c, up):
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                mode = self.mode
                if mode == "pass":
                    if up is None:
                        break
                    up.sendall(data)
                    continue
                with self.lock:
                    self.bad_answers += 1
                if mode == "garbage":
                    c.sendall(self.GARBAGE)
                elif mode == "wrongtype":
                    c.sendall(self.WRONGTYPE)
                elif mode == "error":
                    c.sendall(b"-ERR fake says no\r\n")
                elif mode == "partial":
                    c.sendall(b"$100\r\nabc")
                elif mode == "close":
                    break
                # silent: nothing
        except OSError:
            pass
        for s in (c, up):
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def agent_help(agent_bin):
    """The agent's --help text (which options this build knows)."""
    r = subprocess.run([agent_bin, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=10)
    return r.stdout.decode("utf-8", "replace")


def agent_has_redis(agent_bin):
    return "redis-address" in agent_help(agent_bin)


def parse_metrics(text):
    """Prometheus text -> {(name, ((label, value), ...)): float}."""
    import re
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                         m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def metric(admin_port, name, **labels):
    """The sum of the series <name> whose labels include <labels>, from the
    agent's GET /metrics; None when no such series exists."""
    r = http(admin_port, "GET", "/metrics", timeout=5)
    assert r.status == 200, r
    total, found = 0.0, False
    for (n, ls), v in parse_metrics(r.body.decode()).items():
        if n == name and all((k, str(val)) in ls for k, val in labels.items()):
            total += v
            found = True
    return total if found else None


def wait_metric(admin_port, name, want, timeout=10.0, **labels):
    """Polls until metric(...) == <want> (bounded); returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = metric(admin_port, name, **labels)
        if v == want or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def fleet_agent_args(redis_address, admin_port, extra=()):
    return ["--cache", "on", "--redis-address", redis_address,
            "--redis-key-secret", FLEET_KEY_SECRET,
            "--admin-listen", "%s:%d" % (HOST, admin_port), "--admin-token", FLEET_ADMIN_TOKEN,
            *extra]


def start_fleet_node(logdir, haproxy_bin, agent_bin, name, user_url, user_port, biz_port,
                     redis_address, extra=(), env=None, haproxy_env=None):
    """One gateway of a fleet: an agent (cache on, Redis second level at
    <redis_address>, admin listener with FLEET_ADMIN_TOKEN; its environment
    <env>) and its HAProxy (more environment: <haproxy_env>).
    Returns a Gateway with .agent, .haproxy, .admin_port, .name."""
    gw_port, agent_port, admin_port = free_ports(3)
    procs = []
    try:
        agent = Proc("agent-" + name, [agent_bin, "--listen", "%s:%d" % (HOST, agent_port),
                                       "--user-service-url", user_url, "--workers", "2",
                                       "--timeout", "500ms",
                                       *fleet_agent_args(redis_address, admin_port, extra)],
                     logdir, env=env)
        procs.append(agent)
        wait_port(agent_port, agent)
        wait_port(admin_port, agent)
        hap = start_haproxy(logdir, haproxy_bin, gw_port, user_port, biz_port, agent_port,
                            env_extra=haproxy_env)
        hap.name = "haproxy-" + name
        procs.append(hap)
        wait_agent_up(gw_port, procs)
    except BaseException:
        stop_all(procs)
        raise
    return Gateway(gw_port, procs, agent=agent, haproxy=hap, agent_port=agent_port,
                   admin_port=admin_port, name=name, user_port=user_port, biz_port=biz_port)


@contextlib.contextmanager
def fleet_node(logdir, haproxy_bin, agent_bin, name, user_url, user_port, biz_port,
               redis_address, extra=(), env=None, haproxy_env=None):
    """start_fleet_node(...) for a with block: yields the Gateway; on exit
    its HAProxy and agent are stopped, the agent strictly (a crash, a missed
    SIGTERM or a sanitizer report fails the test)."""
    n = start_fleet_node(logdir, haproxy_bin, agent_bin, name, user_url, user_port, biz_port,
                         redis_address, extra=extra, env=env, haproxy_env=haproxy_env)
    try:
        yield n
    finally:
        stop_all(n.procs, strict=(n.agent.name,))


def fleet_invalidate(gw, body, token=FLEET_ADMIN_TOKEN):
    """POST /cache/invalidate on <gw>'s agent (form-encoded <body>)."""
    return http(gw.admin_port, "POST", "/cache/invalidate",
                [("Content-Type", "application/x-www-form-urlencoded"),
                 ("Authorization", "Bearer " + token)], body)


def wait_status(gw, path, headers, want, timeout=5.0):
    """Polls <gw> until <path> answers <want> (bounded). Returns (response,
    seconds waited, polls); the response is the last one seen."""
    t0 = time.monotonic()
    polls = 0
    while True:
        r = gw.get(path, headers)
        polls += 1
        if r.status == want or time.monotonic() - t0 > timeout:
            return r, time.monotonic() - t0, polls


def percentile(values, p):
    """The <p>th percentile (nearest rank) of <values>."""
    s = sorted(values)
    if not s:
        return None
    import math
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]
