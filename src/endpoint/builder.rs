//! Configuring an endpoint and starting it: [`EndpointBuilder`], and the settings of its
//! links to managers ([`ManagerTls`]) and to a gateway ([`GatewayLink`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use funcx_core::{
    BlockRequest, Executor, Format, FunctionId, ManagerCommand, ManagerLayout, Provider, Strategy,
    StrategyConfig,
};
use funcx_python::PythonConfig;
use funcx_transport::remote::{AgentConfig, EndpointAgent};
use funcx_transport::TcpTransport;
use tokio::sync::watch;
use tracing::info;

#[cfg(feature = "client")]
use super::link;
use super::{Endpoint, EndpointError, EndpointState, Inner};

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
    /// Other gateways of the same fleet (sharing one database), dialled in this order when
    /// the one before cannot be reached; what was in flight resumes there. Empty for a
    /// single gateway.
    pub failover: Vec<String>,
}

impl std::fmt::Debug for GatewayLink {
    // By hand: the token must not end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayLink")
            .field("url", &self.url)
            .field("endpoint_id", &self.endpoint_id)
            .field("ca_file", &self.ca_file)
            .field("failover", &self.failover)
            .finish_non_exhaustive()
    }
}

/// Configures an [`Endpoint`]; see the [module docs](super).
pub struct EndpointBuilder {
    name: String,
    provider: Option<Arc<dyn Provider>>,
    manager: Option<ManagerCommand>,
    nodes_per_block: usize,
    manager_layout: ManagerLayout,
    workers_per_node: usize,
    memory_per_node: Option<u64>,
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
            manager_layout: ManagerLayout::PerNode,
            workers_per_node: 1,
            memory_per_node: None,
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

    /// Nodes per block (default 1), each with its own manager unless
    /// [`EndpointBuilder::manager_layout`] says one manager holds them all.
    pub fn nodes_per_block(mut self, nodes: usize) -> Self {
        self.nodes_per_block = nodes;
        self
    }

    /// Where a block's managers run (default [`ManagerLayout::PerNode`]: one on each node,
    /// so a task holds at most one node). [`ManagerLayout::PerBlock`] runs one manager for
    /// the whole block, started in its batch job with `--block-nodes auto`, so that it holds
    /// all `nodes_per_block` nodes and multi-node MPI tasks
    /// ([`TaskOptions::nodes`](funcx_core::TaskOptions::nodes)) launch their ranks across the
    /// allocation; the endpoint tells its gateway that a block has that many nodes. Needs a
    /// batch scheduler's provider (Slurm, PBS, Grid Engine): the local and EC2 providers
    /// reject such blocks.
    pub fn manager_layout(mut self, layout: ManagerLayout) -> Self {
        self.manager_layout = layout;
        self
    }

    /// Python workers per manager (default 1). With one manager per block
    /// ([`ManagerLayout::PerBlock`]) these are its workers, on the block's first node, each
    /// running a plain task or the launcher of an MPI task; the block then also asks its
    /// scheduler for this many task slots on each node, for the ranks.
    pub fn workers_per_node(mut self, workers: usize) -> Self {
        self.workers_per_node = workers;
        self
    }

