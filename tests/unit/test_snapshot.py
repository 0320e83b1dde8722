"""engine.state.snapshot: a consistent copy of a state, read in one transaction."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pytest
from serve_support import build_state, fingerprint, fold_batches

from engine.core.errors import StateError
from engine.replay.diff import diff_states
from engine.state import snapshot
from engine.state.reader import StateReader


def _contents(path: Path) -> dict[str, object]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        found = fingerprint(con, path.parent)
    finally:
        con.close()
    for key in ("files", "settings", "databases", "sequences"):
        found.pop(key)  # the file's name; a copied sequence has no last value until used
    return found


def test_copy_equals_the_source_every_schema_and_type(tmp_path: Path) -> None:
    con = build_state(tmp_path / "state.duckdb")
    fold_batches(con)
    con.execute(
        """
        CREATE TYPE bank.status AS ENUM ('open', 'closed');
        CREATE TABLE bank.odd ("we""ird col" INTEGER PRIMARY KEY, s bank.status,
            b BIT, tz TIMETZ, h HUGEINT, u UUID, m MAP(VARCHAR, INTEGER),
            st STRUCT(a INTEGER, l VARCHAR[]), j JSON, n INTEGER DEFAULT nextval('bank.ids'));
        INSERT INTO bank.odd VALUES (1, 'closed', '0101', '12:00:00+02',
            170141183460469231731687303715884105727, uuid(), MAP {'k': 1},
            {'a': 1, 'l': ['x']}, '{"a": [1]}', DEFAULT), (2, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, DEFAULT);
        CREATE INDEX odd_s ON bank.odd (s);
        CREATE SCHEMA live;
        CREATE VIEW live.z_base AS SELECT id, balance FROM bank.accounts;
        CREATE VIEW live.a_over_view AS SELECT count(*) AS n FROM live.z_base;
        CREATE TEMP TABLE scratch AS SELECT 1 AS x;
        """
    )
    reader = StateReader.for_connection(con)
    target = tmp_path / "snap" / "bank.duckdb"  # named like a schema: still unambiguous
    target.parent.mkdir()
    try:
        with reader.cursor() as cur:
            snap = snapshot.copy_state(cur, target)
    finally:
        reader.close()
    con.close()
    assert snap.path == target and target.is_file()
    assert list(target.parent.iterdir()) == [target]  # no partial file left
    assert snap.views == 2 and snap.tables >= 10 and snap.rows > 5000
    assert snap.consistency.as_of is None  # no frontier rows in this state
    target = target.rename(target.with_name("copy.duckdb"))  # readable without ambiguity
    assert _contents(tmp_path / "state.duckdb") == _contents(target)
    assert not diff_states(tmp_path / "state.duckdb", target).differs
    copy = duckdb.connect(str(target))
    try:
        # The sequence goes on where the source's was; the index and views exist.
        assert copy.execute("SELECT n FROM bank.odd ORDER BY 1").fetchall() == [(1,), (2,)]
        assert copy.execute("SELECT nextval('bank.ids')").fetchall() == [(3,)]
        assert copy.execute("SELECT n FROM live.a_over_view").fetchall() == [(50,)]
        assert copy.execute(
            "SELECT count(*) FROM duckdb_indexes() WHERE index_name = 'odd_s'"
        ).fetchall() == [(1,)]
        assert copy.execute("SELECT count(*) FROM _changefold.dead_letters").fetchall() == [(1,)]
        assert not copy.execute(
            "SELECT * FROM duckdb_tables() WHERE table_name = 'scratch'"
        ).fetchall()
    finally:
        copy.close()


def test_the_copy_is_one_committed_batch_while_the_writer_goes_on(tmp_path: Path) -> None:
    """A writer commits batches that move rows between two tables (their sum stays
    0) while the snapshot is read: the copy must hold one batch boundary."""
    con = duckdb.connect(str(tmp_path / "state.duckdb"))
    con.execute(
        "CREATE TABLE a AS SELECT range AS id, 0 AS v FROM range(200000);"
        "CREATE TABLE b AS SELECT range AS id, 0 AS v FROM range(200000);"
        "CREATE TABLE batches (n INTEGER)"
    )
    reader = StateReader.for_connection(con)
    stop = threading.Event()
    lock = threading.Lock()
    waits: list[float] = []

    def writer() -> None:
        w = con.cursor()
        n = 0
        while not stop.is_set():
            n += 1
            asked = time.perf_counter()
            with lock:
                waits.append(time.perf_counter() - asked)
                w.execute("BEGIN TRANSACTION")
                w.execute("UPDATE a SET v = v + 1 WHERE id % 1000 = ?", [n % 1000])
                w.execute("UPDATE b SET v = v - 1 WHERE id % 1000 = ?", [n % 1000])
                w.execute("INSERT INTO batches VALUES (?)", [n])
                w.execute("COMMIT")
        w.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        target = tmp_path / "copy.duckdb"
        with reader.cursor() as cur:
            snapshot.copy_state(cur, target)
    finally:
        stop.set()
        thread.join()
        reader.close()
    copy = duckdb.connect(str(target), read_only=True)
    try:
        total = copy.execute("SELECT (SELECT sum(v) FROM a) + (SELECT sum(v) FROM b)").fetchall()
        count, top = copy.execute("SELECT count(*), max(n) FROM batches").fetchall()[0]
    finally:
        copy.close()
    assert total == [(0,)]
    assert count == (top or 0)
    assert count > 0
    # The snapshot takes no lock of the writer's: it never waited for one.
    assert max(waits) < 0.5
    con.close()


def test_a_failed_copy_leaves_no_file_and_an_existing_target_is_refused(tmp_path: Path) -> None:
    con = build_state(tmp_path / "state.duckdb")
    reader = StateReader.for_connection(con)
    existing = tmp_path / "there.duckdb"
    existing.write_bytes(b"precious")
    target = tmp_path / "new.duckdb"

    def boom() -> None:
        raise RuntimeError("shutting down")

    try:
        with reader.cursor() as cur, pytest.raises(StateError, match="exists already"):
            snapshot.copy_state(cur, existing)
        with reader.cursor() as cur, pytest.raises(RuntimeError):
            snapshot.copy_state(cur, target, check=boom)
    finally:
        reader.close()
        con.close()
    assert existing.read_bytes() == b"precious"
    assert not target.exists() and not (tmp_path / "new.duckdb.wal").exists()


def test_held_tells_a_locked_file(tmp_path: Path) -> None:
    path = tmp_path / "state.duckdb"
    build_state(path).close()
    assert not snapshot.held(path)
    # The lock is per process: a child process holds it.
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(path)!r}); "
         "print('open', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "open"
        assert snapshot.held(path)
    finally:
        child.kill()
        child.wait()
