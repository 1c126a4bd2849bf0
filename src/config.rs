//! Typed settings, layered: the compiled-in `config/default.toml` < a file given
//! with `--config` < `YUJING__SECTION__KEY` environment variables. Unknown keys,
//! type errors and out-of-range values are all collected and reported together in
//! one [`ConfigError`]; secrets are wrapped so they never print.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::domain::alert::Level;

/// The compiled-in defaults.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Every problem found in the configuration, reported at once.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem, each naming the key.
    pub problems: Vec<String>,
}

/// A secret string: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// All settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `[store]`
    pub store: StoreSettings,
    /// `[input]`
    pub input: InputSettings,
    /// `[privacy]`
    pub privacy: PrivacySettings,
    /// `[validation]`
    pub validation: ValidationSettings,
    /// `[policy]`
    pub policy: PolicySettings,
    /// `[rules]`
    pub rules: RuleSettings,
    /// `[telemetry]`
    pub telemetry: TelemetrySettings,
    /// `[api]`: the HTTP listener (API, dashboard, metrics).
    pub api: ApiSettings,
    /// `[procedure]`: the identification procedure's deadlines.
    pub procedure: ProcedureSettings,
    /// `[sweeps]`: the standing sweeps' thresholds.
    pub sweeps: SweepSettings,
    /// `[detect]`: regional detection.
    pub detect: crate::pipeline::detect::DetectSettings,
    /// `[kafka]`
    pub kafka: KafkaSettings,
}

/// `[store]`: where results go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoreSettings {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: Secret,
    /// `normal` or `full`.
    pub sqlite_synchronous: String,
    /// SQLite page size of a new database file.
    pub sqlite_page_size: u32,
    /// SQLite WAL size (pages) past which a batch waits for the background
    /// checkpoint, so the WAL starts over.
    pub sqlite_wal_autocheckpoint_pages: u32,
    /// Pool size (PostgreSQL).
    pub max_connections: u32,
    /// The first PostgreSQL connection's time limit.
    pub connect_timeout_seconds: u64,
    /// Give up after this long of failures (0 = never).
    pub retry_for_seconds: u64,
    /// Backoff cap.
    pub max_backoff_seconds: u64,
    /// Events older than this many days of event time are deleted (0: kept).
    pub event_retention_days: i64,
}

/// `[input]`: reading records.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InputSettings {
    /// Default inputs of `yujing run`.
    pub paths: Vec<String>,
    /// Records per batch (= per transaction).
    pub batch_size: usize,
    /// Longest accepted record.
    pub max_line_bytes: usize,
    /// Bytes of an over-long record kept in its dead letter.
    pub max_dead_letter_bytes: usize,
    /// Batches in flight between stages.
    pub channel_capacity: usize,
    /// A file whose last line has no line end yet is read up to that line only; the
    /// line itself is read once the file has not changed for this long (a department
    /// may still be writing it).
    pub settle_seconds: u64,
    /// Files read to their end are the whole input: every day up to the latest
    /// event's is judged then. Otherwise days within the allowed lateness stay open
    /// for the next run.
    pub complete: bool,
    /// Duplicates are found among the events within this many days of event time
    /// before the latest accepted; older events are refused as too late.
    pub dedupe_horizon_days: i64,
}

/// `[privacy]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PrivacySettings {
    /// HMAC key of the resident-ID pseudonyms.
    pub pseudonymisation_key: Secret,
}

/// `[validation]`: semantic checks' tolerances.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ValidationSettings {
    /// Allowed clock skew between event, report and processing times.
    pub clock_skew_minutes: i64,
    /// Tolerance of the settlement sum check.
    pub settlement_tolerance_yuan: f64,
    /// The zone (`+08:00`, `Z`) of event times sent without one; empty: refused.
    pub default_utc_offset: String,
}

/// One monitoring line entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MonitoringLine {
    /// Region-code prefix it applies to ("" = everywhere).
    pub region_prefix: String,
    /// First year it applies.
    pub from_year: i32,
    /// Annual net income per capita.
    pub yuan_per_capita: f64,
}

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PolicySettings {
    /// The monitoring lines.
    pub monitoring_lines: Vec<MonitoringLine>,
}

