//! [`GlobusComputeConfig`]: the `[globus_compute]` table of a gateway's configuration.

use serde::Deserialize;

use crate::error::GatewayError;

/// How the gateway serves the Globus Compute SDK (feature `globus-compute`).
///
/// ```
/// use funcx_gateway::GatewayConfig;
///
/// let config = GatewayConfig::from_toml(r#"
///     [[users]]
///     name = "alice"
///     token = "alice-secret-token-0123456789"
///
///     [globus_compute]
///     amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f"
///
///     [[globus_compute.clients]]
///     client_id = "0c3d9b1e-8f2a-4c7e-9d41-5b6a7e8f9a01"
///     client_secret = "a-long-random-client-secret"
///     user = "alice"
/// "#);
/// # if cfg!(feature = "globus-compute") {
/// let config = config.unwrap();
/// assert_eq!(config.globus_compute.unwrap().clients[0].user, "alice");
/// # } else { assert!(config.is_err()); }
/// ```
///
/// Parsed whether or not the crate was built with the feature, so that a gateway built
/// without it refuses such a configuration with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobusComputeConfig {
    /// The RabbitMQ the gateway publishes results to, as an AMQP URI
    /// (`amqp://user:password@host:port/vhost`, vhost `%2f` for `/`).
    pub amqp_url: String,
    /// The AMQP URI given to SDK clients for reading their results
    /// (`GET /v2/get_amqp_result_connection_url`); defaults to `amqp_url`. Set it when clients
    /// reach the broker under another name or with other credentials than the gateway.
    #[serde(default)]
    pub client_amqp_url: Option<String>,
    /// Prefixes every result queue's name (`<prefix><user>.<task group id>`), default
    /// `funcx.gc.`.
    #[serde(default = "default_queue_prefix")]
    pub queue_prefix: String,
    /// How long a result queue may go unused before RabbitMQ deletes it (`x-expires`), in
    /// seconds; default 7 days, as long as the gateway keeps results by default.
    #[serde(default = "default_queue_expiry")]
    pub queue_expiry_secs: u64,
    /// Confidential clients (`GLOBUS_COMPUTE_CLIENT_ID` / `GLOBUS_COMPUTE_CLIENT_SECRET`) and
    /// the gateway user each acts as.
    #[serde(default)]
    pub clients: Vec<ComputeClientConfig>,
}

/// A confidential client of the token route (OAuth2 client credentials).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeClientConfig {
    /// What the SDK sends as `GLOBUS_COMPUTE_CLIENT_ID` (any text; a UUID by convention).
    pub client_id: String,
    /// Its secret (`GLOBUS_COMPUTE_CLIENT_SECRET`); at least 16 characters.
    pub client_secret: String,
    /// The gateway user it acts as (a user of `[[users]]` or of the store).
    pub user: String,
}

fn default_queue_prefix() -> String {
    "funcx.gc.".to_owned()
}

fn default_queue_expiry() -> u64 {
    7 * 24 * 3600
}

impl GlobusComputeConfig {
    /// A configuration publishing to `amqp_url`, with the defaults and no clients.
    pub fn new(amqp_url: impl Into<String>) -> GlobusComputeConfig {
        GlobusComputeConfig {
            amqp_url: amqp_url.into(),
            client_amqp_url: None,
            queue_prefix: default_queue_prefix(),
            queue_expiry_secs: default_queue_expiry(),
            clients: Vec::new(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), GatewayError> {
        if !cfg!(feature = "globus-compute") {
            return Err(GatewayError::Config(
                "[globus_compute] is set, but this gateway was built without Globus Compute support; rebuild with the `globus-compute` feature".into(),
            ));
        }
        for url in std::iter::once(&self.amqp_url).chain(&self.client_amqp_url) {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(GatewayError::Config(format!(
                    "globus_compute: {url:?} is not an AMQP URI (amqp://user:password@host:port/vhost)"
                )));
            }
        }
        let queue_name_safe = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if !self.queue_prefix.chars().all(queue_name_safe) || self.queue_prefix.len() > 100 {
            return Err(GatewayError::Config(
                "globus_compute.queue_prefix: up to 100 characters of letters, digits, '.', '_' and '-'".into(),
            ));
        }
        if self.queue_expiry_secs == 0 || self.queue_expiry_secs > u64::from(u32::MAX) / 1000 {
            return Err(GatewayError::Config(
                "globus_compute.queue_expiry_secs: between 1 and 4294967 seconds".into(),
            ));
        }
        for client in &self.clients {
            if client.client_id.trim().is_empty()
                || client.client_secret.len() < 16
                || client.user.is_empty()
            {
                return Err(GatewayError::Config(format!(
                    "globus_compute client {:?}: a client_id, a client_secret of at least 16 characters and a user are required",
                    client.client_id
                )));
            }
        }
        let mut ids: Vec<&str> = self.clients.iter().map(|c| c.client_id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(GatewayError::Config(
                "globus_compute: two clients with the same client_id".into(),
            ));
        }
        Ok(())
    }
}
