//! Telemetry: the tracing subscriber (text or JSON, filter from config or RUST_LOG)
//! and the [`Metrics`] struct through which every stage reports, one method per
//! event, exposed in Prometheus format. Spans carry ids and origins, never resident
//! IDs.

mod metrics;

pub use metrics::Metrics;

use crate::config::TelemetrySettings;

/// Installs the global subscriber once; later calls are ignored (tests).
pub fn init(settings: &TelemetrySettings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.log_level.clone()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if settings.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes; `None`
/// elsewhere.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
