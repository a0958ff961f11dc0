//! The seam between the dispatcher and the workers that run tasks.
//!
//! A [`WorkerRuntime`] starts workers; each [`Worker`] accepts [`ToWorker`] messages and
//! reports [`WorkerEvent`]s. The dispatcher is written against these traits only, so the
//! same engine drives Python processes on pipes (`funcx-python`), remote managers, or a
//! simulated worker in tests.
//!
//! A worker runs its tasks one at a time, in the order it received them, and reports
//! results in that order. That promise is what lets the dispatcher know which task was
//! running when a worker died.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{Args, Function, Payload, TaskError, TaskId, WorkerExit};

/// The identity of one worker within an endpoint. A replacement gets a new id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker-{}", self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A small number that names a function on the wire to one worker, so a task refers to its
/// function with four bytes instead of its body. Assigned by the dispatcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FunctionKey(pub u32);

/// One task as a worker receives it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkItem {
    /// The task.
    pub id: TaskId,
    /// Its function, sent to this worker earlier with [`ToWorker::Function`].
    pub function: FunctionKey,
    /// Run alone: report every earlier result and a [`WorkerEvent::Started`] before running
    /// it, and its result right after. Set for tasks that may run long (they can be timed
    /// out or cancelled while running) and for tasks whose previous worker died.
    pub isolate: bool,
    /// The arguments.
    pub args: Args,
    /// How long the task may run. A worker that runs one task at a time leaves this to the
    /// dispatcher, which kills it when the time is up; a pool of workers (a remote manager)
    /// enforces it itself.
    pub timeout: Option<Duration>,
    /// The id that follows the task across processes (client, gateway, endpoint, manager):
    /// the id the task was first given, logged in its span at every hop.
    pub trace: Option<u64>,
    /// Environment variables the task runs with, on top of the worker's own: the devices of
    /// a task granted GPUs. Empty for most tasks.
    pub env: Vec<(String, String)>,
    /// What the task asks for, for a pool (a remote manager) to place it on its own
    /// workers by; `None` for a plain task, and for a worker of this endpoint, which was
    /// placed here already.
    #[serde(with = "crate::resources::with_nodes")]
    pub resources: Option<crate::Resources>,
}

/// A message from the dispatcher to a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Define a function; sent once per worker, before the first task that uses it.
    Function {
        /// The key tasks will use.
        key: FunctionKey,
        /// The function itself.
        function: Function,
    },
    /// Run these tasks, in order.
    Tasks(Vec<WorkItem>),
    /// Skip these tasks if they have not started; their results come back cancelled.
    Cancel(Vec<TaskId>),
    /// Finish the tasks received so far, then exit.
    Shutdown,
    /// Give these tasks back if they have not started: each one skipped comes back as a
    /// cancelled result, which confirms it did not run and will not; one that has started
    /// runs to its end and reports its real result. Never interrupts a running task. The
    /// dispatcher sends it to move prefetched work from a busy worker to an idle one.
    Return(Vec<TaskId>),
}

/// One finished task as a worker reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkResult {
    /// The task.
    pub id: TaskId,
    /// How long the worker spent on it (loading arguments, calling, pickling the result).
    pub duration: Duration,
    /// The result, or why there is none.
    pub outcome: Result<Payload, TaskError>,
}

/// What a worker reports to the dispatcher.
#[derive(Debug)]
pub enum WorkerEvent {
    /// The worker started and can take tasks.
    Ready,
    /// An isolated task started running.
    Started(TaskId),
    /// Results, in the order the tasks were received.
    Results(Vec<WorkResult>),
    /// The worker is gone. Every result it sent was reported before this event.
    Exited(WorkerExit),
    /// A pool of workers (a remote manager) is gone or unreachable, for the reason given: its
    /// connection dropped and did not come back, it stopped sending heartbeats, it broke the
    /// protocol. Every result it delivered was reported before this event.
    Lost(String),
}

/// Where a worker sends its events: a channel into the dispatcher, tagged with the worker's
/// id.
#[derive(Clone, Debug)]
pub struct WorkerEvents {
    id: WorkerId,
    tx: mpsc::UnboundedSender<(WorkerId, WorkerEvent)>,
}

impl WorkerEvents {
    /// Events from worker `id` into `tx`.
    pub fn new(id: WorkerId, tx: mpsc::UnboundedSender<(WorkerId, WorkerEvent)>) -> WorkerEvents {
        WorkerEvents { id, tx }
    }

    /// The worker these events are from.
    pub fn worker(&self) -> WorkerId {
        self.id
    }

    /// Reports `event`. Returns false once the dispatcher is gone, so the worker can stop.
    pub fn send(&self, event: WorkerEvent) -> bool {
        self.tx.send((self.id, event)).is_ok()
    }
}

/// A running worker as the dispatcher holds it.
///
/// Dropping it must stop the worker (for a process: kill it), so no worker outlives its
/// endpoint.
pub trait Worker: Send {
    /// Queues a message for the worker. Never blocks; a worker that is gone ignores it and
    /// reports [`WorkerEvent::Exited`].
    fn send(&mut self, message: ToWorker);

    /// Kills the worker at once. A [`WorkerEvent::Exited`] follows.
    fn kill(&mut self);
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpawnError(String);

impl SpawnError {
    /// A spawn failure described by `reason`.
    pub fn new(reason: impl fmt::Display) -> SpawnError {
        SpawnError(reason.to_string())
    }
}

/// Starts workers for an endpoint.
pub trait WorkerRuntime: Send + Sync + 'static {
    /// Starts worker `index` of the endpoint (0-based slot, stable across replacements, e.g.
    /// for GPU pinning), reporting its events to `events`. Resolves once the process exists;
    /// the worker reports [`WorkerEvent::Ready`] when it can take tasks.
    fn spawn(
        &self,
        index: usize,
        events: WorkerEvents,
    ) -> BoxFuture<'static, Result<Box<dyn Worker>, SpawnError>>;

    /// Starts worker `index` inside container image `image`, for the tasks of functions
    /// that name it ([`crate::Function::in_image`]); otherwise as [`WorkerRuntime::spawn`].
    /// The dispatcher keeps such a worker while its image has work, so the container's start
    /// cost is paid once per worker, not per task.
    ///
    /// By default a runtime cannot: the spawn fails with an error naming the image, and the
    /// function's tasks fail with a [`crate::TaskError::is_no_workers`] error.
    fn spawn_in_image(
        &self,
        index: usize,
        image: &str,
        events: WorkerEvents,
    ) -> BoxFuture<'static, Result<Box<dyn Worker>, SpawnError>> {
        let _ = (index, events);
        let error = SpawnError::new(format!(
            "this endpoint's worker runtime cannot start workers in container image {image:?}"
        ));
        Box::pin(std::future::ready(Err(error)))
    }

    /// The ids of the accelerators (GPUs) its workers' machine has, which the dispatcher
    /// grants to tasks that ask for GPUs (see [`crate::TaskOptions::gpus`]). None by default.
    fn accelerators(&self) -> Vec<String> {
        Vec::new()
    }
}
