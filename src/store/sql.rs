//! The store's SQL, written once and expanded for each backend by `sql_store!`:
//! SQLite and PostgreSQL accept the same statements here (`$n` placeholders,
//! `ON CONFLICT`, multi-row `VALUES`), and sqlx maps the Rust types to each
//! backend's column types. One transaction per batch: events, dead letters, alert
//! and task snapshots, counters, outbox rows and source positions together.

/// Rows per multi-row INSERT (15 columns × 500 stays below SQLite's 32 766 and
/// PostgreSQL's 65 535 bound parameters).
pub const ROWS_PER_INSERT: usize = 500;

use chrono::{DateTime, Utc};

use super::StoreError;

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A task's priority households as stored: a JSON array of household ids.
pub(super) fn priority_households(task: &crate::domain::task::ScreeningTask) -> String {
    let ids: Vec<&str> = task
        .priority_households
        .iter()
        .map(crate::domain::ids::HouseholdId::as_str)
        .collect();
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
}

/// An alert's rule ids as stored: a JSON array, in id order.
pub(super) fn rule_ids(alert: &crate::domain::alert::HouseholdAlert) -> String {
    let ids: Vec<&str> = alert.rules.iter().map(|r| r.rule_id.as_str()).collect();
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
}

/// The task columns, in the order `task_from_row` reads them.
macro_rules! task_columns {
    () => {
        "task_id, kind, alert_id, signal_id, household_id, village_code, level, stage, due_at, \
         created_at, updated_at, outcome, outcome_note, assignee, priority_households, version, \
         budget_from, pass_on_due_at, overdue, overdue_at, findings, proposal, decision, closed_at"
    };
    ($t:literal) => {
        concat!(
            $t, ".task_id, ", $t, ".kind, ", $t, ".alert_id, ", $t, ".signal_id, ", $t,
            ".household_id, ", $t, ".village_code, ", $t, ".level, ", $t, ".stage, ", $t,
            ".due_at, ", $t, ".created_at, ", $t, ".updated_at, ", $t, ".outcome, ", $t,
            ".outcome_note, ", $t, ".assignee, ", $t, ".priority_households, ", $t,
            ".version, ", $t, ".budget_from, ", $t, ".pass_on_due_at, ", $t, ".overdue, ", $t,
            ".overdue_at, ", $t, ".findings, ", $t, ".proposal, ", $t, ".decision, ", $t,
            ".closed_at"
        )
    };
}
pub(crate) use task_columns;

/// A task's JSON-document columns (findings, proposal) as stored.
pub(super) fn task_documents(
    task: &crate::domain::task::ScreeningTask,
) -> (Option<String>, Option<String>) {
    (
        task.findings
            .as_ref()
            .and_then(|f| serde_json::to_string(f).ok()),
        task.proposal
            .as_ref()
            .and_then(|p| serde_json::to_string(p).ok()),
    )
}

pub(super) fn millis_to_time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("time {ms} ms")))
}

