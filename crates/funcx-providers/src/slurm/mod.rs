//! Blocks as Slurm batch jobs: `sbatch`, `squeue` (with `sacct` for forgotten jobs) and
//! `scancel`, all through a [`CommandRunner`](crate::CommandRunner).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use funcx_core::{
    BlockId, BlockRequest, BlockState, BlockStatus, ManagerLayout, Provider, ProviderError,
};
use futures::future::BoxFuture;

use crate::command::{CommandOutput, SchedulerCommand};
use crate::toolkit::options::whole_seconds;
use crate::toolkit::script;
use crate::toolkit::{batch_options, BatchOptions, StateClock};
use crate::Launcher;

/// How to ask Slurm for blocks. Every field but the runner is optional; the node count and
/// walltime come from each [`BlockRequest`].
///
/// ```
/// use funcx_providers::{Launcher, SlurmConfig, SlurmProvider};
///
/// let provider = SlurmProvider::new(
///     SlurmConfig::new()
///         .partition("debug")
///         .account("proj42")
///         .cpus_per_task(8)
///         .mem("16G")
///         .directive("--gres=gpu:1")
///         .launcher(Launcher::srun())
///         .scripts_dir("/shared/funcx/scripts"),
/// );
/// # drop(provider);
/// ```
#[derive(Clone)]
pub struct SlurmConfig {
    partition: Option<String>,
    account: Option<String>,
    qos: Option<String>,
    constraint: Option<String>,
    exclusive: bool,
    cpus_per_task: Option<u32>,
    mem: Option<String>,
    launcher: Launcher,
    batch: BatchOptions,
}

impl fmt::Debug for SlurmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlurmConfig")
            .field("partition", &self.partition)
            .field("account", &self.account)
            .field("qos", &self.qos)
            .field("constraint", &self.constraint)
            .field("exclusive", &self.exclusive)
            .field("cpus_per_task", &self.cpus_per_task)
            .field("mem", &self.mem)
            .field("launcher", &self.launcher)
            .field("batch", &self.batch)
            .finish()
    }
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            partition: None,
            account: None,
            qos: None,
            constraint: None,
            exclusive: false,
            cpus_per_task: None,
            mem: None,
            launcher: Launcher::srun(),
            batch: BatchOptions::default(),
        }
    }
}

impl SlurmConfig {
    /// The cluster's defaults: its default partition and account, one task per node, the
    /// [`Launcher::Srun`] launcher, scripts in a temporary directory, commands run here.
    pub fn new() -> SlurmConfig {
        SlurmConfig::default()
    }

    /// `--partition`.
    pub fn partition(mut self, partition: impl Into<String>) -> SlurmConfig {
        self.partition = Some(partition.into());
        self
    }

    /// `--account`, the allocation charged.
    pub fn account(mut self, account: impl Into<String>) -> SlurmConfig {
        self.account = Some(account.into());
        self
    }

    /// `--qos`.
    pub fn qos(mut self, qos: impl Into<String>) -> SlurmConfig {
        self.qos = Some(qos.into());
        self
    }

    /// `--constraint`, node features (`haswell`, `gpu&a100`).
    pub fn constraint(mut self, constraint: impl Into<String>) -> SlurmConfig {
        self.constraint = Some(constraint.into());
        self
    }

    /// `--exclusive`: no other job shares the block's nodes.
    pub fn exclusive(mut self, exclusive: bool) -> SlurmConfig {
        self.exclusive = exclusive;
        self
    }

    /// The CPUs of each node: its manager's and its workers' (`--cpus-per-task` of the
    /// node's one manager task). A block with one manager for all its nodes
    /// ([`ManagerLayout::PerBlock`]) asks `--mincpus` instead, since its tasks are rank slots
    /// and `--cpus-per-task` would multiply them.
    pub fn cpus_per_task(mut self, cpus: u32) -> SlurmConfig {
        self.cpus_per_task = Some(cpus);
        self
    }

    /// `--mem`, memory per node in Slurm's syntax (`4G`, `500M`).
    pub fn mem(mut self, mem: impl Into<String>) -> SlurmConfig {
        self.mem = Some(mem.into());
        self
    }

    /// How each node's manager is started; [`Launcher::Srun`] by default.
    /// A block with one manager for all its nodes ([`ManagerLayout::PerBlock`]) fans
    /// nothing out: it keeps only a [`Launcher::Wrapped`] prefix ([`Launcher::block_line`]).
    pub fn launcher(mut self, launcher: Launcher) -> SlurmConfig {
        self.launcher = launcher;
        self
    }
}

batch_options!(
    SlurmConfig,
    "#SBATCH",
    "`sbatch`, `squeue`, `sacct` and `scancel`"
);

