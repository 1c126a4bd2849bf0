//! Broker-level faults on rdkafka's in-process `MockCluster`: fast, deterministic
//! tests beside the real-broker ones. Each runs the real `pipeline::run_kafka`
//! (SQLite store, outbox on) over a small generated county produced to the mock
//! cluster, injects a fault (request errors, brokers down and up, slow round
//! trips, a rebalance with a partial batch in flight), and checks that nothing is
//! lost or doubled, that the alerts equal an embedded run's, and that every alert
//! reaches the output topic. Poison messages become dead letters with their origin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio_util::sync::CancellationToken;
use yujing::app::App;
use yujing::config::Settings;
use yujing::domain::alert::HouseholdAlert;
use yujing::domain::record::Origin;
use yujing::generate::AnswerKey;
use yujing::pipeline::{PipelineError, RunSummary};
use yujing::store::{Report, Store};

use crate::support::{Env, embedded_run, import_county, task_views};

/// Partitions of every input topic.
const PARTITIONS: i32 = 3;

/// How long a test waits for the pipeline to catch up before it fails.
const PATIENCE: Duration = Duration::from_secs(120);

/// One message to produce: topic, partition (or the partitioner's choice), key,
/// payload.
struct Outgoing {
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// Where a produced message landed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Landed {
    topic: String,
    partition: i32,
    offset: i64,
}

/// One test's world: a mock cluster with the department and output topics, a
/// folder with the SQLite store, and settings pointing at both.
struct Mock {
    env: Env,
    cluster: MockCluster<'static, DefaultProducerContext>,
    settings: Settings,
}

impl Mock {
    fn new(brokers: i32) -> Mock {
        let env = Env::new();
        let cluster = MockCluster::new(brokers).expect("mock cluster");
        let mut settings = env.settings("kafka.db");
        let kafka = &mut settings.kafka;
        kafka.brokers = cluster.bootstrap_servers();
        kafka.group_id = "yujing-mock".into();
        // Many small batches, so faults land between commits.
        kafka.batch_max_messages = 40;
        kafka.batch_max_wait_ms = 100;
        kafka.session_timeout_ms = 6000;
        kafka.statistics_interval_ms = 500;
        kafka.outbox_batch = 25;
        for topic in kafka.input_topics.values() {
            cluster.create_topic(topic, PARTITIONS, 1).unwrap();
        }
        let outputs = &kafka.output_topics;
        for topic in [
            &outputs.household_alerts,
            &outputs.screening_tasks,
            &outputs.regional_signals,
            &outputs.dead_letters,
        ] {
            cluster.create_topic(topic, 2, 1).unwrap();
        }
        Mock {
            env,
            cluster,
            settings,
        }
    }

    fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    async fn app(&self) -> App {
        App::build(self.settings.clone()).await.expect("app builds")
    }

    /// A generated county, its registry imported into the store.
    async fn county(&self, app: &App) -> (PathBuf, AnswerKey) {
        let (county, key) = self.env.county(200, 60, 5);
        import_county(app, &county).await;
        assert!(key.bad_lines > 0 && key.must_alert.len() > 10);
        (county, key)
    }

    /// The county's feed lines as messages, each to its department's topic,
    /// keyed by its subject.
    fn feed_messages(&self, county: &Path, key: &AnswerKey) -> Vec<Outgoing> {
        let mut messages = Vec::new();
        for feed in &key.feeds {
            let source = Path::new(feed).file_stem().unwrap().to_str().unwrap();
            let topic = self.settings.kafka.input_topics[source].clone();
            let text = std::fs::read(county.join(feed)).unwrap();
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let subject = serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .and_then(|event| {
                        ["household_id", "person_id", "region_code"]
                            .iter()
                            .find_map(|field| event[field].as_str().map(str::to_string))
                    });
                messages.push(Outgoing {
                    topic: topic.clone(),
                    partition: None,
                    key: subject.map(String::into_bytes),
                    payload: Some(line.to_vec()),
                });
            }
        }
        assert_eq!(messages.len() as u64, key.lines);
        messages
    }
}

