//! The HTTP API on a processed county, on SQLite and PostgreSQL, through the router
//! and through a server on port 0: scopes (every documented route), pagination and
//! filters, every response against the OpenAPI document, no clear resident ID in
//! any response, the procedure's loop into the registry and the running core,
//! concurrent transitions, the overdue timer, and the append-only audit.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};
use tower::ServiceExt;

use yujing::api::{AppState, Readiness};
use yujing::app::App;
use yujing::domain::account::{NewAccount, Role};
use yujing::domain::alert::{Action, AlertStatus, HouseholdAlert};
use yujing::domain::event::Source;
use yujing::domain::ids::RegionCode;
use yujing::domain::registry::HouseholdStatus;
use yujing::domain::task::{ScreeningTask, Stage, TaskKind};
use yujing::generate::AnswerKey;
use yujing::pipeline::sources::ndjson::Input;

use crate::support::{Env, feeds, fresh_postgres, import_county};

/// A backend to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Tokens of the accounts a world creates.
#[derive(Debug, Clone, Default)]
struct Tokens {
    county: String,
    township: String,
    village: String,
    other_village: String,
    other_township: String,
    department: String,
    admin: String,
    revoked: String,
}

/// A processed county with accounts: village A (the one with most household tasks),
/// village B in the same township, village C in another township.
struct World {
    env: Env,
    app: App,
    county: PathBuf,
    key: AnswerKey,
    tokens: Tokens,
    village_a: RegionCode,
    village_b: RegionCode,
    village_c: RegionCode,
    county_code: RegionCode,
}

async fn settings_for(env: &Env, backend: Backend, name: &str) -> yujing::config::Settings {
    let mut settings = env.settings("api.db");
    if backend == Backend::Postgres {
        settings.store.url = yujing::config::Secret::new(fresh_postgres(name).await);
    }
    // Summaries are always fresh in tests.
    settings.api.summary_cache_ms = 0;
    settings
}

impl World {
    async fn new(backend: Backend, name: &str, households: usize) -> World {
        World::with_settings(backend, name, households, |_| {}).await
    }

    /// A world whose settings `adjust` changes first.
    async fn with_settings(
        backend: Backend,
        name: &str,
        households: usize,
        adjust: impl FnOnce(&mut yujing::config::Settings),
    ) -> World {
        let env = Env::new();
        let (county, key) = env.county(households, 45, 23);
        let mut settings = settings_for(&env, backend, name).await;
        adjust(&mut settings);
        let app = App::build(settings).await.expect("app builds");
        import_county(&app, &county).await;
        let inputs = feeds(&county, &key).into_iter().map(Input::File).collect();
        yujing::pipeline::run_ndjson(
            &app,
            inputs,
            tokio_util::sync::CancellationToken::new(),
            false,
        )
        .await
        .expect("county processed");
        let tasks = all_tasks(&app).await;
        let mut by_village: BTreeMap<RegionCode, usize> = BTreeMap::new();
        for task in tasks.iter().filter(|t| t.kind == TaskKind::Identify) {
            *by_village.entry(task.village_code).or_default() += 1;
        }
        let village_a = by_village
            .iter()
            .max_by_key(|(code, n)| (**n, std::cmp::Reverse(**code)))
            .map(|(code, _)| *code)
            .expect("some identify task");
        let regions = app
            .store
            .load_households_and_regions()
            .await
            .unwrap()
            .regions;
        let villages: Vec<RegionCode> = regions
            .iter()
            .filter(|r| r.level == yujing::domain::ids::RegionLevel::Village)
            .map(|r| r.code)
            .collect();
        let village_b = *villages
            .iter()
            .find(|v| **v != village_a && v.township() == village_a.township())
            .expect("a second village in A's township");
        let village_c = *villages
            .iter()
            .find(|v| v.township() != village_a.township())
            .expect("a village in another township");
        let county_code = village_a.county();
        let mut world = World {
            env,
            app,
            county,
            key,
            tokens: Tokens::default(),
            village_a,
            village_b,
            village_c,
            county_code,
        };
        world.tokens = Tokens {
            county: world
                .account("t-county", Role::County, county_code, None)
                .await,
            township: world
                .account("t-township", Role::Township, village_a.township(), None)
                .await,
            village: world
                .account("t-village", Role::Village, village_a, None)
                .await,
            other_village: world
                .account("t-village-b", Role::Village, village_b, None)
                .await,
            other_township: world
                .account("t-township-c", Role::Township, village_c.township(), None)
                .await,
            department: world
                .account(
                    "t-department",
                    Role::Department,
                    county_code,
                    Some(Source::MedicalInsurance),
                )
                .await,
            admin: world
                .account("t-admin", Role::Admin, county_code, None)
                .await,
            revoked: world
                .account("t-revoked", Role::County, county_code, None)
                .await,
        };
        yujing::commands::accounts::revoke(&world.app, "t-revoked")
            .await
            .unwrap();
        world
    }

    async fn account(
        &self,
        name: &str,
        role: Role,
        region: RegionCode,
        source: Option<Source>,
    ) -> String {
        let request = NewAccount {
            name: name.into(),
            role,
            region,
            source,
        };
        yujing::commands::accounts::add(&self.app, &request)
            .await
            .unwrap()
            .1
    }

    fn state(&self) -> AppState {
        AppState::new(
            self.app.store.clone(),
            self.app.metrics.clone(),
            &self.app.settings,
            Readiness::default(),
        )
    }

    fn router(&self) -> Router {
        yujing::api::router(self.state())
    }

    /// Runs one more input through the pipeline (its state restored from the store,
    /// the registry change log applied before the first batch).
    async fn feed(&mut self, lines: &[Value]) {
        let path = self
            .env
            .path(&format!("more-{}.ndjson", Utc::now().timestamp_micros()));
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).unwrap();
        yujing::pipeline::run_ndjson(
            &self.app,
            vec![Input::File(path)],
            tokio_util::sync::CancellationToken::new(),
            false,
        )
        .await
        .expect("more input processed");
    }
}

async fn all_tasks(app: &App) -> Vec<ScreeningTask> {
    let mut tasks = Vec::new();
    app.store
        .export_tasks(&mut |t| {
            tasks.push(t);
            Ok(())
        })
        .await
        .unwrap();
    tasks
}

async fn all_alerts(app: &App) -> Vec<HouseholdAlert> {
    let mut alerts = Vec::new();
    app.store
        .export_alerts(&mut |a| {
            alerts.push(a);
            Ok(())
        })
        .await
        .unwrap();
    alerts
}

/// An answer: status, content type, body as JSON (Null when not JSON).
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
    text: String,
}

/// Calls the router (in process) or a server (over TCP).
#[derive(Clone)]
enum Client {
    Router(Router),
    Http(reqwest::Client, String),
}

impl Client {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        match self {
            Client::Router(router) => {
                let mut request = Request::builder().method(method).uri(uri);
                if let Some(token) = token {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let request = match body {
                    Some(body) => request
                        .header("content-type", "application/json")
                        .body(Body::from(body.to_string())),
                    None => request.body(Body::empty()),
                }
                .unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                Answer {
                    status,
                    content_type,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    text,
                }
            }
            Client::Http(client, base) => {
                let mut request = client.request(method, format!("{base}{uri}"));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                if let Some(body) = body {
                    request = request
                        .header("content-type", "application/json")
                        .body(body.to_string());
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let text = response.text().await.unwrap();
                Answer {
                    status,
                    content_type,
                    body: serde_json::from_str(&text).unwrap_or(Value::Null),
                    text,
                }
            }
        }
    }

    async fn get(&self, uri: &str, token: &str) -> Answer {
        self.call(Method::GET, uri, Some(token), None).await
    }

    async fn post(&self, uri: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, uri, Some(token), Some(body)).await
    }
}

/// Validates answers against the OpenAPI document's response schemas.
struct Contract {
    doc: Value,
}

impl Contract {
    fn new() -> Contract {
        Contract {
            doc: serde_json::to_value(yujing::api::openapi()).unwrap(),
        }
    }

