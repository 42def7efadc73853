#!/usr/bin/python3
"""bench/chaos-user.py: the user service of make chaos / make soak, with faults
switched on and off at run time (Python 3 standard library, asyncio).

  GET /api/user/token   Cookie sid=v<N>: 200 "id-<N>" (the identity the
                        bench business service echoes back); any other
                        session: 401 JSON with WWW-Authenticate.
  POST /api/user/logout 200 "{}" (public route, proxied by the gateway).
  anything else         404.

Faults, set on the control port (GET /mode?name=<m>[&ms=<n>]):
  ok        answer normally
  refuse    close the listener and every open connection: connects are refused
  hang      accept and read, never answer (connections stay open)
  slow      answer after <ms> milliseconds
  reset     send half of the status line and headers, then RST
  garbage   send bytes that are not HTTP, then close
Leaving "hang" closes the hung connections (their requests were lost anyway).
GET /stats on the control port: {"requests": N, "mode": m}.

Flags: --port, --control-port, --host (127.0.0.1). Loopback only.
"""
import argparse
import asyncio
import json
import re
import socket
import struct
import sys

SID = re.compile(rb"(?:^|;)\s*sid=v(\d+)(?:;|$)")
GARBAGE = b"\x00\x01\x02\xffSSH-2.0-not-http\r\n\r\n"
MAX_HEAD = 16384


class Service:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.mode, self.ms = "ok", 0
        self.server = None
        self.writers = set()
        self.requests = 0
        self.unhang = asyncio.Event()

    async def listen(self):
        if self.server is None:
            self.server = await asyncio.start_server(self.client, self.host, self.port,
                                                     reuse_address=True, backlog=1024)

    async def unlisten(self):
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            self.abort(w)

    @staticmethod
    def abort(w):
        try:
            w.transport.abort()
        except Exception:
            pass

    async def set_mode(self, name, ms):
        old = self.mode
        self.mode, self.ms = name, ms
        if name == "refuse":
            await self.unlisten()
        else:
            await self.listen()
        if name == "hang":
            self.unhang = asyncio.Event()
        elif old == "hang":
            self.unhang.set()
            for w in list(self.writers):
                self.abort(w)

    async def client(self, reader, writer):
        self.writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_HEAD:
                    return
                lines = head.split(b"\r\n")
                parts = lines[0].split(b" ")
                if len(parts) < 3:
                    return
                method, path = parts[0], parts[1]
                headers = {}
                for line in lines[1:]:
                    k, sep, v = line.partition(b":")
                    if sep:
                        headers.setdefault(k.strip().lower(), []).append(v.strip())
                n = int((headers.get(b"content-length") or [b"0"])[0])
                if n:
                    await reader.readexactly(n)
                self.requests += 1
                mode = self.mode
                if mode == "hang":
                    await self.unhang.wait()         # then the connection is dropped
                    return
                if mode == "slow":
                    await asyncio.sleep(self.ms / 1000.0)
                if mode == "garbage":
                    writer.write(GARBAGE)
                    await writer.drain()
                    return
                status, body, extra = self.answer(method, path, headers)
                out = ("HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
                    status, "application/json" if body.startswith(b"{") else "text/plain",
                    len(body), extra)).encode() + body
                if mode == "reset":
                    writer.write(out[:len(out) // 3])
                    await writer.drain()
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.abort(writer)
                    return
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError, asyncio.CancelledError):
            pass
        finally:
            self.writers.discard(writer)
            try:
                writer.close()
            except Exception:
                pass

    @staticmethod
    def answer(method, path, headers):
        path = path.split(b"?", 1)[0]
        if path == b"/api/user/token":
            for c in headers.get(b"cookie", []):
                m = SID.search(c)
                if m:
                    return 200, b"id-" + m.group(1), "Cache-Control: max-age=30\r\n"
            return 401, b'{"error":"unauthorized"}', 'WWW-Authenticate: Bearer realm="chaos"\r\n'
        if path == b"/api/user/logout":
            return 200, b"{}", ""
        return 404, b'{"error":"not_found"}', ""


async def control(svc, reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ")[1].decode()
        path, _, query = target.partition("?")
        q = dict(p.partition("=")[::2] for p in query.split("&") if p)
        if path == "/mode":
            await svc.set_mode(q.get("name", "ok"), int(q.get("ms", "0")))
        body = json.dumps({"requests": svc.requests, "mode": svc.mode}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
    except Exception as e:      # a bad control request must not stop the service
        sys.stderr.write("chaos-user: control: %r\n" % e)
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control-port", type=int, required=True)
    a = ap.parse_args()
    svc = Service(a.host, a.port)
    await svc.listen()
    ctl = await asyncio.start_server(lambda r, w: control(svc, r, w), a.host, a.control_port,
                                     reuse_address=True)
    sys.stderr.write("chaos-user: listening on %s:%d, control %d\n" % (a.host, a.port, a.control_port))
    sys.stderr.flush()
    async with ctl:
        await ctl.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
