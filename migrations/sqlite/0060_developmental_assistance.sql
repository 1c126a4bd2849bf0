-- 已实施开发式帮扶: the household has a developmental assistance measure (work, industry,
-- skills) recorded, read from the registry file's optional column; the sweep for
-- labour-capable monitored households without one reads it.
ALTER TABLE households ADD COLUMN developmental_assistance INTEGER NOT NULL DEFAULT 0;