    /// (method, path template) of every documented operation, and whether it needs
    /// a token.
    fn operations(&self) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        let global = self.doc["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let secured = match operation.get("security") {
                    Some(Value::Array(list)) => list
                        .iter()
                        .any(|s| s.as_object().is_some_and(|o| !o.is_empty())),
                    _ => global,
                };
                out.push((method.to_uppercase(), path.clone(), secured));
            }
        }
        out.sort();
        out
    }

    /// Panics unless `answer` is documented for the operation and its body validates.
    fn check(&self, method: &str, template: &str, answer: &Answer) {
        let operation = &self.doc["paths"][template][method.to_lowercase()];
        assert!(
            !operation.is_null(),
            "{method} {template} is not documented"
        );
        let response = &operation["responses"][answer.status.to_string()];
        assert!(
            !response.is_null(),
            "{method} {template} answered {} which is not documented: {}",
            answer.status,
            answer.text
        );
        let content = response["content"].as_object().expect("documented content");
        let (media, spec) = content.iter().next().unwrap();
        assert!(
            answer.content_type.starts_with(media.as_str()),
            "{method} {template} {}: content type {} where {media} is documented",
            answer.status,
            answer.content_type
        );
        let mut schema = spec["schema"].clone();
        schema["components"] = self.doc["components"].clone();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{method} {template}: schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&answer.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .take(5)
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {}: the body does not match the document: {errors:?}\n{}",
            answer.status,
            &answer.text[..answer.text.len().min(2000)]
        );
    }
}

/// A call checked against the contract.
async fn checked(
    client: &Client,
    contract: &Contract,
    method: Method,
    template: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let answer = client.call(method.clone(), uri, token, body).await;
    contract.check(method.as_str(), template, &answer);
    answer
}

fn items(answer: &Answer) -> Vec<Value> {
    answer.body["items"].as_array().cloned().unwrap_or_default()
}

/// Every page of a list, following `next`; asserts no id repeats.
async fn every_page(
    client: &Client,
    contract: &Contract,
    template: &str,
    uri: &str,
    token: &str,
    id: &str,
) -> Vec<Value> {
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let separator = if uri.contains('?') { '&' } else { '?' };
        let page_uri = match &cursor {
            Some(c) => format!("{uri}{separator}cursor={c}"),
            None => uri.to_string(),
        };
        let answer = checked(
            client,
            contract,
            Method::GET,
            template,
            &page_uri,
            Some(token),
            None,
        )
        .await;
        assert_eq!(answer.status, 200, "{page_uri}: {}", answer.text);
        for item in items(&answer) {
            let key = item[id].as_str().unwrap().to_string();
            assert!(
                seen.insert(key.clone()),
                "{key} repeated across pages of {uri}"
            );
            all.push(item);
        }
        match answer.body["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return all,
        }
    }
}

// ---------------------------------------------------------------------------
// Pagination, filters and the contract

