//! `yujing history import FILE.csv`: past daily counts (`date,region,kind,count`, the
//! format `yujing detect` reads and `yujing generate --history-years` writes) into the
//! store's regional counts, so weekly models (Farrington Flexible, five years back) judge
//! from the stream's first week. Rows of the same date, region and kind add up; a row
//! replaces a stored count of its day. Fails on unreadable or malformed input, refusing
//! the whole file (nothing is stored), or on the store.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use serde::Serialize;

use crate::batch::CountRow;
use crate::domain::ids::RegionCode;
use crate::domain::signal::RiskKind;
use crate::store::{Store, StoreError};

/// Why `yujing history import` failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A row is malformed.
    #[error("{path} line {line}: {reason}")]
    Row {
        /// File.
        path: String,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The store refused the rows.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What was imported.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistorySummary {
    /// Count rows stored (distinct date, region, kind).
    pub rows: usize,
    /// Series (region, kind).
    pub series: usize,
    /// First day.
    pub first_day: Option<NaiveDate>,
    /// Last day.
    pub last_day: Option<NaiveDate>,
}

/// Reads the file whole (every row checked first), then stores it in one transaction.
pub async fn import_history(store: &Store, path: &Path) -> Result<HistorySummary, HistoryError> {
    let text = path.display().to_string();
    let file =
        crate::pipeline::sources::open_for_reading(path).map_err(|source| HistoryError::Io {
            path: text.clone(),
            source,
        })?;
    let rows = parse_history(file, &text)?;
    store.import_counts(&rows).await?;
    let mut series: Vec<(RegionCode, RiskKind)> =
        rows.iter().map(|r| (r.region_code, r.kind)).collect();
    series.sort_unstable();
    series.dedup();
    Ok(HistorySummary {
        rows: rows.len(),
        series: series.len(),
        first_day: rows.iter().map(|r| r.day).min(),
        last_day: rows.iter().map(|r| r.day).max(),
    })
}

/// Parses `date,region,kind,count` rows (columns by name, any order, extra columns
/// ignored); kinds by their wire names (`unemployment`, `illness`, … `any_risk`).
pub fn parse_history(
    reader: impl std::io::Read,
    path: &str,
) -> Result<Vec<CountRow>, HistoryError> {
    let bad = |line: u64, reason: String| HistoryError::Row {
        path: path.to_string(),
        line,
        reason,
    };
    let mut counts: BTreeMap<(RegionCode, RiskKind, NaiveDate), u64> = BTreeMap::new();
    super::detect::read_count_rows(reader, &mut |row| {
        let kind =
            RiskKind::parse(row.kind).ok_or_else(|| format!("unknown risk kind `{}`", row.kind))?;
        let count: u64 = row
            .count
            .parse()
            .map_err(|_| format!("count `{}` is not a whole number ≥ 0", row.count))?;
        *counts.entry((row.region, kind, row.date)).or_insert(0) += count;
        Ok(())
    })
    .map_err(|(line, reason)| bad(line, reason))?;
    counts
        .into_iter()
        .map(|((region_code, kind, day), count)| {
            let count = u32::try_from(count).map_err(|_| {
                bad(
                    0,
                    format!("{day} {region_code} {kind}: count {count} too large"),
                )
            })?;
            Ok(CountRow {
                region_code,
                kind,
                day,
                count,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_add_up_and_bad_rows_are_refused_with_their_line() {
        let rows = parse_history(
            "date,region,kind,count\n\
             2021-01-04,522425101201,unemployment,2\n\
             2021-01-04,522425101201,unemployment,1\n\
             2021-01-05,522425100000,illness,0\n"
                .as_bytes(),
            "h.csv",
        )
        .expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].count, 3, "{rows:?}");
        for (text, needle) in [
            (
                "date,region,kind,count\n2021-01-04,522425101201,flood,1\n",
                "line 2",
            ),
            (
                "date,region,kind,count\n2021-01-04,522425101201,illness,-1\n",
                "line 2",
            ),
            (
                "date,region,kind,count\n2021-13-04,522425101201,illness,1\n",
                "YYYY",
            ),
            ("date,region,count\n", "kind"),
        ] {
            let error = parse_history(text.as_bytes(), "h.csv").unwrap_err();
            assert!(error.to_string().contains(needle), "{error}");
        }
    }
}
