//! The user-facing API: submit tasks, await results.

mod handle;
mod reports;
mod service;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

pub use handle::TaskHandle;
pub use reports::{report_stream, ReportSink, ReportStream};
pub use service::{ResponseFuture, Task};

use crate::dispatcher::{Command, Dispatcher, DispatcherConfig, Machine, Reply, Submission};
use crate::ExecutorStats;
use crate::{Function, IntoArgs, Payload, Resources, TaskError, TaskId, TaskStatus, WorkerRuntime};

/// Runs tasks on an endpoint's workers.
///
/// An `Executor` is a cheap handle (clone it freely) to a dispatcher task that owns the
/// queue and the workers. [`Executor::submit`] returns at once with a [`TaskHandle`], a
/// future of the result; nothing blocks while tasks run. The executor is also a
/// [`tower_service::Service`] over [`Task`]s, so tower layers (timeouts, retries,
/// concurrency limits, [`crate::MemoizeLayer`]) stack on it.
///
/// When the last `Executor` clone is dropped the endpoint finishes the accepted tasks and
/// stops its workers, so outstanding [`TaskHandle`]s still resolve.
///
/// ```no_run
/// use funcx_core::{Executor, Function, TaskError};
/// # async fn demo(runtime: impl funcx_core::WorkerRuntime) -> Result<(), TaskError> {
/// let executor = Executor::builder().workers(2).start(runtime);
/// let add = Function::from_source("def add(a, b):\n    return a + b\n", "add");
/// let sum: i64 = executor.submit(&add, (2, 3)).result().await?;
/// assert_eq!(sum, 5);
/// executor.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Executor {
    commands: mpsc::UnboundedSender<Command>,
}

/// Options for one task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TaskOptions {
    timeout: Option<Duration>,
    trace: Option<u64>,
    resources: Resources,
}

impl TaskOptions {
    /// Default options: the endpoint's default timeout.
    pub fn new() -> TaskOptions {
        TaskOptions::default()
    }

    /// Fails the task with a [`TaskError::is_timeout`] error, and replaces its worker, once it
    /// has *run* (not waited in the queue) for longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> TaskOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Carries `trace`, the id the task had where it was first submitted, so that the logs
    /// of every process it passes through name it the same way. Set by relays (a manager, a
    /// gateway); a task submitted here is traced by its own id.
    pub fn trace(mut self, trace: u64) -> TaskOptions {
        self.trace = Some(trace);
        self
    }

    /// What the task asks for, when it is more than a plain task's one core.
    fn special_resources(&self) -> Option<Resources> {
        self.resources.is_special().then_some(self.resources)
    }

    /// Reserves `cores` CPU cores (default 1) of the machine of the endpoint's own workers
    /// while the task runs; see [`TaskOptions::resources`].
    pub fn cores(mut self, cores: u32) -> TaskOptions {
        self.resources.cores = cores.max(1);
        self
    }

    /// Reserves `gpus` of the endpoint's GPUs ([`ExecutorBuilder::gpus`]) while the task
    /// runs; the task sees only those, through `CUDA_VISIBLE_DEVICES` and its kin.
    pub fn gpus(mut self, gpus: u32) -> TaskOptions {
        self.resources.gpus = gpus;
        self
    }

    /// Reserves `bytes` of memory of the endpoint's machine ([`ExecutorBuilder::memory`])
    /// while the task runs.
    pub fn memory(mut self, bytes: u64) -> TaskOptions {
        self.resources.memory = bytes;
        self
    }

    /// Holds `nodes` whole nodes of one block for the task alone while it runs: a multi-node
    /// MPI task ([`crate::MpiFunction`]), whose worker runs the launcher and whose ranks run
    /// on those nodes. The task sees their host names in [`crate::HOSTS_VARIABLE`] (an MPI
    /// launcher's `{hosts}`) and their count in [`crate::NODES_VARIABLE`]. The nodes are
    /// those of a manager that holds its whole block (`funcx-manager --block-nodes`), or of
    /// the endpoint's own machine ([`ExecutorBuilder::nodes`]); the task waits until enough
    /// of them are free, and fails at once as unsatisfiable if no block has that many.
    pub fn nodes(mut self, nodes: u32) -> TaskOptions {
        self.resources.nodes = nodes;
        self
    }

