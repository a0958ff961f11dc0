//! The endpoint side of the manager protocol: managers dial in, register, and become pools
//! of workers of an [`Executor`].
//!
//! Each manager gets a *session* that outlives its connection: when the connection drops,
//! the session waits up to the heartbeat threshold for the manager to come back, re-sends
//! what the manager did not receive, and drops duplicate results. Only when the manager does
//! not come back, or stops sending heartbeats, is it reported lost, and its tasks re-queued
//! by the dispatcher.
//!
//! A *durable* agent ([`EndpointAgent::durable`], the gateway's) also keeps its promises
//! across its own restart. Its managers see each task under the task's durable id (its
//! trace) instead of this process's [`TaskId`], and its session number is the caller's, the
//! same in every run; so a manager that held tasks and results when the process died
//! resumes its session with the next process like after a dropped connection: it re-sends
//! its unacknowledged results, and the tasks it reports holding are not sent again. And a
//! result is acknowledged only once a [`ResultKeeper`] has stored it, so a manager keeps
//! every result until it is safe.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use funcx_core::ids::{IdMap, IdSet};
use funcx_core::worker::{ToWorker, WorkItem, Worker, WorkerEvent, WorkerEvents};
use funcx_core::{Executor, TaskId};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use super::batch::{item_size, payload_limit, split_by_bytes, BATCH_BYTES};
use super::messages::{ManagerId, ManagerInfo, ToEndpoint, ToManager};
use crate::{Connection, Receiver, Sender, TcpAcceptor, TransportError};
use funcx_core::worker::WorkResult;

/// How the endpoint watches its managers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConfig {
    /// How often each side sends a heartbeat (default 2 s).
    pub heartbeat_period: Duration,
    /// How long without hearing from a manager, or without it reconnecting, before it is
    /// declared lost and its tasks re-queued (default 10 s).
    pub heartbeat_threshold: Duration,
    /// How long a new connection may take to say hello (default 10 s).
    pub hello_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            heartbeat_period: Duration::from_secs(2),
            heartbeat_threshold: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// The part of an endpoint that managers dial in to.
///
/// It registers each manager as a pool of workers of its [`Executor`] (see
/// [`Executor::attach`]), relays tasks and results, and watches heartbeats. Cloning is cheap;
/// clones share the registry.
///
/// ```no_run
/// use funcx_core::Executor;
/// use funcx_transport::remote::{AgentConfig, EndpointAgent};
/// use funcx_transport::TcpTransport;
///
/// # async fn demo() -> Result<(), funcx_transport::TransportError> {
/// let executor = Executor::builder().start_without_workers();
/// let agent = EndpointAgent::new(executor.clone(), AgentConfig::default());
/// let transport = TcpTransport::builder().token("secret").build();
/// let acceptor = transport.listen("127.0.0.1:0").await?;
/// println!("managers can dial {}", acceptor.local_addr());
/// tokio::spawn(agent.serve(acceptor));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EndpointAgent {
    inner: Arc<Inner>,
}

struct Inner {
    executor: Executor,
    config: AgentConfig,
    /// Identifies this run of the endpoint (every run, for a durable agent); managers present
    /// it to resume their session.
    session: u64,
    sessions: Mutex<HashMap<ManagerId, SessionEntry>>,
    /// For a durable agent: where results are stored before they are acknowledged.
    keeper: Option<Arc<dyn ResultKeeper>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("session", &self.session)
            .field("durable", &self.keeper.is_some())
            .finish_non_exhaustive()
    }
}

/// Stores the results a durable [`EndpointAgent`] receives, before the agent acknowledges
/// them to their manager (which forgets a result only then).
pub trait ResultKeeper: Send + Sync + 'static {
    /// Stores `results`, each under its task's durable id (its trace); resolves once they
    /// are durable. It does not give up: a store that fails is retried until it works,
    /// since the manager holds the results meanwhile. Results of tasks the keeper does not
    /// know, or already finished, are ignored.
    fn keep(&self, results: Vec<(u64, WorkResult)>) -> BoxFuture<'static, ()>;
}

#[derive(Debug)]
struct SessionEntry {
    info: ManagerInfo,
    input: mpsc::UnboundedSender<Input>,
}

