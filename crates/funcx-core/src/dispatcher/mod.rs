//! The dispatcher: one task that owns the queue, the workers and every task in flight.
//!
//! It receives [`Command`]s from executors and [`WorkerEvent`]s from workers, and after each
//! burst of messages it hands queued tasks to workers with spare capacity, one batch per
//! worker. Owning all state in one task keeps the hot path free of locks: a submission is a
//! channel send, a result a channel send back.
//!
//! This file holds the state, the run loop and the executor's commands; the rest is one
//! submodule per concern:
//! - `events`: what workers report. A worker that dies is replaced, and the task it was
//!   running fails with the exit status (or is retried, per
//!   [`DispatcherConfig::retries_on_worker_death`]); the tasks queued behind it on that worker
//!   never started, so they go back to the front of the queue;
//! - `deadlines`: a task that passes its timeout gets its worker killed (as does one
//!   cancelled while running, in `cancel`);
//! - `workers`: workers that cannot start are retried with back-off, and while no worker can
//!   start, queued tasks fail with a [`TaskError::is_no_workers`] error instead of waiting
//!   forever;
//! - `pools`: pools of workers that attach from elsewhere, and their loss;
//! - `placement`: which worker gets which queued task;
//! - `lanes`: the queue of each container image's tasks, and moving the endpoint's workers
//!   between images;
//! - `records`: every task's record, by id, in one table;
//! - `shutdown`: stopping, at once or draining.

mod command;
mod deadlines;
mod estimate;
mod events;
mod lanes;
mod node;
mod placement;
mod pools;
mod records;
mod shutdown;
mod slot;
mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::ids::IdMap;
pub(crate) use command::{Command, Outcome, Reply, Submission};
use estimate::Estimate;
use lanes::{Lane, Queues};
use node::Node;
use records::Records;
use shutdown::Stop;
pub(crate) use slot::Machine;
use slot::{KillReason, Phase, Slot};

use crate::worker::{
    FunctionKey, SpawnError, ToWorker, Worker, WorkerEvent, WorkerId, WorkerRuntime,
};
use crate::{
    Args, ExecutorStats, Function, FunctionId, TaskError, TaskId, TaskState, TaskStatus, Timeline,
};

/// Messages handled per wake-up before dispatching, so results keep flowing under a flood of
/// submissions.
const BURST: usize = 4096;

/// How the dispatcher runs its workers.
#[derive(Debug, Clone)]
pub(crate) struct DispatcherConfig {
    pub(crate) workers: usize,
    pub(crate) retries_on_worker_death: u32,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_arguments_size: u64,
    /// The data formats tasks may use; `None` allows every format.
    pub(crate) allowed_formats: Option<Vec<crate::Format>>,
    /// The only functions tasks may call; `None` allows every function.
    pub(crate) allowed_functions: Option<std::collections::HashSet<FunctionId>>,
    /// What the machine of the endpoint's own workers offers tasks that ask for resources.
    pub(crate) capacity: crate::Capacity,
}

struct TaskRecord {
    key: FunctionKey,
    args: Args,
    bytes: usize,
    timeout: Option<Duration>,
    /// Taken when the outcome is sent; a cancelled task may linger without one until its
    /// worker lets go of it.
    reply: Option<Reply>,
    timeline: Timeline,
    state: TaskState,
    attempts: u32,
    deaths: u32,
    disruptions: u32,
    /// Run isolated from now on: set after an ambiguous worker death.
    isolate: bool,
    /// The estimate charged to the worker holding the task.
    charged_ns: u64,
    /// Asked back from its worker to run on an idle one: a cancelled result for it means
    /// the worker skipped it, and it goes back to the queue.
    stolen: bool,
    /// The task's span: every log line about it is inside, from queue to outcome. Disabled
    /// (and free) unless `funcx_core` logs at debug level.
    span: tracing::Span,
    /// The id that follows it across processes (see `TaskOptions::trace`).
    trace: u64,
    /// What it asks for beyond a plain task's one core; such a task runs only on the
    /// endpoint's own workers, alone on its worker.
    resources: Option<crate::Resources>,
    /// The workers it may run on: the default ones, or those of its function's image.
    lane: Lane,
}

