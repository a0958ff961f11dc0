//! Placement: which worker gets which queued task, and when tasks a worker holds but has not
//! started move to another.
//!
//! Dealing spreads first (one task to every idle worker, wherever it is), then hands out the
//! rest in fair shares bounded by each worker's estimated work, so no worker prefetches what
//! another could start now. With the queue empty, work stealing asks busy workers to give
//! back unstarted tasks for idle ones; `withdraw` uses the same give-back for the executor.

use std::time::{Duration, Instant, SystemTime};

use tracing::debug;

use super::estimate::{ISOLATE_AT_NS, TARGET_QUEUED_NS};
use super::lanes::Lane;
use super::slot::{Held, Slot};
use super::Dispatcher;
use crate::worker::{ToWorker, WorkItem};
use crate::{TaskError, TaskId, TaskState};

/// A worker holds at most this many tasks, however short they are.
const MAX_IN_FLIGHT: usize = 1024;
/// A worker holds at most this many argument bytes beyond its first task, so large payloads
/// are spread over workers instead of piling into one pipe.
const MAX_IN_FLIGHT_BYTES: usize = 8 << 20;
/// Unstarted work worth moving to an idle worker: a round trip to ask for it back costs
/// about a tenth of this.
const STEAL_MIN_NS: u64 = 1_000_000;
/// Rounds of dealing queued tasks out per dispatch; the first usually places everything.
const DEAL_ROUNDS: usize = 4;

impl Dispatcher {
    /// Hands queued tasks to ready workers while they have capacity: first one task to each
    /// idle worker everywhere, then more to each by its estimated work. With the queue empty,
    /// moves prefetched tasks from busy workers to idle ones.
    pub(super) fn dispatch(&mut self) {
        self.release_grants();
        if !self.queues.is_empty() {
            let count = self.slots.len();
            let now = SystemTime::now();
            // One task for each idle worker first, wherever it is.
            for offset in 0..count {
                let index = (self.round_robin + offset) % count;
                let slot = &self.slots[index];
                let idle = slot.size().saturating_sub(slot.in_flight.len());
                self.fill(index, now, idle);
                if self.queues.is_empty() {
                    break;
                }
            }
            // Then the rest dealt out in fair shares, so that one worker does not prefetch
            // what another could start, whatever the estimates say.
            for _ in 0..DEAL_ROUNDS {
                let takers: usize = self
                    .slots
                    .iter()
                    .filter(|slot| slot.takes_work())
                    .map(Slot::size)
                    .sum();
                let before = self.queues.len();
                if takers == 0 || before == 0 {
                    break;
                }
                let share = before.div_ceil(takers);
                for offset in 0..count {
                    let index = (self.round_robin + offset) % count;
                    let most = share.saturating_mul(self.slots[index].size());
                    self.fill(index, now, most);
                    if self.queues.is_empty() {
                        break;
                    }
                }
                if self.queues.len() == before {
                    break; // Every worker holds all its estimate allows.
                }
            }
            self.round_robin = self.round_robin.wrapping_add(1);
            self.assign_lanes();
        }
        if self.queues.is_empty() {
            self.balance(Instant::now());
        }
    }

