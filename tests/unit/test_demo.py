"""`changefold demo`'s process handling, without the stack: children in their own process
groups, stopped in order and killed when they hang, a dead child named with its log,
ports checked before anything starts."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from engine.app.cli import main
from engine.app.commands.demo import Child, Demo, DemoOptions, child_env, children, died
from engine.core.config import Settings
from engine.core.errors import DemoError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    """Settings of a demo in tmp_path whose ports are free unless given."""
    values: dict[str, object] = {"api_port": free_port(), "dashboard_port": free_port()}
    values.update(overrides)
    return Settings.from_env({}, home=tmp_path / "home", **values)


def python_child(tmp_path: Path, code: str, name: str = "worker") -> Child:
    return Child(name, [sys.executable, "-c", code], tmp_path / f"demo-{name}.log")


def wait_for(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_child_runs_in_its_own_process_group_and_stops(tmp_path: Path) -> None:
    child = python_child(tmp_path, "import time; print('ready', flush=True); time.sleep(60)")
    child.start(dict(os.environ), cwd=tmp_path)
    assert child.pid is not None
    wait_for(lambda: "ready" in child.tail())
    assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    started = time.monotonic()
    child.stop()
    assert child.exited() == -signal.SIGTERM
    assert time.monotonic() - started < 5
    assert "demo starts worker" in child.log_file.read_text()


def test_a_child_that_ignores_its_signal_is_killed_with_its_group(tmp_path: Path) -> None:
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('grandchild', p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = python_child(tmp_path, code)
    child.start(dict(os.environ), cwd=tmp_path)
    wait_for(lambda: "grandchild" in child.tail())
    grandchild = int(child.tail().split()[-1])
    child.stop(timeout_s=0.5)
    assert child.exited() == -signal.SIGKILL
    wait_for(lambda: not psutil.pid_exists(grandchild) or
             psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE)  # fmt: skip


def test_a_dead_child_is_named_with_the_end_of_its_log(tmp_path: Path) -> None:
    lines = "".join(f"print('line {i}')\n" for i in range(30))
    child = python_child(tmp_path, lines + "raise SystemExit(3)", name="engine")
    child.start(dict(os.environ), cwd=tmp_path)
    wait_for(lambda: child.exited() is not None)
    error = died(child, child.exited() or 0)
    text = str(error)
    assert text.startswith("engine exited (status 3)")
    assert str(child.log_file) in text
    assert "line 29" in text and "line 5\n" not in text
    assert "changefold demo" in text


def test_children_share_the_settings_and_bind_loopback(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, api_port=58123, dashboard_port=58124, pg_port=58125)
    procs = children(settings, DemoOptions(rate=40, fraud_rate=0.1, seed=7))
    assert [c.name for c in procs] == ["engine", "bank generator", "arcade generator", "dashboards"]
    engine, bank, arcade, dashboards = procs
    assert engine.argv[1:] == ["-m", "engine", "run"]
    assert bank.argv[3:] == [
        *["generate", "bank", "--rate", "40", "--duration", "0", "--seed", "7"],
        *["--fraud-rate", "0.1"],
    ]
    assert arcade.argv[3:] == [
        "generate",
        "arcade",
        "--rate",
        "40",
        "--duration",
        "0",
        "--seed",
        "7",
    ]
    assert bank.stop_signal == arcade.stop_signal == signal.SIGINT  # their Ctrl-C
    argv = dashboards.argv
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == "58124"
    assert argv[argv.index("run") + 1] == str(settings.project_dir / "dashboards" / "app.py")
    for child in procs:
        assert child.log_file.parent == settings.home / "run"
        assert child.log_file.name.startswith("demo-")
    env = child_env(settings)
    assert env["CHANGEFOLD_API_PORT"] == "58123"
    assert env["CHANGEFOLD_PG_PORT"] == "58125"
    assert env["CHANGEFOLD_HOME"] == str(settings.home)
    assert env["CHANGEFOLD_STATE_PATH"] == str(settings.engine.state_path)


@pytest.mark.parametrize("busy", ["api_port", "dashboard_port"])
def test_a_busy_port_stops_the_demo_before_anything_starts(tmp_path: Path, busy: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = settings_for(tmp_path, **{busy: port})
        run = Demo(settings, DemoOptions(), echo=lambda _line: None)
        with pytest.raises(DemoError, match=rf"port {port} .* is in use"):
            run.start()
    assert run.running == [] and run.started_components == []
    assert not (settings.home / "postgres").exists(), "the stack must not start"
    run.close()  # nothing to undo, and no error


def test_the_cli_reports_a_busy_port_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = CliRunner().invoke(
            main,
            ["demo", "--dashboard-port", str(port)],
            env={
                "CHANGEFOLD_HOME": str(tmp_path / "home"),
                "CHANGEFOLD_API_PORT": str(free_port()),
            },
        )
    assert result.exit_code == 1, result.output
    assert f"error: port {port} for the dashboards is in use" in result.output
    assert "CHANGEFOLD_DASHBOARD_PORT" in result.output
    assert "Traceback" not in result.output
