//! An endpoint from one builder: a provider of blocks, the managers they run, the scaling
//! strategy, and where tasks come from.
//!
//! Without this, an endpoint is nine pieces across four crates (an [`Executor`] without
//! workers, a [`TcpTransport`](funcx_transport::TcpTransport) listener, an
//! [`EndpointAgent`](funcx_transport::remote::EndpointAgent), a [`Provider`], a
//! [`ManagerCommand`] and [`BlockRequest`], a [`Strategy`], a token, and for a gateway a
//! `run_manager` over an `EndpointDial` with a hand-filled
//! [`ManagerInfo`](funcx_transport::remote::ManagerInfo)).
//! [`Endpoint::builder`] puts them together:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use funcx::endpoint::Endpoint;
//! use funcx::providers::{SlurmConfig, SlurmProvider};
//! use funcx::{PythonConfig, StrategyConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint = Endpoint::builder()
//!     .name("cluster")
//!     .provider(SlurmProvider::new(SlurmConfig::new().partition("debug")))
//!     .manager_program("/opt/funcx/bin/funcx-manager")
//!     .workers_per_node(8)
//!     .python(PythonConfig::new().python("/opt/venv/bin/python").worker_init("module load cuda"))
//!     .strategy(StrategyConfig::new().init_blocks(1).max_blocks(4))
//!     .walltime(Duration::from_secs(3600))          // given once: jobs and the strategy
//!     .listen("0.0.0.0:7070".parse()?)
//!     .start()
//!     .await?;
//! let status = endpoint.status();
//! println!("{} on {}: {} block(s)", status.name, status.address, status.strategy.blocks.len());
//! endpoint.stop().await; // drains: running tasks finish and are delivered, blocks released
//! # Ok(()) }
//! ```
//!
//! Tasks come from [`Endpoint::executor`] (this program submits them), or, with
//! [`EndpointBuilder::gateway`] (feature `client`), from a gateway the endpoint dials out
//! to: it becomes one connection of the gateway, offering as many worker slots as its
//! largest set of blocks holds, and relays the gateway's tasks to its managers.

#[cfg(feature = "cli")]
pub mod config;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use funcx_core::{
    BlockId, BlockRequest, Executor, Format, FunctionId, ManagerCommand, Provider, Strategy,
    StrategyConfig,
};
use funcx_python::PythonConfig;
use funcx_transport::remote::{AgentConfig, EndpointAgent};
#[cfg(feature = "client")]
use funcx_transport::remote::{ManagerExit, ManagerId, ManagerInfo};
use funcx_transport::{TcpTransport, TransportError};
use tokio::sync::watch;
use tracing::{info, warn};

pub use status::{EndpointReport, EndpointState};

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// [`EndpointBuilder::provider`] was not called.
    #[error("the endpoint has no provider: call .provider(...)")]
    NoProvider,
    /// The address for managers could not be bound.
    #[error("cannot listen for managers on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: TransportError,
    },
    /// A TLS certificate, key or CA file could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A setting is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The manager program could not be found.
    #[error("cannot find the manager program: {0}")]
    Manager(std::io::Error),
}

/// The TLS settings of the managers' link (feature `tls`).
#[derive(Debug, Clone)]
pub struct ManagerTls {
    /// The endpoint's certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The CA file managers trust (copied to their command line as `--tls-ca`); the
    /// certificate itself for a self-signed one.
    pub ca: PathBuf,
    /// The name managers expect in the certificate (default: the host they dial).
    pub server_name: Option<String>,
}

