"""Raw HTTP for the gateway tests: requests sent byte for byte (HTTP/1.0,
odd framing, trailers, an HTTP/2 preface), and a raw TCP backend that records
exactly what HAProxy sends it.

    r = raw_request(port, b"GET / HTTP/1.0\\r\\n\\r\\n")   # -> RawResp or None
    cap = CaptureServer().start()      # answers 200 to every request
    cap.data()                         # every byte received, all connections
"""
import socket
import struct
import threading
import time

HOST = "127.0.0.1"
READ_LIMIT = 1 << 20                   # bytes kept per connection / response


class RawResp:
    def __init__(self, status, headers, body, raw):
        self.status, self.headers, self.body, self.raw = status, headers, body, raw

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<RawResp %s %r>" % (self.status, self.raw[:400])


def parse_response(data):
    """The first HTTP/1.x response in <data>, or None when there is none."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    n = None
    for k, v in headers:
        if k.lower() == "content-length" and v.isdigit():
            n = int(v)
    body = rest[:n] if n is not None else rest
    return RawResp(status, headers, body, data)


def raw_request(port, data, timeout=5.0, host=HOST):
    """Sends <data> on a fresh connection, reads until the first response is
    complete (Content-Length), the peer closes, or <timeout>. Returns a
    RawResp, or None when no HTTP/1.x response came."""
    s = socket.create_connection((host, port), timeout=timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        s.sendall(data)
        while len(buf) < READ_LIMIT and time.monotonic() < deadline:
            r = parse_response(buf)
            if r is not None and r.header("content-length") is not None and \
                    len(r.body) >= int(r.header("content-length")):
                return r
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return parse_response(buf)


# ---- HTTP/2 prior knowledge (h2c), just enough to send one request ---------
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS = 0x0, 0x1, 0x4
H2_END_STREAM, H2_END_HEADERS = 0x1, 0x4


def h2_frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541
    6.2.2); names and values shorter than 127 bytes."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def h2_request_with_trailers(path, headers, body, trailers):
    """Preface, SETTINGS, then one POST on stream 1: HEADERS, DATA, and a
    trailing HEADERS block that ends the stream."""
    block = b"".join(hpack_literal(k, v) for k, v in
                     [(":method", "POST"), (":scheme", "http"), (":path", path),
                      (":authority", "gateway")] + list(headers))
    tblock = b"".join(hpack_literal(k, v) for k, v in trailers)
    return (H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0, b"") +
            h2_frame(H2_HEADERS, H2_END_HEADERS, 1, block) +
            h2_frame(H2_DATA, 0, 1, body) +
            h2_frame(H2_HEADERS, H2_END_HEADERS | H2_END_STREAM, 1, tblock))


def send_and_drain(port, data, timeout=3.0):
    """Sends <data>, then reads whatever comes back until the peer closes or
    <timeout>; returns those bytes."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        s.sendall(data)
        while time.monotonic() < deadline and len(out) < READ_LIMIT:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    return out


# ---- raw TCP backend ---------------------------------------------------------
class CaptureServer:
    """Listens on a free loopback port and records every byte each connection
    sends. Once a request head has arrived it answers a small 200 with
    "Connection: close", keeps reading what follows (body, trailers) until the
    peer is idle for LINGER_S, and closes: no body parsing, so whatever HAProxy
    sends is recorded as sent."""
    ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n"
              b"Connection: close\r\n\r\ncaptured")
    LINGER_S = 0.5

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.received = []              # one bytearray per connection
        self.stopping = False

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.stopping = True
        self.sock.close()

    def data(self):
        with self.lock:
            return b"".join(bytes(b) for b in self.received)

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = bytearray()
        with self.lock:
            self.received.append(buf)
        answered = False
        c.settimeout(10.0)
        try:
            while len(buf) < READ_LIMIT:
                try:
                    chunk = c.recv(65536)
                except socket.timeout:
                    return
                if not chunk:
                    return
                with self.lock:
                    buf += chunk
                if not answered and b"\r\n\r\n" in buf:
                    answered = True
                    c.sendall(self.ANSWER)
                    c.settimeout(self.LINGER_S)
        except OSError:
            return
        finally:
            c.close()
