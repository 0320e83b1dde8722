"""Which topics `changefold run` follows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.core.errors import ConfigError
from engine.decode.envelope import mirror_of, topic_kind
from engine.ingest.topics import subscription


def test_default_pattern_covers_table_topics_of_the_connector_prefixes(tmp_path: Path) -> None:
    for name in ("bank", "arcade"):
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"name": name, "config": {"topic.prefix": name}})
        )
    sub = subscription((), tmp_path)
    assert sub.pattern is not None and not sub.topics
    matches = re.compile(sub.pattern).match
    assert matches("bank.bank.accounts") and matches("arcade.arcade.scores")
    assert not matches("bank.transaction")
    assert not matches("__debezium-heartbeat.bank")
    assert not matches("other.bank.accounts")


def test_named_topics_win_and_no_connectors_is_an_error(tmp_path: Path) -> None:
    assert subscription(("a.b.c",), tmp_path).topics == ("a.b.c",)
    with pytest.raises(ConfigError, match="--topic"):
        subscription((), tmp_path)


def test_topic_kinds_and_mirror_names() -> None:
    assert topic_kind("bank.bank.accounts") == "table"
    assert topic_kind("bank.transaction") == "skip"
    assert topic_kind("__debezium-heartbeat.bank") == "skip"
    assert topic_kind("plain") == "unknown"
    assert str(mirror_of("bank.bank.accounts")) == "bank.accounts"
    assert str(mirror_of("eu.west.bank.public.accounts")) == "eu.west.bank.accounts"
