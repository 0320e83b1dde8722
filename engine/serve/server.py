"""Serve the query API from a background thread of the engine process (uvicorn).

The engine runner calls, once its Store is open and migrated:

    from engine.serve import StateReader, start_api

    api = start_api(settings, StateReader.for_store(store))
    try:
        ...  # the fold loop
    finally:
        api.stop()          # before store.close()

`start_api` binds the socket itself, so a busy port fails at once with a clear
ApiError instead of a dead thread; port 0 picks a free port (see `api.url`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from engine.core.config import Settings
from engine.core.errors import ApiError
from engine.serve.app import ApiOptions, DeclaredLengthLimit, build_app
from engine.serve.guard import watchdog
from engine.state.reader import StateReader

log = logging.getLogger(__name__)


class ApiHandle:
    """A running API server; `stop()` shuts it down and closes the reader's cursor."""

    def __init__(
        self,
        server: uvicorn.Server,
        thread: threading.Thread,
        sock: socket.socket,
        reader: StateReader,
    ) -> None:
        self._server = server
        self._thread = thread
        self._socket = sock
        self.reader = reader
        address = sock.getsockname()
        self.host: str = address[0]
        self.port: int = address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, interrupt the running queries and wait for them, close the reader.

        The queries answer 503 at once; the reader (a cursor of the engine's
        connection) is closed only once none of its cursors runs, since DuckDB
        refuses to close a connection that is busy ("connection is busy with another
        call"), which at exit ends the process with SIGABRT.
        """
        self._server.should_exit = True
        guard = watchdog()
        interrupted = guard.stop_all(self.reader)
        if interrupted:
            log.info("query API: interrupted %d running queries to shut down", interrupted)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(2.0)
        self._socket.close()
        # A call DuckDB cannot interrupt (one huge value) still ends by itself.
        while not guard.wait_idle(self.reader, timeout_s):
            log.warning(
                "query API: waiting for %d query(ies) that DuckDB has not stopped yet",
                guard.running(self.reader),
            )
        self.reader.close()
        guard.forget(self.reader)
        log.info("query API on %s stopped", self.url)

    def __enter__(self) -> ApiHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_api(
    settings: Settings,
    reader: StateReader,
    *,
    host: str | None = None,
    port: int | None = None,
    startup_timeout_s: float = 10.0,
) -> ApiHandle:
    """Start serving `reader` on `host:port` (default: the settings' api_host/api_port)."""
    host = host or settings.api.api_host
    port = settings.api.api_port if port is None else port
    sock = _bind(host, port)
    options = ApiOptions.from_settings(settings)
    config = uvicorn.Config(
        DeclaredLengthLimit(build_app(reader, options), options.max_body_bytes),
        log_config=None,  # keep the process's logging as the CLI configured it
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="changefold-api", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ApiError(
                f"the query API did not start on {host}:{sock.getsockname()[1]} within "
                f"{startup_timeout_s:g} s; see the log above"
            )
        time.sleep(0.01)
    handle = ApiHandle(server, thread, sock, reader)
    log.info("query API serving %s on %s", reader.state_file, handle.url)
    return handle


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ApiError(
            f"the query API cannot listen on {host}:{port}: {exc.strerror or exc}. "
            "Another process uses the port: stop it, or choose another with "
            "CHANGEFOLD_API_PORT"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
