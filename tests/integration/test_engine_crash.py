"""Crash safety: kill -9 the engine at random moments under a live workload.

Every batch's rows and offsets commit in one DuckDB transaction, and the engine
resumes from the stored offsets, so however often it dies the mirrors end up
equal to Postgres, row for row, every column.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import duckdb
from engine_support import (
    EngineProcess,
    compare_with_postgres,
    end_offsets,
    stored_offsets,
    wait_for,
    wait_topics_quiet,
    workload,
)
from support import unique

from engine.core.config import Settings

KILLS = 10


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    stack: Settings, tmp_path: Path
) -> None:
    group = unique("crash")
    state = tmp_path / "state.duckdb"
    rnd = random.Random()
    kills = 0
    with workload(stack, "bank", rate=120, duration_s=45, seed=rnd.randrange(1000)) as writer:
        while kills < KILLS:
            log = tmp_path / f"engine-{kills}.log"
            engine = EngineProcess(stack, state, group, log, "--max-records", "500", "--no-api")
            # Let it join the group (a killed member's partitions move after the session
            # timeout), then kill it anywhere: polling, decoding, mid-transaction, committing.
            wait_for(engine.owns_partitions, 60, "the engine to own partitions")
            time.sleep(rnd.uniform(0.2, 2.5))
            assert engine.proc.poll() is None, engine.output()[-3000:]
            engine.kill()
            kills += 1
        wait_for(lambda: not writer.is_alive(), 180, "the workload to finish")

    ends = wait_topics_quiet(stack, "bank")
    final = EngineProcess(
        stack, state, group, tmp_path / "engine-final.log", "--idle-exit", "4", "--no-api"
    )
    assert final.wait(timeout_s=240) == 0, final.output()[-3000:]
    with duckdb.connect(str(state), read_only=True) as conn:
        counts = compare_with_postgres(stack, conn, "bank", "bank")
        assert counts["transactions"] > 100 and counts["accounts"] > 10
        stored = {k: v for k, v in stored_offsets(conn, group).items() if k[0].startswith("bank.")}
        assert stored == {k: v for k, v in ends.items() if v > 0}
        assert ends == end_offsets(stack, "bank")
        (dead,) = conn.execute("SELECT count(*) FROM _changefold.dead_letters").fetchone()
        assert dead == 0
