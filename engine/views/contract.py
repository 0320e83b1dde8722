"""What the engine hands to the view maintainer per batch, and what it gets back.

The engine's fold applies a batch to the mirror tables, then, in the same open
DuckDB transaction, calls `ViewMaintainer.maintain` with one `TableChanges` per
mirror table the batch touched. The views use `before` to retract what the old
rows contributed and `after` to add what the new rows contribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class TableChanges:
    """The rows of one mirror table whose keys a batch changed, before and after it.

    `table` is the mirror's `schema.table` (e.g. "arcade.scores"). `before` holds
    the mirror rows of the batch's changed keys as they were before the batch
    (keys that did not exist are absent); `after` those keys' rows after the batch
    (deleted keys are absent). Both frames have the mirror's columns (a column may
    be missing from a frame when the mirror did not have it yet). A key whose
    before row equals its after row changed nothing (a redelivered event).
    `truncated`: the table was emptied in this batch; views that read it are
    recomputed from scratch.
    """

    table: str
    before: pl.DataFrame
    after: pl.DataFrame
    truncated: bool = False


@dataclass(frozen=True)
class ViewTiming:
    """One view file's work in a batch."""

    view: str
    ms: float
    #: False when none of the view's input tables changed in the batch.
    ran: bool


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