    /// Asks for `resources` while the task runs. A task that asks for more than one core
    /// (or for any GPU or memory) runs alone on one of the endpoint's own workers, or on a
    /// remote manager whose machine has enough ([`Executor::attach_with_capacity`]; the manager
    /// places it on its workers by the same rules), and only while what it asks for is free,
    /// so tasks never oversubscribe a machine; it waits in the queue until then. One that
    /// could never fit fails at once with a [`TaskError::is_unsatisfiable`] error (on an
    /// endpoint of managers alone, once the first manager has attached). Through a gateway
    /// (`funcx_client::connect`, a pool attached with [`Executor::attach_relay`]) the task
    /// carries what it asks for to the gateway's endpoint, which places it, or fails it as
    /// unsatisfiable, by these same rules.
    pub fn resources(mut self, resources: Resources) -> TaskOptions {
        self.resources = Resources {
            cores: resources.cores.max(1),
            ..resources
        };
        self
    }
}

/// The default [`ExecutorBuilder::max_arguments_size`]: 1 GiB.
pub const DEFAULT_MAX_ARGUMENTS_SIZE: u64 = 1 << 30;

/// Configures and starts an [`Executor`].
#[derive(Debug, Clone)]
pub struct ExecutorBuilder {
    config: DispatcherConfig,
}

impl Default for ExecutorBuilder {
    fn default() -> Self {
        ExecutorBuilder {
            config: DispatcherConfig {
                workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
                retries_on_worker_death: 0,
                default_timeout: None,
                shutdown_grace: Duration::from_secs(10),
                max_arguments_size: DEFAULT_MAX_ARGUMENTS_SIZE,
                allowed_formats: None,
                allowed_functions: None,
                capacity: crate::Capacity::default(),
            },
        }
    }
}

impl ExecutorBuilder {
    /// The number of workers to keep running (default: the number of CPUs).
    pub fn workers(mut self, workers: usize) -> ExecutorBuilder {
        self.config.workers = workers.max(1);
        self
    }

    /// How many times a task whose worker died under it is run again before it fails with a
    /// [`TaskError::is_worker_died`] error (default 0, as funcX's
    /// `max_retries_on_system_failure`). Tasks that were merely queued behind it on that
    /// worker are always re-run and never charged.
    pub fn retries_on_worker_death(mut self, retries: u32) -> ExecutorBuilder {
        self.config.retries_on_worker_death = retries;
        self
    }

    /// A timeout for tasks submitted without one (default: none).
    pub fn task_timeout(mut self, timeout: Duration) -> ExecutorBuilder {
        self.config.default_timeout = Some(timeout);
        self
    }

    /// The largest a task's arguments may be, in bytes (default 1 GiB, the same as the
    /// Python workers' default result limit). A task over it fails at once with a
    /// [`TaskError::is_arguments_too_large`] error, before anything is sent; large arguments
    /// under it travel in chunks over every link.
    pub fn max_arguments_size(mut self, bytes: u64) -> ExecutorBuilder {
        self.config.max_arguments_size = bytes;
        self
    }

    /// The only data formats tasks may use (default: every format). A task with an argument
    /// in another format, or with a pickled function when [`Format::Pickle`] is not in the
    /// list, fails at once with a [`TaskError::is_format_refused`] error, before anything of
    /// it reaches a worker; so `allowed_formats([Format::Json])` makes an endpoint that
    /// never loads a pickle. Source-text functions are always allowed.
    ///
    /// [`Format::Pickle`]: crate::Format::Pickle
    pub fn allowed_formats(
        mut self,
        formats: impl IntoIterator<Item = crate::Format>,
    ) -> ExecutorBuilder {
        self.config.allowed_formats = Some(formats.into_iter().collect());
        self
    }

    /// The only functions tasks may call (default: every function). A task of another
    /// function fails at once with a [`TaskError::is_function_refused`] error, before its
    /// function reaches a worker: the endpoint's own allow-list, checked where the code runs
    /// whatever the gateway in front checked.
    pub fn allowed_functions(
        mut self,
        functions: impl IntoIterator<Item = crate::FunctionId>,
    ) -> ExecutorBuilder {
        self.config.allowed_functions = Some(functions.into_iter().collect());
        self
    }

    /// The CPU cores tasks may reserve on this executor's own workers' machine (default: the
    /// number of workers, so plain tasks are never held back). Tasks asking for more cores
    /// than are free wait; see [`TaskOptions::cores`].
    pub fn cores(mut self, cores: u32) -> ExecutorBuilder {
        self.config.capacity.cores = Some(cores.max(1));
        self
    }

    /// The bytes of memory tasks may reserve on this executor's own workers' machine
    /// (default: unlimited); see [`TaskOptions::memory`].
    pub fn memory(mut self, bytes: u64) -> ExecutorBuilder {
        self.config.capacity.memory = Some(bytes);
        self
    }

