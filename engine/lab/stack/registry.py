"""The schema registry of format=avro: Apicurio Registry, a Quarkus app run as a JVM.

Connect's Avro converter registers each topic's key and value schema in it
(subjects `<topic>-key` / `<topic>-value`) and writes the Confluent wire format:
magic byte 0, the 4-byte id of the schema's content, the Avro binary. The engine
reads the schemas by id from its Confluent-compatible API (engine.decode.avro).

Storage is H2 on a file under <home>/registry/, so ids survive a restart of the
registry: the topics keep messages that name them (`stack down --purge` removes
both). Health is /health/ready on the HTTP port.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from engine.core.config import Settings
from engine.lab.stack.jars import registry_runner
from engine.lab.stack.process import ManagedProcess

#: Path of the registry's Confluent-compatible API.
CCOMPAT = "/apis/ccompat/v7"
#: Path of the registry's own API, which the converter uses.
NATIVE = "/apis/registry/v2"
#: Connect's converter class for format=avro.
AVRO_CONVERTER = "io.apicurio.registry.utils.converter.AvroConverter"


def converter_settings(settings: Settings) -> dict[str, str]:
    """Connector (or worker) settings that make Connect write Confluent-framed Avro with
    the schemas registered in the stack's registry, for keys and values alike."""
    url = f"http://127.0.0.1:{settings.stack.registry_port}{NATIVE}"
    out: dict[str, str] = {}
    for side in ("key", "value"):
        prefix = f"{side}.converter"
        out.update(
            {
                prefix: AVRO_CONVERTER,
                f"{prefix}.apicurio.registry.url": url,
                f"{prefix}.apicurio.registry.auto-register": "true",
                f"{prefix}.apicurio.registry.find-latest": "true",
                # The id in the message (the default puts it in Kafka headers) ...
                f"{prefix}.apicurio.registry.headers.enabled": "false",
                # ... as 4 bytes after a 0 byte: the Confluent framing ...
                f"{prefix}.apicurio.registry.id-handler": (
                    "io.apicurio.registry.serde.Legacy4ByteIdHandler"
                ),
                # ... naming the content id, which is what /apis/ccompat serves ids as.
                f"{prefix}.apicurio.registry.use-id": "contentId",
            }
        )
    return out


class Registry:
    name = "registry"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "registry"
        self.marker = f"-Dchangefold.registry={self.root}"
        self.process = ManagedProcess("registry", settings.home / "run", marker=self.marker)

    @property
    def port(self) -> int:
        return self.settings.stack.registry_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, runner: Path) -> list[str]:
        return [
            self.settings.stack.java,
            "-Xms128m",
            "-Xmx512m",
            "-XX:+ExitOnOutOfMemoryError",
            self.marker,
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self.port}",
            # Keep the schemas (and so their ids) across restarts of the registry.
            f"-Dquarkus.datasource.jdbc.url=jdbc:h2:file:{self.root / 'data' / 'registry'}",
            # Its pool opens 20 connections at start and gives up on one after 5 s: a
            # restart on a loaded machine (H2 reopening its file) failed so ("Acquisition
            # timeout while waiting for new connection") and the registry exited. One
            # local client needs a few connections; wait for them as long as startup may.
            "-Dquarkus.datasource.jdbc.initial-size=2",
            "-Dquarkus.datasource.jdbc.min-size=2",
            "-Dquarkus.datasource.jdbc.acquisition-timeout=PT120S",
            "-jar",
            str(runner),
        ]

    def start(self) -> int:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        cmd = self.command(registry_runner(self.settings))
        return self.process.start(cmd, env=dict(os.environ), cwd=self.root)

    def healthy(self) -> bool:
        with httpx.Client(base_url=self.url, timeout=5.0) as http:
            return http.get("/health/ready").status_code == 200

    # -- what it holds (changefold schemas) --------------------------------------------

    def subjects(self) -> list[dict[str, Any]]:
        """Every subject with its versions (id of each) and compatibility mode."""
        return list_subjects(self.url)


def list_subjects(base_url: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Subjects of a registry's Confluent-compatible API: name, versions with their
    schema id, and the compatibility mode (the subject's own, else the global one)."""
    out: list[dict[str, Any]] = []
    with httpx.Client(base_url=base_url + CCOMPAT, timeout=timeout_s) as http:
        glob = http.get("/config")
        glob.raise_for_status()
        default = glob.json().get("compatibilityLevel") or glob.json().get("compatibility")
        names = http.get("/subjects")
        names.raise_for_status()
        for subject in sorted(names.json()):
            versions = []
            listed = http.get(f"/subjects/{subject}/versions")
            listed.raise_for_status()
            for version in listed.json():
                got = http.get(f"/subjects/{subject}/versions/{version}")
                got.raise_for_status()
                versions.append({"version": version, "id": got.json().get("id")})
            own = http.get(f"/config/{subject}")
            mode = default
            if own.status_code == 200:
                body = own.json()
                mode = body.get("compatibilityLevel") or body.get("compatibility") or default
            out.append({"subject": subject, "versions": versions, "compatibility": mode})
    return out
