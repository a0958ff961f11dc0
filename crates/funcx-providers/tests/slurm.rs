//! The Slurm provider against a real Slurm (`bash scripts/infra/slurm-up.sh`; the
//! project's `scripts/test` runs it first): real `sbatch`, `squeue`, `scancel`, and an
//! endpoint whose blocks are real Slurm jobs running real `funcx-manager` processes.
//!
//! The elastic strategy scales real Slurm blocks out and in, and drains a block before its
//! walltime. A walltime that Slurm itself enforces is not waited for: its smallest limit is
//! one minute (enforced up to a minute late), too slow for a test; the `TIMEOUT` state's
//! mapping is unit-tested on mocked `squeue` output, and the LocalProvider's enforced walltime
//! is tested with real managers in `crates/funcx-python/tests/strategy.rs`.
#![cfg(unix)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod common;

use common::{manager_binary, TempDir};
use funcx_core::{BlockId, BlockRequest, BlockState, Executor, Function, ManagerCommand, Provider};
use funcx_providers::{SlurmConfig, SlurmProvider};
use funcx_transport::remote::{AgentConfig, EndpointAgent};
use funcx_transport::TcpTransport;

/// Generous: Slurm starts a job within about a second here; this only matters when
/// something is broken.
const LIMIT: Duration = Duration::from_secs(60);

const TOKEN: &str = "slurm-test-token";

/// The node has 2 CPUs, so the tests take turns rather than queue behind each other's jobs.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Fails (not skips) when there is no Slurm: a green run must mean the provider was tested.
fn require_slurm() {
    let found = std::process::Command::new("sbatch")
        .arg("--version")
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "Slurm is not running here: run bash scripts/infra/slurm-up.sh first"
    );
}

/// Cancels the blocks it holds when dropped, so a failed test leaves no job behind.
struct Jobs(Vec<BlockId>);

impl Drop for Jobs {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = std::process::Command::new("scancel")
                .arg(id.as_str())
                .status();
        }
    }
}

fn provider(dir: &TempDir) -> SlurmProvider {
    // Small memory, so the node's memory never keeps a second block waiting.
    SlurmProvider::new(SlurmConfig::new().mem("1G").scripts_dir(dir.path()))
}

async fn state_of(provider: &SlurmProvider, id: &BlockId) -> BlockState {
    let statuses = provider
        .status(std::slice::from_ref(id))
        .await
        .expect("status");
    assert_eq!(statuses.len(), 1);
    assert_eq!(&statuses[0].id, id);
    statuses[0].state.clone()
}

