//! `funcx-manager`: runs an endpoint's tasks on this node's Python workers.
//!
//! Exit status: 0 when the endpoint drained or stopped the manager, 2 when the endpoint could
//! not be reached for `--give-up-after` seconds, 64 for a bad command line.

use std::process::ExitCode;

use funcx_python::manager::{self, ManagerOptions};
use funcx_transport::remote::ManagerExit;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let options = match ManagerOptions::from_args(std::env::args_os().skip(1)) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("funcx-manager: cannot start the async runtime: {error}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(manager::run(options)) {
        ManagerExit::Drained | ManagerExit::Stopped => ExitCode::SUCCESS,
        ManagerExit::EndpointGone(_) => ExitCode::from(2),
    }
}
