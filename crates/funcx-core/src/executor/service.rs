//! The executor as a `tower::Service`, so tower layers stack on it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{Args, Executor, Function, IntoArgs, Payload, TaskError, TaskHandle};

use super::TaskOptions;

/// One call of a function: the request type of the executor's [`tower_service::Service`]
/// implementation.
///
/// Cloning is cheap (the function and the argument bytes are shared), which is what tower's
/// retry layer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// The function to call.
    pub function: Function,
    /// Its arguments.
    pub args: Args,
    /// Per-task options.
    pub options: TaskOptions,
}

impl Task {
    /// A call of `function` with `args` and default options.
    pub fn new(function: &Function, args: impl IntoArgs) -> Task {
        Task {
            function: function.clone(),
            args: args.into_args(),
            options: TaskOptions::default(),
        }
    }

    /// The same call with `options`.
    pub fn with_options(mut self, options: TaskOptions) -> Task {
        self.options = options;
        self
    }
}

/// The future of a task submitted through the [`tower_service::Service`] interface.
///
/// Unlike a plain [`TaskHandle`], dropping it before it resolves cancels the task, so a
/// tower `Timeout` layer that gives up on a call also stops the work.
#[derive(Debug)]
pub struct ResponseFuture {
    handle: Option<TaskHandle>,
}

impl Future for ResponseFuture {
    type Output = Result<Payload, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(handle) = self.handle.as_mut() else {
            return Poll::Ready(Err(TaskError::protocol(
                "response future polled after completion",
            )));
        };
        let output = std::task::ready!(Pin::new(handle).poll(cx));
        self.handle = None;
        Poll::Ready(output)
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.cancel();
        }
    }
}

impl tower_service::Service<Task> for Executor {
    type Response = Payload;
    type Error = TaskError;
    type Future = ResponseFuture;

    /// Always ready: the queue is unbounded. Put a `ConcurrencyLimitLayer` in front to bound
    /// the work in flight.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task) -> Self::Future {
        ResponseFuture {
            handle: Some(self.submit_with(&task.function, task.args, task.options)),
        }
    }
}
