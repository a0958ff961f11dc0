//! Endpoints across machines: managers dial in to an endpoint and run its tasks.
//!
//! - [`messages`]: the manager protocol.
//! - [`EndpointAgent`]: the endpoint side; registers managers as pools of workers of an
//!   [`funcx_core::Executor`], watches their heartbeats, survives their reconnections.
//! - [`run_manager`]: the manager side; dials with back-off, relays tasks to a [`Runner`]
//!   (real workers through [`ExecutorRunner`], or simulated ones through [`EchoRunner`]),
//!   re-sends unacknowledged results after a reconnect, drains on request.

mod batch;
mod endpoint;
mod manager;
pub mod messages;
mod runner;

pub use endpoint::{AgentConfig, EndpointAgent, ResultKeeper};
pub use manager::{run_manager, Dial, ManagerConfig, ManagerExit, TcpDial};
pub use messages::{ManagerId, ManagerInfo, ToEndpoint, ToManager};
pub use runner::{EchoRunner, ExecutorRunner, Runner};
