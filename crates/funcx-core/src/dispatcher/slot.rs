//! One worker slot: the worker that fills it now and the tasks it holds.

use std::collections::VecDeque;

use crate::ids::IdSet;
use std::time::{Duration, Instant, SystemTime};

use super::lanes::Lane;
use super::node::Grant;
use crate::BlockId;

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

/// What the dispatcher knows of a pool of workers (a remote manager).
#[derive(Debug)]
pub(super) struct Pool {
    /// How many tasks it runs at once.
    pub(super) size: usize,
    /// The block it belongs to.
    pub(super) block: Option<BlockId>,
    /// Since when it has held no task; `None` while busy.
    pub(super) idle_since: Option<SystemTime>,
    /// Draining because its block is about to end: if it is lost now, the loss is the
    /// block's walltime, not the tasks' fault, and is not charged to their retries.
    pub(super) expiring: bool,
    /// What it says of its machine, which decides the tasks asking for resources it takes.
    pub(super) machine: Machine,
}

/// What a pool says of the machine its tasks run on, for tasks that ask for resources
/// ([`crate::TaskOptions::resources`]).
#[derive(Debug)]
pub(crate) enum Machine {
    /// It said nothing: it takes no task that asks for resources.
    Unknown,
    /// Its machine (a manager: its workers as cores, and its GPUs). It takes a task that
    /// could fit there, and places it on its own workers by the same rules.
    Node(super::node::Node),
    /// It stands for another endpoint whose own dispatcher places tasks and fails those that
    /// can never fit (a gateway): it takes every task, and the verdict is that endpoint's.
    Relay,
}

impl Machine {
    /// The machine of a pool of `size` workers with `capacity` (a core per worker unless
    /// it says otherwise).
    pub(crate) fn of(size: usize, capacity: &crate::Capacity) -> Machine {
        Machine::Node(super::node::Node::new(capacity, size, Vec::new()))
    }

    /// Whether a task asking for `wanted` may be sent to this pool.
    pub(super) fn takes(&self, wanted: &crate::Resources) -> bool {
        match self {
            Machine::Unknown => false,
            Machine::Node(node) => node.never_fits(wanted).is_none(),
            Machine::Relay => true,
        }
    }
}

/// The isolated task a worker reported as started.
#[derive(Debug, Clone, Copy)]
pub(super) struct Running {
    pub(super) task: TaskId,
    pub(super) deadline: Option<(Instant, Duration)>,
}

/// The tasks a worker holds: sent and not finished.
#[derive(Debug)]
pub(super) enum Held {
    /// A worker that runs one task at a time, in this order: the front is the one running.
    Ordered(VecDeque<TaskId>),
    /// A pool that runs many at once and finishes them in any order.
    Unordered(IdSet<TaskId>),
}

