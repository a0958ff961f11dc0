//! `funcx-endpoint`: configure, start, stop and watch endpoints from a config file, as a
//! cluster administrator does with `globus-compute-endpoint`.
//!
//! ```text
//! funcx-endpoint configure NAME [--provider local|slurm|pbs|gridengine|ec2]
//!                               [--gateway URL --endpoint-id ID --token TOKEN]
//! funcx-endpoint start NAME [--detach]
//! funcx-endpoint stop NAME
//! funcx-endpoint status NAME [--json]
//! funcx-endpoint list [--json]
//! ```
//!
//! Each endpoint lives in `$FUNCX_HOME/endpoints/NAME/` (`FUNCX_HOME` defaults to
//! `~/.funcx`): `config.toml`, `token` (mode 0600), and while it runs `endpoint.pid`,
//! `status.json` (rewritten as it changes) and `endpoint.log` (with `--detach`). The same
//! program is the managers' program: blocks run `funcx-endpoint manager --endpoint ...`.
//!
//! Exit status: 0 on success, 1 when the command failed (the endpoint did not connect, did
//! not stop), 64 for a bad command line, 78 for a bad configuration.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use funcx::endpoint::config::{template, EndpointConfig, PROVIDERS};
use funcx::endpoint::{Endpoint, EndpointReport, EndpointState};
use funcx::ManagerCommand;
use serde::{Deserialize, Serialize};

/// jemalloc, not glibc's malloc: an endpoint (and a manager) allocates a task's arguments,
/// reply and result on one thread and frees them on another, and glibc's arena locks then
/// took ~40 % of the dispatcher's time (`e2e scale`: 344k tasks/s on glibc, 522k on jemalloc;
/// BENCHMARKS.md, issue 8, session 10). A program embedding the library chooses its own.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "funcx-endpoint",
    about = "Configure, start, stop and watch funcx endpoints",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes $FUNCX_HOME/endpoints/NAME/config.toml: every key for the provider, commented.
    Configure {
        /// The endpoint's name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// Where blocks come from.
        #[arg(long, default_value = "local", value_parser = PROVIDERS)]
        provider: String,
        /// The gateway to take tasks from (`http://host:port`).
        #[arg(long, requires_all = ["endpoint_id", "token"])]
        gateway: Option<String>,
        /// The endpoint's id at the gateway.
        #[arg(long, requires = "gateway")]
        endpoint_id: Option<String>,
        /// The endpoint's token at the gateway (stored in a file only you can read).
        #[arg(long, requires = "gateway")]
        token: Option<String>,
        /// Replace an existing configuration.
        #[arg(long)]
        force: bool,
    },
    /// Starts an endpoint: in the foreground, or with --detach in the background once it
    /// is connected.
    Start {
        /// The endpoint's name.
        name: String,
        /// Run in the background; return once connected to the gateway.
        #[arg(long)]
        detach: bool,
        /// With --detach: how long to wait for the connection, in seconds.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Stops an endpoint: running tasks finish and are delivered, its blocks are released,
    /// and every process of it is gone when this returns.
    Stop {
        /// The endpoint's name.
        name: String,
        /// How long to wait for the drain, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// An endpoint's state, blocks, managers, workers and tasks.
    Status {
        /// The endpoint's name.
        name: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Every configured endpoint with its state.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// What `status.json` holds: who wrote it and what it said.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StatusFile {
    pid: u32,
    report: EndpointReport,
}

/// What `status --json` and `list --json` print for one endpoint.
#[derive(Debug, Serialize)]
struct Shown {
    name: String,
    running: bool,
    pid: Option<u32>,
    state: EndpointState,
    report: Option<EndpointReport>,
}

fn main() -> ExitCode {
    // Blocks start this program as `funcx-endpoint manager --endpoint ...`.
    if let Some(status) = funcx::python::manager::run_if_manager() {
        return status;
    }
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
    let result = match cli.command {
        Command::Configure {
            name,
            provider,
            gateway,
            endpoint_id,
            token,
            force,
        } => configure(&name, &provider, gateway, endpoint_id, token, force),
        Command::Start { name, detach, wait } => {
            if detach {
                start_detached(&name, Duration::from_secs(wait))
            } else {
                start_foreground(&name)
            }
        }
        Command::Stop { name, timeout } => stop(&name, Duration::from_secs(timeout)),
        Command::Status { name, json } => status(&name, json),
        Command::List { json } => list(json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("funcx-endpoint: {message}");
            ExitCode::from(code)
        }
    }
}

/// A failed command: its exit status and what to tell the user.
struct Failure(u8, String);

fn fail(message: impl Into<String>) -> Failure {
    Failure(1, message.into())
}

type Result<T> = std::result::Result<T, Failure>;

fn home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("FUNCX_HOME") {
        return Ok(PathBuf::from(home));
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".funcx"))
        .ok_or_else(|| fail("neither FUNCX_HOME nor HOME is set"))
}

