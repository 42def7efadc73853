"""200 concurrent requests, 200 distinct sessions: each gets its own
identity, never another's."""
import threading
from concurrent.futures import ThreadPoolExecutor

from harness import sha256_hex, user_stats

N = 200


def test_concurrent_sessions_get_their_own_identity(demo):
    users = ["alice", "bob", "admin"]
    with ThreadPoolExecutor(32) as pool:
        sessions = list(pool.map(lambda i: demo.login(users[i % 3]), range(N)))
    sids = [login["sid"] for _, login in sessions]
    assert len(set(sids)) == N

    barrier = threading.Barrier(N, timeout=30)

    def one(i):
        cookie, login = sessions[i]
        barrier.wait()
        return demo.get("/api/business/who?i=%d" % i, [("Cookie", cookie)], timeout=30)

    with ThreadPoolExecutor(N) as pool:
        results = list(pool.map(one, range(N)))

    issued = set(user_stats(demo)["recent_token_sha256"])
    statuses = [r.status for r in results]
    assert statuses.count(200) == N, {s: statuses.count(s) for s in set(statuses)}
    seen_tokens = set()
    for i, r in enumerate(results):
        body = r.json()
        assert body["path"] == "/api/business/who?i=%d" % i
        assert len(body["x_example_authorization"]) == 1
        token = body["x_example_authorization"][0]
        assert sha256_hex(token) in issued
        assert body["claims"]["sid"] == sessions[i][1]["sid"], "request %d got another identity" % i
        assert body["claims"]["sub"] == users[i % 3]
        seen_tokens.add(token)
    assert len(seen_tokens) == N
