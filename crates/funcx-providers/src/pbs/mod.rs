//! Blocks as PBS Pro / OpenPBS or Torque batch jobs: `qsub`, `qstat -f` and `qdel`, all
//! through a [`CommandRunner`](crate::CommandRunner).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use funcx_core::{
    BlockId, BlockRequest, BlockState, BlockStatus, ManagerLayout, Provider, ProviderError,
};
use futures::future::BoxFuture;

use crate::command::{CommandOutput, SchedulerCommand};
use crate::toolkit::options::walltime_hms;
use crate::toolkit::script;
use crate::toolkit::{batch_options, BatchOptions, StateClock};
use crate::Launcher;

/// Which PBS: they share `qsub`/`qstat`/`qdel` and `#PBS`, and differ in how nodes are asked
/// for, what `qstat` can print, and what their negative exit statuses mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PbsFlavor {
    /// PBS Pro / OpenPBS: `-l select=<nodes>:ncpus=<n>`, `qstat -f -F json -x`.
    PbsPro,
    /// Torque: `-l nodes=<nodes>:ppn=<n>`, `qstat -f` text.
    Torque,
}

/// How to ask PBS for blocks. The node count and walltime come from each [`BlockRequest`].
///
/// ```
/// use funcx_providers::{Launcher, PbsConfig, PbsFlavor, PbsProvider};
///
/// let provider = PbsProvider::new(
///     PbsConfig::new(PbsFlavor::PbsPro)
///         .queue("debug")
///         .account("proj42")
///         .cpus_per_node(32)
///         .launcher(Launcher::mpiexec())
///         .directive("-l filesystems=home:eagle"),
/// );
/// # drop(provider);
/// ```
#[derive(Clone)]
pub struct PbsConfig {
    flavor: PbsFlavor,
    queue: Option<String>,
    account: Option<String>,
    cpus_per_node: u32,
    launcher: Launcher,
    batch: BatchOptions,
}

impl fmt::Debug for PbsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PbsConfig")
            .field("flavor", &self.flavor)
            .field("queue", &self.queue)
            .field("account", &self.account)
            .field("cpus_per_node", &self.cpus_per_node)
            .field("launcher", &self.launcher)
            .field("batch", &self.batch)
            .finish()
    }
}

impl PbsConfig {
    /// The server's default queue and account, one CPU per node, the
    /// [`Launcher::SingleNode`] launcher (multi-node blocks need [`Launcher::Mpiexec`] or
    /// [`Launcher::Aprun`]), scripts in a temporary directory, commands run here.
    pub fn new(flavor: PbsFlavor) -> PbsConfig {
        PbsConfig {
            flavor,
            queue: None,
            account: None,
            cpus_per_node: 1,
            launcher: Launcher::SingleNode,
            batch: BatchOptions::default(),
        }
    }

    /// `-q`, the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> PbsConfig {
        self.queue = Some(queue.into());
        self
    }

    /// `-A`, the account charged.
    pub fn account(mut self, account: impl Into<String>) -> PbsConfig {
        self.account = Some(account.into());
        self
    }

    /// CPUs asked for on each node: `ncpus` (PBS Pro) or `ppn` (Torque). 1 by default.
    pub fn cpus_per_node(mut self, cpus: u32) -> PbsConfig {
        self.cpus_per_node = cpus;
        self
    }

    /// How each node's manager is started; [`Launcher::SingleNode`] by default.
    /// A block with one manager for all its nodes ([`ManagerLayout::PerBlock`]) fans
    /// nothing out: it keeps only a [`Launcher::Wrapped`] prefix ([`Launcher::block_line`]).
    pub fn launcher(mut self, launcher: Launcher) -> PbsConfig {
        self.launcher = launcher;
        self
    }
}

batch_options!(PbsConfig, "#PBS", "`qsub`, `qstat` and `qdel`");

/// A [`Provider`] whose blocks are PBS Pro or Torque jobs; block ids are the whole job ids
/// `qsub` prints (`123.server`), since that is what `qstat` and `qdel` take.
///
/// - [`submit`](Provider::submit) writes the block's batch script and runs `qsub <script>`.
///   A job the server refuses (unknown queue, over a queue's limits) is a
///   [`ProviderError::is_rejected`] error "qsub rejected the job: ...". The script starts
///   one manager per node through the [`Launcher`], or, for a block of
///   [`ManagerLayout::PerBlock`], one manager in the script itself, and asks for the
///   request's rank slots on each node (`mpiprocs` for PBS Pro; at least that many `ppn`
///   for Torque).
/// - [`status`](Provider::status) runs one `qstat -f` for all blocks: `-F json -x` for PBS
///   Pro (falling back to the text form if the JSON cannot be had or read), text for Torque.
///   `Q`, `H`, `W`, `T`, `S`, `U` are [`BlockState::Pending`]; `R`, `E`, `B` are
///   [`BlockState::Running`]; `C` and `F` are [`BlockState::Completed`] with exit status 0
///   and [`BlockState::Failed`] otherwise, saying why (a walltime that expired, a signal, a
///   PBS error); `X` and any finished job this provider cancelled are
///   [`BlockState::Cancelled`]. Jobs the server does not know (any more) are
///   [`BlockState::Unknown`].
/// - [`cancel`](Provider::cancel) runs `qdel`; a job that already ended or is unknown is
///   `Ok` (when `qdel` fails, `qstat` is asked which it is).
#[derive(Debug)]
pub struct PbsProvider {
    config: PbsConfig,
    scripts_dir: PathBuf,
    submitted: AtomicU64,
    clock: StateClock,
    /// Jobs this provider cancelled: PBS reports a deleted job as one that ended with a
    /// signal (exit status 271), indistinguishable from a crash without this memory.
    cancelled: Mutex<HashSet<BlockId>>,
}

