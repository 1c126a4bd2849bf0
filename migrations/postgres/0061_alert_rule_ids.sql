-- The ids of the rules an alert fired on (a JSON array, in id order), beside its document:
-- the per-rule yield counts alerts and their tasks by rule without reading every document.
ALTER TABLE alerts ADD COLUMN rule_ids TEXT NOT NULL DEFAULT '[]';
UPDATE alerts SET rule_ids = COALESCE(
    (SELECT jsonb_agg(r -> 'rule_id')::text
     FROM jsonb_array_elements(alerts.doc::jsonb -> 'rules') AS r),
    '[]');
