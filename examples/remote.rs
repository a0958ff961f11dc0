//! The quickstart's work (10,000 calls of a Python function) through a gateway, all on
//! 127.0.0.1 in one program: a copy-paste start for remote execution.
//!
//! ```text
//! cargo run --release --features gateway --example remote
//! ```
//!
//! Three parts that normally run on three machines:
//! 1. a **gateway** (HTTP API, users, task store; `crates/funcx-gateway/examples/gateway.rs`
//!    runs one on its own, and the `funcx-gateway` program from a configuration file);
//! 2. an **endpoint**, `Endpoint::builder()` with a gateway link: it dials *out* to the
//!    gateway, so the machine running it needs no open port, and runs a block of managers
//!    with two warm Python workers (here a local process; on a cluster a Slurm or PBS job;
//!    the `funcx-endpoint` program builds the same from a configuration file);
//! 3. the **user's program**: `funcx::client::connect` gives an ordinary `Executor`, and the
//!    code that submits is the quickstart's, unchanged.
//!
//! The example is also the endpoint's manager program (`remote manager --endpoint ...`), so
//! it needs nothing else built.

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use funcx::endpoint::{Endpoint, GatewayLink};
use funcx::gateway::{Gateway, GatewayConfig, UserConfig};
use funcx::providers::LocalProvider;
use funcx::python::manager;
use funcx::{Function, ManagerCommand, StrategyConfig};
use serde::Deserialize;

const SOURCE: &str = r#"
import math

def analyze(i):
    signal = [math.sin(i + k / 10.0) for k in range(32)]
    return {"index": i, "mean": sum(signal) / len(signal), "peak": max(signal)}
"#;

#[derive(Debug, Deserialize)]
struct Analysis {
    index: i64,
    mean: f64,
    peak: f64,
}

const CALLS: i64 = 10_000;

fn main() -> ExitCode {
    // Started by the endpoint's provider as `... manager --endpoint ...`, it is the manager.
    manager::main_or_manager(remote)
}

async fn remote() -> Result<(), Box<dyn Error>> {
    // 1. The gateway, with one user and a store in memory (set `store` for a redb file).
    let token = funcx::gateway::new_token()?;
    let config = GatewayConfig {
        users: vec![UserConfig {
            name: "alice".into(),
            token: token.clone(),
        }],
        ..GatewayConfig::default()
    };
    let gateway = Gateway::start(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { gateway.serve(listener).await });
    println!("gateway on {url}");

    // The user registers an endpoint: its id, and the token the endpoint will present.
    let registered: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/endpoints"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "name": "laptop" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let (Some(endpoint_id), Some(endpoint_token)) = (
        registered["endpoint_id"].as_str(),
        registered["endpoint_token"].as_str(),
    ) else {
        return Err(format!("unexpected answer: {registered}").into());
    };

    // 2. The endpoint: one block of one manager (this program) with two Python workers, its
    // tasks taken from the gateway. The walltime is given once: the block asks for it, and
    // the endpoint drains the block before it ends and starts another.
    let started = Instant::now();
    let endpoint = Endpoint::builder()
        .name("laptop")
        .provider(LocalProvider::new())
        .manager_command(ManagerCommand::new(std::env::current_exe()?).arg("manager"))
        .workers_per_node(2)
        .strategy(
            StrategyConfig::new()
                .init_blocks(1)
                .min_blocks(1)
                .max_blocks(1)
                .period(Duration::from_millis(100)),
        )
        .walltime(Duration::from_secs(3600))
        .gateway(GatewayLink {
            url: url.clone(),
            endpoint_id: endpoint_id.to_string(),
            token: endpoint_token.to_string(),
            ca_file: None,
            failover: Vec::new(),
        })
        .start()
        .await?;
    while endpoint.status().strategy.managers < 1 || endpoint.status().connected != Some(true) {
        if let Some(error) = endpoint.status().strategy.last_error {
            return Err(error.into());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the endpoint did not come up within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "endpoint {endpoint_id} connected, with a manager of 2 Python workers, in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    // 3. The user's program. The one line that differs from the quickstart:
    let executor = funcx::client::connect(&url, &token, endpoint_id).await?;

    let analyze = Function::from_source(SOURCE, "analyze");
    let started = Instant::now();
    let handles = executor.submit_batch(&analyze, (0..CALLS).map(|i| (i,)));
    // The signal whose window averages highest, as a stand-in for "the interesting one".
    let (mut done, mut best) = (0_i64, (f64::MIN, 0.0, 0_i64));
    let mut first = None;
    for handle in handles {
        let analysis: Analysis = handle.result().await?;
        if analysis.index != done {
            return Err(format!("result {done} is for input {}", analysis.index).into());
        }
        first.get_or_insert_with(|| started.elapsed());
        if analysis.mean > best.0 {
            best = (analysis.mean, analysis.peak, analysis.index);
        }
        done += 1;
        if done % 2_500 == 0 {
            println!(
                "  {done:>6} / {CALLS} calls done ({:.0} calls/s so far)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{CALLS} calls through the gateway in {elapsed:.3} s: {:.0} calls/s (first result after {:.1} ms)",
        CALLS as f64 / elapsed,
        first.unwrap_or(Duration::ZERO).as_secs_f64() * 1e3
    );
    println!(
        "highest mean {:.4} (peak {:.4}), for input {}",
        best.0, best.1, best.2
    );

    // One call, to show a round trip's latency through gateway and endpoint.
    let started = Instant::now();
    let _: Analysis = executor.submit(&analyze, (1,)).result().await?;
    println!(
        "one call round trip: {:.2} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    executor.shutdown().await;
    // Drains: the manager finishes what it holds, says goodbye and exits; the block ends.
    endpoint.stop().await;
    Ok(())
}
