"""Two members of the engine's consumer group in one process, sharing the state file.

They split the partitions; when one leaves, the other takes over its partitions
from the offsets stored in DuckDB, and the mirrors end up equal to Postgres.
"""

from __future__ import annotations

import threading
from pathlib import Path

from engine_support import (
    SESSION_TIMEOUT_MS,
    compare_with_postgres,
    stored_offsets,
    wait_for,
    wait_progressing,
    wait_topics_quiet,
    workload,
)
from support import unique

from engine.app.build import engine_runner
from engine.core.config import Settings
from engine.ingest.topics import subscription
from engine.state.store import Store


def test_two_members_split_the_partitions_and_one_takes_over(
    stack: Settings, tmp_path: Path
) -> None:
    settings = stack.with_(
        group_id=unique("group"),
        workers=2,
        batch_max_records=200,
        consumer_session_timeout_ms=SESSION_TIMEOUT_MS,
    )
    with Store(tmp_path / "state.duckdb") as store:
        store.migrate(settings.state_sql_dir)
        lines: list[str] = []
        runner = engine_runner(
            settings,
            store,
            subscription((), settings.connectors_dir),
            views=False,
            echo=lines.append,
        )
        runner.start_members()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                runner.run()
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def running(condition):  # type: ignore[no-untyped-def]
            def check():  # type: ignore[no-untyped-def]
                if failure:
                    raise failure[0]
                return condition()

            return check

        try:
            with workload(stack, "arcade", rate=150, duration_s=30, seed=7):
                owners = runner.stats.owners

                def split() -> bool:
                    one, two = set(owners.get("member-1", ())), set(owners.get("member-2", ()))
                    return bool(one and two and not one & two)

                wait_for(running(split), 90, "both members to own partitions")
                both = set(owners["member-1"]) | set(owners["member-2"])
                wait_for(
                    running(
                        lambda: min(runner.stats.member_batches.get(m, 0) for m in owners) >= 2
                    ),
                    90,
                    "both members to fold batches",
                )
                runner.stop_member("member-2")
                wait_for(
                    running(
                        lambda: set(owners.get("member-1", ())) >= both and not owners["member-2"]
                    ),
                    60,
                    "member-1 to take over member-2's partitions",
                )
            ends = {**wait_topics_quiet(stack, "arcade"), **wait_topics_quiet(stack, "bank")}
            wanted = {k: v for k, v in ends.items() if v > 0}
            with store.reading() as conn:
                before = stored_offsets(conn, settings.engine.group_id)

            def folded() -> dict[tuple[str, int], int]:
                with store.reading() as conn:
                    return stored_offsets(conn, settings.engine.group_id)

            # The session's topics hold every earlier test's history too: on a loaded
            # machine (or with the per-event Avro read) folding it takes a while, so
            # the wait lasts as long as the stored offsets move.
            wait_progressing(
                running(lambda: folded() == wanted), folded, 120, "member-1 to fold everything"
            )
        finally:
            runner.stop.set()
            thread.join(timeout=60)
        assert not failure, failure
        with store.reading() as conn:
            counts = compare_with_postgres(stack, conn, "arcade", "arcade")
            assert counts["scores"] > 50
            compare_with_postgres(stack, conn, "bank", "bank")
            owners_now = conn.execute(
                "SELECT DISTINCT member FROM _changefold.assignments WHERE group_id = ?",
                [settings.engine.group_id],
            ).fetchall()
        assert owners_now == [("member-1",)]
        # At an ownership change the new owner's batches of a partition can have been
        # polled before the old owner's last batch of it committed: they are refused as
        # stale and the source skipped to the stored offsets (never applied twice: the
        # mirrors above equal Postgres), at most the batches a member has in hand (one
        # folding, one waiting, one just polled) per assignment. kafka-python may assign
        # more than once while members join and leave (each is echoed "... owns ...");
        # more refusals than that would mean repeated overlap.
        assignments = sum(" owns " in line for line in lines)
        assert assignments >= 3, lines  # both members, then member-1 taking over
        assert runner.stats.stale_batches <= 3 * assignments, (runner.stats, lines)
        # Taking over never moved an offset backwards.
        assert all(wanted[k] >= v for k, v in before.items())