    /// Bytes of memory tasks may reserve on each node (its managers' `--memory`; default:
    /// what each node's manager finds on its machine). Set, the endpoint also tells its
    /// gateway, which then fails at once a task asking for more than one node has.
    pub fn memory_per_node(mut self, bytes: u64) -> Self {
        self.memory_per_node = Some(bytes);
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
        let slots_per_block = self.slots_per_block();
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
            last_strategy: Mutex::new(funcx_core::StrategyStatus::default()),
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
            Some(link) => link::start(&inner, link, capacity, self.largest_node())?,
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

    /// The worker slots of one block: a manager's workers on each node, or the one
    /// manager's for a block whose manager holds all its nodes.
    fn slots_per_block(&self) -> usize {
        match self.manager_layout {
            ManagerLayout::PerNode => self.nodes_per_block * self.workers_per_node,
            ManagerLayout::PerBlock => self.workers_per_node,
        }
    }

    /// What one task can be given on the largest node of this endpoint: every node is a
    /// manager it starts with the same `--workers`, `--gpus` and `--memory`, so the shape of
    /// one is the shape of all. (A manager started by hand with more is not seen here: the
    /// gateway judges by this.) The nodes are those of one block: its own host alone for
    /// managers that each hold their own node; for one manager per block, as many stand-in
    /// names as the block has nodes, since their host names are known only inside each
    /// block's batch job, and the gateway judges a task's nodes by their count.
    #[cfg(feature = "client")]
    fn largest_node(&self) -> funcx_core::Capacity {
        let nodes = match self.manager_layout {
            ManagerLayout::PerNode => None,
            ManagerLayout::PerBlock => Some(
                (1..=self.nodes_per_block)
                    .map(|node| format!("block-node-{node}"))
                    .collect(),
            ),
        };
        funcx_core::Capacity {
            cores: Some(u32::try_from(self.workers_per_node).unwrap_or(u32::MAX)),
            memory: self.memory_per_node,
            gpus: Some(self.python.accelerator_list().to_vec()),
            nodes,
        }
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
        if let Some(memory) = self.memory_per_node {
            command = command.args(["--memory", &memory.to_string()]);
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
        if self.manager_layout == ManagerLayout::PerBlock {
            // The one manager takes the block's nodes from its batch job.
            command = command.args(["--block-nodes", "auto"]);
        }
        // A per-block job gives each node a task slot per worker, for the ranks of the MPI
        // tasks its manager launches; one manager per node needs none beyond its own.
        let mut block = BlockRequest::new(command)
            .nodes(self.nodes_per_block)
            .layout(self.manager_layout)
            .rank_slots_per_node(self.workers_per_node);
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
        format!("{}:{}", funcx_core::hostname(), address.port())
    } else {
        address.to_string()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(layout: ManagerLayout) -> EndpointBuilder {
        EndpointBuilder::default()
            .manager_program("funcx-manager")
            .nodes_per_block(4)
            .workers_per_node(8)
            .manager_layout(layout)
    }

    fn asks_for_block_nodes(block: &BlockRequest) -> bool {
        block
            .command()
            .arguments()
            .windows(2)
            .any(|pair| pair[0] == "--block-nodes" && pair[1] == "auto")
    }

    #[test]
    fn per_node_blocks_start_a_manager_on_each_node_holding_its_own() {
        let builder = builder(ManagerLayout::PerNode);
        let address = SocketAddr::from(([127, 0, 0, 1], 7070));
        let block = builder.block_request(address, "t").expect("request");
        assert_eq!(block.manager_layout(), ManagerLayout::PerNode);
        assert_eq!(block.node_count(), 4);
        assert!(!asks_for_block_nodes(&block));
        assert_eq!(builder.slots_per_block(), 32);
        #[cfg(feature = "client")]
        assert_eq!(builder.largest_node().nodes, None);
    }

    #[test]
    fn per_block_blocks_start_one_manager_holding_all_their_nodes() {
        let builder = builder(ManagerLayout::PerBlock);
        let address = SocketAddr::from(([127, 0, 0, 1], 7070));
        let block = builder.block_request(address, "t").expect("request");
        assert_eq!(block.manager_layout(), ManagerLayout::PerBlock);
        assert_eq!(block.node_count(), 4);
        assert_eq!(block.per_node_rank_slots(), 8, "a task slot per worker");
        assert!(asks_for_block_nodes(&block), "{:?}", block.command());
        assert_eq!(builder.slots_per_block(), 8, "one manager's workers");
        #[cfg(feature = "client")]
        assert_eq!(
            builder.largest_node().nodes.map(|nodes| nodes.len()),
            Some(4),
            "the gateway is told the block's node count"
        );
    }
}
