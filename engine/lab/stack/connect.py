"""A Kafka Connect distributed worker with Debezium, and its connectors (connectors/*.json)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.core.config import Settings
from engine.core.errors import StackError
from engine.lab.stack.jars import avro_jars_dir
from engine.lab.stack.jvm import java_command, write_log_config, write_properties
from engine.lab.stack.process import ManagedProcess
from engine.lab.stack.registry import converter_settings

log = logging.getLogger(__name__)

MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectDistributed"
GROUP_ID = "changefold-connect"
#: How long a restarted connector may still report FAILED before the wait gives up.
RESTART_GRACE_S = 10.0


@dataclass(frozen=True)
class ConnectorSpec:
    """One connectors/<name>.json file: {"name": ..., "config": {...}}."""

    name: str
    config: dict[str, str]
    path: Path

    @property
    def connector_class(self) -> str:
        return self.config["connector.class"]


#: Connector settings that choose the converters (replaced with format=avro).
_CONVERTER_KEYS = ("key.converter", "value.converter")


def load_connector_specs(settings: Settings) -> list[ConnectorSpec]:
    """connectors/*.json; with format=avro, their converter settings are replaced by
    the Avro converter's (engine.lab.stack.registry.converter_settings)."""
    specs = []
    for path in sorted(settings.connectors_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            spec = ConnectorSpec(name=doc["name"], config=dict(doc["config"]), path=path)
            spec.connector_class  # noqa: B018 - presence check
            if settings.stack.avro:
                spec = ConnectorSpec(spec.name, with_format(settings, spec.config), path)
        except (ValueError, KeyError, TypeError) as exc:
            raise StackError(
                "connect",
                f"{path} is not a connector file ({exc!r})",
                fix='it must be JSON of the form {"name": "...", "config": {"connector.class": '
                '"...", ...}}',
            ) from exc
        specs.append(spec)
    return specs


def with_format(settings: Settings, config: Mapping[str, str]) -> dict[str, str]:
    """A connector's config with the converters of the settings' format (format=json:
    unchanged)."""
    if not settings.stack.avro:
        return dict(config)
    kept = {k: v for k, v in config.items() if not k.startswith(_CONVERTER_KEYS)}
    return kept | converter_settings(settings)


class Connect:
    name = "connect"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "connect"
        self.props = self.root / "worker.properties"
        self.process = ManagedProcess("connect", settings.home / "run", marker=str(self.props))

    @property
    def port(self) -> int:
        return self.settings.stack.connect_port

    def properties(self) -> dict[str, str | int]:
        s = self.settings.stack
        props: dict[str, str | int] = {
            "bootstrap.servers": s.bootstrap_servers,
            "group.id": GROUP_ID,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "true",
            "value.converter.schemas.enable": "true",
            "config.storage.topic": "changefold-connect-configs",
            "offset.storage.topic": "changefold-connect-offsets",
            "status.storage.topic": "changefold-connect-status",
            "config.storage.replication.factor": 1,
            "offset.storage.replication.factor": 1,
            "status.storage.replication.factor": 1,
            "offset.storage.partitions": 5,
            "status.storage.partitions": 1,
            # Source offsets (the replication slot position) are flushed every second, so
            # a crashed worker re-sends at most about a second of changes.
            "offset.flush.interval.ms": 1000,
            "listeners": f"http://127.0.0.1:{s.connect_port}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": s.connect_port,
            "topic.creation.enable": "true",
            # Every plugin jar on the classpath ships a service manifest: skip the slow scan.
            "plugin.discovery": "service_load",
            "config.providers": "env",
            "config.providers.env.class": (
                "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
            ),
            # -- recovery without a person (one worker, one broker) --
            # When the broker restarts, the worker rejoins its group and the leader (itself)
            # counts the connectors it ran as "lost". By default it then waits up to 5
            # minutes for the departed worker to return, and the connectors stay
            # UNASSIGNED all that time. This stack has one worker, none other can come
            # back: 0 reassigns lost connectors and tasks in the rebalance that finds them.
            "scheduled.rebalance.max.delay.ms": 0,
            # A worker that cannot read its config topic to the end within
            # worker.sync.timeout.ms (3 s, kept) leaves the group and, by default, stays
            # out for 5 minutes. Right after a broker restart that read can time out once;
            # rejoin after 2 s instead.
            "worker.unsync.backoff.ms": 2000,
            # The worker's own clients and the producers of the source tasks reconnect
            # with the clients' defaults (reconnect.backoff.max.ms and
            # retry.backoff.max.ms: 1 s), and Connect's task producers retry a send
            # without a delivery deadline, so no change is lost and none needs tuning here.
        }
        if s.avro:  # the connectors' defaults; load_connector_specs sets them on each
            props.update(converter_settings(self.settings))
        return props

    def start(self) -> int:
        write_properties(self.props, self.properties())
        cmd = java_command(
            self.settings,
            main_class=MAIN_CLASS,
            args=[str(self.props)],
            heap="1g",
            log_config=write_log_config(self.root / "log4j2.properties"),
            marker=str(self.props),
            classpath=avro_jars_dir(self.settings) if self.settings.stack.avro else None,
        )
        env = {**os.environ, **self.settings.connector_env()}
        return self.process.start(cmd, env=env)

    # -- REST ----------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.settings.stack.connect_url, timeout=10.0)

    def healthy(self) -> bool:
        """/health answers 200 once the worker has joined its group and read its topics."""
        with self._client() as http:
            return http.get("/health").status_code == 200

    def register(self, spec: ConnectorSpec, timeout_s: float) -> str:
        """Validate, then create or update the connector. Returns 'created' or 'updated'."""
        deadline = time.monotonic() + timeout_s
        with self._client() as http:
            self._validate(http, spec, deadline)
            while True:
                resp = _call(
                    http.put, f"/connectors/{spec.name}/config", deadline, json=spec.config
                )
                if resp.status_code in (200, 201):
                    return "created" if resp.status_code == 201 else "updated"
                # 409: the worker group is rebalancing; 5xx: not ready yet. Both pass.
                if resp.status_code not in (409, 500, 503) or time.monotonic() > deadline:
                    raise StackError(
                        "connect",
                        f"Kafka Connect refused connector {spec.name!r} ({spec.path}): "
                        f"HTTP {resp.status_code}",
                        seen=_message(resp),
                        fix="fix the connector file and run `changefold stack up` again",
                    )
                time.sleep(0.5)

    def _validate(self, http: httpx.Client, spec: ConnectorSpec, deadline: float) -> None:
        while True:
            resp = _call(
                http.put,
                f"/connector-plugins/{spec.connector_class}/config/validate",
                deadline,
                json={"name": spec.name, **spec.config},
            )
            if resp.status_code == 200:
                break
            if resp.status_code not in (409, 500, 503) or time.monotonic() > deadline:
                raise StackError(
                    "connect",
                    f"could not validate connector {spec.name!r}: HTTP {resp.status_code}",
                    seen=_message(resp),
                    fix="check that the connector class is on the worker's classpath "
                    "(`changefold stack up` resolves it from connectors/pom.xml)",
                )
            time.sleep(0.5)
        values = [item.get("value") or {} for item in resp.json().get("configs", [])]
        errors = [f"{v['name']}: {'; '.join(v['errors'])}" for v in values if v.get("errors")]
        if errors:
            raise StackError(
                "connect",
                f"Kafka Connect rejected the configuration of connector {spec.name!r} "
                f"({spec.path})",
                seen="\n".join(errors),
                fix="correct those settings in the connector file (or the CHANGEFOLD_PG_* "
                "settings it reads) and run `changefold stack up` again",
            )

    def connector_status(self, name: str) -> dict[str, Any] | None:
        with self._client() as http:
            resp = http.get(f"/connectors/{name}/status")
            if resp.status_code == 404:
                return None
            resp.raise_for_status()
            result: dict[str, Any] = resp.json()
            return result

    def wait_running(self, spec: ConnectorSpec, timeout_s: float) -> None:
        """Wait until the connector and all its tasks are RUNNING; fail fast on FAILED."""
        self.wait_all_running([spec], timeout_s)

    def wait_all_running(
        self,
        specs: Sequence[ConnectorSpec],
        timeout_s: float,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 10.0,
    ) -> dict[str, float]:
        """Wait until every connector and all its tasks are RUNNING, within one deadline.

        A failed connector or task is restarted once, then fails the wait with its trace.
        `progress` gets a line every `progress_every_s` while some are not RUNNING yet
        (after a broker restart they are UNASSIGNED until the worker's group rebalances).
        Returns the seconds each connector took.
        """
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        next_progress = t0 + progress_every_s
        last: dict[str, dict[str, Any] | None] = {spec.name: None for spec in specs}
        took: dict[str, float] = {}
        # Connector -> when its failed tasks were restarted (once; a restart takes a while).
        restarted: dict[str, float] = {}
        while True:
            for spec in specs:
                if spec.name in took:
                    continue
                try:
                    status = self.connector_status(spec.name)
                except httpx.HTTPError:
                    status = None
                last[spec.name] = status
                if status is None:
                    continue
                failed = [t for t in status.get("tasks", []) if t["state"] == "FAILED"]
                if status["connector"]["state"] == "FAILED" or failed:
                    if spec.name not in restarted:
                        # A task that failed earlier (say Postgres was down) gets one restart.
                        log.info("connector %s has failed tasks; restarting them once", spec.name)
                        self.restart_failed(spec.name)
                        restarted[spec.name] = time.monotonic()
                        continue
                    if time.monotonic() - restarted[spec.name] < RESTART_GRACE_S:
                        continue
                    trace = (failed[0] if failed else status["connector"]).get("trace", "")
                    raise StackError(
                        "connect",
                        f"connector {spec.name!r} FAILED",
                        seen="\n".join(trace.splitlines()[:12]),
                        fix="see the worker log (.stack/run/connect.log) for the whole trace",
                    )
                if running(status):
                    took[spec.name] = time.monotonic() - t0
            if len(took) == len(specs):
                return took
            now = time.monotonic()
            if now >= deadline:
                break
            if progress is not None and now >= next_progress:
                waiting = [s.name for s in specs if s.name not in took]
                progress(
                    f"waiting for {', '.join(describe_state(n, last[n]) for n in waiting)} "
                    f"to run ({now - t0:.0f} s of {timeout_s:.0f} s)"
                )
                next_progress = now + progress_every_s
            time.sleep(0.5)
        waiting = [s.name for s in specs if s.name not in took]
        assignment = self.last_assignment()
        raise StackError(
            "connect",
            f"connector{'s' if len(waiting) > 1 else ''} {', '.join(map(repr, waiting))} did "
            f"not reach RUNNING within {timeout_s:.0f} s: "
            + "; ".join(describe_state(n, last[n]) for n in waiting),
            seen="\n".join(
                [json.dumps({n: last[n] for n in waiting}, indent=2)]
                + ([f"the worker's last assignment: {assignment}"] if assignment else [])
            ),
            fix="UNASSIGNED after a broker restart means the worker's group has not "
            "rebalanced yet (the assignment's delay= says how long it waits); a worker "
            "started with older settings keeps them until `changefold stack down` and "
            "`changefold stack up`. Otherwise see the worker log (.stack/run/connect.log); "
            "`changefold stack up` again waits once more (raise CHANGEFOLD_STARTUP_TIMEOUT_S "
            "on a slow machine)",
        )

    def last_assignment(self) -> str | None:
        """The worker's last group assignment, as its log states it (with its delay=)."""
        for line in reversed(self.process.tail(lines=400).splitlines()):
            if "got assignment" in line:
                return line[line.index("got assignment") :].strip()[:600]
        return None

    def stale_settings(self) -> list[str]:
        """Settings a running worker was started without (its worker.properties is older
        than this code): they apply once the worker is restarted."""
        try:
            text = self.props.read_text()
        except FileNotFoundError:
            return []
        have = dict(
            line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
        )
        return [
            f"{key}={value}"
            for key, value in self.properties().items()
            if have.get(key) != str(value)
        ]

    def restart_failed(self, name: str) -> None:
        with self._client() as http:
            http.post(
                f"/connectors/{name}/restart", params={"includeTasks": "true", "onlyFailed": "true"}
            )


def running(status: Mapping[str, Any]) -> bool:
    """The connector and every one of its tasks (there is at least one) are RUNNING."""
    tasks = status.get("tasks") or []
    return (
        status["connector"]["state"] == "RUNNING"
        and bool(tasks)
        and all(t["state"] == "RUNNING" for t in tasks)
    )


def describe_state(name: str, status: Mapping[str, Any] | None) -> str:
    """ "arcade UNASSIGNED (task 0 UNASSIGNED)", for progress lines and errors."""
    if status is None:
        return f"{name} (no status yet)"
    tasks = status.get("tasks") or []
    detail = ", ".join(f"task {t['id']} {t['state']}" for t in tasks) or "no task yet"
    return f"{name} {status['connector']['state']} ({detail})"


def _call(
    method: Callable[..., httpx.Response], url: str, deadline: float, **kwargs: Any
) -> httpx.Response:
    """One REST call; a worker too busy to answer in time (a loaded machine, a
    rebalance) is asked again until the deadline, then named in a StackError."""
    while True:
        try:
            return method(url, timeout=60.0, **kwargs)
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                raise StackError(
                    "connect",
                    f"the Connect REST API did not answer {url} in time ({exc!r})",
                    fix="see the worker log (.stack/run/connect.log); on a slow machine raise "
                    "CHANGEFOLD_STARTUP_TIMEOUT_S",
                ) from exc
            log.info("Connect did not answer %s yet (%s); asking again", url, exc)
            time.sleep(1.0)


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("message", resp.text))
    except ValueError:
        return resp.text[:2000]
