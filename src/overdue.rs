//! The deadline timer: sleeps until the next task's budget runs out (or at most
//! `procedure.overdue_rescan_seconds`, for tasks another process opened), marks
//! every task past its budget overdue (with an audit row and its outbox snapshot),
//! and sets `yujing_tasks_overdue` by township. Runs in `yujing serve` and `yujing
//! run`; two processes on one store mark each task once (the version decides).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::store::api::{AuditEntry, TransitionWrites};
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// Where the timer reads the time.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// `at` plus the tokio time elapsed since `since`: under `tokio::time::pause()`
    /// the timer's notion of now moves only as tokio's time does.
    Tokio {
        /// Wall time at `since`.
        at: DateTime<Utc>,
        /// Tokio time then.
        since: tokio::time::Instant,
    },
}

impl Clock {
    /// A tokio-driven clock starting at `at`.
    pub fn tokio_from(at: DateTime<Utc>) -> Clock {
        Clock::Tokio {
            at,
            since: tokio::time::Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { at, since } => {
                let elapsed = tokio::time::Instant::now().duration_since(*since);
                *at + chrono::Duration::from_std(elapsed).unwrap_or_default()
            }
        }
    }
}

/// The timer.
#[derive(Debug, Clone)]
pub struct OverdueTimer {
    /// The store.
    pub store: Store,
    /// Where the gauge goes.
    pub metrics: Metrics,
    /// The longest sleep.
    pub rescan: Duration,
    /// The clock.
    pub clock: Clock,
    /// The runtime the store's queries run on (the current one in production; tests
    /// that pause the timer's time run the store on a runtime of real time).
    pub db: tokio::runtime::Handle,
}

impl OverdueTimer {
    /// A timer on the system clock, querying on the current runtime.
    pub fn new(store: Store, metrics: Metrics, rescan: Duration) -> Self {
        OverdueTimer {
            store,
            metrics,
            rescan,
            clock: Clock::System,
            db: tokio::runtime::Handle::current(),
        }
    }

    async fn on_db<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.db
            .spawn(work)
            .await
            .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
    }

    /// Marks every task due at the clock's now; returns how many it marked.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let store = self.store.clone();
        let due = self
            .on_db(async move { store.due_tasks(now).await })
            .await?;
        let mut marked = 0;
        for task in due {
            let Some(next) = task.mark_overdue(now) else {
                continue;
            };
            let which = if task.stage == crate::domain::task::Stage::Pending
                && now >= task.pass_on_due_at
                && now < task.due_at
            {
                "pass_on"
            } else {
                "decision"
            };
            let writes = TransitionWrites {
                actor: "timer".into(),
                audit: vec![AuditEntry {
                    at: now,
                    actor: "timer".into(),
                    actor_role: "system".into(),
                    entity: "task".into(),
                    entity_id: task.task_id.clone(),
                    action: "overdue".into(),
                    region_code: task.village_code.to_string(),
                    from_state: Some(task.stage.to_string()),
                    to_state: Some(next.stage.to_string()),
                    old_value: Some(serde_json::json!({ "overdue": false })),
                    new_value: Some(serde_json::json!({
                        "overdue": true,
                        "budget": which,
                        "due_at": if which == "pass_on" { task.pass_on_due_at } else { task.due_at },
                        "escalated_to": task.village_code.township().to_string(),
                    })),
                    detail: format!("{which} budget ran out"),
                }],
                ..TransitionWrites::default()
            };
            let store = self.store.clone();
            let version = task.version;
            let written = self
                .on_db(async move { store.transition_task(&next, version, &writes).await })
                .await?;
            // A user moved it meanwhile: the next sweep judges its new state.
            marked += usize::from(written.is_ok());
        }
        let store = self.store.clone();
        let by_township = self
            .on_db(async move { store.overdue_by_township().await })
            .await?;
        self.metrics.tasks_overdue(&by_township);
        if marked > 0 {
            tracing::info!(marked, "tasks past their budget marked overdue");
        }
        Ok(marked)
    }

    /// How long to sleep before the next sweep.
    async fn wait(&self) -> Duration {
        let store = self.store.clone();
        let next = self
            .on_db(async move { store.next_deadline().await })
            .await
            .ok()
            .flatten();
        let now = self.clock.now();
        match next {
            // A few milliseconds past the deadline, so "now >= due" holds then.
            Some(due) => (due - now)
                .to_std()
                .map(|d| d + Duration::from_millis(5))
                .unwrap_or(Duration::ZERO)
                .min(self.rescan),
            None => self.rescan,
        }
    }

    /// Sweeps and sleeps until `cancel` fires; store errors are logged and retried
    /// at the next round.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            if let Err(error) = self.sweep().await {
                tracing::warn!(error = %crate::telemetry::Chain(&error), "overdue sweep failed; retrying");
            }
            let wait = self.wait().await;
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
