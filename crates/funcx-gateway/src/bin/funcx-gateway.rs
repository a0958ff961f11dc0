//! `funcx-gateway CONFIG.toml`: a gateway configured by a TOML file (see
//! [`funcx_gateway::GatewayConfig`]), serving until `SIGTERM` or `SIGINT`.
//!
//! The first signal stops it gracefully (no new connections, requests under way answered,
//! the store closed cleanly) within `shutdown_grace_secs`, and it exits 0; a second signal
//! ends it at once (status 130).
//!
//! It logs through `tracing` to stderr, filtered by `RUST_LOG` (default `warn`: its start
//! and stop lines, a line on whether the store opened cleanly, and problems;
//! `RUST_LOG=info` adds endpoints connecting, registrations, remote stops, user changes). The end-to-end tests run
//! this one as a separate process, so that they can kill it with `SIGKILL` or stop it with
//! `SIGTERM`, and start it again.

use std::process::ExitCode;

use funcx_gateway::{Gateway, GatewayConfig};

fn main() -> ExitCode {
    // A filter that does not parse falls back to the default rather than stopping the gateway.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: funcx-gateway CONFIG.toml");
        return ExitCode::from(64);
    };
    let config = match GatewayConfig::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("funcx-gateway: {error}");
            return ExitCode::from(78);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("funcx-gateway: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let store = config.store.clone();
        let gateway = Gateway::start(config).await?;
        if let Some(path) = store {
            let how = if gateway.store_was_repaired() {
                "repaired: it was not closed cleanly"
            } else {
                "opened cleanly"
            };
            eprintln!("funcx-gateway: store {}: {how}", path.display());
        }
        eprintln!("funcx-gateway listening on {}", listener.local_addr()?);
        gateway.serve_until_signalled(listener).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    // Nothing of the gateway's may still run; what does is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match served {
        Ok(()) => {
            eprintln!("funcx-gateway: stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("funcx-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}