/// A [`Provider`] whose blocks are Slurm batch jobs; block ids are Slurm job ids.
///
/// - [`submit`](Provider::submit) writes the block's batch script (see [`SlurmConfig`]) and
///   runs `sbatch --parsable`. The script starts one manager per node through the
///   [`Launcher`] (a job of one task per node), or, for a block of
///   [`ManagerLayout::PerBlock`], one manager in the script itself, in a job of the
///   request's rank slots as tasks on each node (`--ntasks-per-node`), which the manager's
///   MPI tasks launch their ranks in. Slurm refusing the job (an unknown partition or account, a
///   node count the partition cannot give) is a [`ProviderError::is_rejected`] error
///   "sbatch rejected the job: ..." with Slurm's explanation; a controller that does not
///   answer is a command error, worth retrying.
/// - [`status`](Provider::status) runs one `squeue` for all blocks, including jobs that
///   ended recently (`--states=all`). Jobs squeue no longer knows are looked up with
///   `sacct` (or `sacct -c`, the job completion log, where accounting is off); if neither
///   knows them they are [`BlockState::Unknown`]. Why a job waits (`Resources`,
///   `PartitionDown`) is logged when it changes; why a job failed is in
///   [`BlockState::Failed`]: its exit code, or the Slurm state (`TIMEOUT` for a walltime
///   that expired, `NODE_FAIL`, `OUT_OF_MEMORY`, ...).
/// - [`cancel`](Provider::cancel) runs `scancel`; a job that already ended, or that Slurm
///   forgot, is `Ok`.
#[derive(Debug)]
pub struct SlurmProvider {
    config: SlurmConfig,
    scripts_dir: PathBuf,
    submitted: AtomicU64,
    clock: StateClock,
    /// The last pending reason logged per block, so a reason is logged once, not every poll.
    reasons: std::sync::Mutex<HashMap<BlockId, String>>,
}

impl SlurmProvider {
    /// A provider configured by `config`.
    pub fn new(config: SlurmConfig) -> SlurmProvider {
        let scripts_dir = config.batch.scripts_dir_or_default("slurm");
        SlurmProvider {
            config,
            scripts_dir,
            submitted: AtomicU64::new(0),
            clock: StateClock::default(),
            reasons: std::sync::Mutex::default(),
        }
    }

    /// Where batch scripts and job logs are written.
    pub fn scripts_dir(&self) -> &std::path::Path {
        &self.scripts_dir
    }

    fn command(&self, name: &str) -> SchedulerCommand {
        self.config.batch.command(name)
    }

    /// The `#SBATCH` lines for `request`, submitted as job `name`.
    fn directives(&self, request: &BlockRequest, name: &str) -> Result<Vec<String>, ProviderError> {
        let config = &self.config;
        let log = |suffix: &str| {
            self.scripts_dir
                .join(format!("{name}-%j.{suffix}"))
                .to_string_lossy()
                .into_owned()
        };
        // One task per node is each node's manager; a block with one manager for all its
        // nodes gives the job a task slot per rank instead, as Open MPI inside a Slurm job
        // starts no more ranks on a node than the job has tasks there.
        let tasks_per_node = match request.manager_layout() {
            ManagerLayout::PerNode => 1,
            ManagerLayout::PerBlock => request.per_node_rank_slots(),
        };
        let mut lines = vec![
            format!("--job-name={name}"),
            format!("--nodes={}", request.node_count()),
            format!("--ntasks-per-node={tasks_per_node}"),
            format!("--output={}", log("out")),
            format!("--error={}", log("err")),
        ];
        if let Some(cpus) = config.cpus_per_task {
            // Per node, the manager's one task has the node's CPUs. A per-block job's tasks
            // are rank slots, and `--cpus-per-task` would give each of them that many (a
            // node of 32 slots and 8 CPUs would ask for 256); the node's count is then a
            // minimum per node, as Torque's `ppn` and Grid Engine's slots take the larger.
            lines.push(match request.manager_layout() {
                ManagerLayout::PerNode => format!("--cpus-per-task={cpus}"),
                ManagerLayout::PerBlock => format!("--mincpus={cpus}"),
            });
        }
        if let Some(mem) = &config.mem {
            lines.push(format!("--mem={mem}"));
        }
        if let Some(walltime) = request.walltime_limit() {
            lines.push(format!("--time={}", slurm_time(walltime)));
        }
        for (flag, value) in [
            ("partition", &config.partition),
            ("account", &config.account),
            ("qos", &config.qos),
            ("constraint", &config.constraint),
        ] {
            if let Some(value) = value {
                lines.push(format!("--{flag}={value}"));
            }
        }
        if config.exclusive {
            lines.push("--exclusive".to_string());
        }
        config.batch.directive_lines("#SBATCH", &lines)
    }

    async fn submit_block(&self, request: &BlockRequest) -> Result<BlockId, ProviderError> {
        let seq = self.submitted.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{}-{seq}", self.config.batch.job_name);
        let path = script::write_batch_job(
            request,
            &self.config.launcher,
            &name,
            &self.scripts_dir,
            "$SLURM_JOB_ID",
            |name| self.directives(request, name),
        )?;
        let command = self
            .command("sbatch")
            .arg("--parsable")
            .arg(path.to_string_lossy());
        let output = self.config.batch.runner.run(command.clone()).await?;
        if !output.success() {
            return Err(sbatch_failure(&command, &output));
        }
        let id = parse_sbatch_id(&output.stdout)
            .ok_or_else(|| unreadable(&command, "no job id", &output))?;
        tracing::info!(block = %id, script = %path.display(), "submitted a Slurm job");
        Ok(id)
    }

