"""The alerting rules (scripts/spoa-auth.rules.yml) name only series that a
running agent exposes on /metrics, with the labels they select on: a renamed
metric would otherwise leave an alert that can never fire. (promtool checks
the rules themselves: make alerts.)"""
import re

from harness import HOST, REPO, free_ports, http, solo_agent

RULES = REPO / "scripts" / "spoa-auth.rules.yml"
SELECTOR = re.compile(r"\b(spoa_auth_[a-z0-9_]+)(\{[^}]*\})?")


def test_rule_series_exist(agent_bin, logdir):
    dead, = free_ports(1)
    with solo_agent(logdir, agent_bin, "http://%s:%d/t" % (HOST, dead), admin=True,
                    name="agent-alerts") as p:
        text = http(p.admin_port, "GET", "/metrics").body.decode()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    used = SELECTOR.findall(RULES.read_text())
    assert len(used) >= 6, used
    for name, labels in used:
        matching = [s for s in samples if re.match(re.escape(name) + r"[{ ]", s)]
        assert matching, "rules use %s, which /metrics does not expose" % name
        for k, v in re.findall(r'(\w+)="([^"]*)"', labels or ""):
            assert any('%s="%s"' % (k, v) in s for s in matching), \
                "rules select %s{%s=%r}, never exposed" % (name, k, v)
