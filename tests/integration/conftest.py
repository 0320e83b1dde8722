"""The real stack (Postgres, Kafka, Connect with Debezium), started once per test session.

It runs in a fresh home on free ports, so it never touches a developer's own
`.stack/`; the resolved jars are shared. It is stopped at the end, even on failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_ports

from engine.core.config import Settings
from engine.lab.stack.supervisor import Stack


@pytest.fixture(scope="session")
def stack_home() -> Iterator[Path]:
    # Not under pytest's tmp dir: that is private to root, and Postgres runs as
    # an unprivileged user that must reach its data folder.
    home = Path(tempfile.mkdtemp(prefix="changefold-it-"))
    home.chmod(0o755)
    yield home
    if not os.environ.get("CHANGEFOLD_KEEP_TEST_STACK"):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(stack_home: Path) -> Iterator[Settings]:
    """Settings of a running stack; stopped (and its data removed) after the session."""
    pg, kafka, controller, connect = free_ports(4)
    settings = Settings.from_env(
        home=stack_home,
        pg_port=pg,
        kafka_port=kafka,
        kafka_controller_port=controller,
        connect_port=connect,
    )
    st = Stack(settings)
    try:
        st.up(echo=lambda line: print(line, flush=True))
        yield settings
    finally:
        st.down(echo=lambda line: print(line, flush=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder needs the real stack: mark it `integration`."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
