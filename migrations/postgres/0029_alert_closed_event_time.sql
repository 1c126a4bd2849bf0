-- When a decision closed an alert, in event time: the latest event time the stream
-- had accepted when the decision reached it. The cool-down counts from it, so that it
-- compares event times with event times (closed_at is the decision's wall-clock time).
ALTER TABLE alerts ADD COLUMN closed_event_at TIMESTAMPTZ;
