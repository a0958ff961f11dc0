//! The seam between batch-scheduler providers and the commands they run.
//!
//! A scheduler provider never spawns `sbatch` or `qstat` itself: it asks a [`CommandRunner`].
//! In production that is [`ShellRunner`] (the commands on this machine; a runner that goes
//! through SSH to a login node fits the same trait). In unit tests it is a mock that
//! returns recorded scheduler output, so every parser and every error path is tested
//! without a scheduler.

use std::fmt;
use std::time::Duration;

use funcx_core::ProviderError;
use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

/// One command for a scheduler: a program, its arguments, and optionally text for its stdin
/// (a batch script, for schedulers that read it there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerCommand {
    /// The program, e.g. `sbatch`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Text written to its stdin, then closed.
    pub stdin: Option<String>,
}

impl SchedulerCommand {
    /// `program` with no arguments.
    pub fn new(program: impl Into<String>) -> SchedulerCommand {
        SchedulerCommand {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> SchedulerCommand {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> SchedulerCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Feeds `text` to the command's stdin.
    pub fn stdin(mut self, text: impl Into<String>) -> SchedulerCommand {
        self.stdin = Some(text.into());
        self
    }
}

impl fmt::Display for SchedulerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// What a command printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The error a provider reports for a command that failed: the command, its exit code,
    /// and what it said (stderr first, since that is where schedulers explain themselves).
    pub fn failure(&self, command: &SchedulerCommand) -> ProviderError {
        let said = if self.stderr.trim().is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.trim()
        };
        let ended = match self.code {
            Some(code) => format!("exit code {code}"),
            None => "a signal".to_string(),
        };
        ProviderError::command(command.to_string(), format!("ended with {ended}: {said}"))
    }
}

/// Runs scheduler commands for a provider.
pub trait CommandRunner: Send + Sync + 'static {
    /// Runs `command` to completion. Fails only when the command could not be run at all (not
    /// found, timed out); a command that ran and failed is an `Ok` output with its code.
    fn run(
        &self,
        command: SchedulerCommand,
    ) -> BoxFuture<'static, Result<CommandOutput, ProviderError>>;
}

/// Runs commands on this machine, each with a time limit (as Parsl's `cmd_timeout`).
#[derive(Clone, Debug)]
pub struct ShellRunner {
    timeout: Duration,
}

impl Default for ShellRunner {
    fn default() -> Self {
        ShellRunner {
            timeout: Duration::from_secs(30),
        }
    }
}

impl ShellRunner {
    /// A runner that gives each command 30 s.
    pub fn new() -> ShellRunner {
        ShellRunner::default()
    }

    /// Gives each command `timeout` before it is killed and reported as timed out.
    pub fn timeout(mut self, timeout: Duration) -> ShellRunner {
        self.timeout = timeout;
        self
    }
}

impl CommandRunner for ShellRunner {
    fn run(
        &self,
        command: SchedulerCommand,
    ) -> BoxFuture<'static, Result<CommandOutput, ProviderError>> {
        let timeout = self.timeout;
        Box::pin(async move {
            let mut process = tokio::process::Command::new(&command.program);
            process
                .args(&command.args)
                .stdin(if command.stdin.is_some() {
                    std::process::Stdio::piped()
                } else {
                    std::process::Stdio::null()
                })
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let mut child = process.spawn().map_err(|error| {
                let hint = if error.kind() == std::io::ErrorKind::NotFound {
                    format!("{} is not installed or not on PATH", command.program)
                } else {
                    format!("could not run {}", command.program)
                };
                ProviderError::io(hint, error)
            })?;
            if let (Some(text), Some(mut stdin)) = (command.stdin.as_ref(), child.stdin.take()) {
                stdin.write_all(text.as_bytes()).await.map_err(|e| {
                    ProviderError::io(format!("could not write to {}", command.program), e)
                })?;
            }
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                Ok(Ok(output)) => Ok(CommandOutput {
                    code: output.status.code(),
                    stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                }),
                Ok(Err(error)) => Err(ProviderError::io(
                    format!("could not wait for {}", command.program),
                    error,
                )),
                Err(_) => Err(ProviderError::command(
                    command.to_string(),
                    format!("timed out after {timeout:?}"),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_commands_and_reports_how_they_ended() {
        let runner = ShellRunner::new();
        let ok = runner
            .run(
                SchedulerCommand::new("sh")
                    .args(["-c", "read x; echo got $x"])
                    .stdin("it\n"),
            )
            .await
            .unwrap();
        assert!(ok.success());
        assert_eq!(ok.stdout.trim(), "got it");

        let failed_command =
            SchedulerCommand::new("sh").args(["-c", "echo 'invalid partition' >&2; exit 1"]);
        let failed = runner.run(failed_command.clone()).await.unwrap();
        assert_eq!(failed.code, Some(1));
        let error = failed.failure(&failed_command).to_string();
        assert!(
            error.contains("invalid partition") && error.contains("exit code 1"),
            "{error}"
        );

        let missing = runner
            .run(SchedulerCommand::new("sbatch-that-does-not-exist"))
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("not installed or not on PATH"),
            "{missing}"
        );

        let slow = ShellRunner::new().timeout(Duration::from_millis(100));
        let timed_out = slow
            .run(SchedulerCommand::new("sleep").arg("5"))
            .await
            .unwrap_err();
        assert!(timed_out.to_string().contains("timed out"), "{timed_out}");
    }
}
