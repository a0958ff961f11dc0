//! A mock [`CommandRunner`] and helpers for the providers' unit tests, which answer every
//! command with recorded scheduler output, and a temporary directory per test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use mockall::predicate::eq;

use crate::command::{CommandOutput, CommandRunner, SchedulerCommand};
use funcx_core::ProviderError;

mockall::mock! {
    pub Runner {}
    impl CommandRunner for Runner {
        fn run(
            &self,
            command: SchedulerCommand,
        ) -> BoxFuture<'static, Result<CommandOutput, ProviderError>>;
    }
}

/// A command that exited 0 after printing `stdout`.
pub(crate) fn printed(stdout: &str) -> BoxFuture<'static, Result<CommandOutput, ProviderError>> {
    ended(0, stdout, "")
}

/// A command that exited with `code` after printing `stdout` and `stderr`.
pub(crate) fn ended(
    code: i32,
    stdout: &str,
    stderr: &str,
) -> BoxFuture<'static, Result<CommandOutput, ProviderError>> {
    let output = output(code, stdout, stderr);
    Box::pin(async move { Ok(output) })
}

/// What a command that exited with `code` printed.
pub(crate) fn output(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
    CommandOutput {
        code: Some(code),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
    }
}

/// Expects `program args...` once, answered with `answer`.
pub(crate) fn expect(runner: &mut MockRunner, program: &str, args: &[&str], answer: CommandOutput) {
    let command = SchedulerCommand::new(program).args(args.iter().copied());
    runner
        .expect_run()
        .with(eq(command))
        .times(1)
        .returning(move |_| {
            let answer = answer.clone();
            Box::pin(async move { Ok(answer) })
        });
}

/// Asserts that `script` has each of `lines` as a whole line.
pub(crate) fn has_lines(script: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            script.lines().any(|l| l == *line),
            "{line:?} missing in\n{script}"
        );
    }
}

/// A directory of its own for one test's scripts and logs, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory `funcx-providers-unit-<name>-<pid>-<n>` under the temporary
    /// directory.
    pub(crate) fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "funcx-providers-unit-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
