"""The local stack: Debezium change events reach Kafka, and the stack survives crashes."""

from __future__ import annotations

import socket

import psutil
import psycopg
import pytest
from engine_support import wait_for
from support import Event, free_ports, read_until, unique

from engine.core.config import Settings
from engine.core.errors import StackError
from engine.lab.stack.connect import Connect, ConnectorSpec, load_connector_specs
from engine.lab.stack.supervisor import Stack

PLAYERS_TOPIC = "arcade.arcade.players"


def _player_events(events: list[Event], player_id: int) -> list[Event]:
    return [e for e in events if e.key is not None and e.key["payload"]["player_id"] == player_id]


def _insert_player(settings: Settings, name: str) -> int:
    with psycopg.connect(settings.stack.pg_conninfo()) as conn:
        row = conn.execute(
            "INSERT INTO arcade.players (name) VALUES (%s) RETURNING player_id", (name,)
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_insert_update_delete_reach_the_topic(stack: Settings) -> None:
    name, renamed = unique("ann"), unique("bob")
    with psycopg.connect(stack.stack.pg_conninfo()) as conn:
        row = conn.execute(
            "INSERT INTO arcade.players (name) VALUES (%s) RETURNING player_id", (name,)
        ).fetchone()
        assert row is not None
        pid = int(row[0])
        conn.commit()
        conn.execute("UPDATE arcade.players SET name = %s WHERE player_id = %s", (renamed, pid))
        conn.commit()
        conn.execute("DELETE FROM arcade.players WHERE player_id = %s", (pid,))
        conn.commit()
        full_identity = conn.execute(
            "SELECT relreplident = 'f' FROM pg_class WHERE oid = 'arcade.players'::regclass"
        ).fetchone()

    events = read_until(stack, PLAYERS_TOPIC, lambda ev: len(_player_events(ev, pid)) >= 4)
    mine = _player_events(events, pid)
    # One key -> one partition, so the four records are in offset order.
    assert len({e.partition for e in mine}) == 1
    ops = [e.payload["op"] if e.value is not None else "tombstone" for e in mine]
    assert ops == ["c", "u", "d", "tombstone"]
    create, update, delete, _ = mine
    # Key = primary key, with its schema.
    assert create.key["payload"] == {"player_id": pid}
    assert create.key["schema"]["fields"][0]["field"] == "player_id"
    # Images.
    assert create.payload["before"] is None
    assert create.payload["after"]["name"] == name
    assert update.payload["after"]["name"] == renamed
    assert delete.payload["after"] is None
    assert delete.payload["before"]["player_id"] == pid
    if full_identity and full_identity[0]:
        assert update.payload["before"]["name"] == name
        assert delete.payload["before"]["name"] == renamed
    # Source metadata that the engine relies on.
    src = create.payload["source"]
    assert (src["schema"], src["table"]) == ("arcade", "players")
    assert create.payload["transaction"]["id"].startswith(str(src["txId"]))

    # Transaction metadata: BEGIN and END for the insert's transaction. Their ids are
    # "<txId>:<lsn>" with the begin and commit LSN respectively, so match on the txId.
    def of_txn(ev: list[Event]) -> list[Event]:
        return [e for e in ev if e.payload and e.payload["id"].split(":")[0] == str(src["txId"])]

    txn_events = read_until(
        stack,
        "arcade.transaction",
        lambda ev: {e.payload["status"] for e in of_txn(ev)} >= {"BEGIN", "END"},
    )
    end = next(e for e in of_txn(txn_events) if e.payload["status"] == "END")
    assert end.payload["event_count"] == 1
    assert end.payload["data_collections"] == [
        {"data_collection": "arcade.players", "event_count": 1}
    ]


def test_topics_have_the_configured_partitions(stack: Settings) -> None:
    _insert_player(stack, unique("p"))
    read_until(stack, PLAYERS_TOPIC, lambda ev: len(ev) > 0)
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=stack.stack.bootstrap_servers)
    try:
        assert (
            len(consumer.partitions_for_topic(PLAYERS_TOPIC) or ()) == stack.stack.topic_partitions
        )
    finally:
        consumer.close()


