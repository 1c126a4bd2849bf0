//! Household rules stage: resolved household events -> alerts and screening tasks.
//! Keeps each household's recent risk facts (the look-back window), judges the
//! window at the event's time and at every later event time it affects (so a late
//! event re-judges what it changes, and results do not depend on arrival order),
//! and folds the findings into the household's one open alert; an alert below the
//! task level expires in event time, and closed and expired alerts leave memory once
//! out of reach. Cannot fail.

pub mod evaluate;
pub mod facts;

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, Utc};

use crate::batch::ClosedAlert;
use crate::config::{PolicySettings, RuleSettings};
use crate::domain::alert::{Action, AlertStatus, HouseholdAlert, Level, RuleFinding};
use crate::domain::ids::{EventId, RegionCode, stable_id};
use crate::domain::registry::{Household, HouseholdIdx, HouseholdStatus, MonitoringType, Registry};
use crate::domain::task::{Budgets, NewTask, ScreeningTask, TaskKind};

use evaluate::{Detail, Evaluation, Gathered, HouseholdContext, evaluate_with};
use facts::RiskEvent;

/// Per-household alert state: held while the household has an open alert or a
/// closed one still within [`RuleSettings::closed_alert_reach_days`]; dropped after.
#[derive(Debug, Default)]
struct AlertSlot {
    open: Option<OpenAlert>,
    closed: Vec<ClosedAlert>,
    handled: HashSet<EventId>,
}

impl AlertSlot {
    fn is_empty(&self) -> bool {
        self.open.is_none() && self.closed.is_empty()
    }
}

#[derive(Debug)]
struct OpenAlert {
    alert: HouseholdAlert,
    task: Option<ScreeningTask>,
    /// The detail each rule's reason was last formatted from (in memory only: a
    /// cache that spares formatting an unchanged reason).
    details: HashMap<&'static str, Detail>,
    /// For an alert below the task level: the event time it expires at (its key in
    /// `HouseholdRules::expiries`).
    expires_at: Option<DateTime<Utc>>,
}

/// What the stage changed since the last drain.
#[derive(Debug, Default)]
pub struct RuleOutputs {
    /// Alerts created or changed (full snapshots).
    pub alerts: Vec<HouseholdAlert>,
    /// Tasks created or changed (full snapshots).
    pub tasks: Vec<ScreeningTask>,
    /// Findings dropped by the cool-down.
    pub suppressed: u64,
    /// Alerts that expired (snapshots), with the event time they expired at.
    pub expired: Vec<(HouseholdAlert, DateTime<Utc>)>,
}

/// The household rules with their state.
#[derive(Debug)]
pub struct HouseholdRules {
    rules: RuleSettings,
    policy: PolicySettings,
    /// The procedure's deadlines, by region.
    budgets: Budgets,
    /// Per household (by registry index): its risk events, in (time, id) order.
    windows: Vec<Vec<RiskEvent>>,
    /// Per household: its alerts, while it has one open or recently closed.
    alerts: Vec<Option<Box<AlertSlot>>>,
    /// Per household: alerts ever opened, the next alert's episode number (kept
    /// when its slot is dropped, so an id is never given twice).
    episodes: Vec<u32>,
    /// Open alerts below the task level by the event time they expire at.
    expiries: BTreeSet<(DateTime<Utc>, HouseholdIdx)>,
    /// Closed and expired alerts held, by the event time they closed at: they
    /// leave memory once that is out of reach.
    closings: BTreeSet<(DateTime<Utc>, HouseholdIdx)>,
    /// Alerts expired since the last drain, with their expiry's event time.
    expired: Vec<(HouseholdAlert, DateTime<Utc>)>,
    dirty: BTreeSet<HouseholdIdx>,
    dirty_tasks: BTreeSet<HouseholdIdx>,
    suppressed: u64,
    /// Scratch space of the evaluations.
    scratch: Gathered,
    /// Monitoring lines by village and year: looked up once, not per evaluation.
    lines: Lines,
}