/// The gateway an endpoint takes its tasks from.
#[derive(Clone)]
pub struct GatewayLink {
    /// `http://host:port`, or `https://...` with the `tls` feature.
    pub url: String,
    /// The endpoint's id at the gateway (what `POST /v1/endpoints` answered).
    pub endpoint_id: String,
    /// The endpoint's token at the gateway.
    pub token: String,
    /// A CA file to trust for an `https` gateway, instead of the Mozilla roots.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for GatewayLink {
    // By hand: the token must not end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayLink")
            .field("url", &self.url)
            .field("endpoint_id", &self.endpoint_id)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Configures an [`Endpoint`]; see the [module docs](self).
pub struct EndpointBuilder {
    name: String,
    provider: Option<Arc<dyn Provider>>,
    manager: Option<ManagerCommand>,
    nodes_per_block: usize,
    workers_per_node: usize,
    python: PythonConfig,
    strategy: StrategyConfig,
    walltime: Option<Duration>,
    drain_margin: Option<Duration>,
    listen: SocketAddr,
    advertise: Option<String>,
    manager_token: Option<String>,
    manager_tls: Option<ManagerTls>,
    gateway: Option<GatewayLink>,
    retries: u32,
    allowed_formats: Option<Vec<Format>>,
    allowed_functions: Option<Vec<FunctionId>>,
    agent: AgentConfig,
    stop_timeout: Duration,
}

impl std::fmt::Debug for EndpointBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointBuilder")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl Default for EndpointBuilder {
    fn default() -> Self {
        EndpointBuilder {
            name: "endpoint".into(),
            provider: None,
            manager: None,
            nodes_per_block: 1,
            workers_per_node: 1,
            python: PythonConfig::new(),
            strategy: StrategyConfig::new(),
            walltime: None,
            drain_margin: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            manager_token: None,
            manager_tls: None,
            gateway: None,
            retries: 2,
            allowed_formats: None,
            allowed_functions: None,
            agent: AgentConfig::default(),
            stop_timeout: Duration::from_secs(120),
        }
    }
}

impl EndpointBuilder {
    /// A name for logs and status (default `endpoint`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Where blocks come from (required): any [`Provider`].
    pub fn provider(mut self, provider: impl Provider) -> Self {
        self.provider = Some(Arc::new(provider));
        self
    }

    /// Where blocks come from, shared.
    pub fn provider_shared(mut self, provider: Arc<dyn Provider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The manager program each node runs: an installed `funcx-manager`. The builder adds
    /// the arguments (`--endpoint`, `--workers`, `--python`, `--gpus`, TLS) and the token.
    pub fn manager_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.manager = Some(ManagerCommand::new(program.into()));
        self
    }

    /// The command that starts a manager, before the arguments the builder adds: a
    /// wrapper, a container runtime, or an application that is its own manager
    /// (`ManagerCommand::new(current_exe).arg("manager")`, which is the default: such a
    /// program calls `funcx::python::manager::run_if_manager()` first thing in `main`).
    pub fn manager_command(mut self, command: ManagerCommand) -> Self {
        self.manager = Some(command);
        self
    }

    /// Nodes per block, one manager on each (default 1).
    pub fn nodes_per_block(mut self, nodes: usize) -> Self {
        self.nodes_per_block = nodes;
        self
    }

    /// Python workers per manager (default 1).
    pub fn workers_per_node(mut self, workers: usize) -> Self {
        self.workers_per_node = workers;
        self
    }

    /// The workers' Python: interpreter, `worker_init` (run on each node before the manager
    /// starts, so `module load` and `source venv/bin/activate` reach the workers),
    /// environment, accelerators. `working_dir` and the size limits are the manager's own.
    pub fn python(mut self, python: PythonConfig) -> Self {
        self.python = python;
        self
    }

    /// How blocks are scaled. Its walltime is set by [`EndpointBuilder::walltime`], and its
    /// slots per block from the nodes and workers.
    pub fn strategy(mut self, strategy: StrategyConfig) -> Self {
        self.strategy = strategy;
        self
    }

    /// How long a block may run: asked of the provider for every block, and the strategy
    /// drains each block `drain_margin` before (default: a tenth of it, at most 2 minutes).
    pub fn walltime(mut self, walltime: Duration) -> Self {
        self.walltime = Some(walltime);
        self
    }

    /// How long before the walltime a block is drained.
    pub fn drain_margin(mut self, margin: Duration) -> Self {
        self.drain_margin = Some(margin);
        self
    }

