"""The HTTP API over the state: query, health, metrics. An ASGI app (FastAPI).

Endpoints:

- `POST /query` with JSON `{"sql": "...", "format": "json"|"arrow", "max_rows": n}`:
  JSON answers `{"columns": [{"name", "type"}], "rows": [[...]], "row_count",
  "truncated", "elapsed_ms"}`; Arrow answers an Arrow IPC stream
  (`application/vnd.apache.arrow.stream`) with the row count, truncated flag
  and time in `X-Changefold-*` headers. Every answer says which source position it
  is consistent as of, read in the query's own read-only transaction
  (engine.state.frontier): JSON answers carry `consistent_as_of` (the frontier:
  xid, LSN, commit time, transactions applied; null without one) and
  `consistency` (the human line), Arrow answers the same in the schema metadata
  and the `X-Changefold-Consistency` header. A refused, invalid, failing or timed
  out query answers 400 (429 when too many run at once, 503 while the engine shuts
  down) with `{"error": kind, "message": ...}`, the message being DuckDB's where
  DuckDB produced it; never a stack trace, and the server keeps serving.
- `GET /health`: status, state file, mode, newest batch time, its age and freshness,
  and the frontier (`consistent_as_of`, `consistency`).
- `GET /metrics`: pipeline figures as JSON (engine.serve.metrics), the frontier
  (`consistent_as_of`, `consistency`) and API counters.
- `GET /metrics/prometheus`: the same in the Prometheus text format.
- `GET /openapi.json`: the OpenAPI description of the above.
- `POST /snapshot` (internal, for `changefold snapshot` and the tools that read a
  state the engine holds: dlq, diff, eval, sql --state/--as-of): writes a
  consistent copy of the whole state (engine.state.snapshot) into a new file and
  answers `{"path", "tables", "rows", "views", "seconds", "size_bytes",
  "consistent_as_of", "consistency"}`. The client names no path: the file is
  always a fresh `state.duckdb` in a new private directory (mode 0700) under
  `<home>/snapshots/` (`ApiOptions.snapshot_dir`), so the endpoint cannot write
  anywhere else nor overwrite anything; only loopback clients are served (403
  otherwise), one snapshot at a time (429), and snapshots left there for more
  than `snapshot_keep_s` are removed by the next request. The client moves or
  deletes the file when done.

Every error answer, of any endpoint and status (404, 405, 413, 422 included), has
that one shape `{"error": kind, "message": ...}`.

Limits (the `api` settings; engine.serve.query and engine.serve.guard): a request
body over `api_max_body_bytes` is refused with 413 before it is read; SQL over
`api_max_sql_chars` with 400 before DuckDB parses it; the statement timeout covers
parse, plan and execution; a query during which the engine's memory grows by more
than `api_query_memory_bytes`, or whose answer passes `api_max_result_bytes`, is
stopped with 400. Each message names its CHANGEFOLD_API_* setting.

Query endpoints are plain (sync) functions: they run in the server's thread
pool, each on its own DuckDB cursor, never in the event loop.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from engine import __version__
from engine.core.config import Settings
from engine.core.errors import ApiError, QueryError
from engine.serve import formats, metrics, prom
from engine.serve.guard import size_text, watchdog
from engine.serve.query import QueryLimits, run_query
from engine.state import frontier
from engine.state import snapshot as state_snapshot
from engine.state.reader import StateReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiOptions:
    max_rows: int = 10000
    statement_timeout_s: float = 10.0
    max_concurrent_queries: int = 4
    metrics_window_s: float = 60.0
    max_body_bytes: int = 1024 * 1024
    limits: QueryLimits = field(default_factory=QueryLimits)
    #: Whose frontier the answers carry: the engine's consumer group and whether it
    #: orders transactions (None: not known; the most recently updated frontier).
    group_id: str | None = None
    transactions: str | None = None
    #: Where POST /snapshot writes (None: snapshots are not served), how long one may
    #: take, and after how long a snapshot left there is removed.
    snapshot_dir: Path | None = None
    snapshot_timeout_s: float = 900.0
    snapshot_keep_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiOptions:
        return cls(
            max_rows=settings.api.api_max_rows,
            statement_timeout_s=settings.api.api_statement_timeout_s,
            max_concurrent_queries=settings.api.api_max_concurrent_queries,
            metrics_window_s=settings.api.api_metrics_window_s,
            max_body_bytes=settings.api.api_max_body_bytes,
            limits=QueryLimits.from_settings(settings),
            group_id=settings.engine.group_id,
            transactions=settings.engine.transactions,
            snapshot_dir=settings.home / "snapshots",
        )

    @property
    def frontier_scope(self) -> frontier.Scope:
        return frontier.Scope(self.group_id, self.transactions)


class QueryRequest(BaseModel):
    sql: str = Field(description="One read statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN).")
    format: Literal["json", "arrow"] = Field("json", description="Answer as JSON or Arrow IPC.")
    max_rows: int | None = Field(
        None, ge=1, description="Rows to return at most; capped by the server's row cap."
    )


class ApiStats:
    """Counters of answered queries by outcome, for /metrics. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._seconds = 0.0

    def note(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._outcomes[outcome] += 1
            self._seconds += seconds

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"queries": dict(self._outcomes), "query_seconds": round(self._seconds, 6)}


