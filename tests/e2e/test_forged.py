"""A client-supplied identity header never reaches a backend, whatever its
case, spelling or number of copies, on any route, with or without a valid
session; only the user service's token does."""
import pytest

from harness import biz_requests, new_case, sha256_hex, user_stats

FORGED = [
    [("X-Example-Authorization", "forged-1")],
    [("x-example-authorization", "forged-2")],
    [("X-EXAMPLE-AUTHORIZATION", "forged-3")],
    [("x-ExAmPlE-aUtHoRiZaTiOn", "forged-4")],
    [("X-Example-Authorization", "forged-5a"), ("X-Example-Authorization", "forged-5b")],
    [("X-Example-Authorization", "forged-6a"), ("x-example-authorization", "forged-6b"),
     ("X-EXAMPLE-AUTHORIZATION", "forged-6c")],
    [("X_Example_Authorization", "forged-7")],
    [("X-Example-Authorization", "")],
]
IDS = ["canonical", "lower", "upper", "mixed", "twice", "thrice-mixed", "underscore", "empty"]


def identity_headers(body):
    return [v for k, v in body["headers"] if k.lower().replace("_", "-") == "x-example-authorization"]


@pytest.mark.parametrize("forged", FORGED, ids=IDS)
def test_forged_with_a_valid_session_is_replaced(demo, forged):
    cookie, _ = demo.login("alice")
    r = demo.get("/api/business/hello", [("Cookie", cookie)] + forged)
    assert r.status == 200, r
    body = r.json()
    assert len(body["x_example_authorization"]) == 1
    got = identity_headers(body)
    assert len(got) == 1 and not got[0].startswith("forged"), got
    assert sha256_hex(got[0]) in user_stats(demo)["recent_token_sha256"]
    assert body["claims"]["sub"] == "alice"


@pytest.mark.parametrize("forged", FORGED, ids=IDS)
def test_forged_without_a_session_is_refused(demo, forged):
    before = biz_requests(demo)
    r = demo.get("/api/business/hello", forged)
    assert r.status == 401, r
    assert biz_requests(demo) == before


@pytest.mark.parametrize("forged", FORGED, ids=IDS)
def test_forged_on_public_routes_is_stripped(fake, forged):
    marker = new_case()
    r = fake.get("/api/user/profile?m=" + marker, forged)
    assert r.status == 200, r
    seen = [q for q in fake.user.requests_to("/api/user/profile") if marker in q["raw_path"]]
    assert len(seen) == 1
    assert [v for k, v in seen[0]["headers"]
            if k.lower().replace("_", "-") == "x-example-authorization"] == []


@pytest.mark.parametrize("forged", FORGED, ids=IDS)
def test_forged_with_a_fake_allow_is_replaced_by_the_token(fake, forged):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    r = fake.get("/api/business/x", [("Cookie", "case=" + case)] + forged)
    assert r.status == 200, r
    assert identity_headers(r.json()) == ["tok-" + case]


def test_identity_header_is_forwarded_to_the_user_service_as_a_credential(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    r = fake.get("/api/business/x", [("Cookie", "case=" + case),
                                     ("X-Example-Authorization", "client-held-token.abc")])
    assert r.status == 200
    calls = fake.user.calls(case)
    assert len(calls) == 1
    got = [v for k, v in calls[0]["headers"] if k.lower() == "x-example-authorization"]
    assert got == ["client-held-token.abc"]
