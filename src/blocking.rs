//! funcx for code that is not async: a plain threaded program, a GUI event loop, a C caller.
//!
//! A [`blocking::Executor`](Executor) owns a Tokio runtime on a thread of its own and runs an
//! ordinary [`crate::Executor`] on it; its methods block the calling thread instead of
//! returning futures. It is `Send + Sync` and cheap to clone, so any number of threads can
//! submit and wait on it at once. The workers stop at [`Executor::shutdown`] or when the last
//! clone is dropped.
//!
//! ```no_run
//! use std::time::Duration;
//! use funcx::blocking;
//! use funcx::{Function, PythonRuntime};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = blocking::Executor::start(
//!     funcx::Executor::builder().workers(2),
//!     PythonRuntime::default(),
//! )?;
//! executor.ready()?;
//! let add = Function::from_source("def add(a, b):\n    return a + b\n", "add");
//!
//! // Wait for one result.
//! let sum: i64 = executor.submit(&add, (2, 3)).result()?;
//! assert_eq!(sum, 5);
//!
//! // Or wait at most a while, and keep the handle if it is not done yet.
//! let handle = executor.submit(&add, (4, 5));
//! match handle.wait_timeout(Duration::from_secs(10)) {
//!     Some(result) => println!("{:?}", result?.decode::<i64>()?),
//!     None => handle.cancel(), // still queued or running
//! }
//!
//! // Many calls, at most 100 unfinished at a time, results in input order.
//! for result in executor.map(&add, (0..1_000).map(|i| (i, 1)), 100) {
//!     let _y: i64 = result?.decode()?;
//! }
//! executor.shutdown();
//! # Ok(()) }
//! ```
//!
//! `examples/blocking.rs` is a runnable program that submits from several threads at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::runtime::{Handle, Runtime};

use crate::{
    ExecutorBuilder, ExecutorStats, Function, IntoArgs, Payload, TaskError, TaskId, TaskOptions,
    TaskStatus, WorkerRuntime,
};

/// Runs tasks like [`crate::Executor`], for callers that are not async: every method blocks
/// the calling thread until it has its answer. Clone it freely (clones share one runtime
/// and one endpoint) and use it from any number of threads.
#[derive(Clone, Debug)]
pub struct Executor {
    inner: Arc<Inner>,
}

/// The async executor and the runtime it runs on. Dropping the last clone of the
/// [`Executor`] cancels what is left and stops the workers.
#[derive(Debug)]
struct Inner {
    executor: crate::Executor,
    carrier: Arc<Carrier>,
}

/// The Tokio runtime, shared by the executor and every [`TaskHandle`], so that a handle can
/// still be waited on (and says "shut down") after the executor is gone.
#[derive(Debug)]
struct Carrier {
    /// Always `Some` until dropped; an `Option` so that `Drop` can take it.
    runtime: Option<Runtime>,
    handle: Handle,
}

impl Drop for Carrier {
    /// Stops the runtime without waiting for its thread, which is allowed from any thread,
    /// async or not (dropping a `Runtime` inside an async context would panic).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The runtime that carries an executor: one worker thread, enough for a dispatcher whose
/// work is moving bytes between pipes; the Python workers are processes of their own.
fn new_runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("funcx-blocking")
        .enable_all()
        .build()
}

impl Executor {
    /// Starts an executor configured by `builder` on workers from `runtime` (for instance
    /// `PythonRuntime::default()`), on a Tokio runtime of its own.
    ///
    /// Fails only when the operating system refuses a thread for that runtime. Like
    /// [`ExecutorBuilder::start`] it returns before the workers are up; [`Executor::ready`]
    /// waits for them.
    pub fn start(
        builder: ExecutorBuilder,
        runtime: impl WorkerRuntime,
    ) -> std::io::Result<Executor> {
        let tokio = new_runtime()?;
        let executor = {
            let _entered = tokio.enter();
            builder.start(runtime)
        };
        Ok(Executor::from_parts(executor, tokio))
    }

