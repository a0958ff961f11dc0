//! What runs a manager's tasks: a local [`Executor`] of real workers, or simulated slots.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;

use funcx_core::worker::{FunctionKey, WorkItem, WorkResult};
use funcx_core::{Executor, Function, TaskError, TaskId, TaskOptions};

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

    /// Cancels and forgets everything: the endpoint that sent it is gone.
    fn reset(&mut self);

    /// The tasks received and not finished.
    fn held(&self) -> Vec<TaskId>;

    /// Finished tasks: resolves with at least one result, and never while idle.
    fn next_results(&mut self) -> impl Future<Output = Vec<WorkResult>> + Send + '_;
}

/// Runs tasks on a local [`Executor`], typically of Python workers: the manager of a real
/// node.
pub struct ExecutorRunner {
    executor: Executor,
    slots: usize,
    functions: HashMap<FunctionKey, Function>,
    /// Remote task id → the local task running it.
    local: HashMap<TaskId, TaskId>,
    running: FuturesUnordered<BoxFuture<'static, WorkResult>>,
}

impl ExecutorRunner {
    /// Runs tasks on `executor`, advertising `slots` (its number of workers).
    pub fn new(executor: Executor, slots: usize) -> ExecutorRunner {
        ExecutorRunner {
            executor,
            slots,
            functions: HashMap::new(),
            local: HashMap::new(),
            running: FuturesUnordered::new(),
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
        for item in items {
            let id = item.id;
            let Some(function) = self.functions.get(&item.function) else {
                let error = TaskError::protocol(format!(
                    "manager does not know function key {}",
                    item.function.0
                ));
                self.running
                    .push(Box::pin(std::future::ready(failed(id, error))));
                continue;
            };
            let options = match item.timeout {
                Some(timeout) => TaskOptions::new().timeout(timeout),
                None => TaskOptions::new(),
            };
            let handle = self.executor.submit_with(function, item.args, options);
            self.local.insert(id, handle.id());
            self.running.push(Box::pin(async move {
                let report = handle.report().await;
                let timeline = report.status.timeline;
                let duration = match (timeline.running, timeline.finished) {
                    (Some(start), Some(end)) => end.duration_since(start).unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                WorkResult {
                    id,
                    duration,
                    outcome: report.result,
                }
            }));
        }
    }

    fn cancel(&mut self, ids: Vec<TaskId>) {
        for id in ids {
            if let Some(local) = self.local.get(&id) {
                self.executor.cancel(*local);
            }
        }
    }

    fn reset(&mut self) {
        let ids = self.local.keys().copied().collect();
        self.cancel(ids);
        self.local.clear();
        // The futures resolve as cancelled; nobody will read them.
        self.running = FuturesUnordered::new();
    }

    fn held(&self) -> Vec<TaskId> {
        self.local.keys().copied().collect()
    }

    async fn next_results(&mut self) -> Vec<WorkResult> {
        let Some(first) = self.running.next().await else {
            return std::future::pending().await;
        };
        let mut results = vec![first];
        // Whatever else is already done goes in the same message.
        while let Some(Some(result)) = self.running.next().now_or_never() {
            results.push(result);
        }
        for result in &results {
            self.local.remove(&result.id);
        }
        results
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
