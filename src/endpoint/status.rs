//! What an endpoint says about itself: its state, its blocks and managers, its tasks.

use std::net::SocketAddr;

use funcx_core::StrategyStatus;
use serde::{Deserialize, Serialize};

/// Where an endpoint is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Listening for managers; dialling its gateway, if it has one, but not connected yet.
    Starting,
    /// Taking tasks: listening, and connected to its gateway if it has one.
    Running,
    /// Its gateway link is down; it keeps dialling (the tasks it holds keep running).
    Disconnected,
    /// Taking no new tasks; finishing and delivering the ones it holds.
    Draining,
    /// Drained, its blocks released: nothing of it runs any more.
    Stopped,
}

impl EndpointState {
    /// The word for it in `funcx-endpoint status`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Starting => "starting",
            EndpointState::Running => "running",
            EndpointState::Disconnected => "disconnected",
            EndpointState::Draining => "draining",
            EndpointState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for EndpointState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of an endpoint, as [`super::Endpoint::status`] returns it and
/// `funcx-endpoint status --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: EndpointState,
    /// Where its managers dial in.
    pub address: SocketAddr,
    /// The gateway it takes tasks from, if any.
    pub gateway: Option<String>,
    /// Whether it is connected to that gateway now (`None` without a gateway).
    pub connected: Option<bool>,
    /// Blocks, managers, workers busy and idle, tasks queued and running, from its scaling
    /// strategy. Its `last_error` is the gateway link's while the link is failing (a refused
    /// token, an unreachable gateway), else the last problem with blocks.
    #[serde(flatten)]
    pub strategy: StrategyStatus,
}
