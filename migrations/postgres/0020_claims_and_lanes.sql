-- Claims on Kafka partitions: each assignment raises the partition's epoch, and a
-- batch commits its position only under the epoch it was read with (the row is locked
-- until the commit, so a claim waits for a commit in flight and a commit after a
-- claim is refused): an instance evicted from the group can never overwrite the
-- position of the partition's new owner.
CREATE TABLE source_claims (
    source_key TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL
);

-- Each input's event-time progress (a file, a partition): whether it still holds the
-- regional watermark and the latest event time committed from it. Written with the
-- batches; the regional leader reads the rows of finished transactions (`txid` below
-- the oldest one running) in the same snapshot as the events it has read up to.
CREATE TABLE source_lanes (
    lane TEXT PRIMARY KEY,
    holding BOOLEAN NOT NULL,
    max_event_time BIGINT,
    txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    updated_at TIMESTAMPTZ NOT NULL
);
