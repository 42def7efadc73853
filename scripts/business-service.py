#!/usr/bin/python3
"""Demo business service for spoa-auth (Python 3 standard library only).

Answers every method on every path with JSON describing what it received:
  method, path, x_example_authorization   every value of that header, in order
                                          (more than one = a forged copy got
                                          through the gateway),
  claims / claims_error                   the identity token verified as HS256
                                          with DEMO_JWT_SECRET (the secret the
                                          user service signs with),
  headers                                 every request header, [name, value].
It trusts only the signature, never the presence of the header.
GET /__stats (for tests; the gateway never routes it here) returns the number
of requests served.

Flags: --host (127.0.0.1), --port (8102), --quiet.
"""
import argparse
import http.server
import json
import os
import sys
import threading

from demo_common import Server, jwt_verify

IDENTITY_HEADER = "X-Example-Authorization"


def verify(key, token):
    """(claims, None) for a valid unexpired HS256 token, else (None, why)."""
    if not key:
        return None, "DEMO_JWT_SECRET not set"
    return jwt_verify(key, token)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle
    # plus the client's delayed ACK add 40 ms to every other keep-alive answer.
    disable_nagle_algorithm = True
    server_version = "demo-business-service/1"

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("business-service: %s %s\n" % (self.address_string(), fmt % args))

    def handle_any(self):
        if self.path == "/__stats":
            return self.answer(200, {"requests": self.server.requests})
        with self.server.lock:
            self.server.requests += 1
        if self.headers.get("Transfer-Encoding"):
            # Not needed by the demo; refuse rather than desynchronise.
            self.close_connection = True
            body_len = -1
        else:
            try:
                body_len = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                body_len = -1
        if body_len < 0 or body_len > 1 << 20:
            self.close_connection = True
            return self.answer(400, {"error": "bad_request"})
        if body_len:
            self.rfile.read(body_len)
        values = self.headers.get_all(IDENTITY_HEADER) or []
        claims, why = (None, "no identity header")
        if len(values) == 1:
            claims, why = verify(self.server.jwt_key, values[0])
        elif len(values) > 1:
            why = "several identity headers"
        self.answer(200, {
            "service": "business",
            "method": self.command,
            "path": self.path,
            "x_example_authorization": values,
            "claims": claims,
            "claims_error": why if claims is None else None,
            "headers": [[k, v] for k, v in self.headers.items()],
        })

    def answer(self, status, obj):
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = handle_any


def main():
    ap = argparse.ArgumentParser(description="spoa-auth demo business service")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8102)
    ap.add_argument("--quiet", action="store_true", help="no access log")
    args = ap.parse_args()
    srv = Server((args.host, args.port), Handler)
    srv.jwt_key = os.environ.get("DEMO_JWT_SECRET", "").encode()
    srv.quiet = args.quiet
    srv.lock, srv.requests = threading.Lock(), 0
    sys.stderr.write("business-service: listening on %s:%d\n" % (args.host, args.port))
    sys.stderr.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
