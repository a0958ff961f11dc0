//! [`RemoteConfig`], the options of a remote executor, and [`RemoteError`], why one could
//! not connect.

#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Duration;

use funcx_core::{Executor, ExecutorBuilder, TaskError};
use hyper::Method;
use tracing::info;

use super::driver::{self, Patience};
use super::http::{ClientTls, Http, HttpError};
use crate::model::EndpointView;

/// How to connect an [`Executor`] to an endpoint behind a gateway: the gateway, the user's
/// token, the endpoint, and how patient to be with the gateway.
///
/// [`connect`](crate::connect) takes the defaults; build one with [`RemoteConfig::new`] to
/// change them, then [`connect`](RemoteConfig::connect).
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    url: String,
    /// Other gateways of the same fleet, tried in turn when the current one is unreachable.
    failover: Vec<String>,
    token: String,
    endpoint: String,
    executor: ExecutorBuilder,
    give_up_after: Duration,
    request_timeout: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    max_request_bytes: usize,
    /// The CA file to trust for an `https` gateway, read at start.
    #[cfg(feature = "tls")]
    ca_file: Option<std::path::PathBuf>,
    /// A rustls configuration made by hand for an `https` gateway.
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl RemoteConfig {
    /// Endpoint `endpoint_id` of the gateway at `gateway_url` (`http://host:port`, or
    /// `https://host:port` with the `tls` feature), on behalf of the user whose bearer token
    /// is `user_token`; every other option at its default (see each setter).
    pub fn new(gateway_url: &str, user_token: &str, endpoint_id: &str) -> RemoteConfig {
        RemoteConfig {
            url: gateway_url.to_owned(),
            failover: Vec::new(),
            token: user_token.to_owned(),
            endpoint: endpoint_id.to_owned(),
            executor: Executor::builder(),
            give_up_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_request_bytes: 8 << 20,
            #[cfg(feature = "tls")]
            ca_file: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Adds `url`, another gateway on the same store (PostgreSQL), to move to when the
    /// current gateway cannot be reached: its tasks are resent there under the same
    /// idempotency keys (a gateway that stored them answers with their ids, creating nothing)
    /// and its results read there. Call once per gateway; they are tried in that order.
    pub fn failover(mut self, url: &str) -> RemoteConfig {
        self.failover.push(url.to_owned());
        self
    }

    /// The local executor's options: a default task timeout, the shutdown grace. (Its
    /// worker count does not apply: its only worker is the gateway.)
    pub fn executor(mut self, builder: ExecutorBuilder) -> RemoteConfig {
        self.executor = builder;
        self
    }

    /// How long the gateway may stay unreachable before outstanding tasks fail with a
    /// [`TaskError::is_manager_lost`] error (default 60 s). A gateway restart that takes
    /// less loses nothing.
    pub fn give_up_after(mut self, after: Duration) -> RemoteConfig {
        self.give_up_after = after;
        self
    }

    /// How long one HTTP request may take before it counts as a failure (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> RemoteConfig {
        self.request_timeout = timeout;
        self
    }

    /// The first pause after a failed request or a dropped event stream (default 50 ms); it
    /// doubles up to `max` (default 2 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> RemoteConfig {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// The largest submission body to send (default 8 MiB); larger batches are split. A
    /// gateway that answers 413 makes the client halve it.
    pub fn max_request_bytes(mut self, bytes: usize) -> RemoteConfig {
        self.max_request_bytes = bytes.max(1);
        self
    }

    /// Trusts the CA certificates in the PEM file `path` for an `https://` gateway, instead
    /// of the Mozilla roots: the certificate of a self-signed gateway, or its private CA.
    /// The file is read by [`connect`](Self::connect), which fails with [`RemoteError::Tls`] if
    /// it cannot be used.
    #[cfg(feature = "tls")]
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> RemoteConfig {
        self.ca_file = Some(path.into());
        self
    }

    /// Uses a rustls configuration made by hand for an `https://` gateway (client
    /// certificates, custom verification); it takes precedence over
    /// [`ca_file`](Self::ca_file).
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> RemoteConfig {
        self.tls = Some(config);
        self
    }

    /// The TLS trust configured, if any (`None`: the Mozilla roots).
    #[cfg(feature = "tls")]
    fn client_tls(&self) -> Result<ClientTls, RemoteError> {
        if let Some(config) = &self.tls {
            return Ok(Some(config.clone()));
        }
        match &self.ca_file {
            Some(path) => {
                crate::tls::client_config(path)
                    .map(Some)
                    .map_err(|error| RemoteError::Tls {
                        url: self.url.clone(),
                        reason: error.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    #[cfg(not(feature = "tls"))]
    fn client_tls(&self) -> Result<ClientTls, RemoteError> {
        Ok(())
    }

    /// An [`Executor`] whose tasks run on the endpoint.
    ///
    /// Checks first that the gateway answers and that the user sees the endpoint, so a
    /// wrong address, token or endpoint fails here with the reason rather than task by task.
    /// The endpoint itself need not be connected yet: tasks wait in the gateway for it.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn connect(self) -> Result<Executor, RemoteError> {
        let http = Http::new(
            &self.url,
            &self.failover,
            &self.token,
            self.request_timeout,
            self.client_tls()?,
        )?;
        let path = format!("/v1/endpoints/{}", self.endpoint);
        // Each gateway once, at most: an unreachable one moves `http` to the next.
        let mut checked = http.call(Method::GET, &path, None).await;
        for _ in 0..self.failover.len() {
            match &checked {
                Err(HttpError::Unreachable(_) | HttpError::Tls(_)) => {
                    checked = http.call(Method::GET, &path, None).await;
                }
                _ => break,
            }
        }
        let view: EndpointView =
            checked
                .and_then(|response| response.decode())
                .map_err(|error| match error {
                    HttpError::Unreachable(reason) => RemoteError::Unreachable {
                        url: self.url.clone(),
                        reason,
                    },
                    HttpError::Tls(reason) => RemoteError::Tls {
                        url: self.url.clone(),
                        reason,
                    },
                    HttpError::Refused {
                        status, message, ..
                    } => RemoteError::Refused {
                        status: status.as_u16(),
                        message,
                    },
                })?;
        info!(
            endpoint = %view.endpoint_id,
            name = %view.name,
            connected = view.status.connected,
            gateway = %self.url,
            "connected to the gateway"
        );

        // Lost is reported only when the dispatcher stops the pool, so the retry budget
        // never applies; the gateway re-runs tasks whose endpoint was lost itself.
        let executor = self.executor.start_without_workers();
        let patience = Patience {
            give_up_after: self.give_up_after,
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
            max_request_bytes: self.max_request_bytes,
        };
        driver::attach(&executor, http, self.url, self.endpoint, patience)
            .await
            .map_err(RemoteError::Executor)?;
        Ok(executor)
    }
}

/// Why [`connect`](crate::connect) or [`RemoteConfig::connect`] could not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The gateway URL is not an `http://host:port[/prefix]` URL (or `https://`, with the
    /// `tls` feature).
    #[error("invalid gateway URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token is not a valid HTTP header value.
    #[error("the token contains characters that cannot be sent in a header")]
    InvalidToken,
    /// The gateway could not be reached.
    #[error("the gateway at {url} cannot be reached: {reason}")]
    Unreachable {
        /// The URL given.
        url: String,
        /// The connection failure.
        reason: String,
    },
    /// The TLS connection to an `https` gateway failed: its certificate is not signed by a
    /// trusted CA or not valid for its name, or the CA file could not be used.
    #[error("TLS with the gateway at {url} failed: {reason}")]
    Tls {
        /// The URL given.
        url: String,
        /// What rustls objected to, or why the CA file is unusable.
        reason: String,
    },
    /// The gateway refused: a wrong token (401), an endpoint this user may not see (404).
    #[error("the gateway refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The gateway's explanation.
        message: String,
    },
    /// The local executor would not take the gateway as its worker (it is shutting down).
    #[error("the executor refused the gateway pool: {0}")]
    Executor(TaskError),
}
