//! Kulldorff's prospective space–time permutation scan (Kulldorff et al. 2005; DETECTORS.md
//! §6.1) over the villages of one county and one risk kind: candidate zones (circles of the
//! k nearest villages up to a share of the households, or the units of the hierarchy),
//! cylinders ending on the analysed day with durations 1…`max_days`, expected counts from
//! the space × time margins of the study window, the Poisson generalised likelihood ratio,
//! a Monte Carlo p-value from permuting case days (seeded) and the recurrence interval.
//! Input: daily counts per village over the study window; output: the most likely
//! cluster, if any. Pure; fails only on invalid parameters.

use serde::Deserialize;

use super::ears::DetectError;

/// `[detect.scan]` as written by a user.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ScanSettings {
    /// Run the scan over each county's villages, every risk kind, every closed day.
    pub enabled: bool,
    /// Days of counts the expected values come from (the study window), ending on the
    /// analysed day.
    pub study_days: usize,
    /// Longest cluster duration in days (cylinders end on the analysed day).
    pub max_days: usize,
    /// A circle grows by nearest villages up to this share of the county's households.
    pub max_household_share: f64,
    /// Monte Carlo replicates (999: p-values in steps of 1/1000).
    pub replicates: usize,
    /// Seed of the permutations (with the day and the kind, so analyses are reproducible).
    pub seed: u64,
    /// A cluster raises a signal when its recurrence interval (days between clusters as
    /// strong by chance, with one analysis a day) is at least this.
    pub recurrence_days: f64,
}

/// One village (unit) of the scan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    /// Longitude and latitude of its centroid, when known.
    pub position: Option<(f64, f64)>,
    /// Registry households (the zone size limit counts them).
    pub households: usize,
    /// Index of its township among the county's (the hierarchy zones).
    pub township: usize,
}

/// A candidate zone: units in the order a circle adds them (nested prefixes are zones
/// too, when `nested`), or one fixed set.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Member units; for a circle, its centre first, then by distance.
    pub units: Vec<usize>,
    /// Every prefix of `units` is a candidate (circles), or only the whole (hierarchy).
    pub nested: bool,
}

/// The zones: circles around every unit when every unit has a position, else each
/// village, each township and the whole county.
pub fn zones(units: &[Unit], max_household_share: f64) -> Vec<Zone> {
    let total: usize = units.iter().map(|u| u.households).sum();
    let limit = (max_household_share * total as f64).max(1.0);
    let positions: Option<Vec<(f64, f64)>> = units.iter().map(|u| u.position).collect();
    match positions {
        Some(positions) if !units.is_empty() => (0..units.len())
            .map(|centre| {
                let (x0, y0) = positions[centre];
                // Longitude degrees shrink with the cosine of the latitude.
                let scale = y0.to_radians().cos();
                let mut order: Vec<usize> = (0..units.len()).collect();
                let distance = |i: usize| {
                    let (x, y) = positions[i];
                    ((x - x0) * scale).powi(2) + (y - y0).powi(2)
                };
                order.sort_by(|&a, &b| distance(a).total_cmp(&distance(b)).then(a.cmp(&b)));
                let mut size = 0;
                let mut members = Vec::new();
                for unit in order {
                    size += units[unit].households;
                    if !members.is_empty() && size as f64 > limit {
                        break;
                    }
                    members.push(unit);
                }
                Zone {
                    units: members,
                    nested: true,
                }
            })
            .collect(),
        _ => {
            let mut out: Vec<Zone> = (0..units.len())
                .map(|u| Zone {
                    units: vec![u],
                    nested: false,
                })
                .collect();
            let townships = units.iter().map(|u| u.township + 1).max().unwrap_or(0);
            for township in 0..townships {
                let members: Vec<usize> = (0..units.len())
                    .filter(|&u| units[u].township == township)
                    .collect();
                if members.len() > 1 {
                    out.push(Zone {
                        units: members,
                        nested: false,
                    });
                }
            }
            if townships > 1 {
                out.push(Zone {
                    units: (0..units.len()).collect(),
                    nested: false,
                });
            }
            out
        }
    }
}