impl PolicySettings {
    /// The line for a village code in a year: longest matching prefix, then the
    /// latest `from_year` not after `year`. `None` when nothing matches.
    pub fn monitoring_line(&self, region_code: &str, year: i32) -> Option<f64> {
        self.monitoring_lines
            .iter()
            .filter(|line| region_code.starts_with(&line.region_prefix) && line.from_year <= year)
            .max_by_key(|line| (line.region_prefix.len(), line.from_year))
            .map(|line| line.yuan_per_capita)
    }

    /// The line the rules and the sweeps apply: [`PolicySettings::monitoring_line`],
    /// and before every configured year the earliest national line (the settings
    /// check guarantees one).
    pub fn line_in_force(&self, region_code: &str, year: i32) -> f64 {
        self.monitoring_line(region_code, year)
            .or_else(|| {
                self.monitoring_lines
                    .iter()
                    .filter(|l| l.region_prefix.is_empty())
                    .min_by_key(|l| l.from_year)
                    .map(|l| l.yuan_per_capita)
            })
            .unwrap_or(f64::INFINITY)
    }
}

/// `[rules.assistance]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AssistanceRules {
    /// 低保 / 特困 applied or approved.
    pub dibao_tekun_level: Level,
    /// A rejected 低保 / 特困 application.
    pub rejected_level: Level,
    /// 临时救助.
    pub temporary_level: Level,
}

/// `[rules.medical]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MedicalRules {
    /// Out-of-pocket threshold for lifted households.
    pub oop_threshold_yuan_lifted: f64,
    /// ...for monitored households.
    pub oop_threshold_yuan_monitored: f64,
    /// ...for ordinary households.
    pub oop_threshold_yuan_ordinary: f64,
    /// ...or this share of annual income.
    pub oop_income_share: f64,
    /// Diagnosis groups counted as accidents.
    pub accident_diagnosis_groups: Vec<String>,
}

/// `[rules.unemployment]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UnemploymentRules {
    /// Months of wage counted as lost.
    pub lost_income_months: f64,
}

/// `[rules.disaster]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DisasterRules {
    /// Share of annual income at which a loss is orange.
    pub heavy_loss_income_share: f64,
}

/// `[rules]`: household rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RuleSettings {
    /// Look-back window.
    pub lookback_days: i64,
    /// Lateness judged with full context.
    pub max_lateness_days: i64,
    /// Cool-down after an alert closes.
    pub cooldown_days: i64,
    /// Lowest level that opens a task.
    pub task_min_level: Level,
    /// An open alert below `task_min_level` expires this many days of event time
    /// after its latest evidence (see `pipeline::rules::HouseholdRules::advance`).
    pub expiry_days: i64,
    /// Evidence listed per alert: beyond this many, the oldest events no judgement
    /// can cite again leave the list (the count keeps them).
    pub max_evidence_per_alert: usize,
    /// Above this multiple of the line, 突发严重困难户.
    pub hardship_income_ratio: f64,
    /// Distinct risk types that raise the level.
    pub escalation_distinct_risk_types: usize,
    /// `[rules.assistance]`
    pub assistance: AssistanceRules,
    /// `[rules.medical]`
    pub medical: MedicalRules,
    /// `[rules.unemployment]`
    pub unemployment: UnemploymentRules,
    /// `[rules.disaster]`
    pub disaster: DisasterRules,
}

impl RuleSettings {
    /// How long (days of event time before the latest event accepted) a closed or
    /// expired alert still matters: its evidence can be judged again within the
    /// look-back plus the lateness, and a later finding's cool-down reaches back
    /// `cooldown_days`; both for events up to `max_lateness_days` late. Older closed
    /// alerts leave the core's memory and are not read back at start-up.
    pub fn closed_alert_reach_days(&self) -> i64 {
        (self.lookback_days + self.max_lateness_days).max(self.cooldown_days)
            + self.max_lateness_days
    }
}

/// `[telemetry]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TelemetrySettings {
    /// `text` or `json`.
    pub log_format: String,
    /// Default filter.
    pub log_level: String,
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApiSettings {
    /// Listen address of `yujing run` (and the default of `yujing serve`), empty = off.
    pub listen: String,
    /// Largest request body accepted (larger: 413).
    pub max_body_bytes: usize,
    /// Items per page when a request names no `limit`.
    pub default_page_size: u32,
    /// Regional summaries are rolled up from per-village figures at most this old.
    pub summary_cache_ms: u64,
    /// A GeoJSON file of the county's boundaries the dashboard draws under its map
    /// (empty: points only).
    #[serde(default)]
    pub boundaries_geojson: String,
}

