//! What the [`crate::Executor`] asks of the dispatcher.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::executor::TaskReport;
use crate::worker::{Worker, WorkerEvents, WorkerId};
use crate::{Args, BlockId, Function, Payload, TaskError, TaskId, TaskStatus};

/// A task's result together with its final status.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) result: Result<Payload, TaskError>,
    pub(crate) status: TaskStatus,
}

/// Where a task's outcome goes: the handle of that one task, or a stream shared by many.
#[derive(Debug)]
pub(crate) enum Reply {
    Handle(oneshot::Sender<Outcome>),
    Stream {
        tag: u64,
        id: TaskId,
        sink: mpsc::UnboundedSender<(u64, TaskReport)>,
    },
}

impl Reply {
    /// Delivers the outcome. Whoever waited may be gone (a dropped handle or stream); the
    /// outcome then has no one to go to.
    pub(crate) fn send(self, outcome: Outcome) {
        match self {
            Reply::Handle(handle) => {
                let _ = handle.send(outcome);
            }
            Reply::Stream { tag, id, sink } => {
                let report = TaskReport {
                    id,
                    result: outcome.result,
                    status: outcome.status,
                };
                let _ = sink.send((tag, report));
            }
        }
    }
}

/// One task handed to the dispatcher.
#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) id: TaskId,
    pub(crate) function: Function,
    pub(crate) args: Args,
    pub(crate) timeout: Option<Duration>,
    pub(crate) trace: Option<u64>,
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

/// One pool of workers (a remote manager) as [`crate::Executor::pools`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// The pool's id within the endpoint.
    pub worker: WorkerId,
    /// The block it belongs to, if its provider said.
    pub block: Option<BlockId>,
    /// How many tasks it runs at once.
    pub size: usize,
    /// How many tasks it holds now.
    pub in_flight: usize,
    /// Since when it has held no task (`None` while busy).
    pub idle_since: Option<std::time::SystemTime>,
    /// Whether it is draining (no new tasks; it exits when done).
    pub draining: bool,
}

/// A request to the dispatcher.
pub(crate) enum Command {
    Submit(Submission),
    SubmitMany(Vec<Submission>),
    Cancel(TaskId),
    Withdraw(Vec<TaskId>),
    Status(TaskId, oneshot::Sender<Option<TaskStatus>>),
    Stats(oneshot::Sender<EndpointStats>),
    Ready(oneshot::Sender<Result<(), TaskError>>),
    Attach {
        worker: Box<dyn Worker>,
        size: usize,
        block: Option<BlockId>,
        reply: oneshot::Sender<Result<WorkerEvents, TaskError>>,
    },
    Shutdown {
        drain: bool,
        done: oneshot::Sender<()>,
    },
    Pools(oneshot::Sender<Vec<PoolStatus>>),
    DrainBlock(BlockId),
    DrainPool(WorkerId),
}