/// Produces `messages` and waits for every delivery.
async fn produce(brokers: &str, messages: &[Outgoing]) -> Vec<Landed> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let deliveries = messages.iter().map(|message| {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&message.topic);
        if let Some(partition) = message.partition {
            record = record.partition(partition);
        }
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &message.payload {
            record = record.payload(payload.as_slice());
        }
        producer.send(record, Duration::from_secs(30))
    });
    futures::future::join_all(deliveries)
        .await
        .into_iter()
        .zip(messages)
        .map(|(delivery, message)| {
            let delivery = delivery.map_err(|(error, _)| error).expect("delivered");
            Landed {
                topic: message.topic.clone(),
                partition: delivery.partition,
                offset: delivery.offset,
            }
        })
        .collect()
}

/// `run_kafka` in a task, until stopped.
struct Running {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<RunSummary, PipelineError>>>,
}

fn start(app: &App) -> Running {
    let cancel = CancellationToken::new();
    let app = app.clone();
    let token = cancel.clone();
    let task = tokio::spawn(async move { yujing::pipeline::run_kafka(&app, token).await });
    Running {
        cancel,
        task: Some(task),
    }
}

impl Running {
    /// Cancels and waits for a clean return.
    async fn stop(mut self) -> RunSummary {
        self.cancel.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(90), task)
            .await
            .expect("run_kafka returns after cancel")
            .expect("run_kafka does not panic")
            .expect("run_kafka returns cleanly")
    }

    /// Waits until the consumer has received `messages` in all (counting the
    /// ones read again).
    async fn wait_consumed(&self, app: &App, messages: u64) {
        let started = Instant::now();
        while counter(app, "yujing_kafka_messages_total") < messages {
            assert!(started.elapsed() < PATIENCE, "{messages} not consumed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    /// A test that fails mid-run still stops the pipeline while the mock cluster
    /// lives (it is declared before): a consumer that closes after its cluster
    /// is gone waits forever, and the failing test would hang instead of failing.
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(tokio::time::timeout(Duration::from_secs(60), task))
            });
        }
    }
}

/// Waits until the store has processed `records`.
async fn wait_processed(store: &Store, records: u64) -> Report {
    let started = Instant::now();
    loop {
        let report = store.report().await.unwrap();
        if report.events_processed >= records {
            return report;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "only {} of {records} records processed after {PATIENCE:?}: {report:?}",
            report.events_processed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message on `topic` (all partitions, from the beginning to the end as
/// of now): key and payload.
async fn read_topic(brokers: &str, topic: &str) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "mock-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = metadata.topics()[0].partitions().len() as i32;
        let mut ends = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                .expect("watermarks");
            if high > 0 {
                ends.insert(partition, high);
                assignment
                    .add_partition_offset(&topic, partition, Offset::Beginning)
                    .unwrap();
            }
        }
        let mut messages = Vec::new();
        if ends.is_empty() {
            return messages;
        }
        consumer.assign(&assignment).expect("assign");
        let started = Instant::now();
        while !ends.is_empty() {
            assert!(
                started.elapsed() < PATIENCE,
                "{topic}: left unread {ends:?}"
            );
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.expect("message");
            messages.push((
                message.key().map(<[u8]>::to_vec),
                message.payload().unwrap_or_default().to_vec(),
            ));
            if ends.get(&message.partition()) == Some(&(message.offset() + 1)) {
                ends.remove(&message.partition());
            }
        }
        messages
    })
    .await
    .unwrap()
}

/// Alerts as compared between runs: everything but processing times.
fn alert_view(alert: &HouseholdAlert) -> String {
    format!(
        "{} {} {} {} {:?} {:?} {:?} {:?}",
        alert.household_id,
        alert.level,
        alert.action,
        alert.status,
        alert.risk_types,
        alert
            .rules
            .iter()
            .map(|r| format!("{} {} {}", r.rule_id, r.level, r.reason))
            .collect::<Vec<_>>(),
        alert.evidence,
        alert.task_id
    )
}

