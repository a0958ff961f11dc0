//! The EC2 Query API: a SigV4-signed form `POST`, an XML answer.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use funcx_core::ProviderError;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{Ec2ConfigError, Instance, API_VERSION};

pub(super) struct Api {
    pub(super) endpoint: http::Uri,
    host: String,
    region: String,
    credentials: Credentials,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// How an API call failed.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No answer: the endpoint could not be reached, or did not answer in time.
    Unreachable { endpoint: String, error: io::Error },
    /// EC2 answered with an error.
    Aws {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// The request could not be made, or the answer could not be read.
    Other(String),
}

impl ApiError {
    /// The error as the provider reports it for `action`; `launch` marks a `RunInstances`
    /// whose request errors reject the block.
    pub(crate) fn into_provider_error(self, action: &str, launch: bool) -> ProviderError {
        match self {
            ApiError::Unreachable { endpoint, error } => ProviderError::io(
                format!("could not reach the EC2 API at {endpoint} ({action})"),
                error,
            ),
            ApiError::Aws {
                status,
                code,
                message,
                request_id,
            } => {
                let request_id = request_id
                    .map(|id| format!(", request id {id}"))
                    .unwrap_or_default();
                let refused = ["Invalid", "Unsupported", "MissingParameter"]
                    .iter()
                    .any(|prefix| code.starts_with(prefix));
                if launch && refused {
                    ProviderError::rejected(format!(
                        "EC2 {action} refused it: {code}: {message} (HTTP {status}{request_id})"
                    ))
                } else {
                    ProviderError::command(
                        format!("EC2 {action}"),
                        format!("{code}: {message} (HTTP {status}{request_id})"),
                    )
                }
            }
            ApiError::Other(detail) => ProviderError::command(format!("EC2 {action}"), detail),
        }
    }
}

impl Api {
    pub(super) fn new(
        endpoint: &str,
        region: String,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Api, Ec2ConfigError> {
        let bad = |why: &str| Ec2ConfigError(format!("bad EC2 endpoint URL `{endpoint}`: {why}"));
        let uri: http::Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("the scheme must be http or https"));
        }
        let host = uri
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|error| Ec2ConfigError(format!("cannot set up TLS: {error}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Api {
            endpoint: uri,
            host,
            region,
            credentials,
            timeout,
            client,
        })
    }

    /// Calls `action` with `params` and returns the XML answer.
    pub(super) async fn call(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, ApiError> {
        let body = encode_form(action, params);
        let request = self.signed_request(body)?;
        let endpoint = self.endpoint.to_string();
        let unreachable = |error: io::Error| ApiError::Unreachable {
            endpoint: endpoint.clone(),
            error,
        };
        let timed_out = || {
            unreachable(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {:?}", self.timeout),
            ))
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| unreachable(io_error(&error)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| unreachable(io_error(&error)))?
                .to_bytes();
            Ok::<_, ApiError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| timed_out())??;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            Ok(text)
        } else {
            Err(parse_error(status.as_u16(), &text))
        }
    }

    pub(super) fn signed_request(
        &self,
        body: String,
    ) -> Result<http::Request<Full<Bytes>>, ApiError> {
        let failed = |what: &str, error: &dyn fmt::Display| {
            ApiError::Other(format!("could not {what} the request: {error}"))
        };
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.endpoint.clone())
            .header(http::header::HOST, &self.host)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|error| failed("build", &error))?;
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|error| failed("sign", &error))?
            .into();
        let uri = self.endpoint.to_string();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable = SignableRequest::new(
            "POST",
            uri.as_str(),
            headers,
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|error| failed("sign", &error))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|error| failed("sign", &error))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }
}

