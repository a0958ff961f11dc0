//! A simulated worker runtime for testing the dispatcher without Python.
//!
//! Each worker is a tokio task that follows the worker contract of `funcx_core::worker`: it
//! runs tasks one at a time in the order received, reports results in order (batching the
//! results of consecutive non-isolated tasks), reports `Started` for isolated tasks after
//! flushing earlier results, honours `Cancel` for tasks it has not started, finishes its work
//! on `Shutdown` and exits with code 0, and dies at once with signal 9 on `kill()`.
//!
//! What a task does is chosen by its function's *name* (the body is ignored):
//!
//! | name         | behaviour                                                            |
//! |--------------|----------------------------------------------------------------------|
//! | `echo(x)`    | returns the first positional argument's payload unchanged            |
//! | `sleep(ms)`  | sleeps `ms` milliseconds, returns `ms`                               |
//! | `exit(code)` | the worker dies with `Exited(Code(code))`, no result                 |
//! | `raise()`    | fails with a Python `ValueError`                                     |
//! | `pid()`      | returns the worker's id number (unique per worker, replacements too) |
//! | `flaky(t)`   | dies with `Code(1)` the first time token `t` runs, then returns `t`   |
//! | `poison(x)`  | `x >= 0`: returns `x`; `x < 0`: the worker dies with `Code(-x)`      |
//! | `image()`    | returns the image the worker was started in (`""` for a default one)  |
//!
//! Every execution is counted (by task id, by function name, by `flaky` token) so tests can
//! assert that something ran exactly once, or never.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use funcx_core::worker::{
    FunctionKey, ToWorker, WorkItem, WorkResult, Worker, WorkerEvent, WorkerEvents,
};
use funcx_core::{
    Function, Payload, PythonException, SpawnError, TaskError, TaskId, WorkerExit, WorkerRuntime,
};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// A function the simulated workers understand (its body is irrelevant).
pub fn func(name: &str) -> Function {
    Function::from_source(format!("# simulated\ndef {name}(*args): ...\n"), name)
}

/// Configuration of a [`SimRuntime`].
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// Every spawn fails with this reason.
    pub fail_always: Option<String>,
    /// The first `n` spawns (counted across all slots) fail.
    pub fail_first: usize,
    /// Workers exit with this code before they report `Ready`.
    pub exit_before_ready: Option<i32>,
    /// Workers wait this long before reporting `Ready`.
    pub ready_delay: Duration,
    /// Workers report `Ready` from inside `spawn`, before the spawn future resolves (a
    /// runtime whose spawn waits for a handshake does this).
    pub ready_in_spawn: bool,
    /// Each successful spawn takes a permit from this semaphore before it resolves (after
    /// its `Ready`, with `ready_in_spawn`), so a test decides when the dispatcher learns
    /// that a spawn completed.
    pub spawn_release: Option<Arc<Semaphore>>,
    /// Workers ignore `ToWorker::Shutdown` (a worker stuck in user code), so only the
    /// shutdown grace period's kill ends them.
    pub ignore_shutdown: bool,
    /// The container images workers can be started in (`WorkerRuntime::spawn_in_image`);
    /// a spawn in any other fails as a missing image would.
    pub images: Vec<String>,
}

#[derive(Default)]
struct Counters {
    by_task: HashMap<TaskId, u32>,
    by_name: HashMap<String, u32>,
    flaky: HashMap<i64, u32>,
}

struct Shared {
    config: SimConfig,
    spawn_attempts: AtomicUsize,
    spawned: AtomicUsize,
    counters: Mutex<Counters>,
    /// Tasks received by live workers and not yet reported.
    held: AtomicUsize,
    max_held: AtomicUsize,
    /// Spawns attempted per image (`""`: default workers).
    attempts_in: Mutex<HashMap<String, usize>>,
}

/// A [`WorkerRuntime`] whose workers are tokio tasks. Clone it to keep a handle for
/// assertions after giving it to an executor.
#[derive(Clone)]
pub struct SimRuntime {
    shared: Arc<Shared>,
}

