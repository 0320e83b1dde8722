"""`changefold bench api --hostile`: the pure parts (arguments, the mix, the figures and
the table printed from given samples)."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from engine.app.cli import main
from engine.lab.hostile import (
    ANSWERED,
    FAILED,
    REFUSED,
    STOPPED,
    Answer,
    Phase,
    PhaseFigures,
    Sample,
    by_query,
    folded_at,
    hostile_mix,
    in_list_text,
    outcome,
    parse_env,
    ratios,
    summarize_phase,
    table,
    union_text,
)
from engine.lab.latency import Batch, End, Window


def test_texts_fill_the_limit_without_passing_it() -> None:
    for chars in (8, 100, 65536):
        assert len(union_text(chars)) <= max(chars, len("select 1"))
        assert len(in_list_text(chars)) <= max(chars, len("select 1 where 1 in (0)"))
    assert len(union_text(65536)) > 65536 - 20
    assert len(in_list_text(65536)) > 65536 - 10
    assert in_list_text(30) == "select 1 where 1 in (0,1,2,3)"


def test_the_mix_is_sized_to_the_limits() -> None:
    mix = {h.name: h.sql for h in hostile_mix(1000, 4096)}
    assert len(mix["union at the SQL limit"]) <= 1000
    assert len(mix["union over the SQL limit"]) > 1000
    # The long IN list is over the (default) body limit.
    big = {h.name: h.sql for h in hostile_mix(65536, 1024 * 1024)}
    assert len(big["IN list over the body limit"]) > 1024 * 1024
    assert "range(200000000)" in mix["list(range(200M))"]
    assert "1000000000" in mix["repeat('x', 1e9)"]


def _a(status: int, error: str | None = None, message: str = "", secs: float = 1.0) -> Answer:
    return Answer("q", 100.0, 100.0 + secs, status, error, message)


def test_outcome_names_the_limit() -> None:
    assert outcome(_a(200)) == (ANSWERED, "rows")
    assert outcome(_a(413, "too_large")) == (REFUSED, "body size")
    assert outcome(_a(400, "too_large", "... (CHANGEFOLD_API_MAX_SQL_CHARS): ...")) == (
        REFUSED,
        "SQL length",
    )
    assert outcome(_a(400, "too_large", "(CHANGEFOLD_API_MAX_RESULT_BYTES; 9 rows)")) == (
        STOPPED,
        "result size",
    )
    assert outcome(_a(429, "busy")) == (REFUSED, "query slots")
    assert outcome(_a(400, "timeout")) == (STOPPED, "timeout")
    assert outcome(_a(400, "memory")) == (STOPPED, "memory")
    assert outcome(_a(503, "unavailable")) == (STOPPED, "shutdown")
    assert outcome(_a(0, None, "ReadTimeout")) == (FAILED, "no answer")
    assert outcome(_a(400, "failed")) == (FAILED, "failed")


def test_parse_env() -> None:
    assert parse_env(["CHANGEFOLD_API_QUERY_NICE=0", "A_B=x=y"]) == (
        ("CHANGEFOLD_API_QUERY_NICE", "0"),
        ("A_B", "x=y"),
    )
    for bad in ("NOEQUALS", "=1", "A B=1"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_env([bad])


def _batch(finished: float, records: int, newest_ms: float, fold_ms: float = 10.0) -> Batch:
    return Batch(finished, records, 1.0, fold_ms, 2.0, finished * 1000 - newest_ms)


def test_a_transaction_is_folded_by_the_first_batch_past_its_commit() -> None:
    batches = [_batch(10.5, 4, 10_000), _batch(11.0, 4, 10_600), _batch(12.0, 1, 11_900)]
    ends = [End(1, 9_900, 2), End(2, 10_000, 2), End(3, 10_400, 4), End(4, 12_500, 1)]
    got = [(e.lsn, t) for e, t in folded_at(ends, batches)]
    assert got == [(1, 10.5), (2, 10.5), (3, 11.0)]  # lsn 4: not folded by the end


def _figures() -> list[PhaseFigures]:
    before, hostile = Window(100.0, 110.0), Window(110.0, 120.0)
    ends = [End(i, int(t * 1000), 10) for i, t in enumerate((101.0, 105.0, 111.0, 115.0))]
    batches = [
        _batch(101.5, 10, 101_000),
        _batch(105.2, 10, 105_000),
        _batch(113.0, 10, 111_000, fold_ms=40.0),
        _batch(119.0, 10, 115_000, fold_ms=40.0),
    ]
    samples = [
        Sample(100.0, 300 * 2**20, 0.0),
        Sample(110.0, 400 * 2**20, 2.0),
        Sample(115.0, 2048 * 2**20, 9.0),
        Sample(120.0, 900 * 2**20, 16.0),
    ]
    answers = [
        Answer("a", 111.0, 111.1, 413, "too_large"),
        Answer("b", 111.0, 121.0, 429, "busy"),  # answered after the phase: not counted
        Answer("c", 111.0, 113.5, 429, "busy"),
        Answer("d", 111.0, 119.0, 400, "timeout"),
        Answer("e", 111.0, 112.0, 200),
    ]
    return [
        summarize_phase(Phase(name, w), ends, batches, samples, answers)
        for name, w in (("before", before), ("hostile", hostile))
    ]


def test_phase_figures_from_given_samples() -> None:
    before, hostile = _figures()
    assert (before.events, before.batches, before.events_per_s) == (20, 2, 2.0)
    assert before.freshness_ms[50.0] == 200.0 and before.freshness_max_ms == 500.0
    assert math.isclose(before.fold_us_per_record, 1100.0)
    assert before.rss_peak == 400 * 2**20 and before.cpu_seconds == 2.0
    assert not before.answers and math.isnan(before.refusal_max_s)
    assert (hostile.events, hostile.freshness_ms[95.0], hostile.freshness_max_ms) == (
        20,
        4000.0,
        4000.0,
    )
    assert hostile.rss_peak == 2048 * 2**20 and math.isclose(hostile.cpu_share, 1.4)
    assert math.isclose(hostile.cpu_us_per_event, 14 / 20 * 1e6)
    assert (hostile.count(ANSWERED), hostile.count(REFUSED), hostile.count(STOPPED)) == (1, 2, 1)
    assert math.isclose(hostile.refusal_max_s, 2.5)


def test_the_table_and_ratios() -> None:
    text = table(_figures())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["phase", "events/s", "fresh"]
    before = lines[2].split()
    assert before[:6] == ["before", "2", "200/500/500", "500", "2", "1,100.0"]
    assert "400 MiB" in lines[2] and "20%" in lines[2]
    hostile = lines[3].split()
    assert hostile[-6:] == ["1", "2", "1", "0", "2.50", "s"]
    assert "hostile: answered by rows: 1, refused by body size: 1" in text
    assert "refused by query slots: 1, stopped by timeout: 1" in text
    assert ratios(_figures()) == (
        "hostile / before: events/s 1.00x, freshness p50 10.00x, p95 8.00x, fold us/record 3.73x"
    )
    assert ratios(_figures()[:1]) == ""


def test_by_query() -> None:
    text = by_query([_a(429, "busy", secs=10.5), _a(200, secs=0.5)])
    assert text == (
        "  q: 2 sent; answered by rows 1, refused by query slots 1; slowest answer 10.50 s"
    )


def test_help_explains_and_the_flag_is_required() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "api", "--help"])
    assert result.exit_code == 0
    for word in ("--hostile", "--queries", "--duration", "--engine-env", "fresh p50", "ratios"):
        assert word in result.output
    result = runner.invoke(main, ["bench", "api"])
    assert result.exit_code == 2 and "--hostile" in result.output
    result = runner.invoke(main, ["bench", "api", "--hostile", "--engine-env", "NOPE"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    result = runner.invoke(main, ["bench", "api", "--hostile", "--duration", "1"])
    assert result.exit_code == 2
