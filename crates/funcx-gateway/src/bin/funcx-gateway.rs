//! `funcx-gateway CONFIG.toml`: a gateway configured by a TOML file (see
//! [`funcx_gateway::GatewayConfig`]), serving until `SIGTERM` or `SIGINT`.
//!
//! The first signal stops it gracefully (no new connections, requests under way answered,
//! the store closed cleanly) within `shutdown_grace_secs`, and it exits 0; a second signal
//! ends it at once (status 130).
//!
//! The minimal binary, with no log output of its own beyond its start and stop lines, a
//! line on whether the store opened cleanly, and fatal errors; `examples/gateway.rs` of this
//! crate is the same program with `tracing` logs (`RUST_LOG`). The end-to-end tests run
//! this one as a separate process, so that they can kill it with `SIGKILL` or stop it with
//! `SIGTERM`, and start it again.

use std::process::ExitCode;

use funcx_gateway::{Gateway, GatewayConfig};

fn main() -> ExitCode {
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
