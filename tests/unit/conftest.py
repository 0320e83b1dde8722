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
