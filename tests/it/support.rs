//! Shared test set-up: a temporary folder with its own SQLite store and key, the
//! generated county, and the `yujing` binary with the same settings.

use std::path::{Path, PathBuf};
use std::process::Command;

use yujing::app::App;
use yujing::config::{Secret, Settings};
use yujing::generate::{AnswerKey, GenerateOptions, generate};

/// A pseudonymisation key for tests.
pub const KEY: &str = "test-key-0123456789abcdef";

/// One test's world.
pub struct Env {
    /// Holds every file of the test.
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A fresh folder (kept after the test when YUJING_TEST_KEEP is set, to read its logs).
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .disable_cleanup(std::env::var_os("YUJING_TEST_KEEP").is_some())
                .tempdir()
                .expect("temporary folder"),
        }
    }

    /// A path inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The store URL of database `name`.
    pub fn store_url(&self, name: &str) -> String {
        format!("sqlite://{}", self.path(name).display())
    }

    /// Defaults with the store `db` and the test key.
    pub fn settings(&self, db: &str) -> Settings {
        let mut settings = Settings::defaults();
        settings.store.url = Secret::new(self.store_url(db));
        settings.privacy.pseudonymisation_key = Secret::new(KEY);
        settings
    }

    /// The application over database `db`.
    pub async fn app(&self, db: &str) -> App {
        App::build(self.settings(db)).await.expect("app builds")
    }

    /// Generates a county into `county/`.
    pub fn county(&self, households: usize, days: u32, seed: u64) -> (PathBuf, AnswerKey) {
        let out = self.path("county");
        let options = GenerateOptions {
            households,
            days,
            seed,
            ..GenerateOptions::default()
        };
        let key = generate(&out, &options).expect("county generated");
        (out, key)
    }

    /// Generates a county into `county/` whose season ends four days before today (as
    /// the demo's): due dates, counted from its reports, fall around today.
    pub fn recent_county(&self, households: usize, days: u32, seed: u64) -> (PathBuf, AnswerKey) {
        let out = self.path("county");
        let today = yujing::domain::task::cst_day(chrono::Utc::now());
        let options = GenerateOptions {
            households,
            days,
            seed,
            start: today - chrono::Duration::days(i64::from(days) + 4),
            ..GenerateOptions::default()
        };
        let key = generate(&out, &options).expect("county generated");
        (out, key)
    }

    /// The binary with this world's key and store `db`.
    pub fn yujing(&self, db: &str) -> Command {
        self.yujing_at(&self.store_url(db))
    }

    /// The binary with this world's key and the store at `url`.
    pub fn yujing_at(&self, url: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_yujing"));
        command
            .env("YUJING__PRIVACY__PSEUDONYMISATION_KEY", KEY)
            .env("YUJING__TELEMETRY__LOG_LEVEL", "warn")
            .env_remove("RUST_LOG")
            .arg("--store")
            .arg(url)
            .current_dir(self.dir.path());
        command
    }
}

/// Imports a generated county's regions and registry into `app`.
pub async fn import_county(app: &App, county: &Path) {
    let regions =
        yujing::commands::import_regions(app, &county.join("regions.csv"), &Default::default())
            .await
            .expect("regions import");
    assert!(regions.errors.is_empty(), "{:?}", regions.errors);
    let registry = yujing::commands::import_registry(
        app,
        &county.join("households.csv"),
        &county.join("members.csv"),
        &Default::default(),
    )
    .await
    .expect("registry import");
    assert!(registry.errors.is_empty(), "{:?}", registry.errors);
}

/// Runs a command, asserting success, and returns stdout.
pub fn output(command: &mut Command) -> String {
    let output = command.output().expect("yujing runs");
    assert!(
        output.status.success(),
        "{:?} failed: {}\n{}",
        command,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The feed files of a county, as inputs.
pub fn feeds(county: &Path, key: &AnswerKey) -> Vec<PathBuf> {
    key.feeds.iter().map(|f| county.join(f)).collect()
}

/// The PostgreSQL server the test command started (or `DATABASE_URL` named).
/// Tests that need it fail, never skip, when it is missing.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: PostgreSQL tests need a server. Run them with \
             scripts/test, which starts a private cluster, or set DATABASE_URL."
        )
    })
}

