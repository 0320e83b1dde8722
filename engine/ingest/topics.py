"""Which topics the engine follows: named ones, or every table topic of the connectors.

With a connector's `provide.transaction.metadata` on, its `<prefix>.transaction`
topic is followed too, and that prefix's events are applied by whole source
transactions (engine.state.transactions).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import ConfigError


@dataclass(frozen=True)
class Subscription:
    """Either explicit topics or a pattern over the connectors' topic prefixes."""

    topics: tuple[str, ...] = ()
    pattern: str | None = None
    #: Topic prefixes whose transaction topic is followed.
    transactional: frozenset[str] = frozenset()

    def describe(self) -> str:
        return ", ".join(self.topics) if self.topics else f"topics matching {self.pattern}"

    def follows(self, topic: str) -> bool:
        if self.topics:
            return topic in self.topics
        return self.pattern is not None and re.match(self.pattern, topic) is not None


def subscription(topics: tuple[str, ...], connectors_dir: Path) -> Subscription:
    if topics:
        named = frozenset(t.rsplit(".", 1)[0] for t in topics if _is_transaction_topic(t))
        return Subscription(topics=topics, transactional=named)
    found = _prefixes(connectors_dir)
    prefixes = sorted(found)
    if not prefixes:
        raise ConfigError(
            f"no connector files with a topic.prefix in {connectors_dir}: name the topics to "
            "follow with --topic (or CHANGEFOLD_TOPICS)"
        )
    alternatives = "|".join(re.escape(p) for p in prefixes)
    with_txn = sorted(p for p, txn in found.items() if txn)
    # <prefix>.<schema>.<table>, and <prefix>.transaction where metadata is on; not
    # heartbeat topics.
    pattern = rf"^(?:{alternatives})\.[^.]+\.[^.]+$"
    if with_txn:
        pattern += "|^(?:" + "|".join(re.escape(p) for p in with_txn) + r")\.transaction$"
    return Subscription(pattern=pattern, transactional=frozenset(with_txn))


def _is_transaction_topic(topic: str) -> bool:
    return topic.count(".") == 1 and topic.endswith(".transaction")


def _prefixes(connectors_dir: Path) -> dict[str, bool]:
    """Topic prefix -> whether the connector writes transaction metadata."""
    found: dict[str, bool] = {}
    for path in connectors_dir.glob("*.json"):
        try:
            config = json.loads(path.read_text()).get("config", {})
        except (ValueError, AttributeError):
            continue
        prefix = config.get("topic.prefix") if isinstance(config, dict) else None
        if isinstance(prefix, str) and prefix:
            metadata = str(config.get("provide.transaction.metadata", "false")).lower()
            found[prefix] = found.get(prefix, False) or metadata == "true"
    return found
