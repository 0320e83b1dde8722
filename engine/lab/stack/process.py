"""A background server process with a pid file and a log file under the stack home.

Liveness is judged by the pid *and* the process's command line (which carries a
marker naming the component), so a stale pid file left by a crash, or a pid reused
by an unrelated process, never counts as running.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from engine.core.errors import StackError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManagedProcess:
    """One server of the stack. `marker` must appear in its command line."""

    name: str
    run_dir: Path
    marker: str
    stop_signal: int = signal.SIGTERM

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the live process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _is_ours(pid, self.marker):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> int:
        """Start in its own session, output appended to the log file; returns the pid."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        preexec: Callable[[], None] | None = None
        if user is not None:
            preexec = run_as(user)
        with self.log_file.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            except OSError as exc:
                raise StackError(
                    self.name,
                    f"could not run {argv[0]}: {exc.strerror}",
                    fix="check that the program is installed and on PATH",
                ) from exc
        # Until the child has exec'd, its command line is still ours (no marker): wait
        # for the exec so that liveness checks right after start are not fooled.
        deadline = time.monotonic() + 10.0
        while not _is_ours(proc.pid, self.marker) and proc.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.pid_file.write_text(f"{proc.pid}\n")
        log.info("%s started, pid %d, log %s", self.name, proc.pid, self.log_file)
        return proc.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop gracefully, then kill after `timeout_s`. Returns True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        with suppress(psutil.NoSuchProcess):
            psutil.Process(pid).send_signal(self.stop_signal)
        # Poll rather than wait(): a server we started in an earlier command is not our
        # child, and where nobody reaps orphans it lingers as a zombie once it has exited.
        stopped, _ = wait_until(lambda: not _is_ours(pid, self.marker), timeout_s=timeout_s)
        if not stopped:
            log.warning("%s did not stop within %.0f s, killing pid %d", self.name, timeout_s, pid)
            with suppress(psutil.NoSuchProcess):
                _kill_tree(psutil.Process(pid))
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash would (used by tests)."""
        pid = self.pid()
        if pid is not None:
            _kill_tree(psutil.Process(pid))

    def alive(self, pid: int) -> bool:
        return _is_ours(pid, self.marker)

    def tail(self, lines: int = 25) -> str:
        """The last lines of the log, for error messages."""
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return "(no log yet)"
        return "\n".join(text.splitlines()[-lines:])


def _is_ours(pid: int, marker: str) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return any(marker in part for part in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _kill_tree(proc: psutil.Process) -> None:
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = [proc]
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            p.kill()
    wait_until(lambda: not any(_alive(p) for p in procs), timeout_s=10, interval_s=0.05)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_as(user: str) -> Callable[[], None]:
    """A preexec function that switches the child process to `user`."""
    import grp
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StackError(
            "postgres",
            f"changefold runs as root and PostgreSQL refuses to; the OS user {user!r} to run it "
            "as does not exist",
            fix="create it (Debian's postgresql package does: apt-get install postgresql) or set "
            "CHANGEFOLD_PG_OS_USER to an existing unprivileged user",
        ) from None
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]

    def demote() -> None:
        os.setgroups(groups)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return demote


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    interval_s: float = 0.25,
    while_alive: Callable[[], bool] | None = None,
    progress: Callable[[float, str], None] | None = None,
    progress_every_s: float = 10.0,
) -> tuple[bool, str]:
    """Poll `check` until it is true or the deadline passes.

    Returns (ok, last_error): the error the last failed check raised, for messages.
    `while_alive` stops the wait early when the process being waited for died.
    `progress` gets (seconds waited, last error) every `progress_every_s` meanwhile.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    next_progress = t0 + progress_every_s
    last_error = ""
    while True:
        try:
            if check():
                return True, ""
        except Exception as exc:  # a check that cannot connect yet is simply "not yet"
            last_error = f"{type(exc).__name__}: {exc}"
            log.debug("not ready yet: %s", last_error)
        if while_alive is not None and not while_alive():
            return False, last_error
        now = time.monotonic()
        if now >= deadline:
            return False, last_error
        if progress is not None and now >= next_progress:
            progress(now - t0, last_error)
            next_progress = now + progress_every_s
        time.sleep(interval_s)


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a library's logger for the duration (expected failures while polling)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(before)
