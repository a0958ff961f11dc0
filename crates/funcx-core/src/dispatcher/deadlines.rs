//! The dispatcher's timers: a running task's timeout (its worker is killed), the next look for
//! work to move to an idle worker, and the grace a shutdown gives workers to exit.

use std::time::Instant;

use tracing::{debug, warn};

use super::slot::{KillReason, Phase};
use super::Dispatcher;

impl Dispatcher {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|slot| slot.running.and_then(|running| running.deadline))
            .map(|(at, _)| at)
            .chain(self.stop_deadline)
            .chain(self.balance_at)
            .min()
    }

    pub(super) fn on_deadlines(&mut self) {
        let now = Instant::now();
        if self.balance_at.is_some_and(|at| at <= now) {
            self.balance_at = None;
            if self.queues.is_empty() {
                self.balance(now);
            }
        }
        for slot in &mut self.slots {
            let Some(running) = slot.running else {
                continue;
            };
            if let Some((at, after)) = running.deadline {
                if at <= now {
                    debug!(task = %running.task, worker = %slot.id, "timed out; killing its worker");
                    slot.kill(KillReason::Timeout(running.task, after));
                }
            }
        }
        if self.stop_deadline.is_some_and(|at| at <= now) {
            self.stop_deadline = None;
            for slot in &mut self.slots {
                if slot.phase == Phase::Stopping {
                    warn!(worker = %slot.id, "worker did not exit in time; killing it");
                    slot.kill(KillReason::Shutdown);
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one, so that the run loop's timer arm fires
/// only when something is due.
pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
