//! The store contract, written once and run against both backends: SQLite in a
//! temporary folder and PostgreSQL in a fresh database per test. Each
//! `contract_<aspect>` function takes a fresh [`Subject`] and checks one part of
//! the `Store` API; `both_backends!` turns it into `<aspect>_sqlite` and
//! `<aspect>_postgres`. Batches come from the real `Core` over a generated county.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use yujing::app::App;
use yujing::batch::{BatchOutput, SourcePosition};
use yujing::config::Secret;
use yujing::domain::alert::{AlertStatus, HouseholdAlert, Level};
use yujing::domain::dead_letter::DeadLetter;
use yujing::domain::event::Payload;
use yujing::domain::ids::{HouseholdId, PersonKey, RegionCode, RegionLevel};
use yujing::domain::record::{Origin, RawRecord};
use yujing::domain::registry::{
    Household, HouseholdStatus, Member, MonitoringType, Region, Relation,
};
use yujing::domain::task::{Budget, NewTask, ScreeningTask, Stage, TaskKind};
use yujing::generate::AnswerKey;
use yujing::pipeline::core::Core;
use yujing::schemas::Schemas;
use yujing::store::{FeedCursor, Fence, OutboxRow, OutboxTopics, Report, Store, StoreError};

use crate::support::{self, Env};

/// The backends under contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Direct SQL on the database under test, for what the contract API does not
/// expose: row counts, closing an alert, a task's lifecycle, injected failures.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The same sqlx code on whichever pool.
macro_rules! on_pool {
    ($raw:expr, $pool:ident => $body:expr) => {
        match $raw {
            Raw::Sqlite($pool) => $body,
            Raw::Postgres($pool) => $body,
        }
    };
}

impl Raw {
    async fn connect(backend: Backend, url: &str) -> Raw {
        match backend {
            Backend::Sqlite => Raw::Sqlite(sqlx::SqlitePool::connect(url).await.unwrap()),
            Backend::Postgres => Raw::Postgres(sqlx::PgPool::connect(url).await.unwrap()),
        }
    }

    async fn count(&self, table: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        on_pool!(self, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap())
    }

    async fn execute(&self, sql: &'static str) {
        on_pool!(self, pool => { sqlx::query(sql).execute(pool).await.unwrap(); })
    }

    /// Closes an alert the way a user's action would.
    async fn close_alert(&self, alert_id: &str, at: DateTime<Utc>) {
        let sql = "UPDATE alerts SET status = 'closed', closed_at = $1 WHERE alert_id = $2";
        let done = on_pool!(self, pool => sqlx::query(sql).bind(at).bind(alert_id).execute(pool).await.unwrap().rows_affected());
        assert_eq!(done, 1, "alert {alert_id} exists");
    }

    /// Moves a task along its lifecycle the way a village worker would.
    async fn work_task(&self, task_id: &str, stage: &str, assignee: &str, note: &str) {
        let sql =
            "UPDATE tasks SET stage = $1, assignee = $2, outcome_note = $3 WHERE task_id = $4";
        let done = on_pool!(self, pool => sqlx::query(sql).bind(stage).bind(assignee).bind(note).bind(task_id).execute(pool).await.unwrap().rows_affected());
        assert_eq!(done, 1, "task {task_id} exists");
    }

    /// The stored status, level and document of an alert.
    async fn alert_row(&self, alert_id: &str) -> (String, String, String) {
        let sql = "SELECT status, level, doc FROM alerts WHERE alert_id = $1";
        on_pool!(self, pool => sqlx::query_as::<_, (String, String, String)>(sql).bind(alert_id).fetch_one(pool).await.unwrap())
    }

    /// The stored origin of an event.
    async fn event_origin(&self, event_id: &str) -> String {
        let sql = "SELECT origin FROM events WHERE event_id = $1";
        on_pool!(self, pool => sqlx::query_scalar::<_, String>(sql).bind(event_id).fetch_one(pool).await.unwrap())
    }

    /// The stored payload of an event.
    async fn event_payload(&self, event_id: &str) -> String {
        let sql = "SELECT payload FROM events WHERE event_id = $1";
        on_pool!(self, pool => sqlx::query_scalar::<_, String>(sql).bind(event_id).fetch_one(pool).await.unwrap())
    }

    /// Members as stored: (pseudonym, masked id, household, relation), by pseudonym.
    async fn members(&self) -> Vec<(Vec<u8>, String, String, String)> {
        let sql = "SELECT person_key, person_masked, household_id, relation FROM members ORDER BY person_key";
        on_pool!(self, pool => sqlx::query_as::<_, (Vec<u8>, String, String, String)>(sql).fetch_all(pool).await.unwrap())
    }

    /// Migrations recorded as applied.
    async fn migrations_applied(&self) -> i64 {
        let sql = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        on_pool!(self, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap())
    }

    /// Makes any insert of the source position `poison` fail inside its
    /// transaction (positions are the last statements of a batch).
    async fn fail_on_poison_position(&self) {
        match self {
            Raw::Sqlite(_) => {
                self.execute(
                    "CREATE TRIGGER fail_poison BEFORE INSERT ON source_positions \
                     WHEN NEW.source_key = 'poison' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
                )
                .await
            }
            Raw::Postgres(_) => {
                self.execute(
                    "CREATE FUNCTION fail_poison() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
                )
                .await;
                self.execute(
                    "CREATE TRIGGER fail_poison BEFORE INSERT ON source_positions FOR EACH ROW \
                     WHEN (NEW.source_key = 'poison') EXECUTE FUNCTION fail_poison()",
                )
                .await;
            }
        }
    }

    async fn stop_failing(&self) {
        match self {
            Raw::Sqlite(_) => self.execute("DROP TRIGGER fail_poison").await,
            Raw::Postgres(_) => {
                self.execute("DROP TRIGGER fail_poison ON source_positions")
                    .await
            }
        }
    }
}

/// One store under test: a fresh database, the application over it, and raw SQL.
struct Subject {
    backend: Backend,
    env: Env,
    url: String,
    app: App,
    raw: Raw,
}

impl Subject {
    async fn open(backend: Backend, name: &str) -> Subject {
        let env = Env::new();
        let url = match backend {
            Backend::Sqlite => env.store_url("contract.db"),
            Backend::Postgres => support::fresh_postgres(name).await,
        };
        let mut settings = env.settings("contract.db");
        settings.store.url = Secret::new(url.clone());
        let app = App::build(settings).await.expect("store opens");
        let raw = Raw::connect(backend, &url).await;
        Subject {
            backend,
            env,
            url,
            app,
            raw,
        }
    }

    fn store(&self) -> &Store {
        &self.app.store
    }

    /// The same store, writing outbox rows.
    fn with_outbox(&self) -> Store {
        self.app.store.clone().with_outbox(topics())
    }

    /// The store connected anew (migrations run again).
    async fn reconnect(&self) -> Store {
        Store::connect(&self.url, &self.app.settings.store)
            .await
            .expect("store reopens")
    }

    async fn core(&self) -> Core {
        self.app.load_core().await.expect("core loads")
    }
}

/// Runs `contract_<aspect>` against both backends as `<aspect>_sqlite` and
/// `<aspect>_postgres`.
macro_rules! both_backends {
    ($($check:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $check(Subject::open(Backend::Sqlite, stringify!($sqlite)).await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $check(Subject::open(Backend::Postgres, stringify!($postgres)).await).await;
        }
    )*};
}

both_backends! {
    contract_migrations => migrations_sqlite, migrations_postgres;
    contract_registry => registry_sqlite, registry_postgres;
    contract_batch => batch_sqlite, batch_postgres;
    contract_rollback => rollback_sqlite, rollback_postgres;
    contract_positions => positions_sqlite, positions_postgres;
    contract_duplicates => duplicates_sqlite, duplicates_postgres;
    contract_event_text => event_text_sqlite, event_text_postgres;
    contract_begun_ahead => begun_ahead_sqlite, begun_ahead_postgres;
    contract_alert_upserts => alert_upserts_sqlite, alert_upserts_postgres;
    contract_alert_expiry => alert_expiry_sqlite, alert_expiry_postgres;
    contract_rule_ids_backfill => rule_ids_backfill_sqlite, rule_ids_backfill_postgres;
    contract_task_upserts => task_upserts_sqlite, task_upserts_postgres;
    contract_load_state => load_state_sqlite, load_state_postgres;
    contract_resume => resume_sqlite, resume_postgres;
    contract_resume_with_expiries => resume_with_expiries_sqlite, resume_with_expiries_postgres;
    contract_report => report_sqlite, report_postgres;
    contract_exports => exports_sqlite, exports_postgres;
    contract_outbox => outbox_sqlite, outbox_postgres;
    contract_regional_lead => regional_lead_sqlite, regional_lead_postgres;
    contract_claims => claims_sqlite, claims_postgres;
    contract_lanes => lanes_sqlite, lanes_postgres;
    contract_event_retention => event_retention_sqlite, event_retention_postgres;
}

// ---------------------------------------------------------------------------
// Fixtures

/// Processing time of every batch: fixed, so both backends get identical batches.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 7, 1, 0, 0, 0).unwrap()
}

fn topics() -> OutboxTopics {
    OutboxTopics {
        household_alerts: "out.household-alerts".into(),
        screening_tasks: "out.screening-tasks".into(),
        regional_signals: "out.regional-signals".into(),
        dead_letters: "out.dead-letters".into(),
        dead_letter_raw_bytes: 262_144,
    }
}

/// Every table of the schema.
const TABLES: [&str; 16] = [
    "regions",
    "households",
    "members",
    "events",
    "alerts",
    "tasks",
    "dead_letters",
    "source_positions",
    "counters",
    "outbox",
    "audit_log",
    "regional_counts",
    "regional_series",
    "regional_clock",
    "signals",
    "regional_leader",
];

/// A generated county (registry imported into the subject) and its feed lines
/// as records, with origins that do not depend on the temporary folder.
struct County {
    key: AnswerKey,
    records: Vec<RawRecord>,
}

async fn county(subject: &Subject) -> County {
    let (dir, key) = subject.env.county(300, 90, 1);
    support::import_county(&subject.app, &dir).await;
    let mut records = Vec::new();
    for feed in &key.feeds {
        let bytes = std::fs::read(dir.join(feed)).unwrap();
        let path: Arc<str> = Arc::from(format!("/county/{feed}"));
        let mut offset = 0u64;
        for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if !line.is_empty() {
                records.push(RawRecord {
                    bytes: line.to_vec(),
                    origin: Origin::File {
                        path: path.clone(),
                        line: index as u64 + 1,
                        byte_offset: offset,
                    },
                    original_len: None,
                });
            }
            offset += line.len() as u64 + 1;
        }
    }
    assert_eq!(records.len() as u64, key.lines);
    assert!(key.bad_lines > 0 && key.duplicates > 0 && key.unmatched > 0);
    County { key, records }
}