impl PbsProvider {
    /// A provider configured by `config`.
    pub fn new(config: PbsConfig) -> PbsProvider {
        let scripts_dir = config.batch.scripts_dir_or_default("pbs");
        PbsProvider {
            config,
            scripts_dir,
            submitted: AtomicU64::new(0),
            clock: StateClock::default(),
            cancelled: Mutex::default(),
        }
    }

    /// Where batch scripts and job output are written.
    pub fn scripts_dir(&self) -> &std::path::Path {
        &self.scripts_dir
    }

    fn command(&self, name: &str) -> SchedulerCommand {
        self.config.batch.command(name)
    }

    fn directives(&self, request: &BlockRequest, name: &str) -> Result<Vec<String>, ProviderError> {
        let config = &self.config;
        let nodes = request.node_count();
        let cpus = config.cpus_per_node;
        // A block with one manager for all its nodes lists each node once per rank slot in
        // PBS_NODEFILE, where the MPI launchers find how many ranks a host takes.
        let ranks = match request.manager_layout() {
            ManagerLayout::PerNode => None,
            ManagerLayout::PerBlock => Some(request.per_node_rank_slots()),
        };
        let mut lines = vec![format!("-N {name}")];
        match config.flavor {
            PbsFlavor::PbsPro => {
                let mpiprocs = ranks.map_or(String::new(), |ranks| format!(":mpiprocs={ranks}"));
                lines.push(format!("-l select={nodes}:ncpus={cpus}{mpiprocs}"));
                if nodes > 1 {
                    // Without it PBS Pro may pack several chunks onto one node, and two
                    // managers would share it while another node is missing.
                    lines.push("-l place=scatter".to_string());
                }
            }
            // Torque lists a node once per processor (`ppn`), so rank slots are processors.
            PbsFlavor::Torque => {
                let ppn = ranks.map_or(cpus, |ranks| {
                    cpus.max(u32::try_from(ranks).unwrap_or(u32::MAX))
                });
                lines.push(format!("-l nodes={nodes}:ppn={ppn}"));
            }
        }
        if let Some(walltime) = request.walltime_limit() {
            lines.push(format!("-l walltime={}", walltime_hms(walltime)));
        }
        if let Some(queue) = &config.queue {
            lines.push(format!("-q {queue}"));
        }
        if let Some(account) = &config.account {
            lines.push(format!("-A {account}"));
        }
        lines.push("-j oe".to_string());
        lines.push(format!("-o {}", output_path(&self.scripts_dir, name)));
        config.batch.directive_lines("#PBS", &lines)
    }

    async fn submit_block(&self, request: &BlockRequest) -> Result<BlockId, ProviderError> {
        let seq = self.submitted.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{}-{seq}", self.config.batch.job_name);
        let path = script::write_batch_job(
            request,
            &self.config.launcher,
            &name,
            &self.scripts_dir,
            "$PBS_JOBID",
            |name| self.directives(request, name),
        )?;
        // The name and output options are given on the command line as well as in the
        // script: PBS takes either, and front ends that read only the command line (Slurm's
        // PBS wrappers) would otherwise write the output into the current directory.
        let command = self
            .command("qsub")
            .args([
                "-N",
                &name,
                "-j",
                "oe",
                "-o",
                &output_path(&self.scripts_dir, &name),
            ])
            .arg(path.to_string_lossy());
        let output = self.config.batch.runner.run(command.clone()).await?;
        if !output.success() {
            return Err(qsub_failure(&command, &output));
        }
        let id = parse_qsub_id(&output.stdout).ok_or_else(|| {
            ProviderError::command(
                command.to_string(),
                format!(
                    "printed no job id funcx can read: stdout {:?}, stderr {:?}",
                    output.stdout.trim(),
                    output.stderr.trim()
                ),
            )
        })?;
        tracing::info!(block = %id, script = %path.display(), "submitted a PBS job");
        Ok(id)
    }

    /// Runs `qstat -f` for `blocks` and parses what it printed. `qstat` exits non-zero when
    /// any id is unknown but still prints the others, so its output is read either way, and
    /// only a failure that printed no job at all and no "Unknown Job Id" is an error.
    async fn qstat(&self, blocks: &[BlockId]) -> Result<HashMap<String, PbsJob>, ProviderError> {
        let ids = blocks.iter().map(|id| id.as_str().to_string());
        if self.config.flavor == PbsFlavor::PbsPro {
            let command = self
                .command("qstat")
                .args(["-f", "-F", "json", "-x"])
                .args(ids.clone());
            let output = self.config.batch.runner.run(command.clone()).await?;
            match parse_qstat_json(&output.stdout) {
                Some(jobs) => {
                    return checked(jobs, &command, &output);
                }
                None => tracing::debug!(
                    %command,
                    stderr = output.stderr.trim(),
                    "qstat printed no JSON funcx can read; asking for text"
                ),
            }
        }
        let mut command = self.command("qstat").arg("-f");
        if self.config.flavor == PbsFlavor::PbsPro {
            command = command.arg("-x");
        }
        let command = command.args(ids);
        let output = self.config.batch.runner.run(command.clone()).await?;
        checked(parse_qstat_text(&output.stdout), &command, &output)
    }

