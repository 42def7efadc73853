"""A 2xx body from the user service becomes the identity token less exactly
one trailing "\\n" or "\\r\\n" (text servers end their output with one); any
other control byte makes the answer unusable: 503, and the backend is never
reached with a token a header cannot carry."""
import pytest

from harness import biz_requests, new_case


@pytest.mark.parametrize("body,token", [
    (b"tok", "tok"),
    (b"tok\n", "tok"),
    (b"tok\r\n", "tok"),
], ids=["bare", "lf", "crlf"])
def test_one_trailing_line_end_is_not_part_of_the_token(fake, body, token):
    case = new_case()
    fake.user.program(case, status=200, body=body.replace(b"tok", b"tok-" + case.encode()))
    r = fake.get("/api/business/x", [("Cookie", "case=" + case)])
    assert r.status == 200, r
    assert r.json()["x_example_authorization"] == [token.replace("tok", "tok-" + case)]


@pytest.mark.parametrize("body", [b"to\nk", b"tok\n\n", b"tok\r\n\r\n", b"tok\r", b"\ntok",
                                  b"to\tk", b"tok\x00"],
                         ids=["inner-lf", "two-lf", "two-crlf", "bare-cr", "leading-lf", "tab",
                              "nul"])
def test_any_other_control_byte_is_unusable(fake, body):
    case = new_case()
    fake.user.program(case, status=200, body=body)
    before = biz_requests(fake)
    r = fake.get("/api/business/x", [("Cookie", "case=" + case)])
    assert r.status == 503, r
    assert r.json() == {"error": "authentication_unavailable"}
    assert biz_requests(fake) == before