/// The form-encoded body of a call to `action` with `params`. (The serializer is not `Send`,
/// so it must not live in an `async fn`.)
pub(super) fn encode_form(action: &str, params: &[(String, String)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", action)
        .append_pair("Version", API_VERSION);
    for (key, value) in params {
        form.append_pair(key, value);
    }
    form.finish()
}

/// The I/O error at the root of `error` (a refused connection, a reset), or `error` itself
/// as one.
pub(super) fn io_error(error: &(dyn StdError + 'static)) -> io::Error {
    let mut text = error.to_string();
    let mut kind = io::ErrorKind::Other;
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            kind = io.kind();
        }
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    io::Error::new(kind, text)
}

pub(super) fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children()
        .find(|child| child.is_element() && child.tag_name().name() == name)
}

pub(super) fn child_text<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name)
        .and_then(|child| child.text())
        .map(str::trim)
}

pub(super) fn items<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> {
    node.children()
        .filter(|child| child.is_element() && child.tag_name().name() == "item")
}

pub(super) fn parse_xml(text: &str) -> Result<roxmltree::Document<'_>, String> {
    roxmltree::Document::parse(text)
        .map_err(|error| format!("the answer is not XML ({error}): {}", excerpt(text)))
}

pub(super) fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The error in an answer with HTTP status `status`:
/// `<Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors><RequestID>`.
pub(crate) fn parse_error(status: u16, text: &str) -> ApiError {
    let parsed = roxmltree::Document::parse(text).ok().and_then(|document| {
        let error = document
            .descendants()
            .find(|node| node.is_element() && node.tag_name().name() == "Error")?;
        let code = child_text(error, "Code")?.to_owned();
        let message = child_text(error, "Message").unwrap_or("").to_owned();
        let request_id = document
            .descendants()
            .find(|node| {
                node.is_element() && matches!(node.tag_name().name(), "RequestID" | "RequestId")
            })
            .and_then(|node| node.text())
            .map(|id| id.trim().to_owned());
        Some(ApiError::Aws {
            status,
            code,
            message,
            request_id,
        })
    });
    parsed.unwrap_or_else(|| {
        ApiError::Other(format!(
            "HTTP {status} without an EC2 error in the answer: {}",
            excerpt(text)
        ))
    })
}

/// The instance ids in a `RunInstances` answer.
pub(crate) fn instance_ids(text: &str) -> Result<Vec<String>, String> {
    let document = parse_xml(text)?;
    let root = document.root_element();
    let set = child(root, "instancesSet")
        .ok_or_else(|| format!("no instancesSet in the answer: {}", excerpt(text)))?;
    items(set)
        .map(|item| {
            child_text(item, "instanceId")
                .map(str::to_owned)
                .ok_or_else(|| "an instance without an instanceId in the answer".to_owned())
        })
        .collect()
}

/// The instances in a `DescribeInstances` answer, and the token of the next page.
pub(crate) fn parse_instances(text: &str) -> Result<(Vec<Instance>, Option<String>), String> {
    let document = parse_xml(text)?;
    let root = document.root_element();
    let mut instances = Vec::new();
    if let Some(reservations) = child(root, "reservationSet") {
        for reservation in items(reservations) {
            let Some(set) = child(reservation, "instancesSet") else {
                continue;
            };
            for item in items(set) {
                let id = child_text(item, "instanceId")
                    .ok_or("an instance without an instanceId in the answer")?;
                let state = child(item, "instanceState")
                    .and_then(|state| child_text(state, "name"))
                    .ok_or_else(|| format!("instance {id} without a state in the answer"))?;
                let reason = child(item, "stateReason");
                let tags = child(item, "tagSet")
                    .map(|tags| {
                        items(tags)
                            .filter_map(|tag| {
                                Some((
                                    child_text(tag, "key")?.to_owned(),
                                    child_text(tag, "value").unwrap_or("").to_owned(),
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                instances.push(Instance {
                    id: id.to_owned(),
                    state: state.to_owned(),
                    reason_code: reason
                        .and_then(|r| child_text(r, "code"))
                        .map(str::to_owned),
                    reason_message: reason
                        .and_then(|r| child_text(r, "message"))
                        .map(str::to_owned),
                    tags,
                });
            }
        }
    }
    let next = child_text(root, "nextToken")
        .filter(|token| !token.is_empty())
        .map(str::to_owned);
    Ok((instances, next))
}
