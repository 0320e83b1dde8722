"""Folding decoded batches into an in-memory DuckDB state."""

from __future__ import annotations

from decimal import Decimal

import pytest
from engine_helpers import fold, memory_writer, rows
from envelopes import Table, decimal_b64, field

from engine.decode.convert import TOAST_PLACEHOLDER
from engine.state import metrics
from engine.state.metrics import BatchMetrics
from engine.state.writer import StaleBatch

TOPIC = "lab.lab.accounts"
ROW = [
    field("int64", "id", optional=False),
    field("string", "owner"),
    field(
        "bytes",
        "balance",
        logical="org.apache.kafka.connect.data.Decimal",
        params={"scale": "2", "connect.decimal.precision": "14"},
    ),
    field("string", "notes"),
]


def _table() -> Table:
    return Table(TOPIC, [field("int64", "id", optional=False)], ROW)


def _row(i: int, owner: str = "ann", cents: int = 100, notes: str = "n") -> dict:
    return {"id": i, "owner": owner, "balance": decimal_b64(cents), "notes": notes}


def _mirror(writer) -> list[tuple]:
    return rows(writer, "SELECT id, owner, balance, notes FROM lab.accounts ORDER BY id")


def test_last_change_per_key_wins_and_offsets_commit_with_it() -> None:
    writer = memory_writer()
    t = _table()
    records = [
        t.event("c", {"id": 1}, after=_row(1, cents=100)),
        t.event("c", {"id": 2}, after=_row(2)),
        t.event("u", {"id": 1}, after=_row(1, cents=250)),
        t.event("d", {"id": 2}, before={"id": 2}),
        t.tombstone({"id": 2}),
        t.event("c", {"id": 3}, after=_row(3, owner="bob"), partition=1),
        t.event("u", {"id": 3}, after=_row(3, owner="bo"), partition=1),
    ]
    _batch, result = fold(writer, records)
    assert (result.upserts, result.deletes) == (2, 1)
    assert _mirror(writer) == [(1, "ann", Decimal("2.50"), "n"), (3, "bo", Decimal("1.00"), "n")]
    assert rows(
        writer, 'SELECT topic, "partition", next_offset FROM _changefold.offsets ORDER BY 2'
    ) == [(TOPIC, 0, 5), (TOPIC, 1, 2)]


def test_redelivered_events_leave_the_state_unchanged() -> None:
    writer = memory_writer()
    t = _table()
    events = [
        ("c", 1, _row(1, cents=5)),
        ("c", 2, _row(2)),
        ("u", 1, _row(1, cents=7)),
        ("d", 2, None),
        ("c", 4, _row(4, owner="dee")),
    ]

    def deliver() -> list:
        return [
            t.event(op, {"id": i}, after=after, before=None if after else {"id": i})
            for op, i, after in events
        ]

    fold(writer, deliver())
    once = _mirror(writer)
    fold(writer, deliver())  # the same changes again, at later offsets
    assert _mirror(writer) == once
    # and split over two batches, from the middle
    replay = deliver()
    fold(writer, replay[:2])
    fold(writer, replay[2:])
    assert (
        _mirror(writer)
        == once
        == [(1, "ann", Decimal("0.07"), "n"), (4, "dee", Decimal("1.00"), "n")]
    )


def test_toast_placeholder_keeps_the_stored_value() -> None:
    writer = memory_writer()
    t = _table()
    fold(writer, [t.event("c", {"id": 1}, after=_row(1, notes="long text"))])
    fold(writer, [t.event("u", {"id": 1}, after=_row(1, cents=900, notes=TOAST_PLACEHOLDER))])
    assert _mirror(writer) == [(1, "ann", Decimal("9.00"), "long text")]
    # Within one batch, an earlier change of the column wins over the stored value.
    fold(
        writer,
        [
            t.event("u", {"id": 1}, after=_row(1, notes="rewritten")),
            t.event("u", {"id": 1}, after=_row(1, cents=1, notes=TOAST_PLACEHOLDER)),
            t.event("c", {"id": 2}, after=_row(2, notes=TOAST_PLACEHOLDER)),
        ],
    )
    assert _mirror(writer) == [
        (1, "ann", Decimal("0.01"), "rewritten"),
        (2, "ann", Decimal("1.00"), None),
    ]


