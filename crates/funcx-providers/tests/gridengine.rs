//! The Grid Engine provider against a real Son of Grid Engine on this machine
//! (`bash scripts/infra/sge-up.sh` brings it up; CI runs it before the tests), and an
//! endpoint whose block is a real Grid Engine job running a real `funcx-manager`.
#![cfg(unix)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod common;

use common::{manager_binary, TempDir};
use funcx_core::{BlockId, BlockRequest, BlockState, Executor, Function, ManagerCommand, Provider};
use funcx_providers::{GridEngineConfig, GridEngineProvider};
use funcx_transport::remote::{AgentConfig, EndpointAgent};
use funcx_transport::TcpTransport;

/// Grid Engine's own commands: `/usr/bin/qsub` from gridengine-client. Not whatever `qsub`
/// is first on `PATH`: the PBS wrappers over Slurm (/opt/slurm-torque/bin) have the same names.
const SGE_BIN: &str = "/usr/bin";

/// Bounds for waits on the scheduler (a job starts within ~1 s here; two slots are shared
/// by the tests that run at once). They only matter when something is broken.
const LIMIT: Duration = Duration::from_secs(90);

const TOKEN: &str = "sge-test-token";

/// A provider that runs Grid Engine's own binaries, writing into `dir`; fails the test
/// (rather than skipping it) when Grid Engine is not installed.
fn provider(dir: &Path) -> GridEngineProvider {
    let qsub = Path::new(SGE_BIN).join("qsub");
    assert!(
        qsub.exists(),
        "Grid Engine is not running here: run bash scripts/infra/sge-up.sh first \
         ({} is missing)",
        qsub.display()
    );
    GridEngineProvider::new(
        GridEngineConfig::new()
            .commands_dir(SGE_BIN)
            .command_env("SGE_ROOT", "/var/lib/gridengine")
            .command_env("SGE_CELL", "default")
            .scripts_dir(dir)
            .job_name("funcx-test"),
    )
}

async fn state_of(provider: &GridEngineProvider, id: &BlockId) -> BlockState {
    let mut statuses = provider
        .status(std::slice::from_ref(id))
        .await
        .expect("status");
    assert_eq!(statuses.len(), 1);
    assert_eq!(&statuses[0].id, id);
    statuses.remove(0).state
}

