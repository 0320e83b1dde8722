"""Builds the engine's parts from the settings: the only place that picks the parts.

`run` folds a consumer group's topics into the state; `replay` folds ranges of
the same topics into another state file. Both use the same fold step and loop
(engine.ingest); what differs is wired here: which source, which group's
offsets, whether the derived views are maintained.

The parts (DuckDB, Polars, kafka-python behind them) are imported inside the
functions that build them: importing this module costs nothing, so the commands
that use it load quickly for `--help`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.config import Settings

if TYPE_CHECKING:
    from engine.ingest.runner import Echo, Runner
    from engine.ingest.source import BatchSource
    from engine.ingest.topics import Subscription
    from engine.replay.bounds import StartSpec, UntilSpec
    from engine.replay.runner import Replay
    from engine.state.store import Store
    from engine.state.transactions import TxnRules
    from engine.state.writer import StateWriter

log = logging.getLogger(__name__)

#: A partition: (topic, partition number).
Key = tuple[str, int]


def transaction_rules(settings: Settings, subscription: Subscription) -> TxnRules | None:
    """With CHANGEFOLD_TRANSACTIONS=on (the default), events of the prefixes whose
    transaction topic is followed wait for their whole transaction; with off, and for a
    subscription that follows none, every event is applied as it comes."""
    from engine.state.transactions import TxnRules

    if settings.engine.transactions != "on":
        return None
    if not subscription.transactional:
        if subscription.topics:
            log.warning(
                "no <prefix>.transaction topic among %s: changes are applied one by one, and "
                "a reader can see part of a source transaction (add --topic "
                "<prefix>.transaction for whole transactions)",
                subscription.describe(),
            )
        return None
    return TxnRules(subscription.transactional, subscription.follows)


def state_writer(
    settings: Settings,
    store: Store,
    group_id: str,
    subscription: Subscription,
    *,
    views: bool,
) -> StateWriter:
    """A writer of `group_id`'s offsets into `store`, with whole transactions for the
    subscription's transactional prefixes and the derived views on or off."""
    from engine.app.wiring import attach_views
    from engine.state.writer import StateWriter

    writer = StateWriter(
        store,
        group_id,
        keep_batches=settings.engine.metrics_keep_batches,
        transactions=transaction_rules(settings, subscription),
        held_memory_bytes=settings.engine.txn_hold_memory_mb * 2**20,
    )
    if views:
        attach_views(settings, store, writer)
    return writer


def redrive_writer(settings: Settings, store: Store, group_id: str) -> StateWriter:
    """A writer for `changefold dlq --redrive`: the derived views on, every event applied
    as it comes (a dead letter's transaction was applied, or is held, without it)."""
    from engine.app.wiring import attach_views
    from engine.state.writer import StateWriter

    writer = StateWriter(store, group_id, keep_batches=settings.engine.metrics_keep_batches)
    attach_views(settings, store, writer)
    return writer


def history_reader(settings: Settings) -> Callable[[Mapping[Key, tuple[int, int]]], Iterator[Any]]:
    """Reads ranges of partitions from Kafka (a consumer of no group, opened per call)."""
    from engine.ingest.kafka_group import open_consumer
    from engine.ingest.kafka_ranges import read_ranges

    def read(ranges: Mapping[Key, tuple[int, int]]) -> Iterator[Any]:
        consumer = open_consumer(settings, "changefold-history", group_id=None)
        try:
            yield from read_ranges(consumer, ranges, max_wait_ms=settings.engine.batch_max_wait_ms)
        finally:
            consumer.close()

    return read


def group_members(settings: Settings, subscription: Subscription) -> Callable[[str], BatchSource]:
    """Opens the consumer group member of each worker."""
    from engine.ingest.kafka_group import KafkaGroupMember

    def open_member(name: str) -> BatchSource:
        return KafkaGroupMember(
            settings,
            name,
            topics=subscription.topics,
            pattern=subscription.pattern,
            commit_mode=settings.engine.commit_mode,
        )

    return open_member


def engine_runner(
    settings: Settings,
    store: Store,
    subscription: Subscription,
    *,
    views: bool = True,
    echo: Echo | None = None,
    idle_exit_s: float | None = None,
) -> Runner:
    """What `changefold run` runs: the group's members folding into `store`."""
    from engine.ingest.handover import MergeLimits
    from engine.ingest.runner import Runner

    return Runner(
        state_writer(settings, store, settings.engine.group_id, subscription, views=views),
        group_members(settings, subscription),
        workers=settings.engine.workers,
        echo=echo,
        idle_exit_s=idle_exit_s,
        # What arrives while a batch folds is folded next, in one batch (up to the limits).
        merge=MergeLimits(settings.engine.batch_max_records, settings.engine.batch_max_bytes),
    )


def replay_job(
    settings: Settings,
    target: Path,
    subscription: Subscription,
    start: StartSpec,
    until: UntilSpec,
    *,
    views: bool = True,
) -> Replay:
    """What `changefold replay` runs: the topics' ranges folded into `target`."""
    from engine.replay.runner import Replay

    if start.kind != "earliest" and settings.engine.transactions == "on":
        log.warning(
            "a replay from %s may start inside source transactions: their events before "
            "the range never come, so they stay invisible, and so does every later "
            "transaction that shares a partition with them; replay from earliest for "
            "whole transactions",
            start,
        )
    return Replay(
        settings,
        target,
        subscription,
        start,
        until,
        open_writer=lambda store, group: state_writer(
            settings, store, group, subscription, views=views
        ),
    )
