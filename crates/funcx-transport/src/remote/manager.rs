//! The manager side of the manager protocol: dial the endpoint, keep dialling, relay work.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use funcx_core::worker::{ToWorker, WorkResult};
use funcx_core::TaskId;
use futures::future::BoxFuture;
use tracing::{debug, info, warn};

use super::batch::{
    payload_limit, refuse_oversized_results, result_size, split_by_bytes, BATCH_BYTES,
};
use super::messages::{ManagerInfo, ToEndpoint, ToManager};
use super::runner::Runner;
use crate::{Connection, MemoryDialer, TcpTransport, TransportError};

/// Opens connections to an endpoint: over TCP, or in memory for tests and in-process
/// endpoints.
pub trait Dial: Send + Sync + 'static {
    /// One connection attempt.
    fn dial(&self) -> BoxFuture<'_, Result<Connection<ToEndpoint, ToManager>, TransportError>>;
}

/// Dials an endpoint's address over TCP.
#[derive(Debug, Clone)]
pub struct TcpDial {
    transport: TcpTransport,
    address: SocketAddr,
}

impl TcpDial {
    /// Dials `address` with `transport` (its token, TLS and frame limits).
    pub fn new(transport: TcpTransport, address: SocketAddr) -> TcpDial {
        TcpDial { transport, address }
    }
}

impl Dial for TcpDial {
    fn dial(&self) -> BoxFuture<'_, Result<Connection<ToEndpoint, ToManager>, TransportError>> {
        Box::pin(self.transport.dial(self.address))
    }
}

impl Dial for MemoryDialer<ToEndpoint, ToManager> {
    fn dial(&self) -> BoxFuture<'_, Result<Connection<ToEndpoint, ToManager>, TransportError>> {
        Box::pin(MemoryDialer::dial(self))
    }
}

/// How a manager behaves towards its endpoint.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Who this manager is.
    pub info: ManagerInfo,
    /// The first pause between failed connection attempts; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest pause between connection attempts.
    pub max_backoff: Duration,
    /// How long the manager keeps trying to reach an endpoint it cannot reach before it gives
    /// up and exits (default 5 minutes).
    pub give_up_after: Duration,
    /// How long to wait for the endpoint's welcome after connecting.
    pub welcome_timeout: Duration,
    /// When this turns `true`, the manager asks the endpoint to drain it
    /// ([`ToEndpoint::Leaving`]), finishes and delivers what it holds, and exits with
    /// [`ManagerExit::Drained`]; if the endpoint cannot be reached at that moment, it exits
    /// with [`ManagerExit::EndpointGone`] instead of waiting for it. `None` (default): only
    /// the endpoint ends the manager.
    pub leave: Option<tokio::sync::watch::Receiver<bool>>,
}

impl ManagerConfig {
    /// Defaults for a manager described by `info`.
    pub fn new(info: ManagerInfo) -> ManagerConfig {
        ManagerConfig {
            info,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            give_up_after: Duration::from_secs(300),
            welcome_timeout: Duration::from_secs(10),
            leave: None,
        }
    }

    /// Sets [`ManagerConfig::leave`].
    pub fn leave_on(mut self, leave: tokio::sync::watch::Receiver<bool>) -> ManagerConfig {
        self.leave = Some(leave);
        self
    }
}

/// Whether `leave` says to leave now.
fn leaving(leave: &Option<tokio::sync::watch::Receiver<bool>>) -> bool {
    leave.as_ref().is_some_and(|leave| *leave.borrow())
}