    async fn block_status(&self, blocks: &[BlockId]) -> Result<Vec<BlockStatus>, ProviderError> {
        if blocks.is_empty() {
            return Ok(Vec::new());
        }
        let ids = join_ids(blocks);
        let command = self
            .command("squeue")
            .args(["--noheader", "--states=all", SQUEUE_FORMAT])
            .arg(format!("--jobs={ids}"));
        let output = self.config.batch.runner.run(command.clone()).await?;
        let mut jobs = if output.success() {
            parse_squeue(&output.stdout)
        } else if is_invalid_job_id(&output) {
            // squeue fails the whole call when the only job asked about is one it forgot.
            HashMap::new()
        } else {
            return Err(output.failure(&command));
        };
        let missing: Vec<BlockId> = blocks
            .iter()
            .filter(|id| !jobs.contains_key(id.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            jobs.extend(self.ask_accounting(&missing).await);
        }
        let mut statuses = Vec::with_capacity(blocks.len());
        for id in blocks {
            let state = match jobs.get(id.as_str()) {
                Some(job) => {
                    self.log_reason(id, job);
                    job.block_state()
                }
                None => BlockState::Unknown(format!(
                    "Slurm does not know job {id}: squeue and sacct have no record of it"
                )),
            };
            statuses.push(self.clock.observe(id, state));
        }
        Ok(statuses)
    }

    /// Jobs that ended long enough ago for `squeue` to forget them, from accounting
    /// (`sacct`) or, where accounting is off, the job completion log (`sacct -c`). Both are
    /// optional in a Slurm setup, so failing to ask them only leaves the jobs unknown.
    async fn ask_accounting(&self, missing: &[BlockId]) -> HashMap<String, SlurmJob> {
        let ids = join_ids(missing);
        let accounting = self
            .command("sacct")
            .args(["--noheader", "--parsable2", "--allocations"])
            .args(["--format=JobIDRaw,State,ExitCode", &format!("--jobs={ids}")]);
        let completion_log = self
            .command("sacct")
            .args(["-c", "--noheader", "--parsable2"])
            .args(["--format=JobID,State,ExitCode", &format!("--jobs={ids}")]);
        for command in [accounting, completion_log] {
            match self.config.batch.runner.run(command.clone()).await {
                Ok(output) if output.success() => {
                    let jobs = parse_sacct(&output.stdout);
                    if !jobs.is_empty() {
                        return jobs;
                    }
                }
                Ok(output) => {
                    tracing::debug!(%command, error = %output.failure(&command), "sacct did not answer");
                }
                Err(error) => tracing::debug!(%command, %error, "could not run sacct"),
            }
        }
        HashMap::new()
    }

    fn log_reason(&self, id: &BlockId, job: &SlurmJob) {
        let waiting = matches!(job.block_state(), BlockState::Pending);
        let reason = job.reason.as_str();
        if !waiting || reason.is_empty() || reason == "None" {
            return;
        }
        let mut reasons = self
            .reasons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if reasons.get(id).map(String::as_str) == Some(reason) {
            return;
        }
        if reasons.len() >= 4096 {
            reasons.clear();
        }
        reasons.insert(id.clone(), reason.to_string());
        if NEVER_STARTS.contains(&reason) {
            tracing::warn!(block = %id, state = %job.state, reason, "the Slurm job waits for a reason that will not go away by itself");
        } else {
            tracing::info!(block = %id, state = %job.state, reason, "the Slurm job waits");
        }
    }

    async fn cancel_block(&self, block: &BlockId) -> Result<(), ProviderError> {
        let command = self.command("scancel").arg(block.as_str());
        let output = self.config.batch.runner.run(command.clone()).await?;
        if output.success() || is_invalid_job_id(&output) || is_already_done(&output) {
            // Cancelling a job that ended (or that Slurm forgot) leaves nothing to do.
            return Ok(());
        }
        Err(output.failure(&command))
    }
}

impl Provider for SlurmProvider {
    fn name(&self) -> &str {
        "slurm"
    }

    fn submit<'a>(
        &'a self,
        request: &'a BlockRequest,
    ) -> BoxFuture<'a, Result<BlockId, ProviderError>> {
        Box::pin(self.submit_block(request))
    }

    fn status<'a>(
        &'a self,
        blocks: &'a [BlockId],
    ) -> BoxFuture<'a, Result<Vec<BlockStatus>, ProviderError>> {
        Box::pin(self.block_status(blocks))
    }

    fn cancel<'a>(&'a self, block: &'a BlockId) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.cancel_block(block))
    }
}

/// `squeue`'s fields: id, state, why it is in that state, and the raw wait status once it
/// ended (`--format` has no exit code field, `--Format` does). A `|` after each field ends
/// it without padding.
const SQUEUE_FORMAT: &str = "--Format=JobID:|,State:|,Reason:|,exit_code:|";

/// Pending reasons that mean the job cannot start as submitted: an administrator or a new
/// submission has to act. Logged as warnings.
const NEVER_STARTS: &[&str] = &[
    "PartitionTimeLimit",
    "PartitionNodeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "PartitionConfig",
    "DependencyNeverSatisfied",
    "QOSMaxWallDurationPerJobLimit",
    "QOSMaxNodePerJobLimit",
];

