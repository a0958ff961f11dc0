//! An endpoint whose workers come from Slurm: blocks are batch jobs, each running one manager
//! per node, scaled by the elastic strategy.
//!
//! ```text
//! bash scripts/infra/slurm-up.sh        # a one-node Slurm on this machine, if you have none
//! cargo run --release --example slurm
//! ```
//!
//! The example is its own manager (`slurm manager --endpoint ...` inside the job), so the job
//! needs this binary on a filesystem the nodes share; on a real cluster point
//! `ManagerCommand` at an installed `funcx-manager` instead, and listen on an address the
//! compute nodes can reach.

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use funcx::endpoint::Endpoint;
use funcx::providers::{SlurmConfig, SlurmProvider};
use funcx::python::manager;
use funcx::{Function, ManagerCommand, StrategyConfig};

const SOURCE: &str =
    "import socket\n\ndef hello(i):\n    return f'task {i} ran on {socket.gethostname()}'\n";

fn main() -> ExitCode {
    // Started by the endpoint's provider as `... manager --endpoint ...`, it is the manager.
    manager::main_or_manager(endpoint)
}

async fn endpoint() -> Result<(), Box<dyn Error>> {
    // The whole Slurm configuration: partition, what each node runs, how blocks scale, and
    // the walltime, given once (asked of Slurm, and blocks are drained a minute before it).
    let endpoint = Endpoint::builder()
        .name("slurm-example")
        .provider(SlurmProvider::new(
            SlurmConfig::new().partition("debug").job_name("funcx"),
        ))
        .manager_command(ManagerCommand::new(std::env::current_exe()?).arg("manager"))
        .workers_per_node(1)
        .strategy(
            StrategyConfig::new()
                .init_blocks(1)
                .max_blocks(2)
                .period(Duration::from_millis(500))
                .max_idle_time(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(60)),
        )
        .walltime(Duration::from_secs(600))
        .drain_margin(Duration::from_secs(60))
        .start()
        .await?;
    println!(
        "endpoint on {}; submitting a Slurm block",
        endpoint.address()
    );

    let started = Instant::now();
    loop {
        let status = endpoint.status();
        if status.strategy.managers > 0 {
            break;
        }
        if let Some(error) = &status.strategy.last_error {
            return Err(format!("Slurm: {error}").into());
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("no manager dialled in within 2 minutes".into());
        }
        for block in &status.strategy.blocks {
            println!("  block {} is {}", block.id, block.state);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "a manager dialled in after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let hello = Function::from_source(SOURCE, "hello");
    let handles = endpoint
        .executor()
        .submit_batch(&hello, (0..1_000).map(|i| (i,)));
    let mut last = String::new();
    for (i, handle) in handles.into_iter().enumerate() {
        last = handle.result().await?;
        if (i + 1) % 250 == 0 {
            println!("  {:>5} / 1000 tasks done", i + 1);
        }
    }
    println!("last answer: {last}");

    let status = endpoint.status();
    println!(
        "status: {} block(s), {} manager(s), {} worker(s), {} queued",
        status.strategy.blocks.len(),
        status.strategy.managers,
        status.strategy.workers,
        status.strategy.queued
    );
    endpoint.stop().await;
    println!("drained the managers and released the blocks");
    Ok(())
}