    /// Work stealing: while some worker is idle and nothing is queued, asks busy workers to
    /// give back half of the tasks they hold and have not started. A worker confirms each
    /// one it skips with a cancelled result, and only then is the task queued again (see
    /// `on_results`), so nothing runs twice because it moved. Also corrects estimates from
    /// tasks that run longer than their function's estimate says.
    ///
    /// Costs one pass over the slots, and only when the queue is empty.
    pub(super) fn balance(&mut self, now: Instant) {
        self.balance_at = None;
        // An idle local worker with no core free for it cannot take stolen work: asking
        // for it would only bounce tasks through the queue.
        let local = self.config.workers.min(self.slots.len());
        let plain_fits = self
            .node
            .grant(
                None,
                self.slots[..local]
                    .iter()
                    .filter_map(|slot| slot.grant.as_ref()),
            )
            .is_some();
        // Idle capacity by lane for the endpoint's own workers (which take only their own
        // lane's tasks), and in pools (which take every lane's).
        let mut idle_local = vec![0usize; self.queues.lanes()];
        let mut idle_pools = 0usize;
        for slot in &self.slots {
            if !slot.takes_work() || !(slot.pool.is_some() || slot.grant.is_some() || plain_fits) {
                continue;
            }
            let free = slot.size().saturating_sub(slot.in_flight.len());
            match slot.pool {
                Some(_) => idle_pools += free,
                None => idle_local[slot.lane.0] += free,
            }
        }
        let mut idle = idle_pools + idle_local.iter().sum::<usize>();
        if idle == 0 {
            return;
        }
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.worker.is_none()
                || slot.kill.is_some()
                || slot.switch_to.is_some()
                || slot.in_flight.len() <= slot.size()
            {
                continue;
            }
            // What can take this worker's tasks: a local worker's go to its lane or a pool.
            let lane = slot.lane.0;
            let takers = match slot.pool {
                Some(_) => idle,
                None => idle_local[lane] + idle_pools,
            };
            if takers == 0 {
                continue;
            }
            let head = match &slot.in_flight {
                Held::Ordered(held) => held.front().and_then(|id| self.tasks.get(id)),
                Held::Unordered(_) => None,
            };
            let head_ns = head.map_or(0, |record| record.charged_ns);
            let ran_ns = u64::try_from(now.saturating_duration_since(slot.head_since).as_nanos())
                .unwrap_or(u64::MAX);
            if let Some(record) = head {
                // The running task has taken longer than its function is thought to take:
                // the estimate is wrong for these inputs, so raise it now rather than after
                // the task ends.
                let key = record.key.0 as usize;
                self.function_table[key].1.at_least(ran_ns);
            }
            // What waits behind the head, by what is known now (estimates may have grown
            // since the tasks were sent).
            let waiting_ns: u64 = match &slot.in_flight {
                Held::Ordered(held) => held
                    .iter()
                    .skip(1)
                    .filter_map(|id| self.tasks.get(id))
                    .map(|record| self.function_table[record.key.0 as usize].1.nanos())
                    .fold(0, u64::saturating_add),
                Held::Unordered(_) => slot.in_flight_ns,
            };
            let overrun_at = head_ns.saturating_mul(2).saturating_add(STEAL_MIN_NS);
            if waiting_ns < STEAL_MIN_NS && ran_ns < overrun_at {
                // Not worth a round trip yet; look again when the head will have overrun.
                let at = now + Duration::from_nanos(overrun_at - ran_ns);
                self.balance_at = Some(self.balance_at.map_or(at, |old| old.min(at)));
                continue;
            }
            let taken = self.steal_from(index, takers);
            idle = idle.saturating_sub(taken);
            if self.slots[index].pool.is_none() {
                let local = taken.min(idle_local[lane]);
                idle_local[lane] -= local;
                idle_pools = idle_pools.saturating_sub(taken - local);
            }
            if idle == 0 {
                break;
            }
        }
    }

    /// Asks slot `index` to give back up to half of its unstarted tasks (at most `wanted`,
    /// at least one); returns how many were asked for.
    fn steal_from(&mut self, index: usize, wanted: usize) -> usize {
        let slot = &mut self.slots[index];
        let size = slot.size();
        let candidates: Vec<TaskId> = match &slot.in_flight {
            // The first is running or about to; the rest wait behind it.
            Held::Ordered(held) => held.iter().skip(1).rev().copied().collect(),
            // A pool runs `size` at once; which ones, only the manager knows: it gives back
            // those it has not started.
            Held::Unordered(held) => held.iter().copied().collect(),
        };
        let unstarted = slot.in_flight.len().saturating_sub(size);
        let take = unstarted.div_ceil(2).min(wanted.max(1));
        let mut asked = Vec::with_capacity(take);
        for id in candidates {
            if asked.len() == take {
                break;
            }
            if let Some(record) = self.tasks.get_mut(&id) {
                if !record.stolen && record.reply.is_some() && record.state == TaskState::Dispatched
                {
                    record.stolen = true;
                    asked.push(id);
                }
            }
        }
        if asked.is_empty() {
            return 0;
        }
        debug!(worker = %slot.id, tasks = asked.len(), "asking a busy worker to give back tasks for an idle one");
        let count = asked.len();
        if let Some(worker) = slot.worker.as_mut() {
            worker.send(ToWorker::Return(asked));
        }
        count
    }

    /// Frees what the endpoint's own workers that hold no task any more had reserved of the
    /// machine. Grants are taken in `fill` and let go of here, once per dispatch, so that no
    /// path that empties a worker (results, death, cancellation, give-back) has to.
    fn release_grants(&mut self) {
        let local = self.config.workers.min(self.slots.len());
        for slot in &mut self.slots[..local] {
            if slot.grant.is_some() && slot.in_flight.is_empty() {
                slot.grant = None;
            }
        }
    }

    /// Reserves what the first live task in its lane's queue needs for the empty local slot
    /// `index`, and returns the environment that task runs with; `None` (nothing reserved)
    /// if it does not fit now.
    fn take_grant(&mut self, index: usize) -> Option<Vec<(String, String)>> {
        let queue = self.queues.get_mut(self.slots[index].lane);
        while let Some(id) = queue.front() {
            if self.tasks.contains_key(id) {
                break;
            }
            queue.pop_front(); // cancelled while queued
        }
        let wanted = queue
            .front()
            .and_then(|id| self.tasks.get(id))
            .and_then(|record| record.resources);
        let local = self.config.workers.min(self.slots.len());
        let held = self.slots[..local]
            .iter()
            .filter_map(|slot| slot.grant.as_ref());
        let grant = self.node.grant(wanted.as_ref(), held)?;
        let env = self.node.env(&grant);
        self.slots[index].grant = Some(grant);
        Some(env)
    }

    /// Gives slot `index` up to `most` queued tasks, as many as its workers' capacity
    /// allows: one per idle worker always, more while their estimated work stays under
    /// [`TARGET_QUEUED_NS`] each. One of the endpoint's own workers takes only tasks of its
    /// lane (its image's, or the default workers'); a pool takes every lane's, as its
    /// manager starts the images' workers itself.
    fn fill(&mut self, index: usize, now: SystemTime, most: usize) {
        // A worker being killed would only hand its new tasks back.
        if !self.slots[index].takes_work() || most == 0 {
            return;
        }
        if self.slots[index].pool.is_none() {
            self.fill_from(index, self.slots[index].lane, now, most);
            return;
        }
        let mut given = 0;
        for lane in (0..self.queues.lanes()).map(Lane) {
            if given >= most {
                break;
            }
            given += self.fill_from(index, lane, now, most - given);
        }
    }

    /// [`Dispatcher::fill`] from the queue of `lane`; returns how many tasks it gave.
    fn fill_from(&mut self, index: usize, lane: Lane, now: SystemTime, most: usize) -> usize {
        let local = self.slots[index].pool.is_none();
        // The environment of the first task given to an idle local worker (its GPUs).
        let mut env = Vec::new();
        if local && self.slots[index].grant.is_none() {
            match self.take_grant(index) {
                Some(granted) => env = granted,
                None => return 0, // The machine is full for the task at the head of the queue.
            }
        }
        let slot = &mut self.slots[index];
        let exclusive = slot.grant.as_ref().is_some_and(|grant| grant.exclusive);
        let size = slot.size();
        if slot.in_flight.is_empty() {
            slot.head_since = Instant::now();
        }
        let mut functions = Vec::new();
        let mut batch = Vec::new();
        let queue = self.queues.get_mut(lane);
        while let Some(&id) = queue.front() {
            if batch.len() == most {
                break;
            }
            let Some(record) = self.tasks.get_mut(&id) else {
                queue.pop_front(); // cancelled while queued
                continue;
            };
            // A task that asked for resources runs alone on one of the endpoint's own
            // workers, under the grant taken for it; nothing else shares that worker. A pool
            // takes it only if it said what its machine has and that is enough: its manager
            // then places it on its own workers by the same rules.
            if let Some(wanted) = &record.resources {
                let fits = match &slot.pool {
                    None => slot.in_flight.is_empty(),
                    Some(pool) => pool.machine.takes(wanted),
                };
                if !fits {
                    break;
                }
            }
            if exclusive && !slot.in_flight.is_empty() {
                break;
            }
            let (function, estimate) = &self.function_table[record.key.0 as usize];
            let estimate = estimate.nanos();
            // Every worker of a pool gets at least one task; beyond that, each holds about
            // TARGET_QUEUED_NS of work.
            if slot.in_flight.len() >= size
                && (slot.in_flight.len() >= MAX_IN_FLIGHT * size
                    || slot.in_flight_ns + estimate > TARGET_QUEUED_NS * size as u64
                    || slot.in_flight_bytes + record.bytes > MAX_IN_FLIGHT_BYTES * size)
            {
                break;
            }
            queue.pop_front();
            if slot.learn(record.key) {
                functions.push(ToWorker::Function {
                    key: record.key,
                    function: function.clone(),
                });
            }
            record.state = TaskState::Dispatched;
            record.attempts += 1;
            tracing::trace!(parent: &record.span, worker = %slot.id, attempt = record.attempts, "dispatched");
            record.timeline.dispatched = Some(now);
            record.charged_ns = estimate;
            slot.in_flight_ns += estimate;
            slot.in_flight_bytes += record.bytes;
            slot.in_flight.push(id);
            if let Some(pool) = slot.pool.as_mut() {
                pool.idle_since = None;
            }
            // A pool isolates tasks itself, by the same rules, per worker.
            let isolate = slot.pool.is_none()
                && (record.isolate || record.timeout.is_some() || estimate >= ISOLATE_AT_NS);
            batch.push(WorkItem {
                id,
                function: record.key,
                isolate,
                args: record.args.clone(),
                timeout: record.timeout,
                trace: Some(record.trace),
                env: std::mem::take(&mut env),
                resources: if local { None } else { record.resources },
            });
        }
        let given = batch.len();
        if let Some(worker) = slot.worker.as_mut().filter(|_| !batch.is_empty()) {
            for message in functions {
                worker.send(message);
            }
            worker.send(ToWorker::Tasks(batch));
        }
        given
    }

    /// Takes back the tasks among `ids` that have not started (see [`crate::Executor::withdraw`]):
    /// queued ones at once; ones on a worker by asking it, whose answer (a cancelled result,
    /// or the real one if it had started) settles each.
    pub(super) fn withdraw(&mut self, ids: Vec<TaskId>) {
        let mut asked = Vec::new();
        for id in ids {
            let Some(record) = self.tasks.get_mut(&id) else {
                continue;
            };
            if record.state == TaskState::Queued {
                record.finish(Err(TaskError::cancelled()));
                self.tasks.remove(&id); // Its queue entry is skipped when reached.
            } else {
                asked.push(id);
            }
        }
        if asked.is_empty() {
            return;
        }
        for slot in &mut self.slots {
            let held: Vec<TaskId> = asked
                .iter()
                .copied()
                .filter(|id| slot.in_flight.contains(*id))
                .filter(|id| !slot.running.is_some_and(|running| running.task == *id))
                .collect();
            if let Some(worker) = slot.worker.as_mut().filter(|_| !held.is_empty()) {
                worker.send(ToWorker::Return(held));
            }
        }
    }
}
