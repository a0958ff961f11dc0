//! Blocks as PBS Pro / OpenPBS or Torque batch jobs: `qsub`, `qstat -f` and `qdel`, all
//! through a [`CommandRunner`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use funcx_core::{BlockId, BlockRequest, BlockState, BlockStatus, Provider, ProviderError};
use futures::future::BoxFuture;

use crate::command::{CommandOutput, CommandRunner, SchedulerCommand, ShellRunner};
use crate::launcher::Launcher;
use crate::script::{self, ScriptParts, StateClock};

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
///         .pbs_line("-l filesystems=home:eagle"),
/// );
/// # drop(provider);
/// ```
#[derive(Clone)]
pub struct PbsConfig {
    flavor: PbsFlavor,
    queue: Option<String>,
    account: Option<String>,
    cpus_per_node: u32,
    job_name: String,
    extra_lines: Vec<String>,
    launcher: Launcher,
    scripts_dir: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
    runner: Arc<dyn CommandRunner>,
}

impl fmt::Debug for PbsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PbsConfig")
            .field("flavor", &self.flavor)
            .field("queue", &self.queue)
            .field("account", &self.account)
            .field("cpus_per_node", &self.cpus_per_node)
            .field("job_name", &self.job_name)
            .field("extra_lines", &self.extra_lines)
            .field("launcher", &self.launcher)
            .field("scripts_dir", &self.scripts_dir)
            .field("bin_dir", &self.bin_dir)
            .finish_non_exhaustive()
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
            job_name: "funcx".to_string(),
            extra_lines: Vec::new(),
            launcher: Launcher::SingleNode,
            scripts_dir: None,
            bin_dir: None,
            runner: Arc::new(ShellRunner::new()),
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

    /// The prefix of job names (`-N`), `funcx` by default; each block is `<prefix>-<n>`.
    pub fn job_name(mut self, prefix: impl Into<String>) -> PbsConfig {
        self.job_name = prefix.into();
        self
    }

    /// One more directive, with or without the `#PBS` in front (`-l filesystems=home`).
    pub fn pbs_line(mut self, line: impl Into<String>) -> PbsConfig {
        self.extra_lines.push(line.into());
        self
    }

    /// How each node's manager is started; [`Launcher::SingleNode`] by default.
    pub fn launcher(mut self, launcher: Launcher) -> PbsConfig {
        self.launcher = launcher;
        self
    }

    /// Where batch scripts and the jobs' output (`-j oe`, `<name>.out`) are written; on a
    /// real cluster a file system the compute nodes share. By default a directory of this
    /// process under the temporary directory.
    pub fn scripts_dir(mut self, dir: impl Into<PathBuf>) -> PbsConfig {
        self.scripts_dir = Some(dir.into());
        self
    }

    /// Runs `qsub`, `qstat` and `qdel` from `dir` instead of looking them up on `PATH`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> PbsConfig {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Runs the scheduler commands through `runner` ([`ShellRunner`] by default).
    pub fn runner(mut self, runner: Arc<dyn CommandRunner>) -> PbsConfig {
        self.runner = runner;
        self
    }
}