def test_truncate_empties_the_mirror_and_later_changes_apply() -> None:
    writer = memory_writer()
    t = _table()
    fold(writer, [t.event("c", {"id": i}, after=_row(i)) for i in (1, 2, 3)])
    fold(
        writer,
        [
            t.event("u", {"id": 1}, after=_row(1, owner="gone")),
            t.event("t", None),
            t.event("c", {"id": 2}, after=_row(2, owner="after")),
        ],
    )
    assert _mirror(writer) == [(2, "after", Decimal("1.00"), "n")]
    # A truncate alone, in a batch of its own, with the key known from the recorded schema.
    fold(writer, [t.event("t", None)])
    assert _mirror(writer) == []


def test_a_new_column_is_added_and_recorded_as_a_version() -> None:
    writer = memory_writer()
    t = _table()
    fold(writer, [t.event("c", {"id": 1}, after=_row(1))])
    wider = Table(TOPIC, t.key_fields, [*ROW, field("int32", "score")])
    wider.offsets = t.offsets
    fold(
        writer,
        [
            wider.event("c", {"id": 2}, after={**_row(2), "score": 9}),
            wider.event("u", {"id": 1}, after={**_row(1, owner="amy"), "score": 3}),
        ],
    )
    assert rows(writer, "SELECT id, owner, score FROM lab.accounts ORDER BY id") == [
        (1, "amy", 3),
        (2, "ann", 9),
    ]
    versions = rows(
        writer,
        "SELECT version, topic, first_offset FROM _changefold.schema_versions "
        "WHERE table_schema = 'lab' AND table_name = 'accounts' ORDER BY 1",
    )
    assert versions == [(1, TOPIC, 0), (2, TOPIC, 1)]


def test_dead_letters_are_written_with_the_batch() -> None:
    writer = memory_writer()
    t = Table(
        TOPIC,
        [field("int64", "id", optional=False)],
        [*ROW, field("string", "doc", logical="io.debezium.data.Json")],
    )
    records = [
        t.event("c", {"id": 1}, after={**_row(1), "doc": '{"ok": true}'}),
        t.raw({"id": 2}, b"\xde\xad"),
        t.event("c", {"id": 3}, after={**_row(3), "doc": "{broken"}),  # DuckDB refuses the JSON
        t.event("c", {"id": 4}, after={**_row(4), "doc": "[]"}),
    ]
    _batch, result = fold(writer, records)
    assert result.dead_letters == 2
    assert rows(writer, "SELECT id FROM lab.accounts ORDER BY id") == [(1,), (4,)]
    letters = rows(
        writer,
        'SELECT topic, "partition", "offset", "key", "value", error, stage '
        "FROM _changefold.dead_letters ORDER BY 3",
    )
    assert [(r[2], r[6]) for r in letters] == [(1, "decode"), (2, "fold")]
    assert letters[0][4] == b"\xde\xad" and letters[0][3] == records[1].key
    assert "malformed JSON" in letters[0][5]
    assert "JSON" in letters[1][5] and letters[1][4] == records[2].value
    assert rows(writer, "SELECT next_offset FROM _changefold.offsets") == [(4,)]


def test_a_failed_batch_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    writer = memory_writer()
    t = _table()
    fold(writer, [t.event("c", {"id": 1}, after=_row(1))])

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(metrics, "record", broken)
    with pytest.raises(RuntimeError):
        fold(writer, [t.event("c", {"id": 2}, after=_row(2)), t.event("d", {"id": 1})])
    assert _mirror(writer) == [(1, "ann", Decimal("1.00"), "n")]
    assert rows(writer, "SELECT next_offset FROM _changefold.offsets") == [(1,)]


def test_a_batch_behind_the_stored_offsets_is_refused() -> None:
    writer = memory_writer()
    t = _table()
    records = [t.event("c", {"id": i}, after=_row(i)) for i in (1, 2, 3)]
    fold(writer, records)
    with pytest.raises(StaleBatch) as caught:
        fold(writer, records[1:])  # a zombie member re-folding offsets 1..2
    assert caught.value.stored == {(TOPIC, 0): 3}


def test_metrics_table_stays_bounded() -> None:
    writer = memory_writer()
    base = BatchMetrics("m", 1, 10, 0, 0, 0, 1, 0, 1.0, 1.0, None)
    with writer.store.transaction() as conn:
        for _ in range(450):
            metrics.record(conn, metrics.next_batch_id(conn), "g", base, (), keep=150)
    (count,) = rows(writer, "SELECT count(*) FROM _changefold.batches")[0]
    assert 150 <= count <= 250