/// Slurm's `--time`: `D-HH:MM:SS` from one day on, `HH:MM:SS` below, rounded up to whole
/// seconds (Slurm itself rounds up to whole minutes). Never `0`, which means no limit to
/// Slurm: [`BlockRequest::check`] refuses a zero walltime.
pub(crate) fn slurm_time(walltime: Duration) -> String {
    let seconds = whole_seconds(walltime);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let hms = format!(
        "{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    if days > 0 {
        format!("{days}-{hms}")
    } else {
        hms
    }
}

fn join_ids(blocks: &[BlockId]) -> String {
    blocks
        .iter()
        .map(BlockId::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The job id from `sbatch --parsable`: `<id>` or `<id>;<cluster>` on the last line (earlier
/// lines can be warnings from a job submit plugin). Only the id is kept: it is what
/// `squeue --jobs` and `scancel` take on the cluster the job went to.
pub(crate) fn parse_sbatch_id(stdout: &str) -> Option<BlockId> {
    let line = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())?;
    let id = line.split(';').next()?.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| BlockId::new(id))
}

fn unreadable(command: &SchedulerCommand, what: &str, output: &CommandOutput) -> ProviderError {
    ProviderError::command(
        command.to_string(),
        format!(
            "printed {what} funcx can read: stdout {:?}, stderr {:?}",
            output.stdout.trim(),
            output.stderr.trim()
        ),
    )
}

/// Messages from Slurm that say the controller could not be asked, not that it said no:
/// submitting again later may work.
const TRANSIENT: &[&str] = &[
    "temporarily",
    "Socket timed out",
    "Unable to contact",
    "Connection refused",
    "try again",
    "Zero Bytes were transmitted",
];

/// Turns a failed `sbatch` into a rejection when Slurm refused the job itself.
pub(crate) fn sbatch_failure(command: &SchedulerCommand, output: &CommandOutput) -> ProviderError {
    let said = output.stderr.trim();
    let transient = TRANSIENT.iter().any(|marker| said.contains(marker));
    if !transient && (said.contains("Batch job submission failed") || said.contains("error:")) {
        let said = said.lines().map(str::trim).collect::<Vec<_>>().join("; ");
        return ProviderError::rejected(format!("sbatch rejected the job: {said}"));
    }
    output.failure(command)
}

fn is_invalid_job_id(output: &CommandOutput) -> bool {
    output.stderr.contains("Invalid job id specified")
}

fn is_already_done(output: &CommandOutput) -> bool {
    output.stderr.contains("already completing or completed")
        || output.stderr.contains("Job/step already completed")
}

/// How a job ended, as far as Slurm reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlurmExit {
    /// The batch script exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl SlurmExit {
    /// From `squeue`'s `exit_code`, a raw wait status: the code in the high byte, the signal
    /// in the low 7 bits.
    fn from_wait_status(text: &str) -> Option<SlurmExit> {
        let status: i64 = text.trim().parse().ok()?;
        let signal = (status & 0x7f) as i32;
        Some(if signal != 0 {
            SlurmExit::Signal(signal)
        } else {
            SlurmExit::Code(((status >> 8) & 0xff) as i32)
        })
    }

    /// From `sacct`'s `ExitCode`, `code:signal`.
    fn from_sacct(text: &str) -> Option<SlurmExit> {
        let (code, signal) = text.trim().split_once(':')?;
        let (code, signal): (i32, i32) = (code.parse().ok()?, signal.parse().ok()?);
        Some(if signal != 0 {
            SlurmExit::Signal(signal)
        } else {
            SlurmExit::Code(code)
        })
    }
}

impl fmt::Display for SlurmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlurmExit::Code(code) => write!(f, "exit code {code}"),
            SlurmExit::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

/// One job as `squeue` or `sacct` described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlurmJob {
    /// The state's name, without flags (`CANCELLED`, not `CANCELLED by 0`).
    pub state: String,
    /// Why the job is in that state (`Resources`, `NonZeroExitCode`); may be empty.
    pub reason: String,
    /// How it ended, once it has.
    pub exit: Option<SlurmExit>,
}

impl SlurmJob {
    fn new(state: &str, reason: &str, exit: Option<SlurmExit>) -> SlurmJob {
        // sacct writes `CANCELLED by 0`; a `+` marks a state with more detail elsewhere.
        let state = state
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches('+')
            .to_ascii_uppercase();
        SlurmJob {
            state,
            reason: reason.trim().to_string(),
            exit,
        }
    }

