"""One typed, frozen settings object; the only module that reads the environment.

Every setting has a default that works on a developer machine and an
environment variable (`CHANGEFOLD_*`) that overrides it. The default ports sit
away from the standard ones (5432, 9092, 8083, ...) so that the local stack can
run next to servers a user may already have.

The settings are grouped in sections, each a frozen dataclass: `stack` (the local
stack's servers and tools), `engine` (`changefold run`), `api` (the query API) and
`views` (thresholds of the derived views); `project_dir`, `home` and `jars_dir` sit
at the top. A setting has one name everywhere: the field of its section
(`settings.engine.batch_max_records`), the keyword of `Settings(...)`,
`Settings.from_env(...)` and `settings.with_(...)` (`batch_max_records=...`, no
section) and, upper-cased behind `CHANGEFOLD_`, its environment variable
(`CHANGEFOLD_BATCH_MAX_RECORDS`).
"""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.core.errors import ConfigError

ENV_PREFIX = "CHANGEFOLD_"

#: Wire formats of the change events (StackSettings.format).
FORMATS = ("json", "avro")

#: Where the project's own files (connectors/, sql/) live when running from a checkout.
PACKAGE_PROJECT_DIR = Path(__file__).resolve().parents[2]


def _default_project_dir() -> Path:
    if (PACKAGE_PROJECT_DIR / "connectors" / "pom.xml").is_file():
        return PACKAGE_PROJECT_DIR
    return Path.cwd()


def _default_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java") or "java"


