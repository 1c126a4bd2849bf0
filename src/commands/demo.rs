//! `yujing demo`: a whole run on a fresh machine — generate a county, import it,
//! process its feeds into a fresh SQLite file, and check the result against the
//! county's answer key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::{CommandError, ImportSummary, import_regions, import_registry, run};
use crate::accounts::Creator;
use crate::app::App;
use crate::config::{Secret, Settings};
use crate::domain::account::{Account, NewAccount, Role};
use crate::domain::alert::{HouseholdAlert, Level};
use crate::domain::ids::{RegionCode, RegionLevel};
use crate::domain::signal::RegionalSignal;
use crate::generate::{AnswerKey, GenerateOptions, generate};
use crate::pipeline::RunSummary;
use crate::pipeline::sources::ndjson::Input;
use crate::store::{EvidenceItem, Report};

/// The demo's fixed key: fine for synthetic data, never for real data.
pub const DEMO_KEY: &str = "yujing-demo-key-synthetic-data-only";

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the county is written.
    pub dir: PathBuf,
    /// The SQLite file (replaced).
    pub db: PathBuf,
    /// County size and span.
    pub generate: GenerateOptions,
    /// Show progress bars.
    pub progress: bool,
}

/// What the demo found.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The county's answer key.
    pub key: AnswerKey,
    /// Imports.
    pub imports: ImportSummary,
    /// The run.
    pub run: RunSummary,
    /// Store figures after the run.
    pub report: Report,
    /// Planted households alerted at or above their level with the right action.
    pub planted_found: usize,
    /// Planted cases missed, with why.
    pub planted_missed: Vec<String>,
    /// Decoys that stayed quiet.
    pub decoys_quiet: usize,
    /// Decoys that were alerted.
    pub decoys_alerted: Vec<String>,
    /// The most severe alerts, for display.
    pub examples: Vec<(HouseholdAlert, Vec<EvidenceItem>)>,
    /// The most severe regional signal of each kind (up to four), for display.
    pub signal_examples: Vec<RegionalSignal>,
    /// One account per level (county, township, village), a department and an
    /// administrator, with their tokens.
    pub accounts: Vec<(Account, String)>,
    /// Tasks the overdue timer marked at the end of the run.
    pub overdue: usize,
}

/// Creates the demo's accounts: the county, the township and village with the most
/// open tasks, the medical-insurance department and an administrator.
async fn demo_accounts(app: &App) -> Result<Vec<(Account, String)>, CommandError> {
    let mut tasks_by_village: HashMap<RegionCode, usize> = HashMap::new();
    app.store
        .export_tasks(&mut |task| {
            if task.stage != crate::domain::task::Stage::Closed && task.household_id.is_some() {
                *tasks_by_village.entry(task.village_code).or_default() += 1;
            }
            Ok(())
        })
        .await?;
    let regions = app.store.load_households_and_regions().await?.regions;
    let county = regions
        .iter()
        .find(|r| r.level == RegionLevel::County)
        .map(|r| r.code);
    let village = tasks_by_village
        .iter()
        .max_by_key(|(code, count)| (**count, std::cmp::Reverse(**code)))
        .map(|(code, _)| *code)
        .or_else(|| {
            regions
                .iter()
                .find(|r| r.level == RegionLevel::Village)
                .map(|r| r.code)
        });
    let (Some(county), Some(village)) = (county, village) else {
        return Ok(Vec::new());
    };
    let wanted = [
        ("demo-county", Role::County, county, None),
        ("demo-township", Role::Township, village.township(), None),
        ("demo-village", Role::Village, village, None),
        (
            "demo-department",
            Role::Department,
            county,
            Some(crate::domain::event::Source::MedicalInsurance),
        ),
        ("demo-admin", Role::Admin, county, None),
    ];
    let mut created = Vec::new();
    for (name, role, region, source) in wanted {
        let request = NewAccount {
            name: name.to_string(),
            role,
            region,
            source,
        };
        created.push(
            crate::accounts::create(&app.store, &request, Creator::Operator("demo"))
                .await
                .map_err(|e| CommandError::Accounts(crate::telemetry::Chain(&e).to_string()))?,
        );
    }
    Ok(created)
}

fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(path));
    }
}