    async fn block_status(&self, blocks: &[BlockId]) -> Result<Vec<BlockStatus>, ProviderError> {
        if blocks.is_empty() {
            return Ok(Vec::new());
        }
        let jobs = self.qstat(blocks).await?;
        let cancelled = self
            .cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(blocks
            .iter()
            .map(|id| {
                let state = match jobs.get(id.as_str()) {
                    Some(job) => {
                        let state = job.block_state(self.config.flavor);
                        if state.is_finished() && cancelled.contains(id) {
                            BlockState::Cancelled
                        } else {
                            state
                        }
                    }
                    None => BlockState::Unknown(format!(
                        "the PBS server does not know job {id} (never submitted, or finished \
                         and forgotten)"
                    )),
                };
                self.clock.observe(id, state)
            })
            .collect())
    }

    async fn cancel_block(&self, block: &BlockId) -> Result<(), ProviderError> {
        let command = self.command("qdel").arg(block.as_str());
        let output = self.config.batch.runner.run(command.clone()).await?;
        if !output.success() {
            // `qdel` of a job that ended fails, with a message that differs between PBS
            // versions (Slurm's wrapper prints none): ask the server how the job is instead
            // of reading the message.
            let states = self.block_status(std::slice::from_ref(block)).await;
            let ended = match states.as_deref() {
                Ok([status]) => {
                    status.state.is_finished() || matches!(status.state, BlockState::Unknown(_))
                }
                _ => false,
            };
            if ended {
                return Ok(());
            }
            return Err(output.failure(&command));
        }
        {
            let mut cancelled = self
                .cancelled
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if cancelled.len() >= 4096 {
                cancelled.clear();
            }
            cancelled.insert(block.clone());
        }
        Ok(())
    }
}

impl Provider for PbsProvider {
    fn name(&self) -> &str {
        "pbs"
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

/// Where a job's joined stdout and stderr go.
fn output_path(dir: &std::path::Path, name: &str) -> String {
    dir.join(format!("{name}.out"))
        .to_string_lossy()
        .into_owned()
}

fn checked(
    jobs: HashMap<String, PbsJob>,
    command: &SchedulerCommand,
    output: &CommandOutput,
) -> Result<HashMap<String, PbsJob>, ProviderError> {
    // Exit code 153 is PBSE_UNKJOBID (15001) truncated to a byte: Torque's qstat (and
    // Slurm's wrapper) exit with it, silently in the wrapper's case, when an id is unknown.
    let unknown_ids = output.code == Some(153)
        || output.stderr.contains("Unknown Job Id")
        || output.stderr.contains("Job has finished")
        || output.stderr.contains("Invalid job id");
    if output.success() || !jobs.is_empty() || unknown_ids {
        Ok(jobs)
    } else {
        Err(output.failure(command))
    }
}

/// Reads `HH:MM:SS` (or `MM:SS`, `SS`) back into seconds; `None` when it is not that, or
/// too large to count (qstat's output is outside input: found by the `pbs` fuzz target).
fn parse_hms(text: &str) -> Option<u64> {
    text.trim().split(':').try_fold(0_u64, |total, part| {
        total
            .checked_mul(60)?
            .checked_add(part.parse::<u64>().ok()?)
    })
}

/// The job id `qsub` printed: the last non-empty line, one word starting with a digit
/// (`123.server`, `123`, `123[].server` for arrays).
pub(crate) fn parse_qsub_id(stdout: &str) -> Option<BlockId> {
    let line = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())?;
    let plausible =
        line.starts_with(|c: char| c.is_ascii_digit()) && !line.contains(char::is_whitespace);
    plausible.then(|| BlockId::new(line))
}

/// Messages that say the server could not be reached, not that it refused the job.
const TRANSIENT: &[&str] = &[
    "cannot connect to server",
    "Connection refused",
    "timed out",
    "pbs_iff",
    "try again",
    "temporarily",
    "Unable to contact",
];

pub(crate) fn qsub_failure(command: &SchedulerCommand, output: &CommandOutput) -> ProviderError {
    let said = if output.stderr.trim().is_empty() {
        output.stdout.trim()
    } else {
        output.stderr.trim()
    };
    if said.is_empty() || TRANSIENT.iter().any(|marker| said.contains(marker)) {
        return output.failure(command);
    }
    let said = said.lines().map(str::trim).collect::<Vec<_>>().join("; ");
    ProviderError::rejected(format!("qsub rejected the job: {said}"))
}

/// One job as `qstat -f` described it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PbsJob {
    /// `job_state`: one letter.
    pub state: String,
    /// `exit_status` (Torque) / `Exit_status` (PBS Pro), once the job ended.
    pub exit_status: Option<i64>,
    /// `Resource_List.walltime`, in seconds.
    pub walltime_limit: Option<u64>,
    /// `resources_used.walltime`, in seconds.
    pub walltime_used: Option<u64>,
    /// `comment`, which PBS Pro fills with why a job waits or how it ended.
    pub comment: Option<String>,
}