impl Default for SimRuntime {
    fn default() -> Self {
        SimRuntime::new()
    }
}

impl SimRuntime {
    /// Workers that start and work.
    pub fn new() -> SimRuntime {
        SimRuntime::with_config(SimConfig::default())
    }

    /// Workers configured by `config`.
    pub fn with_config(config: SimConfig) -> SimRuntime {
        SimRuntime {
            shared: Arc::new(Shared {
                config,
                spawn_attempts: AtomicUsize::new(0),
                spawned: AtomicUsize::new(0),
                counters: Mutex::new(Counters::default()),
                held: AtomicUsize::new(0),
                max_held: AtomicUsize::new(0),
                attempts_in: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// How many times task `id` started executing (on any worker).
    pub fn executions(&self, id: TaskId) -> u32 {
        let counters = self.shared.counters.lock().unwrap();
        counters.by_task.get(&id).copied().unwrap_or(0)
    }

    /// How many times a function named `name` started executing.
    pub fn calls(&self, name: &str) -> u32 {
        let counters = self.shared.counters.lock().unwrap();
        counters.by_name.get(name).copied().unwrap_or(0)
    }

    /// How many times `flaky(token)` started executing.
    pub fn flaky_runs(&self, token: i64) -> u32 {
        let counters = self.shared.counters.lock().unwrap();
        counters.flaky.get(&token).copied().unwrap_or(0)
    }

    /// Spawns attempted, failed ones included.
    pub fn spawn_attempts(&self) -> usize {
        self.shared.spawn_attempts.load(Ordering::SeqCst)
    }

    /// Spawns attempted in `image` (`""`: default workers), failed ones included.
    pub fn attempts_in(&self, image: &str) -> usize {
        let attempts = self.shared.attempts_in.lock().unwrap();
        attempts.get(image).copied().unwrap_or(0)
    }

    /// Workers successfully spawned.
    pub fn spawned(&self) -> usize {
        self.shared.spawned.load(Ordering::SeqCst)
    }

    /// The most tasks that live workers held (received, unreported) at any one time.
    pub fn max_held(&self) -> usize {
        self.shared.max_held.load(Ordering::SeqCst)
    }

    /// Tasks live workers hold right now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }
}

impl WorkerRuntime for SimRuntime {
    fn spawn(
        &self,
        _index: usize,
        events: WorkerEvents,
    ) -> BoxFuture<'static, Result<Box<dyn Worker>, SpawnError>> {
        self.start(None, events)
    }

    fn spawn_in_image(
        &self,
        _index: usize,
        image: &str,
        events: WorkerEvents,
    ) -> BoxFuture<'static, Result<Box<dyn Worker>, SpawnError>> {
        self.start(Some(image.to_owned()), events)
    }
}

impl SimRuntime {
    fn start(
        &self,
        image: Option<String>,
        events: WorkerEvents,
    ) -> BoxFuture<'static, Result<Box<dyn Worker>, SpawnError>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            *shared
                .attempts_in
                .lock()
                .unwrap()
                .entry(image.clone().unwrap_or_default())
                .or_default() += 1;
            if let Some(image) = image.as_ref().filter(|i| !shared.config.images.contains(i)) {
                return Err(SpawnError::new(format!(
                    "image {image:?} is not on this machine"
                )));
            }
            let attempt = shared.spawn_attempts.fetch_add(1, Ordering::SeqCst);
            if let Some(reason) = &shared.config.fail_always {
                return Err(SpawnError::new(reason));
            }
            if attempt < shared.config.fail_first {
                return Err(SpawnError::new(format!(
                    "simulated spawn failure #{attempt}"
                )));
            }
            shared.spawned.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = mpsc::unbounded_channel();
            let gate = Arc::new(Gate {
                events,
                image: image.unwrap_or_default(),
                shared: Arc::clone(&shared),
                state: Mutex::new(GateState::default()),
            });
            let announced = shared.config.ready_in_spawn && gate.send(WorkerEvent::Ready);
            let task = tokio::spawn(run_worker(Arc::clone(&gate), rx, announced));
            if let Some(release) = &shared.config.spawn_release {
                // A closed semaphore releases every spawn: nothing is held back any more.
                if let Ok(permit) = release.acquire().await {
                    permit.forget();
                }
            }
            Ok(Box::new(SimWorker { tx, gate, task }) as Box<dyn Worker>)
        })
    }
}