def test_up_is_idempotent_and_status_is_healthy(stack: Settings) -> None:
    st = Stack(stack)
    pids = {c.name: c.process.pid() for c in st.components}
    lines: list[str] = []
    st.up(echo=lines.append)
    # Postgres, Kafka, Connect, and with format=avro the schema registry.
    assert sum("already running" in line for line in lines) == len(pids)
    assert len(pids) == (4 if stack.stack.avro else 3)
    assert {c.name: c.process.pid() for c in st.components} == pids
    report = st.status()
    assert report["healthy"], report
    assert {c["name"] for c in report["connectors"]} == {"arcade", "bank"}
    assert {s["slot"] for s in report["slots"]} >= {"changefold_arcade", "changefold_bank"}
    assert all(s["retained_wal_bytes"] is not None for s in report["slots"])


def test_connect_rejects_a_bad_connector_with_its_validation_message(stack: Settings) -> None:
    good = load_connector_specs(stack)[0]
    bad = ConnectorSpec(
        name=unique("broken"),
        config={**good.config, "plugin.name": "no_such_plugin", "slot.name": unique("slot")},
        path=good.path,
    )
    with pytest.raises(StackError) as err:
        Connect(stack).register(bad, timeout_s=30)
    assert "plugin.name" in str(err.value)
    assert "rejected" in str(err.value)


def test_port_in_use_is_named(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> None:
    port, pg, controller, connect, registry = free_ports(5)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        other = stack.with_(
            home=tmp_path_factory.mktemp("other"),
            kafka_port=port,
            pg_port=pg,
            kafka_controller_port=controller,
            connect_port=connect,
            registry_port=registry,
        )
        with pytest.raises(StackError) as err:
            Stack(other).up(echo=lambda _: None)
        assert f"port {port}" in str(err.value)
        assert err.value.component == "kafka"
        # Nothing of the failed stack was started.
        assert all(c.process.pid() is None for c in Stack(other).components)
    finally:
        blocker.close()


def test_connect_killed_resumes_without_losing_changes(stack: Settings) -> None:
    st = Stack(stack)
    st.connect.process.kill()
    # Changes made while the worker is down stay in the slot's WAL.
    ids = [_insert_player(stack, unique("while_down")) for _ in range(5)]
    st.up(echo=lambda _: None)
    events = read_until(
        stack,
        PLAYERS_TOPIC,
        lambda ev: all(
            any(e.payload and e.payload["op"] == "c" for e in _player_events(ev, i)) for i in ids
        ),
    )
    for i in ids:
        creates = [e for e in _player_events(events, i) if e.payload and e.payload["op"] == "c"]
        assert creates, f"insert of player {i} made while Connect was down is missing"


def test_broker_killed_with_sigkill_recovers(stack: Settings) -> None:
    st = Stack(stack)
    st.kafka.process.kill()
    st.up(echo=lambda _: None)  # stale pid file, unclean log: recovers on its own
    # `up` waits for the connectors to run; `status` also asks each replication slot to
    # be in use, which the restarted task takes a moment to do (seen in CI: unhealthy
    # right after `up` returned).
    wait_for(lambda: st.status()["healthy"], 60, "the stack to report healthy")
    pid = _insert_player(stack, unique("after_crash"))
    read_until(stack, PLAYERS_TOPIC, lambda ev: bool(_player_events(ev, pid)), timeout_s=90)


def test_down_leaves_no_process_and_up_restarts_with_the_data(stack: Settings) -> None:
    st = Stack(stack)
    pids = [c.process.pid() for c in st.components]
    assert all(pids)
    pid_before = _insert_player(stack, unique("before_down"))
    st.down(echo=lambda _: None)
    assert not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids if p
    )
    st.up(echo=lambda _: None)
    with psycopg.connect(stack.stack.pg_conninfo()) as conn:
        assert conn.execute(
            "SELECT count(*) FROM arcade.players WHERE player_id = %s", (pid_before,)
        ).fetchone() == (1,)
    pid_after = _insert_player(stack, unique("after_restart"))
    read_until(stack, PLAYERS_TOPIC, lambda ev: bool(_player_events(ev, pid_after)))
