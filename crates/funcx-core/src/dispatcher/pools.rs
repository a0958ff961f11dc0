//! Pools of workers (remote managers) that attach to the endpoint: attaching, which tasks
//! asking for resources can run on them, draining them, and what happens to their tasks when
//! one is lost.

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::shutdown::Stop;
use super::slot::{KillReason, Machine, Phase, Slot};
use super::Dispatcher;
use crate::worker::{ToWorker, Worker, WorkerEvents, WorkerId};
use crate::{BlockId, PoolStatus, TaskError, TaskId, TaskState};

impl Dispatcher {
    pub(super) fn attach(
        &mut self,
        worker: Box<dyn Worker>,
        size: usize,
        block: Option<BlockId>,
        machine: Machine,
        reply: oneshot::Sender<Result<WorkerEvents, TaskError>>,
    ) {
        if matches!(self.stop, Some(Stop::Now)) || (self.stop.is_some() && self.tasks.is_empty()) {
            // Dropping the worker tells it there is nothing to do here.
            let _ = reply.send(Err(TaskError::shutdown()));
            return;
        }
        let id = self.new_worker_id();
        let index = self.slots.len();
        self.slots
            .push(Slot::pool(index, id, worker, size, block, machine));
        self.slot_of.insert(id, index);
        self.broken = None;
        info!(worker = %id, size, "pool of workers attached");
        let _ = reply.send(Ok(WorkerEvents::new(id, self.events_tx.clone())));
        self.fail_unplaceable();
    }

    /// Why a task asking for `wanted` can run nowhere: not on the endpoint's own workers,
    /// nor on any pool attached now. `None` while it can run somewhere, or may once a pool
    /// attaches (an endpoint of pools alone, none attached yet), or while a relay pool is
    /// attached (the endpoint behind it decides).
    pub(super) fn unplaceable(&self, wanted: &crate::Resources) -> Option<String> {
        let mut reasons = Vec::new();
        if self.config.workers > 0 {
            match self.node.never_fits(wanted) {
                None => return None,
                Some(reason) => reasons.push(reason),
            }
        }
        let mut pools = 0;
        for pool in self.slots.iter().filter_map(|slot| slot.pool.as_ref()) {
            pools += 1;
            match &pool.machine {
                Machine::Node(node) => match node.never_fits(wanted) {
                    None => return None,
                    Some(reason) => reasons.push(format!("on a pool: {reason}")),
                },
                Machine::Unknown => reasons.push(
                    "a pool that does not say what its machine has takes no task that asks \
                     for resources"
                        .to_owned(),
                ),
                // Another endpoint decides, and fails the task there if it never fits.
                Machine::Relay => return None,
            }
        }
        if self.config.workers == 0 && pools == 0 {
            return None; // Its pools have yet to attach.
        }
        reasons.dedup();
        Some(format!("it asks for {wanted}; {}", reasons.join("; ")))
    }

    /// Fails the queued tasks that ask for resources no worker or pool has, now that a pool
    /// attached: on an endpoint of pools alone they waited for one.
    pub(super) fn fail_unplaceable(&mut self) {
        if self.config.workers > 0 || !self.saw_resources {
            return; // Checked when they were submitted, or there are none.
        }
        let doomed: Vec<(TaskId, String)> = self
            .queues
            .iter()
            .filter_map(|id| {
                let wanted = self.tasks.get(id)?.resources?;
                Some((*id, self.unplaceable(&wanted)?))
            })
            .collect();
        for (id, reason) in doomed {
            if let Some(mut record) = self.tasks.remove(&id) {
                record.finish(Err(TaskError::unsatisfiable(reason)));
            }
        }
    }

    /// A pool (a remote manager) is gone: the tasks it held go back to the queue, or fail
    /// once they have been lost with a pool as often as the retry budget allows. A pool is
    /// not replaced: its provider starts another, which attaches itself.
    pub(super) fn on_pool_gone(&mut self, index: usize, reason: String) {
        let mut slot = self.slots.swap_remove(index);
        self.slot_of.remove(&slot.id);
        if let Some(moved) = self.slots.get_mut(index) {
            moved.index = index;
            self.slot_of.insert(moved.id, index);
        }
        let stopping =
            matches!(slot.kill, Some(KillReason::Shutdown)) || slot.phase == Phase::Stopping;
        let held = slot.in_flight.take();
        let expiring = slot.pool.as_ref().is_some_and(|pool| pool.expiring);
        if stopping && held.is_empty() {
            debug!(worker = %slot.id, %reason, "pool of workers left");
        } else {
            warn!(worker = %slot.id, %reason, tasks = held.len(), "pool of workers lost");
        }
        for id in held {
            let Some(record) = self.tasks.get_mut(&id) else {
                continue;
            };
            if !expiring {
                record.deaths += 1;
            }
            let outcome = if record.reply.is_none() {
                Some(TaskError::cancelled())
            } else if matches!(self.stop, Some(Stop::Now)) {
                Some(TaskError::shutdown())
            } else if record.deaths > self.config.retries_on_worker_death {
                Some(TaskError::manager_lost(&reason))
            } else {
                None
            };
            match outcome {
                Some(error) => {
                    record.finish(Err(error));
                    self.tasks.remove(&id);
                }
                None => {
                    record.state = TaskState::Queued;
                    record.charged_ns = 0;
                    record.stolen = false;
                    self.queues.get_mut(record.lane).push_front(id);
                }
            }
        }
    }

    pub(super) fn pools(&self) -> Vec<PoolStatus> {
        self.slots
            .iter()
            .filter_map(|slot| {
                let pool = slot.pool.as_ref()?;
                Some(PoolStatus {
                    worker: slot.id,
                    block: pool.block.clone(),
                    size: pool.size,
                    in_flight: slot.in_flight.len(),
                    idle_since: pool.idle_since,
                    draining: slot.phase == Phase::Stopping,
                })
            })
            .collect()
    }

    /// Stops feeding the pools of `block` and asks them to finish and exit, because the
    /// block is about to end (its walltime) or is no longer needed. Their loss from now on is
    /// not charged to their tasks' retries.
    pub(super) fn drain_block(&mut self, block: &BlockId) {
        self.drain_pools(|_, pool_block| pool_block == Some(block));
    }

    /// Drains the one pool `worker` (a manager that asked to leave, or an endpoint a
    /// gateway stops), as [`Dispatcher::drain_block`] drains a block's.
    pub(super) fn drain_pool(&mut self, worker: WorkerId) {
        self.drain_pools(|id, _| id == worker);
    }

    pub(super) fn drain_pools(
        &mut self,
        mut which: impl FnMut(WorkerId, Option<&BlockId>) -> bool,
    ) {
        for slot in &mut self.slots {
            let Some(pool) = slot.pool.as_mut() else {
                continue;
            };
            if !which(slot.id, pool.block.as_ref()) || slot.phase != Phase::Ready {
                continue;
            }
            pool.expiring = true;
            slot.phase = Phase::Stopping;
            if let Some(worker) = slot.worker.as_mut() {
                worker.send(ToWorker::Shutdown);
            }
            info!(worker = %slot.id, block = ?pool.block, "draining pool");
        }
    }
}
