"""PostgreSQL as a plain process: initdb once, logical WAL, loopback only, demo schemas.

changefold may run as root (CI does); PostgreSQL refuses that, so the server then
runs as an unprivileged OS user (`CHANGEFOLD_PG_OS_USER`, default `postgres`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from engine.core.config import Settings
from engine.core.errors import StackError
from engine.lab.stack.process import ManagedProcess, run_as

log = logging.getLogger(__name__)

#: Server settings passed on every start, so a changed port takes effect at once.
SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "max_connections": "100",
    "fsync": "on",
}

_LOADED_TABLE = "changefold_loaded_sql"


class Postgres:
    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "postgres"
        self.data = self.root / "data"
        self.process = ManagedProcess(
            "postgres",
            settings.home / "run",
            marker=str(self.data),
            stop_signal=signal.SIGINT,
        )

    @property
    def port(self) -> int:
        return self.settings.stack.pg_port

    # -- binaries and users ----------------------------------------------------------

    def bin_dir(self) -> Path:
        if self.settings.stack.pg_bin_dir:
            return self.settings.stack.pg_bin_dir
        found = shutil.which("postgres") or shutil.which("initdb")
        if found:
            return Path(found).resolve().parent
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/postgres"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        if versions:
            return versions[-1].parent
        raise StackError(
            self.name,
            "no PostgreSQL server binaries found (looked on PATH and in /usr/lib/postgresql/*/bin)",
            fix="install them (apt-get install postgresql) or set CHANGEFOLD_PG_BIN_DIR to the "
            "folder holding initdb and postgres",
        )

    def _os_user(self) -> str | None:
        return self.settings.stack.pg_os_user if os.geteuid() == 0 else None

    # -- lifecycle -------------------------------------------------------------------

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def init(self) -> None:
        """initdb into the stack home (once)."""
        if self.initialized():
            return
        initdb = self.bin_dir() / "initdb"
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(mode=0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.settings.stack.pg_password + "\n")
        user = self._os_user()
        if user is not None:
            shutil.chown(self.data, user=user, group=None)
            shutil.chown(pwfile, user=user, group=None)
        cmd = [
            str(initdb),
            "-D",
            str(self.data),
            "-U",
            self.settings.stack.pg_user,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
        ]
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=run_as(user) if user is not None else None,
        )
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            raise StackError(
                self.name,
                f"initdb failed (exit {result.returncode})",
                seen=(result.stdout + result.stderr).strip()[-2000:],
                fix="read the message above; the data folder was removed, so `stack up` can "
                "simply be run again once it is fixed",
            )

    def start(self) -> int:
        self.init()
        argv = [str(self.bin_dir() / "postgres"), "-D", str(self.data), "-c", f"port={self.port}"]
        for key, value in SERVER_OPTIONS.items():
            argv += ["-c", f"{key}={value}"]
        return self.process.start(argv, user=self._os_user())

    def healthy(self) -> bool:
        with psycopg.connect(
            self.settings.stack.pg_conninfo("postgres"), connect_timeout=2
        ) as conn:
            conn.execute("SELECT 1")
        return True

    # -- database and schemas ----------------------------------------------------------

    def ensure_database(self) -> list[str]:
        """Create the database and load sql/source/*.sql files not loaded yet.

        Returns the names of the files loaded now. A file is loaded once; a file that
        changed since it was loaded is reported, not re-run (that needs `down --purge`).
        """
        s = self.settings
        with psycopg.connect(s.stack.pg_conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (s.stack.pg_database,)
            ).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(s.stack.pg_database))
                )
        loaded_now: list[str] = []
        with psycopg.connect(s.stack.pg_conninfo()) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS public.{} (name text PRIMARY KEY, "
                    "sha256 text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(_LOADED_TABLE))
            )
            done: dict[str, str] = dict(
                conn.execute(
                    sql.SQL("SELECT name, sha256 FROM public.{}").format(
                        sql.Identifier(_LOADED_TABLE)
                    )
                ).fetchall()
            )
            conn.commit()
            for path in sorted(s.source_sql_dir.glob("*.sql")):
                text = path.read_text()
                digest = hashlib.sha256(text.encode()).hexdigest()
                if path.name in done:
                    if done[path.name] != digest:
                        log.warning(
                            "%s changed since it was loaded; run `changefold stack down --purge` "
                            "and `stack up` to load the new version",
                            path,
                        )
                    continue
                try:
                    conn.execute(text.encode())
                    conn.execute(
                        sql.SQL("INSERT INTO public.{} (name, sha256) VALUES (%s, %s)").format(
                            sql.Identifier(_LOADED_TABLE)
                        ),
                        (path.name, digest),
                    )
                    conn.commit()
                except psycopg.Error as exc:
                    conn.rollback()
                    raise StackError(
                        self.name,
                        f"loading {path} failed: {exc}".strip(),
                        fix="fix the SQL file and run `changefold stack up` again (nothing of it "
                        "was kept)",
                    ) from exc
                loaded_now.append(path.name)
        return loaded_now

    def slots(self) -> list[dict[str, Any]]:
        """Replication slots and the WAL each one retains (bytes)."""
        with psycopg.connect(self.settings.stack.pg_conninfo(), connect_timeout=2) as conn:
            rows = conn.execute(
                "SELECT slot_name, plugin, active, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
                "FROM pg_replication_slots ORDER BY slot_name"
            ).fetchall()
        return [
            {"slot": r[0], "plugin": r[1], "active": r[2], "retained_wal_bytes": r[3]} for r in rows
        ]
