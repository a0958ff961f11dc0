//! Task identity, states, the timeline of a task's transitions, and the report of a finished
//! task.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{Payload, TaskError};

/// The identity of one task, unique within this process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(u64);

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

impl TaskId {
    /// A fresh id, never handed out before in this process.
    pub fn next() -> TaskId {
        TaskId(NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a number, e.g. for a wire format.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`TaskId::as_u64`].
    pub fn from_u64(value: u64) -> TaskId {
        TaskId(value)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, waiting for a worker.
    Queued,
    /// Sent to a worker, not yet known to be running.
    Dispatched,
    /// Running on a worker.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error (including timeouts and cancellation).
    Failed,
}

impl TaskState {
    /// Whether the task has finished, one way or the other.
    pub fn is_finished(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed)
    }
}

/// When a task went through each of its transitions.
///
/// `running` is when the worker started the function; for tasks whose start is not
/// reported separately it is derived from the run time the worker measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// When the task was submitted.
    pub submitted: SystemTime,
    /// When it was last sent to a worker.
    pub dispatched: Option<SystemTime>,
    /// When the worker started it.
    pub running: Option<SystemTime>,
    /// When its outcome was known.
    pub finished: Option<SystemTime>,
}

impl Timeline {
    /// A timeline that starts now.
    pub fn submitted_now() -> Timeline {
        Timeline {
            submitted: SystemTime::now(),
            dispatched: None,
            running: None,
            finished: None,
        }
    }
}

/// A task's state and timeline, as [`crate::Executor::status`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The current state.
    pub state: TaskState,
    /// The transitions so far.
    pub timeline: Timeline,
    /// How many times the task has been sent to a worker.
    pub attempts: u32,
}

/// A finished task: its result and how it got there.
#[derive(Debug)]
pub struct TaskReport {
    /// The task.
    pub id: TaskId,
    /// The result or the error.
    pub result: Result<Payload, TaskError>,
    /// The final state, the timeline of transitions and the number of attempts.
    pub status: TaskStatus,
}