/// Each file's end position after `records`.
fn file_positions(records: &[RawRecord]) -> Vec<SourcePosition> {
    let mut ends: BTreeMap<String, SourcePosition> = BTreeMap::new();
    for record in records {
        if let Origin::File {
            path,
            line,
            byte_offset,
        } = &record.origin
        {
            let key = format!("file:{path}");
            ends.insert(
                key.clone(),
                SourcePosition {
                    source_key: key,
                    position: byte_offset + record.bytes.len() as u64 + 1,
                    line: *line,
                    fingerprint: Some(format!("fp-{path}")),
                    claim: None,
                },
            );
        }
    }
    ends.into_values().collect()
}

/// Records no decoder accepts, from a Kafka topic: non-UTF-8 bytes (with a NUL
/// and a resident ID), empty, not JSON, cut for length, and a schema violation.
fn poison_records() -> Vec<RawRecord> {
    let origin = |offset: i64, key: Option<&[u8]>| Origin::Kafka {
        topic: "dept.health".into(),
        partition: 2,
        offset,
        key_base64: key.map(|k| base64::engine::general_purpose::STANDARD.encode(k)),
    };
    let record = |offset, key, bytes: &[u8], original_len| RawRecord {
        bytes: bytes.to_vec(),
        origin: origin(offset, key),
        original_len,
    };
    vec![
        record(
            10,
            Some(b"\x00\xffkey"),
            b"{\"person_id\":\"11010519491231002X\",\"x\":\"\xff\x00\xfe\"}",
            None,
        ),
        record(11, None, b"", None),
        record(12, Some(b"k"), b"not json at all", None),
        record(13, Some(b"long"), b"{\"event_id\":\"CUT", Some(5_000_000)),
        record(
            14,
            None,
            br#"{"event_id":"K1","source":"water","kind":"rainfall","occurred_at":"2024-05-01T10:00:00+08:00","reported_at":"2024-05-02T09:00:00+08:00","region_code":"522425000000","payload":{}}"#,
            None,
        ),
    ]
}

/// A copy of a batch's events, dead letters, alert and task snapshots and counts
/// (`BatchOutput` is not `Clone`: the pipeline never copies one).
fn copy(batch: &BatchOutput) -> BatchOutput {
    BatchOutput {
        events: batch.events.clone(),
        dead_letters: batch.dead_letters.clone(),
        alerts: batch.alerts.clone(),
        tasks: batch.tasks.clone(),
        counts: batch.counts,
        ..BatchOutput::default()
    }
}

/// Everything a store holds, as the contract API and row counts show it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    rows: BTreeMap<&'static str, i64>,
    report: Report,
    alerts: Vec<HouseholdAlert>,
    tasks: Vec<ScreeningTask>,
    dead_letters: Vec<DeadLetter>,
    positions: Vec<SourcePosition>,
    outbox: Vec<OutboxRow>,
}

async fn snapshot(subject: &Subject) -> Snapshot {
    let mut rows = BTreeMap::new();
    for table in TABLES {
        rows.insert(table, subject.raw.count(table).await);
    }
    let store = subject.store();
    Snapshot {
        rows,
        report: store.report().await.unwrap(),
        alerts: exported_alerts(store).await,
        tasks: exported_tasks(store).await,
        dead_letters: exported_dead_letters(store).await,
        positions: sorted_positions(store, "").await,
        outbox: store.outbox_pending(i64::MAX).await.unwrap(),
    }
}

async fn exported_alerts(store: &Store) -> Vec<HouseholdAlert> {
    let mut alerts = Vec::new();
    store
        .export_alerts(&mut |alert| {
            alerts.push(alert);
            Ok(())
        })
        .await
        .unwrap();
    alerts
}

async fn exported_tasks(store: &Store) -> Vec<ScreeningTask> {
    let mut tasks = Vec::new();
    store
        .export_tasks(&mut |task| {
            tasks.push(task);
            Ok(())
        })
        .await
        .unwrap();
    tasks
}

async fn exported_dead_letters(store: &Store) -> Vec<DeadLetter> {
    let mut letters = Vec::new();
    store
        .export_dead_letters(&mut |letter| {
            letters.push(letter);
            Ok(())
        })
        .await
        .unwrap();
    letters
}

async fn sorted_positions(store: &Store, prefix: &str) -> Vec<SourcePosition> {
    let mut positions = store.positions_with_prefix(prefix).await.unwrap();
    positions.sort_by(|a, b| a.source_key.cmp(&b.source_key));
    positions
}

/// Alerts as exported: ordered by household and episode, without the internal
/// judgements (stored beside the document, read back by `load_state` only).
fn as_exported(alerts: &[HouseholdAlert]) -> Vec<HouseholdAlert> {
    let mut alerts: Vec<HouseholdAlert> = alerts
        .iter()
        .cloned()
        .map(|mut alert| {
            alert.judgements = Default::default();
            alert
        })
        .collect();
    alerts.sort_by(|a, b| (&a.household_id, a.episode).cmp(&(&b.household_id, b.episode)));
    alerts
}

fn by_task_id(tasks: &[ScreeningTask]) -> Vec<ScreeningTask> {
    let mut tasks = tasks.to_vec();
    tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    tasks
}

fn by_dead_letter_id(letters: &[DeadLetter]) -> Vec<DeadLetter> {
    let mut letters = letters.to_vec();
    letters.sort_by(|a, b| a.dead_letter_id.cmp(&b.dead_letter_id));
    letters
}

fn tally<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name.to_string()).or_default() += 1;
    }
    counts
}

/// Every task a batch opened or changed: household tasks and regional campaigns.
fn all_tasks(batch: &BatchOutput) -> Vec<ScreeningTask> {
    let mut tasks = batch.tasks.clone();
    tasks.extend(batch.regional.tasks.iter().cloned());
    tasks
}

/// The household outbox rows a batch must write, in order: alerts, tasks, dead
/// letters. (Rows of the regional stage — signals and campaign tasks — are
/// checked by its own tests; [`household_rows`] leaves them out.)
fn expected_outbox(batch: &BatchOutput) -> Vec<(String, String, String)> {
    let topics = topics();
    let mut rows = Vec::new();
    for alert in &batch.alerts {
        rows.push((
            topics.household_alerts.clone(),
            alert.household_id.to_string(),
            serde_json::to_string(alert).unwrap(),
        ));
    }
    // Tasks go out as stored (read back in the transaction), in task id order.
    let mut tasks: Vec<_> = batch.tasks.iter().collect();
    tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    for task in tasks {
        rows.push((
            topics.screening_tasks.clone(),
            task.village_code.to_string(),
            serde_json::to_string(task).unwrap(),
        ));
    }
    for letter in &batch.dead_letters {
        rows.push((
            topics.dead_letters.clone(),
            letter.dead_letter_id.clone(),
            letter.to_document().to_string(),
        ));
    }
    rows
}

fn outbox_contents(rows: &[OutboxRow]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|row| (row.topic.clone(), row.key.clone(), row.payload.clone()))
        .collect()
}

/// The outbox rows of alerts, household tasks and dead letters, in id order.
fn household_rows(rows: &[OutboxRow]) -> Vec<(String, String, String)> {
    let campaign = |row: &OutboxRow| {
        row.topic == topics().screening_tasks
            && serde_json::from_str::<serde_json::Value>(&row.payload).unwrap()["kind"]
                == "campaign"
    };
    let kept: Vec<OutboxRow> = rows
        .iter()
        .filter(|row| row.topic != topics().regional_signals && !campaign(row))
        .cloned()
        .collect();
    outbox_contents(&kept)
}

// ---------------------------------------------------------------------------
// The contract

/// An empty database is migrated on connect: every table is there and empty,
/// the migration is recorded, and connecting again changes nothing.
async fn contract_migrations(subject: Subject) {
    for table in TABLES {
        assert_eq!(subject.raw.count(table).await, 0, "{table} exists, empty");
    }
    assert_eq!(subject.raw.count("unmatched_events").await, 0);
    let files = std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        match subject.backend {
            Backend::Sqlite => "migrations/sqlite",
            Backend::Postgres => "migrations/postgres",
        },
    ))
    .unwrap()
    .count() as i64;
    assert_eq!(subject.raw.migrations_applied().await, files);
    if let Raw::Postgres(pool) = &subject.raw {
        // Event ids compare byte by byte whatever collation the database was made with.
        let collation: Option<String> = sqlx::query_scalar(
            "SELECT collation_name::text FROM information_schema.columns \
             WHERE table_name = 'events' AND column_name = 'event_id'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(collation.as_deref(), Some("C"));
    }

    let store = subject.store();
    assert_eq!(store.report().await.unwrap(), Report::default());
    let state = store
        .load_state(None, None, DateTime::UNIX_EPOCH, None)
        .await
        .unwrap();
    assert!(state.seen.is_empty() && state.events.is_empty());
    assert!(state.open_alerts.is_empty() && state.closed_alerts.is_empty());
    assert_eq!(store.latest_event_time().await.unwrap(), None);
    assert!(store.positions_with_prefix("").await.unwrap().is_empty());
    let registry = store.load_registry().await.unwrap();
    assert!(registry.households.is_empty() && registry.members.is_empty());
    assert!(registry.regions.is_empty());
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);

    // Something stored survives a second connect, whose migrations are a no-op.
    let position = SourcePosition {
        source_key: "file:/x.ndjson".into(),
        position: 7,
        line: 1,
        fingerprint: None,
        claim: None,
    };
    store
        .commit_batch(
            &BatchOutput::default(),
            std::slice::from_ref(&position),
            now(),
        )
        .await
        .unwrap();
    let again = subject.reconnect().await;
    assert_eq!(
        again.position("file:/x.ndjson").await.unwrap(),
        Some(position)
    );
    assert_eq!(subject.raw.migrations_applied().await, files);
    assert_eq!(again.backend_name(), subject.store().backend_name());
}

fn region(code: &str, name: &str, level: RegionLevel, parent: Option<&str>) -> Region {
    Region {
        code: RegionCode::parse(code).unwrap(),
        name: name.into(),
        level,
        parent: parent.map(|p| RegionCode::parse(p).unwrap()),
        longitude: None,
        latitude: None,
    }
}

fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}

fn registry_rows() -> (Vec<Region>, Vec<Household>, Vec<Member>) {
    let regions = vec![
        region("520000000000", "贵州省", RegionLevel::Province, None),
        Region {
            longitude: Some(105.77123456789),
            latitude: Some(-26.5),
            ..region(
                "522425000000",
                "示范县",
                RegionLevel::County,
                Some("520000000000"),
            )
        },
        region(
            "522425101201",
            "第1村 (\"quoted\", 'single')",
            RegionLevel::Village,
            Some("522425000000"),
        ),
    ];
    let village = RegionCode::parse("522425101201").unwrap();
    let households = vec![
        Household {
            household_id: HouseholdId::parse("H-ordinary").unwrap(),
            region_code: village,
            members: 1,
            labour_capable: 0,
            annual_net_income_yuan: 0.0,
            status: HouseholdStatus::Ordinary,
            monitoring_type: None,
            identified_on: None,
            risk_eliminated_on: None,
            safety_net: false,
            dibao: false,
            tekun: false,
            developmental_assistance: false,
        },
        Household {
            household_id: HouseholdId::parse("H_monitored").unwrap(),
            region_code: village,
            members: 7,
            labour_capable: 3,
            annual_net_income_yuan: 12_345.67,
            status: HouseholdStatus::Monitored,
            monitoring_type: Some(MonitoringType::Marginal),
            identified_on: date(2021, 12, 31),
            risk_eliminated_on: date(2024, 2, 29),
            safety_net: true,
            dibao: true,
            tekun: false,
            developmental_assistance: false,
        },
        Household {
            household_id: HouseholdId::parse("H3").unwrap(),
            region_code: village,
            members: 2,
            labour_capable: 2,
            annual_net_income_yuan: 0.1,
            status: HouseholdStatus::Lifted,
            monitoring_type: None,
            identified_on: date(1999, 1, 1),
            risk_eliminated_on: None,
            safety_net: false,
            dibao: false,
            tekun: true,
            developmental_assistance: false,
        },
    ];
    let member = |byte: u8, household: &str, relation, labour| Member {
        person_key: PersonKey([byte; 32]),
        person_masked: format!("522425********{byte:03}X"),
        household_id: HouseholdId::parse(household).unwrap(),
        relation,
        labour_capable: labour,
    };
    let members = vec![
        member(1, "H-ordinary", Relation::Head, false),
        member(2, "H_monitored", Relation::Head, true),
        member(3, "H_monitored", Relation::Grandchild, false),
    ];
    (regions, households, members)
}

/// Registry upserts round-trip exactly (dates, `None`s, booleans, fractions) and
/// are idempotent: a re-import updates rows and leaves the counts alone.
async fn contract_registry(subject: Subject) {
    let store = subject.store();
    let (mut regions, mut households, mut members) = registry_rows();
    store.upsert_regions(&regions).await.unwrap();
    store.upsert_households(&households, now()).await.unwrap();
    store.upsert_members(&members, now()).await.unwrap();
    // Empty imports are fine.
    store.upsert_regions(&[]).await.unwrap();
    store.upsert_households(&[], now()).await.unwrap();
    store.upsert_members(&[], now()).await.unwrap();

    let raw = &subject.raw;
    let check = |regions: &[Region], households: &[Household], members: &[Member]| {
        let regions = regions.to_vec();
        let households = households.to_vec();
        let members = members.to_vec();
        async move {
            let mut loaded = store.load_registry().await.unwrap();
            let mut want_households = households.clone();
            want_households.sort_by(|a, b| a.household_id.cmp(&b.household_id));
            assert_eq!(loaded.households, want_households, "households in id order");
            loaded.members.sort_by_key(|m| m.0);
            let want_members: Vec<(PersonKey, HouseholdId, bool)> = members
                .iter()
                .map(|m| (m.person_key, m.household_id.clone(), m.labour_capable))
                .collect();
            assert_eq!(loaded.members, want_members);
            loaded.regions.sort_by_key(|r| r.code);
            let mut want_regions = regions.clone();
            want_regions.sort_by_key(|r| r.code);
            assert_eq!(loaded.regions, want_regions);
            let stored: Vec<(Vec<u8>, String, String, String)> = members
                .iter()
                .map(|m| {
                    (
                        m.person_key.0.to_vec(),
                        m.person_masked.clone(),
                        m.household_id.to_string(),
                        m.relation.as_str().to_string(),
                    )
                })
                .collect();
            assert_eq!(raw.members().await, stored);
            let report = store.report().await.unwrap();
            assert_eq!((report.households, report.members), (3, 3));
            assert_eq!(raw.count("regions").await, 3);
        }
    };
    check(&regions, &households, &members).await;

    // A re-import with changes: every kind of field moves, in both directions.
    regions[0].name = "Guizhou".into();
    regions[0].longitude = Some(106.0);
    regions[1].longitude = None;
    regions[1].latitude = None;
    regions[2].parent = None;
    households[0].status = HouseholdStatus::Monitored;
    households[0].monitoring_type = Some(MonitoringType::SuddenHardship);
    households[0].identified_on = date(2024, 6, 30);
    households[0].annual_net_income_yuan = 99_999.99;
    households[0].safety_net = true;
    households[1].monitoring_type = None;
    households[1].risk_eliminated_on = None;
    households[1].identified_on = None;
    households[1].dibao = false;
    households[1].members = 6;
    households[2].region_code = RegionCode::parse("522425000000").unwrap();
    households[2].tekun = false;
    members[0].labour_capable = true;
    members[1].household_id = HouseholdId::parse("H3").unwrap();
    members[1].relation = Relation::Other;
    members[2].person_masked = "522425********0000".into();
    for _ in 0..2 {
        store.upsert_regions(&regions).await.unwrap();
        store.upsert_households(&households, now()).await.unwrap();
        store.upsert_members(&members, now()).await.unwrap();
        check(&regions, &households, &members).await;
    }
}

/// A batch commits its events, dead letters, alert and task snapshots, counters,
/// outbox rows and positions together.
async fn contract_batch(subject: Subject) {
    let county = county(&subject).await;
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    assert!(!batch.alerts.is_empty() && !batch.tasks.is_empty());
    assert!(!batch.dead_letters.is_empty() && !batch.events.is_empty());
    let positions = file_positions(&county.records);
    let store = subject.with_outbox();
    store.commit_batch(&batch, &positions, now()).await.unwrap();

    let raw = &subject.raw;
    assert_eq!(raw.count("events").await, batch.events.len() as i64);
    assert_eq!(
        raw.count("dead_letters").await,
        batch.dead_letters.len() as i64
    );
    assert_eq!(raw.count("alerts").await, batch.alerts.len() as i64);
    assert_eq!(raw.count("tasks").await, all_tasks(&batch).len() as i64);
    let pending = store.outbox_pending(i64::MAX).await.unwrap();
    assert_eq!(raw.count("outbox").await, pending.len() as i64);
    assert_eq!(
        household_rows(&pending).len(),
        batch.alerts.len() + batch.tasks.len() + batch.dead_letters.len()
    );
    assert_eq!(raw.count("source_positions").await, positions.len() as i64);
    let report = store.report().await.unwrap();
    assert_eq!(report.events_processed, county.key.lines);
    assert_eq!(report.events_accepted, batch.counts.accepted);
    assert_eq!(sorted_positions(&store, "file:").await, positions);
    assert_eq!(exported_alerts(&store).await, as_exported(&batch.alerts));
    assert_eq!(exported_tasks(&store).await, by_task_id(&all_tasks(&batch)));
    assert_eq!(household_rows(&pending), expected_outbox(&batch));
}

/// A statement that fails inside the transaction rolls back everything before
/// it; the error is not transient; the same batch commits afterwards.
async fn contract_rollback(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.with_outbox();
    let (first, second) = county.records.split_at(county.records.len() / 2);
    let mut core = subject.core().await;
    let batch_a = core.process(first, now());
    store
        .commit_batch(&batch_a, &file_positions(first), now())
        .await
        .unwrap();
    let mut batch_b = core.process(second, now());
    let poison = core.process(&poison_records(), now());
    batch_b.dead_letters.extend(poison.dead_letters);
    batch_b.counts.records += poison.counts.records;
    batch_b.counts.dead_letters += poison.counts.dead_letters;
    assert!(!batch_b.events.is_empty() && !batch_b.alerts.is_empty());
    assert!(!batch_b.tasks.is_empty() && !batch_b.dead_letters.is_empty());
    let before = snapshot(&subject).await;

    // The very last statement fails: a position, after a good one.
    subject.raw.fail_on_poison_position().await;
    let mut positions = file_positions(second);
    positions.push(SourcePosition {
        source_key: "poison".into(),
        position: 1,
        line: 1,
        fingerprint: None,
        claim: None,
    });
    let error = store
        .commit_batch(&batch_b, &positions, now())
        .await
        .expect_err("the injected failure aborts the batch");
    assert!(matches!(error, StoreError::Query(_)), "{error:?}");
    assert!(!error.is_transient(), "{error:?}");
    assert_eq!(
        snapshot(&subject).await,
        before,
        "nothing of the batch is visible"
    );
    subject.raw.stop_failing().await;

    // A constraint of the schema: one open alert per household. A second open
    // alert for a household fails the alert statement, after events and dead
    // letters were written.
    let mut conflicting = copy(&batch_b);
    let mut second_open = batch_a.alerts[0].clone();
    second_open.alert_id = "conflicting-alert".into();
    second_open.episode += 1;
    conflicting.alerts.push(second_open);
    let error = store
        .commit_batch(&conflicting, &file_positions(second), now())
        .await
        .expect_err("a second open alert for a household is refused");
    assert!(!error.is_transient(), "{error:?}");
    assert_eq!(
        snapshot(&subject).await,
        before,
        "nothing of the batch is visible"
    );

    // The batch itself commits now, exactly once.
    store
        .commit_batch(&batch_b, &file_positions(second), now())
        .await
        .unwrap();
    let after = snapshot(&subject).await;
    assert_eq!(
        after.rows["events"],
        (batch_a.events.len() + batch_b.events.len()) as i64
    );
    assert_eq!(
        after.rows["dead_letters"],
        (batch_a.dead_letters.len() + batch_b.dead_letters.len()) as i64
    );
    assert_eq!(
        after.report.events_processed,
        county.key.lines + poison_records().len() as u64
    );
    assert_eq!(
        after.report.dead_letters,
        (batch_a.dead_letters.len() + batch_b.dead_letters.len()) as u64
    );
    assert_eq!(
        household_rows(&after.outbox).len(),
        expected_outbox(&batch_a).len() + expected_outbox(&batch_b).len()
    );
    assert_eq!(after.positions, {
        let mut all = file_positions(&county.records);
        all.sort_by(|a, b| a.source_key.cmp(&b.source_key));
        all
    });
}