/// The monitoring lines in force, by village and year (China Standard Time), with
/// the last one used and the instants its year spans: households are judged in
/// registry order, village by village, so most judgements reuse it without any
/// date arithmetic.
#[derive(Debug, Default)]
struct Lines {
    by_year: HashMap<(RegionCode, i32), f64>,
    last: Option<LastLine>,
}

#[derive(Debug, Clone, Copy)]
struct LastLine {
    village: RegionCode,
    /// Its year: from (inclusive) ...
    from: DateTime<Utc>,
    /// ... until (exclusive).
    until: DateTime<Utc>,
    line: f64,
}

impl Lines {
    /// The line for `household` at `at`.
    fn get(&mut self, policy: &PolicySettings, household: &Household, at: DateTime<Utc>) -> f64 {
        if let Some(last) = self.last
            && last.village == household.region_code
            && last.from <= at
            && at < last.until
        {
            return last.line;
        }
        let year = cst_year(at);
        let line = *self
            .by_year
            .entry((household.region_code, year))
            .or_insert_with(|| monitoring_line(policy, household, at));
        // Midnight of 1 January in China Standard Time, as UTC; years chrono cannot
        // represent leave the memo empty.
        let new_year = |year: i32| {
            chrono::NaiveDate::from_ymd_opt(year, 1, 1)
                .and_then(|day| day.and_hms_opt(0, 0, 0))
                .and_then(|midnight| midnight.checked_sub_signed(Duration::hours(8)))
                .map(|utc| utc.and_utc())
        };
        self.last = match (new_year(year), new_year(year + 1)) {
            (Some(from), Some(until)) => Some(LastLine {
                village: household.region_code,
                from,
                until,
                line,
            }),
            _ => None,
        };
        line
    }
}

/// The calendar year of `at` in China Standard Time (UTC+8), in which the policy
/// years run.
fn cst_year(at: DateTime<Utc>) -> i32 {
    (at + Duration::hours(8)).year()
}

impl HouseholdRules {
    /// An empty stage.
    pub fn new(rules: RuleSettings, policy: PolicySettings) -> Self {
        HouseholdRules {
            rules,
            policy,
            windows: Vec::new(),
            alerts: Vec::new(),
            episodes: Vec::new(),
            expiries: BTreeSet::new(),
            closings: BTreeSet::new(),
            expired: Vec::new(),
            dirty: BTreeSet::new(),
            dirty_tasks: BTreeSet::new(),
            suppressed: 0,
            scratch: Gathered::default(),
            lines: Lines::default(),
            budgets: Budgets::default(),
        }
    }

    /// The same stage opening tasks with `budgets` (`procedure.*`).
    pub fn with_budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    fn lookback(&self) -> Duration {
        Duration::days(self.rules.lookback_days)
    }

    /// Adds an event to a household's window without judging it (state rebuilt
    /// from the store). Returns false if the event was already there.
    pub fn restore_event(&mut self, household: HouseholdIdx, event: RiskEvent) -> bool {
        self.insert(household, event)
    }

    /// Restores an open alert (and its task) read back from the store.
    pub fn restore_open_alert(
        &mut self,
        household: HouseholdIdx,
        alert: HouseholdAlert,
        task: Option<ScreeningTask>,
        episode: u32,
    ) {
        raise_episodes(&mut self.episodes, household, episode + 1);
        let slot = slot_mut(&mut self.alerts, household);
        slot.open = Some(OpenAlert {
            alert,
            task,
            details: HashMap::new(),
            expires_at: None,
        });
        self.track_expiry(household);
    }

    /// Restores the number of alerts a household has ever had (from the store), so its
    /// next alert takes a new episode — and a new id — however long ago the last one
    /// closed.
    pub fn restore_episodes(&mut self, household: HouseholdIdx, episodes: u32) {
        raise_episodes(&mut self.episodes, household, episodes);
    }

    /// Restores a closed (or expired) alert read back from the store.
    pub fn restore_closed_alert(
        &mut self,
        household: HouseholdIdx,
        closed: ClosedAlert,
        episode: u32,
    ) {
        raise_episodes(&mut self.episodes, household, episode + 1);
        self.closings.insert((closed.closed_at, household));
        let slot = slot_mut(&mut self.alerts, household);
        slot.handled.extend(closed.evidence.iter().cloned());
        slot.closed.push(closed);
    }