/// The most likely cluster of an analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Its units (indexes into the analysis' units).
    pub units: Vec<usize>,
    /// Its duration in days, ending on the analysed day.
    pub days: usize,
    /// Cases in the cylinder.
    pub observed: f64,
    /// Expected cases from the margins.
    pub expected: f64,
    /// The log-likelihood ratio.
    pub llr: f64,
    /// Monte Carlo p-value (1 + replicates at least as strong) / (R + 1); with early
    /// stopping, a lower bound once it is clear the cluster cannot signal.
    pub p_value: f64,
    /// 1/p analyses, i.e. days between clusters as strong by chance.
    pub recurrence_days: f64,
    /// Replicates run (fewer than configured after early stopping).
    pub replicates: usize,
}

/// A validated scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    settings: ScanSettings,
}

impl Scan {
    /// Validates: 1 ≤ `max_days` < `study_days`, share in (0, 1], at least 9 replicates,
    /// 1 ≤ recurrence ≤ replicates + 1 days.
    pub fn try_new(settings: &ScanSettings) -> Result<Self, DetectError> {
        let invalid = |name, value: f64, reason| {
            Err(DetectError::InvalidParameter {
                name,
                value,
                reason,
            })
        };
        if settings.max_days == 0 || settings.max_days >= settings.study_days {
            return invalid(
                "max_days",
                settings.max_days as f64,
                "must be at least 1 and below study_days",
            );
        }
        if !(settings.max_household_share > 0.0 && settings.max_household_share <= 1.0) {
            return invalid(
                "max_household_share",
                settings.max_household_share,
                "must be in (0, 1]",
            );
        }
        if settings.replicates < 9 {
            return invalid(
                "replicates",
                settings.replicates as f64,
                "must be at least 9",
            );
        }
        if !(settings.recurrence_days >= 1.0
            && settings.recurrence_days <= (settings.replicates + 1) as f64)
        {
            return invalid(
                "recurrence_days",
                settings.recurrence_days,
                "must be at least 1 and at most replicates + 1 (the longest interval the replicates resolve)",
            );
        }
        Ok(Scan {
            settings: settings.clone(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &ScanSettings {
        &self.settings
    }

    /// Analyses the last day of `counts[unit][day]` (every unit the same number of days,
    /// the study window, oldest first). `stream` mixes into the seed (the day and the
    /// kind). With `early_stop`, the replicates stop as soon as the p-value cannot fall to
    /// 1/`recurrence_days` any more (the same decision, a fraction of the work on
    /// ordinary days). `None` when there are no cases in the window's last `max_days` days
    /// or no zone has more cases than expected.
    pub fn analyse(
        &self,
        zones: &[Zone],
        counts: &[Vec<u32>],
        stream: u64,
        early_stop: bool,
    ) -> Option<Cluster> {
        let days = counts.first().map_or(0, Vec::len);
        let max_days = self.settings.max_days.min(days);
        if days == 0 || max_days == 0 || counts.iter().any(|c| c.len() != days) {
            return None;
        }
        let unit_totals: Vec<f64> = counts
            .iter()
            .map(|c| c.iter().map(|&v| f64::from(v)).sum())
            .collect();
        let total: f64 = unit_totals.iter().sum();
        if total == 0.0 {
            return None;
        }
        // Cases of the last L days by day: T_L = Σ_{d ≥ days − L} C_·d.
        let mut tail_totals = vec![0.0; max_days + 1];
        for l in 1..=max_days {
            let day = days - l;
            tail_totals[l] =
                tail_totals[l - 1] + counts.iter().map(|c| f64::from(c[day])).sum::<f64>();
        }
        if tail_totals[max_days] == 0.0 {
            return None;
        }
        let margins = Margins {
            unit_totals: &unit_totals,
            tail_totals: &tail_totals,
            total,
        };
        // Observed: cases of each unit in its last L days.
        let observed_tails = tails(counts, max_days);
        let (best, llr) = margins.best(zones, &observed_tails, max_days)?;

        // Permutations: case days shuffled, locations kept; both margins stay fixed.
        let mut case_days: Vec<u32> = Vec::with_capacity(total as usize);
        let mut case_units: Vec<u32> = Vec::with_capacity(total as usize);
        for (unit, series) in counts.iter().enumerate() {
            for (day, &count) in series.iter().enumerate() {
                for _ in 0..count {
                    case_days.push(day as u32);
                    case_units.push(unit as u32);
                }
            }
        }
        let mut rng = SplitMix(self.settings.seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let replicates = self.settings.replicates;
        // Early stop: after k exceedances p ≥ (1 + k)/(R + 1), and the cluster signals only
        // if p ≤ 1/recurrence, i.e. k ≤ (R + 1)/recurrence − 1.
        let allowed = (replicates + 1) as f64 / self.settings.recurrence_days - 1.0;
        let mut exceed = 0usize;
        let mut run = 0usize;
        let mut replicate_tails = vec![vec![0u32; max_days + 1]; counts.len()];
        let first_tail_day = (days - max_days) as u32;
        for _ in 0..replicates {
            run += 1;
            // Fisher–Yates on the days (the units stay in place).
            for i in (1..case_days.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                case_days.swap(i, j);
            }
            replicate_tails.iter_mut().for_each(|t| t.fill(0));
            for (&day, &unit) in case_days.iter().zip(&case_units) {
                if day >= first_tail_day {
                    let l = days - day as usize; // 1 = the last day
                    replicate_tails[unit as usize][l] += 1;
                }
            }
            for tail in &mut replicate_tails {
                for l in 1..=max_days {
                    tail[l] += tail[l - 1];
                }
            }
            let strongest = margins
                .best(zones, &replicate_tails, max_days)
                .map_or(0.0, |(_, v)| v);
            if strongest >= llr {
                exceed += 1;
                if early_stop && exceed as f64 > allowed {
                    break;
                }
            }
        }
        let p_value = (1 + exceed) as f64 / (replicates + 1) as f64;
        let (zone, size, duration) = best;
        let units = zones[zone].units[..size].to_vec();
        let observed: f64 = units
            .iter()
            .map(|&u| f64::from(observed_tails[u][duration]))
            .sum();
        let expected = margins.expected(&units, duration);
        Some(Cluster {
            units,
            days: duration,
            observed,
            expected,
            llr,
            p_value,
            recurrence_days: 1.0 / p_value,
            replicates: run,
        })
    }
}

/// `tails[u][l]` = cases of unit u in the last l days (l = 0 … max_days).
fn tails(counts: &[Vec<u32>], max_days: usize) -> Vec<Vec<u32>> {
    counts
        .iter()
        .map(|series| {
            let mut tail = vec![0u32; max_days + 1];
            for l in 1..=max_days {
                tail[l] = tail[l - 1] + series[series.len() - l];
            }
            tail
        })
        .collect()
}

struct Margins<'a> {
    unit_totals: &'a [f64],
    tail_totals: &'a [f64],
    total: f64,
}

impl Margins<'_> {
    fn expected(&self, units: &[usize], days: usize) -> f64 {
        let space: f64 = units.iter().map(|&u| self.unit_totals[u]).sum();
        space * self.tail_totals[days] / self.total
    }

    /// The strongest cylinder: ((zone, prefix length, duration), LLR); `None` when no
    /// cylinder has more cases than expected.
    fn best(
        &self,
        zones: &[Zone],
        tails: &[Vec<u32>],
        max_days: usize,
    ) -> Option<((usize, usize, usize), f64)> {
        let mut best: Option<((usize, usize, usize), f64)> = None;
        let mut observed = vec![0.0; max_days + 1];
        for (z, zone) in zones.iter().enumerate() {
            observed.fill(0.0);
            let mut space = 0.0;
            for (k, &unit) in zone.units.iter().enumerate() {
                space += self.unit_totals[unit];
                for l in 1..=max_days {
                    observed[l] += f64::from(tails[unit][l]);
                }
                if !zone.nested && k + 1 < zone.units.len() {
                    continue;
                }
                for (l, &c) in observed.iter().enumerate().skip(1) {
                    if c == 0.0 {
                        continue;
                    }
                    let mu = space * self.tail_totals[l] / self.total;
                    if c <= mu {
                        continue;
                    }
                    let llr = log_likelihood_ratio(c, mu, self.total);
                    if best.is_none_or(|(_, v)| llr > v) {
                        best = Some(((z, k + 1, l), llr));
                    }
                }
            }
        }
        best
    }
}

/// SaTScan's space–time permutation LLR for c > μ (DETECTORS.md §6.1):
/// c ln(c/μ) + (C − c) ln((C − c)/(C − μ)), with the c = C case.
pub fn log_likelihood_ratio(c: f64, mu: f64, total: f64) -> f64 {
    let inside = c * (c / mu).ln();
    let rest = total - c;
    if rest <= 0.0 {
        inside
    } else {
        inside + rest * (rest / (total - mu)).ln()
    }
}

/// splitmix64: small, seedable, statistically sound for permutations.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ScanSettings {
        ScanSettings {
            enabled: true,
            study_days: 60,
            max_days: 7,
            max_household_share: 0.1,
            replicates: 999,
            seed: 7,
            recurrence_days: 730.0,
        }
    }

    /// 3 townships × 10 villages on a grid (0.02° apart), 100 households each.
    fn county() -> Vec<Unit> {
        (0..30)
            .map(|i| Unit {
                position: Some((105.0 + 0.02 * (i % 6) as f64, 26.0 + 0.02 * (i / 6) as f64)),
                households: 100,
                township: i / 10,
            })
            .collect()
    }

    fn poisson(rng: &mut SplitMix, mean: f64) -> u32 {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (mut p, mut k) = ((-mean).exp(), 0u32);
        let mut cdf = p;
        while u > cdf && p > 0.0 {
            k += 1;
            p *= mean / f64::from(k);
            cdf += p;
        }
        k
    }

    fn background(rng: &mut SplitMix, units: usize, days: usize, mean: f64) -> Vec<Vec<u32>> {
        (0..units)
            .map(|_| (0..days).map(|_| poisson(rng, mean)).collect())
            .collect()
    }

    #[test]
    fn llr_by_hand() {
        // c = 10, μ = 4, C = 100: 10 ln 2.5 + 90 ln(90/96).
        let expected = 10.0 * 2.5f64.ln() + 90.0 * (90.0f64 / 96.0).ln();
        assert!((log_likelihood_ratio(10.0, 4.0, 100.0) - expected).abs() < 1e-12);
        assert!((log_likelihood_ratio(5.0, 1.0, 5.0) - 5.0 * 5.0f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn circles_stop_at_the_household_share_and_hierarchy_zones_without_coordinates() {
        let units = county();
        let circles = zones(&units, 0.1);
        assert_eq!(circles.len(), 30);
        // 10 % of 3000 households: three villages of 100.
        assert!(circles.iter().all(|z| z.units.len() == 3 && z.nested));
        assert_eq!(circles[0].units[0], 0);
        assert!(circles[0].units.contains(&1) && circles[0].units.contains(&6));
        let blind: Vec<Unit> = units
            .iter()
            .map(|u| Unit {
                position: None,
                ..*u
            })
            .collect();
        let hierarchy = zones(&blind, 0.1);
        // 30 villages, 3 townships, the county.
        assert_eq!(hierarchy.len(), 34);
        assert!(hierarchy.iter().all(|z| !z.nested));
        assert_eq!(hierarchy[30].units, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_planted_cluster_is_found_with_a_long_recurrence_interval() {
        let scan = Scan::try_new(&settings()).expect("valid");
        let units = county();
        let zones = zones(&units, 0.1);
        let mut rng = SplitMix(11);
        let mut counts = background(&mut rng, 30, 60, 0.15);
        // Villages 0, 1 and 6 (neighbours in township 0), the last 3 days: +3 a day each.
        for &v in &[0usize, 1, 6] {
            for count in &mut counts[v][57..60] {
                *count += 3;
            }
        }
        let cluster = scan.analyse(&zones, &counts, 1, false).expect("a cluster");
        assert!(
            cluster
                .units
                .iter()
                .all(|u| [0, 1, 6, 2, 7, 12].contains(u)),
            "{cluster:?}"
        );
        assert!(
            cluster
                .units
                .iter()
                .filter(|u| [0, 1, 6].contains(u))
                .count()
                >= 2
        );
        assert!(cluster.days <= 4, "{cluster:?}");
        assert!(cluster.observed > 3.0 * cluster.expected);
        assert_eq!(cluster.replicates, 999);
        assert!(
            cluster.recurrence_days >= settings().recurrence_days,
            "{cluster:?}"
        );
        // Early stopping reaches the same decision with the same p-value here (nothing
        // exceeds it).
        let early = scan.analyse(&zones, &counts, 1, true).expect("a cluster");
        assert_eq!(early.p_value, cluster.p_value);
    }

    #[test]
    fn a_background_year_stays_within_the_false_alarm_budget() {
        // One analysis a day for a year over a 60-day window of background only: with a
        // recurrence threshold of 730 days, the expected number of signals is 0.5.
        let scan = Scan::try_new(&settings()).expect("valid");
        let units = county();
        let zones = zones(&units, 0.1);
        let mut rng = SplitMix(2024);
        let year = background(&mut rng, 30, 60 + 365, 0.15);
        let mut signals = 0;
        for day in 0..365 {
            let window: Vec<Vec<u32>> = year.iter().map(|s| s[day..day + 60].to_vec()).collect();
            if let Some(cluster) = scan.analyse(&zones, &window, day as u64, true)
                && cluster.recurrence_days >= settings().recurrence_days
            {
                signals += 1;
            }
        }
        assert!(signals <= 1, "{signals} false signals in a year");
    }

    #[test]
    fn the_p_value_is_stable_across_seeds_within_monte_carlo_error() {
        let units = county();
        let zones = zones(&units, 0.1);
        let mut rng = SplitMix(5);
        let mut counts = background(&mut rng, 30, 60, 0.15);
        // A weak cluster: p around a few per cent.
        counts[14][59] += 3;
        counts[15][59] += 2;
        let p: Vec<f64> = (0..5)
            .map(|seed| {
                let scan = Scan::try_new(&ScanSettings { seed, ..settings() }).expect("valid");
                scan.analyse(&zones, &counts, 0, false)
                    .expect("a cluster")
                    .p_value
            })
            .collect();
        let mean = p.iter().sum::<f64>() / p.len() as f64;
        assert!(mean > 0.005 && mean < 0.5, "{p:?}");
        // Binomial Monte Carlo error of one p-value from 999 replicates.
        let sd = (mean * (1.0 - mean) / 999.0).sqrt();
        for value in &p {
            assert!((value - mean).abs() <= 4.0 * sd + 1e-3, "{p:?} (sd {sd})");
        }
        assert!(
            p.windows(2).any(|w| w[0] != w[1]),
            "the seeds differ: {p:?}"
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        for bad in [
            ScanSettings {
                max_days: 0,
                ..settings()
            },
            ScanSettings {
                max_days: 60,
                ..settings()
            },
            ScanSettings {
                max_household_share: 0.0,
                ..settings()
            },
            ScanSettings {
                replicates: 3,
                ..settings()
            },
            ScanSettings {
                recurrence_days: 0.5,
                ..settings()
            },
            ScanSettings {
                recurrence_days: 1001.0,
                ..settings()
            },
        ] {
            assert!(Scan::try_new(&bad).is_err(), "{bad:?}");
        }
    }
}