/// Positions round-trip exactly, update in place, and `positions_with_prefix`
/// returns exactly the keys that start with the prefix (no pattern matching:
/// topic names may hold `_` and differ only in case).
async fn contract_positions(subject: Subject) {
    let store = subject.store();
    let position =
        |key: &str, position: u64, line: u64, fingerprint: Option<&str>| SourcePosition {
            source_key: key.into(),
            position,
            line,
            fingerprint: fingerprint.map(str::to_string),
            claim: None,
        };
    let positions = vec![
        position("file:/data/村/民政.ndjson", 1_234_567, 8_910, Some("ab12")),
        position("kafka:dept.x:0", 42, 0, None),
        position("kafka:dept.x:1", i64::MAX as u64, 0, None),
        position("kafka:dept.x:10", 0, 0, None),
        position("kafka:Dept.x:0", 5, 0, None),
        position("kafka:dept_y:0", 6, 0, None),
        position("kafka:deptzy:0", 7, 0, None),
    ];
    store
        .commit_batch(&BatchOutput::default(), &positions, now())
        .await
        .unwrap();
    for expected in &positions {
        assert_eq!(
            store.position(&expected.source_key).await.unwrap().as_ref(),
            Some(expected)
        );
    }
    assert_eq!(store.position("kafka:dept.x:2").await.unwrap(), None);
    let keys = |prefix: &'static str| async move {
        sorted_positions(store, prefix)
            .await
            .into_iter()
            .map(|p| p.source_key)
            .collect::<Vec<_>>()
    };
    assert_eq!(sorted_positions(store, "").await.len(), positions.len());
    assert_eq!(
        keys("kafka:").await,
        [
            "kafka:Dept.x:0",
            "kafka:dept.x:0",
            "kafka:dept.x:1",
            "kafka:dept.x:10",
            "kafka:dept_y:0",
            "kafka:deptzy:0"
        ]
    );
    assert_eq!(
        keys("kafka:dept.x:1").await,
        ["kafka:dept.x:1", "kafka:dept.x:10"]
    );
    assert_eq!(keys("kafka:dept_y:").await, ["kafka:dept_y:0"]);
    assert_eq!(
        keys("kafka:dept.x:").await,
        ["kafka:dept.x:0", "kafka:dept.x:1", "kafka:dept.x:10"]
    );
    assert_eq!(keys("file:").await, ["file:/data/村/民政.ndjson"]);
    assert!(keys("stdin").await.is_empty());

    // A later batch moves some positions; the rest stay.
    let moved = vec![
        position("kafka:dept.x:0", 50, 0, None),
        position("file:/data/村/民政.ndjson", 2_000_000, 9_000, None),
    ];
    store
        .commit_batch(&BatchOutput::default(), &moved, now())
        .await
        .unwrap();
    assert_eq!(
        store.position("kafka:dept.x:0").await.unwrap(),
        Some(moved[0].clone())
    );
    assert_eq!(
        store.position("file:/data/村/民政.ndjson").await.unwrap(),
        Some(moved[1].clone())
    );
    assert_eq!(
        store.position("kafka:dept.x:1").await.unwrap(),
        Some(positions[2].clone())
    );
    assert_eq!(subject.raw.count("source_positions").await, 7);
    // Empty batches move no counter.
    assert_eq!(store.report().await.unwrap(), Report::default());
    assert_eq!(subject.raw.count("counters").await, 0);
}

/// Events already stored are ignored (the first stored row wins); only the
/// counters move, by what the batch says.
async fn contract_duplicates(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    let positions = file_positions(&county.records);
    store.commit_batch(&batch, &positions, now()).await.unwrap();
    let once = snapshot(&subject).await;

    // The same batch again (as after a crash between commit and acknowledgement).
    let mut replay = copy(&batch);
    let first = replay.events[0].event_id.to_string();
    let original_origin = subject.raw.event_origin(&first).await;
    replay.events[0].origin = Origin::Stdin {
        line: 1,
        byte_offset: 0,
    };
    store
        .commit_batch(&replay, &positions, now())
        .await
        .unwrap();
    let twice = snapshot(&subject).await;
    assert_eq!(twice.rows, once.rows, "no row added");
    assert_eq!(twice.alerts, once.alerts);
    assert_eq!(twice.tasks, once.tasks);
    assert_eq!(twice.dead_letters, once.dead_letters);
    assert_eq!(subject.raw.event_origin(&first).await, original_origin);
    let counts = batch.counts;
    assert_eq!(
        twice.report,
        Report {
            events_processed: 2 * counts.records,
            events_accepted: 2 * counts.accepted,
            dead_letters: 2 * counts.dead_letters,
            unmatched: 2 * counts.unmatched,
            duplicates: 2 * counts.duplicates,
            suppressed: 2 * counts.suppressed,
            ..once.report.clone()
        }
    );

    // A replay through a core rebuilt from the store: every valid record is a
    // duplicate, and nothing else changes.
    let mut rebuilt = subject.core().await;
    let replayed = rebuilt.process(&county.records, now());
    assert_eq!(replayed.counts.accepted, 0);
    assert!(replayed.events.is_empty() && replayed.alerts.is_empty());
    assert_eq!(
        replayed.counts.duplicates,
        county.key.lines - county.key.bad_lines
    );
    store
        .commit_batch(&replayed, &positions, now())
        .await
        .unwrap();
    let thrice = snapshot(&subject).await;
    assert_eq!(thrice.rows, once.rows);
    assert_eq!(
        thrice.report.duplicates,
        twice.report.duplicates + replayed.counts.duplicates
    );
    assert_eq!(thrice.report.events_accepted, twice.report.events_accepted);
}

