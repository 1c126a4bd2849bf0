-- Campaign tasks list the village's households with recent risk events, to visit first
-- (a JSON array of household ids; empty for household tasks).
ALTER TABLE tasks ADD COLUMN priority_households TEXT NOT NULL DEFAULT '[]';
