//! The endpoints. Each takes the [`Caller`], checks the role's right (403) and the
//! region scope (404: what is outside does not exist for the caller), reads through
//! the store, and answers a documented view. The transition endpoint runs the
//! procedure's state machine and writes its effects in one transaction.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::auth::{
    Caller, JsonBody, MoveBody, QueryParams, decode_cursor, decode_id_cursor, encode_cursor,
    encode_id_cursor, page_size,
};
use super::problem::{ApiResult, Problem};
use super::views::*;
use crate::accounts::{AccountsError, Creator};
use crate::domain::account::{NewAccount, Right, Role};
use crate::domain::alert::{Action, AlertStatus, Level, RiskType};
use crate::domain::ids::RegionCode;
use crate::domain::signal::{RiskKind, SignalStatus};
use crate::domain::task::{Actor, Move, Stage, TaskKind};
use crate::store::api::{AlertFilter, AuditEntry, SignalFilter, TaskFilter, TransitionWrites};

/// For a department account: the risk kinds its feed contributes to (what it sees
/// of signals and series); `None` for every other role. A department account with no
/// feed sees none.
fn department_kinds(caller: &Caller) -> Option<&'static [RiskKind]> {
    (caller.0.role == Role::Department).then(|| {
        caller
            .0
            .source
            .map_or(&[][..], crate::domain::account::department_kinds)
    })
}

fn region_code(text: &str) -> Result<RegionCode, Problem> {
    RegionCode::parse(text).map_err(|_| Problem::not_found("region"))
}

