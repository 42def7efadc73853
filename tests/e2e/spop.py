"""Minimal SPOP 2.0 codec and blocking client for the end-to-end tests.

Enough of the protocol to play HAProxy against the agent (HELLO, NOTIFY,
DISCONNECT) and the agent against HAProxy (fake_agent.py). Wire format:
docs/design.md and the project's SPOP notes; tests/vectors holds real frames.
"""
import ipaddress
import socket
import struct
import time

HAPROXY_HELLO, HAPROXY_DISCONNECT, NOTIFY = 1, 2, 3
AGENT_HELLO, AGENT_DISCONNECT, ACK = 101, 102, 103
FIN = 0x1

T_NULL, T_BOOL, T_INT32, T_UINT32, T_INT64, T_UINT64 = 0, 1, 2, 3, 4, 5
T_IPV4, T_IPV6, T_STR, T_BIN = 6, 7, 8, 9

SCOPE_TXN = 2
SET_VAR, UNSET_VAR = 1, 2


class DecodeError(Exception):
    pass


# ---- varint (HAProxy's "peers" encoding) -----------------------------------
def enc_varint(v):
    if v < 0:
        v &= (1 << 64) - 1
    if v < 240:
        return bytes([v])
    out = bytearray([(v & 0xFF) | 0xF0])
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v & 0xFF) | 0x80)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def dec_varint(buf, pos):
    if pos >= len(buf):
        raise DecodeError("varint: end of data")
    v = buf[pos]
    pos += 1
    if v < 240:
        return v, pos
    shift = 4
    for _ in range(10):
        if pos >= len(buf):
            raise DecodeError("varint: end of data")
        b = buf[pos]
        pos += 1
        v += b << shift
        shift += 7
        if b < 128:
            return v, pos
    raise DecodeError("varint: too long")


# ---- strings and typed data -----------------------------------------------
def enc_str(s):
    if isinstance(s, str):
        s = s.encode()
    return enc_varint(len(s)) + s


def dec_str(buf, pos):
    n, pos = dec_varint(buf, pos)
    if pos + n > len(buf):
        raise DecodeError("string runs past the end")
    return bytes(buf[pos:pos + n]), pos + n


class Typed:
    """An explicitly typed value, e.g. Typed(T_UINT32, 16380)."""

    def __init__(self, type_, value):
        self.type, self.value = type_, value

    def __repr__(self):
        return "Typed(%d, %r)" % (self.type, self.value)


def enc_typed(v):
    if isinstance(v, Typed):
        t, v = v.type, v.value
    elif v is None:
        t = T_NULL
    elif isinstance(v, bool):
        t = T_BOOL
    elif isinstance(v, int):
        t = T_INT64
    elif isinstance(v, str):
        t = T_STR
    elif isinstance(v, (bytes, bytearray)):
        t = T_BIN
    elif isinstance(v, ipaddress.IPv4Address):
        t = T_IPV4
    elif isinstance(v, ipaddress.IPv6Address):
        t = T_IPV6
    else:
        raise TypeError("cannot encode %r" % (v,))
    if t == T_NULL:
        return b"\x00"
    if t == T_BOOL:
        return b"\x11" if v else b"\x01"
    if t in (T_INT32, T_UINT32, T_INT64, T_UINT64):
        return bytes([t]) + enc_varint(v)
    if t in (T_IPV4, T_IPV6):
        return bytes([t]) + ipaddress.ip_address(v).packed
    if t in (T_STR, T_BIN):
        return bytes([t]) + enc_str(v)
    raise TypeError("bad type %d" % t)


def dec_typed(buf, pos):
    """Returns ((type, value), pos). Integers are returned signed (int64)."""
    if pos >= len(buf):
        raise DecodeError("typed data: end of data")
    tb = buf[pos]
    pos += 1
    t, flags = tb & 0x0F, tb >> 4
    if t == T_NULL:
        return (t, None), pos
    if t == T_BOOL:
        return (t, flags == 1), pos
    if t in (T_INT32, T_UINT32, T_INT64, T_UINT64):
        v, pos = dec_varint(buf, pos)
        if t in (T_INT32, T_INT64) and v >= 1 << 63:
            v -= 1 << 64
        return (t, v), pos
    if t == T_IPV4:
        if pos + 4 > len(buf):
            raise DecodeError("ipv4 runs past the end")
        return (t, ipaddress.IPv4Address(bytes(buf[pos:pos + 4]))), pos + 4
    if t == T_IPV6:
        if pos + 16 > len(buf):
            raise DecodeError("ipv6 runs past the end")
        return (t, ipaddress.IPv6Address(bytes(buf[pos:pos + 16]))), pos + 16
    if t in (T_STR, T_BIN):
        s, pos = dec_str(buf, pos)
        return (t, s), pos
    raise DecodeError("reserved type %d" % t)


