"""`changefold demo`: the stack, both generators, the engine and the dashboards, in one go.

Order: the local stack comes up (the components that already ran are noted), then
the engine (`changefold run`, which serves the query API), the bank and arcade
generators, and Streamlit bound to 127.0.0.1. Each child runs in its own process
group with its output in `<home>/run/demo-<name>.log`, so the terminal's Ctrl-C
reaches only the demo, which then stops its children in order (dashboards,
generators, engine) and stops the stack components it started, none other.

A child that exits while the demo runs stops the demo: the error names it and
shows the last lines of its log.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import click

from engine.core.config import Settings
from engine.core.errors import DemoError
from engine.lab.stack.process import port_in_use

Echo = Callable[[str], None]

#: Seconds a child may take to stop after its signal before it is killed.
STOP_TIMEOUT_S = 20.0


@dataclass
class Child:
    """A process the demo started: its own process group, output into a log file."""

    name: str
    argv: list[str]
    log_file: Path
    #: Signal that asks it to finish: generators take SIGINT as Ctrl-C.
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str], cwd: Path) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            out.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} demo starts {self.name}\n".encode()
            )
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exited(self) -> int | None:
        """The exit status once it ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the process group to finish; kill it after `timeout_s`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(self.stop_signal)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
        # the group may hold grandchildren that outlive their parent
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def died(child: Child, status: int) -> DemoError:
    return DemoError(
        f"{child.name} exited (status {status}) while the demo was running; the last "
        f"lines of {child.log_file}:\n"
        + "\n".join("    " + line for line in child.tail().splitlines())
        + "\nFix what the log says, then start `changefold demo` again."
    )


@dataclass(frozen=True)
class DemoOptions:
    #: Events per second of each generator.
    rate: float = 100.0
    #: Share of bank transactions in injected fraud.
    fraud_rate: float = 0.05
    #: Seed of both generators' plans. A new one each run: a plan's ids and device
    #: UUIDs come from its seed, so the same seed on a database that already holds
    #: its rows would write them again.
    seed: int = 1


def children(settings: Settings, options: DemoOptions) -> list[Child]:
    """The demo's processes, in start order."""
    run_dir = settings.home / "run"
    o = options
    cli = [sys.executable, "-m", "engine"]
    app = str(settings.project_dir / "dashboards" / "app.py")
    streamlit = (
        f"--server.address 127.0.0.1 --server.port {settings.stack.dashboard_port} "
        "--server.headless true --browser.gatherUsageStats false "
        "--client.toolbarMode viewer --server.fileWatcherType none"
    )
    return [
        Child("engine", [*cli, "run"], run_dir / "demo-engine.log"),
        Child(
            "bank generator",
            [
                *cli,
                *f"generate bank --rate {o.rate:g} --duration 0 --seed {o.seed} "
                f"--fraud-rate {o.fraud_rate:g}".split(),
            ],
            run_dir / "demo-generate-bank.log",
            stop_signal=signal.SIGINT,
        ),
        Child(
            "arcade generator",
            [*cli, *f"generate arcade --rate {o.rate:g} --duration 0 --seed {o.seed}".split()],
            run_dir / "demo-generate-arcade.log",
            stop_signal=signal.SIGINT,
        ),
        Child(
            "dashboards",
            [sys.executable, "-m", "streamlit", "run", app, *streamlit.split()],
            run_dir / "demo-dashboards.log",
        ),
    ]


