//! Where funcx workers come from.
//!
//! This crate will hold the implementations of `funcx-core`'s provider seam: blocks of
//! managers started as local processes, through Slurm, PBS Pro / Torque, Grid Engine, or on
//! EC2, together with the launchers (`srun`, `mpiexec`, ...) that start one manager per node,
//! and a `CommandRunner` seam so every scheduler is unit-tested with mocks.
//!
//! The local endpoint of `funcx-python` starts its workers directly as child processes, so
//! the first provider arrives with remote managers.

/// The kinds of provider this crate is built to hold, so that configuration and logs can name
/// them consistently before their implementations land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderKind {
    /// Managers started as processes on this machine.
    Local,
    /// Blocks submitted to Slurm with `sbatch`.
    Slurm,
    /// Blocks submitted to PBS Pro or Torque with `qsub`.
    Pbs,
    /// Blocks submitted to Grid Engine with `qsub`.
    GridEngine,
    /// Blocks started as EC2 instances.
    Ec2,
}
