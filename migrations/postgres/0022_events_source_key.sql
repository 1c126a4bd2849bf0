-- An event is identified by its department and its id: two departments may number
-- their records alike, and the second one's event must not be dropped as a
-- duplicate. `event_id` leads the key, for the evidence look-ups by id; `source`
-- compares byte by byte like the id (see 0006). The new key becomes the replica
-- identity before the old one goes.
DROP VIEW unmatched_events;
ALTER TABLE events ALTER COLUMN source TYPE TEXT COLLATE "C";
ALTER TABLE events ADD CONSTRAINT events_event_id_source_key UNIQUE (event_id, source);
ALTER TABLE events REPLICA IDENTITY USING INDEX events_event_id_source_key;
ALTER TABLE events DROP CONSTRAINT events_event_id_key;
CREATE VIEW unmatched_events AS
    SELECT event_id, source, kind, occurred_at, person_masked, origin, processed_at
    FROM events WHERE match = 'unmatched';