    /// The ids of the GPUs tasks may be granted (default: the accelerators the worker
    /// runtime advertises, e.g. `PythonConfig::accelerators`); see [`TaskOptions::gpus`].
    pub fn gpus<S: Into<String>>(mut self, ids: impl IntoIterator<Item = S>) -> ExecutorBuilder {
        self.config.capacity.gpus = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// The host names of the nodes that multi-node tasks ([`TaskOptions::nodes`]) may be
    /// given (default: this machine alone). An endpoint whose workers run on the first node
    /// of a multi-node batch job names the job's nodes here, as the scheduler lists them.
    pub fn nodes<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> ExecutorBuilder {
        self.config.capacity.nodes = Some(hosts.into_iter().map(Into::into).collect());
        self
    }

    /// How long a graceful shutdown waits for workers to exit once their work is done
    /// before killing them (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> ExecutorBuilder {
        self.config.shutdown_grace = grace;
        self
    }

    /// Starts an executor with no workers of its own: its workers are pools that attach
    /// themselves ([`Executor::attach`]), such as remote managers dialling in to an endpoint.
    /// Tasks wait in the queue until a pool attaches.
    ///
    /// Where it runs is as for [`ExecutorBuilder::start`].
    pub fn start_without_workers(mut self) -> Executor {
        self.config.workers = 0;
        self.start_shared(Arc::new(NoRuntime))
    }

    /// Starts the endpoint's dispatcher and workers on the current Tokio runtime.
    ///
    /// Returns at once; tasks submitted before the workers are up wait in the queue. Use
    /// [`Executor::ready`] to wait for the workers (and learn early if they cannot start).
    ///
    /// Called outside a Tokio runtime (a plain threaded program), it starts a runtime of its
    /// own on a thread of its own, which ends when the executor has shut down. The handles
    /// it returns are ordinary futures that any executor can poll; to wait for them without
    /// one, use `funcx::blocking`.
    pub fn start(self, runtime: impl WorkerRuntime) -> Executor {
        self.start_shared(Arc::new(runtime))
    }

    /// As [`ExecutorBuilder::start`], for a runtime that is already shared.
    pub fn start_shared(self, runtime: Arc<dyn WorkerRuntime>) -> Executor {
        let (commands, receiver) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher::new(runtime, self.config, receiver).run();
        match tokio::runtime::Handle::try_current() {
            Ok(current) => {
                current.spawn(dispatcher);
            }
            Err(_) => run_on_own_thread(dispatcher),
        }
        Executor { commands }
    }
}

/// Runs `dispatcher` on a single-threaded Tokio runtime on a new thread, for an executor
/// started outside any runtime. If the thread or the runtime cannot be made, the dispatcher
/// is dropped, and every task submitted fails with a [`TaskError::is_shutdown`] error; the
/// reason is logged.
fn run_on_own_thread(dispatcher: impl std::future::Future<Output = ()> + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("funcx-dispatcher".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(dispatcher),
                Err(error) => tracing::error!(
                    %error,
                    "cannot start a Tokio runtime for an executor started outside one"
                ),
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the thread of an executor started outside a Tokio runtime");
    }
}

/// The runtime of an executor whose workers all attach themselves: it is never asked to
/// spawn anything.
struct NoRuntime;

impl WorkerRuntime for NoRuntime {
    fn spawn(
        &self,
        _index: usize,
        _events: crate::worker::WorkerEvents,
    ) -> futures::future::BoxFuture<
        'static,
        Result<Box<dyn crate::worker::Worker>, crate::SpawnError>,
    > {
        Box::pin(std::future::ready(Err(crate::SpawnError::new(
            "this executor has no workers of its own",
        ))))
    }
}

impl Executor {
    /// A builder for an executor.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// Submits one call of `function` with `args`.
    ///
    /// The function is registered with the endpoint on first use and sent to each worker
    /// once. Arguments that failed to serialize make the handle resolve to a
    /// [`TaskError::is_serialization`] error.
    pub fn submit(&self, function: &Function, args: impl IntoArgs) -> TaskHandle {
        self.submit_with(function, args, TaskOptions::default())
    }

    /// Submits one call with per-task options (a timeout).
    pub fn submit_with(
        &self,
        function: &Function,
        args: impl IntoArgs,
        options: TaskOptions,
    ) -> TaskHandle {
        let (submission, handle) = self.prepare(function, args, options);
        self.send(Command::Submit(submission));
        handle
    }

