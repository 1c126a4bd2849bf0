-- yujing store, PostgreSQL. The same tables as SQLite, with PostgreSQL types:
-- event times as BIGINT milliseconds (compact, sortable), other times TIMESTAMPTZ.
-- Resident IDs never appear in clear: members and events hold the HMAC pseudonym
-- and the masked form only.

CREATE TABLE regions (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    level TEXT NOT NULL,
    parent TEXT,
    longitude DOUBLE PRECISION,
    latitude DOUBLE PRECISION
);

CREATE TABLE households (
    household_id TEXT PRIMARY KEY,
    region_code TEXT NOT NULL,
    members BIGINT NOT NULL,
    labour_capable BIGINT NOT NULL,
    annual_net_income_yuan DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    monitoring_type TEXT,
    identified_on DATE,
    risk_eliminated_on DATE,
    safety_net BOOLEAN NOT NULL,
    dibao BOOLEAN NOT NULL,
    tekun BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX households_region ON households (region_code);

CREATE TABLE members (
    person_key BYTEA PRIMARY KEY,
    person_masked TEXT NOT NULL,
    household_id TEXT NOT NULL,
    relation TEXT NOT NULL,
    labour_capable BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX members_household ON members (household_id);

-- Every accepted event: the dedupe record, the household state's source on restart,
-- and the evidence behind alerts.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    reported_at BIGINT NOT NULL,
    person_key BYTEA,
    person_masked TEXT,
    household_id TEXT,
    region_code TEXT,
    match TEXT NOT NULL,
    payload TEXT NOT NULL,
    origin TEXT NOT NULL,
    processed_at BIGINT NOT NULL
);

CREATE VIEW unmatched_events AS
    SELECT event_id, source, kind, occurred_at, person_masked, origin, processed_at
    FROM events WHERE match = 'unmatched';

CREATE TABLE alerts (
    alert_id TEXT PRIMARY KEY,
    household_id TEXT NOT NULL,
    region_code TEXT NOT NULL,
    episode BIGINT NOT NULL,
    level TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    closed_at TIMESTAMPTZ,
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
    due_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    outcome TEXT,
    outcome_note TEXT,
    assignee TEXT
);
CREATE INDEX tasks_village ON tasks (village_code, status);
CREATE INDEX tasks_alert ON tasks (alert_id);

CREATE TABLE dead_letters (
    dead_letter_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    stage TEXT NOT NULL,
    rule TEXT NOT NULL,
    field TEXT,
    reason TEXT NOT NULL,
    raw BYTEA NOT NULL,
    raw_truncated BOOLEAN NOT NULL,
    raw_bytes BIGINT NOT NULL,
    event_id TEXT,
    source TEXT,
    kind TEXT,
    received_at TIMESTAMPTZ NOT NULL
);

-- Where each input stands: a file's byte offset and line, or a partition's next
-- offset. Written in the same transaction as the results it produced.
CREATE TABLE source_positions (
    source_key TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    line BIGINT NOT NULL,
    fingerprint TEXT,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Outputs waiting for Kafka: written in the batch's transaction, published by the
-- relay with deterministic ids (at least once), then marked sent.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    message_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;

-- Who changed what (谁修改谁负责).
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