@dataclass(frozen=True, kw_only=True)
class StackSettings:
    """The servers of the local stack (`changefold stack`), how the engine and tools
    reach them, the tools that run them, and the dashboards' port."""

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

    #: Wire format of the change events: "json" (Connect's JsonConverter with embedded
    #: schemas) or "avro" (Confluent-framed Avro, schemas in a schema registry that
    #: `changefold stack up` then runs; README "Avro and the schema registry").
    format: str = "json"
    # Schema registry (Apicurio Registry; run by the local stack with format=avro only)
    #: Host the engine and tools reach the registry at (compose.yaml: `registry`).
    registry_host: str = "127.0.0.1"
    registry_port: int = 58081

    #: Seconds each component may take to become healthy.
    startup_timeout_s: float = 120.0
    #: Java executable (default $JAVA_HOME/bin/java, else java on PATH).
    java: str = ""
    #: Maven executable, used to resolve the jars once.
    mvn: str = "mvn"

    # Dashboards (`changefold demo` runs them; dashboards/ reads its own settings)
    #: Port of the Streamlit dashboards, on 127.0.0.1.
    dashboard_port: int = 58501

    def __post_init__(self) -> None:
        if not self.java:
            object.__setattr__(self, "java", _default_java())
        for name in (
            "pg_port",
            "kafka_port",
            "kafka_controller_port",
            "connect_port",
            "registry_port",
            "dashboard_port",
        ):
            _check_port(name, getattr(self, name))
        if self.format not in FORMATS:
            raise ConfigError(
                f"{_env_name('format')}={self.format!r}: use " + " or ".join(map(repr, FORMATS))
            )
        if self.topic_partitions < 1:
            raise ConfigError(
                f"{_env_name('topic_partitions')}={self.topic_partitions}: a topic needs at "
                "least 1 partition"
            )

    @property
    def bootstrap_servers(self) -> str:
        host = f"[{self.kafka_host}]" if ":" in self.kafka_host else self.kafka_host
        return f"{host}:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}"

    @property
    def avro(self) -> bool:
        """Events are Avro with their schemas in the registry (format=avro)."""
        return self.format == "avro"

    @property
    def registry_url(self) -> str:
        """Base URL of the schema registry (its Confluent-compatible API is under
        /apis/ccompat/v7, its own under /apis/registry/v2)."""
        host = f"[{self.registry_host}]" if ":" in self.registry_host else self.registry_host
        return f"http://{host}:{self.registry_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def pg_conninfo(self, database: str | None = None) -> str:
        db = database or self.pg_database
        return (
            f"host={self.pg_host} port={self.pg_port} user={self.pg_user} "
            f"password={self.pg_password} dbname={db} connect_timeout=3"
        )


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """The engine (`changefold run`): consumer group members folding changes into DuckDB."""

    #: DuckDB state file: mirrors, offsets, dead letters, metrics. `Settings` fills in
    #: the default, <home>/engine/state.duckdb.
    state_path: Path
    #: Consumer group of the engine's members; offsets in the state are kept per group.
    group_id: str = "changefold"
    #: Comma-separated topics to consume; empty: every table topic of the topic
    #: prefixes in connectors/*.json.
    topics: str = ""
    #: Bounds of one micro-batch: records, bytes, and how long a poll waits for data.
    batch_max_records: int = 20000
    batch_max_bytes: int = 64 * 1024 * 1024
    batch_max_wait_ms: int = 200
    #: Bytes one fetch of a replay takes of one partition at most (kafka-python's
    #: max_partition_fetch_bytes; `changefold run` takes a quarter of batch_max_bytes).
    #: A replay fills each batch from several fetches (up to batch_max_bytes) and hands
    #: partitions out together in source time: small chunks keep a batch's partitions
    #: close in source time, so that the legs of a source transaction arrive in the
    #: same batch instead of waiting batches for each other; large ones mean fewer
    #: fetch requests.
    partition_fetch_bytes: int = 4 * 1024 * 1024
    #: Kafka offset commit after each DuckDB commit: "sync" (blocking) or "async".
    commit_mode: str = "sync"
    #: Consumer group members run by one engine process (they share the state file).
    workers: int = 1
    #: Batches kept in the metrics table (older ones are deleted).
    metrics_keep_batches: int = 10000
    #: A member that sends no heartbeat for this long is dropped from the group and its
    #: partitions move (also how long a restarted engine waits for a crashed one's share).
    consumer_session_timeout_ms: int = 10000
    #: "on" (default): apply whole source transactions in commit order, for connectors
    #: whose transaction topic is followed (engine/state/transactions.py); "off": every
    #: event as it comes (a reader can see part of a source transaction).
    transactions: str = "on"
    #: Memory for events waiting for their source transaction (MiB). What waits is kept
    #: in memory, and each partition resumes at its first waiting event after a crash;
    #: past this bound (or after 500 batches) it moves to the state file. 0: always in
    #: the state file (slower: every waiting event is written and deleted again).
    txn_hold_memory_mb: int = 256
    #: Seconds a reader of the topics (`changefold run`, replay, bench) keeps trying to
    #: reach Kafka when it starts (a broker restarting, a stack still coming up), with
    #: growing pauses and a log line per attempt, before it exits (code 4). 0: one attempt.
    kafka_wait_s: float = 120.0
    #: The Kafka client a replay reads the topics with: "kafka-python" (default) or
    #: "confluent" (confluent-kafka, librdkafka: records fetched and parsed in C, a
    #: fraction of the CPU per record; README "Figures"). `changefold run` always reads
    #: with kafka-python.
    kafka_client: str = "kafka-python"

    def __post_init__(self) -> None:
        if self.kafka_wait_s < 0:
            raise ConfigError(
                f"{_env_name('kafka_wait_s')}={self.kafka_wait_s}: use 0 (one attempt) or "
                "more seconds"
            )
        if self.txn_hold_memory_mb < 0:
            raise ConfigError(
                f"{_env_name('txn_hold_memory_mb')}={self.txn_hold_memory_mb}: use 0 or more"
            )
        if self.transactions not in ("on", "off"):
            raise ConfigError(
                f"{_env_name('transactions')}={self.transactions!r}: use 'on' or 'off'"
            )
        if self.kafka_client not in ("kafka-python", "confluent"):
            raise ConfigError(
                f"{_env_name('kafka_client')}={self.kafka_client!r}: use 'kafka-python' or "
                "'confluent'"
            )
        if self.commit_mode not in ("sync", "async"):
            raise ConfigError(
                f"{_env_name('commit_mode')}={self.commit_mode!r}: use 'sync' or 'async'"
            )
        for name in (
            "workers",
            "batch_max_records",
            "batch_max_bytes",
            "batch_max_wait_ms",
            "partition_fetch_bytes",
        ):
            _check_at_least_1(name, getattr(self, name))

    @property
    def topic_list(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.topics.split(",") if t.strip())


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """The read-only query API, served by the engine process (`changefold run`)."""

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
    #: Port of the read-only Postgres wire-protocol endpoint (psql, JDBC, Grafana), on
    #: api_host, with the API's rules and limits (engine/serve/pgwire.py); 0: not served.
    pgwire_port: int = 55433
    #: Bytes a request body may have (larger: HTTP 413, before it is read).
    api_max_body_bytes: int = 1024 * 1024
    #: Characters a query's SQL may have: DuckDB parses and plans in time that grows
    #: faster than the text, and not all of it can be interrupted.
    api_max_sql_chars: int = 64 * 1024
    #: Bytes the engine's memory may grow while a query runs before the query is stopped
    #: (a quarter of it is DuckDB's operator_memory_limit of each query, so sorts and
    #: hash tables spill to disk first).
    api_query_memory_bytes: int = 1024 * 1024 * 1024
    #: Bytes of Arrow data a query's answer may have (before the JSON encoding).
    api_max_result_bytes: int = 64 * 1024 * 1024
    #: Nice value of the threads that run queries (0-19; 0: as the engine's fold), so
    #: that folding keeps its pace while readers compute.
    api_query_nice: int = 10

    def __post_init__(self) -> None:
        _check_port("api_port", self.api_port)
        if self.pgwire_port != 0:
            _check_port("pgwire_port", self.pgwire_port)
        for name in (
            "api_max_rows", "api_max_concurrent_queries", "api_max_body_bytes",
            "api_max_sql_chars", "api_query_memory_bytes", "api_max_result_bytes",
        ):  # fmt: skip
            _check_at_least_1(name, getattr(self, name))
        if not 0 <= self.api_query_nice <= 19:
            raise ConfigError(
                f"{_env_name('api_query_nice')}={self.api_query_nice}: use a nice value "
                "from 0 to 19"
            )
        for name in ("api_statement_timeout_s", "api_metrics_window_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"{_env_name(name)}={getattr(self, name)}: must be a positive number of seconds"
                )

    @property
    def url(self) -> str:
        """Base URL of the engine's query API."""
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"http://{host}:{self.api_port}"


