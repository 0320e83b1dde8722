"""Recovery without a person: the broker killed with SIGKILL under a running worker.

`stack up` restarts the broker and waits: the worker's group rebalances and every
connector runs again within 90 s of the broker answering (Connect's default would
leave them UNASSIGNED for 5 minutes), no change written to Postgres meanwhile is
lost, and an engine that started while the broker was down waited for it instead
of exiting. A connector whose database is down is reported as not healthy, though
Connect says RUNNING.

These tests use the session's stack and leave it healthy.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
import pytest
from support import Event, read_until, unique

from engine.core.config import Settings
from engine.ingest.kafka_group import open_consumer
from engine.lab.stack.supervisor import Stack

PLAYERS_TOPIC = "arcade.arcade.players"
#: Every connector runs again within this long after the restarted broker answers.
RECOVERY_S = 90.0


def _insert_players(settings: Settings, prefix: str, n: int) -> list[int]:
    with psycopg.connect(settings.stack.pg_conninfo(), autocommit=True) as conn:
        ids = []
        for _ in range(n):
            row = conn.execute(
                "INSERT INTO arcade.players (name) VALUES (%s) RETURNING player_id",
                (unique(prefix),),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
        return ids


def _created(events: list[Event]) -> dict[int, int]:
    """player_id -> how many create events of it were read."""
    counts: dict[int, int] = {}
    for e in events:
        if e.key is not None and e.payload and e.payload.get("op") == "c":
            pid = e.key["payload"]["player_id"]
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def _all_running(st: Stack) -> bool:
    try:
        conns = st.status()["connectors"]
    except Exception:
        return False
    return bool(conns) and all(
        c["state"] == "RUNNING" and c["tasks"] and all(t["state"] == "RUNNING" for t in c["tasks"])
        for c in conns
    )


def _wait_healthy(st: Stack, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    report = st.status()
    while not report["healthy"] and time.monotonic() < deadline:
        time.sleep(1.0)
        report = st.status()
    return report


def test_broker_killed_connectors_run_again_and_nothing_is_lost(
    stack: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    st = Stack(stack)
    assert _wait_healthy(st, 60)["healthy"], st.status()
    before = _insert_players(stack, "before_kill", 20)
    # Debezium has sent them before the kill (else they are simply among the later ones).
    read_until(stack, PLAYERS_TOPIC, lambda ev: set(before) <= set(_created(ev)), timeout_s=90)

    # An engine member that starts while the broker is down waits for it.
    caplog.set_level(logging.INFO, logger="engine.ingest.kafka_group")
    opened: dict[str, Any] = {}

    def open_member() -> None:
        try:
            opened["consumer"] = open_consumer(
                stack.with_(kafka_wait_s=240), "member-waiting", group_id=unique("wait")
            )
        except BaseException as exc:
            opened["error"] = exc

    killed_at = time.monotonic()
    st.kafka.process.kill()
    member = threading.Thread(target=open_member, daemon=True)
    member.start()
    # Changes made while the broker is down wait in the replication slot.
    while_down = _insert_players(stack, "while_down", 20)

    lines: list[str] = []
    broker_back: list[float] = []

    def echo(line: str) -> None:
        lines.append(line)
        if line.split()[:2] == ["kafka", "healthy"]:
            broker_back.append(time.monotonic())

    st.up(echo=echo)
    up_s = time.monotonic() - killed_at
    assert broker_back, lines
    while not _all_running(st) and time.monotonic() - broker_back[0] < RECOVERY_S:
        time.sleep(0.5)
    recovered_s = time.monotonic() - killed_at
    after_broker_s = time.monotonic() - broker_back[0]
    print(f"\nbroker killed: the new broker answered {broker_back[0] - killed_at:.1f} s after "
          f"the kill, stack up returned after {up_s:.1f} s, every connector RUNNING "
          f"{recovered_s:.1f} s after the kill ({after_broker_s:.1f} s after the broker "
          "answered); up said:\n" + "\n".join(lines))  # fmt: skip
    assert any(line.strip().startswith("kafka") and "started" in line for line in lines), lines
    # The broker's own start is the JVM's and the machine's; what the worker's settings
    # decide is how long the connectors stay unassigned after it answers again (Connect's
    # default: up to 5 minutes).
    assert _all_running(st), st.status()
    assert after_broker_s < RECOVERY_S, st.status()

    after = _insert_players(stack, "after_up", 20)
    wanted = set(before) | set(while_down) | set(after)
    events = read_until(
        stack, PLAYERS_TOPIC, lambda ev: wanted <= set(_created(ev)), timeout_s=RECOVERY_S
    )
    created = _created(events)
    missing = sorted(wanted - set(created))
    assert not missing, f"{len(missing)} inserts never reached the topic: {missing[:10]}"
    duplicates = sum(created[i] - 1 for i in wanted)
    print(f"{len(wanted)} inserts all in {PLAYERS_TOPIC}, {duplicates} sent twice")

    member.join(timeout=RECOVERY_S)
    assert "consumer" in opened, opened.get("error", "the member is still waiting")
    opened["consumer"].close()
    attempts = [r.getMessage() for r in caplog.records if "member-waiting" in r.getMessage()]
    assert any("attempt 1," in m and stack.stack.bootstrap_servers in m for m in attempts)
    assert any("answers" in m for m in attempts), attempts

    assert _wait_healthy(st, 60)["healthy"], st.status()


def test_a_connector_whose_database_is_down_is_not_healthy(stack: Settings) -> None:
    st = Stack(stack)
    assert _wait_healthy(st, 60)["healthy"], st.status()
    st.postgres.process.stop()
    try:
        report = st.status()
        assert not report["healthy"]
        pg = next(c for c in report["components"] if c["name"] == "postgres")
        assert not pg["healthy"]
        for c in report["connectors"]:
            # Whatever Connect says of the task, the connector is not healthy.
            assert not c["healthy"], c
            assert c["source"]["answers"] is False, c
            if c["state"] == "RUNNING" and all(t["state"] == "RUNNING" for t in c["tasks"]):
                assert "does not answer" in c["problem"], c
    finally:
        st.up(echo=lambda _: None)
    report = _wait_healthy(st, RECOVERY_S)
    assert report["healthy"], report
    assert all(c["source"]["slot_active"] for c in report["connectors"]), report
    pid = _insert_players(stack, "after_pg", 1)[0]
    read_until(stack, PLAYERS_TOPIC, lambda ev: pid in _created(ev), timeout_s=RECOVERY_S)
