//! The lifecycle of the endpoint's own workers: spawning, replacing a dead one with back-off,
//! and telling those who wait for the endpoint to be ready whether it is.
//!
//! A worker that cannot start is retried; while every slot keeps failing, queued tasks fail
//! with a [`TaskError::is_no_workers`] error instead of waiting forever.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::lanes::Lane;
use super::slot::{KillReason, Phase};
use super::Dispatcher;
use crate::worker::{SpawnError, Worker, WorkerEvents, WorkerId};
use crate::TaskError;

impl Dispatcher {
    pub(super) fn new_worker_id(&mut self) -> WorkerId {
        self.next_worker += 1;
        WorkerId(self.next_worker)
    }

    pub(super) fn spawn(&mut self, index: usize, delay: Duration) {
        let slot = &mut self.slots[index];
        slot.phase = Phase::Spawning;
        slot.spawned_at = std::time::Instant::now() + delay;
        let id = slot.id;
        let image = self.queues.image(slot.lane).cloned();
        let events = WorkerEvents::new(id, self.events_tx.clone());
        let runtime = Arc::clone(&self.runtime);
        let done = self.spawned_tx.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = match image {
                None => runtime.spawn(index, events).await,
                Some(image) => runtime.spawn_in_image(index, &image, events).await,
            };
            // If the dispatcher is gone the worker is dropped here, which stops it.
            let _ = done.send((index, id, result));
        });
    }

    pub(super) fn respawn(&mut self, index: usize) {
        let old = self.slots[index].id;
        self.slot_of.remove(&old);
        let id = self.new_worker_id();
        self.slots[index].renew(id);
        self.slot_of.insert(id, index);
        let failures = self.slots[index].startup_failures;
        let delay = if failures == 0 {
            Duration::ZERO
        } else {
            // 100 ms, 200 ms, ... up to 5 s: quick to recover, slow to hammer a broken setup.
            Duration::from_millis(100u64 << (failures - 1).min(6)).min(Duration::from_secs(5))
        };
        self.spawn(index, delay);
    }

    pub(super) fn on_spawned(
        &mut self,
        index: usize,
        id: WorkerId,
        result: Result<Box<dyn Worker>, SpawnError>,
    ) {
        let Some(slot) = self.slots.get_mut(index).filter(|slot| slot.id == id) else {
            return;
        };
        match result {
            Ok(worker) => {
                if slot.count_started() {
                    self.workers_started += 1;
                }
                slot.worker = Some(worker);
                // The worker may have reported Ready already: its events channel is not
                // ordered with the spawn's completion.
                if slot.phase == Phase::Spawning {
                    slot.phase = Phase::Starting;
                }
                if !self.keeps_worker(index) {
                    let slot = &mut self.slots[index];
                    slot.phase = Phase::Stopping;
                    slot.kill(KillReason::Shutdown);
                }
            }
            Err(error) => {
                warn!(worker = %id, %error, "worker failed to start");
                self.startup_failed(index, error.to_string());
            }
        }
    }

    pub(super) fn startup_failed(&mut self, index: usize, reason: String) {
        if self.slots[index].lane != Lane::DEFAULT {
            // The image's fault, not the endpoint's: its tasks fail, the slot goes back.
            return self.lane_failed(index, &reason);
        }
        self.slots[index].startup_failures += 1;
        self.broken = Some(reason);
        if let Some(reason) = self.unavailable().map(str::to_owned) {
            // No worker can run anything: fail what waits rather than hang.
            for id in self.queues.take_all() {
                if let Some(mut record) = self.tasks.remove(&id) {
                    record.finish(Err(TaskError::no_workers(&reason)));
                }
            }
            self.answer_ready_waiters();
        }
        if self.keeps_worker(index) {
            self.respawn(index);
        } else {
            self.slots[index].phase = Phase::Dead;
        }
    }

    /// Why no task can run now: no worker is ready and every slot has failed to start.
    pub(super) fn unavailable(&self) -> Option<&str> {
        let none_ready = self.slots.iter().all(|s| s.phase != Phase::Ready);
        // Twice, so that one passing hiccup (a slow file system, a killed first attempt)
        // does not fail everything that waits; a broken setup fails twice in ~100 ms.
        let all_failed = self.slots.iter().all(|s| s.startup_failures >= 2);
        if none_ready && all_failed {
            self.broken.as_deref()
        } else {
            None
        }
    }

    pub(super) fn answer_ready_waiters(&mut self) {
        // Ready when every slot is, or when some are and the others keep failing to start:
        // waiting longer would not change the answer, and the failures are in the log.
        let some_ready = self.slots.iter().any(|s| s.phase == Phase::Ready);
        let ready = self
            .slots
            .iter()
            .all(|s| s.phase == Phase::Ready || (some_ready && s.startup_failures >= 2));
        let answer = if ready {
            Ok(())
        } else if let Some(reason) = self.unavailable() {
            Err(TaskError::no_workers(reason))
        } else if self.stop.is_some() {
            Err(TaskError::shutdown())
        } else {
            return;
        };
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }
}
