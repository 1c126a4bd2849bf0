//! The published JSON Schemas (`schemas/`, draft 2020-12), compiled into the binary
//! and into validators once per process. The decoder's fast path enforces the same
//! constraints by hand; these validators name the exact field and keyword when a
//! record fails, and the tests check every fixture and output against them.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// Base of every schema's `$id`.
pub const BASE_URI: &str = "https://yujing.example/schemas/";

/// Every schema file, by path below `schemas/`.
pub const FILES: &[(&str, &str)] = &[
    ("common.json", include_str!("../schemas/common.json")),
    (
        "events/envelope.json",
        include_str!("../schemas/events/envelope.json"),
    ),
    (
        "events/event.json",
        include_str!("../schemas/events/event.json"),
    ),
    (
        "events/assistance_application.json",
        include_str!("../schemas/events/assistance_application.json"),
    ),
    (
        "events/medical_settlement.json",
        include_str!("../schemas/events/medical_settlement.json"),
    ),
    (
        "events/serious_illness.json",
        include_str!("../schemas/events/serious_illness.json"),
    ),
    (
        "events/disability_certified.json",
        include_str!("../schemas/events/disability_certified.json"),
    ),
    (
        "events/unemployment.json",
        include_str!("../schemas/events/unemployment.json"),
    ),
    (
        "events/disaster_declared.json",
        include_str!("../schemas/events/disaster_declared.json"),
    ),
    (
        "events/disaster_impact.json",
        include_str!("../schemas/events/disaster_impact.json"),
    ),
    (
        "events/industry_project_failure.json",
        include_str!("../schemas/events/industry_project_failure.json"),
    ),
    (
        "events/school_dropout.json",
        include_str!("../schemas/events/school_dropout.json"),
    ),
    (
        "events/housing_safety.json",
        include_str!("../schemas/events/housing_safety.json"),
    ),
    (
        "events/water_outage.json",
        include_str!("../schemas/events/water_outage.json"),
    ),
    (
        "registry/household.json",
        include_str!("../schemas/registry/household.json"),
    ),
    (
        "registry/member.json",
        include_str!("../schemas/registry/member.json"),
    ),
    (
        "registry/region.json",
        include_str!("../schemas/registry/region.json"),
    ),
    (
        "outputs/household_alert.json",
        include_str!("../schemas/outputs/household_alert.json"),
    ),
    (
        "outputs/screening_task.json",
        include_str!("../schemas/outputs/screening_task.json"),
    ),
    (
        "outputs/dead_letter.json",
        include_str!("../schemas/outputs/dead_letter.json"),
    ),
    (
        "outputs/regional_signal.json",
        include_str!("../schemas/outputs/regional_signal.json"),
    ),
];

/// One schema violation: where in the instance, which keyword, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the instance ("" = the root).
    pub pointer: String,
    /// The failing keyword (`required`, `enum`, `minimum`, ...).
    pub keyword: String,
    /// The validator's message.
    pub message: String,
}

/// The compiled validators, by file path (`events/unemployment.json`).
pub struct Schemas {
    validators: HashMap<&'static str, jsonschema::Validator>,
}

/// Why the embedded schemas could not be compiled (a build defect, caught by tests).
#[derive(Debug, thiserror::Error)]
#[error("schema {path}: {message}")]
pub struct SchemaError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

impl Schemas {
    /// The process-wide compiled schemas.
    pub fn get() -> &'static Schemas {
        static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
        // The embedded schemas are compiled in a unit test, so only a bug fails here.
        SCHEMAS.get_or_init(|| Schemas::compile().expect("embedded schemas compile"))
    }

    /// Compiles every embedded schema against a registry of all of them.
    pub fn compile() -> Result<Schemas, SchemaError> {
        let mut documents = Vec::with_capacity(FILES.len());
        for (path, text) in FILES {
            let value: Value = serde_json::from_str(text).map_err(|e| SchemaError {
                path: path.to_string(),
                message: e.to_string(),
            })?;
            documents.push((*path, value));
        }
        let registry = jsonschema::Registry::new()
            .extend(
                documents
                    .iter()
                    .map(|(path, value)| (format!("{BASE_URI}{path}"), value.clone())),
            )
            .and_then(|builder| builder.prepare())
            .map_err(|e| SchemaError {
                path: "(registry)".into(),
                message: e.to_string(),
            })?;
        let mut validators = HashMap::new();
        for (path, value) in &documents {
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .with_registry(&registry)
                .build(value)
                .map_err(|e| SchemaError {
                    path: path.to_string(),
                    message: e.to_string(),
                })?;
            validators.insert(*path, validator);
        }
        Ok(Schemas { validators })
    }

    /// The violations of `instance` against the schema at `path` (empty = valid).
    /// An unknown path is a bug in the caller and reports as a violation.
    pub fn violations(&self, path: &str, instance: &Value) -> Vec<Violation> {
        let Some(validator) = self.validators.get(path) else {
            return vec![Violation {
                pointer: String::new(),
                keyword: "$schema".into(),
                message: format!("no schema named {path}"),
            }];
        };
        validator
            .iter_errors(instance)
            .map(|error| Violation {
                pointer: error.instance_path().to_string(),
                keyword: error.kind().keyword().to_string(),
                message: error.to_string(),
            })
            .collect()
    }

    /// Whether `instance` is valid against the schema at `path`.
    pub fn is_valid(&self, path: &str, instance: &Value) -> bool {
        self.validators
            .get(path)
            .is_some_and(|validator| validator.is_valid(instance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_compiles() {
        let schemas = Schemas::compile().unwrap();
        assert_eq!(schemas.validators.len(), FILES.len());
    }
}
