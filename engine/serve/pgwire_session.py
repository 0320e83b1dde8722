"""One client of the Postgres wire-protocol endpoint: start-up, simple and extended queries.

pygwire decodes and encodes the protocol's messages and tracks its phases; this
module decides the answers. Every query goes to `PgwireService.query`, that is
`engine.serve.query.run_query` with the query API's options: one checked read
statement, a read-only transaction, the row cap, the statement timeout, the
concurrency slots, and the frontier read in the query's own snapshot. A refused
query gets the API's message as a Postgres error (SQLSTATE 25006 for writes);
the frontier line is sent after each answer as the parameter
`changefold.consistency` (`SHOW changefold.consistency`), a cut answer comes with
a NOTICE. The session statements clients send (BEGIN, SET, SHOW, ...) are
answered by engine.serve.pgwire_commands without touching the state.

Extended protocol: Parse keeps the text; Bind puts each parameter into it as a
typed SQL literal (engine.serve.pgwire_types.literal) before the statement is
checked, so parameters pass the same checks as any text; Describe of a portal
runs its query once and Execute streams those rows (with row limits and
PortalSuspended); Describe of a statement binds it with NULLs and describes
DuckDB's relation without running it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
from pygwire import BackendConnection, PygwireError, StartupRequestCode, TransactionStatus
from pygwire import messages as m

from engine.core.errors import ApiError, QueryError
from engine.serve import pgwire_types as types
from engine.serve import query
from engine.serve.app import ApiOptions
from engine.serve.pgwire_catalog import rewrite
from engine.serve.pgwire_commands import REPORTED, Local, defaults, local_answer, set_value
from engine.serve.query import Column, QueryResult, run_query
from engine.serve.safety import checked_statement
from engine.state.reader import StateReader

log = logging.getLogger(__name__)

#: The one user and database of the endpoint.
USER = "changefold"
DATABASE = "changefold"

#: The parameter each answer's frontier line is sent as (and SHOW reads).
CONSISTENCY_PARAMETER = "changefold.consistency"

_RECV_BYTES = 65536
_FLUSH_BYTES = 256 * 1024


class PgError(Exception):
    """An error to send as a Postgres ErrorResponse (SQLSTATE, message, severity)."""

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


def sqlstate(exc: QueryError) -> str:
    """The Postgres SQLSTATE of a query API error."""
    text = exc.message
    if exc.kind == "refused":
        return "25006" if "read-only" in text else "42501"  # read_only_sql_transaction
    if exc.kind == "invalid":
        if text.startswith("Catalog Error"):
            return "42P01"  # undefined_table
        if text.startswith("Binder Error"):
            return "42703"  # undefined_column (the usual binder error)
        return "42601"  # syntax_error
    if exc.kind == "timeout":
        return "57014"  # query_canceled
    if exc.kind == "busy":
        return "53300"  # too_many_connections
    if text.startswith(("Conversion Error", "Invalid Input Error", "Out of Range Error")):
        return "22000"  # data_exception
    return "XX000"


class PgwireService:
    """What every session shares: the state reader, the API's options and query slots."""

    def __init__(self, reader: StateReader, options: ApiOptions, *, max_connections: int) -> None:
        self.reader = reader
        self.options = options
        self.max_connections = max_connections
        self.duckdb_version = duckdb.__version__
        self._slots = threading.BoundedSemaphore(options.max_concurrent_queries)
        self._lock = threading.Lock()
        self._sessions: dict[int, Session] = {}

    def query(self, sql: str) -> QueryResult:
        """Run `sql` exactly as `POST /query` does (the same checks, limits and snapshot)."""
        o = self.options
        if not self._slots.acquire(timeout=o.statement_timeout_s):
            raise QueryError(
                "busy",
                f"{o.max_concurrent_queries} queries are running already; retry shortly, or "
                "raise CHANGEFOLD_API_MAX_CONCURRENT_QUERIES",
            )
        try:
            return run_query(
                self.reader,
                sql,
                max_rows=o.max_rows,
                timeout_s=o.statement_timeout_s,
                scope=o.frontier_scope,
                **self._limits(),
            )
        finally:
            self._slots.release()

    def _limits(self) -> dict[str, Any]:
        """The API's further query limits (issue 13's `ApiOptions.limits`), where this
        version of engine.serve.query has them."""
        limits = getattr(self.options, "limits", None)
        return {} if limits is None else {"limits": limits}

    def describe(self, sql: str) -> tuple[Column, ...] | None:
        """The columns `sql` would answer (None: no rows), from DuckDB's binder, not run."""
        check_text = getattr(query, "check_text", None)
        if check_text is not None and self._limits():
            check_text(sql, self._limits()["limits"])
        with self.reader.cursor() as cur:
            statement = checked_statement(cur, sql)
            try:
                relation = cur.sql(statement)
            except duckdb.Error as exc:
                raise QueryError("invalid", str(exc)) from None
            if relation is None:
                return None
            return tuple(
                Column(n, str(t)) for n, t in zip(relation.columns, relation.types, strict=True)
            )

    # -- sessions ---------------------------------------------------------------------

    def register(self, session: Session) -> bool:
        with self._lock:
            if len(self._sessions) >= self.max_connections:
                return False
            self._sessions[session.process_id] = session
            return True

    def unregister(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.process_id, None)

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())


