"""A single-node Apache Kafka broker in KRaft combined (broker + controller) mode."""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid

from kafka import KafkaAdminClient

from engine.core.config import Settings
from engine.core.errors import StackError
from engine.lab.stack.jvm import java_command, write_log_config, write_properties
from engine.lab.stack.process import ManagedProcess, quiet_logger

log = logging.getLogger(__name__)

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


class Kafka:
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "kafka"
        self.data = self.root / "data"
        self.props = self.root / "server.properties"
        self.process = ManagedProcess("kafka", settings.home / "run", marker=str(self.props))

    @property
    def port(self) -> int:
        return self.settings.stack.kafka_port

    def properties(self) -> dict[str, str | int]:
        s = self.settings.stack
        return {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{s.kafka_port},"
            f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data),
            "num.partitions": s.topic_partitions,
            "default.replication.factor": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # Topics are created deliberately (by Connect, with the connector's partition
            # count), never as a side effect of a consumer subscribing to a wrong name.
            "auto.create.topics.enable": "false",
            # History is kept for replay: time- and size-unbounded by default (see README).
            "log.retention.ms": -1,
            "log.retention.bytes": -1,
        }

    def _format(self) -> None:
        """Format the KRaft storage on first start (meta.properties marks it done)."""
        if (self.data / "meta.properties").is_file():
            return
        cluster_id = new_cluster_id()
        cmd = java_command(
            self.settings,
            main_class=STORAGE_TOOL,
            args=["format", "-t", cluster_id, "-c", str(self.props)],
            heap="256m",
            log_config=self._log_config(),
            marker="kafka-storage",
        )
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(
                self.name,
                f"formatting the KRaft storage in {self.data} failed (exit {result.returncode})",
                seen=(result.stdout + result.stderr).strip()[-2000:],
                fix="if the folder holds data of another cluster, `changefold stack down --purge` "
                "removes it",
            )

    def _log_config(self):
        return write_log_config(self.root / "log4j2.properties")

    def start(self) -> int:
        write_properties(self.props, self.properties())
        self._format()
        cmd = java_command(
            self.settings,
            main_class=MAIN_CLASS,
            args=[str(self.props)],
            heap="768m",
            log_config=self._log_config(),
            marker=str(self.props),
        )
        return self.process.start(cmd)

    def healthy(self) -> bool:
        # The client logs every refused connection at ERROR while the broker boots.
        with quiet_logger("kafka"):
            admin = KafkaAdminClient(
                bootstrap_servers=self.settings.stack.bootstrap_servers,
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
                client_id="changefold-health",
            )
            try:
                admin.describe_cluster()
            finally:
                admin.close()
        return True


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64url of a UUID) that does not start with "-":
    the storage tool would read such an id as an option and refuse to format."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