    /// Where managers dial in (default `127.0.0.1:0`, a free port on loopback: fine for
    /// local blocks; a cluster needs an address the compute nodes reach).
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.listen = address;
        self
    }

    /// The `host:port` managers are told to dial, when it differs from the listening
    /// address (listening on `0.0.0.0`, behind NAT). Default: the bound address.
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// The secret managers present (default: a fresh random one per start).
    pub fn manager_token(mut self, token: impl Into<String>) -> Self {
        self.manager_token = Some(token.into());
        self
    }

    /// TLS on the managers' link, so the token never travels in clear (feature `tls`).
    pub fn manager_tls(mut self, tls: ManagerTls) -> Self {
        self.manager_tls = Some(tls);
        self
    }

    /// Takes tasks from a gateway (feature `client`): dials out to `link.url` as endpoint
    /// `link.endpoint_id`, and reconnects whenever the link drops.
    pub fn gateway(mut self, link: GatewayLink) -> Self {
        self.gateway = Some(link);
        self
    }

    /// How often a task whose manager was lost is re-run before it fails (default 2).
    pub fn retries_on_manager_loss(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The only data formats this endpoint runs (default: every format). With
    /// `[Format::Json]`, a task with a pickled argument or a pickled function fails with a
    /// [`TaskError::is_format_refused`](funcx_core::TaskError::is_format_refused) error as
    /// it enters the endpoint, before any manager or worker sees it, whatever the gateway in
    /// front allowed: the endpoint then never loads a pickle, so a permitted user can run
    /// only the source-text functions it was given.
    pub fn allowed_formats(mut self, formats: impl IntoIterator<Item = Format>) -> Self {
        self.allowed_formats = Some(formats.into_iter().collect());
        self
    }

    /// The only functions this endpoint runs (default: every function). A task of another
    /// function fails with a
    /// [`TaskError::is_function_refused`](funcx_core::TaskError::is_function_refused) error as
    /// it enters the endpoint: the endpoint's own allow-list, enforced where the code runs
    /// even if the gateway in front is misconfigured or compromised.
    pub fn allowed_functions(mut self, functions: impl IntoIterator<Item = FunctionId>) -> Self {
        self.allowed_functions = Some(functions.into_iter().collect());
        self
    }

    /// How managers are watched (heartbeats).
    pub fn agent_config(mut self, agent: AgentConfig) -> Self {
        self.agent = agent;
        self
    }

    /// How long [`Endpoint::stop`] waits for blocks to end after releasing them (default 2
    /// minutes); past it, it reports them in the last error and returns.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Starts the endpoint: binds the managers' address, starts the strategy (which submits
    /// its first blocks), and dials the gateway if there is one. Must be called within a
    /// multi-threaded Tokio runtime.
    pub async fn start(self) -> Result<Endpoint, EndpointError> {
        let provider = self.provider.clone().ok_or(EndpointError::NoProvider)?;
        if self.nodes_per_block == 0 || self.workers_per_node == 0 {
            return Err(EndpointError::Invalid(
                "nodes_per_block and workers_per_node must be at least 1".into(),
            ));
        }
        let token = match &self.manager_token {
            Some(token) => token.clone(),
            None => random_token(),
        };
        let mut executor = Executor::builder().retries_on_worker_death(self.retries);
        if let Some(formats) = &self.allowed_formats {
            executor = executor.allowed_formats(formats.iter().copied());
        }
        if let Some(functions) = &self.allowed_functions {
            executor = executor.allowed_functions(functions.iter().copied());
        }
        let executor = executor.start_without_workers();
        let mut transport = TcpTransport::builder().token(&token);
        if let Some(tls) = &self.manager_tls {
            transport = with_server_tls(transport, tls)?;
        }
        let acceptor = transport
            .build()
            .listen(self.listen)
            .await
            .map_err(|source| EndpointError::Listen {
                address: self.listen,
                source,
            })?;
        let address = acceptor.local_addr();
        let agent = EndpointAgent::new(executor.clone(), self.agent);
        let serving = tokio::spawn(agent.clone().serve(acceptor));

        let block = self.block_request(address, &token)?;
        let slots_per_block = self.nodes_per_block * self.workers_per_node;
        let mut strategy = self.strategy.clone().slots_per_block(slots_per_block);
        if let Some(walltime) = self.walltime {
            let margin = self
                .drain_margin
                .unwrap_or_else(|| (walltime / 10).min(Duration::from_secs(120)));
            strategy = strategy.walltime(walltime, margin);
        }
        let capacity = strategy.clone().normalized().max_blocks * slots_per_block;
        let strategy = Strategy::start(executor.clone(), provider.clone(), block, strategy);
        let (state, _) = watch::channel(EndpointState::Starting);
        let inner = Arc::new(Inner {
            name: self.name.clone(),
            address,
            executor,
            agent,
            provider,
            strategy: Mutex::new(Some(strategy)),
            last_strategy: Mutex::new(funcx_core::EndpointStatus::default()),
            state,
            link: Mutex::new(None),
            serving,
            stop_timeout: self.stop_timeout,
            stopping: tokio::sync::Mutex::new(()),
        });
        match &self.gateway {
            None => {
                inner.state.send_replace(EndpointState::Running);
            }
            #[cfg(feature = "client")]
            Some(link) => link::start(&inner, link, capacity)?,
            #[cfg(not(feature = "client"))]
            Some(_) => {
                let _ = capacity;
                return Err(EndpointError::Invalid(
                    "a gateway is set, but funcx was built without the `client` feature".into(),
                ));
            }
        }
        info!(endpoint = %self.name, %address, provider = inner.provider.name(), "endpoint started");
        Ok(Endpoint { inner })
    }

    fn block_request(
        &self,
        address: SocketAddr,
        token: &str,
    ) -> Result<BlockRequest, EndpointError> {
        let mut command = match &self.manager {
            Some(command) => command.clone(),
            None => ManagerCommand::new(std::env::current_exe().map_err(EndpointError::Manager)?)
                .arg("manager"),
        };
        let dial = self
            .advertise
            .clone()
            .unwrap_or_else(|| advertised(address));
        command = command
            .args(["--endpoint", &dial])
            .args(["--workers", &self.workers_per_node.to_string()])
            .arg("--python")
            .arg(self.python.python_path())
            .env("FUNCX_TOKEN", token);
        let gpus = self.python.accelerator_list();
        if !gpus.is_empty() {
            command = command.args(["--gpus", &gpus.join(",")]);
        }
        if let Some(tls) = &self.manager_tls {
            command = command.arg("--tls-ca").arg(&tls.ca);
            if let Some(name) = &tls.server_name {
                command = command.args(["--tls-name", name]);
            }
        }
        for (key, value) in self.python.environment() {
            command = command.env(key, value);
        }
        let mut block = BlockRequest::new(command).nodes(self.nodes_per_block);
        if let Some(walltime) = self.walltime {
            block = block.walltime(walltime);
        }
        let mut init = String::new();
        if let Some(dir) = self.python.current_dir() {
            init.push_str(&format!(
                "cd {}\n",
                funcx_providers::shell_quote(&dir.to_string_lossy())
            ));
        }
        if let Some(snippet) = self.python.init_snippet() {
            init.push_str(snippet);
        }
        if !init.is_empty() {
            block = block.worker_init(init);
        }
        Ok(block)
    }
}

