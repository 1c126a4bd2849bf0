//! `yujing produce`: publishes NDJSON feed files to Kafka — each line to the
//! topic of its department (or one topic given), keyed by household: household
//! and region subjects by their id, persons by their registry household when the
//! store knows them (so a household's events share a partition), else by the ID.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

use super::CommandError;
use crate::config::Settings;
use crate::domain::event::Kind;
use crate::domain::ids::{HouseholdId, PersonKey, Pseudonymiser, ResidentId};
use crate::store::Store;

/// Deliveries awaited at most at once.
const IN_FLIGHT: usize = 50_000;

/// What to publish.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// One topic for every line (else by department).
    pub topic: Option<String>,
    /// NDJSON files.
    pub files: Vec<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
}

/// What was published.
#[derive(Debug, Default, Clone)]
pub struct ProduceSummary {
    /// Messages delivered, per topic.
    pub delivered: BTreeMap<String, u64>,
    /// Lines with no topic (unparseable, unknown kind) and no `--topic`.
    pub unroutable: u64,
    /// Deliveries that failed.
    pub failed: u64,
}

#[derive(Deserialize)]
struct Routing<'a> {
    #[serde(borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    person_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    household_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    region_code: Option<std::borrow::Cow<'a, str>>,
}

/// The pseudonymiser, when a key is set, with the households by person pseudonym
/// that the store's registry knows (none without a store).
async fn household_keys(
    settings: &Settings,
    store: Option<&Store>,
) -> Result<Option<(Pseudonymiser, HashMap<PersonKey, HouseholdId>)>, CommandError> {
    let Ok(key) = settings.require_pseudonymisation_key() else {
        return Ok(None);
    };
    let pseudonymiser = Pseudonymiser::new(key);
    if let Some(store) = store {
        // Keys by household come from the registry's pseudonyms: another key finds none.
        crate::app::check_key(store, &pseudonymiser).await?;
    }
    let map = match store {
        Some(store) => store
            .load_registry()
            .await?
            .members
            .into_iter()
            .map(|(person, household, _)| (person, household))
            .collect(),
        None => HashMap::new(),
    };
    Ok(Some((pseudonymiser, map)))
}

/// Publishes the files; waits for every delivery.
pub async fn produce(
    settings: &Settings,
    store: Option<&Store>,
    options: &ProduceOptions,
) -> Result<ProduceSummary, CommandError> {
    let kafka = &settings.kafka;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", format!("{}-produce", kafka.client_id))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000");
    for (key, value) in &kafka.producer_properties {
        config.set(key, value);
    }
    let producer: FutureProducer = config
        .create()
        .map_err(|e| CommandError::Kafka(e.to_string()))?;
    let keys = household_keys(settings, store).await?;
    let mut summary = ProduceSummary::default();
    let total: u64 = options
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = options
        .progress
        .then(|| crate::pipeline::progress_bar(total));
    let mut deliveries = FuturesUnordered::new();
    for path in &options.files {
        let file = crate::pipeline::sources::open_for_reading(path).map_err(|source| {
            CommandError::Read {
                path: path.display().to_string(),
                source,
            }
        })?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read =
                reader
                    .read_until(b'\n', &mut line)
                    .map_err(|source| CommandError::Read {
                        path: path.display().to_string(),
                        source,
                    })?;
            if read == 0 {
                break;
            }
            if let Some(bar) = &bar {
                bar.inc(read as u64);
            }
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            if line.is_empty() {
                continue;
            }
            let routing: Option<Routing<'_>> = serde_json::from_slice(&line).ok();
            let topic = match (&options.topic, &routing) {
                (Some(topic), _) => Some(topic.clone()),
                (None, Some(routing)) => routing
                    .kind
                    .as_deref()
                    .and_then(Kind::parse)
                    .and_then(|kind| kafka.topic_for(kind.source()))
                    .map(str::to_string),
                (None, None) => None,
            };
            let Some(topic) = topic else {
                summary.unroutable += 1;
                continue;
            };
            let key = routing.as_ref().and_then(|r| message_key(r, keys.as_ref()));
            let mut record = FutureRecord::<str, [u8]>::to(&topic).payload(&line);
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            // Enqueue now (librdkafka copies the bytes); wait for deliveries
            // later, a bounded number at a time.
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        let topic = topic.clone();
                        deliveries.push(async move {
                            let result = match delivery.await {
                                Ok(result) => result.map(|_| ()).map_err(|(error, _)| error),
                                Err(_) => Err(KafkaError::Canceled),
                            };
                            (topic, result)
                        });
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        if deliveries.is_empty() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        } else {
                            drain_one(&mut deliveries, &mut summary).await;
                        }
                    }
                    Err((error, _)) => {
                        summary.failed += 1;
                        tracing::warn!(error = %crate::telemetry::Chain(&error), topic = %topic, "cannot enqueue");
                        break;
                    }
                }
            }
            if deliveries.len() >= IN_FLIGHT {
                drain_one(&mut deliveries, &mut summary).await;
            }
        }
    }
    while !deliveries.is_empty() {
        drain_one(&mut deliveries, &mut summary).await;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(summary)
}

async fn drain_one<F>(deliveries: &mut FuturesUnordered<F>, summary: &mut ProduceSummary)
where
    F: std::future::Future<Output = (String, Result<(), KafkaError>)>,
{
    if let Some((topic, result)) = deliveries.next().await {
        match result {
            Ok(_) => *summary.delivered.entry(topic).or_default() += 1,
            Err(error) => {
                summary.failed += 1;
                tracing::warn!(error = %crate::telemetry::Chain(&error), topic = %topic, "delivery failed");
            }
        }
    }
}

/// The message key: household id, region code, or (for persons) the registry
/// household if known, else the person's pseudonym. Never the clear ID: keys are
/// stored and logged by brokers and consumers. Without a pseudonymisation key, a
/// person's event goes without a key.
fn message_key(
    routing: &Routing<'_>,
    households: Option<&(Pseudonymiser, HashMap<PersonKey, HouseholdId>)>,
) -> Option<String> {
    if let Some(household) = &routing.household_id {
        return Some(household.to_string());
    }
    if let Some(region) = &routing.region_code {
        return Some(region.to_string());
    }
    let person = ResidentId::parse(routing.person_id.as_deref()?).ok()?;
    let (pseudonymiser, map) = households?;
    let key = pseudonymiser.key(&person);
    Some(match map.get(&key) {
        Some(household) => household.to_string(),
        None => key.to_hex(),
    })
}
