"""Read-only query API over the DuckDB state, served by the engine process.

Integration point for the engine runner (see engine.serve.server):

    from engine.serve import start_api
    from engine.state.reader import StateReader

    api = start_api(settings, StateReader.for_store(store))
    ...
    api.stop()

The names are loaded on first use, so that commands which never serve (stack,
generate, sql) do not import the web framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.serve.server import ApiHandle, start_api

__all__ = ["ApiHandle", "start_api"]

_WHERE = {
    "ApiHandle": "engine.serve.server",
    "start_api": "engine.serve.server",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
