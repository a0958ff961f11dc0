//! Blocks of managers started as processes on this machine.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use funcx_core::{
    BlockId, BlockRequest, BlockState, BlockStatus, Provider, ProviderError, WorkerExit,
    BLOCK_ID_ENV, NODE_INDEX_ENV,
};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};

use crate::toolkit::reject_per_block;

/// How long a block's processes get to exit after `SIGTERM` before they are killed.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for the processes to be gone after `SIGKILL` before giving up on them
/// (a process stuck in the kernel cannot be killed any faster).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How many finished blocks are remembered for [`Provider::status`]; older ones are forgotten
/// (and reported [`BlockState::Unknown`]), as a scheduler forgets old jobs, so that an
/// endpoint that runs for months does not grow without bound.
const RETAINED_FINISHED: usize = 1024;

/// Output lines longer than this are logged in pieces, so a process that never writes a
/// newline cannot make the provider buffer without bound.
const MAX_LINE: usize = 64 * 1024;

/// The `tracing` target under which the output of managers is logged.
const LOG_TARGET: &str = "funcx::block";

/// A [`Provider`] whose blocks are processes on this machine: one manager process per node.
///
/// Each node's manager runs in a process group of its own, with no stdin; what it writes to
/// stdout and stderr is logged line by line under the `tracing` target `funcx::block`, with
/// the block id and node index as fields. Block ids are `local-1`, `local-2`, ...
///
/// - A block is [`BlockState::Running`] from submit until its last process exits; then it is
///   [`BlockState::Completed`] if every node exited with status 0, and
///   [`BlockState::Failed`] naming the first node that did not ("node 1 exited with exit
///   code 3") otherwise. It is never [`BlockState::Pending`]: there is no queue.
/// - Cancelling sends `SIGTERM` to each node's process group, then `SIGKILL` after a grace
///   period ([`LocalProvider::grace_period`], 5 s by default); it returns once the processes
///   are gone, so the block is [`BlockState::Cancelled`] when it does.
/// - A walltime ends the block the same way when it expires, and the block reports
///   [`BlockState::Failed`] with "walltime of 30s expired", as a scheduler's job would.
/// - A program that cannot be started fails [`Provider::submit`] with an I/O
///   [`ProviderError`] naming it, and nothing is left running. With
///   [`BlockRequest::worker_init`] the program is started by `/bin/sh` instead, so a missing
///   program shows as a node that exited with code 127.
/// - Dropping the provider kills every block it started.
/// - A request for one manager for the whole block
///   ([`ManagerLayout::PerBlock`](funcx_core::ManagerLayout::PerBlock)) is
///   rejected: local processes run in no batch job, so such a manager would find no list of
///   the block's nodes to hold.
///
/// Must be used within a tokio runtime: each process is watched by a task of its own.
#[derive(Debug)]
pub struct LocalProvider {
    state: Arc<Mutex<State>>,
    grace: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// The number of the last block issued.
    issued: u64,
    blocks: HashMap<BlockId, Block>,
    /// Finished blocks, oldest first, so the oldest can be forgotten.
    finished: VecDeque<BlockId>,
}

#[derive(Debug)]
struct Block {
    nodes: Vec<Node>,
    /// Why the provider is ending (or ended) the block, if it did.
    ending: Option<Ending>,
    /// When the block entered its current state: submit, then the exit of its last process.
    since: SystemTime,
    /// Becomes true when the last process has exited.
    finished: watch::Sender<bool>,
}

#[derive(Debug)]
struct Node {
    /// The process id, which is also its process group id.
    pid: Option<u32>,
    /// How it ended, once it has.
    exit: Option<WorkerExit>,
    /// Tells the task that watches the process to kill it.
    kill: Arc<Notify>,
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Cancelled,
    Walltime(Duration),
}

impl Block {
    fn is_finished(&self) -> bool {
        self.nodes.iter().all(|node| node.exit.is_some())
    }

    fn state(&self) -> BlockState {
        if !self.is_finished() {
            return BlockState::Running;
        }
        match self.ending {
            Some(Ending::Cancelled) => BlockState::Cancelled,
            Some(Ending::Walltime(walltime)) => {
                BlockState::Failed(format!("walltime of {walltime:?} expired"))
            }
            None => {
                let mut failures =
                    self.nodes
                        .iter()
                        .enumerate()
                        .filter_map(|(index, node)| match node.exit {
                            Some(WorkerExit::Code(0)) | None => None,
                            Some(exit) => Some(describe_exit(index, exit)),
                        });
                match failures.next() {
                    None => BlockState::Completed,
                    Some(first) => match failures.count() {
                        0 => BlockState::Failed(first),
                        1 => BlockState::Failed(format!("{first} (and 1 more node failed)")),
                        more => {
                            BlockState::Failed(format!("{first} (and {more} more nodes failed)"))
                        }
                    },
                }
            }
        }
    }
}

