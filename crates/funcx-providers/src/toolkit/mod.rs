//! The provider toolkit: what every provider needs and writes once.
//!
//! - [`shell`]: quoting words for a shell, exporting the manager's environment, the manager
//!   command as shell words (batch scripts, the Grid Engine node script, EC2 user data);
//! - [`script`]: the batch script of a block (Slurm, PBS) and writing scripts to the scripts
//!   directory;
//! - [`launcher`]: how a batch script starts one manager on each node of its block
//!   ([`Launcher`]: `srun`, `mpiexec`, `aprun`), or one for the whole block, and the
//!   refusal of the latter by providers without batch jobs;
//! - [`clock`]: when each block entered its state, for [`BlockStatus::since`];
//! - [`options`]: the options every batch scheduler has, under one name each (`job_name`,
//!   `directive`, `scripts_dir`, `commands_dir`, `command_env`, `runner`), and walltime
//!   formatting (a zero walltime is refused once, by [`BlockRequest::check`]);
//! - `mock` (tests only): a mock [`CommandRunner`](crate::CommandRunner) answering with
//!   recorded scheduler output.
//!
//! [`BlockStatus::since`]: funcx_core::BlockStatus::since
//! [`BlockRequest::check`]: funcx_core::BlockRequest::check

pub(crate) mod clock;
pub(crate) mod launcher;
#[cfg(test)]
pub(crate) mod mock;
pub(crate) mod options;
pub(crate) mod script;
pub(crate) mod shell;

pub(crate) use clock::StateClock;
pub(crate) use launcher::reject_per_block;
pub use launcher::Launcher;
pub(crate) use options::{batch_options, BatchOptions};
pub use shell::shell_quote;
