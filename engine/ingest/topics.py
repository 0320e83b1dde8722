"""Which topics the engine follows: named ones, or every table topic of the connectors."""

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

    def describe(self) -> str:
        return ", ".join(self.topics) if self.topics else f"topics matching {self.pattern}"


def subscription(topics: tuple[str, ...], connectors_dir: Path) -> Subscription:
    if topics:
        return Subscription(topics=topics)
    prefixes = sorted(_prefixes(connectors_dir))
    if not prefixes:
        raise ConfigError(
            f"no connector files with a topic.prefix in {connectors_dir}: name the topics to "
            "follow with --topic (or CHANGEFOLD_TOPICS)"
        )
    alternatives = "|".join(re.escape(p) for p in prefixes)
    # <prefix>.<schema>.<table>: not <prefix>.transaction, not heartbeat topics.
    return Subscription(pattern=rf"^(?:{alternatives})\.[^.]+\.[^.]+$")


def _prefixes(connectors_dir: Path) -> set[str]:
    found = set()
    for path in connectors_dir.glob("*.json"):
        try:
            config = json.loads(path.read_text()).get("config", {})
        except (ValueError, AttributeError):
            continue
        prefix = config.get("topic.prefix") if isinstance(config, dict) else None
        if isinstance(prefix, str) and prefix:
            found.add(prefix)
    return found