fn describe_exit(index: usize, exit: WorkerExit) -> String {
    match exit {
        WorkerExit::Code(code) => format!("node {index} exited with exit code {code}"),
        WorkerExit::Signal(_) => format!("node {index} was killed by {exit}"),
        WorkerExit::Unknown => format!("node {index} ended with an unknown status"),
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is consistent after every statement; a panic elsewhere must not take the
    // provider down with it.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalProvider {
    /// A provider with the default grace period of 5 s.
    pub fn new() -> LocalProvider {
        LocalProvider {
            state: Arc::default(),
            grace: DEFAULT_GRACE,
        }
    }

    /// How long a block's processes get to exit after `SIGTERM` (on cancel or walltime)
    /// before they are killed with `SIGKILL`.
    pub fn grace_period(mut self, grace: Duration) -> LocalProvider {
        self.grace = grace;
        self
    }

    async fn start(&self, request: &BlockRequest) -> Result<BlockId, ProviderError> {
        request.check()?;
        reject_per_block("local processes", request)?;
        let id = {
            let mut state = lock(&self.state);
            state.issued += 1;
            BlockId::new(format!("local-{}", state.issued))
        };
        let program = request.command().program();
        let mut children = Vec::with_capacity(request.node_count());
        for index in 0..request.node_count() {
            match node_command(request, &id, index).spawn() {
                Ok(child) => children.push(child),
                Err(error) => {
                    // The nodes already started must not outlive a block that was never
                    // issued. Dropping them kills the processes (`kill_on_drop`); their
                    // groups are signalled first for anything they started.
                    let groups: Vec<u32> = children.iter().filter_map(Child::id).collect();
                    let _ = signal_groups(&groups, "KILL").await;
                    drop(children);
                    return Err(ProviderError::io(
                        format!(
                            "could not start node {index} of block {id} (`{}`)",
                            program.display()
                        ),
                        error,
                    ));
                }
            }
        }

        let (finished, finished_rx) = watch::channel(false);
        let nodes: Vec<Node> = children
            .iter()
            .map(|child| Node {
                pid: child.id(),
                exit: None,
                kill: Arc::new(Notify::new()),
            })
            .collect();
        let kills: Vec<Arc<Notify>> = nodes.iter().map(|node| node.kill.clone()).collect();
        lock(&self.state).blocks.insert(
            id.clone(),
            Block {
                nodes,
                ending: None,
                since: SystemTime::now(),
                finished,
            },
        );
        // The block is registered before its processes are watched, so every exit finds it.
        for (index, (mut child, kill)) in children.into_iter().zip(kills).enumerate() {
            if let Some(stdout) = child.stdout.take() {
                tokio::spawn(forward_output(stdout, id.clone(), index, "stdout"));
            }
            if let Some(stderr) = child.stderr.take() {
                tokio::spawn(forward_output(stderr, id.clone(), index, "stderr"));
            }
            tokio::spawn(watch_node(
                self.state.clone(),
                id.clone(),
                index,
                child,
                kill,
            ));
        }
        if let Some(walltime) = request.walltime_limit() {
            tokio::spawn(enforce_walltime(
                self.state.clone(),
                id.clone(),
                walltime,
                self.grace,
                finished_rx,
            ));
        }
        tracing::info!(
            target: LOG_TARGET,
            block = %id,
            "started block {id}: {} node(s) of `{}`",
            request.node_count(),
            program.display()
        );
        Ok(id)
    }

    fn statuses(&self, blocks: &[BlockId]) -> Vec<BlockStatus> {
        let state = lock(&self.state);
        blocks
            .iter()
            .map(|id| match state.blocks.get(id) {
                Some(block) => BlockStatus::new(id.clone(), block.state(), block.since),
                None => BlockStatus::new(
                    id.clone(),
                    BlockState::Unknown(format!(
                        "no local block {id}: never issued by this provider, or finished long \
                         ago and forgotten"
                    )),
                    SystemTime::now(),
                ),
            })
            .collect()
    }

    async fn stop(&self, id: &BlockId) -> Result<(), ProviderError> {
        let known = lock(&self.state).blocks.contains_key(id);
        if !known {
            // A block finished long ago and forgotten is fine to cancel; an id this provider
            // never issued is a mistake worth reporting.
            return if issued(&self.state, id) {
                Ok(())
            } else {
                Err(ProviderError::not_found(id.clone()))
            };
        }
        terminate(&self.state, id, Ending::Cancelled, self.grace).await;
        Ok(())
    }
}

impl Default for LocalProvider {
    fn default() -> LocalProvider {
        LocalProvider::new()
    }
}

impl Drop for LocalProvider {
    fn drop(&mut self) {
        // No manager outlives its provider: each watching task kills its process (and the
        // process's group) when told to.
        let state = lock(&self.state);
        for block in state.blocks.values() {
            for node in block.nodes.iter().filter(|node| node.exit.is_none()) {
                node.kill.notify_one();
            }
        }
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn submit<'a>(
        &'a self,
        request: &'a BlockRequest,
    ) -> BoxFuture<'a, Result<BlockId, ProviderError>> {
        Box::pin(self.start(request))
    }

    fn status<'a>(
        &'a self,
        blocks: &'a [BlockId],
    ) -> BoxFuture<'a, Result<Vec<BlockStatus>, ProviderError>> {
        Box::pin(async move { Ok(self.statuses(blocks)) })
    }

    fn cancel<'a>(&'a self, block: &'a BlockId) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.stop(block))
    }
}

