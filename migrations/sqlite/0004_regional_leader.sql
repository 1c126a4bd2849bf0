-- Regional detection by one elected instance (detect.placement = "leader"): it reads the
-- events in commit order through a cursor it commits with its results. SQLite has one
-- writer, so row ids follow commit order and `txid` stays 0.
ALTER TABLE events ADD COLUMN txid INTEGER NOT NULL DEFAULT 0;

-- The lease of the instance that runs regional detection, its fencing epoch (raised on
-- every takeover; a commit by a deposed holder fails), and the cursor of the events it
-- has counted.
CREATE TABLE regional_leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    cursor_txid INTEGER NOT NULL DEFAULT 0,
    cursor_id INTEGER NOT NULL DEFAULT 0
);
