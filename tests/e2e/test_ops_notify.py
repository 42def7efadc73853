"""systemd readiness protocol (Type=notify) with the real agent: the test plays
systemd's side, an AF_UNIX datagram socket named by NOTIFY_SOCKET, and checks
READY=1 once the agent listens, RELOADING=1 (with MONOTONIC_USEC) then READY=1
around SIGHUP, including a refused reload, and STOPPING=1 on SIGTERM. The
agent runs through the harness (a clean exit, no sanitizer report)."""
import os
import signal
import socket
import time

from harness import free_ports, start_agent_args, stop_all


def free_port():
    return free_ports(1)[0]


class Notify:
    """systemd's end: an abstract AF_UNIX datagram socket."""

    def __init__(self):
        self.name = f"@spoa-auth-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])

    def expect(self, key, timeout=10.0):
        """Next datagrams until one has a line starting with <key>; returns that datagram."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            seen.append(msg)
            if any(line.startswith(key) for line in msg.split("\n")):
                return msg
        raise AssertionError(f"no {key} within {timeout}s; got {seen}")

    def close(self):
        self.sock.close()


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_notify_lifecycle(agent_bin, logdir, tmp_path):
    port = free_port()
    conf = tmp_path / "spoa-auth.conf"
    # Every port is the test's own: no default one (make run may hold them).
    good = (f"listen 127.0.0.1:{port}\nworkers 2\nadmin-listen off\n"
            "user-service-url http://127.0.0.1:9/api/user/token\ndrain-timeout 1s\n")
    conf.write_text(good)
    notify = Notify()
    p = start_agent_args(logdir, agent_bin, ["-f", conf], env={"NOTIFY_SOCKET": notify.name},
                         started=False)
    try:
        msg = notify.expect("READY=1")
        assert listening(port), "READY=1 sent before the agent listens"
        assert "MAINPID" not in msg or f"MAINPID={p.pid}" in msg

        # Reload: RELOADING=1 with the monotonic clock, then READY=1.
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        p.signal(signal.SIGHUP)
        msg = notify.expect("RELOADING=1")
        fields = dict(line.split("=", 1) for line in msg.split("\n") if "=" in line)
        assert "MONOTONIC_USEC" in fields, msg
        t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert t0 <= int(fields["MONOTONIC_USEC"]) <= t1, (t0, fields, t1)
        notify.expect("READY=1")
        assert listening(port)

        # A refused reload still ends the reloading state with READY=1.
        conf.write_text(good + "no-such-key 1\n")
        p.signal(signal.SIGHUP)
        notify.expect("RELOADING=1")
        notify.expect("READY=1")
        assert p.alive(), "a bad reload must not stop the agent"
        assert listening(port)

        p.signal(signal.SIGTERM)
        notify.expect("STOPPING=1")
        p.wait_exit(0)
    finally:
        stop_all([p])
        notify.close()


def test_notify_socket_unusable_is_not_fatal(agent_bin, logdir, tmp_path):
    """A NOTIFY_SOCKET nobody listens on must not stop the agent from serving."""
    port = free_port()
    p = start_agent_args(logdir, agent_bin,
                         ["--listen", f"127.0.0.1:{port}", "--workers", "1",
                          "--admin-listen", "off", "--drain-timeout", "1s",
                          "--user-service-url", "http://127.0.0.1:9/api/user/token"],
                         env={"NOTIFY_SOCKET": str(tmp_path / "nobody-here")}, ports=(port,))
    try:
        assert listening(port)
        p.terminate()
    finally:
        stop_all([p])
