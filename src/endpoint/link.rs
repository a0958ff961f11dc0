//! The gateway link: the endpoint is one manager of its queue at the gateway.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use funcx_client::EndpointDial;
use funcx_transport::remote::{
    run_manager, Dial, ExecutorRunner, ManagerConfig, ManagerExit, ManagerId, ManagerInfo,
    ToEndpoint, ToManager,
};
use funcx_transport::{Connection, TransportError};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{EndpointError, EndpointState, GatewayLink, Inner};

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

/// Dials the gateway as one manager of `capacity` slots whose machine is `node`: what one
/// task can be given on the largest of its nodes (cores, GPUs, memory) and the nodes of one
/// block, so that the gateway sends it the tasks that could fit there and fails the others
/// at once. Its slots are spread over many nodes: they are not one machine's cores.
pub(super) fn start(
    inner: &Arc<Inner>,
    link: &GatewayLink,
    capacity: usize,
    node: funcx_core::Capacity,
) -> Result<(), EndpointError> {
    let mut dial = EndpointDial::new(&link.url, &link.endpoint_id, &link.token);
    for url in &link.failover {
        dial = dial.failover(url);
    }
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
        host: funcx_core::hostname(),
        pid: std::process::id(),
        slots: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
        gpus: node.gpus.unwrap_or_default(),
        cores: node.cores,
        memory: node.memory,
        // One block's nodes: empty (its own host alone) when it starts one manager per node,
        // each holding its own node; the gateway fails at once a task asking for more.
        nodes: node.nodes.unwrap_or_default(),
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
