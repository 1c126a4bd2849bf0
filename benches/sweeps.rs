//! The standing sweeps and the data-quality rules over a generated 1 000 000-household
//! registry: the full first pass, and the re-evaluation of one household after a
//! change (households per second on one core). The registry is built once from the
//! generator's CSVs, outside the measurement.

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use yujing::config::Settings;
use yujing::domain::ids::Pseudonymiser;
use yujing::domain::registry::{HouseholdIdx, HouseholdStatus, Registry};
use yujing::generate::{GenerateOptions, generate};
use yujing::sweeps;

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &[u8] = b"bench-key-0123456789abcdef";
const HOUSEHOLDS: usize = 1_000_000;

fn registry() -> Registry {
    let dir = tempfile::tempdir().expect("temporary folder");
    let options = GenerateOptions {
        households: HOUSEHOLDS,
        // The feeds are not read: one day keeps the generator short.
        days: 1,
        seed: 1,
        ..GenerateOptions::default()
    };
    generate(dir.path(), &options).expect("county");
    let open = |name: &str| std::fs::File::open(dir.path().join(name)).expect("file");
    yujing::registry::registry_from_csv(
        open("households.csv"),
        open("members.csv"),
        Vec::new(),
        &Pseudonymiser::new(KEY),
    )
    .expect("registry")
}

fn bench(c: &mut Criterion) {
    let registry = registry();
    let settings = Settings::defaults();
    let today = NaiveDate::from_ymd_opt(2024, 9, 1).expect("valid date");
    let findings = sweeps::full_pass(&registry, today, &settings);
    let monitored: Vec<HouseholdIdx> = (0..registry.household_count() as HouseholdIdx)
        .filter(|&idx| registry.household(idx).status == HouseholdStatus::Monitored)
        .collect();
    eprintln!(
        "{} households ({} monitored), {} members: {} findings on {today}",
        registry.household_count(),
        monitored.len(),
        registry.person_count(),
        findings.len()
    );
    let mut group = c.benchmark_group("sweeps");
    group.sample_size(10);
    group.throughput(Throughput::Elements(registry.household_count() as u64));
    group.bench_function("full_pass", |b| {
        b.iter(|| black_box(sweeps::full_pass(&registry, today, &settings)))
    });
    // One household re-evaluated, as after a change to it: every 10th household
    // (most are ordinary: only the consistency rules apply), and monitored ones
    // (every sweep applies).
    let every_tenth: Vec<HouseholdIdx> = (0..registry.household_count() as HouseholdIdx)
        .step_by(10)
        .collect();
    for (name, households) in [
        ("per_household_any", &every_tenth),
        ("per_household_monitored", &monitored),
    ] {
        group.throughput(Throughput::Elements(households.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for &idx in households {
                    black_box(sweeps::evaluate_household(&registry, idx, today, &settings));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
