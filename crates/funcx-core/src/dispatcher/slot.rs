//! One worker slot: the worker that fills it now and the tasks it holds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::worker::{FunctionKey, Worker, WorkerId};
use crate::TaskId;

/// Where a slot's worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// A spawn is pending (maybe after a back-off delay).
    Spawning,
    /// The process exists; it has not said it is ready.
    Starting,
    /// Taking tasks.
    Ready,
    /// Told to exit (or killed); waiting for it to go.
    Stopping,
    /// Gone and not coming back (the endpoint is shutting down).
    Dead,
}

/// Why the dispatcher killed a worker, so its exit is not mistaken for a crash.
#[derive(Debug, Clone, Copy)]
pub(super) enum KillReason {
    Timeout(TaskId, Duration),
    Cancel(TaskId),
    Shutdown,
}

/// The isolated task a worker reported as started.
#[derive(Debug, Clone, Copy)]
pub(super) struct Running {
    pub(super) task: TaskId,
    pub(super) deadline: Option<(Instant, Duration)>,
}

pub(super) struct Slot {
    pub(super) index: usize,
    pub(super) id: WorkerId,
    pub(super) phase: Phase,
    pub(super) worker: Option<Box<dyn Worker>>,
    /// Tasks sent and not finished, in the order the worker runs them.
    pub(super) in_flight: VecDeque<TaskId>,
    pub(super) in_flight_ns: u64,
    pub(super) in_flight_bytes: usize,
    known_functions: Vec<bool>,
    pub(super) running: Option<Running>,
    pub(super) kill: Option<KillReason>,
    /// Consecutive times a worker in this slot failed to start.
    pub(super) startup_failures: u32,
}

impl Slot {
    pub(super) fn new(index: usize, id: WorkerId) -> Slot {
        Slot {
            index,
            id,
            phase: Phase::Spawning,
            worker: None,
            in_flight: VecDeque::new(),
            in_flight_ns: 0,
            in_flight_bytes: 0,
            known_functions: Vec::new(),
            running: None,
            kill: None,
            startup_failures: 0,
        }
    }

    /// Resets the slot for a new worker with id `id`.
    pub(super) fn renew(&mut self, id: WorkerId) {
        let failures = self.startup_failures;
        *self = Slot::new(self.index, id);
        self.startup_failures = failures;
    }

    /// Marks `key` as sent to this worker; true if it was not known before.
    pub(super) fn learn(&mut self, key: FunctionKey) -> bool {
        let index = key.0 as usize;
        if self.known_functions.len() <= index {
            self.known_functions.resize(index + 1, false);
        }
        !std::mem::replace(&mut self.known_functions[index], true)
    }

    pub(super) fn kill(&mut self, reason: KillReason) {
        if self.kill.is_none() {
            self.kill = Some(reason);
        }
        if let Some(worker) = self.worker.as_mut() {
            worker.kill();
        }
        if let Some(running) = self.running.as_mut() {
            running.deadline = None;
        }
    }
}