def enc_kv(items):
    out = b""
    for k, v in items:
        out += enc_str(k) + enc_typed(v)
    return out


def dec_kv(buf):
    """KV-list -> {name(str): (type, value)}."""
    out, pos = {}, 0
    while pos < len(buf):
        k, pos = dec_str(buf, pos)
        tv, pos = dec_typed(buf, pos)
        out[k.decode()] = tv
    return out


# ---- frames ---------------------------------------------------------------
def frame(ftype, payload=b"", sid=0, fid=0, flags=FIN):
    body = bytes([ftype]) + struct.pack(">I", flags) + enc_varint(sid) + enc_varint(fid) + payload
    return struct.pack(">I", len(body)) + body


class Frame:
    def __init__(self, raw):
        """<raw>: the frame without its 4-byte length prefix."""
        if len(raw) < 7:
            raise DecodeError("frame shorter than 7 bytes")
        self.raw = bytes(raw)
        self.type = raw[0]
        self.flags = struct.unpack(">I", raw[1:5])[0]
        self.sid, pos = dec_varint(raw, 5)
        self.fid, pos = dec_varint(raw, pos)
        self.payload = bytes(raw[pos:])

    def kv(self):
        return dec_kv(self.payload)

    def actions(self):
        """ACK payload -> [(action, scope, name(str), (type, value) or None)]."""
        out, buf, pos = [], self.payload, 0
        while pos < len(buf):
            if pos + 2 > len(buf):
                raise DecodeError("action header runs past the end")
            act, nargs = buf[pos], buf[pos + 1]
            pos += 2
            if act == SET_VAR and nargs == 3:
                scope = buf[pos]
                name, pos = dec_str(buf, pos + 1)
                tv, pos = dec_typed(buf, pos)
                out.append((act, scope, name.decode(), tv))
            elif act == UNSET_VAR and nargs == 2:
                scope = buf[pos]
                name, pos = dec_str(buf, pos + 1)
                out.append((act, scope, name.decode(), None))
            else:
                raise DecodeError("unknown action %d/%d" % (act, nargs))
        return out

    def vars(self):
        """ACK -> {name: value} of its set-var actions (txn scope)."""
        return {name: tv[1] for act, scope, name, tv in self.actions()
                if act == SET_VAR and scope == SCOPE_TXN}

    def __repr__(self):
        return "Frame(type=%d flags=%#x sid=%d fid=%d len=%d)" % (
            self.type, self.flags, self.sid, self.fid, len(self.payload))


def split_frames(data):
    """Whole frames in <data> (bytes with length prefixes) -> ([Frame], rest)."""
    frames, pos = [], 0
    while len(data) - pos >= 4:
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        if len(data) - pos - 4 < n:
            break
        frames.append(Frame(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return frames, data[pos:]


def hello_payload(max_frame_size=16380, capabilities="pipelining", engine_id="e2e-test-engine",
                  healthcheck=False):
    items = [("supported-versions", "2.0"), ("max-frame-size", Typed(T_UINT32, max_frame_size)),
             ("capabilities", capabilities)]
    if healthcheck:
        items.append(("healthcheck", True))
    else:
        items.append(("engine-id", engine_id))
    return enc_kv(items)


def notify_payload(messages):
    """[(name, [(arg, value)])] -> NOTIFY payload."""
    out = b""
    for name, args in messages:
        out += enc_str(name) + bytes([len(args)])
        for arg, value in args:
            out += enc_str(arg) + enc_typed(value)
    return out


def disconnect_payload(status, message):
    return enc_kv([("status-code", Typed(T_UINT32, status)), ("message", message)])


class Client:
    """A blocking SPOP connection to an agent (plays HAProxy)."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def recv_frame(self, timeout=5.0):
        """Next frame, or None on EOF. Raises socket.timeout."""
        deadline = time.monotonic() + timeout
        while True:
            frames, rest = split_frames(self.buf)
            if frames:
                first = frames[0]
                self.buf = self.buf[4 + len(first.raw):]
                return first
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no frame within %.1fs" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if self.buf:
                    raise DecodeError("EOF inside a frame (%d bytes buffered)" % len(self.buf))
                return None
            self.buf += chunk

    def wait_closed(self, timeout=3.0):
        """True if the peer closes within <timeout> (frames received before
        the close are discarded and returned as the second element)."""
        extra = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                f = self.recv_frame(timeout=max(0.01, deadline - time.monotonic()))
            except socket.timeout:
                return False, extra
            except (DecodeError, OSError):
                return True, extra
            if f is None:
                return True, extra
            extra.append(f)
        return False, extra

    def hello(self, **kw):
        self.send(frame(HAPROXY_HELLO, hello_payload(**kw)))
        f = self.recv_frame()
        if f is None or f.type != AGENT_HELLO:
            raise AssertionError("expected AGENT-HELLO, got %r" % (f,))
        return f
