//! The first program to run: a Python function, 10,000 calls on two warm local workers.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Set `RUST_LOG=funcx=debug` to watch the dispatcher at work.

use std::error::Error;
use std::time::Instant;

use funcx::{Executor, Function, PythonRuntime};
use serde::Deserialize;

/// Ordinary Python, defined in source text: it may import modules and define helpers.
const SOURCE: &str = r#"
import math

def analyze(i):
    signal = [math.sin(i + k / 10.0) for k in range(32)]
    return {"index": i, "mean": sum(signal) / len(signal), "peak": max(signal)}
"#;

/// The dictionary the Python function returns, decoded into a Rust struct.
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

    let started = Instant::now();
    let executor = Executor::builder()
        .workers(2)
        .start(PythonRuntime::default());
    executor.ready().await?;
    println!(
        "2 Python workers ready in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    let analyze = Function::from_source(SOURCE, "analyze");
    println!("registered `{}` as {}", analyze.name(), analyze.id());

    let started = Instant::now();
    let handles = executor.submit_batch(&analyze, (0..CALLS).map(|i| (i,)));
    // The signal whose window averages highest, as a stand-in for "the interesting one".
    let (mut done, mut best) = (0_i64, (f64::MIN, 0.0, 0_i64));
    for handle in handles {
        let analysis: Analysis = handle.result().await?;
        assert_eq!(
            analysis.index, done,
            "results come back for the right inputs"
        );
        if analysis.mean > best.0 {
            best = (analysis.mean, analysis.peak, analysis.index);
        }
        done += 1;
        if done % 2_500 == 0 {
            println!("  {done:>6} / {CALLS} calls done");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    println!(
        "{CALLS} calls in {:.3} s: {:.0} calls/s",
        elapsed,
        CALLS as f64 / elapsed
    );
    println!(
        "highest mean {:.4} (peak {:.4}), for input {}",
        best.0, best.1, best.2
    );

    executor.shutdown().await;
    Ok(())
}
