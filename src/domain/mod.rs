//! What flows between the stages: `RawRecord` → `Event` → (resolved to a household)
//! → `HouseholdAlert` / `ScreeningTask`, or a `DeadLetter`; the registry the events
//! are joined to; the identifier newtypes. No I/O here: every type is built by a
//! `parse`-style constructor and is valid by construction.

pub mod account;
pub mod alert;
pub mod dead_letter;
pub mod department_quality;
pub mod event;
pub mod ids;
pub mod quality_finding;
pub mod record;
pub mod registry;
pub mod rule_yield;
pub mod signal;
pub mod task;
