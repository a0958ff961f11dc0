//! Shell and MPI tasks: a command line run by a worker as an ordinary function.
//!
//! Most HPC codes are executables, not Python functions. A [`ShellFunction`] is a command
//! template; each task fills it from its arguments (every value quoted as one shell word), and
//! a worker runs it in a sandbox directory of its own, in a process group of its own, with a
//! walltime after which the whole group is killed. The result is a [`ShellResult`].
//!
//! A shell function *is* a [`Function`]: its body is a small stdlib-only Python program
//! (`shell.py`) with the command and its options written into it. So it runs on the same warm
//! workers as every other function, through the same placement, retries, remote managers and
//! gateway, and any client that can submit a function can submit a command.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Function, TaskOptions};

/// The Python that runs a command; [`ShellFunction::function`] puts the configuration in
/// front of it.
const SHELL_PY: &str = include_str!("shell.py");

/// Python functions for where a task runs, defined in front of a shell function's source
/// and of any other worker-side Python that launches MPI ranks or runs a command in a
/// sandbox (the gateway's Globus Compute shim), so both read the granted nodes and make
/// sandboxes alike: `_granted_hosts()` (the hosts in [`HOSTS_VARIABLE`], else this machine),
/// `_host_slots(hosts, n)` (`host:n,...`, Open MPI's `--host`) and
/// `_new_sandbox(prefix, root=None)` (a fresh directory under `root`, `FUNCX_SANDBOX_ROOT` or
/// the temporary directory's `funcx-sandbox`). Standard library only; it imports what it
/// uses as `_os`, `_socket`, `_tempfile`.
///
/// [`HOSTS_VARIABLE`]: crate::HOSTS_VARIABLE
pub const TASK_PLACEMENT_PY: &str = include_str!("task_placement.py");

/// The entry point `shell.py` defines.
const ENTRY_POINT: &str = "run_shell";

/// The default number of lines of stdout and of stderr a [`ShellResult`] keeps (the last ones).
pub const DEFAULT_SNIPPET_LINES: usize = 1000;

/// The default length in bytes after which one output line is cut.
pub const DEFAULT_MAX_LINE_BYTES: usize = 4096;

/// A command line run as a task.
///
/// The command is a Python format string run by `/bin/sh -c`: `{name}` is filled from the
/// task's keyword argument `name`, `{0}` from its first positional argument, `{{` is a
/// literal brace. Every value is quoted with `shlex.quote` on the worker, so an argument is
/// always one word and never shell syntax, whatever it contains.
///
/// A non-zero exit status is a result ([`ShellResult::returncode`]), not an error, unless
/// [`ShellFunction::fail_on_error`] says otherwise.
///
/// ```
/// use std::time::Duration;
/// use funcx_core::{Args, ShellFunction};
///
/// let grep = ShellFunction::new("grep -c {pattern} {file}")
///     .walltime(Duration::from_secs(60))
///     .snippet_lines(100);
/// let function = grep.function(); // submit it like any other function
/// let args = Args::new().kwarg("pattern", "error; rm -rf /").kwarg("file", "log.txt");
/// # let _ = (function, args);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellFunction {
    command: String,
    walltime: Option<Duration>,
    snippet_lines: usize,
    max_line_bytes: usize,
    sandbox_root: Option<String>,
    keep_sandbox: bool,
    fail_on_error: bool,
    env: BTreeMap<String, String>,
    mpi: Option<MpiConfig>,
}

/// The configuration `shell.py` reads, written into the function's source as JSON.
#[derive(Serialize)]
struct Config<'a> {
    command: &'a str,
    walltime: Option<f64>,
    snippet_lines: usize,
    max_line_bytes: usize,
    sandbox_root: Option<&'a str>,
    keep_sandbox: bool,
    fail_on_error: bool,
    env: &'a BTreeMap<String, String>,
    mpi: Option<&'a MpiConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct MpiConfig {
    ranks: u32,
    launcher: Vec<String>,
}

impl ShellFunction {
    /// A shell function running `command` (a template; see the type's documentation), with
    /// no walltime and the last [`DEFAULT_SNIPPET_LINES`] lines of each output kept.
    pub fn new(command: impl Into<String>) -> ShellFunction {
        ShellFunction {
            command: command.into(),
            walltime: None,
            snippet_lines: DEFAULT_SNIPPET_LINES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            sandbox_root: None,
            keep_sandbox: false,
            fail_on_error: false,
            env: BTreeMap::new(),
            mpi: None,
        }
    }