/// A [`Provider`] whose blocks are PBS Pro or Torque jobs; block ids are the whole job ids
/// `qsub` prints (`123.server`), since that is what `qstat` and `qdel` take.
///
/// - [`submit`](Provider::submit) writes the block's batch script and runs `qsub <script>`.
///   A job the server refuses (unknown queue, over a queue's limits) is a
///   [`ProviderError::is_rejected`] error "qsub rejected the job: ...".
/// - [`status`](Provider::status) runs one `qstat -f` for all blocks: `-F json -x` for PBS
///   Pro (falling back to the text form if the JSON cannot be had or read), text for Torque.
///   `Q`, `H`, `W`, `T`, `S`, `U` are [`BlockState::Pending`]; `R`, `E`, `B` are
///   [`BlockState::Running`]; `C` and `F` are [`BlockState::Completed`] with exit status 0
///   and [`BlockState::Failed`] otherwise, saying why (a walltime that expired, a signal, a
///   PBS error); `X` and any finished job this provider cancelled are
///   [`BlockState::Cancelled`]. Jobs the server does not know (any more) are
///   [`BlockState::Unknown`].
/// - [`cancel`](Provider::cancel) runs `qdel`; a job that already ended or is unknown is
///   `Ok`.
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
        let scripts_dir = config
            .scripts_dir
            .clone()
            .unwrap_or_else(|| script::default_scripts_dir("pbs"));
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
        SchedulerCommand::new(script::program(self.config.bin_dir.as_deref(), name))
    }

    fn directives(&self, request: &BlockRequest, name: &str) -> Result<Vec<String>, ProviderError> {
        let config = &self.config;
        let nodes = request.node_count();
        let cpus = config.cpus_per_node;
        let mut lines = vec![format!("-N {name}")];
        match config.flavor {
            PbsFlavor::PbsPro => {
                lines.push(format!("-l select={nodes}:ncpus={cpus}"));
                if nodes > 1 {
                    // Without it PBS Pro may pack several chunks onto one node, and two
                    // managers would share it while another node is missing.
                    lines.push("-l place=scatter".to_string());
                }
            }
            PbsFlavor::Torque => lines.push(format!("-l nodes={nodes}:ppn={cpus}")),
        }
        if let Some(walltime) = request.walltime_limit() {
            lines.push(format!("-l walltime={}", pbs_time(walltime)?));
        }
        if let Some(queue) = &config.queue {
            lines.push(format!("-q {queue}"));
        }
        if let Some(account) = &config.account {
            lines.push(format!("-A {account}"));
        }
        lines.push("-j oe".to_string());
        lines.push(format!(
            "-o {}",
            self.scripts_dir
                .join(format!("{name}.out"))
                .to_string_lossy()
        ));
        let mut directives = Vec::new();
        for line in lines.iter().chain(&config.extra_lines) {
            script::check_directive("qsub option", line)?;
            let line = line.trim();
            directives.push(if line.starts_with("#PBS") {
                line.to_string()
            } else {
                format!("#PBS {line}")
            });
        }
        Ok(directives)
    }

    async fn submit_block(&self, request: &BlockRequest) -> Result<BlockId, ProviderError> {
        request.check()?;
        self.config.launcher.check(request.node_count())?;
        let seq = self.submitted.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{}-{seq}", self.config.job_name);
        let text = script::render(
            request,
            &ScriptParts {
                directives: self.directives(request, &name)?,
                job_id_expr: "$PBS_JOBID",
                launcher: &self.config.launcher,
            },
        )?;
        let path = script::write_script(&self.scripts_dir, &name, &text)?;
        let command = self.command("qsub").arg(path.to_string_lossy());
        let output = self.config.runner.run(command.clone()).await?;
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
            let output = self.config.runner.run(command.clone()).await?;
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
        let output = self.config.runner.run(command.clone()).await?;
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
        let output = self.config.runner.run(command.clone()).await?;
        let said = format!("{}\n{}", output.stderr, output.stdout);
        let gone = said.contains("Unknown Job Id")
            || said.contains("has finished")
            || said.contains("already completed")
            || said.contains("Invalid job id");
        if !output.success() && !gone {
            return Err(output.failure(&command));
        }
        if !gone {
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

fn checked(
    jobs: HashMap<String, PbsJob>,
    command: &SchedulerCommand,
    output: &CommandOutput,
) -> Result<HashMap<String, PbsJob>, ProviderError> {
    let unknown_ids = output.stderr.contains("Unknown Job Id")
        || output.stderr.contains("Job has finished")
        || output.stderr.contains("Invalid job id");
    if output.success() || !jobs.is_empty() || unknown_ids {
        Ok(jobs)
    } else {
        Err(output.failure(command))
    }
}

/// PBS's `walltime`: `HH:MM:SS`, hours unbounded (`48:00:00`), rounded up to whole seconds.
pub(crate) fn pbs_time(walltime: Duration) -> Result<String, ProviderError> {
    let seconds = walltime.as_secs() + u64::from(walltime.subsec_nanos() > 0);
    if seconds == 0 {
        return Err(ProviderError::rejected(
            "a walltime of zero cannot be asked of a scheduler",
        ));
    }
    Ok(format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    ))
}

/// Reads `HH:MM:SS` (or `MM:SS`, `SS`) back into seconds.
fn parse_hms(text: &str) -> Option<u64> {
    text.trim().split(':').try_fold(0_u64, |total, part| {
        Some(total * 60 + part.parse::<u64>().ok()?)
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
                Some(0) => BlockState::Completed,
                Some(status) => BlockState::Failed(self.failure(flavor, status)),
                None => BlockState::Failed(
                    "the job finished without an exit status (PBS did not run it to its end)"
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
/// Long values continue on lines indented with a tab; those are appended. Lines that are
/// neither are ignored.
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
        if line.starts_with('\t') && !line.trim().is_empty() {
            if let Some((_, value)) = last.as_mut() {
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(" = ") {
            finish_attribute(job, &mut last);
            last = Some((key.trim().to_string(), value.trim().to_string()));
        }
    }
    if let Some((id, mut job)) = current.take() {
        finish_attribute(&mut job, &mut last);
        jobs.insert(id, job);
    }
    jobs
}
