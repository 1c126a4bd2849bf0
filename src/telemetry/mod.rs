//! Telemetry: the tracing subscriber (text or JSON, filter from config or RUST_LOG)
//! and the [`Metrics`] struct through which every stage reports, one method per
//! event, exposed in Prometheus format. Spans carry ids and origins, never resident
//! IDs. Errors are printed and logged through [`Chain`]: each cause once.

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

/// An error with its causes, `what failed: why: why`, each said once. yujing's own
/// errors never repeat their source in their message; a cause whose text the message
/// before it already holds (as some libraries' errors do) is left out.
pub struct Chain<'a, E: ?Sized>(pub &'a E);

impl<E: std::error::Error + ?Sized> std::fmt::Display for Chain<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !text.is_empty() && !said.contains(&text) {
                write!(f, ": {text}")?;
                said = text;
            }
            cause = error.source();
        }
        Ok(())
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes; `None`
/// elsewhere.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read x.csv")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once() {
        let missing = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(
            Chain(&Outer(missing())).to_string(),
            "cannot read x.csv: no such file"
        );
        // A library error that repeats its source in its message.
        assert_eq!(
            Chain(&Repeats(missing())).to_string(),
            "wrapped: no such file"
        );
        let nested = anyhow::Error::new(Repeats(missing())).context("importing");
        assert_eq!(
            Chain(&*nested).to_string(),
            "importing: wrapped: no such file"
        );
    }
}
