//! An endpoint's configuration file (`$FUNCX_HOME/endpoints/NAME/config.toml`), as the
//! `funcx-endpoint` program reads and writes it (feature `cli`).
//!
//! Every table refuses keys it does not know, so a typo is an error that names the key,
//! not a setting silently ignored. [`template`] writes a commented file that lists every
//! key for a provider; [`EndpointConfig::load`] reads one back; [`EndpointConfig::builder`]
//! turns it into an [`EndpointBuilder`](super::EndpointBuilder).
//!
//! Here: the file's shape and its general tables. Beside it: `check` (what the keys' types
//! let through), `build` (the builder), `providers` (one table per provider, each a
//! `ProviderTable` that checks its keys and builds its provider), `template`.

mod build;
mod check;
mod providers;
mod template;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use funcx_core::{ManagerLayout, StrategyConfig};
use serde::Deserialize;

pub use providers::{Ec2Section, GridEngineSection, LocalSection, PbsSection, SlurmSection};
pub use template::template;

use providers::{table, ProviderTable};

/// The providers a configuration may name.
pub const PROVIDERS: [&str; 5] = ["local", "slurm", "pbs", "gridengine", "ec2"];

/// A configuration that cannot be used: which file, which key, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// What is wrong, naming the key.
    pub message: String,
}

impl ConfigError {
    fn new(file: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `local`, `slurm`, `pbs`, `gridengine` or `ec2`.
    pub provider: String,
    /// The only data formats the endpoint runs, e.g. `["json"]` to refuse every pickle
    /// (arguments and functions); absent, every format.
    #[serde(default)]
    pub allowed_formats: Option<Vec<funcx_core::Format>>,
    /// The only functions the endpoint runs, by id (64 hexadecimal digits); absent, every
    /// function.
    #[serde(default)]
    pub allowed_functions: Option<Vec<String>>,
    /// Where tasks come from.
    pub gateway: Option<GatewaySection>,
    /// The managers: where they dial, what they run.
    #[serde(default)]
    pub managers: ManagersSection,
    /// The workers' Python.
    #[serde(default)]
    pub python: PythonSection,
    /// How blocks scale.
    #[serde(default)]
    pub blocks: BlocksSection,
    /// `provider = "local"`.
    pub local: Option<LocalSection>,
    /// `provider = "slurm"`.
    pub slurm: Option<SlurmSection>,
    /// `provider = "pbs"`.
    pub pbs: Option<PbsSection>,
    /// `provider = "gridengine"`.
    pub gridengine: Option<GridEngineSection>,
    /// `provider = "ec2"`.
    pub ec2: Option<Ec2Section>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// The endpoint's id at the gateway.
    pub endpoint_id: String,
    /// The file holding the endpoint's token, relative to the endpoint's folder.
    #[serde(default = "default_token_file")]
    pub token_file: PathBuf,
    /// A CA file to trust for an `https` gateway.
    pub ca_file: Option<PathBuf>,
    /// Other gateways of the same fleet (one shared database), dialled in this order when
    /// the one before cannot be reached.
    #[serde(default)]
    pub failover: Vec<String>,
}

fn default_token_file() -> PathBuf {
    PathBuf::from("token")
}

/// `[managers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagersSection {
    /// Where managers dial in.
    pub listen: SocketAddr,
    /// What managers are told to dial, if not `listen`.
    pub advertise: Option<String>,
    /// The manager program; default: this program, as `funcx-endpoint manager`.
    pub program: Option<PathBuf>,
    /// Nodes per block.
    pub nodes_per_block: usize,
    /// Where a block's managers run: `per-node` (default) or `per-block`, one manager
    /// holding all the block's nodes for multi-node MPI tasks.
    pub layout: ManagerLayout,
    /// Workers per manager (and, with `layout = "per-block"`, task slots per node for MPI
    /// ranks).
    pub workers_per_node: usize,
    /// Bytes of memory tasks may reserve on each node (the managers' `--memory`, and what
    /// the endpoint tells its gateway); default: what each manager finds on its machine.
    pub memory_per_node: Option<u64>,
    /// Re-runs of a task whose manager was lost.
    pub retries: u32,
    /// The endpoint's TLS certificate for managers.
    pub tls_cert: Option<PathBuf>,
    /// Its key.
    pub tls_key: Option<PathBuf>,
    /// The CA managers trust.
    pub tls_ca: Option<PathBuf>,
    /// The name in the certificate.
    pub tls_name: Option<String>,
}

