"""The Pipeline page (Streamlit AppTest) against a real query API with the stack down,
and with nothing up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dashboards_support import (
    TOPICS,
    Served,
    frame_with,
    metric,
    nothing_up,
    open_page,
    serving,
    texts,
)

CONSISTENT = "Consistent as of **2026-12-02 15:04:05.123 UTC** (LSN 0/1A2B3C8, transaction 877)"


def test_partitions_batches_members_dead_letters_and_versions(served: Served) -> None:
    at = open_page("pipeline")
    partitions = frame_with(at, "next_offset")
    assert len(partitions) == sum(p for _, p, _ in TOPICS)
    # engine_figures: partition p of each topic lags 5 * p records; partition 0 is hot
    lags = {(t, p): lag for t, p, lag in partitions[["topic", "partition", "lag"]].values}
    assert lags == {(t, p): 5 * p for t, n, _ in TOPICS for p in range(n)}
    assert metric(at, "Lag (records)") == str(sum(lags.values()))
    # engine_figures: freshness 300 .. 410 ms over the batches; one unit on the page:
    # seconds with one decimal
    assert metric(at, "Freshness (p50)") == "0.4 s"
    assert any(re.search(r"freshness p95 0\.4 s", c) for c in texts(at.caption))
    assert not any(re.search(r"\d ms\b", c) for c in texts(at.caption) + texts(at.metric))
    rates = partitions.set_index(["topic", "partition"])["records_per_s"]
    for topic, _, _ in TOPICS:
        assert rates[(topic, 0)] == 3 * rates[(topic, 1)] > 0, "skew must show"

    timings = frame_with(at, "p95")
    assert list(timings["stage"]) == ["decode", "fold", "commit"]
    assert timings["p50"].notna().all()
    # in seconds: engine_figures' fold takes 9 .. 12 ms
    assert 0.009 <= timings[timings["stage"] == "fold"]["p50"].iloc[0] <= 0.012
    # captions say what the charts cover: the lag state, the batches' span
    assert any("4 of 6 partitions behind the end of their topic" in c for c in texts(at.caption))
    assert any(
        re.search(r"the newest 12 batches, \d\d:\d\d:\d\d to \d\d:\d\d:\d\d UTC \(5\.5 s\)", c)
        for c in texts(at.caption)
    )

    members = frame_with(at, "count")
    # one row per member and topic, its partitions listed
    assert members.groupby("member")["count"].sum().to_dict() == {"engine-1": 4, "engine-2": 2}
    assert all(
        len(str(parts).split(", ")) == n
        for parts, n in zip(members["partitions"], members["count"], strict=True)
    )
    assert not members.duplicated(["member", "topic"]).any()
    dead = frame_with(at, "error")
    assert list(dead["stage"]) == ["decode"] and "not JSON" in dead["error"][0]
    assert any("1 in total · decode: 1" in c for c in texts(at.caption))
    versions = frame_with(at, "version")
    assert len(versions) == served.rows("SELECT count(*) FROM _changefold.schema_versions")[0][0]
    assert metric(at, "Dead letters") == "1" and metric(at, "Schema versions") == "3"
    assert len(at.get("vega_lite_chart")) == 3, "lag, rate and batch timing charts"


def test_zero_lag_reads_as_caught_up(served: Served) -> None:
    served.con.execute("UPDATE _changefold.batch_partitions SET end_offset = next_offset, lag = 0")
    at = open_page("pipeline")
    assert metric(at, "Lag (records)") == "0"
    assert any("all 6 partitions caught up (lag 0)" in c for c in texts(at.caption))
    lag_chart = at.get("vega_lite_chart")[0].proto.spec
    assert '"mark": {"type": "text"' in lag_chart or '"type": "text"' in lag_chart, (
        "the lag bars carry their value as text, so 0 shows"
    )


def test_the_frontier_the_state_is_consistent_as_of(served: Served) -> None:
    at = open_page("pipeline")
    assert sum(CONSISTENT in c for c in texts(at.caption)) == 1
    # the engine applies the next transaction: the page follows
    served.con.execute(
        "UPDATE _changefold.frontier SET xid = '878', lsn = lsn + 4096, "
        "commit_ts_ms = commit_ts_ms + 1000, transactions = transactions + 1"
    )
    at.run()
    assert any(
        "2026-12-02 15:04:06.123 UTC** (LSN 0/1A2C3C8, transaction 878)" in c
        for c in texts(at.caption)
    )


def test_without_transaction_ordering_it_says_per_event_visibility(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(tmp_path, monkeypatch, transactions="off"):
        at = open_page("pipeline")
    captions = texts(at.caption)
    assert any("Per-event visibility (transaction ordering off)" in c for c in captions)
    assert not any("Consistent as of" in c for c in captions)


def test_stack_down_is_shown_next_to_the_engine_figures(served: Served) -> None:
    at = open_page("pipeline")
    errors = texts(at.error)
    assert len(errors) == 2
    assert "Kafka Connect down" in errors[0] and "changefold stack up" in errors[0]
    assert "Postgres down" in errors[1] and "CHANGEFOLD_PG_PORT" in errors[1]
    assert at.dataframe, "engine figures must still show"


def test_a_fresh_engine_without_batches(served: Served) -> None:
    for table in ("batch_partitions", "batches", "offsets", "assignments", "dead_letters"):
        served.con.execute(f"DELETE FROM _changefold.{table}")
    at = open_page("pipeline")
    assert any("No partition consumed yet" in i for i in texts(at.info))
    assert any("no dead letters" in c for c in texts(at.caption))
    assert any("no batch folded yet" in c for c in texts(at.caption))


def test_everything_down_gives_three_banners(monkeypatch: pytest.MonkeyPatch) -> None:
    url = nothing_up(monkeypatch)
    at = open_page("pipeline")
    errors = texts(at.error)
    assert [e.split(".")[0] for e in errors] == [
        "**Engine down",
        "**Kafka Connect down",
        "**Postgres down",
    ]
    assert url in errors[0]
    assert not at.dataframe