/// One `[[procedure.budgets]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BudgetOverride {
    /// Region-code prefix it applies to (the longest match wins).
    pub region_prefix: String,
    /// Days for the township to pass a warning on.
    pub pass_on_days: i64,
    /// Days from the first warning to the decision.
    pub decision_days: i64,
}

/// `[sweeps]`: thresholds of the standing sweeps over the registry (`crate::sweeps`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SweepSettings {
    /// A monitored household identified this many years ago or earlier, risk not
    /// eliminated, is due an assistance review (2).
    pub long_monitored_years: u32,
    /// A risk-eliminated household whose income per capita is at most the line times
    /// (1 + this share) is due a 回头看 (0.1: within 10 % of the line).
    pub recheck_income_margin_share: f64,
    /// Months monitored before a household can be a candidate for 风险消除 (6).
    pub elimination_min_monitored_months: u32,
    /// An event reported more than this many days after it occurred was reported
    /// late (录入不及时); `quality.late_reporting` gives each department's share (7).
    pub late_report_days: u32,
}

/// `[procedure]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProcedureSettings {
    /// Days for the township to pass a warning on to the village (2).
    pub pass_on_days: i64,
    /// Days from the first warning to the county's decision (15).
    pub decision_days: i64,
    /// Shortest publicity (公示) of an outcome that changes the registry, in days.
    pub publicity_min_days: i64,
    /// The overdue timer re-reads the open tasks at least this often (tasks opened by
    /// another process are seen within this).
    pub overdue_rescan_seconds: u64,
    /// How often the pipeline looks for new registry changes (decisions).
    pub change_poll_ms: u64,
    /// Budgets by region prefix.
    #[serde(default)]
    pub budgets: Vec<BudgetOverride>,
}

impl ProcedureSettings {
    /// The budgets as the domain uses them.
    pub fn budgets(&self) -> crate::domain::task::Budgets {
        use crate::domain::task::{Budget, Budgets};
        Budgets {
            default: Budget {
                pass_on_days: self.pass_on_days,
                decision_days: self.decision_days,
            },
            by_prefix: self
                .budgets
                .iter()
                .map(|b| {
                    (
                        b.region_prefix.clone(),
                        Budget {
                            pass_on_days: b.pass_on_days,
                            decision_days: b.decision_days,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// `[kafka.output_topics]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OutputTopics {
    /// Household alerts (key: household id).
    pub household_alerts: String,
    /// Screening tasks (key: village code).
    pub screening_tasks: String,
    /// Regional signals (key: region code).
    pub regional_signals: String,
    /// Dead letters (key: dead-letter id).
    pub dead_letters: String,
}

/// `[kafka]`: the production source and the outbox relay.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KafkaSettings {
    /// Bootstrap servers; empty = Kafka off.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// Client id.
    pub client_id: String,
    /// Input topic per department (source name → topic).
    pub input_topics: BTreeMap<String, String>,
    /// Output topics.
    pub output_topics: OutputTopics,
    /// Publish alerts, tasks, signals and dead letters through the outbox.
    pub publish_outputs: bool,
    /// Messages per batch (= per transaction).
    pub batch_max_messages: usize,
    /// Longest wait before a partial batch is processed.
    pub batch_max_wait_ms: u64,
    /// Consumer group session timeout.
    pub session_timeout_ms: u64,
    /// Longest pause between polls before the group evicts the consumer.
    pub max_poll_interval_ms: u64,
    /// librdkafka statistics interval (consumer lag metrics); 0 = off.
    pub statistics_interval_ms: u64,
    /// Outbox rows published per round.
    pub outbox_batch: i64,
    /// On shutdown, how long to keep publishing the outbox.
    pub outbox_flush_timeout_seconds: u64,
    /// Published outbox rows are kept this long (for inspection), then purged.
    pub outbox_retention_hours: u64,
    /// The most of a refused record's bytes that a published dead letter carries
    /// (the store keeps what it was given): keeps every dead letter below the
    /// producer's message size limit.
    pub dead_letter_publish_bytes: usize,
    /// Extra librdkafka consumer properties.
    #[serde(deserialize_with = "client_properties")]
    pub consumer_properties: BTreeMap<String, String>,
    /// Extra librdkafka producer properties.
    #[serde(deserialize_with = "client_properties")]
    pub producer_properties: BTreeMap<String, String>,
}

/// librdkafka properties: every value is text to librdkafka, but a number or a
/// boolean (as TOML and environment variables give them) is accepted as written.
fn client_properties<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Flag(bool),
    }
    let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                Scalar::Text(text) => text,
                Scalar::Integer(n) => n.to_string(),
                Scalar::Float(x) => x.to_string(),
                Scalar::Flag(flag) => flag.to_string(),
            };
            (key, value)
        })
        .collect())
}

