"""`dlq`, `snapshot --into`, `sql`, `eval` and `diff <live> <replay>` while `changefold run`
holds the state."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
from engine_support import EngineProcess, changefold, wait_for, wait_topics_quiet, workload
from support import free_ports, unique

from engine.core.config import Settings


def test_tools_work_while_the_engine_runs(stack: Settings, tmp_path: Path) -> None:
    live, group = tmp_path / "engine_state.duckdb", unique("snap")
    (port,) = free_ports(1)
    settings = stack.with_(api_port=port)
    env = {"CHANGEFOLD_API_PORT": str(port), "CHANGEFOLD_STATE_PATH": str(live)}
    engine = EngineProcess(settings, live, group, tmp_path / "engine.log", env=env)
    try:
        with workload(stack, "bank", rate=300, duration_s=4, seed=91):
            pass
        wait_topics_quiet(stack, "bank", quiet_s=3.0)

        def api_up() -> bool:
            try:
                return httpx.get(f"{settings.api.url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(api_up, 60, "the engine's API")

        def folded() -> bool:
            # The tools below read what the engine folded: wait until it has the workload.
            try:
                answer = httpx.post(
                    f"{settings.api.url}/query",
                    json={"sql": "SELECT count(*) FROM bank.transactions", "format": "json"},
                    timeout=10,
                ).json()
                return int(answer["rows"][0][0]) > 0
            except (httpx.TransportError, ValueError, KeyError, IndexError, TypeError):
                return False

        wait_for(folded, 120, "the engine to fold the workload")
        assert engine.proc.poll() is None, engine.output()[-3000:]

        dlq = changefold(stack, "dlq", "--json", **env)
        assert dlq.returncode == 0, dlq.stderr
        assert "read a snapshot of it that the engine wrote" in dlq.stderr
        assert "consistent as of" in dlq.stderr or "per-event visibility" in dlq.stderr

        copy = tmp_path / "copy.duckdb"
        snap = changefold(stack, "snapshot", "--into", str(copy), **env)
        assert snap.returncode == 0, snap.stderr
        assert "the running engine wrote a snapshot" in snap.stdout
        con = duckdb.connect(str(copy), read_only=True)
        try:
            assert con.execute("SELECT count(*) FROM bank.transactions").fetchall()[0][0] > 0
            assert con.execute("SELECT count(*) FROM _changefold.offsets").fetchall()[0][0] > 0
        finally:
            con.close()

        # sql and eval on the held file itself (--state): through a snapshot too.
        rows = changefold(
            stack, "sql", "--state", str(live), "SELECT count(*) AS n FROM bank.accounts",
            "-f", "csv", **env,
        )  # fmt: skip
        assert rows.returncode == 0, rows.stderr
        assert "read a snapshot" in rows.stderr and int(rows.stdout.splitlines()[1]) > 0
        scored = changefold(stack, "eval", "fraud", "--state", str(live), **env)
        assert scored.returncode == 0, scored.stderr
        assert "read a snapshot" in scored.stderr and "fraud cases" in scored.stdout
        # --as-of builds its own replay file: it never needed the engine's.
        as_of = changefold(
            stack, "sql", "--as-of", datetime.now(UTC).isoformat(),
            "SELECT count(*) AS n FROM bank.accounts", "-f", "csv", timeout_s=600, **env,
        )  # fmt: skip
        assert as_of.returncode == 0, as_of.stderr

        rebuilt = tmp_path / "replay.duckdb"
        replay = changefold(
            stack, "replay", "--into", str(rebuilt), "--no-progress", timeout_s=600, **env
        )
        assert replay.returncode == 0, replay.stderr

        # The engine may still be folding the tail: every diff must run (exit 0 or 1),
        # and once it caught up the live state equals the replay.
        last = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            last = changefold(stack, "diff", str(live), str(rebuilt), **env)
            assert last.returncode in (0, 1), last.stderr
            assert "held by the running engine" in last.stderr
            if last.returncode == 0:
                break
            time.sleep(2)
        assert last is not None and last.returncode == 0, last.stdout[-3000:]
        assert engine.proc.poll() is None, engine.output()[-3000:]
        left = list((stack.home / "snapshots").glob("snapshot-*"))
        assert left == [], left
    finally:
        if engine.proc.poll() is None:
            engine.proc.terminate()
        code = engine.wait(timeout_s=60)
    assert code == 0, engine.output()[-3000:]