def child_env(settings: Settings) -> dict[str, str]:
    """The demo's environment with the settings the children must share made explicit."""
    env = settings.child_env(
        "project_dir", "api_host", "api_port", "pgwire_port", "state_path", "dashboard_port",
        "leaderboard_window_min",
    )  # fmt: skip
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Demo:
    """`start()` brings everything up, `watch()` runs until interrupted or a child dies,
    `close()` undoes what `start()` did."""

    def __init__(self, settings: Settings, options: DemoOptions, echo: Echo) -> None:
        self.settings = settings
        self.echo = echo
        # kafka-python, psycopg and httpx load when a demo starts, not for `demo --help`.
        from engine.lab.stack.supervisor import Stack

        self.stack = Stack(settings)
        self.started_components: list[str] = []
        self.children = children(settings, options)
        self.running: list[Child] = []

    # -- start -----------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        for name, port, var in (
            ("query API", s.api.api_port, "CHANGEFOLD_API_PORT"),
            ("Postgres endpoint", s.api.pgwire_port, "CHANGEFOLD_PGWIRE_PORT"),
            ("dashboards", s.stack.dashboard_port, "CHANGEFOLD_DASHBOARD_PORT"),
        ):
            if port and port_in_use(port):
                raise DemoError(
                    f"port {port} for the {name} is in use on 127.0.0.1 (another demo, or "
                    f"`changefold run`?). Stop that program, or pick another port with {var}."
                )
        before = {c.name for c in self.stack.components if c.process.pid() is not None}
        self.echo(f"stack in {s.home}" + (" (already running)" if len(before) == 3 else ""))
        try:
            self.stack.up(echo=self.echo)
        finally:
            self.started_components = [
                c.name
                for c in self.stack.components
                if c.name not in before and c.process.pid() is not None
            ]
        env = child_env(s)
        for child in self.children:
            child.start(env, cwd=s.project_dir)
            self.running.append(child)
            self.echo(f"  {child.name:<17} started (pid {child.pid}, log {child.log_file})")
            if child.name == "engine":
                self._await(child, f"{s.api.url}/health", "its query API")
            elif child.name == "dashboards":
                self._await(child, f"{s.stack.dashboard_url}/_stcore/health", "its web server")

    def _await(self, child: Child, url: str, what: str) -> None:
        import httpx

        deadline = time.monotonic() + self.settings.stack.startup_timeout_s
        while True:
            status = child.exited()
            if status is not None:
                raise died(child, status)
            with suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{child.name}: {what} did not answer at {url} within "
                    f"{self.settings.stack.startup_timeout_s:g} s; the last lines of "
                    f"{child.log_file}:\n"
                    + "\n".join("    " + line for line in child.tail().splitlines())
                )
            time.sleep(0.25)

    # -- run -------------------------------------------------------------------------

    def watch(self) -> None:
        """Until interrupted: a child that exits is an error."""
        while True:
            time.sleep(0.5)
            for child in self.running:
                status = child.exited()
                if status is not None:
                    raise died(child, status)

    # -- stop ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the children (dashboards, generators, engine), then what the demo started
        of the stack; a component that ran before the demo keeps running. Idempotent."""
        for child in reversed(self.running):
            if child.exited() is None:
                self.echo(f"  {child.name:<17} stopping")
            child.stop()
        for comp in reversed(self.stack.components):
            if comp.name in self.started_components:
                self.echo(f"  {comp.name:<17} stopping (the demo started it)")
                comp.process.stop(timeout_s=60.0)
        if self.stack.components and not self.started_components:
            self.echo("  the stack keeps running (it ran before the demo)")


@contextmanager
def _interrupted_by(*signals: int) -> Iterator[None]:
    """Turn these signals into KeyboardInterrupt (SIGTERM stops the demo like Ctrl-C)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _ignoring(*signals: int) -> Iterator[None]:
    """While cleaning up (bounded by the stop timeouts), more Ctrl-C must not cut it short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_EPILOG = """\
\b
Ports (environment variables, defaults), all on 127.0.0.1:
  CHANGEFOLD_DASHBOARD_PORT   dashboards (58501)
  CHANGEFOLD_API_PORT         the engine's query API (58000)
  and the stack's: see `changefold stack --help`.

\b
Logs: <home>/run/demo-engine.log, demo-generate-bank.log, demo-generate-arcade.log,
demo-dashboards.log (the stack's own logs are next to them).
"""


@click.command(epilog=_EPILOG)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=100.0,
    show_default=True,
    help="Events per second of each generator (bank and arcade).",
)
@click.option(
    "--fraud-rate",
    type=click.FloatRange(min=0, max=1),
    default=0.05,
    show_default=True,
    help="Share of bank transactions that belong to injected fraud.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    help="Seed of the generators' plans (default: a new one each run).",
)
@click.option("--dashboard-port", type=click.IntRange(1, 65535), help="Port of the dashboards.")
@click.pass_obj
def demo(
    settings: Settings,
    rate: float,
    fraud_rate: float,
    seed: int | None,
    dashboard_port: int | None,
) -> None:
    """Run everything: the stack, the bank and arcade generators, the engine and the
    dashboards; print the dashboards' address.

    Ctrl-C (or SIGTERM) stops what the demo started and leaves the stack as it
    found it: components that ran before keep running, the others stop. If a
    process dies, the demo stops and shows the last lines of its log.
    """
    if dashboard_port is not None:
        settings = settings.with_(dashboard_port=dashboard_port)
    if seed is None:
        seed = secrets.randbelow(1_000_000_000)
    click.echo(f"generators: {rate:g} events/s each, fraud rate {fraud_rate:g}, seed {seed}")
    run = Demo(settings, DemoOptions(rate, fraud_rate, seed), echo=click.echo)
    stops = (signal.SIGINT, signal.SIGTERM)
    try:
        with _interrupted_by(*stops):
            run.start()
            click.echo(
                "\nchangefold demo is running:\n"
                f"  dashboards  {settings.stack.dashboard_url}\n"
                f"  query API   {settings.api.url}  (try: changefold sql "
                '"SELECT * FROM live.leaderboard ORDER BY rank LIMIT 5")\n'
                + (
                    f"  SQL clients psql -h {settings.api.api_host} -p {settings.api.pgwire_port} "
                    "-U changefold -d changefold\n"
                    if settings.api.pgwire_port
                    else ""
                )
                + f"  logs        {settings.home / 'run'}/demo-*.log\n"
                "Press Ctrl-C to stop.\n"
            )
            run.watch()
    except KeyboardInterrupt:
        click.echo("\nstopping the demo")
    finally:
        with _ignoring(*stops):
            run.close()
    click.echo("demo stopped")