/// What drives a session besides its connection.
enum Input {
    /// From the dispatcher.
    Work(ToWorker),
    /// From the dispatcher: stop the manager now.
    Kill,
    /// The manager came back on a new connection.
    Reconnect {
        connection: Connection<ToManager, ToEndpoint>,
        held: Vec<TaskId>,
    },
    /// The results up to batch `seq` are stored: they may be acknowledged.
    Kept { seq: u64 },
}

impl EndpointAgent {
    /// An agent that attaches the managers that dial in to `executor`.
    pub fn new(executor: Executor, config: AgentConfig) -> EndpointAgent {
        EndpointAgent {
            inner: Arc::new(Inner {
                executor,
                config,
                session: random_u64(),
                sessions: Mutex::new(HashMap::new()),
                keeper: None,
            }),
        }
    }

    /// An agent whose managers' sessions survive the restart of this process: the gateway's.
    ///
    /// `session` must be the same in every run (the gateway derives it from the endpoint's
    /// id), and every task must carry its durable id in [`funcx_core::TaskOptions::trace`].
    /// Managers see tasks under that id, so that what a manager holds still means something
    /// to the next run; a manager that comes back with this session after a restart resumes
    /// it (`Welcome { resumed: true }`): it re-sends its unacknowledged results, and the tasks
    /// it holds are not sent to it again when the executor dispatches them. Results are
    /// acknowledged only after `keeper` has stored them.
    pub fn durable(
        executor: Executor,
        config: AgentConfig,
        session: u64,
        keeper: Arc<dyn ResultKeeper>,
    ) -> EndpointAgent {
        EndpointAgent {
            inner: Arc::new(Inner {
                executor,
                config,
                session,
                sessions: Mutex::new(HashMap::new()),
                keeper: Some(keeper),
            }),
        }
    }

    /// The managers registered now.
    pub fn managers(&self) -> Vec<ManagerInfo> {
        self.inner
            .sessions
            .lock()
            .map(|sessions| sessions.values().map(|entry| entry.info.clone()).collect())
            .unwrap_or_default()
    }

    /// Accepts managers on `acceptor` until the executor shuts down. A connection that fails
    /// its handshake is logged and dropped; it does not affect the others.
    pub async fn serve(self, mut acceptor: TcpAcceptor<ToManager, ToEndpoint>) {
        loop {
            match acceptor.accept().await {
                Ok(connection) => {
                    let agent = self.clone();
                    tokio::spawn(async move { agent.admit(connection).await });
                }
                Err(error) if error.is_closed() => break,
                Err(error) => warn!(%error, "refused a manager connection"),
            }
        }
    }

    /// Admits one manager connection: waits for its hello, then registers the manager or
    /// resumes its session.
    pub async fn admit(&self, mut connection: Connection<ToManager, ToEndpoint>) {
        let peer = connection.peer().to_string();
        let hello = tokio::time::timeout(self.inner.config.hello_timeout, connection.recv()).await;
        let (info, session, held) = match hello {
            Ok(Some(Ok(ToEndpoint::Hello {
                info,
                session,
                held,
            }))) => (info, session, held),
            Ok(Some(Ok(other))) => {
                return warn!(%peer, ?other, "manager connection did not start with hello; dropped")
            }
            Ok(Some(Err(error))) => {
                return warn!(%peer, %error, "manager connection failed before hello")
            }
            Ok(None) => return debug!(%peer, "manager connection closed before hello"),
            Err(_) => return warn!(%peer, "manager connection sent no hello in time; dropped"),
        };
        if session == Some(self.inner.session) {
            let entry = self
                .inner
                .sessions
                .lock()
                .ok()
                .and_then(|s| s.get(&info.id).map(|e| e.input.clone()));
            if let Some(input) = entry {
                info!(manager = %info.id, %peer, "manager reconnected");
                if let Err(mpsc::error::SendError(Input::Reconnect { connection, .. })) =
                    input.send(Input::Reconnect { connection, held })
                {
                    // The session ended in the meantime: the manager must start afresh.
                    let _ = connection.send(self.welcome(false));
                }
                return;
            }
            if self.inner.keeper.is_some() {
                // A durable agent's session outlives this process: the manager held it with
                // an earlier run (or its session here ended), and what it holds is known by
                // durable ids. It resumes, holding `held`.
                info!(manager = %info.id, %peer, held = held.len(), "manager resumed its session after a restart");
                return self.register(info, connection, peer, Some(held)).await;
            }
        }
        self.register(info, connection, peer, None).await;
    }