impl PbsJob {
    /// Takes one attribute; names are matched case-insensitively because PBS Pro writes
    /// `Exit_status` and Torque `exit_status`.
    fn set(&mut self, key: &str, value: &str) {
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "job_state" => self.state = value.to_string(),
            "exit_status" => self.exit_status = value.parse().ok(),
            "resource_list.walltime" => self.walltime_limit = parse_hms(value),
            "resources_used.walltime" => self.walltime_used = parse_hms(value),
            "comment" => self.comment = Some(value.to_string()),
            _ => {}
        }
    }

    fn ran_out_of_walltime(&self) -> bool {
        matches!((self.walltime_used, self.walltime_limit), (Some(used), Some(limit)) if used >= limit)
    }

    /// The block state for this job.
    pub(crate) fn block_state(&self, flavor: PbsFlavor) -> BlockState {
        match self.state.trim() {
            // Queued, held, waiting for its start time, being moved, suspended (S, and U:
            // suspended because the workstation is busy): no manager runs.
            "Q" | "H" | "W" | "T" | "S" | "U" => BlockState::Pending,
            // Running, exiting (epilogue), an array that began.
            "R" | "E" | "B" => BlockState::Running,
            // Finished (PBS Pro keeps history with `-x`; Torque keeps completed jobs for
            // `keep_completed` seconds).
            "C" | "F" => match self.exit_status {
                // Slurm's PBS wrapper prints no exit_status at all; a real server always
                // does for a job that ran, so its absence is reported, not guessed over.
                Some(0) => BlockState::Completed,
                Some(status) => BlockState::Failed(self.failure(flavor, status)),
                None => BlockState::Failed(
                    "the job finished, but PBS reported no exit status to tell whether it succeeded"
                        .to_string(),
                ),
            },
            // A subjob that finished or was deleted.
            "X" => BlockState::Cancelled,
            // Moved to another server: this one can no longer say.
            "M" => BlockState::Unknown("PBS moved the job to another server (state M)".to_string()),
            other => BlockState::Unknown(format!(
                "PBS reported job_state {other:?}, which funcx does not know"
            )),
        }
    }

    fn failure(&self, flavor: PbsFlavor, status: i64) -> String {
        let walltime = "the walltime expired and PBS ended the job";
        let why = if let Some(meaning) = negative_status(flavor, status) {
            meaning.to_string()
        } else if status > 256 {
            // PBS reports a job its MoM killed with a signal as 256 + the signal.
            if self.ran_out_of_walltime() {
                format!("{walltime}: killed by signal {}", status - 256)
            } else {
                format!("the job was killed by signal {}", status - 256)
            }
        } else if self.ran_out_of_walltime() {
            walltime.to_string()
        } else if status > 128 {
            format!(
                "the job ended with exit code {status} (a process killed by signal {})",
                status - 128
            )
        } else {
            format!("the job ended with exit code {status}")
        };
        match &self.comment {
            Some(comment) if !comment.is_empty() => {
                format!("{why} (PBS exit_status {status}; comment: {comment})")
            }
            _ => format!("{why} (PBS exit_status {status})"),
        }
    }
}

/// What PBS's own negative exit statuses mean (`JOB_EXEC_*` in each one's `job.h`).
fn negative_status(flavor: PbsFlavor, status: i64) -> Option<&'static str> {
    let common = match status {
        -1 => Some("PBS could not start the job (JOB_EXEC_FAIL1)"),
        -2 => Some("PBS could not start the job (JOB_EXEC_FAIL2)"),
        -3 => Some("PBS could not start the job and will retry (JOB_EXEC_RETRY)"),
        -4 => Some("the job was aborted while its node initialised (JOB_EXEC_INITABT)"),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    match (flavor, status) {
        (PbsFlavor::PbsPro, -24 | -25) => Some("the job used more CPUs than it asked for"),
        (PbsFlavor::PbsPro, -26) => Some("the job used more virtual memory than it asked for"),
        (PbsFlavor::PbsPro, -27) => Some("the job used more memory than it asked for"),
        (PbsFlavor::PbsPro, -28) => Some("the job used more CPU time than it asked for"),
        (PbsFlavor::PbsPro, -29) => Some("the walltime expired and PBS ended the job"),
        (PbsFlavor::Torque, -10) => Some("the job used more memory than it asked for"),
        (PbsFlavor::Torque, -11) => Some("the walltime expired and PBS ended the job"),
        (PbsFlavor::Torque, -12) => Some("the job used more CPU time than it asked for"),
        (_, status) if status < 0 => Some("PBS ended the job before it ran to its end"),
        _ => None,
    }
}

