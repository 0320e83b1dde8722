"""The read-only Postgres wire-protocol endpoint: psql, psycopg, JDBC, Grafana, DBeaver.

`changefold run` serves it next to the HTTP query API, on CHANGEFOLD_API_HOST
(loopback by default: like the API it has no password) and
CHANGEFOLD_PGWIRE_PORT (55433; 0: not served). The user and the database are
both `changefold`:

    psql -h 127.0.0.1 -p 55433 -U changefold -d changefold -c 'select ...'

It answers from the same database instance as the API, through the API's own
path (engine.serve.query.run_query): the same statement checks, read-only
transaction, row cap (CHANGEFOLD_API_MAX_ROWS), statement timeout
(CHANGEFOLD_API_STATEMENT_TIMEOUT_S), concurrency limit
(CHANGEFOLD_API_MAX_CONCURRENT_QUERIES, counted for this endpoint on its own)
and frontier: each answer is the state after one source transaction, named in
the `changefold.consistency` parameter. A write is refused with the API's
message. The protocol's messages are pygwire's (engine.serve.pgwire_session);
one thread serves each connection.

    handle = start_pgwire(settings, StateReader.for_store(store))
    ...
    handle.stop()       # before the store closes; closes the reader too
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from types import TracebackType

from engine.core.config import Settings
from engine.core.errors import ApiError
from engine.serve.app import ApiOptions
from engine.serve.pgwire_session import DATABASE, USER, PgwireService, Session
from engine.state.reader import StateReader

log = logging.getLogger(__name__)

#: Connections served at once; more are refused (SQLSTATE 53300).
MAX_CONNECTIONS = 64


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Session(self.request, self.server.service).serve()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], service: PgwireService) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.service = service
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        log.exception("pgwire: connection from %s failed", client_address)


class PgwireHandle:
    """A running endpoint; `stop()` closes it, its connections and its reader."""

    def __init__(self, server: _Server, thread: threading.Thread, reader: StateReader) -> None:
        self._server = server
        self._thread = thread
        self.reader = reader
        address = server.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        """A libpq connection URI for the endpoint."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{USER}@{host}:{self.port}/{DATABASE}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, close every connection (a running query ends at its timeout
        at the latest), close the reader."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout_s)
        service = self._server.service
        for session in service.sessions():
            session.close()
        deadline = time.monotonic() + timeout_s
        while service.sessions() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.reader.close()
        log.info("Postgres endpoint on %s:%s stopped", self.host, self.port)

    def __enter__(self) -> PgwireHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_pgwire(
    settings: Settings,
    reader: StateReader,
    *,
    host: str | None = None,
    port: int | None = None,
) -> PgwireHandle:
    """Serve `reader` on `host:port` (default: the settings' api_host and pgwire_port).

    Binds at once, so a busy port fails here with an ApiError. An explicit
    `port=0` picks a free port (see `handle.port`); the caller decides whether to
    serve at all (pgwire_port 0 means not served: see `enabled`).
    """
    host = host or settings.api.api_host
    port = settings.api.pgwire_port if port is None else port
    service = PgwireService(
        reader, ApiOptions.from_settings(settings), max_connections=MAX_CONNECTIONS
    )
    try:
        server = _Server((host, port), service)
    except OSError as exc:
        raise ApiError(
            f"the Postgres endpoint cannot listen on {host}:{port}: {exc.strerror or exc}. "
            "Another process uses the port: stop it, choose another with "
            "CHANGEFOLD_PGWIRE_PORT, or set CHANGEFOLD_PGWIRE_PORT=0 not to serve it"
        ) from None
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="changefold-pgwire",
        daemon=True,
    )
    thread.start()
    handle = PgwireHandle(server, thread, reader)
    log.info("Postgres endpoint serving %s on %s", reader.state_file, handle.url)
    return handle


def enabled(settings: Settings) -> bool:
    """Whether `changefold run` serves the endpoint (CHANGEFOLD_PGWIRE_PORT is not 0)."""
    return settings.api.pgwire_port != 0
