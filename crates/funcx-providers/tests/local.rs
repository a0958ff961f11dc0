//! The local provider on real processes.
#![cfg(unix)]

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::TempDir;
use funcx_core::{
    BlockId, BlockRequest, BlockState, BlockStatus, ManagerCommand, ManagerLayout, Provider,
};
use funcx_providers::LocalProvider;

/// Generous bounds: they only matter when something is broken.
const LIMIT: Duration = Duration::from_secs(10);

/// `sh -c <script> sh <args...>`: the script sees `args` as `$1`, `$2`, ...
fn shell(script: &str, args: &[&Path]) -> ManagerCommand {
    ManagerCommand::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args.iter().map(|arg| arg.as_os_str()))
}

async fn status_of(provider: &LocalProvider, id: &BlockId) -> BlockStatus {
    let mut statuses = provider
        .status(std::slice::from_ref(id))
        .await
        .expect("status");
    assert_eq!(statuses.len(), 1);
    statuses.remove(0)
}

/// Polls until the block's state satisfies `done`, for at most [`LIMIT`].
async fn wait_for_state(
    provider: &LocalProvider,
    id: &BlockId,
    done: impl Fn(&BlockState) -> bool,
) -> BlockState {
    tokio::time::timeout(LIMIT, async {
        loop {
            let status = status_of(provider, id).await;
            if done(&status.state) {
                return status.state;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("block {id} did not reach the expected state in {LIMIT:?}"))
}

/// Polls until `path` exists (scripts write it with `mv`, so it is whole), for at most
/// [`LIMIT`].
async fn read_when_written(path: &Path) -> String {
    tokio::time::timeout(LIMIT, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} was not written in {LIMIT:?}", path.display()))
}

/// True if process `pid` exists and is not a zombie (a zombie has exited; only its parent,
/// possibly a PID 1 that does not reap, still has to collect it).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X'))
}

async fn wait_until_gone(pids: &[u32]) {
    tokio::time::timeout(LIMIT, async {
        while pids.iter().any(|&pid| alive(pid)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("processes {pids:?} still alive after {LIMIT:?}"));
}

/// Each node writes its shell's pid and its `sleep`'s pid to `$1/pids-<node>`, and its
/// identity to `$1/node-<node>`, then waits for the sleep.
const SLEEPING_NODE: &str = r#"
echo "node $FUNCX_NODE_INDEX of $FUNCX_BLOCK_ID"
sleep 30 &
echo "node $FUNCX_NODE_INDEX of $FUNCX_BLOCK_ID" > "$1/node-$FUNCX_NODE_INDEX.tmp"
mv "$1/node-$FUNCX_NODE_INDEX.tmp" "$1/node-$FUNCX_NODE_INDEX"
echo "$$ $!" > "$1/pids-$FUNCX_NODE_INDEX.tmp"
mv "$1/pids-$FUNCX_NODE_INDEX.tmp" "$1/pids-$FUNCX_NODE_INDEX"
wait
"#;

async fn pids_of_node(dir: &Path, node: usize) -> Vec<u32> {
    read_when_written(&dir.join(format!("pids-{node}")))
        .await
        .split_whitespace()
        .map(|pid| pid.parse().expect("a pid"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_node_block_runs_sees_its_identity_and_is_cancelled() {
    let dir = TempDir::new("cancel");
    let provider = LocalProvider::new();
    assert_eq!(provider.name(), "local");
    let request = BlockRequest::new(shell(SLEEPING_NODE, &[dir.path()])).nodes(2);
    let id = provider.submit(&request).await.expect("submit");
    assert!(id.as_str().starts_with("local-"), "{id}");

    for node in 0..2 {
        let identity = read_when_written(&dir.path().join(format!("node-{node}"))).await;
        assert_eq!(identity.trim(), format!("node {node} of {id}"));
    }
    let mut pids = pids_of_node(dir.path(), 0).await;
    pids.extend(pids_of_node(dir.path(), 1).await);
    assert_eq!(pids.len(), 4);
    assert_eq!(status_of(&provider, &id).await.state, BlockState::Running);

    let started = Instant::now();
    provider.cancel(&id).await.expect("cancel");
    // The shells die of SIGTERM at once; cancel does not wait for the grace period.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status_of(&provider, &id).await.state, BlockState::Cancelled);
    // The shells and the sleeps they started (same process group) are gone.
    wait_until_gone(&pids).await;

    // Cancelling again is fine and changes nothing.
    provider.cancel(&id).await.expect("second cancel");
    assert_eq!(status_of(&provider, &id).await.state, BlockState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_exits_with_3_fails_the_block() {
    let provider = LocalProvider::new();
    // Node 0 exits 0, node 1 exits 3.
    let request = BlockRequest::new(shell("exit $((FUNCX_NODE_INDEX * 3))", &[])).nodes(2);
    let id = provider.submit(&request).await.expect("submit");
    let state = wait_for_state(&provider, &id, BlockState::is_finished).await;
    assert_eq!(
        state,
        BlockState::Failed("node 1 exited with exit code 3".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_whose_nodes_exit_0_completes_and_stays_completed_when_cancelled() {
    let provider = LocalProvider::new();
    let id = provider
        .submit(&BlockRequest::new(shell("exit 0", &[])).nodes(3))
        .await
        .expect("submit");
    let state = wait_for_state(&provider, &id, BlockState::is_finished).await;
    assert_eq!(state, BlockState::Completed);
    provider
        .cancel(&id)
        .await
        .expect("cancel of a finished block");
    assert_eq!(status_of(&provider, &id).await.state, BlockState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_reported_with_its_signal() {
    let provider = LocalProvider::new();
    let id = provider
        .submit(&BlockRequest::new(shell("kill -s KILL $$", &[])))
        .await
        .expect("submit");
    let state = wait_for_state(&provider, &id, BlockState::is_finished).await;
    let BlockState::Failed(reason) = state else {
        panic!("expected a failure, got {state:?}");
    };
    assert!(
        reason.starts_with("node 0 was killed by signal 9"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_walltime_ends_the_block_as_failed() {
    let dir = TempDir::new("walltime");
    let provider = LocalProvider::new();
    let request =
        BlockRequest::new(shell(SLEEPING_NODE, &[dir.path()])).walltime(Duration::from_secs(1));
    let started = Instant::now();
    let id = provider.submit(&request).await.expect("submit");
    let pids = pids_of_node(dir.path(), 0).await;
    assert_eq!(status_of(&provider, &id).await.state, BlockState::Running);

    let state = wait_for_state(&provider, &id, BlockState::is_finished).await;
    let elapsed = started.elapsed();
    assert_eq!(state, BlockState::Failed("walltime of 1s expired".into()));
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    wait_until_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let dir = TempDir::new("grace");
    let provider = LocalProvider::new().grace_period(Duration::from_millis(300));
    // `trap '' TERM` makes the shell and the sleep it starts ignore SIGTERM.
    let script = format!("trap '' TERM\n{SLEEPING_NODE}");
    let id = provider
        .submit(&BlockRequest::new(shell(&script, &[dir.path()])))
        .await
        .expect("submit");
    let pids = pids_of_node(dir.path(), 0).await;

    let started = Instant::now();
    provider.cancel(&id).await.expect("cancel");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(status_of(&provider, &id).await.state, BlockState::Cancelled);
    wait_until_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_does_not_exist_fails_submit() {
    let provider = LocalProvider::new();
    let request = BlockRequest::new(ManagerCommand::new("/nonexistent/funcx-manager")).nodes(2);
    let error = provider.submit(&request).await.unwrap_err();
    assert!(error.is_io(), "{error}");
    let message = error.to_string();
    assert!(message.contains("/nonexistent/funcx-manager"), "{message}");
    assert!(message.contains("could not start node 0"), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_worker_init_a_missing_program_is_a_node_that_exits_127() {
    let provider = LocalProvider::new();
    let request =
        BlockRequest::new(ManagerCommand::new("/nonexistent/funcx-manager")).worker_init("true");
    let id = provider.submit(&request).await.expect("submit");
    let state = wait_for_state(&provider, &id, BlockState::is_finished).await;
    assert_eq!(
        state,
        BlockState::Failed("node 0 exited with exit code 127".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_init_exports_reach_the_manager() {
    let dir = TempDir::new("init");
    let provider = LocalProvider::new();
    let manager = shell(
        r#"echo "$GREETING $FUNCX_NODE_INDEX $1" > "$2/out.tmp" && mv "$2/out.tmp" "$2/out""#,
        &[Path::new("with-args"), dir.path()],
    )
    .env("UNUSED", "x");
    let request = BlockRequest::new(manager).worker_init("GREETING=hello\nexport GREETING");
    let id = provider.submit(&request).await.expect("submit");
    let state = wait_for_state(&provider, &id, BlockState::is_finished).await;
    assert_eq!(state, BlockState::Completed);
    let out = read_when_written(&dir.path().join("out")).await;
    assert_eq!(out.trim(), "hello 0 with-args");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_command_environment_is_passed_on() {
    let dir = TempDir::new("env");
    let provider = LocalProvider::new();
    let manager = shell(
        r#"echo "$FUNCX_ENDPOINT" > "$1/out.tmp" && mv "$1/out.tmp" "$1/out""#,
        &[dir.path()],
    )
    .env("FUNCX_ENDPOINT", "10.0.0.1:9000")
    // The provider's identity wins over the command's.
    .env("FUNCX_BLOCK_ID", "forged");
    let id = provider
        .submit(&BlockRequest::new(manager))
        .await
        .expect("submit");
    assert_eq!(
        wait_for_state(&provider, &id, BlockState::is_finished).await,
        BlockState::Completed
    );
    let out = read_when_written(&dir.path().join("out")).await;
    assert_eq!(out.trim(), "10.0.0.1:9000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_unknown_and_cannot_be_cancelled() {
    let provider = LocalProvider::new();
    let id = provider
        .submit(&BlockRequest::new(shell("exit 0", &[])))
        .await
        .expect("submit");
    let asked = [BlockId::new("nope"), id.clone(), BlockId::new("local-99")];
    let statuses = provider.status(&asked).await.expect("status");
    assert_eq!(statuses.len(), 3);
    for (status, asked) in statuses.iter().zip(&asked) {
        assert_eq!(&status.id, asked);
    }
    let BlockState::Unknown(reason) = &statuses[0].state else {
        panic!("expected unknown, got {:?}", statuses[0].state);
    };
    assert!(reason.contains("no local block nope"), "{reason}");
    assert!(matches!(statuses[2].state, BlockState::Unknown(_)));
    assert!(!statuses[0].state.is_finished());

    let error = provider
        .cancel(&BlockId::new("local-99"))
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error}");
    assert_eq!(error.to_string(), "no block local-99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_nodes_are_rejected() {
    let provider = LocalProvider::new();
    let error = provider
        .submit(&BlockRequest::new(shell("exit 0", &[])).nodes(0))
        .await
        .unwrap_err();
    assert!(error.is_rejected(), "{error}");
}

/// Local processes run in no batch job, so one manager for the whole block could not list
/// its nodes: refused, and nothing runs (the command would have written its file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_manager_per_block_is_rejected_and_starts_nothing() {
    let dir = TempDir::new("per-block");
    let marker = dir.path().join("started");
    let provider = LocalProvider::new();
    let request =
        BlockRequest::new(shell("touch \"$1\"", &[&marker])).layout(ManagerLayout::PerBlock);
    let error = provider.submit(&request).await.unwrap_err();
    assert!(error.is_rejected(), "{error}");
    assert!(
        error.to_string().contains("local processes run in none"),
        "{error}"
    );
    assert!(!marker.exists(), "a rejected block started its command");
    let started = provider
        .submit(&request.layout(ManagerLayout::PerNode))
        .await
        .expect("per node");
    wait_for_state(&provider, &started, |state| state == &BlockState::Completed).await;
    assert!(marker.exists(), "the same command runs per node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_provider_kills_its_blocks() {
    let dir = TempDir::new("drop");
    let provider = LocalProvider::new();
    provider
        .submit(&BlockRequest::new(shell(SLEEPING_NODE, &[dir.path()])).nodes(2))
        .await
        .expect("submit");
    let mut pids = pids_of_node(dir.path(), 0).await;
    pids.extend(pids_of_node(dir.path(), 1).await);
    assert!(pids.iter().all(|&pid| alive(pid)));
    drop(provider);
    wait_until_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_works_behind_dyn() {
    let provider: Box<dyn Provider> = Box::new(LocalProvider::new());
    let id = provider
        .submit(&BlockRequest::new(shell("exit 0", &[])))
        .await
        .expect("submit");
    let status = tokio::time::timeout(LIMIT, async {
        loop {
            let status = provider
                .status(std::slice::from_ref(&id))
                .await
                .expect("status");
            if status[0].state.is_finished() {
                return status[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("finished in time");
    assert_eq!(status.state, BlockState::Completed);
    assert!(status.since <= std::time::SystemTime::now());
}

/// One event logged under `funcx::block`: (block, node, stream, message).
type Line = (String, u64, String, String);

/// A `tracing` layer that keeps the output lines of blocks.
#[derive(Clone, Default)]
struct CapturedOutput(std::sync::Arc<std::sync::Mutex<Vec<Line>>>);

impl CapturedOutput {
    fn lines(&self) -> Vec<Line> {
        self.0.lock().map(|lines| lines.clone()).unwrap_or_default()
    }
}

#[derive(Default)]
struct Fields {
    block: Option<String>,
    node: Option<u64>,
    stream: Option<String>,
    message: Option<String>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "block" => self.block = Some(format!("{value:?}")),
            "message" => self.message = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "stream" {
            self.stream = Some(value.to_owned());
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "node" {
            self.node = Some(value);
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CapturedOutput {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "funcx::block" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        // Output lines carry a stream; the provider's own messages do not.
        if let (Some(block), Some(node), Some(stream), Some(message)) =
            (fields.block, fields.node, fields.stream, fields.message)
        {
            if let Ok(mut lines) = self.0.lock() {
                lines.push((block, node, stream, message));
            }
        }
    }
}

// A current-thread runtime, so the tasks that forward output log on the thread where the
// capturing subscriber is installed.
#[tokio::test]
async fn output_is_logged_line_by_line_under_funcx_block() {
    use tracing_subscriber::layer::SubscriberExt;

    let captured = CapturedOutput::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let provider = LocalProvider::new();
    let script = r#"echo "first line"; printf 'second\r\nthird' ; echo "to stderr" >&2"#;
    let id = provider
        .submit(&BlockRequest::new(shell(script, &[])).nodes(2))
        .await
        .expect("submit");
    assert_eq!(
        wait_for_state(&provider, &id, BlockState::is_finished).await,
        BlockState::Completed
    );
    let lines = tokio::time::timeout(LIMIT, async {
        loop {
            let lines = captured.lines();
            if lines.len() >= 8 {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not all output was logged: {:?}", captured.lines()));
    for node in 0..2 {
        let of_node = |stream: &str| -> Vec<String> {
            lines
                .iter()
                .filter(|(block, n, s, _)| *block == id.as_str() && *n == node && s == stream)
                .map(|(_, _, _, message)| message.clone())
                .collect()
        };
        assert_eq!(of_node("stdout"), ["first line", "second", "third"]);
        assert_eq!(of_node("stderr"), ["to stderr"]);
    }
}
