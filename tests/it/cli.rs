//! The command line as a newcomer meets it: each first failure names what failed
//! and says its cause once; the store refuses another pseudonymisation key (SQLite
//! and PostgreSQL); imports exit non-zero when rows were skipped.

use std::process::{Command, Output};

use yujing::app::{App, AppError};
use yujing::config::Secret;

use crate::support::{Env, KEY, fresh_postgres, output};

/// The binary with the test key and `store`.
fn with_store(env: &Env, store: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_yujing"));
    command
        .env("YUJING__PRIVACY__PSEUDONYMISATION_KEY", KEY)
        .env("YUJING__TELEMETRY__LOG_LEVEL", "warn")
        .env_remove("RUST_LOG")
        .args(["--store", store])
        .current_dir(env.dir.path());
    command
}

/// Runs `command`, which must fail, and returns its stderr.
fn failure(command: &mut Command) -> String {
    let result: Output = command.output().expect("yujing runs");
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(
        !result.status.success(),
        "{command:?} succeeded: {stderr}{}",
        String::from_utf8_lossy(&result.stdout)
    );
    stderr
}

/// `text` holds each of `needles` exactly once.
fn once(text: &str, needles: &[&str]) {
    for needle in needles {
        assert_eq!(
            text.matches(needle).count(),
            1,
            "{needle:?} should occur once in: {text}"
        );
    }
}

