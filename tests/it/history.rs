//! `yujing history import`: a generated county's multi-year count history goes through the
//! binary into the store, where the regional stage reads it at start-up; a malformed file
//! is refused whole.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use yujing::generate::{GenerateOptions, generate};

use crate::support::{Env, output};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_history_is_imported_and_read_back() {
    let env = Env::new();
    let out = env.path("county");
    let options = GenerateOptions {
        households: 600,
        days: 7,
        seed: 5,
        history_years: 2,
        ..GenerateOptions::default()
    };
    let key = generate(&out, &options).expect("county generated");
    let text = std::fs::read_to_string(out.join("history.csv")).expect("history written");
    let mut file_counts: BTreeMap<(String, String, NaiveDate), u32> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let day = NaiveDate::parse_from_str(fields[0], "%Y-%m-%d").expect("date");
        file_counts.insert(
            (fields[1].to_string(), fields[2].to_string(), day),
            fields[3].parse().expect("count"),
        );
    }
    let first = *file_counts.keys().map(|(_, _, d)| d).min().expect("rows");
    let last = *file_counts.keys().map(|(_, _, d)| d).max().expect("rows");
    // Two years before the feeds (days without any event have no rows).
    assert!(
        last < key.start && (key.start - last).num_days() < 14,
        "{last}"
    );
    assert!(first >= key.start - chrono::Duration::days(2 * 365));
    assert!((first - (key.start - chrono::Duration::days(2 * 365))).num_days() < 14);

    output(
        env.yujing("h.db")
            .args(["history", "import"])
            .arg(out.join("history.csv")),
    );
    let app = env.app("h.db").await;
    let stored = app.store.load_regional(None).await.expect("loads");
    assert_eq!(stored.counts.len(), file_counts.len());
    for row in &stored.counts {
        let key = (row.region_code.to_string(), row.kind.to_string(), row.day);
        assert_eq!(file_counts.get(&key), Some(&row.count), "{key:?}");
    }
    // Townships are the sums of their villages, the county the sum of everything.
    let mut villages_by_township: BTreeMap<(String, String, NaiveDate), u32> = BTreeMap::new();
    let mut county = BTreeMap::new();
    for ((region, kind, day), count) in &file_counts {
        if !region.ends_with("000") {
            let township = format!("{}000", &region[..9]);
            *villages_by_township
                .entry((township, kind.clone(), *day))
                .or_insert(0) += count;
            *county.entry((kind.clone(), *day)).or_insert(0) += count;
        }
    }
    for ((township, kind, day), sum) in &villages_by_township {
        let stored = file_counts
            .get(&(township.clone(), kind.clone(), *day))
            .copied();
        assert_eq!(stored, Some(*sum), "{township} {kind} {day}");
    }
    let county_code = "522425000000".to_string();
    for ((kind, day), sum) in &county {
        assert_eq!(
            file_counts.get(&(county_code.clone(), kind.clone(), *day)),
            Some(sum)
        );
    }
    app.store.close().await;

    // A bad row anywhere: nothing is stored.
    let bad = env.path("bad.csv");
    std::fs::write(
        &bad,
        "date,region,kind,count\n2020-01-01,522425101201,illness,1\n2020-01-02,522425101201,flood,1\n",
    )
    .expect("written");
    let result = env
        .yujing("bad.db")
        .args(["history", "import"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("line 3"));
    let app = env.app("bad.db").await;
    assert!(
        app.store
            .load_regional(None)
            .await
            .expect("loads")
            .counts
            .is_empty()
    );
    app.store.close().await;
}
