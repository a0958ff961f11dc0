//! A small HTTP client for the gateway's API: requests with a timeout, answers in postcard or
//! JSON, failures sorted into those worth trying again and those not.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RemoteError;
use crate::model::{IDEMPOTENCY_KEY, POSTCARD};

/// A small HTTP/1.1 client for the gateway's API.
///
/// It is hyper's own client (`hyper-util`'s pooled one): the gateway already serves with
/// hyper through axum and dials its endpoint connections with hyper, so the client adds no
/// second HTTP stack, and a keep-alive pool keeps one submission from paying a TCP
/// handshake.
///
/// It may know several gateways of one fleet (sharing a store): requests go to the current
/// one, and a request that cannot reach it moves the client to the next, so that the
/// driver's retry (idempotent resends, the result stream's reconnection) lands there.
#[derive(Clone)]
pub(super) struct Http {
    client: Client<Connector, Full<Bytes>>,
    /// The gateways' base URLs, without a final `/`; at least one.
    bases: Arc<[String]>,
    /// The index in `bases` of the gateway requests go to now, shared by clones.
    current: Arc<AtomicUsize>,
    authorization: HeaderValue,
    timeout: Duration,
}

/// A request body.
pub(super) struct Body {
    content_type: &'static str,
    bytes: Bytes,
}

