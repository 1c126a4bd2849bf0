//! Household rules stage: resolved household events -> alerts and screening tasks.
//! Keeps each household's recent risk facts (the look-back window), judges the
//! window at the event's time and at every later event time it affects (so a late
//! event re-judges what it changes, and results do not depend on arrival order),
//! and folds the findings into the household's one open alert. Cannot fail.

pub mod evaluate;
pub mod facts;

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, Utc};

use crate::config::{PolicySettings, RuleSettings};
use crate::domain::alert::{Action, AlertStatus, HouseholdAlert, Level, RiskType, RuleFinding};
use crate::domain::ids::{EventId, stable_id};
use crate::domain::registry::{Household, HouseholdIdx, HouseholdStatus, MonitoringType, Registry};
use crate::domain::task::{ScreeningTask, TaskKind, TaskStatus};

use evaluate::{Evaluation, HouseholdContext, evaluate};
use facts::RiskEvent;

/// A closed alert, as far as the cool-down needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedAlert {
    /// Its risk types.
    pub risk_types: Vec<RiskType>,
    /// Its level.
    pub level: Level,
    /// When it closed.
    pub closed_at: DateTime<Utc>,
    /// Its evidence: events already handled by a visit.
    pub evidence: Vec<EventId>,
}

/// Per-household alert state.
#[derive(Debug, Default)]
struct AlertSlot {
    open: Option<OpenAlert>,
    closed: Vec<ClosedAlert>,
    handled: HashSet<EventId>,
    /// Alerts ever opened: the next alert's episode number.
    episodes: u32,
}

#[derive(Debug)]
struct OpenAlert {
    alert: HouseholdAlert,
    task: Option<ScreeningTask>,
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
}

/// The household rules with their state.
#[derive(Debug)]
pub struct HouseholdRules {
    rules: RuleSettings,
    policy: PolicySettings,
    windows: HashMap<HouseholdIdx, Vec<RiskEvent>>,
    alerts: HashMap<HouseholdIdx, AlertSlot>,
    dirty: BTreeSet<HouseholdIdx>,
    dirty_tasks: BTreeSet<HouseholdIdx>,
    suppressed: u64,
}

impl HouseholdRules {
    /// An empty stage.
    pub fn new(rules: RuleSettings, policy: PolicySettings) -> Self {
        HouseholdRules {
            rules,
            policy,
            windows: HashMap::new(),
            alerts: HashMap::new(),
            dirty: BTreeSet::new(),
            dirty_tasks: BTreeSet::new(),
            suppressed: 0,
        }
    }

    fn lookback(&self) -> Duration {
        Duration::days(self.rules.lookback_days)
    }

    /// Adds an event to a household's window without judging it (state rebuilt
    /// from the store). Returns false if the event was already there.
    pub fn restore_event(&mut self, household: HouseholdIdx, event: RiskEvent) -> bool {
        self.insert(household, event).is_some()
    }

    /// Restores an open alert (and its task) read back from the store.
    pub fn restore_open_alert(
        &mut self,
        household: HouseholdIdx,
        alert: HouseholdAlert,
        task: Option<ScreeningTask>,
        episode: u32,
    ) {
        let slot = self.alerts.entry(household).or_default();
        slot.episodes = slot.episodes.max(episode + 1);
        slot.open = Some(OpenAlert { alert, task });
    }

    /// Restores a closed alert read back from the store.
    pub fn restore_closed_alert(
        &mut self,
        household: HouseholdIdx,
        closed: ClosedAlert,
        episode: u32,
    ) {
        let slot = self.alerts.entry(household).or_default();
        slot.episodes = slot.episodes.max(episode + 1);
        slot.handled.extend(closed.evidence.iter().cloned());
        slot.closed.push(closed);
    }

    /// Closes a household's open alert (its task was resolved). The alert's risks
    /// start their cool-down; its evidence counts as handled.
    pub fn close_alert(
        &mut self,
        household: HouseholdIdx,
        now: DateTime<Utc>,
    ) -> Option<HouseholdAlert> {
        let slot = self.alerts.get_mut(&household)?;
        let mut open = slot.open.take()?;
        open.alert.status = AlertStatus::Closed;
        open.alert.closed_at = Some(now);
        open.alert.updated_at = now;
        slot.handled.extend(open.alert.evidence.iter().cloned());
        slot.closed.push(ClosedAlert {
            risk_types: open.alert.risk_types.clone(),
            level: open.alert.level,
            closed_at: now,
            evidence: open.alert.evidence.clone(),
        });
        Some(open.alert)
    }

    /// The open alert of a household, if any.
    pub fn open_alert(&self, household: HouseholdIdx) -> Option<&HouseholdAlert> {
        self.alerts
            .get(&household)
            .and_then(|slot| slot.open.as_ref())
            .map(|open| &open.alert)
    }