@dataclass
class Answer:
    """What one statement answers: rows (with Postgres types) or a command tag."""

    tag: str
    names: tuple[str, ...] = ()
    oids: tuple[int, ...] = ()
    table: pa.Table | None = None
    empty: bool = False
    notices: tuple[str, ...] = ()
    consistency: str | None = None

    @property
    def has_rows(self) -> bool:
        return self.table is not None

    @classmethod
    def of_result(cls, result: QueryResult, max_rows: int) -> Answer:
        notices: tuple[str, ...] = ()
        if result.truncated:
            notices = (
                f"the answer was cut at {max_rows} rows, the endpoint's row cap "
                "(CHANGEFOLD_API_MAX_ROWS): narrow the query or add LIMIT/OFFSET",
            )
        return cls(
            tag=f"SELECT {result.row_count}",
            names=tuple(c.name for c in result.columns),
            oids=tuple(types.oid_of(c.type) for c in result.columns),
            table=result.table,
            notices=notices,
            consistency=None if result.consistency is None else result.consistency.line,
        )

    @classmethod
    def of_local(cls, local: Local) -> Answer:
        if not local.columns:
            return cls(tag=local.tag, notices=(local.notice,) if local.notice else ())
        table = pa.table(
            {
                f"c{i}": pa.array([row[i] for row in local.rows], pa.string())
                for i in range(len(local.columns))
            }
        )
        return cls(
            tag=local.tag,
            names=local.columns,
            oids=(types.TEXT,) * len(local.columns),
            table=table,
        )


@dataclass
class Prepared:
    sql: str
    param_oids: list[int]
    #: ($n placeholder: start, end, n) in `sql`, by position.
    placeholders: list[tuple[int, int, int]]

    @property
    def param_count(self) -> int:
        return max((n for _, _, n in self.placeholders), default=0)

    def bind(self, values: list[str]) -> str:
        sql = self.sql
        for start, end, n in sorted(self.placeholders, reverse=True):
            sql = sql[:start] + values[n - 1] + sql[end:]
        return sql


@dataclass
class Portal:
    sql: str
    result_formats: list[int]
    answer: Answer | None = None
    rows: list[m.DataRow] | None = None
    sent: int = 0
    done: bool = False


_IDLE, _BLOCK, _FAILED = (
    TransactionStatus.IDLE,
    TransactionStatus.IN_TRANSACTION,
    (TransactionStatus.ERROR_TRANSACTION),
)