/// A fresh, empty PostgreSQL database for one test; returns its URL.
pub async fn fresh_postgres(name: &str) -> String {
    use sqlx::Connection;
    let admin = database_url();
    let database = format!(
        "yj_{}_{}",
        name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos()
            % 1_000_000_000_000
    );
    let mut connection = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL ({admin}): {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut connection)
        .await
        .expect("CREATE DATABASE");
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base.to_string())
        .expect("DATABASE_URL ends with /database");
    format!("{base}/{database}")
}

/// The Kafka-protocol broker the test command started. Tests that need it fail,
/// never skip, when it is missing.
pub fn kafka_brokers() -> String {
    std::env::var("YUJING_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "YUJING_TEST_KAFKA_BROKERS is not set: Kafka tests need a broker. Run them with \
             scripts/test, which starts Tansu."
        )
    })
}

/// Creates `topics` with `partitions` each (an existing topic is fine).
pub async fn create_topics(brokers: &str, topics: &[String], partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("CreateTopics");
    for result in results {
        if let Err((topic, code)) = result {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "cannot create {topic}"
            );
        }
    }
}

/// A unique prefix for one test's topics and group.
pub fn unique(name: &str) -> String {
    format!(
        "t{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros()
            % 10_000_000_000,
        name
    )
}

/// The environment variables that point yujing at per-test topics under `prefix`.
pub fn kafka_env(brokers: &str, prefix: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("YUJING__KAFKA__BROKERS".to_string(), brokers.to_string()),
        (
            "YUJING__KAFKA__GROUP_ID".to_string(),
            format!("{prefix}-group"),
        ),
        (
            "YUJING__KAFKA__SESSION_TIMEOUT_MS".to_string(),
            "6000".to_string(),
        ),
        (
            "YUJING__KAFKA__BATCH_MAX_WAIT_MS".to_string(),
            "200".to_string(),
        ),
        (
            "YUJING__KAFKA__STATISTICS_INTERVAL_MS".to_string(),
            "1000".to_string(),
        ),
    ];
    for source in yujing::domain::event::Source::ALL {
        env.push((
            format!(
                "YUJING__KAFKA__INPUT_TOPICS__{}",
                source.as_str().to_ascii_uppercase()
            ),
            format!("{prefix}.{}", source.as_str()),
        ));
    }
    for output in [
        "household_alerts",
        "screening_tasks",
        "regional_signals",
        "dead_letters",
    ] {
        env.push((
            format!(
                "YUJING__KAFKA__OUTPUT_TOPICS__{}",
                output.to_ascii_uppercase()
            ),
            format!("{prefix}.out.{output}"),
        ));
    }
    env
}

/// Every topic `kafka_env(prefix)` names.
pub fn kafka_topics(prefix: &str) -> Vec<String> {
    kafka_env("", prefix)
        .into_iter()
        .filter(|(k, _)| k.contains("_TOPICS__"))
        .map(|(_, v)| v)
        .collect()
}

/// The county through the embedded default (files into SQLite `db`, no Kafka): what
/// the Kafka runs are compared with.
pub async fn embedded_run(env: &Env, county: &Path, key: &AnswerKey, db: &str) -> App {
    let app = env.app(db).await;
    import_county(&app, county).await;
    let inputs = feeds(county, key)
        .into_iter()
        .map(yujing::pipeline::sources::ndjson::Input::File)
        .collect();
    yujing::commands::run(
        &app,
        inputs,
        tokio_util::sync::CancellationToken::new(),
        false,
    )
    .await
    .expect("embedded run");
    app
}

/// Household tasks as compared between runs (campaign tasks follow regional signals,
/// whose days are judged as the watermark passes them: they depend on arrival order).
pub async fn task_views(store: &yujing::store::Store) -> std::collections::BTreeSet<String> {
    let mut views = std::collections::BTreeSet::new();
    store
        .export_tasks(&mut |task| {
            if task.kind != yujing::domain::task::TaskKind::Campaign {
                views.insert(format!("{} {} {}", task.task_id, task.kind, task.level));
            }
            Ok(())
        })
        .await
        .unwrap();
    views
}