async fn alert_views(store: &Store) -> BTreeMap<String, String> {
    let mut views = BTreeMap::new();
    store
        .export_alerts(&mut |alert| {
            views.insert(alert.alert_id.clone(), alert_view(&alert));
            Ok(())
        })
        .await
        .unwrap();
    views
}

/// Nothing lost, nothing doubled: every produced record processed once, the
/// stored offsets at the end of every partition, the alerts and tasks of an
/// embedded run, and every alert on the output topic.
async fn assert_exactly_once(
    mock: &Mock,
    app: &App,
    county: &Path,
    key: &AnswerKey,
    landed: &[Landed],
) {
    let report = app.store.report().await.unwrap();
    assert_eq!(
        report.events_processed, key.lines,
        "nothing lost or read twice"
    );
    assert_eq!(
        report.events_accepted + report.duplicates + report.dead_letters,
        report.events_processed
    );
    assert_eq!(report.duplicates, key.duplicates);
    assert_eq!(report.dead_letters, key.bad_lines);
    assert_eq!(report.unmatched, key.unmatched);

    // The offsets stored with the results are the ends of the partitions.
    let mut ends: BTreeMap<String, u64> = BTreeMap::new();
    for message in landed {
        let key = format!("kafka:{}:{}", message.topic, message.partition);
        let end = ends.entry(key).or_default();
        *end = (*end).max(message.offset as u64 + 1);
    }
    let stored: BTreeMap<String, u64> = app
        .store
        .positions_with_prefix("kafka:")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.source_key, p.position))
        .collect();
    assert_eq!(stored, ends);

    let embedded = embedded_run(&mock.env, county, key, "embedded.db").await;
    let expected = embedded.store.report().await.unwrap();
    assert_eq!(report.events_accepted, expected.events_accepted);
    assert_eq!(report.alerts_by_level, expected.alerts_by_level);
    let alerts = alert_views(&app.store).await;
    assert!(!alerts.is_empty());
    assert_eq!(alerts, alert_views(&embedded.store).await);
    assert_eq!(
        task_views(&app.store).await,
        task_views(&embedded.store).await
    );

    // Every alert reached the output topic, keyed by its household; nothing is
    // left in the outbox.
    assert_eq!(app.store.outbox_backlog().await.unwrap(), 0);
    let published = read_topic(
        &mock.brokers(),
        &app.settings.kafka.output_topics.household_alerts,
    )
    .await;
    let mut ids = BTreeSet::new();
    for (message_key, payload) in &published {
        let alert: HouseholdAlert = serde_json::from_slice(payload).unwrap();
        assert_eq!(
            message_key.as_deref(),
            Some(alert.household_id.as_str().as_bytes())
        );
        ids.insert(alert.alert_id);
    }
    assert_eq!(ids, alerts.keys().cloned().collect::<BTreeSet<_>>());
}