class Session:
    """One client connection; `serve()` runs it to the end on the calling thread."""

    def __init__(self, sock: socket.socket, service: PgwireService) -> None:
        self.sock = sock
        self.service = service
        self.process_id = secrets.randbits(31)
        self.secret_key = secrets.token_bytes(4)
        self._conn = BackendConnection()
        self._out = bytearray()
        self._settings = defaults()
        self._settings[CONSISTENCY_PARAMETER] = "no query answered yet in this session"
        self._status = _IDLE
        self._skipping = False  # after an error in the extended protocol, until Sync
        self._statements: dict[str, Prepared] = {}
        self._portals: dict[str, Portal] = {}
        self._started = False
        self._registered = False

    # -- the loop ---------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while True:
                data = self.sock.recv(_RECV_BYTES)
                if not data:
                    return
                for msg in self._conn.receive(data):
                    if not self._handle(msg):
                        return
                self._flush()
        except PgError as exc:  # fatal, at start-up
            self._error(exc)
        except PygwireError as exc:
            self._error(PgError("08P01", f"protocol violation: {exc}", fatal=True))
        except ApiError as exc:  # the reader closed: the engine is stopping
            self._error(PgError("57P01", str(exc), fatal=True))
        except OSError:
            pass  # the client went away, or stop() shut the socket
        finally:
            self._finish()

    def close(self) -> None:
        """Stop this session from another thread (the endpoint is stopping)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _finish(self) -> None:
        with contextlib.suppress(OSError):
            self._flush()
        if self._registered:
            self.service.unregister(self)
        self.sock.close()

    def _handle(self, msg: m.PGMessage) -> bool:
        """Answer one message; False ends the session."""
        if isinstance(msg, m.SSLRequest):
            self._send(m.SSLResponse(accepted=False))
        elif isinstance(msg, m.GSSEncRequest):
            self._send(m.GSSResponse(accepted=False))
        elif isinstance(msg, m.CancelRequest):
            # Queries stop at the statement timeout; a cancel cannot reach run_query.
            log.debug("pgwire: cancel request for %s ignored", msg.process_id)
            return False
        elif isinstance(msg, m.StartupMessage):
            self._startup(msg)
        elif isinstance(msg, m.Terminate):
            return False
        elif isinstance(msg, m.Query):
            self._simple(msg.query_string)
        elif isinstance(msg, m.Sync):
            self._skipping = False
            self._ready()
        elif isinstance(msg, m.Flush):
            self._flush()
        elif isinstance(msg, m.Parse | m.Bind | m.Describe | m.Execute | m.Close):
            if not self._skipping:
                self._extended(msg)
        else:
            self._error(PgError("0A000", f"{type(msg).__name__} is not supported by this endpoint"))
            if not self._started:
                return False
        return True

    # -- start-up ---------------------------------------------------------------------

    def _startup(self, msg: m.StartupMessage) -> None:
        params = dict(msg.params)
        options = [k for k in params if k.startswith("_pq_.")]
        if msg.protocol_version != StartupRequestCode.V3_0 or options:
            self._send(m.NegotiateProtocolVersion(newest_minor=0, unrecognized=options))
        user = params.get("user", "")
        database = params.get("database") or user
        if user != USER:
            raise PgError(
                "28000",
                f'role "{user}" does not exist: connect as user {USER} '
                f"(psql -U {USER} -d {DATABASE}; no password)",
                fatal=True,
            )
        if database != DATABASE:
            raise PgError(
                "3D000",
                f'database "{database}" does not exist: the state is database {DATABASE}',
                fatal=True,
            )
        if not self.service.register(self):
            raise PgError(
                "53300",
                f"too many connections: this endpoint takes {self.service.max_connections}",
                fatal=True,
            )
        self._registered = True
        for name, value in params.items():
            if name in ("user", "database", "options", "replication") or name in options:
                continue
            try:
                set_value(self._settings, name, value)
            except QueryError as exc:
                raise PgError("22023", exc.message, fatal=True) from None
        self._send(m.AuthenticationOk())
        for name in REPORTED:
            self._send(m.ParameterStatus(name=name, value=self._settings[name]))
        self._send(m.BackendKeyData(process_id=self.process_id, secret_key=self.secret_key))
        self._started = True
        self._ready()

    # -- simple query -----------------------------------------------------------------

    def _simple(self, sql: str) -> None:
        try:
            answer = self._run(sql)
            if answer.empty:
                self._send(m.EmptyQueryResponse())
            else:
                if answer.has_rows:
                    self._send(self._row_description(answer, []))
                    for row in self._data_rows(answer, []):
                        self._send(row)
                self._complete(answer, answer.tag)
        except (QueryError, PgError) as exc:
            self._fail(exc)
        except ApiError:
            raise
        except Exception as exc:
            self._fail(self._unexpected(exc))
        self._ready()

    # -- extended query ---------------------------------------------------------------

    def _extended(self, msg: m.PGMessage) -> None:
        try:
            if isinstance(msg, m.Parse):
                self._parse(msg)
            elif isinstance(msg, m.Bind):
                self._bind(msg)
            elif isinstance(msg, m.Describe):
                self._describe(msg)
            elif isinstance(msg, m.Execute):
                self._execute(msg)
            elif isinstance(msg, m.Close):
                (self._statements if msg.kind == "S" else self._portals).pop(msg.name, None)
                self._send(m.CloseComplete())
        except (QueryError, PgError) as exc:
            self._fail(exc)
            self._skipping = True
        except ApiError:
            raise
        except Exception as exc:
            self._fail(self._unexpected(exc))
            self._skipping = True

    def _parse(self, msg: m.Parse) -> None:
        if msg.statement and msg.statement in self._statements:
            raise PgError("42P05", f'prepared statement "{msg.statement}" already exists')
        self._statements[msg.statement] = Prepared(
            msg.query, list(msg.param_types), _placeholders(msg.query)
        )
        self._send(m.ParseComplete())

    def _bind(self, msg: m.Bind) -> None:
        prepared = self._prepared(msg.statement)
        values = msg.param_values
        if len(values) != prepared.param_count:
            raise PgError(
                "08P01",
                f"bind message supplies {len(values)} parameters, but prepared statement "
                f'"{msg.statement}" requires {prepared.param_count}',
            )
        formats = _expand(msg.param_formats, len(values), "parameter")
        oids = prepared.param_oids + [0] * (len(values) - len(prepared.param_oids))
        literals = [
            types.literal(types.Param(oid, value, fmt == 1))
            for oid, value, fmt in zip(oids, values, formats, strict=False)
        ]
        if msg.portal and msg.portal in self._portals:
            raise PgError("42P03", f'cursor "{msg.portal}" already exists')
        self._portals[msg.portal] = Portal(prepared.bind(literals), list(msg.result_formats))
        self._send(m.BindComplete())

    def _describe(self, msg: m.Describe) -> None:
        if msg.kind == "S":
            prepared = self._prepared(msg.name)
            oids = prepared.param_oids + [0] * (prepared.param_count - len(prepared.param_oids))
            self._send(m.ParameterDescription(type_oids=[oid or types.TEXT for oid in oids]))
            self._send_description(self._statement_answer(prepared), [])
            return
        portal = self._portal(msg.name)
        if portal.answer is None:
            portal.answer = self._run(portal.sql)
        self._send_description(portal.answer, portal.result_formats)

    def _execute(self, msg: m.Execute) -> None:
        portal = self._portal(msg.portal)
        if portal.done:
            raise PgError("55000", f'portal "{msg.portal}" cannot be run: it ran to its end')
        if portal.answer is None:
            portal.answer = self._run(portal.sql)
        answer = portal.answer
        if answer.empty:
            portal.done = True
            self._send(m.EmptyQueryResponse())
            return
        if not answer.has_rows:
            portal.done = True
            self._complete(answer, answer.tag)
            return
        if portal.rows is None:
            portal.rows = self._data_rows(answer, portal.result_formats)
        end = len(portal.rows) if msg.max_rows <= 0 else portal.sent + msg.max_rows
        batch = portal.rows[portal.sent : end]
        for row in batch:
            self._send(row)
        portal.sent += len(batch)
        if portal.sent < len(portal.rows):
            self._send(m.PortalSuspended())
            return
        portal.done = True
        self._complete(answer, f"SELECT {len(batch)}")

    def _statement_answer(self, prepared: Prepared) -> Answer | None:
        """What a prepared statement answers, without running it (None: no rows)."""
        sql = prepared.bind(["NULL"] * prepared.param_count)
        local = local_answer(sql, dict(self._settings), self.service.duckdb_version)
        if local is not None:
            return Answer.of_local(local) if local.columns else None
        if _is_empty(sql):
            return None
        columns = self.service.describe(rewrite(sql))
        if columns is None:
            return None
        return Answer(
            "SELECT",
            tuple(c.name for c in columns),
            tuple(types.oid_of(c.type) for c in columns),
            pa.table({}),
        )

    def _send_description(self, answer: Answer | None, formats: list[int]) -> None:
        if answer is None or not answer.has_rows:
            self._send(m.NoData())
        else:
            self._send(self._row_description(answer, formats))

    def _prepared(self, name: str) -> Prepared:
        try:
            return self._statements[name]
        except KeyError:
            raise PgError("26000", f'prepared statement "{name}" does not exist') from None

    def _portal(self, name: str) -> Portal:
        try:
            return self._portals[name]
        except KeyError:
            raise PgError("34000", f'portal "{name}" does not exist') from None

    # -- one statement ----------------------------------------------------------------

    def _run(self, sql: str) -> Answer:
        """Answer one statement: the session's own, or the state's through the API's path."""
        local = local_answer(sql, self._settings, self.service.duckdb_version)
        if self._status == _FAILED and (local is None or local.effect not in _ENDS):
            raise PgError(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction "
                "block: send ROLLBACK",
            )
        if local is not None:
            return self._apply(local)
        if _is_empty(sql):
            return Answer("", empty=True)
        result = self.service.query(rewrite(sql))
        return Answer.of_result(result, self.service.options.max_rows)

    def _apply(self, local: Local) -> Answer:
        notices: list[str] = []
        tag = local.tag
        if local.effect == "begin":
            if self._status != _IDLE:
                notices.append("there is already a transaction in progress")
            self._status = _BLOCK
        elif local.effect in _ENDS:
            if self._status == _IDLE:
                notices.append("there is no transaction in progress")
            if self._status == _FAILED:
                tag = "ROLLBACK"
            self._status = _IDLE
        elif local.effect == "discard":
            self._statements.clear()
            self._portals = {k: v for k, v in self._portals.items() if k == ""}
            local_answer("RESET ALL", self._settings, "")
        elif local.effect.startswith("deallocate:"):
            name = local.effect.split(":", 1)[1]
            if name.lower() == "all":
                self._statements.clear()
            elif self._statements.pop(name, None) is None:
                raise PgError("26000", f'prepared statement "{name}" does not exist')
        for name, value in local.changed.items():
            self._send(m.ParameterStatus(name=name, value=value))
        answer = Answer.of_local(local)
        answer.tag = tag
        answer.notices = (*answer.notices, *notices)
        return answer

    # -- output -----------------------------------------------------------------------

    def _row_description(self, answer: Answer, formats: list[int]) -> m.RowDescription:
        codes = _expand(formats, len(answer.oids), "result")
        return m.RowDescription(
            fields=[
                m.FieldDescription(
                    name=name,
                    type_oid=oid,
                    type_size=types.size_of(oid),
                    type_modifier=-1,
                    format_code=code,
                )
                for name, oid, code in zip(answer.names, answer.oids, codes, strict=True)
            ]
        )

    def _data_rows(self, answer: Answer, formats: list[int]) -> list[m.DataRow]:
        assert answer.table is not None
        codes = _expand(formats, len(answer.oids), "result")
        columns = [
            types.encode_column(answer.table.column(i), oid, code == 1)
            for i, (oid, code) in enumerate(zip(answer.oids, codes, strict=True))
        ]
        return [m.DataRow(columns=list(cells)) for cells in zip(*columns, strict=True)]

    def _complete(self, answer: Answer, tag: str) -> None:
        for text in answer.notices:
            self._notice(text)
        if answer.consistency is not None:
            self._settings[CONSISTENCY_PARAMETER] = answer.consistency
            self._send(m.ParameterStatus(name=CONSISTENCY_PARAMETER, value=answer.consistency))
        self._send(m.CommandComplete(tag=tag))

    def _fail(self, exc: QueryError | PgError) -> None:
        if isinstance(exc, QueryError):
            exc = PgError(sqlstate(exc), exc.message)
        if self._status == _BLOCK:
            self._status = _FAILED
        self._error(exc)

    def _error(self, exc: PgError) -> None:
        severity = "FATAL" if exc.fatal else "ERROR"
        self._send(m.ErrorResponse(fields={"S": severity, "V": severity, "C": exc.code,
                                           "M": exc.message}))  # fmt: skip

    def _notice(self, text: str) -> None:
        level = "WARNING" if "transaction" in text else "NOTICE"
        self._send(m.NoticeResponse(fields={"S": level, "V": level, "C": "01000", "M": text}))

    def _unexpected(self, exc: Exception) -> PgError:
        log.exception("pgwire: unexpected error")
        return PgError("XX000", f"unexpected {type(exc).__name__}; see the engine log")

    def _ready(self) -> None:
        self._send(m.ReadyForQuery(status=self._status))
        self._flush()

    def _send(self, msg: m.PGMessage) -> None:
        self._out += self._conn.send(msg)
        if len(self._out) >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            self.sock.sendall(data)