/// `qstat -f -F json` (PBS Pro): `{"Jobs": {"123.server": {"job_state": "R", ...}}}`.
/// `None` if the text is not that JSON at all (e.g. a `qstat` without `-F json`); a job
/// entry that is not an object is skipped.
pub(crate) fn parse_qstat_json(stdout: &str) -> Option<HashMap<String, PbsJob>> {
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).ok()?;
    let object = value.as_object()?;
    let mut jobs = HashMap::new();
    // PBS Pro leaves out "Jobs" when none of the ids is known.
    let Some(listed) = object.get("Jobs") else {
        return Some(jobs);
    };
    for (id, attributes) in listed.as_object()? {
        let Some(attributes) = attributes.as_object() else {
            tracing::warn!(job = %id, "qstat's JSON describes a job funcx cannot read; ignored");
            continue;
        };
        let mut job = PbsJob::default();
        for (key, value) in attributes {
            match value {
                serde_json::Value::String(text) => job.set(key, text),
                serde_json::Value::Number(number) => job.set(key, &number.to_string()),
                serde_json::Value::Object(nested) => {
                    // Resource_List and resources_used are nested objects in the JSON.
                    for (inner, value) in nested {
                        let text = match value {
                            serde_json::Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        job.set(&format!("{key}.{inner}"), &text);
                    }
                }
                _ => {}
            }
        }
        jobs.insert(id.clone(), job);
    }
    Some(jobs)
}

