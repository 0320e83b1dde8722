"""Where a replay starts and ends in each partition.

Start: `earliest`, an ISO time (first record whose Kafka timestamp is at or
after it), or an offsets file (JSON `{"topic": {"partition": offset}}`).
End: `latest` (the high watermarks when the replay began) or an ISO time; a
time bound also stops each partition at its first change committed after that
time (the records' own `source.ts_ms`), so the result is the state as of T.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from engine.core.errors import ReplayError
from engine.state.frontier import lsn_text

Offsets = dict[tuple[str, int], int]


@dataclass(frozen=True)
class StartSpec:
    kind: str  # "earliest" | "time" | "offsets"
    time: datetime | None = None
    path: Path | None = None

    def __str__(self) -> str:
        if self.kind == "time":
            assert self.time is not None
            return self.time.isoformat()
        if self.kind == "offsets":
            return f"offsets:{self.path}"
        return "earliest"


@dataclass(frozen=True)
class UntilSpec:
    time: datetime | None = None  # None (and no lsn): latest
    #: A source log position (Postgres LSN): the state after the last transaction whose
    #: END is at or before it (needs whole transactions); the topics are read to latest.
    lsn: int | None = None

    def __str__(self) -> str:
        if self.lsn is not None:
            return f"lsn:{lsn_text(self.lsn)}"
        return self.time.isoformat() if self.time else "latest"

    @property
    def ts_ms(self) -> int | None:
        return None if self.time is None else int(self.time.timestamp() * 1000)


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"{what} {text!r} is not a time: use ISO 8601, e.g. 2026-11-26T10:15:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_start(text: str) -> StartSpec:
    if text == "earliest":
        return StartSpec("earliest")
    path = Path(text)
    if path.suffix == ".json" or path.is_file():
        return StartSpec("offsets", path=path)
    return StartSpec("time", time=parse_time(text, "--from"))


_LSN = re.compile(r"^(?:lsn:)?([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int | None:
    """`16/B374D848` (or `lsn:16/B374D848`) as an integer; None when not of that form."""
    found = _LSN.match(text.strip())
    return None if found is None else (int(found.group(1), 16) << 32) | int(found.group(2), 16)


def parse_until(text: str) -> UntilSpec:
    if text == "latest":
        return UntilSpec()
    lsn = parse_lsn(text)
    if lsn is not None:
        return UntilSpec(lsn=lsn)
    return UntilSpec(parse_time(text, "--until"))


def load_offsets_file(path: Path, topics: list[str]) -> Offsets:
    """Read an offsets file and check that it is about exactly these topics."""
    try:
        doc = json.loads(path.read_text())
        found = {(str(t), int(p)): int(o) for t, parts in doc.items() for p, o in parts.items()}
    except FileNotFoundError:
        raise ReplayError(f"offsets file {path} does not exist") from None
    except (ValueError, AttributeError, TypeError) as exc:
        raise ReplayError(
            f'offsets file {path} is not of the form {{"topic": {{"partition": offset}}}}: {exc}'
        ) from None
    other = sorted({t for t, _ in found} - set(topics))
    if other:
        raise ReplayError(
            f"offsets file {path} names topics this replay does not read: {', '.join(other)} "
            f"(it reads {', '.join(topics)}); use an offsets file of the same topics"
        )
    return found


def earliest_time(consumer: KafkaConsumer, tps: list[TopicPartition]) -> datetime | None:
    """Timestamp of the oldest record still retained in any of the partitions."""
    found = consumer.offsets_for_times({tp: 0 for tp in tps})
    stamps = [v.timestamp for v in found.values() if v is not None]
    return datetime.fromtimestamp(min(stamps) / 1000, UTC) if stamps else None


def resolve(
    consumer: KafkaConsumer,
    tps: list[TopicPartition],
    start: StartSpec,
    until: UntilSpec,
) -> tuple[Offsets, Offsets]:
    """Start and end offset per partition (end exclusive: the high watermark)."""
    begin = {(tp.topic, tp.partition): int(o) for tp, o in consumer.beginning_offsets(tps).items()}
    end = {(tp.topic, tp.partition): int(o) for tp, o in consumer.end_offsets(tps).items()}
    oldest = earliest_time(consumer, tps)
    for spec_time, flag in ((start.time, "--from"), (until.time, "--until")):
        if spec_time is not None and oldest is not None and spec_time < oldest:
            raise ReplayError(
                f"{flag} {spec_time.isoformat()} is before the retained history: the earliest "
                f"event still in the topics is from {oldest.isoformat()}"
            )
    if start.kind == "earliest":
        first = dict(begin)
    elif start.kind == "time":
        assert start.time is not None
        ms = int(start.time.timestamp() * 1000)
        found = consumer.offsets_for_times({tp: ms for tp in tps})
        first = {
            (tp.topic, tp.partition): (v.offset if v is not None else end[(tp.topic, tp.partition)])
            for tp, v in found.items()
        }
    else:
        assert start.path is not None
        stored = load_offsets_file(start.path, sorted({tp.topic for tp in tps}))
        first = {k: stored.get(k, begin[k]) for k in begin}
        for k, offset in first.items():
            if offset < begin[k]:
                raise ReplayError(
                    f"offsets file {start.path}: {k[0]}[{k[1]}] offset {offset} is no longer "
                    f"retained (the oldest is {begin[k]})"
                )
    return first, end