impl Body {
    pub(super) fn json(value: &impl Serialize) -> Body {
        Body {
            content_type: "application/json",
            // Serializing our own request types to JSON cannot fail.
            bytes: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    pub(super) fn postcard(value: &impl Serialize) -> Result<Body, postcard::Error> {
        Ok(Body {
            content_type: POSTCARD,
            bytes: Bytes::from(postcard::to_stdvec(value)?),
        })
    }
}

/// A successful response, read whole.
pub(super) struct Answer {
    postcard: bool,
    bytes: Bytes,
}

impl Answer {
    pub(super) fn decode<T: DeserializeOwned>(self) -> Result<T, HttpError> {
        let decoded = if self.postcard {
            postcard::from_bytes(&self.bytes).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(&self.bytes).map_err(|e| e.to_string())
        };
        decoded.map_err(|reason| HttpError::Refused {
            status: StatusCode::OK,
            message: format!("unreadable answer from the gateway: {reason}"),
            transient: false,
        })
    }
}

/// Why a request failed.
#[derive(Debug)]
pub(super) enum HttpError {
    /// The gateway could not be reached, or the connection failed: try again later.
    Unreachable(String),
    /// The TLS handshake failed. Tried again like `Unreachable` once running (the gateway
    /// may be rotating its certificate), but reported as such at start.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Tls(String),
    /// The gateway answered with an error status.
    Refused {
        status: StatusCode,
        message: String,
        /// A status worth trying again (5xx, 429, 408).
        transient: bool,
    },
}

impl HttpError {
    pub(super) fn is_transient(&self) -> bool {
        match self {
            HttpError::Unreachable(_) | HttpError::Tls(_) => true,
            HttpError::Refused { transient, .. } => *transient,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Unreachable(reason) | HttpError::Tls(reason) => f.write_str(reason),
            HttpError::Refused {
                status, message, ..
            } => write!(f, "{} {}", status.as_u16(), message),
        }
    }
}

/// hyper-rustls rather than tokio-rustls by hand: it is a connector for the pooled client
/// already in use, so HTTPS connections are kept alive and reused like plain ones.
#[cfg(feature = "tls")]
pub(super) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
pub(super) type Connector = HttpConnector;

/// Whom an `https` gateway must be certified by (`None`: the Mozilla roots).
#[cfg(feature = "tls")]
pub(super) type ClientTls = Option<Arc<rustls::ClientConfig>>;
/// Nothing to configure without the `tls` feature.
#[cfg(not(feature = "tls"))]
pub(super) type ClientTls = ();

impl Http {
    /// A client of the gateway at `url`, moving to the gateways of `failover` in turn when
    /// one cannot be reached.
    pub(super) fn new(
        url: &str,
        failover: &[String],
        token: &str,
        timeout: Duration,
        tls: ClientTls,
    ) -> Result<Http, RemoteError> {
        let bases = std::iter::once(url)
            .chain(failover.iter().map(String::as_str))
            .map(base_of)
            .collect::<Result<Vec<_>, _>>()?;
        let authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| RemoteError::InvalidToken)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        #[cfg(feature = "tls")]
        let connector = {
            // The HTTP connector must let `https` URIs through to the TLS layer.
            connector.enforce_http(false);
            let config = match tls {
                Some(config) => config,
                None => crate::tls::client_config_with_public_roots().map_err(|error| {
                    RemoteError::Tls {
                        url: url.to_owned(),
                        reason: error.to_string(),
                    }
                })?,
            };
            // `https_or_http`: the same client serves `http://` gateways unchanged.
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*config).clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector)
        };
        #[cfg(not(feature = "tls"))]
        let () = tls;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Http {
            client,
            bases: bases.into(),
            current: Arc::new(AtomicUsize::new(0)),
            authorization,
            timeout,
        })
    }

    /// The gateway requests go to now: its index and base URL.
    fn base(&self) -> (usize, &str) {
        let index = self.current.load(Ordering::Relaxed) % self.bases.len();
        (index, &self.bases[index])
    }

    /// The gateway at `index` could not be reached: the next requests go to the next one
    /// (unless a concurrent failure moved on already).
    fn failed(&self, index: usize, error: &HttpError) {
        if self.bases.len() < 2 {
            return;
        }
        let next = (index + 1) % self.bases.len();
        if self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(from = %self.bases[index], to = %self.bases[next], %error, "gateway unreachable; moving to the next");
        }
    }

    fn request(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Body>,
        accept: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::ACCEPT, accept);
        if let Some(key) = idempotency_key {
            builder = builder.header(IDEMPOTENCY_KEY, key);
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, body.content_type);
                Full::new(body.bytes)
            }
            None => Full::new(Bytes::new()),
        };
        builder
            .body(body)
            .map_err(|e| HttpError::Unreachable(format!("cannot build the request: {e}")))
    }

    /// Sends a request and reads the whole answer, within the request timeout.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Answer, HttpError> {
        self.send(method, path, body, None).await
    }

    /// [`Http::call`] with an `Idempotency-Key` header when `idempotency_key` is given.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, HttpError> {
        let (index, base) = self.base();
        let request = self.request(
            base,
            method,
            path,
            body,
            &format!("{POSTCARD}, application/json;q=0.5"),
            idempotency_key,
        )?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| client_error(&e))?;
            let status = response.status();
            let postcard = is_postcard(&response);
            let retry_after = response.headers().contains_key(header::RETRY_AFTER);
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            if status.is_success() {
                return Ok(Answer { postcard, bytes });
            }
            let message = error_message(&bytes);
            Err(HttpError::Refused {
                status,
                message,
                transient: status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT
                    || retry_after,
            })
        };
        let answer = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Unreachable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        };
        if let Err(error @ (HttpError::Unreachable(_) | HttpError::Tls(_))) = &answer {
            self.failed(index, error);
        }
        answer
    }

    /// Opens the binary result stream (the connect and the headers within the timeout).
    pub(super) async fn open_result_stream(&self) -> Result<Response<Incoming>, HttpError> {
        let (index, base) = self.base();
        let request = self.request(base, Method::GET, "/v1/results", None, POSTCARD, None)?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| HttpError::Unreachable(format!("no answer within {:?}", self.timeout)))
            .and_then(|response| response.map_err(|e| client_error(&e)))
            .inspect_err(|error| self.failed(index, error))?;
        let status = response.status();
        if status.is_success() {
            if is_postcard(&response) {
                return Ok(response);
            }
            return Err(HttpError::Refused {
                status,
                message: "the gateway does not serve the binary result stream (upgrade it)".into(),
                transient: true,
            });
        }
        let bytes = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|body| body.to_bytes())
            .unwrap_or_default();
        Err(HttpError::Refused {
            status,
            message: error_message(&bytes),
            transient: true,
        })
    }
}

