//! The seam between an endpoint and the resources its managers run on.
//!
//! A *block* is a unit of resources obtained from a [`Provider`]: a batch job, a cloud
//! instance, or a few local processes. A block spans one or more nodes, and its
//! [`ManagerLayout`] says where its managers run: one on each node (the default), or one for
//! the whole block that holds all its nodes for multi-node (MPI) tasks. A manager dials back
//! to the endpoint and runs the Python workers. The
//! endpoint's scaling strategy asks for blocks with [`Provider::submit`], watches them with
//! [`Provider::status`] and gives them back with [`Provider::cancel`].
//!
//! The trait is shaped after batch schedulers, the common case: submitting returns a job id
//! at once while the job may wait in a queue ([`BlockState::Pending`]), status is polled for
//! many blocks in one call (one `squeue`, not one per job), and cancelling is a request
//! (`scancel`) that takes effect a little later.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// The environment variable that tells a manager which block it belongs to.
pub const BLOCK_ID_ENV: &str = "FUNCX_BLOCK_ID";

/// The environment variable that tells a manager which node of its block it runs on
/// (`0`, `1`, ... up to [`BlockRequest::nodes`] − 1; always `0` for the one manager of a
/// [`ManagerLayout::PerBlock`] block).
pub const NODE_INDEX_ENV: &str = "FUNCX_NODE_INDEX";

/// The identity of a block, as its provider issued it: a job id for a scheduler, an instance
/// id for a cloud, `local-<n>` for local processes. Unique within one provider.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlockId(String);

impl BlockId {
    /// A block id from the text the provider uses for it.
    pub fn new(id: impl Into<String>) -> BlockId {
        BlockId(id.into())
    }

    /// The id as text, e.g. to pass to `scancel`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The command that starts one manager: program, arguments and extra environment.
///
/// A provider runs it once per node of a block, or once for the whole block
/// ([`ManagerLayout`]), and adds [`BLOCK_ID_ENV`] and [`NODE_INDEX_ENV`] to its environment,
/// so a manager can introduce itself to the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerCommand {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl ManagerCommand {
    /// Runs `program` (a path, or a name looked up in `PATH`) with no arguments.
    pub fn new(program: impl Into<PathBuf>) -> ManagerCommand {
        ManagerCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> ManagerCommand {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I>(mut self, args: I) -> ManagerCommand
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the manager, on top of the environment the provider
    /// starts it in.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> ManagerCommand {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The arguments, in order.
    pub fn arguments(&self) -> &[OsString] {
        &self.args
    }

    /// The extra environment, in the order it was set (a later value for the same key wins).
    pub fn environment(&self) -> &[(OsString, OsString)] {
        &self.env
    }
}

/// Where a block's managers run: one on each of its nodes, or one for the whole block.
///
/// The contract every [`Provider`] keeps for each layout:
///
/// - [`PerNode`](ManagerLayout::PerNode) (the default): the provider starts the manager
///   command on every node of the block (a batch script fans it out with its launcher:
///   `srun`, `mpiexec`, `aprun`, `qrsh -inherit`; a cloud starts one instance per node; the
///   local provider one process per node), node `i` with [`NODE_INDEX_ENV`] `i`. Each manager
///   holds its own node, so a task holds at most one node.
/// - [`PerBlock`](ManagerLayout::PerBlock): the provider starts the manager command once, as
///   node `0`, on the block's first node, inside the batch job itself (never through a
///   launcher that fans it out), so that it sees the job's node list
///   (`SLURM_JOB_NODELIST`, `PBS_NODEFILE`, `PE_HOSTFILE`: what `funcx-manager
///   --block-nodes auto` reads) and can launch a multi-node task's ranks across the
///   allocation with the scheduler's own `mpirun` / `srun`. The job asks for
///   [`BlockRequest::rank_slots_per_node`] task slots on each node for those ranks (Open MPI in a
///   Slurm job starts no more ranks on a node than the job has task slots there). A provider
///   whose blocks have no such node list (local processes, cloud instances) rejects the
///   request ([`ProviderError::is_rejected`]) rather than start a manager that cannot see
///   the nodes it is meant to hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManagerLayout {
    /// One manager on each node of the block, each holding its own node (`per-node`).
    #[default]
    PerNode,
    /// One manager for the whole block, holding all its nodes for multi-node tasks
    /// (`per-block`).
    PerBlock,
}

impl fmt::Display for ManagerLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ManagerLayout::PerNode => "per-node",
            ManagerLayout::PerBlock => "per-block",
        })
    }
}

