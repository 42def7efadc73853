"""A programmable fake user service, run in the test process.

Each test picks a case id, programs it, and sends "Cookie: case=<id>" (plus
whatever else it needs) through the gateway; the fake finds the case from the
Cookie header of GET /api/user/token, so tests are independent of one another
and of any caching in the agent.

    fake.program(case, status=302, body=b"moved", headers=[("Location", "/x")])
    fake.program(case, delay=3)                 # answer late
    fake.program(case, garbage=b"\\x00junk")     # raw bytes, then close
    fake.program(case, close=True)              # close without answering
    fake.program(case, msgpack={"sub": "alice"})
    fake.program(case, status=302, nonce_cookie="oauth_state")  # a fresh Set-Cookie per call
    fake.program(case, uri_rules=[("admin", 403, b"no", [])])  # per request_uri
    fake.calls(case)                            # recorded token calls

Unknown cases: 401 JSON with WWW-Authenticate. Any other path (public routes
proxied by the gateway) answers 200 JSON echoing the request and is recorded
too (fake.requests).

uri_rules: (needle, status, body, headers) tried in order on the token call's
request_uri, percent-decoded (repeatedly) and lowercased, backslashes read as
slashes: the first rule whose needle it contains answers instead of the
case's status, body and headers (the case's delay, Content-Type and
nonce_cookie still apply). A user service that decides on the real URI, as
the most lenient backend would read it.
"""
import http.server
import json
import secrets
import struct
import sys
import threading
import time
import urllib.parse


# Answers no HTTP client may take for a verdict (see fake.program(garbage=...)).
GARBAGE = {
    "binary": b"\x00\x01\x02\xff garbage \r\n\r\n",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n",
    "bad-status-line": b"HTTP/1.1 abc Nope\r\nContent-Length: 0\r\n\r\n",
    "truncated-body": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\ntok-short",
    "headers-never-end": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n",
    "empty": b"",
}


def msgpack_encode(v):
    """Enough MessagePack for claims: None, bool, int, float, str, bytes,
    list, dict."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 1 << 32:
            return b"\xce" + struct.pack(">I", v)
        if 0 <= v < 1 << 64:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        return b"\xd9" + bytes([len(b)]) + b if len(b) < 256 else b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, (bytes, bytearray)):
        return b"\xc4" + bytes([len(v)]) + bytes(v) if len(v) < 256 else b"\xc5" + struct.pack(">H", len(v)) + bytes(v)
    if isinstance(v, (list, tuple)):
        return bytes([0x90 | len(v)]) + b"".join(msgpack_encode(x) for x in v)
    if isinstance(v, dict):
        out = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return out + b"".join(msgpack_encode(k) + msgpack_encode(x) for k, x in v.items())
    raise TypeError(v)


class Case:
    def __init__(self, status=200, body=b"", content_type="text/plain", headers=(), delay=0.0,
                 garbage=None, close=False, msgpack=None, nonce_cookie=None, uri_rules=()):
        if isinstance(body, str):
            body = body.encode()
        if msgpack is not None:
            body, content_type = msgpack_encode(msgpack), "application/msgpack"
        self.status, self.body, self.content_type = status, body, content_type
        self.headers, self.delay, self.garbage, self.close = list(headers), delay, garbage, close
        self.nonce_cookie = nonce_cookie
        self.uri_rules = [(n, st, b.encode() if isinstance(b, str) else b, list(h))
                          for n, st, b, h in uri_rules]

    def answer_for(self, request_uri):
        """(status, body, headers) for a token call about <request_uri>."""
        uri = request_uri or ""
        for _ in range(8):
            decoded = urllib.parse.unquote(uri, errors="replace")
            if decoded == uri:
                break
            uri = decoded
        uri = uri.replace("\\", "/").lower()
        for needle, status, body, headers in self.uri_rules:
            if needle in uri:
                return status, body, headers
        return self.status, self.body, self.headers


def case_of(cookie_headers):
    for header in cookie_headers:
        for part in header.split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == "case":
                return v
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle
    # plus the client's delayed ACK add 40 ms to every other keep-alive answer.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        fake = self.server.fake
        url = urllib.parse.urlsplit(self.path)
        rec = {
            "method": self.command,
            "path": url.path,
            "raw_path": self.path,
            "headers": list(self.headers.items()),
            "body": body,
            "time": time.monotonic(),
            "peer": self.client_address[1],   # source port: one per TCP connection
        }
        if url.path != "/api/user/token":
            with fake.lock:
                fake.requests.append(rec)
            out = json.dumps({"service": "fake-user", "path": self.path,
                              "headers": rec["headers"]}).encode()
            return self.answer(200, out, "application/json", [])
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        rec["request_uri"] = (query.get("request_uri") or [None])[0]
        rec["query"] = url.query
        case_id = case_of(self.headers.get_all("Cookie") or [])
        rec["case"] = case_id
        with fake.lock:
            fake.token_calls.append(rec)
            case = fake.cases.get(case_id)
        if case is None:
            return self.answer(401, b'{"error":"unauthorized"}', "application/json",
                               [("WWW-Authenticate", 'Bearer realm="fake"')])
        if case.delay:
            time.sleep(case.delay)
        if case.close:
            self.close_connection = True
            return
        if case.garbage is not None:
            self.close_connection = True
            try:
                self.wfile.write(case.garbage)
                self.wfile.flush()
            except OSError:
                pass
            return
        status, body, headers = case.answer_for(rec["request_uri"])
        headers = list(headers)
        if case.nonce_cookie:
            nonce = secrets.token_hex(16)
            rec["nonce"] = nonce
            headers.append(("Set-Cookie", "%s=%s; Path=/; HttpOnly" % (case.nonce_cookie, nonce)))
        self.answer(status, body, case.content_type, headers)

    def answer(self, status, body, content_type, headers):
        try:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_HEAD = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client (the agent's keep-alive pool, HAProxy) closing or resetting
        # an idle connection is normal; anything else is worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeUserService:
    def __init__(self, host="127.0.0.1"):
        self.lock = threading.Lock()
        self.cases = {}
        self.token_calls = []
        self.requests = []
        self.server = Server((host, 0), Handler)
        self.server.fake = self
        self.port = self.server.server_address[1]
        self.url = "http://%s:%d/api/user/token" % (host, self.port)

    def start(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def program(self, case_id, **kw):
        with self.lock:
            self.cases[case_id] = Case(**kw)

    def calls(self, case_id):
        with self.lock:
            return [c for c in self.token_calls if c["case"] == case_id]

    def total_calls(self):
        with self.lock:
            return len(self.token_calls)

    def requests_to(self, path_prefix):
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(path_prefix)]