impl Default for ManagersSection {
    fn default() -> Self {
        ManagersSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            program: None,
            nodes_per_block: 1,
            layout: ManagerLayout::PerNode,
            workers_per_node: 1,
            memory_per_node: None,
            retries: 2,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_name: None,
        }
    }
}

/// `[python]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PythonSection {
    /// The interpreter.
    pub interpreter: Option<String>,
    /// Shell lines run on each node before the manager starts.
    pub worker_init: Option<String>,
    /// Devices, one per worker in turn.
    pub accelerators: Vec<String>,
    /// The workers' working directory.
    pub working_dir: Option<PathBuf>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
}

/// `[blocks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlocksSection {
    /// Blocks at start.
    pub init: usize,
    /// Blocks kept when idle.
    pub min: usize,
    /// Blocks at most.
    pub max: usize,
    /// Worker slots per outstanding task, 0 to 1.
    pub parallelism: f64,
    /// Idle seconds before a block is released.
    pub max_idle_secs: f64,
    /// A block's walltime, seconds.
    pub walltime_secs: Option<f64>,
    /// Seconds before the walltime when a block is drained.
    pub drain_margin_secs: Option<f64>,
    /// Seconds between the strategy's looks.
    pub period_secs: f64,
    /// Seconds a block may stay pending.
    pub pending_timeout_secs: f64,
    /// Seconds a running block may go without a manager dialling in.
    pub connect_timeout_secs: f64,
}

impl Default for BlocksSection {
    fn default() -> Self {
        let defaults = StrategyConfig::default();
        BlocksSection {
            init: 1,
            min: 0,
            max: 1,
            parallelism: 1.0,
            max_idle_secs: defaults.max_idle_time.as_secs_f64(),
            walltime_secs: None,
            drain_margin_secs: None,
            period_secs: defaults.period.as_secs_f64(),
            pending_timeout_secs: defaults.pending_timeout.as_secs_f64(),
            connect_timeout_secs: defaults.connect_timeout.as_secs_f64(),
        }
    }
}

impl EndpointConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<EndpointConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, format!("cannot read it: {e}")))?;
        EndpointConfig::parse(&text, path)
    }

    /// Parses and checks `text`, read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<EndpointConfig, ConfigError> {
        let config: EndpointConfig =
            toml::from_str(text).map_err(|e| ConfigError::new(path, toml_error(&e, text)))?;
        config.check(path)?;
        Ok(config)
    }

    /// The table of the configured provider, its defaults when the file has none; `None`
    /// when `provider` names no provider.
    fn provider_table(&self) -> Option<Box<dyn ProviderTable>> {
        Some(match self.provider.as_str() {
            "local" => table(&self.local),
            "slurm" => table(&self.slurm),
            "pbs" => table(&self.pbs),
            "gridengine" => table(&self.gridengine),
            "ec2" => table(&self.ec2),
            _ => return None,
        })
    }
}

/// A number of seconds from the file (checked finite and not negative); one too large for a
/// `Duration` saturates.
fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
}

/// toml's message on one line, with the line it is about (which names the key).
fn toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().replace("unknown field", "unknown key");
    match error.span() {
        Some(span) if span.start <= text.len() => {
            let line = text[..span.start].matches('\n').count() + 1;
            let shown = text.lines().nth(line - 1).unwrap_or_default().trim();
            format!("line {line} (`{shown}`): {message}")
        }
        _ => message,
    }
}
