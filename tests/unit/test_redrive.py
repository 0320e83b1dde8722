"""`changefold dlq --redrive`: dead letters applied again where the history allows, over
an in-memory state and captured real envelopes (engine/replay/redrive.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from engine_helpers import fold, load_fixture, memory_writer, mirror_rows, rows

from engine.decode.decoder import Decoder
from engine.decode.model import DeadLetter
from engine.decode.records import RawRecord, RecordLike
from engine.replay import redrive
from engine.state import deadletters, offsets
from engine.state.writer import StateWriter

GROUP = "test-group"


def history() -> list[RawRecord]:
    """The captured lab history (both partitions of lab.everything, the keyless table,
    the transaction topic), in offset order per partition."""
    return load_fixture("lab_double")


def later_and_last(records: Sequence[RawRecord]) -> tuple[RawRecord, RawRecord]:
    """A data event whose key changes again later in its partition, and one of another
    key whose absence changes the folded state (its key's last change after the
    truncate)."""
    keyed = [r for r in records if r.key is not None and r.value is not None and ".lab." in r.topic]
    later = {(r.topic, r.partition, r.key): r.offset for r in keyed}
    earlier = next(r for r in keyed if later[(r.topic, r.partition, r.key)] > r.offset)
    whole = memory_writer(GROUP)
    fold(whole, records)
    last = next(
        r
        for r in reversed(keyed)
        if r.key != earlier.key and mirror_rows(fold_without(records, [r])) != mirror_rows(whole)
    )
    return earlier, last


def fold_without(records: Sequence[RawRecord], left_out: Sequence[RawRecord]) -> StateWriter:
    """Fold the history in one batch with `left_out` missing (their offsets passed, as
    an engine does with a dead letter), then record them as dead letters: what an older
    decoder that could not read them would have left."""
    writer = memory_writer(GROUP)
    kept = [r for r in records if r not in left_out]
    batch = Decoder().decode(kept, writer.known_schemas())
    writer.write(batch, member="test", progress=batch.progress)
    # Every partition's position is past its end, the dead letters' too.
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
    with writer.store.transaction() as conn:
        offsets.save_positions(conn, GROUP, {k: (e, e) for k, e in ends.items()})
        deadletters.insert(
            conn,
            GROUP,
            [
                DeadLetter(r.topic, r.partition, r.offset, r.key, r.value, "an older bug")
                for r in left_out
            ],
        )
    return writer


def memory_reader(records: Sequence[RawRecord]) -> redrive.Reader:
    def read(ranges: Mapping[tuple[str, int], tuple[int, int]]) -> Iterable[RecordLike]:
        for r in records:
            span = ranges.get((r.topic, r.partition))
            if span is not None and span[0] <= r.offset < span[1]:
                yield r

    return read


def run_redrive(
    writer: StateWriter, records: Sequence[RawRecord], topic: str
) -> redrive.RedriveResult:
    with writer.store.reading() as conn:
        letters = deadletters.selection(conn, GROUP, topic=topic)
        positions = offsets.load(conn, GROUP)
        dead = deadletters.positions(conn, GROUP)
    plan = redrive.plan(letters, positions, dead, memory_reader(records))
    decoder = Decoder()

    def write(batch: object, settled: Sequence[int]) -> tuple[int, int]:
        done = writer.write(batch, member="redrive", progress=(), settle_dead_letters=settled)  # type: ignore[arg-type]
        return done.batch_id, done.dead_letters

    return redrive.redrive(plan, lambda recs: decoder.decode(recs, writer.known_schemas()), write)


def test_redrive_applies_what_the_history_allows_and_gives_the_whole_history_state() -> None:
    records = history()
    earlier, last = later_and_last(records)
    whole = memory_writer(GROUP)
    fold(whole, records)
    writer = fold_without(records, [earlier, last])
    assert mirror_rows(writer) != mirror_rows(whole), "the test needs dead letters that matter"
    positions_before = rows(writer, "SELECT * FROM _changefold.offsets ORDER BY ALL")

    # (The keyless table's events are dead letters of every fold: left out here.)
    assert earlier.topic == last.topic
    result = run_redrive(writer, records, earlier.topic)

    assert [d.offset for d in result.plan.apply] == [last.offset]
    assert [d.offset for d in result.plan.superseded] == [earlier.offset]
    assert (result.applied, result.failed_again) == (1, 0)
    # The state is what a fold of the whole history gives; no position moved; the
    # dead letters are settled.
    assert mirror_rows(writer) == mirror_rows(whole)
    assert rows(writer, "SELECT * FROM _changefold.offsets ORDER BY ALL") == positions_before
    topic_letters = "SELECT count(*) FROM _changefold.dead_letters WHERE topic = ?"
    assert rows(writer, topic_letters, [earlier.topic]) == [(0,)]
    # A second redrive has nothing to do.
    assert run_redrive(writer, records, earlier.topic).batch_id is None


def test_a_dead_letter_that_fails_again_comes_back_with_todays_reason() -> None:
    records = history()
    _earlier, last = later_and_last(records)
    broken = RawRecord(last.topic, last.partition, last.offset, last.key, b"{not json")
    writer = fold_without(records, [last])
    with writer.store.transaction() as conn:
        conn.execute("DELETE FROM _changefold.dead_letters")
        deadletters.insert(
            conn,
            GROUP,
            [
                DeadLetter(
                    broken.topic, broken.partition, broken.offset, broken.key, broken.value, "x"
                )
            ],
        )
    result = run_redrive(writer, records, last.topic)
    assert (result.applied, result.failed_again) == (0, 1)
    letters = rows(writer, 'SELECT "offset", error FROM _changefold.dead_letters')
    assert len(letters) == 1 and letters[0][0] == last.offset and letters[0][1] != "x"


def test_sort_out_skips_transaction_records_and_tombstones() -> None:
    records = history()
    txn = next(r for r in records if r.topic.endswith(".transaction"))
    tomb = next(r for r in records if r.value is None)
    letters = [
        deadletters.StoredDeadLetter(
            i, GROUP, r.topic, r.partition, r.offset, r.key, r.value, "e", "decode", None
        )  # type: ignore[arg-type]
        for i, r in enumerate((txn, tomb), start=1)
    ]
    plan = redrive.sort_out(letters, {})
    assert plan.apply == [] and plan.superseded == [] and plan.settled == []
    assert sorted(why for _d, why in plan.skipped) == [
        "a tombstone: nothing to apply",
        "a transaction record: not redriven",
    ]


def test_a_later_change_that_is_itself_a_dead_letter_supersedes_nothing() -> None:
    r1 = RawRecord("p.s.t", 0, 5, b"k", b"v1")
    r2 = RawRecord("p.s.t", 0, 9, b"k", b"v2")
    last = redrive.last_changes([r1, r2], dead={("p.s.t", 0, 9)})
    assert last == {("p.s.t", 0, b"k"): 5}
    assert redrive.ranges_to_read(
        [deadletters.StoredDeadLetter(1, GROUP, "p.s.t", 0, 5, b"k", b"v1", "e", "decode", None)],  # type: ignore[arg-type]
        {("p.s.t", 0): 12},
    ) == {("p.s.t", 0): (6, 12)}


def test_two_dead_letters_of_one_key_are_applied_in_offset_order() -> None:
    """The later one is a dead letter too, so it supersedes nothing: both are applied in
    one batch and the later one wins, as in the history."""
    records = history()
    earlier, _last = later_and_last(records)
    later = max(
        (
            r
            for r in records
            if (r.topic, r.partition, r.key) == (earlier.topic, earlier.partition, earlier.key)
        ),
        key=lambda r: r.offset,
    )
    whole = memory_writer(GROUP)
    fold(whole, records)
    writer = fold_without(records, [earlier, later])
    result = run_redrive(writer, records, earlier.topic)
    assert [d.offset for d in result.plan.apply] == [earlier.offset, later.offset]
    assert result.plan.superseded == []
    assert mirror_rows(writer) == mirror_rows(whole)