#[derive(Default)]
struct GateState {
    dead: bool,
    /// Tasks this worker holds (received, not reported).
    held: usize,
}

/// Every event passes through here, so that nothing follows `Exited` and the count of held
/// tasks stays exact.
struct Gate {
    events: WorkerEvents,
    /// The image it was started in; empty for a default worker.
    image: String,
    shared: Arc<Shared>,
    state: Mutex<GateState>,
}

impl Gate {
    fn received(&self, count: usize) {
        let mut state = self.state.lock().unwrap();
        if state.dead {
            return;
        }
        state.held += count;
        let now = self.shared.held.fetch_add(count, Ordering::SeqCst) + count;
        self.shared.max_held.fetch_max(now, Ordering::SeqCst);
    }

    fn send(&self, event: WorkerEvent) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.dead {
            return false;
        }
        if let WorkerEvent::Results(results) = &event {
            state.held -= results.len();
            self.shared.held.fetch_sub(results.len(), Ordering::SeqCst);
        }
        self.events.send(event)
    }

    /// Ends the worker; `Some(exit)` reports it.
    fn die(&self, exit: Option<WorkerExit>) {
        let mut state = self.state.lock().unwrap();
        if state.dead {
            return;
        }
        state.dead = true;
        self.shared.held.fetch_sub(state.held, Ordering::SeqCst);
        state.held = 0;
        if let Some(exit) = exit {
            self.events.send(WorkerEvent::Exited(exit));
        }
    }
}

struct SimWorker {
    tx: mpsc::UnboundedSender<ToWorker>,
    gate: Arc<Gate>,
    task: JoinHandle<()>,
}

impl Worker for SimWorker {
    fn send(&mut self, message: ToWorker) {
        if let ToWorker::Tasks(items) = &message {
            self.gate.received(items.len());
        }
        let _ = self.tx.send(message);
    }

    fn kill(&mut self) {
        self.gate.die(Some(WorkerExit::Signal(9)));
        self.task.abort();
    }
}

impl Drop for SimWorker {
    fn drop(&mut self) {
        self.gate.die(None);
        self.task.abort();
    }
}

enum Ran {
    Done(Result<Payload, TaskError>),
    Die(i32),
}

fn python_error(type_name: &str, message: &str) -> TaskError {
    TaskError::python(PythonException {
        type_name: type_name.into(),
        message: message.into(),
        traceback: format!("Traceback (most recent call last):\n{type_name}: {message}\n"),
        line: None,
    })
}

fn int_arg(item: &WorkItem) -> Result<i64, TaskError> {
    item.args
        .positional()
        .first()
        .ok_or_else(|| python_error("TypeError", "missing argument"))?
        .decode::<i64>()
}

async fn execute(gate: &Gate, name: &str, item: &WorkItem) -> Ran {
    {
        let mut counters = gate.shared.counters.lock().unwrap();
        *counters.by_task.entry(item.id).or_default() += 1;
        *counters.by_name.entry(name.to_owned()).or_default() += 1;
    }
    let done = Ran::Done;
    match name {
        "echo" => done(
            item.args
                .positional()
                .first()
                .cloned()
                .ok_or_else(|| python_error("TypeError", "echo() takes one argument")),
        ),
        "sleep" => match int_arg(item) {
            Ok(ms) => {
                // `sleep(0)` returns at once (a zero tokio sleep waits for a timer tick).
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms as u64)).await;
                }
                done(Payload::pickle(&ms))
            }
            Err(e) => done(Err(e)),
        },
        "exit" => match int_arg(item) {
            Ok(code) => Ran::Die(code as i32),
            Err(e) => done(Err(e)),
        },
        "raise" => done(Err(python_error("ValueError", "raised on purpose"))),
        "pid" => done(Payload::pickle(&gate.events.worker().0)),
        "image" => done(Payload::pickle(&gate.image)),
        "flaky" => match int_arg(item) {
            Ok(token) => {
                let runs = {
                    let mut counters = gate.shared.counters.lock().unwrap();
                    let runs = counters.flaky.entry(token).or_default();
                    *runs += 1;
                    *runs
                };
                if runs == 1 {
                    Ran::Die(1)
                } else {
                    done(Payload::pickle(&token))
                }
            }
            Err(e) => done(Err(e)),
        },
        "poison" => match int_arg(item) {
            Ok(x) if x < 0 => Ran::Die((-x) as i32),
            Ok(x) => done(Payload::pickle(&x)),
            Err(e) => done(Err(e)),
        },
        other => done(Err(python_error(
            "NameError",
            &format!("name '{other}' is not defined"),
        ))),
    }
}