async fn wait_for_state(
    provider: &SlurmProvider,
    dir: &TempDir,
    id: &BlockId,
    done: impl Fn(&BlockState) -> bool,
) -> BlockState {
    let result = tokio::time::timeout(LIMIT, async {
        loop {
            let state = state_of(provider, id).await;
            if done(&state) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    match result {
        Ok(state) => state,
        Err(_) => panic!(
            "block {id} did not reach the expected state in {LIMIT:?}; now {}; logs:\n{}",
            state_of(provider, id).await,
            dir.logs()
        ),
    }
}

/// `sh -c <script> sh <args...>`.
fn shell(script: &str, args: &[&str]) -> ManagerCommand {
    ManagerCommand::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args.iter().copied())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_runs_with_its_identity_and_cancels() {
    require_slurm();
    let _turn = CLUSTER.lock().await;
    let dir = TempDir::new("identity");
    let provider = provider(&dir);
    let marker = dir.path().join("identity");
    let marker_arg = marker.to_string_lossy().into_owned();
    // Written whole (mv), then the "manager" idles until cancelled.
    let command = shell(
        "printf '%s %s %s' \"$FUNCX_BLOCK_ID\" \"$FUNCX_NODE_INDEX\" \"$GREETING\" > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"; exec sleep 300",
        &[&marker_arg],
    )
    .env("GREETING", "it's a test");
    let request = BlockRequest::new(command).walltime(Duration::from_secs(600));
    let id = provider.submit(&request).await.expect("submit");
    let jobs = Jobs(vec![id.clone()]);
    assert!(id.as_str().chars().all(|c| c.is_ascii_digit()), "{id}");

    wait_for_state(&provider, &dir, &id, |s| *s == BlockState::Running).await;
    let written = tokio::time::timeout(LIMIT, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&marker) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the block never wrote its identity; logs:\n{}", dir.logs()));
    assert_eq!(written, format!("{id} 0 it's a test"));

    provider.cancel(&id).await.expect("cancel");
    let state = wait_for_state(&provider, &dir, &id, BlockState::is_finished).await;
    assert_eq!(state, BlockState::Cancelled);
    // Cancelling again, once it ended, is fine.
    provider
        .cancel(&id)
        .await
        .expect("cancel a cancelled block");
    drop(jobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_exits_3_failed_with_its_exit_code() {
    require_slurm();
    let _turn = CLUSTER.lock().await;
    let dir = TempDir::new("exit3");
    let provider = provider(&dir);
    let id = provider
        .submit(&BlockRequest::new(shell("exit 3", &[])))
        .await
        .expect("submit");
    let _jobs = Jobs(vec![id.clone()]);
    let state = wait_for_state(&provider, &dir, &id, BlockState::is_finished).await;
    match &state {
        BlockState::Failed(why) => assert!(why.contains("exit code 3"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_partition_is_rejected_with_slurms_reason() {
    require_slurm();
    let dir = TempDir::new("partition");
    let provider = SlurmProvider::new(
        SlurmConfig::new()
            .partition("no-such-partition")
            .scripts_dir(dir.path()),
    );
    let error = provider
        .submit(&BlockRequest::new(shell("true", &[])))
        .await
        .expect_err("an unknown partition");
    assert!(error.is_rejected(), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("sbatch rejected the job") && text.contains("invalid partition"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_jobs_are_unknown_and_cancel_fine() {
    require_slurm();
    let dir = TempDir::new("unknown");
    let provider = provider(&dir);
    let never = BlockId::new("987654321");
    match state_of(&provider, &never).await {
        BlockState::Unknown(why) => assert!(why.contains("987654321"), "{why}"),
        other => panic!("expected unknown, got {other:?}"),
    }
    provider
        .cancel(&never)
        .await
        .expect("Slurm cannot tell it from a forgotten job");
}

/// Returns its argument and the block of the manager whose worker ran it.
const WHERE: &str = "import os, time\n\ndef where(i, pause=0.0):\n    time.sleep(pause)\n    return (i * i, os.environ.get('FUNCX_BLOCK_ID', '?'))\n";

async fn wait_for_managers(executor: &Executor, dir: &TempDir, count: usize) {
    let attached = tokio::time::timeout(LIMIT, async {
        while executor.stats().await.managers != count {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        attached.is_ok(),
        "{count} managers did not attach in {LIMIT:?} (now {}); logs:\n{}",
        executor.stats().await.managers,
        dir.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_runs_tasks_on_slurm_blocks_and_survives_a_cancelled_block() {
    require_slurm();
    let binary = manager_binary();
    let _turn = CLUSTER.lock().await;
    let dir = TempDir::new("endpoint");

    let executor = Executor::builder()
        .retries_on_worker_death(1)
        .start_without_workers();
    let agent = EndpointAgent::new(
        executor.clone(),
        AgentConfig {
            heartbeat_period: Duration::from_millis(200),
            heartbeat_threshold: Duration::from_secs(3),
            hello_timeout: Duration::from_secs(10),
        },
    );
    let acceptor = TcpTransport::builder()
        .token(TOKEN)
        .build()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("listen");
    let address = acceptor.local_addr();
    tokio::spawn(agent.serve(acceptor));

    let provider = provider(&dir);
    let manager = ManagerCommand::new(&binary)
        .args(["--endpoint", &address.to_string(), "--workers", "1"])
        .args(["--give-up-after", "30"])
        .env("FUNCX_TOKEN", TOKEN)
        .env("RUST_LOG", "warn");
    let request = BlockRequest::new(manager).walltime(Duration::from_secs(600));

    let a = provider.submit(&request).await.expect("submit block a");
    let mut jobs = Jobs(vec![a.clone()]);
    wait_for_managers(&executor, &dir, 1).await;

    let f = Function::from_source(WHERE, "where");
    let handles = executor.submit_batch(&f, (0..100_i64).map(|i| (i,)));
    for (i, handle) in handles.into_iter().enumerate() {
        let (square, block) = handle.result::<(i64, String)>().await.expect("task result");
        assert_eq!(square, (i * i) as i64);
        assert_eq!(block, a.as_str(), "the worker sees its manager's block id");
    }

    // A second block, then cancel the first while it holds tasks: they run again on the
    // second block's manager, and none is lost.
    let b = provider.submit(&request).await.expect("submit block b");
    jobs.0.push(b.clone());
    wait_for_managers(&executor, &dir, 2).await;
    let handles = executor.submit_batch(&f, (0..100_i64).map(|i| (i, 0.05)));
    let in_flight = tokio::time::timeout(LIMIT, async {
        while executor.stats().await.in_flight > 80 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(in_flight.is_ok(), "the tasks did not start running");
    provider.cancel(&a).await.expect("cancel block a");

    let mut blocks = std::collections::HashSet::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let result = tokio::time::timeout(LIMIT, handle.result::<(i64, String)>())
            .await
            .unwrap_or_else(|_| panic!("task {i} hung; logs:\n{}", dir.logs()));
        let (square, block) =
            result.unwrap_or_else(|e| panic!("task {i} was lost with block a: {e}"));
        assert_eq!(square, (i * i) as i64);
        blocks.insert(block);
    }
    assert!(blocks.contains(b.as_str()), "block b ran tasks: {blocks:?}");
    let state = wait_for_state(&provider, &dir, &a, BlockState::is_finished).await;
    assert_eq!(state, BlockState::Cancelled);
    assert_eq!(state_of(&provider, &b).await, BlockState::Running);

    // Draining the endpoint stops b's manager, so b completes on its own.
    executor.shutdown().await;
    let state = wait_for_state(&provider, &dir, &b, BlockState::is_finished).await;
    assert_eq!(state, BlockState::Completed, "logs:\n{}", dir.logs());
    drop(jobs);
}

/// An endpoint on 127.0.0.1 with a token, and the manager command that dials it.
async fn endpoint(binary: &Path, retries: u32) -> (Executor, ManagerCommand) {
    let executor = Executor::builder()
        .retries_on_worker_death(retries)
        .start_without_workers();
    let agent = EndpointAgent::new(
        executor.clone(),
        AgentConfig {
            heartbeat_period: Duration::from_millis(200),
            heartbeat_threshold: Duration::from_secs(3),
            hello_timeout: Duration::from_secs(10),
        },
    );
    let acceptor = TcpTransport::builder()
        .token(TOKEN)
        .build()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("listen");
    let address = acceptor.local_addr();
    tokio::spawn(agent.serve(acceptor));
    let manager = ManagerCommand::new(binary)
        .args(["--endpoint", &address.to_string(), "--workers", "1"])
        .args(["--give-up-after", "30"])
        .env("FUNCX_TOKEN", TOKEN)
        .env("RUST_LOG", "warn");
    (executor, manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strategy_grows_and_releases_slurm_blocks() {
    require_slurm();
    let binary = manager_binary();
    let _turn = CLUSTER.lock().await;
    let dir = TempDir::new("strategy");
    let (executor, manager) = endpoint(&binary, 0).await;
    let slurm: std::sync::Arc<dyn Provider> = std::sync::Arc::new(provider(&dir));
    let mut strategy = funcx_core::Strategy::start(
        executor.clone(),
        slurm,
        BlockRequest::new(manager).walltime(Duration::from_secs(600)),
        funcx_core::StrategyConfig::new()
            .init_blocks(0)
            .max_blocks(2)
            .slots_per_block(1)
            .period(Duration::from_millis(200))
            .max_idle_time(Duration::from_secs(1)),
    );

    // A backlog: the strategy asks Slurm for both blocks it may have.
    let f = Function::from_source(WHERE, "where");
    let handles = executor.submit_batch(&f, (0..40_i64).map(|i| (i, 0.1)));
    let mut blocks = std::collections::HashSet::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let (square, block) = handle.result::<(i64, String)>().await.expect("task result");
        assert_eq!(square, (i * i) as i64);
        blocks.insert(block);
    }
    assert_eq!(blocks.len(), 2, "both Slurm blocks ran tasks: {blocks:?}");

    // Idle: both are drained, their managers exit, and the jobs complete.
    let released = tokio::time::timeout(LIMIT, async {
        loop {
            let status = strategy.changed().await;
            let completed = status
                .blocks
                .iter()
                .filter(|b| b.state == BlockState::Completed && b.reason.as_deref() == Some("idle"))
                .count();
            if completed == 2 && status.managers == 0 {
                return status;
            }
        }
    })
    .await;
    let status = released
        .unwrap_or_else(|_| panic!("idle Slurm blocks were not released; logs:\n{}", dir.logs()));
    assert!(status.last_error.is_none(), "{status:#?}");
    strategy.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_near_its_walltime_is_drained_and_replaced_with_no_task_lost() {
    require_slurm();
    let binary = manager_binary();
    let _turn = CLUSTER.lock().await;
    let dir = TempDir::new("walltime");
    // No retries at all: a task killed by the walltime would fail the test.
    let (executor, manager) = endpoint(&binary, 0).await;
    let slurm: std::sync::Arc<dyn Provider> = std::sync::Arc::new(provider(&dir));
    // Slurm's smallest walltime is a minute; draining 52 s before it makes the block's
    // useful life about 8 s, so the test sees a replacement without waiting a minute.
    let walltime = Duration::from_secs(60);
    let strategy = funcx_core::Strategy::start(
        executor.clone(),
        slurm,
        BlockRequest::new(manager).walltime(walltime),
        funcx_core::StrategyConfig::new()
            .init_blocks(1)
            .min_blocks(1)
            .max_blocks(2)
            .slots_per_block(1)
            .period(Duration::from_millis(200))
            .max_idle_time(Duration::from_secs(120))
            .walltime(walltime, Duration::from_secs(52)),
    );
    wait_for_managers(&executor, &dir, 1).await;
    let f = Function::from_source(WHERE, "where");
    let mut blocks = std::collections::HashSet::new();
    let started = std::time::Instant::now();
    let mut i = 0_i64;
    while blocks.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(50),
            "no replacement block took over before the walltime; logs:\n{}",
            dir.logs()
        );
        let (square, block) = executor
            .submit(&f, (i, 0.05))
            .result::<(i64, String)>()
            .await
            .expect("no task fails across the drain");
        assert_eq!(square, i * i);
        blocks.insert(block);
        i += 1;
    }
    let status = strategy.status();
    assert!(
        status.blocks.iter().any(|b| b.draining),
        "the expiring block was drained: {status:#?}"
    );
    executor.shutdown().await;
    strategy.stop(true).await;
}
