//! What workers report: ready, a task started, results, and exits. A worker that dies is
//! replaced, and the task it was running fails with the exit status (or is retried, per
//! `DispatcherConfig::retries_on_worker_death`); the tasks queued behind it on that worker
//! never started, so they go back to the front of the queue.

use std::time::{Instant, SystemTime};

use tracing::{debug, info, warn};

use super::slot::{KillReason, Phase, Running};
use super::Dispatcher;
use crate::worker::{WorkResult, WorkerEvent, WorkerId};
use crate::{TaskError, TaskId, TaskState, WorkerExit};

/// A task caught in the deaths of this many workers without being the one that was running
/// fails, so a worker that dies for outside reasons cannot bounce a task forever.
const MAX_DISRUPTIONS: u32 = 3;

impl Dispatcher {
    pub(super) fn on_event(&mut self, worker: WorkerId, event: WorkerEvent) {
        let Some(&index) = self.slot_of.get(&worker) else {
            return; // A replaced worker's last words.
        };
        match event {
            WorkerEvent::Ready => {
                let slot = &mut self.slots[index];
                // Spawning: Ready overtook the spawn's completion (see `on_spawned`).
                if matches!(slot.phase, Phase::Starting | Phase::Spawning) {
                    // Counted before the ready waiters hear of it: whoever `ready()` let go
                    // sees this worker in the stats, even while its spawn is still resolving.
                    if slot.count_started() {
                        self.workers_started += 1;
                    }
                    slot.phase = Phase::Ready;
                    slot.startup_failures = 0;
                    let took = slot.spawned_at.elapsed();
                    self.queues.started(slot.lane, took);
                    self.broken = None;
                    info!(worker = %worker, slot = index, "worker ready");
                    self.answer_ready_waiters();
                }
            }
            WorkerEvent::Started(id) => self.on_started(index, id),
            WorkerEvent::Results(results) => self.on_results(index, results),
            WorkerEvent::Exited(exit) => self.on_exited(index, exit),
            WorkerEvent::Lost(reason) => self.on_pool_gone(index, reason),
        }
    }

    pub(super) fn on_started(&mut self, index: usize, id: TaskId) {
        let slot = &mut self.slots[index];
        let Some(record) = self.tasks.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        record.state = TaskState::Running;
        record.timeline.running = Some(SystemTime::now());
        tracing::trace!(parent: &record.span, "running");
        let deadline = record.timeout.map(|timeout| (now + timeout, timeout));
        slot.running = Some(Running { task: id, deadline });
        if record.reply.is_none() {
            // Cancelled after it was sent and before the worker saw the cancel.
            slot.kill(KillReason::Cancel(id));
        }
    }

    pub(super) fn on_results(&mut self, index: usize, results: Vec<WorkResult>) {
        let now = SystemTime::now();
        let slot = &mut self.slots[index];
        // The worker moved on: what it holds next starts about now.
        slot.head_since = Instant::now();
        for result in results {
            if !slot.in_flight.remove(result.id) {
                // A duplicate (a manager re-sending after a reconnect) or a stray.
                debug!(worker = %slot.id, task = %result.id, "result for a task this worker does not hold; ignored");
                continue;
            }
            if slot
                .running
                .is_some_and(|running| running.task == result.id)
            {
                slot.running = None;
            }
            let Some(mut record) = self.tasks.remove(&result.id) else {
                continue;
            };
            slot.in_flight_ns = slot.in_flight_ns.saturating_sub(record.charged_ns);
            slot.in_flight_bytes = slot.in_flight_bytes.saturating_sub(record.bytes);
            if record.stolen
                && record.reply.is_some()
                && result.outcome.as_ref().is_err_and(TaskError::is_cancelled)
            {
                // Given back unstarted: it runs on the worker that wanted work. Not an
                // attempt, and not charged anything.
                debug!(parent: &record.span, worker = %slot.id, "given back; queued again");
                record.stolen = false;
                record.state = TaskState::Queued;
                record.charged_ns = 0;
                record.attempts = record.attempts.saturating_sub(1);
                self.queues.get_mut(record.lane).push_front(result.id);
                self.tasks.insert(result.id, record);
                continue;
            }
            let measured = match &result.outcome {
                Ok(_) => true,
                Err(error) => error.is_python(),
            };
            if measured {
                self.function_table[record.key.0 as usize]
                    .1
                    .record(result.duration);
            }
            if record.timeline.running.is_none() {
                record.timeline.running = now.checked_sub(result.duration);
            }
            record.timeline.finished = Some(now);
            record.finish(result.outcome);
        }
        if slot.in_flight.is_empty() {
            if let Some(pool) = slot.pool.as_mut() {
                pool.idle_since.get_or_insert(now);
            }
        }
    }

