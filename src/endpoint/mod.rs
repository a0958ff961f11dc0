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

mod builder;
#[cfg(feature = "cli")]
pub mod config;
#[cfg(feature = "client")]
mod link;
mod status;
mod stop;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use funcx_core::{Executor, Provider, Strategy};
use funcx_transport::remote::EndpointAgent;
use funcx_transport::TransportError;
use tokio::sync::watch;

pub use builder::{EndpointBuilder, GatewayLink, ManagerTls};
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
    last_strategy: Mutex<funcx_core::StrategyStatus>,
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
    /// (every [`StrategyConfig::period`](funcx_core::StrategyConfig::period)).
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
            Err(_) => funcx_core::StrategyStatus::default(),
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