/// `url` checked and without its final `/`: `http://host:port[/prefix]`, or `https://`.
fn base_of(url: &str) -> Result<String, RemoteError> {
    let invalid = |reason: &str| RemoteError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        #[cfg(feature = "tls")]
        Some("https") => {}
        #[cfg(not(feature = "tls"))]
        Some("https") => {
            return Err(invalid(
                "this client was built without TLS support; rebuild with the `tls` feature",
            ))
        }
        _ => return Err(invalid("it must start with http:// or https://")),
    }
    if uri.host().is_none() {
        return Err(invalid("it has no host"));
    }
    if uri.query().is_some() {
        return Err(invalid("it must not have a query"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn is_postcard<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(POSTCARD))
}

/// The gateway's `{"error": {"code", "message"}}`, or the body as text.
fn error_message(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Envelope>(bytes) {
        Ok(envelope) => format!("{}: {}", envelope.error.code, envelope.error.message),
        Err(_) => String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
    }
}

/// A failed request, as a TLS failure when it is one.
fn client_error(error: &(dyn std::error::Error + 'static)) -> HttpError {
    #[cfg(feature = "tls")]
    if crate::tls::is_tls_failure(error) {
        return HttpError::Tls(describe(error));
    }
    HttpError::Unreachable(describe(error))
}

/// A client error with its causes (hyper's own text is just "client error (Connect)").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let timeout = Duration::from_secs(1);
        let new = |url: &str, token: &str| {
            #[cfg(feature = "tls")]
            let tls = None;
            #[cfg(not(feature = "tls"))]
            let tls = ();
            Http::new(url, &[], token, timeout, tls)
        };
        assert!(new("ftp://x", "t").is_err());
        // https needs the feature, and says so without it.
        let https = new("https://x", "t");
        #[cfg(feature = "tls")]
        assert!(https.is_ok());
        #[cfg(not(feature = "tls"))]
        match https {
            Ok(_) => panic!("https accepted without the tls feature"),
            Err(error) => assert!(error.to_string().contains("`tls` feature"), "{error}"),
        }
        assert!(new("127.0.0.1:80", "t").is_err());
        assert!(new("http://127.0.0.1:80", "bad\ntoken").is_err());
        let http = new("http://127.0.0.1:80/", "t").unwrap();
        assert_eq!(http.base(), (0, "http://127.0.0.1:80"));
    }

    /// The trust configuration of a plain-HTTP test, with or without the `tls` feature.
    #[allow(clippy::unused_unit)]
    fn no_tls() -> ClientTls {
        #[cfg(feature = "tls")]
        return None;
        #[cfg(not(feature = "tls"))]
        ()
    }

    #[test]
    #[cfg_attr(not(feature = "tls"), allow(clippy::unit_arg))]
    fn an_unreachable_gateway_moves_the_client_to_the_next() {
        let others = ["http://b:2/".to_owned(), "http://c:3".to_owned()];
        let http = Http::new("http://a:1", &others, "t", Duration::from_secs(1), no_tls()).unwrap();
        let down = HttpError::Unreachable("refused".into());
        assert_eq!(http.base(), (0, "http://a:1"));
        http.failed(0, &down);
        assert_eq!(http.base(), (1, "http://b:2"));
        // A second failure seen on the gateway already left changes nothing.
        http.failed(0, &down);
        assert_eq!(http.base(), (1, "http://b:2"));
        http.failed(1, &down);
        http.failed(2, &down);
        assert_eq!(http.base(), (0, "http://a:1"), "round and round");
        let bad = ["ftp://x".to_owned()];
        assert!(Http::new("http://a:1", &bad, "t", Duration::from_secs(1), no_tls()).is_err());
    }

    #[test]
    fn error_bodies_are_read() {
        let body = br#"{"error":{"code":"forbidden","message":"not yours"}}"#;
        assert_eq!(error_message(body), "forbidden: not yours");
        assert_eq!(error_message(b"plain"), "plain");
    }
}
