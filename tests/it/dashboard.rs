//! The dashboard in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, the `fantoccini` client) against a processed county served on port 0.
//! A county account sees every township on the map and in the table with the API's
//! figures, drills down and back, and reads a risk chart whose points are the API's
//! series; a village account at 390 × 844 sees only its village; one task is walked
//! through the whole procedure in the page (village, township, county) and the
//! household is monitored in the store afterwards; a change made elsewhere appears
//! without reloading. Throughout, the console stays clean and every request goes to
//! the local server. Screenshots are written under `target/screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test installs them): the
//! test fails, never skips, when they are missing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use yujing::api::{AppState, Readiness};
use yujing::app::App;
use yujing::domain::account::{NewAccount, Role};
use yujing::domain::ids::{RegionCode, RegionLevel};
use yujing::domain::registry::HouseholdStatus;
use yujing::domain::task::{Stage, TaskKind};
use yujing::pipeline::sources::ndjson::Input;

use crate::support::{Env, feeds, import_county};

const LEVELS: [&str; 4] = ["red", "orange", "yellow", "blue"];
const STAGES: [&str; 4] = ["pending", "visiting", "township_review", "county_decision"];

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("target/screenshots");
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The browser binary: Debian's (the wrapper script passes flags from
/// /etc/chromium.d, which the test does not want).
fn chromium_binary() -> PathBuf {
    for candidate in ["/usr/lib/chromium/chromium", "/usr/bin/chromium"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "Chromium is missing: install Debian's `chromium` and `chromium-driver` \
         (apt-get install chromium chromium-driver; scripts/test does)"
    );
}

fn chromedriver_binary() -> PathBuf {
    for candidate in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "chromedriver is missing: install Debian's `chromium-driver` \
         (apt-get install chromium chromium-driver; scripts/test does)"
    );
}