#: HTTP status per QueryError kind.
_STATUS = {"busy": 429, "unavailable": 503}

#: Error kind per HTTP status of the framework's own errors.
_HTTP_KINDS = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}

#: The file a snapshot is written to, inside its own new directory.
SNAPSHOT_FILE = "state.duckdb"
_SNAPSHOT_PREFIX = "snapshot-"


def build_app(reader: StateReader, options: ApiOptions) -> FastAPI:
    """The ASGI app answering from `reader`."""
    app = FastAPI(
        title="changefold query API",
        version=__version__,
        description="Read-only SQL over changefold's DuckDB state, with health and metrics.",
        # The schema stays at /openapi.json; the HTML docs pages would load their
        # scripts from a CDN, which a loopback-only API should not make browsers do.
        docs_url=None,
        redoc_url=None,
        # Starlette's limit: a larger Content-Length, or more bytes than that as they
        # arrive, end the request with a 413 before the body is held in memory.
        max_body_size=options.max_body_bytes,
    )
    slots = threading.BoundedSemaphore(options.max_concurrent_queries)
    snapshotting = threading.Lock()
    stats = ApiStats()
    app.state.reader = reader
    app.state.stats = stats

    @app.exception_handler(QueryError)
    def _query_error(_: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.kind, "message": exc.message}, status_code=_STATUS.get(exc.kind, 400)
        )

    @app.exception_handler(ApiError)
    def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": "unavailable", "message": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return JSONResponse(
            {"error": "invalid", "message": f"bad request body ({problems}); send JSON "
             '{"sql": "SELECT ...", "format": "json" or "arrow"}'},
            status_code=400,
        )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        if status == 413:
            return too_large_response(options.max_body_bytes)
        if status == 404:
            message = (
                f"no such endpoint: {request.url.path}; the API serves POST /query, "
                "GET /health, /metrics, /metrics/prometheus and /openapi.json (and, to "
                "loopback clients, POST /snapshot)"
            )
        elif status == 405:
            allowed = Headers(exc.headers or {}).get("allow", "")
            message = f"{request.method} is not allowed on {request.url.path}" + (
                f"; use {allowed}" if allowed else ""
            )
        else:
            message = str(exc.detail)
        return JSONResponse(
            {"error": _HTTP_KINDS.get(status, "invalid"), "message": message},
            status_code=status,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("query API: unexpected error")
        return JSONResponse(
            {
                "error": "internal",
                "message": f"unexpected {type(exc).__name__}; see the engine log",
            },
            status_code=500,
        )

    @app.post("/query", summary="Run one read-only SQL statement")
    def query(body: QueryRequest) -> Response:
        started = time.perf_counter()
        outcome = "ok"
        try:
            if not slots.acquire(timeout=options.statement_timeout_s):
                raise QueryError(
                    "busy",
                    f"{options.max_concurrent_queries} queries are running already; retry "
                    "shortly, or raise CHANGEFOLD_API_MAX_CONCURRENT_QUERIES",
                )
            try:
                limit = min(body.max_rows or options.max_rows, options.max_rows)
                result = run_query(
                    reader,
                    body.sql,
                    max_rows=limit,
                    timeout_s=options.statement_timeout_s,
                    scope=options.frontier_scope,
                    limits=options.limits,
                )
            finally:
                slots.release()
        except QueryError as exc:
            outcome = exc.kind
            raise
        finally:
            stats.note(outcome, time.perf_counter() - started)
        headers = {
            formats.ROW_COUNT_HEADER: str(result.row_count),
            formats.TRUNCATED_HEADER: "true" if result.truncated else "false",
            formats.ELAPSED_HEADER: f"{result.elapsed_ms:.3f}",
        }
        if result.consistency is not None:
            headers[formats.CONSISTENCY_HEADER] = result.consistency.line
        if body.format == "arrow":
            return Response(
                formats.to_arrow_stream(result), media_type=formats.ARROW_STREAM, headers=headers
            )
        payload = formats.to_payload(result)
        return Response(
            formats.to_json_bytes(payload), media_type="application/json", headers=headers
        )

    @app.get("/health", summary="Is the API up, and how fresh is the state")
    def health() -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        figures = _read(
            reader,
            options,
            lambda cur: (
                metrics.health(cur, now=now) | frontier.read(cur, options.frontier_scope).to_json()
            ),
        )
        return {
            "status": "ok",
            "version": __version__,
            "mode": reader.mode,
            "state_file": reader.state_file,
            "now": now.isoformat(),
            **figures,
        }

    @app.get("/metrics", summary="Lag, throughput, batch timings, freshness, dead letters")
    def metrics_json() -> dict[str, Any]:
        figures = _figures(reader, options)
        return {**figures, "api": stats.snapshot(), "state_file": reader.state_file}

    @app.get("/metrics/prometheus", summary="The metrics in the Prometheus text format")
    def metrics_prometheus() -> Response:
        text = prom.render(_figures(reader, options), stats.snapshot())
        return Response(text, media_type=prom.CONTENT_TYPE)

    @app.post("/snapshot", summary="Write a consistent copy of the state (internal, loopback)")
    def take_snapshot(request: Request) -> JSONResponse:
        if not _loopback(request):
            return JSONResponse(
                {"error": "forbidden", "message": "snapshots are served to loopback clients only"},
                status_code=403,
            )
        if options.snapshot_dir is None:
            return JSONResponse(
                {"error": "not_found", "message": "this API serves no snapshots"}, status_code=404
            )
        if not snapshotting.acquire(blocking=False):
            raise QueryError("busy", "a snapshot is being written already; retry once it is done")
        try:
            snap = _write_snapshot(reader, options, options.snapshot_dir)
        finally:
            snapshotting.release()
        log.info(
            "snapshot of %s into %s: %d tables, %d rows in %.2f s (%s)",
            reader.state_file, snap.path, snap.tables, snap.rows, snap.seconds,
            snap.consistency.line,
        )  # fmt: skip
        return JSONResponse({**snap.to_json(), "state_file": reader.state_file})

    return app


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client is not None else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_snapshot(
    reader: StateReader, options: ApiOptions, directory: Path
) -> state_snapshot.Snapshot:
    """A snapshot into a fresh private directory under `directory` (old ones removed)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _remove_old_snapshots(directory, options.snapshot_keep_s)
    own = Path(tempfile.mkdtemp(prefix=_SNAPSHOT_PREFIX, dir=directory))
    try:
        with (
            reader.cursor() as cur,
            watchdog().watch(cur, owner=reader, timeout_s=options.snapshot_timeout_s) as watch,
        ):
            try:
                return state_snapshot.copy_state(
                    cur, own / SNAPSHOT_FILE, scope=options.frontier_scope, check=watch.check
                )
            except duckdb.Error as exc:
                if watch.reason is not None:
                    raise watch.error() from None
                raise ApiError(f"cannot write the snapshot: {exc}") from None
    except BaseException:
        shutil.rmtree(own, ignore_errors=True)
        raise


def _remove_old_snapshots(directory: Path, keep_s: float) -> None:
    cutoff = time.time() - keep_s
    for old in directory.glob(_SNAPSHOT_PREFIX + "*"):
        try:
            if old.is_dir() and not old.is_symlink() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
                log.info("removed the snapshot %s, left for over %g s", old, keep_s)
        except OSError:
            continue


def too_large_response(max_body_bytes: int) -> JSONResponse:
    return JSONResponse(
        {
            "error": "too_large",
            "message": f"the request body is larger than {size_text(max_body_bytes)} "
            f"({max_body_bytes:,} bytes, CHANGEFOLD_API_MAX_BODY_BYTES): send a shorter query",
        },
        status_code=413,
    )


class DeclaredLengthLimit:
    """Answers a request whose Content-Length passes the body limit with the API's 413.

    Starlette's body limit (FastAPI's `max_body_size`, set in build_app) counts a
    body as it arrives and ends it with our handler's answer, but when the declared
    Content-Length is already too large it replaces any answer with a plain-text
    413; this wrapper, outside the app, answers that case first.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                await too_large_response(self.max_body_bytes)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _figures(reader: StateReader, options: ApiOptions) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return _read(
        reader,
        options,
        lambda cur: (
            metrics.collect(cur, window_s=options.metrics_window_s, now=now)
            | frontier.read(cur, options.frontier_scope).to_json()
        ),
    )


def _read(reader: StateReader, options: ApiOptions, read: Any) -> dict[str, Any]:
    """Run one of our own read functions on a fresh cursor under the statement timeout."""
    try:
        with (
            reader.cursor() as cur,
            watchdog().watch(cur, owner=reader, timeout_s=options.statement_timeout_s) as watch,
        ):
            try:
                figures: dict[str, Any] = read(cur)
                return figures
            except duckdb.Error as exc:
                if watch.reason is not None:
                    raise watch.error() from None
                raise ApiError(f"cannot read the state's figures: {exc}") from None
    except QueryError as exc:
        raise ApiError(f"cannot read the state's figures: {exc.message}") from None