/// Text the bulk insert's encoding could garble (tabs, line breaks, backslashes,
/// JSON escapes, Chinese) is stored as it was, whether the events go straight in or,
/// with a duplicate among them, through the staging path.
async fn contract_event_text(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    let awkward = |mut event: yujing::batch::StoredEvent, n: usize| {
        event.origin = Origin::File {
            path: Arc::from(format!("/数据/县{n}\t\\tab\there\nline\r.ndjson").as_str()),
            line: 7,
            byte_offset: 0,
        };
        event.payload_json =
            Arc::from(format!(r#"{{"note":"引号\" 反斜杠\\ 制表\t {n}","raw":"a\\nb"}}"#).as_str());
        event
    };
    let first = awkward(batch.events[0].clone(), 1);
    let second = awkward(batch.events[1].clone(), 2);
    let only = |events: Vec<yujing::batch::StoredEvent>| BatchOutput {
        events,
        ..BatchOutput::default()
    };
    store
        .commit_batch(&only(vec![first.clone()]), &[], now())
        .await
        .unwrap();
    // The first again beside a new one: the duplicate sends the batch through staging.
    store
        .commit_batch(&only(vec![first.clone(), second.clone()]), &[], now())
        .await
        .unwrap();
    assert_eq!(subject.raw.count("events").await, 2);
    for event in [&first, &second] {
        let id = event.event_id.to_string();
        assert_eq!(subject.raw.event_origin(&id).await, event.origin.locator());
        assert_eq!(
            subject.raw.event_payload(&id).await,
            &*event.payload_json,
            "payload of {id}"
        );
    }
}

/// A batch begun ahead (PostgreSQL) shows nothing while the batch before it commits,
/// then commits as `commit_batch` would have; one dropped instead leaves nothing
/// behind, not even an open transaction. SQLite begins nothing ahead.
async fn contract_begun_ahead(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.with_outbox();
    let mut core = subject.core().await;
    let records = &county.records;
    let (a, b) = (records.len() / 3, 2 * records.len() / 3);
    let first = core.process(&records[..a], now());
    let second = core.process(&records[a..b], now());
    let third = core.process(&records[b..], now());
    assert!(!second.events.is_empty() && !third.events.is_empty());
    let begun = store.begin_ahead(&second, now()).await.unwrap();
    if subject.backend == Backend::Sqlite {
        assert!(begun.is_none());
        return;
    }
    let begun = begun.expect("PostgreSQL begins a batch ahead");
    store
        .commit_batch(&first, &file_positions(&records[..a]), now())
        .await
        .unwrap();
    assert_eq!(subject.raw.count("events").await, first.events.len() as i64);
    let positions = file_positions(&records[..b]);
    store
        .commit_begun(begun, &second, &positions, now())
        .await
        .unwrap();
    let both = (first.events.len() + second.events.len()) as i64;
    assert_eq!(subject.raw.count("events").await, both);
    assert_eq!(sorted_positions(&store, "file:").await, positions);
    let report = store.report().await.unwrap();
    assert_eq!(report.events_processed, b as u64);
    assert_eq!(
        report.events_accepted,
        first.counts.accepted + second.counts.accepted
    );
    let pending = store.outbox_pending(i64::MAX).await.unwrap();
    assert_eq!(
        household_rows(&pending).len(),
        [&first, &second]
            .iter()
            .map(|batch| batch.alerts.len() + batch.tasks.len() + batch.dead_letters.len())
            .sum::<usize>()
    );

    let dropped = store.begin_ahead(&third, now()).await.unwrap();
    drop(dropped);
    assert_eq!(subject.raw.count("events").await, both);
    let Raw::Postgres(pool) = &subject.raw else {
        unreachable!("PostgreSQL only from here")
    };
    let mut open = i64::MAX;
    for _ in 0..100 {
        open = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(open, 0, "the dropped batch's transaction was rolled back");
    store
        .commit_batch(&third, &file_positions(records), now())
        .await
        .unwrap();
    assert_eq!(
        subject.raw.count("events").await,
        both + third.events.len() as i64
    );
}

/// Alert snapshots update an open alert, never a closed one, and a closed alert
/// leaves room for the household's next one.
async fn contract_alert_upserts(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let alert = batch.alerts[0].clone();
    let raw = &subject.raw;

    // An update of the open alert: level, action, document and judgements move.
    let mut update = alert.clone();
    update.level = if alert.level == Level::Red {
        Level::Orange
    } else {
        Level::Red
    };
    update.updated_at = now() + Duration::hours(1);
    update.rules[0].reason = "updated reason".into();
    update
        .judgements
        .reasons
        .insert("x.updated".into(), (Level::Red, now()));
    let only = |alert: HouseholdAlert| BatchOutput {
        alerts: vec![alert],
        ..BatchOutput::default()
    };
    store
        .commit_batch(&only(update.clone()), &[], now())
        .await
        .unwrap();
    let (status, level, doc) = raw.alert_row(&alert.alert_id).await;
    assert_eq!(
        (status.as_str(), level.as_str()),
        ("open", update.level.as_str())
    );
    assert_eq!(doc, serde_json::to_string(&update).unwrap());
    let state = store.load_state(None, None, now(), None).await.unwrap();
    let (restored, _, _) = state
        .open_alerts
        .iter()
        .find(|(a, _, _)| a.alert_id == alert.alert_id)
        .unwrap();
    assert_eq!(restored, &update, "document and judgements updated");

    // Closed by a user: a later snapshot does not reopen or change it.
    let closed_at = now() + Duration::hours(2);
    raw.close_alert(&alert.alert_id, closed_at).await;
    let mut late = update.clone();
    late.level = Level::Red;
    late.rules[0].reason = "late snapshot".into();
    late.updated_at = now() + Duration::hours(3);
    store.commit_batch(&only(late), &[], now()).await.unwrap();
    let (status, level, stored_doc) = raw.alert_row(&alert.alert_id).await;
    assert_eq!(status, "closed");
    assert_eq!(level, update.level.as_str());
    assert_eq!(stored_doc, doc);
    assert_eq!(raw.count("alerts").await, batch.alerts.len() as i64);

    // The household's next alert (next episode, new id) opens beside it.
    let mut next = alert.clone();
    next.alert_id = format!("{}-next", alert.alert_id);
    next.episode = alert.episode + 1;
    store
        .commit_batch(&only(next.clone()), &[], now())
        .await
        .unwrap();
    assert_eq!(raw.alert_row(&next.alert_id).await.0, "open");
    let exported = exported_alerts(store).await;
    let of_household: Vec<(u32, AlertStatus)> = exported
        .iter()
        .filter(|a| a.household_id == alert.household_id)
        .map(|a| (a.episode, a.status))
        .collect();
    // The stored document of the closed alert is the last open snapshot; its row
    // says closed.
    assert_eq!(of_household.len(), 2);
    assert_eq!(of_household[0].0, alert.episode);
    assert_eq!(of_household[1], (next.episode, AlertStatus::Open));
}

/// The pipeline's own end of an alert: an expired snapshot moves the open alert to
/// `expired` with its end in event time, the household's next alert opens beside it in
/// the same batch, a later open snapshot does not reopen it, and at start-up it comes
/// back as an expired (not cooling) closed alert while within reach, and not after.
async fn contract_alert_expiry(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let raw = &subject.raw;
    let alert = batch
        .alerts
        .iter()
        .find(|a| a.status == AlertStatus::Open)
        .expect("an open alert")
        .clone();
    let at = alert.last_evidence_at + Duration::days(90);
    let mut expired = alert.clone();
    expired.status = AlertStatus::Expired;
    expired.closed_at = Some(now() + Duration::hours(1));
    expired.updated_at = now() + Duration::hours(1);
    let mut next = alert.clone();
    next.alert_id = format!("{}-next", alert.alert_id);
    next.episode = alert.episode + 1;
    store
        .commit_batch(
            &BatchOutput {
                alerts: vec![expired.clone(), next.clone()],
                closures: vec![(alert.alert_id.clone(), at)],
                ..BatchOutput::default()
            },
            &[],
            now(),
        )
        .await
        .unwrap();
    let (status, _, doc) = raw.alert_row(&alert.alert_id).await;
    assert_eq!(status, "expired");
    assert_eq!(doc, serde_json::to_string(&expired).unwrap());
    assert_eq!(raw.alert_row(&next.alert_id).await.0, "open");
    // A stale open snapshot of the expired alert changes nothing.
    store
        .commit_batch(
            &BatchOutput {
                alerts: vec![alert.clone()],
                ..BatchOutput::default()
            },
            &[],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(raw.alert_row(&alert.alert_id).await.0, "expired");
    let state = store
        .load_state(None, None, at - Duration::days(1), None)
        .await
        .unwrap();
    assert!(
        state
            .open_alerts
            .iter()
            .all(|(a, _, _)| a.alert_id != alert.alert_id)
    );
    assert!(
        state
            .open_alerts
            .iter()
            .any(|(a, _, _)| a.alert_id == next.alert_id)
    );
    let restored: Vec<_> = state
        .closed_alerts
        .iter()
        .filter(|(household, _, episode)| {
            *household == alert.household_id && *episode == alert.episode
        })
        .collect();
    assert_eq!(
        restored,
        vec![&(
            alert.household_id.clone(),
            yujing::batch::ClosedAlert {
                risk_types: alert.risk_types.clone(),
                level: alert.level,
                closed_at: at,
                evidence: alert.evidence.clone(),
                expired: true,
            },
            alert.episode
        )]
    );
    let past = store
        .load_state(None, None, at + Duration::seconds(1), None)
        .await
        .unwrap();
    assert!(
        past.closed_alerts
            .iter()
            .all(|(household, _, _)| *household != alert.household_id)
    );
}

/// Migration 0061 fills the rule-id column of alerts stored before it from their
/// documents: with the column emptied and its UPDATE run again, the yield is what
/// counting the alerts by hand gives.
async fn contract_rule_ids_backfill(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let expected = support::yield_by_hand(&batch.alerts, &all_tasks(&batch));
    assert!(expected.rules.len() > 3);
    assert_eq!(
        store.rule_yield(None).await.unwrap(),
        expected,
        "as written"
    );
    subject
        .raw
        .execute("UPDATE alerts SET rule_ids = '[]'")
        .await;
    assert!(store.rule_yield(None).await.unwrap().rules.is_empty());
    let folder = match subject.backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    let migration = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("{folder}/0061_alert_rule_ids.sql")),
    )
    .unwrap();
    let update = &migration[migration.find("UPDATE").expect("the backfill")..];
    let sql = sqlx::AssertSqlSafe(update.to_string());
    on_pool!(&subject.raw, pool => { sqlx::query(sql).execute(pool).await.unwrap(); });
    assert_eq!(
        store.rule_yield(None).await.unwrap(),
        expected,
        "backfilled"
    );
}

/// Task snapshots only raise a task's level and never touch its lifecycle
/// (status, assignee, outcome), which belongs to users.
async fn contract_task_upserts(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let task = batch
        .tasks
        .iter()
        .find(|t| t.level < Level::Red)
        .expect("a task below red")
        .clone();
    subject
        .raw
        .work_task(&task.task_id, "visiting", "worker-7", "visited, 户主不在家")
        .await;

    let stored = |store: &Store| {
        let id = task.task_id.clone();
        let store = store.clone();
        async move {
            exported_tasks(&store)
                .await
                .into_iter()
                .find(|t| t.task_id == id)
                .unwrap()
        }
    };
    let worked = stored(store).await;
    assert_eq!(worked.stage, Stage::Visiting);

    // Raised by the pipeline: level and updated_at move, the lifecycle stays.
    let mut raised = task.clone();
    raised.level = Level::Red;
    raised.updated_at = now() + Duration::days(1);
    let only = |task: ScreeningTask| BatchOutput {
        tasks: vec![task],
        ..BatchOutput::default()
    };
    store
        .commit_batch(&only(raised.clone()), &[], now())
        .await
        .unwrap();
    let after = stored(store).await;
    assert_eq!(
        after,
        ScreeningTask {
            level: Level::Red,
            updated_at: raised.updated_at,
            ..worked.clone()
        }
    );

    // A stale snapshot at a lower level does not lower it.
    let mut stale = task.clone();
    stale.level = Level::Blue;
    stale.updated_at = now() + Duration::days(2);
    store.commit_batch(&only(stale), &[], now()).await.unwrap();
    let after_stale = stored(store).await;
    assert_eq!(after_stale.level, Level::Red, "a task's level never drops");
    assert_eq!(after_stale.stage, Stage::Visiting);
    assert_eq!(after_stale.assignee.as_deref(), Some("worker-7"));
    assert_eq!(after_stale.outcome_note, worked.outcome_note);
    assert_eq!(
        subject.raw.count("tasks").await,
        (batch.tasks.len() + batch.regional.tasks.len()) as i64,
        "the household tasks and the campaigns"
    );

    // A campaign task keeps its households to visit first, in order.
    let village = task.village_code;
    let campaign = ScreeningTask::open(
        NewTask {
            task_id: "c0ffee00c0ffee00c0ffee00c0ffee00".into(),
            kind: TaskKind::Campaign,
            alert_id: None,
            signal_id: Some("5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e".into()),
            household_id: None,
            village_code: village,
            level: Level::Orange,
            priority_households: ["H-b", "H-a", "H-c"]
                .into_iter()
                .map(|id| HouseholdId::parse(id).unwrap())
                .collect(),
        },
        Budget {
            pass_on_days: 15,
            decision_days: 15,
        },
        now(),
        now(),
    );
    let mut regional = BatchOutput::default();
    regional.regional.tasks.push(campaign.clone());
    store.commit_batch(&regional, &[], now()).await.unwrap();
    let exported = exported_tasks(store).await;
    assert_eq!(
        exported.iter().find(|t| t.task_id == campaign.task_id),
        Some(&campaign)
    );
}

/// `load_state` gives back exactly what the core needs: seen ids, household
/// events (industry-project events fanned out to their households), open alerts
/// with tasks, episodes and judgements, closed alerts within the cool-down — so
/// a core rebuilt from the store continues exactly like one that never stopped.
async fn contract_load_state(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    store.commit_batch(&batch, &[], now()).await.unwrap();

    let state = store.load_state(None, None, now(), None).await.unwrap();
    let mut seen = state.seen.clone();
    seen.sort_unstable();
    let mut want_seen: Vec<(u128, DateTime<Utc>)> = batch
        .events
        .iter()
        .map(|e| (e.event_id.digest(e.source.as_str()), e.occurred_at))
        .collect();
    want_seen.sort_unstable();
    assert_eq!(seen, want_seen);
    // From the dedupe horizon on: the digests of the events since then only.
    let mut times: Vec<DateTime<Utc>> = batch.events.iter().map(|e| e.occurred_at).collect();
    times.sort_unstable();
    let horizon = times[times.len() / 2];
    let recent = store
        .load_state(None, None, now(), Some(horizon))
        .await
        .unwrap();
    let mut recent_seen = recent.seen.clone();
    recent_seen.sort_unstable();
    let want_recent: Vec<(u128, DateTime<Utc>)> = want_seen
        .iter()
        .filter(|(_, at)| *at >= horizon)
        .copied()
        .collect();
    assert!(!want_recent.is_empty() && want_recent.len() < want_seen.len());
    assert_eq!(recent_seen, want_recent);

    // Household events: every event with a household, industry-project failures
    // with the households in their payload, and declared disasters (the regional
    // stage takes them in again).
    let mut want_events = BTreeMap::new();
    let mut reported = BTreeMap::new();
    for event in &batch.events {
        let payload = Payload::from_json(event.kind, &event.payload_json).unwrap();
        let households = match (&event.household_id, &payload) {
            (Some(id), _) => vec![id.clone()],
            (None, Payload::IndustryProjectFailure(failure)) => failure.household_ids.clone(),
            (None, Payload::DisasterDeclared(_)) => Vec::new(),
            _ => continue,
        };
        reported.insert(event.event_id.to_string(), event.reported_at);
        want_events.insert(
            event.event_id.to_string(),
            (
                event.occurred_at,
                event.person_key,
                households,
                Some(payload),
            ),
        );
    }
    let got_events: BTreeMap<_, _> = state
        .events
        .iter()
        .map(|e| {
            (
                e.event_id.to_string(),
                (
                    e.occurred_at,
                    e.person_key,
                    e.households.clone(),
                    e.payload.clone(),
                ),
            )
        })
        .collect();
    assert_eq!(got_events.len(), state.events.len(), "each event once");
    assert_eq!(got_events, want_events);
    let fanned_out = state
        .events
        .iter()
        .find(|e| matches!(e.payload, Some(Payload::IndustryProjectFailure(_))))
        .expect("the county has an industry-project failure");
    assert!(fanned_out.households.len() > 1);

    // Only events at or after `events_since`.
    let mut times: Vec<DateTime<Utc>> = batch.events.iter().map(|e| e.occurred_at).collect();
    times.sort();
    let since = times[times.len() / 2];
    let recent = store
        .load_state(Some(since), None, now(), None)
        .await
        .unwrap();
    let want_recent: BTreeSet<String> = want_events
        .iter()
        .filter(|(_, v)| v.0 >= since)
        .map(|(k, _)| k.clone())
        .collect();
    let got_recent: BTreeSet<String> = recent
        .events
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(got_recent, want_recent);
    assert!(!want_recent.is_empty() && want_recent.len() < want_events.len());
    assert!(recent.held.is_empty(), "nothing held without a hold");
    assert_eq!(recent.seen.len(), state.seen.len(), "every id stays seen");
    // And apart, the earlier events reported after the regional stage's hold began.
    let mut report_times: Vec<DateTime<Utc>> = want_events
        .iter()
        .filter(|(_, v)| v.0 < since)
        .map(|(id, _)| reported[id])
        .collect();
    report_times.sort();
    let held_after = report_times[report_times.len() * 9 / 10];
    let holding = store
        .load_state(Some(since), Some(held_after), now(), None)
        .await
        .unwrap();
    let want_held: BTreeSet<String> = want_events
        .iter()
        .filter(|(id, v)| v.0 < since && reported[*id] > held_after)
        .map(|(k, _)| k.clone())
        .collect();
    let got_held: BTreeSet<String> = holding
        .held
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    assert!(!want_held.is_empty());
    assert_eq!(got_held, want_held);
    assert!(
        holding
            .held
            .iter()
            .all(|e| e.reported_at == reported[&e.event_id.to_string()])
    );
    assert_eq!(
        store.latest_event_time().await.unwrap(),
        times.last().copied()
    );

    // Open alerts, complete, with their tasks and episodes.
    assert_eq!(state.open_alerts.len(), batch.alerts.len());
    for (alert, task, episode) in &state.open_alerts {
        let want = batch
            .alerts
            .iter()
            .find(|a| a.alert_id == alert.alert_id)
            .unwrap();
        assert_eq!(alert, want);
        assert_eq!(*episode, want.episode);
        let want_task = batch
            .tasks
            .iter()
            .find(|t| t.alert_id.as_deref() == Some(alert.alert_id.as_str()));
        assert_eq!(task.as_ref(), want_task);
    }
    assert!(state.closed_alerts.is_empty());

    // A closed alert comes back as closed while within the cool-down only.
    let alert = &batch.alerts[0];
    let closed_at = now() + Duration::days(3);
    subject.raw.close_alert(&alert.alert_id, closed_at).await;
    let within = store
        .load_state(None, None, closed_at - Duration::days(1), None)
        .await
        .unwrap();
    assert!(
        !within
            .open_alerts
            .iter()
            .any(|(a, _, _)| a.alert_id == alert.alert_id)
    );
    assert_eq!(
        within.closed_alerts,
        vec![(
            alert.household_id.clone(),
            yujing::batch::ClosedAlert {
                risk_types: alert.risk_types.clone(),
                level: alert.level,
                closed_at,
                evidence: alert.evidence.clone(),
                expired: false,
            },
            alert.episode
        )]
    );
    assert_eq!(within.open_alerts.len(), batch.alerts.len() - 1);
    let past = store
        .load_state(None, None, closed_at + Duration::seconds(1), None)
        .await
        .unwrap();
    assert!(past.closed_alerts.is_empty());
    assert_eq!(past.open_alerts.len(), batch.alerts.len() - 1);
}

/// A core rebuilt from the store after the first half of the records processes
/// the second half exactly as a core that never stopped.
async fn contract_resume(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let (first, second) = county.records.split_at(county.records.len() / 2);
    let mut continuous = subject.core().await;
    let batch = continuous.process(first, now());
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let expected = continuous.process(second, now());
    let mut rebuilt = subject.core().await;
    assert_eq!(
        rebuilt.seen_count(),
        continuous.seen_count() - expected.events.len()
    );
    let resumed = rebuilt.process(second, now());
    assert_eq!(resumed.counts, expected.counts);
    assert_eq!(resumed.events, expected.events);
    assert_eq!(resumed.dead_letters, expected.dead_letters);
    let sorted = |alerts: &[HouseholdAlert]| {
        let mut alerts = alerts.to_vec();
        alerts.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
        alerts
    };
    assert!(!expected.alerts.is_empty());
    assert_eq!(sorted(&resumed.alerts), sorted(&expected.alerts));
    assert_eq!(by_task_id(&resumed.tasks), by_task_id(&expected.tasks));
}

/// With a short expiry (and orange opening tasks), alerts expire in both halves of the
/// season: a core rebuilt
/// from the store (its expired and closed alerts read back by event time) expires and
/// opens exactly what a core that never stopped does, and holds the same alerts in
/// memory afterwards.
async fn contract_resume_with_expiries(subject: Subject) {
    let mut settings = subject.app.settings.clone();
    // Yellow alerts below the task level too, so that a small county has many.
    settings.rules.task_min_level = Level::Orange;
    settings.rules.expiry_days = 15;
    settings.rules.max_lateness_days = 5;
    let app = App::build(settings).await.expect("app builds");
    let county = county(&subject).await;
    let store = &app.store;
    // Split in event time: the first half of the season, then the second.
    let occurred = |record: &RawRecord| {
        serde_json::from_slice::<serde_json::Value>(&record.bytes)
            .ok()
            .and_then(|v| v["occurred_at"].as_str().map(str::to_string))
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let mut times: Vec<DateTime<Utc>> = county.records.iter().filter_map(occurred).collect();
    times.sort_unstable();
    let middle = times[times.len() / 2];
    let (first, second): (Vec<RawRecord>, Vec<RawRecord>) = county
        .records
        .iter()
        .cloned()
        .partition(|r| occurred(r).is_none_or(|t| t < middle));
    let (first, second) = (first.as_slice(), second.as_slice());
    let mut continuous = app.load_core().await.unwrap();
    let batch = continuous.process(first, now());
    assert!(
        batch
            .alerts
            .iter()
            .any(|a| a.status == AlertStatus::Expired),
        "alerts expire in the first half"
    );
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let expected = continuous.process(second, now());
    assert!(
        expected
            .alerts
            .iter()
            .any(|a| a.status == AlertStatus::Expired),
        "and in the second"
    );
    let mut rebuilt = app.load_core().await.unwrap();
    let resumed = rebuilt.process(second, now());
    let sorted = |alerts: &[HouseholdAlert]| {
        let mut alerts = alerts.to_vec();
        alerts.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
        alerts
    };
    assert_eq!(sorted(&resumed.alerts), sorted(&expected.alerts));
    let closures = |batch: &BatchOutput| {
        let mut closures = batch.closures.clone();
        closures.sort();
        closures
    };
    assert_eq!(closures(&resumed), closures(&expected));
    assert_eq!(resumed.counts, expected.counts);
    assert_eq!(by_task_id(&resumed.tasks), by_task_id(&expected.tasks));
    assert_eq!(
        rebuilt.rules().alerts_held(),
        continuous.rules().alerts_held()
    );
}

/// The report's figures: counters as the batches said, the rest counted from
/// the tables.
async fn contract_report(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let poison = core.process(&poison_records(), now());
    store.commit_batch(&poison, &[], now()).await.unwrap();
    let key = &county.key;
    let poison_count = poison_records().len() as u64;
    let letters: Vec<&DeadLetter> = batch
        .dead_letters
        .iter()
        .chain(&poison.dead_letters)
        .collect();
    let report = store.report().await.unwrap();
    let expected = Report {
        events_processed: key.lines + poison_count,
        events_accepted: key.lines - key.bad_lines - key.duplicates,
        dead_letters: key.bad_lines + poison_count,
        unmatched: key.unmatched,
        duplicates: key.duplicates,
        suppressed: batch.counts.suppressed,
        alerts_by_level: tally(batch.alerts.iter().map(|a| a.level.as_str())),
        alerts_by_action: tally(batch.alerts.iter().map(|a| a.action.as_str())),
        alerts_by_status: tally(batch.alerts.iter().map(|a| a.status.as_str())),
        rule_yield: support::yield_by_hand(&batch.alerts, &all_tasks(&batch)),
        tasks_by_stage: tally(all_tasks(&batch).iter().map(|t| t.stage.as_str())),
        dead_letters_by_rule: tally(letters.iter().map(|l| l.rejection.rule.as_str())),
        households: key.households as u64,
        members: subject.raw.count("members").await as u64,
        // The regional stage's figures are its own tests' business.
        ..report.clone()
    };
    assert_eq!(report, expected);
    assert_eq!(expected.members, key.persons as u64);
    // The yield is not vacuous: several rules, tasks, and the season's expiries.
    assert!(expected.rule_yield.rules.len() > 3);
    assert!(expected.rule_yield.all.tasks > 0);
    assert_eq!(expected.rule_yield.all.alerts, batch.alerts.len() as u64);
    assert_eq!(
        expected.events_accepted + expected.duplicates + expected.dead_letters,
        expected.events_processed
    );
}

/// Exports give back exactly what was committed: alerts in household order,
/// tasks, and dead letters with their original bytes (non-UTF-8 too) as
/// documents that fit their schemas.
async fn contract_exports(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let poison = core.process(&poison_records(), now());
    assert_eq!(poison.dead_letters.len(), poison_records().len());
    store.commit_batch(&poison, &[], now()).await.unwrap();

    let alerts = exported_alerts(store).await;
    assert_eq!(alerts, as_exported(&batch.alerts));
    for alert in &alerts {
        let document = serde_json::to_value(alert).unwrap();
        let violations = Schemas::get().violations("outputs/household_alert.json", &document);
        assert!(violations.is_empty(), "{violations:?}\n{document}");
    }
    let tasks = exported_tasks(store).await;
    assert_eq!(tasks, by_task_id(&all_tasks(&batch)));
    for task in &tasks {
        let document = serde_json::to_value(task).unwrap();
        let violations = Schemas::get().violations("outputs/screening_task.json", &document);
        assert!(violations.is_empty(), "{violations:?}\n{document}");
    }

    let letters = exported_dead_letters(store).await;
    let mut all = batch.dead_letters.clone();
    all.extend(poison.dead_letters.iter().cloned());
    assert_eq!(by_dead_letter_id(&letters), by_dead_letter_id(&all));
    for letter in &letters {
        let document = letter.to_document();
        let violations = Schemas::get().violations("outputs/dead_letter.json", &document);
        assert!(violations.is_empty(), "{violations:?}\n{document}");
    }
    // The non-UTF-8 record: its bytes as received, resident ID masked in place.
    let binary = letters
        .iter()
        .find(|l| l.rejection.rule == "json.not_utf8")
        .unwrap();
    assert_eq!(
        binary.raw,
        b"{\"person_id\":\"110105********002X\",\"x\":\"\xff\x00\xfe\"}".to_vec()
    );
    let document = binary.to_document();
    assert_eq!(document["raw_utf8"], serde_json::Value::Null);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(document["raw_base64"].as_str().unwrap())
            .unwrap(),
        binary.raw
    );
    assert_eq!(document["origin"]["kind"], "kafka");
    assert_eq!(document["origin"]["offset"], 10);
    assert_eq!(
        document["origin"]["key_base64"],
        base64::engine::general_purpose::STANDARD.encode(b"\x00\xffkey")
    );
    // The record cut for length keeps its full length.
    let cut = letters
        .iter()
        .find(|l| l.rejection.rule == "line.too_long")
        .unwrap();
    assert_eq!((cut.raw_bytes, cut.raw_truncated), (5_000_000, true));
    let empty = letters
        .iter()
        .find(|l| matches!(l.origin, Origin::Kafka { offset: 11, .. }))
        .unwrap();
    assert!(empty.raw.is_empty());
}

/// Outbox rows are written only by a store with an outbox, in batch order
/// (alerts, tasks, dead letters); pending rows come in id order; sent rows leave
/// the backlog and are purged once old enough; unsent rows never are.
async fn contract_outbox(subject: Subject) {
    let county = county(&subject).await;
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    let poison = core.process(&poison_records(), now());

    // Without an outbox: results, no rows.
    let plain = subject.store();
    assert_eq!(plain.outbox_topics(), None);
    plain.commit_batch(&poison, &[], now()).await.unwrap();
    assert_eq!(subject.raw.count("dead_letters").await, 5);
    assert_eq!(plain.outbox_backlog().await.unwrap(), 0);
    assert!(plain.outbox_pending(100).await.unwrap().is_empty());

    let store = subject.with_outbox();
    assert_eq!(store.outbox_topics(), Some(&topics()));
    store.commit_batch(&batch, &[], now()).await.unwrap();
    store.commit_batch(&poison, &[], now()).await.unwrap();
    let mut want = expected_outbox(&batch);
    want.extend(expected_outbox(&poison));
    let pending = store.outbox_pending(i64::MAX).await.unwrap();
    assert_eq!(household_rows(&pending), want);
    assert!(pending.windows(2).all(|w| w[0].id < w[1].id), "id order");
    assert_eq!(store.outbox_backlog().await.unwrap(), pending.len() as i64);
    assert_eq!(store.outbox_pending(5).await.unwrap(), pending[..5]);
    for row in &pending {
        let document: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
        let schema = if row.topic == topics().household_alerts {
            "outputs/household_alert.json"
        } else if row.topic == topics().screening_tasks {
            "outputs/screening_task.json"
        } else if row.topic == topics().regional_signals {
            "outputs/regional_signal.json"
        } else {
            "outputs/dead_letter.json"
        };
        let violations = Schemas::get().violations(schema, &document);
        assert!(violations.is_empty(), "{violations:?}\n{document}");
    }

    // Sent rows leave the backlog, from the front.
    let sent: Vec<i64> = pending[..5].iter().map(|r| r.id).collect();
    let sent_at = now() + Duration::minutes(1);
    store.outbox_mark_sent(&sent, sent_at).await.unwrap();
    store.outbox_mark_sent(&[], sent_at).await.unwrap();
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        pending.len() as i64 - 5
    );
    assert_eq!(store.outbox_pending(1).await.unwrap(), pending[5..6]);
    // A mark of rows already sent changes nothing.
    store.outbox_mark_sent(&sent[..1], sent_at).await.unwrap();
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        pending.len() as i64 - 5
    );

    // Purge: rows sent strictly before the cut, never unsent ones.
    assert_eq!(store.outbox_purge(sent_at).await.unwrap(), 0);
    assert_eq!(
        store
            .outbox_purge(sent_at + Duration::seconds(1))
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store
            .outbox_purge(now() + Duration::days(365))
            .await
            .unwrap(),
        0
    );
    assert_eq!(subject.raw.count("outbox").await, pending.len() as i64 - 5);
    assert_eq!(
        store.outbox_pending(i64::MAX).await.unwrap(),
        pending[5..].to_vec()
    );

    // A row the broker never takes leaves the backlog, is recorded with its
    // reason, and survives purges.
    let refused = &pending[5];
    store
        .outbox_mark_undeliverable(refused.id, "Message size too large\0", sent_at)
        .await
        .unwrap();
    assert_eq!(store.outbox_pending(1).await.unwrap(), pending[6..7]);
    assert_eq!(
        store.outbox_undeliverable().await.unwrap(),
        vec![(
            refused.clone(),
            "Message size too large\u{FFFD}".to_string()
        )]
    );
    assert_eq!(
        store
            .outbox_purge(now() + Duration::days(365))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.outbox_undeliverable().await.unwrap().len(), 1);

    // Later batches append after the rows already there.
    let again = core.process(&poison_records(), now());
    assert_eq!(again.counts.dead_letters, 5);
    store.commit_batch(&again, &[], now()).await.unwrap();
    let later = store.outbox_pending(i64::MAX).await.unwrap();
    assert_eq!(later[..pending.len() - 6], pending[6..]);
    let last = pending.last().unwrap().id;
    assert!(later[pending.len() - 6..].iter().all(|row| row.id > last));
    let mut want_later = household_rows(&pending[6..]);
    want_later.extend(expected_outbox(&again));
    assert_eq!(household_rows(&later), want_later);
}