/// Regional signal episodes as compared between runs: region, kind, episode, onset
/// and last evidence day, methods, severity and status, for episodes whose onset is
/// on or before `through` (a run that cannot know its input has ended judges its
/// last days later).
pub async fn signal_views(
    store: &yujing::store::Store,
    through: Option<chrono::NaiveDate>,
) -> std::collections::BTreeSet<String> {
    let mut views = std::collections::BTreeSet::new();
    store
        .export_signals(&mut |signal| {
            if through.is_none_or(|day| signal.onset_day <= day) {
                let methods: Vec<&str> = signal.methods.iter().map(|m| m.as_str()).collect();
                views.insert(format!(
                    "{} {} #{} {}..{} [{}] {} {}",
                    signal.region_code,
                    signal.risk_kind,
                    signal.episode,
                    signal.onset_day,
                    signal.evidence_until,
                    methods.join(","),
                    signal.severity,
                    signal.status
                ));
            }
            Ok(())
        })
        .await
        .expect("signals export");
    views
}

/// A consumer of every partition of `topic` from the beginning, outside any group's
/// assignment (`group` only names it): how tests read an output topic whole.
pub fn reader_from_beginning(
    brokers: &str,
    topic: &str,
    group: &str,
) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .expect("topic metadata");
    let mut assignment = rdkafka::topic_partition_list::TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(
                topic,
                partition.id(),
                rdkafka::topic_partition_list::Offset::Beginning,
            )
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assignment");
    consumer
}

/// The rules' yield counted by hand from alerts and tasks as stored (independently of
/// the store's fold): per rule id every alert it fired in, and every alert once; the
/// closed tasks' outcomes as the issue names them, from the outcome and decision.
pub fn yield_by_hand(
    alerts: &[yujing::domain::alert::HouseholdAlert],
    tasks: &[yujing::domain::task::ScreeningTask],
) -> yujing::domain::rule_yield::RuleYieldReport {
    use yujing::domain::alert::{AlertStatus, HouseholdAlert};
    use yujing::domain::rule_yield::{RuleYield, RuleYieldReport, YieldFigures};
    use yujing::domain::task::{Decision, Outcome, Stage};
    let task_of: std::collections::HashMap<&str, &yujing::domain::task::ScreeningTask> = tasks
        .iter()
        .filter_map(|t| t.alert_id.as_deref().map(|a| (a, t)))
        .collect();
    let figures = |selected: &[&HouseholdAlert]| {
        let count = |keep: &dyn Fn(&HouseholdAlert) -> bool| {
            selected.iter().filter(|a| keep(a)).count() as u64
        };
        let with_task: Vec<_> = selected
            .iter()
            .filter_map(|a| task_of.get(a.alert_id.as_str()))
            .collect();
        let closed: Vec<_> = with_task
            .iter()
            .filter(|t| t.stage == Stage::Closed)
            .collect();
        let outcomes = |keep: &dyn Fn(Option<Outcome>, Option<Decision>) -> bool| {
            closed
                .iter()
                .filter(|t| keep(t.outcome, t.decision))
                .count() as u64
        };
        let approved = Some(Decision::Approved);
        let identified = outcomes(&|o, d| o == Some(Outcome::Identify) && d == approved);
        YieldFigures {
            alerts: selected.len() as u64,
            open: count(&|a| a.status == AlertStatus::Open),
            expired: count(&|a| a.status == AlertStatus::Expired),
            tasks: with_task.len() as u64,
            tasks_closed: closed.len() as u64,
            identified,
            rolled_back: outcomes(&|o, d| o == Some(Outcome::RiskRollback) && d == approved),
            not_eligible: outcomes(&|o, d| {
                matches!(o, Some(Outcome::NotEligible | Outcome::AlreadyMonitored))
                    || (matches!(o, Some(Outcome::Identify | Outcome::RiskRollback))
                        && d == Some(Decision::Rejected))
            }),
            no_risk: outcomes(&|o, _| o == Some(Outcome::NoRiskFound)),
            assistance_adjusted: outcomes(&|o, _| o == Some(Outcome::AssistanceAdjusted)),
            identified_share: (!selected.is_empty())
                .then(|| identified as f64 / selected.len() as f64),
        }
    };
    let every: Vec<&HouseholdAlert> = alerts.iter().collect();
    let ids: std::collections::BTreeSet<&str> = alerts
        .iter()
        .flat_map(|a| a.rules.iter().map(|r| r.rule_id.as_str()))
        .collect();
    RuleYieldReport {
        all: figures(&every),
        rules: ids
            .into_iter()
            .map(|id| {
                let fired: Vec<&HouseholdAlert> = alerts
                    .iter()
                    .filter(|a| a.rules.iter().any(|r| r.rule_id == id))
                    .collect();
                RuleYield {
                    rule_id: id.to_string(),
                    figures: figures(&fired),
                }
            })
            .collect(),
    }
}
