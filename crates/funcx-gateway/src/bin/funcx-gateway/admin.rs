//! `funcx-gateway admin users ...`: create users, list them, rotate a user's token, delete a
//! user (its token is then refused), without editing the configuration or restarting.
//!
//! The commands call the running gateway's admin API (`/v1/admin/users`, for the users named
//! in `admins`) rather than opening the store file, for three reasons:
//!
//! - redb lets one process open a database file at a time: the running gateway holds the
//!   file's lock, so a second process cannot open it at all, let alone write beside the
//!   gateway's single writer. Going through the gateway keeps it the store's only writer,
//!   and no admin command can ever race it.
//! - The change takes effect at once (the gateway reads tokens from its store on every
//!   request), passes the API's checks (valid names, no duplicate users), and is logged by
//!   the gateway with who made it.
//! - The same commands work from another machine, and against any store behind the
//!   `TaskStore` trait, not only a local redb file.
//!
//! A stopped gateway has nobody to serve, so nothing is lost by needing it up; the first
//! admin comes from the configuration (`admins` and `[[users]]`), as `admins` itself does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use funcx_gateway::api::lifecycle::{UserList, UserToken};
use funcx_gateway::GatewayConfig;
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// `funcx-gateway admin`'s options: which gateway, as which admin.
#[derive(Args)]
pub(crate) struct AdminArgs {
    /// The gateway's configuration file: its `listen` address (a wildcard address means this
    /// machine's loopback) and `[tls]` say where to call.
    #[arg(long, global = true, conflicts_with = "url")]
    config: Option<PathBuf>,
    /// The gateway's URL (default: $FUNCX_GATEWAY).
    #[arg(long, global = true)]
    url: Option<String>,
    /// An admin's token (a user named in `admins`); default $FUNCX_TOKEN.
    #[arg(long, global = true)]
    token: Option<String>,
    /// The CA certificates (PEM) an https:// gateway is checked against (default: the
    /// public roots).
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// Print one JSON document, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// The gateway's users and their tokens.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Every user's name.
    List,
    /// Creates a user; prints its token, shown this once (only its hash is stored).
    Create {
        /// 1 to 64 letters, digits, `-`, `_`, `.`, `@`.
        name: String,
    },
    /// Gives a user a new token, printed this once; the old one is refused from now on.
    RotateToken {
        /// The user.
        name: String,
    },
    /// Deletes a user: its token is refused from now on.
    #[command(alias = "revoke")]
    Delete {
        /// The user.
        name: String,
    },
}

/// A failed command: its exit status and what to tell the admin.
struct Failure(u8, String);

const FAILED: u8 = 1;
const USAGE: u8 = 64;
const CONFIG: u8 = 78;