/// Both backends, fed the same county, hold the same results: registry, state,
/// exports, report, positions and outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_agree() {
    let sqlite = Subject::open(Backend::Sqlite, "agree_sqlite").await;
    let postgres = Subject::open(Backend::Postgres, "agree_postgres").await;
    let mut views = Vec::new();
    for subject in [&sqlite, &postgres] {
        let county = county(subject).await;
        let store = subject.with_outbox();
        let mut core = subject.core().await;
        let (first, second) = county.records.split_at(county.records.len() / 3);
        for part in [first, second, &poison_records()[..]] {
            let batch = core.process(part, now());
            store
                .commit_batch(&batch, &file_positions(part), now())
                .await
                .unwrap();
        }
        let mut registry = store.load_registry().await.unwrap();
        registry.members.sort_by_key(|m| m.0);
        registry.regions.sort_by_key(|r| r.code);
        let mut state = store
            .load_state(None, None, DateTime::UNIX_EPOCH, None)
            .await
            .unwrap();
        state.seen.sort_unstable();
        state.events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        state
            .open_alerts
            .sort_by(|a, b| a.0.alert_id.cmp(&b.0.alert_id));
        let events: Vec<String> = state
            .events
            .iter()
            .map(|e| {
                format!(
                    "{} {} {:?} {:?} {:?}",
                    e.event_id, e.occurred_at, e.person_key, e.households, e.payload
                )
            })
            .collect();
        views.push((
            snapshot(subject).await,
            format!("{:?}", registry.households),
            format!("{:?} {:?}", registry.members, registry.regions),
            state.seen,
            events,
            state.open_alerts,
            store.latest_event_time().await.unwrap(),
        ));
    }
    let postgres_view = views.pop().unwrap();
    let sqlite_view = views.pop().unwrap();
    assert!(sqlite_view.0.rows["alerts"] > 0);
    assert_eq!(sqlite_view.0, postgres_view.0);
    assert_eq!(sqlite_view, postgres_view);
}

