-- Regional detection by one elected instance (detect.placement = "leader"): it reads the
-- events every instance committed, in commit order, through a cursor it commits with its
-- results. `txid` is the writing transaction's id: every row whose txid lies below the
-- oldest transaction still running is committed, so a cursor over (txid, id) never
-- skips a row that commits late.
ALTER TABLE events ADD COLUMN txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX events_feed ON events (txid, id);

-- The lease of the instance that runs regional detection, its fencing epoch (raised on
-- every takeover; a commit by a deposed holder fails), and the cursor of the events it
-- has counted.
CREATE TABLE regional_leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    cursor_txid BIGINT NOT NULL DEFAULT 0,
    cursor_id BIGINT NOT NULL DEFAULT 0
);
