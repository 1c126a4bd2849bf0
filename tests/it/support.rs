//! Shared test set-up: a temporary folder with its own SQLite store and key, the
//! generated county, and the `yujing` binary with the same settings.

use std::path::{Path, PathBuf};
use std::process::Command;

use yujing::app::App;
use yujing::config::{Secret, Settings};
use yujing::generate::{AnswerKey, GenerateOptions, generate};

/// A pseudonymisation key for tests.
pub const KEY: &str = "test-key-0123456789abcdef";

/// One test's world.
pub struct Env {
    /// Holds every file of the test.
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A fresh folder.
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    /// A path inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The store URL of database `name`.
    pub fn store_url(&self, name: &str) -> String {
        format!("sqlite://{}", self.path(name).display())
    }

    /// Defaults with the store `db` and the test key.
    pub fn settings(&self, db: &str) -> Settings {
        let mut settings = Settings::defaults();
        settings.store.url = Secret::new(self.store_url(db));
        settings.privacy.pseudonymisation_key = Secret::new(KEY);
        settings
    }

    /// The application over database `db`.
    pub async fn app(&self, db: &str) -> App {
        App::build(self.settings(db)).await.expect("app builds")
    }

    /// Generates a county into `county/`.
    pub fn county(&self, households: usize, days: u32, seed: u64) -> (PathBuf, AnswerKey) {
        let out = self.path("county");
        let options = GenerateOptions {
            households,
            days,
            seed,
            ..GenerateOptions::default()
        };
        let key = generate(&out, &options).expect("county generated");
        (out, key)
    }

    /// The binary with this world's key and store `db`.
    pub fn yujing(&self, db: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_yujing"));
        command
            .env("YUJING__PRIVACY__PSEUDONYMISATION_KEY", KEY)
            .env("YUJING__TELEMETRY__LOG_LEVEL", "warn")
            .env_remove("RUST_LOG")
            .arg("--store")
            .arg(self.store_url(db))
            .current_dir(self.dir.path());
        command
    }
}

/// Imports a generated county's regions and registry into `app`.
pub async fn import_county(app: &App, county: &Path) {
    let regions = yujing::commands::import_regions(app, &county.join("regions.csv"))
        .await
        .expect("regions import");
    assert!(regions.errors.is_empty(), "{:?}", regions.errors);
    let registry = yujing::commands::import_registry(
        app,
        &county.join("households.csv"),
        &county.join("members.csv"),
    )
    .await
    .expect("registry import");
    assert!(registry.errors.is_empty(), "{:?}", registry.errors);
}

/// Runs a command, asserting success, and returns stdout.
pub fn output(command: &mut Command) -> String {
    let output = command.output().expect("yujing runs");
    assert!(
        output.status.success(),
        "{:?} failed: {}\n{}",
        command,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The feed files of a county, as inputs.
pub fn feeds(county: &Path, key: &AnswerKey) -> Vec<PathBuf> {
    key.feeds.iter().map(|f| county.join(f)).collect()
}
