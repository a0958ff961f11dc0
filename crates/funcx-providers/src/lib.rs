//! Where funcx workers come from.
//!
//! This crate holds the implementations of `funcx-core`'s [`Provider`] seam: the things that
//! obtain *blocks* of resources and start one manager on each of their nodes:
//! [`LocalProvider`] (processes on this machine), [`SlurmProvider`], [`PbsProvider`] (PBS Pro
//! and Torque), [`GridEngineProvider`], and `Ec2Provider` (feature `ec2`; it needs Rust 1.94,
//! the rest of the workspace 1.80). Scheduler commands go through the [`CommandRunner`] seam,
//! so each scheduler is unit-tested against recorded output of `sbatch`, `squeue`, `qstat`...
//! and integration-tested against the real scheduler.
//!
//! A provider is driven by polling, as an endpoint's scaling strategy drives it:
//!
//! ```
//! use std::time::Duration;
//!
//! use funcx_core::{BlockRequest, BlockState, ManagerCommand, Provider};
//! use funcx_providers::LocalProvider;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # runtime.block_on(async {
//! let provider = LocalProvider::new();
//! // Two nodes, each running a "manager" that exits at once.
//! let manager = ManagerCommand::new("/bin/sh").arg("-c").arg("exit 0");
//! let block = provider.submit(&BlockRequest::new(manager).nodes(2)).await?;
//!
//! let state = loop {
//!     let status = provider.status(std::slice::from_ref(&block)).await?;
//!     if status[0].state.is_finished() {
//!         break status[0].state.clone();
//!     }
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! };
//! assert_eq!(state, BlockState::Completed);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! [`Provider`]: funcx_core::Provider

pub mod command;
#[cfg(feature = "ec2")]
mod ec2;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gridengine;
#[cfg(unix)]
mod local;
pub mod pbs;
pub mod slurm;
mod toolkit;

pub use command::{CommandOutput, CommandRunner, SchedulerCommand, ShellRunner};
#[cfg(feature = "ec2")]
pub use ec2::{
    Ec2Config, Ec2ConfigError, Ec2Provider, BLOCK_TAG as EC2_BLOCK_TAG,
    ENDPOINT_TAG as EC2_ENDPOINT_TAG,
};
pub use gridengine::{GridEngineConfig, GridEngineProvider};
#[cfg(unix)]
pub use local::LocalProvider;
pub use pbs::{PbsConfig, PbsFlavor, PbsProvider};
pub use slurm::{SlurmConfig, SlurmProvider};
pub use toolkit::{shell_quote, Launcher};
