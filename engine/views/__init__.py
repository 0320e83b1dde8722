"""Derived views kept current per micro-batch: leaderboards, fraud alerts, account risk.

The engine's contract (see `contract.py` and `maintainer.py`):

    maintainer = ViewMaintainer(views_dir, params)   # params: the views' $parameters
    maintainer.install(con)                       # at start, outside a transaction
    ...
    with store.transaction() as con:              # per batch
        <fold the batch into the mirror tables, keeping each mirror's MirrorDelta>
        stats = maintainer.maintain(con, {str(d.mirror): d for d in deltas}, batch_id, now)

Each view is one SQL file in sql/views/ (file name = view name) whose header says
what it reads and writes (see `sqlfiles.py`); this package knows no view by name:
it only stages inputs, runs the files with bound parameters and reports.
"""

from engine.views.contract import MaintainStats, ViewTiming
from engine.views.maintainer import ViewMaintainer, recompute_all

__all__ = [
    "MaintainStats",
    "ViewMaintainer",
    "ViewTiming",
    "recompute_all",
]
