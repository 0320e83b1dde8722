"""Workload generators for the demo domains (`changefold generate bank|arcade`).

Vocabulary, used the same way everywhere in this package and in the CLI output:

* **event**: one row change in a *captured* table: one row inserted, updated or
  deleted. It is what Debezium turns into one change event on a Kafka topic. The
  rate (`--rate`, events/s) and every count the generator prints are in events.
  Writes to tables that are not captured (the fraud ground truth) are not events.
* **Postgres transaction** (`PgTxn`): the statements a real application would
  commit together, e.g. a transfer = debit row + credit row + two balance updates
  = 4 events in one transaction.

Determinism: a run is planned, not improvised. `plan.py` drives a discrete-event
simulation from a seeded `random.Random`; every id, timestamp and value comes from
the plan, none from the wall clock or from Postgres defaults. The simulated clock
starts at a fixed epoch (2024-01-01T00:00:00Z) or, when the schema already holds
rows, at the next whole hour after the newest timestamp there, and it advances
with the planned events, much faster than wall time (a 60 s run covers simulated
days, so that habits, settlement delays and fraud windows are meaningful). Ids
continue after the largest id already in each table. So: the same seed on the
same starting database gives identical rows; on a freshly loaded schema the rows
are identical byte for byte. Pacing only decides *when* a planned transaction is
written, never *what* is written; a run stops after `rate x duration` events.
"""