    /// Inserts in (time, id) order; returns the index, or `None` for a duplicate.
    fn insert(&mut self, household: HouseholdIdx, event: RiskEvent) -> Option<usize> {
        let keep = self.lookback() + Duration::days(self.rules.max_lateness_days);
        let window = self.windows.entry(household).or_default();
        let key = (event.occurred_at, event.event_id.clone());
        let position =
            match window.binary_search_by(|e| (e.occurred_at, &e.event_id).cmp(&(key.0, &key.1))) {
                Ok(_) => return None,
                Err(position) => position,
            };
        window.insert(position, event);
        // Prune what no judgement within the lateness bound can reach.
        let newest = window.last().map(|e| e.occurred_at)?;
        let cut = window.partition_point(|e| e.occurred_at < newest - keep);
        if cut > 0 {
            window.drain(..cut);
        }
        window
            .iter()
            .position(|e| e.occurred_at == key.0 && e.event_id == key.1)
    }

    /// Adds a household event and judges every window it falls in.
    pub fn apply(
        &mut self,
        registry: &Registry,
        household: HouseholdIdx,
        event: RiskEvent,
        now: DateTime<Utc>,
    ) {
        let occurred_at = event.occurred_at;
        if self.insert(household, event).is_none() {
            return;
        }
        let lookback = self.lookback();
        let Some(window) = self.windows.get(&household) else {
            return;
        };
        // Judgement points: each distinct event time from this event's up to one
        // window later (later windows do not contain it).
        let mut points: Vec<DateTime<Utc>> = window
            .iter()
            .map(|e| e.occurred_at)
            .filter(|&t| t >= occurred_at && t < occurred_at + lookback)
            .collect();
        points.dedup();
        let record = registry.household(household);
        let mut evaluations = Vec::with_capacity(points.len());
        for point in points {
            let start = window.partition_point(|e| e.occurred_at <= point - lookback);
            let end = window.partition_point(|e| e.occurred_at <= point);
            let slice: Vec<&RiskEvent> = window[start..end].iter().collect();
            let line = self.monitoring_line(record, point);
            let evaluation = evaluate(
                HouseholdContext {
                    household: record,
                    monitoring_line: line,
                },
                &slice,
                &self.rules,
            );
            if !evaluation.findings.is_empty() {
                let times: HashMap<EventId, DateTime<Utc>> = slice
                    .iter()
                    .map(|e| (e.event_id.clone(), e.occurred_at))
                    .collect();
                evaluations.push((point, line, evaluation, times));
            }
        }
        for (point, line, evaluation, times) in evaluations {
            self.merge(household, record, point, line, evaluation, &times, now);
        }
    }

    fn monitoring_line(&self, household: &Household, at: DateTime<Utc>) -> f64 {
        let year = (at + Duration::hours(8)).year();
        let code = household.region_code.to_string();
        // The settings check guarantees a national default line; a year before
        // every configured line falls back to the earliest national one.
        self.policy
            .monitoring_line(&code, year)
            .or_else(|| {
                self.policy
                    .monitoring_lines
                    .iter()
                    .filter(|l| l.region_prefix.is_empty())
                    .min_by_key(|l| l.from_year)
                    .map(|l| l.yuan_per_capita)
            })
            .unwrap_or(f64::INFINITY)
    }

