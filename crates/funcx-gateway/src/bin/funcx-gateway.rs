//! `funcx-gateway CONFIG.toml`: a gateway configured by a TOML file (see
//! [`funcx_gateway::GatewayConfig`]), serving until it is killed.
//!
//! The minimal binary, with no log output of its own beyond its start line and fatal errors;
//! `examples/gateway.rs` of this crate is the same program with `tracing` logs
//! (`RUST_LOG`). The end-to-end tests run this one as a separate process, so that they can
//! kill it with `SIGKILL` and start it again.

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
        let gateway = Gateway::start(config).await?;
        eprintln!("funcx-gateway listening on {}", listener.local_addr()?);
        gateway.serve(listener).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("funcx-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}