/// Runs the demo with `settings` (its store URL and key are replaced).
pub async fn demo(
    mut settings: Settings,
    options: &DemoOptions,
) -> Result<DemoOutcome, CommandError> {
    remove_database(&options.db);
    settings.store.url = Secret::new(format!("sqlite://{}", options.db.display()));
    // The demo's season is all there is: its last days are judged at its end.
    settings.input.complete = true;
    if settings.privacy.pseudonymisation_key.is_empty() {
        settings.privacy.pseudonymisation_key = Secret::new(DEMO_KEY);
    }
    let key = generate(&options.dir, &options.generate)?;
    let app = App::build(settings).await?;
    let import_options = super::ImportOptions {
        progress: options.progress,
        ..Default::default()
    };
    let mut imports =
        import_regions(&app, &options.dir.join("regions.csv"), &import_options).await?;
    let registry = import_registry(
        &app,
        &options.dir.join("households.csv"),
        &options.dir.join("members.csv"),
        &import_options,
    )
    .await?;
    imports.imported.extend(registry.imported);
    imports.errors.extend(registry.errors);
    let inputs = key
        .feeds
        .iter()
        .map(|feed| Input::File(options.dir.join(feed)))
        .collect();
    let run_summary = run(&app, inputs, CancellationToken::new(), options.progress).await?;
    let report = app.store.report().await?;

    let mut alerts: HashMap<String, HouseholdAlert> = HashMap::new();
    app.store
        .export_alerts(&mut |alert| {
            alerts.insert(alert.household_id.as_str().to_string(), alert);
            Ok(())
        })
        .await?;
    let mut planted_found = 0;
    let mut planted_missed = Vec::new();
    for case in &key.must_alert {
        match alerts.get(&case.household_id) {
            Some(alert) if alert.level >= case.min_level && alert.action == case.action => {
                planted_found += 1
            }
            Some(alert) => planted_missed.push(format!(
                "{} ({}): alerted {} / {}, expected at least {} / {}",
                case.household_id,
                case.case,
                alert.level,
                alert.action,
                case.min_level,
                case.action
            )),
            None => planted_missed.push(format!(
                "{} ({}): not alerted",
                case.household_id, case.case
            )),
        }
    }
    let decoys_alerted: Vec<String> = key
        .must_not_alert
        .iter()
        .filter(|case| alerts.contains_key(&case.household_id))
        .map(|case| format!("{} ({})", case.household_id, case.case))
        .collect();
    let mut severe: Vec<HouseholdAlert> = alerts
        .into_values()
        .filter(|a| a.level >= Level::Orange)
        .collect();
    severe.sort_by(|a, b| {
        (b.level, b.rules.len(), &a.household_id).cmp(&(a.level, a.rules.len(), &b.household_id))
    });
    let mut examples = Vec::new();
    for alert in severe.into_iter().take(3) {
        let ids: Vec<String> = alert
            .evidence
            .iter()
            .map(|e| e.as_str().to_string())
            .collect();
        let evidence = app.store.evidence(&ids).await?;
        examples.push((alert, evidence));
    }
    let mut signals = Vec::new();
    app.store
        .export_signals(&mut |signal| {
            signals.push(signal);
            Ok(())
        })
        .await?;
    signals.sort_by(|a, b| {
        (b.severity, b.households_affected, &a.signal_id).cmp(&(
            a.severity,
            a.households_affected,
            &b.signal_id,
        ))
    });
    // The most severe of each kind, so the examples show the different risks.
    let mut kinds = std::collections::HashSet::new();
    signals.retain(|s| kinds.insert(s.risk_kind));
    signals.truncate(4);
    let accounts = demo_accounts(&app).await?;
    let timer = crate::overdue::OverdueTimer::new(
        app.store.clone(),
        app.metrics.clone(),
        std::time::Duration::from_secs(1),
    );
    let overdue = timer.sweep().await?;
    app.store.close().await;
    Ok(DemoOutcome {
        decoys_quiet: key.must_not_alert.len() - decoys_alerted.len(),
        key,
        imports,
        run: run_summary,
        report,
        planted_found,
        planted_missed,
        decoys_alerted,
        examples,
        signal_examples: signals,
        accounts,
        overdue,
    })
}
