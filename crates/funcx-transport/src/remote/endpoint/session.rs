//! A manager's session at the endpoint: forwarding the dispatcher's work over the connection,
//! results and heartbeats back, resuming after a reconnection, and (for a durable agent)
//! translating ids and keeping results before they are acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use funcx_core::ids::{IdMap, IdSet};
use funcx_core::worker::{ToWorker, WorkItem, WorkResult, Worker, WorkerEvent, WorkerEvents};
use funcx_core::{Executor, TaskId};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::super::batch::{item_size, payload_limit, split_by_bytes, BATCH_BYTES};
use super::super::messages::{ManagerId, ToEndpoint, ToManager};
use super::{AgentConfig, Input, ResultKeeper};
use crate::{Connection, Receiver, Sender, TransportError};

/// The dispatcher's handle on a remote manager.
pub(super) struct RemoteManager {
    pub(super) input: mpsc::UnboundedSender<Input>,
}

impl Worker for RemoteManager {
    fn send(&mut self, message: ToWorker) {
        let _ = self.input.send(Input::Work(message));
    }

    fn kill(&mut self) {
        let _ = self.input.send(Input::Kill);
    }
}

/// One manager's session: its connection (while it has one), what it was sent and has not
/// finished, and its heartbeats; it outlives a dropped connection until the threshold.
pub(super) struct Session {
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
    pub(super) durable: Option<Durable>,
}

/// What a session of a durable agent adds: the manager sees every task under its durable id
/// (its trace), and results are acknowledged once the keeper has stored them.
///
/// `in_flight`, `cancels` and the manager's `held` are then in durable ids; the executor's
/// ids are translated on the way in and out.
pub(super) struct Durable {
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
    pub(super) fn new(
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
    pub(super) fn new(
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

    pub(super) async fn run(mut self) {
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
        match message {
            // The batch is moved on; each task is copied once (a cheap copy, see `Args`),
            // into the map kept to send again after a reconnection.
            ToWorker::Tasks(items) => {
                let items = self.admit_sizes(items);
                for item in &items {
                    self.in_flight.insert(item.id, item.clone());
                }
                return self.send_tasks(items);
            }
            ToWorker::Function { .. } => self.functions.push(message.clone()),
            ToWorker::Cancel(ref ids) => self.cancels.extend(ids.iter().copied()),
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
        if items.iter().all(|item| item_size(item) <= limit) {
            return items; // The usual case, without sorting them into new vectors.
        }
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
