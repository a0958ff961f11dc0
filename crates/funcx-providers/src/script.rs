//! The batch script of a block, shared by the scheduler providers.
//!
//! Every scheduler runs the same shape of script; only the directive lines and the variable
//! that holds the job id differ:
//!
//! ```text
//! #!/bin/bash
//! #SBATCH ...                       directives, from the provider
//! module load python                the request's worker_init lines
//! export FUNCX_BLOCK_ID="$SLURM_JOB_ID"
//! export FUNCX_TOKEN='...'          the manager command's environment
//! srun ... '/opt/funcx-manager' '--endpoint' '10.0.0.1:9000'   the launcher line
//! ```

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use funcx_core::{BlockId, BlockRequest, BlockState, BlockStatus, ProviderError, BLOCK_ID_ENV};

use crate::launcher::Launcher;

/// Quotes `word` for a POSIX shell, so the shell passes it on as exactly one argument
/// whatever it contains (spaces, quotes, `$`, newlines, globs).
///
/// Single quotes keep everything literal except a single quote itself, which is written as
/// `'\''` (end the quoted part, an escaped quote, start a new quoted part). Words made only
/// of characters no shell treats specially are left bare, for readable scripts; `=` is not
/// among them, since a first word with `=` would be taken for an assignment.
///
/// ```
/// use funcx_providers::shell_quote;
///
/// assert_eq!(shell_quote("--workers"), "--workers");
/// assert_eq!(shell_quote("A=1"), "'A=1'");
/// assert_eq!(shell_quote("it's $HOME"), r#"'it'\''s $HOME'"#);
/// assert_eq!(shell_quote(""), "''");
/// ```
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The parts of a block's batch script that differ between schedulers.
#[derive(Clone, Debug)]
pub(crate) struct ScriptParts<'a> {
    /// The scheduler's directive lines, complete (`#SBATCH --nodes=2`).
    pub directives: Vec<String>,
    /// A shell expression for the job id inside the job (`$SLURM_JOB_ID`), which becomes the
    /// block id: the id is only known once the scheduler accepted the script.
    pub job_id_expr: &'a str,
    /// How the managers are started.
    pub launcher: &'a Launcher,
}

/// A batch script is text, so a manager command that is not UTF-8 cannot be written into one.
fn text<'s>(what: &str, value: &'s OsStr) -> Result<&'s str, ProviderError> {
    value.to_str().ok_or_else(|| {
        ProviderError::rejected(format!(
            "the manager command's {what} {value:?} is not UTF-8, so it cannot be written into a batch script"
        ))
    })
}

/// A name the shell accepts after `export`: letters, digits and `_`, not starting with a
/// digit.
pub(crate) fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Renders the batch script that runs `request` as one job.
pub(crate) fn render(
    request: &BlockRequest,
    parts: &ScriptParts<'_>,
) -> Result<String, ProviderError> {
    let command = request.command();
    let mut words = vec![shell_quote(text("program", command.program().as_os_str())?)];
    for arg in command.arguments() {
        words.push(shell_quote(text("argument", arg)?));
    }
    let mut script = String::from("#!/bin/bash\n");
    for directive in &parts.directives {
        script.push_str(directive);
        script.push('\n');
    }
    script.push('\n');
    if let Some(init) = request.worker_init_lines() {
        script.push_str("# worker_init\n");
        script.push_str(init);
        if !init.ends_with('\n') {
            script.push('\n');
        }
        script.push('\n');
    }
    // Double quotes: the expression is the scheduler's variable and must expand.
    script.push_str(&format!(
        "export {BLOCK_ID_ENV}=\"{}\"\n",
        parts.job_id_expr
    ));
    for (key, value) in command.environment() {
        let key = text("environment variable name", key)?;
        if !is_variable_name(key) {
            return Err(ProviderError::rejected(format!(
                "the manager command's environment variable name {key:?} cannot be exported by a shell"
            )));
        }
        script.push_str(&format!(
            "export {key}={}\n",
            shell_quote(text("environment value", value)?)
        ));
    }
    script.push_str(
        &parts
            .launcher
            .launch_line(request.node_count(), &words.join(" ")),
    );
    script.push('\n');
    Ok(script)
}

