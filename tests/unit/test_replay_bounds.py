"""Replay bounds: parsing --from/--until and offsets files, with clear errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.core.errors import ReplayError
from engine.replay.bounds import load_offsets_file, parse_start, parse_until
from engine.replay.meta import ReplayMeta


def test_parse_start() -> None:
    assert parse_start("earliest").kind == "earliest"
    spec = parse_start("2026-11-26T10:15:00Z")
    assert spec.kind == "time"
    assert spec.time == datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
    assert str(parse_start("2026-11-26T10:15:00")) == "2026-11-26T10:15:00+00:00"  # UTC default
    assert parse_start("offsets.json").kind == "offsets"
    with pytest.raises(ReplayError, match="is not a time"):
        parse_start("yesterday")


def test_parse_until() -> None:
    assert parse_until("latest").time is None
    assert parse_until("latest").ts_ms is None
    until = parse_until("2026-11-26T10:15:00+01:00")
    assert until.ts_ms == int(datetime(2026, 11, 26, 9, 15, tzinfo=UTC).timestamp() * 1000)


def test_offsets_file(tmp_path: Path) -> None:
    path = tmp_path / "offsets.json"
    path.write_text(json.dumps({"bank.bank.accounts": {"0": 5, "1": 7}}))
    assert load_offsets_file(path, ["bank.bank.accounts", "bank.bank.customers"]) == {
        ("bank.bank.accounts", 0): 5,
        ("bank.bank.accounts", 1): 7,
    }
    with pytest.raises(ReplayError, match="names topics this replay does not read"):
        load_offsets_file(path, ["arcade.arcade.scores"])
    path.write_text("[1, 2]")
    with pytest.raises(ReplayError, match="is not of the form"):
        load_offsets_file(path, ["bank.bank.accounts"])
    with pytest.raises(ReplayError, match="does not exist"):
        load_offsets_file(tmp_path / "missing.json", ["bank.bank.accounts"])


def test_meta_identity_and_total() -> None:
    a = ReplayMeta(("t",), "earliest", "latest", None, {("t", 0): 2}, {("t", 0): 10, ("t", 1): 4})
    assert a.total == 8 + 4
    assert a.same_replay(ReplayMeta(("t",), "earliest", "latest", None, {}, {}))
    assert not a.same_replay(
        ReplayMeta(("t",), "earliest", "2026-01-01T00:00:00+00:00", None, {}, {})
    )


def test_parse_until_a_source_lsn() -> None:
    until = parse_until("16/B374D848")
    assert until.lsn == (0x16 << 32) | 0xB374D848 and until.time is None
    assert str(until) == "lsn:16/B374D848"
    assert parse_until(str(until)) == until
    assert parse_until("0/1A2B3C8").lsn == 0x1A2B3C8
    with pytest.raises(ReplayError, match="not a time"):
        parse_until("16/XYZ")
