"""No copy of the identity header reaches a backend in a request's trailers,
on any route: HAProxy's del-header never sees trailers, so on 3.2+ every
HTTP backend drops request trailers, before 3.2 the gateway refuses chunked
request bodies (the only HTTP/1.x way to send trailers), and HTTP/2 (h2c)
upgrades are off. Checked on the bytes a raw TCP backend receives. Run
it on 2.6 and on 3.x (HAPROXY_BIN=...)."""
import re
import subprocess

import pytest

from harness import gateway, new_case
from rawhttp import CaptureServer, h2_request_with_trailers, raw_request, send_and_drain

NAMES = ["X-Example-Authorization", "x-example-authorization", "X-EXAMPLE-AUTHORIZATION",
         "X_Example_Authorization", "x_example_authorization"]
ROUTES = ["/api/user/upload", "/api/business/upload"]


@pytest.fixture(scope="module")
def captured(fake_user, haproxy_bin, agent_bin, logdir):
    """HAProxy whose user and business backends are one raw capture server;
    the agent asks the fake user service."""
    cap = CaptureServer().start()
    try:
        with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, cap.port, cap.port,
                     cap=cap, user=fake_user) as gw:
            yield gw
    finally:
        cap.stop()


@pytest.fixture(scope="module")
def drops_trailers(haproxy_bin):
    """3.2+ drops request trailers in the backends and lets chunked bodies
    pass; older versions refuse chunked bodies with 411."""
    out = subprocess.run([haproxy_bin, "-v"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    assert m, out
    return (int(m.group(1)), int(m.group(2))) >= (3, 2)


def assert_chunked_outcome(r, data, drops):
    """On 3.2+ the chunked request is forwarded without its trailers; before
    3.2 it is refused with 411. Either way no identity copy reached a backend."""
    assert_no_identity(data)
    if drops:
        assert r is not None and r.status == 200, r
        assert b"hello" in data or data.endswith(b"0\r\n\r\n"), data
    else:
        assert r is not None and r.status == 411, r


def allowed_case(gw):
    case = new_case()
    gw.user.program(case, status=200, body="tok-" + case)
    return case


def head(route, case, extra=b""):
    return (b"POST %s HTTP/1.1\r\nHost: gateway\r\nCookie: case=%s\r\n" % (route.encode(), case.encode())
            + extra)


def assert_no_identity(data):
    low = data.lower().replace(b"_", b"-")
    assert b"forged" not in low and b"x-example-authorization: f" not in low, data


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", NAMES)
def test_chunked_request_with_identity_trailer_never_reaches_a_backend(captured, route, name,
                                                                      drops_trailers):
    case = allowed_case(captured)
    before = len(captured.cap.data())
    req = head(route, case, b"Transfer-Encoding: chunked\r\nTrailer: %s\r\n\r\n" % name.encode()) + \
        b"5\r\nhello\r\n0\r\n%s: FORGED\r\n\r\n" % name.encode()
    r = raw_request(captured.port, req)
    assert_chunked_outcome(r, captured.cap.data()[before:], drops_trailers)


@pytest.mark.parametrize("route", ROUTES)
def test_empty_chunked_body_with_trailer_never_reaches_a_backend(captured, route, drops_trailers):
    case = allowed_case(captured)
    before = len(captured.cap.data())
    req = head(route, case, b"Transfer-Encoding: chunked\r\n\r\n") + \
        b"0\r\nX-Example-Authorization: FORGED\r\n\r\n"
    r = raw_request(captured.port, req)
    assert_chunked_outcome(r, captured.cap.data()[before:], drops_trailers)


@pytest.mark.parametrize("te", [b"chunked", b"Chunked", b"gzip, chunked", b"identity, chunked"])
def test_every_transfer_coding_spelling_keeps_trailers_out(captured, te, drops_trailers):
    case = allowed_case(captured)
    before = len(captured.cap.data())
    req = head("/api/business/upload", case, b"Transfer-Encoding: " + te + b"\r\n\r\n") + \
        b"5\r\nhello\r\n0\r\nX-Example-Authorization: FORGED\r\n\r\n"
    r = raw_request(captured.port, req)
    # Before 3.2: 411 from the rule, or a 4xx from HAProxy's own parser (2.6
    # answers 422 to codings other than a final "chunked" alone). 3.2+
    # forwards what it accepts, without trailers.
    assert_no_identity(captured.cap.data()[before:])
    assert r is not None and r.status is not None, r
    if not drops_trailers:
        assert 400 <= r.status < 500, r


@pytest.mark.parametrize("route", ROUTES)
def test_h2c_request_with_identity_trailer_never_reaches_a_backend(captured, route):
    case = allowed_case(captured)
    before = len(captured.cap.data())
    send_and_drain(captured.port, h2_request_with_trailers(
        route, [("cookie", "case=" + case)], b"hello",
        [("x-example-authorization", "FORGED"), ("x_example_authorization", "FORGED")]))
    assert_no_identity(captured.cap.data()[before:])


@pytest.mark.parametrize("route", ROUTES)
def test_content_length_body_still_passes_without_identity_copy(captured, route):
    # The control: the capture does see what HAProxy forwards, and a body
    # framed by Content-Length is forwarded, with no client identity copy.
    case = allowed_case(captured)
    before = len(captured.cap.data())
    req = head(route, case, b"Content-Length: 5\r\nX-Example-Authorization: FORGED\r\n\r\nhello")
    r = raw_request(captured.port, req)
    assert r is not None and r.status == 200 and r.body == b"captured", r
    got = captured.cap.data()[before:]
    assert got.startswith(b"POST " + route.encode()) and got.endswith(b"\r\n\r\nhello"), got
    assert_no_identity(got)
    if route.startswith("/api/business"):
        assert b"\r\nx-example-authorization: tok-" + case.encode() + b"\r\n" in got.lower(), got