/// Every committed event, read back through the regional feed in pages.
async fn fed_ids(store: &Store, after: FeedCursor) -> Vec<(FeedCursor, String)> {
    let mut cursor = after;
    let mut fed = Vec::new();
    loop {
        let page = store.feed_events(cursor, 97).await.unwrap();
        let Some(last) = page.last() else {
            return fed;
        };
        cursor = last.cursor;
        fed.extend(page.into_iter().map(|e| (e.cursor, e.event_id.to_string())));
    }
}

/// The feed after `after` once it holds `count` events: in PostgreSQL it stops short of
/// any transaction still open in the cluster, and tests running beside this one hold
/// some open for moments. Gives up (returning what it has) after thirty seconds.
async fn fed_ids_until(
    store: &Store,
    after: FeedCursor,
    count: usize,
) -> Vec<(FeedCursor, String)> {
    let began = std::time::Instant::now();
    loop {
        let fed = fed_ids(store, after).await;
        if fed.len() >= count || began.elapsed() > std::time::Duration::from_secs(30) {
            return fed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The regional lead: one holder at a time, taken over only once expired, a new epoch
/// on every takeover, the cursor committed with the results, and a deposed holder's
/// commit refused with nothing written. The feed gives every committed event once, in
/// commit order; in PostgreSQL never past a transaction still open.
async fn contract_regional_lead(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let ms = |s: i64| s * 1000;
    let (a, start) = store
        .acquire_regional_lead("a", ms(20), ms(10))
        .await
        .unwrap()
        .expect("a free lead");
    assert_eq!((a.epoch, start), (1, FeedCursor::default()));
    assert!(
        store
            .acquire_regional_lead("b", ms(30), ms(15))
            .await
            .unwrap()
            .is_none(),
        "held until it expires"
    );

    // Two batches: the feed gives every event once, in commit order.
    let mut core = subject.core().await;
    let half = county.records.len() / 2;
    let first = core.process(&county.records[..half], now());
    let second = core.process(&county.records[half..], now());
    store.commit_batch(&first, &[], now()).await.unwrap();
    store.commit_batch(&second, &[], now()).await.unwrap();
    let committed_count = first.events.len() + second.events.len();
    let fed = fed_ids_until(store, start, committed_count).await;
    let committed: Vec<String> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(
        fed.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        committed
    );
    assert!(fed.windows(2).all(|w| w[0].0 < w[1].0), "cursors increase");
    let (middle, _) = fed[first.events.len() - 1];
    let rest = fed_ids_until(store, middle, second.events.len()).await;
    assert_eq!(rest.len(), second.events.len(), "resumes after the cursor");
    let end = fed.last().unwrap().0;
    let history = store.feed_history(None, None, middle).await.unwrap();
    assert!(!history.is_empty());
    assert!(history.iter().all(|e| e.cursor <= middle
        && (e.household_id.is_some()
            || matches!(
                e.payload,
                Some(Payload::IndustryProjectFailure(_) | Payload::DisasterDeclared(_))
            ))));

    // A commit under the lead renews it and stores the cursor.
    let counted = |cursor| Fence {
        lease: a.clone(),
        cursor,
        expires_at_ms: ms(50),
    };
    let empty = BatchOutput::default();
    store
        .commit_regional(&empty, &counted(end), now())
        .await
        .unwrap();
    assert!(
        store
            .acquire_regional_lead("b", ms(60), ms(40))
            .await
            .unwrap()
            .is_none(),
        "renewed until 50 s"
    );
    let (b, resumed) = store
        .acquire_regional_lead("b", ms(90), ms(51))
        .await
        .unwrap()
        .expect("expired: b takes over");
    assert_eq!((b.epoch, resumed), (2, end));

    // The deposed holder's commit is refused, and writes nothing.
    let late_before = store.report().await.unwrap().late_events;
    let mut late = BatchOutput::default();
    late.regional.late_events = 7;
    let refused = store.commit_regional(&late, &counted(end), now()).await;
    assert!(
        matches!(refused, Err(StoreError::LeadershipLost)),
        "{refused:?}"
    );
    assert_eq!(store.report().await.unwrap().late_events, late_before);

    // Released, the lead is free at once.
    store.release_regional_lead(&b).await.unwrap();
    let (again, cursor) = store
        .acquire_regional_lead("a", ms(120), ms(52))
        .await
        .unwrap()
        .expect("released");
    assert_eq!((again.epoch, cursor), (3, end));

    if let Raw::Postgres(pool) = &subject.raw {
        // An event whose transaction is still open holds back everything committed
        // after it began; once it commits, both come, its own first.
        let mut open = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO events (event_id, source, kind, occurred_at, reported_at, match, payload, \
             origin, processed_at) SELECT 'SLOW-0001', source, kind, occurred_at, reported_at, \
             match, payload, origin, processed_at FROM events ORDER BY id LIMIT 1",
        )
        .execute(&mut *open)
        .await
        .unwrap();
        let mut later = <sqlx::PgConnection as sqlx::Connection>::connect(&subject.url)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO events (event_id, source, kind, occurred_at, reported_at, match, payload, \
             origin, processed_at) SELECT 'FAST-0001', source, kind, occurred_at, reported_at, \
             match, payload, origin, processed_at FROM events ORDER BY id LIMIT 1",
        )
        .execute(&mut later)
        .await
        .unwrap();
        assert!(
            fed_ids(store, end).await.is_empty(),
            "held back by the open transaction"
        );
        open.commit().await.unwrap();
        // (Other databases' transactions on the cluster hold the horizon back too,
        // for as long as they run.)
        let ids: Vec<String> = fed_ids_until(store, end, 2)
            .await
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(ids, ["SLOW-0001", "FAST-0001"]);
    }
}

/// Claims fence a partition's position: a claim raises its epoch and gives back its
/// stored position; a batch read under an older epoch (an instance evicted from the
/// group, or whose revocation outlasted its wait) is refused whole, and the new
/// owner's position stands.
async fn contract_claims(subject: Subject) {
    let store = subject.store();
    let key = "kafka:dept.civil:0".to_string();
    let at = |position: u64, claim: i64| SourcePosition {
        source_key: key.clone(),
        position,
        claim: Some(claim),
        ..SourcePosition::default()
    };
    let first = store
        .claim_inputs(std::slice::from_ref(&key), "a", now())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].epoch, &first[0].position), (1, &None));
    store
        .commit_batch(&BatchOutput::default(), &[at(40, 1)], now())
        .await
        .unwrap();

    // The group hands the partition to b: b claims it and starts where a stopped.
    let second = store
        .claim_inputs(std::slice::from_ref(&key), "b", now())
        .await
        .unwrap();
    assert_eq!(second[0].epoch, 2);
    assert_eq!(second[0].position, Some(at(40, 2)));

    // a, evicted without a revocation, commits what it read meanwhile: refused, and
    // nothing of its batch is written.
    let mut late = BatchOutput::default();
    late.counts.records = 7;
    match store.commit_batch(&late, &[at(90, 1)], now()).await {
        Err(StoreError::Fenced { source_key }) => assert_eq!(source_key, key),
        other => panic!("a superseded claim must be refused, got {other:?}"),
    }
    assert!(
        !StoreError::Fenced {
            source_key: key.clone()
        }
        .is_transient()
    );
    assert_eq!(store.position(&key).await.unwrap().unwrap().position, 40);
    assert_eq!(store.report().await.unwrap().events_processed, 0);

    // b's own commits go through.
    store
        .commit_batch(&BatchOutput::default(), &[at(60, 2)], now())
        .await
        .unwrap();
    assert_eq!(store.position(&key).await.unwrap().unwrap().position, 60);
    // Positions without a claim (files) are not fenced.
    let file = SourcePosition {
        source_key: "file:/feeds/x.ndjson".into(),
        position: 5,
        ..SourcePosition::default()
    };
    store
        .commit_batch(&BatchOutput::default(), std::slice::from_ref(&file), now())
        .await
        .unwrap();
    assert_eq!(store.position(&file.source_key).await.unwrap(), Some(file));
}

