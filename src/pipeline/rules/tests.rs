//! Table-driven tests of the household rules.
use super::*;