    /// Runs `connect` on a new runtime of its own and wraps the async executor it makes: for
    /// executors that are not started by an [`ExecutorBuilder`], such as
    /// `funcx_client::connect(url, token, endpoint)`.
    ///
    /// The future runs to completion on that runtime before this returns; the runtime is
    /// then kept running for the executor.
    pub fn connect<F, E>(connect: F) -> Result<Executor, E>
    where
        F: std::future::Future<Output = Result<crate::Executor, E>> + Send,
        E: From<std::io::Error> + Send,
    {
        let tokio = new_runtime()?;
        let executor = block_on(tokio.handle(), connect)?;
        Ok(Executor::from_parts(executor, tokio))
    }

    fn from_parts(executor: crate::Executor, runtime: Runtime) -> Executor {
        let carrier = Arc::new(Carrier {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        });
        Executor {
            inner: Arc::new(Inner { executor, carrier }),
        }
    }

    /// The async executor underneath, for code that mixes both styles (its futures complete
    /// on this executor's runtime; await them from anywhere).
    pub fn as_async(&self) -> &crate::Executor {
        &self.inner.executor
    }

    /// Waits until every worker has started, or fails saying why none can
    /// ([`crate::Executor::ready`]).
    pub fn ready(&self) -> Result<(), TaskError> {
        self.block_on(self.inner.executor.ready())
    }

    /// Submits one call of `function` with `args` and returns at once.
    pub fn submit(&self, function: &Function, args: impl IntoArgs) -> TaskHandle {
        self.wrap(self.inner.executor.submit(function, args))
    }

    /// Submits one call with per-task options (a timeout on its run time).
    pub fn submit_with(
        &self,
        function: &Function,
        args: impl IntoArgs,
        options: TaskOptions,
    ) -> TaskHandle {
        self.wrap(self.inner.executor.submit_with(function, args, options))
    }

    /// Submits one call of `function` per element of `batch`, in one message.
    pub fn submit_batch<A: IntoArgs>(
        &self,
        function: &Function,
        batch: impl IntoIterator<Item = A>,
    ) -> Vec<TaskHandle> {
        self.inner
            .executor
            .submit_batch(function, batch)
            .into_iter()
            .map(|handle| self.wrap(handle))
            .collect()
    }

    /// Calls `function` once per element of `inputs`, with at most `in_flight` tasks
    /// unfinished at a time, and yields the results in input order as they are waited for.
    ///
    /// Inputs are consumed lazily, so an endless iterator is fine; dropping the iterator
    /// cancels the tasks it had submitted and not yet yielded.
    pub fn map<I>(&self, function: &Function, inputs: I, in_flight: usize) -> Map<I::IntoIter>
    where
        I: IntoIterator,
        I::Item: IntoArgs,
    {
        Map {
            executor: self.clone(),
            function: function.clone(),
            inputs: inputs.into_iter(),
            in_flight: in_flight.max(1),
            pending: VecDeque::new(),
        }
    }

    /// Cancels task `id` (see [`TaskHandle::cancel`]).
    pub fn cancel(&self, id: TaskId) {
        self.inner.executor.cancel(id);
    }

    /// The state and timeline of task `id`, or `None` once it has finished or if unknown.
    pub fn status(&self, id: TaskId) -> Option<TaskStatus> {
        self.block_on(self.inner.executor.status(id))
    }

    /// Counts of workers and tasks.
    pub fn stats(&self) -> ExecutorStats {
        self.block_on(self.inner.executor.stats())
    }

    /// Stops accepting tasks, finishes every accepted one, then stops the workers. Tasks
    /// submitted afterwards (through any clone) fail with a [`TaskError::is_shutdown`]
    /// error.
    pub fn shutdown(&self) {
        self.block_on(self.inner.executor.shutdown());
    }

    /// Cancels every queued and running task, kills the workers, and stops.
    pub fn shutdown_now(&self) {
        self.block_on(self.inner.executor.shutdown_now());
    }

