"""W3C trace context: HAProxy sends the request's traceparent/tracestate to
the agent (spoe-auth.conf), which checks traceparent strictly and sends it
on to the user service re-formatted (a malformed one is dropped, with its
tracestate; forward-headers may not list them), with a new parent-id when
trace-new-span is on, and invents one only with trace-generate on. The
trace-id is in the agent's access log and in HAProxy's log line."""
import re

import pytest

from harness import gateway, new_case, wait_log

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = "00-%s-00f067aa0ba902b7-01" % TRACE_ID
TS = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
VALID = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")


def trace_gateway(fake_user, demo_services, haproxy_bin, agent_bin, logdir, extra, name):
    return gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                   demo_services["biz_port"], agent_extra=["--log-level", "access", *extra],
                   agent_name=name, user=fake_user, secret=demo_services["secret"])


@pytest.fixture(scope="module")
def passgw(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    with trace_gateway(fake_user, demo_services, haproxy_bin, agent_bin, logdir, [],
                       "agent-trace") as gw:
        yield gw


@pytest.fixture(scope="module")
def hopgw(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    with trace_gateway(fake_user, demo_services, haproxy_bin, agent_bin, logdir,
                       ["--trace-new-span", "on", "--trace-generate", "on"],
                       "agent-trace-hop") as gw:
        yield gw


def sent(gw, headers):
    """Sends a protected request with <headers>; returns the headers the user
    service got, as {lower name: [values]}."""
    case = new_case()
    gw.user.program(case, status=200, body="tok-" + case)
    r = gw.get("/api/business/x", [("Cookie", "case=%s" % case)] + headers)
    assert r.status == 200, r
    (call,) = gw.user.calls(case)
    out = {}
    for k, v in call["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def test_valid_context_passes_as_is(passgw):
    h = sent(passgw, [("traceparent", TP), ("tracestate", TS)])
    assert h.get("traceparent") == [TP]
    assert h.get("tracestate") == [TS]
    wait_log(passgw.agent, "trace=%s" % TRACE_ID)
    wait_log(passgw.haproxy, "trace=%s" % TRACE_ID)


@pytest.mark.parametrize("bad", [
    TP.upper(),                                                   # upper case
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    # zero trace-id
    "00-%s-0000000000000000-01" % TRACE_ID,                       # zero parent-id
    "ff-%s-00f067aa0ba902b7-01" % TRACE_ID,                       # version ff
    TP + "-extra",                                                # version 00 is 55 chars
    TP[:-1],                                                      # short
    "00-%s-00f067aa0ba902b7-01, 00-%s-00f067aa0ba902b7-01" % (TRACE_ID, TRACE_ID),
    "garbage",
])
def test_malformed_traceparent_is_dropped_with_its_tracestate(passgw, bad):
    h = sent(passgw, [("traceparent", bad), ("tracestate", TS)])
    assert "traceparent" not in h, h
    assert "tracestate" not in h, h


def test_bad_tracestate_alone_is_dropped(passgw):
    h = sent(passgw, [("traceparent", TP), ("tracestate", "no-equals-sign")])
    assert h.get("traceparent") == [TP]
    assert "tracestate" not in h


def test_none_is_invented_by_default(passgw):
    h = sent(passgw, [])
    assert "traceparent" not in h and "tracestate" not in h


def test_hop_sends_a_new_span_of_the_same_trace(hopgw):
    h = sent(hopgw, [("traceparent", TP), ("tracestate", TS)])
    (tp,) = h["traceparent"]
    m = VALID.match(tp)
    assert m, tp
    assert m.group(1) == TRACE_ID and m.group(3) == "01"
    assert m.group(2) != "00f067aa0ba902b7"
    assert h.get("tracestate") == [TS]
    wait_log(hopgw.haproxy, "trace=%s" % TRACE_ID)


def test_generated_when_configured(hopgw):
    ids = set()
    for headers in ([], [("traceparent", "garbage"), ("tracestate", TS)]):
        h = sent(hopgw, headers)
        (tp,) = h["traceparent"]
        m = VALID.match(tp)
        assert m and m.group(3) == "00", tp
        assert "tracestate" not in h
        ids.add(m.group(1))
        wait_log(hopgw.agent, "trace=%s" % m.group(1))
        wait_log(hopgw.haproxy, "trace=%s" % m.group(1))
    assert len(ids) == 2


@pytest.mark.parametrize("name", ["traceparent", "TraceState"])
def test_forward_headers_may_not_list_trace_context(agent_bin, name):
    import subprocess
    r = subprocess.run([agent_bin, "-c", "--forward-headers", "cookie " + name],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "'--forward-headers'" in r.stderr, r.stderr
