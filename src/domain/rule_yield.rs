//! The per-rule yield (预警成效): for each household rule, the alerts it fired in, the
//! screening tasks those alerts opened, and what the tasks found — the measure of
//! alert fatigue (a county's 800 warnings for 6 households identified). A pure fold
//! over (alert, its task) rows the store reads; served at `GET /api/rules/yield` and
//! printed by `yujing report`. Cannot fail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alert::AlertStatus;
use super::event::wire_enum;
use super::task::{Decision, Outcome, Stage};

wire_enum! {
    /// What a closed task's outcome counts as in the yield (see [`YieldOutcome::of`]).
    YieldOutcome {
        /// 纳入监测: identified as a monitoring object.
        Identified = "identified",
        /// 风险回退: a risk-eliminated household's risk returned.
        RolledBack = "rolled_back",
        /// 不符合条件: verified and not taken in.
        NotEligible = "not_eligible",
        /// 核实无风险: no risk found.
        NoRisk = "no_risk",
        /// 调整帮扶措施: a monitored household's assistance adjusted.
        AssistanceAdjusted = "assistance_adjusted",
    }
}

impl YieldOutcome {
    /// Maps a closed task's [`Outcome`] and [`Decision`]:
    ///
    /// | outcome | decision | counts as |
    /// |---|---|---|
    /// | `identify` | approved | identified |
    /// | `risk_rollback` | approved | rolled back |
    /// | `identify`, `risk_rollback` | rejected (the county kept the registry as it was) | not eligible |
    /// | `not_eligible`, `already_monitored` (not taken in as a new object) | any | not eligible |
    /// | `no_risk_found` | any | no risk |
    /// | `assistance_adjusted` (a review of a monitored household) | any | assistance adjusted |
    ///
    /// A decision is only ever rejected at the county, on an outcome that changes
    /// the registry; the others close approved at the township.
    pub fn of(outcome: Outcome, decision: Option<Decision>) -> YieldOutcome {
        let rejected = decision == Some(Decision::Rejected);
        match outcome {
            Outcome::Identify if !rejected => YieldOutcome::Identified,
            Outcome::RiskRollback if !rejected => YieldOutcome::RolledBack,
            Outcome::Identify
            | Outcome::RiskRollback
            | Outcome::NotEligible
            | Outcome::AlreadyMonitored => YieldOutcome::NotEligible,
            Outcome::NoRiskFound => YieldOutcome::NoRisk,
            Outcome::AssistanceAdjusted => YieldOutcome::AssistanceAdjusted,
        }
    }
}

/// The figures of one rule (or of every alert).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct YieldFigures {
    /// Alerts (预警数): each alert once, whatever its status.
    pub alerts: u64,
    /// Of them, still open.
    pub open: u64,
    /// Of them, expired below the task level without new evidence.
    pub expired: u64,
    /// Of them, with a screening task (任务数).
    pub tasks: u64,
    /// Of the tasks, closed (办结).
    pub tasks_closed: u64,
    /// Closed tasks identified (纳入监测).
    pub identified: u64,
    /// Closed tasks whose risk rolled back (风险回退).
    pub rolled_back: u64,
    /// Closed tasks not eligible (不符合条件, already monitored, or rejected by the county).
    pub not_eligible: u64,
    /// Closed tasks with no risk found (核实无风险).
    pub no_risk: u64,
    /// Closed review tasks whose assistance was adjusted (调整帮扶措施).
    pub assistance_adjusted: u64,
    /// `identified` / `alerts` (识别率), between 0 and 1; null without alerts.
    pub identified_share: Option<f64>,
}

impl YieldFigures {
    fn add(&mut self, row: &YieldRow) {
        self.alerts += 1;
        match row.status {
            AlertStatus::Open => self.open += 1,
            AlertStatus::Expired => self.expired += 1,
            AlertStatus::Closed => {}
        }
        let Some(task) = &row.task else {
            return;
        };
        self.tasks += 1;
        if task.stage != Stage::Closed {
            return;
        }
        self.tasks_closed += 1;
        match task.outcome.map(|o| YieldOutcome::of(o, task.decision)) {
            Some(YieldOutcome::Identified) => self.identified += 1,
            Some(YieldOutcome::RolledBack) => self.rolled_back += 1,
            Some(YieldOutcome::NotEligible) => self.not_eligible += 1,
            Some(YieldOutcome::NoRisk) => self.no_risk += 1,
            Some(YieldOutcome::AssistanceAdjusted) => self.assistance_adjusted += 1,
            None => {}
        }
    }

    fn finish(&mut self) {
        self.identified_share =
            (self.alerts > 0).then(|| self.identified as f64 / self.alerts as f64);
    }
}

/// One rule's yield.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RuleYield {
    /// Rule id, e.g. `medical.high_out_of_pocket`.
    pub rule_id: String,
    /// Its figures: every alert the rule fired in counts, so an alert on several
    /// rules counts for each.
    #[serde(flatten)]
    pub figures: YieldFigures,
}