/// Expands the store for one backend: `$store` (struct name), `$db` (sqlx database),
/// `$row` (its row type).
macro_rules! sql_store {
    ($store:ident, $db:ty, $row:ty) => {
        mod queries {
        use std::collections::BTreeMap;

        use chrono::{DateTime, NaiveDate, Utc};
        use futures::TryStreamExt;
        use sqlx::{QueryBuilder, Row};

        use $crate::domain::alert::{HouseholdAlert, Level};
        use $crate::domain::dead_letter::{DeadLetter, Rejection, Salvage, Stage};
        use $crate::domain::event::{Kind, Payload};
        use $crate::domain::ids::{
            EventId, HouseholdId, PersonKey, RegionCode, RegionLevel,
        };
        use $crate::domain::registry::{
            Household, HouseholdStatus, Member, MonitoringType, Region,
        };
        use $crate::domain::signal::{RegionalSignal, RiskKind};
        use $crate::domain::task::{
            Decision, Outcome, ScreeningTask, Stage as TaskStage, TaskKind,
        };
        use $crate::batch::{CountRow, SeriesCheckpoint, WatermarkState};
        use $crate::batch::{
            BatchOutput, LaneProgress, RestoredEvent, SourcePosition, StoredRegional, StoredState,
        };
        use $crate::batch::ClosedAlert;
        use $crate::store::sql::{
            ROWS_PER_INSERT, corrupt, millis_to_time, priority_households, rule_ids, task_columns,
            task_documents,
        };
        use $crate::store::{
            Claimed, EvidenceItem, FeedCursor, FeedEvent, FeedStep, Fence, Lease, OutboxRow, OutboxTopics, Report,
            StoreError, StoredRegistry,
        };

        use super::$store;

        impl $store {
            /// See [`crate::store::Store::commit_batch`].
            pub async fn commit_batch(
                &self,
                batch: &BatchOutput,
                positions: &[SourcePosition],
                outbox: Option<&OutboxTopics>,
                fence: Option<&Fence>,
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                self.before_batch().await;
                let mut tx = self.batch_pool().begin().await?;
                if let Some(fence) = fence {
                    // First, so the lease row stays locked until the commit: a takeover
                    // waits for it and then sees the renewed lease.
                    let renewed = sqlx::query(
                        "UPDATE regional_leader SET expires_at = $1, cursor_txid = $2, cursor_id = $3 \
                         WHERE id = 1 AND holder = $4 AND epoch = $5",
                    )
                    .bind(fence.expires_at_ms)
                    .bind(fence.cursor.txid)
                    .bind(fence.cursor.id)
                    .bind(fence.lease.holder.as_str())
                    .bind(fence.lease.epoch)
                    .execute(&mut *tx)
                    .await?;
                    if renewed.rows_affected() != 1 {
                        return Err(StoreError::LeadershipLost);
                    }
                }
                super::insert_events(&mut tx, &batch.events, now.timestamp_millis()).await?;
                self.finish_batch(tx, batch, positions, outbox, now).await
            }

            /// The rest of [`Self::commit_batch`] once the batch's events are in `tx`:
            /// dead letters, alert and task snapshots, the regional stage's results,
            /// the outbox, the counters and the positions; then the commit.
            pub(in crate::store) async fn finish_batch(
                &self,
                mut tx: sqlx::Transaction<'static, $db>,
                batch: &BatchOutput,
                positions: &[SourcePosition],
                outbox: Option<&OutboxTopics>,
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                execute_chunks(&mut tx, &batch.dead_letters, |chunk| {
                    let mut insert: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO dead_letters (dead_letter_id, origin, stage, rule, field, reason, \
                         raw, raw_truncated, raw_bytes, event_id, source, kind, received_at) ",
                    );
                    insert.push_values(chunk, |mut row, letter| {
                        row.push_bind(letter.dead_letter_id.as_str())
                            .push_bind(
                                serde_json::to_string(&letter.origin)
                                    .unwrap_or_else(|_| letter.origin.locator()),
                            )
                            .push_bind(letter.rejection.stage.as_str())
                            .push_bind(letter.rejection.rule.as_str())
                            .push_bind(letter.rejection.field.as_deref())
                            .push_bind(letter.rejection.reason.as_str())
                            .push_bind(letter.raw.as_slice())
                            .push_bind(letter.raw_truncated)
                            .push_bind(letter.raw_bytes as i64)
                            .push_bind(letter.salvage.event_id.as_deref())
                            .push_bind(letter.salvage.source.as_deref())
                            .push_bind(letter.salvage.kind.as_deref())
                            .push_bind(letter.received_at);
                    });
                    insert.push(" ON CONFLICT (dead_letter_id) DO NOTHING");
                    Ok(insert)
                })
                .await?;
                // Each alert's document is serialised while the statement before runs,
                // and kept for the outbox when there is one.
                let mut alert_documents: Vec<String> = Vec::new();
                execute_chunks(&mut tx, &batch.alerts, |alerts| {
                    let mut documents = Vec::with_capacity(alerts.len());
                    for alert in alerts {
                        documents.push((
                            serde_json::to_string(alert).map_err(corrupt)?,
                            serde_json::to_string(&alert.judgements).map_err(corrupt)?,
                        ));
                    }
                    if outbox.is_some() {
                        alert_documents.extend(documents.iter().map(|(doc, _)| doc.clone()));
                    }
                    let mut upsert: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO alerts (alert_id, household_id, region_code, episode, level, action, status, \
                         opened_at, updated_at, closed_at, doc, judgements, risk_types, rule_ids) ",
                    );
                    upsert.push_values(alerts.iter().zip(documents), |mut row, (alert, (doc, judgements))| {
                        row.push_bind(alert.alert_id.as_str())
                            .push_bind(alert.household_id.as_str())
                            .push_bind(alert.region_code.to_string())
                            .push_bind(i64::from(alert.episode))
                            .push_bind(alert.level.as_str())
                            .push_bind(alert.action.as_str())
                            .push_bind(alert.status.as_str())
                            .push_bind(alert.opened_at)
                            .push_bind(alert.updated_at)
                            .push_bind(alert.closed_at)
                            .push_bind(doc)
                            .push_bind(judgements)
                            .push_bind(serde_json::to_string(&alert.risk_types).unwrap_or_else(|_| "[]".into()))
                            .push_bind(rule_ids(alert));
                    });
                    // An alert a user closed meanwhile stays closed; the pipeline's own
                    // end of an alert (expired) is written with it.
                    upsert.push(
                        " ON CONFLICT (alert_id) DO UPDATE SET level = excluded.level, action = excluded.action, \
                         status = excluded.status, updated_at = excluded.updated_at, closed_at = excluded.closed_at, \
                         doc = excluded.doc, judgements = excluded.judgements, \
                         risk_types = excluded.risk_types, rule_ids = excluded.rule_ids WHERE alerts.status = 'open'",
                    );
                    Ok(upsert)
                })
                .await?;
                // The pipeline only raises a task's level (a stale snapshot never lowers
                // it); its lifecycle belongs to users.
                insert_tasks(
                    &mut tx,
                    &batch.tasks,
                    " ON CONFLICT (task_id) DO UPDATE SET level = CASE WHEN \
                     (CASE excluded.level WHEN 'red' THEN 3 WHEN 'orange' THEN 2 WHEN 'yellow' THEN 1 ELSE 0 END) > \
                     (CASE tasks.level WHEN 'red' THEN 3 WHEN 'orange' THEN 2 WHEN 'yellow' THEN 1 ELSE 0 END) \
                     THEN excluded.level ELSE tasks.level END, updated_at = excluded.updated_at",
                )
                .await?;
                for (alert_id, at) in &batch.closures {
                    sqlx::query("UPDATE alerts SET closed_event_at = $1 WHERE alert_id = $2")
                        .bind(*at)
                        .bind(alert_id.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                let regional = &batch.regional;
                execute_chunks(&mut tx, &regional.counts, |chunk| {
                    let mut upsert: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO regional_counts (region_code, kind, day, count) ",
                    );
                    upsert.push_values(chunk, |mut row, count| {
                        row.push_bind(count.region_code.to_string())
                            .push_bind(count.kind.as_str())
                            .push_bind(count.day)
                            .push_bind(i64::from(count.count));
                    });
                    upsert.push(
                        " ON CONFLICT (region_code, kind, day) DO UPDATE SET count = excluded.count",
                    );
                    Ok(upsert)
                })
                .await?;
                for checkpoint in &regional.checkpoints {
                    sqlx::query(
                        "INSERT INTO regional_series (region_code, kind, checkpoint) VALUES ($1, $2, $3) \
                         ON CONFLICT (region_code, kind) DO UPDATE SET checkpoint = excluded.checkpoint",
                    )
                    .bind(checkpoint.region_code.to_string())
                    .bind(checkpoint.kind.as_str())
                    .bind(checkpoint.document.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(clock) = &regional.watermark {
                    sqlx::query(
                        "INSERT INTO regional_clock (id, state) VALUES (1, $1) \
                         ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                    )
                    .bind(serde_json::to_string(clock).map_err(corrupt)?)
                    .execute(&mut *tx)
                    .await?;
                }
                // Episode order per (region, kind): an episode cleared in this batch is
                // written before the next one raised, so at most one is active at a time.
                let mut signals: Vec<&RegionalSignal> = regional.signals.iter().collect();
                signals.sort_by(|a, b| {
                    (a.region_code, a.risk_kind, a.episode).cmp(&(b.region_code, b.risk_kind, b.episode))
                });
                let mut signal_documents = Vec::with_capacity(signals.len());
                for signal in signals.iter().copied() {
                    let doc = serde_json::to_string(signal).map_err(corrupt)?;
                    sqlx::query(
                        "INSERT INTO signals (signal_id, region_code, kind, episode, severity, status, day, \
                         raised_at, updated_at, cleared_at, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                         ON CONFLICT (signal_id) DO UPDATE SET severity = excluded.severity, status = excluded.status, \
                         day = excluded.day, updated_at = excluded.updated_at, cleared_at = excluded.cleared_at, \
                         doc = excluded.doc",
                    )
                    .bind(&signal.signal_id)
                    .bind(signal.region_code.to_string())
                    .bind(signal.risk_kind.as_str())
                    .bind(i64::from(signal.episode))
                    .bind(signal.severity.as_str())
                    .bind(signal.status.as_str())
                    .bind(signal.day)
                    .bind(signal.raised_at)
                    .bind(signal.updated_at)
                    .bind(signal.cleared_at)
                    .bind(&doc)
                    .execute(&mut *tx)
                    .await?;
                    signal_documents.push(doc);
                }
                // Campaign tasks are only ever created: their lifecycle belongs to users.
                insert_tasks(&mut tx, &regional.tasks, " ON CONFLICT (task_id) DO NOTHING").await?;
                if let Some(topics) = outbox {
                    let mut rows: Vec<(&str, String, String)> = Vec::new();
                    for (signal, doc) in signals.iter().zip(&signal_documents) {
                        rows.push((
                            topics.regional_signals.as_str(),
                            signal.region_code.to_string(),
                            doc.clone(),
                        ));
                    }
                    for task in &regional.tasks {
                        rows.push((
                            topics.screening_tasks.as_str(),
                            task.village_code.to_string(),
                            serde_json::to_string(task).map_err(corrupt)?,
                        ));
                    }
                    for (alert, doc) in batch.alerts.iter().zip(alert_documents) {
                        rows.push((
                            topics.household_alerts.as_str(),
                            alert.household_id.to_string(),
                            doc,
                        ));
                    }
                    // A task as stored: the procedure may have moved it on since the
                    // core's copy was made.
                    let ids: Vec<&str> = batch.tasks.iter().map(|t| t.task_id.as_str()).collect();
                    for chunk in ids.chunks(ROWS_PER_INSERT) {
                        let mut select: QueryBuilder<$db> = QueryBuilder::new(concat!(
                            "SELECT ",
                            task_columns!(),
                            " FROM tasks WHERE task_id IN ("
                        ));
                        let mut list = select.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        select.push(") ORDER BY task_id");
                        for row in select.build().fetch_all(&mut *tx).await? {
                            let task = task_from_row(&row, 0)?;
                            rows.push((
                                topics.screening_tasks.as_str(),
                                task.village_code.to_string(),
                                serde_json::to_string(&task).map_err(corrupt)?,
                            ));
                        }
                    }
                    for letter in &batch.dead_letters {
                        rows.push((
                            topics.dead_letters.as_str(),
                            letter.dead_letter_id.clone(),
                            letter.to_document_within(topics.dead_letter_raw_bytes).to_string(),
                        ));
                    }
                    execute_chunks(&mut tx, &rows, |chunk| {
                        let mut insert: QueryBuilder<$db> = QueryBuilder::new(
                            "INSERT INTO outbox (topic, message_key, payload, created_at) ",
                        );
                        insert.push_values(chunk, |mut row, (topic, key, payload)| {
                            row.push_bind(*topic)
                                .push_bind(key.as_str())
                                .push_bind(payload.as_str())
                                .push_bind(now);
                        });
                        Ok(insert)
                    })
                    .await?;
                }
                let counts = batch.counts;
                for (name, value) in [
                    ("records", counts.records),
                    ("accepted", counts.accepted),
                    ("duplicates", counts.duplicates),
                    ("dead_letters", counts.dead_letters),
                    ("unmatched", counts.unmatched),
                    ("suppressed", counts.suppressed),
                    ("late_events", regional.late_events),
                    ("late_corrections", regional.late_corrections),
                    ("days_judged", regional.days_judged),
                ] {
                    if value > 0 {
                        sqlx::query(
                            "INSERT INTO counters (name, value) VALUES ($1, $2) \
                             ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                        )
                        .bind(name)
                        .bind(value as i64)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                for lane in &batch.lanes {
                    sqlx::query(super::UPSERT_LANE)
                    .bind(&lane.lane)
                    .bind(lane.holding)
                    .bind(lane.max_event_time.map(|t| t.timestamp_millis()))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                for position in positions {
                    if let Some(epoch) = position.claim {
                        // Locks the claim until the commit: a new owner's claim waits for
                        // this batch, and this batch is refused after a new owner's claim.
                        let held = sqlx::query(
                            "UPDATE source_claims SET epoch = epoch WHERE source_key = $1 AND epoch = $2",
                        )
                        .bind(&position.source_key)
                        .bind(epoch)
                        .execute(&mut *tx)
                        .await?;
                        if held.rows_affected() != 1 {
                            return Err(StoreError::Fenced {
                                source_key: position.source_key.clone(),
                            });
                        }
                    }
                    sqlx::query(
                        "INSERT INTO source_positions (source_key, position, line, fingerprint, updated_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source_key) DO UPDATE SET \
                         position = excluded.position, line = excluded.line, \
                         fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
                    )
                    .bind(&position.source_key)
                    .bind(position.position as i64)
                    .bind(position.line as i64)
                    .bind(position.fingerprint.as_deref())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                self.after_commit();
                Ok(())
            }

            /// See [`crate::store::Store::acquire_regional_lead`].
            pub async fn acquire_regional_lead(
                &self,
                holder: &str,
                expires_at_ms: i64,
                now_ms: i64,
            ) -> Result<Option<(Lease, FeedCursor)>, StoreError> {
                let row = sqlx::query(
                    "INSERT INTO regional_leader (id, holder, epoch, expires_at) VALUES (1, $1, 1, $2) \
                     ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, \
                     epoch = regional_leader.epoch + 1, expires_at = excluded.expires_at \
                     WHERE regional_leader.expires_at < $3 OR regional_leader.holder = excluded.holder \
                     RETURNING epoch, cursor_txid, cursor_id",
                )
                .bind(holder)
                .bind(expires_at_ms)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|row| {
                    (
                        Lease {
                            holder: holder.to_string(),
                            epoch: row.get(0),
                        },
                        FeedCursor {
                            txid: row.get(1),
                            id: row.get(2),
                        },
                    )
                }))
            }

            /// See [`crate::store::Store::release_regional_lead`].
            pub async fn release_regional_lead(&self, lease: &Lease) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE regional_leader SET expires_at = 0 WHERE id = 1 AND holder = $1 AND epoch = $2",
                )
                .bind(lease.holder.as_str())
                .bind(lease.epoch)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            /// See [`crate::store::Store::claim_inputs`].
            pub async fn claim_inputs(
                &self,
                keys: &[String],
                holder: &str,
                now: DateTime<Utc>,
            ) -> Result<Vec<Claimed>, StoreError> {
                let mut tx = self.batch_pool().begin().await?;
                let mut claimed = Vec::with_capacity(keys.len());
                for key in keys {
                    let epoch: i64 = sqlx::query_scalar(
                        "INSERT INTO source_claims (source_key, epoch, holder, claimed_at) VALUES ($1, 1, $2, $3) \
                         ON CONFLICT (source_key) DO UPDATE SET epoch = source_claims.epoch + 1, \
                         holder = excluded.holder, claimed_at = excluded.claimed_at RETURNING epoch",
                    )
                    .bind(key)
                    .bind(holder)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    // The new owner holds the lane until its first batch says otherwise.
                    sqlx::query(super::CLAIM_LANE)
                    .bind(key)
                    .bind(true)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let position = sqlx::query(
                        "SELECT position, line, fingerprint FROM source_positions WHERE source_key = $1",
                    )
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| SourcePosition {
                        source_key: key.clone(),
                        position: row.get::<i64, _>(0) as u64,
                        line: row.get::<i64, _>(1) as u64,
                        fingerprint: row.get(2),
                        claim: Some(epoch),
                    });
                    claimed.push(Claimed {
                        source_key: key.clone(),
                        epoch,
                        position,
                    });
                }
                tx.commit().await?;
                self.after_commit();
                Ok(claimed)
            }

            /// See [`crate::store::Store::feed_step`].
            pub async fn feed_step(
                &self,
                after: FeedCursor,
                limit: i64,
                lane_prefix: &str,
            ) -> Result<FeedStep, StoreError> {
                let mut tx = self.pool.begin().await?;
                super::snapshot_reads(&mut tx).await?;
                let rows = sqlx::query(super::FEED_EVENTS)
                    .bind(after.txid)
                    .bind(after.id)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                let events = rows.iter().map(feed_event).collect::<Result<Vec<_>, _>>()?;
                // Only when every finished transaction's events are read do the lanes of
                // those transactions say where event time stands.
                let lanes = if (events.len() as i64) < limit {
                    let rows = sqlx::query(super::VISIBLE_LANES)
                        .bind(lane_prefix)
                        .fetch_all(&mut *tx)
                        .await?;
                    let mut lanes = Vec::with_capacity(rows.len());
                    for row in rows {
                        lanes.push(LaneProgress {
                            lane: row.get(0),
                            holding: row.get(1),
                            max_event_time: row
                                .get::<Option<i64>, _>(2)
                                .map(millis_to_time)
                                .transpose()?,
                        });
                    }
                    Some(lanes)
                } else {
                    None
                };
                tx.commit().await?;
                Ok(FeedStep { events, lanes })
            }

            /// See [`crate::store::Store::feed_events`].
            pub async fn feed_events(
                &self,
                after: FeedCursor,
                limit: i64,
            ) -> Result<Vec<FeedEvent>, StoreError> {
                let rows = sqlx::query(super::FEED_EVENTS)
                    .bind(after.txid)
                    .bind(after.id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(feed_event).collect()
            }

            /// See [`crate::store::Store::feed_history`].
            pub async fn feed_history(
                &self,
                since: Option<DateTime<Utc>>,
                held_after: Option<DateTime<Utc>>,
                upto: FeedCursor,
            ) -> Result<Vec<FeedEvent>, StoreError> {
                let since = since.map_or(i64::MIN, |t| t.timestamp_millis());
                let held_after = held_after.map_or(i64::MAX, |t| t.timestamp_millis());
                let mut rows = sqlx::query(super::FEED_HISTORY)
                    .bind(upto.txid)
                    .bind(upto.id)
                    .bind(since)
                    .bind(held_after)
                    .fetch(&self.pool);
                let mut events = Vec::new();
                while let Some(row) = rows.try_next().await? {
                    events.push(feed_event(&row)?);
                }
                Ok(events)
            }

            /// See [`crate::store::Store::position`].
            pub async fn position(
                &self,
                source_key: &str,
            ) -> Result<Option<SourcePosition>, StoreError> {
                let row = sqlx::query(
                    "SELECT position, line, fingerprint FROM source_positions WHERE source_key = $1",
                )
                .bind(source_key)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|row| SourcePosition {
                    source_key: source_key.to_string(),
                    position: row.get::<i64, _>(0) as u64,
                    line: row.get::<i64, _>(1) as u64,
                    fingerprint: row.get(2),
                    claim: None,
                }))
            }

            /// See [`crate::store::Store::positions_with_prefix`].
            pub async fn positions_with_prefix(
                &self,
                prefix: &str,
            ) -> Result<Vec<SourcePosition>, StoreError> {
                // A plain prefix comparison, not LIKE: topic names hold `_`, and
                // SQLite's LIKE ignores case where Kafka does not.
                let rows = sqlx::query(
                    "SELECT source_key, position, line, fingerprint FROM source_positions \
                     WHERE substr(source_key, 1, length($1)) = $1",
                )
                .bind(prefix)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| SourcePosition {
                        source_key: row.get(0),
                        position: row.get::<i64, _>(1) as u64,
                        line: row.get::<i64, _>(2) as u64,
                        fingerprint: row.get(3),
                        claim: None,
                    })
                    .collect())
            }

            /// See [`crate::store::Store::village_codes`].
            pub async fn village_codes(&self) -> Result<Vec<RegionCode>, StoreError> {
                let rows = sqlx::query("SELECT code FROM regions WHERE level = 'village'")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| RegionCode::parse(row.get(0)).map_err(corrupt))
                    .collect()
            }

            /// See [`crate::store::Store::claim_setting`].
            pub async fn claim_setting(&self, name: &str, value: &str) -> Result<String, StoreError> {
                sqlx::query(
                    "INSERT INTO store_settings (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(value)
                .execute(&self.pool)
                .await?;
                let row = sqlx::query("SELECT value FROM store_settings WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.get(0))
            }

            /// See [`crate::store::Store::upsert_regions`].
            pub async fn upsert_regions(&self, regions: &[Region]) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                for chunk in regions.chunks(ROWS_PER_INSERT) {
                    let mut insert: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO regions (code, name, level, parent, longitude, latitude) ",
                    );
                    insert.push_values(chunk, |mut row, region| {
                        row.push_bind(region.code.to_string())
                            .push_bind(region.name.as_str())
                            .push_bind(region.level.as_str())
                            .push_bind(region.parent.map(|p| p.to_string()))
                            .push_bind(region.longitude)
                            .push_bind(region.latitude);
                    });
                    insert.push(
                        " ON CONFLICT (code) DO UPDATE SET name = excluded.name, level = excluded.level, \
                         parent = excluded.parent, longitude = excluded.longitude, latitude = excluded.latitude",
                    );
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            /// See [`crate::store::Store::import_counts`].
            pub async fn import_counts(&self, counts: &[CountRow]) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                execute_chunks(&mut tx, counts, |chunk| {
                    let mut upsert: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO regional_counts (region_code, kind, day, count) ",
                    );
                    upsert.push_values(chunk, |mut row, count| {
                        row.push_bind(count.region_code.to_string())
                            .push_bind(count.kind.as_str())
                            .push_bind(count.day)
                            .push_bind(i64::from(count.count));
                    });
                    upsert.push(
                        " ON CONFLICT (region_code, kind, day) DO UPDATE SET count = excluded.count",
                    );
                    Ok(upsert)
                })
                .await?;
                tx.commit().await?;
                Ok(())
            }

            /// See [`crate::store::Store::upsert_households`].
            pub async fn upsert_households(
                &self,
                households: &[Household],
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                for chunk in households.chunks(ROWS_PER_INSERT) {
                    let mut insert: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO households (household_id, region_code, members, labour_capable, \
                         annual_net_income_yuan, status, monitoring_type, identified_on, risk_eliminated_on, \
                         safety_net, dibao, tekun, developmental_assistance, updated_at) ",
                    );
                    insert.push_values(chunk, |mut row, h| {
                        row.push_bind(h.household_id.as_str())
                            .push_bind(h.region_code.to_string())
                            .push_bind(i64::from(h.members))
                            .push_bind(i64::from(h.labour_capable))
                            .push_bind(h.annual_net_income_yuan)
                            .push_bind(h.status.as_str())
                            .push_bind(h.monitoring_type.map(MonitoringType::as_str))
                            .push_bind(h.identified_on)
                            .push_bind(h.risk_eliminated_on)
                            .push_bind(h.safety_net)
                            .push_bind(h.dibao)
                            .push_bind(h.tekun)
                            .push_bind(h.developmental_assistance)
                            .push_bind(now);
                    });
                    insert.push(
                        " ON CONFLICT (household_id) DO UPDATE SET region_code = excluded.region_code, \
                         members = excluded.members, labour_capable = excluded.labour_capable, \
                         annual_net_income_yuan = excluded.annual_net_income_yuan, status = excluded.status, \
                         monitoring_type = excluded.monitoring_type, identified_on = excluded.identified_on, \
                         risk_eliminated_on = excluded.risk_eliminated_on, safety_net = excluded.safety_net, \
                         dibao = excluded.dibao, tekun = excluded.tekun, \
                         developmental_assistance = excluded.developmental_assistance, updated_at = excluded.updated_at",
                    );
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            /// See [`crate::store::Store::upsert_members`].
            pub async fn upsert_members(
                &self,
                members: &[Member],
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                for chunk in members.chunks(ROWS_PER_INSERT) {
                    let mut insert: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO members (person_key, person_masked, household_id, relation, labour_capable, updated_at) ",
                    );
                    insert.push_values(chunk, |mut row, m| {
                        row.push_bind(m.person_key.0.to_vec())
                            .push_bind(m.person_masked.as_str())
                            .push_bind(m.household_id.as_str())
                            .push_bind(m.relation.as_str())
                            .push_bind(m.labour_capable)
                            .push_bind(now);
                    });
                    insert.push(
                        " ON CONFLICT (person_key) DO UPDATE SET person_masked = excluded.person_masked, \
                         household_id = excluded.household_id, relation = excluded.relation, \
                         labour_capable = excluded.labour_capable, updated_at = excluded.updated_at",
                    );
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            /// See [`crate::store::Store::load_registry`].
            pub async fn load_registry(&self) -> Result<StoredRegistry, StoreError> {
                let mut registry = self.load_households_and_regions().await?;
                let mut members = Vec::new();
                self.for_each_member(&mut |key, household: &str, labour_capable| {
                    members.push((key, HouseholdId::parse(household).map_err(corrupt)?, labour_capable));
                    Ok(())
                })
                .await?;
                registry.members = members;
                Ok(registry)
            }

            /// See [`crate::store::Store::for_each_member`].
            pub async fn for_each_member(
                &self,
                each: &mut (dyn FnMut(PersonKey, &str, bool) -> Result<(), StoreError> + Send),
            ) -> Result<(), StoreError> {
                let mut rows =
                    sqlx::query("SELECT person_key, household_id, labour_capable FROM members")
                        .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    let key: &[u8] = row.get(0);
                    each(
                        PersonKey::from_slice(key).ok_or_else(|| corrupt("person key"))?,
                        row.get(1),
                        row.get(2),
                    )?;
                }
                Ok(())
            }

            /// See [`crate::store::Store::load_households_and_regions`].
            pub async fn load_households_and_regions(&self) -> Result<StoredRegistry, StoreError> {
                let mut registry = StoredRegistry::default();
                let mut rows = sqlx::query(
                    "SELECT household_id, region_code, members, labour_capable, annual_net_income_yuan, status, \
                     monitoring_type, identified_on, risk_eliminated_on, safety_net, dibao, tekun, developmental_assistance \
                     FROM households ORDER BY household_id",
                )
                .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    let monitoring_type: Option<String> = row.get(6);
                    registry.households.push(Household {
                        household_id: HouseholdId::parse(row.get(0)).map_err(corrupt)?,
                        region_code: RegionCode::parse(row.get(1)).map_err(corrupt)?,
                        members: row.get::<i64, _>(2) as u32,
                        labour_capable: row.get::<i64, _>(3) as u32,
                        annual_net_income_yuan: row.get(4),
                        status: HouseholdStatus::parse(row.get(5))
                            .ok_or_else(|| corrupt("household status"))?,
                        monitoring_type: monitoring_type
                            .map(|t| {
                                MonitoringType::parse(&t).ok_or_else(|| corrupt("monitoring type"))
                            })
                            .transpose()?,
                        identified_on: row.get::<Option<NaiveDate>, _>(7),
                        risk_eliminated_on: row.get::<Option<NaiveDate>, _>(8),
                        safety_net: row.get(9),
                        dibao: row.get(10),
                        tekun: row.get(11),
                        developmental_assistance: row.get(12),
                    });
                }
                drop(rows);
                let rows = sqlx::query(
                    "SELECT code, name, level, parent, longitude, latitude FROM regions",
                )
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    let parent: Option<String> = row.get(3);
                    registry.regions.push(Region {
                        code: RegionCode::parse(row.get(0)).map_err(corrupt)?,
                        name: row.get(1),
                        level: RegionLevel::parse(row.get(2))
                            .ok_or_else(|| corrupt("region level"))?,
                        parent: parent
                            .map(|p| RegionCode::parse(&p).map_err(corrupt))
                            .transpose()?,
                        longitude: row.get(4),
                        latitude: row.get(5),
                    });
                }
                Ok(registry)
            }

            /// See [`crate::store::Store::latest_event_time`].
            pub async fn latest_event_time(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
                let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(occurred_at) FROM events")
                    .fetch_one(&self.pool)
                    .await?;
                latest.map(millis_to_time).transpose()
            }

            /// See [`crate::store::Store::load_state`].
            pub async fn load_state(
                &self,
                events_since: Option<DateTime<Utc>>,
                held_after: Option<DateTime<Utc>>,
                closed_since: DateTime<Utc>,
                seen_since: Option<DateTime<Utc>>,
            ) -> Result<StoredState, StoreError> {
                let mut state = StoredState::default();
                let seen_from = seen_since.map_or(i64::MIN, |t| t.timestamp_millis());
                let mut ids = sqlx::query(
                    "SELECT source, event_id, occurred_at FROM events WHERE occurred_at >= $1",
                )
                .bind(seen_from)
                .fetch(&self.pool);
                while let Some(row) = ids.try_next().await? {
                    state.seen.push((
                        $crate::domain::ids::dedupe_digest(row.get(0), row.get(1)),
                        millis_to_time(row.get(2))?,
                    ));
                }
                drop(ids);
                let since = events_since.map_or(i64::MIN, |t| t.timestamp_millis());
                let mut rows = sqlx::query(
                    "SELECT event_id, kind, occurred_at, person_key, household_id, payload, reported_at, region_code FROM events \
                     WHERE occurred_at >= $1 AND (household_id IS NOT NULL OR kind IN ('industry_project_failure', 'disaster_declared')) \
                     ORDER BY id",
                )
                .bind(since)
                .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    state.events.push(restored_event(&row)?);
                }
                drop(rows);
                // Earlier events the regional stage held, reported after its hold began.
                if let (Some(_), Some(held_after)) = (events_since, held_after) {
                    let mut rows = sqlx::query(
                        "SELECT event_id, kind, occurred_at, person_key, household_id, payload, reported_at, region_code FROM events \
                         WHERE reported_at > $2 AND match <> 'unmatched' AND (occurred_at < $1 OR kind = 'disaster_declared') \
                         AND (household_id IS NOT NULL OR kind IN ('industry_project_failure', 'disaster_declared')) \
                         ORDER BY id",
                    )
                    .bind(since)
                    .bind(held_after.timestamp_millis())
                    .fetch(&self.pool);
                    while let Some(row) = rows.try_next().await? {
                        state.held.push(restored_event(&row)?);
                    }
                }
                let rows = sqlx::query(
                    concat!(
                        "SELECT a.doc, a.episode, a.status, COALESCE(a.closed_event_at, a.closed_at), a.judgements, ",
                        task_columns!("t"),
                        " FROM alerts a LEFT JOIN tasks t ON t.alert_id = a.alert_id \
                         WHERE a.status = 'open' OR COALESCE(a.closed_event_at, a.closed_at) >= $1"
                    ),
                )
                .bind(closed_since)
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    let mut alert: HouseholdAlert =
                        serde_json::from_str(row.get(0)).map_err(corrupt)?;
                    let episode = row.get::<i64, _>(1) as u32;
                    alert.episode = episode;
                    alert.judgements = serde_json::from_str(row.get(4)).map_err(corrupt)?;
                    let status: &str = row.get(2);
                    if status == "open" {
                        let task = match row.get::<Option<String>, _>(5) {
                            Some(_) => Some(task_from_row(&row, 5)?),
                            None => None,
                        };
                        state.open_alerts.push((alert, task, episode));
                    } else {
                        let closed_at: Option<DateTime<Utc>> = row.get(3);
                        let closed_at = closed_at.ok_or_else(|| corrupt("closed alert without closed_at"))?;
                        state.closed_alerts.push((
                            alert.household_id.clone(),
                            ClosedAlert {
                                risk_types: alert.risk_types.clone(),
                                level: alert.level,
                                closed_at,
                                evidence: alert.evidence.clone(),
                                expired: status == "expired",
                            },
                            episode,
                        ));
                    }
                }
                // Alerts closed long ago still count: the next episode (and id) is new.
                let mut rows = sqlx::query(
                    "SELECT household_id, MAX(episode) FROM alerts GROUP BY household_id",
                )
                .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    state.episodes.push((
                        HouseholdId::parse(row.get(0)).map_err(corrupt)?,
                        row.get::<i64, _>(1) as u32 + 1,
                    ));
                }
                drop(rows);
                Ok(state)
            }

            /// See [`crate::store::Store::report`].
            pub async fn report(&self) -> Result<Report, StoreError> {
                let mut report = Report::default();
                let counters = sqlx::query("SELECT name, value FROM counters")
                    .fetch_all(&self.pool)
                    .await?;
                for row in counters {
                    let name: &str = row.get(0);
                    let value = row.get::<i64, _>(1) as u64;
                    match name {
                        "records" => report.events_processed = value,
                        "accepted" => report.events_accepted = value,
                        "duplicates" => report.duplicates = value,
                        "dead_letters" => report.dead_letters = value,
                        "unmatched" => report.unmatched = value,
                        "suppressed" => report.suppressed = value,
                        "late_events" => report.late_events = value,
                        "late_corrections" => report.late_corrections = value,
                        _ => {}
                    }
                }
                report.alerts_by_level = self
                    .grouped("SELECT level, COUNT(*) FROM alerts GROUP BY level")
                    .await?;
                report.alerts_by_action = self
                    .grouped("SELECT action, COUNT(*) FROM alerts GROUP BY action")
                    .await?;
                report.alerts_by_status = self
                    .grouped("SELECT status, COUNT(*) FROM alerts GROUP BY status")
                    .await?;
                report.rule_yield = self.rule_yield(None).await?;
                report.tasks_by_stage = self
                    .grouped("SELECT stage, COUNT(*) FROM tasks GROUP BY stage")
                    .await?;
                report.signals_by_severity = self
                    .grouped(
                        "SELECT severity, COUNT(*) FROM signals WHERE status <> 'cleared' GROUP BY severity",
                    )
                    .await?;
                report.signals_by_kind = self
                    .grouped("SELECT kind, COUNT(*) FROM signals GROUP BY kind")
                    .await?;
                report.dead_letters_by_rule = self
                    .grouped("SELECT rule, COUNT(*) FROM dead_letters GROUP BY rule")
                    .await?;
                report.households = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM households")
                    .fetch_one(&self.pool)
                    .await? as u64;
                report.members = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM members")
                    .fetch_one(&self.pool)
                    .await? as u64;
                Ok(report)
            }

            async fn grouped(
                &self,
                sql: &'static str,
            ) -> Result<BTreeMap<String, u64>, StoreError> {
                let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
                Ok(rows
                    .into_iter()
                    .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1) as u64))
                    .collect())
            }

            /// See [`crate::store::Store::evidence`].
            pub async fn evidence(
                &self,
                event_ids: &[String],
            ) -> Result<Vec<EvidenceItem>, StoreError> {
                let mut found = Vec::with_capacity(event_ids.len());
                for id in event_ids {
                    if let Some(row) = sqlx::query(
                        "SELECT event_id, kind, person_masked FROM events WHERE event_id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    {
                        found.push(EvidenceItem {
                            event_id: row.get(0),
                            kind: row.get(1),
                            person_masked: row.get(2),
                        });
                    }
                }
                Ok(found)
            }

            /// See [`crate::store::Store::export_alerts`].
            pub async fn export_alerts(
                &self,
                each: &mut (dyn FnMut(HouseholdAlert) -> std::io::Result<()> + Send),
            ) -> Result<(), StoreError> {
                let mut rows =
                    sqlx::query("SELECT doc, episode FROM alerts ORDER BY household_id, episode")
                        .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    let mut alert: HouseholdAlert =
                        serde_json::from_str(row.get(0)).map_err(corrupt)?;
                    alert.episode = row.get::<i64, _>(1) as u32;
                    each(alert).map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
                }
                Ok(())
            }

            /// See [`crate::store::Store::export_tasks`].
            pub async fn export_tasks(
                &self,
                each: &mut (dyn FnMut(ScreeningTask) -> std::io::Result<()> + Send),
            ) -> Result<(), StoreError> {
                let mut rows = sqlx::query(concat!(
                    "SELECT ",
                    task_columns!(),
                    " FROM tasks ORDER BY task_id"
                ))
                .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    each(task_from_row(&row, 0)?)
                        .map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
                }
                Ok(())
            }

            /// See [`crate::store::Store::export_dead_letters`].
            pub async fn export_dead_letters(
                &self,
                each: &mut (dyn FnMut(DeadLetter) -> std::io::Result<()> + Send),
            ) -> Result<(), StoreError> {
                let mut rows = sqlx::query(
                    "SELECT dead_letter_id, origin, stage, rule, field, reason, raw, raw_truncated, raw_bytes, \
                     event_id, source, kind, received_at FROM dead_letters ORDER BY received_at, dead_letter_id",
                )
                .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    let letter = DeadLetter {
                        dead_letter_id: row.get(0),
                        origin: serde_json::from_str(row.get(1)).map_err(corrupt)?,
                        rejection: Rejection {
                            stage: Stage::parse(row.get(2)).ok_or_else(|| corrupt("stage"))?,
                            rule: row.get(3),
                            field: row.get(4),
                            reason: row.get(5),
                        },
                        raw: row.get(6),
                        raw_truncated: row.get(7),
                        raw_bytes: row.get::<i64, _>(8) as u64,
                        salvage: Salvage {
                            event_id: row.get(9),
                            source: row.get(10),
                            kind: row.get(11),
                        },
                        received_at: row.get(12),
                    };
                    each(letter).map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
                }
                Ok(())
            }

            /// See [`crate::store::Store::regional_clock`].
            pub async fn regional_clock(&self) -> Result<Option<WatermarkState>, StoreError> {
                let state: Option<String> =
                    sqlx::query_scalar("SELECT state FROM regional_clock WHERE id = 1")
                        .fetch_optional(&self.pool)
                        .await?;
                state
                    .map(|text| serde_json::from_str(&text).map_err(corrupt))
                    .transpose()
            }

            /// See [`crate::store::Store::load_regional`].
            pub async fn load_regional(
                &self,
                counts_from: Option<NaiveDate>,
            ) -> Result<StoredRegional, StoreError> {
                let mut regional = StoredRegional::default();
                // Not `NaiveDate::MIN`: PostgreSQL refuses dates before 4713 BC.
                let from = counts_from
                    .unwrap_or(NaiveDate::from_ymd_opt(1, 1, 1).expect("0001-01-01 is a date"));
                let mut rows = sqlx::query(
                    "SELECT region_code, kind, day, count FROM regional_counts WHERE day >= $1",
                )
                .bind(from)
                .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    regional.counts.push(CountRow {
                        region_code: RegionCode::parse(row.get(0)).map_err(corrupt)?,
                        kind: RiskKind::parse(row.get(1)).ok_or_else(|| corrupt("risk kind"))?,
                        day: row.get(2),
                        count: row.get::<i64, _>(3) as u32,
                    });
                }
                drop(rows);
                let rows = sqlx::query("SELECT region_code, kind, checkpoint FROM regional_series")
                    .fetch_all(&self.pool)
                    .await?;
                for row in rows {
                    regional.checkpoints.push(SeriesCheckpoint {
                        region_code: RegionCode::parse(row.get(0)).map_err(corrupt)?,
                        kind: RiskKind::parse(row.get(1))
                            .ok_or_else(|| corrupt(format!("series kind {}", row.get::<&str, _>(1))))?,
                        document: row.get(2),
                    });
                }
                let rows = sqlx::query(
                    "SELECT s.doc, s.episode FROM signals s WHERE s.episode = \
                     (SELECT MAX(t.episode) FROM signals t WHERE t.region_code = s.region_code AND t.kind = s.kind)",
                )
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    let mut signal: RegionalSignal =
                        serde_json::from_str(row.get(0)).map_err(corrupt)?;
                    signal.episode = row.get::<i64, _>(1) as u32;
                    regional.signals.push(signal);
                }
                let rows = sqlx::query("SELECT village_code, due_at FROM tasks WHERE kind = 'campaign'")
                    .fetch_all(&self.pool)
                    .await?;
                for row in rows {
                    let village = RegionCode::parse(row.get(0)).map_err(corrupt)?;
                    regional.campaigns.push((village, row.get(1)));
                }
                Ok(regional)
            }

            /// See [`crate::store::Store::export_signals`].
            pub async fn export_signals(
                &self,
                each: &mut (dyn FnMut(RegionalSignal) -> std::io::Result<()> + Send),
            ) -> Result<(), StoreError> {
                let mut rows = sqlx::query(
                    "SELECT doc, episode FROM signals ORDER BY region_code, kind, episode",
                )
                .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    let mut signal: RegionalSignal =
                        serde_json::from_str(row.get(0)).map_err(corrupt)?;
                    signal.episode = row.get::<i64, _>(1) as u32;
                    each(signal).map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
                }
                Ok(())
            }

            /// See [`crate::store::Store::outbox_pending`].
            pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, topic, message_key, payload FROM outbox WHERE sent_at IS NULL \
                     ORDER BY id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| OutboxRow {
                        id: row.get(0),
                        topic: row.get(1),
                        key: row.get(2),
                        payload: row.get(3),
                    })
                    .collect())
            }

            /// See [`crate::store::Store::outbox_mark_sent`].
            pub async fn outbox_mark_sent(
                &self,
                ids: &[i64],
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                for chunk in ids.chunks(ROWS_PER_INSERT) {
                    let mut update: QueryBuilder<$db> =
                        QueryBuilder::new("UPDATE outbox SET sent_at = ");
                    update.push_bind(now);
                    update.push(" WHERE id IN (");
                    let mut list = update.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    update.push(")");
                    update.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            /// See [`crate::store::Store::outbox_mark_undeliverable`].
            pub async fn outbox_mark_undeliverable(
                &self,
                id: i64,
                failure: &str,
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE outbox SET sent_at = $1, failure = $2 WHERE id = $3")
                    .bind(now)
                    .bind(crate::domain::dead_letter::storable(failure))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            /// See [`crate::store::Store::outbox_undeliverable`].
            pub async fn outbox_undeliverable(&self) -> Result<Vec<(OutboxRow, String)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, topic, message_key, payload, failure FROM outbox \
                     WHERE failure IS NOT NULL ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        (
                            OutboxRow {
                                id: row.get(0),
                                topic: row.get(1),
                                key: row.get(2),
                                payload: row.get(3),
                            },
                            row.get(4),
                        )
                    })
                    .collect())
            }

            /// See [`crate::store::Store::outbox_backlog`].
            pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
                Ok(
                    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
                        .fetch_one(&self.pool)
                        .await?,
                )
            }

            /// See [`crate::store::Store::events_purge`].
            pub async fn events_purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
                let before = before.timestamp_millis();
                let mut purged = 0;
                // In slices, so no one transaction holds the store for long.
                loop {
                    let result = sqlx::query(
                        "DELETE FROM events WHERE id IN \
                         (SELECT id FROM events WHERE occurred_at < $1 LIMIT 10000)",
                    )
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                    purged += result.rows_affected();
                    if result.rows_affected() == 0 {
                        return Ok(purged);
                    }
                }
            }

            /// See [`crate::store::Store::outbox_purge`].
            pub async fn outbox_purge(&self, sent_before: DateTime<Utc>) -> Result<u64, StoreError> {
                let result = sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1 AND failure IS NULL")
                    .bind(sent_before)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected())
            }
        }

        /// Executes the statements `build` makes of `items`, [`ROWS_PER_INSERT`] rows
        /// each, building the next statement while the database executes the current
        /// one: the store's worker (SQLite) or server (PostgreSQL) and this task then
        /// work side by side instead of taking turns.
        pub(super) async fn execute_chunks<T>(
            tx: &mut sqlx::Transaction<'_, $db>,
            items: &[T],
            mut build: impl FnMut(&[T]) -> Result<QueryBuilder<$db>, StoreError>,
        ) -> Result<(), StoreError> {
            let mut chunks = items.chunks(ROWS_PER_INSERT);
            let Some(first) = chunks.next() else {
                return Ok(());
            };
            let mut current = build(first)?;
            loop {
                let next = chunks.next();
                // `join!` polls the statement first, which hands it to the database,
                // then builds the next one while it runs.
                let (executed, built) = futures::join!(
                    current.build().execute(&mut **tx),
                    async { next.map(&mut build).transpose() },
                );
                executed?;
                match built? {
                    Some(builder) => current = builder,
                    None => return Ok(()),
                }
            }
        }

        /// Multi-row INSERTs of task snapshots, each ending in `on_conflict`.
        pub(super) async fn insert_tasks(
            tx: &mut sqlx::Transaction<'_, $db>,
            tasks: &[ScreeningTask],
            on_conflict: &'static str,
        ) -> Result<(), StoreError> {
            execute_chunks(tx, tasks, |chunk| {
                let mut insert: QueryBuilder<$db> = QueryBuilder::new(concat!(
                    "INSERT INTO tasks (status, ",
                    task_columns!(),
                    ") "
                ));
                insert.push_values(chunk, |mut row, task| {
                    let (findings, proposal) = task_documents(task);
                    row.push_bind(if task.stage == TaskStage::Closed { "closed" } else { "open" })
                        .push_bind(task.task_id.as_str())
                        .push_bind(task.kind.as_str())
                        .push_bind(task.alert_id.as_deref())
                        .push_bind(task.signal_id.as_deref())
                        .push_bind(task.household_id.as_ref().map(HouseholdId::as_str))
                        .push_bind(task.village_code.to_string())
                        .push_bind(task.level.as_str())
                        .push_bind(task.stage.as_str())
                        .push_bind(task.due_at)
                        .push_bind(task.created_at)
                        .push_bind(task.updated_at)
                        .push_bind(task.outcome.map(Outcome::as_str))
                        .push_bind(task.outcome_note.as_deref())
                        .push_bind(task.assignee.as_deref())
                        .push_bind(priority_households(task))
                        .push_bind(i64::from(task.version))
                        .push_bind(task.budget_from)
                        .push_bind(task.pass_on_due_at)
                        .push_bind(task.overdue)
                        .push_bind(task.overdue_at)
                        .push_bind(findings)
                        .push_bind(proposal)
                        .push_bind(task.decision.map(Decision::as_str))
                        .push_bind(task.closed_at);
                });
                insert.push(on_conflict);
                Ok(insert)
            })
            .await
        }

        /// A row of event_id, kind, occurred_at, person_key, household_id, payload,
        /// reported_at, region_code, as the pipeline's restore reads it.
        fn restored_event(row: &$row) -> Result<RestoredEvent, StoreError> {
            let kind = Kind::parse(row.get(1)).ok_or_else(|| corrupt("event kind"))?;
            let payload = Payload::from_json(kind, row.get(5)).ok();
            let household: Option<&str> = row.get(4);
            let households = match (household, &payload) {
                (Some(id), _) => vec![HouseholdId::parse(id).map_err(corrupt)?],
                (None, Some(Payload::IndustryProjectFailure(failure))) => {
                    failure.household_ids.clone()
                }
                _ => Vec::new(),
            };
            let key: Option<Vec<u8>> = row.get(3);
            Ok(RestoredEvent {
                event_id: EventId::parse(row.get(0)).map_err(corrupt)?,
                occurred_at: millis_to_time(row.get(2))?,
                reported_at: millis_to_time(row.get(6))?,
                person_key: key.and_then(|k| PersonKey::from_slice(&k)),
                households,
                region_code: row
                    .get::<Option<String>, _>(7)
                    .map(|r| RegionCode::parse(&r).map_err(corrupt))
                    .transpose()?,
                payload,
            })
        }

        /// A row of `FEED_EVENTS` / `FEED_HISTORY`: txid, id, event_id, source, kind,
        /// occurred_at, reported_at, household_id, region_code, match, payload.
        fn feed_event(row: &$row) -> Result<FeedEvent, StoreError> {
            use $crate::domain::event::Source;
            use $crate::batch::Match;
            let kind = Kind::parse(row.get(4)).ok_or_else(|| corrupt("event kind"))?;
            let payload_json: String = row.get(10);
            let household: Option<String> = row.get(7);
            let region: Option<String> = row.get(8);
            let matched: String = row.get(9);
            Ok(FeedEvent {
                cursor: FeedCursor {
                    txid: row.get(0),
                    id: row.get(1),
                },
                event_id: EventId::parse(row.get(2)).map_err(corrupt)?,
                source: Source::parse(row.get(3)).ok_or_else(|| corrupt("event source"))?,
                occurred_at: millis_to_time(row.get(5))?,
                reported_at: millis_to_time(row.get(6))?,
                household_id: household
                    .map(|h| HouseholdId::parse(&h).map_err(corrupt))
                    .transpose()?,
                region_code: region
                    .map(|r| RegionCode::parse(&r).map_err(corrupt))
                    .transpose()?,
                matched: Match::parse(&matched)
                    .ok_or_else(|| corrupt(format!("event match {matched}")))?,
                payload: Payload::from_json(kind, &payload_json).ok(),
                payload_json,
            })
        }

        /// A task from the columns of `task_columns!` starting at `at`.
        pub(in crate::store) fn task_from_row(row: &$row, at: usize) -> Result<ScreeningTask, StoreError> {
            let text = |i: usize| -> String { row.get(at + i) };
            let optional = |i: usize| -> Option<String> { row.get(at + i) };
            let created_at: DateTime<Utc> = row.get(at + 9);
            let due_at: DateTime<Utc> = row.get(at + 8);
            Ok(ScreeningTask {
                task_id: text(0),
                kind: TaskKind::parse(&text(1)).ok_or_else(|| corrupt("task kind"))?,
                alert_id: optional(2),
                signal_id: optional(3),
                household_id: optional(4)
                    .map(|h| HouseholdId::parse(&h).map_err(corrupt))
                    .transpose()?,
                village_code: RegionCode::parse(&text(5)).map_err(corrupt)?,
                level: Level::parse(&text(6)).ok_or_else(|| corrupt("task level"))?,
                stage: TaskStage::parse(&text(7)).ok_or_else(|| corrupt("task stage"))?,
                due_at,
                created_at,
                updated_at: row.get(at + 10),
                outcome: optional(11)
                    .map(|o| Outcome::parse(&o).ok_or_else(|| corrupt("task outcome")))
                    .transpose()?,
                outcome_note: optional(12),
                assignee: optional(13),
                priority_households: serde_json::from_str(&text(14))
                    .map_err(|_| corrupt("task priority households"))?,
                version: row.get::<i64, _>(at + 15) as u32,
                budget_from: row.get::<Option<DateTime<Utc>>, _>(at + 16).unwrap_or(created_at),
                pass_on_due_at: row.get::<Option<DateTime<Utc>>, _>(at + 17).unwrap_or(due_at),
                overdue: row.get(at + 18),
                overdue_at: row.get(at + 19),
                findings: optional(20)
                    .map(|d| serde_json::from_str(&d).map_err(corrupt))
                    .transpose()?,
                proposal: optional(21)
                    .map(|d| serde_json::from_str(&d).map_err(corrupt))
                    .transpose()?,
                decision: optional(22)
                    .map(|d| Decision::parse(&d).ok_or_else(|| corrupt("task decision")))
                    .transpose()?,
                closed_at: row.get(at + 23),
            })
        }
        }
    };
}

