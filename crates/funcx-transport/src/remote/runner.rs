//! What runs a manager's tasks: a local [`Executor`] of real workers, or simulated slots.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use funcx_core::worker::{FunctionKey, WorkItem, WorkResult};
use funcx_core::{
    report_stream, Executor, Function, ReportSink, ReportStream, Task, TaskError, TaskId,
    TaskOptions, TaskReport,
};

/// Runs the tasks a manager receives. The manager owns the connection; the runner owns the
/// workers.
pub trait Runner: Send + 'static {
    /// How many tasks it runs at once: the slots it advertises to the endpoint.
    fn slots(&self) -> usize;

    /// Learns a function that tasks will refer to by `key`.
    fn define(&mut self, key: FunctionKey, function: Function);

    /// Starts running `items`.
    fn run(&mut self, items: Vec<WorkItem>);

    /// Cancels tasks; each still reports a (cancelled) result.
    fn cancel(&mut self, ids: Vec<TaskId>);

    /// Gives back the tasks among `ids` that have not started, reporting each one given back
    /// as a cancelled result (the endpoint then runs it elsewhere); a task that has started
    /// runs to its end. Must never report a task as cancelled if it may still run.
    ///
    /// By default nothing is given back, which is always safe: the tasks finish here.
    fn give_back(&mut self, ids: Vec<TaskId>) {
        let _ = ids;
    }

    /// Cancels and forgets everything: the endpoint that sent it is gone.
    fn reset(&mut self);

    /// The tasks received and not finished.
    fn held(&self) -> Vec<TaskId>;

    /// Finished tasks: resolves with at least one result, and never while idle.
    fn next_results(&mut self) -> impl Future<Output = Vec<WorkResult>> + Send + '_;
}

/// Runs tasks on a local [`Executor`], typically of Python workers: the manager of a real
/// node.
///
/// Each batch from the endpoint becomes one streamed submission to the local executor, and
/// outcomes come back through one stream: no future or channel per task, which matters at
/// hundreds of thousands of tasks a second.
pub struct ExecutorRunner {
    executor: Executor,
    slots: usize,
    functions: HashMap<FunctionKey, Function>,
    /// Remote task id → the local task running it, for cancellation.
    local: HashMap<TaskId, TaskId>,
    sink: ReportSink,
    reports: ReportStream,
    /// Results known without running anything (a task of an unknown function).
    ready: Vec<WorkResult>,
    buffer: Vec<(u64, TaskReport)>,
}

impl ExecutorRunner {
    /// Runs tasks on `executor`, advertising `slots` (its number of workers).
    pub fn new(executor: Executor, slots: usize) -> ExecutorRunner {
        let (sink, reports) = report_stream();
        ExecutorRunner {
            executor,
            slots,
            functions: HashMap::new(),
            local: HashMap::new(),
            sink,
            reports,
            ready: Vec::new(),
            buffer: Vec::new(),
        }
    }

    /// The executor the tasks run on.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }
}

impl Runner for ExecutorRunner {
    fn slots(&self) -> usize {
        self.slots
    }

    fn define(&mut self, key: FunctionKey, function: Function) {
        self.functions.insert(key, function);
    }

    fn run(&mut self, items: Vec<WorkItem>) {
        let mut remote = Vec::with_capacity(items.len());
        let mut tasks = Vec::with_capacity(items.len());
        for item in items {
            let Some(function) = self.functions.get(&item.function) else {
                let error = TaskError::protocol(format!(
                    "manager does not know function key {}",
                    item.function.0
                ));
                self.ready.push(failed(item.id, error));
                continue;
            };
            let mut options = TaskOptions::new().trace(item.trace.unwrap_or(item.id.as_u64()));
            if let Some(timeout) = item.timeout {
                options = options.timeout(timeout);
            }
            if let Some(resources) = item.resources {
                options = options.resources(resources);
            }
            remote.push(item.id);
            let task = Task {
                function: function.clone(),
                args: item.args,
                options,
            };
            tasks.push((item.id.as_u64(), task));
        }
        let local = self.executor.submit_streamed(tasks, &self.sink);
        self.local.extend(remote.into_iter().zip(local));
    }

    fn cancel(&mut self, ids: Vec<TaskId>) {
        for id in ids {
            if let Some(local) = self.local.get(&id) {
                self.executor.cancel(*local);
            }
        }
    }

    fn give_back(&mut self, ids: Vec<TaskId>) {
        let local = ids
            .iter()
            .filter_map(|id| self.local.get(id).copied())
            .collect();
        self.executor.withdraw(local);
    }

    fn reset(&mut self) {
        for local in self.local.values() {
            self.executor.cancel(*local);
        }
        // Their outcomes still arrive, and are dropped: nobody holds them any more.
        self.local.clear();
        self.ready.clear();
    }

    fn held(&self) -> Vec<TaskId> {
        self.local.keys().copied().collect()
    }

    async fn next_results(&mut self) -> Vec<WorkResult> {
        loop {
            if !self.ready.is_empty() {
                return std::mem::take(&mut self.ready);
            }
            if self.reports.recv_many(&mut self.buffer, 4096).await == 0 {
                // Cannot happen while this runner holds a sink; wait rather than spin.
                return std::future::pending().await;
            }
            let mut results = Vec::with_capacity(self.buffer.len());
            for (tag, report) in self.buffer.drain(..) {
                let id = TaskId::from_u64(tag);
                // Outcomes of tasks dropped by a reset have no one to go to.
                if self.local.remove(&id).is_none() {
                    continue;
                }
                let timeline = report.status.timeline;
                let duration = match (timeline.running, timeline.finished) {
                    (Some(start), Some(end)) => end.duration_since(start).unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                results.push(WorkResult {
                    id,
                    duration,
                    outcome: report.result,
                });
            }
            if !results.is_empty() {
                return results;
            }
        }
    }
}

fn failed(id: TaskId, error: TaskError) -> WorkResult {
    WorkResult {
        id,
        duration: Duration::ZERO,
        outcome: Err(error),
    }
}

/// Simulated slots: every task returns its first argument at once, with no process behind
/// it. Lets one machine stand in for a large cluster when measuring the endpoint.
#[derive(Debug)]
pub struct EchoRunner {
    slots: usize,
    done: Vec<WorkResult>,
    wake: tokio::sync::Notify,
}

impl EchoRunner {
    /// A simulated manager advertising `slots` workers.
    pub fn new(slots: usize) -> EchoRunner {
        EchoRunner {
            slots,
            done: Vec::new(),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl Runner for EchoRunner {
    fn slots(&self) -> usize {
        self.slots
    }

    fn define(&mut self, _key: FunctionKey, _function: Function) {}

    fn run(&mut self, items: Vec<WorkItem>) {
        self.done.extend(items.into_iter().map(|item| WorkResult {
            id: item.id,
            duration: Duration::ZERO,
            outcome: item.args.positional().first().cloned().ok_or_else(|| {
                TaskError::protocol(
                    "a simulated worker echoes its first argument, and there is none",
                )
            }),
        }));
        self.wake.notify_one();
    }

    fn cancel(&mut self, _ids: Vec<TaskId>) {}

    fn reset(&mut self) {
        self.done.clear();
    }

    fn held(&self) -> Vec<TaskId> {
        self.done.iter().map(|result| result.id).collect()
    }

    async fn next_results(&mut self) -> Vec<WorkResult> {
        while self.done.is_empty() {
            self.wake.notified().await;
        }
        std::mem::take(&mut self.done)
    }
}