    /// Closes a household's open alert (its task was resolved) at `now`, which is
    /// `event_time` in event time. The alert's risks start their cool-down there;
    /// its evidence counts as handled.
    pub fn close_alert(
        &mut self,
        household: HouseholdIdx,
        now: DateTime<Utc>,
        event_time: DateTime<Utc>,
    ) -> Option<HouseholdAlert> {
        let slot = self.alerts.get_mut(household as usize)?.as_mut()?;
        let mut open = slot.open.take()?;
        if let Some(at) = open.expires_at {
            self.expiries.remove(&(at, household));
        }
        open.alert.status = AlertStatus::Closed;
        open.alert.closed_at = Some(now);
        open.alert.updated_at = now;
        slot.handled.extend(open.alert.evidence.iter().cloned());
        slot.closed.push(ClosedAlert {
            risk_types: open.alert.risk_types.clone(),
            level: open.alert.level,
            closed_at: event_time,
            evidence: open.alert.evidence.clone(),
            expired: false,
        });
        self.closings.insert((event_time, household));
        Some(open.alert)
    }

    /// The event time a household's open alert expires at: `rules.expiry_days`
    /// after its latest evidence, for an alert below the task level (one with a
    /// task ends with the task's outcome instead).
    fn expiry_of(&self, open: &OpenAlert) -> Option<DateTime<Utc>> {
        (open.task.is_none() && open.alert.level < self.rules.task_min_level)
            .then(|| open.alert.last_evidence_at + Duration::days(self.rules.expiry_days))
    }

    /// Files the household's open alert under the time it expires at (or takes it
    /// out, once it has a task).
    fn track_expiry(&mut self, household: HouseholdIdx) {
        let Some(open) = self
            .alerts
            .get(household as usize)
            .and_then(|slot| slot.as_deref())
            .and_then(|slot| slot.open.as_ref())
        else {
            return;
        };
        let due = self.expiry_of(open);
        if due == open.expires_at {
            return;
        }
        if let Some(at) = open.expires_at {
            self.expiries.remove(&(at, household));
        }
        if let Some(at) = due {
            self.expiries.insert((at, household));
        }
        if let Some(open) = self
            .alerts
            .get_mut(household as usize)
            .and_then(|slot| slot.as_deref_mut())
            .and_then(|slot| slot.open.as_mut())
        {
            open.expires_at = due;
        }
    }

    /// How far behind the latest event time accepted an alert's expiry must lie
    /// before the stream marks it expired on its own: events up to
    /// `rules.max_lateness_days` late still count as its evidence, so the household's
    /// events, not other households' arrival order, decide whether it expired.
    fn expiry_margin(&self) -> Duration {
        Duration::days(self.rules.max_lateness_days)
    }

    /// Expires the household's open alert if it is due by `time`.
    fn expire_by(&mut self, household: HouseholdIdx, time: DateTime<Utc>, now: DateTime<Utc>) {
        let due = self
            .slot(household)
            .and_then(|slot| slot.open.as_ref())
            .and_then(|open| open.expires_at);
        if due.is_some_and(|at| at <= time) {
            self.expire(household, now);
        }
    }

    /// Before the household's next event is judged: expires its open alert if the
    /// stream had marked it expired (see [`HouseholdRules::advance`]) by `clock_before`,
    /// the latest event time accepted before the event's record — what taking the
    /// records one by one, each batch ending with `advance`, gives.
    pub fn expire_if_marked(
        &mut self,
        household: HouseholdIdx,
        clock_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let marked_until = clock_before - self.expiry_margin();
        self.expire_by(household, marked_until, now);
    }