    /// The block state for this job. Every state Slurm documents is mapped; one it adds
    /// later is [`BlockState::Unknown`] with its name, never a guess.
    pub(crate) fn block_state(&self) -> BlockState {
        let state = self.state.as_str();
        let failed = |what: &str| {
            let mut reason = format!("{what} (Slurm state {state}");
            if let Some(exit) = self.exit {
                reason.push_str(&format!(", {exit}"));
            }
            if !self.reason.is_empty() && self.reason != "None" {
                reason.push_str(&format!(", reason {}", self.reason));
            }
            reason.push(')');
            BlockState::Failed(reason)
        };
        match state {
            // Waiting to start, or between runs: no manager is running yet.
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
            | "RESV_DEL_HOLD" => BlockState::Pending,
            // Stopped with SIGSTOP (suspended by an administrator or a preemption, or
            // stopped by the user): the job keeps its place but its managers run nothing
            // until it resumes, so it counts as not yet running.
            "SUSPENDED" | "STOPPED" => BlockState::Pending,
            // The managers run, or the job is in a transition that keeps them running
            // (resizing, being signalled, the epilog after the last step).
            "RUNNING" | "COMPLETING" | "RESIZING" | "SIGNALING" | "STAGE_OUT" => {
                BlockState::Running
            }
            "COMPLETED" => BlockState::Completed,
            "CANCELLED" => BlockState::Cancelled,
            "FAILED" => match self.exit {
                Some(exit) => failed(&format!("the job ended with {exit}")),
                None => failed("the job failed"),
            },
            "TIMEOUT" => failed("the walltime expired and Slurm ended the job"),
            "NODE_FAIL" => failed("a node of the job failed"),
            "PREEMPTED" => failed("the job was preempted by a job of higher priority"),
            "BOOT_FAIL" => failed("a node of the job failed to boot"),
            "DEADLINE" => failed("the job reached its deadline before it could finish"),
            "OUT_OF_MEMORY" => failed("the job ran out of memory"),
            "SPECIAL_EXIT" => failed("the job ended with a special exit (requeued on hold)"),
            "REVOKED" => {
                failed("the job was revoked because a sibling cluster of the federation ran it")
            }
            other => BlockState::Unknown(format!(
                "Slurm reported state {other:?}, which funcx does not know"
            )),
        }
    }
}

/// `squeue --Format=JobID:|,State:|,Reason:|,exit_code:|` lines. Lines that do not have the
/// four fields are skipped (logged), so one odd line cannot hide the other jobs.
pub(crate) fn parse_squeue(stdout: &str) -> HashMap<String, SlurmJob> {
    let mut jobs = HashMap::new();
    for line in stdout
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let fields: Vec<&str> = line.split('|').collect();
        match fields.as_slice() {
            [id, state, reason, exit, ..] if !id.trim().is_empty() && !state.trim().is_empty() => {
                let job = SlurmJob::new(state, reason, SlurmExit::from_wait_status(exit));
                jobs.insert(id.trim().to_string(), job);
            }
            _ => tracing::warn!(line, "squeue printed a line funcx cannot read; ignored"),
        }
    }
    jobs
}

