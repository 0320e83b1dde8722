"""Bring the whole local stack up, down, and report its status.

Order: Postgres and Kafka start side by side; Connect starts once Kafka is healthy,
then every connectors/*.json is registered and must reach RUNNING. A failing `up`
stops what it started, so nothing half-started is left running.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import Any, Protocol

from engine.core.config import Settings
from engine.core.errors import StackError
from engine.lab.stack.connect import Connect, load_connector_specs
from engine.lab.stack.jars import ensure_jars, jars_ready
from engine.lab.stack.jvm import check_java
from engine.lab.stack.kafka import Kafka
from engine.lab.stack.postgres import Postgres
from engine.lab.stack.process import ManagedProcess, port_in_use, wait_until

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


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

    @property
    def components(self) -> list[Component]:
        return [self.postgres, self.kafka, self.connect]

    # -- up ----------------------------------------------------------------------------

    def up(self, echo: Echo = print) -> float:
        """Start whatever is not running; idempotent. Returns the seconds it took."""
        t0 = time.monotonic()
        started: list[Component] = []
        try:
            self._preflight(echo)
            first: list[Component] = [self.postgres, self.kafka]  # side by side
            for comp in first:
                if self._start(comp, echo):
                    started.append(comp)
            self._await(self.postgres, echo)
            loaded = self.postgres.ensure_database()
            if loaded:
                echo(f"  postgres   loaded {', '.join(loaded)}")
            self._await(self.kafka, echo)
            if self._start(self.connect, echo):
                started.append(self.connect)
            self._await(self.connect, echo)
            self._register_connectors(echo)
        except BaseException:
            for done in reversed(started):
                echo(f"  {done.name:<10} stopping (up failed)")
                done.process.stop()
            raise
        elapsed = time.monotonic() - t0
        echo(f"stack is up in {elapsed:.1f} s")
        return elapsed

    def _preflight(self, echo: Echo) -> None:
        if not jars_ready(self.settings):
            echo("  jars       resolving Kafka, Connect and Debezium with Maven (first run only)")
            ensure_jars(self.settings)
            echo(f"  jars       resolved into {self.settings.jars_dir}")
        check_java(self.settings)
        self.postgres.bin_dir()
        for comp in self.components:
            ports = [comp.port]
            if comp is self.kafka:
                ports.append(self.settings.stack.kafka_controller_port)
            if comp.process.pid() is None:
                for port in ports:
                    if port_in_use(port):
                        raise StackError(
                            comp.name,
                            f"port {port} on 127.0.0.1 is already in use by another program",
                            fix="stop that program, or pick another port with the matching "
                            "CHANGEFOLD_*_PORT variable (see `changefold stack --help`)",
                        )

    def _start(self, comp: Component, echo: Echo) -> bool:
        pid = comp.process.pid()
        if pid is not None:
            echo(f"  {comp.name:<10} already running (pid {pid}, port {comp.port})")
            return False
        pid = comp.start()
        echo(f"  {comp.name:<10} started (pid {pid}, port {comp.port}), waiting for health")
        return True

    def _await(self, comp: Component, echo: Echo) -> None:
        t0 = time.monotonic()
        pid = comp.process.pid()
        ok, last_error = wait_until(
            comp.healthy,
            timeout_s=self.settings.stack.startup_timeout_s,
            while_alive=lambda: pid is not None and comp.process.alive(pid),
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
        for spec in specs:
            t0 = time.monotonic()
            self.connect.wait_running(spec, timeout_s=self.settings.stack.startup_timeout_s)
            echo(f"  connector  {spec.name}: RUNNING ({time.monotonic() - t0:.1f} s)")

    # -- down ----------------------------------------------------------------------------

    def down(self, purge: bool = False, echo: Echo = print) -> None:
        """Stop Connect, then Kafka, then Postgres; `purge` also deletes their data."""
        for comp in reversed(self.components):
            if comp.process.stop(timeout_s=60.0):
                echo(f"  {comp.name:<10} stopped")
            else:
                echo(f"  {comp.name:<10} not running")
        if purge:
            home = self.settings.home
            for sub in ("postgres", "kafka", "connect", "run"):
                path = home / sub
                if path.exists() and path != self.settings.jars_dir:
                    shutil.rmtree(path)
            echo(f"  purged data under {home} (resolved jars kept)")

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"components": [], "connectors": [], "slots": []}
        for comp in self.components:
            pid = comp.process.pid()
            healthy = False
            if pid is not None:
                try:
                    healthy = comp.healthy()
                except Exception as exc:
                    log.debug("%s health check failed: %s", comp.name, exc)
            out["components"].append(
                {
                    "name": comp.name,
                    "pid": pid,
                    "port": comp.port,
                    "running": pid is not None,
                    "healthy": healthy,
                    "log": str(comp.process.log_file),
                }
            )
        health = {c["name"]: c["healthy"] for c in out["components"]}
        if health["connect"]:
            for spec in load_connector_specs(self.settings):
                st = self.connect.connector_status(spec.name)
                out["connectors"].append(
                    {
                        "name": spec.name,
                        "state": st["connector"]["state"] if st else "NOT REGISTERED",
                        "tasks": [
                            {"id": t["id"], "state": t["state"]}
                            for t in (st or {}).get("tasks", [])
                        ],
                    }
                )
        if health["postgres"]:
            out["slots"] = self.postgres.slots()
        out["healthy"] = all(health.values()) and all(
            c["state"] == "RUNNING" and all(t["state"] == "RUNNING" for t in c["tasks"])
            for c in out["connectors"]
        )
        return out
