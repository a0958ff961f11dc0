//! The future of one task's result.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::dispatcher::{Command, Outcome};
use crate::{Payload, TaskError, TaskId, TaskReport, TaskStatus};

/// A submitted task: await it for the result.
///
/// Dropping a handle does not cancel the task (as with `tokio::task::JoinHandle`); call
/// [`TaskHandle::cancel`] for that. The tower [`tower_service::Service`] interface of
/// [`crate::Executor`] is the exception: its futures cancel their task when dropped, so
/// that tower's `Timeout` really stops work.
///
/// ```no_run
/// # async fn demo(executor: funcx_core::Executor, f: funcx_core::Function) -> Result<(), funcx_core::TaskError> {
/// let handle = executor.submit(&f, (2, 3));
/// let sum: i64 = handle.result().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TaskHandle {
    id: TaskId,
    outcome: oneshot::Receiver<Outcome>,
    commands: mpsc::WeakUnboundedSender<Command>,
}

impl TaskHandle {
    pub(crate) fn new(
        id: TaskId,
        outcome: oneshot::Receiver<Outcome>,
        commands: mpsc::WeakUnboundedSender<Command>,
    ) -> TaskHandle {
        TaskHandle {
            id,
            outcome,
            commands,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Cancels the task: a queued task never runs; a running one has its worker killed and
    /// replaced. The handle then resolves to a [`TaskError::is_cancelled`] error, unless the
    /// result was already there.
    pub fn cancel(&self) {
        if let Some(commands) = self.commands.upgrade() {
            let _ = commands.send(Command::Cancel(self.id));
        }
    }

    /// Waits for the result and decodes it into `T`.
    pub async fn result<T: DeserializeOwned>(self) -> Result<T, TaskError> {
        self.await?.decode()
    }

    /// Waits for the task to finish and returns its result together with its timeline.
    pub async fn report(self) -> TaskReport {
        let id = self.id;
        match self.outcome.await {
            Ok(Outcome { result, status }) => TaskReport { id, result, status },
            Err(_) => TaskReport {
                id,
                result: Err(TaskError::shutdown()),
                status: lost_status(),
            },
        }
    }
}

fn lost_status() -> TaskStatus {
    let mut timeline = crate::Timeline::submitted_now();
    timeline.finished = Some(timeline.submitted);
    TaskStatus {
        state: crate::TaskState::Failed,
        timeline,
        attempts: 0,
    }
}

impl Future for TaskHandle {
    type Output = Result<Payload, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(Pin::new(&mut self.outcome).poll(cx)) {
            Ok(outcome) => Poll::Ready(outcome.result),
            // The dispatcher is gone without answering: its runtime was shut down.
            Err(_) => Poll::Ready(Err(TaskError::shutdown())),
        }
    }
}