async fn lists_page_and_filter(backend: Backend, name: &str) {
    let world = World::new(backend, name, 3300).await;
    let contract = Contract::new();
    let client = Client::Router(world.router());
    let county = &world.tokens.county;
    let alerts = all_alerts(&world.app).await;
    // Most alerts of a run share their batch's opened_at: page boundaries fall
    // inside runs of equal timestamps.
    let mut times: BTreeMap<_, usize> = BTreeMap::new();
    for alert in &alerts {
        *times.entry(alert.opened_at).or_default() += 1;
    }
    assert!(
        times.values().any(|&n| n > 20),
        "runs of equal timestamps exist"
    );
    let paged = every_page(
        &client,
        &contract,
        "/api/alerts",
        "/api/alerts?limit=7",
        county,
        "alert_id",
    )
    .await;
    let paged_ids: BTreeSet<String> = paged
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    let stored: BTreeSet<String> = alerts.iter().map(|a| a.alert_id.clone()).collect();
    assert_eq!(
        paged_ids, stored,
        "pages of 7 lose nothing and repeat nothing"
    );
    let opened: Vec<String> = paged
        .iter()
        .map(|a| a["opened_at"].as_str().unwrap().to_string())
        .collect();
    let parsed: Vec<chrono::DateTime<Utc>> = opened.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Each filter gives exactly the stored alerts it names.
    let village = world.village_a.to_string();
    let by = |f: &dyn Fn(&HouseholdAlert) -> bool| -> BTreeSet<String> {
        alerts
            .iter()
            .filter(|a| f(a))
            .map(|a| a.alert_id.clone())
            .collect()
    };
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        ("level=orange".into(), by(&|a| a.level.as_str() == "orange")),
        (
            "action=identify".into(),
            by(&|a| a.action == Action::Identify),
        ),
        (
            "risk_type=illness".into(),
            by(&|a| a.risk_types.iter().any(|r| r.as_str() == "illness")),
        ),
        ("status=open".into(), by(&|a| a.status == AlertStatus::Open)),
        (
            format!("region={village}"),
            by(&|a| a.region_code == world.village_a),
        ),
        (
            format!("region={}&level=red", world.village_a.township()),
            by(&|a| {
                a.region_code.township() == world.village_a.township() && a.level.as_str() == "red"
            }),
        ),
    ];
    for (query, expected) in cases {
        let got = every_page(
            &client,
            &contract,
            "/api/alerts",
            &format!("/api/alerts?limit=50&{query}"),
            county,
            "alert_id",
        )
        .await;
        let got: BTreeSet<String> = got
            .iter()
            .map(|a| a["alert_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, expected, "alerts?{query}");
    }
    // A date range.
    let middle = parsed[parsed.len() / 2];
    let from = middle.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let got = every_page(
        &client,
        &contract,
        "/api/alerts",
        &format!("/api/alerts?limit=100&from={}", from.replace('+', "%2B")),
        county,
        "alert_id",
    )
    .await;
    assert_eq!(
        got.len(),
        alerts.iter().filter(|a| a.opened_at >= middle).count(),
        "from={from}"
    );

    // Tasks: a village's work list, by stage and kind, paged.
    let tasks = all_tasks(&world.app).await;
    let got = every_page(
        &client,
        &contract,
        "/api/tasks",
        &format!("/api/tasks?limit=3&region={village}"),
        county,
        "task_id",
    )
    .await;
    let expected: BTreeSet<String> = tasks
        .iter()
        .filter(|t| t.village_code == world.village_a)
        .map(|t| t.task_id.clone())
        .collect();
    let got_ids: BTreeSet<String> = got
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got_ids, expected);
    let got = every_page(
        &client,
        &contract,
        "/api/tasks",
        "/api/tasks?limit=11&kind=campaign&stage=pending",
        county,
        "task_id",
    )
    .await;
    assert_eq!(
        got.len(),
        tasks
            .iter()
            .filter(|t| t.kind == TaskKind::Campaign && t.stage == Stage::Pending)
            .count()
    );
    let village_list = every_page(
        &client,
        &contract,
        "/api/tasks",
        "/api/tasks?limit=4",
        &world.tokens.village,
        "task_id",
    )
    .await;
    assert_eq!(
        village_list.len(),
        expected.len(),
        "a village account's work list is its village's"
    );

    // Signals, filtered.
    let mut signals = Vec::new();
    world
        .app
        .store
        .export_signals(&mut |s| {
            signals.push(s);
            Ok(())
        })
        .await
        .unwrap();
    let got = every_page(
        &client,
        &contract,
        "/api/signals",
        "/api/signals?limit=2",
        county,
        "signal_id",
    )
    .await;
    assert_eq!(got.len(), signals.len());
    let active = every_page(
        &client,
        &contract,
        "/api/signals",
        "/api/signals?active=true",
        county,
        "signal_id",
    )
    .await;
    assert_eq!(
        active.len(),
        signals.iter().filter(|s| s.is_active()).count()
    );
    let department = every_page(
        &client,
        &contract,
        "/api/signals",
        "/api/signals",
        &world.tokens.department,
        "signal_id",
    )
    .await;
    assert!(
        department.iter().all(|s| s["risk_kind"] == "illness"),
        "a medical-insurance account sees illness signals only"
    );

    // Dead letters: county all, department its own source.
    let letters = every_page(
        &client,
        &contract,
        "/api/dead-letters",
        "/api/dead-letters?limit=13",
        county,
        "dead_letter_id",
    )
    .await;
    assert!(!letters.is_empty(), "the generated county has bad lines");
    let mut stored_letters = 0;
    world
        .app
        .store
        .export_dead_letters(&mut |_| {
            stored_letters += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(letters.len(), stored_letters);
    let own = every_page(
        &client,
        &contract,
        "/api/dead-letters",
        "/api/dead-letters",
        &world.tokens.department,
        "dead_letter_id",
    )
    .await;
    assert!(own.iter().all(|d| d["source"] == "medical_insurance"));
    assert_eq!(
        own.len(),
        letters
            .iter()
            .filter(|d| d["source"] == "medical_insurance")
            .count()
    );

    // Bad parameters name themselves.
    for (uri, field) in [
        ("/api/alerts?limit=501", "limit"),
        ("/api/alerts?level=purple", "level"),
        ("/api/alerts?cursor=nope", "cursor"),
        ("/api/tasks?overdue=maybe", "overdue"),
        ("/api/alerts?region=12", "region"),
    ] {
        let template = uri.split('?').next().unwrap();
        let answer = checked(
            &client,
            &contract,
            Method::GET,
            template,
            uri,
            Some(county),
            None,
        )
        .await;
        assert_eq!(answer.status, 400, "{uri}");
        assert!(answer.content_type.starts_with("application/problem+json"));
        assert_eq!(
            answer.body["errors"][0]["field"], field,
            "{uri}: {}",
            answer.text
        );
    }
    // Series and summary validate and hold the stored counts.
    let summary = checked(
        &client,
        &contract,
        Method::GET,
        "/api/regions/{code}/summary",
        &format!("/api/regions/{}/summary", world.county_code),
        Some(county),
        None,
    )
    .await;
    assert_eq!(summary.status, 200);
    let open = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Open)
        .count() as u64;
    assert_eq!(summary.body["region"]["alerts"]["total"], open);
    let children_total: u64 = summary.body["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["alerts"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(children_total, open, "the townships add up to the county");
    let open_tasks = tasks.iter().filter(|t| t.stage != Stage::Closed).count() as u64;
    assert_eq!(summary.body["region"]["tasks"]["open"], open_tasks);
    let series = checked(
        &client,
        &contract,
        Method::GET,
        "/api/regions/{code}/series",
        &format!(
            "/api/regions/{}/series?kind=any_risk&from={}&to={}",
            world.village_a.township(),
            world.key.start,
            world.key.start + chrono::Duration::days(44)
        ),
        Some(county),
        None,
    )
    .await;
    assert_eq!(series.status, 200, "{}", series.text);
    assert_eq!(series.body["days"].as_array().unwrap().len(), 45);
    let counted: u64 = series.body["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["count"].as_u64().unwrap())
        .sum();
    assert!(counted > 0, "the township had risk events");
}

#[tokio::test]
async fn lists_page_and_filter_on_sqlite() {
    lists_page_and_filter(Backend::Sqlite, "lists").await;
}

#[tokio::test]
async fn lists_page_and_filter_on_postgres() {
    lists_page_and_filter(Backend::Postgres, "lists").await;
}

// ---------------------------------------------------------------------------
// The scope matrix

/// Ids of objects in village A, for the probes.
struct Objects {
    alert: String,
    task: String,
    household: String,
}

async fn objects_of(world: &World) -> Objects {
    let task = all_tasks(&world.app)
        .await
        .into_iter()
        .find(|t| t.village_code == world.village_a && t.kind == TaskKind::Identify)
        .expect("an identify task in A");
    Objects {
        alert: task.alert_id.clone().unwrap(),
        household: task.household_id.clone().unwrap().to_string(),
        task: task.task_id,
    }
}

async fn scope_matrix(backend: Backend, name: &str) {
    // The generator reports within three days: a two-day limit makes some events late.
    let world = World::with_settings(backend, name, 3300, |settings| {
        settings.sweeps.late_report_days = 2;
    })
    .await;
    let contract = Contract::new();
    let objects = objects_of(&world).await;
    let t = &world.tokens;
    let a = world.village_a.to_string();
    // Through a server on port 0 this time.
    let cancel = tokio_util::sync::CancellationToken::new();
    let (address, server) = yujing::api::serve("127.0.0.1:0", world.state(), cancel.clone())
        .await
        .unwrap();
    let client = Client::Http(reqwest::Client::new(), format!("http://{address}"));
    let outsiders = [
        ("village B", t.other_village.as_str()),
        ("township C", t.other_township.as_str()),
    ];
    let mut covered = Vec::new();
    for (method, template, secured) in contract.operations() {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        // A concrete request aimed at village A's object (or A's region), and what
        // the body must not hold for an outsider.
        let (uri, body, marker): (String, Option<Value>, String) = match (
            method.as_str(),
            template.as_str(),
        ) {
            ("GET", "/healthz") | ("GET", "/readyz") => (template.clone(), None, String::new()),
            ("GET", "/api/me") => ("/api/me".into(), None, "t-village\"".into()),
            ("GET", "/api/regions") => ("/api/regions".into(), None, format!("\"{a}\"")),
            ("GET", "/api/regions/{code}/summary") => {
                (format!("/api/regions/{a}/summary"), None, a.clone())
            }
            ("GET", "/api/regions/{code}/series") => (
                format!("/api/regions/{a}/series?kind=illness"),
                None,
                a.clone(),
            ),
            ("GET", "/api/alerts") => ("/api/alerts?limit=500".into(), None, objects.alert.clone()),
            ("GET", "/api/alerts/{id}") => (
                format!("/api/alerts/{}", objects.alert),
                None,
                objects.alert.clone(),
            ),
            ("GET", "/api/rules/yield") => (
                format!("/api/rules/yield?region={a}"),
                None,
                format!("\"{a}\""),
            ),
            ("GET", "/api/data-quality") => (
                format!("/api/data-quality?region={a}&limit=5"),
                None,
                format!("\"{a}\""),
            ),
            ("GET", "/api/tasks") => ("/api/tasks?limit=500".into(), None, objects.task.clone()),
            ("GET", "/api/tasks/{id}") => (
                format!("/api/tasks/{}", objects.task),
                None,
                objects.task.clone(),
            ),
            ("POST", "/api/tasks/{id}/transitions") => (
                format!("/api/tasks/{}/transitions", objects.task),
                Some(json!({"action": "accept"})),
                objects.task.clone(),
            ),
            ("GET", "/api/households/{id}") => (
                format!("/api/households/{}", objects.household),
                None,
                objects.household.clone(),
            ),
            ("GET", "/api/signals") => ("/api/signals?limit=500".into(), None, String::new()),
            ("GET", "/api/dead-letters") => ("/api/dead-letters".into(), None, String::new()),
            ("GET", "/api/audit") => ("/api/audit".into(), None, "t-village".into()),
            ("GET", "/api/accounts") => ("/api/accounts".into(), None, "t-village\"".into()),
            ("POST", "/api/accounts") => (
                "/api/accounts".into(),
                Some(
                    json!({"name": "probe-county", "role": "county", "region_code": world.county_code.to_string()}),
                ),
                String::new(),
            ),
            ("POST", "/api/accounts/{id}/revoke") => {
                let target = world.app.store.account("t-village").await.unwrap().unwrap();
                (
                    format!("/api/accounts/{}/revoke", target.account_id),
                    None,
                    String::new(),
                )
            }
            other => panic!("route {other:?} has no scope probe in tests/it/api.rs: add one"),
        };
        covered.push(format!("{method} {template}"));
        if !secured {
            let answer = checked(
                &client,
                &contract,
                method.clone(),
                &template,
                &uri,
                None,
                body.clone(),
            )
            .await;
            assert_eq!(answer.status, 200, "{method} {uri} is public");
            continue;
        }
        // No token, an unknown one, a revoked one: 401.
        for token in [
            None,
            Some("yj_0000000000000000000000000000000000000000000000000000000000000000"),
            Some(t.revoked.as_str()),
        ] {
            let answer = checked(
                &client,
                &contract,
                method.clone(),
                &template,
                &uri,
                token,
                body.clone(),
            )
            .await;
            assert_eq!(
                answer.status, 401,
                "{method} {uri} with {token:?}: {}",
                answer.text
            );
        }
        // Accounts of another village and another township: 404 or a list without
        // A's object, never the object.
        for (who, token) in outsiders {
            let answer = checked(
                &client,
                &contract,
                method.clone(),
                &template,
                &uri,
                Some(token),
                body.clone(),
            )
            .await;
            let leaked = !marker.is_empty() && answer.text.contains(&marker);
            assert!(
                !leaked,
                "{who} saw {marker} through {method} {uri}: {}",
                answer.text
            );
            match (method.as_str(), template.as_str()) {
                ("GET", "/api/me")
                | ("GET", "/api/regions")
                | ("GET", "/api/alerts")
                | ("GET", "/api/tasks")
                | ("GET", "/api/signals") => {
                    assert_eq!(answer.status, 200, "{who} {method} {uri}");
                    // Everything listed lies in the caller's region.
                }
                ("GET", "/api/dead-letters") | ("GET", "/api/audit") => {
                    assert_eq!(answer.status, 403, "{who} may not read {uri}");
                }
                ("GET", "/api/accounts") => {
                    assert!(answer.status == 403 || answer.status == 200, "{who} {uri}");
                }
                ("POST", "/api/accounts") => {
                    assert_eq!(answer.status, 403, "{who} cannot create a county account");
                }
                ("POST", "/api/accounts/{id}/revoke") => {
                    // A village manages no accounts; township C cannot see A's.
                    let expected = if who == "village B" { 403 } else { 404 };
                    assert_eq!(answer.status, expected, "{who} {uri}: {}", answer.text);
                }
                _ => assert_eq!(answer.status, 404, "{who} {method} {uri}: {}", answer.text),
            }
        }
        // A department: regional figures only, never a household's data.
        let answer = checked(
            &client,
            &contract,
            method.clone(),
            &template,
            &uri,
            Some(&t.department),
            body.clone(),
        )
        .await;
        match template.as_str() {
            "/api/alerts"
            | "/api/alerts/{id}"
            | "/api/rules/yield"
            | "/api/data-quality"
            | "/api/tasks"
            | "/api/tasks/{id}"
            | "/api/tasks/{id}/transitions"
            | "/api/households/{id}"
            | "/api/audit"
            | "/api/accounts"
            | "/api/accounts/{id}/revoke" => {
                assert_eq!(
                    answer.status, 403,
                    "department {method} {uri}: {}",
                    answer.text
                )
            }
            "/api/regions/{code}/series"
            | "/api/regions/{code}/summary"
            | "/api/signals"
            | "/api/regions"
            | "/api/me"
            | "/api/dead-letters" => {
                assert_eq!(
                    answer.status, 200,
                    "department {method} {uri}: {}",
                    answer.text
                )
            }
            _ => {}
        }
        if template == "/api/accounts" && method == Method::POST {
            assert_eq!(answer.status, 403, "a department cannot create accounts");
        }
        // The village of A itself sees its object (the matrix is not vacuous) but
        // cannot read the audit or create a county account.
        let answer = checked(
            &client,
            &contract,
            method.clone(),
            &template,
            &uri,
            Some(&t.village),
            body.clone(),
        )
        .await;
        match (method.as_str(), template.as_str()) {
            ("GET", "/api/audit")
            | ("GET", "/api/dead-letters")
            | ("POST", "/api/accounts")
            | ("GET", "/api/accounts")
            | ("POST", "/api/accounts/{id}/revoke") => {
                assert_eq!(
                    answer.status, 403,
                    "village {method} {uri}: {}",
                    answer.text
                )
            }
            _ => {
                assert_eq!(
                    answer.status, 200,
                    "village {method} {uri}: {}",
                    answer.text
                );
                assert!(
                    marker.is_empty() || answer.text.contains(&marker),
                    "village A sees {marker} at {uri}"
                );
            }
        }
    }
    // Lists hold only what lies in the caller's region, for every account.
    let client_lists = [
        "/api/alerts?limit=500",
        "/api/tasks?limit=500",
        "/api/signals?limit=500",
    ];
    for (token, scope) in [
        (&t.other_village, world.village_b),
        (&t.other_township, world.village_c.township()),
        (&t.township, world.village_a.township()),
    ] {
        for uri in client_lists {
            let answer = client.get(uri, token).await;
            for item in items(&answer) {
                let code = item["region_code"]
                    .as_str()
                    .or(item["village_code"].as_str())
                    .unwrap();
                let code = RegionCode::parse(code).unwrap();
                assert!(
                    code.is_within(scope),
                    "{uri} for {scope}: {code} is outside"
                );
            }
        }
    }
    // A village account cannot decide, even on its own task once it is at the county.
    let decide = client
        .post(
            &format!("/api/tasks/{}/transitions", objects.task),
            &t.village,
            json!({"action": "decide", "decision": "approved"}),
        )
        .await;
    assert_eq!(decide.status, 403, "{}", decide.text);
    // A township cannot create a village account in another township (422), a county
    // can create a township account below it (201).
    let outside = client
        .post("/api/accounts", &t.township, json!({"name": "x-village", "role": "village", "region_code": world.village_c.to_string()}))
        .await;
    assert_eq!(outside.status, 422, "{}", outside.text);
    let made = checked(&client, &contract, Method::POST, "/api/accounts", "/api/accounts", Some(&t.county),
        Some(json!({"name": "x-township", "role": "township", "region_code": world.village_c.township().to_string()}))).await;
    assert_eq!(made.status, 201, "{}", made.text);
    let token = made.body["token"].as_str().unwrap().to_string();
    assert_eq!(client.get("/api/me", &token).await.status, 200);
    let id = made.body["account"]["account_id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = client
        .post(&format!("/api/accounts/{id}/revoke"), &t.county, json!({}))
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(
        client.get("/api/me", &token).await.status,
        401,
        "revoked at once"
    );
    // The yield without a region covers the caller's own: only its households' alerts.
    let alerts = all_alerts(&world.app).await;
    let tasks = all_tasks(&world.app).await;
    for (token, scope) in [
        (&t.other_village, world.village_b),
        (&t.other_township, world.village_c.township()),
        (&t.township, world.village_a.township()),
        (&t.county, world.county_code),
    ] {
        let answer = checked(
            &client,
            &contract,
            Method::GET,
            "/api/rules/yield",
            "/api/rules/yield",
            Some(token),
            None,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["region_code"], scope.to_string());
        let inside: Vec<HouseholdAlert> = alerts
            .iter()
            .filter(|a| a.region_code.is_within(scope))
            .cloned()
            .collect();
        assert_eq!(
            without_region(&answer.body),
            serde_json::to_value(crate::support::yield_by_hand(&inside, &tasks)).unwrap(),
            "the yield of {scope}"
        );
    }
    data_quality_figures(&world, &client, &contract).await;
    assert!(covered.len() >= 20, "{covered:?}");
    cancel.cancel();
    server.await.unwrap();
}

/// `GET /api/data-quality` for a village, another township and the county: every
/// count and finding equals the count made from the county's CSV files and feeds
/// for that region (`crate::data_quality`'s, which checks the CLI the same way),
/// read through every page.
async fn data_quality_figures(world: &World, client: &Client, contract: &Contract) {
    use crate::data_quality::{TODAY, expected, expected_departments_in, hours};
    let t = &world.tokens;
    let feeds = feeds(&world.county, &world.key);
    let late_ms = 2 * 86_400_000;
    let village_of: BTreeMap<String, RegionCode> =
        std::fs::read_to_string(world.county.join("households.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|line| {
                let cells: Vec<&str> = line.split(',').collect();
                (cells[0].to_string(), RegionCode::parse(cells[1]).unwrap())
            })
            .collect();
    let registry_findings = expected(&world.county);
    // A recorded pass: every consistency finding listed says since when it is open.
    let today: NaiveDate = TODAY.parse().unwrap();
    let report = yujing::commands::data_quality::data_quality(&world.app, today)
        .await
        .unwrap();
    yujing::commands::data_quality::record(&world.app, &report)
        .await
        .unwrap();
    let mut saw = (false, false, false);
    for (token, scope) in [
        (&t.village, world.village_a),
        (&t.other_township, world.village_c.township()),
        (&t.county, world.county_code),
    ] {
        // Every page.
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let uri = match &cursor {
                Some(c) => format!("/api/data-quality?today={TODAY}&limit=97&cursor={c}"),
                None => format!("/api/data-quality?today={TODAY}&limit=97"),
            };
            let answer = checked(
                client,
                contract,
                Method::GET,
                "/api/data-quality",
                &uri,
                Some(token),
                None,
            )
            .await;
            assert_eq!(answer.status, 200, "{uri}: {}", answer.text);
            let next = answer.body["next"].as_str().map(str::to_string);
            pages.push(answer.body);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let body = &pages[0];
        assert_eq!(body["region_code"], scope.to_string());
        let items: Vec<&Value> = pages
            .iter()
            .flat_map(|p| p["items"].as_array().unwrap())
            .collect();
        for item in &items {
            let since = if item["kind"] == "quality" {
                json!(TODAY)
            } else {
                Value::Null
            };
            assert_eq!(item["since"], since, "{item}");
            assert!(!item["fields"].as_array().unwrap().is_empty(), "{item}");
        }

        // Registry rules: households of the region, rule by rule.
        let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (rule, ids) in &registry_findings {
            for id in ids {
                if village_of[id].is_within(scope) {
                    want.entry(rule.clone()).or_default().insert(id.clone());
                }
            }
        }
        let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for item in &items {
            if let Some(id) = item["household_id"].as_str()
                && item["source"].is_null()
            {
                assert!(village_of[id].is_within(scope), "{item}");
                let fresh = got
                    .entry(item["rule"].as_str().unwrap().to_string())
                    .or_default()
                    .insert(id.to_string());
                assert!(fresh, "{item} repeated across pages");
            }
        }
        assert_eq!(got, want, "registry findings of {scope}");
        let count_of = |rule: &str| {
            body["by_rule"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["rule"] == rule)
                .unwrap_or_else(|| panic!("{rule} in by_rule"))["count"]
                .as_u64()
                .unwrap()
        };
        for (rule, ids) in &want {
            assert_eq!(count_of(rule), ids.len() as u64, "{rule} in {scope}");
        }
        let households = village_of.values().filter(|v| v.is_within(scope)).count();
        assert_eq!(body["households"].as_u64(), Some(households as u64));

        // Department rules over the events of the region.
        let departments = expected_departments_in(&world.county, &feeds, late_ms, Some(scope));
        assert_eq!(
            count_of("quality.unmatched_persons"),
            departments.unmatched.len() as u64
        );
        let listed: BTreeMap<(String, String), u64> = items
            .iter()
            .filter(|i| i["rule"] == "quality.unmatched_persons")
            .map(|i| {
                let subject = i["person_masked"].as_str().or(i["household_id"].as_str());
                (
                    (
                        i["source"].as_str().unwrap().to_string(),
                        subject.unwrap().to_string(),
                    ),
                    i["events"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(listed, departments.unmatched, "unmatched in {scope}");
        let late: Vec<&String> = departments
            .delays
            .iter()
            .filter(|(_, d)| d.4 > 0)
            .map(|(source, _)| source)
            .collect();
        assert_eq!(count_of("quality.late_reporting"), late.len() as u64);
        let by_department = body["by_department"].as_array().unwrap();
        assert_eq!(by_department.len(), departments.delays.len(), "{scope}");
        for (source, (events, p50, p90, max, late)) in &departments.delays {
            let line = by_department
                .iter()
                .find(|d| d["source"] == source.as_str())
                .unwrap();
            let delay = &line["delay"];
            assert_eq!(delay["events"].as_u64(), Some(*events), "{source} {scope}");
            assert_eq!(delay["late"].as_u64(), Some(*late), "{source} {scope}");
            assert_eq!(delay["p50_hours"].as_f64(), Some(hours(*p50)));
            assert_eq!(delay["p90_hours"].as_f64(), Some(hours(*p90)));
            assert_eq!(delay["max_hours"].as_f64(), Some(hours(*max)));
            let unmatched: u64 = departments
                .unmatched
                .iter()
                .filter(|((s, _), _)| s == source)
                .count() as u64;
            assert_eq!(line["unmatched"]["subjects"].as_u64(), Some(unmatched));
        }
        let mut late_by_village = BTreeMap::new();
        for village in body["by_village"].as_array().unwrap() {
            let code = village["region_code"].as_str().unwrap();
            assert!(RegionCode::parse(code).unwrap().is_within(scope));
            for (source, n) in village["late_events"].as_object().unwrap() {
                late_by_village.insert((code.to_string(), source.clone()), n.as_u64().unwrap());
            }
        }
        assert_eq!(late_by_village, departments.late_by_village, "{scope}");
        let level = scope.level();
        saw.0 |= level == yujing::domain::ids::RegionLevel::Village && !late_by_village.is_empty();
        saw.1 |= !want.is_empty();
        saw.2 |= level == yujing::domain::ids::RegionLevel::County && !listed.is_empty();
        if level != yujing::domain::ids::RegionLevel::County {
            assert!(listed.is_empty(), "unmatched events have no village");
        }
        // Masked only: no 18-character run of 17 digits and a check character.
        for page in &pages {
            let text = page.to_string();
            let bytes = text.as_bytes();
            let clear = bytes.windows(18).any(|w| {
                w[..17].iter().all(u8::is_ascii_digit) && (w[17].is_ascii_digit() || w[17] == b'X')
            });
            assert!(!clear, "a clear resident ID in {text}");
        }
    }
    assert!(
        saw.0 && saw.1 && saw.2,
        "the figures are not vacuous: {saw:?}"
    );
}

#[tokio::test]
async fn scope_matrix_on_sqlite() {
    scope_matrix(Backend::Sqlite, "scope").await;
}

#[tokio::test]
async fn scope_matrix_on_postgres() {
    scope_matrix(Backend::Postgres, "scope").await;
}

/// A yield answer without its `region_code`: the figures.
fn without_region(body: &Value) -> Value {
    let mut figures = body.clone();
    figures
        .as_object_mut()
        .expect("an object")
        .remove("region_code");
    figures
}

// ---------------------------------------------------------------------------
// No clear resident ID anywhere

fn roster_ids(world: &World) -> HashSet<String> {
    let text = std::fs::read_to_string(world.county.join("members.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(str::to_string)
        .collect()
}

fn clear_ids_in(text: &str, ids: &HashSet<String>) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    if bytes.len() < 18 {
        return found;
    }
    for start in 0..=bytes.len() - 18 {
        let window = &bytes[start..start + 18];
        if window[..17].iter().all(u8::is_ascii_digit)
            && let Ok(candidate) = std::str::from_utf8(window)
            && ids.contains(candidate)
        {
            found.push(candidate.to_string());
        }
    }
    found
}

#[tokio::test]
async fn no_response_holds_a_clear_resident_id() {
    let world = World::new(Backend::Sqlite, "privacy", 3300).await;
    let ids = roster_ids(&world);
    assert!(ids.len() > 800);
    let contract = Contract::new();
    let client = Client::Router(world.router());
    let mut bodies: Vec<(String, String)> = Vec::new();
    for token in [
        &world.tokens.county,
        &world.tokens.admin,
        &world.tokens.village,
        &world.tokens.department,
    ] {
        for uri in [
            "/api/me",
            "/api/regions",
            "/api/accounts",
            "/api/audit?limit=500",
        ] {
            let answer = client.get(uri, token).await;
            bodies.push((uri.into(), answer.text));
        }
        for (template, id) in [
            ("/api/alerts", "alert_id"),
            ("/api/tasks", "task_id"),
            ("/api/signals", "signal_id"),
            ("/api/dead-letters", "dead_letter_id"),
        ] {
            let answer = client.get(&format!("{template}?limit=500"), token).await;
            if answer.status == 200 {
                for item in every_page(
                    &client,
                    &contract,
                    template,
                    &format!("{template}?limit=500"),
                    token,
                    id,
                )
                .await
                {
                    bodies.push((template.into(), item.to_string()));
                }
            }
        }
    }
    let county = &world.tokens.county;
    for alert in all_alerts(&world.app).await {
        let answer = checked(
            &client,
            &contract,
            Method::GET,
            "/api/alerts/{id}",
            &format!("/api/alerts/{}", alert.alert_id),
            Some(county),
            None,
        )
        .await;
        bodies.push((format!("alert {}", alert.alert_id), answer.text));
        let answer = checked(
            &client,
            &contract,
            Method::GET,
            "/api/households/{id}",
            &format!("/api/households/{}", alert.household_id),
            Some(county),
            None,
        )
        .await;
        bodies.push((format!("household {}", alert.household_id), answer.text));
    }
    for task in all_tasks(&world.app).await {
        let answer = checked(
            &client,
            &contract,
            Method::GET,
            "/api/tasks/{id}",
            &format!("/api/tasks/{}", task.task_id),
            Some(county),
            None,
        )
        .await;
        bodies.push((format!("task {}", task.task_id), answer.text));
    }
    let regions = world
        .app
        .store
        .load_households_and_regions()
        .await
        .unwrap()
        .regions;
    for region in regions
        .iter()
        .filter(|r| r.level != yujing::domain::ids::RegionLevel::Village)
    {
        let answer = client
            .get(&format!("/api/regions/{}/summary", region.code), county)
            .await;
        bodies.push((format!("summary {}", region.code), answer.text));
    }
    let masked_seen = bodies.iter().any(|(_, b)| b.contains("********"));
    assert!(masked_seen, "masked IDs are shown where IDs belong");
    for (what, body) in &bodies {
        let leaked = clear_ids_in(body, &ids);
        assert!(
            leaked.is_empty(),
            "{what} holds clear resident IDs (first: {})",
            &leaked[0][..6]
        );
    }
    assert!(bodies.len() > 100, "{} responses scanned", bodies.len());
}

// ---------------------------------------------------------------------------
// The loop: procedure -> registry -> the running core

fn dates_ago(days: i64) -> NaiveDate {
    yujing::domain::task::cst_day(Utc::now()) - chrono::Duration::days(days)
}

/// Walks a task through the whole procedure; returns the final view.
async fn identify_through_the_procedure(
    client: &Client,
    contract: &Contract,
    tokens: &Tokens,
    task: &str,
) -> Value {
    let uri = format!("/api/tasks/{task}/transitions");
    let step = |token: &str, body: Value| {
        let (uri, token) = (uri.clone(), token.to_string());
        async move {
            let answer = checked(
                client,
                contract,
                Method::POST,
                "/api/tasks/{id}/transitions",
                &uri,
                Some(&token),
                Some(body.clone()),
            )
            .await;
            assert_eq!(answer.status, 200, "{body}: {}", answer.text);
            answer.body
        }
    };
    step(&tokens.village, json!({"action": "accept", "version": 0})).await;
    step(&tokens.village, json!({"action": "record_visit", "visited_on": dates_ago(9), "per_capita_income_yuan": 4100.0, "risk_types": ["illness"], "note": "户主住院"})).await;
    step(&tokens.village, json!({
        "action": "propose", "outcome": "identify", "monitoring_type": "marginal",
        "deliberated_on": dates_ago(8), "publicity_from": dates_ago(7), "publicity_to": dates_ago(2)
    })).await;
    let approved = step(
        &tokens.township,
        json!({"action": "approve", "note": "审核通过"}),
    )
    .await;
    assert_eq!(approved["stage"], "county_decision");
    let decided = step(
        &tokens.county,
        json!({"action": "decide", "decision": "approved", "note": "县级审定"}),
    )
    .await;
    assert_eq!(decided["stage"], "closed");
    decided
}

/// A serious-illness event for a member of `household` on `day`.
fn illness_event(world: &World, household: &str, id: &str) -> Value {
    let members = std::fs::read_to_string(world.county.join("members.csv")).unwrap();
    let person = members
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f[1] == household)
        .map(|f| f[0].to_string())
        .expect("a member");
    let at = Utc::now() - chrono::Duration::hours(1);
    json!({
        "event_id": id, "source": "health", "kind": "serious_illness",
        "occurred_at": at.to_rfc3339(), "reported_at": at.to_rfc3339(),
        "person_id": person,
        "payload": {"disease_group": "cancer", "diagnosed_on": at.date_naive().to_string()}
    })
}

async fn the_loop_closes(backend: Backend, name: &str) {
    let mut world = World::new(backend, name, 3300).await;
    let contract = Contract::new();
    let objects = objects_of(&world).await;
    let client = Client::Router(world.router());
    let before = world
        .app
        .store
        .household(&objects.household)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(before.household.status, HouseholdStatus::Monitored);
    identify_through_the_procedure(&client, &contract, &world.tokens, &objects.task).await;

    // The registry changed in the same transaction, the alert closed with the outcome.
    let after = world
        .app
        .store
        .household(&objects.household)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.household.status, HouseholdStatus::Monitored);
    assert_eq!(
        after.household.monitoring_type.map(|t| t.as_str()),
        Some("marginal")
    );
    assert_eq!(after.changes.len(), 1);
    let alert = world
        .app
        .store
        .alert(&objects.alert)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alert.status, AlertStatus::Closed);
    assert_eq!(alert.outcome.map(|o| o.as_str()), Some("identify"));
    // The audit holds each step with its actor.
    let detail = checked(
        &client,
        &contract,
        Method::GET,
        "/api/tasks/{id}",
        &format!("/api/tasks/{}", objects.task),
        Some(&world.tokens.county),
        None,
    )
    .await;
    let steps: Vec<(String, String)> = detail.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["action"].as_str().unwrap().to_string(),
                h["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("accept", "t-village"),
            ("record_visit", "t-village"),
            ("propose", "t-village"),
            ("approve", "t-township"),
            ("decide", "t-county"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let household_audit = world
        .app
        .store
        .audit_of("household", &objects.household)
        .await
        .unwrap();
    assert_eq!(household_audit.len(), 1);
    assert_eq!(household_audit[0].entry.actor, "t-county");
    assert_eq!(
        household_audit[0].entry.to_state.as_deref(),
        Some("monitored")
    );
    // After a decision, the task cannot move (409).
    let again = client
        .post(
            &format!("/api/tasks/{}/transitions", objects.task),
            &world.tokens.county,
            json!({"action": "decide", "decision": "approved"}),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(
        again.body["type"],
        "https://yujing.example/problems/illegal-transition"
    );

    // The running core applies the change log before its next batch: the household's
    // next illness is a review of its assistance, in a new alert.
    world
        .feed(&[illness_event(&world, &objects.household, "WJ-LOOP-0001")])
        .await;
    let alerts: Vec<HouseholdAlert> = all_alerts(&world.app)
        .await
        .into_iter()
        .filter(|a| a.household_id.as_str() == objects.household)
        .collect();
    let new = alerts
        .iter()
        .find(|a| a.status == AlertStatus::Open)
        .expect("a new alert");
    assert_ne!(new.alert_id, objects.alert);
    assert_eq!(
        new.action,
        Action::ReviewAssistance,
        "judged with the new status"
    );
    assert_eq!(new.household_status, HouseholdStatus::Monitored);
    // The cursor went out with the batch: a core rebuilt from the store starts after it.
    let cursor = world
        .app
        .store
        .position(yujing::pipeline::REGISTRY_CHANGES_KEY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cursor.position, after.changes[0].0 as u64);
    let rebuilt = world.app.load_core().await.unwrap();
    assert_eq!(rebuilt.registry_cursor(), after.changes[0].0);
}

#[tokio::test]
async fn the_loop_closes_on_sqlite() {
    the_loop_closes(Backend::Sqlite, "loop").await;
}

#[tokio::test]
async fn the_loop_closes_on_postgres() {
    the_loop_closes(Backend::Postgres, "loop").await;
}

// ---------------------------------------------------------------------------
// The rules' yield

/// Walks a task to a proposal of `outcome` (no registry change) and the township's
/// approval, which closes it.
async fn close_at_the_township(
    client: &Client,
    contract: &Contract,
    tokens: &Tokens,
    task: &str,
    outcome: &str,
) {
    let uri = format!("/api/tasks/{task}/transitions");
    for (token, body) in [
        (&tokens.village, json!({"action": "accept"})),
        (
            &tokens.village,
            json!({"action": "record_visit", "visited_on": dates_ago(3), "per_capita_income_yuan": 9100.0, "risk_types": []}),
        ),
        (
            &tokens.village,
            json!({"action": "propose", "outcome": outcome}),
        ),
        (&tokens.township, json!({"action": "approve"})),
    ] {
        let answer = checked(
            client,
            contract,
            Method::POST,
            "/api/tasks/{id}/transitions",
            &uri,
            Some(token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(answer.status, 200, "{body}: {}", answer.text);
    }
}

/// `GET /api/rules/yield` gives, for the caller's region and for a region inside it,
/// exactly what counting the store's alerts and tasks by hand gives: alerts (open,
/// expired), tasks, and the closed tasks' outcomes — identified, rejected by the
/// county (not eligible), not eligible, no risk — and the identified share.
async fn the_yield_counts_what_the_store_holds(backend: Backend, name: &str) {
    // A short expiry and lateness, so that the 45-day season leaves expired alerts.
    let world = World::with_settings(backend, name, 3300, |settings| {
        settings.rules.expiry_days = 10;
        settings.rules.max_lateness_days = 3;
    })
    .await;
    let contract = Contract::new();
    let client = Client::Router(world.router());
    let t = &world.tokens;
    let in_a: Vec<ScreeningTask> = all_tasks(&world.app)
        .await
        .into_iter()
        .filter(|task| task.village_code == world.village_a && task.kind == TaskKind::Identify)
        .collect();
    assert!(in_a.len() >= 4, "{} identify tasks in A", in_a.len());
    identify_through_the_procedure(&client, &contract, t, &in_a[0].task_id).await;
    close_at_the_township(&client, &contract, t, &in_a[1].task_id, "no_risk_found").await;
    close_at_the_township(&client, &contract, t, &in_a[2].task_id, "not_eligible").await;
    // Proposed for identification and rejected by the county.
    let uri = format!("/api/tasks/{}/transitions", in_a[3].task_id);
    for (token, body) in [
        (&t.village, json!({"action": "accept"})),
        (
            &t.village,
            json!({"action": "record_visit", "visited_on": dates_ago(9), "per_capita_income_yuan": 7000.0, "risk_types": ["illness"]}),
        ),
        (
            &t.village,
            json!({"action": "propose", "outcome": "identify", "monitoring_type": "marginal",
            "deliberated_on": dates_ago(8), "publicity_from": dates_ago(7), "publicity_to": dates_ago(2)}),
        ),
        (&t.township, json!({"action": "approve"})),
        (
            &t.county,
            json!({"action": "decide", "decision": "rejected", "note": "收入核实高于监测线"}),
        ),
    ] {
        let answer = client.post(&uri, token, body.clone()).await;
        assert_eq!(answer.status, 200, "{body}: {}", answer.text);
    }

    let alerts = all_alerts(&world.app).await;
    let tasks = all_tasks(&world.app).await;
    let yield_of = |scope: RegionCode| {
        let inside: Vec<HouseholdAlert> = alerts
            .iter()
            .filter(|a| a.region_code.is_within(scope))
            .cloned()
            .collect();
        crate::support::yield_by_hand(&inside, &tasks)
    };
    for (token, uri, scope) in [
        (&t.county, "/api/rules/yield".to_string(), world.county_code),
        (&t.village, "/api/rules/yield".to_string(), world.village_a),
        (
            &t.township,
            format!("/api/rules/yield?region={}", world.village_b),
            world.village_b,
        ),
    ] {
        let answer = checked(
            &client,
            &contract,
            Method::GET,
            "/api/rules/yield",
            &uri,
            Some(token),
            None,
        )
        .await;
        assert_eq!(answer.status, 200, "{uri}: {}", answer.text);
        assert_eq!(answer.body["region_code"], scope.to_string());
        assert_eq!(
            without_region(&answer.body),
            serde_json::to_value(yield_of(scope)).unwrap(),
            "{uri} for {scope}"
        );
    }
    // Not vacuous: the county's figures hold every kind of end.
    let county = yield_of(world.county_code);
    let all = &county.all;
    assert_eq!(all.alerts, alerts.len() as u64);
    assert!(all.expired > 0 && all.open > 0, "{all:?}");
    assert!(
        all.tasks > all.tasks_closed && all.tasks_closed == 4,
        "{all:?}"
    );
    assert_eq!(
        (all.identified, all.not_eligible, all.no_risk),
        (1, 2, 1),
        "{all:?}"
    );
    assert!(county.rules.len() > 5);
    let answer = client.get("/api/rules/yield", &t.county).await;
    assert_eq!(
        answer.body["all"]["identified_share"],
        1.0 / alerts.len() as f64
    );
    // The report says the same.
    let report = world.app.store.report().await.unwrap();
    assert_eq!(report.rule_yield, county);
    assert_eq!(
        report.alerts_by_status.get("expired").copied(),
        Some(all.expired)
    );
    // A department sees no household figures; a region outside the caller's is 404.
    assert_eq!(
        client.get("/api/rules/yield", &t.department).await.status,
        403
    );
    let outside = client
        .get(
            &format!("/api/rules/yield?region={}", world.village_c),
            &t.township,
        )
        .await;
    assert_eq!(outside.status, 404);
    let bad = client.get("/api/rules/yield?region=12", &t.county).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn the_yield_counts_what_the_store_holds_on_sqlite() {
    the_yield_counts_what_the_store_holds(Backend::Sqlite, "yield").await;
}

#[tokio::test]
async fn the_yield_counts_what_the_store_holds_on_postgres() {
    the_yield_counts_what_the_store_holds(Backend::Postgres, "yield").await;
}

// ---------------------------------------------------------------------------
// Concurrency

async fn one_transition_wins(backend: Backend, name: &str) {
    let world = World::new(backend, name, 3300).await;
    let router = world.router();
    let tasks: Vec<ScreeningTask> = all_tasks(&world.app)
        .await
        .into_iter()
        .filter(|t| t.village_code == world.village_a && t.stage == Stage::Pending)
        .collect();
    assert!(tasks.len() >= 3, "{} pending tasks in A", tasks.len());
    // A second village account of A, so two people race.
    let second = world
        .account("t-village-2", Role::Village, world.village_a, None)
        .await;
    let mut rounds = 0;
    for task in &tasks {
        let uri = format!("/api/tasks/{}/transitions", task.task_id);
        let (one, two) = (
            Client::Router(router.clone()),
            Client::Router(router.clone()),
        );
        let (a, b) = tokio::join!(
            one.post(&uri, &world.tokens.village, json!({"action": "accept"})),
            two.post(&uri, &second, json!({"action": "accept"})),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 409],
            "exactly one wins: {} / {}",
            a.text,
            b.text
        );
        let stored = world.app.store.task(&task.task_id).await.unwrap().unwrap();
        assert_eq!(stored.version, 1);
        let accepts = world
            .app
            .store
            .audit_of("task", &task.task_id)
            .await
            .unwrap();
        assert_eq!(accepts.len(), 1, "one audit row");
        let winner = if a.status == 200 {
            "t-village"
        } else {
            "t-village-2"
        };
        assert_eq!(stored.assignee.as_deref(), Some(winner));
        rounds += 1;
    }
    assert!(rounds >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transitions_one_wins_on_sqlite() {
    one_transition_wins(Backend::Sqlite, "race").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transitions_one_wins_on_postgres() {
    one_transition_wins(Backend::Postgres, "race").await;
}

// ---------------------------------------------------------------------------
// The audit is append-only in the database itself

async fn audit_is_append_only(backend: Backend, name: &str) {
    let env = Env::new();
    let settings = settings_for(&env, backend, name).await;
    let url = settings.store.url.expose().to_string();
    let app = App::build(settings).await.unwrap();
    let request = NewAccount {
        name: "auditor-probe".into(),
        role: Role::County,
        region: RegionCode::parse("522425000000").unwrap(),
        source: None,
    };
    yujing::commands::accounts::add(&app, &request)
        .await
        .unwrap();
    app.store.close().await;
    let statements = [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
    ];
    match backend {
        Backend::Sqlite => {
            use sqlx::Connection;
            let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
            for sql in statements {
                let error = sqlx::query(sql).execute(&mut connection).await.unwrap_err();
                assert!(error.to_string().contains("append-only"), "{sql}: {error}");
            }
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
                .fetch_one(&mut connection)
                .await
                .unwrap();
            assert_eq!(rows, 1);
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
            for sql in statements.iter().chain(&["TRUNCATE audit_log"]) {
                let error = sqlx::query(*sql)
                    .execute(&mut connection)
                    .await
                    .unwrap_err();
                assert!(error.to_string().contains("append-only"), "{sql}: {error}");
            }
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
                .fetch_one(&mut connection)
                .await
                .unwrap();
            assert_eq!(rows, 1);
        }
    }
}

#[tokio::test]
async fn audit_is_append_only_on_sqlite() {
    audit_is_append_only(Backend::Sqlite, "audit").await;
}

#[tokio::test]
async fn audit_is_append_only_on_postgres() {
    audit_is_append_only(Backend::Postgres, "audit").await;
}

#[tokio::test]
async fn accounts_and_the_audit_on_the_command_line() {
    let env = Env::new();
    env.app("cli.db").await.store.close().await;
    let token = crate::support::output(env.yujing("cli.db").args([
        "accounts",
        "add",
        "--name",
        "c1",
        "--role",
        "county",
        "--region",
        "522425000000",
    ]));
    let token = token.trim().to_string();
    assert!(token.starts_with("yj_") && token.len() == 67, "{token}");
    let list = crate::support::output(env.yujing("cli.db").args(["accounts", "list"]));
    assert!(
        list.contains("\tc1\tcounty\t522425000000\t-\tactive"),
        "{list}"
    );
    // A village account needs a village code; a department its feed.
    let refused = env
        .yujing("cli.db")
        .args([
            "accounts",
            "add",
            "--name",
            "v1",
            "--role",
            "village",
            "--region",
            "522425101000",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("village region code"));
    crate::support::output(env.yujing("cli.db").args(["accounts", "revoke", "c1"]));
    let audit = crate::support::output(env.yujing("cli.db").args(["audit", "export"]));
    let rows: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = rows.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "revoke"]);
    assert!(
        rows.iter()
            .all(|r| r["actor"].as_str().unwrap().starts_with("cli:"))
    );
    let csv = crate::support::output(
        env.yujing("cli.db")
            .args(["audit", "export", "--format", "csv"]),
    );
    assert!(csv.starts_with("id,at,actor,actor_role,entity"), "{csv}");
    assert_eq!(csv.lines().count(), 3);
    // The token is stored only as its hash.
    let mut stored = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(env.path(&format!("cli.db{suffix}"))) {
            stored.extend(bytes);
        }
    }
    assert!(
        !stored.windows(token.len()).any(|w| w == token.as_bytes()),
        "the clear token is in the store"
    );
    // A mistyped store is refused, not created.
    let missing = env.yujing("nope.db").args(["serve"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(!env.path("nope.db").exists());
}

// ---------------------------------------------------------------------------
// The OpenAPI document

#[test]
fn the_committed_openapi_document_is_current() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .expect("docs/openapi.json is committed");
    let current = yujing::api::openapi_json();
    assert!(
        committed == current,
        "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`"
    );
    let doc: Value = serde_json::from_str(&current).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let env = Env::new();
    let app = env.app("doc.db").await;
    let router = yujing::api::router(AppState::new(
        app.store.clone(),
        app.metrics.clone(),
        &app.settings,
        Readiness::default(),
    ));
    let answer = Client::Router(router)
        .call(Method::GET, "/api/openapi.json", None, None)
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text, yujing::api::openapi_json());
}

// ---------------------------------------------------------------------------
// Bodies are capped; problems are problem+json

#[tokio::test]
async fn bodies_are_capped_and_errors_are_problems() {
    let world = World::new(Backend::Sqlite, "caps", 3300).await;
    let contract = Contract::new();
    let client = Client::Router(world.router());
    let objects = objects_of(&world).await;
    let uri = format!("/api/tasks/{}/transitions", objects.task);
    let huge = json!({"action": "accept", "padding": "x".repeat(200_000)});
    let answer = checked(
        &client,
        &contract,
        Method::POST,
        "/api/tasks/{id}/transitions",
        &uri,
        Some(&world.tokens.village),
        Some(huge),
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    let answer = checked(
        &client,
        &contract,
        Method::POST,
        "/api/tasks/{id}/transitions",
        &uri,
        Some(&world.tokens.village),
        Some(json!({"action": "fly"})),
    )
    .await;
    assert_eq!(answer.status, 422);
    let answer = checked(
        &client,
        &contract,
        Method::POST,
        "/api/tasks/{id}/transitions",
        &uri,
        Some(&world.tokens.village),
        Some(json!({"action": "propose", "outcome": "identify"})),
    )
    .await;
    assert_eq!(
        answer.status, 409,
        "propose from pending is illegal: {}",
        answer.text
    );
    client
        .post(&uri, &world.tokens.village, json!({"action": "accept"}))
        .await;
    let answer = checked(&client, &contract, Method::POST, "/api/tasks/{id}/transitions", &uri, Some(&world.tokens.village), Some(json!({"action": "record_visit", "visited_on": "2024-05-01", "per_capita_income_yuan": "much"}))).await;
    assert_eq!(answer.status, 422);
    assert_eq!(
        answer.body["errors"][0]["field"], "per_capita_income_yuan",
        "{}",
        answer.text
    );
    let answer = client
        .call(
            Method::GET,
            "/api/nothing-here",
            Some(&world.tokens.village),
            None,
        )
        .await;
    assert_eq!(answer.status, 404);
    assert!(answer.content_type.starts_with("application/problem+json"));
    let metrics = client.call(Method::GET, "/metrics", None, None).await.text;
    assert!(metrics.contains("yujing_http_requests_total{method=\"POST\",route=\"/api/tasks/{id}/transitions\",status=\"413\"}"), "{metrics}");
    assert!(metrics.contains("yujing_http_request_seconds_bucket"));
}

// ---------------------------------------------------------------------------
// Overdue: the timer marks a task when its budget runs out, with no request

#[test]
fn a_task_turns_overdue_when_its_budget_runs_out() {
    // The store runs on a runtime of real time; the timer on one whose time is
    // paused and advanced by tokio alone.
    let db_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = Env::new();
    let (world_app, task) = db_runtime.block_on(async {
        let app = env.app("overdue.db").await;
        let t0 = Utc::now();
        let village = RegionCode::parse("522425101201").unwrap();
        // A task whose pass-on deadline is ten minutes ahead.
        let mut task = ScreeningTask::open(
            yujing::domain::task::NewTask {
                task_id: "0123456789abcdef0123456789abcdef".into(),
                kind: TaskKind::Identify,
                alert_id: Some("fedcba9876543210fedcba9876543210".into()),
                signal_id: None,
                household_id: Some(yujing::domain::ids::HouseholdId::parse("H-1").unwrap()),
                village_code: village,
                level: yujing::domain::alert::Level::Orange,
                priority_households: Vec::new(),
            },
            yujing::domain::task::Budget {
                pass_on_days: 2,
                decision_days: 15,
            },
            t0,
            t0,
        );
        task.pass_on_due_at = t0 + chrono::Duration::minutes(10);
        let batch = yujing::batch::BatchOutput {
            tasks: vec![task.clone()],
            ..Default::default()
        };
        app.store.commit_batch(&batch, &[], t0).await.unwrap();
        (app, task)
    });
    let db = db_runtime.handle().clone();
    let timer_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    timer_runtime.block_on(async {
        let start = Utc::now();
        let timer = yujing::overdue::OverdueTimer {
            store: world_app.store.clone(),
            metrics: world_app.metrics.clone(),
            rescan: Duration::from_secs(3600),
            clock: yujing::overdue::Clock::tokio_from(start),
            db: db.clone(),
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn(timer.clone().run(cancel.clone()));
        let stored = |id: String| {
            let store = world_app.store.clone();
            let db = db.clone();
            async move {
                db.spawn(async move { store.task(&id).await.unwrap().unwrap() })
                    .await
                    .unwrap()
            }
        };
        // Read without yielding to this runtime: while it waits on the store, a
        // paused clock would jump to the timer's deadline.
        let stored_now = |id: String| {
            let store = world_app.store.clone();
            let db = db.clone();
            std::thread::spawn(move || db.block_on(async move { store.task(&id).await }))
                .join()
                .unwrap()
                .unwrap()
                .unwrap()
        };
        // Nine minutes on: not yet.
        tokio::time::sleep(Duration::from_secs(9 * 60)).await;
        assert!(
            !stored_now(task.task_id.clone()).overdue,
            "not before the budget runs out"
        );
        // Past ten minutes: overdue, without any request.
        tokio::time::sleep(Duration::from_secs(70)).await;
        let real = std::time::Instant::now();
        let counted = "yujing_tasks_overdue{township=\"522425101000\"} 1";
        loop {
            let now = stored(task.task_id.clone()).await;
            // The sweep counts by township right after it marks.
            if now.overdue && world_app.metrics.render().contains(counted) {
                assert_eq!(now.version, task.version + 1);
                break;
            }
            assert!(
                real.elapsed() < Duration::from_secs(20),
                "the timer did not mark and count the task: {}",
                world_app.metrics.render()
            );
            tokio::task::yield_now().await;
        }
        let audit = {
            let store = world_app.store.clone();
            let id = task.task_id.clone();
            db.spawn(async move { store.audit_of("task", &id).await.unwrap() })
                .await
                .unwrap()
        };
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].entry.action, "overdue");
        assert_eq!(audit[0].entry.actor, "timer");
        cancel.cancel();
        running.await.unwrap();
    });
    db_runtime.block_on(world_app.store.close());
}