    /// With `clock` the latest event time accepted: marks expired every open alert
    /// whose expiry lies `rules.max_lateness_days` or more behind it (no event still
    /// to come can be its evidence), and lets closed and expired alerts out of reach
    /// of `clock` leave memory.
    pub fn advance(&mut self, clock: DateTime<Utc>, now: DateTime<Utc>) {
        let marked_until = clock - self.expiry_margin();
        while let Some(&(at, household)) = self.expiries.first() {
            if at > marked_until {
                break;
            }
            self.expiries.remove(&(at, household));
            let current = self
                .slot(household)
                .and_then(|slot| slot.open.as_ref())
                .and_then(|open| open.expires_at);
            if current == Some(at) {
                self.expire(household, now);
            }
        }
        let reach = clock - Duration::days(self.rules.closed_alert_reach_days());
        while let Some(&(at, household)) = self.closings.first() {
            if at >= reach {
                break;
            }
            self.closings.remove(&(at, household));
            let Some(entry) = self.alerts.get_mut(household as usize) else {
                continue;
            };
            let Some(slot) = entry.as_deref_mut() else {
                continue;
            };
            let before = slot.closed.len();
            slot.closed.retain(|closed| closed.closed_at >= reach);
            if slot.closed.len() != before {
                slot.handled = slot
                    .closed
                    .iter()
                    .flat_map(|closed| closed.evidence.iter().cloned())
                    .collect();
            }
            if slot.is_empty() {
                *entry = None;
            }
        }
    }

    /// Expires the household's open alert at the event time it was due.
    fn expire(&mut self, household: HouseholdIdx, now: DateTime<Utc>) {
        let Some(slot) = self
            .alerts
            .get_mut(household as usize)
            .and_then(|slot| slot.as_deref_mut())
        else {
            return;
        };
        let Some(at) = slot.open.as_ref().and_then(|open| open.expires_at) else {
            return;
        };
        let Some(open) = slot.open.take() else {
            return;
        };
        self.expiries.remove(&(at, household));
        let mut alert = open.alert;
        alert.status = AlertStatus::Expired;
        alert.closed_at = Some(now);
        alert.updated_at = now;
        slot.handled.extend(alert.evidence.iter().cloned());
        slot.closed.push(ClosedAlert {
            risk_types: alert.risk_types.clone(),
            level: alert.level,
            closed_at: at,
            evidence: alert.evidence.clone(),
            expired: true,
        });
        self.closings.insert((at, household));
        self.dirty.remove(&household);
        self.expired.push((alert, at));
    }

    /// Open alerts and closed (or expired) ones held in memory.
    pub fn alerts_held(&self) -> (usize, usize) {
        self.alerts
            .iter()
            .flatten()
            .fold((0, 0), |(open, closed), slot| {
                (
                    open + usize::from(slot.open.is_some()),
                    closed + slot.closed.len(),
                )
            })
    }

    /// The open alert of a household, if any.
    pub fn open_alert(&self, household: HouseholdIdx) -> Option<&HouseholdAlert> {
        self.slot(household)
            .and_then(|slot| slot.open.as_ref())
            .map(|open| &open.alert)
    }

    fn slot(&self, household: HouseholdIdx) -> Option<&AlertSlot> {
        self.alerts.get(household as usize)?.as_deref()
    }

    /// Inserts in (time, id) order; false for a duplicate.
    fn insert(&mut self, household: HouseholdIdx, event: RiskEvent) -> bool {
        let keep = self.lookback() + Duration::days(self.rules.max_lateness_days);
        let index = household as usize;
        if self.windows.len() <= index {
            self.windows.resize_with(index + 1, Vec::new);
        }
        let window = &mut self.windows[index];
        // Most events arrive in time order: check the end before searching.
        let position = match window.last() {
            Some(last)
                if (last.occurred_at, &last.event_id) < (event.occurred_at, &event.event_id) =>
            {
                window.len()
            }
            None => 0,
            Some(_) => match window.binary_search_by(|e| {
                (e.occurred_at, &e.event_id).cmp(&(event.occurred_at, &event.event_id))
            }) {
                Ok(_) => return false,
                Err(position) => position,
            },
        };
        // Prune what no judgement within the lateness bound can reach. An event that
        // comes in order leaves older ones that no later judgement reaches either
        // (its window starts after them), so those go only when the window would
        // otherwise grow its storage, and most inserts do no date arithmetic; a late
        // event prunes at once, so a too-late one is dropped as before.
        let prune = |window: &mut Vec<RiskEvent>, newest: DateTime<Utc>| {
            let oldest_kept = newest - keep;
            let cut = window.partition_point(|e| e.occurred_at < oldest_kept);
            if cut > 0 {
                window.drain(..cut);
            }
        };
        if position < window.len() {
            window.insert(position, event);
            if let Some(newest) = window.last().map(|e| e.occurred_at) {
                prune(window, newest);
            }
        } else {
            if window.len() == window.capacity() {
                prune(window, event.occurred_at);
            }
            window.push(event);
        }
        true
    }

