"""Bring the whole local stack up, down, and report its status.

Order: Postgres and Kafka (and, with format=avro, the schema registry) start side
by side; Connect starts once Kafka (and the registry) is healthy, then every
connectors/*.json is registered and must reach RUNNING.

A failing `up` from a stopped stack stops what it started, so nothing half-started
is left running. A failing `up` that restarted part of a running stack (a broker
killed under a running worker) keeps what it started and is healthy: the error says
what it saw, and `up` again waits once more.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any, Protocol

import psycopg

from engine.core.config import Settings
from engine.core.errors import StackError
from engine.lab.stack.connect import Connect, ConnectorSpec, load_connector_specs
from engine.lab.stack.jars import (
    avro_jars_ready,
    ensure_avro_jars,
    ensure_jars,
    ensure_registry,
    jars_ready,
    registry_ready,
)
from engine.lab.stack.jvm import check_java
from engine.lab.stack.kafka import Kafka
from engine.lab.stack.postgres import Postgres
from engine.lab.stack.process import ManagedProcess, port_in_use, wait_until
from engine.lab.stack.registry import Registry

log = logging.getLogger(__name__)

Echo = Callable[[str], None]

#: How long a port may stay in use after the server holding it was killed.
PORT_RELEASE_S = 10.0


class Component(Protocol):
    name: str
    process: ManagedProcess

    @property
    def port(self) -> int: ...

    def start(self) -> int: ...

    def healthy(self) -> bool: ...


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.postgres = Postgres(settings)
        self.kafka = Kafka(settings)
        self.connect = Connect(settings)
        #: The schema registry: run with format=avro only.
        self.registry = Registry(settings)

    @property
    def components(self) -> list[Component]:
        if self.settings.stack.avro:
            return [self.postgres, self.kafka, self.registry, self.connect]
        return [self.postgres, self.kafka, self.connect]

    # -- up ----------------------------------------------------------------------------

    def up(self, echo: Echo = print) -> float:
        """Start whatever is not running; idempotent. Returns the seconds it took."""
        t0 = time.monotonic()
        started: list[Component] = []
        # A stack with something already running is being recovered, not started.
        recovering = any(comp.process.pid() is not None for comp in self.components)
        try:
            self._preflight(echo)
            first: list[Component] = [self.postgres, self.kafka]  # side by side
            if self.settings.stack.avro:
                first.append(self.registry)
            for comp in first:
                if self._start(comp, echo):
                    started.append(comp)
            self._await(self.postgres, echo)
            loaded = self.postgres.ensure_database()
            if loaded:
                echo(f"  postgres   loaded {', '.join(loaded)}")
            self._await(self.kafka, echo)
            if self.settings.stack.avro:
                self._await(self.registry, echo)
            if self._start(self.connect, echo):
                started.append(self.connect)
            self._await(self.connect, echo)
            self._register_connectors(echo)
        except BaseException:
            self._roll_back(started, recovering, echo)
            raise
        elapsed = time.monotonic() - t0
        echo(f"stack is up in {elapsed:.1f} s")
        return elapsed

    def _roll_back(self, started: list[Component], recovering: bool, echo: Echo) -> None:
        """After a failed `up`: stop what it started, except, when it was recovering a
        running stack, what answers its health check (a restarted broker the running
        worker and engines already use)."""
        for comp in reversed(started):
            if recovering and _answers(comp):
                echo(f"  {comp.name:<10} kept running (healthy; up failed further on)")
                continue
            echo(f"  {comp.name:<10} stopping (up failed)")
            comp.process.stop()

    def _preflight(self, echo: Echo) -> None:
        if not jars_ready(self.settings):
            echo("  jars       resolving Kafka, Connect and Debezium with Maven (first run only)")
            ensure_jars(self.settings)
            echo(f"  jars       resolved into {self.settings.jars_dir}")
        if self.settings.stack.avro:
            if not avro_jars_ready(self.settings):
                echo("  jars       resolving the Avro converter with Maven (first avro run only)")
                ensure_avro_jars(self.settings)
                echo(f"  jars       resolved into {self.settings.jars_dir / 'avro'}")
            if not registry_ready(self.settings):
                echo("  registry   fetching the schema registry with Maven (first avro run only)")
                ensure_registry(self.settings)
                echo(f"  registry   unpacked into {self.settings.jars_dir / 'registry'}")
        check_java(self.settings)
        self.postgres.bin_dir()
        for comp in self.components:
            ports = [comp.port]
            if comp is self.kafka:
                ports.append(self.settings.stack.kafka_controller_port)
            if comp.process.pid() is None:
                for port in ports:
                    if port_in_use(port) and not self._released(comp, port, echo):
                        raise StackError(
                            comp.name,
                            f"port {port} on 127.0.0.1 is already in use by another program",
                            fix="stop that program, or pick another port with the matching "
                            "CHANGEFOLD_*_PORT variable (see `changefold stack --help`)",
                        )

    def _released(self, comp: Component, port: int, echo: Echo) -> bool:
        """A server just killed (a crash, a test) can hold its port for a few seconds
        more while its threads exit: wait that long before calling the port taken."""
        echo(f"  {comp.name:<10} port {port} still in use; waiting for it to be released")
        released, _ = wait_until(lambda: not port_in_use(port), timeout_s=PORT_RELEASE_S)
        return released

    def _start(self, comp: Component, echo: Echo) -> bool:
        pid = comp.process.pid()
        if pid is not None:
            echo(f"  {comp.name:<10} already running (pid {pid}, port {comp.port})")
            if comp is self.connect:
                stale = self.connect.stale_settings()
                if stale:
                    echo(
                        f"  {comp.name:<10} started with older settings; missing "
                        f"{', '.join(stale)} until `changefold stack down` and `up`"
                    )
            return False
        pid = comp.start()
        echo(f"  {comp.name:<10} started (pid {pid}, port {comp.port}), waiting for health")
        return True

    def _await(self, comp: Component, echo: Echo) -> None:
        t0 = time.monotonic()
        pid = comp.process.pid()
        timeout_s = self.settings.stack.startup_timeout_s

        def progress(waited_s: float, last_error: str) -> None:
            echo(
                f"  {comp.name:<10} waiting for health ({waited_s:.0f} s of {timeout_s:.0f} s"
                + (f"; last check: {last_error[:160]}" if last_error else "")
                + ")"
            )

        ok, last_error = wait_until(
            comp.healthy,
            timeout_s=timeout_s,
            while_alive=lambda: pid is not None and comp.process.alive(pid),
            progress=progress,
        )
        if not ok:
            died = pid is None or not comp.process.alive(pid)
            problem = (
                "exited during startup"
                if died
                else f"did not become healthy within {self.settings.stack.startup_timeout_s:.0f} s"
            )
            raise StackError(
                comp.name,
                problem,
                seen=(f"last health check: {last_error}\n" if last_error else "")
                + f"last lines of {comp.process.log_file}:\n{comp.process.tail()}",
                fix="read the log lines above; after fixing, `changefold stack up` starts again "
                "from where it stopped (raise CHANGEFOLD_STARTUP_TIMEOUT_S on a slow machine)",
            )
        echo(f"  {comp.name:<10} healthy ({time.monotonic() - t0:.1f} s)")

    def _register_connectors(self, echo: Echo) -> None:
        specs = load_connector_specs(self.settings)
        for spec in specs:
            action = self.connect.register(spec, timeout_s=self.settings.stack.startup_timeout_s)
            echo(f"  connector  {spec.name}: {action}")
        took = self.connect.wait_all_running(
            specs,
            timeout_s=self.settings.stack.startup_timeout_s,
            progress=lambda line: echo(f"  connector  {line}"),
        )
        for spec in specs:
            echo(f"  connector  {spec.name}: RUNNING ({took[spec.name]:.1f} s)")

    # -- down ----------------------------------------------------------------------------

    def down(self, purge: bool = False, echo: Echo = print) -> None:
        """Stop Connect, then the registry, Kafka and Postgres; `purge` also deletes their
        data. A registry left running by a stack started with format=avro is stopped
        whatever the format now."""
        comps = self.components
        if self.registry not in comps and self.registry.process.pid() is not None:
            comps = [self.postgres, self.kafka, self.registry, self.connect]
        for comp in reversed(comps):
            if comp.process.stop(timeout_s=60.0):
                echo(f"  {comp.name:<10} stopped")
            else:
                echo(f"  {comp.name:<10} not running")
        if purge:
            home = self.settings.home
            for sub in ("postgres", "kafka", "registry", "connect", "run"):
                path = home / sub
                if path.exists() and path != self.settings.jars_dir:
                    shutil.rmtree(path)
            echo(f"  purged data under {home} (resolved jars kept)")

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Each component's pid, port and health; each connector's and task's state and
        whether it is healthy, which follows its source: a connector is healthy when it
        and its tasks are RUNNING, its database answers and its replication slot is in
        use (Connect goes on reporting RUNNING while a task retries a database that is
        down); the replication slots and the WAL they retain."""
        out: dict[str, Any] = {"components": [], "connectors": [], "slots": []}
        for comp in self.components:
            pid = comp.process.pid()
            out["components"].append(
                {
                    "name": comp.name,
                    "pid": pid,
                    "port": comp.port,
                    "running": pid is not None,
                    "healthy": pid is not None and _answers(comp),
                    "log": str(comp.process.log_file),
                }
            )
        health = {c["name"]: c["healthy"] for c in out["components"]}
        if health["connect"]:
            for spec in load_connector_specs(self.settings):
                out["connectors"].append(self._connector_status(spec))
        if health["postgres"]:
            out["slots"] = self.postgres.slots()
        out["healthy"] = all(health.values()) and all(c["healthy"] for c in out["connectors"])
        return out

    def _connector_status(self, spec: ConnectorSpec) -> dict[str, Any]:
        st = self.connect.connector_status(spec.name)
        tasks = (st or {}).get("tasks", [])
        entry: dict[str, Any] = {
            "name": spec.name,
            "state": st["connector"]["state"] if st else "NOT REGISTERED",
            "tasks": [
                {"id": t["id"], "state": t["state"]}
                | ({"trace": trace_summary(t["trace"])} if t.get("trace") else {})
                for t in tasks
            ],
        }
        source = source_check(self.settings, spec)
        entry["source"] = source
        entry["problem"] = _problem(st, source)
        entry["healthy"] = entry["problem"] is None
        return entry


