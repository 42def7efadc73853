"""Circuit breaker (agent option breaker on): after breaker-failures
consecutive failures (or, with breaker-failure-ratio, that share of the calls
over breaker-window) the agent answers outcome=error without calling the user
service, probes with one request once breaker-open-time has passed, closes on
success; stale-if-error still answers while it is open; the state is in
/metrics and each transition in the log."""
import re
import time

import pytest

from harness import gateway, http, new_case, wait_log

FAILURES = 3
OPEN_S = 2.5
STALE_GRACE_S = 30


@pytest.fixture(scope="module")
def bgw(fake_user, demo_services, haproxy_bin, agent_bin, logdir):
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=[
                     "--breaker", "on", "--breaker-failures", str(FAILURES),
                     "--breaker-open-time", "%dms" % (OPEN_S * 1000),
                     "--cache", "on", "--cache-stale-grace", "%ds" % STALE_GRACE_S],
                 admin=True, agent_name="agent-breaker", user=fake_user,
                 secret=demo_services["secret"]) as gw:
        yield gw


def cookie(case):
    return [("Cookie", "case=%s" % case)]


def metrics(gw):
    text = http(gw.admin_port, "GET", "/metrics").body.decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_opens_probes_and_closes(bgw):
    m0 = metrics(bgw)
    assert m0["spoa_auth_breaker_state"] == 0
    # a cached allow, expired by the time the breaker is open
    cached = new_case()
    bgw.user.program(cached, status=200, body="tok-" + cached,
                     headers=[("Cache-Control", "max-age=1")])
    r = bgw.get("/api/business/x", cookie(cached))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "miss"), r
    t_cached = time.monotonic()

    # breaker-failures answers that are no answer at all open it
    dead = new_case()
    bgw.user.program(dead, close=True)
    for _ in range(FAILURES):
        r = bgw.get("/api/business/x", cookie(dead))
        assert r.status == 503, r
    # (libcurl may resend once on a reused connection closed under it)
    n_dead = len(bgw.user.calls(dead))
    assert n_dead >= FAILURES
    wait_log(bgw.agent, "circuit breaker: open")
    m = metrics(bgw)
    assert m["spoa_auth_breaker_state"] == 1
    assert m['spoa_auth_breaker_transitions_total{to="open"}'] == \
        m0['spoa_auth_breaker_transitions_total{to="open"}'] + 1

    # open: a healthy request is not even sent, and fails closed
    good = new_case()
    bgw.user.program(good, status=200, body="tok-" + good)
    r = bgw.get("/api/business/x", cookie(good))
    assert r.status == 503 and r.json() == {"error": "authentication_unavailable"}, r
    assert bgw.user.calls(good) == []
    assert bgw.get("/api/business/x", cookie(dead)).status == 503
    assert len(bgw.user.calls(dead)) == n_dead
    assert metrics(bgw)["spoa_auth_breaker_rejected_total"] >= \
        m0["spoa_auth_breaker_rejected_total"] + 1

    # stale-if-error still applies while open: the expired entry answers
    time.sleep(max(0.0, t_cached + 1.2 - time.monotonic()))
    n = len(bgw.user.calls(cached))
    r = bgw.get("/api/business/x", cookie(cached))
    assert (r.status, r.header("X-Auth-Cache")) == (200, "stale"), r
    assert len(bgw.user.calls(cached)) == n

    # after the open time, one probe goes through and closes it
    time.sleep(OPEN_S + 0.2)
    r = bgw.get("/api/business/x", cookie(good))
    assert r.status == 200, r
    assert len(bgw.user.calls(good)) == 1
    wait_log(bgw.agent, "circuit breaker: half_open")
    wait_log(bgw.agent, "circuit breaker: closed")
    m = metrics(bgw)
    assert m["spoa_auth_breaker_state"] == 0
    # One probe, one close, counted from this test's start (the module's
    # agent is shared: absolute counts would hold whatever ran before).
    for to in ("half_open", "closed"):
        k = 'spoa_auth_breaker_transitions_total{to="%s"}' % to
        assert m[k] == m0[k] + 1, (to, m0[k], m[k])


def test_failed_probe_reopens_and_5xx_counts(bgw):
    # 5xx answers are failures too (the client sees the passed-on status)
    sick = new_case()
    bgw.user.program(sick, status=503, body="down")
    before = metrics(bgw)['spoa_auth_breaker_transitions_total{to="open"}']
    for _ in range(FAILURES):
        assert bgw.get("/api/business/x", cookie(sick)).status == 503
    assert metrics(bgw)["spoa_auth_breaker_state"] == 1
    time.sleep(OPEN_S + 0.2)
    # the probe fails: open again, and the next request is not sent
    r = bgw.get("/api/business/x", cookie(sick))
    assert r.status == 503
    assert len(bgw.user.calls(sick)) == FAILURES + 1
    assert metrics(bgw)['spoa_auth_breaker_transitions_total{to="open"}'] == before + 2
    good = new_case()
    bgw.user.program(good, status=200, body="tok-" + good)
    assert bgw.get("/api/business/x", cookie(good)).status == 503
    assert bgw.user.calls(good) == []
    time.sleep(OPEN_S + 0.2)
    assert bgw.get("/api/business/x", cookie(good)).status == 200
    assert metrics(bgw)["spoa_auth_breaker_state"] == 0