    fn welcome(&self, resumed: bool) -> ToManager {
        ToManager::Welcome {
            session: self.inner.session,
            resumed,
            heartbeat_period: self.inner.config.heartbeat_period,
            heartbeat_threshold: self.inner.config.heartbeat_threshold,
        }
    }

    /// Registers a manager: a new session, or (`resumed`: what it holds) a durable session
    /// that outlived the process.
    async fn register(
        &self,
        info: ManagerInfo,
        connection: Connection<ToManager, ToEndpoint>,
        peer: String,
        resumed: Option<Vec<TaskId>>,
    ) {
        let (input, inputs) = mpsc::unbounded_channel();
        let worker = Box::new(RemoteManager {
            input: input.clone(),
        });
        let events = match self
            .inner
            .executor
            .attach_with_gpus(
                worker,
                info.slots as usize,
                info.block.clone().map(funcx_core::BlockId::new),
                info.gpus.clone(),
            )
            .await
        {
            Ok(events) => events,
            Err(error) => {
                info!(manager = %info.id, %error, "manager refused: the endpoint is shutting down");
                let _ = connection.send(ToManager::Stop);
                return;
            }
        };
        if connection.send(self.welcome(resumed.is_some())).is_err() {
            events.send(WorkerEvent::Lost(
                "its connection closed during registration".into(),
            ));
            return;
        }
        info!(manager = %info.id, %peer, slots = info.slots, block = ?info.block, host = %info.host, "manager registered");
        if let Ok(mut sessions) = self.inner.sessions.lock() {
            sessions.insert(
                info.id,
                SessionEntry {
                    info: info.clone(),
                    input: input.clone(),
                },
            );
        }
        let input_for_cleanup = input.downgrade();
        let span = tracing::info_span!("manager", id = %info.id);
        let mut session = Session::new(
            self.inner.executor.clone(),
            info.id,
            self.inner.session,
            events,
            inputs,
            connection,
            self.inner.config,
        );
        if let Some(keeper) = &self.inner.keeper {
            session.durable = Some(Durable::new(keeper.clone(), input, resumed));
        }
        let agent = self.clone();
        // Weak, so that this task does not keep its own session's input open.
        let mine = input_for_cleanup;
        tokio::spawn(
            async move {
                session.run().await;
                if let Ok(mut sessions) = agent.inner.sessions.lock() {
                    // Only this session's entry: a manager that registered again under the
                    // same id (a hello replayed before its welcome) has a newer, live one.
                    let ours = mine.upgrade().is_some_and(|mine| {
                        sessions
                            .get(&info.id)
                            .is_some_and(|entry| entry.input.same_channel(&mine))
                    });
                    if ours {
                        sessions.remove(&info.id);
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// The dispatcher's handle on a remote manager.
struct RemoteManager {
    input: mpsc::UnboundedSender<Input>,
}

impl Worker for RemoteManager {
    fn send(&mut self, message: ToWorker) {
        let _ = self.input.send(Input::Work(message));
    }

    fn kill(&mut self) {
        let _ = self.input.send(Input::Kill);
    }
}

struct Session {
    executor: Executor,
    id: ManagerId,
    endpoint_session: u64,
    events: WorkerEvents,
    inputs: mpsc::UnboundedReceiver<Input>,
    connection: Option<(Sender<ToManager>, Receiver<ToEndpoint>)>,
    config: AgentConfig,
    /// Function definitions sent, to send again on a new connection.
    functions: Vec<ToWorker>,
    /// Tasks sent and not finished, to send again if the manager lost them.
    in_flight: IdMap<TaskId, WorkItem>,
    /// Cancellations not yet known to have reached the manager.
    cancels: IdSet<TaskId>,
    draining: bool,
    last_heard: Instant,
    disconnected_at: Option<Instant>,
    /// The largest message the current (or last) connection carries.
    max_message_size: usize,
    /// A durable agent's session: ids translated, results kept before they are acknowledged.
    durable: Option<Durable>,
}

/// What a session of a durable agent adds: the manager sees every task under its durable id
/// (its trace), and results are acknowledged once the keeper has stored them.
///
/// `in_flight`, `cancels` and the manager's `held` are then in durable ids; the executor's
/// ids are translated on the way in and out.
struct Durable {
    /// Durable id → the executor's id, for tasks in flight.
    local_of: IdMap<TaskId, TaskId>,
    /// The executor's id → durable id, for tasks in flight.
    durable_of: IdMap<TaskId, TaskId>,
    /// Tasks the manager said it held when it resumed this session after a restart: when the
    /// executor dispatches them, they are not sent again.
    held: IdSet<TaskId>,
    /// Results of held tasks that arrived before the executor dispatched those tasks here;
    /// they complete them when it does.
    early: IdMap<TaskId, WorkResult>,
    /// Result batches on their way to the keeper; `Input::Kept` comes back for each.
    keeping: mpsc::UnboundedSender<(u64, Vec<(u64, WorkResult)>)>,
}

impl Durable {
    fn new(
        keeper: Arc<dyn ResultKeeper>,
        input: mpsc::UnboundedSender<Input>,
        held: Option<Vec<TaskId>>,
    ) -> Durable {
        let (keeping, batches) = mpsc::unbounded_channel();
        tokio::spawn(keep_results(keeper, batches, input));
        Durable {
            local_of: IdMap::default(),
            durable_of: IdMap::default(),
            held: held.unwrap_or_default().into_iter().collect(),
            early: IdMap::default(),
            keeping,
        }
    }
}

/// Hands result batches to the keeper in order, several at a time when they queue up (one
/// store write for all of them), and reports each stored batch to its session.
async fn keep_results(
    keeper: Arc<dyn ResultKeeper>,
    mut batches: mpsc::UnboundedReceiver<(u64, Vec<(u64, WorkResult)>)>,
    session: mpsc::UnboundedSender<Input>,
) {
    let mut queued = Vec::new();
    while batches.recv_many(&mut queued, 256).await > 0 {
        let seq = queued.last().map_or(0, |(seq, _)| *seq);
        let results = queued.drain(..).flat_map(|(_, results)| results).collect();
        keeper.keep(results).await;
        if session.send(Input::Kept { seq }).is_err() {
            return;
        }
    }
}

impl Session {
    fn new(
        executor: Executor,
        id: ManagerId,
        endpoint_session: u64,
        events: WorkerEvents,
        inputs: mpsc::UnboundedReceiver<Input>,
        connection: Connection<ToManager, ToEndpoint>,
        config: AgentConfig,
    ) -> Session {
        Session {
            executor,
            id,
            endpoint_session,
            events,
            inputs,
            max_message_size: connection.max_message_size(),
            connection: Some(connection.split()),
            config,
            functions: Vec::new(),
            in_flight: IdMap::default(),
            cancels: IdSet::default(),
            draining: false,
            last_heard: Instant::now(),
            disconnected_at: None,
            durable: None,
        }
    }

    async fn run(mut self) {
        let mut ticks = tokio::time::interval(self.config.heartbeat_period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            tokio::select! {
                input = self.inputs.recv() => match input {
                    Some(Input::Work(message)) => self.forward(message),
                    Some(Input::Kill) | None => {
                        self.send(ToManager::Stop);
                        break "stopped by the endpoint".to_string();
                    }
                    Some(Input::Reconnect { connection, held }) => self.resume(connection, held),
                    Some(Input::Kept { seq }) => self.send(ToManager::Ack { seq }),
                },
                message = recv(&mut self.connection) => match message {
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        if let Some(end) = self.on_message(message) {
                            break end;
                        }
                    }
                    Some(Err(error)) => {
                        warn!(manager = %self.id, %error, "manager connection failed; waiting for it to reconnect");
                        self.disconnect();
                    }
                    None => {
                        info!(manager = %self.id, "manager connection closed; waiting for it to reconnect");
                        self.disconnect();
                    }
                },
                _ = ticks.tick() => {
                    if let Some(end) = self.on_tick() {
                        break end;
                    }
                }
            }
        };
        if end.is_empty() {
            self.events
                .send(WorkerEvent::Exited(funcx_core::WorkerExit::Code(0)));
        } else {
            warn!(manager = %self.id, reason = %end, "manager lost");
            self.events.send(WorkerEvent::Lost(end));
        }
    }

    fn send(&mut self, message: ToManager) {
        if let Some((sender, _)) = &self.connection {
            if sender.send(message).is_err() {
                self.disconnect();
            }
        }
    }

    fn connect(&mut self, connection: Connection<ToManager, ToEndpoint>) {
        self.max_message_size = connection.max_message_size();
        self.connection = Some(connection.split());
    }

    fn disconnect(&mut self) {
        if self.connection.take().is_some() {
            self.disconnected_at = Some(Instant::now());
        }
    }

    fn forward(&mut self, message: ToWorker) {
        let message = match (message, &mut self.durable) {
            (ToWorker::Tasks(items), Some(durable)) => {
                let mut send = Vec::with_capacity(items.len());
                let mut done = Vec::new();
                for mut item in items {
                    let local = item.id;
                    let id = item.trace.map_or(local, TaskId::from_u64);
                    if let Some(mut result) = durable.early.remove(&id) {
                        result.id = local;
                        done.push(result);
                        continue;
                    }
                    durable.local_of.insert(id, local);
                    durable.durable_of.insert(local, id);
                    item.id = id;
                    if durable.held.remove(&id) {
                        // The manager has it since before the restart: its result will come.
                        self.in_flight.insert(id, item);
                    } else {
                        send.push(item);
                    }
                }
                if !done.is_empty() {
                    self.events.send(WorkerEvent::Results(done));
                }
                if send.is_empty() {
                    return;
                }
                ToWorker::Tasks(send)
            }
            (ToWorker::Cancel(ids), Some(durable)) => ToWorker::Cancel(
                ids.into_iter()
                    .map(|id| durable.durable_of.get(&id).copied().unwrap_or(id))
                    .collect(),
            ),
            (message, _) => message,
        };
        match &message {
            ToWorker::Function { .. } => self.functions.push(message.clone()),
            ToWorker::Tasks(items) => {
                let items = self.admit_sizes(items.clone());
                for item in &items {
                    self.in_flight.insert(item.id, item.clone());
                }
                return self.send_tasks(items);
            }
            ToWorker::Cancel(ids) => self.cancels.extend(ids.iter().copied()),
            ToWorker::Shutdown => self.draining = true,
            // Lost with a connection, it is harmless: the tasks then simply run there.
            ToWorker::Return(_) => {}
        }
        self.send(ToManager::Work(message));
    }

    /// Fails the tasks too large for any message on this connection (each alone, typed),
    /// and returns the others.
    fn admit_sizes(&mut self, items: Vec<WorkItem>) -> Vec<WorkItem> {
        let limit = payload_limit(self.max_message_size);
        let (fit, oversized): (Vec<_>, Vec<_>) =
            items.into_iter().partition(|item| item_size(item) <= limit);
        if !oversized.is_empty() {
            let failures = oversized
                .into_iter()
                .map(|item| {
                    let size = item_size(&item) as u64;
                    warn!(manager = %self.id, task = %item.id, size, limit, "arguments too large for the connection to the manager");
                    // Reported to the executor under its own id.
                    let id = match &mut self.durable {
                        Some(durable) => {
                            let local = durable.local_of.remove(&item.id).unwrap_or(item.id);
                            durable.durable_of.remove(&local);
                            local
                        }
                        None => item.id,
                    };
                    funcx_core::worker::WorkResult {
                        id,
                        duration: Duration::ZERO,
                        outcome: Err(funcx_core::TaskError::arguments_too_large(size, limit as u64)),
                    }
                })
                .collect();
            self.events.send(WorkerEvent::Results(failures));
        }
        fit
    }

    /// Sends tasks in batches that each fit one message, large payloads alone.
    fn send_tasks(&mut self, items: Vec<WorkItem>) {
        for batch in split_by_bytes(items, BATCH_BYTES, item_size) {
            self.send(ToManager::Work(ToWorker::Tasks(batch)));
        }
    }

    /// The manager is back: bring it up to date.
    fn resume(&mut self, connection: Connection<ToManager, ToEndpoint>, held: Vec<TaskId>) {
        self.connect(connection);
        self.disconnected_at = None;
        self.last_heard = Instant::now();
        self.send(ToManager::Welcome {
            session: self.endpoint_session,
            resumed: true,
            heartbeat_period: self.config.heartbeat_period,
            heartbeat_threshold: self.config.heartbeat_threshold,
        });
        for function in self.functions.clone() {
            self.send(ToManager::Work(function));
        }
        let held: IdSet<TaskId> = held.into_iter().collect();
        let missing: Vec<WorkItem> = self
            .in_flight
            .values()
            .filter(|item| !held.contains(&item.id))
            .cloned()
            .collect();
        debug!(manager = %self.id, resent = missing.len(), "manager session resumed");
        self.send_tasks(missing);
        if !self.cancels.is_empty() {
            let cancels = self.cancels.iter().copied().collect();
            self.send(ToManager::Work(ToWorker::Cancel(cancels)));
        }
        if self.draining {
            self.send(ToManager::Work(ToWorker::Shutdown));
        }
    }

    /// Handles one message; `Some(reason)` ends the session (empty: a clean goodbye).
    fn on_message(&mut self, message: ToEndpoint) -> Option<String> {
        match message {
            ToEndpoint::Results { seq, results } if self.durable.is_some() => {
                self.on_durable_results(seq, results);
                None
            }
            ToEndpoint::Results { seq, mut results } => {
                // A result re-sent after a reconnect, for a task already reported, is dropped.
                results.retain(|result| {
                    if !self.cancels.is_empty() {
                        self.cancels.remove(&result.id);
                    }
                    self.in_flight.remove(&result.id).is_some()
                });
                if !results.is_empty() {
                    self.events.send(WorkerEvent::Results(results));
                }
                self.send(ToManager::Ack { seq });
                None
            }
            ToEndpoint::Heartbeat => None,
            ToEndpoint::Leaving => {
                // The dispatcher stops feeding this pool and sends `Shutdown`, which drains
                // the manager as for the end of its block.
                info!(manager = %self.id, "manager asked to leave; draining it");
                self.executor.drain_pool(self.events.worker());
                None
            }
            ToEndpoint::Goodbye => {
                info!(manager = %self.id, "manager drained and left");
                Some(String::new())
            }
            ToEndpoint::Hello { .. } => {
                warn!(manager = %self.id, "manager said hello twice on one connection; dropping the connection");
                self.disconnect();
                None
            }
        }
    }

    /// Results of a durable session: reported under the executor's ids, and acknowledged
    /// once the keeper has stored them (`Input::Kept`).
    fn on_durable_results(&mut self, seq: u64, results: Vec<WorkResult>) {
        let Some(durable) = &mut self.durable else {
            return;
        };
        let kept: Vec<(u64, WorkResult)> = results
            .iter()
            .map(|result| (result.id.as_u64(), result.clone()))
            .collect();
        let mut reported = Vec::with_capacity(results.len());
        for mut result in results {
            if !self.cancels.is_empty() {
                self.cancels.remove(&result.id);
            }
            if self.in_flight.remove(&result.id).is_some() {
                let local = durable.local_of.remove(&result.id).unwrap_or(result.id);
                durable.durable_of.remove(&local);
                result.id = local;
                reported.push(result);
            } else if durable.held.remove(&result.id) {
                // Held since before the restart and not dispatched here yet.
                durable.early.insert(result.id, result);
            }
            // Otherwise a duplicate of a result already reported: dropped.
        }
        if !reported.is_empty() {
            self.events.send(WorkerEvent::Results(reported));
        }
        if durable.keeping.send((seq, kept)).is_err() {
            // The keeper's task is gone (the runtime is stopping): nothing can be stored, so
            // nothing is acknowledged, and the manager keeps the results.
            debug!(manager = %self.id, seq, "results not kept: the keeper stopped");
        }
    }

    fn on_tick(&mut self) -> Option<String> {
        let threshold = self.config.heartbeat_threshold;
        if let Some(since) = self.disconnected_at {
            if since.elapsed() > threshold {
                return Some(format!(
                    "its connection dropped and it did not reconnect within {threshold:?}"
                ));
            }
            return None;
        }
        if self.last_heard.elapsed() > threshold {
            // No stop order: a manager that was only frozen (a paused job, a partition)
            // finds its session gone when it wakes and registers afresh, so the rest of its
            // block's allocation is not wasted.
            return Some(format!("no heartbeat for {threshold:?}"));
        }
        self.send(ToManager::Heartbeat);
        None
    }
}

async fn recv(
    connection: &mut Option<(Sender<ToManager>, Receiver<ToEndpoint>)>,
) -> Option<Result<ToEndpoint, TransportError>> {
    match connection {
        Some((_, receiver)) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// A random number from the standard library's randomly keyed hasher: unique enough to tell
/// runs of an endpoint apart, with no dependency for it.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
