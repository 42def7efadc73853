#!/usr/bin/python3
"""Demo user service for spoa-auth (Python 3 standard library only).

Routes
  POST /api/user/login    JSON or form {username, password}; demo users
                          alice/alice, bob/bob, admin/admin (role admin).
                          Sets the session cookie (HttpOnly, SameSite=Lax,
                          HMAC-SHA256 signed, with an expiry).
  POST /api/user/logout   ends the session on the server (its cookie and the
                          tokens issued for it stop working, also copies
                          held elsewhere) and clears the cookie (Max-Age=0).
  GET  /api/user/me       the session's user (cookie or Bearer token), or 401.
  GET  /api/user/token?request_uri=URI
                          the exchange spoa-auth calls. 200: a short-lived
                          HS256 JWT, text/plain (claims sub, name, role, sid,
                          iat, exp), for a valid session cookie, an
                          "Authorization: Bearer <jwt>" or an
                          "X-Example-Authorization: <jwt>" this service issued.
                          401 JSON + WWW-Authenticate without one; 403 JSON
                          when URI is under /api/business/admin and the role
                          is not admin. "Under" is decided on path segments
                          as the most lenient backend would route them
                          (percent-decoding, ";params", dot segments,
                          suffixes like ".json", case); a URI that stays
                          ambiguous counts as an admin one. A session past half its life is
                          refreshed with a new Set-Cookie on the 200.
                          Every answer says the decision scope it holds for
                          (X-Auth-Scope, docs/cache.md "Scopes"): "admin" for
                          an admin URI (as above), "business" for the rest of
                          /api/business, "uri" for anything else; a gateway
                          that keyed the request on another scope does not
                          reuse the answer.
  GET  /__stats           JSON for tests: number of /api/user/token calls and
                          SHA-256 hashes of the last tokens issued.

Environment: DEMO_JWT_SECRET (shared with the business service) and
DEMO_SESSION_SECRET; each is random at start when unset.
Flags: --host (127.0.0.1), --port (8101), --quiet.
"""
import argparse
import collections
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse

from demo_common import Server, b64url, b64url_decode, jwt_encode, jwt_verify

USERS = {
    "alice": {"password": "alice", "name": "Alice Liddell", "role": "user"},
    "bob": {"password": "bob", "name": "Bob Builder", "role": "user"},
    "admin": {"password": "admin", "name": "Ada Admin", "role": "admin"},
}
SESSION_COOKIE = "session"
SESSION_TTL = 3600          # seconds
TOKEN_TTL = 120             # seconds
TOKEN_CACHE_ALLOW = "private, max-age=60"
TOKEN_CACHE_DENY = "private, max-age=5"
ADMIN_SEGMENTS = ["api", "business", "admin"]
BUSINESS_SEGMENTS = ["api", "business"]
MAX_DECODE_ROUNDS = 3       # %2561 -> %61 -> a: deeper nesting is ambiguous
MAX_SESSIONS = 100000       # live sessions kept; past it the oldest end
PCT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# Where a backend may end a segment's name: path parameters (";x=1"), a
# query or fragment that decoding revealed, a NUL (C string APIs).
SEGMENT_END = re.compile(r"[;?#\x00]")
REALM = 'Bearer realm="example"'


class Keys:
    def __init__(self):
        self.jwt = os.environ.get("DEMO_JWT_SECRET", "").encode() or secrets.token_bytes(32)
        self.session = os.environ.get("DEMO_SESSION_SECRET", "").encode() or secrets.token_bytes(32)


def jwt_decode(key, token, now=None):
    """Returns the claims of a valid, unexpired HS256 token, else None."""
    return jwt_verify(key, token, now)[0]


def session_encode(key, payload):
    body = b64url(json.dumps(payload, separators=(",", ":")).encode())
    sig = b64url(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())
    return body + "." + sig


def session_decode(key, value):
    try:
        body, sig = value.split(".")
        expected = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, b64url_decode(sig)):
            return None
        payload = json.loads(b64url_decode(body))
        if not isinstance(payload, dict) or int(payload.get("exp", 0)) <= time.time():
            return None
        if payload.get("sub") not in USERS:
            return None
        return payload
    except (ValueError, TypeError, UnicodeError, AttributeError):
        return None


def cookie_values(header_values, name):
    """All values of cookie <name> in the Cookie header(s), in order."""
    out = []
    for header in header_values:
        for part in header.split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                out.append(v.strip().strip('"'))
    return out


def request_path(uri):
    """The path of a request URI, origin form or absolute form, as sent."""
    if uri.startswith("/"):
        return re.split(r"[?#]", uri, maxsplit=1)[0]
    return urllib.parse.urlsplit(uri).path


