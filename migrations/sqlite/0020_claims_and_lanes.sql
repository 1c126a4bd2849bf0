-- Claims on Kafka partitions: each assignment raises the partition's epoch, and a
-- batch commits its position only under the epoch it was read with, so an instance
-- evicted from the group can never overwrite the position of the partition's new owner.
CREATE TABLE source_claims (
    source_key TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    holder TEXT NOT NULL,
    claimed_at TEXT NOT NULL
);

-- Each input's event-time progress (a file, a partition): whether it still holds the
-- regional watermark and the latest event time committed from it. SQLite has one
-- writer, so `txid` stays 0 and a read transaction sees whole batches.
CREATE TABLE source_lanes (
    lane TEXT PRIMARY KEY,
    holding INTEGER NOT NULL,
    max_event_time INTEGER,
    txid INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