#[cfg(feature = "tls")]
fn with_server_tls(
    transport: funcx_transport::TcpTransportBuilder,
    tls: &ManagerTls,
) -> Result<funcx_transport::TcpTransportBuilder, EndpointError> {
    let config = funcx_transport::tls::TlsServerConfig::from_pem_files(&tls.cert, &tls.key)
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    Ok(transport.tls_server(config))
}

#[cfg(not(feature = "tls"))]
fn with_server_tls(
    _transport: funcx_transport::TcpTransportBuilder,
    _tls: &ManagerTls,
) -> Result<funcx_transport::TcpTransportBuilder, EndpointError> {
    Err(EndpointError::Tls(
        "TLS for managers is set, but funcx was built without the `tls` feature".into(),
    ))
}

/// What managers dial for an endpoint bound to `address`: the address itself, or this
/// host's name when bound to every interface.
fn advertised(address: SocketAddr) -> String {
    if address.ip().is_unspecified() {
        format!("{}:{}", hostname(), address.port())
    } else {
        address.to_string()
    }
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// 32 random hex digits from the standard library's randomly keyed hashers.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut token = String::new();
    for _ in 0..2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        token.push_str(&format!("{:016x}", hasher.finish()));
    }
    token
}

/// How long drained blocks get to end on their own (their managers exit) before they are
/// cancelled.
const OWN_END_GRACE: Duration = Duration::from_secs(15);

/// A running endpoint. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.inner.name)
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

struct Inner {
    name: String,
    address: SocketAddr,
    executor: Executor,
    agent: EndpointAgent,
    provider: Arc<dyn Provider>,
    strategy: Mutex<Option<Strategy>>,
    /// The strategy's last report, kept for the status once it is stopped.
    last_strategy: Mutex<funcx_core::EndpointStatus>,
    state: watch::Sender<EndpointState>,
    link: Mutex<Option<link::Link>>,
    serving: tokio::task::JoinHandle<()>,
    stop_timeout: Duration,
    /// Held by whoever drains or stops, so that two calls do not interleave.
    stopping: tokio::sync::Mutex<()>,
}