def route_segments(segments):
    """Segment names as a lenient backend routes them: each cut at ";", "?",
    "#" or NUL, stripped of blanks, lowercased, an extension dropped
    ("admin.json" -> "admin"); empty and "." segments skipped, ".." resolved
    (also "..;x", as Tomcat does)."""
    out = []
    for seg in segments:
        name = SEGMENT_END.split(seg, maxsplit=1)[0].strip().lower()
        if name in ("", "."):
            continue
        if name == "..":
            if out:
                out.pop()
            continue
        out.append(name.split(".", 1)[0] or name)
    return out


def decision_scope(uri):
    """The scope a token answer about <uri> holds for (X-Auth-Scope): the
    scopes of haproxy/scopes.map, read as leniently as is_admin_uri()."""
    if is_admin_uri(uri):
        return "admin"
    segs = route_segments(urllib.parse.unquote(request_path(uri), errors="replace")
                          .replace("\\", "/").split("/"))
    return "business" if segs[:len(BUSINESS_SEGMENTS)] == BUSINESS_SEGMENTS else "uri"


def is_admin_uri(uri):
    """True when some backend could route request URI <uri> to the admin
    area, or when that cannot be told. Two readings are checked: segments
    split first and then percent-decoded (a backend that keeps %2F inside a
    segment), and the path decoded first (as often as it holds escapes, up
    to MAX_DECODE_ROUNDS) and then split. Backslashes count as slashes."""
    path = request_path(uri)
    split_first = [urllib.parse.unquote(seg, errors="replace")
                   for seg in path.replace("\\", "/").split("/")]
    decoded = path
    for _ in range(MAX_DECODE_ROUNDS):
        if not PCT_ESCAPE.search(decoded):
            break
        decoded = urllib.parse.unquote(decoded, errors="replace")
    else:
        if PCT_ESCAPE.search(decoded):
            return True
    decoded_first = decoded.replace("\\", "/").split("/")
    n = len(ADMIN_SEGMENTS)
    return any(route_segments(segs)[:n] == ADMIN_SEGMENTS
               for segs in (split_first, decoded_first))


