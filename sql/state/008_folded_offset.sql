-- Where each partition has been read to, next to where to resume (see
-- engine/state/held.py). Events waiting for their source transaction are kept in
-- the engine's memory, so `next_offset` (the resume position) stays at the first
-- of them, while everything before `folded_offset` was folded, dead-lettered or is
-- held: records between the two that come again after a restart are only
-- re-checked for their transaction (events of applied transactions are dropped),
-- never applied twice. NULL: the same as next_offset.
ALTER TABLE _changefold.offsets ADD COLUMN folded_offset BIGINT;
