-- An event is identified by its department and its id: two departments may number
-- their records alike, and the second one's event must not be dropped as a
-- duplicate. SQLite cannot change a table's UNIQUE constraint in place, so the table
-- is rebuilt with the same rows and row ids (the commit order the regional leader
-- reads). `event_id` leads the key, for the evidence look-ups by id.
DROP VIEW unmatched_events;
CREATE TABLE events_by_source (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    reported_at INTEGER NOT NULL,
    person_key BLOB,
    person_masked TEXT,
    household_id TEXT,
    region_code TEXT,
    match TEXT NOT NULL,
    payload TEXT NOT NULL,
    origin TEXT NOT NULL,
    processed_at INTEGER NOT NULL,
    txid INTEGER NOT NULL DEFAULT 0,
    UNIQUE (event_id, source)
);
INSERT INTO events_by_source (id, event_id, source, kind, occurred_at, reported_at,
    person_key, person_masked, household_id, region_code, match, payload, origin,
    processed_at, txid)
SELECT id, event_id, source, kind, occurred_at, reported_at, person_key, person_masked,
    household_id, region_code, match, payload, origin, processed_at, txid FROM events;
DROP TABLE events;
ALTER TABLE events_by_source RENAME TO events;
CREATE VIEW unmatched_events AS
    SELECT event_id, source, kind, occurred_at, person_masked, origin, processed_at
    FROM events WHERE match = 'unmatched';
