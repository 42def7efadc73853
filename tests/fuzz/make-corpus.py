#!/usr/bin/env python3
"""Writes the fuzz seed corpora from the test vectors (standard library only).

tests/fuzz/corpus/fuzz_spop/    every tests/vectors/*.hex as binary, plus a few
                                multi-frame receive buffers and edge cases
tests/fuzz/corpus/fuzz_claims/  a handful of msgpack documents

Run from the repository root: python3 tests/fuzz/make-corpus.py
"""
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VEC = os.path.join(ROOT, "tests", "vectors")
OUT_SPOP = os.path.join(ROOT, "tests", "fuzz", "corpus", "fuzz_spop")
OUT_CLAIMS = os.path.join(ROOT, "tests", "fuzz", "corpus", "fuzz_claims")


def write(d, name, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def varint(v):
    if v < 240:
        return bytes([v])
    out = [(v & 0xFF) | 0xF0]
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v & 0xFF) | 0x80)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def frame(ftype, sid, fid, payload, flags=1):
    body = bytes([ftype]) + struct.pack(">I", flags) + varint(sid) + varint(fid) + payload
    return struct.pack(">I", len(body)) + body


def bare(s):
    return varint(len(s)) + s


# ---- msgpack, just enough for the seeds ----
def mp(o):
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        if -32 <= o < 0:
            return struct.pack("b", o)
        if o >= 0:
            return b"\xcf" + struct.pack(">Q", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        b = o.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(o, bytes):
        return b"\xc4" + bytes([len(o)]) + o
    if isinstance(o, list):
        return bytes([0x90 | len(o)]) + b"".join(mp(x) for x in o)
    if isinstance(o, dict):
        return bytes([0x80 | len(o)]) + b"".join(mp(k) + mp(v) for k, v in o.items())
    raise TypeError(o)


def main():
    vecs = {}
    for name in sorted(os.listdir(VEC)):
        if name.endswith(".hex"):
            with open(os.path.join(VEC, name)) as f:
                vecs[name] = bytes.fromhex(f.read().strip())
            write(OUT_SPOP, name[:-4], vecs[name])

    # receive buffers as a connection sees them
    write(OUT_SPOP, "stream-hello-notify-disconnect",
          vecs["haproxy-2.6-hello.hex"] + vecs["haproxy-2.6-notify.hex"]
          + vecs["haproxy-2.6-disconnect-idle.hex"])
    write(OUT_SPOP, "stream-notify-x2-partial",
          vecs["haproxy-3.4-notify.hex"] * 2 + vecs["haproxy-3.4-notify.hex"][:100])
    write(OUT_SPOP, "stream-ack-ack", vecs["agent-ack-sid0-fid1.hex"]
          + vecs["agent-ack-sid1-fid1.hex"])
    # edge cases
    write(OUT_SPOP, "notify-empty", frame(3, 1, 1, b""))
    write(OUT_SPOP, "notify-all-types", frame(3, 2**64 - 1, 2**32, bare(b"m") + bytes([10])
          + bare(b"n") + b"\x00" + bare(b"b") + b"\x11" + bare(b"i") + b"\x02" + varint(2**63)
          + bare(b"u") + b"\x03" + varint(2**32 - 1) + bare(b"l") + b"\x04" + varint(2**64 - 5)
          + bare(b"v") + b"\x05" + varint(2**64 - 1) + bare(b"4") + b"\x06\x0a\x00\x00\x01"
          + bare(b"6") + b"\x07" + bytes(15) + b"\x01" + bare(b"s") + b"\x08" + bare(b"str")
          + b"\x00\x09" + bare(b"\x00\x01")))
    write(OUT_SPOP, "ack-unset", frame(103, 1, 1, b"\x02\x02\x02" + bare(b"noop")))
    write(OUT_SPOP, "hello-versions", frame(1, 0, 0, bare(b"supported-versions") + b"\x08"
          + bare(b" 1.0 , 2.0 ") + bare(b"max-frame-size") + b"\x04" + varint(256)))
    write(OUT_SPOP, "frag-first", frame(3, 1, 1, bare(b"x") + b"\x00", flags=0))
    write(OUT_SPOP, "tls-probe", bytes.fromhex("160301060001000102030405"))
    write(OUT_SPOP, "http-probe", b"GET / HTTP/1.0\r\n\r\n")

    claims = {
        "basic": {"sub": "alice", "uid": 42, "admin": True, "neg": -7},
        "types": {"big": 2**64 - 1, "f": 1.5, "nil": None, "roles": ["a", "b"],
                  "obj": {"k": 1}, "raw": b"\x00\x01", "user-id": "u-1", "off": False},
        "empty-map": {},
        "not-a-map": [1, 2, 3],
    }
    for name, doc in claims.items():
        write(OUT_CLAIMS, name, mp(doc))
    write(OUT_CLAIMS, "int-key", b"\x82\x07\xa1x\xa1k\xd4\x01\x01")
    write(OUT_CLAIMS, "map32-huge", b"\xdf\xff\xff\xff\xff")
    write(OUT_CLAIMS, "map16-long-key", b"\xde\x00\x01\xd9\x50" + b"k" * 80 + b"\x01")


if __name__ == "__main__":
    main()
