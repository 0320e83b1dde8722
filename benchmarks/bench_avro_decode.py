"""CPU per record of the decoder for the same change events as JSON and as Avro.

The synthetic bank generator (engine.lab.synthetic.BankTransactions) writes --events
change events as the JsonConverter does (embedded schemas, deletes with their
tombstones); engine.lab.avrowire re-encodes each as Connect's Avro converter would
(Confluent-framed, schemas given to an in-memory registry). Each round decodes all of
them in batches of --batch records, in turn:

  json    the JSON messages (the engine's format=json path);
  splitter  the Avro messages rebuilt as Connect JSON and parsed as JSON (the former
          Avro path: `Decoder(avro_direct=False)`);
  direct  the Avro messages read a group at once (engine.decode.avro_block) and their
          columns built from the Avro values (engine.decode.avro_columns);
  one-by-one  the direct path with the group read one message at a time with fastavro
          (what a group that cannot be read at once costs, e.g. one with a malformed
          message).

    .venv/bin/python benchmarks/bench_avro_decode.py [--events 30000] [--batch 2000]
        [--rounds 5]

CPU time is the process's (time.process_time), each mode with a fresh Decoder (its
schema caches warmed by one untimed batch); the modes alternate within each round,
so a noisy machine hits them alike. Printed: per mode the median CPU us per record
over the rounds, and the median of the per-round ratios. Also the cost per value of
reading alone: AvroSplitter.split (read + rebuilt as JSON), fastavro's read, the block
read; and per event, the transaction planner's read of the `transaction` block
(txmeta.event_txn: in place for JSON, a whole Avro read one by one; avro_event_txns: a
batch at once). No servers involved.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator, Sequence

from engine.decode import avro, avro_block, decoder, txmeta
from engine.decode.avro import AvroSplitter, SchemaRegistry
from engine.decode.decoder import Decoder
from engine.decode.records import RawRecord
from engine.lab.avrowire import AvroEncoder
from engine.lab.synthetic import BankTransactions

TOPIC = "benchavro.bank.transactions"
MODES = ("json", "splitter", "direct", "one-by-one")


def records(events: int) -> tuple[list[RawRecord], list[RawRecord], SchemaRegistry]:
    """`events` synthetic messages as JSON records and as Avro records (schema ids 1, 2)."""
    messages: list[tuple[bytes, bytes | None]] = []
    for m in BankTransactions(TOPIC, keys=5_000):
        messages.append((m.key, m.value))
        if len(messages) >= events:
            break
    first = next((k, v) for k, v in messages if v is not None)
    enc = AvroEncoder()
    enc.prepare(*first)
    assert enc.key is not None and enc.value is not None
    enc.key.schema_id, enc.value.schema_id = 1, 2
    registry = SchemaRegistry.of({1: enc.key.text, 2: enc.value.text})
    as_json = [RawRecord(TOPIC, 0, i, k, v) for i, (k, v) in enumerate(messages)]
    as_avro = [RawRecord(TOPIC, 0, i, *enc.encode(k, v)) for i, (k, v) in enumerate(messages)]
    return as_json, as_avro, registry


def _decoder(mode: str, registry: SchemaRegistry) -> Decoder:
    if mode == "json":
        return Decoder(registry)
    return Decoder(registry, avro_direct=mode != "splitter")


@contextlib.contextmanager
def _mode(mode: str) -> Iterator[None]:
    """one-by-one: the decoder's read of a whole group refused, as for a bad message."""
    if mode != "one-by-one":
        yield
        return
    whole = decoder._avro_block_columns
    decoder._avro_block_columns = lambda *_args: None
    try:
        yield
    finally:
        decoder._avro_block_columns = whole