    /// Submits one call of `function` per element of `batch`, in one message to the
    /// dispatcher.
    pub fn submit_batch<A: IntoArgs>(
        &self,
        function: &Function,
        batch: impl IntoIterator<Item = A>,
    ) -> Vec<TaskHandle> {
        let (submissions, handles): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|args| self.prepare(function, args, TaskOptions::default()))
            .unzip();
        self.send(Command::SubmitMany(submissions));
        handles
    }

    /// Submits many tasks, possibly of different functions, in one message to the
    /// dispatcher; their outcomes go to `sink`, each with the tag it was submitted with,
    /// instead of to a handle per task. Returns the tasks' ids (for [`Executor::cancel`]),
    /// in order.
    ///
    /// This is the cheapest way to run a stream of tasks: no future and no channel per task.
    pub fn submit_streamed(
        &self,
        tasks: impl IntoIterator<Item = (u64, Task)>,
        sink: &ReportSink,
    ) -> Vec<TaskId> {
        let (ids, submissions): (Vec<_>, Vec<_>) = tasks
            .into_iter()
            .map(|(tag, task)| {
                let id = TaskId::next();
                let submission = Submission {
                    id,
                    function: task.function,
                    args: task.args,
                    timeout: task.options.timeout,
                    trace: task.options.trace,
                    resources: task.options.special_resources(),
                    reply: Reply::Stream {
                        tag,
                        id,
                        sink: sink.tx.clone(),
                    },
                };
                (id, submission)
            })
            .unzip();
        self.send(Command::SubmitMany(submissions));
        ids
    }

    /// Calls `function` once per element of `inputs`, with at most `in_flight` tasks
    /// submitted and unfinished at a time, and yields the results in input order.
    ///
    /// Inputs are consumed lazily, so an endless iterator is fine.
    pub fn map<I>(
        &self,
        function: &Function,
        inputs: I,
        in_flight: usize,
    ) -> impl Stream<Item = Result<Payload, TaskError>> + Send + 'static
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: IntoArgs,
    {
        let executor = self.clone();
        let function = function.clone();
        stream::iter(inputs)
            .map(move |args| executor.submit(&function, args))
            .buffered(in_flight.max(1))
    }

    /// Cancels task `id` (see [`TaskHandle::cancel`]).
    pub fn cancel(&self, id: TaskId) {
        self.send(Command::Cancel(id));
    }

    /// Takes tasks back if they have not started, without interrupting any that have: each
    /// one that did not run, and now never will, resolves as cancelled
    /// ([`TaskError::is_cancelled`]); one already running finishes and reports its real
    /// result. A relay (a remote manager) uses it to give prefetched work back to its
    /// endpoint, which then runs it elsewhere with no risk of running it twice.
    pub fn withdraw(&self, ids: Vec<TaskId>) {
        if !ids.is_empty() {
            self.send(Command::Withdraw(ids));
        }
    }

    /// The state and timeline of task `id`, or `None` once it has finished (its handle has
    /// the outcome) or if it is unknown. A task cancelled while on a worker shows as
    /// `Failed` until that worker has let go of it.
    pub async fn status(&self, id: TaskId) -> Option<TaskStatus> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Status(id, reply));
        answer.await.ok().flatten()
    }

    /// Counts of workers and tasks.
    pub async fn stats(&self) -> ExecutorStats {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Stats(reply));
        answer.await.unwrap_or_default()
    }

    /// Waits until every worker has started (or, when some keep failing to start while
    /// others run, until those have failed twice), or fails with a
    /// [`TaskError::is_no_workers`] error saying why no worker can start.
    pub async fn ready(&self) -> Result<(), TaskError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Ready(reply));
        answer.await.unwrap_or_else(|_| Err(TaskError::shutdown()))
    }

    /// Attaches a pool of `size` workers that started on their own, such as a remote manager
    /// that dialled in, and returns where the pool reports its events.
    ///
    /// A pool runs up to `size` tasks at once and finishes them in any order; it enforces
    /// [`crate::worker::WorkItem::timeout`] and handles cancellations itself. When it goes
    /// ([`crate::worker::WorkerEvent::Lost`] or `Exited`), the tasks it held are queued again,
    /// or fail with a [`TaskError::is_manager_lost`] error once they have been lost more
    /// often than [`ExecutorBuilder::retries_on_worker_death`] allows. A pool is not
    /// replaced by the executor; whoever started it starts another.
    ///
    /// `block` is the block the pool belongs to, if known: it lets a scaling strategy see
    /// which blocks are busy and drain one ([`Executor::drain_block`]).
    pub async fn attach(
        &self,
        worker: Box<dyn crate::worker::Worker>,
        size: usize,
        block: Option<crate::BlockId>,
    ) -> Result<crate::worker::WorkerEvents, TaskError> {
        self.attach_pool(worker, size, block, Machine::Unknown)
            .await
    }

    /// As [`Executor::attach`], for a pool that says what its machine has: `size` workers,
    /// and `capacity` (its cores, one per worker unless said; its memory and GPUs). Tasks
    /// that ask for resources ([`TaskOptions::resources`]) are sent to it when they could
    /// fit there, carrying what they ask for, and the pool places them on its own workers (a
    /// remote manager's executor does, by the same rules). A pool attached with
    /// [`Executor::attach`] takes none.
    pub async fn attach_with_capacity(
        &self,
        worker: Box<dyn crate::worker::Worker>,
        size: usize,
        block: Option<crate::BlockId>,
        capacity: crate::Capacity,
    ) -> Result<crate::worker::WorkerEvents, TaskError> {
        self.attach_pool(worker, size, block, Machine::of(size, &capacity))
            .await
    }

    /// As [`Executor::attach`], for a pool that relays tasks to another endpoint whose own
    /// dispatcher places them and fails those that can never fit there (a gateway, as
    /// `funcx_client::connect` attaches it). Every task that asks for resources
    /// ([`TaskOptions::resources`]) is sent to it, carrying what it asks for
    /// ([`crate::worker::WorkItem::resources`]), and none is refused here while it is
    /// attached: the endpoint behind it gives the verdict.
    pub async fn attach_relay(
        &self,
        worker: Box<dyn crate::worker::Worker>,
        size: usize,
    ) -> Result<crate::worker::WorkerEvents, TaskError> {
        self.attach_pool(worker, size, None, Machine::Relay).await
    }

    async fn attach_pool(
        &self,
        worker: Box<dyn crate::worker::Worker>,
        size: usize,
        block: Option<crate::BlockId>,
        machine: Machine,
    ) -> Result<crate::worker::WorkerEvents, TaskError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Attach {
            worker,
            size,
            block,
            machine,
            reply,
        });
        answer.await.unwrap_or_else(|_| Err(TaskError::shutdown()))
    }

    /// The pools of workers attached to this executor (remote managers), with their load.
    pub async fn pools(&self) -> Vec<crate::PoolStatus> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Pools(reply));
        answer.await.unwrap_or_default()
    }

    /// Stops sending tasks to the pools of `block` and asks them to finish what they hold
    /// and exit: before the block's walltime ends, or to release an idle block. If such a
    /// pool is lost before it is done, its tasks are re-run without being charged a retry:
    /// the loss is the block's end, not the tasks' fault.
    pub fn drain_block(&self, block: &crate::BlockId) {
        self.send(Command::DrainBlock(block.clone()));
    }

    /// Stops sending tasks to the one pool `worker` (as [`crate::PoolStatus::worker`] and
    /// [`crate::worker::WorkerEvents::worker`] name it) and asks it to finish what it holds and
    /// exit: a manager that asked to leave, or an endpoint that its gateway stops. As with
    /// [`Executor::drain_block`], its loss from then on is not charged to its tasks.
    pub fn drain_pool(&self, worker: crate::worker::WorkerId) {
        self.send(Command::DrainPool(worker));
    }

    /// Stops accepting tasks, finishes every accepted one, then stops the workers.
    ///
    /// Tasks submitted afterwards fail with a [`TaskError::is_shutdown`] error.
    pub async fn shutdown(&self) {
        self.stop(true).await;
    }

    /// Cancels every queued and running task, kills the workers and stops.
    pub async fn shutdown_now(&self) {
        self.stop(false).await;
    }

    async fn stop(&self, drain: bool) {
        let (done, stopped) = oneshot::channel();
        self.send(Command::Shutdown { drain, done });
        // An error means the dispatcher has already stopped, which is what we wait for.
        let _ = stopped.await;
    }

    fn prepare(
        &self,
        function: &Function,
        args: impl IntoArgs,
        options: TaskOptions,
    ) -> (Submission, TaskHandle) {
        let id = TaskId::next();
        let (reply, outcome) = oneshot::channel();
        let submission = Submission {
            id,
            function: function.clone(),
            args: args.into_args(),
            timeout: options.timeout,
            trace: options.trace,
            resources: options.special_resources(),
            reply: Reply::Handle(reply),
        };
        (
            submission,
            TaskHandle::new(id, outcome, self.commands.downgrade()),
        )
    }

    fn send(&self, command: Command) {
        // If the dispatcher has stopped, the command is dropped with its reply channels, and
        // whoever waits on one reads that as "shut down".
        let _ = self.commands.send(command);
    }
}
