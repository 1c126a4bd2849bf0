//! A bare rdkafka consumer that drains topics from the beginning and reports its
//! rate: the yardstick `scripts/bench` measures yujing's Kafka run against.
//!
//! `cargo run --release --example drain -- BROKERS COUNT TOPIC...`

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let brokers = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: drain BROKERS COUNT TOPIC..."))?;
    let count: u64 = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("COUNT missing"))?
        .parse()?;
    let topics: Vec<String> = args.collect();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("drain-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let started = Instant::now();
    let mut seen = 0u64;
    let mut bytes = 0u64;
    // Joining the group and the first fetch: time before the first message.
    let mut first = None;
    while seen < count {
        match tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await {
            Ok(Ok(message)) => {
                // Touch the payload, as any consumer must.
                bytes += message.payload().map_or(0, |p| p.len() as u64);
                first.get_or_insert_with(|| started.elapsed());
                seen += 1;
            }
            Ok(Err(error)) => eprintln!("consumer error: {error}"),
            Err(_) => anyhow::bail!("no message for 60 s after {seen} of {count}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let first = first.unwrap_or_default().as_secs_f64();
    println!(
        "{{\"messages\":{seen},\"bytes\":{bytes},\"seconds\":{seconds:.3},\"per_second\":{:.0},\"first_message_after\":{first:.3}}}",
        seen as f64 / seconds
    );
    Ok(())
}