def decode_cpu_us(decoder: Decoder, batches: Sequence[Sequence[RawRecord]], total: int) -> float:
    """CPU us per record of decoding every batch (after one untimed warm-up batch)."""
    decoder.decode(batches[0])
    gc.collect()
    start = time.process_time()
    for batch in batches:
        decoder.decode(batch)
    return (time.process_time() - start) * 1e6 / total


def read_cpu_us(read: Callable[[bytes], object], values: Sequence[bytes]) -> float:
    start = time.process_time()
    for v in values:
        read(v)
    return (time.process_time() - start) * 1e6 / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    as_json, as_avro, registry = records(args.events)
    inputs = {m: as_json if m == "json" else as_avro for m in MODES}
    total = len(as_json)
    # The same events check out alike before anything is timed.
    decoded = {}
    for m in MODES:
        with _mode(m):
            decoded[m] = _decoder(m, registry).decode(inputs[m])
    for m in MODES:
        assert not decoded[m].dead_letters, (m, decoded[m].dead_letters[:1])
        assert decoded[m].tables[0].frame.equals(decoded["json"].tables[0].frame), m

    per_mode: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        order = MODES if r % 2 == 0 else tuple(reversed(MODES))
        for m in order:
            data = inputs[m]
            batches = [data[i : i + args.batch] for i in range(0, total, args.batch)]
            with _mode(m):
                per_mode[m].append(decode_cpu_us(_decoder(m, registry), batches, total))
        print(
            f"round {r + 1}: "
            + "  ".join(f"{m} {per_mode[m][-1]:.1f}" for m in MODES)
            + " us/record",
            flush=True,
        )

    splitter = AvroSplitter(registry)
    values = [r.value for r in as_avro if r.value is not None]
    split_us = [read_cpu_us(splitter.split, values) for _ in range(3)]
    read_us = [read_cpu_us(splitter.read, values) for _ in range(3)]
    text = registry.schema(2).block_schema
    block_us = []
    for _ in range(3):
        start = time.process_time()
        for i in range(0, len(values), args.batch):
            avro_block.read(text, [v[5:] for v in values[i : i + args.batch]])
        block_us.append((time.process_time() - start) * 1e6 / len(values))

    json_values = [r.value for r in as_json if r.value is not None]
    avro.use_registry(registry)
    txn_json = statistics.median(read_cpu_us(txmeta.event_txn, json_values) for _ in range(3))
    txn_one = statistics.median(read_cpu_us(txmeta.event_txn, values) for _ in range(3))
    txn_batch = []
    for _ in range(3):
        start = time.process_time()
        for i in range(0, len(values), args.batch):
            txmeta.avro_event_txns(values[i : i + args.batch])
        txn_batch.append((time.process_time() - start) * 1e6 / len(values))
    avro.use_registry(None)

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(per_mode[a], per_mode[b], strict=True))

    print(
        f"\n{total:,} records ({len(values):,} change events, the rest tombstones), "
        f"batches of {args.batch:,}, {args.rounds} rounds; CPU us per record (median):"
    )
    for m in MODES:
        print(f"  {m:<10} {statistics.median(per_mode[m]):7.1f}")
    print("ratios (median of the per-round ratios):")
    print(f"  splitter / json    {ratio('splitter', 'json'):.2f}")
    print(f"  direct / json      {ratio('direct', 'json'):.2f}")
    print(f"  direct / splitter  {ratio('direct', 'splitter'):.2f}")
    print(f"  one-by-one / json  {ratio('one-by-one', 'json'):.2f}")
    print(
        "reading one Avro value (us, median of 3): "
        f"AvroSplitter.split {statistics.median(split_us):.1f}, "
        f"fastavro {statistics.median(read_us):.1f}, "
        f"block read {statistics.median(block_us):.1f}"
    )
    print(
        "transaction block per event (us, median of 3): "
        f"JSON in place {txn_json:.1f}, Avro one by one {txn_one:.1f}, "
        f"Avro a batch at once {statistics.median(txn_batch):.1f}"
    )


if __name__ == "__main__":
    main()
