//! A ready gateway: the HTTP API, users, a durable task store, and the port endpoints dial.
//!
//! ```text
//! cargo run --release --example gateway -- crates/funcx-gateway/examples/gateway.toml
//! ```
//!
//! The file's keys are those of [`funcx_gateway::GatewayConfig`]; `examples/gateway.toml` (next to
//! this file) lists them all with their defaults. Logs go to stderr (`RUST_LOG=funcx_gateway=debug` for
//! more). Then, from a user's program:
//!
//! ```text
//! curl -H "Authorization: Bearer $TOKEN" -d '{"name": "laptop"}' \
//!      -H 'Content-Type: application/json' http://127.0.0.1:8470/v1/endpoints
//! ```
//!
//! gives an endpoint id and token for the endpoint process
//! (`funcx_client::EndpointDial`), and
//! `funcx_client::connect("http://127.0.0.1:8470", TOKEN, ENDPOINT_ID)` an `Executor` that
//! runs on it. `examples/remote.rs` at the repository's root does all of that in one program,
//! with an endpoint from `funcx::Endpoint::builder()`.
//!
//! With a `[tls]` table in the file (see `gateway.toml` next to this file) the gateway serves HTTPS
//! instead; that needs funcx-gateway's `tls` feature
//! (`cargo run --example gateway --features funcx-gateway/tls -- FILE`).

use std::path::PathBuf;
use std::process::ExitCode;

use funcx_gateway::{Gateway, GatewayConfig};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let path = std::env::args_os().nth(1).map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/gateway.toml"
            ))
        },
        PathBuf::from,
    );
    let config = match GatewayConfig::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(78);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let store = config
            .store
            .as_ref()
            .map_or_else(|| "in memory".to_owned(), ToString::to_string);
        let users: Vec<String> = config.users.iter().map(|user| user.name.clone()).collect();
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let gateway = Gateway::start(config).await?;
        println!(
            "funcx gateway on {scheme}://{} (store: {store}; users: {})",
            listener.local_addr()?,
            users.join(", ")
        );
        // Runs until SIGTERM or Ctrl-C, then stops gracefully (a second signal: at once).
        // Every accepted task and result is on disk already, so even SIGKILL loses nothing:
        // endpoints resume with the next run, which re-sends only what they do not hold.
        gateway.serve_until_signalled(listener).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match served {
        Ok(()) => {
            println!("funcx gateway stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
