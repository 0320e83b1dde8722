"""The dashboards' only door to data: the engine's query API, the Connect REST API,
Postgres' replication slots and (format avro) the schema registry.

The dashboards import nothing from the engine: they speak HTTP to the query API
that `changefold run` serves (POST /query, GET /health, GET /metrics), read the
connectors' and tasks' states from the Kafka Connect REST API, and ask Postgres
(read-only) how much WAL each replication slot retains. Where they are is read
from the same CHANGEFOLD_* environment variables the engine uses (see
`Sources.from_env`).

Every failure to reach a source raises `Unavailable` with a message that names
the source, its address and how to bring it up; a query the API refuses or that
fails raises `QueryFailed` with the API's own message. Pages turn both into a
banner, never a traceback.

The query API takes no bound parameters. Queries are constants (dashboards/queries.py);
the only values ever placed into SQL text are integers rendered by `int_literal`
(ids picked from earlier answers, the configured window), which cannot carry SQL.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import polars as pl
import pyarrow as pa

#: Defaults, the same as the engine's (engine/core/config.py).
DEFAULT_API_PORT = 58000
DEFAULT_CONNECT_PORT = 58083
DEFAULT_REGISTRY_PORT = 58081
#: Hosts of this machine: the only ones the dashboards ask for the schema registry.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
#: Path of the registry's Confluent-compatible API.
CCOMPAT = "/apis/ccompat/v7"
#: Seconds a read of the registry's subjects is reused (the live panels rerun every
#: few seconds; a subject's versions change with a table's columns).
REGISTRY_TTL_S = 15.0
DEFAULT_PG = {"host": "127.0.0.1", "port": "55432", "user": "changefold", "dbname": "changefold"}
DEFAULT_REFRESH_S = 3.0
DEFAULT_WINDOW_MIN = 60

ARROW_STREAM = "application/vnd.apache.arrow.stream"


class DataError(Exception):
    """A dashboard could not get its data; `str()` is the message to show."""


class Unavailable(DataError):
    """A source (query API, Connect, Postgres) does not answer."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(message)
        self.source = source


