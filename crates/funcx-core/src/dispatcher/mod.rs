//! The dispatcher: one task that owns the queue, the workers and every task in flight.
//!
//! It receives [`Command`]s from executors and [`WorkerEvent`]s from workers, and after each
//! burst of messages it hands queued tasks to workers with spare capacity, one batch per
//! worker. Owning all state in one task keeps the hot path free of locks: a submission is a
//! channel send, a result a channel send back.
//!
//! Failure handling lives here too:
//! - a worker that dies is replaced, and the task it was running fails with the exit status
//!   (or is retried, per [`DispatcherConfig::retries_on_worker_death`]); the tasks queued
//!   behind it on that worker never started, so they go back to the front of the queue;
//! - a task that passes its timeout, or is cancelled while running, gets its worker killed;
//! - workers that cannot start are retried with back-off, and while no worker can start,
//!   queued tasks fail with a [`TaskError::is_no_workers`] error instead of waiting forever.

mod command;
mod estimate;
mod node;
mod placement;
mod slot;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::ids::IdMap;
pub(crate) use command::{Command, Outcome, Reply, Submission};
use estimate::Estimate;
use node::Node;
use slot::{KillReason, Phase, Running, Slot};

use crate::worker::{
    FunctionKey, SpawnError, ToWorker, WorkResult, Worker, WorkerEvent, WorkerEvents, WorkerId,
    WorkerRuntime,
};
use crate::{
    Args, BlockId, EndpointStats, Function, FunctionId, PoolStatus, TaskError, TaskId, TaskState,
    TaskStatus, Timeline, WorkerExit,
};

/// A task caught in the deaths of this many workers without being the one that was running
/// fails, so a worker that dies for outside reasons cannot bounce a task forever.
const MAX_DISRUPTIONS: u32 = 3;
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

