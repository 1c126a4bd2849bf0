//! The regional stage on a generated county (20 000 households, a year of feeds):
//! every accepted event observed, one flush per simulated hour (counting, watermark,
//! daily judging with refits, rules, signals). Decoding and resolving happen once,
//! outside the measurement.

use std::collections::HashSet;
use std::hint::black_box;

use chrono::{DateTime, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use yujing::config::Settings;
use yujing::domain::event::Event;
use yujing::domain::ids::Pseudonymiser;
use yujing::domain::registry::Registry;
use yujing::generate::{GenerateOptions, generate};
use yujing::pipeline::decode::Decoder;
use yujing::pipeline::detect::RegionalStage;
use yujing::pipeline::detect::calibrate::{DEFAULT_TARGET_ARL0_DAYS, calibrate_threshold};
use yujing::pipeline::detect::cusum::CountFamily;
use yujing::pipeline::resolve::{Target, resolve};

const KEY: &[u8] = b"bench-key-0123456789abcdef";

fn county() -> (Registry, Vec<(Event, Vec<u32>)>) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let options = GenerateOptions {
        households: 20_000,
        days: 365,
        seed: 1,
        ..GenerateOptions::default()
    };
    let key = generate(dir.path(), &options).expect("county");
    let open = |name: &str| std::fs::File::open(dir.path().join(name)).expect("file");
    let pseudonymiser = Pseudonymiser::new(KEY);
    let registry = yujing::registry::registry_from_csv(
        open("households.csv"),
        open("members.csv"),
        Vec::new(),
        &pseudonymiser,
    )
    .expect("registry");
    let decoder = Decoder::new(&Settings::defaults().validation);
    let now = Utc
        .with_ymd_and_hms(2025, 6, 1, 0, 0, 0)
        .single()
        .expect("valid");
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for feed in &key.feeds {
        let text = std::fs::read(dir.path().join(feed)).expect("feed");
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(event) = decoder.decode(line, now) else {
                continue;
            };
            if !seen.insert(event.event_id.digest(event.source.as_str())) {
                continue;
            }
            let households = match resolve(&event, &registry, &pseudonymiser).target {
                Target::Household(idx) => vec![idx],
                Target::Households(list, _) => list,
                Target::Regional(_) | Target::Unmatched => vec![],
            };
            events.push((event, households));
        }
    }
    events.sort_by_key(|(e, _)| e.reported_at);
    (registry, events)
}

fn bench(c: &mut Criterion) {
    let (registry, events) = county();
    let settings = Settings::defaults();
    let hour = |t: DateTime<Utc>| t.timestamp().div_euclid(3600);
    let mut group = c.benchmark_group("regional");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("county_year_hourly_batches", |b| {
        b.iter(|| {
            let mut stage = RegionalStage::new(&settings.detect);
            let mut batch_hour = hour(events[0].0.reported_at);
            for (event, households) in &events {
                let at = hour(event.reported_at);
                while batch_hour < at {
                    let now = Utc.timestamp_opt((batch_hour + 1) * 3600, 0).single();
                    black_box(stage.flush(&registry, now.expect("valid")));
                    batch_hour += 1;
                }
                stage.observe(event, households, &registry);
            }
            stage
        })
    });
    group.finish();

    // One CUSUM threshold calibration per grid cell a county's series ask for on their
    // first refits (the process shares them afterwards): a spread of Poisson and
    // overdispersed charts at sparse to dense mean levels.
    let mut calibration = c.benchmark_group("calibrate");
    calibration.sample_size(10);
    let cells: Vec<(CountFamily, f64)> = [
        CountFamily::Poisson,
        CountFamily::NegativeBinomial { alpha: 0.25 },
        CountFamily::NegativeBinomial { alpha: 1.0 },
    ]
    .into_iter()
    .flat_map(|family| [0.02, 0.1, 0.5, 2.0, 8.0, 30.0].map(|mean| (family, mean)))
    .collect();
    calibration.throughput(Throughput::Elements(cells.len() as u64));
    calibration.bench_function("threshold_cells", |b| {
        b.iter(|| {
            for &(family, mean) in &cells {
                let _ = black_box(calibrate_threshold(
                    family,
                    std::f64::consts::LN_2,
                    mean,
                    DEFAULT_TARGET_ARL0_DAYS,
                ));
            }
        })
    });
    calibration.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