    /// Adds a household event, reported at `reported_at`, and judges every window it
    /// falls in. A task it opens counts its days from `reported_at`: the warning's
    /// time, so a replay gives the same due dates.
    pub fn apply(
        &mut self,
        registry: &Registry,
        household: HouseholdIdx,
        event: RiskEvent,
        reported_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let occurred_at = event.occurred_at;
        if !self.insert(household, event) {
            return;
        }
        // An event at or after the open alert's expiry comes after so many days
        // without new evidence: the alert expired first, and the event is judged
        // without it. The household's own events decide this, in event time.
        self.expire_by(household, occurred_at, now);
        let lookback = self.lookback();
        let HouseholdRules {
            rules,
            policy,
            windows,
            alerts,
            episodes,
            dirty,
            dirty_tasks,
            suppressed,
            scratch,
            lines,
            budgets,
            ..
        } = self;
        let Some(window) = windows.get(household as usize) else {
            return;
        };
        let record = registry.household(household);
        // Judgement points: each distinct event time from this event's up to one
        // window later (later windows do not contain it).
        let first = window.partition_point(|e| e.occurred_at < occurred_at);
        // The first point is the event's own time; the end is worked out only when
        // a later event follows it (the event came late).
        let mut last_point = None;
        let mut previous = None;
        for judged in &window[first..] {
            let point = judged.occurred_at;
            if previous == Some(point) {
                continue;
            }
            if previous.is_some()
                && point >= *last_point.get_or_insert_with(|| occurred_at + lookback)
            {
                break;
            }
            previous = Some(point);
            let window_start = point - lookback;
            let start = window.partition_point(|e| e.occurred_at <= window_start);
            let end = window.partition_point(|e| e.occurred_at <= point);
            let events = &window[start..end];
            let line = lines.get(policy, record, point);
            let evaluation = evaluate_with(
                scratch,
                HouseholdContext {
                    household: record,
                    monitoring_line: line,
                },
                events,
                rules,
            );
            if evaluation.findings.is_empty() {
                continue;
            }
            let slot = slot_mut(alerts, household);
            let merged = merge(
                slot,
                episodes_mut(episodes, household),
                record,
                point,
                line,
                evaluation,
                events,
                rules,
                budgets,
                reported_at,
                now,
            );
            *suppressed += merged.suppressed;
            if merged.alert_changed {
                dirty.insert(household);
            }
            if merged.task_changed {
                dirty_tasks.insert(household);
            }
        }
        self.track_expiry(household);
    }

    #[cfg(test)]
    fn monitoring_line(&self, household: &Household, at: DateTime<Utc>) -> f64 {
        monitoring_line(&self.policy, household, at)
    }

    /// Takes what changed since the last call.
    pub fn drain(&mut self) -> RuleOutputs {
        let alerts = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|idx| self.open_alert(idx).cloned())
            .collect();
        let tasks = std::mem::take(&mut self.dirty_tasks)
            .into_iter()
            .filter_map(|idx| {
                self.slot(idx)
                    .and_then(|slot| slot.open.as_ref())
                    .and_then(|open| open.task.clone())
            })
            .collect();
        RuleOutputs {
            alerts,
            tasks,
            suppressed: std::mem::take(&mut self.suppressed),
            expired: std::mem::take(&mut self.expired),
        }
    }

    /// Households with a window (for memory accounting and tests).
    pub fn household_windows(&self) -> usize {
        self.windows.iter().filter(|w| !w.is_empty()).count()
    }
}

