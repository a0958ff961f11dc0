//! The manager: one per node, it dials the endpoint and runs the endpoint's tasks on warm
//! Python workers.
//!
//! The `funcx-manager` binary is a thin shell around [`ManagerOptions::from_args`] and
//! [`run`]; a provider starts one per node of each block.
//!
//! ```text
//! funcx-manager --endpoint 10.0.0.5:7070 --token-file ~/.funcx/token --workers 8
//! ```

use std::ffi::OsString;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use funcx_core::Executor;
use funcx_transport::remote::{
    run_manager, EchoRunner, ExecutorRunner, ManagerConfig, ManagerExit, ManagerId, ManagerInfo,
    TcpDial,
};
use funcx_transport::TcpTransport;
use tracing::info;

use crate::{BlockNodes, PythonConfig, PythonRuntime};

/// What a manager needs to know: where its endpoint is, how to prove it may connect, and
/// how to run its workers.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// The endpoint's address.
    pub endpoint: SocketAddr,
    /// The shared secret the endpoint expects.
    pub token: String,
    /// How many Python workers to run (default: one per CPU).
    pub workers: usize,
    /// Bytes of memory tasks here may reserve, advertised to the endpoint so that tasks
    /// asking for memory are placed where it is free (default: the machine's, see
    /// [`crate::machine_memory`]; `None`: unlimited).
    pub memory: Option<u64>,
    /// How to start them.
    pub python: PythonConfig,
    /// The block this manager belongs to (default: `$FUNCX_BLOCK_ID`).
    pub block: Option<String>,
    /// Run this many simulated workers instead of Python ones: each returns its first
    /// argument at once. For measuring an endpoint at a scale one machine cannot host.
    pub simulate: Option<usize>,
    /// How long to keep trying an endpoint that cannot be reached before exiting.
    pub give_up_after: Duration,
    /// Dial the endpoint over TLS, trusting the CA certificates in this PEM file (feature
    /// `tls`): the token then never travels in clear.
    pub tls_ca: Option<PathBuf>,
    /// The name the endpoint's certificate must carry (default: the host of `--endpoint`).
    pub tls_name: Option<String>,
    /// The nodes of its block this manager holds for multi-node tasks, when it is its
    /// block's only manager (a block started with one manager, not one per node); `None`:
    /// its own node alone.
    pub block_nodes: Option<BlockNodes>,
}

/// A command line that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n\n{USAGE}", self.0)
    }
}

impl std::error::Error for UsageError {}

/// The manager's command-line help.
pub const USAGE: &str = "usage: funcx-manager --endpoint HOST:PORT [options]

options:
  --endpoint HOST:PORT   the endpoint to dial (required)
  --token TOKEN          the endpoint's token (or $FUNCX_TOKEN, or --token-file)
  --token-file PATH      read the token from a file
  --workers N            Python workers to run (default: one per CPU)
  --memory BYTES         memory tasks here may reserve (default: the machine's MemTotal,
                         or its cgroup's memory.max when lower)
  --python PATH          the Python interpreter (default: python3)
  --block ID             the block this manager belongs to (default: $FUNCX_BLOCK_ID)
  --gpus A,B,...         pin worker i to device i mod n (CUDA_VISIBLE_DEVICES, ...)
  --block-nodes auto|H,H hold these nodes of the block for multi-node (MPI) tasks; auto:
                         the batch job's, from Slurm, PBS or Grid Engine
  --simulate N           run N simulated workers instead of Python ones
  --give-up-after SECS   exit if the endpoint is unreachable this long (default 300)
  --tls-ca PATH          dial over TLS, trusting the CA certificates in this PEM file
  --tls-name NAME        the name in the endpoint's certificate (default: its host)";

impl ManagerOptions {
    /// Parses the manager's command line (without the program name).
    pub fn from_args(
        args: impl IntoIterator<Item = OsString>,
    ) -> Result<ManagerOptions, UsageError> {
        let mut args = args
            .into_iter()
            .map(|arg| arg.to_string_lossy().into_owned());
        let mut endpoint = None;
        let mut host = String::new();
        let mut token = std::env::var("FUNCX_TOKEN").ok();
        let mut options = ManagerOptions {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: String::new(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory: crate::machine_memory(),
            python: PythonConfig::new(),
            block: std::env::var("FUNCX_BLOCK_ID").ok(),
            simulate: None,
            give_up_after: Duration::from_secs(300),
            tls_ca: None,
            tls_name: None,
            block_nodes: None,
        };
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| UsageError(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--endpoint" => {
                    let address = value()?;
                    host = address
                        .rsplit_once(':')
                        .map_or(address.as_str(), |(host, _)| host)
                        .trim_matches(['[', ']'])
                        .to_string();
                    endpoint = Some(resolve(&address)?);
                }
                "--tls-ca" => options.tls_ca = Some(PathBuf::from(value()?)),
                "--tls-name" => options.tls_name = Some(value()?),
                "--token" => token = Some(value()?),
                "--token-file" => {
                    let path = PathBuf::from(value()?);
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        UsageError(format!(
                            "cannot read the token file {}: {e}",
                            path.display()
                        ))
                    })?;
                    token = Some(text.trim().to_string());
                }
                "--workers" => options.workers = number(&flag, &value()?)?.max(1),
                "--memory" => {
                    let text = value()?;
                    let bytes = text.parse::<u64>().map_err(|_| {
                        UsageError(format!("--memory takes a number of bytes, not {text:?}"))
                    })?;
                    options.memory = Some(bytes);
                }
                "--python" => options.python = options.python.python(value()?),
                "--block" => options.block = Some(value()?),
                "--gpus" => {
                    let gpus = value()?
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect();
                    options.python = options.python.accelerators(gpus);
                }
                "--block-nodes" => {
                    options.block_nodes = Some(BlockNodes::parse(&value()?).map_err(UsageError)?)
                }
                "--simulate" => options.simulate = Some(number(&flag, &value()?)?.max(1)),
                "--give-up-after" => {
                    options.give_up_after = Duration::from_secs(number(&flag, &value()?)? as u64)
                }
                "-h" | "--help" => {
                    return Err(UsageError(
                        "funcx-manager runs an endpoint's tasks on this node".into(),
                    ))
                }
                other => return Err(UsageError(format!("unknown option {other}"))),
            }
        }
        options.endpoint = endpoint.ok_or_else(|| UsageError("--endpoint is required".into()))?;
        if options.tls_ca.is_some() && options.tls_name.is_none() {
            options.tls_name = Some(host);
        }
        if options.tls_ca.is_some() && !cfg!(feature = "tls") {
            return Err(UsageError(
                "--tls-ca: this manager was built without TLS support (feature `tls`)".into(),
            ));
        }
        options.token = token.ok_or_else(|| {
            UsageError("no token: pass --token, --token-file or set FUNCX_TOKEN".into())
        })?;
        Ok(options)
    }
}