impl TaskRecord {
    fn status(&self) -> TaskStatus {
        TaskStatus {
            state: self.state,
            timeline: self.timeline,
            attempts: self.attempts,
        }
    }

    /// Sends the outcome, if nobody has been told yet.
    fn finish(&mut self, result: Result<crate::Payload, TaskError>) {
        self.state = if result.is_ok() {
            TaskState::Succeeded
        } else {
            TaskState::Failed
        };
        // Set by the caller when it handles a batch of outcomes at one instant.
        self.timeline.finished.get_or_insert_with(SystemTime::now);
        match &result {
            Ok(payload) => {
                debug!(parent: &self.span, bytes = payload.len(), attempts = self.attempts, "succeeded")
            }
            Err(error) => debug!(parent: &self.span, %error, attempts = self.attempts, "failed"),
        }
        if let Some(reply) = self.reply.take() {
            reply.send(Outcome {
                result,
                status: self.status(),
            });
        }
    }
}

/// A finished spawn: the slot, the worker id it was for, and the worker or the failure.
type Spawned = (usize, WorkerId, Result<Box<dyn Worker>, SpawnError>);

pub(crate) struct Dispatcher {
    runtime: Arc<dyn WorkerRuntime>,
    config: DispatcherConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    events_tx: mpsc::UnboundedSender<(WorkerId, WorkerEvent)>,
    events: mpsc::UnboundedReceiver<(WorkerId, WorkerEvent)>,
    spawned_tx: mpsc::UnboundedSender<Spawned>,
    spawned: mpsc::UnboundedReceiver<Spawned>,

    /// Slots `0..config.workers` are the endpoint's own workers, on this machine; pools
    /// that attach come after them (and only pools are ever removed).
    slots: Vec<Slot>,
    /// This machine, as tasks that ask for resources see it.
    node: Node,
    slot_of: IdMap<WorkerId, usize>,
    next_worker: u64,
    workers_started: u64,
    round_robin: usize,

    functions: IdMap<FunctionId, FunctionKey>,
    function_table: Vec<(Function, Estimate)>,

    /// Every task from submission to outcome.
    tasks: Records,
    /// Queued tasks, one queue per lane (the default workers', each image's).
    queues: Queues,

    /// When to look again for work to move to an idle worker: when a busy worker's task
    /// will have overrun its estimate.
    balance_at: Option<Instant>,

    /// Why the last worker failed to start, while no worker is ready.
    broken: Option<String>,
    ready_waiters: Vec<oneshot::Sender<Result<(), TaskError>>>,
    stop: Option<Stop>,
    stop_deadline: Option<Instant>,
    stopped_waiters: Vec<oneshot::Sender<()>>,
    /// Whether a task that asks for resources was ever accepted: until one is, a pool's
    /// attach has no queue to scan for tasks it made unplaceable.
    saw_resources: bool,
}

