"""End-to-end tests: the real stack, `changefold demo` against it, and headless Chromium.

The stack here is this folder's own (module scope, fresh home, free ports) and is
stopped before the integration tests start theirs, so that the two never run at
once on a small machine. The browser is Debian's `chromium` driven by Playwright
(`executable_path`, no browser download).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from engine.core.config import Settings
from engine.lab.stack.supervisor import Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from e2e_support import CHROMIUM, CHROMIUM_ARGS, DemoRun, wait_for
from support import free_ports


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder needs the real stack and a browser: mark it `e2e`."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def stack() -> Iterator[Settings]:
    """Settings of a running stack of this module's own; stopped and removed after it.
    Its format is CHANGEFOLD_FORMAT's (with avro, its registry on a free port too)."""
    home = Path(tempfile.mkdtemp(prefix="changefold-e2e-"))
    home.chmod(0o755)  # Postgres runs as an unprivileged user that must reach it
    pg, kafka, controller, connect, registry = free_ports(5)
    settings = Settings.from_env(
        home=home, pg_port=pg, kafka_port=kafka, kafka_controller_port=controller,
        connect_port=connect, registry_port=registry,
    )  # fmt: skip
    st = Stack(settings)
    try:
        st.up(echo=lambda line: print(line, flush=True))
        yield settings
    finally:
        st.down(echo=lambda line: print(line, flush=True))
        if not os.environ.get("CHANGEFOLD_KEEP_TEST_STACK"):
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def demo(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """`changefold demo` against the running stack, on free API and dashboard ports.

    At the end it gets SIGTERM, must exit 0 within the deadline, stop its processes
    and leave the stack running, as it found it."""
    api_port, dashboard_port, pgwire_port = free_ports(3)
    settings = stack.with_(
        api_port=api_port, dashboard_port=dashboard_port, pgwire_port=pgwire_port
    )
    env = settings.child_env("api_port", "dashboard_port", "pgwire_port")
    output = tmp_path_factory.mktemp("demo") / "demo.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "demo", "--rate", "40", "--fraud-rate", "0.3"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    run = DemoRun(settings, proc, output)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"changefold demo exited ({proc.returncode}):\n{run.text()}")
            return "changefold demo is running" in run.text()

        wait_for("the demo's 'running' line", up, timeout_s=300)
        assert settings.stack.dashboard_url in run.text()
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            status = proc.wait(timeout=10)
        print(run.text())
    assert status == 0, f"the demo exited {status} after SIGTERM:\n{run.text()}"
    assert "demo stopped" in run.text()
    for url in (f"{settings.api.url}/health", f"{settings.stack.dashboard_url}/_stcore/health"):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)
    report = Stack(stack).status()
    assert report["healthy"], f"the demo must leave the running stack up: {report}"


def _in_ci() -> bool:
    """CI sets CI=true; there a missing browser is a broken machine, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _no_browser(why: str) -> NoReturn:
    """Skip on a developer's machine; fail in CI, where .ci/run installs the browser."""
    if _in_ci():
        pytest.fail(f"{why} (CI=true: the browser tests must run here)", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's package) through Playwright."""
    if not CHROMIUM.exists():
        _no_browser(
            f"no Chromium at {CHROMIUM}: run scripts/prereqs.sh (or make prereqs), which "
            "installs Debian's chromium, or set CHANGEFOLD_CHROMIUM"
        )
    try:
        from playwright import sync_api
    except ImportError:
        _no_browser("Playwright is not installed: make install (the dev extra has it)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