    #[allow(clippy::too_many_arguments)]
    fn merge(
        &mut self,
        idx: HouseholdIdx,
        household: &Household,
        point: DateTime<Utc>,
        line: f64,
        evaluation: Evaluation,
        times: &HashMap<EventId, DateTime<Utc>>,
        now: DateTime<Utc>,
    ) {
        let cooldown = Duration::days(self.rules.cooldown_days);
        let slot = self.alerts.entry(idx).or_default();
        // Drop findings that rest only on events a visit already handled, and
        // findings of a risk still cooling down after a closed alert.
        let mut suppressed = 0;
        let findings: Vec<_> = evaluation
            .findings
            .into_iter()
            .filter(|f| f.evidence.iter().any(|e| !slot.handled.contains(e)))
            .filter(|f| {
                let newest = f.evidence.iter().filter_map(|e| times.get(e)).max();
                let cooling = f.risk_type.is_some_and(|risk| {
                    slot.closed.iter().any(|c| {
                        c.risk_types.contains(&risk)
                            && f.level <= c.level
                            && newest.is_some_and(|&t| t <= c.closed_at + cooldown)
                    })
                });
                suppressed += u64::from(cooling);
                !cooling
            })
            .collect();
        self.suppressed += suppressed;
        // A combined finding whose companions were all dropped has nothing to add.
        if findings.iter().all(|f| f.risk_type.is_none()) {
            return;
        }
        let open = slot.open.get_or_insert_with(|| {
            let episode = slot.episodes;
            slot.episodes += 1;
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
                },
                task: None,
            }
        });
        let before = open.alert.clone();
        let alert = &mut open.alert;
        for finding in findings {
            let at = (finding.level, point);
            match alert
                .rules
                .iter_mut()
                .find(|r| r.rule_id == finding.rule_id)
            {
                Some(rule) => {
                    for id in &finding.evidence {
                        if !rule.evidence.contains(id) {
                            rule.evidence.push(id.clone());
                        }
                    }
                    rule.evidence.sort();
                    let kept = alert.judgements.reasons.get(finding.rule_id).copied();
                    rule.level = rule.level.max(finding.level);
                    if kept.is_none_or(|kept| at >= kept) {
                        rule.reason = finding.reason;
                        alert
                            .judgements
                            .reasons
                            .insert(finding.rule_id.to_string(), at);
                    }
                }
                None => {
                    let mut evidence = finding.evidence.clone();
                    evidence.sort();
                    alert.rules.push(RuleFinding {
                        rule_id: finding.rule_id.to_string(),
                        level: finding.level,
                        risk_type: finding.risk_type,
                        reason: finding.reason,
                        evidence,
                    });
                    alert
                        .judgements
                        .reasons
                        .insert(finding.rule_id.to_string(), at);
                }
            }
            alert.level = alert.level.max(finding.level);
            if let Some(risk) = finding.risk_type
                && !alert.risk_types.contains(&risk)
            {
                alert.risk_types.push(risk);
            }
            if let Some(hazard) = finding.hazard
                && !alert.hazards.contains(&hazard)
            {
                alert.hazards.push(hazard);
            }
            for id in finding.evidence {
                if !alert.evidence.contains(&id) {
                    if let Some(&t) = times.get(&id) {
                        alert.first_evidence_at = alert.first_evidence_at.min(t);
                        alert.last_evidence_at = alert.last_evidence_at.max(t);
                    }
                    alert.evidence.push(id);
                }
            }
        }
        alert.rules.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
        alert.risk_types.sort();
        alert.hazards.sort();
        alert.evidence.sort();
        if alert.judgements.income_at.is_none_or(|at| point >= at) {
            alert.judgements.income_at = Some(point);
            alert.adjusted_per_capita_income_yuan = evaluation.adjusted_per_capita_income;
            alert.monitoring_line_yuan = line;
        }
        alert.household_status = household.status;
        alert.per_capita_income_yuan = household.per_capita_income();
        let (action, proposed) = action_for(
            household,
            alert.adjusted_per_capita_income_yuan,
            alert.monitoring_line_yuan,
            self.rules.hardship_income_ratio,
        );
        alert.action = action;
        alert.proposed_monitoring_type = proposed;

        // A task once the level reaches the configured minimum; its priority
        // follows the alert's level.
        if alert.level >= self.rules.task_min_level {
            match &mut open.task {
                None => {
                    let task_id = stable_id("task", &[alert.alert_id.as_bytes()]);
                    alert.task_id = Some(task_id.clone());
                    open.task = Some(ScreeningTask {
                        task_id,
                        kind: TaskKind::from(alert.action),
                        alert_id: Some(alert.alert_id.clone()),
                        signal_id: None,
                        household_id: Some(alert.household_id.clone()),
                        village_code: alert.region_code,
                        level: alert.level,
                        status: TaskStatus::Open,
                        due_at: now + Duration::days(self.rules.task_due_days),
                        created_at: now,
                        updated_at: now,
                        outcome: None,
                        outcome_note: None,
                        assignee: None,
                    });
                    self.dirty_tasks.insert(idx);
                }
                Some(task) if task.level < alert.level => {
                    task.level = alert.level;
                    task.updated_at = now;
                    self.dirty_tasks.insert(idx);
                }
                Some(_) => {}
            }
        }
        if *alert != before {
            // Only a change users can see moves `updated_at`; a change of where a
            // part was judged is still written, so a restart resumes it exactly.
            let mut seen = before;
            seen.judgements = alert.judgements.clone();
            let visible = *alert != seen;
            if visible {
                alert.updated_at = now;
            }
            self.dirty.insert(idx);
        }
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
                self.alerts
                    .get(&idx)
                    .and_then(|slot| slot.open.as_ref())
                    .and_then(|open| open.task.clone())
            })
            .collect();
        RuleOutputs {
            alerts,
            tasks,
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }

    /// Households with a window (for memory accounting and tests).
    pub fn household_windows(&self) -> usize {
        self.windows.len()
    }
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