impl KafkaSettings {
    /// Whether Kafka is configured.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// The input topic of a department.
    pub fn topic_for(&self, source: crate::domain::event::Source) -> Option<&str> {
        self.input_topics.get(source.as_str()).map(String::as_str)
    }
}

/// Where the layers come from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// A file given with `--config`.
    pub file: Option<std::path::PathBuf>,
    /// Environment variables (all of them; only `YUJING__*` are read).
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The file (if any) and the process environment.
    pub fn from_process(file: Option<&Path>) -> Self {
        Sources {
            file: file.map(Path::to_path_buf),
            env: std::env::vars().collect(),
        }
    }
}

impl Settings {
    /// Loads and checks the layers; reports every problem at once.
    pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let mut merged: toml::Table = match DEFAULT_TOML.parse() {
            Ok(table) => table,
            Err(error) => {
                return Err(ConfigError {
                    problems: vec![format!("compiled-in defaults: {error}")],
                });
            }
        };
        if let Some(path) = &sources.file {
            match std::fs::read_to_string(path) {
                Ok(text) => match text.parse::<toml::Table>() {
                    Ok(table) => merge(&mut merged, table),
                    Err(error) => problems.push(format!("{}: {error}", path.display())),
                },
                Err(error) => problems.push(format!("{}: {error}", path.display())),
            }
        }
        for (name, value) in &sources.env {
            let Some(rest) = name.strip_prefix("YUJING__") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                problems.push(format!("environment variable {name}: empty key segment"));
                continue;
            }
            set_path(&mut merged, &path, env_value(value));
        }
        let settings = from_table(merged, &mut problems);
        match settings {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(ConfigError { problems }),
        }
    }

    /// The compiled-in defaults alone (tests, and the demo before overrides).
    pub fn defaults() -> Settings {
        // The defaults are checked by a unit test, so this fails only on a bug.
        Settings::load(&Sources::default()).expect("compiled-in defaults are valid")
    }

    /// The pseudonymisation key, or an error telling how to set it.
    pub fn require_pseudonymisation_key(&self) -> Result<&[u8], ConfigError> {
        let key = self.privacy.pseudonymisation_key.expose();
        if key.is_empty() {
            return Err(ConfigError {
                problems: vec![
                    "privacy.pseudonymisation_key is not set: set YUJING__PRIVACY__PSEUDONYMISATION_KEY \
                     (at least 16 bytes, kept secret; only `yujing demo` runs without it)"
                        .to_string(),
                ],
            });
        }
        Ok(key.as_bytes())
    }
}

/// Range checks, section by section, so that every parsed section is checked even
/// when another failed to parse.
trait Check {
    fn check(&self, require: &mut dyn FnMut(bool, &str));
}

impl Check for StoreSettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        require(
            self.sqlite_synchronous == "normal" || self.sqlite_synchronous == "full",
            "store.sqlite_synchronous: must be \"normal\" or \"full\"",
        );
        require(
            self.sqlite_page_size.is_power_of_two()
                && (4096..=65536).contains(&self.sqlite_page_size),
            "store.sqlite_page_size: must be a power of two from 4096 to 65536",
        );
        require(
            self.max_connections >= 1,
            "store.max_connections: must be at least 1",
        );
        require(
            self.max_backoff_seconds >= 1,
            "store.max_backoff_seconds: must be at least 1",
        );
        require(
            (1..=600).contains(&self.connect_timeout_seconds),
            "store.connect_timeout_seconds: must be from 1 to 600",
        );
        require(
            (0..=36_500).contains(&self.event_retention_days),
            "store.event_retention_days: must be from 0 (keep every event) to 36500",
        );
    }
}

