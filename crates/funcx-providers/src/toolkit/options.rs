//! The options every batch-scheduler provider has, under one name each: job names, extra
//! directives, the scripts directory, where the scheduler's commands are, their environment,
//! and the runner that runs them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use funcx_core::ProviderError;

use crate::command::{CommandRunner, SchedulerCommand, ShellRunner};

/// The options shared by [`SlurmConfig`](crate::SlurmConfig),
/// [`PbsConfig`](crate::PbsConfig) and [`GridEngineConfig`](crate::GridEngineConfig); their
/// setters come from [`batch_options!`].
#[derive(Clone)]
pub(crate) struct BatchOptions {
    /// The prefix of job names.
    pub job_name: String,
    /// Extra directive lines, as given (with or without the scheduler's prefix).
    pub directives: Vec<String>,
    /// Where scripts and job logs go; a directory of this process by default.
    pub scripts_dir: Option<PathBuf>,
    /// Where the scheduler's commands are; `PATH` by default.
    pub commands_dir: Option<PathBuf>,
    /// Environment variables for the scheduler's commands.
    pub command_env: Vec<(String, String)>,
    /// What runs the commands.
    pub runner: Arc<dyn CommandRunner>,
}

impl fmt::Debug for BatchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The runner is a trait object without `Debug`; everything else is shown.
        f.debug_struct("BatchOptions")
            .field("job_name", &self.job_name)
            .field("directives", &self.directives)
            .field("scripts_dir", &self.scripts_dir)
            .field("commands_dir", &self.commands_dir)
            .field("command_env", &self.command_env)
            .finish_non_exhaustive()
    }
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            job_name: "funcx".to_string(),
            directives: Vec::new(),
            scripts_dir: None,
            commands_dir: None,
            command_env: Vec::new(),
            runner: Arc::new(ShellRunner::new()),
        }
    }
}

impl BatchOptions {
    /// The program to run for the scheduler command `name`: `name` on `PATH`, or in the
    /// commands directory.
    pub(crate) fn program(&self, name: &str) -> String {
        match &self.commands_dir {
            Some(dir) => dir.join(name).to_string_lossy().into_owned(),
            None => name.to_string(),
        }
    }

    /// The command that runs the scheduler's `name`, with the configured environment (through
    /// `env`, since a [`SchedulerCommand`] carries no environment).
    pub(crate) fn command(&self, name: &str) -> SchedulerCommand {
        let program = self.program(name);
        if self.command_env.is_empty() {
            return SchedulerCommand::new(program);
        }
        SchedulerCommand::new("env")
            .args(
                self.command_env
                    .iter()
                    .map(|(key, value)| format!("{key}={value}")),
            )
            .arg(program)
    }

    /// The scripts directory: the configured one, or `funcx-<scheduler>-<pid>` under the
    /// temporary directory (fine on one machine; a cluster needs a shared file system).
    pub(crate) fn scripts_dir_or_default(&self, scheduler: &str) -> PathBuf {
        self.scripts_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("funcx-{scheduler}-{}", std::process::id()))
        })
    }

    /// The directive lines: the scheduler's `built_in` ones, then the configured extra ones,
    /// each with `prefix` (`#SBATCH`) in front unless it already has it.
    pub(crate) fn directive_lines(
        &self,
        prefix: &str,
        built_in: &[String],
    ) -> Result<Vec<String>, ProviderError> {
        built_in
            .iter()
            .chain(&self.directives)
            .map(|line| {
                // Directives are read by the scheduler, not a shell: a line break would end
                // the directive and start a line the scheduler ignores or misreads.
                if line.contains(['\n', '\r']) {
                    return Err(ProviderError::rejected(format!(
                        "the directive {line:?} contains a line break, which a batch directive cannot hold"
                    )));
                }
                let line = line.trim();
                Ok(if line.starts_with(prefix) {
                    line.to_string()
                } else {
                    format!("{prefix} {line}")
                })
            })
            .collect()
    }
}