/// Writes `script` into `dir` (created if missing) under a name no other block of any
/// provider in any process uses, and returns its path.
pub(crate) fn write_script(dir: &Path, stem: &str, script: &str) -> Result<PathBuf, ProviderError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir).map_err(|error| {
        ProviderError::io(
            format!("could not create the scripts directory {}", dir.display()),
            error,
        )
    })?;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let path = dir.join(format!(
        "{stem}-{}-{nanos}-{}.sh",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, script).map_err(|error| {
        ProviderError::io(
            format!("could not write the batch script {}", path.display()),
            error,
        )
    })?;
    Ok(path)
}

/// Where a provider's commands and scripts live, when not told: a directory of this process
/// under the temporary directory (fine on one machine; a cluster needs a shared file system,
/// see the providers' `scripts_dir`).
pub(crate) fn default_scripts_dir(scheduler: &str) -> PathBuf {
    std::env::temp_dir().join(format!("funcx-{scheduler}-{}", std::process::id()))
}

/// The program to run for a scheduler command: `name` on `PATH`, or in `bin_dir`.
pub(crate) fn program(bin_dir: Option<&Path>, name: &str) -> String {
    match bin_dir {
        Some(dir) => dir.join(name).to_string_lossy().into_owned(),
        None => name.to_string(),
    }
}

/// Directive values are read by the scheduler, not a shell: a newline would end the
/// directive and start a line the scheduler ignores or misreads.
pub(crate) fn check_directive(what: &str, value: &str) -> Result<(), ProviderError> {
    if value.contains(['\n', '\r']) {
        return Err(ProviderError::rejected(format!(
            "the {what} {value:?} contains a line break, which a batch directive cannot hold"
        )));
    }
    Ok(())
}

/// Remembers when each block was first seen in its current state: a polled scheduler only
/// says what the state is, but [`BlockStatus::since`] promises when it began.
#[derive(Debug, Default)]
pub(crate) struct StateClock {
    seen: Mutex<HashMap<BlockId, (BlockState, SystemTime)>>,
}

/// How many blocks' states are remembered before finished ones are forgotten, so an endpoint
/// that runs for months does not grow without bound.
const CLOCK_CAPACITY: usize = 4096;

