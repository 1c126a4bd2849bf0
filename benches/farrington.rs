//! Farrington Flexible as the stream runs it: a county of 300 regions × 11 series, six
//! years of daily counts each (sparse village-like to dense county-like means), judged
//! for one closed week (a Sunday) through `LevelDetectors::judge`, the stage's own path:
//! the weekly sums from the series' stored days, the GLM fits, the bound. Both parameter
//! sets; and the daily detectors (EARS C1 and the CUSUM step) on one day for comparison.
//! The space–time scan of one day and one kind over 300 villages on a grid: an ordinary
//! day (early stopping, as streamed) and a day with a cluster (all 999 replicates).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use yujing::config::Settings;
use yujing::domain::ids::RegionLevel;
use yujing::domain::signal::Method;
use yujing::pipeline::detect::scan::{Scan, Unit, zones};
use yujing::pipeline::detect::series::{Day, LevelDetectors, is_week_end};
use yujing::pipeline::detect::settings::FarringtonPreset;

const REGIONS: usize = 300;
const KINDS: usize = 11;
const YEARS: i32 = 6;

/// splitmix64 uniform in (0, 1).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn poisson(&mut self, mean: f64) -> u32 {
        let mut p = (-mean).exp();
        let u = self.uniform();
        let mut cdf = p;
        let mut k = 0;
        while u > cdf && p > 0.0 {
            k += 1;
            p *= mean / f64::from(k);
            cdf += p;
        }
        k
    }
}

/// The last Sunday of the span and the series, stored as the stage stores them.
fn county() -> (Day, Vec<BTreeMap<Day, u32>>) {
    let mut rng = Rng(300);
    let first: Day = 18_000;
    let days = 365 * YEARS;
    let mut last = first + days - 1;
    while !is_week_end(last) {
        last -= 1;
    }
    let series = (0..REGIONS * KINDS)
        .map(|i| {
            // Means from 0.03 to 8 a day, log-spaced, with an annual season.
            let mean = 0.03 * (8.0f64 / 0.03).powf((i % 97) as f64 / 96.0);
            (first..first + days)
                .filter_map(|day| {
                    let season = 1.0 + 0.3 * (std::f64::consts::TAU * f64::from(day) / 365.0).sin();
                    let count = rng.poisson(mean * season);
                    (count > 0).then_some((day, count))
                })
                .collect()
        })
        .collect();
    (last, series)
}

fn bench(c: &mut Criterion) {
    let (sunday, series) = county();
    let origin = sunday - 365 * YEARS + 7;
    let mut group = c.benchmark_group("farrington");
    group.sample_size(10);
    group.throughput(Throughput::Elements(series.len() as u64));
    for preset in [FarringtonPreset::Noufaily, FarringtonPreset::Original] {
        let mut settings = Settings::defaults().detect;
        settings.farrington.parameters = preset;
        let detectors = LevelDetectors::new(
            &settings,
            RegionLevel::Township,
            &[Method::FarringtonFlexible],
            365.0,
        )
        .expect("valid settings");
        let name = format!("week_300_regions_x_11_kinds_{preset:?}").to_lowercase();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut alarms = 0;
                for counts in &series {
                    let (judged, _) = detectors.judge(counts, origin, sunday, None, 0.0);
                    let judgement = judged
                        .get(Method::FarringtonFlexible)
                        .expect("a full history is judged");
                    alarms += usize::from(judgement.alarm == Some(true));
                }
                black_box(alarms)
            })
        });
    }
    // A daily judgement of the same series by EARS C1 (the CUSUM's step needs its period
    // model, fitted every 28 days, and is a few operations per day).
    let settings = Settings::defaults().detect;
    let ears = LevelDetectors::new(&settings, RegionLevel::Township, &[Method::EarsC1], 365.0)
        .expect("valid settings");
    group.bench_function("day_300_regions_x_11_kinds_ears_c1", |b| {
        b.iter(|| {
            let mut alarms = 0;
            for counts in &series {
                let (judged, _) = ears.judge(counts, origin, sunday, None, 0.0);
                alarms += usize::from(judged.alarms() != 0);
            }
            black_box(alarms)
        })
    });
    group.finish();

    let mut scan_group = c.benchmark_group("scan");
    scan_group.sample_size(10);
    let settings = Settings::defaults().detect;
    let scan = Scan::try_new(&settings.scan).expect("valid settings");
    let units: Vec<Unit> = (0..REGIONS)
        .map(|v| Unit {
            position: Some((
                105.0 + 0.01 * (v % 20) as f64,
                26.0 + 0.01 * (v / 20) as f64,
            )),
            households: 60 + (v * 37) % 80,
            township: v / 20,
        })
        .collect();
    let candidate_zones = zones(&units, settings.scan.max_household_share);
    let mut rng = Rng(2005);
    let study = settings.scan.study_days;
    let ordinary: Vec<Vec<u32>> = (0..REGIONS)
        .map(|_| (0..study).map(|_| rng.poisson(0.15)).collect())
        .collect();
    let mut clustered = ordinary.clone();
    for village in [41, 42, 61] {
        for count in &mut clustered[village][study - 3..] {
            *count += 3;
        }
    }
    scan_group.bench_function("ordinary_day_300_villages_early_stop", |b| {
        b.iter(|| black_box(scan.analyse(&candidate_zones, &ordinary, 1, true)))
    });
    scan_group.bench_function("cluster_day_300_villages_999_replicates", |b| {
        b.iter(|| black_box(scan.analyse(&candidate_zones, &clustered, 1, true)))
    });
    scan_group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