impl Endpoint {
    /// A builder; see the [module docs](self).
    pub fn builder() -> EndpointBuilder {
        EndpointBuilder::default()
    }

    /// The executor its tasks run on: submit to it directly when there is no gateway.
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// Where managers dial in.
    pub fn address(&self) -> SocketAddr {
        self.inner.address
    }

    /// The managers registered now: host, pid, block, slots.
    pub fn managers(&self) -> Vec<funcx_transport::remote::ManagerInfo> {
        self.inner.agent.managers()
    }

    /// Its state now.
    pub fn state(&self) -> EndpointState {
        *self.inner.state.borrow()
    }

    /// A snapshot: state, blocks, managers, workers busy and idle, tasks queued and
    /// running, last error. Block and worker figures are as of the strategy's last look
    /// (every [`StrategyConfig::period`]).
    pub fn status(&self) -> EndpointReport {
        let mut strategy = match self.inner.strategy.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(strategy) => {
                    let status = strategy.status();
                    if let Ok(mut last) = self.inner.last_strategy.lock() {
                        *last = status.clone();
                    }
                    status
                }
                None => self
                    .inner
                    .last_strategy
                    .lock()
                    .map(|last| last.clone())
                    .unwrap_or_default(),
            },
            Err(_) => funcx_core::EndpointStatus::default(),
        };
        let (gateway, connected) = match self.inner.link.lock().ok().as_deref() {
            Some(Some(link)) => {
                let health = link.health();
                if let Some(error) = health.error.filter(|_| !health.connected) {
                    strategy.last_error = Some(error);
                }
                (Some(link.url()), Some(health.connected))
            }
            _ => (None, None),
        };
        EndpointReport {
            name: self.inner.name.clone(),
            state: self.state(),
            address: self.inner.address,
            gateway,
            connected,
            strategy,
        }
    }

    /// Waits until the gateway ends this endpoint's link on its own: it stopped the endpoint
    /// remotely (`Some` with why), or could not be reached for too long. Never resolves
    /// without a gateway, nor when [`Endpoint::drain`] ended the link.
    pub async fn ended_by_gateway(&self) -> String {
        let ended = self
            .inner
            .link
            .lock()
            .ok()
            .and_then(|link| link.as_ref().map(|link| link.ended()));
        match ended {
            Some(mut ended) => loop {
                if let Some(reason) = ended.borrow_and_update().clone() {
                    return reason;
                }
                if ended.changed().await.is_err() {
                    return std::future::pending().await;
                }
            },
            None => std::future::pending().await,
        }
    }

    /// Drains: takes no new tasks (a gateway is asked to send no more), finishes and
    /// delivers every task it holds, then lets its managers go (they say goodbye and exit).
    /// Blocks stay until [`Endpoint::stop`].
    pub async fn drain(&self) {
        let _guard = self.inner.stopping.lock().await;
        self.drain_locked().await;
    }

    async fn drain_locked(&self) {
        if matches!(self.state(), EndpointState::Stopped) {
            return;
        }
        self.inner.state.send_replace(EndpointState::Draining);
        let link = self.inner.link.lock().ok().and_then(|mut link| link.take());
        if let Some(link) = link {
            link.leave().await;
        }
        self.inner.executor.shutdown().await;
        info!(endpoint = %self.inner.name, "endpoint drained");
    }

    /// Drains (see [`Endpoint::drain`]), then releases every block and waits until the
    /// provider reports each one ended, so that no manager or worker of the endpoint is
    /// left running when it returns (up to [`EndpointBuilder::stop_timeout`]).
    pub async fn stop(&self) {
        let _guard = self.inner.stopping.lock().await;
        if matches!(self.state(), EndpointState::Stopped) {
            return;
        }
        self.drain_locked().await;
        let strategy = self.inner.strategy.lock().ok().and_then(|mut s| s.take());
        let mut running: Vec<BlockId> = Vec::new();
        let mut pending: Vec<BlockId> = Vec::new();
        if let Some(strategy) = strategy {
            let status = strategy.status();
            for block in status.blocks.iter().filter(|b| !b.state.is_finished()) {
                if block.managers > 0 {
                    running.push(block.id.clone());
                } else {
                    pending.push(block.id.clone());
                }
            }
            if let Ok(mut last) = self.inner.last_strategy.lock() {
                *last = status;
            }
            // Not cancelling: the drained managers are exiting on their own, and a block
            // cancelled now could kill one before it has stopped its workers.
            strategy.stop(false).await;
        }
        // Blocks without a manager hold nothing: cancelled at once. Blocks whose managers
        // drained end when they exit; those that do not within the grace are cancelled.
        self.cancel(&pending).await;
        let own_end = OWN_END_GRACE.min(self.inner.stop_timeout);
        if tokio::time::timeout(own_end, self.blocks_ended(&running))
            .await
            .is_err()
        {
            self.cancel(&running).await;
        }
        let blocks: Vec<BlockId> = running.into_iter().chain(pending).collect();
        let waited =
            tokio::time::timeout(self.inner.stop_timeout, self.blocks_ended(&blocks)).await;
        if waited.is_err() {
            let message = format!(
                "blocks still not ended {:?} after being released: {blocks:?}",
                self.inner.stop_timeout
            );
            warn!(endpoint = %self.inner.name, "{message}");
            if let Ok(mut last) = self.inner.last_strategy.lock() {
                last.last_error = Some(message);
            }
        }
        if let Ok(mut last) = self.inner.last_strategy.lock() {
            last.managers = 0;
            last.workers = 0;
            last.busy_workers = 0;
            last.idle_workers = 0;
            last.queued = 0;
            last.in_flight = 0;
            for block in &mut last.blocks {
                block.managers = 0;
                block.workers = 0;
                block.busy = 0;
            }
        }
        self.inner.serving.abort();
        self.inner.state.send_replace(EndpointState::Stopped);
        info!(endpoint = %self.inner.name, "endpoint stopped");
    }

    async fn cancel(&self, blocks: &[BlockId]) {
        for block in blocks {
            if let Err(error) = self.inner.provider.cancel(block).await {
                warn!(%block, %error, "could not cancel block");
            }
        }
    }

    async fn blocks_ended(&self, blocks: &[BlockId]) {
        if blocks.is_empty() {
            return;
        }
        let mut pause = Duration::from_millis(20);
        loop {
            match self.inner.provider.status(blocks).await {
                Ok(statuses) if statuses.iter().all(|s| s.state.is_finished()) => {
                    if let Ok(mut last) = self.inner.last_strategy.lock() {
                        for status in statuses {
                            if let Some(block) = last.blocks.iter_mut().find(|b| b.id == status.id)
                            {
                                block.state = status.state;
                            }
                        }
                    }
                    return;
                }
                Ok(_) => {}
                Err(error) => warn!(%error, "could not read block status while stopping"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

#[cfg(feature = "client")]
mod link {
    //! The gateway link: the endpoint is one manager of its queue at the gateway.

    use std::sync::{Arc, Mutex};

    use funcx_client::EndpointDial;
    use funcx_transport::remote::{
        run_manager, Dial, ExecutorRunner, ManagerConfig, ToEndpoint, ToManager,
    };
    use funcx_transport::{Connection, TransportError};
    use futures::future::BoxFuture;
    use tokio::sync::watch;
    use tracing::{info, warn};

    use super::*;

    /// The link's health, as its dial attempts saw it.
    #[derive(Debug, Clone, Default)]
    pub(super) struct Health {
        pub(super) connected: bool,
        pub(super) error: Option<String>,
    }

    pub(super) struct Link {
        url: String,
        health: Arc<Mutex<Health>>,
        leave: watch::Sender<bool>,
        ended: watch::Receiver<Option<String>>,
        task: tokio::task::JoinHandle<ManagerExit>,
    }

    impl Link {
        pub(super) fn url(&self) -> String {
            self.url.clone()
        }

        pub(super) fn ended(&self) -> watch::Receiver<Option<String>> {
            self.ended.clone()
        }

        pub(super) fn health(&self) -> Health {
            self.health.lock().map(|h| h.clone()).unwrap_or_default()
        }

        /// Asks the gateway to drain this endpoint, and waits until it did.
        pub(super) async fn leave(self) {
            self.leave.send_replace(true);
            match self.task.await {
                Ok(exit) => info!(%exit, "gateway link ended"),
                Err(error) => warn!(%error, "gateway link task failed"),
            }
        }
    }

    /// Records each dial's outcome, so the status can say whether the gateway is reachable
    /// and, if not, why (a refused token, a wrong address).
    struct Watched {
        dial: EndpointDial,
        health: Arc<Mutex<Health>>,
        state: watch::Sender<EndpointState>,
    }

    impl Dial for Watched {
        fn dial(&self) -> BoxFuture<'_, Result<Connection<ToEndpoint, ToManager>, TransportError>> {
            Box::pin(async move {
                let result = self.dial.dial().await;
                if let Ok(mut health) = self.health.lock() {
                    match &result {
                        Ok(_) => {
                            health.connected = true;
                            health.error = None;
                        }
                        Err(error) => {
                            health.connected = false;
                            health.error = Some(format!("gateway link: {error}"));
                        }
                    }
                }
                self.state.send_if_modified(|state| {
                    let next = match (&result, *state) {
                        (_, EndpointState::Draining | EndpointState::Stopped) => return false,
                        (Ok(_), _) => EndpointState::Running,
                        (Err(_), EndpointState::Starting) => return false,
                        (Err(_), _) => EndpointState::Disconnected,
                    };
                    let changed = *state != next;
                    *state = next;
                    changed
                });
                result
            })
        }
    }

    pub(super) fn start(
        inner: &Arc<Inner>,
        link: &GatewayLink,
        capacity: usize,
    ) -> Result<(), EndpointError> {
        let mut dial = EndpointDial::new(&link.url, &link.endpoint_id, &link.token);
        if let Some(ca) = &link.ca_file {
            dial = with_ca(dial, ca)?;
        }
        let health = Arc::new(Mutex::new(Health::default()));
        let watched = Watched {
            dial,
            health: health.clone(),
            state: inner.state.clone(),
        };
        let (leave, leave_rx) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(None);
        let info = ManagerInfo {
            id: ManagerId(u64::from(std::process::id()) << 32 | u64::from(inner.address.port())),
            // Its own block name at the gateway, so the gateway can tell it from others.
            block: Some(format!("endpoint:{}", inner.name)),
            host: hostname(),
            pid: std::process::id(),
            slots: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            gpus: Vec::new(),
        };
        let mut config = ManagerConfig::new(info).leave_on(leave_rx.clone());
        // An endpoint keeps dialling its gateway for as long as it runs; a stop ends it.
        config.give_up_after = Duration::from_secs(365 * 24 * 3600);
        config.max_backoff = Duration::from_secs(10);
        let runner = ExecutorRunner::new(inner.executor.clone(), capacity.max(1));
        let task = tokio::spawn(async move {
            let exit = run_manager(watched, runner, config).await;
            if !*leave_rx.borrow() {
                let reason = match &exit {
                    ManagerExit::Drained => "the gateway stopped this endpoint".to_string(),
                    other => format!("the gateway link ended: {other}"),
                };
                warn!(%reason, "endpoint ended by its gateway");
                ended_tx.send_replace(Some(reason));
            }
            exit
        });
        if let Ok(mut slot) = inner.link.lock() {
            *slot = Some(Link {
                url: link.url.clone(),
                health,
                leave,
                ended,
                task,
            });
        }
        Ok(())
    }

    #[cfg(feature = "tls")]
    fn with_ca(dial: EndpointDial, ca: &std::path::Path) -> Result<EndpointDial, EndpointError> {
        dial.ca_file(ca)
            .map_err(|e| EndpointError::Tls(e.to_string()))
    }

    #[cfg(not(feature = "tls"))]
    fn with_ca(_dial: EndpointDial, _ca: &std::path::Path) -> Result<EndpointDial, EndpointError> {
        Err(EndpointError::Tls(
            "a gateway CA file is set, but funcx was built without the `tls` feature".into(),
        ))
    }
}

#[cfg(not(feature = "client"))]
mod link {
    //! Without the `client` feature there is no link; these keep the types whole.

    /// Never constructed.
    pub(super) enum Link {}

    pub(super) struct Health {
        pub(super) connected: bool,
        pub(super) error: Option<String>,
    }

    impl Link {
        pub(super) fn url(&self) -> String {
            match *self {}
        }
        pub(super) fn ended(&self) -> tokio::sync::watch::Receiver<Option<String>> {
            match *self {}
        }
        pub(super) fn health(&self) -> Health {
            match *self {}
        }
        pub(super) async fn leave(self) {
            match self {}
        }
    }
}