    pub(super) fn on_exited(&mut self, index: usize, exit: WorkerExit) {
        if self.slots[index].pool.is_some() {
            return self.on_pool_gone(index, format!("it exited with {exit}"));
        }
        let slot = &mut self.slots[index];
        let worker = slot.id;
        let was_ready = slot.phase == Phase::Ready;
        let kill = slot.kill.take();
        let running = slot.running.take().map(|running| running.task);
        let in_flight = slot.in_flight.take();
        slot.worker = None;
        slot.in_flight_ns = 0;
        slot.in_flight_bytes = 0;
        let stopping = self.stop.is_some();

        match kill {
            Some(KillReason::Shutdown) => {}
            Some(reason) => debug!(worker = %worker, ?reason, "killed worker exited"),
            None if slot.phase == Phase::Stopping && (stopping || slot.switch_to.is_some()) => {}
            None => warn!(worker = %worker, %exit, in_flight = in_flight.len(), "worker died"),
        }

        // Which task was running when the worker went: the one it said it started, or the
        // only one it held. With several tasks and no start report, any of them may have
        // been running (results are reported in batches), so none is blamed and all are
        // re-run isolated, which pins the blame next time.
        let head = in_flight.first().copied();
        let culprit = match kill {
            Some(KillReason::Timeout(id, _)) | Some(KillReason::Cancel(id)) => Some(id),
            Some(KillReason::Shutdown) => None,
            None if running.is_some() && running == head => running,
            None if in_flight.len() == 1 => head,
            None => None,
        };
        let ambiguous = kill.is_none() && culprit.is_none() && !in_flight.is_empty();

        for id in in_flight.iter().rev() {
            let Some(record) = self.tasks.get_mut(id) else {
                continue;
            };
            let outcome = if Some(*id) == culprit {
                record.deaths += 1;
                match kill {
                    Some(KillReason::Timeout(_, after)) => Some(TaskError::timeout(after)),
                    Some(KillReason::Cancel(_)) => Some(TaskError::cancelled()),
                    _ if record.deaths > self.config.retries_on_worker_death => {
                        Some(TaskError::worker_died(exit))
                    }
                    _ => None,
                }
            } else if record.reply.is_none() {
                // Cancelled while waiting on this worker: nothing left to do for it.
                Some(TaskError::cancelled())
            } else if matches!(kill, Some(KillReason::Shutdown)) {
                Some(TaskError::shutdown())
            } else if ambiguous {
                record.disruptions += 1;
                record.isolate = true;
                (record.disruptions > MAX_DISRUPTIONS).then(|| TaskError::worker_died(exit))
            } else {
                None
            };
            match outcome {
                Some(error) => {
                    debug!(task = %id, worker = %worker, %error, "task failed with its worker");
                    record.finish(Err(error));
                    self.tasks.remove(id);
                }
                None => {
                    record.state = TaskState::Queued;
                    record.charged_ns = 0;
                    record.stolen = false;
                    self.queues.get_mut(record.lane).push_front(*id);
                }
            }
        }

        if !self.keeps_worker(index) {
            self.slots[index].phase = Phase::Dead;
        } else if let Some(lane) = self.slots[index].switch_to.take() {
            // Retired for another image: the slot's next worker starts in it.
            self.slots[index].lane = lane;
            self.slots[index].startup_failures = 0;
            self.respawn(index);
        } else if was_ready {
            self.respawn(index);
        } else {
            let reason = format!(
                "worker exited with {exit} before it was ready (its output is in the `funcx::worker` log)"
            );
            warn!(worker = %worker, "{reason}");
            self.startup_failed(index, reason);
        }
    }
}
