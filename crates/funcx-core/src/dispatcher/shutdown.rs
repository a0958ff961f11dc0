//! Stopping the dispatcher: at once (queued and running tasks are cancelled, workers killed),
//! or draining (accepted tasks finish first), then asking every worker to exit.

use std::time::Instant;

use super::slot::{KillReason, Phase};
use super::Dispatcher;
use crate::worker::ToWorker;
use crate::TaskError;

/// How the dispatcher stops.
pub(super) enum Stop {
    /// Finish the tasks already accepted, then stop.
    Drain,
    /// Cancel everything and stop.
    Now,
}

impl Dispatcher {
    pub(super) fn begin_stop(&mut self, how: Stop) {
        if matches!(how, Stop::Now) {
            for id in self.queues.take_all() {
                if let Some(mut record) = self.tasks.remove(&id) {
                    record.finish(Err(TaskError::cancelled()));
                }
            }
            for record in self.tasks.values_mut() {
                record.finish(Err(TaskError::cancelled()));
            }
            for slot in &mut self.slots {
                if slot.phase != Phase::Dead {
                    slot.kill(KillReason::Shutdown);
                }
            }
        }
        if self.stop.is_none() || matches!(how, Stop::Now) {
            self.stop = Some(how);
        }
        self.answer_ready_waiters();
    }

    /// Whether slot `index` should have a worker: always, except during a shutdown, where only
    /// a graceful one that still has accepted tasks to finish keeps (or replaces) workers, and
    /// only in slots not already told to stop.
    pub(super) fn keeps_worker(&self, index: usize) -> bool {
        match self.stop {
            None => true,
            Some(Stop::Now) => false,
            Some(Stop::Drain) => {
                let slot = &self.slots[index];
                // A worker retired to start one in another image is replaced: that image's
                // tasks need it.
                !self.tasks.is_empty()
                    && (slot.phase != Phase::Stopping || slot.switch_to.is_some())
            }
        }
    }

    /// Moves a shutdown along; true once everything is gone.
    pub(super) fn progress_stop(&mut self) -> bool {
        if self.stop.is_none() {
            return false;
        }
        let draining = matches!(self.stop, Some(Stop::Drain));
        if !self.tasks.is_empty()
            && self.slots.iter().any(|s| match s.phase {
                Phase::Ready => true,
                // A worker on its way can still run what is left.
                Phase::Spawning | Phase::Starting => draining,
                Phase::Stopping | Phase::Dead => false,
            })
        {
            return false; // Still draining.
        }
        // Nothing left to run, or nothing left to run it on.
        for id in self.queues.take_all() {
            if let Some(mut record) = self.tasks.remove(&id) {
                record.finish(Err(TaskError::shutdown()));
            }
        }
        let mut alive = false;
        for slot in &mut self.slots {
            match slot.phase {
                Phase::Ready | Phase::Starting => {
                    slot.phase = Phase::Stopping;
                    if let Some(worker) = slot.worker.as_mut() {
                        worker.send(ToWorker::Shutdown);
                    }
                    alive = true;
                }
                Phase::Stopping | Phase::Spawning => alive = true,
                Phase::Dead => {}
            }
        }
        if alive && self.stop_deadline.is_none() {
            self.stop_deadline = Some(Instant::now() + self.config.shutdown_grace);
        }
        !alive
    }
}