class QueryFailed(DataError):
    """The query API refused a query or the query failed: `kind` and DuckDB's message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Sources:
    """Where the data comes from, and the dashboards' own settings."""

    api_url: str
    connect_url: str
    pg_conninfo: str
    #: host:port of Postgres, for messages.
    pg_address: str
    #: Seconds between automatic refreshes of the live panels.
    refresh_s: float
    #: Minutes of event time that the engine's leaderboard_window covers.
    window_min: int
    #: Wire format of the change events: "json" (schemas inside each message) or
    #: "avro" (schemas in the registry).
    fmt: str = "json"
    #: Base URL of the schema registry (asked with format avro only).
    registry_url: str = f"http://127.0.0.1:{DEFAULT_REGISTRY_PORT}"
    #: The registry's host is this machine (else the dashboards do not ask it).
    registry_local: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Sources:
        """From CHANGEFOLD_* variables:

        - CHANGEFOLD_API_URL, else http://CHANGEFOLD_API_HOST:CHANGEFOLD_API_PORT
          (127.0.0.1:58000; a wildcard host such as 0.0.0.0 is reached on 127.0.0.1)
        - CHANGEFOLD_CONNECT_URL, else http://127.0.0.1:CHANGEFOLD_CONNECT_PORT (58083)
        - CHANGEFOLD_PG_HOST / _PORT / _USER / _PASSWORD / _DATABASE (the local stack's)
        - CHANGEFOLD_DASHBOARD_REFRESH_S (3), CHANGEFOLD_LEADERBOARD_WINDOW_MIN (60)
        - CHANGEFOLD_FORMAT (json), CHANGEFOLD_REGISTRY_HOST / _PORT (127.0.0.1:58081)
        """
        e = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return e.get(f"CHANGEFOLD_{name}") or default

        api_url = get("API_URL", "")
        if not api_url:
            host = get("API_HOST", "127.0.0.1")
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            api_url = f"http://{host}:{_int(get('API_PORT', str(DEFAULT_API_PORT)), 'API_PORT')}"
        connect_url = get("CONNECT_URL", "")
        if not connect_url:
            port = _int(get("CONNECT_PORT", str(DEFAULT_CONNECT_PORT)), "CONNECT_PORT")
            connect_url = f"http://127.0.0.1:{port}"
        pg = {
            "host": get("PG_HOST", DEFAULT_PG["host"]),
            "port": str(_int(get("PG_PORT", DEFAULT_PG["port"]), "PG_PORT")),
            "user": get("PG_USER", DEFAULT_PG["user"]),
            "password": get("PG_PASSWORD", "changefold"),
            "dbname": get("PG_DATABASE", DEFAULT_PG["dbname"]),
        }
        refresh = _float(get("DASHBOARD_REFRESH_S", str(DEFAULT_REFRESH_S)), "DASHBOARD_REFRESH_S")
        window = _int(
            get("LEADERBOARD_WINDOW_MIN", str(DEFAULT_WINDOW_MIN)), "LEADERBOARD_WINDOW_MIN"
        )
        fmt = get("FORMAT", "json").strip().lower()
        reg_host = get("REGISTRY_HOST", "127.0.0.1")
        reg_port = _int(get("REGISTRY_PORT", str(DEFAULT_REGISTRY_PORT)), "REGISTRY_PORT")
        bracketed = f"[{reg_host}]" if ":" in reg_host else reg_host
        return cls(
            api_url=api_url.rstrip("/"),
            connect_url=connect_url.rstrip("/"),
            pg_conninfo=" ".join(f"{k}={_conninfo_value(v)}" for k, v in pg.items()),
            pg_address=f"{pg['host']}:{pg['port']}",
            refresh_s=max(refresh, 0.5),
            window_min=max(window, 1),
            fmt=fmt,
            registry_url=f"http://{bracketed}:{reg_port}",
            registry_local=reg_host.strip("[]").lower() in LOOPBACK,
        )


def sources() -> Sources:
    """The sources as the environment says now (cheap; read on every call)."""
    return Sources.from_env()


# -- the query API -------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """Rows of one query: at most `max_rows`, `truncated` when there were more."""

    frame: pl.DataFrame
    truncated: bool
    elapsed_ms: float

    @property
    def row_count(self) -> int:
        return self.frame.height


_clients: dict[str, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client(base_url: str) -> httpx.Client:
    """One keep-alive client per base URL, shared by the sessions' script threads."""
    with _clients_lock:
        client = _clients.get(base_url)
        if client is None:
            client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10.0, connect=2.0))
            _clients[base_url] = client
        return client


def _api_down(url: str, exc: Exception) -> Unavailable:
    return Unavailable(
        "api",
        f"The engine's query API at {url} does not answer ({type(exc).__name__}). "
        "Start the engine with `changefold run` (or everything with `changefold demo`); "
        "if it runs elsewhere, set CHANGEFOLD_API_URL or CHANGEFOLD_API_PORT.",
    )


