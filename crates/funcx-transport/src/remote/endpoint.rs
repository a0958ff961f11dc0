//! The endpoint side of the manager protocol: managers dial in, register, and become pools
//! of workers of an [`Executor`].
//!
//! Each manager gets a *session* that outlives its connection: when the connection drops,
//! the session waits up to the heartbeat threshold for the manager to come back, re-sends
//! what the manager did not receive, and drops duplicate results. Only when the manager does
//! not come back, or stops sending heartbeats, is it reported lost, and its tasks re-queued
//! by the dispatcher.

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

#[derive(Debug)]
struct Inner {
    executor: Executor,
    config: AgentConfig,
    /// Identifies this run of the endpoint; managers present it to resume their session.
    session: u64,
    sessions: Mutex<HashMap<ManagerId, SessionEntry>>,
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
            let sessions = self.inner.sessions.lock();
            let entry = sessions
                .as_ref()
                .ok()
                .and_then(|s| s.get(&info.id).map(|e| e.input.clone()));
            drop(sessions);
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
        }
        self.register(info, connection, peer).await;
    }

    fn welcome(&self, resumed: bool) -> ToManager {
        ToManager::Welcome {
            session: self.inner.session,
            resumed,
            heartbeat_period: self.inner.config.heartbeat_period,
            heartbeat_threshold: self.inner.config.heartbeat_threshold,
        }
    }

    async fn register(
        &self,
        info: ManagerInfo,
        connection: Connection<ToManager, ToEndpoint>,
        peer: String,
    ) {
        let (input, inputs) = mpsc::unbounded_channel();
        let worker = Box::new(RemoteManager {
            input: input.clone(),
        });
        let events = match self
            .inner
            .executor
            .attach(
                worker,
                info.slots as usize,
                info.block.clone().map(funcx_core::BlockId::new),
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
        if connection.send(self.welcome(false)).is_err() {
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
                    input,
                },
            );
        }
        let span = tracing::info_span!("manager", id = %info.id);
        let session = Session::new(
            info.id,
            self.inner.session,
            events,
            inputs,
            connection,
            self.inner.config,
        );
        let agent = self.clone();
        tokio::spawn(
            async move {
                session.run().await;
                if let Ok(mut sessions) = agent.inner.sessions.lock() {
                    sessions.remove(&info.id);
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
}

impl Session {
    fn new(
        id: ManagerId,
        endpoint_session: u64,
        events: WorkerEvents,
        inputs: mpsc::UnboundedReceiver<Input>,
        connection: Connection<ToManager, ToEndpoint>,
        config: AgentConfig,
    ) -> Session {
        Session {
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
                    funcx_core::worker::WorkResult {
                        id: item.id,
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