impl StateClock {
    /// The status of `id` now in `state`, stamped with when that state was first observed.
    pub(crate) fn observe(&self, id: &BlockId, state: BlockState) -> BlockStatus {
        let now = SystemTime::now();
        // Every write leaves the map consistent, so a poisoned lock is still usable.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= CLOCK_CAPACITY && !seen.contains_key(id) {
            seen.retain(|_, (state, _)| !state.is_finished());
        }
        let since = match seen.get(id) {
            Some((previous, since)) if *previous == state => *since,
            _ => now,
        };
        seen.insert(id.clone(), (state.clone(), since));
        BlockStatus::new(id.clone(), state, since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funcx_core::ManagerCommand;

    /// Runs `sh -c 'printf "%s\n" <quoted>'` and returns what the shell made of the word.
    fn through_the_shell(word: &str) -> String {
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s' {}", shell_quote(word)))
            .output()
            .expect("run /bin/sh");
        assert!(output.status.success());
        String::from_utf8(output.stdout).expect("utf-8")
    }

    #[test]
    fn quoting_survives_nasty_strings() {
        for word in [
            "",
            " ",
            "plain",
            "two words",
            "it's",
            "''",
            "'\\''",
            "$HOME",
            "${PATH}",
            "`id`",
            "$(id)",
            "a\nb",
            "tab\there",
            "*",
            "~",
            "!",
            "\\",
            "\"quoted\"",
            "; rm -rf / #",
            "a|b&c>d<e",
            "ünïcødé ✓",
            "-n",
        ] {
            assert_eq!(through_the_shell(word), word, "quoting {word:?}");
        }
    }

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(shell_quote("/opt/funcx-manager"), "/opt/funcx-manager");
        assert_eq!(shell_quote("127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("~"), "'~'");
    }

    fn parts(launcher: &Launcher) -> ScriptParts<'_> {
        ScriptParts {
            directives: vec![
                "#SBATCH --nodes=1".into(),
                "#SBATCH --partition=debug".into(),
            ],
            job_id_expr: "$SLURM_JOB_ID",
            launcher,
        }
    }

    #[test]
    fn renders_directives_init_exports_and_the_launch_line_in_order() {
        let command = ManagerCommand::new("/opt/funcx manager")
            .args(["--endpoint", "10.0.0.1:9000", "it's"])
            .env("FUNCX_TOKEN", "s3cr3t $x");
        let request =
            BlockRequest::new(command).worker_init("module load python\nsource env/bin/activate");
        let launcher = Launcher::SingleNode;
        let script = render(&request, &parts(&launcher)).expect("render");
        assert_eq!(
            script,
            "#!/bin/bash\n\
             #SBATCH --nodes=1\n\
             #SBATCH --partition=debug\n\
             \n\
             # worker_init\n\
             module load python\n\
             source env/bin/activate\n\
             \n\
             export FUNCX_BLOCK_ID=\"$SLURM_JOB_ID\"\n\
             export FUNCX_TOKEN='s3cr3t $x'\n\
             FUNCX_NODE_INDEX=0 '/opt/funcx manager' --endpoint 10.0.0.1:9000 'it'\\''s'\n"
        );
    }

    #[test]
    fn the_rendered_script_runs_the_command_with_its_environment() {
        let command = ManagerCommand::new("/bin/sh")
            .args([
                "-c",
                "printf '%s|%s|%s|%s' \"$FUNCX_BLOCK_ID\" \"$FUNCX_NODE_INDEX\" \"$GREETING\" \"$1\"",
                "sh",
                "a 'b' $c",
            ])
            .env("GREETING", "hello; world");
        let request = BlockRequest::new(command).worker_init("JOB=42");
        let launcher = Launcher::SingleNode;
        let script = render(
            &request,
            &ScriptParts {
                directives: vec!["#SBATCH --ignored".into()],
                job_id_expr: "$JOB",
                launcher: &launcher,
            },
        )
        .expect("render");
        let output = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("run bash");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "42|0|hello; world|a 'b' $c"
        );
    }

    #[test]
    fn bad_environment_names_are_rejected() {
        let request = BlockRequest::new(ManagerCommand::new("x").env("NOT A NAME", "1"));
        let launcher = Launcher::SingleNode;
        let error = render(&request, &parts(&launcher)).unwrap_err();
        assert!(error.is_rejected(), "{error}");
        assert!(is_variable_name("_A1"));
        assert!(!is_variable_name("1A"));
        assert!(!is_variable_name(""));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_arguments_are_rejected() {
        use std::os::unix::ffi::OsStrExt;
        let request = BlockRequest::new(ManagerCommand::new("x").arg(OsStr::from_bytes(b"\xff")));
        let launcher = Launcher::SingleNode;
        let error = render(&request, &parts(&launcher)).unwrap_err();
        assert!(error.to_string().contains("not UTF-8"), "{error}");
    }
}

/// A mock [`CommandRunner`](crate::command::CommandRunner) and helpers for the providers'
/// unit tests.
#[cfg(test)]
pub(crate) mod mock {
    use futures::future::BoxFuture;

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
    pub(crate) fn printed(
        stdout: &str,
    ) -> BoxFuture<'static, Result<CommandOutput, ProviderError>> {
        ended(0, stdout, "")
    }

    /// A command that exited with `code` after printing `stdout` and `stderr`.
    pub(crate) fn ended(
        code: i32,
        stdout: &str,
        stderr: &str,
    ) -> BoxFuture<'static, Result<CommandOutput, ProviderError>> {
        let output = CommandOutput {
            code: Some(code),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
        };
        Box::pin(async move { Ok(output) })
    }
}