/// Raises a household's episode count to at least `episodes`.
fn raise_episodes(all: &mut Vec<u32>, household: HouseholdIdx, episodes: u32) {
    let count = episodes_mut(all, household);
    *count = (*count).max(episodes);
}

/// A household's episode count, created on first use.
fn episodes_mut(all: &mut Vec<u32>, household: HouseholdIdx) -> &mut u32 {
    let index = household as usize;
    if all.len() <= index {
        all.resize(index + 1, 0);
    }
    &mut all[index]
}

/// The alert slot of a household, created on first use.
fn slot_mut(alerts: &mut Vec<Option<Box<AlertSlot>>>, household: HouseholdIdx) -> &mut AlertSlot {
    let index = household as usize;
    if alerts.len() <= index {
        alerts.resize_with(index + 1, || None);
    }
    alerts[index].get_or_insert_with(Box::default)
}

/// The monitoring line for a household at a time: its province's (or the national)
/// line of that year in China Standard Time; before every configured year, the
/// earliest national line.
fn monitoring_line(policy: &PolicySettings, household: &Household, at: DateTime<Utc>) -> f64 {
    policy.line_in_force(&household.region_code.to_string(), cst_year(at))
}

/// What merging one evaluation changed.
#[derive(Debug, Default)]
struct Merged {
    alert_changed: bool,
    task_changed: bool,
    suppressed: u64,
}

