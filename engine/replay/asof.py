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
from engine.replay.bounds import StartSpec, parse_until
from engine.replay.runner import OpenWriter, Replay


def cache_path(settings: Settings, when: datetime) -> Path:
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return settings.home / "replays" / f"as-of-{stamp}.duckdb"


def state_as_of(settings: Settings, text: str, open_writer: OpenWriter) -> Path:
    """A complete state file as of `text` (an ISO time), built by replay when not cached
    (with the writer, and so the views, that `open_writer` gives)."""
    until = parse_until(text)
    if until.time is None:
        raise ReplayError("--as-of needs a time (ISO 8601), e.g. 2026-11-26T10:15:00Z")
    if until.time > datetime.now(UTC):
        raise ReplayError(
            f"--as-of {until.time.isoformat()} is in the future; for the current state leave "
            "--as-of out"
        )
    path = cache_path(settings, until.time)
    sub = subscription(settings.engine.topic_list, settings.connectors_dir)
    result = Replay(settings, path, sub, StartSpec("earliest"), until, open_writer=open_writer).run(
        threading.Event()
    )
    if not result.complete:
        raise ReplayError(f"the replay into {path} did not finish; run the query again")
    return path
