"""What the engine hands to the view maintainer per batch, and what it gets back.

The engine's fold applies a batch to the mirror tables, then, in the same open
DuckDB transaction, calls `ViewMaintainer.maintain` with the batch's
`MirrorDelta`s (engine.state.deltas) by mirror name (`schema.table`). The views
use `before` to retract what the old rows contributed and `after` to add what the
new rows contribute; a truncated mirror makes the views that read it rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ViewTiming:
    """One view file's work in a batch."""

    view: str
    ms: float
    #: False when none of the view's input tables changed in the batch.
    ran: bool


#: The per-batch figures of `MaintainStats` that view files feed through their
#: `-- counts:` and `-- returns:` headers (see engine.views.sqlfiles).
FIGURES = ("new_alerts", "conservation_violations")


@dataclass(frozen=True)
class MaintainStats:
    """What one `maintain` call did, for the engine's batch metrics."""

    batch_id: int
    #: False when the batch had already been maintained (a replay): nothing was done.
    applied: bool
    ms: float
    views: tuple[ViewTiming, ...] = field(default_factory=tuple)
    #: Alerts raised for the first time by this batch.
    new_alerts: int = 0
    #: Completed transfers touched by this batch whose two legs do not both exist
    #: or do not sum to zero in the bank mirror after the batch (money conservation).
    conservation_violations: int = 0
