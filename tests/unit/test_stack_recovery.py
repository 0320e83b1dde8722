"""What `stack up` and `stack status` decide after a crash, without servers.

The servers' own behaviour (a broker killed, a database down) is in
tests/integration/test_broker_restart.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.core.config import Settings
from engine.lab.stack.connect import Connect, describe_state, running
from engine.lab.stack.process import wait_until
from engine.lab.stack.supervisor import Stack, _problem

SOURCE_OK = {
    "database": "h:1/db",
    "slot": "s",
    "answers": True,
    "slot_exists": True,
    "slot_active": True,
}


def _status(connector: str = "RUNNING", *tasks: str, trace: str = "") -> dict[str, Any]:
    return {
        "name": "arcade",
        "connector": {"state": connector},
        "tasks": [
            {"id": i, "state": t, **({"trace": trace} if trace else {})}
            for i, t in enumerate(tasks)
        ],
    }


def test_a_connector_is_healthy_only_when_it_runs_and_reads_its_database() -> None:
    assert _problem(_status("RUNNING", "RUNNING"), SOURCE_OK) is None
    assert _problem(None, SOURCE_OK) == "not registered"
    assert _problem(_status("UNASSIGNED", "UNASSIGNED"), SOURCE_OK) == "connector UNASSIGNED"
    assert _problem(_status("RUNNING"), SOURCE_OK) == "no task assigned yet"
    trace = "org.postgresql.util.PSQLException: x\n\tat org.postgresql..."
    failed = _problem(_status("RUNNING", "FAILED", trace=trace), SOURCE_OK)
    assert failed == "task 0 FAILED: org.postgresql.util.PSQLException: x"
    # Connect says RUNNING, the database does not answer: not healthy.
    down = {**SOURCE_OK, "answers": False, "error": "connection refused"}
    problem = _problem(_status("RUNNING", "RUNNING"), down)
    assert problem == "its database h:1/db does not answer: connection refused"
    idle = _problem(_status("RUNNING", "RUNNING"), {**SOURCE_OK, "slot_active": False})
    assert idle is not None and "replication slot s is not in use" in idle
    gone = _problem(_status("RUNNING", "RUNNING"), {**SOURCE_OK, "slot_exists": False})
    assert gone is not None and "does not exist" in gone


def test_running_and_the_state_line() -> None:
    assert running(_status("RUNNING", "RUNNING"))
    assert not running(_status("RUNNING"))
    assert not running(_status("RUNNING", "UNASSIGNED"))
    assert describe_state("arcade", _status("UNASSIGNED", "UNASSIGNED")) == (
        "arcade UNASSIGNED (task 0 UNASSIGNED)"
    )
    assert describe_state("bank", None) == "bank (no status yet)"


def test_wait_until_reports_progress_while_it_waits() -> None:
    seen: list[tuple[float, str]] = []

    def check() -> bool:
        raise ConnectionRefusedError("nobody there")

    ok, err = wait_until(
        check,
        timeout_s=0.5,
        interval_s=0.05,
        progress=lambda s, e: seen.append((s, e)),
        progress_every_s=0.1,
    )
    assert not ok and "nobody there" in err
    assert 2 <= len(seen) <= 6, seen
    assert all(e == "ConnectionRefusedError: nobody there" for _, e in seen)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)


@dataclass
class _Process:
    stopped: bool = False

    def stop(self, timeout_s: float = 30.0) -> bool:
        self.stopped = True
        return True


@dataclass
class _Component:
    name: str
    answers: bool
    process: _Process = field(default_factory=_Process)
    port: int = 1

    def healthy(self) -> bool:
        if not self.answers:
            raise ConnectionRefusedError("down")
        return True


def test_a_failed_recovery_keeps_what_it_started_and_answers(tmp_path: Any) -> None:
    st = Stack(Settings(home=tmp_path))
    kafka, connect = _Component("kafka", answers=True), _Component("connect", answers=False)
    lines: list[str] = []
    st._roll_back([kafka, connect], recovering=True, echo=lines.append)  # type: ignore[list-item]
    assert not kafka.process.stopped
    assert connect.process.stopped
    assert any("kafka" in line and "kept running" in line for line in lines)


def test_a_failed_start_from_stopped_stops_everything_it_started(tmp_path: Any) -> None:
    st = Stack(Settings(home=tmp_path))
    postgres, kafka = _Component("postgres", answers=True), _Component("kafka", answers=True)
    st._roll_back([postgres, kafka], recovering=False, echo=lambda _: None)  # type: ignore[list-item]
    assert postgres.process.stopped and kafka.process.stopped


def test_a_worker_started_with_older_settings_is_named(tmp_path: Any) -> None:
    connect = Connect(Settings(home=tmp_path))
    assert connect.stale_settings() == []  # never started: nothing to compare
    old = {k: v for k, v in connect.properties().items() if k != "scheduled.rebalance.max.delay.ms"}
    connect.props.parent.mkdir(parents=True)
    connect.props.write_text("# written\n" + "".join(f"{k}={v}\n" for k, v in old.items()))
    assert connect.stale_settings() == ["scheduled.rebalance.max.delay.ms=0"]
