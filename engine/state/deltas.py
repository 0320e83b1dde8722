"""What the fold hands to batch observers: a mirror's changed rows, before and after."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from engine.decode.model import MirrorName


@dataclass(frozen=True)
class MirrorDelta:
    """The rows of one mirror whose keys a batch changed, before and after the batch.

    Handed to batch observers inside the batch's transaction; the derived views
    (engine.views) take it as it is, by mirror name (`str(mirror)`).
    `before` holds those keys' mirror rows as they were (keys that did not exist
    are absent), `after` as they are now (deleted keys are absent); both have
    the mirror's columns (a consumer should treat a column missing from a frame
    as NULL). A key whose before-row equals its after-row changed nothing (a
    redelivered event). `truncated`: the mirror was emptied in the batch
    (`before` then holds only the changed keys' old rows, not the whole table).
    `columns`: the mirror's columns and DuckDB types (in table order) when the rows
    were read, as the fold knows them (a column DuckDB cannot hand to polars, an
    INTERVAL, is text in the frames but its mirror type here); empty: not known, a
    consumer looks them up.
    """

    mirror: MirrorName
    before: pl.DataFrame = field(repr=False)
    after: pl.DataFrame = field(repr=False)
    truncated: bool = False
    columns: tuple[tuple[str, str], ...] = field(default=(), repr=False)