_ENDS = ("commit", "rollback")


def _expand(formats: list[int], count: int, what: str) -> list[int]:
    """Format codes per value: none (all text), one for all, or one each."""
    if not formats:
        return [0] * count
    if len(formats) == 1:
        return formats * count
    if len(formats) != count:
        raise PgError("08P01", f"{len(formats)} {what} format codes for {count} {what}s")
    return list(formats)


def _placeholders(sql: str) -> list[tuple[int, int, int]]:
    """Where `$1`, `$2`, ... stand in `sql` (not inside strings or comments)."""
    try:
        tokens = duckdb.tokenize(sql)
    except (duckdb.Error, RuntimeError):
        return []
    found = []
    for (start, kind), nxt in zip(tokens, [*tokens[1:], None], strict=True):
        if kind != duckdb.token_type.operator or sql[start] != "$" or nxt is None:
            continue
        if nxt[0] != start + 1 or nxt[1] != duckdb.token_type.numeric_const:
            continue
        end = start + 1
        while end < len(sql) and sql[end].isdigit():
            end += 1
        if end > start + 1:
            found.append((start, end, int(sql[start + 1 : end])))
    return found


def _is_empty(sql: str) -> bool:
    """Only blanks, comments and semicolons: Postgres answers EmptyQueryResponse."""
    try:
        tokens = duckdb.tokenize(sql)
    except (duckdb.Error, RuntimeError):
        return False
    return all(kind == duckdb.token_type.comment or sql[start] == ";" for start, kind in tokens)