enum Stop {
    Drain,
    Now,
}

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

    /// Boxed: a record is a few hundred bytes, and a million in flight would make every
    /// insert, removal and rehash move them.
    tasks: IdMap<TaskId, Box<TaskRecord>>,
    queue: VecDeque<TaskId>,

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
            tasks: IdMap::default(),
            queue: VecDeque::new(),
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
                () = sleep_until(deadline), if deadline.is_some() => self.on_deadlines(),
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

    fn new_worker_id(&mut self) -> WorkerId {
        self.next_worker += 1;
        WorkerId(self.next_worker)
    }

    fn spawn(&mut self, index: usize, delay: Duration) {
        let slot = &mut self.slots[index];
        slot.phase = Phase::Spawning;
        let id = slot.id;
        let events = WorkerEvents::new(id, self.events_tx.clone());
        let runtime = Arc::clone(&self.runtime);
        let done = self.spawned_tx.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = runtime.spawn(index, events).await;
            // If the dispatcher is gone the worker is dropped here, which stops it.
            let _ = done.send((index, id, result));
        });
    }

    fn respawn(&mut self, index: usize) {
        let old = self.slots[index].id;
        self.slot_of.remove(&old);
        let id = self.new_worker_id();
        self.slots[index].renew(id);
        self.slot_of.insert(id, index);
        let failures = self.slots[index].startup_failures;
        let delay = if failures == 0 {
            Duration::ZERO
        } else {
            // 100 ms, 200 ms, ... up to 5 s: quick to recover, slow to hammer a broken setup.
            Duration::from_millis(100u64 << (failures - 1).min(6)).min(Duration::from_secs(5))
        };
        self.spawn(index, delay);
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
                gpus,
                reply,
            } => self.attach(worker, size, block, gpus, reply),
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
        record.key = self.key_of(&function);
        self.tasks.insert(id, Box::new(record));
        self.queue.push_back(id);
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

    fn attach(
        &mut self,
        worker: Box<dyn Worker>,
        size: usize,
        block: Option<BlockId>,
        gpus: Option<Vec<String>>,
        reply: oneshot::Sender<Result<WorkerEvents, TaskError>>,
    ) {
        if matches!(self.stop, Some(Stop::Now)) || (self.stop.is_some() && self.tasks.is_empty()) {
            // Dropping the worker tells it there is nothing to do here.
            let _ = reply.send(Err(TaskError::shutdown()));
            return;
        }
        let id = self.new_worker_id();
        let index = self.slots.len();
        let node = gpus.map(|gpus| {
            let capacity = crate::Capacity {
                cores: Some(u32::try_from(size).unwrap_or(u32::MAX)),
                memory: None,
                gpus: Some(gpus),
            };
            Node::new(&capacity, size, Vec::new())
        });
        self.slots
            .push(Slot::pool(index, id, worker, size, block, node));
        self.slot_of.insert(id, index);
        self.broken = None;
        info!(worker = %id, size, "pool of workers attached");
        let _ = reply.send(Ok(WorkerEvents::new(id, self.events_tx.clone())));
        self.fail_unplaceable();
    }

    /// Why a task asking for `wanted` can run nowhere: not on the endpoint's own workers,
    /// nor on any pool attached now. `None` while it can run somewhere, or may once a pool
    /// attaches (an endpoint of pools alone, none attached yet).
    fn unplaceable(&self, wanted: &crate::Resources) -> Option<String> {
        let mut reasons = Vec::new();
        if self.config.workers > 0 {
            match self.node.never_fits(wanted) {
                None => return None,
                Some(reason) => reasons.push(reason),
            }
        }
        let mut pools = 0;
        for pool in self.slots.iter().filter_map(|slot| slot.pool.as_ref()) {
            pools += 1;
            match &pool.node {
                Some(node) => match node.never_fits(wanted) {
                    None => return None,
                    Some(reason) => reasons.push(format!("on a pool: {reason}")),
                },
                None => reasons.push(
                    "a pool that does not say what its machine has takes no task that asks \
                     for resources"
                        .to_owned(),
                ),
            }
        }
        if self.config.workers == 0 && pools == 0 {
            return None; // Its pools have yet to attach.
        }
        reasons.dedup();
        Some(format!("it asks for {wanted}; {}", reasons.join("; ")))
    }

    /// Fails the queued tasks that ask for resources no worker or pool has, now that a pool
    /// attached: on an endpoint of pools alone they waited for one.
    fn fail_unplaceable(&mut self) {
        if self.config.workers > 0 || !self.saw_resources {
            return; // Checked when they were submitted, or there are none.
        }
        let doomed: Vec<(TaskId, String)> = self
            .queue
            .iter()
            .filter_map(|id| {
                let wanted = self.tasks.get(id)?.resources?;
                Some((*id, self.unplaceable(&wanted)?))
            })
            .collect();
        for (id, reason) in doomed {
            if let Some(mut record) = self.tasks.remove(&id) {
                record.finish(Err(TaskError::unsatisfiable(reason)));
            }
        }
    }

    /// A pool (a remote manager) is gone: the tasks it held go back to the queue, or fail
    /// once they have been lost with a pool as often as the retry budget allows. A pool is
    /// not replaced: its provider starts another, which attaches itself.
    fn on_pool_gone(&mut self, index: usize, reason: String) {
        let mut slot = self.slots.swap_remove(index);
        self.slot_of.remove(&slot.id);
        if let Some(moved) = self.slots.get_mut(index) {
            moved.index = index;
            self.slot_of.insert(moved.id, index);
        }
        let stopping =
            matches!(slot.kill, Some(KillReason::Shutdown)) || slot.phase == Phase::Stopping;
        let held = slot.in_flight.take();
        let expiring = slot.pool.as_ref().is_some_and(|pool| pool.expiring);
        if stopping && held.is_empty() {
            debug!(worker = %slot.id, %reason, "pool of workers left");
        } else {
            warn!(worker = %slot.id, %reason, tasks = held.len(), "pool of workers lost");
        }
        for id in held {
            let Some(record) = self.tasks.get_mut(&id) else {
                continue;
            };
            if !expiring {
                record.deaths += 1;
            }
            let outcome = if record.reply.is_none() {
                Some(TaskError::cancelled())
            } else if matches!(self.stop, Some(Stop::Now)) {
                Some(TaskError::shutdown())
            } else if record.deaths > self.config.retries_on_worker_death {
                Some(TaskError::manager_lost(&reason))
            } else {
                None
            };
            match outcome {
                Some(error) => {
                    record.finish(Err(error));
                    self.tasks.remove(&id);
                }
                None => {
                    record.state = TaskState::Queued;
                    record.charged_ns = 0;
                    record.stolen = false;
                    self.queue.push_front(id);
                }
            }
        }
    }

    fn pools(&self) -> Vec<PoolStatus> {
        self.slots
            .iter()
            .filter_map(|slot| {
                let pool = slot.pool.as_ref()?;
                Some(PoolStatus {
                    worker: slot.id,
                    block: pool.block.clone(),
                    size: pool.size,
                    in_flight: slot.in_flight.len(),
                    idle_since: pool.idle_since,
                    draining: slot.phase == Phase::Stopping,
                })
            })
            .collect()
    }

    /// Stops feeding the pools of `block` and asks them to finish and exit, because the
    /// block is about to end (its walltime) or is no longer needed. Their loss from now on is
    /// not charged to their tasks' retries.
    fn drain_block(&mut self, block: &BlockId) {
        self.drain_pools(|_, pool_block| pool_block == Some(block));
    }

    /// Drains the one pool `worker` (a manager that asked to leave, or an endpoint a
    /// gateway stops), as [`Dispatcher::drain_block`] drains a block's.
    fn drain_pool(&mut self, worker: WorkerId) {
        self.drain_pools(|id, _| id == worker);
    }

    fn drain_pools(&mut self, mut which: impl FnMut(WorkerId, Option<&BlockId>) -> bool) {
        for slot in &mut self.slots {
            let Some(pool) = slot.pool.as_mut() else {
                continue;
            };
            if !which(slot.id, pool.block.as_ref()) || slot.phase != Phase::Ready {
                continue;
            }
            pool.expiring = true;
            slot.phase = Phase::Stopping;
            if let Some(worker) = slot.worker.as_mut() {
                worker.send(ToWorker::Shutdown);
            }
            info!(worker = %slot.id, block = ?pool.block, "draining pool");
        }
    }

    fn stats(&self) -> EndpointStats {
        EndpointStats {
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

    /// Why no task can run now: no worker is ready and every slot has failed to start.
    fn unavailable(&self) -> Option<&str> {
        let none_ready = self.slots.iter().all(|s| s.phase != Phase::Ready);
        // Twice, so that one passing hiccup (a slow file system, a killed first attempt)
        // does not fail everything that waits; a broken setup fails twice in ~100 ms.
        let all_failed = self.slots.iter().all(|s| s.startup_failures >= 2);
        if none_ready && all_failed {
            self.broken.as_deref()
        } else {
            None
        }
    }

    fn answer_ready_waiters(&mut self) {
        // Ready when every slot is, or when some are and the others keep failing to start:
        // waiting longer would not change the answer, and the failures are in the log.
        let some_ready = self.slots.iter().any(|s| s.phase == Phase::Ready);
        let ready = self
            .slots
            .iter()
            .all(|s| s.phase == Phase::Ready || (some_ready && s.startup_failures >= 2));
        let answer = if ready {
            Ok(())
        } else if let Some(reason) = self.unavailable() {
            Err(TaskError::no_workers(reason))
        } else if self.stop.is_some() {
            Err(TaskError::shutdown())
        } else {
            return;
        };
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }

    // ---- workers -----------------------------------------------------------------------

    fn on_spawned(
        &mut self,
        index: usize,
        id: WorkerId,
        result: Result<Box<dyn Worker>, SpawnError>,
    ) {
        let Some(slot) = self.slots.get_mut(index).filter(|slot| slot.id == id) else {
            return;
        };
        match result {
            Ok(worker) => {
                if slot.count_started() {
                    self.workers_started += 1;
                }
                slot.worker = Some(worker);
                // The worker may have reported Ready already: its events channel is not
                // ordered with the spawn's completion.
                if slot.phase == Phase::Spawning {
                    slot.phase = Phase::Starting;
                }
                if !self.keeps_worker(index) {
                    let slot = &mut self.slots[index];
                    slot.phase = Phase::Stopping;
                    slot.kill(KillReason::Shutdown);
                }
            }
            Err(error) => {
                warn!(worker = %id, %error, "worker failed to start");
                self.startup_failed(index, error.to_string());
            }
        }
    }

    fn startup_failed(&mut self, index: usize, reason: String) {
        self.slots[index].startup_failures += 1;
        self.broken = Some(reason);
        if let Some(reason) = self.unavailable().map(str::to_owned) {
            // No worker can run anything: fail what waits rather than hang.
            for id in std::mem::take(&mut self.queue) {
                if let Some(mut record) = self.tasks.remove(&id) {
                    record.finish(Err(TaskError::no_workers(&reason)));
                }
            }
            self.answer_ready_waiters();
        }
        if self.keeps_worker(index) {
            self.respawn(index);
        } else {
            self.slots[index].phase = Phase::Dead;
        }
    }

    fn on_event(&mut self, worker: WorkerId, event: WorkerEvent) {
        let Some(&index) = self.slot_of.get(&worker) else {
            return; // A replaced worker's last words.
        };
        match event {
            WorkerEvent::Ready => {
                let slot = &mut self.slots[index];
                // Spawning: Ready overtook the spawn's completion (see `on_spawned`).
                if matches!(slot.phase, Phase::Starting | Phase::Spawning) {
                    // Counted before the ready waiters hear of it: whoever `ready()` let go
                    // sees this worker in the stats, even while its spawn is still resolving.
                    if slot.count_started() {
                        self.workers_started += 1;
                    }
                    slot.phase = Phase::Ready;
                    slot.startup_failures = 0;
                    self.broken = None;
                    info!(worker = %worker, slot = index, "worker ready");
                    self.answer_ready_waiters();
                }
            }
            WorkerEvent::Started(id) => self.on_started(index, id),
            WorkerEvent::Results(results) => self.on_results(index, results),
            WorkerEvent::Exited(exit) => self.on_exited(index, exit),
            WorkerEvent::Lost(reason) => self.on_pool_gone(index, reason),
        }
    }

    fn on_started(&mut self, index: usize, id: TaskId) {
        let slot = &mut self.slots[index];
        let Some(record) = self.tasks.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        record.state = TaskState::Running;
        record.timeline.running = Some(SystemTime::now());
        tracing::trace!(parent: &record.span, "running");
        let deadline = record.timeout.map(|timeout| (now + timeout, timeout));
        slot.running = Some(Running { task: id, deadline });
        if record.reply.is_none() {
            // Cancelled after it was sent and before the worker saw the cancel.
            slot.kill(KillReason::Cancel(id));
        }
    }

    fn on_results(&mut self, index: usize, results: Vec<WorkResult>) {
        let now = SystemTime::now();
        let slot = &mut self.slots[index];
        // The worker moved on: what it holds next starts about now.
        slot.head_since = Instant::now();
        for result in results {
            if !slot.in_flight.remove(result.id) {
                // A duplicate (a manager re-sending after a reconnect) or a stray.
                debug!(worker = %slot.id, task = %result.id, "result for a task this worker does not hold; ignored");
                continue;
            }
            if slot
                .running
                .is_some_and(|running| running.task == result.id)
            {
                slot.running = None;
            }
            let Some(mut record) = self.tasks.remove(&result.id) else {
                continue;
            };
            slot.in_flight_ns = slot.in_flight_ns.saturating_sub(record.charged_ns);
            slot.in_flight_bytes = slot.in_flight_bytes.saturating_sub(record.bytes);
            if record.stolen
                && record.reply.is_some()
                && result.outcome.as_ref().is_err_and(TaskError::is_cancelled)
            {
                // Given back unstarted: it runs on the worker that wanted work. Not an
                // attempt, and not charged anything.
                debug!(parent: &record.span, worker = %slot.id, "given back; queued again");
                record.stolen = false;
                record.state = TaskState::Queued;
                record.charged_ns = 0;
                record.attempts = record.attempts.saturating_sub(1);
                self.tasks.insert(result.id, record);
                self.queue.push_front(result.id);
                continue;
            }
            let measured = match &result.outcome {
                Ok(_) => true,
                Err(error) => error.is_python(),
            };
            if measured {
                self.function_table[record.key.0 as usize]
                    .1
                    .record(result.duration);
            }
            if record.timeline.running.is_none() {
                record.timeline.running = now.checked_sub(result.duration);
            }
            record.timeline.finished = Some(now);
            record.finish(result.outcome);
        }
        if slot.in_flight.is_empty() {
            if let Some(pool) = slot.pool.as_mut() {
                pool.idle_since.get_or_insert(now);
            }
        }
    }

    fn on_exited(&mut self, index: usize, exit: WorkerExit) {
        if self.slots[index].pool.is_some() {
            return self.on_pool_gone(index, format!("it exited with {exit}"));
        }
        let slot = &mut self.slots[index];
        let worker = slot.id;
        let was_ready = slot.phase == Phase::Ready;
        let kill = slot.kill.take();
        let running = slot.running.take().map(|running| running.task);
        let in_flight = slot.in_flight.take();
        slot.worker = None;
        slot.in_flight_ns = 0;
        slot.in_flight_bytes = 0;
        let stopping = self.stop.is_some();

        match kill {
            Some(KillReason::Shutdown) => {}
            Some(reason) => debug!(worker = %worker, ?reason, "killed worker exited"),
            None if stopping && slot.phase == Phase::Stopping => {}
            None => warn!(worker = %worker, %exit, in_flight = in_flight.len(), "worker died"),
        }

        // Which task was running when the worker went: the one it said it started, or the
        // only one it held. With several tasks and no start report, any of them may have
        // been running (results are reported in batches), so none is blamed and all are
        // re-run isolated, which pins the blame next time.
        let head = in_flight.first().copied();
        let culprit = match kill {
            Some(KillReason::Timeout(id, _)) | Some(KillReason::Cancel(id)) => Some(id),
            Some(KillReason::Shutdown) => None,
            None if running.is_some() && running == head => running,
            None if in_flight.len() == 1 => head,
            None => None,
        };
        let ambiguous = kill.is_none() && culprit.is_none() && !in_flight.is_empty();

        for id in in_flight.iter().rev() {
            let Some(record) = self.tasks.get_mut(id) else {
                continue;
            };
            let outcome = if Some(*id) == culprit {
                record.deaths += 1;
                match kill {
                    Some(KillReason::Timeout(_, after)) => Some(TaskError::timeout(after)),
                    Some(KillReason::Cancel(_)) => Some(TaskError::cancelled()),
                    _ if record.deaths > self.config.retries_on_worker_death => {
                        Some(TaskError::worker_died(exit))
                    }
                    _ => None,
                }
            } else if record.reply.is_none() {
                // Cancelled while waiting on this worker: nothing left to do for it.
                Some(TaskError::cancelled())
            } else if matches!(kill, Some(KillReason::Shutdown)) {
                Some(TaskError::shutdown())
            } else if ambiguous {
                record.disruptions += 1;
                record.isolate = true;
                (record.disruptions > MAX_DISRUPTIONS).then(|| TaskError::worker_died(exit))
            } else {
                None
            };
            match outcome {
                Some(error) => {
                    debug!(task = %id, worker = %worker, %error, "task failed with its worker");
                    record.finish(Err(error));
                    self.tasks.remove(id);
                }
                None => {
                    record.state = TaskState::Queued;
                    record.charged_ns = 0;
                    record.stolen = false;
                    self.queue.push_front(*id);
                }
            }
        }

        if !self.keeps_worker(index) {
            self.slots[index].phase = Phase::Dead;
        } else if was_ready {
            self.respawn(index);
        } else {
            let reason = format!(
                "worker exited with {exit} before it was ready (its output is in the `funcx::worker` log)"
            );
            warn!(worker = %worker, "{reason}");
            self.startup_failed(index, reason);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|slot| slot.running.and_then(|running| running.deadline))
            .map(|(at, _)| at)
            .chain(self.stop_deadline)
            .chain(self.balance_at)
            .min()
    }

    fn on_deadlines(&mut self) {
        let now = Instant::now();
        if self.balance_at.is_some_and(|at| at <= now) {
            self.balance_at = None;
            if self.queue.is_empty() {
                self.balance(now);
            }
        }
        for slot in &mut self.slots {
            let Some(running) = slot.running else {
                continue;
            };
            if let Some((at, after)) = running.deadline {
                if at <= now {
                    debug!(task = %running.task, worker = %slot.id, "timed out; killing its worker");
                    slot.kill(KillReason::Timeout(running.task, after));
                }
            }
        }
        if self.stop_deadline.is_some_and(|at| at <= now) {
            self.stop_deadline = None;
            for slot in &mut self.slots {
                if slot.phase == Phase::Stopping {
                    warn!(worker = %slot.id, "worker did not exit in time; killing it");
                    slot.kill(KillReason::Shutdown);
                }
            }
        }
    }

    // ---- shutdown ----------------------------------------------------------------------

    fn begin_stop(&mut self, how: Stop) {
        if matches!(how, Stop::Now) {
            for id in std::mem::take(&mut self.queue) {
                if let Some(mut record) = self.tasks.remove(&id) {
                    record.finish(Err(TaskError::cancelled()));
                }
            }
            for record in self.tasks.values_mut() {
                record.finish(Err(TaskError::cancelled()));
            }
            for slot in &mut self.slots {
                if slot.phase != Phase::Dead {
                    slot.kill(KillReason::Shutdown);
                }
            }
        }
        if self.stop.is_none() || matches!(how, Stop::Now) {
            self.stop = Some(how);
        }
        self.answer_ready_waiters();
    }

    /// Whether slot `index` should have a worker: always, except during a shutdown, where only
    /// a graceful one that still has accepted tasks to finish keeps (or replaces) workers, and
    /// only in slots not already told to stop.
    fn keeps_worker(&self, index: usize) -> bool {
        match self.stop {
            None => true,
            Some(Stop::Now) => false,
            Some(Stop::Drain) => {
                !self.tasks.is_empty() && self.slots[index].phase != Phase::Stopping
            }
        }
    }

    /// Moves a shutdown along; true once everything is gone.
    fn progress_stop(&mut self) -> bool {
        if self.stop.is_none() {
            return false;
        }
        let draining = matches!(self.stop, Some(Stop::Drain));
        if !self.tasks.is_empty()
            && self.slots.iter().any(|s| match s.phase {
                Phase::Ready => true,
                // A worker on its way can still run what is left.
                Phase::Spawning | Phase::Starting => draining,
                Phase::Stopping | Phase::Dead => false,
            })
        {
            return false; // Still draining.
        }
        // Nothing left to run, or nothing left to run it on.
        for id in std::mem::take(&mut self.queue) {
            if let Some(mut record) = self.tasks.remove(&id) {
                record.finish(Err(TaskError::shutdown()));
            }
        }
        let mut alive = false;
        for slot in &mut self.slots {
            match slot.phase {
                Phase::Ready | Phase::Starting => {
                    slot.phase = Phase::Stopping;
                    if let Some(worker) = slot.worker.as_mut() {
                        worker.send(ToWorker::Shutdown);
                    }
                    alive = true;
                }
                Phase::Stopping | Phase::Spawning => alive = true,
                Phase::Dead => {}
            }
        }
        if alive && self.stop_deadline.is_none() {
            self.stop_deadline = Some(Instant::now() + self.config.shutdown_grace);
        }
        !alive
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
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