/// chromedriver and one browser session, ended on drop.
struct Browser {
    driver: Child,
    driver_url: String,
    client: Client,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Ends chromedriver and the browser it started (its process group), also when the
    /// test failed before closing the session.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Browser {
        let binary = chromium_binary();
        let port = free_port();
        // Its own process group, so that the browser it starts ends with it.
        let driver = Command::new(chromedriver_binary())
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let began = Instant::now();
        while http
            .get(format!("{driver_url}/status"))
            .send()
            .await
            .is_err()
        {
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "chromedriver did not answer on {driver_url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("a browser profile folder");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-default-apps",
                    "--disable-extensions",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--hide-scrollbars",
                    "--window-size=1440,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL", "performance": "ALL" },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .expect("a browser session through chromedriver");
        Browser {
            driver,
            driver_url,
            client,
            http,
            _profile: profile,
        }
    }

    /// The entries of chromedriver's log `kind` (`browser`: the console;
    /// `performance`: DevTools events) since the last call.
    async fn log(&self, kind: &str) -> Vec<Value> {
        let session = self
            .client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        let answer: Value = self
            .http
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&json!({ "type": kind }))
            .send()
            .await
            .expect("chromedriver log")
            .json()
            .await
            .expect("chromedriver log JSON");
        answer["value"].as_array().cloned().unwrap_or_default()
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something truthy (within 60 s: the whole suite runs
    /// beside it on two cores) and returns it.
    async fn until(&self, what: &str, script: &str) -> Value {
        let began = Instant::now();
        loop {
            let value = self.js(script).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if began.elapsed() > Duration::from_secs(60) {
                self.screenshot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                let text = self
                    .js("return location.href + '\\n' + document.body.innerText")
                    .await;
                panic!("timed out waiting for {what}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Sizes the window so that the page's viewport is `width` × `height`.
    async fn viewport(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("window size");
        // The window is larger than its viewport by the browser's own frame.
        let inner = self
            .js("return [window.innerWidth, window.innerHeight]")
            .await;
        let got = |i: usize| inner[i].as_u64().unwrap_or(0) as i64;
        let (dw, dh) = (i64::from(width) - got(0), i64::from(height) - got(1));
        if dw != 0 || dh != 0 {
            self.client
                .set_window_size(
                    (i64::from(width) + dw).max(1) as u32,
                    (i64::from(height) + dh).max(1) as u32,
                )
                .await
                .expect("window size");
        }
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = screenshots().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    async fn fill(&self, css: &str, text: &str) {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    /// Goes to `#fragment` of the page at `base` (the address bar).
    async fn open(&self, base: &str, fragment: &str) {
        self.client
            .goto(&format!("{base}/{fragment}"))
            .await
            .expect("navigates");
    }

    /// Signs in with `token` on the sign-in form (signing out first if needed).
    async fn sign_in(&self, base: &str, token: &str) {
        // The page's own sign-out (it stops its poll first).
        self.open(base, "#/signout").await;
        self.until(
            "the sign-in form",
            "return !!document.querySelector('#token')",
        )
        .await;
        self.fill("#token", token).await;
        self.click("#signin button[type=submit]").await;
        self.until(
            "the signed-in page",
            "return !!document.querySelector('#account')",
        )
        .await;
    }
}

/// Console entries that are errors or warnings.
fn console_problems(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| matches!(e["level"].as_str(), Some("SEVERE" | "WARNING")))
        .map(|e| format!("{} {}", e["level"], e["message"]))
        .collect()
}

/// The URLs the page asked for, from the DevTools network events.
fn requested_urls(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
        .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
        .filter_map(|m| {
            m["message"]["params"]["request"]["url"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The API, for the figures the page must show.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str, token: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("API answers");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("JSON")
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("API answers");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }
}

/// The severity the map colours a region by, from its figures in the API.
fn severity(figures: &Value) -> &'static str {
    for level in LEVELS {
        if figures["alerts"]["by_level"][level].as_u64().unwrap_or(0) > 0
            || figures["signals"]["by_severity"][level]
                .as_u64()
                .unwrap_or(0)
                > 0
        {
            return level;
        }
    }
    let any = figures["alerts"]["total"].as_u64().unwrap_or(0)
        + figures["tasks"]["open"].as_u64().unwrap_or(0)
        + figures["signals"]["active"].as_u64().unwrap_or(0)
        + figures["monitored_households"].as_u64().unwrap_or(0);
    if any > 0 { "quiet" } else { "none" }
}

/// The table cells the page must show for one child, from the API's figures.
fn expected_cells(figures: &Value) -> BTreeMap<String, String> {
    let n = |v: &Value| v.as_u64().unwrap_or(0).to_string();
    let mut cells = BTreeMap::new();
    cells.insert(
        "name".to_string(),
        figures["region"]["name"].as_str().unwrap_or("").to_string(),
    );
    cells.insert("alerts.total".into(), n(&figures["alerts"]["total"]));
    for level in LEVELS {
        cells.insert(
            format!("alerts.{level}"),
            n(&figures["alerts"]["by_level"][level]),
        );
    }
    for stage in STAGES {
        cells.insert(
            format!("tasks.{stage}"),
            n(&figures["tasks"]["by_stage"][stage]),
        );
    }
    cells.insert("tasks.overdue".into(), n(&figures["tasks"]["overdue"]));
    cells.insert("monitored".into(), n(&figures["monitored_households"]));
    cells.insert("signals".into(), n(&figures["signals"]["active"]));
    cells
}

const TABLE_CELLS: &str = r#"
    const rows = {};
    for (const tr of document.querySelectorAll('#children tbody tr')) {
        const cells = {};
        for (const td of tr.querySelectorAll('td')) cells[td.dataset.col] = td.innerText.trim();
        rows[tr.dataset.code] = cells;
    }
    return rows;
"#;

const MAP_POINTS: &str = r#"
    const el = document.getElementById('region-map');
    const chart = el && window.echarts.getInstanceByDom(el);
    if (!chart) return null;
    const series = chart.getOption().series.find((s) => s.id === 'regions');
    return series ? series.data.map((d) => ({ code: d.code, alerts: d.value[2], severity: d.severity,
        longitude: d.value[0], latitude: d.value[1] })) : null;
"#;

/// Asserts the overview of `code` lists every child on the map and in the table with
/// the figures the API gives.
async fn assert_overview(browser: &Browser, api: &Api, token: &str, code: &str) -> Value {
    browser
        .until(
            "the overview",
            &format!(
                "return !!document.querySelector('#overview[data-code=\"{code}\"] #children tbody tr') \
                 && !!window.echarts.getInstanceByDom(document.getElementById('region-map'))"
            ),
        )
        .await;
    let summary = api
        .get(&format!("/api/regions/{code}/summary"), token)
        .await;
    let children = summary["children"].as_array().expect("children");
    assert!(!children.is_empty(), "{code} has children");
    let table = browser.js(TABLE_CELLS).await;
    let shown: BTreeSet<&str> = table
        .as_object()
        .expect("rows")
        .keys()
        .map(String::as_str)
        .collect();
    let wanted: BTreeSet<&str> = children
        .iter()
        .map(|c| c["region"]["code"].as_str().expect("code"))
        .collect();
    assert_eq!(shown, wanted, "the table lists every child of {code}");
    for child in children {
        let child_code = child["region"]["code"].as_str().expect("code");
        let cells: BTreeMap<String, String> =
            serde_json::from_value(table[child_code].clone()).expect("cells");
        for (column, value) in expected_cells(child) {
            assert_eq!(
                cells.get(&column),
                Some(&value),
                "{child_code}: column {column} shows the API's figure"
            );
        }
    }
    let points = browser.js(MAP_POINTS).await;
    let points = points.as_array().expect("map points");
    let by_code: BTreeMap<&str, &Value> = points
        .iter()
        .map(|p| (p["code"].as_str().expect("code"), p))
        .collect();
    assert_eq!(
        by_code.keys().copied().collect::<BTreeSet<_>>(),
        wanted,
        "the map places every child of {code}"
    );
    for child in children {
        let point = by_code[child["region"]["code"].as_str().expect("code")];
        assert_eq!(point["alerts"], child["alerts"]["total"]);
        assert_eq!(point["severity"], severity(child));
        assert_eq!(point["longitude"], child["region"]["longitude"]);
        assert_eq!(point["latitude"], child["region"]["latitude"]);
    }
    summary
}

/// A processed county, its accounts, and the page on a local server.
struct Site {
    env: Env,
    county_dir: PathBuf,
    app: App,
    base: String,
    county: RegionCode,
    village_a: RegionCode,
    village_b: RegionCode,
    tokens: BTreeMap<&'static str, String>,
    cancel: CancellationToken,
}

async fn site() -> Site {
    let env = Env::new();
    let (county_dir, key) = env.recent_county(3250, 45, 23);
    let mut settings = env.settings("dashboard.db");
    settings.api.summary_cache_ms = 0;
    // Configured but not there yet: the map draws points only until it is written.
    settings.api.boundaries_geojson = env.path("boundaries.geojson").display().to_string();
    let app = App::build(settings).await.expect("app builds");
    import_county(&app, &county_dir).await;
    let inputs = feeds(&county_dir, &key)
        .into_iter()
        .map(Input::File)
        .collect();
    yujing::pipeline::run_ndjson(&app, inputs, CancellationToken::new(), false)
        .await
        .expect("county processed");
    let mut pending: BTreeMap<RegionCode, usize> = BTreeMap::new();
    app.store
        .export_tasks(&mut |task| {
            if task.kind == TaskKind::Identify && task.stage == Stage::Pending {
                *pending.entry(task.village_code).or_default() += 1;
            }
            Ok(())
        })
        .await
        .expect("tasks");
    let village_a = pending
        .iter()
        .max_by_key(|(code, n)| (**n, std::cmp::Reverse(**code)))
        .map(|(code, _)| *code)
        .expect("a village with pending identify tasks");
    let regions = app
        .store
        .load_households_and_regions()
        .await
        .expect("regions")
        .regions;
    let village_b = regions
        .iter()
        .find(|r| {
            r.level == RegionLevel::Village
                && r.code != village_a
                && r.code.township() == village_a.township()
        })
        .map(|r| r.code)
        .expect("a second village in the township");
    let county = village_a.county();
    let mut tokens = BTreeMap::new();
    for (name, role, region, source) in [
        ("county", Role::County, county, None),
        ("township", Role::Township, village_a.township(), None),
        ("village", Role::Village, village_a, None),
        (
            "department",
            Role::Department,
            county,
            Some(yujing::domain::event::Source::MedicalInsurance),
        ),
    ] {
        let request = NewAccount {
            name: format!("web-{name}"),
            role,
            region,
            source,
        };
        let (_, token) = yujing::commands::accounts::add(&app, &request)
            .await
            .expect("account");
        tokens.insert(name, token);
    }
    let state = AppState::new(
        app.store.clone(),
        app.metrics.clone(),
        &app.settings,
        Readiness::default(),
    );
    let cancel = CancellationToken::new();
    let (address, _server) = yujing::api::serve("127.0.0.1:0", state, cancel.clone())
        .await
        .expect("serves");
    Site {
        env,
        county_dir,
        app,
        base: format!("http://{address}"),
        county,
        village_a,
        village_b,
        tokens,
        cancel,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let site = site().await;
    let browser = Browser::start().await;
    let api = Api {
        http: reqwest::Client::new(),
        base: site.base.clone(),
    };
    let base = site.base.as_str();
    let county = site.county.to_string();
    let township = site.village_a.township().to_string();
    let village_a = site.village_a.to_string();
    let county_token = site.tokens["county"].as_str();
    let township_token = site.tokens["township"].as_str();
    let village_token = site.tokens["village"].as_str();

    // The county: every township on the map and in the table, with the API's figures.
    browser.sign_in(base, county_token).await;
    let heard = browser
        .until(
            "the last-heard line",
            "return document.querySelector('#last-heard').dataset.at || ''",
        )
        .await;
    assert!(heard.is_string());
    let summary = assert_overview(&browser, &api, county_token, &county).await;
    assert!(
        summary["children"]
            .as_array()
            .expect("townships")
            .iter()
            .all(|c| c["region"]["level"] == "township")
    );
    // Chinese by default.
    let heading = browser
        .js("return document.querySelector('#nav').innerText")
        .await;
    assert!(
        heading.as_str().unwrap_or("").contains("区域概览"),
        "{heading}"
    );
    // The table sorts by a column on a click.
    browser.click("#children th[data-col='monitored']").await;
    let monitored = browser
        .js("return [...document.querySelectorAll('#children tbody td[data-col=monitored]')].map((td) => Number(td.innerText))")
        .await;
    let monitored: Vec<u64> = serde_json::from_value(monitored).expect("numbers");
    assert!(
        monitored.windows(2).all(|w| w[0] >= w[1]),
        "sorted by monitored households, most first: {monitored:?}"
    );
    browser.screenshot("dashboard-county").await;

    // Live: a step made elsewhere shows without reloading the page.
    browser.js("window.__stayed = true; return true").await;
    let before = browser.js(TABLE_CELLS).await;
    let pending_before: u64 = before[&township]["tasks.pending"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("pending figure");
    let pending_tasks = api
        .get(
            &format!("/api/tasks?region={village_a}&stage=pending&kind=identify&limit=500"),
            village_token,
        )
        .await;
    let pending_tasks = pending_tasks["items"].as_array().expect("tasks").clone();
    assert!(
        pending_tasks.len() >= 2,
        "two pending identify tasks in village A"
    );
    let elsewhere = &pending_tasks[1];
    api.post(
        &format!(
            "/api/tasks/{}/transitions",
            elsewhere["task_id"].as_str().expect("id")
        ),
        village_token,
        json!({ "action": "accept" }),
    )
    .await;
    browser
        .until(
            "the live update of the township's pending tasks",
            &format!(
                "const td = document.querySelector('#children tr[data-code=\"{township}\"] td[data-col=\"tasks.pending\"]'); \
                 return td && Number(td.innerText) === {}",
                pending_before - 1
            ),
        )
        .await;
    assert_eq!(
        browser.js("return window.__stayed === true").await,
        json!(true),
        "updated without a reload"
    );
    browser
        .until(
            "the news of the task change",
            "return Number(document.querySelector('#news').dataset.count || 0) > 0",
        )
        .await;

    // Live: a new alert, from an event processed while the page is open.
    let mut alerted = BTreeSet::new();
    site.app
        .store
        .export_alerts(&mut |alert| {
            alerted.insert(alert.household_id.to_string());
            Ok(())
        })
        .await
        .expect("alerts");
    let members = std::fs::read_to_string(site.county_dir.join("members.csv")).expect("members");
    let person = members
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields.len() >= 2).then(|| (fields[0], fields[1]))
        })
        .find(|(_, household)| household.starts_with(&village_a) && !alerted.contains(*household))
        .map(|(person, _)| person.to_string())
        .expect("a resident of village A whose household has no alert");
    let before = browser.js(TABLE_CELLS).await;
    let alerts_before: u64 = before[&township]["alerts.total"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("alerts figure");
    let last_day = summary["counted_days"]["last"]
        .as_str()
        .expect("counted days");
    let event = json!({
        "event_id": "CL-WEB-LIVE-000001",
        "source": "disabled_persons_federation",
        "kind": "disability_certified",
        "occurred_at": format!("{last_day}T10:00:00+08:00"),
        "reported_at": format!("{last_day}T12:00:00+08:00"),
        "person_id": person,
        "payload": { "grade": 1, "category": "physical" },
    });
    let more = site.env.path("live.ndjson");
    std::fs::write(&more, format!("{event}\n")).expect("feed written");
    yujing::pipeline::run_ndjson(
        &site.app,
        vec![Input::File(more)],
        CancellationToken::new(),
        false,
    )
    .await
    .expect("the new event processed");
    browser
        .until(
            "the live update of the township's open alerts",
            &format!(
                "const td = document.querySelector('#children tr[data-code=\"{township}\"] td[data-col=\"alerts.total\"]'); \
                 return td && Number(td.innerText) === {}",
                alerts_before + 1
            ),
        )
        .await;
    browser
        .until(
            "the new alert in the news",
            "return [...document.querySelectorAll('#news-list li')].some((li) => li.dataset.key.startsWith('a:'))",
        )
        .await;
    assert_eq!(
        browser.js("return window.__stayed === true").await,
        json!(true),
        "updated without a reload"
    );

    // Drill down: the township, then a village, and back up.
    browser
        .click(&format!(
            "#children tr[data-code='{township}'] td[data-col=name] a"
        ))
        .await;
    assert_overview(&browser, &api, county_token, &township).await;
    browser.screenshot("dashboard-township").await;
    browser
        .click(&format!(
            "#children tr[data-code='{village_a}'] td[data-col=name] a"
        ))
        .await;
    browser
        .until(
            "the village overview",
            &format!(
                "return !!document.querySelector('#overview[data-code=\"{village_a}\"] #figures')"
            ),
        )
        .await;
    let village_summary = api
        .get(&format!("/api/regions/{village_a}/summary"), county_token)
        .await;
    let shown_alerts = browser
        .js("return document.querySelector('#figures [data-figure=alerts] .value').innerText")
        .await;
    assert_eq!(
        shown_alerts.as_str().map(str::to_string),
        Some(village_summary["region"]["alerts"]["total"].to_string())
    );
    let open_alerts = api
        .get(
            &format!("/api/alerts?region={village_a}&status=open&limit=500"),
            county_token,
        )
        .await;
    let open_alerts = open_alerts["items"].as_array().expect("alerts").len();
    browser
        .until(
            "the village's open alerts",
            &format!("return document.querySelectorAll('#alert-list li').length === {open_alerts}"),
        )
        .await;
    browser.click("#up").await;
    assert_overview(&browser, &api, county_token, &township).await;
    browser
        .click(&format!("#crumbs a[data-code='{county}']"))
        .await;
    assert_overview(&browser, &api, county_token, &county).await;

    // Risk over time: the plotted points are the API's series.
    browser.click("#open-risk").await;
    browser
        .until(
            "the risk chart",
            "const el = document.getElementById('risk-chart'); \
             return !!(el && window.echarts.getInstanceByDom(el))",
        )
        .await;
    let plotted = browser
        .js(r#"
            const option = window.echarts.getInstanceByDom(document.getElementById('risk-chart')).getOption();
            const s = (id) => option.series.find((x) => x.id === id).data;
            return { days: option.xAxis[0].data, count: s('count'), expected: s('expected'), upper: s('upper'),
                     alarms: s('alarms').map((p) => p[0]),
                     from: document.getElementById('from').value, to: document.getElementById('to').value,
                     method: document.getElementById('risk').dataset.method,
                     kind: document.getElementById('risk').dataset.kind };
        "#)
        .await;
    let from = plotted["from"].as_str().expect("from");
    let to = plotted["to"].as_str().expect("to");
    let method = plotted["method"].as_str().expect("method");
    assert_eq!(plotted["kind"], "any_risk");
    let series = api
        .get(
            &format!("/api/regions/{county}/series?kind=any_risk&from={from}&to={to}"),
            county_token,
        )
        .await;
    let days = series["days"].as_array().expect("days");
    assert!(days.len() > 30, "a window of the county's data");
    assert!(
        days.iter().any(|d| d["count"].as_u64().unwrap_or(0) > 0),
        "the chart opens on days with data"
    );
    let api_days: Vec<&str> = days
        .iter()
        .map(|d| d["day"].as_str().expect("day"))
        .collect();
    let shown_days: Vec<&str> = plotted["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| d.as_str().expect("day"))
        .collect();
    assert_eq!(shown_days, api_days);
    let counts: Vec<u64> = days
        .iter()
        .map(|d| d["count"].as_u64().expect("count"))
        .collect();
    let shown_counts: Vec<u64> = serde_json::from_value(plotted["count"].clone()).expect("counts");
    assert_eq!(shown_counts, counts, "the plotted counts are the API's");
    let mut alarm_days = Vec::new();
    for (i, day) in days.iter().enumerate() {
        let judged = day["judgements"]
            .as_array()
            .expect("judgements")
            .iter()
            .find(|j| j["method"] == method);
        let close = |shown: &Value, api: Option<&Value>| match (
            shown.as_f64(),
            api.and_then(Value::as_f64),
        ) {
            (None, None) => true,
            (Some(a), Some(b)) => (a - b).abs() < 1e-3,
            _ => false,
        };
        assert!(
            close(&plotted["expected"][i], judged.map(|j| &j["expected"])),
            "expected value on {}",
            api_days[i]
        );
        assert!(
            close(&plotted["upper"][i], judged.map(|j| &j["upper_bound"])),
            "upper bound on {}",
            api_days[i]
        );
        if judged.is_some_and(|j| j["alarm"] == true) {
            alarm_days.push(api_days[i]);
        }
    }
    let shown_alarms: Vec<&str> = plotted["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .map(|d| d.as_str().expect("day"))
        .collect();
    assert_eq!(
        shown_alarms, alarm_days,
        "the alarm days marked are the API's"
    );
    let signals = api
        .get(
            &format!("/api/signals?region={county}&kind=any_risk&limit=500"),
            county_token,
        )
        .await;
    let own = signals["items"]
        .as_array()
        .expect("signals")
        .iter()
        .filter(|s| s["region_code"] == county.as_str())
        .count();
    let shown_signals = browser
        .js("return document.querySelectorAll('#signals tbody tr').length")
        .await;
    assert_eq!(
        shown_signals,
        json!(own),
        "every signal of the county is listed"
    );
    browser.screenshot("dashboard-risk").await;

    // English on request.
    browser.click("#lang").await;
    browser
        .until(
            "the page in English",
            "return document.querySelector('#nav').innerText.includes('Overview')",
        )
        .await;
    browser.screenshot("dashboard-risk-en").await;
    browser.click("#lang").await;
    browser
        .until(
            "the page in Chinese again",
            "return document.querySelector('#nav').innerText.includes('区域概览')",
        )
        .await;

    let console = browser.log("browser").await;
    assert_eq!(
        console_problems(&console),
        Vec::<String>::new(),
        "a clean console (county)"
    );

    // The village, on a phone: only its village.
    browser.viewport(390, 844).await;
    browser.sign_in(base, village_token).await;
    let size = browser
        .js("return [window.innerWidth, window.innerHeight]")
        .await;
    assert_eq!(size, json!([390, 844]), "a phone's viewport");
    browser
        .until(
            "the village's work list",
            &format!(
                "return !!document.querySelector('#work[data-code=\"{village_a}\"] #task-list')"
            ),
        )
        .await;
    let villages = browser
        .js("return [...document.querySelectorAll('#task-list li.task')].map((li) => li.dataset.task)")
        .await;
    let listed: BTreeSet<String> = serde_json::from_value(villages).expect("task ids");
    let open_tasks = api.get("/api/tasks?limit=500", village_token).await;
    let open: BTreeSet<String> = open_tasks["items"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["stage"] != "closed")
        .map(|t| t["task_id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(listed, open, "the work list is the village's open tasks");
    // Overdue first.
    let late = browser
        .js("return [...document.querySelectorAll('#task-list li.task')].map((li) => li.classList.contains('late'))")
        .await;
    let late: Vec<bool> = serde_json::from_value(late).expect("flags");
    assert!(
        late.windows(2).all(|w| w[0] >= w[1]),
        "overdue first: {late:?}"
    );
    let no_overflow = browser
        .js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    assert_eq!(no_overflow, json!(true), "nothing wider than the phone");
    browser.screenshot("phone-worklist").await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#news-list li').length")
            .await,
        json!(0),
        "no news carried over from the account signed in before"
    );
    let console = browser.log("browser").await;
    assert_eq!(
        console_problems(&console),
        Vec::<String>::new(),
        "a clean console (village)"
    );

    // A household of the other village, typed into the address bar: not found.
    let mut other_household = None;
    site.app
        .store
        .export_alerts(&mut |alert| {
            if alert.region_code == site.village_b && other_household.is_none() {
                other_household = Some(alert.household_id.to_string());
            }
            Ok(())
        })
        .await
        .expect("alerts");
    let other_household = match other_household {
        Some(id) => id,
        None => format!("{}-000001", site.village_b),
    };
    browser
        .open(base, &format!("#/household/{other_household}"))
        .await;
    browser
        .until("not found", "return !!document.querySelector('#not-found')")
        .await;
    // The one console line allowed: the browser's note of the API's 404.
    let console = browser.log("browser").await;
    let problems = console_problems(&console);
    assert!(
        problems
            .iter()
            .all(|p| p.contains("404") && p.contains("/api/households/")),
        "only the refused household: {problems:?}"
    );

    // The whole procedure in the page: the village proposes identify...
    let task = &pending_tasks[0];
    let task_id = task["task_id"].as_str().expect("task id");
    let household_id = task["household_id"]
        .as_str()
        .expect("household")
        .to_string();
    browser.open(base, &format!("#/task/{task_id}")).await;
    browser
        .until(
            "the task",
            "return !!document.querySelector('#task #move-accept')",
        )
        .await;
    assert!(
        browser
            .js("return document.querySelector('#household .mono')?.innerText || ''")
            .await
            .as_str()
            .is_some_and(|m| m.contains('*')),
        "members masked"
    );
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#move-approve, #move-decide, #move-return').length")
            .await,
        json!(0),
        "a village sees only its own steps"
    );
    browser.screenshot("phone-task").await;
    assert_eq!(
        browser
            .js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
            .await,
        json!(true),
        "the task page fits the phone"
    );
    browser.click("#move-accept button[type=submit]").await;
    browser
        .until("visiting", "return document.querySelector('#task')?.dataset.stage === 'visiting' && !!document.querySelector('#move-record_visit')")
        .await;
    browser.fill("#f-per_capita_income_yuan", "5200").await;
    browser
        .click("#move-record_visit input[name=risk_types][value=illness]")
        .await;
    browser
        .click("#move-record_visit button[type=submit]")
        .await;
    browser
        .until(
            "the visit recorded",
            "return document.querySelector('#task')?.dataset.version === '2'",
        )
        .await;
    browser
        .js("const s = document.querySelector('#f-outcome'); s.value = 'identify'; s.dispatchEvent(new Event('change')); \
             document.querySelector('#f-monitoring_type').value = 'sudden_hardship'; return true")
        .await;
    browser.click("#move-propose button[type=submit]").await;
    browser
        .until(
            "township review",
            "return document.querySelector('#task')?.dataset.stage === 'township_review'",
        )
        .await;
    let console = browser.log("browser").await;
    assert_eq!(
        console_problems(&console),
        Vec::<String>::new(),
        "a clean console (village steps)"
    );

    // ... the township approves ...
    browser.viewport(1440, 1000).await;
    browser.sign_in(base, township_token).await;
    browser.open(base, &format!("#/task/{task_id}")).await;
    browser
        .until(
            "the township's step",
            "return !!document.querySelector('#move-approve')",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#move-accept, #move-propose, #move-decide').length")
            .await,
        json!(0),
        "a township sees only its own steps"
    );
    browser.click("#move-approve button[type=submit]").await;
    browser
        .until(
            "county decision",
            "return document.querySelector('#task')?.dataset.stage === 'county_decision'",
        )
        .await;

    // ... and the county decides.
    browser.sign_in(base, county_token).await;
    browser.open(base, &format!("#/task/{task_id}")).await;
    browser
        .until(
            "the county's step",
            "return !!document.querySelector('#move-decide')",
        )
        .await;
    browser.click("#move-decide button[type=submit]").await;
    browser
        .until(
            "closed",
            "return document.querySelector('#task')?.dataset.stage === 'closed'",
        )
        .await;
    let record = site
        .app
        .store
        .household(&household_id)
        .await
        .expect("store")
        .expect("household");
    assert_eq!(
        record.household.status,
        HouseholdStatus::Monitored,
        "the household is monitored in the store"
    );
    let shown_status = browser
        .until(
            "the household shown as monitored",
            "const el = document.querySelector('#household'); return el && el.dataset.status === 'monitored' ? el.dataset.status : ''",
        )
        .await;
    assert_eq!(shown_status, json!("monitored"));
    let console = browser.log("browser").await;
    assert_eq!(
        console_problems(&console),
        Vec::<String>::new(),
        "a clean console (decisions)"
    );

    // The county's boundaries, once configured, are drawn under the points.
    let townships = api
        .get(&format!("/api/regions/{county}/summary"), county_token)
        .await;
    let features: Vec<Value> = townships["children"]
        .as_array()
        .expect("townships")
        .iter()
        .map(|t| {
            let (x, y) = (
                t["region"]["longitude"].as_f64().expect("longitude"),
                t["region"]["latitude"].as_f64().expect("latitude"),
            );
            json!({
                "type": "Feature",
                "properties": { "name": t["region"]["name"] },
                "geometry": { "type": "Polygon", "coordinates": [[
                    [x - 0.12, y - 0.12], [x + 0.12, y - 0.12], [x + 0.12, y + 0.12],
                    [x - 0.12, y + 0.12], [x - 0.12, y - 0.12]
                ]] },
            })
        })
        .collect();
    std::fs::write(
        site.env.path("boundaries.geojson"),
        json!({ "type": "FeatureCollection", "features": features }).to_string(),
    )
    .expect("boundaries written");

    // A department: the figures and its own feed's series, no households, no steps.
    browser.sign_in(base, &site.tokens["department"]).await;
    browser.client.refresh().await.expect("reloads");
    browser
        .until(
            "the department's overview",
            "return !!document.querySelector('#overview #figures')",
        )
        .await;
    let drawn = browser
        .until(
            "the boundaries on the map",
            "const el = document.getElementById('region-map'); const chart = el && window.echarts.getInstanceByDom(el); \
             const geo = chart && chart.getOption().geo; \
             return geo && geo.length ? { map: geo[0].map, regions: window.echarts.getMap(geo[0].map).geoJSON.features.length, \
               points: chart.getOption().series.find((s) => s.id === 'regions').data.length } : null",
        )
        .await;
    assert_eq!(
        drawn,
        json!({ "map": "yujing-boundaries", "regions": features.len(), "points": features.len() }),
        "the configured boundaries under the townships' points"
    );
    browser.screenshot("dashboard-boundaries").await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#nav a[data-nav=tasks], #open-tasks').length")
            .await,
        json!(0),
        "no work list for a department"
    );
    browser.click("#open-risk").await;
    browser
        .until(
            "the department's risk chart",
            "const el = document.getElementById('risk-chart'); return !!(el && window.echarts.getInstanceByDom(el))",
        )
        .await;
    assert_eq!(
        browser
            .js("return [...document.querySelectorAll('#kind option')].map((o) => o.value)")
            .await,
        json!(["illness"]),
        "a medical-insurance account charts illness only"
    );
    let console = browser.log("browser").await;
    assert_eq!(
        console_problems(&console),
        Vec::<String>::new(),
        "a clean console (department)"
    );

    // Every request went to the local server.
    let network = browser.log("performance").await;
    let urls = requested_urls(&network);
    assert!(
        urls.iter().any(|u| u.contains("/api/")),
        "the network log was read"
    );
    // The browser's own pages (the first tab's chrome://new-tab-page…) never touch
    // the network; every other request must go to the local server.
    let internal = [
        "data:",
        "blob:",
        "about:",
        "chrome:",
        "chrome-untrusted:",
        "devtools:",
    ];
    let elsewhere: Vec<&String> = urls
        .iter()
        .filter(|u| !internal.iter().any(|scheme| u.starts_with(scheme)))
        .filter(|u| !u.starts_with(&format!("{base}/")))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests beyond the local server: {elsewhere:?}"
    );

    let _ = browser.client.clone().close().await;
    site.cancel.cancel();
}

/// The operators' Grafana dashboard: it reads, it has the panels operators need, and
/// every metric its queries name is one a running yujing exposes on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_names_only_metrics_yujing_exposes() {
    use tower::ServiceExt;

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards/yujing.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard JSON is committed");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard JSON reads");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: BTreeSet<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Ingest rate",
        "Consumer lag",
        "Batch commit latency",
        "Dead letters by rule",
        "Alerts by level",
        "Overdue tasks by township",
        "HTTP latency",
    ] {
        assert!(titles.contains(wanted), "a panel {wanted:?}");
    }
    let mut named = BTreeSet::new();
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a query");
            let mut rest = expr;
            while let Some(start) = rest.find("yujing_") {
                let tail = &rest[start..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                named.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(
        named.len() >= 8,
        "the queries name yujing's metrics: {named:?}"
    );

    // A running instance: a county processed, the overdue timer's sweep, HTTP requests.
    let env = Env::new();
    let (county_dir, key) = env.county(300, 30, 5);
    let app = env.app("grafana.db").await;
    import_county(&app, &county_dir).await;
    let inputs = feeds(&county_dir, &key)
        .into_iter()
        .map(Input::File)
        .collect();
    yujing::pipeline::run_ndjson(&app, inputs, CancellationToken::new(), false)
        .await
        .expect("county processed");
    // The overdue timer's sweep a month on, when every open task is past its budget.
    let mut timer = yujing::overdue::OverdueTimer::new(
        app.store.clone(),
        app.metrics.clone(),
        Duration::from_secs(60),
    );
    timer.clock =
        yujing::overdue::Clock::tokio_from(chrono::Utc::now() + chrono::Duration::days(30));
    let marked = timer.sweep().await.expect("overdue sweep");
    assert!(marked > 0, "tasks past their budget");
    // The Kafka consumer's figures need a broker: moved here as the consumer moves them.
    app.metrics.messages_consumed("dept.health", 3);
    app.metrics.partition_lag("dept.health", 0, 10, 7);
    let router = yujing::api::router(AppState::new(
        app.store.clone(),
        app.metrics.clone(),
        &app.settings,
        Readiness::default(),
    ));
    let call = |uri: &str| {
        axum::http::Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    for uri in ["/healthz", "/api/me", "/"] {
        router.clone().oneshot(call(uri)).await.expect("answers");
    }
    let response = router.oneshot(call("/metrics")).await.expect("metrics");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let exposition = String::from_utf8(bytes.to_vec()).expect("text");
    let mut exposed = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            exposed.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exposed.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    let missing: Vec<&String> = named.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not expose: {missing:?}\nexposed: {exposed:?}"
    );
}

/// The page and its assets come from the binary: `/` is the page with a same-origin
/// policy, every asset the bytes of `web/`, revalidated by entity tag.
#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    let env = Env::new();
    let app = env.app("page.db").await;
    let router = yujing::api::router(AppState::new(
        app.store.clone(),
        app.metrics.clone(),
        &app.settings,
        Readiness::default(),
    ));
    let get = |uri: &str, tag: Option<&str>| {
        let mut request = Request::builder().uri(uri);
        if let Some(tag) = tag {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        request.body(axum::body::Body::empty()).expect("request")
    };
    let page = router.clone().oneshot(get("/", None)).await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for asset in [
        "js/main.js",
        "app.css",
        "vendor/echarts/echarts.min.js",
        "vendor/echarts/LICENSE",
    ] {
        let response = router
            .clone()
            .oneshot(get(&format!("/web/{asset}"), None))
            .await
            .expect("asset");
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let tag = response.headers()[header::ETAG]
            .to_str()
            .unwrap()
            .to_string();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(
            bytes.as_ref(),
            std::fs::read(root.join(asset))
                .expect("the file")
                .as_slice(),
            "{asset} is the file's bytes"
        );
        let again = router
            .clone()
            .oneshot(get(&format!("/web/{asset}"), Some(&tag)))
            .await
            .expect("asset");
        assert_eq!(
            again.status(),
            StatusCode::NOT_MODIFIED,
            "{asset} revalidated"
        );
    }
    let missing = router
        .clone()
        .oneshot(get("/web/nothing.js", None))
        .await
        .expect("answer");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // No boundaries configured: an empty collection, not an error in the console.
    let boundaries = router
        .oneshot(get("/web/boundaries.geojson", None))
        .await
        .expect("answer");
    assert_eq!(boundaries.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(boundaries.into_body(), usize::MAX)
        .await
        .expect("body");
    let geojson: Value = serde_json::from_slice(&bytes).expect("GeoJSON");
    assert_eq!(geojson["features"], json!([]));
}