impl Dispatcher {
    pub(crate) fn new(
        runtime: Arc<dyn WorkerRuntime>,
        config: DispatcherConfig,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Dispatcher {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (spawned_tx, spawned) = mpsc::unbounded_channel();
        let node = Node::new(&config.capacity, config.workers, runtime.accelerators());
        Dispatcher {
            runtime,
            config,
            commands,
            commands_open: true,
            events_tx,
            events,
            spawned_tx,
            spawned,
            slots: Vec::new(),
            node,
            slot_of: IdMap::default(),
            next_worker: 0,
            workers_started: 0,
            round_robin: 0,
            functions: IdMap::default(),
            function_table: Vec::new(),
            tasks: Records::default(),
            queues: Queues::new(),
            balance_at: None,
            broken: None,
            ready_waiters: Vec::new(),
            stop: None,
            stop_deadline: None,
            stopped_waiters: Vec::new(),
            saw_resources: false,
        }
    }

    /// Runs until the endpoint has shut down and every worker is gone.
    pub(crate) async fn run(mut self) {
        for index in 0..self.config.workers {
            let id = self.new_worker_id();
            self.slots.push(Slot::new(index, id));
            self.slot_of.insert(id, index);
            self.spawn(index, Duration::ZERO);
        }
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                Some((worker, event)) = self.events.recv() => self.on_event(worker, event),
                Some((index, id, result)) = self.spawned.recv() => self.on_spawned(index, id, result),
                command = self.commands.recv(), if self.commands_open => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        // Every executor handle is gone: finish what was accepted, then stop.
                        self.commands_open = false;
                        self.begin_stop(Stop::Drain);
                    }
                },
                () = deadlines::sleep_until(deadline), if deadline.is_some() => self.on_deadlines(),
            }
            self.drain_bursts();
            self.dispatch();
            if self.progress_stop() {
                break;
            }
        }
        for waiter in self.stopped_waiters.drain(..) {
            let _ = waiter.send(());
        }
        debug!("dispatcher stopped");
    }

    /// Handles what else is already waiting, so one dispatch pass serves a whole burst.
    fn drain_bursts(&mut self) {
        for _ in 0..BURST {
            match self.events.try_recv() {
                Ok((worker, event)) => self.on_event(worker, event),
                Err(_) => break,
            }
        }
        if self.commands_open {
            for _ in 0..BURST {
                match self.commands.try_recv() {
                    Ok(command) => self.on_command(command),
                    Err(_) => break,
                }
            }
        }
    }

    // ---- commands ----------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Submit(submission) => self.accept(submission, SystemTime::now()),
            Command::SubmitMany(submissions) => {
                // One clock read for the batch: they arrived together.
                let now = SystemTime::now();
                for submission in submissions {
                    self.accept(submission, now);
                }
            }
            Command::Cancel(id) => self.cancel(id),
            Command::Withdraw(ids) => self.withdraw(ids),
            Command::Status(id, reply) => {
                let _ = reply.send(self.tasks.get(&id).map(|record| record.status()));
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Attach {
                worker,
                size,
                block,
                machine,
                reply,
            } => self.attach(worker, size, block, machine, reply),
            Command::Pools(reply) => {
                let _ = reply.send(self.pools());
            }
            Command::DrainBlock(block) => self.drain_block(&block),
            Command::DrainPool(worker) => self.drain_pool(worker),
            Command::Ready(reply) => {
                self.ready_waiters.push(reply);
                self.answer_ready_waiters();
            }
            Command::Shutdown { drain, done } => {
                self.stopped_waiters.push(done);
                self.begin_stop(if drain { Stop::Drain } else { Stop::Now });
            }
        }
    }

    fn accept(&mut self, submission: Submission, now: SystemTime) {
        let Submission {
            id,
            function,
            args,
            timeout,
            trace,
            resources,
            reply,
        } = submission;
        let trace = trace.unwrap_or(id.as_u64());
        let mut record = TaskRecord {
            key: FunctionKey(0),
            bytes: args.byte_len(),
            args,
            timeout: timeout.or(self.config.default_timeout),
            reply: Some(reply),
            timeline: Timeline {
                submitted: now,
                dispatched: None,
                running: None,
                finished: None,
            },
            state: TaskState::Queued,
            attempts: 0,
            deaths: 0,
            disruptions: 0,
            // Alone on its worker anyway: its start is reported, so its timeout and a
            // cancellation work as for any long task.
            isolate: resources.is_some(),
            charged_ns: 0,
            stolen: false,
            span: tracing::debug_span!("task", %id, trace, function = function.name()),
            trace,
            resources,
            lane: self.queues.lane_of(function.image()),
        };
        if self.stop.is_some() {
            return record.finish(Err(TaskError::shutdown()));
        }
        // Formats first: a refused pickle is refused as such, even among other arguments.
        if let Some(allowed) = &self.config.allowed_formats {
            if let Err(error) = check_formats(allowed, &function, &record.args) {
                return record.finish(Err(error));
            }
        }
        if let Some(allowed) = &self.config.allowed_functions {
            if !allowed.contains(&function.id()) {
                let error = TaskError::function_refused(format!(
                    "function '{}' ({}) is not on this endpoint's allow-list",
                    function.name(),
                    function.id()
                ));
                return record.finish(Err(error));
            }
        }
        if let Err(error) = record.args.validate() {
            return record.finish(Err(error));
        }
        if record.bytes as u64 > self.config.max_arguments_size {
            let error =
                TaskError::arguments_too_large(record.bytes as u64, self.config.max_arguments_size);
            return record.finish(Err(error));
        }
        if let Some(wanted) = &record.resources {
            self.saw_resources = true;
            if let Some(reason) = self.unplaceable(wanted) {
                return record.finish(Err(TaskError::unsatisfiable(reason)));
            }
        }
        if let Some(reason) = self.unavailable() {
            return record.finish(Err(TaskError::no_workers(reason)));
        }
        if record.lane != Lane::DEFAULT {
            if let Some(reason) = self.queues.broken(record.lane, std::time::Instant::now()) {
                let error = TaskError::no_workers(reason);
                return record.finish(Err(error));
            }
        }
        let lane = record.lane;
        record.key = self.key_of(&function);
        self.tasks.insert(id, record);
        self.queues.get_mut(lane).push_back(id);
    }

    fn key_of(&mut self, function: &Function) -> FunctionKey {
        let next = FunctionKey(self.function_table.len() as u32);
        *self.functions.entry(function.id()).or_insert_with(|| {
            self.function_table
                .push((function.clone(), Estimate::default()));
            next
        })
    }

    fn cancel(&mut self, id: TaskId) {
        let Some(record) = self.tasks.get_mut(&id) else {
            return;
        };
        let state = record.state;
        record.finish(Err(TaskError::cancelled()));
        if state == TaskState::Queued {
            // Its queue entry is skipped when reached.
            self.tasks.remove(&id);
            debug!(task = %id, "cancelled while queued");
            return;
        }
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|slot| slot.in_flight.contains(id))
        else {
            self.tasks.remove(&id);
            return;
        };
        if slot.running.is_some_and(|running| running.task == id) {
            debug!(task = %id, worker = %slot.id, "cancelled while running; killing its worker");
            slot.kill(KillReason::Cancel(id));
        } else if let Some(worker) = slot.worker.as_mut() {
            // Not started: the worker skips it. If it starts first, its Started event
            // finds it cancelled and the worker is killed then.
            worker.send(ToWorker::Cancel(vec![id]));
            debug!(task = %id, worker = %slot.id, "cancelled before it started");
        }
    }

    fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            workers: self.slots.iter().map(Slot::size).sum(),
            ready_workers: self
                .slots
                .iter()
                .filter(|s| s.phase == Phase::Ready)
                .map(Slot::size)
                .sum(),
            queued: self
                .tasks
                .values()
                .filter(|t| t.state == TaskState::Queued)
                .count(),
            in_flight: self.slots.iter().map(|s| s.in_flight.len()).sum(),
            managers: self.slots.iter().filter(|s| s.pool.is_some()).count(),
            workers_started: self.workers_started,
        }
    }
}

