//! The metrics registry: counters and histograms named once, here, and moved once
//! per batch by the stages through typed methods.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::batch::BatchOutput;

/// Every metric yujing exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    records: IntCounter,
    accepted: IntCounter,
    duplicates: IntCounter,
    unmatched: IntCounter,
    dead_letters: IntCounterVec,
    alerts_changed: IntCounter,
    alerts_by_level: IntCounterVec,
    alerts_expired: IntCounter,
    tasks_changed: IntCounter,
    batches: IntCounter,
    batch_size: Histogram,
    commit_seconds: Histogram,
    commit_retries: IntCounter,
    core_seconds: Histogram,
    registry_households: IntGauge,
    kafka_messages: IntCounterVec,
    kafka_lag: IntGaugeVec,
    kafka_high_watermark: IntGaugeVec,
    kafka_rebalances: IntCounter,
    outbox_backlog: IntGauge,
    outbox_published: IntCounterVec,
    outbox_errors: IntCounter,
    outbox_undeliverable: IntCounter,
    outbox_purged: IntCounter,
    events_purged: IntCounter,
    regional_leader: IntGauge,
    regional_fed: IntCounter,
    http_requests: IntCounterVec,
    http_seconds: prometheus::HistogramVec,
    tasks_overdue: IntGaugeVec,
    task_transitions: IntCounterVec,
    registry_changes: IntCounter,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("metric names are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric names are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("metric names are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("metric names are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("metric names are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let registry = Registry::new();
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "yujing_dead_letters_total",
                "Records refused, by stage and rule",
            ),
            &["stage", "rule"],
        )
        .expect("metric names are valid");
        registry
            .register(Box::new(dead_letters.clone()))
            .expect("metric registered once");
        let registry_households =
            IntGauge::new("yujing_registry_households", "Households in the registry")
                .expect("metric names are valid");
        registry
            .register(Box::new(registry_households.clone()))
            .expect("metric registered once");
        Metrics {
            records: counter(&registry, "yujing_records_total", "Records read"),
            accepted: counter(
                &registry,
                "yujing_events_accepted_total",
                "Valid new events",
            ),
            duplicates: counter(
                &registry,
                "yujing_events_duplicate_total",
                "Valid events whose id was seen before",
            ),
            unmatched: counter(
                &registry,
                "yujing_events_unmatched_total",
                "Accepted events the registry could not place",
            ),
            alerts_changed: counter(
                &registry,
                "yujing_alert_changes_total",
                "Alert snapshots written",
            ),
            alerts_by_level: counter_vec(
                &registry,
                "yujing_alert_changes_by_level_total",
                "Alert snapshots written (raised or updated), by the alert's level",
                &["level"],
            ),
            alerts_expired: counter(
                &registry,
                "yujing_alerts_expired_total",
                "Alerts below the task level that expired without new evidence",
            ),
            tasks_changed: counter(
                &registry,
                "yujing_task_changes_total",
                "Task snapshots written",
            ),
            batches: counter(&registry, "yujing_batches_total", "Batches committed"),
            regional_leader: gauge(
                &registry,
                "yujing_regional_leader",
                "1 while this instance holds the regional lead (detect.placement = leader)",
            ),
            regional_fed: counter(
                &registry,
                "yujing_regional_fed_events_total",
                "Committed events the regional leader counted",
            ),
            batch_size: histogram(
                &registry,
                "yujing_batch_records",
                "Records per committed batch",
                vec![1.0, 10.0, 100.0, 1000.0, 4096.0, 8192.0, 16384.0, 65536.0],
            ),
            commit_seconds: histogram(
                &registry,
                "yujing_commit_seconds",
                "Time to commit one batch",
                prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets"),
            ),
            commit_retries: counter(
                &registry,
                "yujing_commit_retries_total",
                "Batch commits retried after a transient store error",
            ),
            core_seconds: histogram(
                &registry,
                "yujing_core_seconds",
                "Time the pure core spent on one batch",
                prometheus::exponential_buckets(0.0001, 2.0, 14).expect("valid buckets"),
            ),
            kafka_messages: counter_vec(
                &registry,
                "yujing_kafka_messages_total",
                "Messages consumed, by topic",
                &["topic"],
            ),
            kafka_lag: gauge_vec(
                &registry,
                "yujing_kafka_consumer_lag",
                "High watermark minus the next offset committed with the results, by partition",
                &["topic", "partition"],
            ),
            kafka_high_watermark: gauge_vec(
                &registry,
                "yujing_kafka_high_watermark",
                "Partition high watermark seen in fetch responses",
                &["topic", "partition"],
            ),
            kafka_rebalances: counter(
                &registry,
                "yujing_kafka_rebalances_total",
                "Partition assignments and revocations",
            ),
            outbox_backlog: gauge(
                &registry,
                "yujing_outbox_backlog",
                "Outbox rows not yet published",
            ),
            outbox_published: counter_vec(
                &registry,
                "yujing_outbox_published_total",
                "Outbox rows published, by topic",
                &["topic"],
            ),
            outbox_errors: counter(
                &registry,
                "yujing_outbox_publish_errors_total",
                "Outbox rows whose publication failed (retried)",
            ),
            outbox_undeliverable: counter(
                &registry,
                "yujing_outbox_undeliverable_total",
                "Outbox rows the broker can never take (too large, invalid): recorded in the outbox and skipped",
            ),
            outbox_purged: counter(
                &registry,
                "yujing_outbox_purged_total",
                "Published outbox rows deleted after the retention period",
            ),
            events_purged: counter(
                &registry,
                "yujing_events_purged_total",
                "Events deleted after store.event_retention_days",
            ),
            http_requests: counter_vec(
                &registry,
                "yujing_http_requests_total",
                "HTTP requests, by method, route template and status",
                &["method", "route", "status"],
            ),
            http_seconds: {
                let metric = prometheus::HistogramVec::new(
                    HistogramOpts::new(
                        "yujing_http_request_seconds",
                        "HTTP request latency, by method and route template",
                    )
                    .buckets(
                        prometheus::exponential_buckets(0.0005, 2.0, 14).expect("valid buckets"),
                    ),
                    &["method", "route"],
                )
                .expect("metric names are valid");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("metric registered once");
                metric
            },
            tasks_overdue: gauge_vec(
                &registry,
                "yujing_tasks_overdue",
                "Open tasks past their budget, by township",
                &["township"],
            ),
            task_transitions: counter_vec(
                &registry,
                "yujing_task_transitions_total",
                "Procedure moves made through the API, by move",
                &["action"],
            ),
            registry_changes: counter(
                &registry,
                "yujing_registry_changes_applied_total",
                "Registry change-log rows the pipeline applied",
            ),
            dead_letters,
            registry_households,
            registry,
        }
    }

    /// An HTTP request was answered.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.http_seconds
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// The overdue open tasks per township, as the timer last counted them (townships
    /// no longer listed drop to 0).
    pub fn tasks_overdue(&self, by_township: &[(String, i64)]) {
        self.tasks_overdue.reset();
        for (township, count) in by_township {
            self.tasks_overdue
                .with_label_values(&[township.as_str()])
                .set(*count);
        }
    }

    /// A procedure move was made.
    pub fn task_transition(&self, action: &str) {
        self.task_transitions.with_label_values(&[action]).inc();
    }

    /// The pipeline applied registry changes.
    pub fn registry_changes_applied(&self, count: usize) {
        self.registry_changes.inc_by(count as u64);
    }

    /// A batch went through the core.
    pub fn batch_processed(&self, elapsed: Duration) {
        self.core_seconds.observe(elapsed.as_secs_f64());
    }

    /// A batch was committed.
    pub fn batch_committed(&self, batch: &BatchOutput, elapsed: Duration) {
        let counts = batch.counts;
        self.batches.inc();
        self.records.inc_by(counts.records);
        self.accepted.inc_by(counts.accepted);
        self.duplicates.inc_by(counts.duplicates);
        self.unmatched.inc_by(counts.unmatched);
        self.alerts_changed.inc_by(batch.alerts.len() as u64);
        let mut by_level: std::collections::BTreeMap<&'static str, u64> = Default::default();
        let mut expired = 0;
        for alert in &batch.alerts {
            *by_level.entry(alert.level.as_str()).or_default() += 1;
            expired += u64::from(alert.status == crate::domain::alert::AlertStatus::Expired);
        }
        self.alerts_expired.inc_by(expired);
        for (level, count) in by_level {
            self.alerts_by_level
                .with_label_values(&[level])
                .inc_by(count);
        }
        self.tasks_changed.inc_by(batch.tasks.len() as u64);
        self.batch_size.observe(counts.records as f64);
        self.commit_seconds.observe(elapsed.as_secs_f64());
        for letter in &batch.dead_letters {
            self.dead_letters
                .with_label_values(&[letter.rejection.stage.as_str(), &letter.rejection.rule])
                .inc();
        }
    }

    /// A commit failed transiently and will be retried.
    pub fn commit_retried(&self) {
        self.commit_retries.inc();
    }

    /// The registry was loaded.
    pub fn registry_loaded(&self, households: usize) {
        self.registry_households.set(households as i64);
    }

    /// Messages were consumed from a topic.
    pub fn messages_consumed(&self, topic: &str, count: u64) {
        self.kafka_messages
            .with_label_values(&[topic])
            .inc_by(count);
    }

    /// A partition's lag and high watermark, from client statistics.
    pub fn partition_lag(&self, topic: &str, partition: i32, high_watermark: i64, lag: i64) {
        let partition = partition.to_string();
        self.kafka_high_watermark
            .with_label_values(&[topic, &partition])
            .set(high_watermark);
        self.kafka_lag
            .with_label_values(&[topic, &partition])
            .set(lag);
    }

    /// This instance took (true) or lost (false) the regional lead.
    pub fn regional_leader(&self, leading: bool) {
        self.regional_leader.set(i64::from(leading));
    }

    /// The regional leader counted `events` committed events.
    pub fn regional_fed(&self, events: u64) {
        self.regional_fed.inc_by(events);
    }

    /// The group assignment changed.
    pub fn rebalanced(&self) {
        self.kafka_rebalances.inc();
    }

    /// The outbox backlog was measured.
    pub fn outbox_backlog(&self, rows: i64) {
        self.outbox_backlog.set(rows);
    }

    /// Outbox rows were published.
    pub fn outbox_published(&self, topic: &str, rows: u64) {
        self.outbox_published
            .with_label_values(&[topic])
            .inc_by(rows);
    }

    /// Outbox rows failed to publish (they are retried).
    pub fn outbox_failed(&self, rows: u64) {
        self.outbox_errors.inc_by(rows);
    }

    /// Outbox rows were recorded as undeliverable and skipped.
    pub fn outbox_undeliverable(&self, rows: u64) {
        self.outbox_undeliverable.inc_by(rows);
    }

    /// Published outbox rows were purged.
    pub fn outbox_purged(&self, rows: u64) {
        self.outbox_purged.inc_by(rows);
    }

    /// Events older than the retention were deleted.
    pub fn events_purged(&self, rows: u64) {
        self.events_purged.inc_by(rows);
    }

    /// The registry (for adding subsystem metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_alerts_are_counted_once_per_snapshot() {
        let metrics = Metrics::new();
        let mut batch = BatchOutput::default();
        let alert: crate::domain::alert::HouseholdAlert = serde_json::from_str(include_str!(
            "../../tests/fixtures/schemas/valid/household_alert/blue_expired.json"
        ))
        .expect("the fixture reads as an alert");
        batch.alerts = vec![alert.clone(), {
            let mut open = alert;
            open.status = crate::domain::alert::AlertStatus::Open;
            open
        }];
        metrics.batch_committed(&batch, Duration::from_millis(1));
        let text = metrics.render();
        assert!(
            text.lines().any(|l| l == "yujing_alerts_expired_total 1"),
            "{text}"
        );
    }
}