impl Check for InputSettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        require(self.batch_size >= 1, "input.batch_size: must be at least 1");
        require(
            self.max_line_bytes >= 1024,
            "input.max_line_bytes: must be at least 1024",
        );
        require(
            self.channel_capacity >= 1,
            "input.channel_capacity: must be at least 1",
        );
        require(
            (1..=36_500).contains(&self.dedupe_horizon_days),
            "input.dedupe_horizon_days: must be from 1 to 36500",
        );
    }
}

impl Check for PrivacySettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        let key = self.pseudonymisation_key.expose();
        require(
            key.is_empty() || key.len() >= 16,
            "privacy.pseudonymisation_key: must be at least 16 bytes",
        );
    }
}

impl Check for ValidationSettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        require(
            self.clock_skew_minutes >= 0,
            "validation.clock_skew_minutes: must not be negative",
        );
        require(
            self.settlement_tolerance_yuan >= 0.0,
            "validation.settlement_tolerance_yuan: must not be negative",
        );
        let offset = self.default_utc_offset.trim().as_bytes();
        let hours_minutes = |h: &[u8], m: &[u8]| {
            let number = |d: &[u8]| {
                d.iter()
                    .all(u8::is_ascii_digit)
                    .then(|| (d[0] - b'0') * 10 + (d[1] - b'0'))
            };
            matches!((number(h), number(m)), (Some(h), Some(m)) if h <= 14 && m <= 59)
        };
        require(
            match offset {
                [] | [b'Z'] => true,
                [sign, h1, h2, b':', m1, m2] => {
                    matches!(sign, b'+' | b'-') && hours_minutes(&[*h1, *h2], &[*m1, *m2])
                }
                _ => false,
            },
            "validation.default_utc_offset: must be empty, Z, or an offset such as +08:00",
        );
    }
}

impl Check for PolicySettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        require(
            !self.monitoring_lines.is_empty(),
            "policy.monitoring_lines: at least one line is needed",
        );
        for (i, line) in self.monitoring_lines.iter().enumerate() {
            require(
                line.yuan_per_capita > 0.0,
                &format!("policy.monitoring_lines[{i}].yuan_per_capita: must be positive"),
            );
            require(
                line.region_prefix.len() <= 12
                    && line.region_prefix.bytes().all(|b| b.is_ascii_digit()),
                &format!("policy.monitoring_lines[{i}].region_prefix: at most 12 digits"),
            );
        }
        require(
            self.monitoring_lines
                .iter()
                .any(|line| line.region_prefix.is_empty()),
            "policy.monitoring_lines: one line must have region_prefix = \"\" (the national default)",
        );
    }
}

impl Check for RuleSettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        require(
            self.lookback_days >= 1,
            "rules.lookback_days: must be at least 1",
        );
        require(
            self.max_lateness_days >= 0,
            "rules.max_lateness_days: must not be negative",
        );
        require(
            self.cooldown_days >= 0,
            "rules.cooldown_days: must not be negative",
        );
        require(
            self.expiry_days >= 1,
            "rules.expiry_days: must be at least 1",
        );
        require(
            self.hardship_income_ratio >= 1.0,
            "rules.hardship_income_ratio: must be at least 1",
        );
        require(
            self.escalation_distinct_risk_types >= 2,
            "rules.escalation_distinct_risk_types: must be at least 2",
        );
        require(
            self.medical.oop_income_share > 0.0,
            "rules.medical.oop_income_share: must be positive",
        );
        require(
            self.unemployment.lost_income_months >= 0.0,
            "rules.unemployment.lost_income_months: must not be negative",
        );
        require(
            self.disaster.heavy_loss_income_share > 0.0,
            "rules.disaster.heavy_loss_income_share: must be positive",
        );
    }
}

impl Check for TelemetrySettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        require(
            self.log_format == "text" || self.log_format == "json",
            "telemetry.log_format: must be \"text\" or \"json\"",
        );
    }
}

