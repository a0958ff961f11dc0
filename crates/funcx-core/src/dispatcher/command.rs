//! What the [`crate::Executor`] asks of the dispatcher.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::worker::{Worker, WorkerEvents};
use crate::{Args, Function, Payload, TaskError, TaskId, TaskStatus};

/// A task's result together with its final status.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) result: Result<Payload, TaskError>,
    pub(crate) status: TaskStatus,
}

/// Where a task's outcome goes.
pub(crate) type Reply = oneshot::Sender<Outcome>;

/// One task handed to the dispatcher.
#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) id: TaskId,
    pub(crate) function: Function,
    pub(crate) args: Args,
    pub(crate) timeout: Option<Duration>,
    pub(crate) reply: Reply,
}

/// Counts that describe an endpoint at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointStats {
    /// Worker slots configured.
    pub workers: usize,
    /// Workers started and ready for tasks.
    pub ready_workers: usize,
    /// Tasks waiting for a worker.
    pub queued: usize,
    /// Tasks sent to workers and not finished.
    pub in_flight: usize,
    /// Workers started since the endpoint started, replacements included.
    pub workers_started: u64,
    /// Pools of workers attached from outside (remote managers).
    pub managers: usize,
}

/// A request to the dispatcher.
pub(crate) enum Command {
    Submit(Submission),
    SubmitMany(Vec<Submission>),
    Cancel(TaskId),
    Status(TaskId, oneshot::Sender<Option<TaskStatus>>),
    Stats(oneshot::Sender<EndpointStats>),
    Ready(oneshot::Sender<Result<(), TaskError>>),
    Attach {
        worker: Box<dyn Worker>,
        size: usize,
        reply: oneshot::Sender<Result<WorkerEvents, TaskError>>,
    },
    Shutdown {
        drain: bool,
        done: oneshot::Sender<()>,
    },
}
