//! The published schemas: every fixture behaves as its folder says, and the
//! decoder's fast path accepts exactly what the schemas accept (on the fixtures and
//! on random mutations of them).

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::Value;
use yujing::config::Settings;
use yujing::domain::dead_letter::Stage;
use yujing::pipeline::decode::Decoder;
use yujing::schemas::Schemas;

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schemas")
}

/// The schema file a fixture folder is for.
fn schema_for(folder: &str) -> String {
    match folder {
        "household" | "member" | "region" => format!("registry/{folder}.json"),
        "household_alert" | "screening_task" | "dead_letter" | "regional_signal" => {
            format!("outputs/{folder}.json")
        }
        _ => format!("events/{folder}.json"),
    }
}

fn is_event_folder(folder: &str) -> bool {
    schema_for(folder).starts_with("events/")
}

fn fixtures(validity: &str) -> Vec<(String, PathBuf, Value)> {
    let mut found = Vec::new();
    let root = fixtures_root().join(validity);
    for folder in std::fs::read_dir(&root).expect("fixture folder") {
        let folder = folder.unwrap().path();
        let name = folder.file_name().unwrap().to_string_lossy().to_string();
        for file in std::fs::read_dir(&folder).unwrap() {
            let path = file.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            found.push((name.clone(), path, value));
        }
    }
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found
}

#[test]
fn every_fixture_behaves_as_its_folder_says() {
    let schemas = Schemas::get();
    let valid = fixtures("valid");
    let invalid = fixtures("invalid");
    assert!(valid.len() >= 40 && invalid.len() >= 100);
    for (folder, path, value) in &valid {
        let violations = schemas.violations(&schema_for(folder), value);
        assert!(violations.is_empty(), "{}: {violations:?}", path.display());
    }
    for (folder, path, value) in &invalid {
        assert!(
            !schemas.is_valid(&schema_for(folder), value),
            "{} should be invalid",
            path.display()
        );
    }
}

fn decoder() -> Decoder {
    Decoder::new(&Settings::defaults().validation)
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// Whether the decoder's schema-level checks accept `value` (it may still refuse
/// it for semantic reasons: check digits, sums, clocks).
fn decoder_accepts_shape(value: &Value) -> Result<bool, String> {
    let bytes = serde_json::to_vec(value).unwrap();
    match decoder().decode(&bytes, now()) {
        Ok(_) => Ok(true),
        Err(refusal) => match refusal.rejection.stage {
            Stage::Semantic => Ok(true),
            Stage::Schema if refusal.rejection.rule == "schema.typed" => Err(format!(
                "the decoder refused what the schema accepts: {}",
                refusal.rejection.reason
            )),
            _ => Ok(false),
        },
    }
}

#[test]
fn decoder_agrees_with_the_schemas_on_every_event_fixture() {
    let schemas = Schemas::get();
    for validity in ["valid", "invalid"] {
        for (folder, path, value) in fixtures(validity) {
            if !is_event_folder(&folder) {
                continue;
            }
            let schema_says = schemas.is_valid("events/event.json", &value);
            let decoder_says =
                decoder_accepts_shape(&value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(decoder_says, schema_says, "{}", path.display());
            if validity == "valid" && folder != "envelope" {
                let bytes = serde_json::to_vec(&value).unwrap();
                assert!(
                    decoder().decode(&bytes, now()).is_ok(),
                    "{} is valid but decoding refused it",
                    path.display()
                );
            }
        }
    }
}

/// Values a mutation may put anywhere.
fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::Bool(true)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1)),
        Just(serde_json::json!(2.0)),
        Just(serde_json::json!(2.5)),
        Just(serde_json::json!(5)),
        Just(serde_json::json!(1e11)),
        Just(serde_json::json!("")),
        Just(serde_json::json!("x")),
        Just(serde_json::json!("A")),
        Just(serde_json::json!("D")),
        Just(serde_json::json!("II")),
        Just(serde_json::json!("flood")),
        Just(serde_json::json!("dibao")),
        Just(serde_json::json!("522425101201")),
        Just(serde_json::json!("52242510120")),
        Just(serde_json::json!("2024-07-01")),
        Just(serde_json::json!("2024-07-01T10:00:00+08:00")),
        Just(serde_json::json!("2024-07-01T10:00:00")),
        Just(serde_json::json!("11010519491231002X")),
        Just(serde_json::json!("a".repeat(300))),
        Just(serde_json::json!([])),
        Just(serde_json::json!(["522425101201", "522425101201"])),
        Just(serde_json::json!({})),
    ]
}

/// Every path to a value inside `value` (object keys and array indexes).
fn paths(value: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let mut path = prefix.clone();
                path.push(key.clone());
                out.push(path.clone());
                paths(child, path, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let mut path = prefix.clone();
                path.push(i.to_string());
                out.push(path.clone());
                paths(child, path, out);
            }
        }
        _ => {}
    }
}

fn parent_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut current = value;
    for key in path {
        current = match current {
            Value::Object(map) => map.get_mut(key)?,
            Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Replaces, removes, or adds next to the value at `path`.
fn mutate(mut value: Value, path: &[String], action: u8, new: Value) -> Value {
    let (last, parent_path) = path.split_last().expect("non-empty path");
    let Some(parent) = parent_mut(&mut value, parent_path) else {
        return value;
    };
    match (parent, action % 3) {
        (Value::Object(map), 0) => {
            map.remove(last);
        }
        (Value::Object(map), 1) => {
            map.insert(last.clone(), new);
        }
        (Value::Object(map), _) => {
            map.insert(format!("{last}_extra"), new);
        }
        (Value::Array(items), 0) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        (Value::Array(items), _) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items[i] = new;
            }
        }
        _ => {}
    }
    value
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoder_agrees_with_the_schemas_on_mutations(
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        action in 0u8..3,
        new in replacement(),
    ) {
        let valid: Vec<Value> = fixtures("valid")
            .into_iter()
            .filter(|(folder, _, _)| is_event_folder(folder) && folder != "envelope")
            .map(|(_, _, value)| value)
            .collect();
        let original = pick.get(&valid).clone();
        let mut all = Vec::new();
        paths(&original, Vec::new(), &mut all);
        let path = at.get(&all).clone();
        let mutated = mutate(original, &path, action, new);
        let schema_says = Schemas::get().is_valid("events/event.json", &mutated);
        let decoder_says = decoder_accepts_shape(&mutated).map_err(TestCaseError::fail)?;
        prop_assert_eq!(decoder_says, schema_says, "{}", mutated);
    }
}