impl Check for KafkaSettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        for source in self.input_topics.keys() {
            require(
                crate::domain::event::Source::parse(source).is_some(),
                &format!("kafka.input_topics.{source}: not a department (see the feed catalogue)"),
            );
        }
        let mut topics: Vec<&String> = self.input_topics.values().collect();
        topics.sort();
        topics.dedup();
        require(
            topics.len() == self.input_topics.len(),
            "kafka.input_topics: two departments share a topic",
        );
        require(
            !self.group_id.is_empty(),
            "kafka.group_id: must not be empty",
        );
        require(
            self.batch_max_messages >= 1,
            "kafka.batch_max_messages: must be at least 1",
        );
        require(
            self.session_timeout_ms >= 1000,
            "kafka.session_timeout_ms: must be at least 1000",
        );
        require(
            self.outbox_batch >= 1,
            "kafka.outbox_batch: must be at least 1",
        );
        // Base64 and the UTF-8 copy make a document about 2.4 times its raw bytes;
        // librdkafka's default message.max.bytes is 1 000 000.
        require(
            self.dead_letter_publish_bytes <= 393_216,
            "kafka.dead_letter_publish_bytes: must be at most 393216 (a published dead letter must stay below the producer's 1 MB message limit)",
        );
    }
}

impl Check for crate::pipeline::detect::DetectSettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        for problem in self.problems() {
            require(false, &problem);
        }
    }
}

impl Check for ApiSettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        require(
            self.listen.is_empty() || self.listen.parse::<std::net::SocketAddr>().is_ok(),
            "api.listen: must be empty or an address such as 127.0.0.1:9464",
        );
        require(
            self.max_body_bytes >= 1024,
            "api.max_body_bytes: must be at least 1024",
        );
        require(
            (1..=500).contains(&self.default_page_size),
            "api.default_page_size: must be from 1 to 500",
        );
    }
}

impl Check for ProcedureSettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        require(
            self.pass_on_days >= 1,
            "procedure.pass_on_days: must be at least 1",
        );
        require(
            self.decision_days >= self.pass_on_days,
            "procedure.decision_days: must be at least procedure.pass_on_days",
        );
        require(
            self.publicity_min_days >= 1,
            "procedure.publicity_min_days: must be at least 1",
        );
        require(
            self.overdue_rescan_seconds >= 1,
            "procedure.overdue_rescan_seconds: must be at least 1",
        );
        require(
            self.change_poll_ms >= 1,
            "procedure.change_poll_ms: must be at least 1",
        );
        for (i, budget) in self.budgets.iter().enumerate() {
            require(
                budget.region_prefix.len() <= 12
                    && !budget.region_prefix.is_empty()
                    && budget.region_prefix.bytes().all(|b| b.is_ascii_digit()),
                &format!("procedure.budgets[{i}].region_prefix: 1 to 12 digits"),
            );
            require(
                budget.pass_on_days >= 1 && budget.decision_days >= budget.pass_on_days,
                &format!(
                    "procedure.budgets[{i}]: pass_on_days at least 1, decision_days at least pass_on_days"
                ),
            );
        }
    }
}

impl Check for SweepSettings {
    fn check(&self, require: &mut dyn FnMut(bool, &str)) {
        require(
            (1..=50).contains(&self.long_monitored_years),
            "sweeps.long_monitored_years: must be from 1 to 50",
        );
        require(
            self.recheck_income_margin_share.is_finite()
                && (0.0..=10.0).contains(&self.recheck_income_margin_share),
            "sweeps.recheck_income_margin_share: must be from 0 to 10",
        );
        require(
            (1..=600).contains(&self.elimination_min_monitored_months),
            "sweeps.elimination_min_monitored_months: must be from 1 to 600",
        );
        require(
            (1..=3650).contains(&self.late_report_days),
            "sweeps.late_report_days: must be from 1 to 3650",
        );
    }
}