def _answers(comp: Component) -> bool:
    try:
        return comp.healthy()
    except Exception as exc:
        log.debug("%s health check failed: %s", comp.name, exc)
        return False


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def trace_summary(trace: str) -> str:
    """A Connect trace's first line and, when it has one, its root cause (the last
    "Caused by:" line): the first line of a failed task's trace is often only Connect's
    "Tolerance exceeded in error handler", the reason (say the schema registry refusing
    an incompatible schema) is in its causes."""
    first = _first_line(trace)
    causes = [line.strip() for line in trace.splitlines() if line.startswith("Caused by:")]
    if not causes:
        return first
    return f"{first}; {causes[-1][:300]}"


_PLACEHOLDER = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def source_check(settings: Settings, spec: ConnectorSpec) -> dict[str, Any]:
    """Does the connector's source database answer, and is its replication slot in use?

    The address is the connector's own (database.hostname, ...), with the ${env:NAME}
    placeholders the worker resolves filled in the same way.
    """
    env = {**os.environ, **settings.connector_env()}

    def value(key: str, default: str = "") -> str:
        raw = spec.config.get(key, default)
        return _PLACEHOLDER.sub(lambda m: env.get(m.group(1), ""), raw)

    host, port, db = (
        value("database.hostname"),
        value("database.port", "5432"),
        value("database.dbname"),
    )
    slot = value("slot.name", "debezium")
    out: dict[str, Any] = {"database": f"{host}:{port}/{db}", "slot": slot}
    try:
        with psycopg.connect(
            host=host,
            port=port,
            dbname=db,
            user=value("database.user"),
            password=value("database.password"),
            connect_timeout=3,
        ) as conn:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
    except psycopg.Error as exc:
        out.update(answers=False, error=_first_line(str(exc)) or type(exc).__name__)
        return out
    out.update(answers=True, slot_exists=row is not None, slot_active=bool(row and row[0]))
    return out


def _problem(status: dict[str, Any] | None, source: dict[str, Any]) -> str | None:
    """Why a connector is not healthy, or None."""
    if status is None:
        return "not registered"
    if status["connector"]["state"] != "RUNNING":
        trace = trace_summary(status["connector"].get("trace", ""))
        return f"connector {status['connector']['state']}" + (f": {trace}" if trace else "")
    tasks = status.get("tasks") or []
    if not tasks:
        return "no task assigned yet"
    for t in tasks:
        if t["state"] != "RUNNING":
            trace = trace_summary(t.get("trace", ""))
            return f"task {t['id']} {t['state']}" + (f": {trace}" if trace else "")
    if not source["answers"]:
        return f"its database {source['database']} does not answer: {source['error']}"
    if not source["slot_exists"]:
        return f"its replication slot {source['slot']} does not exist in {source['database']}"
    if not source["slot_active"]:
        return (
            f"its replication slot {source['slot']} is not in use: the task is not reading "
            "changes (it may be reconnecting to the database)"
        )
    return None