/// What to ask a provider for: how many nodes, for how long, what to run, and where
/// ([`ManagerLayout`]).
///
/// ```
/// use std::time::Duration;
/// use funcx_core::{BlockRequest, ManagerCommand, ManagerLayout};
///
/// let request = BlockRequest::new(ManagerCommand::new("funcx-manager").arg("--endpoint=10.0.0.1:9000"))
///     .nodes(4)
///     .walltime(Duration::from_secs(3600))
///     .worker_init("module load python/3.12");
/// assert_eq!(request.node_count(), 4);
///
/// // One manager for all four nodes, with 8 task slots on each for MPI ranks.
/// let request = request.layout(ManagerLayout::PerBlock).rank_slots_per_node(8);
/// assert_eq!(request.manager_layout(), ManagerLayout::PerBlock);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRequest {
    command: ManagerCommand,
    nodes: usize,
    layout: ManagerLayout,
    rank_slots_per_node: usize,
    walltime: Option<Duration>,
    worker_init: Option<String>,
}

impl BlockRequest {
    /// One node running `command`, no walltime limit, no init lines, one manager per node.
    pub fn new(command: ManagerCommand) -> BlockRequest {
        BlockRequest {
            command,
            nodes: 1,
            layout: ManagerLayout::PerNode,
            rank_slots_per_node: 1,
            walltime: None,
            worker_init: None,
        }
    }

    /// Spans `nodes` nodes. A block needs at least one node: providers reject a request for
    /// zero (see [`BlockRequest::check`]) rather than guess.
    pub fn nodes(mut self, nodes: usize) -> BlockRequest {
        self.nodes = nodes;
        self
    }

    /// Where the managers run: one per node (the default) or one for the whole block; see
    /// [`ManagerLayout`] for what each asks of a provider.
    pub fn layout(mut self, layout: ManagerLayout) -> BlockRequest {
        self.layout = layout;
        self
    }

    /// The task slots a [`ManagerLayout::PerBlock`] block asks its scheduler for on each
    /// node, for the ranks of the multi-node tasks its manager launches (Slurm's
    /// `--ntasks-per-node`, PBS Pro's `mpiprocs`; default 1). A per-node block ignores it:
    /// each node's one slot is its manager's.
    pub fn rank_slots_per_node(mut self, slots: usize) -> BlockRequest {
        self.rank_slots_per_node = slots;
        self
    }

    /// Ends the block after `walltime`, as a scheduler ends a job that reaches its time limit;
    /// the block then reports [`BlockState::Failed`].
    pub fn walltime(mut self, walltime: Duration) -> BlockRequest {
        self.walltime = Some(walltime);
        self
    }

    /// Shell lines run on each node before the manager starts, in the shell that then starts
    /// it, so their exports and `source`d environments (`module load`, `conda activate`)
    /// reach the manager.
    pub fn worker_init(mut self, lines: impl Into<String>) -> BlockRequest {
        self.worker_init = Some(lines.into());
        self
    }

    /// What starts a manager.
    pub fn command(&self) -> &ManagerCommand {
        &self.command
    }

    /// How many nodes the block spans.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Where its managers run.
    pub fn manager_layout(&self) -> ManagerLayout {
        self.layout
    }

    /// The task slots per node a per-block block asks for, for MPI ranks (what
    /// [`BlockRequest::rank_slots_per_node`] set; a getter cannot share the setter's name).
    pub fn per_node_rank_slots(&self) -> usize {
        self.rank_slots_per_node
    }

    /// How long the block may live, if limited.
    pub fn walltime_limit(&self) -> Option<Duration> {
        self.walltime
    }