/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs an admin command; its exit status.
pub(crate) fn main(args: AdminArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("funcx-gateway admin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("funcx-gateway admin: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(args: AdminArgs) -> Result<(), Failure> {
    let api = AdminApi::new(&args)?;
    match args.command {
        AdminCommand::Users(UsersCommand::List) => {
            let answer = api.call(Method::GET, "/v1/admin/users", None).await?;
            let list: UserList = parse(answer.clone())?;
            if args.json {
                return print_json(&answer);
            }
            for name in list.users {
                println!("{name}");
            }
        }
        AdminCommand::Users(UsersCommand::Create { name }) => {
            check_name(&name)?;
            let answer = api
                .call(
                    Method::POST,
                    "/v1/admin/users",
                    Some(json!({ "name": name })),
                )
                .await?;
            let user: UserToken = parse(answer.clone())?;
            if args.json {
                return print_json(&answer);
            }
            println!(
                "user {} created; its token (shown this once): {}",
                user.name, user.token
            );
        }
        AdminCommand::Users(UsersCommand::RotateToken { name }) => {
            check_name(&name)?;
            let answer = api
                .call(
                    Method::POST,
                    &format!("/v1/admin/users/{name}/token"),
                    Some(json!({})),
                )
                .await?;
            let user: UserToken = parse(answer.clone())?;
            if args.json {
                return print_json(&answer);
            }
            println!(
                "user {} has a new token (shown this once; the old one is refused): {}",
                user.name, user.token
            );
        }
        AdminCommand::Users(UsersCommand::Delete { name }) => {
            check_name(&name)?;
            api.call(Method::DELETE, &format!("/v1/admin/users/{name}"), None)
                .await?;
            if args.json {
                return print_json(&json!({ "name": name, "deleted": true }));
            }
            println!("user {name} deleted; its token is refused from now on");
        }
    }
    Ok(())
}

/// A user name as the API accepts it, checked here too so that it is always one path
/// segment.
fn check_name(name: &str) -> Result<(), Failure> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        && name != "."
        && name != "..";
    if valid {
        Ok(())
    } else {
        Err(Failure(
            USAGE,
            format!("{name:?} is not a user name: 1 to 64 letters, digits, `-`, `_`, `.`, `@`"),
        ))
    }
}

fn parse<T: serde::de::DeserializeOwned>(answer: Value) -> Result<T, Failure> {
    serde_json::from_value(answer.clone()).map_err(|e| {
        Failure(
            FAILED,
            format!("the gateway's answer is not what this program expects ({e}): {answer}"),
        )
    })
}

fn print_json(value: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure(FAILED, format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// hyper-rustls over the same HTTP connector, as the remote executor (`funcx_client::connect`) does: one client for
/// `http://` and `https://` gateways.
#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// The admin routes of one gateway, called with one admin's token.
struct AdminApi {
    client: Client<Connector, Full<Bytes>>,
    url: String,
    authorization: String,
}

impl AdminApi {
    fn new(args: &AdminArgs) -> Result<AdminApi, Failure> {
        let url = match (&args.url, &args.config) {
            (Some(url), _) => url.clone(),
            (None, Some(config)) => url_of(config)?,
            (None, None) => std::env::var("FUNCX_GATEWAY")
                .ok()
                .filter(|url| !url.trim().is_empty())
                .ok_or_else(|| {
                    Failure(
                        CONFIG,
                        "which gateway? pass --config CONFIG.toml or --url URL, or set FUNCX_GATEWAY"
                            .into(),
                    )
                })?,
        };
        let url = url.trim().trim_end_matches('/').to_string();
        let token = args
            .token
            .clone()
            .or_else(|| std::env::var("FUNCX_TOKEN").ok())
            .map(|token| token.trim().to_string())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Failure(
                    CONFIG,
                    "no token: pass --token TOKEN (an admin's, from `admins` in the configuration) or set FUNCX_TOKEN"
                        .into(),
                )
            })?;
        let https = if url.starts_with("https://") {
            true
        } else if url.starts_with("http://") {
            false
        } else {
            return Err(Failure(
                CONFIG,
                format!("the gateway's URL is http://HOST:PORT or https://HOST:PORT, not {url:?}"),
            ));
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = tls_connector(connector, https, args.ca_file.as_deref())?;
        Ok(AdminApi {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url,
            authorization: format!("Bearer {token}"),
        })
    }

    /// One call; the JSON answer (`Null` when empty), or the HTTP status with the API's
    /// error code and message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let failed = |why: String| Failure(FAILED, format!("{method} {path}: {why}"));
        let body = match body {
            Some(body) => Bytes::from(body.to_string()),
            None => Bytes::new(),
        };
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.url))
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| failed(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                failed(format!(
                    "cannot reach the gateway at {}: {}",
                    self.url,
                    chain(&e)
                ))
            })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| failed(format!("{status}: the answer broke off: {e}")))?
                .to_bytes();
            Ok::<_, Failure>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                failed(format!(
                    "no answer from {} within {CALL_TIMEOUT:?}",
                    self.url
                ))
            })??;
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let why = match &value {
                Some(value) => match (
                    value["error"]["code"].as_str(),
                    value["error"]["message"].as_str(),
                ) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    _ => value.to_string(),
                },
                None => String::from_utf8_lossy(&bytes)
                    .trim()
                    .chars()
                    .take(300)
                    .collect(),
            };
            return Err(failed(format!("{status}: {why}")));
        }
        match value {
            Some(value) => Ok(value),
            None if bytes.is_empty() => Ok(Value::Null),
            None => Err(failed(format!("{status}: the answer is not JSON"))),
        }
    }
}

/// Where the gateway of configuration file `path` answers on this machine.
fn url_of(path: &std::path::Path) -> Result<String, Failure> {
    let config = GatewayConfig::load(path).map_err(|e| Failure(CONFIG, e.to_string()))?;
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{address}"))
}

/// An error and its causes on one line (hyper's own text leaves out why it failed).
fn chain(error: &dyn std::error::Error) -> String {
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

#[cfg(feature = "tls")]
fn tls_connector(
    mut connector: HttpConnector,
    _https: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<Connector, Failure> {
    // The HTTP connector must let `https` URIs through to the TLS layer.
    connector.enforce_http(false);
    let config = match ca_file {
        Some(ca_file) => funcx_client::tls::client_config(ca_file),
        None => funcx_client::tls::client_config_with_public_roots(),
    }
    .map_err(|e| Failure(CONFIG, format!("TLS: {e}")))?;
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*config).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector))
}

#[cfg(not(feature = "tls"))]
fn tls_connector(
    connector: HttpConnector,
    https: bool,
    _ca_file: Option<&std::path::Path>,
) -> Result<Connector, Failure> {
    if https {
        return Err(Failure(
            CONFIG,
            "an https:// gateway: this program was built without TLS support (feature `tls`)"
                .into(),
        ));
    }
    Ok(connector)
}
