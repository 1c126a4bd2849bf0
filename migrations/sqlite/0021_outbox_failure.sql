-- A message the broker can never take (too large, refused as invalid) is recorded
-- with the reason instead of blocking every row behind it; such rows are kept when
-- published rows are purged.
ALTER TABLE outbox ADD COLUMN failure TEXT;