/// Polls until the block's state satisfies `done`, for at most [`LIMIT`].
async fn wait_for_state(
    provider: &GridEngineProvider,
    id: &BlockId,
    done: impl Fn(&BlockState) -> bool,
) -> BlockState {
    let mut last = BlockState::Unknown("never asked".into());
    let reached = tokio::time::timeout(LIMIT, async {
        loop {
            last = state_of(provider, id).await;
            if done(&last) {
                return last.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match reached {
        Ok(state) => state,
        Err(_) => panic!("block {id} did not reach the expected state in {LIMIT:?}; last {last}"),
    }
}

/// Polls until `path` exists (the job writes it with `mv`, so it is whole).
async fn read_when_written(path: &Path) -> String {
    tokio::time::timeout(LIMIT, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} was not written in {LIMIT:?}", path.display()))
}

/// True if process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X'))
}

/// `sh -c <script> sh <dir>`: the script sees the test's directory as `$1`.
fn shell(script: &str, dir: &Path) -> ManagerCommand {
    ManagerCommand::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_block_knows_its_id_and_is_cancelled() {
    let dir = TempDir::new("cancel");
    let provider = provider(dir.path());
    assert_eq!(provider.name(), "gridengine");
    let manager = shell(
        r#"echo "$FUNCX_BLOCK_ID $FUNCX_NODE_INDEX $$" > "$1/who.tmp" && mv "$1/who.tmp" "$1/who"; exec sleep 300"#,
        dir.path(),
    );
    let request = BlockRequest::new(manager).walltime(Duration::from_secs(600));
    let id = provider.submit(&request).await.expect("submit");
    assert!(id.as_str().bytes().all(|b| b.is_ascii_digit()), "{id}");

    let who = read_when_written(&dir.path().join("who")).await;
    let fields: Vec<&str> = who.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{who}");
    assert_eq!(fields[0], id.as_str(), "FUNCX_BLOCK_ID is the job id");
    assert_eq!(fields[1], "0", "FUNCX_NODE_INDEX");
    let pid: u32 = fields[2].parse().expect("pid");
    assert!(alive(pid));
    assert_eq!(
        wait_for_state(&provider, &id, |s| *s != BlockState::Pending).await,
        BlockState::Running
    );

    provider.cancel(&id).await.expect("cancel");
    assert_eq!(
        wait_for_state(&provider, &id, BlockState::is_finished).await,
        BlockState::Cancelled
    );
    tokio::time::timeout(LIMIT, async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the manager (pid {pid}) outlived its cancelled job"));
    // Cancelling a finished block is fine and changes nothing.
    provider.cancel(&id).await.expect("cancel again");
    assert_eq!(state_of(&provider, &id).await, BlockState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_exits_3_fails_saying_so() {
    let dir = TempDir::new("exit3");
    let provider = provider(dir.path());
    let request = BlockRequest::new(shell("exit 3", dir.path()));
    let id = provider.submit(&request).await.expect("submit");
    match wait_for_state(&provider, &id, BlockState::is_finished).await {
        BlockState::Failed(reason) => assert!(reason.contains("exit status 3"), "{reason}"),
        other => panic!("expected a failure, got {other}"),
    }
    // A job Grid Engine no longer knows cancels as Ok, and stays failed.
    provider.cancel(&id).await.expect("cancel a finished job");
    assert!(matches!(
        state_of(&provider, &id).await,
        BlockState::Failed(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_queue_is_a_clear_submit_error() {
    let dir = TempDir::new("queue");
    let qsub = Path::new(SGE_BIN).join("qsub");
    assert!(
        qsub.exists(),
        "Grid Engine is not running here: run bash scripts/infra/sge-up.sh first"
    );
    let provider = GridEngineProvider::new(
        GridEngineConfig::new()
            .commands_dir(SGE_BIN)
            .command_env("SGE_ROOT", "/var/lib/gridengine")
            .command_env("SGE_CELL", "default")
            .scripts_dir(dir.path())
            .queue("no-such-queue"),
    );
    let error = provider
        .submit(&BlockRequest::new(ManagerCommand::new("true")))
        .await
        .expect_err("an unknown queue is refused");
    assert!(error.is_rejected(), "{error}");
    let text = error.to_string();
    assert!(text.contains("unknown queue \"no-such-queue\""), "{text}");
}

const SQUARE: &str = "def square(x):\n    return x * x\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_runs_python_tasks_on_a_grid_engine_block() {
    let manager = manager_binary();
    let dir = TempDir::new("endpoint");
    let provider = provider(dir.path());

    let executor = Executor::builder().start_without_workers();
    let agent = EndpointAgent::new(
        executor.clone(),
        AgentConfig {
            heartbeat_period: Duration::from_millis(200),
            heartbeat_threshold: Duration::from_secs(10),
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

    let command = ManagerCommand::new(manager)
        .args(["--endpoint", &address.to_string(), "--workers", "1"])
        .args(["--give-up-after", "30"])
        .env("FUNCX_TOKEN", TOKEN)
        .env("RUST_LOG", "warn");
    let id = provider
        .submit(&BlockRequest::new(command).walltime(Duration::from_secs(600)))
        .await
        .expect("submit");

    let attached = tokio::time::timeout(LIMIT, async {
        while executor.stats().await.managers != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if attached.is_err() {
        let state = state_of(&provider, &id).await;
        let logs: Vec<String> = std::fs::read_dir(dir.path())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| {
                        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                        format!("{}:\n{text}", entry.path().display())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let _ = provider.cancel(&id).await;
        panic!(
            "no manager attached in {LIMIT:?}; block {id} is {state}; files:\n{}",
            logs.join("\n")
        );
    }
    assert_eq!(state_of(&provider, &id).await, BlockState::Running);

    let square = Function::from_source(SQUARE, "square");
    let handles = executor.submit_batch(&square, (0..50_i64).map(|x| (x,)));
    for (x, handle) in (0..50_i64).zip(handles) {
        let value: i64 = tokio::time::timeout(LIMIT, handle.result::<i64>())
            .await
            .expect("a result in time")
            .expect("a result");
        assert_eq!(value, x * x);
    }

    // Shutting the endpoint down drains the manager, which exits 0: the job completes.
    executor.shutdown().await;
    assert_eq!(
        wait_for_state(&provider, &id, BlockState::is_finished).await,
        BlockState::Completed
    );
}