    /// Kills the command's whole process group after `walltime`; the result then has
    /// return code 124 (as `timeout(1)` reports) and [`ShellResult::timed_out`] set.
    pub fn walltime(mut self, walltime: Duration) -> ShellFunction {
        self.walltime = Some(walltime);
        self
    }

    /// Keeps the last `lines` lines of stdout and of stderr (at least 1); earlier lines are
    /// counted but dropped, so a command that writes gigabytes costs no memory.
    pub fn snippet_lines(mut self, lines: usize) -> ShellFunction {
        self.snippet_lines = lines.max(1);
        self
    }

    /// Cuts each output line after `bytes` bytes (at least 16), so that output without line
    /// breaks stays bounded too.
    pub fn max_line_bytes(mut self, bytes: usize) -> ShellFunction {
        self.max_line_bytes = bytes.max(16);
        self
    }

    /// Creates each task's sandbox directory under `root` on the worker's machine. Without
    /// it: `$FUNCX_SANDBOX_ROOT` of the worker, else `funcx-sandbox` in its temporary
    /// directory.
    pub fn sandbox_root(mut self, root: impl Into<String>) -> ShellFunction {
        self.sandbox_root = Some(root.into());
        self
    }

    /// Keeps each task's sandbox directory (and names it in [`ShellResult::sandbox`]) instead
    /// of removing it when the command ends, for commands that leave files behind.
    pub fn keep_sandbox(mut self, keep: bool) -> ShellFunction {
        self.keep_sandbox = keep;
        self
    }

    /// Fails the task with a Python exception `ShellCommandFailed` (message: the command, its
    /// status and the kept stderr) when the command exits non-zero or times out, instead of
    /// returning the [`ShellResult`].
    pub fn fail_on_error(mut self, fail: bool) -> ShellFunction {
        self.fail_on_error = fail;
        self
    }

    /// Sets an environment variable for the command, on top of the worker's environment.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> ShellFunction {
        self.env.insert(name.into(), value.into());
        self
    }

    /// The function to register and submit. Its id is a hash of the command and every
    /// option, so two equal shell functions are one function.
    pub fn function(&self) -> Function {
        let config = Config {
            command: &self.command,
            walltime: self.walltime.map(|w| w.as_secs_f64()),
            snippet_lines: self.snippet_lines,
            max_line_bytes: self.max_line_bytes,
            sandbox_root: self.sandbox_root.as_deref(),
            keep_sandbox: self.keep_sandbox,
            fail_on_error: self.fail_on_error,
            env: &self.env,
            mpi: self.mpi.as_ref(),
        };
        // Serializing strings, numbers and maps of strings to JSON cannot fail; the fallback
        // keeps this infallible without a panic path.
        let json = serde_json::to_string(&config).unwrap_or_else(|_| "{}".to_owned());
        // A JSON string literal (quotes, backslashes and control characters escaped, the
        // rest as UTF-8) is also a valid Python string literal.
        let literal = serde_json::to_string(&json).unwrap_or_else(|_| "\"{}\"".to_owned());
        let source = format!(
            "import collections as _collections, json as _json, os as _os, shlex as _shlex\n\
             import shutil as _shutil, signal as _signal\n\
             import string as _string\n\
             import subprocess as _subprocess, threading as _threading\n\
             import time as _time\n\n\
             {TASK_PLACEMENT_PY}\n\n\
             _CONFIG = _json.loads({literal})\n\n{SHELL_PY}"
        );
        Function::from_source(source, ENTRY_POINT)
    }
}

impl From<&ShellFunction> for Function {
    fn from(shell: &ShellFunction) -> Function {
        shell.function()
    }
}