/// Resolves when `leave` turns true; never without one (or once its sender is gone).
async fn leave_requested(leave: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match leave {
        Some(leave) => {
            if leave.wait_for(|leave| *leave).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Why a manager stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerExit {
    /// The endpoint asked it to drain; every result was delivered.
    Drained,
    /// The endpoint told it to stop at once.
    Stopped,
    /// The endpoint could not be reached for `give_up_after`.
    EndpointGone(String),
    /// The manager's own workers could not start, so it never offered them to the endpoint.
    WorkersFailed(String),
}

impl fmt::Display for ManagerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerExit::Drained => f.write_str("drained at the endpoint's request"),
            ManagerExit::Stopped => f.write_str("stopped by the endpoint"),
            ManagerExit::EndpointGone(reason) => write!(f, "gave up on the endpoint: {reason}"),
            ManagerExit::WorkersFailed(reason) => {
                write!(f, "its workers could not start: {reason}")
            }
        }
    }
}

/// Runs a manager until the endpoint drains or stops it, or cannot be reached for
/// [`ManagerConfig::give_up_after`].
pub async fn run_manager<R: Runner>(
    dial: impl Dial,
    mut runner: R,
    mut config: ManagerConfig,
) -> ManagerExit {
    let mut leave = config.leave.take();
    let mut state = State {
        session: None,
        unacked: VecDeque::new(),
        next_seq: 0,
        draining: false,
    };
    let mut unreachable_since: Option<Instant> = None;
    let mut backoff = config.min_backoff;
    loop {
        let attempt = match dial.dial().await {
            Ok(connection) => state.handshake(connection, &mut runner, &config).await,
            Err(error) => Err(error.to_string()),
        };
        let (connection, heartbeat_period, heartbeat_threshold) = match attempt {
            Ok(established) => established,
            Err(reason) => {
                if leaving(&leave) {
                    warn!(%reason, "asked to leave while the endpoint is unreachable; exiting");
                    runner.reset();
                    return ManagerExit::EndpointGone(reason);
                }
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= config.give_up_after {
                    warn!(%reason, "endpoint unreachable for too long; giving up");
                    runner.reset();
                    return ManagerExit::EndpointGone(reason);
                }
                debug!(%reason, ?backoff, "endpoint not reachable; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = leave_requested(&mut leave) => {}
                }
                backoff = (backoff * 2).min(config.max_backoff);
                continue;
            }
        };
        backoff = config.min_backoff;
        match state
            .serve(
                connection,
                &mut runner,
                heartbeat_period,
                heartbeat_threshold,
                &mut leave,
            )
            .await
        {
            Some(exit) => return exit,
            None => {
                info!("connection to the endpoint lost; reconnecting");
                unreachable_since = Some(Instant::now());
            }
        }
    }
}

struct State {
    session: Option<u64>,
    /// Result batches sent and not acknowledged, oldest first.
    unacked: VecDeque<(u64, Vec<WorkResult>)>,
    next_seq: u64,
    draining: bool,
}

type Established = (Connection<ToEndpoint, ToManager>, Duration, Duration);

impl State {
    async fn handshake<R: Runner>(
        &mut self,
        mut connection: Connection<ToEndpoint, ToManager>,
        runner: &mut R,
        config: &ManagerConfig,
    ) -> Result<Established, String> {
        let mut held: HashSet<TaskId> = runner.held().into_iter().collect();
        held.extend(
            self.unacked
                .iter()
                .flat_map(|(_, results)| results.iter().map(|r| r.id)),
        );
        let hello = ToEndpoint::Hello {
            info: config.info.clone(),
            session: self.session,
            held: held.into_iter().collect(),
        };
        connection.send(hello).map_err(|e| e.to_string())?;
        let welcome = tokio::time::timeout(config.welcome_timeout, connection.recv()).await;
        match welcome {
            Ok(Some(Ok(ToManager::Welcome {
                session,
                resumed,
                heartbeat_period,
                heartbeat_threshold,
            }))) => {
                if !resumed {
                    if self.session.is_some() {
                        info!("the endpoint does not know this manager any more; dropping its old tasks");
                    }
                    runner.reset();
                    self.unacked.clear();
                    self.draining = false;
                }
                self.session = Some(session);
                for (seq, results) in &self.unacked {
                    connection
                        .send(ToEndpoint::Results {
                            seq: *seq,
                            results: results.clone(),
                        })
                        .map_err(|e| e.to_string())?;
                }
                info!(resumed, "connected to the endpoint");
                Ok((connection, heartbeat_period, heartbeat_threshold))
            }
            Ok(Some(Ok(ToManager::Stop))) => Err("the endpoint refused this manager".into()),
            Ok(Some(Ok(other))) => Err(format!("expected a welcome, got {other:?}")),
            Ok(Some(Err(error))) => Err(error.to_string()),
            Ok(None) => {
                Err("the endpoint closed the connection before welcoming this manager".into())
            }
            Err(_) => Err("the endpoint sent no welcome in time".into()),
        }
    }