@dataclass(frozen=True, kw_only=True)
class ViewSettings:
    """Derived views (sql/views/): leaderboard window and fraud rule thresholds.

    Every field is a named parameter of the view SQL ($fraud_tiny_eur, ...). Money is
    in EUR, windows in seconds of event time (the rows' own timestamps).
    """

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

    def params(self) -> dict[str, object]:
        """The named parameters of the view SQL: every field, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ConfigError(
                    f"{_env_name(f.name)}={getattr(self, f.name)}: must be more than 0"
                )
        for name in ("fraud_structuring_band", "fraud_takeover_min_share"):
            if not getattr(self, name) < 1:
                raise ConfigError(f"{_env_name(name)}={getattr(self, name)}: must be below 1")


#: The sections of `Settings`, by attribute name.
_SECTIONS: dict[str, type[Any]] = {
    "stack": StackSettings,
    "engine": EngineSettings,
    "api": ApiSettings,
    "views": ViewSettings,
}

#: Settings at the top of `Settings`, in no section.
_TOP_LEVEL = ("project_dir", "home", "jars_dir")


def _index() -> tuple[dict[str, str | None], dict[str, Any]]:
    """Every setting's name -> its section (None: the top), and -> its declared type."""
    section_of: dict[str, str | None] = dict.fromkeys(_TOP_LEVEL)
    type_of: dict[str, Any] = dict.fromkeys(_TOP_LEVEL, "Path")
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            assert f.name not in section_of, f"setting {f.name} is in two places"
            section_of[f.name] = section
            type_of[f.name] = f.type
    return section_of, type_of


_SECTION_OF, _TYPE_OF = _index()