/// The caller's account.
#[utoipa::path(get, path = "/api/me", tag = "accounts",
    responses((status = 200, body = Me), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Me>> {
    let name = state
        .store
        .regions_in(caller.scope())
        .await?
        .into_iter()
        .find(|r| r.code == caller.0.region)
        .map(|r| r.name);
    Ok(Json(Me::of(&caller.0, name)))
}

/// The caller's region and every region below it.
#[utoipa::path(get, path = "/api/regions", tag = "regions",
    responses((status = 200, body = RegionList), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn regions(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<RegionList>> {
    caller.require(Right::ReadRegions)?;
    let regions = state.store.regions_in(caller.scope()).await?;
    Ok(Json(RegionList {
        items: regions.iter().map(RegionView::from).collect(),
    }))
}

/// For the region and each child: open alerts by level and risk type, tasks by
/// stage, overdue tasks, days left on the task due first, active signals, monitored
/// households; and the first and last day with risk events counted in the region.
#[utoipa::path(get, path = "/api/regions/{code}/summary", tag = "regions",
    params(("code" = String, Path, description = "12-digit region code")),
    responses((status = 200, body = Summary), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
) -> ApiResult<Json<Summary>> {
    caller.require(Right::ReadRegions)?;
    let code = region_code(&code)?;
    caller.see(code, "region")?;
    let regions = state
        .store
        .regions_in(crate::domain::account::Scope { region: code })
        .await?;
    let region = regions
        .iter()
        .find(|r| r.code == code)
        .ok_or_else(|| Problem::not_found("region"))?;
    let now = Utc::now();
    let mut summary = state
        .summary
        .summary(&state.store, region, &regions, now)
        .await?;
    summary.counted_days = state
        .store
        .counted_span(&code.to_string(), RiskKind::AnyRisk.as_str())
        .await?
        .map(|(first, last)| CountedDays { first, last });
    Ok(Json(summary))
}

/// Parameters of the series.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// Risk kind (e.g. `unemployment`, `any_risk`).
    pub kind: RiskKind,
    /// First day (default: 90 days before `to`).
    pub from: Option<NaiveDate>,
    /// Last day (default: today, China Standard Time).
    pub to: Option<NaiveDate>,
}

/// The daily count series of a region and risk kind with each detector's expected
/// value, upper bound and alarm.
#[utoipa::path(get, path = "/api/regions/{code}/series", tag = "regions",
    params(("code" = String, Path, description = "12-digit region code"), SeriesQuery),
    responses((status = 200, body = Series), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn series(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    QueryParams(query): QueryParams<SeriesQuery>,
) -> ApiResult<Json<Series>> {
    caller.require(Right::ReadRegions)?;
    let code = region_code(&code)?;
    caller.see(code, "region")?;
    if department_kinds(&caller).is_some_and(|kinds| !kinds.contains(&query.kind)) {
        return Err(Problem::forbidden(
            "a department account sees the series its own feed contributes to",
        ));
    }
    let to = query
        .to
        .unwrap_or_else(|| crate::domain::task::cst_day(Utc::now()));
    let from = query.from.unwrap_or(to - chrono::Duration::days(90));
    if from > to {
        return Err(Problem::bad_parameter("from", "must not be after `to`"));
    }
    if (to - from).num_days() > 3660 {
        return Err(Problem::bad_parameter(
            "from",
            "at most ten years at a time",
        ));
    }
    let series = super::summary::series(
        &state.store,
        &state.settings.detect,
        code,
        query.kind,
        from,
        to,
    )
    .await?;
    Ok(Json(series))
}

/// Filters of the alert list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// Within this region (inside the caller's).
    pub region: Option<String>,
    /// Level.
    pub level: Option<Level>,
    /// Action.
    pub action: Option<Action>,
    /// Risk type.
    pub risk_type: Option<RiskType>,
    /// Open, closed or expired.
    pub status: Option<AlertStatus>,
    /// Raised at or after.
    pub from: Option<DateTime<Utc>>,
    /// Raised before.
    pub to: Option<DateTime<Utc>>,
    /// Page size (1-500).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// Alerts in the caller's region, newest first.
#[utoipa::path(get, path = "/api/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertPage), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn alerts(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<AlertQuery>,
) -> ApiResult<Json<AlertPage>> {
    caller.require(Right::ReadHouseholds)?;
    let limit = page_size(query.limit, state.settings.api.default_page_size)?;
    let filter = AlertFilter {
        region: caller.narrow(query.region.as_deref())?,
        level: query.level.map(|l| l.to_string()),
        action: query.action.map(|a| a.to_string()),
        risk_type: query.risk_type.map(|r| r.to_string()),
        status: query.status.map(|s| s.to_string()),
        from: query.from,
        to: query.to,
        household: None,
    };
    let after = decode_cursor(query.cursor.as_deref())?;
    let alerts = state
        .store
        .list_alerts(caller.scope(), &filter, after.as_ref(), limit)
        .await?;
    let detail = caller.0.role.may(Right::DepartmentDetail);
    let next = (alerts.len() == limit as usize)
        .then(|| {
            alerts
                .last()
                .map(|a| encode_cursor(a.opened_at, &a.alert_id))
        })
        .flatten();
    Ok(Json(AlertPage {
        items: alerts.iter().map(|a| AlertView::of(a, detail)).collect(),
        next,
    }))
}

/// One alert: the rules that fired, their reasons and the evidence events (masked;
/// their department records for county accounts only).
#[utoipa::path(get, path = "/api/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = AlertDetail), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AlertDetail>> {
    caller.require(Right::ReadHouseholds)?;
    let alert = state
        .store
        .alert(&id)
        .await?
        .ok_or_else(|| Problem::not_found("alert"))?;
    caller.see(alert.region_code, "alert")?;
    let detail = caller.0.role.may(Right::DepartmentDetail);
    let ids: Vec<String> = alert.evidence.iter().map(|e| e.to_string()).collect();
    let evidence = state.store.evidence_events(&ids).await?;
    Ok(Json(AlertDetail {
        alert: AlertView::of(&alert, detail),
        evidence: evidence
            .iter()
            .map(|e| EvidenceView::of(e, detail))
            .collect(),
    }))
}

/// Filters of the rules' yield.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct YieldQuery {
    /// Within this region (inside the caller's; default: the caller's region).
    pub region: Option<String>,
}

