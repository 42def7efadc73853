"""Route ACLs: HAProxy routes on the path as sent (no normalisation), and the
public route's backend is the user service only, so no spelling of a path
that the public or the 404 rule matches reaches the business service without
an exchange; protected spellings are exchanged with the URI as sent, and the
user service judges that URI the way a lenient backend would."""
import pytest

from harness import biz_requests, new_case
from rawhttp import raw_request

SNEAKY = [
    "/api/user/../business/hello",
    "/api/user/./../business/hello",
    "/api/user/%2e%2e/business/hello",
    "/api/user/%2E%2E/business/hello",
    "/api/user/..%2Fbusiness/hello",
    "/api/user%2F..%2Fbusiness/hello",
    "/api/user/..%5Cbusiness/hello",
    "/api/user/..;/business/hello",
    "/api/users/../business/hello",
    "/api/userbusiness/hello",
    "//api/business/hello",
    "/./api/business/hello",
    "/api//business/hello",
    "/api/%62usiness/hello",
    "/api/Business/hello",
    "/%61pi/business/hello",
]


@pytest.mark.parametrize("path", SNEAKY)
def test_no_spelling_reaches_the_business_service_unauthenticated(demo, path):
    before = biz_requests(demo)
    r = demo.get(path)
    assert r.status in (400, 401, 404), (path, r)
    assert biz_requests(demo) == before


@pytest.mark.parametrize("target", [b"http://gateway/api/user/../business/hello",
                                    b"http://gateway//api/business/hello",
                                    b"/api/user/..\\business/hello"])
def test_absolute_form_and_backslash_do_not_reach_the_business_service(demo, target):
    before = biz_requests(demo)
    r = raw_request(demo.port, b"GET " + target + b" HTTP/1.1\r\nHost: gateway\r\n\r\n")
    assert r is not None and r.status in (400, 401, 404), r
    assert biz_requests(demo) == before


def test_protected_spellings_are_exchanged_with_the_uri_as_sent(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    path = "/api/business/x/..%2F;a/%2e%2e/admin?q=1"
    r = fake.get(path, [("Cookie", "case=" + case)])
    assert r.status == 200, r
    calls = fake.user.calls(case)
    assert len(calls) == 1 and calls[0]["request_uri"] == path, calls
