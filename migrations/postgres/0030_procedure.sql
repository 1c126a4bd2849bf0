-- The API, the accounts and the identification procedure (识别程序).
--
-- Accounts: a name, a role (county / township / village / department / admin) and a
-- region whose subtree is the account's scope; the token is kept only as its SHA-256.
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    region_code TEXT NOT NULL,
    source TEXT,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TIMESTAMPTZ
);

-- The procedure on each task: its stage, an optimistic-concurrency version, the
-- budget (pass on within 2 days, decide within 15), the overdue flag the timer sets,
-- and the village's findings and proposal as JSON documents.
ALTER TABLE tasks ADD COLUMN stage TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE tasks ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN budget_from TIMESTAMPTZ;
ALTER TABLE tasks ADD COLUMN pass_on_due_at TIMESTAMPTZ;
ALTER TABLE tasks ADD COLUMN overdue BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tasks ADD COLUMN overdue_at TIMESTAMPTZ;
ALTER TABLE tasks ADD COLUMN findings TEXT;
ALTER TABLE tasks ADD COLUMN proposal TEXT;
ALTER TABLE tasks ADD COLUMN decision TEXT;
ALTER TABLE tasks ADD COLUMN closed_at TIMESTAMPTZ;
UPDATE tasks SET stage = CASE status WHEN 'resolved' THEN 'closed' ELSE 'pending' END,
    budget_from = created_at, pass_on_due_at = created_at, overdue = (status = 'overdue');
CREATE INDEX tasks_newest ON tasks (created_at, task_id);
CREATE INDEX tasks_village_newest ON tasks (village_code, created_at, task_id);
CREATE INDEX tasks_open_due ON tasks (stage, overdue, due_at);
CREATE INDEX tasks_household ON tasks (household_id);

-- Open alerts by risk type without parsing every document: the risk types as a JSON
-- array, kept beside the document.
ALTER TABLE alerts ADD COLUMN risk_types TEXT NOT NULL DEFAULT '[]';
UPDATE alerts SET risk_types = COALESCE((doc::jsonb -> 'risk_types')::text, '[]');
CREATE INDEX alerts_newest ON alerts (opened_at, alert_id);
CREATE INDEX alerts_region_newest ON alerts (region_code, opened_at, alert_id);
CREATE INDEX alerts_household ON alerts (household_id);
CREATE INDEX signals_newest ON signals (raised_at, signal_id);
CREATE INDEX dead_letters_newest ON dead_letters (received_at, dead_letter_id);

-- The registry change log: every decided change of a household, in order. The pipeline
-- applies it to its in-memory registry and commits its cursor with its batches. Writers
-- take an advisory lock first, so ids commit in id order and a reader's cursor never
-- passes a change that commits later.
CREATE TABLE registry_changes (
    id BIGSERIAL PRIMARY KEY,
    household_id TEXT NOT NULL,
    region_code TEXT NOT NULL,
    change TEXT NOT NULL,
    alert_id TEXT,
    task_id TEXT,
    actor TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
CREATE INDEX registry_changes_household ON registry_changes (household_id);

-- Audit (谁采集谁负责、谁审核谁负责、谁录入谁负责、谁修改谁负责): who, when, what,
-- from which state to which, with old and new values. Append-only: the triggers
-- refuse every UPDATE, DELETE and TRUNCATE, whoever asks.
ALTER TABLE audit_log ADD COLUMN actor_role TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN region_code TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN from_state TEXT;
ALTER TABLE audit_log ADD COLUMN to_state TEXT;
ALTER TABLE audit_log ADD COLUMN old_value TEXT;
ALTER TABLE audit_log ADD COLUMN new_value TEXT;
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);
CREATE INDEX audit_log_region ON audit_log (region_code, id);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
