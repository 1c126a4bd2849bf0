//! A live feed for the latency benchmark and the soak: a generated county's feed
//! records published at a steady rate, as departments would send them, in the order
//! they were reported. Each line goes to `PREFIX.SOURCE` (its department's topic),
//! keyed by household as `yujing produce` keys it (a person by the registry
//! household of `members.csv`, never by the clear ID). The time each record was
//! handed to the producer is written beside it, so that the store's commit times
//! can be set against it.
//!
//! `cargo run --release --example feed -- --brokers B --prefix P --rate 1000 \
//!     --seconds 60 --members county/members.csv --out target/bench/run county/feeds/*.ndjson`
//!
//! Writes `OUT.times.csv` (`event_id,source,produced_us`: microseconds since the Unix
//! epoch, the wall clock that PostgreSQL's commit timestamps use) and `OUT.ndjson`
//! (the lines as produced, in order: the input of an embedded run to compare with);
//! prints a JSON summary on stdout.

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

#[derive(Parser)]
struct Args {
    /// bootstrap.servers
    #[arg(long)]
    brokers: String,
    /// Topic prefix: a record of department S goes to PREFIX.S.
    #[arg(long)]
    prefix: String,
    /// Records per second.
    #[arg(long)]
    rate: f64,
    /// How long to produce (the feed may end sooner).
    #[arg(long)]
    seconds: f64,
    /// The county's members.csv (person_id,household_id,...), for the message keys.
    #[arg(long)]
    members: PathBuf,
    /// Output path prefix: OUT.times.csv and OUT.ndjson.
    #[arg(long)]
    out: PathBuf,
    /// producer linger.ms
    #[arg(long, default_value = "5")]
    linger_ms: u32,
    /// Feed files (NDJSON), merged by reported_at.
    files: Vec<PathBuf>,
}

/// Counts deliveries and failures from librdkafka's delivery callbacks.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
}

#[derive(Clone, Default)]
struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, _)) => {
                eprintln!("delivery failed: {error}");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// One feed line with what routing needs.
struct Line {
    reported_ms: i64,
    source: String,
    event_id: Option<String>,
    key: Option<String>,
    bytes: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct Routing {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    reported_at: Option<String>,
    #[serde(default)]
    person_id: Option<String>,
    #[serde(default)]
    household_id: Option<String>,
    #[serde(default)]
    region_code: Option<String>,
}

/// Clear resident ID -> household, from members.csv (kept in memory only).
fn households(path: &PathBuf) -> anyhow::Result<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("{}", path.display()))?;
    let headers = reader.headers()?.clone();
    let person = headers
        .iter()
        .position(|h| h == "person_id")
        .context("members.csv: no person_id column")?;
    let household = headers
        .iter()
        .position(|h| h == "household_id")
        .context("members.csv: no household_id column")?;
    let mut map = HashMap::new();
    for row in reader.records() {
        let row = row?;
        if let (Some(p), Some(h)) = (row.get(person), row.get(household)) {
            map.insert(p.to_string(), h.to_string());
        }
    }
    Ok(map)
}

/// Every line of the files, by reported time (a line that cannot be read keeps its
/// file's department and the time of the line before it: it is sent too, and becomes
/// the same dead letter as in an embedded run).
fn lines(files: &[PathBuf], households: &HashMap<String, String>) -> anyhow::Result<Vec<Line>> {
    let mut all = Vec::new();
    for path in files {
        let department = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("feed file without a name")?
            .to_string();
        let reader = std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("{}", path.display()))?,
        );
        let mut last_ms = i64::MIN;
        for line in reader.split(b'\n') {
            let mut bytes = line?;
            while bytes.last().is_some_and(|b| *b == b'\r') {
                bytes.pop();
            }
            if bytes.is_empty() {
                continue;
            }
            let routing: Option<Routing> = serde_json::from_slice(&bytes).ok();
            let reported = routing
                .as_ref()
                .and_then(|r| r.reported_at.as_deref())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis());
            let reported_ms = reported.unwrap_or(last_ms);
            last_ms = reported_ms;
            let (event_id, source, key) = match routing {
                Some(r) => {
                    let key = r
                        .household_id
                        .or(r.region_code)
                        .or_else(|| r.person_id.and_then(|p| households.get(&p).cloned()));
                    (
                        r.event_id,
                        r.source.unwrap_or_else(|| department.clone()),
                        key,
                    )
                }
                None => (None, department.clone(), None),
            };
            all.push(Line {
                reported_ms,
                source,
                event_id,
                key,
                bytes,
            });
        }
    }
    all.sort_by_key(|l| l.reported_ms);
    Ok(all)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    let households = households(&args.members)?;
    let feed = lines(&args.files, &households)?;
    drop(households);
    let wanted = ((args.rate * args.seconds).ceil() as usize).min(feed.len());
    let context = Counting::default();
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", args.linger_ms.to_string())
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(context.clone())?;
    let out = |ext: &str| {
        let mut path = args.out.clone().into_os_string();
        path.push(ext);
        PathBuf::from(path)
    };
    let mut times = BufWriter::new(std::fs::File::create(out(".times.csv"))?);
    let mut copy = BufWriter::new(std::fs::File::create(out(".ndjson"))?);
    let started = Instant::now();
    let began_us = now_us();
    // How far behind its schedule a record was handed over, at worst.
    let mut behind_max = Duration::ZERO;
    for (n, line) in feed.iter().take(wanted).enumerate() {
        let due = Duration::from_secs_f64(n as f64 / args.rate);
        let elapsed = started.elapsed();
        if elapsed < due {
            std::thread::sleep(due - elapsed);
        } else {
            behind_max = behind_max.max(elapsed - due);
        }
        let topic = format!("{}.{}", args.prefix, line.source);
        let produced = now_us();
        let mut record = BaseRecord::to(&topic).payload(&line.bytes);
        if let Some(key) = &line.key {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => anyhow::bail!("cannot enqueue to {topic}: {error}"),
            }
        }
        if let Some(id) = &line.event_id {
            // Event ids and department names of the generator hold no comma or quote.
            writeln!(times, "{id},{},{produced}", line.source)?;
        }
        copy.write_all(&line.bytes)?;
        copy.write_all(b"\n")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60))?;
    times.flush()?;
    copy.flush()?;
    let delivered = context.0.delivered.load(Ordering::Relaxed);
    let failed = context.0.failed.load(Ordering::Relaxed);
    println!(
        "{{\"produced\":{wanted},\"delivered\":{delivered},\"failed\":{failed},\"feed\":{},\"seconds\":{seconds:.3},\"per_second\":{:.1},\"behind_max_ms\":{:.1},\"began_us\":{began_us}}}",
        feed.len(),
        wanted as f64 / seconds.max(1e-9),
        behind_max.as_secs_f64() * 1000.0
    );
    anyhow::ensure!(
        failed == 0 && delivered == wanted as u64,
        "{failed} deliveries failed, {delivered} of {wanted} delivered"
    );
    Ok(())
}
