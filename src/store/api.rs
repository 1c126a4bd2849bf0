//! What the API and the procedure ask of the store: accounts, scoped lists with
//! keyset pagination, the regional figures, the households, a task's transition
//! (task, registry, alert, change log, audit and outbox in ONE transaction), the
//! overdue sweep, the registry change log and the audit. Written once for both
//! backends (`api_store!`, as `store::sql`); scopes arrive as code ranges.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::{Backend, Store, StoreError};
use crate::domain::account::{Account, Scope};
use crate::domain::alert::HouseholdAlert;
use crate::domain::registry::{Household, Region};
use crate::domain::signal::RegionalSignal;
use crate::domain::task::{HouseholdChange, LoggedChange, ScreeningTask};

/// Items per page, at most.
pub const MAX_PAGE: u32 = 500;

/// A position in a newest-first list: the row's sort time and its id, so rows with
/// equal times are neither lost nor repeated at a page boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    /// Sort time of the last row seen.
    pub at: DateTime<Utc>,
    /// Id of the last row seen.
    pub id: String,
}

/// One audit row to write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who: an account name, `timer` or `cli:` and the operator.
    pub actor: String,
    /// The actor's role (`system` for the timer).
    pub actor_role: String,
    /// `task`, `household`, `alert` or `account`.
    pub entity: String,
    /// Its id.
    pub entity_id: String,
    /// What was done (a procedure move, `overdue`, `registry_change`, `create`, ...).
    pub action: String,
    /// The region it concerns (scopes the audit).
    pub region_code: String,
    /// State before.
    pub from_state: Option<String>,
    /// State after.
    pub to_state: Option<String>,
    /// Values before (JSON).
    pub old_value: Option<serde_json::Value>,
    /// Values after (JSON).
    pub new_value: Option<serde_json::Value>,
    /// Free text (a note, a reason).
    pub detail: String,
}

/// An audit row as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    /// Row id (append order).
    pub id: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Filters of the alert list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Within this region (itself inside the scope).
    pub region: Option<Scope>,
    /// Level.
    pub level: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Risk type.
    pub risk_type: Option<String>,
    /// `open` / `closed` / `expired`.
    pub status: Option<String>,
    /// Opened at or after.
    pub from: Option<DateTime<Utc>>,
    /// Opened before.
    pub to: Option<DateTime<Utc>>,
    /// One household.
    pub household: Option<String>,
}

/// Filters of the task list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Within this region.
    pub region: Option<Scope>,
    /// Stage.
    pub stage: Option<String>,
    /// Overdue (true) or not (false).
    pub overdue: Option<bool>,
    /// Assignee (the accepting account's name).
    pub assignee: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// One household.
    pub household: Option<String>,
}

/// Filters of the signal list.
#[derive(Debug, Clone, Default)]
pub struct SignalFilter {
    /// Within this region.
    pub region: Option<Scope>,
    /// Risk kind.
    pub kind: Option<String>,
    /// Severity.
    pub severity: Option<String>,
    /// `raised` / `updated` / `cleared` (or `active`: not cleared).
    pub status: Option<String>,
    /// Only these risk kinds (a department's).
    pub kinds: Option<Vec<String>>,
}

/// A dead letter as the API lists it (no original bytes beyond the masked copy).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterRow {
    /// Id.
    pub dead_letter_id: String,
    /// Where it came from (file and line, or topic, partition and offset).
    pub origin: String,
    /// Stage that refused it.
    pub stage: String,
    /// Rule.
    pub rule: String,
    /// Field.
    pub field: Option<String>,
    /// Reason (resident IDs masked).
    pub reason: String,
    /// The record as kept (resident IDs masked), as text.
    pub raw_text: String,
    /// Whether the record was longer than kept.
    pub raw_truncated: bool,
    /// The original length.
    pub raw_bytes: i64,
    /// Salvaged event id.
    pub event_id: Option<String>,
    /// Salvaged source.
    pub source: Option<String>,
    /// Salvaged kind.
    pub kind: Option<String>,
    /// Received.
    pub received_at: DateTime<Utc>,
}

/// Figures of one village, rolled up into any region's summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VillageFigures {
    /// Open alerts: (level, risk types JSON array, count).
    pub open_alerts: Vec<(String, String, u64)>,
    /// Open tasks: (stage, overdue, count).
    pub open_tasks: Vec<(String, bool, u64)>,
    /// The earliest decision deadline of an open task.
    pub earliest_due: Option<DateTime<Utc>>,
    /// Monitored households (risk not eliminated).
    pub monitored: u64,
}

/// What the API reads about one household.
#[derive(Debug, Clone)]
pub struct HouseholdRecord {
    /// The registry record.
    pub household: Household,
    /// Members: masked ID, relation, labour capacity.
    pub members: Vec<(String, String, bool)>,
    /// Its registry changes, oldest first: (id, change, actor, at).
    pub changes: Vec<(i64, Option<HouseholdChange>, String, DateTime<Utc>)>,
}

/// One evidence event as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceEvent {
    /// Event id.
    pub event_id: String,
    /// Department.
    pub source: String,
    /// Kind.
    pub kind: String,
    /// Event time.
    pub occurred_at: DateTime<Utc>,
    /// Masked resident ID (person events).
    pub person_masked: Option<String>,
    /// The payload as stored (department detail).
    pub payload: String,
}

/// What a transition writes besides the task.
#[derive(Debug, Clone, Default)]
pub struct TransitionWrites {
    /// The household's record after the decision.
    pub household_change: Option<(String, HouseholdChange)>,
    /// The alert to close, with the task's outcome and decision.
    pub close_alert: Option<String>,
    /// Audit rows.
    pub audit: Vec<AuditEntry>,
    /// Who, for the change log.
    pub actor: String,
}

/// Why a task transition was not written.
#[derive(Debug, PartialEq, Eq)]
pub enum TransitionConflict {
    /// Someone else moved the task first (its version changed).
    Version,
}

/// Decodes a region code column.
pub(super) fn region_of(text: &str) -> Result<crate::domain::ids::RegionCode, StoreError> {
    crate::domain::ids::RegionCode::parse(text).map_err(super::sql::corrupt)
}

