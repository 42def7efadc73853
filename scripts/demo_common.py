"""Shared by the demo user and business services (Python 3 standard library
only): base64url, HS256 JWTs, and the threaded HTTP server they both run."""
import base64
import hashlib
import hmac
import http.server
import json
import sys
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    if isinstance(text, str):
        text = text.encode("ascii")
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


def jwt_encode(key, claims):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, (header + "." + payload).encode("ascii"), hashlib.sha256).digest()
    return header + "." + payload + "." + b64url(sig)


def jwt_verify(key, token, now=None):
    """(claims, None) for a valid unexpired HS256 token signed with <key>,
    else (None, why)."""
    if not key:
        return None, "no signing key"
    try:
        header_b64, payload_b64, sig_b64 = token.split(".")
        if json.loads(b64url_decode(header_b64)).get("alg") != "HS256":
            return None, "alg is not HS256"
        expected = hmac.new(key, (header_b64 + "." + payload_b64).encode("ascii"),
                            hashlib.sha256).digest()
        if not hmac.compare_digest(expected, b64url_decode(sig_b64)):
            return None, "bad signature"
        claims = json.loads(b64url_decode(payload_b64))
        if not isinstance(claims, dict):
            return None, "claims are not an object"
        if int(claims.get("exp", 0)) <= (now or time.time()):
            return None, "expired"
        return claims, None
    except (ValueError, TypeError, UnicodeError, AttributeError):
        return None, "malformed token"


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024   # bursts of new keep-alive connections from the agent

    def handle_error(self, request, client_address):
        # A client (the agent's keep-alive pool, HAProxy) closing or resetting
        # an idle connection is normal; anything else is worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)
