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

mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use funcx_core::worker::{ToWorker, WorkResult, WorkerEvent};
use funcx_core::{Executor, TaskId};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use super::messages::{ManagerId, ManagerInfo, ToEndpoint, ToManager};
use crate::{Connection, TcpAcceptor};
use session::{Durable, RemoteManager, Session};

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
            .attach_with_capacity(
                worker,
                info.slots as usize,
                info.block.clone().map(funcx_core::BlockId::new),
                info.capacity(),
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