macro_rules! dispatch_api {
    ($self:expr, $store:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Stores a new account (its token only as `token_hash`) with its audit row; a
    /// taken name is [`StoreError::Conflict`].
    pub async fn create_account(
        &self,
        account: &Account,
        token_hash: &[u8],
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        dispatch_api!(self, s => s.create_account(account, token_hash, audit).await)
    }

    /// The live (not revoked) account holding the token whose hash is `token_hash`.
    pub async fn account_by_token(&self, token_hash: &[u8]) -> Result<Option<Account>, StoreError> {
        dispatch_api!(self, s => s.account_by_token(token_hash).await)
    }

    /// An account by id or name.
    pub async fn account(&self, id_or_name: &str) -> Result<Option<Account>, StoreError> {
        dispatch_api!(self, s => s.account(id_or_name).await)
    }

    /// Accounts whose region lies in `scope` (every account without one), by name.
    pub async fn accounts(&self, scope: Option<Scope>) -> Result<Vec<Account>, StoreError> {
        dispatch_api!(self, s => s.accounts(scope).await)
    }

    /// Revokes an account (its token answers 401 from now on) with its audit row;
    /// false when it was already revoked.
    pub async fn revoke_account(
        &self,
        account_id: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        dispatch_api!(self, s => s.revoke_account(account_id, audit).await)
    }

    /// Regions in `scope`, by code.
    pub async fn regions_in(&self, scope: Scope) -> Result<Vec<Region>, StoreError> {
        dispatch_api!(self, s => s.regions_in(scope).await)
    }

    /// Every village's figures (the summary cache's source).
    pub async fn village_figures(
        &self,
    ) -> Result<std::collections::HashMap<String, VillageFigures>, StoreError> {
        dispatch_api!(self, s => s.village_figures().await)
    }

    /// Active (not cleared) signals: (region code, severity).
    pub async fn active_signals(&self) -> Result<Vec<(String, String)>, StoreError> {
        dispatch_api!(self, s => s.active_signals().await)
    }

    /// Daily counts of one series (region, risk kind) from `from` to `to` inclusive.
    pub async fn series_counts(
        &self,
        region: &str,
        kind: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(NaiveDate, u32)>, StoreError> {
        dispatch_api!(self, s => s.series_counts(region, kind, from, to).await)
    }

    /// The first and the last day one series (region, risk kind) has a count for.
    pub async fn counted_span(
        &self,
        region: &str,
        kind: &str,
    ) -> Result<Option<(NaiveDate, NaiveDate)>, StoreError> {
        dispatch_api!(self, s => s.counted_span(region, kind).await)
    }

    /// A page of alerts in `scope` (newest first), after `after`.
    pub async fn list_alerts(
        &self,
        scope: Scope,
        filter: &AlertFilter,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<HouseholdAlert>, StoreError> {
        dispatch_api!(self, s => s.list_alerts(scope, filter, after, limit).await)
    }

    /// One alert.
    pub async fn alert(&self, alert_id: &str) -> Result<Option<HouseholdAlert>, StoreError> {
        dispatch_api!(self, s => s.alert(alert_id).await)
    }

    /// The per-rule yield of the household alerts in `scope` (`None`: every alert):
    /// each alert with its task, folded by [`crate::domain::rule_yield::YieldTally`].
    pub async fn rule_yield(
        &self,
        scope: Option<Scope>,
    ) -> Result<crate::domain::rule_yield::RuleYieldReport, StoreError> {
        dispatch_api!(self, s => s.rule_yield(scope).await)
    }

    /// The subjects (persons, households) that departments sent accepted events for
    /// and the roster does not hold, one per department and subject (the person by
    /// pseudonym, shown masked), in `scope` (`None`: every one). Unmatched events
    /// carry no village: they count for scopes at county level and above.
    pub async fn unmatched_subjects(
        &self,
        scope: Option<Scope>,
    ) -> Result<Vec<crate::domain::department_quality::UnmatchedSubject>, StoreError> {
        dispatch_api!(self, s => s.unmatched_subjects(scope).await)
    }

    /// Per department, the delay reported − occurred of its accepted events in
    /// `scope` (events of its regions, and for county scopes and above also the
    /// unmatched ones; `None`: every event): the nearest-rank median and 90th
    /// percentile, the longest, and how many exceed `late_after_ms`.
    pub async fn reporting_delays(
        &self,
        scope: Option<Scope>,
        late_after_ms: i64,
    ) -> Result<Vec<crate::domain::department_quality::DelayRow>, StoreError> {
        dispatch_api!(self, s => s.reporting_delays(scope, late_after_ms).await)
    }

    /// Events in `scope` reported more than `late_after_ms` after they occurred,
    /// counted by village and department (events placed in a village only).
    pub async fn late_events_by_village(
        &self,
        scope: Option<Scope>,
        late_after_ms: i64,
    ) -> Result<
        Vec<(
            crate::domain::ids::RegionCode,
            crate::domain::event::Source,
            u64,
        )>,
        StoreError,
    > {
        dispatch_api!(self, s => s.late_events_by_village(scope, late_after_ms).await)
    }

    /// Records one full pass's consistency findings judged on `today`, in one
    /// transaction: a new finding opens with `since = today`, an open one found again
    /// keeps its `since`, a resolved one found again opens anew, and every open
    /// finding this pass did not find is resolved on `today`.
    pub async fn record_findings(
        &self,
        today: NaiveDate,
        findings: &[crate::domain::quality_finding::QualityFinding],
    ) -> Result<crate::domain::quality_finding::RecordOutcome, StoreError> {
        dispatch_api!(self, s => s.record_findings(today, findings).await)
    }

    /// Every recorded finding, open and resolved, by key.
    pub async fn recorded_findings(
        &self,
    ) -> Result<Vec<crate::domain::quality_finding::RecordedFinding>, StoreError> {
        dispatch_api!(self, s => s.recorded_findings().await)
    }

    /// The evidence events, in the order asked.
    pub async fn evidence_events(&self, ids: &[String]) -> Result<Vec<EvidenceEvent>, StoreError> {
        dispatch_api!(self, s => s.evidence_events(ids).await)
    }

    /// A page of tasks in `scope` (newest first).
    pub async fn list_tasks(
        &self,
        scope: Scope,
        filter: &TaskFilter,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<ScreeningTask>, StoreError> {
        dispatch_api!(self, s => s.list_tasks(scope, filter, after, limit).await)
    }

    /// One task.
    pub async fn task(&self, task_id: &str) -> Result<Option<ScreeningTask>, StoreError> {
        dispatch_api!(self, s => s.task(task_id).await)
    }

    /// The audit rows of one entity, oldest first.
    pub async fn audit_of(&self, entity: &str, id: &str) -> Result<Vec<AuditRow>, StoreError> {
        dispatch_api!(self, s => s.audit_of(entity, id).await)
    }

    /// A page of the audit in `scope`, newest first (after row `after`).
    pub async fn list_audit(
        &self,
        scope: Scope,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        dispatch_api!(self, s => s.list_audit(scope, after, limit).await)
    }

    /// Every audit row, oldest first (`yujing audit export`).
    pub async fn export_audit(
        &self,
        each: &mut (dyn FnMut(AuditRow) -> std::io::Result<()> + Send),
    ) -> Result<(), StoreError> {
        dispatch_api!(self, s => s.export_audit(each).await)
    }

    /// Writes one audit row on its own.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        dispatch_api!(self, s => s.append_audit(entry).await)
    }

    /// A household with its members and registry changes.
    pub async fn household(&self, id: &str) -> Result<Option<HouseholdRecord>, StoreError> {
        dispatch_api!(self, s => s.household(id).await)
    }

    /// A page of signals in `scope` (newest raised first).
    pub async fn list_signals(
        &self,
        scope: Scope,
        filter: &SignalFilter,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<RegionalSignal>, StoreError> {
        dispatch_api!(self, s => s.list_signals(scope, filter, after, limit).await)
    }

    /// A page of dead letters (newest first), of one source or all.
    pub async fn list_dead_letters(
        &self,
        source: Option<&str>,
        after: Option<&Keyset>,
        limit: u32,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        dispatch_api!(self, s => s.list_dead_letters(source, after, limit).await)
    }

    /// Writes a transition: the task (only if its stored version is still
    /// `expected_version`), the registry change and its log row, the closed alert,
    /// the audit rows and the outbox rows, in one transaction.
    pub async fn transition_task(
        &self,
        task: &ScreeningTask,
        expected_version: u32,
        writes: &TransitionWrites,
    ) -> Result<Result<(), TransitionConflict>, StoreError> {
        let outbox = self.outbox.as_deref();
        dispatch_api!(self, s => s.transition_task(task, expected_version, writes, outbox).await)
    }

    /// The earliest deadline of an open task not yet marked overdue.
    pub async fn next_deadline(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        dispatch_api!(self, s => s.next_deadline().await)
    }

    /// Open tasks not marked overdue whose deadline is at or before `now`.
    pub async fn due_tasks(&self, now: DateTime<Utc>) -> Result<Vec<ScreeningTask>, StoreError> {
        dispatch_api!(self, s => s.due_tasks(now).await)
    }

    /// Overdue open tasks by township code.
    pub async fn overdue_by_township(&self) -> Result<Vec<(String, i64)>, StoreError> {
        dispatch_api!(self, s => s.overdue_by_township().await)
    }

    /// Up to `limit` registry changes after `cursor`, in order.
    pub async fn registry_changes_after(
        &self,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        dispatch_api!(self, s => s.registry_changes_after(cursor, limit).await)
    }

    /// The store answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch_api!(self, s => s.ping().await)
    }
}

/// Expands the API queries for one backend (as `sql_store!` does the pipeline's).
macro_rules! api_store {
    ($store:ident, $db:ty, $row:ty) => {
        mod api_queries {
        use chrono::{DateTime, NaiveDate, Utc};
        use futures::TryStreamExt;
        use sqlx::{QueryBuilder, Row};

        use $crate::domain::account::{Account, Role, Scope};
        use $crate::domain::alert::HouseholdAlert;
        use $crate::domain::event::Source;
        use $crate::domain::ids::{HouseholdId, RegionLevel};
        use $crate::domain::registry::{Household, HouseholdStatus, MonitoringType, Region};
        use $crate::domain::signal::RegionalSignal;
        use $crate::domain::task::{HouseholdChange, LoggedChange, ScreeningTask};
        use $crate::store::api::{
            AlertFilter, AuditEntry, AuditRow, DeadLetterRow, EvidenceEvent, HouseholdRecord,
            Keyset, SignalFilter, TaskFilter, TransitionConflict, TransitionWrites, VillageFigures,
            region_of,
        };
        use $crate::store::sql::{corrupt, task_columns};
        use $crate::store::{OutboxTopics, StoreError};

        use super::$store;
        use super::queries::task_from_row;

        const ACCOUNT_COLUMNS: &str =
            "account_id, name, role, region_code, source, created_at, created_by, revoked_at";

        fn account_from_row(row: &$row) -> Result<Account, StoreError> {
            let source: Option<String> = row.get(4);
            Ok(Account {
                account_id: row.get(0),
                name: row.get(1),
                role: Role::parse(row.get(2)).ok_or_else(|| corrupt("account role"))?,
                region: region_of(row.get(3))?,
                source: source
                    .map(|s| Source::parse(&s).ok_or_else(|| corrupt("account source")))
                    .transpose()?,
                created_at: row.get(5),
                created_by: row.get(6),
                revoked_at: row.get(7),
            })
        }

        fn json(value: &Option<serde_json::Value>) -> Option<String> {
            value.as_ref().map(|v| v.to_string())
        }

        async fn insert_audit(
            tx: &mut sqlx::Transaction<'_, $db>,
            entry: &AuditEntry,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, actor_role, entity, entity_id, action, region_code, \
                 from_state, to_state, old_value, new_value, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(entry.at)
            .bind(&entry.actor)
            .bind(&entry.actor_role)
            .bind(&entry.entity)
            .bind(&entry.entity_id)
            .bind(&entry.action)
            .bind(&entry.region_code)
            .bind(entry.from_state.as_deref())
            .bind(entry.to_state.as_deref())
            .bind(json(&entry.old_value))
            .bind(json(&entry.new_value))
            .bind(&entry.detail)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        const AUDIT_COLUMNS: &str = "id, at, actor, actor_role, entity, entity_id, action, region_code, \
             from_state, to_state, old_value, new_value, detail";

        fn audit_from_row(row: &$row) -> Result<AuditRow, StoreError> {
            let value = |i: usize| -> Result<Option<serde_json::Value>, StoreError> {
                row.get::<Option<String>, _>(i)
                    .map(|text| serde_json::from_str(&text).map_err(corrupt))
                    .transpose()
            };
            Ok(AuditRow {
                id: row.get(0),
                entry: AuditEntry {
                    at: row.get(1),
                    actor: row.get(2),
                    actor_role: row.get(3),
                    entity: row.get(4),
                    entity_id: row.get(5),
                    action: row.get(6),
                    region_code: row.get(7),
                    from_state: row.get(8),
                    to_state: row.get(9),
                    old_value: value(10)?,
                    new_value: value(11)?,
                    detail: row.get(12),
                },
            })
        }

        /// The events of `scope`: those placed in its regions and, for a scope at
        /// county level or above (the level that receives the department feeds),
        /// the unmatched ones, which no village holds.
        fn push_event_scope(query: &mut QueryBuilder<$db>, scope: Option<Scope>) {
            let Some(scope) = scope else { return };
            let (low, high) = scope.code_range();
            query.push(" AND (region_code BETWEEN ");
            query.push_bind(low);
            query.push(" AND ");
            query.push_bind(high);
            if scope.region.level() <= crate::domain::ids::RegionLevel::County {
                query.push(" OR match = 'unmatched'");
            }
            query.push(")");
        }

        /// `AND column BETWEEN low AND high`.
        fn push_scope(query: &mut QueryBuilder<$db>, column: &str, scope: Scope) {
            let (low, high) = scope.code_range();
            // Above a village, a scope holds much of the table: the newest-first
            // index, read until the page is full, beats gathering the whole subtree
            // by region and sorting it (`|| ''` keeps the planner off the region
            // index, on both backends).
            if scope.region.level() == crate::domain::ids::RegionLevel::Village {
                query.push(format!(" AND {column} BETWEEN "));
            } else {
                query.push(format!(" AND {column} || '' BETWEEN "));
            }
            query.push_bind(low);
            query.push(" AND ");
            query.push_bind(high);
        }

        /// `AND (time, id) < (after)` and the newest-first order with the limit. The
        /// row-value comparison lets both backends seek the (time, id) index to the
        /// page's start instead of filtering every newer row.
        fn push_page(
            query: &mut QueryBuilder<$db>,
            time: &str,
            id: &str,
            after: Option<&Keyset>,
            limit: u32,
        ) {
            if let Some(after) = after {
                query.push(format!(" AND ({time}, {id}) < ("));
                query.push_bind(after.at);
                query.push(", ");
                query.push_bind(after.id.clone());
                query.push(")");
            }
            query.push(format!(" ORDER BY {time} DESC, {id} DESC LIMIT "));
            query.push_bind(i64::from(limit));
        }

        impl $store {
            /// See [`crate::store::Store::create_account`].
            pub async fn create_account(
                &self,
                account: &Account,
                token_hash: &[u8],
                audit: &AuditEntry,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO accounts (account_id, name, role, region_code, source, token_hash, \
                     created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(&account.account_id)
                .bind(&account.name)
                .bind(account.role.as_str())
                .bind(account.region.to_string())
                .bind(account.source.map(Source::as_str))
                .bind(token_hash)
                .bind(account.created_at)
                .bind(&account.created_by)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::Conflict(format!(
                        "an account named {} exists",
                        account.name
                    )));
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            /// See [`crate::store::Store::account_by_token`].
            pub async fn account_by_token(
                &self,
                token_hash: &[u8],
            ) -> Result<Option<Account>, StoreError> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE token_hash = $1 AND revoked_at IS NULL"
                )))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| account_from_row(&row)).transpose()
            }

            /// See [`crate::store::Store::account`].
            pub async fn account(&self, id_or_name: &str) -> Result<Option<Account>, StoreError> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1 OR name = $1"
                )))
                .bind(id_or_name)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| account_from_row(&row)).transpose()
            }

            /// See [`crate::store::Store::accounts`].
            pub async fn accounts(&self, scope: Option<Scope>) -> Result<Vec<Account>, StoreError> {
                let mut query: QueryBuilder<$db> = QueryBuilder::new(format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE 1 = 1"
                ));
                if let Some(scope) = scope {
                    push_scope(&mut query, "region_code", scope);
                }
                query.push(" ORDER BY name");
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter().map(account_from_row).collect()
            }

            /// See [`crate::store::Store::revoke_account`].
            pub async fn revoke_account(
                &self,
                account_id: &str,
                audit: &AuditEntry,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let revoked = sqlx::query(
                    "UPDATE accounts SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL",
                )
                .bind(audit.at)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
                if revoked.rows_affected() == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            /// See [`crate::store::Store::regions_in`].
            pub async fn regions_in(&self, scope: Scope) -> Result<Vec<Region>, StoreError> {
                let mut query: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT code, name, level, parent, longitude, latitude FROM regions WHERE 1 = 1",
                );
                push_scope(&mut query, "code", scope);
                query.push(" ORDER BY code");
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        let parent: Option<String> = row.get(3);
                        Ok(Region {
                            code: region_of(row.get(0))?,
                            name: row.get(1),
                            level: RegionLevel::parse(row.get(2))
                                .ok_or_else(|| corrupt("region level"))?,
                            parent: parent.map(|p| region_of(&p)).transpose()?,
                            longitude: row.get(4),
                            latitude: row.get(5),
                        })
                    })
                    .collect()
            }

            /// See [`crate::store::Store::village_figures`].
            pub async fn village_figures(
                &self,
            ) -> Result<std::collections::HashMap<String, VillageFigures>, StoreError> {
                let mut figures: std::collections::HashMap<String, VillageFigures> =
                    Default::default();
                let rows = sqlx::query(
                    "SELECT region_code, level, risk_types, COUNT(*) FROM alerts WHERE status = 'open' \
                     GROUP BY region_code, level, risk_types",
                )
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    figures.entry(row.get(0)).or_default().open_alerts.push((
                        row.get(1),
                        row.get(2),
                        row.get::<i64, _>(3) as u64,
                    ));
                }
                let rows = sqlx::query(
                    "SELECT village_code, stage, overdue, COUNT(*), MIN(due_at) FROM tasks \
                     WHERE stage <> 'closed' GROUP BY village_code, stage, overdue",
                )
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    let village = figures.entry(row.get(0)).or_default();
                    village.open_tasks.push((
                        row.get(1),
                        row.get(2),
                        row.get::<i64, _>(3) as u64,
                    ));
                    let due: Option<DateTime<Utc>> = row.get(4);
                    village.earliest_due = match (village.earliest_due, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                let rows = sqlx::query(
                    "SELECT region_code, COUNT(*) FROM households WHERE status = 'monitored' \
                     AND risk_eliminated_on IS NULL GROUP BY region_code",
                )
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    figures.entry(row.get(0)).or_default().monitored = row.get::<i64, _>(1) as u64;
                }
                Ok(figures)
            }

            /// See [`crate::store::Store::active_signals`].
            pub async fn active_signals(&self) -> Result<Vec<(String, String)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT region_code, severity FROM signals WHERE status <> 'cleared'",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            }

            /// See [`crate::store::Store::counted_span`].
            pub async fn counted_span(
                &self,
                region: &str,
                kind: &str,
            ) -> Result<Option<(NaiveDate, NaiveDate)>, StoreError> {
                // Read off the key (region, kind, day): one series' rows, no table.
                let row = sqlx::query(
                    "SELECT MIN(day), MAX(day) FROM regional_counts \
                     WHERE region_code = $1 AND kind = $2",
                )
                .bind(region)
                .bind(kind)
                .fetch_one(&self.pool)
                .await?;
                let first: Option<NaiveDate> = row.get(0);
                let last: Option<NaiveDate> = row.get(1);
                Ok(first.zip(last))
            }

            /// See [`crate::store::Store::series_counts`].
            pub async fn series_counts(
                &self,
                region: &str,
                kind: &str,
                from: NaiveDate,
                to: NaiveDate,
            ) -> Result<Vec<(NaiveDate, u32)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT day, count FROM regional_counts WHERE region_code = $1 AND kind = $2 \
                     AND day >= $3 AND day <= $4 ORDER BY day",
                )
                .bind(region)
                .bind(kind)
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|r| (r.get(0), r.get::<i64, _>(1) as u32))
                    .collect())
            }

            /// See [`crate::store::Store::list_alerts`].
            pub async fn list_alerts(
                &self,
                scope: Scope,
                filter: &AlertFilter,
                after: Option<&Keyset>,
                limit: u32,
            ) -> Result<Vec<HouseholdAlert>, StoreError> {
                let mut query: QueryBuilder<$db> =
                    QueryBuilder::new("SELECT doc, episode FROM alerts WHERE 1 = 1");
                push_scope(&mut query, "region_code", scope);
                if let Some(region) = filter.region {
                    push_scope(&mut query, "region_code", region);
                }
                for (column, value) in [
                    ("level", &filter.level),
                    ("action", &filter.action),
                    ("status", &filter.status),
                    ("household_id", &filter.household),
                ] {
                    if let Some(value) = value {
                        query.push(format!(" AND {column} = "));
                        query.push_bind(value.clone());
                    }
                }
                if let Some(risk) = &filter.risk_type {
                    query.push(" AND risk_types LIKE ");
                    query.push_bind(format!("%\"{risk}\"%"));
                }
                if let Some(from) = filter.from {
                    query.push(" AND opened_at >= ");
                    query.push_bind(from);
                }
                if let Some(to) = filter.to {
                    query.push(" AND opened_at < ");
                    query.push_bind(to);
                }
                push_page(&mut query, "opened_at", "alert_id", after, limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        let mut alert: HouseholdAlert =
                            serde_json::from_str(row.get(0)).map_err(corrupt)?;
                        alert.episode = row.get::<i64, _>(1) as u32;
                        Ok(alert)
                    })
                    .collect()
            }

            /// See [`crate::store::Store::rule_yield`].
            pub async fn rule_yield(
                &self,
                scope: Option<Scope>,
            ) -> Result<$crate::domain::rule_yield::RuleYieldReport, StoreError> {
                use $crate::domain::alert::AlertStatus;
                use $crate::domain::rule_yield::{YieldRow, YieldTally, YieldTask};
                use $crate::domain::task::{Decision, Outcome, Stage};
                let mut query: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT a.rule_ids, a.status, t.stage, t.outcome, t.decision FROM alerts a \
                     LEFT JOIN tasks t ON t.alert_id = a.alert_id WHERE 1 = 1",
                );
                if let Some(scope) = scope {
                    push_scope(&mut query, "a.region_code", scope);
                }
                let mut rows = query.build().fetch(&self.pool);
                let mut tally = YieldTally::default();
                while let Some(row) = rows.try_next().await? {
                    let rule_ids: Vec<String> =
                        serde_json::from_str(row.get(0)).map_err(corrupt)?;
                    let status = AlertStatus::parse(row.get(1))
                        .ok_or_else(|| corrupt("alert status"))?;
                    let task = match row.get::<Option<String>, _>(2) {
                        Some(stage) => Some(YieldTask {
                            stage: Stage::parse(&stage).ok_or_else(|| corrupt("task stage"))?,
                            outcome: row
                                .get::<Option<String>, _>(3)
                                .map(|o| Outcome::parse(&o).ok_or_else(|| corrupt("task outcome")))
                                .transpose()?,
                            decision: row
                                .get::<Option<String>, _>(4)
                                .map(|d| Decision::parse(&d).ok_or_else(|| corrupt("task decision")))
                                .transpose()?,
                        }),
                        None => None,
                    };
                    tally.add(&YieldRow {
                        rule_ids,
                        status,
                        task,
                    });
                }
                Ok(tally.finish())
            }

            /// See [`crate::store::Store::record_findings`].
            pub async fn record_findings(
                &self,
                today: NaiveDate,
                findings: &[$crate::domain::quality_finding::QualityFinding],
            ) -> Result<$crate::domain::quality_finding::RecordOutcome, StoreError> {
                use std::collections::HashSet;
                use $crate::domain::quality_finding::RecordOutcome;
                let day = today.to_string();
                let mut tx = self.pool.begin().await?;
                let open: HashSet<String> = sqlx::query_scalar(
                    "SELECT finding_key FROM data_quality_findings WHERE resolved_on IS NULL",
                )
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
                // One row per key: an upsert may not touch a row twice.
                let mut current = HashSet::with_capacity(findings.len());
                let unique: Vec<(String, &$crate::domain::quality_finding::QualityFinding)> = findings
                    .iter()
                    .filter_map(|f| {
                        let key = f.key();
                        current.insert(key.clone()).then_some((key, f))
                    })
                    .collect();
                for chunk in unique.chunks(500) {
                    let mut upsert: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO data_quality_findings (finding_key, rule, subject, region_code, \
                         source, fields, reason, since, last_seen) ",
                    );
                    upsert.push_values(chunk, |mut row, (key, f)| {
                        row.push_bind(key.clone())
                            .push_bind(f.rule.clone())
                            .push_bind(f.subject.clone())
                            .push_bind(f.region_code.map(|c| c.to_string()))
                            .push_bind(f.source.map(|s| s.as_str()))
                            .push_bind(serde_json::to_string(&f.fields).unwrap_or_else(|_| "[]".into()))
                            .push_bind(f.reason.clone())
                            .push_bind(day.clone())
                            .push_bind(day.clone());
                    });
                    upsert.push(
                        " ON CONFLICT (finding_key) DO UPDATE SET reason = excluded.reason, \
                         fields = excluded.fields, region_code = excluded.region_code, \
                         last_seen = excluded.last_seen, \
                         since = CASE WHEN data_quality_findings.resolved_on IS NULL \
                         THEN data_quality_findings.since ELSE excluded.since END, \
                         resolved_on = NULL",
                    );
                    upsert.build().execute(&mut *tx).await?;
                }
                let gone: Vec<&String> = open.iter().filter(|k| !current.contains(*k)).collect();
                for chunk in gone.chunks(500) {
                    let mut resolve: QueryBuilder<$db> =
                        QueryBuilder::new("UPDATE data_quality_findings SET resolved_on = ");
                    resolve.push_bind(day.clone());
                    resolve.push(" WHERE finding_key IN (");
                    let mut list = resolve.separated(", ");
                    for key in chunk {
                        list.push_bind((*key).clone());
                    }
                    resolve.push(")");
                    resolve.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                let kept = current.iter().filter(|k| open.contains(*k)).count() as u64;
                Ok(RecordOutcome {
                    opened: current.len() as u64 - kept,
                    kept,
                    resolved: gone.len() as u64,
                })
            }

            /// See [`crate::store::Store::recorded_findings`].
            pub async fn recorded_findings(
                &self,
            ) -> Result<Vec<$crate::domain::quality_finding::RecordedFinding>, StoreError> {
                use $crate::domain::event::Source;
                use $crate::domain::quality_finding::{QualityFinding, RecordedFinding};
                let day = |text: String| -> Result<NaiveDate, StoreError> {
                    text.parse().map_err(|_| corrupt("finding day"))
                };
                let rows = sqlx::query(
                    "SELECT rule, subject, region_code, source, fields, reason, since, last_seen, \
                     resolved_on FROM data_quality_findings ORDER BY finding_key",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(RecordedFinding {
                            finding: QualityFinding {
                                rule: row.get(0),
                                subject: row.get(1),
                                region_code: row
                                    .get::<Option<String>, _>(2)
                                    .map(|c| region_of(&c))
                                    .transpose()?,
                                source: row
                                    .get::<Option<String>, _>(3)
                                    .map(|s| Source::parse(&s).ok_or_else(|| corrupt("finding source")))
                                    .transpose()?,
                                fields: serde_json::from_str(row.get(4)).map_err(corrupt)?,
                                reason: row.get(5),
                            },
                            since: day(row.get(6))?,
                            last_seen: day(row.get(7))?,
                            resolved_on: row.get::<Option<String>, _>(8).map(day).transpose()?,
                        })
                    })
                    .collect()
            }

            /// See [`crate::store::Store::unmatched_subjects`].
            pub async fn unmatched_subjects(
                &self,
                scope: Option<Scope>,
            ) -> Result<Vec<$crate::domain::department_quality::UnmatchedSubject>, StoreError> {
                use $crate::domain::department_quality::{UnmatchedSubject, id_area};
                use $crate::domain::event::Source;
                let mut query: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT source, person_masked, household_id, region_code, COUNT(*), \
                     MIN(occurred_at), MAX(occurred_at), person_key FROM events WHERE match = 'unmatched'",
                );
                push_event_scope(&mut query, scope);
                query.push(
                    " GROUP BY source, person_key, person_masked, household_id, region_code \
                     ORDER BY source, person_masked, household_id, MIN(occurred_at)",
                );
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        let person_masked: Option<String> = row.get(1);
                        Ok(UnmatchedSubject {
                            source: Source::parse(row.get(0))
                                .ok_or_else(|| corrupt("event source"))?,
                            id_area: person_masked.as_deref().and_then(id_area),
                            person_masked,
                            household_id: row.get(2),
                            region_code: row
                                .get::<Option<String>, _>(3)
                                .map(|code| region_of(&code))
                                .transpose()?,
                            events: row.get::<i64, _>(4) as u64,
                            first_occurred_at: $crate::store::sql::millis_to_time(row.get(5))?,
                            last_occurred_at: $crate::store::sql::millis_to_time(row.get(6))?,
                            pseudonym: row.get::<Option<Vec<u8>>, _>(7).map(hex::encode),
                        })
                    })
                    .collect()
            }

            /// See [`crate::store::Store::reporting_delays`].
            pub async fn reporting_delays(
                &self,
                scope: Option<Scope>,
                late_after_ms: i64,
            ) -> Result<Vec<$crate::domain::department_quality::DelayRow>, StoreError> {
                use $crate::domain::department_quality::{DelayRow, nearest_rank};
                use $crate::domain::event::Source;
                let mut query: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT source, COUNT(*), MAX(reported_at - occurred_at), \
                     COUNT(CASE WHEN reported_at - occurred_at > ",
                );
                query.push_bind(late_after_ms);
                query.push(" THEN 1 END) FROM events WHERE 1 = 1");
                push_event_scope(&mut query, scope);
                query.push(" GROUP BY source ORDER BY source");
                let totals = query.build().fetch_all(&self.pool).await?;
                let mut delays = Vec::with_capacity(totals.len());
                for row in &totals {
                    let source: String = row.get(0);
                    let events = row.get::<i64, _>(1) as u64;
                    // Exact nearest-rank percentiles, each the row at its rank in the
                    // database's order: memory here does not grow with the events.
                    let at_rank = async |p: u64| -> Result<i64, StoreError> {
                        let mut query: QueryBuilder<$db> = QueryBuilder::new(
                            "SELECT reported_at - occurred_at AS delay FROM events WHERE source = ",
                        );
                        query.push_bind(source.clone());
                        push_event_scope(&mut query, scope);
                        query.push(" ORDER BY delay LIMIT 1 OFFSET ");
                        query.push_bind(nearest_rank(p, events) as i64);
                        Ok(query.build().fetch_one(&self.pool).await?.get(0))
                    };
                    let p50_ms = at_rank(50).await?;
                    let p90_ms = at_rank(90).await?;
                    delays.push(DelayRow {
                        source: Source::parse(&source).ok_or_else(|| corrupt("event source"))?,
                        events,
                        late: row.get::<i64, _>(3) as u64,
                        p50_ms,
                        p90_ms,
                        max_ms: row.get(2),
                    });
                }
                Ok(delays)
            }

            /// See [`crate::store::Store::late_events_by_village`].
            pub async fn late_events_by_village(
                &self,
                scope: Option<Scope>,
                late_after_ms: i64,
            ) -> Result<Vec<($crate::domain::ids::RegionCode, $crate::domain::event::Source, u64)>, StoreError> {
                use $crate::domain::event::Source;
                use $crate::domain::ids::RegionLevel;
                let mut query: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT region_code, source, COUNT(*) FROM events \
                     WHERE region_code IS NOT NULL AND reported_at - occurred_at > ",
                );
                query.push_bind(late_after_ms);
                push_event_scope(&mut query, scope);
                query.push(" GROUP BY region_code, source ORDER BY region_code, source");
                let mut counts = Vec::new();
                for row in query.build().fetch_all(&self.pool).await? {
                    let code = region_of(row.get(0))?;
                    if code.level() == RegionLevel::Village {
                        counts.push((
                            code,
                            Source::parse(row.get(1)).ok_or_else(|| corrupt("event source"))?,
                            row.get::<i64, _>(2) as u64,
                        ));
                    }
                }
                Ok(counts)
            }

            /// See [`crate::store::Store::alert`].
            pub async fn alert(&self, alert_id: &str) -> Result<Option<HouseholdAlert>, StoreError> {
                let row = sqlx::query("SELECT doc, episode FROM alerts WHERE alert_id = $1")
                    .bind(alert_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| {
                    let mut alert: HouseholdAlert =
                        serde_json::from_str(row.get(0)).map_err(corrupt)?;
                    alert.episode = row.get::<i64, _>(1) as u32;
                    Ok(alert)
                })
                .transpose()
            }

            /// See [`crate::store::Store::evidence_events`].
            pub async fn evidence_events(
                &self,
                ids: &[String],
            ) -> Result<Vec<EvidenceEvent>, StoreError> {
                let mut found = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(500) {
                    let mut query: QueryBuilder<$db> = QueryBuilder::new(
                        "SELECT event_id, source, kind, occurred_at, person_masked, payload FROM events \
                         WHERE event_id IN (",
                    );
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id.clone());
                    }
                    query.push(") ORDER BY occurred_at, event_id");
                    for row in query.build().fetch_all(&self.pool).await? {
                        found.push(EvidenceEvent {
                            event_id: row.get(0),
                            source: row.get(1),
                            kind: row.get(2),
                            occurred_at: $crate::store::sql::millis_to_time(row.get(3))?,
                            person_masked: row.get(4),
                            payload: row.get(5),
                        });
                    }
                }
                Ok(found)
            }

            /// See [`crate::store::Store::list_tasks`].
            pub async fn list_tasks(
                &self,
                scope: Scope,
                filter: &TaskFilter,
                after: Option<&Keyset>,
                limit: u32,
            ) -> Result<Vec<ScreeningTask>, StoreError> {
                let mut query: QueryBuilder<$db> = QueryBuilder::new(concat!(
                    "SELECT ",
                    task_columns!(),
                    " FROM tasks WHERE 1 = 1"
                ));
                push_scope(&mut query, "village_code", scope);
                if let Some(region) = filter.region {
                    push_scope(&mut query, "village_code", region);
                }
                for (column, value) in [
                    ("stage", &filter.stage),
                    ("assignee", &filter.assignee),
                    ("kind", &filter.kind),
                    ("household_id", &filter.household),
                ] {
                    if let Some(value) = value {
                        query.push(format!(" AND {column} = "));
                        query.push_bind(value.clone());
                    }
                }
                if let Some(overdue) = filter.overdue {
                    query.push(" AND overdue = ");
                    query.push_bind(overdue);
                }
                push_page(&mut query, "created_at", "task_id", after, limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter().map(|row| task_from_row(row, 0)).collect()
            }

            /// See [`crate::store::Store::task`].
            pub async fn task(&self, task_id: &str) -> Result<Option<ScreeningTask>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    task_columns!(),
                    " FROM tasks WHERE task_id = $1"
                ))
                .bind(task_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| task_from_row(&row, 0)).transpose()
            }

            /// See [`crate::store::Store::audit_of`].
            pub async fn audit_of(&self, entity: &str, id: &str) -> Result<Vec<AuditRow>, StoreError> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE entity = $1 AND entity_id = $2 ORDER BY id"
                )))
                .bind(entity)
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(audit_from_row).collect()
            }

            /// See [`crate::store::Store::list_audit`].
            pub async fn list_audit(
                &self,
                scope: Scope,
                after: Option<i64>,
                limit: u32,
            ) -> Result<Vec<AuditRow>, StoreError> {
                let mut query: QueryBuilder<$db> = QueryBuilder::new(format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"
                ));
                push_scope(&mut query, "region_code", scope);
                if let Some(after) = after {
                    query.push(" AND id < ");
                    query.push_bind(after);
                }
                query.push(" ORDER BY id DESC LIMIT ");
                query.push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter().map(audit_from_row).collect()
            }

            /// See [`crate::store::Store::export_audit`].
            pub async fn export_audit(
                &self,
                each: &mut (dyn FnMut(AuditRow) -> std::io::Result<()> + Send),
            ) -> Result<(), StoreError> {
                let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id");
                let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    each(audit_from_row(&row)?).map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
                }
                Ok(())
            }

            /// See [`crate::store::Store::append_audit`].
            pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                insert_audit(&mut tx, entry).await?;
                tx.commit().await?;
                Ok(())
            }

            /// See [`crate::store::Store::household`].
            pub async fn household(&self, id: &str) -> Result<Option<HouseholdRecord>, StoreError> {
                let Some(row) = sqlx::query(
                    "SELECT household_id, region_code, members, labour_capable, annual_net_income_yuan, status, \
                     monitoring_type, identified_on, risk_eliminated_on, safety_net, dibao, tekun, developmental_assistance \
                     FROM households WHERE household_id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                else {
                    return Ok(None);
                };
                let monitoring_type: Option<String> = row.get(6);
                let household = Household {
                    household_id: HouseholdId::parse(row.get(0)).map_err(corrupt)?,
                    region_code: region_of(row.get(1))?,
                    members: row.get::<i64, _>(2) as u32,
                    labour_capable: row.get::<i64, _>(3) as u32,
                    annual_net_income_yuan: row.get(4),
                    status: HouseholdStatus::parse(row.get(5))
                        .ok_or_else(|| corrupt("household status"))?,
                    monitoring_type: monitoring_type
                        .map(|t| MonitoringType::parse(&t).ok_or_else(|| corrupt("monitoring type")))
                        .transpose()?,
                    identified_on: row.get(7),
                    risk_eliminated_on: row.get(8),
                    safety_net: row.get(9),
                    dibao: row.get(10),
                    tekun: row.get(11),
                    developmental_assistance: row.get(12),
                };
                let members = sqlx::query(
                    "SELECT person_masked, relation, labour_capable FROM members WHERE household_id = $1 \
                     ORDER BY relation, person_masked",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
                let mut changes = Vec::new();
                for row in sqlx::query(
                    "SELECT id, change, actor, at FROM registry_changes WHERE household_id = $1 ORDER BY id",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?
                {
                    let change: Option<HouseholdChange> =
                        serde_json::from_str(row.get(1)).map_err(corrupt)?;
                    changes.push((row.get(0), change, row.get(2), row.get(3)));
                }
                Ok(Some(HouseholdRecord {
                    household,
                    members,
                    changes,
                }))
            }

            /// See [`crate::store::Store::list_signals`].
            pub async fn list_signals(
                &self,
                scope: Scope,
                filter: &SignalFilter,
                after: Option<&Keyset>,
                limit: u32,
            ) -> Result<Vec<RegionalSignal>, StoreError> {
                let mut query: QueryBuilder<$db> =
                    QueryBuilder::new("SELECT doc, episode FROM signals WHERE 1 = 1");
                push_scope(&mut query, "region_code", scope);
                if let Some(region) = filter.region {
                    push_scope(&mut query, "region_code", region);
                }
                for (column, value) in [("kind", &filter.kind), ("severity", &filter.severity)] {
                    if let Some(value) = value {
                        query.push(format!(" AND {column} = "));
                        query.push_bind(value.clone());
                    }
                }
                if filter.kinds.as_ref().is_some_and(Vec::is_empty) {
                    query.push(" AND 1 = 0");
                } else if let Some(kinds) = &filter.kinds {
                    query.push(" AND kind IN (");
                    let mut list = query.separated(", ");
                    for kind in kinds {
                        list.push_bind(kind.clone());
                    }
                    list.push_unseparated(")");
                }
                match filter.status.as_deref() {
                    Some("active") => {
                        query.push(" AND status <> 'cleared'");
                    }
                    Some(status) => {
                        query.push(" AND status = ");
                        query.push_bind(status.to_string());
                    }
                    None => {}
                }
                push_page(&mut query, "raised_at", "signal_id", after, limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        let mut signal: RegionalSignal =
                            serde_json::from_str(row.get(0)).map_err(corrupt)?;
                        signal.episode = row.get::<i64, _>(1) as u32;
                        Ok(signal)
                    })
                    .collect()
            }

            /// See [`crate::store::Store::list_dead_letters`].
            pub async fn list_dead_letters(
                &self,
                source: Option<&str>,
                after: Option<&Keyset>,
                limit: u32,
            ) -> Result<Vec<DeadLetterRow>, StoreError> {
                let mut query: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT dead_letter_id, origin, stage, rule, field, reason, raw, raw_truncated, raw_bytes, \
                     event_id, source, kind, received_at FROM dead_letters WHERE 1 = 1",
                );
                if let Some(source) = source {
                    query.push(" AND source = ");
                    query.push_bind(source.to_string());
                }
                push_page(&mut query, "received_at", "dead_letter_id", after, limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        let origin: String = row.get(1);
                        let origin = serde_json::from_str::<$crate::domain::record::Origin>(&origin)
                            .map(|o| o.locator())
                            .unwrap_or(origin);
                        let raw: Vec<u8> = row.get(6);
                        let mut raw_text = String::from_utf8_lossy(&raw).into_owned();
                        if raw_text.chars().count() > 4000 {
                            raw_text = raw_text.chars().take(4000).collect();
                        }
                        Ok(DeadLetterRow {
                            dead_letter_id: row.get(0),
                            origin,
                            stage: row.get(2),
                            rule: row.get(3),
                            field: row.get(4),
                            reason: row.get(5),
                            raw_text,
                            raw_truncated: row.get(7),
                            raw_bytes: row.get(8),
                            event_id: row.get(9),
                            source: row.get(10),
                            kind: row.get(11),
                            received_at: row.get(12),
                        })
                    })
                    .collect()
            }

            /// See [`crate::store::Store::transition_task`].
            pub async fn transition_task(
                &self,
                task: &ScreeningTask,
                expected_version: u32,
                writes: &TransitionWrites,
                outbox: Option<&OutboxTopics>,
            ) -> Result<Result<(), TransitionConflict>, StoreError> {
                let mut tx = self.pool.begin().await?;
                // First, and a write: it takes SQLite's write lock (waiting its busy
                // timeout) and PostgreSQL's row lock; a concurrent transition of the
                // same task then finds the version moved on and changes nothing.
                let (findings, proposal) = $crate::store::sql::task_documents(task);
                let updated = sqlx::query(
                    "UPDATE tasks SET stage = $1, version = $2, overdue = $3, overdue_at = $4, \
                     updated_at = $5, assignee = $6, findings = $7, proposal = $8, decision = $9, \
                     outcome = $10, outcome_note = $11, closed_at = $12, status = $13 \
                     WHERE task_id = $14 AND version = $15",
                )
                .bind(task.stage.as_str())
                .bind(i64::from(task.version))
                .bind(task.overdue)
                .bind(task.overdue_at)
                .bind(task.updated_at)
                .bind(task.assignee.as_deref())
                .bind(findings)
                .bind(proposal)
                .bind(task.decision.map(|d| d.as_str()))
                .bind(task.outcome.map(|o| o.as_str()))
                .bind(task.outcome_note.as_deref())
                .bind(task.closed_at)
                .bind(if task.closed_at.is_some() { "closed" } else { "open" })
                .bind(&task.task_id)
                .bind(i64::from(expected_version))
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() != 1 {
                    return Ok(Err(TransitionConflict::Version));
                }
                let closing = writes.close_alert.is_some() || writes.household_change.is_some();
                if let Some((household_id, change)) = &writes.household_change {
                    sqlx::query(
                        "UPDATE households SET status = $1, monitoring_type = $2, identified_on = $3, \
                         risk_eliminated_on = $4, updated_at = $5 WHERE household_id = $6",
                    )
                    .bind(change.status.as_str())
                    .bind(change.monitoring_type.map(|t| t.as_str()))
                    .bind(change.identified_on)
                    .bind(change.risk_eliminated_on)
                    .bind(task.updated_at)
                    .bind(household_id)
                    .execute(&mut *tx)
                    .await?;
                }
                let mut alert_document = None;
                if let Some(alert_id) = &writes.close_alert {
                    let doc: Option<String> = sqlx::query_scalar(
                        "SELECT doc FROM alerts WHERE alert_id = $1 AND status = 'open'",
                    )
                    .bind(alert_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(doc) = doc {
                        let mut alert: HouseholdAlert = serde_json::from_str(&doc).map_err(corrupt)?;
                        alert.status = $crate::domain::alert::AlertStatus::Closed;
                        alert.closed_at = Some(task.updated_at);
                        alert.updated_at = task.updated_at;
                        alert.outcome = task.outcome;
                        alert.decision = task.decision;
                        let doc = serde_json::to_string(&alert).map_err(corrupt)?;
                        sqlx::query(
                            "UPDATE alerts SET status = 'closed', closed_at = $1, updated_at = $1, doc = $2 \
                             WHERE alert_id = $3",
                        )
                        .bind(task.updated_at)
                        .bind(&doc)
                        .bind(alert_id)
                        .execute(&mut *tx)
                        .await?;
                        alert_document = Some((alert.household_id.to_string(), doc));
                    }
                }
                if closing {
                    // Reaches the pipeline: the registry change (if any) and the alert
                    // to close. Ids must commit in id order (see the migration).
                    self.lock_change_log(&mut tx).await?;
                    let household = task
                        .household_id
                        .as_ref()
                        .map(|h| h.to_string())
                        .unwrap_or_default();
                    let change = writes.household_change.as_ref().map(|(_, c)| c);
                    sqlx::query(
                        "INSERT INTO registry_changes (household_id, region_code, change, alert_id, task_id, actor, at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(household)
                    .bind(task.village_code.to_string())
                    .bind(serde_json::to_string(&change).map_err(corrupt)?)
                    .bind(writes.close_alert.as_deref())
                    .bind(&task.task_id)
                    .bind(&writes.actor)
                    .bind(task.updated_at)
                    .execute(&mut *tx)
                    .await?;
                }
                for entry in &writes.audit {
                    insert_audit(&mut tx, entry).await?;
                }
                if let Some(topics) = outbox {
                    let mut rows = vec![(
                        topics.screening_tasks.as_str(),
                        task.village_code.to_string(),
                        serde_json::to_string(task).map_err(corrupt)?,
                    )];
                    if let Some((household, doc)) = alert_document {
                        rows.push((topics.household_alerts.as_str(), household, doc));
                    }
                    for (topic, key, payload) in rows {
                        sqlx::query(
                            "INSERT INTO outbox (topic, message_key, payload, created_at) VALUES ($1, $2, $3, $4)",
                        )
                        .bind(topic)
                        .bind(key)
                        .bind(payload)
                        .bind(task.updated_at)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
                Ok(Ok(()))
            }

            /// See [`crate::store::Store::next_deadline`].
            pub async fn next_deadline(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
                let pending: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT MIN(pass_on_due_at) FROM tasks WHERE stage = 'pending' AND overdue = $1",
                )
                .bind(false)
                .fetch_one(&self.pool)
                .await?;
                let others: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT MIN(due_at) FROM tasks WHERE stage <> 'closed' AND overdue = $1",
                )
                .bind(false)
                .fetch_one(&self.pool)
                .await?;
                Ok(match (pending, others) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                })
            }

            /// See [`crate::store::Store::due_tasks`].
            pub async fn due_tasks(&self, now: DateTime<Utc>) -> Result<Vec<ScreeningTask>, StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    task_columns!(),
                    " FROM tasks WHERE stage <> 'closed' AND overdue = $1 AND \
                     (due_at <= $2 OR (stage = 'pending' AND pass_on_due_at <= $2)) ORDER BY task_id"
                ))
                .bind(false)
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| task_from_row(row, 0)).collect()
            }

            /// See [`crate::store::Store::overdue_by_township`].
            pub async fn overdue_by_township(&self) -> Result<Vec<(String, i64)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT substr(village_code, 1, 9), COUNT(*) FROM tasks \
                     WHERE stage <> 'closed' AND overdue = $1 GROUP BY substr(village_code, 1, 9)",
                )
                .bind(true)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|r| (format!("{}000", r.get::<String, _>(0)), r.get(1)))
                    .collect())
            }

            /// See [`crate::store::Store::registry_changes_after`].
            pub async fn registry_changes_after(
                &self,
                cursor: i64,
                limit: i64,
            ) -> Result<Vec<LoggedChange>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, household_id, change, alert_id FROM registry_changes WHERE id > $1 \
                     ORDER BY id LIMIT $2",
                )
                .bind(cursor)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let household: String = row.get(1);
                        Ok(LoggedChange {
                            id: row.get(0),
                            household_id: HouseholdId::parse(&household).ok(),
                            change: serde_json::from_str(row.get(2)).map_err(corrupt)?,
                            alert_id: row.get(3),
                        })
                    })
                    .collect()
            }

            /// See [`crate::store::Store::ping`].
            pub async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
        }
    };
}

pub(crate) use api_store;