def test_denials_never_open_it(bgw):
    nope = new_case()
    bgw.user.program(nope, status=401, body="no")
    for _ in range(FAILURES * 2):
        assert bgw.get("/api/business/x", cookie(nope)).status == 401
    assert metrics(bgw)["spoa_auth_breaker_state"] == 0


def test_breaker_off_by_default_never_opens(fake, fake_user):
    dead = new_case()
    fake_user.program(dead, close=True)
    for _ in range(8):
        assert fake.get("/api/business/x", cookie(dead)).status == 503
    good = new_case()
    fake_user.program(good, status=200, body="tok-" + good)
    assert fake.get("/api/business/x", cookie(good)).status == 200


@pytest.mark.parametrize("key,value", [("breaker", "maybe"), ("breaker-failures", "0"),
                                       ("breaker-open-time", "0"), ("breaker-open-time", "2h")])
def test_bad_values_stop_the_start(agent_bin, key, value):
    import subprocess
    r = subprocess.run([agent_bin, "-c", "--" + key, value], capture_output=True, text=True)
    assert r.returncode == 1
    assert re.search(r"'--%s'" % re.escape(key), r.stderr), r.stderr


def test_reload_with_breaker_off_closes_it(fake_user, demo_services, haproxy_bin, agent_bin,
                                           logdir, tmp_path):
    import signal
    conf = tmp_path / "agent.conf"
    conf.write_text("breaker on\nbreaker-failures 2\nbreaker-open-time 1m\n")
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=("-f", str(conf)), admin=True,
                 agent_name="agent-breaker-reload", agent_started=True) as gw:
        agent = gw.agent
        dead = new_case()
        fake_user.program(dead, close=True)
        for _ in range(2):
            assert gw.get("/api/business/x", cookie(dead)).status == 503
        assert metrics(gw)["spoa_auth_breaker_state"] == 1
        good = new_case()
        fake_user.program(good, status=200, body="tok-" + good)
        assert gw.get("/api/business/x", cookie(good)).status == 503   # open for a minute

        conf.write_text("breaker off\n")
        agent.p.send_signal(signal.SIGHUP)
        wait_log(agent, "configuration reloaded")
        r = None
        for _ in range(50):   # each worker takes the new cfg from its inbox
            r = gw.get("/api/business/x", cookie(good))
            if r.status == 200:
                break
            time.sleep(0.05)
        assert r.status == 200, r
        wait_log(agent, "circuit breaker: closed: turned off")
        assert metrics(gw)["spoa_auth_breaker_state"] == 0


RATIO_MIN_REQUESTS = 10


def test_failure_ratio_opens_it_where_no_run_of_failures_would(fake_user, demo_services,
                                                                haproxy_bin, agent_bin, logdir):
    # Every other call fails: never two in a row, so breaker-failures alone
    # would never open it; half of the calls over the window does.
    calls0 = fake_user.total_calls()
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=[
                     "--breaker", "on", "--breaker-failures", "2",
                     "--breaker-failure-ratio", "0.5", "--breaker-window", "30s",
                     "--breaker-min-requests", str(RATIO_MIN_REQUESTS),
                     "--breaker-open-time", "%dms" % (OPEN_S * 1000)],
                 admin=True, agent_name="agent-breaker-ratio") as gw:
        agent = gw.agent
        good, bad = new_case(), new_case()
        fake_user.program(good, status=200, body="tok-" + good)
        fake_user.program(bad, status=503, body="down")
        assert metrics(gw)["spoa_auth_breaker_state"] == 0
        statuses, opened_after = [], None
        for i in range(3 * RATIO_MIN_REQUESTS):
            statuses.append(gw.get("/api/business/x", cookie(bad if i % 2 == 0 else good)).status)
            if metrics(gw)["spoa_auth_breaker_state"] == 1:
                opened_after = i + 1
                break
        assert opened_after is not None, statuses
        # it opened on a failure, with every call before answered as called
        assert opened_after % 2 == 1, statuses
        assert statuses == [503, 200] * (opened_after // 2) + [503], statuses
        # and not before the window held breaker-min-requests calls (the
        # readiness calls, answered 401, count as successes)
        assert fake_user.total_calls() - calls0 >= RATIO_MIN_REQUESTS
        wait_log(agent, "circuit breaker: open: at least 0.500 of the user-service calls")
        assert metrics(gw)["spoa_auth_breaker_state"] == 1
        calls = fake_user.calls(good)
        assert gw.get("/api/business/x", cookie(good)).status == 503   # not called
        assert fake_user.calls(good) == calls
        # one probe after the open time, a success: closed
        time.sleep(OPEN_S + 0.2)
        assert gw.get("/api/business/x", cookie(good)).status == 200
        wait_log(agent, "circuit breaker: closed: the probe succeeded")
        assert metrics(gw)["spoa_auth_breaker_state"] == 0
        # the window started again empty: one failure does not re-open it
        assert gw.get("/api/business/x", cookie(bad)).status == 503
        assert metrics(gw)["spoa_auth_breaker_state"] == 0


@pytest.mark.parametrize("key,value", [("breaker-failure-ratio", "1.5"),
                                       ("breaker-failure-ratio", "half"),
                                       ("breaker-window", "0"), ("breaker-min-requests", "0")])
def test_bad_ratio_values_stop_the_start(agent_bin, key, value):
    import subprocess
    r = subprocess.run([agent_bin, "-c", "--" + key, value], capture_output=True, text=True)
    assert r.returncode == 1
    assert re.search(r"'--%s'" % re.escape(key), r.stderr), r.stderr
