"""The Pipeline page (Streamlit AppTest) against a real query API with the stack down,
and with nothing up."""

from __future__ import annotations

import re

import pytest
from dashboards_support import (
    TOPICS,
    Served,
    frame_with,
    metric,
    nothing_up,
    open_page,
    texts,
)


def test_partitions_batches_members_dead_letters_and_versions(served: Served) -> None:
    at = open_page("pipeline")
    partitions = frame_with(at, "next_offset")
    assert len(partitions) == sum(p for _, p, _ in TOPICS)
    # engine_figures: partition p of each topic lags 5 * p records; partition 0 is hot
    lags = {(t, p): lag for t, p, lag in partitions[["topic", "partition", "lag"]].values}
    assert lags == {(t, p): 5 * p for t, n, _ in TOPICS for p in range(n)}
    assert metric(at, "Lag (records)") == str(sum(lags.values()))
    # engine_figures: freshness 300 .. 410 ms over the batches
    assert metric(at, "Freshness (p50)") == "355 ms"
    assert any(re.search(r"freshness p95 40[45] ms", c) for c in texts(at.caption))
    rates = partitions.set_index(["topic", "partition"])["records_per_s"]
    for topic, _, _ in TOPICS:
        assert rates[(topic, 0)] == 3 * rates[(topic, 1)] > 0, "skew must show"

    timings = frame_with(at, "p95")
    assert list(timings["stage"]) == ["decode", "fold", "commit"]
    assert timings["p50"].notna().all()

    members = frame_with(at, "assigned")
    assert sorted(zip(members["member"], members["partitions"], strict=True)) == [
        ("engine-1", 4),
        ("engine-2", 2),
    ]
    dead = frame_with(at, "error")
    assert list(dead["stage"]) == ["decode"] and "not JSON" in dead["error"][0]
    assert any("1 in total · decode: 1" in c for c in texts(at.caption))
    versions = frame_with(at, "version")
    assert len(versions) == served.rows("SELECT count(*) FROM _changefold.schema_versions")[0][0]
    assert metric(at, "Dead letters") == "1" and metric(at, "Schema versions") == "3"
    assert len(at.get("vega_lite_chart")) == 3, "lag, rate and batch timing charts"


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