/// `qstat -f` text (Torque, PBS Pro without `-F json`):
///
/// ```text
/// Job Id: 123.server
///     Job_Name = funcx-1
///     job_state = C
///     exit_status = 0
/// ```
///
/// Long values continue on indented lines without ` = `; those are appended. Other lines
/// are ignored.
pub(crate) fn parse_qstat_text(stdout: &str) -> HashMap<String, PbsJob> {
    let mut jobs = HashMap::new();
    let mut current: Option<(String, PbsJob)> = None;
    let mut last: Option<(String, String)> = None;
    let finish_attribute = |job: &mut PbsJob, last: &mut Option<(String, String)>| {
        if let Some((key, value)) = last.take() {
            job.set(&key, &value);
        }
    };
    for line in stdout.lines() {
        if let Some(id) = line.trim().strip_prefix("Job Id:") {
            if let Some((id, mut job)) = current.take() {
                finish_attribute(&mut job, &mut last);
                jobs.insert(id, job);
            }
            current = Some((id.trim().to_string(), PbsJob::default()));
            continue;
        }
        let Some((_, job)) = current.as_mut() else {
            continue;
        };
        // Attributes are indented (four spaces in Torque, a tab in Slurm's PBS wrapper);
        // a long value continues on lines indented with a tab that have no ` = `.
        if let Some((key, value)) = line.split_once(" = ") {
            finish_attribute(job, &mut last);
            last = Some((key.trim().to_string(), value.trim().to_string()));
        } else if line.starts_with(char::is_whitespace) && !line.trim().is_empty() {
            if let Some((_, value)) = last.as_mut() {
                value.push_str(line.trim());
            }
        }
    }
    if let Some((id, mut job)) = current.take() {
        finish_attribute(&mut job, &mut last);
        jobs.insert(id, job);
    }
    jobs
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use funcx_core::ManagerCommand;

    use super::*;
    use crate::toolkit::mock::{ended, has_lines, printed, MockRunner};

    // Hand-written from the documented formats (no PBS server can be had here).
    const PBS_PRO_JSON: &str = include_str!("../../tests/data/pbs_pro_qstat_f_json.json");
    const TORQUE_TEXT: &str = include_str!("../../tests/data/pbs_torque_qstat_f.txt");
    // Recorded from Slurm's PBS wrappers.
    const SHIM_RUNNING: &str = include_str!("../../tests/data/pbs_shim_qstat_running.txt");
    const SHIM_COMPLETED: &str = include_str!("../../tests/data/pbs_shim_qstat_completed.txt");

    fn provider(runner: MockRunner, config: PbsConfig) -> PbsProvider {
        let dir = std::env::temp_dir().join(format!("funcx-pbs-unit-{}", std::process::id()));
        PbsProvider::new(config.scripts_dir(dir).runner(Arc::new(runner)))
    }

    fn request() -> BlockRequest {
        BlockRequest::new(ManagerCommand::new("/opt/funcx-manager"))
    }

    fn ids(ids: &[&str]) -> Vec<BlockId> {
        ids.iter().map(|id| BlockId::new(*id)).collect()
    }

    async fn states(provider: &PbsProvider, blocks: &[&str]) -> Vec<BlockState> {
        provider
            .status(&ids(blocks))
            .await
            .expect("status")
            .into_iter()
            .map(|status| status.state)
            .collect()
    }

    /// Submits `request` and returns the script `qsub` was given.
    async fn submitted_script(config: PbsConfig, request: BlockRequest) -> String {
        let script = Arc::new(Mutex::new(String::new()));
        let seen = script.clone();
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .withf(|c| c.program == "qsub" && c.args[..4] == ["-N", "funcx-1", "-j", "oe"])
            .times(1)
            .returning(move |c| {
                let script = c.args.last().expect("the script is the last argument");
                *seen.lock().unwrap() = std::fs::read_to_string(script).unwrap();
                printed("123.pbs01\n")
            });
        let id = provider(runner, config)
            .submit(&request)
            .await
            .expect("submit");
        assert_eq!(id.as_str(), "123.pbs01", "the whole id is kept");
        let script = script.lock().unwrap().clone();
        script
    }

    #[tokio::test]
    async fn pbs_pro_scripts_select_chunks_scattered_over_nodes() {
        let config = PbsConfig::new(PbsFlavor::PbsPro)
            .queue("debug")
            .account("proj42")
            .cpus_per_node(32)
            .launcher(Launcher::mpiexec())
            .directive("-l filesystems=home");
        let request = request().nodes(4).walltime(Duration::from_secs(50 * 3600));
        let script = submitted_script(config, request).await;
        has_lines(
            &script,
            &[
                "#PBS -N funcx-1",
                "#PBS -l select=4:ncpus=32",
                "#PBS -l place=scatter",
                "#PBS -l walltime=50:00:00",
                "#PBS -q debug",
                "#PBS -A proj42",
                "#PBS -j oe",
                "#PBS -l filesystems=home",
                "export FUNCX_BLOCK_ID=\"$PBS_JOBID\"",
            ],
        );
        assert!(script.contains("mpiexec -n 4 -ppn 1 "), "{script}");
    }

    #[tokio::test]
    async fn torque_scripts_ask_for_nodes_and_ppn() {
        let config = PbsConfig::new(PbsFlavor::Torque).cpus_per_node(4);
        let script = submitted_script(config, request().walltime(Duration::from_secs(90))).await;
        has_lines(
            &script,
            &[
                "#PBS -l nodes=1:ppn=4",
                "#PBS -l walltime=00:01:30",
                "FUNCX_NODE_INDEX=0 /opt/funcx-manager",
            ],
        );
        assert!(!script.contains("select="), "{script}");
        assert!(!script.contains("place=scatter"), "{script}");
    }

    /// One manager for the whole block: each node listed once per rank slot in
    /// PBS_NODEFILE (PBS Pro's `mpiprocs`; Torque's `ppn`, at least the CPUs asked), and the
    /// manager run once in the script, not through the configured launcher.
    #[tokio::test]
    async fn per_block_jobs_ask_for_rank_slots_and_run_one_manager_in_the_script() {
        let request = request()
            .nodes(3)
            .layout(ManagerLayout::PerBlock)
            .rank_slots_per_node(4);
        let manager_line = "FUNCX_NODE_INDEX=0 /opt/funcx-manager";
        let pro = PbsConfig::new(PbsFlavor::PbsPro)
            .cpus_per_node(8)
            .launcher(Launcher::mpiexec());
        let script = submitted_script(pro, request.clone()).await;
        has_lines(
            &script,
            &[
                "#PBS -l select=3:ncpus=8:mpiprocs=4",
                "#PBS -l place=scatter",
            ],
        );
        assert!(!script.contains("mpiexec"), "{script}");
        assert_eq!(script.lines().last(), Some(manager_line), "{script}");
        for (cpus, ppn) in [(2, 4), (16, 16)] {
            let torque = PbsConfig::new(PbsFlavor::Torque).cpus_per_node(cpus);
            let script = submitted_script(torque, request.clone()).await;
            has_lines(&script, &[&format!("#PBS -l nodes=3:ppn={ppn}")]);
            assert_eq!(script.lines().last(), Some(manager_line), "{script}");
        }
    }

    #[test]
    fn qsub_ids_are_parsed_strictly() {
        for (stdout, id) in [
            ("123.server\n", Some("123.server")),
            ("  77  \n", Some("77")),
            ("123[].server\n", Some("123[].server")),
            ("warning: x\n9.pbs\n", Some("9.pbs")),
            ("", None),
            ("qsub: submit error\n", None),
            ("12 34\n", None),
        ] {
            assert_eq!(
                parse_qsub_id(stdout).as_ref().map(BlockId::as_str),
                id,
                "{stdout:?}"
            );
        }
    }

    #[tokio::test]
    async fn refused_jobs_are_rejections_and_an_unreachable_server_is_not() {
        let mut runner = MockRunner::new();
        let mut sequence = mockall::Sequence::new();
        runner
            .expect_run()
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| ended(170, "", "qsub: Unknown queue\n"));
        runner
            .expect_run()
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| ended(1, "", "qsub: cannot connect to server pbs01 (errno=111)\n"));
        runner
            .expect_run()
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| ended(0, "nonsense output", ""));
        let provider = provider(runner, PbsConfig::new(PbsFlavor::PbsPro).queue("nope"));
        let error = provider.submit(&request()).await.unwrap_err();
        assert!(error.is_rejected(), "{error}");
        assert!(
            error
                .to_string()
                .contains("qsub rejected the job: qsub: Unknown queue"),
            "{error}"
        );
        let error = provider.submit(&request()).await.unwrap_err();
        assert!(
            error.is_command() && error.to_string().contains("cannot connect"),
            "{error}"
        );
        let error = provider.submit(&request()).await.unwrap_err();
        assert!(
            error.is_command() && error.to_string().contains("nonsense"),
            "{error}"
        );
        // Zero nodes and more nodes than the launcher starts never reach qsub.
        assert!(provider
            .submit(&request().nodes(0))
            .await
            .unwrap_err()
            .is_rejected());
        assert!(provider
            .submit(&request().nodes(2))
            .await
            .unwrap_err()
            .is_rejected());
    }

    #[tokio::test]
    async fn pbs_pro_status_reads_the_json() {
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .withf(|c| {
                c.program == "qstat"
                    && c.args[..4] == ["-f", "-F", "json", "-x"]
                    && c.args.len() == 4 + 8
            })
            .times(1)
            .returning(|_| ended(35, PBS_PRO_JSON, "qstat: Unknown Job Id 999.pbs01\n"));
        let provider = provider(runner, PbsConfig::new(PbsFlavor::PbsPro));
        let states = states(
            &provider,
            &[
                "101.pbs01",
                "102.pbs01",
                "103.pbs01",
                "104.pbs01",
                "105.pbs01",
                "106.pbs01",
                "107.pbs01",
                "999.pbs01",
            ],
        )
        .await;
        assert_eq!(states[0], BlockState::Pending);
        assert_eq!(states[1], BlockState::Running);
        assert_eq!(states[2], BlockState::Completed);
        let failed = |state: &BlockState, words: &[&str]| match state {
            BlockState::Failed(why) => {
                for word in words {
                    assert!(why.contains(word), "{word:?} not in {why:?}");
                }
            }
            other => panic!("{other:?}"),
        };
        failed(&states[3], &["exit code 3", "and failed"]);
        failed(&states[4], &["walltime expired", "-29"]);
        failed(&states[5], &["signal 9", "265"]);
        assert_eq!(states[6], BlockState::Pending);
        assert!(matches!(&states[7], BlockState::Unknown(why) if why.contains("999.pbs01")));
    }

    #[tokio::test]
    async fn pbs_pro_falls_back_to_text_when_json_fails() {
        let mut runner = MockRunner::new();
        let mut sequence = mockall::Sequence::new();
        runner
            .expect_run()
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| ended(2, "", "qstat: invalid option -- 'F'\n"));
        runner
            .expect_run()
            .withf(|c| c.args == ["-f", "-x", "202.torque01.cluster"])
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| printed(TORQUE_TEXT));
        let provider = provider(runner, PbsConfig::new(PbsFlavor::PbsPro));
        assert_eq!(
            states(&provider, &["202.torque01.cluster"]).await,
            [BlockState::Running]
        );
    }

    #[tokio::test]
    async fn torque_status_reads_the_text() {
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .withf(|c| c.program == "qstat" && c.args[0] == "-f" && c.args[1] != "-F")
            .times(1)
            .returning(|_| printed(TORQUE_TEXT));
        let provider = provider(runner, PbsConfig::new(PbsFlavor::Torque));
        let blocks: Vec<String> = (201..=207)
            .map(|n| format!("{n}.torque01.cluster"))
            .collect();
        let blocks: Vec<&str> = blocks.iter().map(String::as_str).collect();
        let states = states(&provider, &blocks).await;
        assert_eq!(states[0], BlockState::Pending);
        assert_eq!(states[1], BlockState::Running);
        assert_eq!(states[2], BlockState::Completed);
        assert!(matches!(&states[3], BlockState::Failed(why) if why.contains("exit code 3")));
        assert!(
            matches!(&states[4], BlockState::Failed(why) if why.contains("walltime expired")),
            "{:?}",
            states[4]
        );
        assert_eq!(states[5], BlockState::Running, "E is exiting");
        assert!(matches!(&states[6], BlockState::Failed(why) if why.contains("signal 15")));
    }

    #[test]
    fn continuation_lines_are_joined() {
        let jobs = parse_qstat_text(TORQUE_TEXT);
        assert_eq!(jobs.len(), 7);
        let job = &jobs["201.torque01.cluster"];
        assert_eq!(job.state, "Q");
        assert_eq!(job.walltime_limit, Some(3600));
    }

    #[test]
    fn the_wrappers_text_is_read() {
        let running = parse_qstat_text(SHIM_RUNNING);
        assert_eq!(running["11"].state, "R");
        assert_eq!(
            running["11"].block_state(PbsFlavor::Torque),
            BlockState::Running
        );
        let completed = parse_qstat_text(SHIM_COMPLETED);
        assert_eq!(completed["11"].state, "C");
        assert!(completed["11"].block_state(PbsFlavor::Torque).is_finished());
    }

    #[test]
    fn odd_qstat_output_is_no_panic() {
        assert!(parse_qstat_text("").is_empty());
        assert!(parse_qstat_text("random\n = \n\tx\n").is_empty());
        assert!(parse_qstat_json("not json").is_none());
        assert_eq!(parse_qstat_json("{}").map(|jobs| jobs.len()), Some(0));
        assert!(parse_qstat_json("[1, 2]").is_none());
        let jobs =
            parse_qstat_json(r#"{"Jobs": {"1.x": 7, "2.x": {"job_state": "R"}}}"#).expect("parsed");
        assert_eq!(jobs.len(), 1);
        let mut job = PbsJob::default();
        job.set("exit_status", "not a number");
        job.set("Resource_List.walltime", "1:2:x");
        assert_eq!(job.exit_status, None);
        assert_eq!(job.walltime_limit, None);
    }

    #[test]
    fn every_pbs_state_is_mapped() {
        let state = |letter: &str, exit: Option<i64>| {
            PbsJob {
                state: letter.to_string(),
                exit_status: exit,
                ..PbsJob::default()
            }
            .block_state(PbsFlavor::PbsPro)
        };
        for pending in ["Q", "H", "W", "T", "S", "U"] {
            assert_eq!(state(pending, None), BlockState::Pending, "{pending}");
        }
        for running in ["R", "E", "B"] {
            assert_eq!(state(running, None), BlockState::Running, "{running}");
        }
        for finished in ["C", "F"] {
            assert_eq!(state(finished, Some(0)), BlockState::Completed);
            assert!(matches!(state(finished, Some(1)), BlockState::Failed(_)));
            assert!(matches!(state(finished, None), BlockState::Failed(_)));
        }
        assert_eq!(state("X", None), BlockState::Cancelled);
        assert!(matches!(state("M", None), BlockState::Unknown(_)));
        assert!(matches!(state("Z", None), BlockState::Unknown(why) if why.contains("Z")));
        let why = |flavor, status| match (PbsJob {
            state: "F".into(),
            exit_status: Some(status),
            ..PbsJob::default()
        })
        .block_state(flavor)
        {
            BlockState::Failed(why) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(PbsFlavor::PbsPro, -29).contains("walltime"));
        assert!(why(PbsFlavor::PbsPro, -27).contains("memory"));
        assert!(why(PbsFlavor::Torque, -11).contains("walltime"));
        assert!(why(PbsFlavor::Torque, -10).contains("memory"));
        assert!(why(PbsFlavor::Torque, -1).contains("could not start"));
        assert!(why(PbsFlavor::Torque, -99).contains("before it ran to its end"));
        assert!(why(PbsFlavor::Torque, 137).contains("signal 9"));
        assert!(why(PbsFlavor::Torque, 271).contains("signal 15"));
    }

    #[tokio::test]
    async fn a_cancelled_job_reports_cancelled_and_finished_jobs_cancel_fine() {
        let mut runner = MockRunner::new();
        let mut sequence = mockall::Sequence::new();
        // Cancel a running job, then see it finish with 271 (SIGTERM) as PBS reports it.
        runner
            .expect_run()
            .withf(|c| c.program == "qdel" && c.args == ["207.torque01.cluster"])
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| printed(""));
        runner
            .expect_run()
            .withf(|c| c.program == "qstat")
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| printed(TORQUE_TEXT));
        // Cancel a job that already completed: qdel fails, qstat says it finished.
        runner
            .expect_run()
            .withf(|c| c.program == "qdel")
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| ended(1, "", ""));
        runner
            .expect_run()
            .withf(|c| c.program == "qstat")
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| printed(TORQUE_TEXT));
        // A qdel that fails while the job still runs is an error.
        runner
            .expect_run()
            .withf(|c| c.program == "qdel")
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| ended(1, "", "qdel: Server is busy"));
        runner
            .expect_run()
            .withf(|c| c.program == "qstat")
            .times(1)
            .in_sequence(&mut sequence)
            .returning(|_| printed(TORQUE_TEXT));
        let provider = provider(runner, PbsConfig::new(PbsFlavor::Torque));
        let block = BlockId::new("207.torque01.cluster");
        provider.cancel(&block).await.expect("cancel");
        assert_eq!(
            states(&provider, &["207.torque01.cluster"]).await,
            [BlockState::Cancelled]
        );
        provider
            .cancel(&BlockId::new("203.torque01.cluster"))
            .await
            .expect("cancelling a completed job is Ok");
        let error = provider
            .cancel(&BlockId::new("202.torque01.cluster"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("Server is busy"), "{error}");
    }

    #[tokio::test]
    async fn a_failing_qstat_is_an_error() {
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .returning(|_| ended(1, "", "qstat: cannot connect to server"));
        let provider = provider(runner, PbsConfig::new(PbsFlavor::Torque));
        let error = provider.status(&ids(&["1"])).await.unwrap_err();
        assert!(error.to_string().contains("cannot connect"), "{error}");
    }

    #[tokio::test]
    async fn a_silent_exit_153_means_unknown_ids() {
        // Recorded from Slurm's qstat wrapper asked about one unknown id.
        let mut runner = MockRunner::new();
        runner.expect_run().returning(|_| ended(153, "", ""));
        let provider = provider(runner, PbsConfig::new(PbsFlavor::Torque));
        assert!(matches!(
            states(&provider, &["987654321"]).await[0],
            BlockState::Unknown(_)
        ));
    }

    #[test]
    fn walltimes_are_formatted_as_pbs_reads_them() {
        assert_eq!(walltime_hms(Duration::from_secs(59)), "00:00:59");
        assert_eq!(
            walltime_hms(Duration::from_secs(49 * 3600 + 61)),
            "49:01:01"
        );
        assert_eq!(parse_hms("01:00:02"), Some(3602));
        // Found by the `pbs` fuzz target: an hour count past u64 seconds overflowed.
        assert_eq!(parse_hms("18446744073709551615:59"), None);
    }
}