fn endpoint_dir(name: &str) -> Result<PathBuf> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(Failure(
            64,
            format!("{name:?} is not an endpoint name: use letters, digits, `-`, `_` and `.`"),
        ));
    }
    Ok(home()?.join("endpoints").join(name))
}

/// Writes `text` to `path` readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode through `open`: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn configure(
    name: &str,
    provider: &str,
    gateway: Option<String>,
    endpoint_id: Option<String>,
    token: Option<String>,
    force: bool,
) -> Result<()> {
    let dir = endpoint_dir(name)?;
    let path = dir.join("config.toml");
    if path.exists() && !force {
        return Err(fail(format!(
            "{} exists; edit it, or pass --force to write a new one",
            path.display()
        )));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let gateway_values = gateway.as_deref().zip(endpoint_id.as_deref());
    let text = template(name, provider, gateway_values);
    std::fs::write(&path, text)
        .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    if let Some(token) = token {
        let token_path = dir.join("token");
        write_private(&token_path, &format!("{}\n", token.trim()))
            .map_err(|e| fail(format!("cannot write {}: {e}", token_path.display())))?;
    }
    println!("configured endpoint {name}: {}", path.display());
    if gateway_values.is_none() {
        println!("set [gateway] in it before `funcx-endpoint start {name}`");
    }
    Ok(())
}

fn load(name: &str) -> Result<(PathBuf, PathBuf, EndpointConfig)> {
    let dir = endpoint_dir(name)?;
    let path = dir.join("config.toml");
    if !path.exists() {
        return Err(fail(format!(
            "no endpoint {name}: {} does not exist (run `funcx-endpoint configure {name}`)",
            path.display()
        )));
    }
    let config = EndpointConfig::load(&path).map_err(|e| Failure(78, e.to_string()))?;
    Ok((dir, path, config))
}

/// The pid in `endpoint.pid`, if that process runs.
fn running_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join("endpoint.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn read_status(dir: &Path) -> Option<StatusFile> {
    let text = std::fs::read_to_string(dir.join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_status(dir: &Path, report: &EndpointReport) {
    let file = StatusFile {
        pid: std::process::id(),
        report: report.clone(),
    };
    let Ok(text) = serde_json::to_string_pretty(&file) else {
        return;
    };
    // Written aside and renamed, so a reader never sees half a file.
    let temporary = dir.join(format!(".status.json.{}", std::process::id()));
    if std::fs::write(&temporary, text).is_ok() {
        let _ = std::fs::rename(&temporary, dir.join("status.json"));
    }
}

fn start_foreground(name: &str) -> Result<()> {
    let (dir, path, config) = load(name)?;
    if config.gateway.is_none() {
        return Err(Failure(
            78,
            format!(
                "{}: table `[gateway]` is missing: funcx-endpoint takes its tasks from a gateway",
                path.display()
            ),
        ));
    }
    if let Some(pid) = running_pid(&dir) {
        if pid != std::process::id() {
            return Err(fail(format!(
                "endpoint {name} is already running (pid {pid})"
            )));
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
    let exe =
        std::env::current_exe().map_err(|e| fail(format!("cannot find this program: {e}")))?;
    let builder = config
        .builder(name, &dir, &path, ManagerCommand::new(exe).arg("manager"))
        .map_err(|e| Failure(78, e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
    std::fs::write(
        dir.join("endpoint.pid"),
        format!("{}\n", std::process::id()),
    )
    .map_err(|e| fail(format!("cannot write the pid file: {e}")))?;
    let outcome = runtime.block_on(async {
        let endpoint = builder
            .start()
            .await
            .map_err(|e| fail(format!("endpoint {name} cannot start: {e}")))?;
        tracing::info!(endpoint = name, address = %endpoint.address(), "endpoint running");
        let reporter = tokio::spawn(report_status(endpoint.clone(), dir.clone()));
        let why = wait_for_end(&endpoint).await;
        tracing::info!(endpoint = name, %why, "stopping: draining the endpoint");
        endpoint.stop().await;
        reporter.abort();
        write_status(&dir, &endpoint.status());
        tracing::info!(endpoint = name, "endpoint stopped");
        Ok(())
    });
    let _ = std::fs::remove_file(dir.join("endpoint.pid"));
    outcome
}

/// Waits for a reason to stop: SIGTERM (what `funcx-endpoint stop` and systemd send), SIGINT
/// (Ctrl-C), or the gateway ending the endpoint (a remote stop).
async fn wait_for_end(endpoint: &Endpoint) -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        _ => {
            tracing::error!(
                "cannot handle signals; the endpoint stops only when its gateway stops it"
            );
            return endpoint.ended_by_gateway().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM".to_string(),
        _ = int.recv() => "SIGINT".to_string(),
        reason = endpoint.ended_by_gateway() => reason,
    }
}

/// Keeps `status.json` current: at once, then whenever the report changes (looked at
/// twice a second).
async fn report_status(endpoint: Endpoint, dir: PathBuf) {
    let mut last: Option<EndpointReport> = None;
    loop {
        let report = endpoint.status();
        if last.as_ref() != Some(&report) {
            write_status(&dir, &report);
            last = Some(report);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn start_detached(name: &str, wait: Duration) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let (dir, _, config) = load(name)?;
    if let Some(pid) = running_pid(&dir) {
        return Err(fail(format!(
            "endpoint {name} is already running (pid {pid})"
        )));
    }
    let _ = config;
    let log_path = dir.join("endpoint.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| fail(format!("cannot open {}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| fail(format!("cannot open {}: {e}", log_path.display())))?;
    let exe =
        std::env::current_exe().map_err(|e| fail(format!("cannot find this program: {e}")))?;
    let _ = std::fs::remove_file(dir.join("status.json"));
    let mut child = std::process::Command::new(exe)
        .args(["start", name])
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot start the endpoint process: {e}")))?;
    let pid = child.id();
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(fail(format!(
                "endpoint {name} exited at start ({exit}); its log, {}:\n{}",
                log_path.display(),
                tail(&log_path, 20)
            )));
        }
        let status = read_status(&dir).filter(|status| status.pid == pid);
        if let Some(status) = &status {
            if status.report.state == EndpointState::Running {
                println!(
                    "endpoint {name} started (pid {pid}), connected to {}; log: {}",
                    status.report.gateway.as_deref().unwrap_or("-"),
                    log_path.display()
                );
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let why = status
                .and_then(|s| s.report.strategy.last_error)
                .unwrap_or_else(|| "no error reported".into());
            // Not connected: stop it rather than leave it dialling in the background.
            let _ = terminate(pid);
            let _ = child.wait();
            return Err(fail(format!(
                "endpoint {name} did not connect within {wait:?}: {why}; stopped it (log: {})",
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends SIGTERM to `pid`, through `kill(1)`: the standard library cannot send it, and the
/// workspace forbids the `unsafe` a direct `kill(2)` would take.
fn terminate(pid: u32) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map_err(|e| fail(format!("cannot run kill: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(fail(format!("kill -TERM {pid} failed ({status})")))
    }
}

fn stop(name: &str, timeout: Duration) -> Result<()> {
    let dir = endpoint_dir(name)?;
    if !dir.join("config.toml").exists() {
        return Err(fail(format!("no endpoint {name}")));
    }
    let Some(pid) = running_pid(&dir) else {
        let _ = std::fs::remove_file(dir.join("endpoint.pid"));
        println!("endpoint {name} is not running");
        return Ok(());
    };
    terminate(pid)?;
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "endpoint {name} (pid {pid}) is still draining after {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let blocks = read_status(&dir)
        .map(|s| s.report.strategy.blocks.len())
        .unwrap_or(0);
    println!("endpoint {name} stopped: drained, {blocks} block(s) released");
    Ok(())
}

fn shown(name: &str, dir: &Path) -> Shown {
    let pid = running_pid(dir);
    let file = read_status(dir);
    let report = file.map(|f| f.report);
    let state = match (&pid, &report) {
        (Some(_), Some(report)) => report.state,
        (Some(_), None) => EndpointState::Starting,
        (None, _) => EndpointState::Stopped,
    };
    Shown {
        name: name.to_string(),
        running: pid.is_some(),
        pid,
        state,
        report,
    }
}

fn status(name: &str, json: bool) -> Result<()> {
    let (dir, _, _) = load(name)?;
    let shown = shown(name, &dir);
    if json {
        let text = serde_json::to_string_pretty(&shown).map_err(|e| fail(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    match shown.pid {
        Some(pid) => println!("endpoint {name}: {} (pid {pid})", shown.state),
        None => println!("endpoint {name}: stopped"),
    }
    let Some(report) = shown.report.filter(|_| shown.running) else {
        return Ok(());
    };
    if let Some(gateway) = &report.gateway {
        let connected = if report.connected == Some(true) {
            "connected"
        } else {
            "not connected"
        };
        println!("  gateway   {gateway} ({connected})");
    }
    println!("  managers dial {}", report.address);
    let s = &report.strategy;
    println!("  blocks    {}", s.blocks.len());
    for block in &s.blocks {
        let draining = if block.draining { ", draining" } else { "" };
        println!(
            "    {} {}{draining}: {} manager(s), {} worker(s), {} busy{}",
            block.id,
            block.state,
            block.managers,
            block.workers,
            block.busy,
            block
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    println!("  managers  {}", s.managers);
    println!(
        "  workers   {} ({} busy, {} idle)",
        s.workers, s.busy_workers, s.idle_workers
    );
    println!("  tasks     {} queued, {} running", s.queued, s.in_flight);
    println!("  last error {}", s.last_error.as_deref().unwrap_or("-"));
    Ok(())
}

fn list(json: bool) -> Result<()> {
    let root = home()?.join("endpoints");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("config.toml").is_file())
        .filter_map(|entry| entry.file_name().to_str().map(String::from))
        .collect();
    names.sort();
    let all: Vec<Shown> = names
        .iter()
        .map(|name| shown(name, &root.join(name)))
        .collect();
    if json {
        let text = serde_json::to_string_pretty(&all).map_err(|e| fail(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    if all.is_empty() {
        println!(
            "no endpoints in {} (`funcx-endpoint configure NAME`)",
            root.display()
        );
        return Ok(());
    }
    println!(
        "{:<20} {:<12} {:>6} {:>8} {:>9} {:>7} {:>7}  LAST ERROR",
        "NAME", "STATE", "BLOCKS", "MANAGERS", "BUSY/IDLE", "QUEUED", "RUNNING"
    );
    for shown in all {
        let report = shown.report.filter(|_| shown.running);
        let s = report
            .as_ref()
            .map(|r| r.strategy.clone())
            .unwrap_or_default();
        println!(
            "{:<20} {:<12} {:>6} {:>8} {:>9} {:>7} {:>7}  {}",
            shown.name,
            shown.state.as_str(),
            s.blocks.len(),
            s.managers,
            format!("{}/{}", s.busy_workers, s.idle_workers),
            s.queued,
            s.in_flight,
            s.last_error.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
