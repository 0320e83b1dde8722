"""ManagedProcess: pid files, stale pid files after a crash, graceful stop."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.lab.stack.process import ManagedProcess, wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)", "changefold-test-marker"]


def test_start_stop_and_pid_file(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", tmp_path, marker="changefold-test-marker")
    assert proc.pid() is None
    pid = proc.start(SLEEPER)
    try:
        assert proc.pid() == pid
        assert proc.pid_file.read_text().strip() == str(pid)
    finally:
        assert proc.stop(timeout_s=5) is True
    assert proc.pid() is None
    assert not proc.pid_file.exists()
    assert proc.stop() is False  # stopping a stopped process is fine


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    proc = ManagedProcess("ghost", tmp_path, marker="changefold-test-marker")
    tmp_path.mkdir(exist_ok=True)
    # A pid that exists but is not ours (this test process has no marker in argv).
    import os

    proc.pid_file.write_text(f"{os.getpid()}\n")
    assert proc.pid() is None
    assert not proc.pid_file.exists()
    proc.pid_file.write_text("not a pid\n")
    assert proc.pid() is None


def test_killed_process_is_detected(tmp_path: Path) -> None:
    proc = ManagedProcess("victim", tmp_path, marker="changefold-test-marker")
    pid = proc.start(SLEEPER)
    proc.kill()
    ok, _ = wait_until(lambda: not proc.alive(pid), timeout_s=5)
    assert ok
    assert proc.pid() is None


def test_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess("talker", tmp_path, marker="changefold-test-marker")
    pid = proc.start(
        [
            sys.executable,
            "-c",
            "print('\\n'.join(f'line {i}' for i in range(100)))",
            "changefold-test-marker",
        ]
    )
    ok, _ = wait_until(lambda: not proc.alive(pid), timeout_s=10)
    assert ok
    tail = proc.tail(3).splitlines()
    assert tail == ["line 97", "line 98", "line 99"]


def test_wait_until_reports_the_last_error() -> None:
    def boom() -> bool:
        raise ConnectionRefusedError("nope")

    ok, err = wait_until(boom, timeout_s=0.3, interval_s=0.1)
    assert not ok
    assert "ConnectionRefusedError: nope" in err
