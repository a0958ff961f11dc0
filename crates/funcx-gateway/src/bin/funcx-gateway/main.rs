//! `funcx-gateway CONFIG.toml`: a gateway configured by a TOML file (see
//! [`funcx_gateway::GatewayConfig`]), serving until `SIGTERM` or `SIGINT`; and
//! `funcx-gateway admin ...`, which manages the users of a running gateway (see `admin.rs`).
//!
//! ```text
//! funcx-gateway [--log-level FILTER] [--log-format text|json] CONFIG.toml
//! funcx-gateway admin [--config CONFIG.toml | --url URL] [--token TOKEN] [--ca-file PEM] [--json]
//!                     users list | users create NAME | users rotate-token NAME | users delete NAME
//! ```
//!
//! The first signal stops it gracefully (no new connections, requests under way answered,
//! the store closed cleanly) within `shutdown_grace_secs`, and it exits 0; a second signal
//! ends it at once (status 130).
//!
//! It logs through `tracing` to stderr, filtered by `--log-level` or else `RUST_LOG` (the
//! same syntax: `info`, or `warn,funcx_gateway=debug`; default `warn`: its start and stop
//! lines, a line on whether the store opened cleanly, and problems; `info` adds endpoints
//! connecting, registrations, remote stops, user changes), as text for people or, with
//! `--log-format json`, one JSON object a line for a log shipper. The end-to-end tests run
//! this one as a separate process, so that they can kill it with `SIGKILL` or stop it with
//! `SIGTERM`, and start it again.
//!
//! Exit status: 0 after a graceful stop or a successful admin command; 1 when serving or the
//! admin command failed; 64 for a bad command line; 78 for a bad configuration.

mod admin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use funcx_gateway::{Gateway, GatewayConfig};

#[derive(Parser)]
#[command(
    name = "funcx-gateway",
    about = "Serve a funcx gateway from a configuration file, or manage its users",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// The configuration file (TOML; every key is in crates/funcx-gateway/examples/gateway.toml).
    #[arg(required = true)]
    config: Option<PathBuf>,
    /// Which log lines to write, as RUST_LOG says it (`info`, `warn,funcx_gateway=debug`);
    /// overrides RUST_LOG. Default: RUST_LOG, else `warn`.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// How log lines are written to stderr: text for people, or one JSON object a line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manages the users of a running gateway through its admin API.
    Admin(admin::AdminArgs),
}

/// How log lines are written.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event (timestamp, level, target, fields), for log shippers.
    Json,
}

/// jemalloc, with its background thread switched on in `serve`: a gateway's memory goes back
/// near its baseline once a burst of tasks is over (see the `jemalloc` feature).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Some(Command::Admin(args)) = cli.command {
        return admin::main(args);
    }
    if let Err(message) = init_logs(cli.log_level.as_deref(), cli.log_format) {
        eprintln!("funcx-gateway: {message}");
        return ExitCode::from(64);
    }
    let Some(path) = cli.config else {
        eprintln!("usage: funcx-gateway CONFIG.toml");
        return ExitCode::from(64);
    };
    serve(path)
}

/// Logs to stderr, filtered by `level` (RUST_LOG's syntax), else RUST_LOG, else `warn`.
fn init_logs(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        // A filter given on the command line must parse: it was asked for on purpose.
        Some(level) => EnvFilter::try_new(level)
            .map_err(|e| format!("--log-level {level:?} is not a log filter: {e}"))?,
        // One from the environment that does not parse falls back to the default rather
        // than stopping the gateway.
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
    };
    // Colours only on a terminal: not in a log file or the journal.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
    Ok(())
}

fn serve(path: PathBuf) -> ExitCode {
    // Without it, jemalloc purges unused pages only when the gateway allocates again, so an
    // idle gateway would keep the last burst's memory.
    #[cfg(feature = "jemalloc")]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "jemalloc's background thread did not start; memory is given back only when busy");
    }
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
        if let Some(funcx_gateway::StoreConfig::Redb(path)) = store {
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
