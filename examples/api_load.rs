//! Load generator of `scripts/bench api`: N concurrent clients (each one keep-alive
//! connection) request one route as fast as the server answers for a fixed time, and
//! the requests per second and latency quantiles are printed as one JSON line.
//!
//! ```text
//! api_load BASE TOKEN SECONDS CLIENTS PATH [PATH ...]
//! ```
//! Several paths are taken in turn by each client (e.g. many household ids). Every
//! answer must be 200, or the run fails.

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: api_load BASE TOKEN SECONDS CLIENTS PATH [PATH ...]");
        std::process::exit(2);
    }
    let base = args[1].clone();
    let token = args[2].clone();
    let seconds: u64 = args[3].parse().expect("SECONDS");
    let clients: usize = args[4].parse().expect("CLIENTS");
    let paths: Vec<String> = args[5..].to_vec();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client_index in 0..clients {
        let (base, token, paths) = (base.clone(), token.clone(), paths.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut i = client_index;
            while Instant::now() < until {
                let url = format!("{base}{}", paths[i % paths.len()]);
                i += 1;
                let began = Instant::now();
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(began.elapsed());
                    }
                    Ok(response) => {
                        failures += 1;
                        eprintln!("{url}: {}", response.status());
                    }
                    Err(error) => {
                        failures += 1;
                        eprintln!("{url}: {error}");
                    }
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (mut l, f) = task.await.expect("client task");
        latencies.append(&mut l);
        failures += f;
    }
    latencies.sort();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"requests\":{},\"failures\":{failures},\"per_second\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        quantile(0.50),
        quantile(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    if failures > 0 {
        std::process::exit(1);
    }
}