/// Most results a worker batches before it reports them anyway.
const RESULT_BATCH: usize = 256;

async fn run_worker(gate: Arc<Gate>, mut rx: mpsc::UnboundedReceiver<ToWorker>, announced: bool) {
    let config = gate.shared.config.clone();
    if !announced {
        if !config.ready_delay.is_zero() {
            tokio::time::sleep(config.ready_delay).await;
        }
        if let Some(code) = config.exit_before_ready {
            gate.die(Some(WorkerExit::Code(code)));
            return;
        }
        if !gate.send(WorkerEvent::Ready) {
            return;
        }
    }

    let mut inbox = Inbox::default();
    let mut results: Vec<WorkResult> = Vec::new();

    loop {
        while let Ok(message) = rx.try_recv() {
            inbox.absorb(message);
        }
        let Some(item) = inbox.pending.pop_front() else {
            if !results.is_empty() && !gate.send(WorkerEvent::Results(std::mem::take(&mut results)))
            {
                return;
            }
            if inbox.shutdown && !config.ignore_shutdown {
                gate.die(Some(WorkerExit::Code(0)));
                return;
            }
            match rx.recv().await {
                Some(message) => {
                    inbox.absorb(message);
                    continue;
                }
                None => return, // The dispatcher dropped us.
            }
        };
        if item.isolate
            && !results.is_empty()
            && !gate.send(WorkerEvent::Results(std::mem::take(&mut results)))
        {
            return;
        }
        if inbox.cancelled.remove(&item.id) {
            results.push(WorkResult {
                id: item.id,
                duration: Duration::ZERO,
                outcome: Err(TaskError::cancelled()),
            });
            continue;
        }
        if item.isolate && !gate.send(WorkerEvent::Started(item.id)) {
            return;
        }
        let name = inbox
            .functions
            .get(&item.function)
            .cloned()
            .unwrap_or_default();
        let started = Instant::now();
        match execute(&gate, &name, &item).await {
            Ran::Die(code) => {
                // Results not yet reported die with the process, as in a real worker.
                gate.die(Some(WorkerExit::Code(code)));
                return;
            }
            Ran::Done(outcome) => results.push(WorkResult {
                id: item.id,
                duration: started.elapsed(),
                outcome,
            }),
        }
        if (item.isolate || results.len() >= RESULT_BATCH)
            && !gate.send(WorkerEvent::Results(std::mem::take(&mut results)))
        {
            return;
        }
    }
}

/// What a worker has been told and not yet acted on.
#[derive(Default)]
struct Inbox {
    functions: HashMap<FunctionKey, String>,
    pending: VecDeque<WorkItem>,
    cancelled: HashSet<TaskId>,
    shutdown: bool,
}

impl Inbox {
    fn absorb(&mut self, message: ToWorker) {
        match message {
            ToWorker::Function { key, function } => {
                self.functions.insert(key, function.name().to_owned());
            }
            ToWorker::Tasks(items) => self.pending.extend(items),
            ToWorker::Cancel(ids) | ToWorker::Return(ids) => self.cancelled.extend(ids),
            ToWorker::Shutdown => self.shutdown = true,
        }
    }
}
