"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from dashboards_support import Served


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The dashboards' state served by a real query API, for the page tests."""
    from dashboards_support import serving  # streamlit and the views: only when asked for

    with serving(tmp_path, monkeypatch) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_process_registry() -> Iterator[None]:
    """Unit tests decode without a schema registry unless they pass one: an integration
    stack of format avro earlier in the same session set the process's registry, and a
    session-scoped stack is torn down only when the session ends, after these tests."""
    from engine.decode import avro

    with avro.registry_in_use(None):
        yield
