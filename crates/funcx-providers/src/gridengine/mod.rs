//! Blocks as Grid Engine jobs (Son of Grid Engine, and the Univa / Altair Grid Engines that
//! share its commands).
//!
//! A block is one job, submitted with `qsub -terse` from a script written to the scripts
//! directory; its state comes from `qstat -xml` while Grid Engine lists the job and from
//! `qacct -j` once it has ended; `qdel` cancels it. Every command goes through a
//! [`CommandRunner`], so all of this is unit-tested against recorded scheduler output.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use funcx_core::{BlockId, BlockRequest, BlockState, BlockStatus, Provider, ProviderError};
#[cfg(doc)]
use funcx_core::{BLOCK_ID_ENV, NODE_INDEX_ENV};
use futures::future::BoxFuture;

use crate::command::{CommandOutput, SchedulerCommand};
use crate::toolkit::{batch_options, script, BatchOptions, StateClock};

pub(crate) mod parse;
mod render;

use parse::{
    classify, is_job_id, parse_error_reason, parse_job_id, parse_qacct, parse_qstat, Listed,
};
use render::render_script;

/// How a [`GridEngineProvider`] writes and submits its jobs.
///
/// ```
/// use funcx_providers::{GridEngineConfig, GridEngineProvider};
///
/// let provider = GridEngineProvider::new(
///     GridEngineConfig::new()
///         .queue("all.q")
///         .parallel_environment("smp", 2)
///         .directive("-l mem_free=4G")
///         .job_name("analysis")
///         .commands_dir("/usr/bin")
///         .command_env("SGE_ROOT", "/var/lib/gridengine"),
/// );
/// # drop(provider);
/// ```
#[derive(Clone)]
pub struct GridEngineConfig {
    queue: Option<String>,
    parallel_environment: Option<(String, usize)>,
    batch: BatchOptions,
}

impl fmt::Debug for GridEngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GridEngineConfig")
            .field("queue", &self.queue)
            .field("parallel_environment", &self.parallel_environment)
            .field("batch", &self.batch)
            .finish()
    }
}

impl Default for GridEngineConfig {
    fn default() -> Self {
        GridEngineConfig::new()
    }
}

impl GridEngineConfig {
    /// The cluster's default queue, no parallel environment, job names `funcx`, scripts and
    /// logs in `funcx-gridengine-<pid>` under the temporary directory, the commands found on
    /// `PATH` and run by a [`ShellRunner`](crate::ShellRunner).
    pub fn new() -> GridEngineConfig {
        GridEngineConfig {
            queue: None,
            parallel_environment: None,
            batch: BatchOptions::default(),
        }
    }

    /// Submits to `queue` (`-q queue`).
    pub fn queue(mut self, queue: impl Into<String>) -> GridEngineConfig {
        self.queue = Some(queue.into());
        self
    }

    /// Asks for `slots_per_node` slots of parallel environment `name` on each node of a block
    /// (`-pe name nodes×slots`). A block of more than one node needs one, with an allocation
    /// rule that spreads the slots over hosts (a fixed number per host), because Grid Engine
    /// allocates slots, not nodes.
    pub fn parallel_environment(
        mut self,
        name: impl Into<String>,
        slots_per_node: usize,
    ) -> GridEngineConfig {
        self.parallel_environment = Some((name.into(), slots_per_node));
        self
    }
}

// Job names (`-N`) are always set: Grid Engine otherwise derives the name from the script,
// and rejects names with spaces or `;`. A prefix must be letters, digits, `_`, `.` and `-`,
// not starting with a digit.
batch_options!(
    GridEngineConfig,
    "#$",
    "`qsub`, `qstat`, `qacct`, `qdel` (and `qrsh` inside multi-node jobs)"
);

/// A [`Provider`] whose blocks are Grid Engine jobs, one manager per node, or one for the
/// whole block ([`ManagerLayout::PerBlock`](funcx_core::ManagerLayout::PerBlock)).
///
/// - **Submit** writes `<scripts dir>/<name>-<pid>-<n>.sh` and runs `qsub -terse` on it; the
///   block id is the job id. The script sets `-N`, `-S /bin/sh`, the log paths, the queue,
///   the parallel environment, `-l h_rt=` from the request's walltime and the extra
///   directives; each node runs the request's `worker_init` lines, then the manager with
///   [`BLOCK_ID_ENV`] (the job id) and [`NODE_INDEX_ENV`]. A block of one node runs its
///   manager as the job itself; a larger block runs node 0 on the job's first host and one
///   manager per other host of the parallel environment through `qrsh -inherit`, so Grid
///   Engine accounts for and kills them with the job. A block with one manager for all its
///   nodes runs it as the job itself, on the first host, which reads the hosts from
///   `PE_HOSTFILE`: it needs a parallel environment even for one node (without one the
///   request is rejected), and asks for at least its rank slots per node on each host.
///   `qsub` refusing the job (unknown queue or parallel environment) is a
///   [`ProviderError::is_rejected`] error with its message.
/// - **Status** runs `qstat -xml` once per call. Queued and held jobs (`qw`, `hqw`) are
///   [`BlockState::Pending`]; running, transferring, restarted and suspended jobs (`r`, `t`,
///   `Rr`, `s`, `S`, `T`) and jobs being deleted (`dr`) are [`BlockState::Running`]; a job
///   in the error state (`Eqw`) is [`BlockState::Failed`] with Grid Engine's reason (from
///   `qstat -j`), and is deleted so it cannot start later. A job no longer listed has ended:
///   if this provider cancelled it, it is [`BlockState::Cancelled`]; otherwise `qacct -j`
///   says how (a nonzero `failed` code or `exit_status` is [`BlockState::Failed`], e.g.
///   "exit status 3"; else [`BlockState::Completed`]). `qacct` lags a second or so behind a
///   job's end, and until it has the record the block is [`BlockState::Unknown`].
/// - **Cancel** runs `qdel`; a job Grid Engine no longer knows (finished) is `Ok`.
pub struct GridEngineProvider {
    config: GridEngineConfig,
    submitted: AtomicU64,
    clock: StateClock,
    /// Jobs this provider deleted with `qdel`, until their end is observed.
    cancelled: Mutex<HashSet<String>>,
}

