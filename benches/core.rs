//! Throughput of the pure core (decode → dedupe → resolve → rules) on a generated
//! county, without I/O: records per second on one core. `scripts/bench` measures the
//! whole embedded run beside it.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use yujing::batch::BatchOutput;
use yujing::config::Settings;
use yujing::domain::ids::Pseudonymiser;
use yujing::domain::record::{Origin, RawRecord};
use yujing::generate::{GenerateOptions, generate};
use yujing::pipeline::core::Core;
use yujing::pipeline::decode::Decoder;

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &[u8] = b"bench-key-0123456789";

struct County {
    settings: Settings,
    /// The roster CSVs, read again for each fresh core.
    households_csv: Vec<u8>,
    members_csv: Vec<u8>,
    records: Vec<RawRecord>,
}

fn county() -> County {
    let dir = tempfile::tempdir().expect("temporary folder");
    let options = GenerateOptions {
        households: 20_000,
        days: 365,
        seed: 1,
        ..GenerateOptions::default()
    };
    let key = generate(dir.path(), &options).expect("county");
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect("registry file");
    let (households_csv, members_csv) = (read("households.csv"), read("members.csv"));
    let mut records = Vec::new();
    for feed in &key.feeds {
        let text = std::fs::read(dir.path().join(feed)).expect("feed");
        for (line, bytes) in text.split(|&b| b == b'\n').enumerate() {
            if bytes.is_empty() {
                continue;
            }
            records.push(RawRecord {
                bytes: bytes.to_vec(),
                origin: Origin::File {
                    path: feed.as_str().into(),
                    line: line as u64 + 1,
                    byte_offset: 0,
                },
                original_len: None,
            });
        }
    }
    County {
        settings: Settings::defaults(),
        households_csv,
        members_csv,
        records,
    }
}

fn core_for(county: &County) -> Core {
    let pseudonymiser = Pseudonymiser::new(KEY);
    let registry = yujing::registry::registry_from_csv(
        county.households_csv.as_slice(),
        county.members_csv.as_slice(),
        Vec::new(),
        &pseudonymiser,
    )
    .expect("registry");
    Core::new(&county.settings, pseudonymiser, registry)
}

/// Runs `core` over the county in batches as `yujing run` cuts them
/// (`input.batch_size`). The outputs are returned, so they are dropped outside the
/// timing, as in a run, where the store drops them after writing.
fn process_county(
    mut core: Core,
    county: &County,
    now: chrono::DateTime<Utc>,
) -> (Core, Vec<BatchOutput>) {
    let outputs = county
        .records
        .chunks(county.settings.input.batch_size)
        .map(|batch| core.process(batch, now))
        .collect();
    (core, outputs)
}

fn bench(c: &mut Criterion) {
    let county = county();
    let now = Utc::now();
    let mut group = c.benchmark_group("core");
    group.sample_size(10);
    group.throughput(Throughput::Elements(county.records.len() as u64));
    group.bench_function("process_county", |b| {
        b.iter_batched(
            || core_for(&county),
            |core| process_county(core, &county, now),
            // One fresh core per iteration (a whole county each); also what `--profile-time`
            // needs, where a per-batch size would round to zero iterations.
            criterion::BatchSize::PerIteration,
        )
    });
    // The household path alone (decode → dedupe → resolve → household rules): the
    // regional stage runs elsewhere when `detect.placement = "leader"`.
    group.bench_function("process_county_household_only", |b| {
        b.iter_batched(
            || core_for(&county).without_regional_stage(),
            |core| process_county(core, &county, now),
            // One fresh core per iteration (a whole county each); also what `--profile-time`
            // needs, where a per-batch size would round to zero iterations.
            criterion::BatchSize::PerIteration,
        )
    });
    let decoder = Decoder::new(&county.settings.validation);
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            for record in &county.records {
                let _ = black_box(decoder.decode(&record.bytes, now));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
