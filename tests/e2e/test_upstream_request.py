"""What the user service receives from the agent: the original request URI,
X-Forwarded-For with the client appended, and the credentials."""
import urllib.parse

import pytest

from harness import new_case

URIS = [
    "/api/business/orders?id=7",
    "/api/business/orders?id=7&q=a%20b&x=%2F&amp=%26&plus=a+b",
    "/api/business/caf%C3%A9/%7Euser?utf=%E2%9C%93",
    "/api/business/x?next=https%3A%2F%2Fexample.com%2F%3Fa%3D1%23frag",
    "/api/business/a/b/c;matrix=1?empty=&flag",
    "/api/business/y?=odd&&a==b",
]


@pytest.mark.parametrize("uri", URIS)
def test_request_uri_is_the_original(fake, uri):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    r = fake.get(uri, [("Cookie", "case=" + case)])
    assert r.status == 200, r
    calls = fake.user.calls(case)
    assert len(calls) == 1
    assert calls[0]["path"] == "/api/user/token"
    assert calls[0]["request_uri"] == uri
    # a single request_uri parameter, properly encoded
    assert list(urllib.parse.parse_qs(calls[0]["query"], keep_blank_values=True)) == ["request_uri"]
    assert r.json()["path"] == uri


def headers_named(call, name):
    return [v for k, v in call["headers"] if k.lower() == name.lower()]


def test_credentials_and_forwarded_for(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    cookie = "case=%s; theme=dark; session=abc.def" % case
    r = fake.get("/api/business/x", [("Cookie", cookie), ("Authorization", "Bearer abc.def.ghi"),
                                     ("X-Forwarded-For", "10.1.2.3, 10.9.9.9"),
                                     ("X-Example-Authorization", "held-token"),
                                     ("X-Unrelated", "not-forwarded")])
    assert r.status == 200, r
    call = fake.user.calls(case)[0]
    assert headers_named(call, "Cookie") == [cookie]
    assert headers_named(call, "Authorization") == ["Bearer abc.def.ghi"]
    assert headers_named(call, "X-Example-Authorization") == ["held-token"]
    xff = headers_named(call, "X-Forwarded-For")
    assert len(xff) == 1
    assert [p.strip() for p in xff[0].split(",")] == ["10.1.2.3", "10.9.9.9", "127.0.0.1"]
    assert headers_named(call, "X-Unrelated") == []


def test_forwarded_for_without_client_header(fake):
    case = new_case()
    fake.user.program(case, status=200, body="tok-" + case)
    assert fake.get("/api/business/x", [("Cookie", "case=" + case)]).status == 200
    call = fake.user.calls(case)[0]
    assert [p.strip() for p in headers_named(call, "X-Forwarded-For")[0].split(",")] == ["127.0.0.1"]
    assert headers_named(call, "Authorization") == []
