//! What the [`crate::Executor`] asks of the dispatcher.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::worker::{Worker, WorkerEvents, WorkerId};
use crate::{
    Args, BlockId, ExecutorStats, Function, Payload, PoolStatus, TaskError, TaskId, TaskReport,
    TaskStatus,
};

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
    /// What the task asks for, when it is more than a plain task's one core.
    pub(crate) resources: Option<crate::Resources>,
    pub(crate) reply: Reply,
}

/// A request to the dispatcher.
pub(crate) enum Command {
    Submit(Submission),
    SubmitMany(Vec<Submission>),
    Cancel(TaskId),
    Withdraw(Vec<TaskId>),
    Status(TaskId, oneshot::Sender<Option<TaskStatus>>),
    Stats(oneshot::Sender<ExecutorStats>),
    Ready(oneshot::Sender<Result<(), TaskError>>),
    Attach {
        worker: Box<dyn Worker>,
        size: usize,
        block: Option<BlockId>,
        /// What the pool says of its machine (see `Executor::attach_with_capacity` and
        /// `Executor::attach_relay`).
        machine: super::Machine,
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
