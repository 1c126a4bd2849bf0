-- Data-quality findings as recorded by `yujing data-quality --record`: one row per
-- (rule, subject), open from the day it was first found (`since`) until a pass no
-- longer finds it (`resolved_on`: the data was corrected). A finding found again
-- after it was resolved opens anew with a new `since`. Subjects are household
-- numbers, a department with a person's pseudonym (hex) or household, or a
-- department; never a clear resident ID.
CREATE TABLE data_quality_findings (
    finding_key TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    region_code TEXT,
    source TEXT,
    fields TEXT NOT NULL,
    reason TEXT NOT NULL,
    since TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    resolved_on TEXT
);
CREATE INDEX data_quality_findings_open ON data_quality_findings (rule, region_code)
    WHERE resolved_on IS NULL;