/// A command run across several MPI ranks by a launcher (`mpirun`, `mpiexec`, `srun`).
///
/// One task is one launcher invocation: the worker that takes the task runs
/// `launcher… command`, and the launcher starts the ranks. The rank count is the function's
/// default, or the task's keyword argument `ranks`, which the template does not see.
/// Everything else is a [`ShellFunction`]: template, quoting, sandbox, walltime, bounded
/// output.
///
/// **Nodes.** A task submitted with [`TaskOptions::nodes`] (or this function's
/// [`MpiFunction::options`] after [`MpiFunction::nodes`]) holds that many whole nodes of one
/// block while it runs, and waits until they are free. The nodes are those a
/// `funcx-manager --block-nodes auto` took from its batch scheduler (`SLURM_JOB_NODELIST`,
/// `PBS_NODEFILE`, `PE_HOSTFILE`), or this machine alone. The launcher's words name them
/// with placeholders, filled on the worker:
///
/// | placeholder | is |
/// | --- | --- |
/// | `{ranks}` | the rank count |
/// | `{nodes}` | how many nodes the task holds (1 without [`TaskOptions::nodes`]) |
/// | `{hosts}` | their host names, comma-separated (this host without it) |
/// | `{ranks_per_node}` | `{ranks}` over `{nodes}`, rounded up |
/// | `{host_slots}` | `host:ranks_per_node` for each host, comma-separated |
///
/// The launchers of the common MPIs are [`MpiFunction::OPEN_MPI`] (the default),
/// [`MpiFunction::MPICH`] and [`MpiFunction::SRUN`].
///
/// As root, the worker sets Open MPI's `OMPI_ALLOW_RUN_AS_ROOT` variables (other launchers
/// ignore them).
///
/// ```
/// use funcx_core::MpiFunction;
///
/// // 8 ranks over 2 whole nodes of a Slurm block, 4 per node.
/// let step = MpiFunction::new("python3 simulate.py {steps}")
///     .launcher(MpiFunction::SRUN)
///     .ranks(8)
///     .nodes(2);
/// let (function, options) = (step.function(), step.options());
/// # let _ = (function, options);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiFunction {
    shell: ShellFunction,
    ranks: u32,
    nodes: u32,
    launcher: Vec<String>,
}