/// Deserialises each section on its own, so that a type error in one does not hide
/// the others, and collects every unknown key.
fn from_table(mut table: toml::Table, problems: &mut Vec<String>) -> Option<Settings> {
    fn section<T: DeserializeOwned + Check>(
        table: &mut toml::Table,
        name: &str,
        problems: &mut Vec<String>,
    ) -> Option<T> {
        let value = table
            .remove(name)
            .unwrap_or(toml::Value::Table(toml::Table::new()));
        let mut unknown = Vec::new();
        let result: Result<T, _> =
            serde_ignored::deserialize(value, |path| unknown.push(format!("{name}.{path}")));
        for key in unknown {
            problems.push(format!("{key}: unknown key"));
        }
        match result {
            Ok(parsed) => {
                parsed.check(&mut |ok, message| {
                    if !ok {
                        problems.push(message.to_string());
                    }
                });
                Some(parsed)
            }
            Err(error) => {
                problems.push(type_problem(name, &error.to_string()));
                None
            }
        }
    }
    let store = section(&mut table, "store", problems);
    let input = section(&mut table, "input", problems);
    let privacy = section(&mut table, "privacy", problems);
    let validation = section(&mut table, "validation", problems);
    let policy = section(&mut table, "policy", problems);
    let rules = section(&mut table, "rules", problems);
    let telemetry = section(&mut table, "telemetry", problems);
    let api = section(&mut table, "api", problems);
    let procedure = section(&mut table, "procedure", problems);
    let sweeps = section(&mut table, "sweeps", problems);
    let detect = section(&mut table, "detect", problems);
    let kafka = section(&mut table, "kafka", problems);
    for key in table.keys() {
        problems.push(format!("{key}: unknown section"));
    }
    Some(Settings {
        store: store?,
        input: input?,
        privacy: privacy?,
        validation: validation?,
        policy: policy?,
        rules: rules?,
        telemetry: telemetry?,
        api: api?,
        procedure: procedure?,
        sweeps: sweeps?,
        detect: detect?,
        kafka: kafka?,
    })
}

/// A section's type error as `section.key: what is wrong`: the TOML deserialiser
/// ends its message with "in `key`" on a line of its own.
fn type_problem(section: &str, message: &str) -> String {
    let message = message.trim();
    match message.rsplit_once("\nin `") {
        Some((what, key)) => format!("{section}.{}: {}", key.trim_end_matches('`'), what.trim()),
        None => format!("[{section}]: {message}"),
    }
}

/// Deep-merges `overlay` into `base`: tables merge key by key, anything else
/// (arrays included) replaces.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let (last, parents) = path.split_last().expect("path has at least one segment");
    let mut current = table;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("just made a table");
    }
    current.insert(last.clone(), value);
}