/// For each household rule: the alerts it fired in (open, expired), the screening
/// tasks they opened, what the closed tasks found (identified, rolled back, not
/// eligible, no risk, assistance adjusted) and the identified share; and the same for
/// every alert once. Only the alerts of households in the caller's region (or in
/// `region` within it) count.
#[utoipa::path(get, path = "/api/rules/yield", tag = "rules", params(YieldQuery),
    responses((status = 200, body = YieldView), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn rule_yield(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<YieldQuery>,
) -> ApiResult<Json<YieldView>> {
    caller.require(Right::ReadHouseholds)?;
    let scope = caller
        .narrow(query.region.as_deref())?
        .unwrap_or_else(|| caller.scope());
    let report = state.store.rule_yield(Some(scope)).await?;
    Ok(Json(YieldView {
        region_code: scope.region.to_string(),
        all: report.all,
        rules: report.rules,
    }))
}

/// Filters and page of the data-quality report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DataQualityQuery {
    /// Within this region (inside the caller's; default: the caller's region).
    pub region: Option<String>,
    /// The China Standard Time day to judge (default: today).
    pub today: Option<NaiveDate>,
    /// Page size of the findings (1-500).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// The data quality (三一致) of the caller's region (or `region` within it), judged
/// on `today`: the sweeps' and consistency rules' findings over its registry
/// households, the subjects not on the roster that departments sent events for, and
/// each department's reporting delay, counted by rule, village and department, with
/// a page of the findings. Computed from the store on each request. Events not
/// matched to the roster carry no village: they count for county-level scopes and
/// above.
#[utoipa::path(get, path = "/api/data-quality", tag = "data-quality", params(DataQualityQuery),
    responses((status = 200, body = DataQualityView), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn data_quality(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<DataQualityQuery>,
) -> ApiResult<Json<DataQualityView>> {
    use crate::sweeps::quality::{LATE_REPORTING, UNMATCHED_PERSONS};
    caller.require(Right::ReadHouseholds)?;
    let limit = page_size(query.limit, state.settings.api.default_page_size)?;
    let start = decode_id_cursor(query.cursor.as_deref())?.unwrap_or(0);
    let start = usize::try_from(start)
        .map_err(|_| Problem::bad_parameter("cursor", "not a cursor this API returned"))?;
    let scope = caller
        .narrow(query.region.as_deref())?
        .unwrap_or_else(|| caller.scope());
    let today = query
        .today
        .unwrap_or_else(|| crate::domain::task::cst_day(Utc::now()));
    let report =
        crate::commands::data_quality::report(&state.store, &state.settings, Some(scope), today)
            .await?;
    let kind = |k: crate::sweeps::RuleKind| match k {
        crate::sweeps::RuleKind::Sweep => "sweep".to_string(),
        crate::sweeps::RuleKind::Quality => "quality".to_string(),
    };
    let mut by_rule: Vec<DataQualityRuleCount> = report
        .by_rule
        .iter()
        .map(|line| DataQualityRuleCount {
            rule: line.rule.to_string(),
            kind: kind(line.kind),
            title: line.title.to_string(),
            count: line.households,
            unit: "households".into(),
        })
        .collect();
    let late_departments = report.late_departments().count() as u64;
    for (rule, count, unit) in [
        (
            &UNMATCHED_PERSONS,
            report.unmatched.len() as u64,
            "subjects",
        ),
        (&LATE_REPORTING, late_departments, "departments"),
    ] {
        by_rule.push(DataQualityRuleCount {
            rule: rule.id.to_string(),
            kind: kind(rule.kind),
            title: rule.title.to_string(),
            count,
            unit: unit.into(),
        });
    }
    let mut by_village: BTreeMap<RegionCode, DataQualityVillage> = BTreeMap::new();
    for village in &report.by_village {
        by_village.insert(
            village.region_code,
            DataQualityVillage {
                region_code: village.region_code.to_string(),
                name: village.name.clone(),
                by_rule: village
                    .by_rule
                    .iter()
                    .map(|(rule, n)| (rule.to_string(), *n))
                    .collect(),
                late_events: BTreeMap::new(),
            },
        );
    }
    for (code, late) in &report.late_by_village {
        by_village
            .entry(*code)
            .or_insert_with(|| DataQualityVillage {
                region_code: code.to_string(),
                name: None,
                by_rule: BTreeMap::new(),
                late_events: BTreeMap::new(),
            })
            .late_events = late.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    }
    let by_department = crate::domain::event::Source::ALL
        .iter()
        .filter_map(|source| {
            let unmatched = report
                .unmatched_counts
                .by_source
                .get(source.as_str())
                .copied()
                .unwrap_or_default();
            let delay = report
                .reporting_delays
                .iter()
                .find(|d| d.source == *source)
                .cloned();
            (delay.is_some() || unmatched.subjects > 0).then_some(DataQualityDepartment {
                source: *source,
                unmatched,
                delay,
            })
        })
        .collect();
    // Open since: the recorded findings still open, by rule and subject.
    let since: std::collections::HashMap<String, NaiveDate> = state
        .store
        .recorded_findings()
        .await?
        .into_iter()
        .filter(|f| f.resolved_on.is_none())
        .map(|f| (f.finding.key(), f.since))
        .collect();
    let since_of = |rule: &str, subject: &str| since.get(&format!("{rule}|{subject}")).copied();
    let fields = |list: &[&str]| list.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    let findings = report.findings.iter().map(|f| DataQualityFinding {
        rule: f.rule.to_string(),
        kind: kind(f.kind),
        household_id: Some(f.household_id.to_string()),
        region_code: Some(f.region_code.to_string()),
        source: None,
        person_masked: None,
        events: None,
        fields: fields(f.fields),
        since: since_of(f.rule, f.household_id.as_str()),
        reason: f.reason.clone(),
    });
    let unmatched = report.unmatched.iter().map(|u| DataQualityFinding {
        rule: UNMATCHED_PERSONS.id.to_string(),
        kind: kind(UNMATCHED_PERSONS.kind),
        household_id: u.household_id.clone(),
        region_code: u.region_code.map(|c| c.to_string()),
        source: Some(u.source),
        person_masked: u.person_masked.clone(),
        events: Some(u.events),
        fields: fields(UNMATCHED_PERSONS.fields),
        since: since_of(UNMATCHED_PERSONS.id, &u.subject_key()),
        reason: u.reason(),
    });
    let late = report.late_departments().map(|d| DataQualityFinding {
        rule: LATE_REPORTING.id.to_string(),
        kind: kind(LATE_REPORTING.kind),
        household_id: None,
        region_code: None,
        source: Some(d.source),
        person_masked: None,
        events: Some(d.late),
        fields: fields(LATE_REPORTING.fields),
        since: since_of(LATE_REPORTING.id, d.source.as_str()),
        reason: d.reason(),
    });
    let total = report.findings.len() + report.unmatched.len() + late_departments as usize;
    let items: Vec<DataQualityFinding> = findings
        .chain(unmatched)
        .chain(late)
        .skip(start)
        .take(limit as usize)
        .collect();
    let end = start + items.len();
    Ok(Json(DataQualityView {
        region_code: scope.region.to_string(),
        today,
        households: report.households as u64,
        late_report_days: state.settings.sweeps.late_report_days,
        by_rule,
        by_village: by_village.into_values().collect(),
        by_department,
        unmatched_by_id_area: report.unmatched_counts.by_id_area.clone(),
        items,
        next: (end < total).then(|| encode_id_cursor(end as i64)),
    }))
}

/// Filters of the task list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Within this region (a village's work list: its code).
    pub region: Option<String>,
    /// Stage.
    pub stage: Option<Stage>,
    /// Overdue only (true) or not overdue only (false).
    pub overdue: Option<bool>,
    /// The accepting account's name (`me`: the caller).
    pub assignee: Option<String>,
    /// Kind.
    pub kind: Option<TaskKind>,
    /// Page size (1-500).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// Tasks in the caller's region, newest first: a village worker's work list, a
/// township's or county's overdue list (`overdue=true`).
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, body = TaskPage), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn tasks(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<TaskQuery>,
) -> ApiResult<Json<TaskPage>> {
    caller.require(Right::ReadHouseholds)?;
    let limit = page_size(query.limit, state.settings.api.default_page_size)?;
    let assignee = match query.assignee.as_deref() {
        Some("me") => Some(caller.0.name.clone()),
        other => other.map(str::to_string),
    };
    let filter = TaskFilter {
        region: caller.narrow(query.region.as_deref())?,
        stage: query.stage.map(|s| s.to_string()),
        overdue: query.overdue,
        assignee,
        kind: query.kind.map(|k| k.to_string()),
        household: None,
    };
    let after = decode_cursor(query.cursor.as_deref())?;
    let tasks = state
        .store
        .list_tasks(caller.scope(), &filter, after.as_ref(), limit)
        .await?;
    let now = Utc::now();
    let next = (tasks.len() == limit as usize)
        .then(|| {
            tasks
                .last()
                .map(|t| encode_cursor(t.created_at, &t.task_id))
        })
        .flatten();
    Ok(Json(TaskPage {
        items: tasks
            .iter()
            .map(|t| TaskView::of(t, caller.0.role, now))
            .collect(),
        next,
    }))
}

/// One task with its whole history (every step with its actor).
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = TaskDetail), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskDetail>> {
    caller.require(Right::ReadHouseholds)?;
    let task = state
        .store
        .task(&id)
        .await?
        .ok_or_else(|| Problem::not_found("task"))?;
    caller.see(task.village_code, "task")?;
    let history = state.store.audit_of("task", &task.task_id).await?;
    Ok(Json(TaskDetail {
        task: TaskView::of(&task, caller.0.role, Utc::now()),
        history: history.iter().map(AuditView::from).collect(),
    }))
}

