"""Hook the derived views into a fold: the one place `run` and `replay` both call.

The views are installed (their tables created, every view file dry-run, so a
broken file stops the start with its name and DuckDB's message), then maintained
inside every batch's transaction by a `ViewsObserver` on the state writer.
"""

from __future__ import annotations

from engine.core.config import Settings
from engine.state.store import Store
from engine.state.writer import StateWriter
from engine.views.maintainer import ViewMaintainer
from engine.views.observer import ViewsObserver


def attach_views(settings: Settings, store: Store, writer: StateWriter) -> ViewsObserver:
    maintainer = ViewMaintainer(settings.views_sql_dir, settings.views.params())
    with store.lock:
        maintainer.install(store.connection)
    # The maintainer itself warns about transfers left unbalanced for many batches.
    observer = ViewsObserver(maintainer)
    writer.add_observer(observer)
    return observer