    /// Relays work until the connection is lost (`None`) or the manager is done.
    async fn serve<R: Runner>(
        &mut self,
        mut connection: Connection<ToEndpoint, ToManager>,
        runner: &mut R,
        heartbeat_period: Duration,
        heartbeat_threshold: Duration,
        leave: &mut Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Option<ManagerExit> {
        // Asked again on every connection until the endpoint starts the drain.
        let mut asked = false;
        let mut ticks = tokio::time::interval(heartbeat_period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            if self.draining && runner.held().is_empty() && self.unacked.is_empty() {
                let _ = connection.send(ToEndpoint::Goodbye);
                // The endpoint closes the connection once it has the goodbye; waiting for
                // that makes sure the goodbye left before this process exits.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = connection.recv().await {}
                })
                .await;
                return Some(ManagerExit::Drained);
            }
            tokio::select! {
                message = connection.recv() => match message {
                    Some(Ok(message)) => {
                        last_heard = Instant::now();
                        match message {
                            ToManager::Work(ToWorker::Function { key, function }) => runner.define(key, function),
                            ToManager::Work(ToWorker::Tasks(items)) => runner.run(items),
                            ToManager::Work(ToWorker::Cancel(ids)) => runner.cancel(ids),
                            ToManager::Work(ToWorker::Return(ids)) => runner.give_back(ids),
                            ToManager::Work(ToWorker::Shutdown) => {
                                info!("the endpoint asked this manager to drain");
                                self.draining = true;
                            }
                            ToManager::Ack { seq } => {
                                while self.unacked.front().is_some_and(|(s, _)| *s <= seq) {
                                    self.unacked.pop_front();
                                }
                            }
                            ToManager::Heartbeat | ToManager::Welcome { .. } => {}
                            ToManager::Stop => {
                                info!("the endpoint stopped this manager");
                                runner.reset();
                                return Some(ManagerExit::Stopped);
                            }
                        }
                    }
                    Some(Err(error)) => {
                        warn!(%error, "connection to the endpoint failed");
                        return None;
                    }
                    None => return None,
                },
                mut results = runner.next_results() => {
                    // Each batch fits one message, so no result can break the connection
                    // (and be re-sent into the same break after the reconnect).
                    refuse_oversized_results(&mut results, payload_limit(connection.max_message_size()));
                    for results in split_by_bytes(results, BATCH_BYTES, result_size) {
                        self.next_seq += 1;
                        let seq = self.next_seq;
                        self.unacked.push_back((seq, results.clone()));
                        if connection.send(ToEndpoint::Results { seq, results }).is_err() {
                            return None;
                        }
                    }
                }
                () = leave_requested(leave), if !asked && !self.draining => {
                    info!("asking the endpoint to drain this manager");
                    asked = true;
                    if connection.send(ToEndpoint::Leaving).is_err() {
                        return None;
                    }
                }
                _ = ticks.tick() => {
                    if last_heard.elapsed() > heartbeat_threshold {
                        warn!(?heartbeat_threshold, "no heartbeat from the endpoint; reconnecting");
                        return None;
                    }
                    if connection.send(ToEndpoint::Heartbeat).is_err() {
                        return None;
                    }
                }
            }
        }
    }
}
