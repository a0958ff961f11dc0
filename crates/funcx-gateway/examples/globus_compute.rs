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

use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;

use funcx_client::EndpointDial;
use funcx_core::Executor;
use funcx_gateway::{ComputeClientConfig, Gateway, GatewayConfig, GlobusComputeConfig, UserConfig};
use funcx_python::{PythonConfig, PythonRuntime};
use funcx_transport::remote::{run_manager, ExecutorRunner, ManagerConfig, ManagerId, ManagerInfo};

struct Options {
    python: String,
    listen: SocketAddr,
    amqp: String,
    workers: usize,
    join: Option<(String, String, String)>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        python: "python3".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
        amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        workers: 2,
        join: None,
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
            other => return Err(format!("unknown option {other:?} (see the example's docs)")),
        }
    }
    match (url, id, token) {
        (Some(url), Some(id), Some(token)) => options.join = Some((url, id, token)),
        (None, None, None) => {}
        _ => return Err("--join needs --endpoint-id and --endpoint-token".into()),
    }
    if options.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    Ok(options)
}

/// An endpoint: `workers` warm Python workers behind a manager that dials the gateway.
async fn endpoint(
    options: &Options,
    gateway: &str,
    id: &str,
    token: &str,
) -> Result<tokio::task::JoinHandle<()>, Box<dyn Error>> {
    let local = Executor::builder()
        .workers(options.workers)
        .start(PythonRuntime::new(
            PythonConfig::default().python(&options.python),
        ));
    local.ready().await?;
    let info = ManagerInfo {
        id: ManagerId(u64::from(std::process::id())),
        block: None,
        host: "localhost".into(),
        pid: std::process::id(),
        slots: options.workers as u32,
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: Vec::new(),
    };
    let dial = EndpointDial::new(gateway, id, token);
    let runner = ExecutorRunner::new(local, options.workers);
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