/// A counter of the application's metrics.
fn counter(app: &App, name: &str) -> u64 {
    app.metrics
        .registry()
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

/// What the consumer went through, read before it stopped.
struct Observed {
    /// Assignments and revocations.
    rebalances: u64,
    /// Messages consumed (more than produced when some were read again).
    consumed: u64,
}

/// A run with `fault` injected mid-stream: half of the county is processed, the
/// next chunk is produced (and in flight), then the fault; the rest follows in
/// chunks, each waited for, so that the run goes on through the fault.
async fn run_with_fault_midstream(mock: Mock, fault: impl AsyncFnOnce(&Mock)) -> Observed {
    let app = mock.app().await;
    let (county, key) = mock.county(&app).await;
    let messages = mock.feed_messages(&county, &key);
    let (first, second) = messages.split_at(messages.len() / 2);
    let mut landed = produce(&mock.brokers(), first).await;
    let running = start(&app);
    wait_processed(&app.store, first.len() as u64).await;
    let mut chunks = second.chunks(second.len() / 5 + 1);
    landed.extend(produce(&mock.brokers(), chunks.next().unwrap()).await);
    fault(&mock).await;
    for chunk in chunks {
        landed.extend(produce(&mock.brokers(), chunk).await);
        wait_processed(&app.store, landed.len() as u64).await;
    }
    wait_processed(&app.store, key.lines).await;
    let observed = Observed {
        rebalances: counter(&app, "yujing_kafka_rebalances_total"),
        consumed: counter(&app, "yujing_kafka_messages_total"),
    };
    let summary = running.stop().await;
    assert_eq!(summary.counts.records, key.lines);
    assert!(observed.consumed >= key.lines);
    assert_exactly_once(&mock, &app, &county, &key, &landed).await;
    observed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_errors_lose_and_double_nothing() {
    run_with_fault_midstream(Mock::new(3), async |mock: &Mock| {
        let errors = [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        ]
        .repeat(5);
        mock.cluster.request_errors(RDKafkaApiKey::Fetch, &errors);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_errors_and_the_rejoin_they_force_change_nothing() {
    let observed = run_with_fault_midstream(Mock::new(3), async |mock: &Mock| {
        // Offsets live in the store; the group commit is for lag only. The first
        // error costs the consumer its membership: it rejoins, its partitions
        // are revoked and assigned again mid-stream.
        let errors = [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        ];
        mock.cluster
            .request_errors(RDKafkaApiKey::OffsetCommit, &errors);
    })
    .await;
    assert!(
        observed.rebalances >= 3,
        "assigned, revoked and assigned again: {}",
        observed.rebalances
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_down_then_up_mid_stream() {
    let observed = run_with_fault_midstream(Mock::new(3), async |mock: &Mock| {
        // Longer than the session timeout: the group forgets the consumer,
        // which rejoins when the brokers return.
        mock.cluster.broker_down(-1).unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
        mock.cluster.broker_up(-1).unwrap();
    })
    .await;
    assert!(
        observed.rebalances >= 3,
        "the consumer rejoined: {}",
        observed.rebalances
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_down_then_up_mid_stream() {
    run_with_fault_midstream(Mock::new(3), async |mock: &Mock| {
        mock.cluster.broker_down(2).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        mock.cluster.broker_up(2).unwrap();
    })
    .await;
}

/// A rebalance while a partial batch waits to be handed over: the records of
/// that batch are dropped and read again from the stored offsets, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_with_a_partial_batch_in_flight_reads_it_again_once() {
    const BATCH: usize = 40;
    let mut mock = Mock::new(3);
    let kafka = &mut mock.settings.kafka;
    kafka.batch_max_messages = BATCH;
    // A partial batch waits longer than the test: only the rebalance, or the
    // drain when the run stops, takes it away.
    kafka.batch_max_wait_ms = 600_000;
    // So that the injected heartbeat error comes back at once.
    kafka
        .consumer_properties
        .insert("heartbeat.interval.ms".into(), "300".into());
    let app = mock.app().await;
    let (county, key) = mock.county(&app).await;
    let messages = mock.feed_messages(&county, &key);
    // Full batches first; then fewer than a batch, which wait.
    let full = messages.len() / 2 / BATCH * BATCH;
    let (first, rest) = messages.split_at(full);
    let (waiting, rest) = rest.split_at(BATCH - 10);
    let mut landed = produce(&mock.brokers(), first).await;
    let running = start(&app);
    wait_processed(&app.store, full as u64).await;
    landed.extend(produce(&mock.brokers(), waiting).await);
    running
        .wait_consumed(&app, (full + waiting.len()) as u64)
        .await;
    let before = counter(&app, "yujing_kafka_rebalances_total");
    assert_eq!(
        app.store.report().await.unwrap().events_processed,
        full as u64,
        "a partial batch waits"
    );

    // The next heartbeat learns that the member is gone: revoke, rejoin, assign,
    // and the waiting records are read again from the stored offsets.
    mock.cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID],
    );
    running
        .wait_consumed(&app, (full + 2 * waiting.len()) as u64)
        .await;
    let rebalances = counter(&app, "yujing_kafka_rebalances_total") - before;
    assert!(rebalances >= 2, "revoked and assigned again: {rebalances}");
    landed.extend(produce(&mock.brokers(), rest).await);
    running
        .wait_consumed(&app, key.lines + waiting.len() as u64)
        .await;
    // Stopping drains the last partial batch.
    let summary = running.stop().await;
    assert_eq!(summary.counts.records, key.lines);
    assert_exactly_once(&mock, &app, &county, &key, &landed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_delay_the_outbox_but_lose_nothing() {
    let mock = Mock::new(3);
    let app = mock.app().await;
    let (county, key) = mock.county(&app).await;
    let landed = produce(&mock.brokers(), &mock.feed_messages(&county, &key)).await;
    // From here on, only the outbox relay produces.
    let errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
    ]
    .repeat(4);
    mock.cluster.request_errors(RDKafkaApiKey::Produce, &errors);
    let running = start(&app);
    wait_processed(&app.store, key.lines).await;
    running.stop().await;
    assert_exactly_once(&mock, &app, &county, &key, &landed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_round_trips_lose_and_double_nothing() {
    let mock = Mock::new(3);
    mock.cluster
        .broker_round_trip_time(-1, Duration::from_millis(250))
        .unwrap();
    let app = mock.app().await;
    let (county, key) = mock.county(&app).await;
    let landed = produce(&mock.brokers(), &mock.feed_messages(&county, &key)).await;
    let running = start(&app);
    wait_processed(&app.store, key.lines).await;
    running.stop().await;
    assert_exactly_once(&mock, &app, &county, &key, &landed).await;
}

/// A message no decoder accepts (payload `None`: a tombstone), and the rule that
/// refuses it.
struct Poison {
    payload: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    rule: &'static str,
}

impl Poison {
    fn new(payload: Option<&[u8]>, key: Option<&[u8]>, rule: &'static str) -> Poison {
        Poison {
            payload: payload.map(<[u8]>::to_vec),
            key: key.map(<[u8]>::to_vec),
            rule,
        }
    }
}

/// Poison messages interleaved with valid ones: each is a dead letter with its
/// Kafka origin (topic, partition, offset, key) and reaches the dead-letter
/// topic; every valid message is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_become_dead_letters_with_their_origin() {
    let mut mock = Mock::new(1);
    mock.settings.input.max_line_bytes = 1024;
    mock.settings.input.max_dead_letter_bytes = 100;
    let topic = mock.settings.kafka.input_topics["housing"].clone();
    let valid = |i: usize| {
        format!(
            r#"{{"event_id":"OK-{i}","source":"housing","kind":"housing_safety","occurred_at":"2024-05-01T10:00:00+08:00","reported_at":"2024-05-02T09:00:00+08:00","household_id":"H{i}","payload":{{"rating":"A"}}}}"#
        )
        .into_bytes()
    };
    let mut not_utf8 = br#"{"event_id":"BIN","person_id":"11010519491231002X","x":""#.to_vec();
    not_utf8.extend_from_slice(b"\xff\xfe\x00");
    not_utf8.extend_from_slice(br#""}"#);
    let mut oversized = br#"{"event_id":"HUGE","note":""#.to_vec();
    oversized.extend(std::iter::repeat_n(b'x', 5000));
    oversized.extend_from_slice(br#""}"#);
    let poison = [
        Poison::new(Some(b"this is not json"), Some(b"k-1"), "json.syntax"),
        Poison::new(
            Some(&not_utf8),
            Some(b"\xff\x00binary key"),
            "json.not_utf8",
        ),
        Poison::new(Some(&oversized), None, "line.too_long"),
        Poison::new(Some(b""), Some(b"k-empty"), "json.syntax"),
        Poison::new(None, Some(b"tombstone"), "json.syntax"),
        Poison::new(
            Some(b"{\"event_id\": \"BROKEN\", \"source\": "),
            None,
            "json.syntax",
        ),
    ];
    // Seven valid messages before each poison one, spread over the partitions.
    let mut messages = Vec::new();
    let mut poisoned = Vec::new();
    let mut valid_ids = Vec::new();
    for round in 0..4 {
        for (p, poison) in poison.iter().enumerate() {
            for _ in 0..7 {
                let i = valid_ids.len();
                messages.push(Outgoing {
                    topic: topic.clone(),
                    partition: Some((i % PARTITIONS as usize) as i32),
                    key: Some(format!("H{i}").into_bytes()),
                    payload: Some(valid(i)),
                });
                valid_ids.push(format!("OK-{i}"));
            }
            poisoned.push((messages.len(), poison));
            messages.push(Outgoing {
                topic: topic.clone(),
                partition: Some(((round + p) % PARTITIONS as usize) as i32),
                key: poison.key.clone(),
                payload: poison.payload.clone(),
            });
        }
    }
    let app = mock.app().await;
    let landed = produce(&mock.brokers(), &messages).await;
    let running = start(&app);
    wait_processed(&app.store, messages.len() as u64).await;
    running.stop().await;
    let report = app.store.report().await.unwrap();
    assert_eq!(report.events_processed, messages.len() as u64, "{report:?}");
    assert_eq!(report.events_accepted, valid_ids.len() as u64);
    assert_eq!(report.dead_letters, poisoned.len() as u64);
    assert_eq!(report.duplicates, 0);
    let stored_events = app.store.evidence(&valid_ids).await.unwrap();
    assert_eq!(stored_events.len(), valid_ids.len(), "every valid message");

    let mut letters = BTreeMap::new();
    app.store
        .export_dead_letters(&mut |letter| {
            letters.insert(letter.origin.locator(), letter);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(letters.len(), poisoned.len());
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    for (index, poison) in &poisoned {
        let at = &landed[*index];
        let origin = Origin::Kafka {
            topic: at.topic.clone(),
            partition: at.partition,
            offset: at.offset,
            key_base64: poison.key.as_deref().map(encode),
        };
        let letter = letters
            .get(&origin.locator())
            .unwrap_or_else(|| panic!("no dead letter at {}", origin.locator()));
        assert_eq!(letter.origin, origin);
        assert_eq!(letter.rejection.rule, poison.rule, "{}", origin.locator());
        let payload = poison.payload.clone().unwrap_or_default();
        assert_eq!(letter.raw_bytes, payload.len() as u64);
        if poison.rule == "line.too_long" {
            assert!(letter.raw_truncated);
            assert_eq!(letter.raw, payload[..100]);
        } else if poison.rule == "json.not_utf8" {
            // The resident ID is masked in place; every other byte is kept.
            let mut masked = payload.clone();
            let at = payload
                .windows(18)
                .position(|w| w == b"11010519491231002X")
                .unwrap();
            masked[at + 6..at + 14].copy_from_slice(b"********");
            assert_eq!(letter.raw, masked);
        } else {
            assert_eq!(letter.raw, payload);
        }
    }

    // Every dead letter was published to the dead-letter topic, keyed by its id.
    let published = read_topic(
        &mock.brokers(),
        &app.settings.kafka.output_topics.dead_letters,
    )
    .await;
    let mut ids = BTreeSet::new();
    for (key, payload) in &published {
        let document: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let id = document["dead_letter_id"].as_str().unwrap().to_string();
        assert_eq!(key.as_deref(), Some(id.as_bytes()));
        assert_eq!(document["origin"]["kind"], "kafka");
        ids.insert(id);
    }
    let stored: BTreeSet<String> = letters.values().map(|l| l.dead_letter_id.clone()).collect();
    assert_eq!(ids, stored);

    // The stored offsets are the ends of the partitions.
    for partition in 0..PARTITIONS {
        let end = landed
            .iter()
            .filter(|l| l.partition == partition)
            .map(|l| l.offset + 1)
            .max()
            .unwrap();
        let position = app
            .store
            .position(&format!("kafka:{topic}:{partition}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(position.position, end as u64);
    }
}
