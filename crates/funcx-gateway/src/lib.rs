//! A self-hostable funcx gateway: an HTTP API in front of your endpoints.
//!
//! Users register functions and endpoints and submit tasks over HTTP (JSON with base64
//! payloads, or postcard for the Rust client); endpoints dial *out* to the gateway on the
//! same port and upgrade the connection to the funcx manager protocol, so they need no open
//! port of their own. Every accepted task and every result is stored durably
//! ([`store::RedbStore`]) before it is acknowledged, and unfinished tasks are submitted again
//! when the gateway restarts.
//!
//! ```
//! use funcx_gateway::{Gateway, GatewayConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = GatewayConfig::from_toml(r#"
//!     [[users]]
//!     name = "alice"
//!     token = "alice-secret-token-0123456789"
//! "#)?;
//! let gateway = Gateway::start(config).await?; // a store in memory: none configured
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let address = listener.local_addr()?;
//! tokio::spawn(async move { gateway.serve(listener).await });
//!
//! let health = reqwest::get(format!("http://{address}/health")).await?;
//! assert!(health.status().is_success());
//! # Ok(()) }
//! ```
//!
//! The pieces, each replaceable:
//!
//! - [`store::TaskStore`]: where state lives ([`store::MemoryStore`], [`store::RedbStore`];
//!   its docs say how a fleet of gateways would share a database instead).
//! - [`Authenticator`]: who is calling ([`TokenAuthenticator`] checks the store's hashed
//!   tokens; plug in OIDC or JWT validation instead).
//!
//! What talks to a gateway (`connect` and `RemoteConfig` (a remote executor), `EndpointDial`) and the API's bodies are the
//! `funcx-client` crate, which compiles none of the server; the gateway serves its types.
//!
//! With the `tls` feature, the gateway serves HTTPS when its configuration has a `[tls]`
//! table ([`TlsConfig`]), and the clients accept `https://` URLs; see the `tls` module.
//!
//! With the `globus-compute` feature and a `[globus_compute]` table ([`GlobusComputeConfig`]),
//! the gateway also serves the routes the unmodified Globus Compute SDK calls, publishes
//! results for its `Executor` to RabbitMQ, and runs its tasks on ordinary funcx endpoints;
//! see the README's "Your Globus Compute code, on your own gateway".
//!
//! Routes are listed in `GET /v1/openapi.json`; see [`api`] for the bodies.
#![warn(missing_docs)]

pub mod api;
mod auth;
mod config;
mod error;
mod fleet;
mod gateway;
mod globus;
mod metrics;
mod result_writes;
mod serve;
mod signal;
pub mod store;
#[cfg(feature = "tls")]
pub mod tls;

pub use auth::{new_token, Authenticator, RateLimiter, TokenAuthenticator, User};
pub use config::{
    ComputeClientConfig, GatewayConfig, GlobusComputeConfig, PostgresConfig, RateLimitConfig,
    StoreConfig, TlsConfig, UserConfig,
};
pub use error::{ApiError, GatewayError};
pub use gateway::{Gateway, GatewayBuilder};

/// A fresh directory for a test's files.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "funcx-gateway-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let _ = std::fs::create_dir_all(&dir);
    dir
}