/// Generates the setters of the [`BatchOptions`] held in field `batch` of a provider's
/// config, so every scheduler names and documents them the same way.
macro_rules! batch_options {
    ($config:ident, $prefix:literal, $commands:literal) => {
        impl $config {
            /// The prefix of job names, `funcx` by default; each block is `<prefix>-<n>`.
            pub fn job_name(mut self, prefix: impl Into<String>) -> $config {
                self.batch.job_name = prefix.into();
                self
            }

            #[doc = concat!("One more directive line, with or without the `", $prefix, "` in front.")]
            pub fn directive(mut self, line: impl Into<String>) -> $config {
                self.batch.directives.push(line.into());
                self
            }

            /// Where batch scripts and the jobs' stdout and stderr logs are written. On a
            /// cluster this must be a directory the compute nodes can write at the same path
            /// (a shared file system), or the scheduler cannot open the logs. By default
            /// `funcx-<scheduler>-<pid>` under the temporary directory.
            pub fn scripts_dir(mut self, dir: impl Into<std::path::PathBuf>) -> $config {
                self.batch.scripts_dir = Some(dir.into());
                self
            }

            #[doc = concat!("Runs ", $commands, " from `dir` instead of looking them up on `PATH` \
                (another batch system's commands of the same names often come first there).")]
            pub fn commands_dir(mut self, dir: impl Into<std::path::PathBuf>) -> $config {
                self.batch.commands_dir = Some(dir.into());
                self
            }

            /// Sets an environment variable for the scheduler's commands (`SGE_ROOT`,
            /// `SLURM_CONF`, `PBS_SERVER`, ...).
            pub fn command_env(mut self, key: impl Into<String>, value: impl Into<String>) -> $config {
                self.batch.command_env.push((key.into(), value.into()));
                self
            }

            /// Runs the scheduler commands through `runner`
            /// ([`ShellRunner`](crate::ShellRunner) by default), e.g. one that goes through SSH
            /// to a login node, or a mock in tests.
            pub fn runner(mut self, runner: std::sync::Arc<dyn crate::CommandRunner>) -> $config {
                self.batch.runner = runner;
                self
            }
        }
    };
}
pub(crate) use batch_options;

/// A walltime in whole seconds, rounded up. [`BlockRequest::check`] has refused zero, so
/// this is at least 1.
///
/// [`BlockRequest::check`]: funcx_core::BlockRequest::check
pub(crate) fn whole_seconds(walltime: Duration) -> u64 {
    (walltime.as_secs() + u64::from(walltime.subsec_nanos() > 0)).max(1)
}

/// A walltime as `HH:MM:SS`, hours unbounded (`48:00:00`), rounded up to whole seconds: what
/// PBS's `walltime` and Grid Engine's `h_rt` take.
pub(crate) fn walltime_hms(walltime: Duration) -> String {
    let seconds = whole_seconds(walltime);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_come_from_the_commands_dir_with_their_environment() {
        let mut options = BatchOptions::default();
        assert_eq!(options.command("qstat"), SchedulerCommand::new("qstat"));
        options.commands_dir = Some("/opt/sge/bin".into());
        options
            .command_env
            .push(("SGE_ROOT".into(), "/var/lib/gridengine".into()));
        assert_eq!(
            options.command("qstat"),
            SchedulerCommand::new("env")
                .args(["SGE_ROOT=/var/lib/gridengine", "/opt/sge/bin/qstat"])
        );
    }

    #[test]
    fn directives_get_their_prefix_once_and_stay_on_one_line() {
        let mut options = BatchOptions {
            directives: vec!["--gres=gpu:1".into(), "#SBATCH --qos=high ".into()],
            ..BatchOptions::default()
        };
        assert_eq!(
            options
                .directive_lines("#SBATCH", &["--nodes=2".to_string()])
                .expect("lines"),
            [
                "#SBATCH --nodes=2",
                "#SBATCH --gres=gpu:1",
                "#SBATCH --qos=high"
            ]
        );
        options.directives.push("--x\n#SBATCH --y".into());
        let error = options.directive_lines("#SBATCH", &[]).unwrap_err();
        assert!(error.is_rejected(), "{error}");
        assert!(error.to_string().contains("line break"), "{error}");
    }

    #[test]
    fn walltimes_round_up_to_whole_seconds() {
        assert_eq!(walltime_hms(Duration::from_secs(59)), "00:00:59");
        assert_eq!(walltime_hms(Duration::from_millis(59_001)), "00:01:00");
        assert_eq!(walltime_hms(Duration::from_secs(48 * 3600)), "48:00:00");
        assert_eq!(walltime_hms(Duration::from_nanos(1)), "00:00:01");
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
    }
}
