//! Regional detection: count series per (region, risk kind, day) -> signals. This
//! folder holds the published detectors (EARS C1–C3, count CUSUM on a seasonal
//! in-control mean, threshold calibration), each pure and checked against the R
//! package `surveillance`.

pub mod calibrate;
pub mod cusum;
pub mod ears;
pub mod glm;

pub use ears::{DetectError, Judgement};
