//! The `yujing` binary: parses the command line, loads the layered settings, starts
//! telemetry, and hands over to `yujing::commands`. Errors are printed once, here,
//! with their causes, each said once ([`yujing::telemetry::Chain`]).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use yujing::app::App;
use yujing::commands::{self, ExportKind, demo};
use yujing::config::{Secret, Settings, Sources};
use yujing::generate::GenerateOptions;
use yujing::pipeline::sources::ndjson::Input;

/// mimalloc: the core and the writers allocate small, short-lived values per
/// record; it spends markedly less time in allocation than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// yujing (预警): risk alerts for "prevent return to poverty" monitoring.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (layered over the compiled-in defaults, under YUJING__* variables).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Store URL: sqlite://PATH or postgres://... (default from config: sqlite://yujing.db).
    #[arg(long, global = true, value_name = "URL", env = "YUJING_STORE")]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Process department feeds into alerts and tasks: NDJSON files (or - for
    /// stdin), or the Kafka topics of the config (kafka.brokers).
    Run {
        /// Inputs; default: input.paths from the config, else Kafka.
        inputs: Vec<String>,
        /// Consume the configured Kafka topics (the default when no file is given
        /// and kafka.brokers is set).
        #[arg(long, conflicts_with = "inputs")]
        kafka: bool,
        /// The files are the whole input (input.complete): at their end, judge every
        /// day up to the latest event's instead of leaving the days within
        /// detect.allowed_lateness_days open for the next run's files.
        #[arg(long, conflicts_with = "kafka")]
        complete: bool,
    },
    /// Publish NDJSON feed files to Kafka, each line to its department's topic,
    /// keyed by household.
    Produce {
        /// One topic for every line (default: by kind, from kafka.input_topics).
        #[arg(long)]
        topic: Option<String>,
        /// NDJSON files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The household registry.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Past daily counts for the regional detectors.
    History {
        #[command(subcommand)]
        command: HistoryCommand,
    },
    /// The region hierarchy.
    Regions {
        #[command(subcommand)]
        command: RegionsCommand,
    },
    /// Check feed files line by line without storing anything (exit 1 if any line is bad).
    Validate {
        /// NDJSON files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a synthetic county: regions, registry, feeds, and an answer key.
    Generate(GenerateArgs),
    /// Serve the dashboard (/), the API (/api), /metrics, /healthz and /readyz over an
    /// existing store.
    Serve {
        /// Address to listen on (default: api.listen, else 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Accounts of the API (county, township, village, department, admin).
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// The audit log (who changed what, when).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the API's OpenAPI 3.1 document.
    Openapi,
    /// Generate a county, import it, process it, and summarise (no set-up needed).
    Demo {
        /// Leave the dashboard and the API running on 127.0.0.1:8080 afterwards (until
        /// Ctrl-C).
        #[arg(long)]
        serve: bool,
        /// SQLite file to create (replaced if present).
        #[arg(long, default_value = "yujing-demo.db")]
        db: PathBuf,
        /// Folder for the generated county.
        #[arg(long, default_value = "yujing-demo")]
        dir: PathBuf,
        #[command(flatten)]
        size: SizeArgs,
    },
    /// Figures of the store: events, dead letters, alerts, tasks.
    Report {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// The standing sweeps and the data-quality (三一致) checks over the registry as
    /// stored: counts by rule and by village, and every finding (nothing is stored).
    DataQuality {
        /// The day to judge (YYYY-MM-DD; default: today in China Standard Time).
        #[arg(long)]
        today: Option<chrono::NaiveDate>,
        /// The findings as NDJSON on stdout, one per line (the counts on stderr).
        #[arg(long)]
        json: bool,
        /// Record the consistency findings in the store: new ones open (since the
        /// day judged), those no longer found are resolved.
        #[arg(long)]
        record: bool,
    },
    /// Write alerts, tasks, dead letters or regional signals as NDJSON on stdout.
    Export {
        /// What to export.
        what: ExportWhat,
    },
    /// Run the regional detectors over a CSV of daily counts (date,region,kind,count)
    /// and write their judgements as CSV on stdout
    /// (date,region,kind,method,observed,expected,upper_bound,alarm).
    Detect {
        /// The counts.
        #[arg(long, value_name = "FILE.csv")]
        counts: PathBuf,
    },
    /// Simulate count series with injected outbreaks of known size and report, per
    /// detector and level of the hierarchy: probability of detection, false alarms per
    /// region-year, median days to detection (a Markdown table on stdout).
    Evaluate {
        /// Seed.
        #[arg(long, default_value_t = 2024)]
        seed: u64,
        /// Simulated regions per level of the hierarchy.
        #[arg(long, default_value_t = 60)]
        regions_per_level: usize,
        /// Years of history before monitoring starts (Farrington Flexible needs
        /// 52 × detect.farrington.years_back + half_window + 1 weeks).
        #[arg(long, default_value_t = 6)]
        history_years: u32,
        /// Years monitored.
        #[arg(long, default_value_t = 2)]
        monitored_years: u32,
        /// Outbreaks per region per monitored year.
        #[arg(long, default_value_t = 3)]
        outbreaks_per_region_year: u32,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Import (or update) households and members from CSV (English or Chinese
    /// column headers).
    Import {
        /// households.csv
        #[arg(long)]
        households: PathBuf,
        /// members.csv
        #[arg(long)]
        members: PathBuf,
        /// The files' encoding: auto (UTF-8 if the file starts as UTF-8, else GB18030),
        /// utf-8, or gb18030 (also GBK and GB2312).
        #[arg(long, value_enum, default_value = "auto")]
        encoding: EncodingArg,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Create an account and print its token (shown once, stored only as a hash).
    Add {
        /// Unique name (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        /// county, township, village, department or admin.
        #[arg(long)]
        role: String,
        /// The region whose subtree it sees (a county, township or village code).
        #[arg(long)]
        region: String,
        /// For a department account: its feed (e.g. medical_insurance).
        #[arg(long)]
        source: Option<String>,
    },
    /// List every account (never tokens).
    List,
    /// Revoke an account (its token answers 401 from then on).
    Revoke {
        /// Account id or name.
        account: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write every audit row, oldest first, on stdout.
    Export {
        /// ndjson or csv.
        #[arg(long, default_value = "ndjson")]
        format: String,
    },
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// Load past daily counts from CSV (date,region,kind,count) into the store, so weekly
    /// models have their years of history from the first week (a row replaces the
    /// stored count of its date, region and kind; read at the next run).
    Import {
        /// history.csv
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum RegionsCommand {
    /// Import (or update) regions from CSV (code,name,level,parent,longitude,latitude).
    Import {
        /// regions.csv
        file: PathBuf,
        /// The file's encoding: auto (UTF-8 if the file starts as UTF-8, else GB18030),
        /// utf-8, or gb18030 (also GBK and GB2312).
        #[arg(long, value_enum, default_value = "auto")]
        encoding: EncodingArg,
    },
}

#[derive(Args)]
struct SizeArgs {
    /// Households.
    #[arg(long, default_value_t = 5000)]
    households: usize,
    /// Days of feeds.
    #[arg(long, default_value_t = 120)]
    days: u32,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First day of the feeds (YYYY-MM-DD) [`generate`: 2024-03-01; `demo`: so that
    /// the season ends four days before today, its last reports in the past]
    #[arg(long)]
    start: Option<chrono::NaiveDate>,
}

impl SizeArgs {
    /// The options, the feeds starting on `--start` or else on `default_start`.
    fn options(&self, default_start: chrono::NaiveDate) -> GenerateOptions {
        GenerateOptions {
            households: self.households,
            days: self.days,
            seed: self.seed,
            start: self.start.unwrap_or(default_start),
            ..GenerateOptions::default()
        }
    }
}

/// The demo's season ends four days before today (China Standard Time), so that its
/// reports (at most a few days after the events) lie in the past and its tasks' due
/// dates, counted from the reports, fall around today.
fn demo_start(days: u32) -> chrono::NaiveDate {
    let today = yujing::domain::task::cst_day(chrono::Utc::now());
    today - chrono::Duration::days(i64::from(days) + 4)
}

#[derive(Args)]
struct GenerateArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    size: SizeArgs,
    /// Medical settlements per person per year.
    #[arg(long, default_value_t = 4.0)]
    medical_rate: f64,
    /// Years of daily count history before the start to write to history.csv
    /// (for `yujing history import`).
    #[arg(long, default_value_t = 0)]
    history_years: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum EncodingArg {
    Auto,
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    #[value(alias = "gbk")]
    Gb18030,
}

impl EncodingArg {
    fn options(self, progress: bool) -> commands::ImportOptions {
        use yujing::registry::Encoding;
        commands::ImportOptions {
            progress,
            encoding: match self {
                EncodingArg::Auto => Encoding::Auto,
                EncodingArg::Utf8 => Encoding::Utf8,
                EncodingArg::Gb18030 => Encoding::Gb18030,
            },
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportWhat {
    Alerts,
    Tasks,
    DeadLetters,
    Signals,
}

fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(&Sources::from_process(cli.config.as_deref()))?;
    if let Some(url) = &cli.store {
        settings.store.url = Secret::new(url.clone());
    }
    Ok(settings)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        // The reader of our output went away (`yujing export alerts | head -1`): it
        // has what it wanted; end quietly, as other command-line tools do.
        Err(error) if closed_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", yujing::telemetry::Chain(&*error));
            ExitCode::FAILURE
        }
    };
    // Results and positions are committed by now; a client stuck on a broker that
    // is gone (a consumer closing, a delivery report) must not keep the process up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    code
}

/// Whether `error` comes from writing to a pipe whose reader has closed it.
fn closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Cancels on Ctrl-C or SIGTERM: sources stop, the batch in flight commits.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => signal,
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                        trigger.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing the batch in flight");
        trigger.cancel();
    });
    token
}

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut settings = load_settings(&cli)?;
    yujing::telemetry::init(&settings.telemetry);
    let progress = std::io::stderr().is_terminal();
    match cli.command {
        Command::Run {
            inputs,
            kafka,
            complete,
        } => {
            if complete {
                settings.input.complete = true;
            }
            let complete_input = settings.input.complete;
            let inputs: Vec<Input> = if inputs.is_empty() {
                settings
                    .input
                    .paths
                    .iter()
                    .map(|p| Input::parse(p))
                    .collect()
            } else {
                inputs.iter().map(|p| Input::parse(p)).collect()
            };
            let use_kafka = kafka || (inputs.is_empty() && settings.kafka.enabled());
            if use_kafka && !settings.kafka.enabled() {
                anyhow::bail!("--kafka needs kafka.brokers (YUJING__KAFKA__BROKERS)");
            }
            if !use_kafka && inputs.is_empty() {
                anyhow::bail!(
                    "no inputs: give files (or - for stdin), set input.paths, or set kafka.brokers"
                );
            }
            let listen = settings.api.listen.clone();
            let app = App::build(settings).await?;
            let shutdown = shutdown_token();
            let api = if listen.is_empty() {
                None
            } else {
                Some(commands::serve::start(&app, &listen).await?)
            };
            if let Some(api) = &api {
                api.readiness.pipeline_started();
            }
            let summary = if use_kafka {
                commands::run_kafka(&app, shutdown.clone()).await
            } else {
                commands::run(&app, inputs, shutdown.clone(), progress).await
            };
            if let Some(api) = api {
                api.readiness.pipeline_stopped();
                api.stop().await;
            }
            let summary = summary?;
            app.store.close().await;
            let c = summary.counts;
            eprintln!(
                "processed {} records in {:.1}s ({:.0}/s; core {:.1}s; peak memory {} MiB): {} accepted, {} duplicates, {} dead letters, {} unmatched; {} alert changes, {} task changes",
                c.records,
                summary.elapsed.as_secs_f64(),
                summary.records_per_second(),
                summary.core_time.as_secs_f64(),
                yujing::telemetry::peak_memory_bytes().unwrap_or(0) / (1024 * 1024),
                c.accepted,
                c.duplicates,
                c.dead_letters,
                c.unmatched,
                summary.alert_changes,
                summary.task_changes
            );
            if !use_kafka && !complete_input && c.accepted > 0 {
                eprintln!(
                    "regional days within detect.allowed_lateness_days of the latest event stay open for the next run's files; give --complete if this input is all there is"
                );
            }
        }
        Command::Produce { topic, files } => {
            if !settings.kafka.enabled() {
                anyhow::bail!("produce needs kafka.brokers (YUJING__KAFKA__BROKERS)");
            }
            // The store's registry, when there is one, keys persons by household
            // (an SQLite file is not created just for that).
            let url = settings.store.url.expose();
            let missing_file = url
                .strip_prefix("sqlite://")
                .is_some_and(|path| !std::path::Path::new(path).exists());
            let store = if missing_file {
                None
            } else {
                yujing::store::Store::connect(url, &settings.store)
                    .await
                    .ok()
            };
            let options = commands::produce::ProduceOptions {
                topic,
                files,
                progress,
            };
            let summary = commands::produce::produce(&settings, store.as_ref(), &options).await?;
            for (topic, count) in &summary.delivered {
                println!("{topic}: {count} messages");
            }
            if summary.unroutable > 0 {
                println!(
                    "{} lines had no topic (give --topic to send them anyway)",
                    summary.unroutable
                );
            }
            if summary.failed > 0 {
                anyhow::bail!("{} messages were not delivered", summary.failed);
            }
        }
        Command::Registry {
            command:
                RegistryCommand::Import {
                    households,
                    members,
                    encoding,
                },
        } => {
            let app = App::build(settings).await?;
            let options = encoding.options(progress);
            let summary = commands::import_registry(&app, &households, &members, &options).await?;
            app.store.close().await;
            return Ok(print_import(&summary));
        }
        Command::Regions {
            command: RegionsCommand::Import { file, encoding },
        } => {
            let app = App::build(settings).await?;
            let summary =
                commands::import_regions(&app, &file, &encoding.options(progress)).await?;
            app.store.close().await;
            return Ok(print_import(&summary));
        }
        Command::History {
            command: HistoryCommand::Import { file },
        } => {
            let app = App::build(settings).await?;
            let summary = commands::history::import_history(&app.store, &file).await;
            app.store.close().await;
            let summary = summary?;
            eprintln!(
                "{} count rows of {} series imported ({} to {})",
                summary.rows,
                summary.series,
                summary.first_day.map_or("-".to_string(), |d| d.to_string()),
                summary.last_day.map_or("-".to_string(), |d| d.to_string()),
            );
        }
        Command::Validate { files, json } => {
            let report = commands::validate(&settings, &files)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for bad in &report.bad {
                    println!(
                        "{}:{}: {} {}{}: {}",
                        bad.path,
                        bad.line,
                        bad.stage,
                        bad.rule,
                        bad.field
                            .as_deref()
                            .map(|f| format!(" at {f}"))
                            .unwrap_or_default(),
                        bad.reason
                    );
                }
                println!(
                    "{} lines: {} valid, {} bad",
                    report.lines,
                    report.valid,
                    report.bad.len()
                );
            }
            if !report.bad.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Generate(args) => {
            let options = GenerateOptions {
                medical_rate: args.medical_rate,
                history_years: args.history_years,
                ..args.size.options(GenerateOptions::default().start)
            };
            let key = yujing::generate::generate(&args.out, &options)
                .with_context(|| format!("generating into {}", args.out.display()))?;
            println!(
                "wrote {} households, {} persons, {} feed lines ({} bad, {} duplicates, {} unmatched) and expected.json ({} must alert, {} must not) to {}",
                key.households,
                key.persons,
                key.lines,
                key.bad_lines,
                key.duplicates,
                key.unmatched,
                key.must_alert.len(),
                key.must_not_alert.len(),
                args.out.display()
            );
        }
        Command::Serve { listen } => {
            commands::serve::require_existing_store(settings.store.url.expose())?;
            let listen = listen.unwrap_or_else(|| {
                if settings.api.listen.is_empty() {
                    "127.0.0.1:8080".to_string()
                } else {
                    settings.api.listen.clone()
                }
            });
            let app = App::build(settings).await?;
            if !app.settings.privacy.pseudonymisation_key.is_empty() {
                // The API decides on the registry's households: a key of another store
                // means the operator is pointed at the wrong store or the wrong key.
                app.pseudonymiser().await?;
            }
            let shutdown = shutdown_token();
            let api = commands::serve::start(&app, &listen).await?;
            eprintln!(
                "serving the dashboard on http://{}/ and the API on http://{}/api (Ctrl-C stops)",
                api.address, api.address
            );
            api.until(shutdown).await;
            app.store.close().await;
        }
        Command::Accounts { command } => {
            commands::serve::require_existing_store(settings.store.url.expose())?;
            let app = App::build(settings).await?;
            let result = accounts_command(&app, command).await;
            app.store.close().await;
            result?;
        }
        Command::Audit {
            command: AuditCommand::Export { format },
        } => {
            let format = match format.as_str() {
                "ndjson" => commands::accounts::AuditFormat::Ndjson,
                "csv" => commands::accounts::AuditFormat::Csv,
                other => anyhow::bail!("--format {other}: use ndjson or csv"),
            };
            commands::serve::require_existing_store(settings.store.url.expose())?;
            let app = App::build(settings).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout());
            let rows = commands::accounts::export_audit(&app, format, &mut out).await;
            app.store.close().await;
            eprintln!("{} audit rows", rows?);
        }
        Command::Openapi => {
            print!("{}", yujing::api::openapi_json());
        }
        Command::Demo {
            serve,
            db,
            dir,
            size,
        } => {
            let options = demo::DemoOptions {
                dir,
                db,
                generate: size.options(demo_start(size.days)),
                progress,
            };
            let outcome = demo::demo(settings.clone(), &options).await?;
            print_demo(&options, &outcome);
            if serve {
                let mut settings = settings;
                settings.store.url = Secret::new(format!("sqlite://{}", options.db.display()));
                if settings.privacy.pseudonymisation_key.is_empty() {
                    settings.privacy.pseudonymisation_key = Secret::new(demo::DEMO_KEY);
                }
                let app = App::build(settings).await?;
                let shutdown = shutdown_token();
                let api = commands::serve::start(&app, "127.0.0.1:8080").await?;
                println!(
                    "\nthe dashboard is on http://{}/ (sign in with a token above: demo-county, \
                     demo-township or demo-village); the API on http://{}/api \
                     (OpenAPI: http://{}/api/openapi.json); Ctrl-C stops",
                    api.address, api.address, api.address
                );
                api.until(shutdown).await;
                app.store.close().await;
            }
            if !outcome.planted_missed.is_empty() || !outcome.decoys_alerted.is_empty() {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Detect { counts } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let summary = commands::detect::detect(&settings.detect, &counts, &mut out)?;
            std::io::Write::flush(&mut out)?;
            let alarms: Vec<String> = summary
                .alarms
                .iter()
                .map(|(method, count)| format!("{method} {count}"))
                .collect();
            eprintln!(
                "{} series, {} rows; alarms: {}",
                summary.series,
                summary.rows,
                if alarms.is_empty() {
                    "none".to_string()
                } else {
                    alarms.join(", ")
                }
            );
        }
        Command::Evaluate {
            seed,
            regions_per_level,
            history_years,
            monitored_years,
            outbreaks_per_region_year,
        } => {
            let options = commands::evaluate::EvaluateOptions {
                seed,
                regions_per_level,
                history_years,
                monitored_years,
                outbreaks_per_region_year,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            commands::evaluate::evaluate(&settings.detect, &options, &mut out)?;
            std::io::Write::flush(&mut out)?;
        }
        Command::Report { json } => {
            commands::serve::require_existing_store(settings.store.url.expose())?;
            let app = App::build(settings).await?;
            let report = commands::report(&app).await?;
            app.store.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
        }
        Command::DataQuality {
            today,
            json,
            record,
        } => {
            commands::serve::require_existing_store(settings.store.url.expose())?;
            let today = today.unwrap_or_else(|| yujing::domain::task::cst_day(chrono::Utc::now()));
            let app = App::build(settings).await?;
            let report = commands::data_quality::data_quality(&app, today).await;
            let recorded = match &report {
                Ok(report) if record => Some(commands::data_quality::record(&app, report).await),
                _ => None,
            };
            app.store.close().await;
            let report = report?;
            if let Some(recorded) = recorded {
                let recorded = recorded?;
                eprintln!(
                    "recorded on {}: {} opened, {} still open, {} resolved",
                    report.today, recorded.opened, recorded.kept, recorded.resolved
                );
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            if json {
                commands::data_quality::write_ndjson(&report, &mut out)?;
                let parts: Vec<String> =
                    report
                        .by_rule
                        .iter()
                        .filter(|line| line.households > 0)
                        .map(|line| format!("{} {}", line.rule, line.households))
                        .chain((!report.unmatched.is_empty()).then(|| {
                            format!("quality.unmatched_persons {}", report.unmatched.len())
                        }))
                        .chain(
                            Some(report.late_departments().count())
                                .filter(|n| *n > 0)
                                .map(|n| format!("quality.late_reporting {n}")),
                        )
                        .collect();
                eprintln!(
                    "{} findings over {} households on {}: {}",
                    report.findings.len(),
                    report.households,
                    report.today,
                    if parts.is_empty() {
                        "none".to_string()
                    } else {
                        parts.join(", ")
                    }
                );
            } else {
                commands::data_quality::write_text(&report, &mut out)?;
            }
        }
        Command::Export { what } => {
            commands::serve::require_existing_store(settings.store.url.expose())?;
            let app = App::build(settings).await?;
            let kind = match what {
                ExportWhat::Alerts => ExportKind::Alerts,
                ExportWhat::Tasks => ExportKind::Tasks,
                ExportWhat::DeadLetters => ExportKind::DeadLetters,
                ExportWhat::Signals => ExportKind::Signals,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout());
            commands::export(&app, kind, &mut out).await?;
            app.store.close().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn accounts_command(app: &App, command: AccountsCommand) -> anyhow::Result<()> {
    match command {
        AccountsCommand::Add {
            name,
            role,
            region,
            source,
        } => {
            let role = yujing::domain::account::Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("--role {role}: use county, township, village, department or admin")
            })?;
            let region = yujing::domain::ids::RegionCode::parse(&region)
                .map_err(|_| anyhow::anyhow!("--region {region}: a 12-digit region code"))?;
            let source = source
                .map(|s| {
                    yujing::domain::event::Source::parse(&s)
                        .ok_or_else(|| anyhow::anyhow!("--source {s}: not a department feed"))
                })
                .transpose()?;
            let request = yujing::domain::account::NewAccount {
                name,
                role,
                region,
                source,
            };
            let (account, token) = commands::accounts::add(app, &request).await?;
            eprintln!(
                "created {} ({} {}, id {}); its token, shown only now:",
                account.name, account.role, account.region, account.account_id
            );
            println!("{token}");
        }
        AccountsCommand::List => {
            for account in commands::accounts::list(app).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    account.account_id,
                    account.name,
                    account.role,
                    account.region,
                    account.source.map(|s| s.as_str()).unwrap_or("-"),
                    match account.revoked_at {
                        Some(at) => format!("revoked {}", at.to_rfc3339()),
                        None => "active".to_string(),
                    }
                );
            }
        }
        AccountsCommand::Revoke { account } => {
            if commands::accounts::revoke(app, &account).await? {
                println!("revoked {account}");
            } else {
                println!("{account} was already revoked");
            }
        }
    }
    Ok(())
}

/// Prints what an import did; exit 1 when rows were skipped (the others stay
/// imported), so that a script notices.
fn print_import(summary: &commands::ImportSummary) -> ExitCode {
    for (file, rows) in &summary.imported {
        println!("{file}: {rows} rows imported");
    }
    for note in &summary.notes {
        eprintln!("note: {note}");
    }
    for (file, error) in &summary.errors {
        eprintln!("{file}:{}: {}", error.line, error.message);
    }
    if summary.errors.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "error: {} bad rows skipped (the other rows are imported): fix them and import the file again",
        summary.errors.len()
    );
    ExitCode::from(1)
}

fn print_report(report: &yujing::store::Report) {
    println!("events processed   {}", report.events_processed);
    println!("  accepted         {}", report.events_accepted);
    println!("  duplicates       {}", report.duplicates);
    println!("  dead letters     {}", report.dead_letters);
    println!("  unmatched        {}", report.unmatched);
    println!(
        "registry           {} households, {} members",
        report.households, report.members
    );
    let line = |title: &str, map: &std::collections::BTreeMap<String, u64>| {
        let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "{title:<19}{}",
            if parts.is_empty() {
                "-".to_string()
            } else {
                parts.join(", ")
            }
        );
    };
    line("alerts by level", &report.alerts_by_level);
    line("alerts by action", &report.alerts_by_action);
    line("alerts by status", &report.alerts_by_status);
    line("tasks by stage", &report.tasks_by_stage);
    line("active signals", &report.signals_by_severity);
    line("signals by kind", &report.signals_by_kind);
    line("dead letters", &report.dead_letters_by_rule);
    print_yield(&report.rule_yield);
}

/// The rules' yield as a table: one row per rule and one for every alert once.
fn print_yield(report: &yujing::domain::rule_yield::RuleYieldReport) {
    use yujing::domain::rule_yield::YieldFigures;
    println!("rule yield (alerts → tasks → outcomes of the closed tasks)");
    println!(
        "  {:<34}{:>7}{:>6}{:>8}{:>6}{:>7}{:>7}{:>8}{:>8}{:>8}{:>8}{:>9}",
        "rule",
        "alerts",
        "open",
        "expired",
        "tasks",
        "closed",
        "ident.",
        "rolled",
        "not el.",
        "no risk",
        "adjust.",
        "ident. %"
    );
    let row = |name: &str, f: &YieldFigures| {
        let share = f
            .identified_share
            .map_or("-".to_string(), |share| format!("{:.1}", share * 100.0));
        println!(
            "  {name:<34}{:>7}{:>6}{:>8}{:>6}{:>7}{:>7}{:>8}{:>8}{:>8}{:>8}{share:>9}",
            f.alerts,
            f.open,
            f.expired,
            f.tasks,
            f.tasks_closed,
            f.identified,
            f.rolled_back,
            f.not_eligible,
            f.no_risk,
            f.assistance_adjusted,
        );
    };
    for rule in &report.rules {
        row(&rule.rule_id, &rule.figures);
    }
    row("all alerts (each once)", &report.all);
}

fn print_demo(options: &demo::DemoOptions, outcome: &demo::DemoOutcome) {
    let key = &outcome.key;
    println!("yujing demo — a synthetic county, processed end to end\n");
    println!(
        "county     {} households, {} persons, {} days of feeds from {} ({} lines) in {}",
        key.households,
        key.persons,
        key.days,
        key.start,
        key.lines,
        options.dir.display()
    );
    print_report(&outcome.report);
    let run = &outcome.run;
    println!(
        "run        {} records in {:.2}s: {:.0} records/s end to end (file -> SQLite); core alone {:.0} records/s",
        run.counts.records,
        run.elapsed.as_secs_f64(),
        run.records_per_second(),
        run.counts.records as f64 / run.core_time.as_secs_f64().max(1e-9)
    );
    println!(
        "answer key {} of {} planted households alerted at or above their level with the right action; {} of {} decoys quiet",
        outcome.planted_found,
        key.must_alert.len(),
        outcome.decoys_quiet,
        key.must_not_alert.len()
    );
    for missed in &outcome.planted_missed {
        println!("  MISSED   {missed}");
    }
    for alerted in &outcome.decoys_alerted {
        println!("  DECOY ALERTED {alerted}");
    }
    println!("\nexample alerts:");
    for (alert, evidence) in &outcome.examples {
        println!(
            "  {} household {} (village {}) — {} {} → {}{}",
            alert.level.zh(),
            alert.household_id,
            alert.region_code,
            alert.level,
            alert
                .risk_types
                .iter()
                .map(|r| r.zh())
                .collect::<Vec<_>>()
                .join("、"),
            alert.action,
            alert
                .proposed_monitoring_type
                .map(|m| format!(" as {m}"))
                .unwrap_or_default()
        );
        for rule in &alert.rules {
            println!("      {} [{}]: {}", rule.rule_id, rule.level, rule.reason);
        }
        for item in evidence {
            println!(
                "      evidence {} {}{}",
                item.event_id,
                item.kind,
                item.person_masked
                    .as_deref()
                    .map(|p| format!(" person {p}"))
                    .unwrap_or_default()
            );
        }
    }
    if !outcome.signal_examples.is_empty() {
        println!("\nexample regional signals:");
    }
    for signal in &outcome.signal_examples {
        println!(
            "  {} {} {} {} ({}), {} to {}, {} households{} — {}",
            signal.severity.zh(),
            signal.risk_kind,
            signal.region_level.as_str(),
            signal.region_code,
            signal.status,
            signal.onset_day,
            signal.evidence_until,
            signal.households_affected,
            if signal.campaign {
                ", screening campaign opened"
            } else {
                ""
            },
            signal.reason
        );
    }
    if outcome.overdue > 0 {
        println!(
            "\n{} tasks are past their budget (15 days from the warning): the synthetic feeds lie in the past",
            outcome.overdue
        );
    }
    if !outcome.accounts.is_empty() {
        println!("\naccounts (tokens shown only now; Authorization: Bearer <token>):");
        for (account, token) in &outcome.accounts {
            println!(
                "  {:<16} {:<10} {}  {token}",
                account.name,
                account.role.as_str(),
                account.region
            );
        }
    }
    println!(
        "\nstore: {} — try `yujing --store sqlite://{} report`, `... export alerts`, or `... serve`",
        options.db.display(),
        options.db.display()
    );
}
