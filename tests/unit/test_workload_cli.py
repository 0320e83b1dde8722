"""`changefold generate`: bad input gives a clear message and exit code (no servers)."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from engine.app.cli import main
from engine.core.config import Settings
from engine.core.errors import WorkloadError, WorkloadUsageError
from engine.lab.workload.runner import WorkloadOptions, run_workload


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, port: int | None = None) -> tuple[int, str]:
    env = {"CHANGEFOLD_PG_PORT": str(port or _closed_port())}
    result = CliRunner().invoke(main, ["generate", *args], env=env)
    return result.exit_code, result.output


def test_unknown_domain_is_a_usage_error_naming_the_domains() -> None:
    code, out = _run("casino")
    assert code == 2
    assert "casino" in out and "bank" in out and "arcade" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate must be more than 0"),
        (["--rate", "-5"], "--rate must be more than 0"),
        (["--duration", "-1"], "--duration must be 0"),
        (["--fraud-rate", "0.9"], "--fraud-rate is a share"),
        (["--hot-keys", "1"], "--hot-keys is a share"),
        (["--population", "3"], "--population must be at least 10"),
        (["--reconnect-timeout", "-1"], "--reconnect-timeout must be 0"),
    ],
)
def test_out_of_range_options_are_usage_errors(args: list[str], message: str) -> None:
    code, out = _run("bank", *args)
    assert code == 2, out
    assert message in out


def test_unreachable_postgres_names_the_address_and_the_fix() -> None:
    port = _closed_port()
    code, out = _run("arcade", "--duration", "1", port=port)
    assert code == 1
    assert f"cannot connect to Postgres at 127.0.0.1:{port}" in out
    assert "changefold stack up" in out
    assert "Traceback" not in out


def test_the_api_raises_typed_errors() -> None:
    settings = Settings.from_env({}, pg_port=_closed_port())
    with pytest.raises(WorkloadUsageError):
        run_workload(settings, WorkloadOptions("bank", rate=0))
    with pytest.raises(WorkloadError) as err:
        run_workload(settings, WorkloadOptions("bank", rate=10, duration_s=1))
    assert not isinstance(err.value, WorkloadUsageError)


def test_help_defines_an_event_and_the_exit_codes() -> None:
    result = CliRunner().invoke(main, ["generate", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "An event is one row inserted, updated or deleted in a captured table" in text
    assert "exits 130" in text