impl fmt::Debug for GridEngineProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GridEngineProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock(cancelled: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    // The set is consistent after every statement; a panic elsewhere must not take the
    // provider down with it.
    cancelled.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GridEngineProvider {
    /// A provider configured by `config`.
    pub fn new(config: GridEngineConfig) -> GridEngineProvider {
        GridEngineProvider {
            config,
            submitted: AtomicU64::new(0),
            clock: StateClock::default(),
            cancelled: Mutex::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GridEngineConfig {
        &self.config
    }

    async fn run(&self, command: SchedulerCommand) -> Result<CommandOutput, ProviderError> {
        self.config.batch.runner.run(command).await
    }

    async fn start(&self, request: &BlockRequest) -> Result<BlockId, ProviderError> {
        request.check()?;
        let n = self.submitted.fetch_add(1, Ordering::Relaxed) + 1;
        let dir = self.config.batch.scripts_dir_or_default("gridengine");
        let stem = format!("{}-{}-{n}", self.config.batch.job_name, std::process::id());
        let script = render_script(&self.config, request, &dir, &stem)?;
        let path = dir.join(format!("{stem}.sh"));
        script::write_script(&path, &script)?;
        let command = self
            .config
            .batch
            .command("qsub")
            .arg("-terse")
            .arg(path.to_string_lossy());
        let output = self.run(command.clone()).await?;
        if !output.success() {
            return Err(submit_error(&command, &output));
        }
        let id = parse_job_id(&output.stdout).ok_or_else(|| {
            ProviderError::command(
                command.to_string(),
                format!(
                    "printed no job id: stdout {:?}, stderr {:?}",
                    output.stdout.trim(),
                    output.stderr.trim()
                ),
            )
        })?;
        let id = BlockId::new(id);
        self.clock.observe(&id, BlockState::Pending);
        tracing::info!(block = %id, "submitted Grid Engine job {id} ({} node(s), script {})", request.node_count(), path.display());
        Ok(id)
    }

    async fn statuses(&self, blocks: &[BlockId]) -> Result<Vec<BlockStatus>, ProviderError> {
        // A finished block's state is final: `qacct`, which reads the whole accounting file,
        // runs once per finished job, not on every poll.
        let mut states: Vec<Option<BlockState>> =
            blocks.iter().map(|id| self.clock.finished(id)).collect();
        if states.iter().any(Option::is_none) {
            let command = self.config.batch.command("qstat").arg("-xml");
            let output = self.run(command.clone()).await?;
            if !output.success() {
                return Err(output.failure(&command));
            }
            let listed = parse_qstat(&output.stdout).map_err(|detail| {
                ProviderError::command(command.to_string(), format!("unreadable output: {detail}"))
            })?;
            for (id, slot) in blocks.iter().zip(states.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                *slot = Some(match listed.get(id.as_str()) {
                    Some(letters) => self.listed_state(id, letters).await,
                    None => self.ended_state(id).await?,
                });
            }
        }
        let mut out = Vec::with_capacity(blocks.len());
        for (id, block_state) in blocks.iter().zip(states) {
            let block_state = block_state.unwrap_or_else(|| {
                BlockState::Unknown(format!("no state for Grid Engine job {id}"))
            });
            if block_state.is_finished() {
                lock(&self.cancelled).remove(id.as_str());
            }
            out.push(self.clock.observe(id, block_state));
        }
        Ok(out)
    }

    /// The state of a job `qstat` lists with state `letters`.
    async fn listed_state(&self, id: &BlockId, letters: &str) -> BlockState {
        match classify(letters) {
            Listed::Error => {
                let reason = self.error_reason(id).await;
                // An admin can clear the error state and the job would start then, as a
                // block the endpoint has written off and replaced: delete it instead.
                let command = self.config.batch.command("qdel").arg(id.as_str());
                match self.run(command.clone()).await {
                    Ok(output) if output.success() => {}
                    Ok(output) => {
                        tracing::warn!(block = %id, "could not delete failed job {id}: {}", output.failure(&command))
                    }
                    Err(error) => {
                        tracing::warn!(block = %id, "could not delete failed job {id}: {error}")
                    }
                }
                BlockState::Failed(reason)
            }
            Listed::Pending => BlockState::Pending,
            Listed::Running => BlockState::Running,
            Listed::Other => BlockState::Unknown(format!(
                "Grid Engine job {id} is in state `{letters}`, which funcx does not know"
            )),
        }
    }

    /// Grid Engine's reason for job `id`'s error state, from `qstat -j`.
    async fn error_reason(&self, id: &BlockId) -> String {
        let command = self
            .config
            .batch
            .command("qstat")
            .arg("-j")
            .arg(id.as_str());
        let detail = match self.run(command).await {
            Ok(output) => parse_error_reason(&output.stdout),
            Err(_) => None,
        };
        match detail {
            Some(detail) => format!("Grid Engine put job {id} in the error state (Eqw): {detail}"),
            None => format!("Grid Engine put job {id} in the error state (Eqw)"),
        }
    }

    /// The state of a job `qstat` no longer lists: it has ended, or never existed.
    async fn ended_state(&self, id: &BlockId) -> Result<BlockState, ProviderError> {
        if lock(&self.cancelled).contains(id.as_str()) {
            return Ok(BlockState::Cancelled);
        }
        let command = self
            .config
            .batch
            .command("qacct")
            .arg("-j")
            .arg(id.as_str());
        let output = self.run(command.clone()).await?;
        if !output.success() {
            let said = format!("{}{}", output.stdout, output.stderr);
            if said.contains("not found") {
                return Ok(BlockState::Unknown(format!(
                    "Grid Engine job {id} is not queued or running, and `qacct` has no record of \
                     it (yet: accounting lags a second or so behind a job's end; or never: not \
                     a job of this cluster)"
                )));
            }
            // A cluster's first job ends before Grid Engine has created the accounting file.
            if said.contains("No such file or directory") {
                return Ok(BlockState::Unknown(format!(
                    "Grid Engine job {id} is not queued or running, and `qacct` has no \
                     accounting file to look in (yet: Grid Engine creates it when the first job's \
                     record is written; or never: accounting is off on this cluster): {}",
                    said.trim()
                )));
            }
            return Err(output.failure(&command));
        }
        match parse_qacct(&output.stdout) {
            Some(accounting) => Ok(accounting.state()),
            None => Err(ProviderError::command(
                command.to_string(),
                format!(
                    "unreadable output (no `failed` and `exit_status` lines): {:?}",
                    output.stdout.trim()
                ),
            )),
        }
    }

    async fn stop(&self, id: &BlockId) -> Result<(), ProviderError> {
        if !is_job_id(id.as_str()) {
            return Err(ProviderError::not_found(id.clone()));
        }
        if self.clock.finished(id).is_some() {
            return Ok(());
        }
        let command = self.config.batch.command("qdel").arg(id.as_str());
        let output = self.run(command.clone()).await?;
        if output.success() {
            lock(&self.cancelled).insert(id.to_string());
            tracing::info!(block = %id, "deleted Grid Engine job {id}");
            return Ok(());
        }
        let said = format!("{}{}", output.stdout, output.stderr);
        if said.contains("does not exist") {
            // Ended before we asked (or never was, which Grid Engine cannot tell apart): its
            // state stays whatever it ended as.
            return Ok(());
        }
        Err(output.failure(&command))
    }
}

impl Provider for GridEngineProvider {
    fn name(&self) -> &str {
        "gridengine"
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
        Box::pin(self.statuses(blocks))
    }

    fn cancel<'a>(&'a self, block: &'a BlockId) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.stop(block))
    }
}

/// The error for a `qsub` that did not accept the job: a rejection of the request when Grid
/// Engine says so (unknown queue, parallel environment, resource), else a command failure.
fn submit_error(command: &SchedulerCommand, output: &CommandOutput) -> ProviderError {
    let said = format!("{} {}", output.stderr.trim(), output.stdout.trim());
    if said.to_lowercase().contains("rejected") {
        ProviderError::rejected(format!(
            "Grid Engine refused the job (`{command}`): {}",
            said.trim()
        ))
    } else {
        output.failure(command)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;
    use std::time::Duration;

    use funcx_core::{ManagerCommand, BLOCK_ID_ENV};

    use super::render::NODE_SCRIPT_END;
    use super::*;
    use crate::toolkit::mock::{expect, output, MockRunner, TempDir};
    use crate::toolkit::options::walltime_hms;

    const QSTAT_RUNNING_PENDING: &str =
        include_str!("../../tests/data/sge_qstat_running_pending.xml");
    const QSTAT_SUSPENDED_TRANSFERRING: &str =
        include_str!("../../tests/data/sge_qstat_suspended_transferring.xml");
    const QSTAT_EQW: &str = include_str!("../../tests/data/sge_qstat_eqw.xml");
    const QSTAT_EMPTY: &str = include_str!("../../tests/data/sge_qstat_empty.xml");
    const QSTAT_HAND_WRITTEN: &str = include_str!("../../tests/data/sge_qstat_hand_written.xml");
    const QSTAT_J_EQW: &str = include_str!("../../tests/data/sge_qstat_j_eqw.txt");
    const QACCT_COMPLETED: &str = include_str!("../../tests/data/sge_qacct_completed.txt");
    const QACCT_EXIT3: &str = include_str!("../../tests/data/sge_qacct_exit3.txt");
    const QACCT_DELETED: &str = include_str!("../../tests/data/sge_qacct_deleted.txt");
    const QACCT_H_RT: &str = include_str!("../../tests/data/sge_qacct_h_rt.txt");
    const QACCT_EQW_DELETED: &str = include_str!("../../tests/data/sge_qacct_eqw_deleted.txt");
    const QACCT_RESCHEDULED: &str = include_str!("../../tests/data/sge_qacct_rescheduled.txt");
    const QSUB_UNKNOWN_QUEUE: &str = include_str!("../../tests/data/sge_qsub_unknown_queue.err");

    fn ok(stdout: &str) -> CommandOutput {
        output(0, stdout, "")
    }

    fn failed(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
        output(code, stdout, stderr)
    }

    fn provider(runner: MockRunner) -> GridEngineProvider {
        GridEngineProvider::new(GridEngineConfig::new().runner(Arc::new(runner)))
    }

    fn state_of(provider: &GridEngineProvider, id: &str) -> BlockState {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let statuses = runtime
            .block_on(provider.status(&[BlockId::new(id)]))
            .expect("status");
        assert_eq!(statuses.len(), 1);
        statuses[0].state.clone()
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn job_ids_from_qsub_terse() {
        assert_eq!(parse_job_id("1\n").as_deref(), Some("1"));
        assert_eq!(parse_job_id("\n  42  \n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("5.1-4:1\n").as_deref(), Some("5"));
        assert_eq!(parse_job_id("Your job 3 (\"x\") has been submitted"), None);
        assert_eq!(parse_job_id(""), None);
        assert_eq!(parse_job_id(".1-4"), None);
    }

    #[test]
    fn walltimes_as_h_rt() {
        assert_eq!(walltime_hms(Duration::from_secs(3600)), "01:00:00");
        assert_eq!(walltime_hms(Duration::from_secs(90061)), "25:01:01");
        assert_eq!(walltime_hms(Duration::from_millis(1500)), "00:00:02");
    }

    #[test]
    fn states_from_recorded_qstat() {
        let jobs = parse_qstat(QSTAT_RUNNING_PENDING).expect("parse");
        let expected: HashMap<String, String> = [
            ("1", "r"),
            ("2", "r"),
            ("3", "qw"),
            ("4", "hqw"),
            ("5", "qw"),
        ]
        .into_iter()
        .map(|(id, letters)| (id.to_string(), letters.to_string()))
        .collect();
        assert_eq!(jobs, expected);
        let jobs = parse_qstat(QSTAT_SUSPENDED_TRANSFERRING).expect("parse");
        assert_eq!(jobs["1"], "s");
        assert_eq!(jobs["3"], "t");
        assert_eq!(parse_qstat(QSTAT_EQW).expect("parse")["6"], "Eqw");
        assert!(parse_qstat(QSTAT_EMPTY).expect("parse").is_empty());
        // Hand-written: states seen only briefly or on bigger clusters, and an array job
        // listed once per state of its tasks.
        let jobs = parse_qstat(QSTAT_HAND_WRITTEN).expect("parse");
        assert_eq!(jobs["20"], "dr");
        assert_eq!(jobs["21"], "Rr");
        assert_eq!(jobs["22"], "hRwq");
        assert_eq!(jobs["23"], "r", "the running tasks of an array win");
        assert!(parse_qstat("<job_info><job_list>").is_err());
        assert!(parse_qstat("").is_err());
    }

    #[test]
    fn each_qstat_state_maps_to_a_block_state() {
        for (letters, expected) in [
            ("qw", Listed::Pending),
            ("hqw", Listed::Pending),
            ("hRwq", Listed::Pending),
            ("r", Listed::Running),
            ("t", Listed::Running),
            ("Rr", Listed::Running),
            ("Rt", Listed::Running),
            ("s", Listed::Running),
            ("S", Listed::Running),
            ("T", Listed::Running),
            ("dr", Listed::Running),
            ("dt", Listed::Running),
            ("Eqw", Listed::Error),
            ("dEqw", Listed::Error),
            ("", Listed::Other),
            ("d", Listed::Other),
            ("x", Listed::Other),
            ("r?", Listed::Other),
        ] {
            assert_eq!(classify(letters), expected, "{letters:?}");
        }
    }

    #[test]
    fn listed_jobs_report_their_state() {
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .withf(|command| command.program == "qstat" && command.args == ["-xml"])
            .returning(|_| Box::pin(async { Ok(ok(QSTAT_SUSPENDED_TRANSFERRING)) }));
        let provider = provider(runner);
        let ids: Vec<BlockId> = ["1", "3", "4", "5"].into_iter().map(BlockId::new).collect();
        let statuses = block_on(provider.status(&ids)).expect("status");
        let states: Vec<BlockState> = statuses.into_iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [
                BlockState::Running,
                BlockState::Running,
                BlockState::Pending,
                BlockState::Pending
            ]
        );
    }

    #[test]
    fn an_error_state_fails_the_block_with_the_reason_and_deletes_the_job() {
        let mut runner = MockRunner::new();
        expect(&mut runner, "qstat", &["-xml"], ok(QSTAT_EQW));
        expect(&mut runner, "qstat", &["-j", "6"], ok(QSTAT_J_EQW));
        expect(&mut runner, "qdel", &["6"], ok("root has deleted job 6\n"));
        let provider = provider(runner);
        let BlockState::Failed(reason) = state_of(&provider, "6") else {
            panic!("not failed");
        };
        assert!(reason.contains("error state (Eqw)"), "{reason}");
        assert!(
            reason.contains("can't open output file \"/nonexistent/dir/x\""),
            "{reason}"
        );
        // Finished: remembered, no more commands (the mock allows none), cancel is a no-op.
        assert!(matches!(state_of(&provider, "6"), BlockState::Failed(_)));
        block_on(provider.cancel(&BlockId::new("6"))).expect("cancel of a failed block");
    }

    #[test]
    fn accounting_records() {
        let completed = parse_qacct(QACCT_COMPLETED).expect("completed");
        assert_eq!(completed.state(), BlockState::Completed);
        let exit3 = parse_qacct(QACCT_EXIT3).expect("exit 3");
        assert_eq!(
            exit3.state(),
            BlockState::Failed("the job ended with exit status 3".into())
        );
        let deleted = parse_qacct(QACCT_DELETED).expect("deleted");
        assert_eq!(deleted.failed, (100, "assumedly after job".to_string()));
        assert_eq!(
            deleted.state(),
            BlockState::Failed(
                "Grid Engine failed the job (100 : assumedly after job); exit status 137 \
                 (killed by signal 9)"
                    .into()
            )
        );
        let BlockState::Failed(h_rt) = parse_qacct(QACCT_H_RT).expect("h_rt").state() else {
            panic!("h_rt");
        };
        assert!(h_rt.contains("walltime (h_rt) expired"), "{h_rt}");
        let BlockState::Failed(io) = parse_qacct(QACCT_EQW_DELETED).expect("eqw").state() else {
            panic!("eqw");
        };
        assert!(io.contains("26 : opening input/output file"), "{io}");
        // Hand-written: a job that ran twice (rescheduled) has two records; the last counts.
        assert_eq!(
            parse_qacct(QACCT_RESCHEDULED).expect("rescheduled").state(),
            BlockState::Completed
        );
        assert_eq!(parse_qacct(""), None);
        assert_eq!(parse_qacct("failed  x\nexit_status zero\n"), None);
    }

    #[test]
    fn ended_jobs_are_looked_up_in_accounting_once() {
        let mut runner = MockRunner::new();
        runner
            .expect_run()
            .withf(|command| command.program == "qstat")
            .times(1)
            .returning(|_| Box::pin(async { Ok(ok(QSTAT_EMPTY)) }));
        expect(&mut runner, "qacct", &["-j", "7"], ok(QACCT_EXIT3));
        let provider = provider(runner);
        let BlockState::Failed(reason) = state_of(&provider, "7") else {
            panic!("not failed");
        };
        assert!(reason.contains("exit status 3"), "{reason}");
        assert!(matches!(state_of(&provider, "7"), BlockState::Failed(_)));
    }

    #[test]
    fn accounting_not_yet_written_is_unknown_not_completed() {
        let mut runner = MockRunner::new();
        expect(&mut runner, "qstat", &["-xml"], ok(QSTAT_EMPTY));
        expect(
            &mut runner,
            "qacct",
            &["-j", "999"],
            failed(1, "", "error: job id 999 not found\n"),
        );
        expect(&mut runner, "qstat", &["-xml"], ok(QSTAT_EMPTY));
        expect(&mut runner, "qacct", &["-j", "999"], ok(QACCT_COMPLETED));
        let provider = provider(runner);
        let BlockState::Unknown(reason) = state_of(&provider, "999") else {
            panic!("not unknown");
        };
        assert!(reason.contains("no record"), "{reason}");
        assert_eq!(state_of(&provider, "999"), BlockState::Completed);
    }

    #[test]
    fn an_accounting_file_not_yet_created_is_unknown_not_an_error() {
        let mut runner = MockRunner::new();
        expect(&mut runner, "qstat", &["-xml"], ok(QSTAT_EMPTY));
        expect(
            &mut runner,
            "qacct",
            &["-j", "1"],
            failed(
                1,
                "",
                "/var/lib/gridengine/default/common/accounting: No such file or directory\n",
            ),
        );
        expect(&mut runner, "qstat", &["-xml"], ok(QSTAT_EMPTY));
        expect(&mut runner, "qacct", &["-j", "1"], ok(QACCT_EXIT3));
        let provider = provider(runner);
        let BlockState::Unknown(reason) = state_of(&provider, "1") else {
            panic!("not unknown");
        };
        assert!(reason.contains("no accounting file"), "{reason}");
        assert!(matches!(state_of(&provider, "1"), BlockState::Failed(_)));
    }

    #[test]
    fn cancelled_jobs_end_cancelled() {
        let mut runner = MockRunner::new();
        expect(
            &mut runner,
            "qdel",
            &["2"],
            ok("root has registered the job 2 for deletion\n"),
        );
        expect(&mut runner, "qstat", &["-xml"], ok(QSTAT_HAND_WRITTEN));
        expect(&mut runner, "qstat", &["-xml"], ok(QSTAT_EMPTY));
        let provider = provider(runner);
        block_on(provider.cancel(&BlockId::new("2"))).expect("cancel");
        // Still listed (hand-written record lists job 2 as `dr`): running until gone.
        assert_eq!(state_of(&provider, "2"), BlockState::Running);
        assert_eq!(state_of(&provider, "2"), BlockState::Cancelled);
        // Finished: cancel again is a no-op without commands.
        block_on(provider.cancel(&BlockId::new("2"))).expect("cancel again");
    }

    #[test]
    fn cancelling_finished_or_foreign_ids() {
        let mut runner = MockRunner::new();
        expect(
            &mut runner,
            "qdel",
            &["7"],
            failed(1, "", "denied: job \"7\" does not exist\n"),
        );
        expect(
            &mut runner,
            "qdel",
            &["8"],
            failed(
                1,
                "",
                "error: commlib error: got select error (Connection refused)\n",
            ),
        );
        let provider = provider(runner);
        block_on(provider.cancel(&BlockId::new("7"))).expect("finished job");
        let error = block_on(provider.cancel(&BlockId::new("8"))).expect_err("qmaster down");
        assert!(error.is_command(), "{error}");
        assert!(error.to_string().contains("Connection refused"), "{error}");
        let error = block_on(provider.cancel(&BlockId::new("local-1"))).expect_err("foreign");
        assert!(error.is_not_found(), "{error}");
    }

    #[test]
    fn qstat_failures_are_errors() {
        let mut runner = MockRunner::new();
        expect(
            &mut runner,
            "qstat",
            &["-xml"],
            failed(
                1,
                "",
                "error: unable to contact qmaster using port 6444 on host \"vm\"\n",
            ),
        );
        expect(
            &mut runner,
            "qstat",
            &["-xml"],
            ok("<job_info><queue_info>"),
        );
        let provider = provider(runner);
        let ids = [BlockId::new("1")];
        let error = block_on(provider.status(&ids)).expect_err("qmaster down");
        assert!(
            error.to_string().contains("unable to contact qmaster"),
            "{error}"
        );
        let error = block_on(provider.status(&ids)).expect_err("truncated xml");
        assert!(error.to_string().contains("unreadable output"), "{error}");
    }

    #[test]
    fn submit_writes_the_script_and_returns_the_job_id() {
        let dir = TempDir::new("submit");
        let mut runner = MockRunner::new();
        let script_dir = dir.path().to_path_buf();
        runner
            .expect_run()
            .withf(move |command| {
                command.program == "/opt/sge/bin/qsub"
                    && command.args.len() == 2
                    && command.args[0] == "-terse"
                    && Path::new(&command.args[1]).starts_with(&script_dir)
            })
            .times(1)
            .returning(|_| Box::pin(async { Ok(ok("17\n")) }));
        let provider = GridEngineProvider::new(
            GridEngineConfig::new()
                .runner(Arc::new(runner))
                .scripts_dir(dir.path())
                .commands_dir("/opt/sge/bin")
                .queue("all.q"),
        );
        assert_eq!(provider.name(), "gridengine");
        let request = BlockRequest::new(ManagerCommand::new("funcx-manager"));
        let id = block_on(provider.submit(&request)).expect("submit");
        assert_eq!(id.as_str(), "17");
        let scripts: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .collect();
        assert_eq!(scripts.len(), 1);
        let text = std::fs::read_to_string(scripts[0].path()).expect("script");
        assert!(text.contains("#$ -q all.q\n"), "{text}");
    }

    #[test]
    fn submit_errors_say_why() {
        let dir = TempDir::new("rejected");
        let mut runner = MockRunner::new();
        let mut answers = vec![
            failed(1, "", QSUB_UNKNOWN_QUEUE),
            failed(1, "", "error: commlib error: got select error (Connection refused)\nUnable to contact qmaster\n"),
            ok("Your job 3 has been submitted\n"),
        ]
        .into_iter();
        runner.expect_run().times(3).returning(move |_| {
            let output = answers.next().unwrap_or_default();
            Box::pin(async move { Ok(output) })
        });
        let provider = GridEngineProvider::new(
            GridEngineConfig::new()
                .runner(Arc::new(runner))
                .scripts_dir(dir.path())
                .queue("nosuchq"),
        );
        let request = BlockRequest::new(ManagerCommand::new("funcx-manager"));
        let error = block_on(provider.submit(&request)).expect_err("unknown queue");
        assert!(error.is_rejected(), "{error}");
        assert!(
            error
                .to_string()
                .contains("job requests unknown queue \"nosuchq\""),
            "{error}"
        );
        let error = block_on(provider.submit(&request)).expect_err("qmaster down");
        assert!(error.is_command(), "{error}");
        assert!(error.to_string().contains("Connection refused"), "{error}");
        let error = block_on(provider.submit(&request)).expect_err("no id");
        assert!(error.to_string().contains("printed no job id"), "{error}");
        // Rejected before anything runs (the mock allows no more commands).
        let error = block_on(provider.submit(&request.clone().nodes(0))).expect_err("0 nodes");
        assert!(error.is_rejected());
        let error = block_on(provider.submit(&request.clone().nodes(2))).expect_err("no pe");
        assert!(
            error.to_string().contains("needs a parallel environment"),
            "{error}"
        );
    }

    #[test]
    fn scheduler_commands_get_their_dir_and_environment() {
        let config = GridEngineConfig::new()
            .commands_dir("/usr/bin")
            .command_env("SGE_ROOT", "/var/lib/gridengine")
            .command_env("SGE_CELL", "default");
        let command = config.batch.command("qstat").arg("-xml");
        assert_eq!(command.program, "env");
        assert_eq!(
            command.args,
            [
                "SGE_ROOT=/var/lib/gridengine",
                "SGE_CELL=default",
                "/usr/bin/qstat",
                "-xml"
            ]
        );
        assert_eq!(
            GridEngineConfig::new().batch.command("qdel").program,
            "qdel"
        );
    }

    fn nasty_request() -> BlockRequest {
        BlockRequest::new(
            ManagerCommand::new("/bin/sh")
                .arg("-c")
                .arg(r#"printf '%s\n' "$@" > "$OUT/args-$FUNCX_NODE_INDEX"; env > "$OUT/env-$FUNCX_NODE_INDEX""#)
                .arg("sh")
                .arg("it's \"quoted\" $HOME `id`")
                .arg("")
                .env("NASTY", "a'b\"c$d\ne")
                .env(BLOCK_ID_ENV, "forged"),
        )
        .worker_init("export FROM_INIT=yes\nset -- clobbered")
        .walltime(Duration::from_secs(3661))
    }

    #[test]
    fn a_one_node_script() {
        let config = GridEngineConfig::new()
            .queue("all.q")
            .parallel_environment("smp", 2)
            .directive("-l mem_free=1G")
            .job_name("analysis");
        let script = render_script(
            &config,
            &nasty_request(),
            Path::new("/shared/funcx"),
            "analysis-10-3",
        )
        .expect("render");
        let expected_head = "#!/bin/sh\n# funcx block: 1 node(s), one manager on each.\n\
             #$ -N analysis-3\n#$ -S /bin/sh\n\
             #$ -o /shared/funcx/analysis-10-3.$JOB_ID.out\n\
             #$ -e /shared/funcx/analysis-10-3.$JOB_ID.err\n\
             #$ -q all.q\n#$ -pe smp 2\n#$ -l h_rt=01:01:01\n#$ -l mem_free=1G\n\n\
             exec /bin/sh -s \"$JOB_ID\" 0 <<'FUNCX_NODE_SCRIPT_END'\n";
        assert!(script.starts_with(expected_head), "{script}");
        assert!(
            script.ends_with("} </dev/null\nFUNCX_NODE_SCRIPT_END\n"),
            "{script}"
        );
        assert!(
            script.contains("export NASTY='a'\\''b\"c$d\ne'\n"),
            "{script}"
        );
    }

    /// Runs `script` with `/bin/sh` as Grid Engine would (as job 4242, `#$` lines are
    /// comments), with `OUT` for the fake manager's files and `extra` environment.
    fn run_script(script: &str, dir: &Path, extra: &[(&str, &str)]) -> std::process::Output {
        let path = dir.join("job.sh");
        std::fs::write(&path, script).expect("write");
        Command::new("/bin/sh")
            .arg(&path)
            .env("JOB_ID", "4242")
            .env("OUT", dir)
            .envs(extra.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("sh")
    }

    /// Runs `script` as Grid Engine runs a parallel job on master host `master`: with a
    /// `PE_HOSTFILE` (written to `<dir>/hostfile`) listing `hosts`, one line per host.
    fn run_in_pe(script: &str, dir: &Path, hosts: &str, master: &str) -> std::process::Output {
        let hostfile = dir.join("hostfile");
        std::fs::write(&hostfile, hosts).expect("hostfile");
        run_script(
            script,
            dir,
            &[
                ("PE_HOSTFILE", hostfile.to_str().expect("utf-8")),
                ("HOSTNAME", master),
            ],
        )
    }

    fn check_node(dir: &Path, node: usize) {
        let args = std::fs::read_to_string(dir.join(format!("args-{node}"))).expect("args");
        assert_eq!(args, "it's \"quoted\" $HOME `id`\n\n");
        let env = std::fs::read_to_string(dir.join(format!("env-{node}"))).expect("env");
        assert!(env.contains("FUNCX_BLOCK_ID=4242\n"), "{env}");
        assert!(env.contains(&format!("FUNCX_NODE_INDEX={node}\n")), "{env}");
        assert!(env.contains("FROM_INIT=yes\n"), "{env}");
        assert!(env.contains("NASTY=a'b\"c$d\ne\n"), "{env}");
    }

    #[test]
    fn the_one_node_script_runs_the_manager_with_its_identity() {
        let dir = TempDir::new("run1");
        let script = render_script(
            &GridEngineConfig::new(),
            &nasty_request(),
            dir.path(),
            "funcx-1-1",
        )
        .expect("render");
        let output = run_script(&script, dir.path(), &[]);
        assert!(output.status.success(), "{output:?}");
        check_node(dir.path(), 0);
    }

    /// A stand-in `qrsh` in `<dir>/bin` that runs the `/bin/sh` lines `body`; returns the
    /// directory, for [`GridEngineConfig::commands_dir`].
    fn fake_qrsh(dir: &Path, body: &str) -> std::path::PathBuf {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::write(bin.join("qrsh"), format!("#!/bin/sh\n{body}\n")).expect("qrsh");
        let chmod = Command::new("chmod")
            .arg("+x")
            .arg(bin.join("qrsh"))
            .status()
            .expect("chmod");
        assert!(chmod.success());
        bin
    }

    #[test]
    fn the_multi_node_script_starts_one_manager_per_host_through_qrsh() {
        let dir = TempDir::new("run3");
        // A stand-in `qrsh` that runs `-inherit HOST command...` here, recording the host.
        let bin = fake_qrsh(
            dir.path(),
            "[ \"$1\" = -inherit ] || exit 99\necho \"$2\" >> \"$OUT/hosts\"\nshift 2\nexec \"$@\"",
        );
        let config = GridEngineConfig::new()
            .parallel_environment("mpi", 2)
            .commands_dir(&bin);
        let request = nasty_request().nodes(3);
        let script = render_script(&config, &request, dir.path(), "funcx-1-2").expect("render");
        assert!(script.contains("#$ -pe mpi 6\n"), "{script}");
        // Three hosts with two slots each, this host first (as Grid Engine lists the master).
        let output = run_in_pe(
            &script,
            dir.path(),
            "node-a 2 all.q@node-a UNDEFINED\nnode-b 1 all.q@node-b UNDEFINED\n\
             node-b 1 all.q@node-b UNDEFINED\nnode-c 2 all.q@node-c UNDEFINED\n",
            "node-a",
        );
        assert!(output.status.success(), "{output:?}");
        for node in 0..3 {
            check_node(dir.path(), node);
        }
        let hosts = std::fs::read_to_string(dir.path().join("hosts")).expect("hosts");
        let mut hosts: Vec<&str> = hosts.lines().collect();
        hosts.sort();
        assert_eq!(hosts, ["node-b", "node-c"]);

        // Fewer hosts than nodes: the managers that fit run, and the log says so.
        let output = run_in_pe(
            &script,
            dir.path(),
            "node-a 6 all.q@node-a UNDEFINED\n",
            "node-a",
        );
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("asked for 3 nodes but its parallel environment gave 1 host(s)"),
            "{stderr}"
        );
    }

    /// One manager for the whole block: the job itself runs it once, as node 0 on the master
    /// host (no `qrsh`, which would fail here), in a parallel environment of at least the
    /// rank slots on each host; without a parallel environment there is no PE_HOSTFILE for
    /// the manager to read its hosts from, so the request is rejected.
    #[test]
    fn a_per_block_script_runs_one_manager_and_needs_a_parallel_environment() {
        let dir = TempDir::new("per-block");
        let bin = fake_qrsh(dir.path(), "exit 99");
        let request = nasty_request()
            .nodes(3)
            .layout(funcx_core::ManagerLayout::PerBlock)
            .rank_slots_per_node(4);
        let config = GridEngineConfig::new()
            .parallel_environment("mpi", 2)
            .commands_dir(&bin);
        let script = render_script(&config, &request, dir.path(), "funcx-1-5").expect("render");
        assert!(script.contains("#$ -pe mpi 12\n"), "{script}");
        assert!(script.contains("one manager for all"), "{script}");
        assert!(!script.contains("qrsh"), "{script}");
        let output = run_in_pe(
            &script,
            dir.path(),
            "node-a 4 q UNDEFINED\nnode-b 4 q UNDEFINED\nnode-c 4 q UNDEFINED\n",
            "node-a",
        );
        assert!(output.status.success(), "{output:?}");
        check_node(dir.path(), 0);
        assert!(!dir.path().join("args-1").exists(), "a second manager ran");

        let error = render_script(&GridEngineConfig::new(), &request.nodes(1), dir.path(), "s")
            .expect_err("no parallel environment");
        assert!(error.is_rejected(), "{error}");
        assert!(error.to_string().contains("PE_HOSTFILE"), "{error}");
    }

    #[test]
    fn a_failing_node_fails_the_multi_node_job() {
        let dir = TempDir::new("run-fail");
        let bin = fake_qrsh(dir.path(), "shift 2\nexec \"$@\"");
        let request = BlockRequest::new(
            ManagerCommand::new("/bin/sh")
                .arg("-c")
                .arg("exit $((FUNCX_NODE_INDEX * 3))"),
        )
        .nodes(2);
        let config = GridEngineConfig::new()
            .parallel_environment("mpi", 1)
            .commands_dir(&bin);
        let script = render_script(&config, &request, dir.path(), "funcx-1-4").expect("render");
        let output = run_in_pe(
            &script,
            dir.path(),
            "a 1 q UNDEFINED\nb 1 q UNDEFINED\n",
            "a",
        );
        assert_eq!(output.status.code(), Some(3), "{output:?}");
    }

    #[test]
    fn requests_that_cannot_be_written_are_rejected() {
        let config = GridEngineConfig::new();
        let dir = Path::new("/tmp/x");
        let end_line =
            BlockRequest::new(ManagerCommand::new("m").arg(format!("a\n{NODE_SCRIPT_END}\nb")));
        let error = render_script(&config, &end_line, dir, "s").expect_err("end line");
        assert!(error.is_rejected() && error.to_string().contains(NODE_SCRIPT_END));
        let bad_env = BlockRequest::new(ManagerCommand::new("m").env("A-B", "1"));
        let error = render_script(&config, &bad_env, dir, "s").expect_err("env name");
        assert!(
            error.to_string().contains("cannot be exported by a shell"),
            "{error}"
        );
        let request = BlockRequest::new(ManagerCommand::new("m"));
        let error =
            render_script(&config, &request, Path::new("/tmp/with space"), "s").expect_err("space");
        assert!(error.to_string().contains("one word"), "{error}");
        for name in ["1abc", "a b", "a/b", ""] {
            let error = render_script(&config.clone().job_name(name), &request, dir, "s")
                .expect_err("job name");
            assert!(error.to_string().contains("job name"), "{error}");
        }
        let error =
            render_script(&config.clone().queue("a b"), &request, dir, "s").expect_err("queue");
        assert!(error.to_string().contains("queue"), "{error}");
        let error = render_script(
            &config.clone().directive("-l a=1\n-q b"),
            &request,
            dir,
            "s",
        )
        .expect_err("directive");
        assert!(error.to_string().contains("line break"), "{error}");
    }

    #[test]
    fn error_reasons_from_qstat_j() {
        assert_eq!(
            parse_error_reason(QSTAT_J_EQW).as_deref(),
            Some("error: can't open output file \"/nonexistent/dir/x\": No such file or directory")
        );
        assert_eq!(parse_error_reason("job_number: 6\n"), None);
    }
}
