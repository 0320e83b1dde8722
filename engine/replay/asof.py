"""The state as of a past time, for `changefold sql --as-of`.

Chosen approach: replay the CDC history until that time into a cached state
file (`<home>/replays/as-of-<time>.duckdb`), built once per time and reused.
Compared with keeping every row version in the live state, this costs nothing
while the engine runs and answers for any time the topics still retain, with
the same decode, fold and views as the live state; the price is one replay per
new time asked for (see the replay rate in the README).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from engine.core.config import Settings
from engine.core.errors import ReplayError
from engine.ingest.topics import subscription
from engine.replay.bounds import StartSpec, UntilSpec, parse_until
from engine.replay.runner import OpenWriter, Replay
from engine.state.frontier import lsn_text


def cache_path(settings: Settings, until: UntilSpec) -> Path:
    if until.lsn is not None:
        stamp = "lsn-" + lsn_text(until.lsn).replace("/", "-")
    else:
        assert until.time is not None
        stamp = until.time.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return settings.home / "replays" / f"as-of-{stamp}.duckdb"


def state_as_of(settings: Settings, text: str, open_writer: OpenWriter) -> Path:
    """A complete state file as of `text` (an ISO time, or a source LSN `X/Y`), built by
    replay when not cached (with the writer, and so the views, that `open_writer` gives)."""
    until = parse_until(text)
    if until.time is None and until.lsn is None:
        raise ReplayError(
            "--as-of needs a time (ISO 8601, e.g. 2026-11-26T10:15:00Z) or a source LSN "
            "(e.g. 0/1A2B3C8)"
        )
    if until.time is not None and until.time > datetime.now(UTC):
        raise ReplayError(
            f"--as-of {until.time.isoformat()} is in the future; for the current state leave "
            "--as-of out"
        )
    path = cache_path(settings, until)
    sub = subscription(settings.engine.topic_list, settings.connectors_dir)
    result = Replay(settings, path, sub, StartSpec("earliest"), until, open_writer=open_writer).run(
        threading.Event()
    )
    if not result.complete:
        raise ReplayError(f"the replay into {path} did not finish; run the query again")
    return path
