//! An endpoint whose workers live in separate manager processes that dial in over TCP.
//!
//! ```text
//! cargo run --release --example managers
//! ```
//!
//! The endpoint listens on 127.0.0.1; a `LocalProvider` starts one block of two managers
//! (each a process with one warm Python worker); tasks go through the ordinary `Executor`
//! API. On a cluster the same endpoint gets its blocks from Slurm or PBS instead, and the
//! managers are the installed `funcx-manager` binary; here the example starts *itself* as
//! the manager (`managers manager --endpoint ...`), so it needs nothing else built.

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use funcx::endpoint::Endpoint;
use funcx::providers::LocalProvider;
use funcx::python::manager;
use funcx::{Function, ManagerCommand, StrategyConfig};

const SOURCE: &str = r#"
import os, socket

def where(i):
    return (i * i, f"{socket.gethostname()}:{os.getppid()}")
"#;

fn main() -> ExitCode {
    // Started by the endpoint's provider as `... manager --endpoint ...`, it is the manager.
    manager::main_or_manager(endpoint)
}

async fn endpoint() -> Result<(), Box<dyn Error>> {
    // One block of two nodes; each node runs one manager (this program, as `managers
    // manager ...`) with one Python worker. The endpoint listens on a free loopback port, and
    // gives its managers a fresh token.
    let endpoint = Endpoint::builder()
        .name("managers")
        .provider(LocalProvider::new())
        .manager_command(ManagerCommand::new(std::env::current_exe()?).arg("manager"))
        .nodes_per_block(2)
        .workers_per_node(1)
        .strategy(
            StrategyConfig::new()
                .init_blocks(1)
                .min_blocks(1)
                .max_blocks(1)
                .period(Duration::from_millis(100)),
        )
        .start()
        .await?;
    println!("endpoint listening on {}", endpoint.address());

    let started = Instant::now();
    while endpoint.status().strategy.managers < 2 {
        if let Some(error) = endpoint.status().strategy.last_error {
            return Err(error.into());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the managers did not dial in within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for manager in endpoint.managers() {
        println!(
            "  {} on {} (pid {}, block {}) with {} worker(s)",
            manager.id,
            manager.host,
            manager.pid,
            manager.block.as_deref().unwrap_or("-"),
            manager.slots
        );
    }

    let executor = endpoint.executor();
    let where_ = Function::from_source(SOURCE, "where");
    let calls = 10_000_i64;
    let started = Instant::now();
    let handles = executor.submit_batch(&where_, (0..calls).map(|i| (i,)));
    let mut per_manager = std::collections::BTreeMap::<String, usize>::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let (square, ran_on): (i64, String) = handle.result().await?;
        assert_eq!(square, (i * i) as i64);
        *per_manager.entry(ran_on).or_default() += 1;
        if (i + 1) % 2_500 == 0 {
            println!("  {:>6} / {calls} calls done", i + 1);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{calls} calls in {elapsed:.3} s over TCP: {:.0} calls/s",
        calls as f64 / elapsed
    );
    for (manager, count) in per_manager {
        println!("  {count:>6} ran on {manager}");
    }

    // Stop drains the managers (they say goodbye and exit), then waits for the block to end.
    endpoint.stop().await;
    for block in endpoint.status().strategy.blocks {
        println!("block {} {}", block.id, block.state);
    }
    Ok(())
}