def test_observers_see_changed_rows_before_and_after_inside_the_transaction() -> None:
    writer = memory_writer()
    t = _table()
    fold(writer, [t.event("c", {"id": i}, after=_row(i, cents=i)) for i in (1, 2, 3)])
    seen: list = []

    def observe(conn, batch_id, deltas) -> None:
        seen.append((batch_id, deltas))

    writer.observers = (observe,)
    fold(
        writer,
        [
            t.event("u", {"id": 1}, after=_row(1, cents=500)),
            t.event("d", {"id": 2}),
            t.event("c", {"id": 9}, after=_row(9)),
        ],
    )
    ((batch_id, (delta,)),) = seen
    assert str(delta.mirror) == "lab.accounts" and not delta.truncated
    assert sorted(delta.before.get_column("id").to_list()) == [1, 2]
    assert sorted(delta.after.get_column("id").to_list()) == [1, 9]
    after = {r["id"]: r["balance"] for r in delta.after.iter_rows(named=True)}
    assert after[1] == Decimal("5.00")
    assert rows(writer, "SELECT max(batch_id) FROM _changefold.batches") == [(batch_id,)]

    def broken(conn, batch_id, deltas) -> None:
        raise ValueError("view failed")

    writer.observers = (broken,)
    with pytest.raises(ValueError):
        fold(writer, [t.event("d", {"id": 1})])
    assert [r[0] for r in _mirror(writer)] == [1, 3, 9]


def test_kafka_commit_times_are_written_with_the_next_batch() -> None:
    writer = memory_writer()
    t = _table()
    _b, first = fold(writer, [t.event("c", {"id": 1}, after=_row(1))])
    writer.note_commit(first.batch_id, 12.5)
    _b, second = fold(writer, [t.event("c", {"id": 2}, after=_row(2))])
    assert second.batch_id == first.batch_id + 1
    assert rows(writer, "SELECT batch_id, commit_ms FROM _changefold.batches ORDER BY 1") == [
        (first.batch_id, 12.5),
        (second.batch_id, None),
    ]


def test_a_state_file_named_like_a_topic_prefix_works(tmp_path) -> None:
    # DuckDB names the database after the file: lab.duckdb holds database "lab", and the
    # mirror schema "lab" must not be ambiguous with it.
    from engine_helpers import STATE_SQL

    from engine.state.store import Store
    from engine.state.writer import StateWriter

    with Store(tmp_path / "lab.duckdb") as store:
        store.migrate(STATE_SQL)
        writer = StateWriter(store, "g")
        t = _table()
        fold(writer, [t.event("c", {"id": 1}, after=_row(1)), t.event("t", None)])
        fold(writer, [t.event("c", {"id": 2}, after=_row(2))])
        assert rows(writer, "SELECT id FROM lab.lab.accounts") == [(2,)]


def test_an_error_not_caused_by_a_row_stops_instead_of_dead_lettering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import duckdb

    from engine.core.errors import StateError
    from engine.state import writer as writer_module

    writer = memory_writer()
    t = _table()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise duckdb.IOException("No space left on device")

    monkeypatch.setattr(writer_module, "apply_changes", disk_full)
    with pytest.raises(StateError, match="No space left"):
        fold(writer, [t.event("c", {"id": 1}, after=_row(1))])
    assert rows(writer, "SELECT count(*) FROM _changefold.dead_letters") == [(0,)]
    assert rows(writer, "SELECT count(*) FROM _changefold.offsets") == [(0,)]


def test_observers_get_interval_columns_as_text_and_only_declared_mirrors() -> None:
    writer = memory_writer()
    t = Table(
        TOPIC,
        [field("int64", "id", optional=False)],
        [*ROW, field("int64", "wait", logical="io.debezium.time.MicroDuration")],
    )
    seen: list = []

    class Observer:
        mirrors = frozenset({"lab.accounts"})

        def __call__(self, conn, batch_id, deltas) -> None:
            seen.extend(deltas)

    class Blind:
        mirrors: frozenset[str] = frozenset()

        def __call__(self, conn, batch_id, deltas) -> None:
            assert deltas == ()

    writer.observers = (Observer(),)
    fold(writer, [t.event("c", {"id": 1}, after={**_row(1), "wait": 90_000_000})])
    (delta,) = seen
    assert delta.after.get_column("wait").to_list() == ["00:01:30"]
    writer.observers = (Blind(),)
    fold(writer, [t.event("u", {"id": 1}, after={**_row(1), "wait": 1})])