/// True if `id` is one this provider issued (`local-<n>`, `n` no greater than the last
/// issued).
fn issued(state: &Mutex<State>, id: &BlockId) -> bool {
    let last = lock(state).issued;
    id.as_str()
        .strip_prefix("local-")
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n >= 1 && n <= last)
}

/// The command for node `index` of block `id`.
fn node_command(request: &BlockRequest, id: &BlockId, index: usize) -> Command {
    let manager = request.command();
    let mut command = match request.worker_init_lines() {
        Some(init) => {
            // The init lines run in the shell that then becomes the manager, so their exports
            // and `source`d environments reach it.
            let mut command = Command::new("/bin/sh");
            command
                .arg("-c")
                .arg(format!("{init}\nexec \"$@\""))
                .arg("sh")
                .arg(manager.program());
            command
        }
        None => Command::new(manager.program()),
    };
    command
        .args(manager.arguments())
        .envs(
            manager
                .environment()
                .iter()
                .map(|(key, value)| (key, value)),
        )
        // Set last, so a manager command cannot claim to be another block.
        .env(BLOCK_ID_ENV, id.as_str())
        .env(NODE_INDEX_ENV, index.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own lets cancel signal the manager together with the workers it
        // started, and keeps a terminal's Ctrl-C from reaching them: the application decides
        // what an interrupt means.
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// Waits for one node's process to exit (killing it when told to) and records how it ended.
async fn watch_node(
    state: Arc<Mutex<State>>,
    id: BlockId,
    index: usize,
    mut child: Child,
    kill: Arc<Notify>,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        () = kill.notified() => {
            if let Some(pid) = child.id() {
                // The group first, while the leader (not yet reaped) keeps its id from being
                // reused; then the leader itself, which needs no external command.
                let _ = signal_groups(&[pid], "KILL").await;
            }
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let exit = match status {
        Ok(status) => exit_of(status),
        Err(error) => {
            tracing::warn!(target: LOG_TARGET, block = %id, node = index, "could not read how node {index} exited: {error}");
            WorkerExit::Unknown
        }
    };
    let mut state = lock(&state);
    let Some(block) = state.blocks.get_mut(&id) else {
        return;
    };
    if let Some(node) = block.nodes.get_mut(index) {
        node.exit = Some(exit);
    }
    if !block.is_finished() {
        return;
    }
    block.since = SystemTime::now();
    block.finished.send_replace(true);
    match block.state() {
        BlockState::Completed => {
            tracing::info!(target: LOG_TARGET, block = %id, "block {id} completed")
        }
        other => tracing::warn!(target: LOG_TARGET, block = %id, "block {id} {other}"),
    }
    state.finished.push_back(id);
    while state.finished.len() > RETAINED_FINISHED {
        if let Some(old) = state.finished.pop_front() {
            state.blocks.remove(&old);
        }
    }
}

fn exit_of(status: ExitStatus) -> WorkerExit {
    match (status.code(), status.signal()) {
        (Some(code), _) => WorkerExit::Code(code),
        (None, Some(signal)) => WorkerExit::Signal(signal),
        (None, None) => WorkerExit::Unknown,
    }
}

/// Ends block `id` when its walltime expires, unless it finished first.
async fn enforce_walltime(
    state: Arc<Mutex<State>>,
    id: BlockId,
    walltime: Duration,
    grace: Duration,
    mut finished: watch::Receiver<bool>,
) {
    tokio::select! {
        () = until_finished(&mut finished) => return,
        () = tokio::time::sleep(walltime) => {}
    }
    tracing::warn!(target: LOG_TARGET, block = %id, "walltime of {walltime:?} of block {id} expired; ending it");
    terminate(&state, &id, Ending::Walltime(walltime), grace).await;
}

async fn until_finished(finished: &mut watch::Receiver<bool>) {
    // An error means the block was forgotten, which happens only after it finished.
    let _ = finished.wait_for(|finished| *finished).await;
}

/// Ends block `id` as a scheduler would: `SIGTERM` to each node's process group, `SIGKILL`
/// after `grace`. Returns once the processes are gone (or they resisted `SIGKILL` for
/// [`KILL_WAIT`]). The first reason to end a block is the one it reports.
async fn terminate(state: &Mutex<State>, id: &BlockId, ending: Ending, grace: Duration) {
    let (groups, kills, mut finished) = {
        let mut state = lock(state);
        let Some(block) = state.blocks.get_mut(id) else {
            return;
        };
        if block.is_finished() {
            return;
        }
        block.ending.get_or_insert(ending);
        let running = block.nodes.iter().filter(|node| node.exit.is_none());
        let groups: Vec<u32> = running.clone().filter_map(|node| node.pid).collect();
        let kills: Vec<Arc<Notify>> = running.map(|node| node.kill.clone()).collect();
        (groups, kills, block.finished.subscribe())
    };
    if let Err(error) = signal_groups(&groups, "TERM").await {
        // Most likely a group ended on its own meanwhile; SIGKILL follows regardless.
        tracing::debug!(target: LOG_TARGET, block = %id, "{error}");
    }
    if tokio::time::timeout(grace, until_finished(&mut finished))
        .await
        .is_ok()
    {
        return;
    }
    tracing::warn!(target: LOG_TARGET, block = %id, "block {id} did not end within {grace:?} of SIGTERM; killing it");
    for kill in &kills {
        kill.notify_one();
    }
    if tokio::time::timeout(KILL_WAIT, until_finished(&mut finished))
        .await
        .is_err()
    {
        tracing::error!(target: LOG_TARGET, block = %id, "block {id} still has processes {KILL_WAIT:?} after SIGKILL");
    }
}

/// Sends `signal` (`TERM`, `KILL`) to each process group in `groups`, with one command.
///
/// Through the shell's `kill` builtin: the standard library can only send `SIGKILL`, and only
/// to the process itself, not its group; calling `kill(2)` directly would take `unsafe` (which
/// the workspace forbids) or a new dependency (`nix`, `libc`) for one call, while `/bin/sh`
/// exists wherever this provider runs (it runs `worker_init` too). `kill` signals every group
/// it can even when one is already gone, and then reports the failure.
async fn signal_groups(groups: &[u32], signal: &str) -> Result<(), ProviderError> {
    if groups.is_empty() {
        return Ok(());
    }
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg("signal=$1; shift; kill -s \"$signal\" -- \"$@\"")
        .arg("sh")
        .arg(signal)
        .args(groups.iter().map(|group| format!("-{group}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| ProviderError::io("could not run `kill` with /bin/sh", error))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ProviderError::command(
            format!("kill -s {signal} -- {groups:?}"),
            String::from_utf8_lossy(&output.stderr).trim(),
        ))
    }
}

/// Logs what a node's process writes to `stream`, line by line.
async fn forward_output(
    mut reader: impl AsyncRead + Unpin,
    id: BlockId,
    node: usize,
    stream: &'static str,
) {
    let mut line: Vec<u8> = Vec::new();
    let mut chunk = vec![0_u8; 8192];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &chunk[..n];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..end]);
            log_line(&line, &id, node, stream);
            line.clear();
            rest = &rest[end + 1..];
        }
        line.extend_from_slice(rest);
        if line.len() >= MAX_LINE {
            log_line(&line, &id, node, stream);
            line.clear();
        }
    }
    if !line.is_empty() {
        log_line(&line, &id, node, stream);
    }
}

fn log_line(line: &[u8], id: &BlockId, node: usize, stream: &'static str) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    tracing::info!(
        target: LOG_TARGET,
        block = %id,
        node,
        stream,
        "{}",
        String::from_utf8_lossy(line)
    );
}
