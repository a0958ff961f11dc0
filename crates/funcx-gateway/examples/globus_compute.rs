//! Your Globus Compute code, on your own gateway: a funcx gateway that the unmodified
//! `globus-compute-sdk` talks to, and an endpoint whose Python workers run its tasks.
//!
//! ```text
//! bash scripts/infra/rabbitmq-up.sh          # RabbitMQ on 127.0.0.1:5672 (needs root)
//! cargo run --release --example globus_compute -- --python /path/to/venv/bin/python
//! ```
//!
//! (from the workspace root or this crate: the example turns this crate's `globus-compute`
//! feature on itself, through a dev-dependency) starts, on loopback, a gateway serving the
//! SDK on `localhost:5000` (where `GLOBUS_SDK_ENVIRONMENT=local` points), publishing results
//! to RabbitMQ on `127.0.0.1:5672`, and one endpoint whose workers run the interpreter given
//! by `--python` (it needs `globus-compute-sdk` installed; funcx's own tasks would not). It
//! prints
//!
//! ```text
//! GC_ENDPOINT_ID=<uuid>
//! GLOBUS_COMPUTE_CLIENT_ID=<id>
//! GLOBUS_COMPUTE_CLIENT_SECRET=<secret>
//! FUNCX_GATEWAY_TOKEN=<token>
//! ```
//!
//! then serves until killed. With the two client lines exported, plus
//! `GLOBUS_SDK_ENVIRONMENT=local` and `GLOBUS_SDK_SERVICE_URL_AUTH=http://localhost:5000/`,
//! an unmodified script runs:
//!
//! ```python
//! from globus_compute_sdk import Executor
//! with Executor(endpoint_id=os.environ["GC_ENDPOINT_ID"]) as gce:
//!     print(gce.submit(pow, 2, 10).result())
//! ```
//!
//! (`FUNCX_GATEWAY_TOKEN` is the same user's static token, for
//! `Client(authorizer=AccessTokenAuthorizer(token))`.)
//!
//! Options: `--listen ADDR` (default `127.0.0.1:5000`), `--amqp URI` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), `--workers N` (default 2).
//!
//! With `--join URL --endpoint-id ID --endpoint-token TOKEN`, it runs only an endpoint (with
//! `--workers` workers of `--python`) that dials the gateway at `URL`: another endpoint for
//! the same gateway, on another machine or after this one was stopped.
//!
//! With `--join ... --block-nodes HOST,HOST...` as well, that endpoint has no workers of its
//! own: it holds a block of those nodes (for `MPIFunction` tasks that ask for `num_nodes`),
//! listens for managers on loopback and prints
//!
//! ```text
//! FUNCX_MANAGER_ADDRESS=127.0.0.1:<port>
//! FUNCX_MANAGER_TOKEN=<token>
//! ```
//!
//! for a `funcx-manager --endpoint <address> --block-nodes HOST,HOST... --python ...` (with
//! `FUNCX_TOKEN=<token>`) to run its tasks.

use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;

use funcx_client::EndpointDial;
use funcx_core::Executor;
use funcx_gateway::{ComputeClientConfig, Gateway, GatewayConfig, GlobusComputeConfig, UserConfig};
use funcx_python::{PythonConfig, PythonRuntime};
use funcx_transport::remote::{
    run_manager, AgentConfig, EndpointAgent, ExecutorRunner, ManagerConfig, ManagerId, ManagerInfo,
};
use funcx_transport::TcpTransport;

struct Options {
    python: String,
    listen: SocketAddr,
    amqp: String,
    workers: usize,
    join: Option<(String, String, String)>,
    /// The nodes of the block the joining endpoint's managers hold.
    block_nodes: Vec<String>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        python: "python3".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
        amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        workers: 2,
        join: None,
        block_nodes: Vec::new(),
    };
    let (mut url, mut id, mut token) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--python" => options.python = value()?,
            "--listen" => {
                options.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?
            }
            "--amqp" => options.amqp = value()?,
            "--workers" => {
                options.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?
            }
            "--join" => url = Some(value()?),
            "--endpoint-id" => id = Some(value()?),
            "--endpoint-token" => token = Some(value()?),
            "--block-nodes" => {
                options.block_nodes = value()?
                    .split(',')
                    .filter(|host| !host.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            other => return Err(format!("unknown option {other:?} (see the example's docs)")),
        }
    }
    match (url, id, token) {
        (Some(url), Some(id), Some(token)) => options.join = Some((url, id, token)),
        (None, None, None) => {}
        _ => return Err("--join needs --endpoint-id and --endpoint-token".into()),
    }
    if !options.block_nodes.is_empty() && options.join.is_none() {
        return Err("--block-nodes needs --join".into());
    }
    if options.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    Ok(options)
}

