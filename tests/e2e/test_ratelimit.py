"""Per-user rate limit: the agent exposes the subject of an allow
(subject-claim of the JWT, or subject-header) as txn.auth.subject, and the
commented stick-table example of haproxy/haproxy.cfg, turned on (the test
removes its "#ratelimit " markers, nothing else), answers 429 to one user
past USER_RATE_LIMIT while another user still passes."""
import base64
import json
import re

import pytest

from harness import HAPROXY_CFG, gateway, new_case

LIMIT = 3
MARKER = re.compile(r"^(\s*)#ratelimit ", re.M)


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def jwt(claims):
    return "%s.%s.c2ln" % (b64({"alg": "HS256", "typ": "JWT"}), b64(claims))


def enabled_cfg(tmp_path):
    text = HAPROXY_CFG.read_text()
    out, n = MARKER.subn(r"\1", text)
    assert n == 4, "the example has changed: %d marked lines" % n
    path = tmp_path / "haproxy-ratelimit.cfg"
    path.write_text(out)
    return path


@pytest.fixture(scope="module", params=["claim", "header"])
def rgw(request, fake_user, demo_services, haproxy_bin, agent_bin, logdir, tmp_path_factory):
    extra = ["--subject-claim", "sub"] if request.param == "claim" else \
        ["--subject-header", "X-User-Id"]
    with gateway(logdir, haproxy_bin, agent_bin, fake_user.url, fake_user.port,
                 demo_services["biz_port"], agent_extra=extra,
                 cfg=enabled_cfg(tmp_path_factory.mktemp("rl")),
                 haproxy_env={"USER_RATE_LIMIT": str(LIMIT)},
                 user=fake_user, mode=request.param, secret=demo_services["secret"]) as gw:
        yield gw


def user_case(gw, subject, status=200):
    """A case whose answer names <subject> the way the agent is configured
    to read it."""
    case = new_case()
    if gw.mode == "claim":
        gw.user.program(case, status=status, body=jwt({"sub": subject, "exp": 4102444800}))
    else:
        gw.user.program(case, status=status, body="tok-" + case,
                        headers=[("X-User-Id", subject)])
    return [("Cookie", "case=%s" % case)]


def test_one_user_past_the_limit_gets_429_another_passes(rgw):
    alice, bob = "alice-" + new_case(), "bob-" + new_case()
    a, b = user_case(rgw, alice), user_case(rgw, bob)
    for _ in range(LIMIT):
        assert rgw.get("/api/business/x", a).status == 200
    r = rgw.get("/api/business/x", a)
    assert r.status == 429, r
    assert r.json() == {"error": "rate_limited"}
    assert r.header("Retry-After") == "10"
    # another user is not affected, and neither is another session of bob
    for _ in range(LIMIT):
        assert rgw.get("/api/business/x", b).status == 200
    assert rgw.get("/api/business/x", user_case(rgw, alice)).status == 429


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "caf\u00e9"])
def test_unusable_subject_is_not_exposed(rgw, bad):
    if rgw.mode == "header" and not bad.isascii():
        pytest.skip("http.server cannot send a non-ASCII header")
    h = user_case(rgw, bad)
    for _ in range(LIMIT + 2):
        assert rgw.get("/api/business/x", h).status == 200


def test_refusals_are_not_counted(rgw):
    carol = "carol-" + new_case()
    denied = user_case(rgw, carol, status=401)
    for _ in range(LIMIT + 2):
        assert rgw.get("/api/business/x", denied).status == 401
    assert rgw.get("/api/business/x", user_case(rgw, carol)).status == 200


def test_shipped_config_has_the_limit_off(fake):
    h = [("Cookie", "case=%s" % new_case())]
    case = h[0][1].split("=", 1)[1]
    fake.user.program(case, status=200, body=jwt({"sub": "dave"}))
    for _ in range(LIMIT + 2):
        assert fake.get("/api/business/x", h).status == 200


@pytest.mark.parametrize("args,key", [
    (["--subject-claim", "sub", "--subject-header", "X-User"], "subject-header"),
    (["--subject-header", "X User"], "subject-header"),
    (["--subject-claim", 'a"b'], "subject-claim"),
    (["--subject-claim", "x" * 129], "subject-claim"),
])
def test_bad_subject_options_stop_the_start(agent_bin, args, key):
    import subprocess
    r = subprocess.run([agent_bin, "-c", *args], capture_output=True, text=True)
    assert r.returncode == 1
    assert "'%s'" % key in r.stderr or "'--%s'" % key in r.stderr, r.stderr