    /// The shell lines run before the manager, if any.
    pub fn worker_init_lines(&self) -> Option<&str> {
        self.worker_init.as_deref()
    }

    /// Checks what every provider requires of a request (at least one node; a walltime, if
    /// any, above zero; for a per-block block, which asks for them, at least one rank slot
    /// per node), so they all reject a bad request
    /// the same way, before running anything. A zero walltime is refused rather than
    /// rounded: to a scheduler `0` means no limit at all, the opposite of what was asked.
    pub fn check(&self) -> Result<(), ProviderError> {
        if self.nodes == 0 {
            return Err(ProviderError::rejected(
                "a block needs at least one node, not 0",
            ));
        }
        if self.layout == ManagerLayout::PerBlock && self.rank_slots_per_node == 0 {
            return Err(ProviderError::rejected(
                "a block needs at least one rank slot per node, not 0",
            ));
        }
        if self.walltime == Some(Duration::ZERO) {
            return Err(ProviderError::rejected(
                "a walltime of zero cannot be asked of a scheduler",
            ));
        }
        Ok(())
    }
}

/// Where a block is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockState {
    /// Submitted, waiting for resources (queued in the scheduler, instance booting).
    Pending,
    /// Its managers have been started.
    Running,
    /// It ended on its own and without error.
    Completed,
    /// It ended in error, for the reason given: the scheduler's reason, a node's exit status,
    /// an expired walltime.
    Failed(String),
    /// It ended because it was cancelled.
    Cancelled,
    /// The provider cannot tell, for the reason given: the id is not one it knows (never
    /// issued, or forgotten since it finished), or the scheduler reported a state funcx does
    /// not understand. Not a finished state: the caller decides how long to tolerate it.
    Unknown(String),
}

impl BlockState {
    /// True for the states a block never leaves: completed, failed and cancelled.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            BlockState::Completed | BlockState::Failed(_) | BlockState::Cancelled
        )
    }
}

impl fmt::Display for BlockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockState::Pending => f.write_str("pending"),
            BlockState::Running => f.write_str("running"),
            BlockState::Completed => f.write_str("completed"),
            BlockState::Failed(reason) => write!(f, "failed: {reason}"),
            BlockState::Cancelled => f.write_str("cancelled"),
            BlockState::Unknown(reason) => write!(f, "unknown: {reason}"),
        }
    }
}

/// One block's state as a provider reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStatus {
    /// The block.
    pub id: BlockId,
    /// Its state.
    pub state: BlockState,
    /// When it entered that state, as well as the provider knows: exactly for local
    /// processes, when the state was first observed for a scheduler that is polled.
    pub since: SystemTime,
}

impl BlockStatus {
    /// Block `id` is in `state` since `since`.
    pub fn new(id: BlockId, state: BlockState, since: SystemTime) -> BlockStatus {
        BlockStatus { id, state, since }
    }
}

/// Why a provider could not do what was asked.
///
/// Opaque, like [`crate::TaskError`]: ask what happened with the `is_*` methods; the
/// `Display` text says what was attempted and why it failed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ProviderError {
    kind: Box<ErrorKind>,
}

#[derive(Debug, thiserror::Error)]
enum ErrorKind {
    // The error text is part of the message rather than a `source`, so that a report that
    // prints the chain does not print it twice.
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("block request rejected: {0}")]
    Rejected(String),
    #[error("no block {0}")]
    NotFound(BlockId),
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
}

impl ProviderError {
    fn new(kind: ErrorKind) -> ProviderError {
        ProviderError {
            kind: Box::new(kind),
        }
    }

    /// A command the provider relies on (`sbatch`, `qstat`, `kill`, ...) failed: it exited
    /// with an error or printed what the provider could not read. `detail` says how, with
    /// the command's own error output where there is one.
    pub fn command(command: impl Into<String>, detail: impl fmt::Display) -> ProviderError {
        ProviderError::new(ErrorKind::Command {
            command: command.into(),
            detail: detail.to_string(),
        })
    }

    /// The request cannot be satisfied as asked, for `reason` (zero nodes, a walltime over
    /// the queue's limit, an unknown partition).
    pub fn rejected(reason: impl fmt::Display) -> ProviderError {
        ProviderError::new(ErrorKind::Rejected(reason.to_string()))
    }