/// `sacct --parsable2 --format=JobID,State,ExitCode` lines; step lines (`12.batch`) are
/// skipped, odd lines logged and skipped.
pub(crate) fn parse_sacct(stdout: &str) -> HashMap<String, SlurmJob> {
    let mut jobs = HashMap::new();
    for line in stdout
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let fields: Vec<&str> = line.split('|').collect();
        match fields.as_slice() {
            [id, state, exit, ..] if !id.trim().is_empty() && !state.trim().is_empty() => {
                if id.contains('.') {
                    continue;
                }
                let job = SlurmJob::new(state, "", SlurmExit::from_sacct(exit));
                jobs.insert(id.trim().to_string(), job);
            }
            _ => tracing::warn!(line, "sacct printed a line funcx cannot read; ignored"),
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use funcx_core::ManagerCommand;

    use super::*;
    use crate::toolkit::mock::{ended, has_lines, printed, MockRunner};

    const SQUEUE_MIXED: &str = include_str!("../../tests/data/slurm_squeue_mixed.txt");
    const SACCT_C: &str = include_str!("../../tests/data/slurm_sacct_c.txt");
    const SACCT_DISABLED: &str = include_str!("../../tests/data/slurm_sacct_disabled.err");
    const INVALID_PARTITION: &str =
        include_str!("../../tests/data/slurm_sbatch_invalid_partition.err");
    const INVALID_ID: &str = include_str!("../../tests/data/slurm_squeue_invalid_id.err");

    fn provider(runner: MockRunner, config: SlurmConfig) -> SlurmProvider {
        let dir = std::env::temp_dir().join(format!("funcx-slurm-unit-{}", std::process::id()));
        SlurmProvider::new(config.scripts_dir(dir).runner(Arc::new(runner)))
    }

    fn request() -> BlockRequest {
        BlockRequest::new(
            ManagerCommand::new("/opt/funcx-manager")
                .arg("--workers")
                .arg("2"),
        )
    }

    fn ids(ids: &[&str]) -> Vec<BlockId> {
        ids.iter().map(|id| BlockId::new(*id)).collect()
    }

    async fn states(provider: &SlurmProvider, blocks: &[&str]) -> Vec<BlockState> {
        provider
            .status(&ids(blocks))
            .await
            .expect("status")
            .into_iter()
            .map(|status| status.state)
            .collect()
    }

    /// Submits `request` with `config` and returns the script `sbatch` (`program`) was given.
    async fn submitted_script(program: &str, config: SlurmConfig, request: BlockRequest) -> String {
        let script = Arc::new(Mutex::new(String::new()));
        let seen = script.clone();
        let mut runner = MockRunner::new();
        let program = program.to_owned();
        runner
            .expect_run()
            .withf(move |c| c.program == program && c.args.len() == 2 && c.args[0] == "--parsable")
            .times(1)
            .returning(move |c| {
                *seen.lock().unwrap() = std::fs::read_to_string(&c.args[1]).unwrap();
                printed("4242;cluster1\n")
            });
        let id = provider(runner, config)
            .submit(&request)
            .await
            .expect("submit");
        assert_eq!(id.as_str(), "4242");
        let script = script.lock().unwrap().clone();
        script
    }

    #[tokio::test]
    async fn submit_writes_the_script_and_runs_sbatch() {
        let config = SlurmConfig::new()
            .partition("gpu")
            .account("proj42")
            .qos("high")
            .constraint("a100")
            .exclusive(true)
            .cpus_per_task(8)
            .mem("4G")
            .job_name("fx")
            .directive("--gres=gpu:1")
            .directive("#SBATCH --signal=B:USR1@60")
            .commands_dir("/opt/slurm/bin");
        let dir = provider(MockRunner::new(), config.clone())
            .scripts_dir()
            .display()
            .to_string();
        let request = request()
            .nodes(2)
            .walltime(Duration::from_secs(86_400 + 2 * 3600 + 3 * 60 + 4))
            .worker_init("module load python");
        let script = submitted_script("/opt/slurm/bin/sbatch", config, request).await;
        has_lines(
            &script,
            &[
                "#!/bin/bash",
                "#SBATCH --job-name=fx-1",
                "#SBATCH --nodes=2",
                "#SBATCH --ntasks-per-node=1",
                &format!("#SBATCH --output={dir}/fx-1-%j.out"),
                &format!("#SBATCH --error={dir}/fx-1-%j.err"),
                "#SBATCH --cpus-per-task=8",
                "#SBATCH --mem=4G",
                "#SBATCH --time=1-02:03:04",
                "#SBATCH --partition=gpu",
                "#SBATCH --account=proj42",
                "#SBATCH --qos=high",
                "#SBATCH --constraint=a100",
                "#SBATCH --exclusive",
                "#SBATCH --gres=gpu:1",
                "#SBATCH --signal=B:USR1@60",
                "module load python",
                "export FUNCX_BLOCK_ID=\"$SLURM_JOB_ID\"",
            ],
        );
        let last = script.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("srun --ntasks=2 --ntasks-per-node=1 /bin/sh -c ")
                && last.ends_with("funcx-manager /opt/funcx-manager --workers 2"),
            "{last}"
        );
        // Directives come before the first command, or sbatch ignores them.
        let first_command = script.lines().position(|l| l == "module load python");
        let lines: Vec<&str> = script.lines().collect();
        let last_directive = lines.iter().rposition(|l| l.starts_with("#SBATCH"));
        assert!(last_directive < first_command);
    }

    /// One manager for the whole block: a job of the request's rank slots as tasks on each
    /// node, whose script runs the manager itself, once, as node 0 (srun would start it on
    /// every node, and inside a step it would not see the job's task slots for its ranks).
    #[tokio::test]
    async fn a_per_block_job_gives_ranks_their_tasks_and_runs_one_manager_in_the_script() {
        let request = request()
            .nodes(2)
            .layout(ManagerLayout::PerBlock)
            .rank_slots_per_node(4);
        for launcher in [Launcher::srun(), Launcher::SingleNode] {
            let config = SlurmConfig::new().cpus_per_task(2).launcher(launcher);
            let script = submitted_script("sbatch", config, request.clone()).await;
            // The node's 2 CPUs, not 2 for each of the 4 slots.
            has_lines(
                &script,
                &[
                    "#SBATCH --nodes=2",
                    "#SBATCH --ntasks-per-node=4",
                    "#SBATCH --mincpus=2",
                ],
            );
            assert!(!script.contains("--cpus-per-task"), "{script}");
            assert!(!script.contains("srun"), "{script}");
            assert_eq!(
                script.lines().last(),
                Some("FUNCX_NODE_INDEX=0 /opt/funcx-manager --workers 2"),
                "{script}"
            );
        }
    }

    #[test]
    fn sbatch_ids_are_parsed_strictly() {
        for (stdout, id) in [
            ("12\n", Some("12")),
            ("  12  \n\n", Some("12")),
            ("12;cluster\n", Some("12")),
            ("sbatch: warning: mem rounded\n77\n", Some("77")),
            ("", None),
            ("\n \n", None),
            ("Submitted batch job 12\n", None),
            ("12abc\n", None),
            (";cluster\n", None),
            ("-3\n", None),
        ] {
            assert_eq!(
                parse_sbatch_id(stdout).as_ref().map(BlockId::as_str),
                id,
                "{stdout:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_invalid_partition_is_a_clear_rejection() {
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .returning(|_| ended(1, "", INVALID_PARTITION));
        let provider = provider(runner, SlurmConfig::new().partition("nope"));
        let error = provider.submit(&request()).await.unwrap_err();
        assert!(error.is_rejected(), "{error}");
        let text = error.to_string();
        assert!(
            text.contains("sbatch rejected the job")
                && text.contains("invalid partition specified: nope"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_controller_is_a_command_error_not_a_rejection() {
        let mut runner = MockRunner::new();
        runner.expect_run().returning(|_| {
            ended(
                1,
                "",
                "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n",
            )
        });
        let error = provider(runner, SlurmConfig::new())
            .submit(&request())
            .await
            .unwrap_err();
        assert!(error.is_command() && !error.is_rejected(), "{error}");
        assert!(error.to_string().contains("Unable to contact"), "{error}");
    }

    #[tokio::test]
    async fn garbage_from_sbatch_is_an_error_that_quotes_it() {
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .returning(|_| ended(0, "<html>proxy error</html>", "odd"));
        let error = provider(runner, SlurmConfig::new())
            .submit(&request())
            .await
            .unwrap_err();
        assert!(error.is_command(), "{error}");
        let text = error.to_string();
        assert!(
            text.contains("proxy error") && text.contains("odd"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_missing_sbatch_says_so() {
        let mut runner = MockRunner::new();
        runner.expect_run().returning(|_| {
            Box::pin(async {
                Err(ProviderError::io(
                    "sbatch is not installed or not on PATH",
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ))
            })
        });
        let error = provider(runner, SlurmConfig::new())
            .submit(&request())
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("sbatch is not installed"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn bad_requests_are_rejected_before_any_command_runs() {
        // No expectations: any command would fail the test.
        let provider = provider(MockRunner::new(), SlurmConfig::new());
        assert!(provider
            .submit(&request().nodes(0))
            .await
            .unwrap_err()
            .is_rejected());
        let zero = request().walltime(Duration::ZERO);
        assert!(provider.submit(&zero).await.unwrap_err().is_rejected());
        let single = provider_with_single_node();
        assert!(single
            .submit(&request().nodes(2))
            .await
            .unwrap_err()
            .is_rejected());
        let broken = SlurmProvider::new(
            SlurmConfig::new()
                .partition("a\n#SBATCH --x")
                .runner(Arc::new(MockRunner::new())),
        );
        assert!(broken.submit(&request()).await.unwrap_err().is_rejected());
    }

    fn provider_with_single_node() -> SlurmProvider {
        provider(
            MockRunner::new(),
            SlurmConfig::new().launcher(Launcher::SingleNode),
        )
    }

    #[test]
    fn walltimes_are_formatted_as_slurm_reads_them() {
        let time = |secs: u64| slurm_time(Duration::from_secs(secs));
        assert_eq!(time(59), "00:00:59");
        assert_eq!(time(3600), "01:00:00");
        assert_eq!(time(86_399), "23:59:59");
        assert_eq!(time(86_400), "1-00:00:00");
        assert_eq!(time(3 * 86_400 + 61), "3-00:01:01");
        assert_eq!(slurm_time(Duration::from_millis(1500)), "00:00:02");
    }

    #[tokio::test]
    async fn one_squeue_reports_every_block_in_order() {
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .withf(|c| {
                c.program == "squeue"
                    && c.args.contains(&"--states=all".to_string())
                    && c.args.last().map(String::as_str) == Some("--jobs=5,6,7,8,9")
            })
            .times(1)
            .returning(|_| printed(SQUEUE_MIXED));
        let provider = provider(runner, SlurmConfig::new());
        let states = states(&provider, &["5", "6", "7", "8", "9"]).await;
        assert_eq!(states[0], BlockState::Running);
        assert!(
            matches!(&states[1], BlockState::Failed(why) if why.contains("exit code 3")),
            "{:?}",
            states[1]
        );
        assert_eq!(states[2], BlockState::Pending);
        assert_eq!(states[3], BlockState::Cancelled);
        assert_eq!(states[4], BlockState::Pending);
    }

    #[tokio::test]
    async fn forgotten_jobs_come_from_the_completion_log() {
        let mut runner = MockRunner::new();
        let mut sequence = mockall::Sequence::new();
        runner
            .expect_run()
            .withf(|c| c.program == "squeue")
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| ended(1, "", INVALID_ID));
        runner
            .expect_run()
            .withf(|c| c.program == "sacct" && c.args[0] == "--noheader")
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| ended(1, SACCT_DISABLED, ""));
        runner
            .expect_run()
            .withf(|c| {
                c.program == "sacct"
                    && c.args[0] == "-c"
                    && c.args.last().map(String::as_str) == Some("--jobs=6,8,99")
            })
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| printed(SACCT_C));
        let provider = provider(runner, SlurmConfig::new());
        let states = states(&provider, &["6", "8", "99"]).await;
        assert!(
            matches!(&states[0], BlockState::Failed(why) if why.contains("exit code 3")),
            "{states:?}"
        );
        assert_eq!(states[1], BlockState::Cancelled);
        assert!(
            matches!(&states[2], BlockState::Unknown(why) if why.contains("99")),
            "{states:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_squeue_is_an_error() {
        let mut runner = MockRunner::new();
        runner.expect_run().returning(|_| {
            ended(
                1,
                "",
                "squeue: error: Unable to contact slurm controller (connect failure)",
            )
        });
        let provider = provider(runner, SlurmConfig::new());
        let error = provider.status(&ids(&["1"])).await.unwrap_err();
        assert!(
            error.is_command() && error.to_string().contains("Unable to contact"),
            "{error}"
        );
        // Asking about nothing runs nothing.
        assert!(provider.status(&[]).await.expect("no blocks").is_empty());
    }

    #[tokio::test]
    async fn odd_squeue_lines_are_skipped_not_fatal() {
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .withf(|c| c.program == "squeue")
            .returning(|_| printed("garbage\n|||\n5|RUNNING|None|0|\n"));
        runner.expect_run().returning(|_| ended(1, "", "no"));
        let provider = provider(runner, SlurmConfig::new());
        let states = states(&provider, &["5", "6"]).await;
        assert_eq!(states[0], BlockState::Running);
        assert!(matches!(states[1], BlockState::Unknown(_)));
    }

    #[tokio::test]
    async fn since_is_when_a_state_was_first_seen() {
        let mut runner = MockRunner::new();
        let mut sequence = mockall::Sequence::new();
        for output in [
            "5|PENDING|Priority|0|",
            "5|PENDING|Resources|0|",
            "5|RUNNING|None|0|",
        ] {
            runner
                .expect_run()
                .times(1)
                .in_sequence(&mut sequence)
                .returning(move |_| printed(output));
        }
        let provider = provider(runner, SlurmConfig::new());
        let first = provider.status(&ids(&["5"])).await.unwrap().remove(0);
        let second = provider.status(&ids(&["5"])).await.unwrap().remove(0);
        assert_eq!(
            first.since, second.since,
            "still pending, only the reason changed"
        );
        let third = provider.status(&ids(&["5"])).await.unwrap().remove(0);
        assert_eq!(third.state, BlockState::Running);
        assert!(third.since >= second.since);
    }

    #[test]
    fn every_slurm_state_is_mapped() {
        let state =
            |name: &str, exit: Option<SlurmExit>| SlurmJob::new(name, "None", exit).block_state();
        for pending in [
            "PENDING",
            "CONFIGURING",
            "REQUEUED",
            "REQUEUE_HOLD",
            "REQUEUE_FED",
            "RESV_DEL_HOLD",
            "SUSPENDED",
            "STOPPED",
        ] {
            assert_eq!(state(pending, None), BlockState::Pending, "{pending}");
        }
        for running in [
            "RUNNING",
            "COMPLETING",
            "RESIZING",
            "SIGNALING",
            "STAGE_OUT",
        ] {
            assert_eq!(state(running, None), BlockState::Running, "{running}");
        }
        assert_eq!(
            state("COMPLETED", Some(SlurmExit::Code(0))),
            BlockState::Completed
        );
        assert_eq!(state("CANCELLED", None), BlockState::Cancelled);
        assert_eq!(state("cancelled by 0", None), BlockState::Cancelled);
        for (name, words) in [
            ("FAILED", "exit code 3"),
            ("TIMEOUT", "walltime expired"),
            ("NODE_FAIL", "node"),
            ("PREEMPTED", "preempted"),
            ("BOOT_FAIL", "boot"),
            ("DEADLINE", "deadline"),
            ("OUT_OF_MEMORY", "out of memory"),
            ("SPECIAL_EXIT", "special exit"),
            ("REVOKED", "revoked"),
        ] {
            match state(name, Some(SlurmExit::Code(3))) {
                BlockState::Failed(why) => {
                    assert!(why.contains(words) && why.contains(name), "{name}: {why}")
                }
                other => panic!("{name} → {other:?}"),
            }
        }
        match state("FAILED", Some(SlurmExit::Signal(9))) {
            BlockState::Failed(why) => assert!(why.contains("signal 9"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(state("FAILED", None), BlockState::Failed(_)));
        match state("WEIRD_NEW_STATE", None) {
            BlockState::Unknown(why) => assert!(why.contains("WEIRD_NEW_STATE"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(state("", None), BlockState::Unknown(_)));
    }

    #[test]
    fn exit_codes_are_decoded() {
        assert_eq!(SlurmExit::from_wait_status("768"), Some(SlurmExit::Code(3)));
        assert_eq!(SlurmExit::from_wait_status("0"), Some(SlurmExit::Code(0)));
        assert_eq!(
            SlurmExit::from_wait_status("15"),
            Some(SlurmExit::Signal(15))
        );
        assert_eq!(SlurmExit::from_wait_status("N/A"), None);
        assert_eq!(SlurmExit::from_sacct("3:0"), Some(SlurmExit::Code(3)));
        assert_eq!(SlurmExit::from_sacct("0:9"), Some(SlurmExit::Signal(9)));
        assert_eq!(SlurmExit::from_sacct("x"), None);
    }

    #[tokio::test]
    async fn cancel_runs_scancel_and_accepts_finished_jobs() {
        let mut runner = MockRunner::new();
        let mut sequence = mockall::Sequence::new();
        for (code, stderr) in [
            (0, ""),
            (1, "scancel: error: Kill job error on job id 5: Job/step already completing or completed"),
            (1, INVALID_ID),
            (1, "scancel: error: Unable to contact slurm controller"),
        ] {
            runner
                .expect_run()
                .withf(|c| c.program == "scancel" && c.args == ["5"])
                .times(1)
                .in_sequence(&mut sequence)
                .returning(move |_| ended(code, "", stderr));
        }
        let provider = provider(runner, SlurmConfig::new());
        let block = BlockId::new("5");
        provider.cancel(&block).await.expect("running job");
        provider.cancel(&block).await.expect("finished job");
        provider.cancel(&block).await.expect("forgotten job");
        let error = provider.cancel(&block).await.unwrap_err();
        assert!(error.is_command(), "{error}");
    }
}