/// The yield of every rule, and of every alert once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RuleYieldReport {
    /// Every alert once (an alert on several rules counts once here).
    pub all: YieldFigures,
    /// By rule id, in id order.
    pub rules: Vec<RuleYield>,
}

/// An alert's task, as far as the yield needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YieldTask {
    /// Its stage.
    pub stage: Stage,
    /// The outcome decided upon, once closed.
    pub outcome: Option<Outcome>,
    /// The final word, once closed.
    pub decision: Option<Decision>,
}

/// One alert with its task: what the store reads for the yield.
#[derive(Debug, Clone, PartialEq)]
pub struct YieldRow {
    /// The rules it fired on.
    pub rule_ids: Vec<String>,
    /// Its status.
    pub status: AlertStatus,
    /// Its task, if it opened one.
    pub task: Option<YieldTask>,
}

/// Folds alerts into the yield.
#[derive(Debug, Default)]
pub struct YieldTally {
    all: YieldFigures,
    rules: BTreeMap<String, YieldFigures>,
}

impl YieldTally {
    /// Counts one alert (a rule listed twice counts once).
    pub fn add(&mut self, row: &YieldRow) {
        self.all.add(row);
        let mut seen: Vec<&str> = Vec::with_capacity(row.rule_ids.len());
        for rule in &row.rule_ids {
            if seen.contains(&rule.as_str()) {
                continue;
            }
            seen.push(rule);
            match self.rules.get_mut(rule.as_str()) {
                Some(figures) => figures.add(row),
                None => {
                    let mut figures = YieldFigures::default();
                    figures.add(row);
                    self.rules.insert(rule.clone(), figures);
                }
            }
        }
    }

    /// The figures, with their shares.
    pub fn finish(self) -> RuleYieldReport {
        let mut all = self.all;
        all.finish();
        RuleYieldReport {
            all,
            rules: self
                .rules
                .into_iter()
                .map(|(rule_id, mut figures)| {
                    figures.finish();
                    RuleYield { rule_id, figures }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rules: &[&str], status: AlertStatus, task: Option<YieldTask>) -> YieldRow {
        YieldRow {
            rule_ids: rules.iter().map(|r| r.to_string()).collect(),
            status,
            task,
        }
    }

    fn closed(outcome: Outcome, decision: Decision) -> Option<YieldTask> {
        Some(YieldTask {
            stage: Stage::Closed,
            outcome: Some(outcome),
            decision: Some(decision),
        })
    }

    #[test]
    fn every_outcome_maps_as_documented() {
        use Decision::*;
        use YieldOutcome::*;
        let table = [
            (Outcome::Identify, Approved, Identified),
            (Outcome::Identify, Rejected, NotEligible),
            (Outcome::RiskRollback, Approved, RolledBack),
            (Outcome::RiskRollback, Rejected, NotEligible),
            (Outcome::NotEligible, Approved, NotEligible),
            (Outcome::AlreadyMonitored, Approved, NotEligible),
            (Outcome::NoRiskFound, Approved, NoRisk),
            (Outcome::AssistanceAdjusted, Approved, AssistanceAdjusted),
        ];
        for (outcome, decision, counts) in table {
            assert_eq!(
                YieldOutcome::of(outcome, Some(decision)),
                counts,
                "{outcome}"
            );
        }
    }

    #[test]
    fn alerts_count_for_each_rule_and_once_in_all() {
        let mut tally = YieldTally::default();
        tally.add(&row(
            &["a.x", "b.y"],
            AlertStatus::Closed,
            closed(Outcome::Identify, Decision::Approved),
        ));
        tally.add(&row(
            &["a.x"],
            AlertStatus::Closed,
            closed(Outcome::NoRiskFound, Decision::Approved),
        ));
        tally.add(&row(
            &["a.x"],
            AlertStatus::Open,
            Some(YieldTask {
                stage: Stage::Visiting,
                outcome: None,
                decision: None,
            }),
        ));
        tally.add(&row(&["c.z", "c.z"], AlertStatus::Expired, None));
        let report = tally.finish();
        assert_eq!(report.all.alerts, 4);
        assert_eq!(report.all.tasks, 3);
        assert_eq!(report.all.tasks_closed, 2);
        assert_eq!(report.all.identified_share, Some(0.25));
        let ids: Vec<&str> = report.rules.iter().map(|r| r.rule_id.as_str()).collect();
        assert_eq!(ids, ["a.x", "b.y", "c.z"]);
        let a = &report.rules[0].figures;
        assert_eq!(
            (
                a.alerts,
                a.open,
                a.tasks,
                a.tasks_closed,
                a.identified,
                a.no_risk
            ),
            (3, 1, 3, 2, 1, 1)
        );
        assert_eq!(a.identified_share, Some(1.0 / 3.0));
        let c = &report.rules[2].figures;
        assert_eq!(
            (c.alerts, c.expired, c.tasks),
            (1, 1, 0),
            "a rule once per alert"
        );
        assert_eq!(c.identified_share, Some(0.0));
        assert_eq!(YieldTally::default().finish().all.identified_share, None);
    }
}