/// Makes one move of the procedure. Village: `accept`, `record_visit`, `propose`;
/// township: `approve`, `return`; county: `decide`. An illegal move, a stale
/// `version` or a lost race with another transition is 409.
#[utoipa::path(post, path = "/api/tasks/{id}/transitions", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    request_body = Move,
    responses((status = 200, body = TaskView), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn transition(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    MoveBody(request): MoveBody,
) -> ApiResult<Json<TaskView>> {
    caller.require(Right::ReadHouseholds)?;
    // A write that lost a race is tried again on the task as it now is: the timer may
    // have marked it overdue meanwhile. The move is judged afresh each time, so a
    // version the caller gave, or a stage another user's move changed, still refuses.
    let mut attempts = 0;
    let next = loop {
        attempts += 1;
        match try_transition(&state, &caller, &id, &request).await? {
            Some(next) => break next,
            None if attempts < 3 => continue,
            None => {
                return Err(Problem::conflict(
                    "stale-version",
                    "the task changed meanwhile (another transition won); reload it and try again",
                ));
            }
        }
    };
    let now = Utc::now();
    state.summary.invalidate().await;
    state.metrics.task_transition(request.name());
    Ok(Json(TaskView::of(&next, caller.0.role, now)))
}

/// One attempt of a move: `None` when the task changed between its read and the
/// write.
async fn try_transition(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request: &Move,
) -> ApiResult<Option<crate::domain::task::ScreeningTask>> {
    let task = state
        .store
        .task(id)
        .await?
        .ok_or_else(|| Problem::not_found("task"))?;
    caller.see(task.village_code, "task")?;
    let account = &caller.0;
    let actor = Actor {
        name: account.name.clone(),
        role: account.role,
    };
    let now = Utc::now();
    let next = task.transition(
        &actor,
        request,
        now,
        state.settings.procedure.publicity_min_days,
    )?;
    let region = task.village_code.to_string();
    let entry = |entity: &str, entity_id: &str, action: &str| AuditEntry {
        at: now,
        actor: account.name.clone(),
        actor_role: account.role.to_string(),
        entity: entity.into(),
        entity_id: entity_id.into(),
        action: action.into(),
        region_code: region.clone(),
        from_state: None,
        to_state: None,
        old_value: None,
        new_value: None,
        detail: String::new(),
    };
    let mut audit = AuditEntry {
        from_state: Some(task.stage.to_string()),
        to_state: Some(next.stage.to_string()),
        old_value: Some(procedure_values(&task)),
        new_value: Some(procedure_values(&next)),
        detail: next
            .outcome_note
            .clone()
            .filter(|_| next.outcome_note != task.outcome_note)
            .unwrap_or_default(),
        ..entry("task", &task.task_id, request.name())
    };
    if let Move::Return { reason, .. } = request {
        audit.detail = reason.clone();
    }
    let mut writes = TransitionWrites {
        actor: account.name.clone(),
        audit: vec![audit],
        ..TransitionWrites::default()
    };
    if next.stage == Stage::Closed {
        if let Some(household_id) = &task.household_id
            && let Some(record) = state.store.household(household_id.as_str()).await?
            && let Some(change) = next.household_change(&record.household, now)
        {
            let before = &record.household;
            writes.audit.push(AuditEntry {
                from_state: Some(before.status.to_string()),
                to_state: Some(change.status.to_string()),
                old_value: Some(serde_json::json!({
                    "status": before.status,
                    "monitoring_type": before.monitoring_type,
                    "identified_on": before.identified_on,
                    "risk_eliminated_on": before.risk_eliminated_on,
                })),
                new_value: serde_json::to_value(&change).ok(),
                detail: format!("decided on task {}", task.task_id),
                ..entry("household", household_id.as_str(), "registry_change")
            });
            writes.household_change = Some((household_id.to_string(), change));
        }
        if let Some(alert_id) = &task.alert_id {
            writes.audit.push(AuditEntry {
                from_state: Some("open".into()),
                to_state: Some("closed".into()),
                new_value: Some(serde_json::json!({
                    "outcome": next.outcome,
                    "decision": next.decision,
                })),
                detail: format!("closed by task {}", task.task_id),
                ..entry("alert", alert_id, "close")
            });
            writes.close_alert = Some(alert_id.clone());
        }
    }
    Ok(state
        .store
        .transition_task(&next, task.version, &writes)
        .await?
        .ok()
        .map(|()| next))
}

/// The task fields a transition changes, for its audit row.
fn procedure_values(task: &crate::domain::task::ScreeningTask) -> serde_json::Value {
    serde_json::json!({
        "stage": task.stage,
        "version": task.version,
        "assignee": task.assignee,
        "findings": task.findings,
        "proposal": task.proposal,
        "decision": task.decision,
        "outcome": task.outcome,
        "overdue": task.overdue,
    })
}

/// A household: status, masked members, monitoring history, alerts and tasks.
#[utoipa::path(get, path = "/api/households/{id}", tag = "households",
    params(("id" = String, Path, description = "Household id")),
    responses((status = 200, body = HouseholdView), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn household(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<HouseholdView>> {
    caller.require(Right::ReadHouseholds)?;
    let record = state
        .store
        .household(&id)
        .await?
        .ok_or_else(|| Problem::not_found("household"))?;
    caller.see(record.household.region_code, "household")?;
    let scope = caller.scope();
    let alerts = state
        .store
        .list_alerts(
            scope,
            &AlertFilter {
                household: Some(id.clone()),
                ..AlertFilter::default()
            },
            None,
            crate::store::api::MAX_PAGE,
        )
        .await?;
    let tasks = state
        .store
        .list_tasks(
            scope,
            &TaskFilter {
                household: Some(id.clone()),
                ..TaskFilter::default()
            },
            None,
            crate::store::api::MAX_PAGE,
        )
        .await?;
    let detail = caller.0.role.may(Right::DepartmentDetail);
    let now = Utc::now();
    Ok(Json(HouseholdView::of(
        &record,
        alerts.iter().map(|a| AlertView::of(a, detail)).collect(),
        tasks
            .iter()
            .map(|t| TaskView::of(t, caller.0.role, now))
            .collect(),
    )))
}

/// Filters of the signal list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SignalQuery {
    /// Within this region.
    pub region: Option<String>,
    /// Risk kind.
    pub kind: Option<RiskKind>,
    /// Severity.
    pub severity: Option<Level>,
    /// Status (`raised`, `updated`, `cleared`).
    pub status: Option<SignalStatus>,
    /// Active only (not cleared).
    pub active: Option<bool>,
    /// Page size (1-500).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// Regional systemic-risk signals in the caller's region, newest first.
#[utoipa::path(get, path = "/api/signals", tag = "signals", params(SignalQuery),
    responses((status = 200, body = SignalPage), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn signals(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<SignalQuery>,
) -> ApiResult<Json<SignalPage>> {
    caller.require(Right::ReadSignals)?;
    let limit = page_size(query.limit, state.settings.api.default_page_size)?;
    let status = match (query.status, query.active) {
        (Some(status), _) => Some(status.to_string()),
        (None, Some(true)) => Some("active".to_string()),
        _ => None,
    };
    let filter = SignalFilter {
        region: caller.narrow(query.region.as_deref())?,
        kind: query.kind.map(|k| k.to_string()),
        severity: query.severity.map(|s| s.to_string()),
        status,
        kinds: department_kinds(&caller).map(|kinds| kinds.iter().map(|k| k.to_string()).collect()),
    };
    let after = decode_cursor(query.cursor.as_deref())?;
    let signals = state
        .store
        .list_signals(caller.scope(), &filter, after.as_ref(), limit)
        .await?;
    let next = (signals.len() == limit as usize)
        .then(|| {
            signals
                .last()
                .map(|s| encode_cursor(s.raised_at, &s.signal_id))
        })
        .flatten();
    Ok(Json(SignalPage {
        items: signals,
        next,
    }))
}

/// Paging of the dead letters and the audit.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size (1-500).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// Refused input records, newest first: county and admin accounts see all, a
/// department account those of its own feed.
#[utoipa::path(get, path = "/api/dead-letters", tag = "operations", params(PageQuery),
    responses((status = 200, body = DeadLetterPage), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<DeadLetterPage>> {
    caller.require(Right::ReadDeadLetters)?;
    let limit = page_size(query.limit, state.settings.api.default_page_size)?;
    let after = decode_cursor(query.cursor.as_deref())?;
    // A department sees its own feed's only (none if its account names no feed).
    let source = match caller.0.role {
        Role::Department => Some(caller.0.source.map_or("-", |s| s.as_str())),
        _ => None,
    };
    let rows = state
        .store
        .list_dead_letters(source, after.as_ref(), limit)
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| {
            rows.last()
                .map(|d| encode_cursor(d.received_at, &d.dead_letter_id))
        })
        .flatten();
    Ok(Json(DeadLetterPage {
        items: rows.into_iter().map(DeadLetterView::from).collect(),
        next,
    }))
}

/// The audit of the caller's region, newest first (county and admin accounts).
#[utoipa::path(get, path = "/api/audit", tag = "operations", params(PageQuery),
    responses((status = 200, body = AuditPage), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<AuditPage>> {
    caller.require(Right::ReadAudit)?;
    let limit = page_size(query.limit, state.settings.api.default_page_size)?;
    let after = decode_id_cursor(query.cursor.as_deref())?;
    let rows = state.store.list_audit(caller.scope(), after, limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| encode_id_cursor(r.id)))
        .flatten();
    Ok(Json(AuditPage {
        items: rows.iter().map(AuditView::from).collect(),
        next,
    }))
}

/// Accounts in the caller's region (admin, county and township accounts).
#[utoipa::path(get, path = "/api/accounts", tag = "accounts",
    responses((status = 200, body = AccountList), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn accounts(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<AccountList>> {
    caller.require(Right::ManageAccounts)?;
    let accounts = state.store.accounts(Some(caller.scope())).await?;
    Ok(Json(AccountList {
        items: accounts.iter().map(AccountView::from).collect(),
    }))
}

fn accounts_problem(error: AccountsError) -> Problem {
    match error {
        AccountsError::Refused(refusal) => {
            use crate::domain::account::AccountError::*;
            match refusal {
                NotAllowed(_) | RoleTooHigh { .. } => Problem::forbidden(refusal.to_string()),
                OutsideScope(_) => Problem::invalid("region_code", refusal.to_string()),
                WrongLevel { .. } => Problem::invalid("region_code", refusal.to_string()),
                Source(_) => Problem::invalid("source", refusal.to_string()),
                Name => Problem::invalid("name", refusal.to_string()),
            }
        }
        AccountsError::Store(error) => Problem::from(error),
        error @ AccountsError::Random(_) => Problem::internal(&error),
        AccountsError::Unknown(_) => Problem::not_found("account"),
    }
}

/// Creates an account inside the caller's region with a role no higher than the
/// caller's; its token is in this answer only.
#[utoipa::path(post, path = "/api/accounts", tag = "accounts", request_body = NewAccountRequest,
    responses((status = 201, body = CreatedAccount), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<NewAccountRequest>,
) -> ApiResult<(StatusCode, Json<CreatedAccount>)> {
    caller.require(Right::ManageAccounts)?;
    let region = RegionCode::parse(&request.region_code)
        .map_err(|_| Problem::invalid("region_code", "a 12-digit region code"))?;
    let new = NewAccount {
        name: request.name,
        role: request.role,
        region,
        source: request.source,
    };
    let (account, token) = crate::accounts::create(&state.store, &new, Creator::Account(&caller.0))
        .await
        .map_err(accounts_problem)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedAccount {
            account: AccountView::from(&account),
            token,
        }),
    ))
}

/// Revokes an account in the caller's region of a role no higher than the caller's;
/// its token answers 401 from then on.
#[utoipa::path(post, path = "/api/accounts/{id}/revoke", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountView), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    caller.require(Right::ManageAccounts)?;
    let target = state
        .store
        .account(&id)
        .await?
        .filter(|a| a.account_id == id)
        .ok_or_else(|| Problem::not_found("account"))?;
    caller.see(target.region, "account")?;
    if target.role.rank() > caller.0.role.rank() {
        return Err(Problem::forbidden(format!(
            "a {} account cannot revoke a {} account",
            caller.0.role, target.role
        )));
    }
    crate::accounts::revoke(&state.store, &target, Creator::Account(&caller.0))
        .await
        .map_err(accounts_problem)?;
    let revoked = state
        .store
        .account(&id)
        .await?
        .ok_or_else(|| Problem::not_found("account"))?;
    Ok(Json(AccountView::from(&revoked)))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: Default::default(),
    })
}

/// Readiness: the store answers, and the consumer runs when this process has one.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let mut checks = std::collections::BTreeMap::new();
    let store_ok = state.store.ping().await.is_ok();
    checks.insert(
        "store".to_string(),
        if store_ok { "ok" } else { "unavailable" }.to_string(),
    );
    let pipeline = state.readiness.pipeline();
    checks.insert("pipeline".to_string(), pipeline.to_string());
    let ready = store_ok && pipeline != "stopped";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if ready { "ok" } else { "unavailable" }.into(),
            checks,
        }),
    )
}