fn resolve(address: &str) -> Result<SocketAddr, UsageError> {
    address
        .to_socket_addrs()
        .map_err(|e| {
            UsageError(format!(
                "cannot resolve the endpoint address {address}: {e}"
            ))
        })?
        .next()
        .ok_or_else(|| {
            UsageError(format!(
                "the endpoint address {address} resolves to nothing"
            ))
        })
}

fn number(flag: &str, value: &str) -> Result<usize, UsageError> {
    value
        .parse()
        .map_err(|_| UsageError(format!("{flag} takes a whole number, not {value:?}")))
}

/// Runs a manager until its endpoint drains or stops it, or stays unreachable for
/// [`ManagerOptions::give_up_after`].
///
/// Must be called within a multi-threaded Tokio runtime.
pub async fn run(options: ManagerOptions) -> ManagerExit {
    let slots = options.simulate.unwrap_or(options.workers);
    let nodes = match options.block_nodes.as_ref().map(BlockNodes::resolve) {
        None => Vec::new(),
        Some(Ok(hosts)) => hosts,
        Some(Err(error)) => {
            tracing::error!(%error, "cannot list the block's nodes");
            return ManagerExit::WorkersFailed(error);
        }
    };
    let info = ManagerInfo {
        id: ManagerId(random_id()),
        block: options.block.clone(),
        host: funcx_core::hostname(),
        pid: std::process::id(),
        slots: u32::try_from(slots).unwrap_or(u32::MAX),
        gpus: options.python.accelerator_list().to_vec(),
        cores: None,
        memory: options.memory,
        nodes: nodes.clone(),
    };
    info!(manager = %info.id, endpoint = %options.endpoint, slots, block = ?info.block, "manager starting");
    let mut config = ManagerConfig::new(info);
    config.give_up_after = options.give_up_after;
    let transport = match with_tls(TcpTransport::builder().token(&options.token), &options) {
        Ok(transport) => transport.build(),
        Err(error) => {
            tracing::error!(%error, "cannot set up TLS");
            return ManagerExit::EndpointGone(format!("cannot set up TLS: {error}"));
        }
    };
    let dial = TcpDial::new(transport, options.endpoint);
    let exit = match options.simulate {
        Some(slots) => run_manager(dial, EchoRunner::new(slots), config).await,
        None => {
            let mut builder = Executor::builder().workers(options.workers);
            if let Some(memory) = options.memory {
                builder = builder.memory(memory);
            }
            if !nodes.is_empty() {
                builder = builder.nodes(nodes);
            }
            let executor = builder.start(PythonRuntime::new(options.python.clone()));
            // Offer the workers to the endpoint only once they can take tasks: a manager that
            // registers early is handed work it sits on while Python starts, and one whose
            // Python cannot start at all should say so here, not look like a silent node.
            if let Err(error) = executor.ready().await {
                tracing::error!(%error, "Python workers could not start");
                executor.shutdown_now().await;
                return ManagerExit::WorkersFailed(error.to_string());
            }
            let exit = run_manager(
                dial,
                ExecutorRunner::new(executor.clone(), options.workers),
                config,
            )
            .await;
            executor.shutdown_now().await;
            exit
        }
    };
    info!(%exit, "manager exiting");
    exit
}