#[test]
fn first_failures_name_the_thing_and_say_the_cause_once() {
    let env = Env::new();

    // A missing input file.
    let stderr = failure(env.yujing("a.db").args(["regions", "import", "nope.csv"]));
    once(
        &stderr,
        &["cannot read nope.csv", "No such file or directory"],
    );
    let stderr = failure(env.yujing("a.db").args(["run", "nope.ndjson"]));
    once(
        &stderr,
        &["cannot read", "nope.ndjson", "No such file or directory"],
    );

    // A folder given as a file.
    std::fs::create_dir(env.path("feeds")).unwrap();
    let stderr = failure(env.yujing("a.db").args(["regions", "import", "feeds"]));
    once(&stderr, &["cannot read feeds", "a folder"]);
    assert!(!stderr.contains("os error 21"), "{stderr}");
    let stderr = failure(env.yujing("a.db").args(["run", "feeds"]));
    once(&stderr, &["feeds", "a folder"]);

    // A store URL of no supported kind, and a mistyped SQLite path.
    let stderr = failure(with_store(&env, "mysql://db/x").arg("report"));
    once(&stderr, &["unsupported store URL", "mysql://db/x"]);
    let stderr = failure(env.yujing("mistyped.db").arg("report"));
    once(&stderr, &["no store at", "mistyped.db"]);
    assert!(!env.path("mistyped.db").exists());

    // A PostgreSQL server that is not there: a closed local port.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("postgres://clerk:hunter2-secret@127.0.0.1:{port}/county");
    let started = std::time::Instant::now();
    let stderr = failure(with_store(&env, &url).arg("report"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    once(
        &stderr,
        &[
            &format!("cannot connect to PostgreSQL at 127.0.0.1:{port} (database county)"),
            "Connection refused",
            "is the server running?",
        ],
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password is printed: {stderr}"
    );
    assert!(!stderr.contains("pool timed out"), "{stderr}");

    // A bad configuration value, from the environment and from a file.
    let stderr = failure(
        env.yujing("a.db")
            .env("YUJING__INPUT__BATCH_SIZE", "lots")
            .arg("report"),
    );
    once(&stderr, &["input.batch_size", "\"lots\""]);
    std::fs::write(env.path("bad.toml"), "[store]\nmax_connections = 0\n").unwrap();
    let stderr = failure(env.yujing("a.db").args(["--config", "bad.toml", "report"]));
    once(&stderr, &["store.max_connections", "at least 1"]);

    // No pseudonymisation key.
    let stderr = failure(
        env.yujing("a.db")
            .env_remove("YUJING__PRIVACY__PSEUDONYMISATION_KEY")
            .args(["run", "x.ndjson"]),
    );
    once(
        &stderr,
        &[
            "privacy.pseudonymisation_key is not set",
            "YUJING__PRIVACY__PSEUDONYMISATION_KEY",
        ],
    );

    // One line each, as they are seen first.
    let stderr = failure(env.yujing("a.db").args(["regions", "import", "nope.csv"]));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// A small regions file and roster: one village, two households, three members.
fn write_roster(env: &Env) {
    std::fs::write(
        env.path("regions.csv"),
        "code,name,level,parent\n522425000000,织金县,county,\n522425101000,城关镇,township,522425000000\n522425101201,一村,village,522425101000\n",
    )
    .unwrap();
    std::fs::write(
        env.path("households.csv"),
        "household_id,region_code,members,labour_capable,annual_net_income_yuan,status\n\
H1,522425101201,2,1,30000,ordinary\n\
H2,522425101201,1,1,20000,ordinary\n",
    )
    .unwrap();
    std::fs::write(
        env.path("members.csv"),
        format!(
            "person_id,household_id,relation,labour_capable\n{},H1,head,true\n{},H1,spouse,false\n{},H2,head,true\n",
            id_with("52242519800101001"),
            id_with("52242519820202002"),
            id_with("52242519700303003"),
        ),
    )
    .unwrap();
}

/// A resident ID with a valid check character for `first17`.
fn id_with(first17: &str) -> String {
    let check = yujing::domain::ids::check_character(first17.as_bytes()) as char;
    format!("{first17}{check}")
}

fn import_roster(command: &mut Command) -> Output {
    command
        .args(["registry", "import", "--households", "households.csv"])
        .args(["--members", "members.csv"])
        .output()
        .expect("yujing runs")
}

const OTHER_KEY: &str = "another-key-fedcba9876543210";

/// What every refusal of another key says.
fn says_other_key(stderr: &str) {
    once(
        stderr,
        &[
            "the store was made with another pseudonymisation key",
            "YUJING__PRIVACY__PSEUDONYMISATION_KEY",
        ],
    );
    assert!(
        !stderr.contains(KEY) && !stderr.contains(OTHER_KEY),
        "{stderr}"
    );
}

#[test]
fn a_sqlite_store_refuses_another_key_in_every_command_that_pseudonymises() {
    let env = Env::new();
    write_roster(&env);
    output(
        env.yujing("k.db")
            .args(["regions", "import", "regions.csv"]),
    );
    let first = import_roster(&mut env.yujing("k.db"));
    assert!(first.status.success(), "{first:?}");
    let other = |command: &mut Command| {
        command.env("YUJING__PRIVACY__PSEUDONYMISATION_KEY", OTHER_KEY);
    };

    let mut import = env.yujing("k.db");
    other(&mut import);
    let refused = import_roster(&mut import);
    assert!(!refused.status.success());
    says_other_key(&String::from_utf8_lossy(&refused.stderr));

    std::fs::write(env.path("empty.ndjson"), "").unwrap();
    let mut run = env.yujing("k.db");
    other(&mut run);
    says_other_key(&failure(run.args(["run", "empty.ndjson"])));

    let mut serve = env.yujing("k.db");
    other(&mut serve);
    let mut child = serve
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("serve with another key kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    says_other_key(&stderr);

    // The store's own key still works, and the key is never stored.
    output(env.yujing("k.db").args(["run", "empty.ndjson"]));
    let stored = std::fs::read(env.path("k.db")).unwrap();
    assert!(!stored.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_refuses_another_key() {
    let url = fresh_postgres("key").await;
    let env = Env::new();
    let mut settings = env.settings("unused.db");
    settings.store.url = Secret::new(url.clone());
    let app = App::build(settings.clone()).await.expect("app builds");
    app.pseudonymiser().await.expect("the first key is taken");
    app.pseudonymiser().await.expect("and accepted again");
    app.store.close().await;

    let mut other = settings.clone();
    other.privacy.pseudonymisation_key = Secret::new(OTHER_KEY);
    let app = App::build(other).await.expect("app builds");
    let refused = app
        .pseudonymiser()
        .await
        .expect_err("another key is refused");
    assert!(matches!(refused, AppError::OtherKey { .. }), "{refused}");
    says_other_key(&refused.to_string());
    assert!(app.load_core().await.is_err(), "the core refuses it too");
    app.store.close().await;

    // Through the binary: registry import on the PostgreSQL store.
    write_roster(&env);
    let mut import = with_store(&env, &url);
    import.env("YUJING__PRIVACY__PSEUDONYMISATION_KEY", OTHER_KEY);
    let refused = import_roster(&mut import);
    assert!(!refused.status.success());
    says_other_key(&String::from_utf8_lossy(&refused.stderr));
}

#[test]
fn imports_that_skip_rows_exit_non_zero_and_say_how_many() {
    let env = Env::new();
    write_roster(&env);
    // Regions: one bad row (a village whose parent is not above it).
    let mut regions = std::fs::read_to_string(env.path("regions.csv")).unwrap();
    regions.push_str("522425101202,二村,village,522426101000\n");
    std::fs::write(env.path("regions.csv"), regions).unwrap();
    let result = env
        .yujing("i.db")
        .args(["regions", "import", "regions.csv"])
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("regions.csv:5:"), "{stderr}");
    once(&stderr, &["1 bad rows skipped"]);
    assert!(String::from_utf8_lossy(&result.stdout).contains("3 rows imported"));

    // Households: one of an unknown village; members: one born in the future, one
    // before 1900.
    let mut households = std::fs::read_to_string(env.path("households.csv")).unwrap();
    households.push_str("H3,522425101299,1,1,20000,ordinary\n");
    std::fs::write(env.path("households.csv"), households).unwrap();
    let mut members = std::fs::read_to_string(env.path("members.csv")).unwrap();
    members.push_str(&format!(
        "{},H2,child,false\n{},H2,parent,false\n",
        id_with("52242520990101004"),
        id_with("52242518950101005")
    ));
    std::fs::write(env.path("members.csv"), members).unwrap();
    let result = import_roster(&mut env.yujing("i.db"));
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains(
            "households.csv:4: region_code: village 522425101299 is not in the regions table"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("members.csv:5: person_id 522425********"),
        "{stderr}"
    );
    assert!(stderr.contains("in the future"), "{stderr}");
    assert!(stderr.contains("members.csv:6:"), "{stderr}");
    assert!(stderr.contains("before 1900"), "{stderr}");
    once(&stderr, &["3 bad rows skipped"]);
    assert!(!stderr.contains("20990101") && !stderr.contains("18950101"));
    // The good rows stay imported.
    let report: serde_json::Value =
        serde_json::from_str(&output(env.yujing("i.db").args(["report", "--json"]))).unwrap();
    assert_eq!(report["households"], 2);
    assert_eq!(report["members"], 3);

    // A store without regions imports every village and says it did not check them.
    let result = import_roster(&mut env.yujing("noregions.db"));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("villages not checked"), "{stderr}");
    assert!(!stderr.contains("households.csv:4"), "{stderr}");
}

#[test]
fn gb18030_files_with_chinese_headers_import() {
    let env = Env::new();
    let gb = |name: &str, text: &str| {
        let (bytes, _, unmappable) = encoding_rs::GB18030.encode(text);
        assert!(!unmappable);
        std::fs::write(env.path(name), bytes.as_ref()).unwrap();
    };
    gb(
        "regions.csv",
        "区划代码,名称,级别,上级区划代码\n522425000000,织金县,county,\n522425101000,城关镇,township,522425000000\n522425101201,一村,village,522425101000\n",
    );
    gb(
        "households.csv",
        "户编号,村代码,家庭人口数,劳动力人数,家庭年纯收入（元）,户类型\nH1,522425101201,2,1,30000,ordinary\n",
    );
    gb(
        "members.csv",
        &format!(
            "身份证号,户编号,与户主关系,是否劳动力\n{},H1,head,是\n{},H1,spouse,否\n",
            id_with("52242519800101001"),
            id_with("52242519820202002"),
        ),
    );
    // Detected (no flag), then named.
    let regions = output(
        env.yujing("gb.db")
            .args(["regions", "import", "regions.csv"]),
    );
    assert!(regions.contains("3 rows imported"), "{regions}");
    output(env.yujing("gb.db").args([
        "registry",
        "import",
        "--encoding",
        "gb18030",
        "--households",
        "households.csv",
        "--members",
        "members.csv",
    ]));
    let report: serde_json::Value =
        serde_json::from_str(&output(env.yujing("gb.db").args(["report", "--json"]))).unwrap();
    assert_eq!(report["households"], 1);
    assert_eq!(report["members"], 2);
    let names: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let app = env.app("gb.db").await;
        let stored = app.store.load_households_and_regions().await.unwrap();
        app.store.close().await;
        stored.regions.into_iter().map(|r| r.name).collect()
    });
    assert!(names.contains(&"织金县".to_string()), "{names:?}");

    // Read as UTF-8 against its encoding: the message says what to give.
    let stderr = failure(env.yujing("gb.db").args([
        "regions",
        "import",
        "--encoding",
        "utf-8",
        "regions.csv",
    ]));
    once(&stderr, &["--encoding gb18030"]);
}