impl MpiFunction {
    /// Open MPI's `mpirun`, with the task's hosts and a slot per rank on each:
    /// `mpirun -n {ranks} --host {host_slots}`.
    pub const OPEN_MPI: [&'static str; 5] = ["mpirun", "-n", "{ranks}", "--host", "{host_slots}"];

    /// MPICH's (and Intel MPI's) Hydra `mpiexec`:
    /// `mpiexec -n {ranks} -ppn {ranks_per_node} -hosts {hosts}`.
    pub const MPICH: [&'static str; 7] = [
        "mpiexec",
        "-n",
        "{ranks}",
        "-ppn",
        "{ranks_per_node}",
        "-hosts",
        "{hosts}",
    ];

    /// Slurm's `srun`, within the block's allocation:
    /// `srun -N {nodes} -n {ranks} --nodelist={hosts}`.
    pub const SRUN: [&'static str; 6] = [
        "srun",
        "-N",
        "{nodes}",
        "-n",
        "{ranks}",
        "--nodelist={hosts}",
    ];

    /// An MPI function running `command` (a [`ShellFunction`] template) on 2 ranks with
    /// [`MpiFunction::OPEN_MPI`].
    pub fn new(command: impl Into<String>) -> MpiFunction {
        MpiFunction {
            shell: ShellFunction::new(command),
            ranks: 2,
            nodes: 0,
            launcher: MpiFunction::OPEN_MPI.map(String::from).to_vec(),
        }
    }

    /// The number of ranks a task runs unless its `ranks` argument says otherwise (at
    /// least 1).
    pub fn ranks(mut self, ranks: u32) -> MpiFunction {
        self.ranks = ranks.max(1);
        self
    }

    /// The whole nodes [`MpiFunction::options`] asks for (see [`TaskOptions::nodes`]); 0,
    /// the default, runs the ranks on the worker's own node.
    pub fn nodes(mut self, nodes: u32) -> MpiFunction {
        self.nodes = nodes;
        self
    }

    /// The launcher and its options, each one word, with the placeholders of the type's
    /// documentation; for example [`MpiFunction::SRUN`], or
    /// `["mpiexec", "-n", "{ranks}", "-f", "hosts"]`.
    pub fn launcher<S: Into<String>>(
        mut self,
        launcher: impl IntoIterator<Item = S>,
    ) -> MpiFunction {
        let launcher: Vec<String> = launcher.into_iter().map(Into::into).collect();
        if !launcher.is_empty() {
            self.launcher = launcher;
        }
        self
    }

    /// Lets Open MPI start more ranks than the machine has cores (through its environment,
    /// `OMPI_MCA_rmaps_base_oversubscribe`).
    pub fn oversubscribe(mut self) -> MpiFunction {
        self.shell = self.shell.env("OMPI_MCA_rmaps_base_oversubscribe", "1");
        self
    }

    /// Task options for this function's tasks. With [`MpiFunction::nodes`]: that many
    /// whole nodes, held while the task runs. Without: a core per rank of the worker's node
    /// (see [`TaskOptions::cores`]), so that an MPI task waits until its ranks have cores
    /// instead of oversubscribing the machine, and fails at once if the machine has fewer
    /// cores than ranks. A task whose `ranks` argument differs needs its own options.
    pub fn options(&self) -> TaskOptions {
        if self.nodes > 0 {
            TaskOptions::new().nodes(self.nodes)
        } else {
            TaskOptions::new().cores(self.ranks)
        }
    }

    /// Changes the shell options (walltime, output bounds, sandbox, environment).
    pub fn shell(mut self, options: impl FnOnce(ShellFunction) -> ShellFunction) -> MpiFunction {
        self.shell = options(self.shell);
        self
    }

    /// The function to register and submit.
    pub fn function(&self) -> Function {
        let mut shell = self.shell.clone();
        shell.mpi = Some(MpiConfig {
            ranks: self.ranks,
            launcher: self.launcher.clone(),
        });
        shell.function()
    }
}

impl From<&MpiFunction> for Function {
    fn from(mpi: &MpiFunction) -> Function {
        mpi.function()
    }
}

/// What a shell task returns: its exit status and the end of its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShellResult {
    /// The exit status of `/bin/sh -c command`: 124 when the walltime killed it; 128+N
    /// when the shell reports its command killed by signal N; -N when signal N killed the
    /// shell itself.
    pub returncode: i32,
    /// The last lines of standard output (see [`ShellFunction::snippet_lines`]), as UTF-8
    /// with invalid bytes replaced.
    pub stdout: String,
    /// The last lines of standard error.
    pub stderr: String,
    /// How many lines the command wrote to standard output in all.
    pub stdout_lines: u64,
    /// How many lines it wrote to standard error in all.
    pub stderr_lines: u64,
    /// Whether lines of standard output were dropped or cut.
    pub stdout_truncated: bool,
    /// Whether lines of standard error were dropped or cut.
    pub stderr_truncated: bool,
    /// Whether the walltime ended the command.
    pub timed_out: bool,
    /// The command line as run, after quoting.
    pub command: String,
    /// The sandbox directory, when it was kept ([`ShellFunction::keep_sandbox`]).
    pub sandbox: Option<String>,
    /// How long the command ran, in seconds.
    pub seconds: f64,
}

impl ShellResult {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.returncode == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_command_and_options_are_the_same_function() {
        let a = ShellFunction::new("echo {x}").walltime(Duration::from_secs(1));
        let b = ShellFunction::new("echo {x}").walltime(Duration::from_secs(1));
        assert_eq!(a.function().id(), b.function().id());
        let c = ShellFunction::new("echo {x}").walltime(Duration::from_secs(2));
        assert_ne!(a.function().id(), c.function().id());
        assert_ne!(
            MpiFunction::new("hello").ranks(2).function().id(),
            MpiFunction::new("hello").ranks(3).function().id()
        );
    }

    #[test]
    fn the_configuration_is_a_python_literal_whatever_the_command_holds() {
        let hostile = "echo \"''' \\\" \n\t\u{1} é {x}";
        let function = ShellFunction::new(hostile).function();
        let crate::FunctionBody::Source(source) = function.body() else {
            panic!("a shell function is source");
        };
        let line = source
            .lines()
            .find(|l| l.starts_with("_CONFIG = "))
            .unwrap_or_default();
        // The literal is on one line: newlines and control characters are escaped.
        let literal = line
            .trim_start_matches("_CONFIG = _json.loads(")
            .trim_end_matches(')');
        let json: String = serde_json::from_str(literal).unwrap_or_default();
        let config: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(config["command"], hostile);
    }
}
