"""POST /cache/invalidate against HAProxy's L1 (docs/cache.md, "L1"): the
admin's `cookie` parameter, in each form an operator may paste, either
reaches the L1 entry HAProxy keys on "<L1_COOKIE>=<value>" (a tombstone under
the same hash) or is refused with a 400 before anything is evicted, so the
agent's cache and HAProxy's L1 never disagree about what was invalidated.
Uses test_l1.py's gateway (L1 on, keyed on the fake's "case" cookie, agent
with --cache-key-cookies case and the runtime socket)."""
import urllib.parse

from test_l1 import l1, ok_case, primed, runtime, l1_cred, admin_post, get  # noqa: F401


def test_admin_cookie_with_surrounding_blanks_reaches_the_l1(l1):  # noqa: F811
    case = ok_case(l1)
    primed(l1, case)
    r = admin_post(l1, "cookie=" + urllib.parse.quote(" case=%s\t" % case))
    assert r.status == 200 and b'"l1":"ok"' in r.body, r
    assert l1_cred(case) in runtime(l1, "show table l1_tomb"), "tombstone under HAProxy's hash"
    r = get(l1, case)
    assert r.status == 200 and r.header("X-Auth-Cache") != "l1", r


def test_admin_cookie_with_a_second_pair_is_refused(l1):  # noqa: F811
    case = ok_case(l1)
    primed(l1, case)
    for form in ("case=%s; theme=dark" % case, "theme=dark; case=%s" % case):
        r = admin_post(l1, "cookie=" + urllib.parse.quote(form))
        assert r.status == 400 and b"one name=value pair" in r.body, (form, r)
        # nothing was invalidated: the agent's entry and the L1's both stay
        r = get(l1, case)
        assert (r.status, r.header("X-Auth-Cache")) == (200, "l1"), (form, r)
    assert l1_cred(case) not in runtime(l1, "show table l1_tomb")
    # the one pair still works
    r = admin_post(l1, "cookie=" + urllib.parse.quote("case=%s" % case))
    assert r.status == 200 and b'"l1":"ok"' in r.body, r
    assert get(l1, case).header("X-Auth-Cache") != "l1"


def test_admin_cookie_as_a_bare_value_is_refused(l1):  # noqa: F811
    case = ok_case(l1)
    primed(l1, case)
    r = admin_post(l1, "cookie=" + urllib.parse.quote(case))
    assert r.status == 400 and b"one name=value pair" in r.body, r
    assert (get(l1, case).header("X-Auth-Cache")) == "l1"
