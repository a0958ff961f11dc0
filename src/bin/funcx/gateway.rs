//! The gateway's HTTP API as `funcx` calls it: requests, errors, TLS, JSON output.

use super::*;

/// The gateway's HTTP API, as this program calls it.
pub(crate) struct Gateway {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) token: String,
}

/// The API's error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Deserialize)]
pub(crate) struct ErrorDetail {
    pub(crate) code: String,
    pub(crate) message: String,
}

/// An error and its causes, on one line: reqwest's own text leaves out why a connection failed.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        source = cause.source();
    }
    text
}

impl Gateway {
    pub(crate) fn new(settings: Settings) -> Result<Gateway> {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120));
        let https = settings.url.starts_with("https://");
        let builder = if https || settings.url.starts_with("http://") {
            with_tls(builder, https, settings.ca_file.as_deref())?
        } else {
            return Err(Failure(
                CONFIG,
                format!(
                    "the gateway's URL is http://HOST:PORT or https://HOST:PORT, not {:?}",
                    settings.url
                ),
            ));
        };
        let http = builder.build().map_err(|e| {
            Failure(
                CONFIG,
                format!("cannot set up the HTTP client: {}", chain(&e)),
            )
        })?;
        Ok(Gateway {
            http,
            url: settings.url,
            token: settings.token,
        })
    }

    /// Sends a request with the user's token; a JSON answer on success (`Null` if empty), the
    /// HTTP status with the API's error code and message otherwise.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            Failure(
                FAILED,
                format!(
                    "{method} {path}: cannot reach the gateway at {}: {}",
                    self.url,
                    chain(&e)
                ),
            )
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            Failure(
                FAILED,
                format!(
                    "{method} {path}: {status}: the answer broke off: {}",
                    chain(&e)
                ),
            )
        })?;
        if !status.is_success() {
            let why = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => format!("{}: {}", body.error.code, body.error.message),
                Err(_) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let text: String = text.trim().chars().take(300).collect();
                    if text.is_empty() {
                        "(no details)".to_string()
                    } else {
                        text
                    }
                }
            };
            return Err(Failure(FAILED, format!("{method} {path}: {status}: {why}")));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure(
                FAILED,
                format!("{method} {path}: {status}: the answer is not JSON: {e}"),
            )
        })
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// The gateway crate's rustls configuration (the given CA file, else the public roots), so
/// that `funcx` checks a gateway's certificate exactly as the remote executor (`funcx_client::connect`) does.
#[cfg(feature = "tls")]
pub(crate) fn with_tls(
    builder: reqwest::ClientBuilder,
    https: bool,
    ca_file: Option<&Path>,
) -> Result<reqwest::ClientBuilder> {
    if !https {
        return Ok(builder);
    }
    let config = match ca_file {
        Some(ca_file) => funcx::client::tls::client_config(ca_file),
        None => funcx::client::tls::client_config_with_public_roots(),
    }
    .map_err(|e| Failure(CONFIG, format!("TLS: {e}")))?;
    Ok(builder.use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(config)))
}

#[cfg(not(feature = "tls"))]
pub(crate) fn with_tls(
    builder: reqwest::ClientBuilder,
    https: bool,
    _ca_file: Option<&Path>,
) -> Result<reqwest::ClientBuilder> {
    if https {
        return Err(Failure(
            CONFIG,
            "an https:// gateway: this funcx was built without TLS support (feature `tls`)".into(),
        ));
    }
    Ok(builder)
}

/// Decodes an answer into the API's type for it.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Failure(
            FAILED,
            format!("the gateway's answer to {what} is not what this funcx expects: {e}"),
        )
    })
}

pub(crate) fn print_json(value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure(FAILED, format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}
