//! The elastic strategy on real processes: blocks of real `funcx-manager`s with real Python
//! workers, started and ended by the `LocalProvider`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use funcx_core::{
    BlockRequest, BlockState, Executor, Function, ManagerCommand, Strategy, StrategyConfig,
};
use funcx_providers::LocalProvider;
use funcx_transport::remote::{AgentConfig, EndpointAgent};
use funcx_transport::TcpTransport;

const TOKEN: &str = "strategy-token";
const WORK: &str =
    "import os, time\n\ndef work(i, pause):\n    time.sleep(pause)\n    return (i, os.getppid())\n";

async fn endpoint() -> (Executor, std::net::SocketAddr) {
    let executor = Executor::builder()
        .retries_on_worker_death(0)
        .start_without_workers();
    let agent = EndpointAgent::new(
        executor.clone(),
        AgentConfig {
            heartbeat_period: Duration::from_millis(100),
            heartbeat_threshold: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(5),
        },
    );
    let acceptor = TcpTransport::builder()
        .token(TOKEN)
        .build()
        .listen("127.0.0.1:0")
        .await
        .expect("listen");
    let address = acceptor.local_addr();
    tokio::spawn(agent.serve(acceptor));
    (executor, address)
}

fn block(address: std::net::SocketAddr) -> BlockRequest {
    let manager = ManagerCommand::new(env!("CARGO_BIN_EXE_funcx-manager"))
        .args([
            "--endpoint",
            &address.to_string(),
            "--workers",
            "1",
            "--give-up-after",
            "10",
        ])
        .env("FUNCX_TOKEN", TOKEN)
        .env("RUST_LOG", "warn");
    BlockRequest::new(manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_grow_with_the_backlog_and_idle_ones_are_released() {
    let (executor, address) = endpoint().await;
    let provider = Arc::new(LocalProvider::new());
    let mut strategy = Strategy::start(
        executor.clone(),
        provider.clone(),
        block(address),
        StrategyConfig::new()
            .init_blocks(0)
            .max_blocks(3)
            .slots_per_block(1)
            .period(Duration::from_millis(100))
            .max_idle_time(Duration::from_millis(500)),
    );
    let work = Function::from_source(WORK, "work");
    let handles = executor.submit_batch(&work, (0..30_i64).map(|i| (i, 0.1)));
    let mut managers = std::collections::HashSet::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let (value, manager): (i64, u32) = handle.result().await.expect("task result");
        assert_eq!(value, i as i64);
        managers.insert(manager);
    }
    assert_eq!(
        managers.len(),
        3,
        "the backlog brought up max_blocks blocks"
    );

    // No work left: every block goes idle, is drained, and ends cleanly.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = strategy.changed().await;
        let ended = status
            .blocks
            .iter()
            .filter(|b| b.state == BlockState::Completed)
            .count();
        if ended == 3 && status.managers == 0 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "idle blocks were not released: {status:#?}"
        );
    };
    assert!(
        status
            .blocks
            .iter()
            .all(|b| b.reason.as_deref() == Some("idle")),
        "{status:#?}"
    );
    assert!(status.last_error.is_none(), "{status:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_replaced_before_their_walltime_and_no_task_fails() {
    let (executor, address) = endpoint().await;
    let provider = Arc::new(LocalProvider::new().grace_period(Duration::from_millis(200)));
    let walltime = Duration::from_secs(3);
    let mut strategy = Strategy::start(
        executor.clone(),
        provider.clone(),
        block(address).walltime(walltime),
        StrategyConfig::new()
            .init_blocks(1)
            .min_blocks(1)
            .max_blocks(2)
            .slots_per_block(1)
            .period(Duration::from_millis(100))
            .max_idle_time(Duration::from_secs(60))
            .walltime(walltime, Duration::from_millis(1500)),
    );
    // Work for about three walltimes, with no retries allowed: a task killed by a walltime
    // would fail the test.
    let work = Function::from_source(WORK, "work");
    let started = Instant::now();
    let mut managers = std::collections::HashSet::new();
    let mut i = 0_i64;
    while started.elapsed() < walltime * 3 {
        let (value, manager): (i64, u32) = executor
            .submit(&work, (i, 0.05))
            .result()
            .await
            .expect("no task fails");
        assert_eq!(value, i);
        managers.insert(manager);
        i += 1;
    }
    assert!(
        managers.len() >= 2,
        "blocks were replaced as their walltime came: {managers:?}"
    );
    let status = strategy.changed().await;
    assert!(
        status
            .blocks
            .iter()
            .any(|b| b.draining || b.state.is_finished()),
        "an expiring block was drained: {status:#?}"
    );
    strategy.stop(true).await;
}
