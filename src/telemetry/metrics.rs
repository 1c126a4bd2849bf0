//! The metrics registry: counters and histograms named once, here, and moved once
//! per batch by the stages through typed methods.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::pipeline::core::BatchOutput;

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
    tasks_changed: IntCounter,
    batches: IntCounter,
    batch_size: Histogram,
    commit_seconds: Histogram,
    commit_retries: IntCounter,
    core_seconds: Histogram,
    registry_households: IntGauge,
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
            tasks_changed: counter(
                &registry,
                "yujing_task_changes_total",
                "Task snapshots written",
            ),
            batches: counter(&registry, "yujing_batches_total", "Batches committed"),
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
            dead_letters,
            registry_households,
            registry,
        }
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