@dataclass(frozen=True, init=False)
class Settings:
    """All of changefold's settings. Build it with `Settings.from_env()`.

    `Settings(**values)` takes the flat setting names (`pg_port=...`,
    `batch_max_records=...`) and reads no environment. The defaults that depend on
    other settings (home, jars_dir, the engine's state_path) are filled in here, once;
    each section checks its own values.
    """

    #: Checkout holding connectors/ and sql/.
    project_dir: Path
    #: Runtime state of the local stack: data, logs, pid files (default <project>/.stack).
    home: Path
    #: Resolved Kafka/Connect/Debezium jars (default <project>/.stack/jars), shared by stacks.
    jars_dir: Path
    stack: StackSettings
    engine: EngineSettings
    api: ApiSettings
    views: ViewSettings

    def __init__(self, **values: Any) -> None:
        by_section: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        top: dict[str, Any] = {}
        for name, value in values.items():
            section = _section_of(name)
            (top if section is None else by_section[section])[name] = value
        # Frozen, so through object.__setattr__.
        project_dir = Path(top.get("project_dir") or _default_project_dir())
        home = Path(top.get("home") or project_dir / ".stack")
        jars_dir = Path(top.get("jars_dir") or project_dir / ".stack" / "jars")
        engine = by_section["engine"]
        engine["state_path"] = Path(engine.get("state_path") or home / "engine" / "state.duckdb")
        object.__setattr__(self, "project_dir", project_dir)
        object.__setattr__(self, "home", home)
        object.__setattr__(self, "jars_dir", jars_dir)
        for section, cls in _SECTIONS.items():
            object.__setattr__(self, section, cls(**by_section[section]))

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `CHANGEFOLD_*` variables, then explicit keyword overrides
        (flat setting names, as `Settings(...)` takes them)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, type_ in _TYPE_OF.items():
            raw = env.get(_env_name(name))
            if raw is None or raw == "":
                continue
            values[name] = _parse(name, type_, raw)
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with these settings (flat names) changed. Defaults derived from other
        settings were filled in when this object was built and stay: `home=` alone does
        not move the state file."""
        return Settings(**{**self._values(), **changes})

    def _values(self) -> dict[str, Any]:
        """Every setting by its flat name."""
        values: dict[str, Any] = {name: getattr(self, name) for name in _TOP_LEVEL}
        for section in _SECTIONS:
            obj = getattr(self, section)
            values.update({f.name: getattr(obj, f.name) for f in fields(obj)})
        return values

    # -- derived values ---------------------------------------------------------------

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

    def child_env(self, *names: str) -> dict[str, str]:
        """This process's environment plus these settings as `CHANGEFOLD_*` variables, for
        a child process that must use the same home and servers (always passed) and
        the settings named (flat names) in `names`."""
        for name in names:
            _section_of(name)
        values = self._values()
        env = dict(os.environ)
        for name in (*_SHARED_WITH_CHILDREN, *names):
            env[_env_name(name)] = str(values[name])
        return env

    def connector_env(self) -> dict[str, str]:
        """Variables that connectors/*.json reference as ${env:NAME}.

        The Connect worker resolves them with Kafka's EnvVarConfigProvider, so the
        same JSON files serve the local stack and compose.yaml.
        """
        s = self.stack
        return {
            _env_name("pg_host"): s.pg_host,
            _env_name("pg_port"): str(s.pg_port),
            _env_name("pg_user"): s.pg_user,
            _env_name("pg_password"): s.pg_password,
            _env_name("pg_database"): s.pg_database,
            _env_name("topic_partitions"): str(s.topic_partitions),
            _env_name("topic_replication_factor"): "1",
        }


#: Settings every child process gets from its parent: where the stack lives and runs.
_SHARED_WITH_CHILDREN = (
    "home", "pg_host", "pg_port", "kafka_host", "kafka_port", "kafka_controller_port",
    "connect_port", "format", "registry_host", "registry_port",
)  # fmt: skip


def _section_of(name: str) -> str | None:
    """The section holding setting `name` (None: the top); a ConfigError if there is none."""
    try:
        return _SECTION_OF[name]
    except KeyError:
        close = difflib.get_close_matches(name, _SECTION_OF, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown setting {name!r}{hint}: a setting is named like its {ENV_PREFIX}* "
            "variable (see the README), lower-cased and without the prefix"
        ) from None


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _check_port(name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(
            f"{_env_name(name)}={port} is not a TCP port; use a number from 1 to 65535"
        )


def _check_at_least_1(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{_env_name(name)}={value}: must be at least 1")


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
