"""Which subscriptions a Mosquitto `acl_file` lets a user read, decided from the file (pure).

Why read the file: Mosquitto's own acl_file check grants every SUBSCRIBE and filters at delivery
time (measured on 2.0.11: a device user with write-only rights gets QoS 1 for `vivotek/#` and then
receives nothing), so the SUBACK alone cannot tell a technician that the gateway will hear nothing.

The file's rules (mosquitto.conf(5), acl_file): `user NAME` starts a user's block, `topic
[read|write|readwrite|deny] TOPIC` applies to that user (before any `user` line: to anonymous
clients), `pattern [access] TOPIC` applies to everyone with %u/%c replaced by the user name and
client id. A subscription filter is readable when some read rule's topic covers every topic the
filter can match and no deny rule of the user touches it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    access: str  # read, write, readwrite, deny
    topic: str


def rules_for(acl_text: str, user: str | None, client_id: str = "") -> list[Rule]:
    rules: list[Rule] = []
    current: str | None = None  # the user whose block we are in; None: anonymous (before any `user`)
    for raw in acl_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "user":
            current = rest
            continue
        if word not in ("topic", "pattern"):
            continue
        access, _, topic = rest.partition(" ")
        if access not in ("read", "write", "readwrite", "deny"):
            access, topic = "readwrite", rest  # `topic foo/bar` alone means readwrite
        topic = topic.strip()
        if word == "topic" and current == user:
            rules.append(Rule(access, topic))
        elif word == "pattern" and user is not None:
            if any(c in user for c in "+#/") or any(c in client_id for c in "+#/"):
                continue  # Mosquitto refuses to substitute these: the pattern does not apply
            rules.append(Rule(access, topic.replace("%u", user).replace("%c", client_id)))
    return rules


def covers(rule_topic: str, sub_filter: str) -> bool:
    """Every topic matching `sub_filter` also matches `rule_topic`."""
    rule, sub = rule_topic.split("/"), sub_filter.split("/")
    for i, level in enumerate(rule):
        if level == "#":
            return True
        if i >= len(sub):
            return False
        if sub[i] == "#":
            return False  # the filter reaches deeper than this rule, which has no '#' here
        if level == "+":
            continue
        if sub[i] == "+" or sub[i] != level:
            return False
    return len(sub) == len(rule)


def overlaps(rule_topic: str, sub_filter: str) -> bool:
    """Some topic matches both."""
    a, b = rule_topic.split("/"), sub_filter.split("/")
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != "+" and y != "+" and x != y:
            return False
    return True


def readable(acl_text: str, user: str | None, sub_filter: str, client_id: str = "") -> bool:
    rules = rules_for(acl_text, user, client_id)
    if any(r.access == "deny" and overlaps(r.topic, sub_filter) for r in rules):
        return False
    return any(r.access in ("read", "readwrite") and covers(r.topic, sub_filter) for r in rules)