#[cfg(feature = "tls")]
fn with_tls(
    transport: funcx_transport::TcpTransportBuilder,
    options: &ManagerOptions,
) -> Result<funcx_transport::TcpTransportBuilder, funcx_transport::TransportError> {
    match (&options.tls_ca, &options.tls_name) {
        (Some(ca), Some(name)) => Ok(transport.tls_client(
            funcx_transport::tls::TlsClientConfig::from_pem_file(ca, name)?,
        )),
        _ => Ok(transport),
    }
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    transport: funcx_transport::TcpTransportBuilder,
    _options: &ManagerOptions,
) -> Result<funcx_transport::TcpTransportBuilder, funcx_transport::TransportError> {
    Ok(transport)
}

/// Runs a manager from a command line (without the program name) to completion: logs to
/// stderr, its own Tokio runtime, and the exit status of the `funcx-manager` binary (0 when
/// drained or stopped, 2 when the endpoint was unreachable for too long, 3 when the Python
/// workers could not start, 64 for a bad command line, 70 when no runtime could start).
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> std::process::ExitCode {
    use std::process::ExitCode;
    // A second initialisation (an application that already set up logging) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
    let options = match ManagerOptions::from_args(args) {
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
    match runtime.block_on(run(options)) {
        ManagerExit::Drained | ManagerExit::Stopped => ExitCode::SUCCESS,
        ManagerExit::EndpointGone(_) => ExitCode::from(2),
        ManagerExit::WorkersFailed(_) => ExitCode::from(3),
    }
}

/// Lets an application be its own manager binary: if this process was started with
/// `manager` as its first argument (a provider running `current_exe() manager --endpoint
/// ...`), runs the manager and returns its exit status; otherwise returns `None` at once.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     if let Some(status) = funcx_python::manager::run_if_manager() {
///         return status;
///     }
///     // ... the application: an endpoint whose blocks start `current_exe() manager ...`
///     std::process::ExitCode::SUCCESS
/// }
/// ```
pub fn run_if_manager() -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|first| first == "manager") {
        Some(main_with_args(args))
    } else {
        None
    }
}

/// The whole `main` of a program that is an application and its own manager binary.
///
/// Started as `PROGRAM manager ...` (by its endpoint's provider), it runs the manager, as
/// [`run_if_manager`] does. Otherwise it logs to stderr (filtered by `RUST_LOG`, default
/// `warn`), starts a multi-threaded Tokio runtime and runs `app` on it; an error `app`
/// returns is printed and the program exits with status 1.
///
/// ```no_run
/// use std::process::ExitCode;
///
/// fn main() -> ExitCode {
///     funcx_python::manager::main_or_manager(|| async {
///         // ... the application: an endpoint whose blocks start `current_exe() manager ...`
///         Ok::<(), String>(())
///     })
/// }
/// ```
pub fn main_or_manager<F, E>(app: impl FnOnce() -> F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    use std::process::ExitCode;
    if let Some(status) = run_if_manager() {
        return status;
    }
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
    // An application that set up logging already keeps its own.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    match runtime.block_on(app()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A random manager id, from the standard library's randomly keyed hasher.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_a_full_command_line() {
        let options = ManagerOptions::from_args(args(&[
            "--endpoint",
            "127.0.0.1:7070",
            "--token",
            "t",
            "--workers",
            "3",
            "--block",
            "b-1",
            "--gpus",
            "0,1",
        ]))
        .expect("valid");
        assert_eq!(options.endpoint.port(), 7070);
        assert_eq!(options.workers, 3);
        assert_eq!(options.block.as_deref(), Some("b-1"));
        assert_eq!(options.python.accelerator_list(), ["0", "1"]);
    }

    #[test]
    fn explains_what_is_wrong() {
        let missing = ManagerOptions::from_args(args(&["--token", "t"])).unwrap_err();
        assert!(
            missing.to_string().contains("--endpoint is required"),
            "{missing}"
        );
        let bad = ManagerOptions::from_args(args(&[
            "--endpoint",
            "127.0.0.1:1",
            "--token",
            "t",
            "--workers",
            "many",
        ]))
        .unwrap_err();
        assert!(bad.to_string().contains("whole number"), "{bad}");
        let unknown = ManagerOptions::from_args(args(&["--frobnicate"])).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown option --frobnicate"),
            "{unknown}"
        );
    }
}