/// Each input's event-time progress commits with the batches (its latest event time
/// never moves back; a claim makes it hold again), and the regional leader's feed
/// step gives every input's progress once it has read every committed event.
async fn contract_lanes(subject: Subject) {
    let store = subject.store();
    let lane = |name: &str, holding: bool, day: Option<u32>| yujing::batch::LaneProgress {
        lane: name.to_string(),
        holding,
        max_event_time: day.map(|d| Utc.with_ymd_and_hms(2024, 5, d, 8, 0, 0).unwrap()),
    };
    let with_lanes = |lanes: Vec<yujing::batch::LaneProgress>| BatchOutput {
        lanes,
        ..BatchOutput::default()
    };
    store
        .commit_batch(
            &with_lanes(vec![
                lane("kafka:dept.a:0", true, Some(3)),
                lane("kafka:dept.a:1", true, None),
                lane("file:/feeds/a.ndjson", false, Some(9)),
            ]),
            &[],
            now(),
        )
        .await
        .unwrap();
    store
        .commit_batch(
            &with_lanes(vec![
                lane("kafka:dept.a:0", false, Some(2)),
                lane("kafka:dept.a:1", false, Some(4)),
            ]),
            &[],
            now(),
        )
        .await
        .unwrap();
    let step = store
        .feed_step(FeedCursor::default(), 100, "kafka:")
        .await
        .unwrap();
    assert!(step.events.is_empty());
    let mut lanes = step.lanes.expect("the feed is drained: lanes come with it");
    lanes.sort_by(|a, b| a.lane.cmp(&b.lane));
    assert_eq!(
        lanes,
        [
            lane("kafka:dept.a:0", false, Some(3)),
            lane("kafka:dept.a:1", false, Some(4)),
        ],
        "kafka lanes only; the latest event time never moves back"
    );
    store
        .claim_inputs(&["kafka:dept.a:1".to_string()], "b", now())
        .await
        .unwrap();
    let lanes = store
        .feed_step(FeedCursor::default(), 100, "kafka:dept.a:1")
        .await
        .unwrap()
        .lanes
        .unwrap();
    assert_eq!(
        lanes,
        [lane("kafka:dept.a:1", true, Some(4))],
        "claimed: it holds again"
    );

    // With events waiting beyond the step, no lanes: they would run ahead of the events.
    let county = county(&subject).await;
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    assert!(batch.events.len() > 1);
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let step = store
        .feed_step(FeedCursor::default(), 1, "kafka:")
        .await
        .unwrap();
    assert_eq!(step.events.len(), 1);
    assert!(step.lanes.is_none());
}

/// `events_purge` deletes the events that occurred before its bound, in slices, and
/// nothing else; a second pass finds nothing.
async fn contract_event_retention(subject: Subject) {
    let county = county(&subject).await;
    let store = subject.store();
    let mut core = subject.core().await;
    let batch = core.process(&county.records, now());
    store.commit_batch(&batch, &[], now()).await.unwrap();
    let mut times: Vec<DateTime<Utc>> = batch.events.iter().map(|e| e.occurred_at).collect();
    times.sort_unstable();
    let bound = times[times.len() / 2];
    let older = times.iter().filter(|&&t| t < bound).count() as u64;
    assert!(older > 0);
    assert_eq!(store.events_purge(bound).await.unwrap(), older);
    let kept = store
        .load_state(None, None, now(), None)
        .await
        .unwrap()
        .seen;
    assert_eq!(kept.len(), times.len() - older as usize);
    assert!(kept.iter().all(|(_, at)| *at >= bound));
    assert_eq!(store.events_purge(bound).await.unwrap(), 0);
}