impl Held {
    pub(super) fn len(&self) -> usize {
        match self {
            Held::Ordered(tasks) => tasks.len(),
            Held::Unordered(tasks) => tasks.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn contains(&self, id: TaskId) -> bool {
        match self {
            Held::Ordered(tasks) => tasks.contains(&id),
            Held::Unordered(tasks) => tasks.contains(&id),
        }
    }

    pub(super) fn push(&mut self, id: TaskId) {
        match self {
            Held::Ordered(tasks) => tasks.push_back(id),
            Held::Unordered(tasks) => {
                tasks.insert(id);
            }
        }
    }

    /// Removes `id`; false if it was not held.
    pub(super) fn remove(&mut self, id: TaskId) -> bool {
        match self {
            // Results come in order, so the front is almost always the one.
            Held::Ordered(tasks) if tasks.front() == Some(&id) => tasks.pop_front().is_some(),
            Held::Ordered(tasks) => match tasks.iter().position(|held| *held == id) {
                Some(position) => tasks.remove(position).is_some(),
                None => false,
            },
            Held::Unordered(tasks) => tasks.remove(&id),
        }
    }

    /// Everything held, in running order where there is one.
    pub(super) fn take(&mut self) -> Vec<TaskId> {
        match self {
            Held::Ordered(tasks) => tasks.drain(..).collect(),
            Held::Unordered(tasks) => tasks.drain().collect(),
        }
    }
}

pub(super) struct Slot {
    pub(super) index: usize,
    pub(super) id: WorkerId,
    pub(super) phase: Phase,
    pub(super) worker: Option<Box<dyn Worker>>,
    /// For a pool attached from outside (a remote manager); `None` for a worker of this
    /// endpoint's runtime, which runs one task at a time and is replaced when it dies.
    pub(super) pool: Option<Pool>,
    /// Tasks sent and not finished.
    pub(super) in_flight: Held,
    pub(super) in_flight_ns: u64,
    pub(super) in_flight_bytes: usize,
    /// Since when the task at the head of the worker's line has been its current one: when
    /// it was sent to an idle worker or when the worker's last results came in.
    pub(super) head_since: Instant,
    known_functions: Vec<bool>,
    pub(super) running: Option<Running>,
    pub(super) kill: Option<KillReason>,
    /// Consecutive times a worker in this slot failed to start.
    pub(super) startup_failures: u32,
    /// What this worker has reserved of the machine while it holds tasks (the endpoint's
    /// own workers only; pools never hold one).
    pub(super) grant: Option<Grant>,
    /// The workers this slot's worker runs tasks of: the default ones or one image's (the
    /// endpoint's own workers only; a pool runs every lane's tasks).
    pub(super) lane: Lane,
    /// The lane its next worker starts in, once this one (told to stop) has exited.
    pub(super) switch_to: Option<Lane>,
    /// When its worker's spawn began, to measure what a start costs in its lane.
    pub(super) spawned_at: Instant,
    /// Whether this slot's current worker is in the count of workers started. Its spawn's
    /// completion and its `Ready` arrive on separate channels in either order; the first
    /// counts it, so a worker that is ready is always counted, and only once.
    counted: bool,
}

impl Slot {
    pub(super) fn new(index: usize, id: WorkerId) -> Slot {
        Slot {
            index,
            id,
            phase: Phase::Spawning,
            worker: None,
            pool: None,
            in_flight: Held::Ordered(VecDeque::new()),
            in_flight_ns: 0,
            in_flight_bytes: 0,
            head_since: Instant::now(),
            known_functions: Vec::new(),
            running: None,
            kill: None,
            startup_failures: 0,
            grant: None,
            lane: Lane::DEFAULT,
            switch_to: None,
            spawned_at: Instant::now(),
            counted: false,
        }
    }

    /// A slot for a pool of `size` workers that attached itself.
    pub(super) fn pool(
        index: usize,
        id: WorkerId,
        worker: Box<dyn Worker>,
        size: usize,
        block: Option<BlockId>,
        machine: Machine,
    ) -> Slot {
        let mut slot = Slot::new(index, id);
        slot.phase = Phase::Ready;
        slot.worker = Some(worker);
        slot.pool = Some(Pool {
            size: size.max(1),
            block,
            idle_since: Some(SystemTime::now()),
            expiring: false,
            machine,
        });
        slot.in_flight = Held::Unordered(IdSet::default());
        slot
    }

    /// Whether it can be given tasks now.
    pub(super) fn takes_work(&self) -> bool {
        self.phase == Phase::Ready && self.worker.is_some() && self.kill.is_none()
    }

    /// How many tasks the worker runs at once.
    pub(super) fn size(&self) -> usize {
        self.pool.as_ref().map_or(1, |pool| pool.size)
    }

    /// Resets the slot for a new worker with id `id`, in the same lane.
    pub(super) fn renew(&mut self, id: WorkerId) {
        let failures = self.startup_failures;
        let lane = self.lane;
        *self = Slot::new(self.index, id);
        self.startup_failures = failures;
        self.lane = lane;
    }

    /// Marks the current worker as started; true the first time for this worker (a
    /// replacement, through [`Slot::renew`], starts uncounted).
    pub(super) fn count_started(&mut self) -> bool {
        !std::mem::replace(&mut self.counted, true)
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
