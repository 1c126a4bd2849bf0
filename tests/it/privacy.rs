//! No clear resident ID leaves or stays, through Kafka into PostgreSQL: every table,
//! every export, every output topic and the log are searched for every roster ID as
//! text, base64 and hex, and no published dead-letter id is recomputable from the
//! clear bytes of the record it names.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{Connection, Row};
use yujing::store::Store;

use crate::support::{
    Env, KEY, create_topics, feeds, fresh_postgres, import_county, kafka_brokers, kafka_env,
    kafka_topics, reader_from_beginning, unique,
};

/// The forms of `id` to look for: the clear text, the 14 digits the mask hides
/// together with the prefix, lowercase and uppercase hex, and base64 at each of the
/// three alignments (without the characters that depend on the neighbouring bytes).
fn forms(id: &str) -> Vec<String> {
    let hex = hex::encode(id.as_bytes());
    let mut forms = vec![
        id.to_string(),
        id[..14].to_string(),
        hex.clone(),
        hex.to_ascii_uppercase(),
    ];
    for pad in 0..3 {
        let mut bytes = vec![b'#'; pad];
        bytes.extend_from_slice(id.as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        // Characters fully determined by the ID's bytes: skip the first group
        // that mixes padding bytes in, and the last (partial) group.
        let start = if pad == 0 { 0 } else { 4 };
        let whole = (bytes.len() / 3) * 4;
        forms.push(encoded[start..whole].to_string());
    }
    forms
}

/// Every message (key and payload) of `topic`, read until `settled` passes without
/// a new one.
fn messages(brokers: &str, topic: &str, settled: Duration) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer = reader_from_beginning(brokers, topic, &format!("{topic}-privacy"));
    let mut found = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < settled {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            found.push((
                message.key().unwrap_or_default().to_vec(),
                message.payload().unwrap_or_default().to_vec(),
            ));
            last = Instant::now();
        }
    }
    found
}

