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

use funcx::providers::LocalProvider;
use funcx::python::manager;
use funcx::transport::remote::{AgentConfig, EndpointAgent};
use funcx::transport::TcpTransport;
use funcx::{BlockRequest, BlockState, Executor, Function, ManagerCommand, Provider};

const SOURCE: &str = r#"
import os, socket

def where(i):
    return (i * i, f"{socket.gethostname()}:{os.getppid()}")
"#;

fn main() -> ExitCode {
    // Started by the provider as `... manager --endpoint ...`: be the manager.
    if let Some(status) = manager::run_if_manager() {
        return status;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match runtime.block_on(endpoint()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn endpoint() -> Result<(), Box<dyn Error>> {
    // The token managers must present; a real deployment keeps it in a file only they read.
    // It is random: one derived from the pid or the clock can be guessed by another user,
    // who could then attach a manager of their own.
    let token = funcx::transport::new_token()?;

    // An endpoint with no workers of its own: managers attach themselves when they dial in.
    // A task whose manager is lost is re-run elsewhere twice before it fails.
    let executor = Executor::builder()
        .retries_on_worker_death(2)
        .start_without_workers();
    let agent = EndpointAgent::new(executor.clone(), AgentConfig::default());
    let acceptor = TcpTransport::builder()
        .token(&token)
        .build()
        .listen("127.0.0.1:0")
        .await?;
    let address = acceptor.local_addr();
    tokio::spawn(agent.clone().serve(acceptor));
    println!("endpoint listening on {address}");

    // One block of two nodes; each node runs one manager with one Python worker.
    let provider = LocalProvider::new();
    let command = ManagerCommand::new(std::env::current_exe()?)
        .arg("manager")
        .args(["--endpoint", &address.to_string(), "--workers", "1"])
        .env("FUNCX_TOKEN", &token);
    let block = provider
        .submit(&BlockRequest::new(command).nodes(2))
        .await?;
    println!(
        "started block {block} through the {} provider",
        provider.name()
    );

    let started = Instant::now();
    while executor.stats().await.managers < 2 {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the managers did not dial in within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for manager in agent.managers() {
        println!(
            "  {} on {} (pid {}, block {}) with {} worker(s)",
            manager.id,
            manager.host,
            manager.pid,
            manager.block.as_deref().unwrap_or("-"),
            manager.slots
        );
    }

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

    // A graceful shutdown drains the managers; they say goodbye and exit, ending the block.
    executor.shutdown().await;
    let started = Instant::now();
    loop {
        let state = provider
            .status(std::slice::from_ref(&block))
            .await?
            .pop()
            .map(|status| status.state);
        match state {
            Some(BlockState::Completed) => break,
            Some(state) if state.is_finished() => {
                return Err(format!("block ended as {state}").into())
            }
            _ if started.elapsed() > Duration::from_secs(30) => {
                provider.cancel(&block).await?;
                return Err("the managers did not exit after the drain".into());
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    println!("block {block} completed: every manager drained and exited");
    Ok(())
}
