"""A programmable fake SPOE agent, to test the shipped HAProxy configuration
independently of the real agent: verdicts the real agent should never give
(allow without a token, unknown outcome...), an agent that never answers.

    agent = FakeAgent(); agent.start()
    agent.program("/api/business/x", [("outcome", "allow")])   # set-var list
    agent.program("/api/business/slow", None)                  # never ACK
Requests are matched on the path of the NOTIFY's "uri" argument; unknown
paths get an ACK with only "unset-var txn noop" (no decision at all).
"""
import socket
import threading
import time
import urllib.parse

from spop import (ACK, AGENT_DISCONNECT, AGENT_HELLO, HAPROXY_DISCONNECT, HAPROXY_HELLO, NOTIFY,
                  SCOPE_TXN, SET_VAR, UNSET_VAR, DecodeError, Typed, T_UINT32, dec_str, dec_typed,
                  disconnect_payload, enc_kv, enc_str, enc_typed, frame, split_frames)

NOACK = None


def encode_actions(pairs):
    out = b""
    for name, value in pairs:
        out += bytes([SET_VAR, 3, SCOPE_TXN]) + enc_str(name) + enc_typed(value)
    if not out:
        out = bytes([UNSET_VAR, 2, SCOPE_TXN]) + enc_str("noop")
    return out


def parse_notify(payload):
    """NOTIFY payload -> {arg name: value} over all its messages."""
    args, pos = {}, 0
    while pos < len(payload):
        _, pos = dec_str(payload, pos)
        if pos >= len(payload):
            raise DecodeError("message without nb-args")
        nargs = payload[pos]
        pos += 1
        for _ in range(nargs):
            name, pos = dec_str(payload, pos)
            (_, value), pos = dec_typed(payload, pos)
            args[name.decode()] = value
    return args


class FakeAgent:
    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.programs = {}
        self.notifies = []
        self.stopping = False
        self.conns = set()

    def program(self, path, pairs):
        """<pairs>: [(var name, value)] to set, or NOACK to never answer."""
        with self.lock:
            self.programs[path] = pairs

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        send_lock = threading.Lock()
        try:
            while not self.stopping:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
                frames, buf = split_frames(buf)
                for f in frames:
                    if f.type == HAPROXY_HELLO:
                        kv = f.kv()
                        size = min(16380, kv.get("max-frame-size", (0, 16380))[1])
                        c.sendall(frame(AGENT_HELLO, enc_kv([
                            ("version", "2.0"), ("max-frame-size", Typed(T_UINT32, size)),
                            ("capabilities", "pipelining")])))
                        if "healthcheck" in kv:
                            return
                    elif f.type == HAPROXY_DISCONNECT:
                        c.sendall(frame(AGENT_DISCONNECT, disconnect_payload(0, "bye")))
                        return
                    elif f.type == NOTIFY:
                        args = parse_notify(f.payload)
                        uri = args.get("uri") or b""
                        path = urllib.parse.urlsplit(uri.decode("latin-1")).path
                        with self.lock:
                            self.notifies.append(args)
                            pairs = self.programs.get(path, [])
                        if pairs is NOACK:
                            continue
                        with send_lock:
                            c.sendall(frame(ACK, encode_actions(pairs), f.sid, f.fid))
        except (OSError, DecodeError):
            return
        finally:
            with self.lock:
                self.conns.discard(c)
            c.close()


if __name__ == "__main__":
    a = FakeAgent().start()
    print("fake agent on", a.port)
    while True:
        time.sleep(3600)