/// Folds one evaluation (of the window `events` at `point`) into the household's
/// open alert, opening one if needed, and opens or raises its task.
#[allow(clippy::too_many_arguments)]
fn merge(
    slot: &mut AlertSlot,
    episodes: &mut u32,
    household: &Household,
    point: DateTime<Utc>,
    line: f64,
    evaluation: Evaluation,
    events: &[RiskEvent],
    rules: &RuleSettings,
    budgets: &Budgets,
    reported_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Merged {
    let cooldown = Duration::days(rules.cooldown_days);
    let mut merged = Merged::default();
    // Drop findings that rest only on events a visit already handled, and findings
    // of a risk still cooling down after a closed alert.
    let mut findings = evaluation.findings;
    if !slot.closed.is_empty() {
        findings.retain(|f| {
            let fresh = f
                .evidence
                .iter()
                .any(|&i| !slot.handled.contains(&events[i as usize].event_id));
            if !fresh {
                return false;
            }
            let newest = f.evidence.last().map(|&i| events[i as usize].occurred_at);
            let cooling = f.risk_type.is_some_and(|risk| {
                slot.closed.iter().any(|c| {
                    !c.expired
                        && c.risk_types.contains(&risk)
                        && f.level <= c.level
                        && newest.is_some_and(|t| t <= c.closed_at + cooldown)
                })
            });
            merged.suppressed += u64::from(cooling);
            !cooling
        });
    }
    // A combined finding whose companions were all dropped has nothing to add.
    if findings.iter().all(|f| f.risk_type.is_none()) {
        return merged;
    }
    let open = slot.open.get_or_insert_with(|| {
        let episode = *episodes;
        *episodes += 1;
        let alert_id = stable_id(
            "alert",
            &[
                household.household_id.as_str().as_bytes(),
                &episode.to_le_bytes(),
            ],
        );
        OpenAlert {
            alert: HouseholdAlert {
                alert_id,
                episode,
                judgements: Default::default(),
                household_id: household.household_id.clone(),
                region_code: household.region_code,
                level: Level::Blue,
                action: Action::Identify,
                proposed_monitoring_type: None,
                risk_types: Vec::new(),
                hazards: Vec::new(),
                rules: Vec::new(),
                evidence: Vec::new(),
                evidence_count: 0,
                status: AlertStatus::Open,
                household_status: household.status,
                per_capita_income_yuan: household.per_capita_income(),
                adjusted_per_capita_income_yuan: evaluation.adjusted_per_capita_income,
                monitoring_line_yuan: line,
                task_id: None,
                opened_at: now,
                updated_at: now,
                closed_at: None,
                first_evidence_at: point,
                last_evidence_at: point,
                outcome: None,
                decision: None,
            },
            task: None,
            details: HashMap::new(),
            expires_at: None,
        }
    });
    let alert = &mut open.alert;
    let mut visible = false;
    for finding in findings {
        let at = (finding.level, point);
        let position = alert
            .rules
            .binary_search_by(|r| r.rule_id.as_str().cmp(finding.rule_id));
        let rule = match position {
            Ok(i) => &mut alert.rules[i],
            Err(i) => {
                alert.rules.insert(
                    i,
                    RuleFinding {
                        rule_id: finding.rule_id.to_string(),
                        level: finding.level,
                        risk_type: finding.risk_type,
                        reason: String::new(),
                        evidence: Vec::new(),
                    },
                );
                visible = true;
                &mut alert.rules[i]
            }
        };
        if finding.level > rule.level {
            rule.level = finding.level;
            visible = true;
        }
        for &i in &finding.evidence {
            let id = &events[i as usize].event_id;
            if let Err(at) = rule.evidence.binary_search(id) {
                rule.evidence.insert(at, id.clone());
                visible = true;
            }
        }
        // The reason kept is the one judged at the highest (level, time), so it
        // does not depend on the order evaluations ran in.
        let kept = alert.judgements.reasons.get(finding.rule_id).copied();
        if kept.is_none_or(|kept| at >= kept) {
            if kept != Some(at) {
                alert
                    .judgements
                    .reasons
                    .insert(finding.rule_id.to_string(), at);
                merged.alert_changed = true;
            }
            if rule.reason.is_empty() || open.details.get(finding.rule_id) != Some(&finding.detail)
            {
                let reason = finding.detail.reason();
                if reason != rule.reason {
                    rule.reason = reason;
                    visible = true;
                }
                open.details.insert(finding.rule_id, finding.detail);
            }
        }
        if finding.level > alert.level {
            alert.level = finding.level;
            visible = true;
        }
        if let Some(risk) = finding.risk_type
            && let Err(at) = alert.risk_types.binary_search(&risk)
        {
            alert.risk_types.insert(at, risk);
            visible = true;
        }
        if let Some(hazard) = finding.hazard
            && let Err(at) = alert.hazards.binary_search(&hazard)
        {
            alert.hazards.insert(at, hazard);
            visible = true;
        }
        for &i in &finding.evidence {
            let event = &events[i as usize];
            if let Err(at) = alert.evidence.binary_search(&event.event_id) {
                alert.evidence.insert(at, event.event_id.clone());
                let times = &mut alert.judgements.evidence_at;
                times.insert(at.min(times.len()), event.occurred_at);
                alert.evidence_count += 1;
                alert.first_evidence_at = alert.first_evidence_at.min(event.occurred_at);
                alert.last_evidence_at = alert.last_evidence_at.max(event.occurred_at);
                visible = true;
            }
        }
    }
    // The list is capped: beyond the limit, the oldest evidence no later judgement can
    // cite (before the look-back and the lateness of this point) leaves it, so the
    // count stays exact; a rule keeps its last event.
    if alert.evidence.len() > rules.max_evidence_per_alert {
        let reach =
            point - Duration::days(rules.lookback_days) - Duration::days(rules.max_lateness_days);
        visible |= cap_evidence(alert, rules.max_evidence_per_alert, reach);
    }
    if alert.judgements.income_at.is_none_or(|at| point >= at) {
        if alert.judgements.income_at != Some(point) {
            alert.judgements.income_at = Some(point);
            merged.alert_changed = true;
        }
        if alert.adjusted_per_capita_income_yuan != evaluation.adjusted_per_capita_income
            || alert.monitoring_line_yuan != line
        {
            alert.adjusted_per_capita_income_yuan = evaluation.adjusted_per_capita_income;
            alert.monitoring_line_yuan = line;
            visible = true;
        }
    }
    let (action, proposed) = action_for(
        household,
        alert.adjusted_per_capita_income_yuan,
        alert.monitoring_line_yuan,
        rules.hardship_income_ratio,
    );
    if (action, proposed, household.status)
        != (
            alert.action,
            alert.proposed_monitoring_type,
            alert.household_status,
        )
        || household.per_capita_income() != alert.per_capita_income_yuan
    {
        alert.action = action;
        alert.proposed_monitoring_type = proposed;
        alert.household_status = household.status;
        alert.per_capita_income_yuan = household.per_capita_income();
        visible = true;
    }

    // A task once the level reaches the configured minimum; its priority follows
    // the alert's level.
    if alert.level >= rules.task_min_level {
        match &mut open.task {
            None => {
                let task_id = stable_id("task", &[alert.alert_id.as_bytes()]);
                alert.task_id = Some(task_id.clone());
                open.task = Some(ScreeningTask::open(
                    NewTask {
                        task_id,
                        kind: TaskKind::from(alert.action),
                        alert_id: Some(alert.alert_id.clone()),
                        signal_id: None,
                        household_id: Some(alert.household_id.clone()),
                        village_code: alert.region_code,
                        level: alert.level,
                        priority_households: Vec::new(),
                    },
                    budgets.for_region(alert.region_code),
                    reported_at,
                    now,
                ));
                merged.task_changed = true;
                visible = true;
            }
            Some(task) if task.level < alert.level => {
                task.level = alert.level;
                task.updated_at = now;
                merged.task_changed = true;
            }
            Some(_) => {}
        }
    }
    // Only a change users can see moves `updated_at`; a change of where a part was
    // judged is still written, so a restart resumes it exactly.
    if visible {
        alert.updated_at = now;
        merged.alert_changed = true;
    }
    merged
}

/// Drops the oldest evidence before `reach` until `alert` lists at most `cap` events
/// (or none is left to drop); a rule's only event stays. True when any left.
fn cap_evidence(alert: &mut HouseholdAlert, cap: usize, reach: DateTime<Utc>) -> bool {
    if alert.judgements.evidence_at.len() != alert.evidence.len() {
        // Restored from a store that did not keep the times: the oldest known.
        let oldest = alert.first_evidence_at;
        alert.judgements.evidence_at = vec![oldest; alert.evidence.len()];
    }
    let mut dropped = false;
    while alert.evidence.len() > cap {
        let sole: Vec<EventId> = alert
            .rules
            .iter()
            .filter(|r| r.evidence.len() == 1)
            .map(|r| r.evidence[0].clone())
            .collect();
        let victim = (0..alert.evidence.len())
            .filter(|&i| {
                alert.judgements.evidence_at[i] < reach && !sole.contains(&alert.evidence[i])
            })
            .min_by_key(|&i| (alert.judgements.evidence_at[i], &alert.evidence[i]));
        let Some(victim) = victim else {
            break;
        };
        let id = alert.evidence.remove(victim);
        alert.judgements.evidence_at.remove(victim);
        for rule in &mut alert.rules {
            if let Ok(at) = rule.evidence.binary_search(&id) {
                rule.evidence.remove(at);
            }
        }
        dropped = true;
    }
    dropped
}

/// The action a household's status calls for, and for `identify` the category it
/// would be identified as: above `hardship_ratio` × line after the shocks, a
/// 突发严重困难户; otherwise a lifted household is 脱贫不稳定户 and an ordinary one
/// 边缘易致贫户.
pub fn action_for(
    household: &Household,
    adjusted_per_capita: f64,
    line: f64,
    hardship_ratio: f64,
) -> (Action, Option<MonitoringType>) {
    match household.status {
        HouseholdStatus::Monitored if household.risk_eliminated_on.is_some() => {
            (Action::Recheck, None)
        }
        HouseholdStatus::Monitored => (Action::ReviewAssistance, None),
        status => {
            let category = if adjusted_per_capita > line * hardship_ratio {
                MonitoringType::SuddenHardship
            } else if status == HouseholdStatus::Lifted {
                MonitoringType::UnstableLifted
            } else {
                MonitoringType::Marginal
            };
            (Action::Identify, Some(category))
        }
    }
}

#[cfg(test)]
mod tests;