/// The `yujing` child, killed if the test fails before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_clear_resident_id_in_any_table_export_topic_or_log() {
    let brokers = kafka_brokers();
    let env = Env::new();
    let (county, key) = env.county(400, 60, 29);
    let prefix = unique("privacy");
    create_topics(&brokers, &kafka_topics(&prefix), 2).await;
    let pg_url = fresh_postgres("privacy").await;
    let mut settings = env.settings("unused.db");
    settings.store.url = yujing::config::Secret::new(pg_url.clone());
    let app = yujing::app::App::build(settings.clone()).await.unwrap();
    import_county(&app, &county).await;
    app.store.close().await;
    let members = std::fs::read_to_string(county.join("members.csv")).unwrap();
    let ids: Vec<String> = members
        .lines()
        .skip(1)
        .map(|line| line.split(',').next().unwrap().to_string())
        .collect();
    let person = ids[0].clone();
    let yujing = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_yujing"));
        command
            .env("YUJING__PRIVACY__PSEUDONYMISATION_KEY", KEY)
            .env(
                "YUJING__TELEMETRY__LOG_LEVEL",
                "debug,sqlx=warn,rdkafka=warn",
            )
            .env_remove("RUST_LOG")
            .envs(kafka_env(&brokers, &prefix))
            .arg("--store")
            .arg(&pg_url)
            .args(args)
            .current_dir(env.dir.path());
        command
    };
    // The feeds, through yujing's own producer (keys by household or pseudonym).
    let files = feeds(&county, &key);
    let mut produce = yujing(&["produce"]);
    produce.args(&files);
    let output = produce.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let produced: u64 = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .filter_map(|rest| rest.strip_suffix(" messages"))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    // Records that are refused, keyed by the clear ID and quoting it: in a
    // salvaged field, in the reason, in bytes that are not JSON.
    let topic = format!("{prefix}.medical_insurance");
    let poison: Vec<Vec<u8>> = vec![
        format!(r#"{{"event_id":"{person}","source":"medical_insurance","kind":"serious_illness","person_id":"{person}"}}"#).into_bytes(),
        format!(r#"{{"event_id":"X-1","source":"{person}","kind":"{person}","payload":{{"{person}":1}}}}"#).into_bytes(),
        format!("not json {person} \u{0}").into_bytes(),
    ];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for bytes in &poison {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(&topic)
                    .key(&person)
                    .payload(bytes),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let log_path = env.path("run.log");
    let mut child = Running(
        yujing(&["run", "--kafka"])
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let store = Store::connect(&pg_url, &settings.store).await.unwrap();
    let started = Instant::now();
    loop {
        let report = store.report().await.unwrap();
        if report.dead_letters >= poison.len() as u64
            && report.events_processed >= produced + poison.len() as u64
            && store.outbox_backlog().await.unwrap() == 0
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stalled: {report:?}, backlog {}, expected {} records\n{}",
            store.outbox_backlog().await.unwrap(),
            produced + poison.len() as u64,
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Let the stream settle (the last batch and its outbox rows).
    tokio::time::sleep(Duration::from_secs(3)).await;
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(child.0.wait().unwrap().success());

    let mut haystacks: Vec<(String, String)> = Vec::new();
    // Every table, every row, as PostgreSQL prints it (BYTEA as hex).
    let mut connection = sqlx::PgConnection::connect(&pg_url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    assert!(tables.len() > 10);
    for table in &tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM \"{table}\" t"
        )))
        .fetch_all(&mut connection)
        .await
        .unwrap();
        let text: String = rows
            .iter()
            .map(|row| row.get::<String, _>(0) + "\n")
            .collect();
        haystacks.push((format!("table {table}"), text));
    }
    // Every export.
    for kind in ["alerts", "tasks", "dead-letters", "signals"] {
        let output = yujing(&["export", kind]).output().unwrap();
        assert!(output.status.success());
        haystacks.push((
            format!("export {kind}"),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ));
    }
    // Every output topic, keys and payloads; base64 fields decoded too.
    let mut dead_letter_ids = BTreeSet::new();
    for output in [
        "household_alerts",
        "screening_tasks",
        "regional_signals",
        "dead_letters",
    ] {
        let found = messages(
            &brokers,
            &format!("{prefix}.out.{output}"),
            Duration::from_secs(3),
        );
        let mut text = String::new();
        for (key, payload) in &found {
            text.push_str(&String::from_utf8_lossy(key));
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(payload));
            text.push('\n');
            let document: serde_json::Value = serde_json::from_slice(payload).unwrap();
            if output == "dead_letters" {
                dead_letter_ids.insert(document["dead_letter_id"].as_str().unwrap().to_string());
                for field in [&document["raw_base64"], &document["origin"]["key_base64"]] {
                    if let Some(encoded) = field.as_str() {
                        let decoded = base64::engine::general_purpose::STANDARD
                            .decode(encoded)
                            .unwrap();
                        text.push_str(&String::from_utf8_lossy(&decoded));
                        text.push('\n');
                    }
                }
            }
        }
        haystacks.push((format!("topic {output}"), text));
    }
    assert!(dead_letter_ids.len() >= poison.len());
    haystacks.push(("log".into(), std::fs::read_to_string(&log_path).unwrap()));

    for id in &ids {
        for form in forms(id) {
            for (place, text) in &haystacks {
                assert!(
                    !text.contains(&form),
                    "{place} holds a form of a clear resident ID ({form})"
                );
            }
        }
    }
    // The masked form is there: the search looks where the IDs would be.
    let masked = format!("{}********{}", &person[..6], &person[14..]);
    assert!(
        haystacks
            .iter()
            .any(|(place, text)| place == "topic dead_letters" && text.contains(&masked))
    );

    // No published dead-letter id is a digest of the clear bytes.
    let mut stored = Vec::new();
    store
        .export_dead_letters(&mut |letter| {
            stored.push(letter);
            Ok(())
        })
        .await
        .unwrap();
    for letter in &stored {
        for bytes in &poison {
            let clear = xxhash_rust::xxh3::xxh3_128(bytes).to_le_bytes();
            let recomputed = yujing::domain::ids::stable_id(
                "dead_letter",
                &[letter.origin.locator().as_bytes(), &clear],
            );
            assert!(
                !dead_letter_ids.contains(&recomputed),
                "a dead-letter id digests clear bytes"
            );
        }
    }
}