class Sessions:
    """Live sessions, by sid: a session cookie or a token works only while
    its sid is here. Login adds, logout removes; expired ones are pruned.
    Bounded: past MAX_SESSIONS the session closest to expiry ends early (a
    user logged out too soon, never a logout undone)."""

    def __init__(self, limit=MAX_SESSIONS):
        self.lock = threading.Lock()
        self.exp = {}
        self.limit = limit

    def add(self, sid, exp):
        now = time.time()
        with self.lock:
            if sid not in self.exp and len(self.exp) >= self.limit:
                for k in [k for k, e in self.exp.items() if e <= now]:
                    del self.exp[k]
                while len(self.exp) >= self.limit:
                    del self.exp[min(self.exp, key=self.exp.get)]
            self.exp[sid] = exp

    def refresh(self, sid, exp):
        """Extends a live session; never brings back one that ended."""
        with self.lock:
            if sid in self.exp:
                self.exp[sid] = exp
                return True
            return False

    def active(self, sid):
        with self.lock:
            return isinstance(sid, str) and self.exp.get(sid, 0) > time.time()

    def revoke(self, sid):
        with self.lock:
            return self.exp.pop(sid, None) is not None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.token_calls = 0
        self.logins = 0
        self.recent = collections.deque(maxlen=4096)

    def snapshot(self):
        with self.lock:
            return {"token_calls": self.token_calls, "logins": self.logins,
                    "recent_token_sha256": list(self.recent)}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle
    # plus the client's delayed ACK add 40 ms to every other keep-alive answer.
    disable_nagle_algorithm = True
    server_version = "demo-user-service/1"
    error_content_type = "application/json"
    error_message_format = '{"error":"%(code)d","message":"%(message)s"}'

    # ---- plumbing --------------------------------------------------------
    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("user-service: %s %s\n" % (self.address_string(), fmt % args))

    def read_body(self, limit=65536):
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return None
        try:
            n = int(length) if length is not None else 0
        except ValueError:
            n = -1
        if n < 0 or n > limit:
            self.close_connection = True
            return None
        return self.rfile.read(n) if n else b""

    def reply(self, status, body, content_type="application/json", headers=(),
              cache_control="no-store"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, separators=(",", ":"))
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache_control)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def unauthorized(self, message="login required", cache_control="no-store", headers=()):
        self.reply(401, {"error": "unauthorized", "message": message},
                   headers=[("WWW-Authenticate", REALM), *headers], cache_control=cache_control)

    # ---- credentials -----------------------------------------------------
    def session_cookie(self, payload, max_age=SESSION_TTL):
        value = session_encode(self.server.keys.session, payload) if payload else ""
        return "%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax" % (SESSION_COOKIE, value, max_age)

    def identify(self):
        """(user-claims, session-payload-or-None) from the request's
        credentials, or (None, None)."""
        keys = self.server.keys
        sessions = self.server.sessions
        for value in cookie_values(self.headers.get_all("Cookie") or [], SESSION_COOKIE):
            payload = session_decode(keys.session, value)
            if payload and sessions.active(payload.get("sid")):
                user = USERS[payload["sub"]]
                return {"sub": payload["sub"], "name": user["name"], "role": user["role"],
                        "sid": payload["sid"]}, payload
        auth = self.headers.get("Authorization") or ""
        scheme, _, cred = auth.partition(" ")
        candidates = [cred.strip()] if scheme.lower() == "bearer" else []
        candidates += [v.strip() for v in self.headers.get_all("X-Example-Authorization") or []]
        for token in candidates:
            claims = jwt_decode(keys.jwt, token)
            if claims and claims.get("sub") in USERS and sessions.active(claims.get("sid")):
                return {k: claims.get(k) for k in ("sub", "name", "role", "sid")}, None
        return None, None

    # ---- routes ----------------------------------------------------------
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/api/user/token":
            return self.token(url)
        if url.path == "/api/user/me":
            user, _ = self.identify()
            return self.reply(200, {"user": user}) if user else self.unauthorized()
        if url.path == "/__stats":
            return self.reply(200, self.server.stats.snapshot())
        return self.reply(404, {"error": "not_found"})

    do_HEAD = do_GET

    def do_POST(self):
        body = self.read_body()
        if body is None:
            return self.reply(413, {"error": "body_too_large_or_unsupported"})
        path = urllib.parse.urlsplit(self.path).path
        if path == "/api/user/login":
            return self.login(body)
        if path == "/api/user/logout":
            return self.logout()
        return self.reply(404, {"error": "not_found"})

    def logout(self):
        """Ends, on the server, the session of every credential the request
        carries (cookie, Bearer or identity token), then clears the cookie."""
        while True:
            user, _ = self.identify()
            if not user or not self.server.sessions.revoke(user["sid"]):
                break
        return self.reply(200, {"ok": True}, headers=[("Set-Cookie", self.session_cookie(None, 0))])

    def login(self, body):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                form = json.loads(body or b"{}")
                if not isinstance(form, dict):
                    raise ValueError
            else:
                form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8")).items()}
        except (ValueError, UnicodeError):
            return self.reply(400, {"error": "bad_request", "message": "JSON or form body expected"})
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        user = USERS.get(username)
        if not user or not hmac.compare_digest(user["password"].encode(), password.encode()):
            return self.reply(401, {"error": "invalid_credentials"}, headers=[("WWW-Authenticate", REALM)])
        now = int(time.time())
        payload = {"sub": username, "sid": secrets.token_hex(8), "iat": now, "exp": now + SESSION_TTL}
        self.server.sessions.add(payload["sid"], payload["exp"])
        with self.server.stats.lock:
            self.server.stats.logins += 1
        return self.reply(200, {"ok": True, "user": {"sub": username, "name": user["name"],
                                                     "role": user["role"]}, "sid": payload["sid"]},
                          headers=[("Set-Cookie", self.session_cookie(payload))])

    def token(self, url):
        stats = self.server.stats
        with stats.lock:
            stats.token_calls += 1
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        request_uri = (query.get("request_uri") or [""])[0]
        user, session = self.identify()
        scope = [("X-Auth-Scope", decision_scope(request_uri))]
        # Token answers say how long a gateway may reuse them (spoa-auth's
        # decision cache reads this): a minute for an identity (the JWT's own
        # exp caps it too), a few seconds for a refusal. An answer that
        # refreshes the session cookie is not reusable.
        if not user:
            return self.unauthorized(cache_control=TOKEN_CACHE_DENY, headers=scope)
        if user["role"] != "admin" and is_admin_uri(request_uri):
            return self.reply(403, {"error": "forbidden", "message": "admin role required"},
                              headers=scope, cache_control=TOKEN_CACHE_DENY)
        now = int(time.time())
        claims = dict(user, iat=now, exp=now + TOKEN_TTL)
        token = jwt_encode(self.server.keys.jwt, claims)
        with stats.lock:
            stats.recent.append(hashlib.sha256(token.encode()).hexdigest())
        headers = list(scope)
        if session and session["exp"] - now < SESSION_TTL // 2 and \
                self.server.sessions.refresh(session["sid"], now + SESSION_TTL):
            headers.append(("Set-Cookie", self.session_cookie(
                dict(session, iat=now, exp=now + SESSION_TTL))))
        return self.reply(200, token, "text/plain", headers,
                          cache_control="no-store" if len(headers) > len(scope)
                          else TOKEN_CACHE_ALLOW)


def main():
    ap = argparse.ArgumentParser(description="spoa-auth demo user service")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8101)
    ap.add_argument("--quiet", action="store_true", help="no access log")
    args = ap.parse_args()
    srv = Server((args.host, args.port), Handler)
    srv.keys, srv.stats, srv.sessions, srv.quiet = Keys(), Stats(), Sessions(), args.quiet
    sys.stderr.write("user-service: listening on %s:%d\n" % (args.host, args.port))
    sys.stderr.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
