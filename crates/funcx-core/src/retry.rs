//! A tower retry policy that re-runs tasks failed by the system, never by the function.

use std::future::{ready, Ready};

use tower::retry::Policy;

use crate::{Payload, Task, TaskError};

/// Retries a [`Task`] whose failure was the system's ([`TaskError::is_system`]: its worker
/// died, no worker could start) up to a number of times. A function's own exception, a
/// timeout or a cancellation is never retried: running it again would do the same thing or
/// undo what the caller asked for.
///
/// ```
/// use funcx_core::RetrySystemFailures;
/// use tower::retry::RetryLayer;
///
/// let layer = RetryLayer::new(RetrySystemFailures::new(3));
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySystemFailures {
    remaining: usize,
}

impl RetrySystemFailures {
    /// A policy that retries at most `attempts` times per task.
    pub fn new(attempts: usize) -> RetrySystemFailures {
        RetrySystemFailures {
            remaining: attempts,
        }
    }
}

impl Policy<Task, Payload, TaskError> for RetrySystemFailures {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _task: &mut Task,
        result: &mut Result<Payload, TaskError>,
    ) -> Option<Self::Future> {
        match result {
            Err(error) if error.is_system() && self.remaining > 0 => {
                self.remaining -= 1;
                tracing::debug!(%error, remaining = self.remaining, "retrying task after a system failure");
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, task: &Task) -> Option<Task> {
        Some(task.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Function, WorkerExit};

    #[test]
    fn retries_only_system_failures_and_only_so_often() {
        let mut policy = RetrySystemFailures::new(1);
        let mut task = Task::new(&Function::from_source("def f(): pass", "f"), ());
        let mut died = Err(TaskError::worker_died(WorkerExit::Signal(9)));
        let mut raised = Err(TaskError::python(crate::PythonException {
            type_name: "ValueError".into(),
            message: String::new(),
            traceback: String::new(),
            line: None,
        }));
        assert!(policy.retry(&mut task, &mut raised).is_none());
        assert!(policy.retry(&mut task, &mut died).is_some());
        assert!(policy.retry(&mut task, &mut died).is_none());
    }
}