/// An endpoint: `workers` warm Python workers of its own, or, with `--block-nodes`, the
/// `funcx-manager`s that dial it on loopback holding a block of those nodes (it then prints
/// where they dial and their token). It dials the gateway as one manager.
async fn endpoint(
    options: &Options,
    gateway: &str,
    id: &str,
    token: &str,
) -> Result<tokio::task::JoinHandle<()>, Box<dyn Error>> {
    let executor = if options.block_nodes.is_empty() {
        let local = Executor::builder()
            .workers(options.workers)
            .start(PythonRuntime::new(
                PythonConfig::default().python(&options.python),
            ));
        local.ready().await?;
        local
    } else {
        let executor = Executor::builder().start_without_workers();
        let manager_token = funcx_gateway::new_token()?;
        let acceptor = TcpTransport::builder()
            .token(manager_token.clone())
            .build()
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "FUNCX_MANAGER_ADDRESS={}", acceptor.local_addr())?;
        writeln!(out, "FUNCX_MANAGER_TOKEN={manager_token}")?;
        out.flush()?;
        drop(out);
        tokio::spawn(EndpointAgent::new(executor.clone(), AgentConfig::default()).serve(acceptor));
        executor
    };
    let info = ManagerInfo {
        id: ManagerId(u64::from(std::process::id())),
        block: None,
        host: "localhost".into(),
        pid: std::process::id(),
        slots: options.workers as u32,
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: options.block_nodes.clone(),
    };
    let dial = EndpointDial::new(gateway, id, token);
    let runner = ExecutorRunner::new(executor, options.workers);
    Ok(tokio::spawn(async move {
        let exit = run_manager(dial, runner, ManagerConfig::new(info)).await;
        eprintln!("endpoint stopped: {exit}");
    }))
}

/// A fresh random UUID (version 4) from a 64-hex-digit token's first 16 bytes.
fn uuid_from(random_hex: &str) -> String {
    let hex = &random_hex[..32];
    let version = format!("4{}", &hex[13..16]);
    let variant = format!(
        "{:x}{}",
        (u8::from_str_radix(&hex[16..17], 16).unwrap_or(0) & 0x3) | 0x8,
        &hex[17..20]
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        version,
        variant,
        &hex[20..32]
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(64);
        }
    };

    if let Some((url, id, token)) = &options.join {
        let running = endpoint(&options, url, id, token).await?;
        eprintln!("endpoint {id} dialling {url}");
        running.await?;
        return Ok(());
    }

    // The gateway: one user, who is also the confidential client the SDK logs in as.
    let token = funcx_gateway::new_token()?;
    let client_id = uuid_from(&funcx_gateway::new_token()?);
    let client_secret = funcx_gateway::new_token()?;
    let mut globus_compute = GlobusComputeConfig::new(options.amqp.clone());
    globus_compute.clients.push(ComputeClientConfig {
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        user: "scientist".into(),
    });
    let config = GatewayConfig {
        listen: options.listen,
        users: vec![UserConfig {
            name: "scientist".into(),
            token: token.clone(),
        }],
        globus_compute: Some(globus_compute),
        ..GatewayConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let gateway = Gateway::start(config).await?;
    let serving = tokio::spawn(async move { gateway.serve(listener).await });
    let url = format!("http://{}", options.listen);

    // Its endpoint, registered through the funcx API as any user would.
    let registered: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/endpoints"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "name": "local" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let (Some(endpoint_id), Some(endpoint_token)) = (
        registered["endpoint_id"].as_str(),
        registered["endpoint_token"].as_str(),
    ) else {
        return Err(format!("unexpected answer: {registered}").into());
    };
    let _endpoint = endpoint(&options, &url, endpoint_id, endpoint_token).await?;

    let endpoint_uuid = format!(
        "{}-{}-{}-{}-{}",
        &endpoint_id[..8],
        &endpoint_id[8..12],
        &endpoint_id[12..16],
        &endpoint_id[16..20],
        &endpoint_id[20..32]
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "GC_ENDPOINT_ID={endpoint_uuid}")?;
    writeln!(out, "GLOBUS_COMPUTE_CLIENT_ID={client_id}")?;
    writeln!(out, "GLOBUS_COMPUTE_CLIENT_SECRET={client_secret}")?;
    writeln!(out, "FUNCX_GATEWAY_TOKEN={token}")?;
    out.flush()?;
    drop(out);
    eprintln!(
        "serving the Globus Compute SDK on {url} (export the lines above, GLOBUS_SDK_ENVIRONMENT=local and GLOBUS_SDK_SERVICE_URL_AUTH={url}/)"
    );
    serving.await??;
    Ok(())
}
