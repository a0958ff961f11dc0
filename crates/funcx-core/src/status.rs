//! What an endpoint reports about itself: blocks, managers, workers, tasks.
//!
//! Two views at two levels:
//!
//! - [`ExecutorStats`] and [`PoolStatus`] are one executor's own counts (its queue, its
//!   workers, the pools attached to it), read with [`Executor::stats`](crate::Executor::stats)
//!   and [`Executor::pools`](crate::Executor::pools). They know nothing of providers or blocks.
//! - [`StrategyStatus`] and [`BlockReport`] are the whole endpoint as its scaling
//!   [`Strategy`](crate::Strategy) sees it: blocks at the provider, managers registered, the
//!   last error and the back-off, for a status page or a gateway.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::worker::WorkerId;
use crate::{BlockId, BlockState};

/// One block as the strategy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockReport {
    /// The provider's id for it.
    pub id: BlockId,
    /// Its state at the provider.
    pub state: BlockState,
    /// Whether it is being drained (before its walltime, or because it is idle).
    pub draining: bool,
    /// Managers of this block registered with the endpoint.
    pub managers: usize,
    /// Their worker slots.
    pub workers: usize,
    /// Tasks they hold.
    pub busy: usize,
    /// Why it was cancelled or failed, when the strategy or the scheduler said.
    pub reason: Option<String>,
}

/// The scaling strategy's view of an endpoint: its blocks at the provider, the managers
/// and workers they brought, the last problem with blocks and the back-off after failures.
///
/// Published by [`Strategy::status`](crate::Strategy::status) and
/// [`Strategy::changed`](crate::Strategy::changed); it is what a status page or a gateway
/// shows. Unlike [`ExecutorStats`], which counts one executor's workers and tasks and knows
/// nothing of providers, it includes blocks that have not started or have ended, and why.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StrategyStatus {
    /// Blocks alive now, and the last few that ended.
    pub blocks: Vec<BlockReport>,
    /// Managers registered.
    pub managers: usize,
    /// Worker slots they bring.
    pub workers: usize,
    /// Worker slots with a task.
    pub busy_workers: usize,
    /// Worker slots without one.
    pub idle_workers: usize,
    /// Tasks waiting for a worker.
    pub queued: usize,
    /// Tasks on workers.
    pub in_flight: usize,
    /// The last problem with blocks (a rejected submission, a block that failed or never
    /// started), so that a user sees why there are no workers.
    pub last_error: Option<String>,
    /// Until when no new block is submitted, after failures.
    pub backing_off_until: Option<SystemTime>,
}

/// Counts of one executor's workers and tasks at one moment, as
/// [`Executor::stats`](crate::Executor::stats) returns them.
///
/// For tests and benchmarks that wait for workers, and for load reporting. Unlike
/// [`StrategyStatus`], the scaling strategy's view with blocks, errors and back-off, it
/// knows only what the executor itself holds: its worker slots, its queue, attached pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecutorStats {
    /// Worker slots configured.
    pub workers: usize,
    /// Workers started and ready for tasks.
    pub ready_workers: usize,
    /// Tasks waiting for a worker.
    pub queued: usize,
    /// Tasks sent to workers and not finished.
    pub in_flight: usize,
    /// Workers started since the executor started, replacements included. A worker counts
    /// from its spawn's completion or its readiness, whichever comes first, so every worker
    /// that [`crate::Executor::ready`] waited for is in it.
    pub workers_started: u64,
    /// Pools of workers attached from outside (remote managers).
    pub managers: usize,
}

/// One pool of workers (a remote manager) as [`crate::Executor::pools`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// The pool's id within the endpoint.
    pub worker: WorkerId,
    /// The block it belongs to, if its provider said.
    pub block: Option<BlockId>,
    /// How many tasks it runs at once.
    pub size: usize,
    /// How many tasks it holds now.
    pub in_flight: usize,
    /// Since when it has held no task (`None` while busy).
    pub idle_since: Option<std::time::SystemTime>,
    /// Whether it is draining (no new tasks; it exits when done).
    pub draining: bool,
}