    fn wrap(&self, handle: crate::TaskHandle) -> TaskHandle {
        TaskHandle {
            id: handle.id(),
            state: Mutex::new(State::Waiting(handle)),
            carrier: self.inner.carrier.clone(),
        }
    }

    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        block_on(&self.inner.carrier.handle, future)
    }
}

/// Blocks the calling thread on `future`, on a runtime whose own threads drive its timers and
/// I/O. Called from inside an async context (a Tokio worker thread), where blocking would
/// stall other tasks, it does so in `block_in_place` where that is allowed.
fn block_on<F>(runtime: &Handle, future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    match Handle::try_current() {
        Ok(current) if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| runtime.block_on(future))
        }
        // A current-thread runtime cannot lend its only thread; run the wait on a scoped
        // thread of its own instead of panicking.
        Ok(_) => std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
        Err(_) => runtime.block_on(future),
    }
}

impl Drop for Inner {
    /// The last clone is gone: cancel what is left and stop the workers, waiting for them so
    /// that no Python process outlives the executor. (After [`Executor::shutdown`] this
    /// returns at once.)
    fn drop(&mut self) {
        block_on(&self.carrier.handle, self.executor.shutdown_now());
    }
}

/// A submitted task; wait for it with [`TaskHandle::wait`], [`TaskHandle::result`] or
/// [`TaskHandle::wait_timeout`]. `Send + Sync`: one thread may wait while another cancels.
///
/// Dropping a handle does not cancel its task.
#[derive(Debug)]
pub struct TaskHandle {
    id: TaskId,
    state: Mutex<State>,
    carrier: Arc<Carrier>,
}

#[derive(Debug)]
enum State {
    Waiting(crate::TaskHandle),
    Done(Result<Payload, TaskError>),
}

impl TaskHandle {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Cancels the task: a queued task never runs; a running one has its worker killed and
    /// replaced. Waiting then gives a [`TaskError::is_cancelled`] error, unless the result
    /// was already there.
    pub fn cancel(&self) {
        if let State::Waiting(handle) = &*self.lock() {
            handle.cancel();
        }
    }

    /// Waits for the task to finish and returns its result.
    pub fn wait(self) -> Result<Payload, TaskError> {
        let state = match self.state.into_inner() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        match state {
            State::Done(result) => result,
            State::Waiting(handle) => block_on(&self.carrier.handle, handle),
        }
    }

    /// Waits for the result and decodes it into `T`.
    pub fn result<T: DeserializeOwned>(self) -> Result<T, TaskError> {
        self.wait()?.decode()
    }

    /// Waits at most `timeout` for the task to finish: `Some(result)` when it has (call
    /// again and get the same result), `None` when it is still queued or running (the task
    /// carries on; wait again, or cancel it).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<Payload, TaskError>> {
        let mut state = self.lock();
        if let State::Waiting(handle) = &mut *state {
            // The timer is made inside the runtime (in the async block), which owns the clock.
            let finished = block_on(&self.carrier.handle, async {
                tokio::time::timeout(timeout, handle).await
            });
            *state = State::Done(finished.ok()?);
        }
        match &*state {
            State::Done(result) => Some(result.clone()),
            State::Waiting(_) => None,
        }
    }

    /// Whether the task has finished, without waiting.
    pub fn is_finished(&self) -> bool {
        self.wait_timeout(Duration::ZERO).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The iterator of [`Executor::map`]: results in input order.
#[derive(Debug)]
pub struct Map<I> {
    executor: Executor,
    function: Function,
    inputs: I,
    in_flight: usize,
    pending: VecDeque<TaskHandle>,
}

impl<I> Iterator for Map<I>
where
    I: Iterator,
    I::Item: IntoArgs,
{
    type Item = Result<Payload, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pending.len() < self.in_flight {
            let Some(args) = self.inputs.next() else {
                break;
            };
            self.pending
                .push_back(self.executor.submit(&self.function, args));
        }
        self.pending.pop_front().map(TaskHandle::wait)
    }
}

impl<I> Drop for Map<I> {
    fn drop(&mut self) {
        for handle in &self.pending {
            handle.cancel();
        }
    }
}