    /// The provider never issued block `id`.
    pub fn not_found(id: BlockId) -> ProviderError {
        ProviderError::new(ErrorKind::NotFound(id))
    }

    /// An operating-system operation failed while `context` (e.g. "could not start node 0
    /// of block local-1 (`/opt/funcx-manager`)").
    pub fn io(context: impl Into<String>, error: io::Error) -> ProviderError {
        ProviderError::new(ErrorKind::Io {
            context: context.into(),
            error,
        })
    }

    /// True if a command the provider relies on failed.
    pub fn is_command(&self) -> bool {
        matches!(*self.kind, ErrorKind::Command { .. })
    }

    /// True if the request was rejected as asked; sending it again will not help.
    pub fn is_rejected(&self) -> bool {
        matches!(*self.kind, ErrorKind::Rejected(_))
    }

    /// True if the block is not one the provider issued.
    pub fn is_not_found(&self) -> bool {
        matches!(*self.kind, ErrorKind::NotFound(_))
    }

    /// True if an operating-system operation failed; [`ProviderError::io_error`] has it.
    pub fn is_io(&self) -> bool {
        matches!(*self.kind, ErrorKind::Io { .. })
    }

    /// The operating-system error, for an I/O failure.
    pub fn io_error(&self) -> Option<&io::Error> {
        match &*self.kind {
            ErrorKind::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Where blocks come from: local processes, a batch scheduler, a cloud.
///
/// The contract every implementation keeps:
///
/// - [`submit`](Provider::submit) returns once the provider has accepted the block (a
///   scheduler returned a job id, the processes exist), not once its managers run; the
///   block may stay [`BlockState::Pending`] for a long time. A request that cannot be
///   satisfied fails here with [`ProviderError::is_rejected`], and a request for zero nodes
///   is always rejected ([`BlockRequest::check`]). The managers run as the request's
///   [`ManagerLayout`] says (a provider that cannot lay them out so rejects the request),
///   and every manager gets [`BLOCK_ID_ENV`] and [`NODE_INDEX_ENV`].
/// - [`status`](Provider::status) answers for many blocks at once, one [`BlockStatus`] per
///   id asked about, in the order asked. An id the provider does not know (never issued,
///   or forgotten long after it finished) is [`BlockState::Unknown`], not an error; an
///   error means the provider could not find out at all (the scheduler did not answer).
/// - [`cancel`](Provider::cancel) asks for the block to end, killing its managers; status
///   reports [`BlockState::Cancelled`] once it has. Cancelling a block that already
///   finished is `Ok` and leaves its state as it was. Cancelling an id the provider knows it
///   never issued is [`ProviderError::is_not_found`]; a scheduler that cannot tell a
///   never-issued job from a finished one it forgot returns `Ok`.
/// - A block that reaches its walltime ends as a scheduler ends it, and reports
///   [`BlockState::Failed`] with a reason that says so.
///
/// Futures borrow the provider and the arguments; none of them panics on what a scheduler
/// or a process reports.
pub trait Provider: Send + Sync + 'static {
    /// A short name for logs and configuration: `local`, `slurm`, `pbs`, ...
    fn name(&self) -> &str;

    /// Asks for a block as described by `request` and returns its id.
    fn submit<'a>(
        &'a self,
        request: &'a BlockRequest,
    ) -> BoxFuture<'a, Result<BlockId, ProviderError>>;

    /// The state of each block in `blocks`, in the same order.
    fn status<'a>(
        &'a self,
        blocks: &'a [BlockId],
    ) -> BoxFuture<'a, Result<Vec<BlockStatus>, ProviderError>>;

    /// Ends `block`, killing its managers.
    fn cancel<'a>(&'a self, block: &'a BlockId) -> BoxFuture<'a, Result<(), ProviderError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_states() {
        assert!(!BlockState::Pending.is_finished());
        assert!(!BlockState::Running.is_finished());
        assert!(!BlockState::Unknown("?".into()).is_finished());
        assert!(BlockState::Completed.is_finished());
        assert!(BlockState::Failed("exit code 1".into()).is_finished());
        assert!(BlockState::Cancelled.is_finished());
    }

