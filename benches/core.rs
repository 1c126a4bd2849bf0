//! Throughput of the pure core (decode → dedupe → resolve → rules) on a generated
//! county, without I/O: records per second on one core. `scripts/bench` measures the
//! whole embedded run beside it.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use yujing::config::Settings;
use yujing::domain::ids::Pseudonymiser;
use yujing::domain::record::{Origin, RawRecord};
use yujing::domain::registry::Registry;
use yujing::generate::{GenerateOptions, generate};
use yujing::pipeline::core::Core;
use yujing::pipeline::decode::Decoder;

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &[u8] = b"bench-key-0123456789";

struct County {
    settings: Settings,
    households: Vec<yujing::domain::registry::Household>,
    members: Vec<yujing::domain::registry::Member>,
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
    let pseudonymiser = Pseudonymiser::new(KEY);
    let households = yujing::registry::parse_households(
        std::fs::File::open(dir.path().join("households.csv")).expect("households"),
    )
    .expect("households parse")
    .rows;
    let known: std::collections::HashSet<String> = households
        .iter()
        .map(|h| h.household_id.to_string())
        .collect();
    let members = yujing::registry::parse_members(
        std::fs::File::open(dir.path().join("members.csv")).expect("members"),
        &pseudonymiser,
        &|id| known.contains(id.as_str()),
    )
    .expect("members parse")
    .rows;
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
        households,
        members,
        records,
    }
}

fn core_for(county: &County) -> Core {
    let (registry, _) = Registry::build(
        county.households.clone(),
        county
            .members
            .iter()
            .map(|m| (m.person_key, m.household_id.clone(), m.labour_capable)),
        Vec::new(),
    );
    Core::new(&county.settings, Pseudonymiser::new(KEY), registry)
}

fn bench(c: &mut Criterion) {
    let county = county();
    let now = Utc::now();
    let mut group = c.benchmark_group("core");
    group.sample_size(10);
    group.throughput(Throughput::Elements(county.records.len() as u64));
    // Batches as `yujing run` cuts them (`input.batch_size`). The outputs are
    // returned, so they are dropped outside the timing, as in a run, where the store
    // drops them after writing.
    group.bench_function("process_county", |b| {
        b.iter_batched(
            || core_for(&county),
            |mut core| {
                let outputs: Vec<_> = county
                    .records
                    .chunks(county.settings.input.batch_size)
                    .map(|batch| core.process(batch, now))
                    .collect();
                (core, outputs)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // The household path alone (decode → dedupe → resolve → household rules): the
    // regional stage runs elsewhere when `detect.placement = "leader"`.
    group.bench_function("process_county_household_only", |b| {
        b.iter_batched(
            || core_for(&county).without_regional_stage(),
            |mut core| {
                let outputs: Vec<_> = county
                    .records
                    .chunks(county.settings.input.batch_size)
                    .map(|batch| core.process(batch, now))
                    .collect();
                (core, outputs)
            },
            criterion::BatchSize::LargeInput,
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
