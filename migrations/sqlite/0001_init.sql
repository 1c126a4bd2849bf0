-- yujing store, SQLite. Times: events use integer milliseconds since the epoch (compact,
-- sortable); other times are RFC 3339 text as sqlx writes it. Resident IDs never appear in
-- clear: members and events hold the HMAC pseudonym and the masked form only.

CREATE TABLE regions (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    level TEXT NOT NULL,
    parent TEXT,
    longitude REAL,
    latitude REAL
);

CREATE TABLE households (
    household_id TEXT PRIMARY KEY,
    region_code TEXT NOT NULL,
    members INTEGER NOT NULL,
    labour_capable INTEGER NOT NULL,
    annual_net_income_yuan REAL NOT NULL,
    status TEXT NOT NULL,
    monitoring_type TEXT,
    identified_on TEXT,
    risk_eliminated_on TEXT,
    safety_net INTEGER NOT NULL,
    dibao INTEGER NOT NULL,
    tekun INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX households_region ON households (region_code);

CREATE TABLE members (
    person_key BLOB PRIMARY KEY,
    person_masked TEXT NOT NULL,
    household_id TEXT NOT NULL,
    relation TEXT NOT NULL,
    labour_capable INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX members_household ON members (household_id);

-- Every accepted event: the dedupe record, the household state's source on restart,
-- and the evidence behind alerts. Rows append in arrival order (rowid); the unique
-- index on event_id is the dedupe key and stays small enough to be cached.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    reported_at INTEGER NOT NULL,
    person_key BLOB,
    person_masked TEXT,
    household_id TEXT,
    region_code TEXT,
    match TEXT NOT NULL,
    payload TEXT NOT NULL,
    origin TEXT NOT NULL,
    processed_at INTEGER NOT NULL
);

CREATE VIEW unmatched_events AS
    SELECT event_id, source, kind, occurred_at, person_masked, origin, processed_at
    FROM events WHERE match = 'unmatched';

CREATE TABLE alerts (
    alert_id TEXT PRIMARY KEY,
    household_id TEXT NOT NULL,
    region_code TEXT NOT NULL,
    episode INTEGER NOT NULL,
    level TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    closed_at TEXT,
    doc TEXT NOT NULL,
    -- Internal: where each part of the alert was judged (see AlertJudgements).
    judgements TEXT NOT NULL
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (household_id) WHERE status = 'open';
CREATE INDEX alerts_region ON alerts (region_code);

CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    alert_id TEXT,
    signal_id TEXT,
    household_id TEXT,
    village_code TEXT NOT NULL,
    level TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    outcome TEXT,
    outcome_note TEXT,
    assignee TEXT
);
CREATE INDEX tasks_village ON tasks (village_code, status);

CREATE TABLE dead_letters (
    dead_letter_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    stage TEXT NOT NULL,
    rule TEXT NOT NULL,
    field TEXT,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL,
    raw_truncated INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL,
    event_id TEXT,
    source TEXT,
    kind TEXT,
    received_at TEXT NOT NULL
);

-- Where each input stands: a file's byte offset and line, or a partition's next
-- offset. Written in the same transaction as the results it produced.
CREATE TABLE source_positions (
    source_key TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    line INTEGER NOT NULL,
    fingerprint TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- Outputs waiting for Kafka: written in the batch's transaction, published by the
-- relay with deterministic ids (at least once), then marked sent.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    message_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;

-- Who changed what (谁修改谁负责).
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