/// An environment value as TOML when it parses as a TOML value (numbers, booleans,
/// arrays), else as a plain string.
fn env_value(text: &str) -> toml::Value {
    let wrapped: Result<BTreeMap<String, toml::Value>, _> = toml::from_str(&format!("v = {text}"));
    match wrapped {
        Ok(mut map) => map
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            file: None,
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn defaults_load() {
        let settings = Settings::defaults();
        assert_eq!(settings.procedure.decision_days, 15);
        assert_eq!(settings.procedure.pass_on_days, 2);
        assert_eq!(
            settings.policy.monitoring_line("522425101201", 2024),
            Some(8300.0)
        );
        assert_eq!(settings.rules.task_min_level, Level::Yellow);
    }

    #[test]
    fn sweep_thresholds_are_checked() {
        let settings = Settings::defaults();
        assert_eq!(settings.sweeps.long_monitored_years, 2);
        assert_eq!(settings.sweeps.elimination_min_monitored_months, 6);
        assert_eq!(settings.sweeps.late_report_days, 7);
        let error = Settings::load(&env(&[
            ("YUJING__SWEEPS__LONG_MONITORED_YEARS", "0"),
            ("YUJING__SWEEPS__RECHECK_INCOME_MARGIN_SHARE", "-0.1"),
            ("YUJING__SWEEPS__ELIMINATION_MIN_MONITORED_MONTHS", "0"),
            ("YUJING__SWEEPS__LATE_REPORT_DAYS", "0"),
            ("YUJING__SWEEPS__NOPE", "1"),
        ]))
        .unwrap_err();
        assert_eq!(error.problems.len(), 5, "{error}");
        assert!(
            error.to_string().contains("sweeps.nope: unknown key"),
            "{error}"
        );
    }

    #[test]
    fn layering_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("yujing.toml");
        std::fs::write(
            &file,
            "[rules]\nlookback_days = 200\ncooldown_days = 30\n[store]\nurl = \"sqlite://from-file.db\"\n",
        )
        .unwrap();
        let sources = Sources {
            file: Some(file),
            env: vec![
                ("YUJING__RULES__LOOKBACK_DAYS".into(), "100".into()),
                (
                    "YUJING__RULES__MEDICAL__OOP_INCOME_SHARE".into(),
                    "0.4".into(),
                ),
                ("UNRELATED".into(), "x".into()),
            ],
        };
        let settings = Settings::load(&sources).unwrap();
        assert_eq!(settings.rules.lookback_days, 100, "env beats file");
        assert_eq!(settings.rules.cooldown_days, 30, "file beats defaults");
        assert_eq!(settings.rules.max_lateness_days, 90, "defaults remain");
        assert_eq!(settings.rules.medical.oop_income_share, 0.4);
        assert_eq!(settings.store.url.expose(), "sqlite://from-file.db");
    }

    #[test]
    fn client_properties_take_numbers_and_flags_as_written() {
        let settings = Settings::load(&env(&[
            (
                "YUJING__KAFKA__PRODUCER_PROPERTIES__MESSAGE.MAX.BYTES",
                "100000",
            ),
            ("YUJING__KAFKA__CONSUMER_PROPERTIES__CHECK.CRCS", "true"),
            ("YUJING__KAFKA__CONSUMER_PROPERTIES__CLIENT.RACK", "rack-1"),
        ]))
        .unwrap();
        let kafka = &settings.kafka;
        assert_eq!(kafka.producer_properties["message.max.bytes"], "100000");
        assert_eq!(kafka.consumer_properties["check.crcs"], "true");
        assert_eq!(kafka.consumer_properties["client.rack"], "rack-1");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let sources = env(&[
            ("YUJING__RULES__LOOKBACK_DAYS", "soon"),
            ("YUJING__STORE__URLL", "x"),
            ("YUJING__INPUT__BATCH_SIZE", "0"),
            ("YUJING__TELEMETRY__LOG_FORMAT", "xml"),
            ("YUJING__NOPE__X", "1"),
        ]);
        let error = Settings::load(&sources).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("store.urll: unknown key"), "{text}");
        assert!(
            text.contains("rules.lookback_days: invalid type: string \"soon\", expected i64"),
            "{text}"
        );
        assert!(text.contains("nope: unknown section"), "{text}");
        assert!(
            text.contains("input.batch_size: must be at least 1"),
            "{text}"
        );
        assert!(text.contains("telemetry.log_format"), "{text}");
        assert_eq!(error.problems.len(), 5, "{text}");
    }

    #[test]
    fn range_checks_are_collected() {
        let error = Settings::load(&env(&[
            ("YUJING__INPUT__BATCH_SIZE", "0"),
            ("YUJING__TELEMETRY__LOG_FORMAT", "xml"),
            ("YUJING__PRIVACY__PSEUDONYMISATION_KEY", "short"),
            ("YUJING__STORE__SQLITE_PAGE_SIZE", "5000"),
        ]))
        .unwrap_err();
        assert_eq!(error.problems.len(), 4, "{error}");
        assert!(
            error
                .to_string()
                .contains("store.sqlite_page_size: must be a power of two"),
            "{error}"
        );
    }

    #[test]
    fn monitoring_line_prefers_longest_prefix_then_latest_year() {
        let policy = PolicySettings {
            monitoring_lines: vec![
                MonitoringLine {
                    region_prefix: "".into(),
                    from_year: 2024,
                    yuan_per_capita: 8300.0,
                },
                MonitoringLine {
                    region_prefix: "32".into(),
                    from_year: 2023,
                    yuan_per_capita: 9000.0,
                },
                MonitoringLine {
                    region_prefix: "32".into(),
                    from_year: 2025,
                    yuan_per_capita: 9500.0,
                },
            ],
        };
        assert_eq!(policy.monitoring_line("522425101201", 2024), Some(8300.0));
        assert_eq!(policy.monitoring_line("522425101201", 2023), None);
        assert_eq!(policy.monitoring_line("320101001001", 2024), Some(9000.0));
        assert_eq!(policy.monitoring_line("320101001001", 2026), Some(9500.0));
    }

    #[test]
    fn the_production_file_loads() {
        let sources = Sources {
            file: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.toml")),
            env: Vec::new(),
        };
        let settings = Settings::load(&sources).unwrap();
        assert!(settings.kafka.enabled());
        assert_eq!(settings.api.listen, "0.0.0.0:9464");
        assert!(settings.store.url.expose().starts_with("postgres://"));
        assert_eq!(
            settings.detect.placement,
            crate::pipeline::detect::settings::Placement::Leader,
            "scaled out, an elected instance runs regional detection"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let settings = Settings::load(&env(&[(
            "YUJING__PRIVACY__PSEUDONYMISATION_KEY",
            "a-very-secret-key-123",
        )]))
        .unwrap();
        assert!(!format!("{settings:?}").contains("a-very-secret"));
    }
}
