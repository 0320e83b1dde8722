"""Replay against the real stack: state as of a time, state at the end, resume, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from engine_support import EngineProcess, engine_env, wait_topics_quiet, workload
from support import unique

from engine.app.build import replay_job
from engine.core.config import Settings
from engine.core.errors import ReplayError
from engine.ingest.topics import subscription
from engine.replay.bounds import StartSpec, UntilSpec
from engine.replay.diff import StateDiff, diff_states
from engine.replay.runner import Replay
from engine.state.frontier import lsn_text


def _run_engine_until_idle(stack: Settings, state: Path, group: str, log: Path) -> None:
    engine = EngineProcess(stack, state, group, log, "--idle-exit", "4", "--no-api")
    code = engine.wait(timeout_s=300)
    assert code == 0, log.read_text(errors="replace")[-3000:]


def _replay_cli(stack: Settings, target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "replay", "--into", str(target), "--no-progress", *args],
        env=engine_env(stack),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _same_state(a: Path, b: Path) -> None:
    """Every table equal, mirrors and every live.* view (diff leaves out only the views'
    bookkeeping columns: batch ids and wall-clock detection times)."""
    _assert_equal(diff_states(a, b))


def _assert_equal(result: StateDiff) -> None:
    different = [t for t in result.tables if t.differs]
    assert not different, "; ".join(
        f"{t.table}: only A {t.only_a}, only B {t.only_b}, changed {t.changed} {t.note} {t.samples}"
        for t in different
    )


def _quiet(stack: Settings) -> None:
    for prefix in ("arcade", "bank"):
        wait_topics_quiet(stack, prefix, quiet_s=3.0)


def test_replay_until_t_equals_live_at_t_and_latest_equals_live(
    stack: Settings, tmp_path: Path
) -> None:
    group, live = unique("live"), tmp_path / "engine_state.duckdb"
    with workload(stack, "arcade", rate=300, duration_s=4, seed=71):
        pass
    _quiet(stack)
    _run_engine_until_idle(stack, live, group, tmp_path / "engine1.log")
    # Every change so far was committed before T, every later one after it.
    time.sleep(1.0)
    t = datetime.now(UTC)
    time.sleep(1.0)
    live_at_t = tmp_path / "live_at_t.duckdb"
    shutil.copy(live, live_at_t)

    with workload(stack, "arcade", rate=300, duration_s=4, seed=72):
        pass
    _quiet(stack)
    _run_engine_until_idle(stack, live, group, tmp_path / "engine2.log")

    at_t = tmp_path / "replay_at_t.duckdb"
    done = _replay_cli(stack, at_t, "--until", t.isoformat())
    assert done.returncode == 0, done.stderr
    _same_state(live_at_t, at_t)
    # By source position: the state live showed when its frontier was at that LSN.
    conn = duckdb.connect(str(live_at_t), read_only=True)
    try:
        ((lsn,),) = conn.execute(
            "SELECT lsn FROM _changefold.frontier WHERE group_id = ?", [group]
        ).fetchall()
    finally:
        conn.close()
    at_lsn = tmp_path / "replay_at_lsn.duckdb"
    done = _replay_cli(stack, at_lsn, "--until", lsn_text(int(lsn)))
    assert done.returncode == 0, done.stderr
    _same_state(live_at_t, at_lsn)

    latest = tmp_path / "replay_latest.duckdb"
    done = _replay_cli(stack, latest)
    assert done.returncode == 0, done.stderr
    assert "events/s" in done.stdout
    _same_state(live, latest)
    # The two replays differ exactly by the second workload.
    assert diff_states(at_t, latest).differs

    # `changefold diff` is the tool for the same check: exit 0 equal, 1 different.
    cli = [sys.executable, "-m", "engine", "diff"]
    same = subprocess.run([*cli, str(live), str(latest)], env=engine_env(stack), check=False)
    assert same.returncode == 0
    other = subprocess.run(
        [*cli, str(at_t), str(latest)], env=engine_env(stack), capture_output=True, check=False
    )
    assert other.returncode == 1


def test_interrupted_replay_resumes_to_the_same_state(stack: Settings, tmp_path: Path) -> None:
    with workload(stack, "bank", rate=400, duration_s=3, seed=73):
        pass
    _quiet(stack)
    settings = stack.with_(batch_max_records=250)
    sub = subscription((), settings.connectors_dir)

    def job(target: Path) -> Replay:
        return replay_job(settings, target, sub, StartSpec("earliest"), UntilSpec())

    whole = tmp_path / "whole.duckdb"
    assert job(whole).run(threading.Event()).complete

    part = tmp_path / "part.duckdb"
    stop = threading.Event()

    def interrupt_a_third_in(done: int, total: int) -> None:
        if done > total // 3:
            stop.set()

    first = job(part).run(stop, interrupt_a_third_in)
    assert not first.complete
    assert 0 < first.events < first.meta.total
    second = job(part).run(threading.Event())
    assert second.resumed and second.complete
    assert first.events + second.events == first.meta.total
    _same_state(whole, part)
    # Running it once more changes nothing: the file says it is complete.
    third = job(part).run(threading.Event())
    assert third.complete and third.events == 0


def test_bad_bounds_and_targets_change_nothing(stack: Settings, tmp_path: Path) -> None:
    sub = subscription((), stack.connectors_dir)
    # An offsets file about other topics.
    offsets = tmp_path / "offsets.json"
    offsets.write_text(json.dumps({"no.such.topic": {"0": 1}}))
    with pytest.raises(ReplayError, match="names topics this replay does not read"):
        replay_job(
            stack, tmp_path / "a.duckdb", sub, StartSpec("offsets", path=offsets), UntilSpec()
        ).run(threading.Event())
    # A time before the retained history names the earliest available time.
    long_ago = UntilSpec(datetime(2001, 1, 1, tzinfo=UTC))
    with pytest.raises(ReplayError, match="earliest event still in the topics is from"):
        replay_job(stack, tmp_path / "b.duckdb", sub, StartSpec("earliest"), long_ago).run(
            threading.Event()
        )
    assert not (tmp_path / "a.duckdb").exists() and not (tmp_path / "b.duckdb").exists()
    # A file that exists and is not a replay is left alone.
    other = tmp_path / "other.duckdb"
    other.write_bytes(b"precious")
    done = _replay_cli(stack, other)
    assert done.returncode == 2
    assert "not a changefold state file" in done.stderr
    assert other.read_bytes() == b"precious"