/// Refuses a task that uses a format outside `allowed`: an argument in another data format,
/// or a pickled function when pickles are not allowed. Source-text functions are always
/// allowed: compiling them runs only the function's own code, which the endpoint's function
/// allow-list is for. Nothing here unpickles anything, so a refused pickle never runs.
fn check_formats(
    allowed: &[crate::Format],
    function: &Function,
    args: &Args,
) -> Result<(), TaskError> {
    let names = || {
        allowed
            .iter()
            .map(|format| format.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if matches!(function.body(), crate::FunctionBody::Pickled(_))
        && !allowed.contains(&crate::Format::Pickle)
    {
        return Err(TaskError::format_refused(format!(
            "function '{}' is pickled; this endpoint allows only source-text functions and the data formats [{}]",
            function.name(),
            names()
        )));
    }
    let positional = args
        .positional()
        .iter()
        .enumerate()
        .map(|(index, payload)| (format!("argument {index}"), payload));
    let keyword = args
        .keyword()
        .iter()
        .map(|(name, payload)| (format!("keyword argument '{name}'"), payload));
    for (what, payload) in positional.chain(keyword) {
        if !allowed.contains(&payload.format()) {
            return Err(TaskError::format_refused(format!(
                "{what} is {}; this endpoint allows only [{}]",
                payload.format(),
                names()
            )));
        }
    }
    Ok(())
}
