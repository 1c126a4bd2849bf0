-- The ids of the rules an alert fired on (a JSON array, in id order), beside its document:
-- the per-rule yield counts alerts and their tasks by rule without reading every document.
ALTER TABLE alerts ADD COLUMN rule_ids TEXT NOT NULL DEFAULT '[]';
UPDATE alerts SET rule_ids = COALESCE(
    (SELECT json_group_array(json_extract(r.value, '$.rule_id'))
     FROM json_each(alerts.doc, '$.rules') AS r),
    '[]');
