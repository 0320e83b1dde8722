"""One typed, frozen settings object; the only module that reads the environment.

Every setting has a default that works on a developer machine and an
environment variable (`CHANGEFOLD_*`) that overrides it. The default ports sit
away from the standard ones (5432, 9092, 8083, ...) so that the local stack can
run next to servers a user may already have.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engine.core.errors import ConfigError

ENV_PREFIX = "CHANGEFOLD_"

#: Where the project's own files (connectors/, sql/) live when running from a checkout.
PACKAGE_PROJECT_DIR = Path(__file__).resolve().parents[2]


def _default_project_dir() -> Path:
    if (PACKAGE_PROJECT_DIR / "connectors" / "pom.xml").is_file():
        return PACKAGE_PROJECT_DIR
    return Path.cwd()


@dataclass(frozen=True)
class Settings:
    """All of changefold's settings. Build it with `Settings.from_env()`."""

    #: Checkout holding connectors/ and sql/.
    project_dir: Path = field(default_factory=_default_project_dir)
    #: Runtime state of the local stack: data, logs, pid files (default <project>/.stack).
    home: Path | None = None
    #: Resolved Kafka/Connect/Debezium jars (default <project>/.stack/jars), shared by stacks.
    jars_dir: Path | None = None

    # PostgreSQL (source database)
    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_user: str = "changefold"
    pg_password: str = "changefold"
    pg_database: str = "changefold"
    #: Directory with initdb/postgres; default: found on PATH or /usr/lib/postgresql/<newest>/bin.
    pg_bin_dir: Path | None = None
    #: OS user that runs postgres when changefold runs as root (postgres refuses root).
    pg_os_user: str = "postgres"

    # Kafka broker (KRaft, combined broker + controller)
    #: Host the engine and tools reach the broker at (the local stack listens on
    #: 127.0.0.1; the engine service of compose.yaml reaches `kafka`).
    kafka_host: str = "127.0.0.1"
    kafka_port: int = 59092
    kafka_controller_port: int = 59093
    #: Partitions of each captured table's topic.
    topic_partitions: int = 3

    # Kafka Connect distributed worker (REST API)
    connect_port: int = 58083

    #: Seconds each component may take to become healthy.
    startup_timeout_s: float = 120.0
    #: Java executable (default $JAVA_HOME/bin/java, else java on PATH).
    java: str = ""
    #: Maven executable, used to resolve the jars once.
    mvn: str = "mvn"

    # Engine (`changefold run`): consumer group members folding changes into DuckDB
    #: Consumer group of the engine's members; offsets in the state are kept per group.
    group_id: str = "changefold"
    #: DuckDB state file: mirrors, offsets, dead letters, metrics
    #: (default <home>/engine/state.duckdb).
    state_path: Path | None = None
    #: Comma-separated topics to consume; empty: every table topic of the topic
    #: prefixes in connectors/*.json.
    topics: str = ""
    #: Bounds of one micro-batch: records, bytes, and how long a poll waits for data.
    batch_max_records: int = 20000
    batch_max_bytes: int = 64 * 1024 * 1024
    batch_max_wait_ms: int = 200
    #: Kafka offset commit after each DuckDB commit: "sync" (blocking) or "async".
    commit_mode: str = "sync"
    #: Consumer group members run by one engine process (they share the state file).
    workers: int = 1
    #: Batches kept in the metrics table (older ones are deleted).
    metrics_keep_batches: int = 10000
    #: A member that sends no heartbeat for this long is dropped from the group and its
    #: partitions move (also how long a restarted engine waits for a crashed one's share).
    consumer_session_timeout_ms: int = 10000

    # Read-only query API, served by the engine process (`changefold run`)
    #: Address and port of the API; loopback by default (the API has no authentication).
    api_host: str = "127.0.0.1"
    api_port: int = 58000
    #: Rows a query returns at most; longer results are cut and flagged as truncated.
    api_max_rows: int = 10000
    #: Seconds a query may run before it is interrupted.
    api_statement_timeout_s: float = 10.0
    #: Queries run at once; more wait (up to the statement timeout), so that
    #: readers cannot starve the engine's folding of CPU.
    api_max_concurrent_queries: int = 4
    #: Window of the throughput and batch-timing figures of /metrics.
    api_metrics_window_s: float = 60.0

    # Dashboards (`changefold demo` runs them; dashboards/ reads its own settings)
    #: Port of the Streamlit dashboards, on 127.0.0.1.
    dashboard_port: int = 58501

    # Derived views (sql/views/): leaderboard window and fraud rule thresholds.
    # Money is in EUR, windows in seconds of event time (the rows' own timestamps).
    #: leaderboard_window covers the scores of the last N minutes of event time.
    leaderboard_window_min: int = 60
    #: Card payments under this amount are "tiny" (card testing), not velocity.
    fraud_tiny_eur: float = 5.0
    #: velocity_burst: payments in the window >= max(min count, factor x the account's
    #: usual maximum per window over the baseline days).
    fraud_velocity_window_s: int = 600
    fraud_velocity_min_count: int = 6
    fraud_velocity_baseline_factor: float = 2.0
    fraud_baseline_days: int = 7
    #: card_testing: tiny card-not-present payments at distinct merchants in the window;
    #: a payment of at least the large amount right after them joins the alert.
    fraud_card_testing_window_s: int = 900
    fraud_card_testing_min_count: int = 4
    fraud_card_testing_min_merchants: int = 3
    fraud_card_testing_large_eur: float = 100.0
    #: impossible_travel: card present in two countries faster apart than max km/h, the
    #: distance between country centre points taken slack km shorter (borders).
    fraud_travel_max_kmh: float = 1000.0
    fraud_travel_slack_km: float = 500.0
    #: account_takeover: transfers out within the window from an untrusted device
    #: registered abroad at most device_age seconds before, moving at least min_share
    #: of the balance.
    fraud_takeover_window_s: int = 7200
    fraud_takeover_device_age_s: int = 86400
    fraud_takeover_min_share: float = 0.25
    #: structuring: at least min_count cash deposits in [threshold x (1 - band),
    #: threshold) within the window.
    fraud_structuring_threshold_eur: float = 10000.0
    fraud_structuring_band: float = 0.10
    fraud_structuring_min_count: int = 2
    fraud_structuring_window_s: int = 172800
    #: new_account_large_transfer: an account at most age_days old receives at least
    #: min_inflow from outside the customer and moves move_share of it on within the window.
    fraud_new_account_age_days: int = 7
    fraud_new_account_min_inflow_eur: float = 5000.0
    fraud_new_account_move_share: float = 0.8
    fraud_new_account_move_window_s: int = 10800

    def __post_init__(self) -> None:
        # Fill the derived defaults; frozen, so through object.__setattr__.
        home = self.home or self.project_dir / ".stack"
        object.__setattr__(self, "home", Path(home))
        object.__setattr__(
            self, "jars_dir", Path(self.jars_dir or self.project_dir / ".stack" / "jars")
        )
        if not self.java:
            java_home = os.environ.get("JAVA_HOME")
            java = (
                str(Path(java_home) / "bin" / "java")
                if java_home
                else (shutil.which("java") or "java")
            )
            object.__setattr__(self, "java", java)
        for name in (
            "pg_port",
            "kafka_port",
            "kafka_controller_port",
            "connect_port",
            "api_port",
            "dashboard_port",
        ):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ConfigError(
                    f"{_env_name(name)}={port} is not a TCP port; use a number from 1 to 65535"
                )
        object.__setattr__(
            self, "state_path", Path(self.state_path or Path(home) / "engine" / "state.duckdb")
        )
        if self.commit_mode not in ("sync", "async"):
            raise ConfigError(
                f"{_env_name('commit_mode')}={self.commit_mode!r}: use 'sync' or 'async'"
            )
        for name in ("workers", "batch_max_records", "batch_max_bytes", "batch_max_wait_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_env_name(name)}={getattr(self, name)}: must be at least 1")
        for name in ("api_max_rows", "api_max_concurrent_queries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_env_name(name)}={getattr(self, name)}: must be at least 1")
        for name in ("api_statement_timeout_s", "api_metrics_window_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"{_env_name(name)}={getattr(self, name)}: must be a positive number of seconds"
                )
        for f in fields(self):
            if f.name.startswith(("fraud_", "leaderboard_")) and not getattr(self, f.name) > 0:
                raise ConfigError(
                    f"{_env_name(f.name)}={getattr(self, f.name)}: must be more than 0"
                )
        for name in ("fraud_structuring_band", "fraud_takeover_min_share"):
            if not getattr(self, name) < 1:
                raise ConfigError(f"{_env_name(name)}={getattr(self, name)}: must be below 1")
        if self.topic_partitions < 1:
            raise ConfigError(
                f"{_env_name('topic_partitions')}={self.topic_partitions}: a topic needs at "
                "least 1 partition"
            )

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `CHANGEFOLD_*` variables, then explicit keyword overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(_env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    # -- derived values ---------------------------------------------------------------

    @property
    def stack_home(self) -> Path:
        assert self.home is not None
        return self.home

    @property
    def jars(self) -> Path:
        assert self.jars_dir is not None
        return self.jars_dir

    @property
    def views_sql_dir(self) -> Path:
        """Derived views (one file per view) and their state tables."""
        return self.project_dir / "sql" / "views"

    @property
    def connectors_dir(self) -> Path:
        return self.project_dir / "connectors"

    @property
    def source_sql_dir(self) -> Path:
        return self.project_dir / "sql" / "source"

    @property
    def state_sql_dir(self) -> Path:
        """Migrations of the engine's internal DuckDB tables."""
        return self.project_dir / "sql" / "state"

    @property
    def state_file(self) -> Path:
        assert self.state_path is not None
        return self.state_path

    @property
    def topic_list(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.topics.split(",") if t.strip())

    @property
    def bootstrap_servers(self) -> str:
        host = f"[{self.kafka_host}]" if ":" in self.kafka_host else self.kafka_host
        return f"{host}:{self.kafka_port}"

    @property
    def api_url(self) -> str:
        """Base URL of the engine's query API."""
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}"

    def pg_conninfo(self, database: str | None = None) -> str:
        db = database or self.pg_database
        return (
            f"host={self.pg_host} port={self.pg_port} user={self.pg_user} "
            f"password={self.pg_password} dbname={db} connect_timeout=3"
        )

    def child_env(self, *names: str) -> dict[str, str]:
        """This process's environment plus these settings as `CHANGEFOLD_*` variables, for
        a child process that must use the same home and servers (always passed) and
        the fields named in `names`."""
        env = dict(os.environ)
        for name in (*_SHARED_WITH_CHILDREN, *names):
            env[_env_name(name)] = str(getattr(self, name))
        return env

    def connector_env(self) -> dict[str, str]:
        """Variables that connectors/*.json reference as ${env:NAME}.

        The Connect worker resolves them with Kafka's EnvVarConfigProvider, so the
        same JSON files serve the local stack and compose.yaml.
        """
        return {
            _env_name("pg_host"): self.pg_host,
            _env_name("pg_port"): str(self.pg_port),
            _env_name("pg_user"): self.pg_user,
            _env_name("pg_password"): self.pg_password,
            _env_name("pg_database"): self.pg_database,
            _env_name("topic_partitions"): str(self.topic_partitions),
            _env_name("topic_replication_factor"): "1",
        }


#: Settings every child process gets from its parent: where the stack lives and runs.
_SHARED_WITH_CHILDREN = (
    "home", "pg_host", "pg_port", "kafka_host", "kafka_port", "kafka_controller_port",
    "connect_port",
)  # fmt: skip


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _parse(name: str, type_: Any, raw: str) -> Any:
    kind = str(type_)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if "Path" in kind:
            return Path(raw).expanduser()
        return raw
    except ValueError:
        expected = "a whole number" if kind == "int" else "a number"
        raise ConfigError(
            f"{_env_name(name)}={raw!r} is not {expected}; set it to {expected} or unset it "
            "to use the default"
        ) from None