def _get_json(url: str, path: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    try:
        response = _client(url).get(path, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise _api_down(url, exc) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        message = body.get("message") if isinstance(body, dict) else response.text[:200]
        raise Unavailable(
            "api",
            f"The query API at {url} answered {path} with HTTP {response.status_code}: "
            f"{message}. Is that address the changefold engine's API?",
        )
    return body


def health(src: Sources | None = None) -> dict[str, Any]:
    """GET /health: status, state file, newest batch time, its age and freshness."""
    src = src or sources()
    return _get_json(src.api_url, "/health", timeout_s=3.0)


def metrics(src: Sources | None = None) -> dict[str, Any]:
    """GET /metrics: partitions (lag, throughput), batches, freshness, dead letters, ..."""
    src = src or sources()
    return _get_json(src.api_url, "/metrics")


def query(sql: str, *, max_rows: int | None = None, src: Sources | None = None) -> Result:
    """Run one read-only statement through the API; the rows as a polars frame (via Arrow)."""
    src = src or sources()
    body: dict[str, Any] = {"sql": sql, "format": "arrow"}
    if max_rows is not None:
        body["max_rows"] = int(max_rows)
    try:
        response = _client(src.api_url).post("/query", json=body)
    except httpx.HTTPError as exc:
        raise _api_down(src.api_url, exc) from None
    if response.status_code != 200:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise Unavailable(
                "api",
                f"The query API at {src.api_url} answered HTTP {response.status_code} "
                "without JSON. Is that address the changefold engine's API?",
            )
        if response.status_code == 503:
            raise Unavailable("api", str(answer.get("message", "the state cannot be read")))
        raise QueryFailed(
            str(answer.get("error", "failed")), str(answer.get("message", response.text))
        )
    table = pa.ipc.open_stream(io.BytesIO(response.content)).read_all()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return Result(
        frame=frame,
        truncated=response.headers.get("X-Changefold-Truncated", "false") == "true",
        elapsed_ms=float(response.headers.get("X-Changefold-Elapsed-Ms", "0") or 0),
    )


def missing_table(exc: QueryFailed) -> bool:
    """True when a query failed because a table or schema it reads does not exist (yet)."""
    text = exc.message
    return exc.kind == "invalid" and "Catalog Error" in text and "does not exist" in text


def int_literal(value: int) -> str:
    """An integer as SQL text; anything but a whole number is refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"only integers may be placed into SQL, not {value!r}")
    return str(int(value))


def int_list(values: Iterable[int]) -> str:
    """Integers as the inside of an SQL IN (...) list; at least one (NULL if none)."""
    rendered = [int_literal(v) for v in values]
    return ", ".join(rendered) if rendered else "NULL"


# -- Kafka Connect -------------------------------------------------------------------


@dataclass(frozen=True)
class Connector:
    name: str
    state: str
    worker: str
    #: (task id, state, worker, trace's first line or "")
    tasks: tuple[tuple[int, str, str, str], ...]
    kind: str = ""


def connectors(src: Sources | None = None) -> list[Connector]:
    """Every connector of the Connect worker with its and its tasks' states."""
    src = src or sources()
    try:
        response = _client(src.connect_url).get("/connectors", params={"expand": "status"})
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise Unavailable(
            "connect",
            f"Kafka Connect's REST API at {src.connect_url} does not answer "
            f"({type(exc).__name__}). Start the stack with `changefold stack up`; if it runs "
            "elsewhere, set CHANGEFOLD_CONNECT_PORT or CHANGEFOLD_CONNECT_URL.",
        ) from None
    out = []
    for name, entry in sorted(body.items()):
        status = entry.get("status") or {}
        connector = status.get("connector") or {}
        tasks = tuple(
            (
                int(t.get("id", 0)),
                str(t.get("state", "?")),
                str(t.get("worker_id", "")),
                str(t.get("trace") or "").split("\n", 1)[0],
            )
            for t in status.get("tasks") or []
        )
        out.append(
            Connector(
                name=name,
                state=str(connector.get("state", "?")),
                worker=str(connector.get("worker_id", "")),
                tasks=tasks,
                kind=str(status.get("type", "")),
            )
        )
    return out


# -- the schema registry (format avro) -----------------------------------------------


@dataclass(frozen=True)
class Subject:
    """One subject of the registry (`<topic>-key` / `<topic>-value`)."""

    subject: str
    latest_version: int
    #: Schema id of the latest version (what the messages carry).
    latest_id: int | None
    versions: int
    #: The subject's own compatibility mode, else the registry's.
    compatibility: str


@dataclass(frozen=True)
class Registry:
    url: str
    subjects: tuple[Subject, ...]
    #: The registry's global compatibility mode.
    compatibility: str


_registry_cache: dict[str, tuple[float, Registry]] = {}
_registry_lock = threading.Lock()


def _mode(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    mode = body.get("compatibilityLevel") or body.get("compatibility")
    return str(mode) if mode else None


def schema_registry(src: Sources | None = None) -> Registry:
    """Subjects, their latest version and its id, how many versions, and compatibility
    mode, from the registry's Confluent-compatible API (the requests `changefold
    schemas` makes, without each version's id). Read at most every REGISTRY_TTL_S.
    A registry that is not on this machine is not asked."""
    src = src or sources()
    if not src.registry_local:
        raise DataError(
            f"The schema registry at {src.registry_url} is not on this machine: the "
            "dashboards ask only local servers (`changefold schemas` lists its subjects)."
        )
    with _registry_lock:
        hit = _registry_cache.get(src.registry_url)
        if hit is not None and time.monotonic() - hit[0] < REGISTRY_TTL_S:
            return hit[1]
    http = _client(src.registry_url + CCOMPAT)

    def subject(name: str, default: str) -> Subject:
        versions = http.get(f"/subjects/{name}/versions", timeout=5.0)
        versions.raise_for_status()
        latest = http.get(f"/subjects/{name}/versions/latest", timeout=5.0)
        latest.raise_for_status()
        own = http.get(f"/config/{name}", timeout=5.0)
        body = latest.json()
        return Subject(
            subject=name,
            latest_version=int(body.get("version", 0)),
            latest_id=body.get("id"),
            versions=len(versions.json()),
            compatibility=(_mode(own.json()) if own.status_code == 200 else None) or default,
        )

    try:
        glob = http.get("/config", timeout=5.0)
        glob.raise_for_status()
        default = _mode(glob.json()) or "?"
        names = http.get("/subjects", timeout=5.0)
        names.raise_for_status()
        # three requests per subject: a few at a time, so the page does not wait for
        # them one after the other
        with ThreadPoolExecutor(max_workers=6, thread_name_prefix="registry") as pool:
            subjects = list(
                pool.map(lambda n: subject(n, default), sorted(str(n) for n in names.json()))
            )
    except (httpx.HTTPError, ValueError) as exc:
        raise Unavailable(
            "registry",
            f"The schema registry at {src.registry_url} does not answer "
            f"({type(exc).__name__}). With CHANGEFOLD_FORMAT=avro, `changefold stack up` "
            "starts it; if it runs elsewhere on this machine, set CHANGEFOLD_REGISTRY_PORT.",
        ) from None
    found = Registry(src.registry_url, tuple(subjects), default)
    with _registry_lock:
        _registry_cache[src.registry_url] = (time.monotonic(), found)
    return found


# -- Postgres ------------------------------------------------------------------------

_SLOTS_SQL = """
SELECT slot_name, plugin, active, wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_wal_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS unconfirmed_bytes
FROM pg_replication_slots ORDER BY slot_name
"""


def replication_slots(src: Sources | None = None) -> pl.DataFrame:
    """Postgres' replication slots and the WAL each retains (a read-only session)."""
    import psycopg

    src = src or sources()
    try:
        with psycopg.connect(src.pg_conninfo, connect_timeout=3, autocommit=True) as conn:
            conn.read_only = True
            cur = conn.execute(_SLOTS_SQL)
            names = [d.name for d in cur.description or []]
            rows = cur.fetchall()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unavailable(
            "postgres",
            f"Postgres at {src.pg_address} does not answer ({first}). Start the stack with "
            "`changefold stack up`; if it runs elsewhere, set CHANGEFOLD_PG_HOST / "
            "CHANGEFOLD_PG_PORT.",
        ) from None
    return pl.DataFrame(rows, schema=names, orient="row")


# -- helpers -------------------------------------------------------------------------


def _int(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise DataError(f"CHANGEFOLD_{name}={raw!r} is not a whole number") from None


def _float(raw: str, name: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise DataError(f"CHANGEFOLD_{name}={raw!r} is not a number") from None


def _conninfo_value(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
