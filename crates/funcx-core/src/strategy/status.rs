//! What an endpoint reports about itself: blocks, managers, workers, tasks.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

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

/// A snapshot of an endpoint: what a status page or a gateway shows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EndpointStatus {
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