    #[test]
    fn zero_nodes_are_rejected() {
        let request = BlockRequest::new(ManagerCommand::new("true")).nodes(0);
        let error = request.check().unwrap_err();
        assert!(error.is_rejected());
        assert!(error.to_string().contains("at least one node"), "{error}");
        assert!(BlockRequest::new(ManagerCommand::new("true"))
            .check()
            .is_ok());
    }

    #[test]
    fn one_manager_per_node_is_the_default() {
        let request = BlockRequest::new(ManagerCommand::new("true"));
        assert_eq!(request.manager_layout(), ManagerLayout::PerNode);
        assert_eq!(ManagerLayout::default(), ManagerLayout::PerNode);
        assert_eq!(request.per_node_rank_slots(), 1);
        let request = request
            .layout(ManagerLayout::PerBlock)
            .rank_slots_per_node(8);
        assert_eq!(request.manager_layout(), ManagerLayout::PerBlock);
        assert_eq!(request.per_node_rank_slots(), 8);
        assert!(request.check().is_ok());
    }

    #[test]
    fn layouts_are_named_as_configuration_files_name_them() {
        for (layout, name) in [
            (ManagerLayout::PerNode, "per-node"),
            (ManagerLayout::PerBlock, "per-block"),
        ] {
            assert_eq!(layout.to_string(), name);
            let bytes = serde_pickle::to_vec(&layout, Default::default()).expect("encode");
            let text: String =
                serde_pickle::from_slice(&bytes, Default::default()).expect("a string");
            assert_eq!(text, name);
        }
    }

    #[test]
    fn zero_rank_slots_are_rejected_only_where_they_are_asked_for() {
        let request = BlockRequest::new(ManagerCommand::new("true"))
            .layout(ManagerLayout::PerBlock)
            .rank_slots_per_node(0);
        let error = request.check().unwrap_err();
        assert!(error.is_rejected());
        assert!(error.to_string().contains("rank slot"), "{error}");
        // A per-node block asks for none, so it has nothing to reject.
        assert!(request.layout(ManagerLayout::PerNode).check().is_ok());
    }

    #[test]
    fn a_zero_walltime_is_rejected_and_any_other_is_not() {
        let request = BlockRequest::new(ManagerCommand::new("true"));
        let error = request
            .clone()
            .walltime(Duration::ZERO)
            .check()
            .unwrap_err();
        assert!(error.is_rejected());
        assert!(error.to_string().contains("walltime of zero"), "{error}");
        assert!(request
            .clone()
            .walltime(Duration::from_nanos(1))
            .check()
            .is_ok());
        assert!(request.walltime(Duration::from_secs(3600)).check().is_ok());
    }

    #[test]
    fn errors_say_what_failed() {
        let error = ProviderError::command("sbatch", "exited with code 1: invalid partition");
        assert!(error.is_command());
        assert_eq!(
            error.to_string(),
            "`sbatch` failed: exited with code 1: invalid partition"
        );
        let error = ProviderError::not_found(BlockId::new("local-7"));
        assert!(error.is_not_found());
        assert_eq!(error.to_string(), "no block local-7");
        let error = ProviderError::io(
            "could not start node 0",
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert!(error.is_io());
        assert_eq!(
            error.io_error().map(io::Error::kind),
            Some(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn block_ids_serialize_as_strings() {
        let id = BlockId::new("12345");
        assert_eq!(id.to_string(), "12345");
        assert_eq!(format!("{id:?}"), "12345");
        let status = BlockStatus::new(id, BlockState::Failed("oom".into()), SystemTime::UNIX_EPOCH);
        assert_eq!(pickle_roundtrip(&status), status);
    }

    // serde-pickle is the one serde format funcx-core already depends on.
    fn pickle_roundtrip(status: &BlockStatus) -> BlockStatus {
        let bytes = serde_pickle::to_vec(status, Default::default()).unwrap();
        serde_pickle::from_slice(&bytes, Default::default()).unwrap()
    }
}
