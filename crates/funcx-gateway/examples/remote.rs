//! The quickstart's work (10,000 calls of a Python function) through a gateway, all on
//! 127.0.0.1 in one program: a copy-paste start for remote execution.
//!
//! ```text
//! cargo run --release --example remote
//! ```
//!
//! Three parts that normally run on three machines:
//! 1. a **gateway** (HTTP API, users, task store; `examples/gateway.rs` runs one on its own);
//! 2. an **endpoint**: two warm Python workers behind a manager that dials *out* to the
//!    gateway, so the machine running it needs no open port;
//! 3. the **user's program**: `RemoteExecutor::connect` gives an ordinary `Executor`, and the
//!    code that submits is the quickstart's, unchanged.

use std::error::Error;
use std::time::{Duration, Instant};

use funcx_core::{Executor, Function};
use funcx_gateway::client::EndpointDial;
use funcx_gateway::{Gateway, GatewayConfig, RemoteExecutor, UserConfig};
use funcx_python::PythonRuntime;
use funcx_transport::remote::{run_manager, ExecutorRunner, ManagerConfig, ManagerId, ManagerInfo};
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // 1. The gateway, with one user and a store in memory (set `store` for a redb file).
    let token = funcx_gateway::new_token()?;
    let config = GatewayConfig {
        users: vec![UserConfig {
            name: "alice".into(),
            token: token.clone(),
        }],
        ..GatewayConfig::default()
    };
    let gateway = Gateway::start(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { gateway.serve(listener).await });
    let url = format!("http://{address}");
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

    // 2. The endpoint: two warm Python workers, and a manager that dials the gateway.
    let started = Instant::now();
    let workers = 2;
    let local = Executor::builder()
        .workers(workers)
        .start(PythonRuntime::default());
    local.ready().await?;
    let info = ManagerInfo {
        id: ManagerId(u64::from(std::process::id())),
        block: None,
        host: "localhost".into(),
        pid: std::process::id(),
        slots: workers as u32,
        gpus: vec![],
    };
    tokio::spawn(run_manager(
        EndpointDial::new(address.to_string(), endpoint_id, endpoint_token),
        ExecutorRunner::new(local, workers),
        ManagerConfig::new(info),
    ));
    println!(
        "endpoint {endpoint_id} with {workers} Python workers ready in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    // 3. The user's program. The one line that differs from the quickstart:
    let executor = RemoteExecutor::connect(&url, &token, endpoint_id).await?;

    let analyze = Function::from_source(SOURCE, "analyze");
    let started = Instant::now();
    let handles = executor.submit_batch(&analyze, (0..CALLS).map(|i| (i,)));
    // The signal whose window averages highest, as a stand-in for "the interesting one".
    let (mut done, mut best) = (0_i64, (f64::MIN, 0.0, 0_i64));
    let mut first = None;
    for handle in handles {
        let analysis: Analysis = handle.result().await?;
        assert_eq!(
            analysis.index, done,
            "results come back for the right inputs"
        );
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
    Ok(())
}
