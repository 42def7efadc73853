"""The test harness's own SPOP codec against the captured frames in
tests/vectors: the raw-SPOP tests are only as good as this codec."""
from pathlib import Path

import pytest

import spop

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def load(name):
    return bytes.fromhex((VECTORS / name).read_text().strip())


@pytest.mark.parametrize("value,hexstr", [
    (239, "ef"), (240, "f000"), (300, "fc03"), (2287, "ff7f"), (2288, "f08000"),
    (16380, "fcf006"), (2**32 - 1, "fff0fefe7e"), (2**64 - 1, "fff0fefefefefefefe0e"),
])
def test_varint_vectors(value, hexstr):
    assert spop.enc_varint(value).hex() == hexstr
    assert spop.dec_varint(bytes.fromhex(hexstr), 0) == (value, len(hexstr) // 2)


def test_every_vector_decodes_and_reencodes():
    files = sorted(VECTORS.glob("*.hex"))
    assert files, "no vectors in %s" % VECTORS
    for f in files:
        data = load(f.name)
        frames, rest = spop.split_frames(data)
        assert len(frames) == 1 and rest == b"", f.name
        fr = frames[0]
        assert spop.frame(fr.type, fr.payload, fr.sid, fr.fid, fr.flags) == data, f.name


def test_notify_vector_arguments():
    fr = spop.split_frames(load("haproxy-2.6-notify.hex"))[0][0]
    assert (fr.type, fr.sid, fr.fid) == (spop.NOTIFY, 0, 1)
    from fake_agent import parse_notify
    args = parse_notify(fr.payload)
    assert args["cookie"] == b"session=valid-42; theme=dark"
    assert args["token"] is None
    assert str(args["client_ip"]) == "127.0.0.1"
    assert args["uri"] == b"/api/business/orders?id=7"
    assert args["negative"] == -5 and args["big"] == 2**32
    assert args["flag"] is True and args["noflag"] is False


def test_ack_vector_vars():
    fr = spop.split_frames(load("agent-ack-sid1-fid1.hex"))[0][0]
    assert fr.type == spop.ACK and (fr.sid, fr.fid) == (1, 1)
    assert fr.vars() == {"status": 200, "token": b"tok-abc"}