pub(crate) use sql_store;

/// Multi-row `INSERT ... ON CONFLICT DO NOTHING` of accepted events: the SQLite store's
/// way (PostgreSQL copies them in).
macro_rules! insert_events_by_values {
    ($db:ty) => {
        /// Inserts a batch's accepted events (duplicates ignored).
        pub(super) async fn insert_events(
            tx: &mut sqlx::Transaction<'_, $db>,
            events: &[$crate::batch::StoredEvent],
            processed_at: i64,
        ) -> Result<(), super::StoreError> {
            use $crate::domain::ids::{HouseholdId, MaskedId};
            queries::execute_chunks(tx, events, |chunk| {
                let mut insert: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "INSERT INTO events (event_id, source, kind, occurred_at, reported_at, \
                     person_key, person_masked, household_id, region_code, match, payload, origin, processed_at) ",
                );
                // The event id and the payload are bound as shared text, without a copy
                // (not the household id: the registry's copy is in use by the core at
                // the same time). The region code binds as its number: twelve digits
                // with no leading zero, which SQLite's TEXT affinity stores as that
                // same text (only the SQLite store inserts events this way).
                insert.push_values(chunk, |mut row, event| {
                    row.push_bind(event.event_id.shared())
                        .push_bind(event.source.as_str())
                        .push_bind(event.kind.as_str())
                        .push_bind(event.occurred_at.timestamp_millis())
                        .push_bind(event.reported_at.timestamp_millis())
                        .push_bind(event.person_key.map(|k| k.0.to_vec()))
                        .push_bind(event.person_masked.as_ref().map(MaskedId::as_str))
                        .push_bind(event.household_id.as_ref().map(HouseholdId::as_str))
                        .push_bind(event.region_code.map(|c| c.value() as i64))
                        .push_bind(event.matched.as_str())
                        .push_bind(event.payload_json.clone())
                        .push_bind(event.origin.locator())
                        .push_bind(processed_at);
                });
                insert.push(" ON CONFLICT (source, event_id) DO NOTHING");
                Ok(insert)
            })
            .await
        }
    };
}

pub(crate) use insert_events_by_values;
