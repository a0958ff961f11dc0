//! An endpoint's configuration file (`$FUNCX_HOME/endpoints/NAME/config.toml`), as the
//! `funcx-endpoint` program reads and writes it (feature `cli`).
//!
//! Every table refuses keys it does not know, so a typo is an error that names the key,
//! not a setting silently ignored. [`template`] writes a commented file that lists every
//! key for a provider; [`EndpointConfig::load`] reads one back; [`EndpointConfig::builder`]
//! turns it into an [`EndpointBuilder`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use funcx_core::{ManagerCommand, StrategyConfig};
use funcx_providers::{
    GridEngineConfig, GridEngineProvider, Launcher, LocalProvider, PbsConfig, PbsFlavor,
    PbsProvider, SlurmConfig, SlurmProvider,
};
use funcx_python::PythonConfig;
use serde::Deserialize;

use super::{Endpoint, EndpointBuilder, GatewayLink, ManagerTls};

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
    /// Workers per manager.
    pub workers_per_node: usize,
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
            workers_per_node: 1,
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

/// `[local]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// Seconds between SIGTERM and SIGKILL when a block ends.
    pub grace_secs: Option<f64>,
}

/// `[slurm]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--constraint`.
    pub constraint: Option<String>,
    /// `--exclusive`.
    #[serde(default)]
    pub exclusive: bool,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--mem`.
    pub mem: Option<String>,
    /// The job name prefix.
    pub job_name: Option<String>,
    /// Extra `#SBATCH` lines.
    #[serde(default)]
    pub directives: Vec<String>,
    /// `srun` (default) or `single`.
    pub launcher: Option<String>,
    /// Where job scripts and logs go.
    pub scripts_dir: Option<PathBuf>,
}

/// `[pbs]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbsSection {
    /// `pbspro` (default) or `torque`.
    pub flavor: Option<String>,
    /// `-q`.
    pub queue: Option<String>,
    /// `-A`.
    pub account: Option<String>,
    /// `ncpus` per node.
    pub cpus_per_node: Option<u32>,
    /// The job name prefix.
    pub job_name: Option<String>,
    /// Extra `#PBS` lines.
    #[serde(default)]
    pub directives: Vec<String>,
    /// `mpiexec`, `aprun` or `single` (default).
    pub launcher: Option<String>,
    /// Where job scripts and logs go.
    pub scripts_dir: Option<PathBuf>,
}

/// `[gridengine]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridEngineSection {
    /// `-q`.
    pub queue: Option<String>,
    /// The parallel environment for multi-node blocks.
    pub parallel_environment: Option<String>,
    /// Slots per node in it.
    pub slots_per_node: Option<usize>,
    /// Extra `#$` lines.
    #[serde(default)]
    pub directives: Vec<String>,
    /// The job name prefix.
    pub job_name: Option<String>,
    /// Where job scripts and logs go.
    pub scripts_dir: Option<PathBuf>,
}

/// `[ec2]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Section {
    /// The AMI.
    pub image_id: Option<String>,
    /// The instance type.
    pub instance_type: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The subnet.
    pub subnet_id: Option<String>,
    /// The SSH key pair.
    pub key_name: Option<String>,
    /// Security groups.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// Spot instances.
    #[serde(default)]
    pub spot: bool,
    /// The highest spot price.
    pub spot_max_price: Option<String>,
    /// The instance profile.
    pub iam_instance_profile: Option<String>,
    /// Extra tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Another EC2 API address (an emulator, a private endpoint).
    pub endpoint_url: Option<String>,
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

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| Err(ConfigError::new(path, message));
        if !PROVIDERS.contains(&self.provider.as_str()) {
            return bad(format!(
                "key `provider`: {:?} is not a provider; use one of {}",
                self.provider,
                PROVIDERS.join(", ")
            ));
        }
        let sections = [
            ("local", self.local.is_some()),
            ("slurm", self.slurm.is_some()),
            ("pbs", self.pbs.is_some()),
            ("gridengine", self.gridengine.is_some()),
            ("ec2", self.ec2.is_some()),
        ];
        for (name, present) in sections {
            if present && name != self.provider {
                return bad(format!(
                    "table `[{name}]`: the provider is {:?}, so its settings would be ignored; \
                     remove it or set `provider = \"{name}\"`",
                    self.provider
                ));
            }
        }
        let blocks = &self.blocks;
        if blocks.max == 0 {
            return bad("key `blocks.max`: must be at least 1".into());
        }
        if blocks.min > blocks.max {
            return bad(format!(
                "key `blocks.min`: {} is more than `blocks.max` ({})",
                blocks.min, blocks.max
            ));
        }
        if blocks.init > blocks.max {
            return bad(format!(
                "key `blocks.init`: {} is more than `blocks.max` ({})",
                blocks.init, blocks.max
            ));
        }
        if !(0.0..=1.0).contains(&blocks.parallelism) {
            return bad(format!(
                "key `blocks.parallelism`: {} is not between 0 and 1",
                blocks.parallelism
            ));
        }
        for (key, value) in [
            ("blocks.max_idle_secs", Some(blocks.max_idle_secs)),
            ("blocks.walltime_secs", blocks.walltime_secs),
            ("blocks.drain_margin_secs", blocks.drain_margin_secs),
            ("blocks.period_secs", Some(blocks.period_secs)),
            (
                "blocks.pending_timeout_secs",
                Some(blocks.pending_timeout_secs),
            ),
            (
                "blocks.connect_timeout_secs",
                Some(blocks.connect_timeout_secs),
            ),
        ] {
            if let Some(value) = value {
                if !(value.is_finite() && value >= 0.0) {
                    return bad(format!("key `{key}`: {value} is not a number of seconds"));
                }
            }
        }
        if let (Some(walltime), Some(margin)) = (blocks.walltime_secs, blocks.drain_margin_secs) {
            if margin >= walltime {
                return bad(format!(
                    "key `blocks.drain_margin_secs`: {margin} is not less than `blocks.walltime_secs` ({walltime})"
                ));
            }
        }
        if self.managers.nodes_per_block == 0 {
            return bad("key `managers.nodes_per_block`: must be at least 1".into());
        }
        if self.managers.workers_per_node == 0 {
            return bad("key `managers.workers_per_node`: must be at least 1".into());
        }
        let tls = [
            self.managers.tls_cert.is_some(),
            self.managers.tls_key.is_some(),
            self.managers.tls_ca.is_some(),
        ];
        if tls.iter().any(|&set| set) && !tls.iter().all(|&set| set) {
            return bad(
                "keys `managers.tls_cert`, `managers.tls_key`, `managers.tls_ca`: set all three, or none".into(),
            );
        }
        if let Some(gateway) = &self.gateway {
            if !(gateway.url.starts_with("http://") || gateway.url.starts_with("https://")) {
                return bad(format!(
                    "key `gateway.url`: {:?} is not an http:// or https:// URL",
                    gateway.url
                ));
            }
            if gateway.endpoint_id.trim().is_empty() {
                return bad("key `gateway.endpoint_id`: is empty".into());
            }
        }
        let launcher = match self.provider.as_str() {
            "slurm" => self.slurm.as_ref().and_then(|s| s.launcher.clone()),
            "pbs" => self.pbs.as_ref().and_then(|s| s.launcher.clone()),
            _ => None,
        };
        if let Some(launcher) = launcher {
            if parse_launcher(&launcher).is_none() {
                return bad(format!(
                    "key `{}.launcher`: {launcher:?} is not a launcher; use srun, mpiexec, aprun or single",
                    self.provider
                ));
            }
        }
        if let Some(pbs) = &self.pbs {
            if let Some(flavor) = &pbs.flavor {
                if !matches!(flavor.as_str(), "pbspro" | "torque") {
                    return bad(format!(
                        "key `pbs.flavor`: {flavor:?} is not pbspro or torque"
                    ));
                }
            }
        }
        if self.provider == "ec2" {
            let ec2 = self.ec2.clone().unwrap_or_default();
            if ec2.image_id.is_none() || ec2.instance_type.is_none() {
                return bad(
                    "keys `ec2.image_id` and `ec2.instance_type`: both are required".into(),
                );
            }
        }
        Ok(())
    }

    /// An [`EndpointBuilder`] for this configuration. `dir` is the endpoint's folder
    /// (relative paths are taken from it), `name` its name, `path` the file (for errors),
    /// and `manager` the command that starts a manager when the file names no program.
    pub fn builder(
        &self,
        name: &str,
        dir: &Path,
        path: &Path,
        manager: ManagerCommand,
    ) -> Result<EndpointBuilder, ConfigError> {
        let relative = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        let scripts = dir.join("blocks");
        let blocks = &self.blocks;
        let mut builder = Endpoint::builder()
            .name(name)
            .nodes_per_block(self.managers.nodes_per_block)
            .workers_per_node(self.managers.workers_per_node)
            .listen(self.managers.listen)
            .retries_on_manager_loss(self.managers.retries)
            .strategy(
                StrategyConfig::new()
                    .init_blocks(blocks.init)
                    .min_blocks(blocks.min)
                    .max_blocks(blocks.max)
                    .parallelism(blocks.parallelism)
                    .max_idle_time(secs(blocks.max_idle_secs))
                    .period(secs(blocks.period_secs))
                    .pending_timeout(secs(blocks.pending_timeout_secs))
                    .connect_timeout(secs(blocks.connect_timeout_secs)),
            );
        if let Some(walltime) = blocks.walltime_secs {
            builder = builder.walltime(secs(walltime));
        }
        if let Some(margin) = blocks.drain_margin_secs {
            builder = builder.drain_margin(secs(margin));
        }
        if let Some(advertise) = &self.managers.advertise {
            builder = builder.advertise(advertise);
        }
        if let Some(formats) = &self.allowed_formats {
            builder = builder.allowed_formats(formats.iter().copied());
        }
        if let Some(functions) = &self.allowed_functions {
            let ids = functions
                .iter()
                .map(|id| id.parse::<funcx_core::FunctionId>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::new(path, format!("key `allowed_functions`: {e}")))?;
            builder = builder.allowed_functions(ids);
        }
        builder = match &self.managers.program {
            Some(program) => builder.manager_program(relative(program)),
            None => builder.manager_command(manager),
        };
        if let (Some(cert), Some(key), Some(ca)) = (
            &self.managers.tls_cert,
            &self.managers.tls_key,
            &self.managers.tls_ca,
        ) {
            builder = builder.manager_tls(ManagerTls {
                cert: relative(cert),
                key: relative(key),
                ca: relative(ca),
                server_name: self.managers.tls_name.clone(),
            });
        }
        let python = &self.python;
        let mut config = PythonConfig::new();
        if let Some(interpreter) = &python.interpreter {
            config = config.python(interpreter);
        }
        if let Some(init) = &python.worker_init {
            config = config.worker_init(init);
        }
        if !python.accelerators.is_empty() {
            config = config.accelerators(python.accelerators.clone());
        }
        if let Some(dir) = &python.working_dir {
            config = config.working_dir(dir);
        }
        config = config.envs(python.env.iter());
        builder = builder.python(config);

        if let Some(gateway) = &self.gateway {
            let token_path = relative(&gateway.token_file);
            let token = std::fs::read_to_string(&token_path).map_err(|e| {
                ConfigError::new(
                    path,
                    format!(
                        "key `gateway.token_file`: cannot read {}: {e}",
                        token_path.display()
                    ),
                )
            })?;
            builder = builder.gateway(GatewayLink {
                url: gateway.url.clone(),
                endpoint_id: gateway.endpoint_id.clone(),
                token: token.trim().to_string(),
                ca_file: gateway.ca_file.as_deref().map(relative),
            });
        }

        builder = match self.provider.as_str() {
            "local" => {
                let mut provider = LocalProvider::new();
                if let Some(grace) = self.local.as_ref().and_then(|l| l.grace_secs) {
                    provider = provider.grace_period(secs(grace));
                }
                builder.provider(provider)
            }
            "slurm" => {
                let s = self.slurm.clone().unwrap_or_default();
                let mut config = SlurmConfig::new()
                    .exclusive(s.exclusive)
                    .scripts_dir(s.scripts_dir.as_deref().map_or(scripts.clone(), relative));
                if let Some(v) = s.partition {
                    config = config.partition(v);
                }
                if let Some(v) = s.account {
                    config = config.account(v);
                }
                if let Some(v) = s.qos {
                    config = config.qos(v);
                }
                if let Some(v) = s.constraint {
                    config = config.constraint(v);
                }
                if let Some(v) = s.cpus_per_task {
                    config = config.cpus_per_task(v);
                }
                if let Some(v) = s.mem {
                    config = config.mem(v);
                }
                config = config.job_name(s.job_name.unwrap_or_else(|| format!("funcx-{name}")));
                for line in s.directives {
                    config = config.directive(line);
                }
                if let Some(launcher) = s.launcher.as_deref().and_then(parse_launcher) {
                    config = config.launcher(launcher);
                }
                builder.provider(SlurmProvider::new(config))
            }
            "pbs" => {
                let s = self.pbs.clone().unwrap_or_default();
                let flavor = match s.flavor.as_deref() {
                    Some("torque") => PbsFlavor::Torque,
                    _ => PbsFlavor::PbsPro,
                };
                let mut config = PbsConfig::new(flavor)
                    .scripts_dir(s.scripts_dir.as_deref().map_or(scripts.clone(), relative));
                if let Some(v) = s.queue {
                    config = config.queue(v);
                }
                if let Some(v) = s.account {
                    config = config.account(v);
                }
                if let Some(v) = s.cpus_per_node {
                    config = config.cpus_per_node(v);
                }
                config = config.job_name(s.job_name.unwrap_or_else(|| format!("funcx-{name}")));
                for line in s.directives {
                    config = config.directive(line);
                }
                if let Some(launcher) = s.launcher.as_deref().and_then(parse_launcher) {
                    config = config.launcher(launcher);
                }
                builder.provider(PbsProvider::new(config))
            }
            "gridengine" => {
                let s = self.gridengine.clone().unwrap_or_default();
                let mut config = GridEngineConfig::new()
                    .scripts_dir(s.scripts_dir.as_deref().map_or(scripts.clone(), relative));
                if let Some(v) = s.queue {
                    config = config.queue(v);
                }
                if let Some(pe) = s.parallel_environment {
                    config = config.parallel_environment(pe, s.slots_per_node.unwrap_or(1));
                }
                for line in s.directives {
                    config = config.directive(line);
                }
                config = config.job_name(s.job_name.unwrap_or_else(|| format!("funcx-{name}")));
                builder.provider(GridEngineProvider::new(config))
            }
            "ec2" => ec2_provider(builder, self.ec2.clone().unwrap_or_default(), name, path)?,
            other => {
                return Err(ConfigError::new(
                    path,
                    format!("key `provider`: {other:?} is not a provider"),
                ))
            }
        };
        Ok(builder)
    }
}

#[cfg(feature = "ec2")]
fn ec2_provider(
    builder: EndpointBuilder,
    s: Ec2Section,
    name: &str,
    path: &Path,
) -> Result<EndpointBuilder, ConfigError> {
    use funcx_providers::{Ec2Config, Ec2Provider};
    let mut config = Ec2Config::new(
        s.image_id.unwrap_or_default(),
        s.instance_type.unwrap_or_default(),
    )
    .endpoint_name(name);
    if let Some(v) = s.region {
        config = config.region(v);
    }
    if let Some(v) = s.subnet_id {
        config = config.subnet_id(v);
    }
    if let Some(v) = s.key_name {
        config = config.key_name(v);
    }
    config = config.security_group_ids(s.security_group_ids);
    if s.spot {
        config = config.spot();
    }
    if let Some(v) = s.spot_max_price {
        config = config.spot_max_price(v);
    }
    if let Some(v) = s.iam_instance_profile {
        config = config.iam_instance_profile(v);
    }
    for (key, value) in s.tags {
        config = config.tag(key, value);
    }
    if let Some(v) = s.endpoint_url {
        config = config.endpoint_url(v);
    }
    let provider = Ec2Provider::new(config)
        .map_err(|e| ConfigError::new(path, format!("table `[ec2]`: {e}")))?;
    Ok(builder.provider(provider))
}

#[cfg(not(feature = "ec2"))]
fn ec2_provider(
    _builder: EndpointBuilder,
    _s: Ec2Section,
    _name: &str,
    path: &Path,
) -> Result<EndpointBuilder, ConfigError> {
    Err(ConfigError::new(
        path,
        "key `provider`: \"ec2\" needs funcx built with the `ec2` feature",
    ))
}

fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
}

fn parse_launcher(name: &str) -> Option<Launcher> {
    match name {
        "srun" => Some(Launcher::srun()),
        "mpiexec" => Some(Launcher::mpiexec()),
        "aprun" => Some(Launcher::aprun()),
        "single" => Some(Launcher::SingleNode),
        _ => None,
    }
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

/// The commented configuration `funcx-endpoint configure` writes: every key for
/// `provider`, with the given gateway settings filled in.
pub fn template(name: &str, provider: &str, gateway: Option<(&str, &str)>) -> String {
    let mut text = format!(
        r#"# funcx-endpoint configuration of endpoint "{name}".
# Every key is listed; a commented key shows its default. Unknown keys are refused.
# Start it with `funcx-endpoint start {name}`; see `funcx-endpoint --help`.

# Where blocks of managers come from: local, slurm, pbs, gridengine or ec2.
provider = "{provider}"
# The only data formats tasks may use: ["json"] refuses every pickled argument and pickled
# function before anything is unpickled (source-text functions always run). Default: all.
# allowed_formats = ["json"]
# The only functions tasks may call, by id; checked here whatever the gateway checked.
# allowed_functions = ["<64 hex digits>"]

"#
    );
    match gateway {
        Some((url, endpoint_id)) => text.push_str(&format!(
            r#"# Where tasks come from: the gateway this endpoint dials out to.
[gateway]
url = "{url}"
endpoint_id = "{endpoint_id}"
# The endpoint's token, in a file only its owner may read (relative to this folder).
token_file = "token"
# A CA certificate (PEM) to trust for an https:// gateway with a private CA.
# ca_file = "/etc/funcx/gateway-ca.pem"

"#
        )),
        None => text.push_str(
            r#"# Where tasks come from: the gateway this endpoint dials out to (required to start).
# [gateway]
# url = "https://gateway.example.org:8470"
# endpoint_id = "the id POST /v1/endpoints answered"
# token_file = "token"          # the endpoint's token, mode 0600, relative to this folder
# ca_file = "/etc/funcx/gateway-ca.pem"

"#,
        ),
    }
    text.push_str(
        r#"[managers]
# Where managers dial in: an address the compute nodes reach.
listen = "127.0.0.1:0"
# What managers are told to dial, when not `listen` (listening on 0.0.0.0, NAT).
# advertise = "login1.cluster:7070"
# The manager program; default: this funcx-endpoint, run as `funcx-endpoint manager`.
# program = "/usr/local/bin/funcx-manager"
nodes_per_block = 1
workers_per_node = 1
# How often a task whose manager was lost is re-run before it fails.
# retries = 2
# TLS between managers and the endpoint (all three, or none).
# tls_cert = "endpoint.crt"
# tls_key = "endpoint.key"
# tls_ca = "ca.crt"
# tls_name = "login1.cluster"   # the name in the certificate; default: the host dialled

[python]
# interpreter = "python3"
# worker_init = "module load python/3.12; source ~/venv/bin/activate"
# accelerators = ["0", "1"]    # worker i gets device i mod n (CUDA_VISIBLE_DEVICES, ...)
# working_dir = "/scratch/me"

[python.env]
# OMP_NUM_THREADS = "1"

[blocks]
init = 1
min = 0
max = 1
# parallelism = 1.0             # worker slots per outstanding task, 0 to 1
# max_idle_secs = 120           # an idle block is released after this
# walltime_secs = 3600          # asked for each block; blocks drain before it ends
# drain_margin_secs = 120       # default: a tenth of the walltime, at most 120
# period_secs = 5               # how often the strategy looks
# pending_timeout_secs = 3600   # a block pending longer is cancelled
# connect_timeout_secs = 120    # a running block whose managers never dial in is cancelled

"#,
    );
    text.push_str(match provider {
        "local" => {
            r#"[local]
# grace_secs = 10               # SIGTERM, then SIGKILL after this, when a block ends
"#
        }
        "slurm" => {
            r#"[slurm]
# partition = "debug"
# account = "project42"
# qos = "normal"
# constraint = "haswell"
# exclusive = false
# cpus_per_task = 8
# mem = "16G"
# job_name = "funcx-NAME"
# directives = ["--gres=gpu:1"]  # extra #SBATCH lines
# launcher = "srun"             # srun (one manager per node) or single
# scripts_dir = "blocks"        # job scripts and logs (relative to this folder)
"#
        }
        "pbs" => {
            r#"[pbs]
# flavor = "pbspro"             # pbspro or torque
# queue = "workq"
# account = "project42"
# cpus_per_node = 8
# job_name = "funcx-NAME"
# directives = ["-l place=scatter"]  # extra #PBS lines
# launcher = "single"           # single, mpiexec or aprun
# scripts_dir = "blocks"
"#
        }
        "gridengine" => {
            r#"[gridengine]
# queue = "all.q"
# parallel_environment = "mpi"  # for blocks of more than one node
# slots_per_node = 1
# directives = ["-l h_vmem=4G"]
# job_name = "funcx-NAME"
# scripts_dir = "blocks"
"#
        }
        _ => {
            r#"[ec2]
image_id = "ami-..."
instance_type = "t3.medium"
# region = "us-east-1"
# subnet_id = "subnet-..."
# key_name = "my-key"
# security_group_ids = ["sg-..."]
# spot = false
# spot_max_price = "0.05"
# iam_instance_profile = "funcx-endpoint"
# endpoint_url = "https://ec2.us-east-1.amazonaws.com"

[ec2.tags]
# project = "p42"
"#
        }
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_names_its_provider() {
        for provider in PROVIDERS {
            let text = template("t", provider, Some(("http://127.0.0.1:1", "abc")));
            let config = EndpointConfig::parse(&text, Path::new("config.toml"))
                .unwrap_or_else(|e| panic!("{provider}: {e}\n{text}"));
            assert_eq!(config.provider, provider);
            assert_eq!(config.gateway.map(|g| g.endpoint_id), Some("abc".into()));
        }
        let text = template("t", "slurm", None);
        let config = EndpointConfig::parse(&text, Path::new("c.toml")).unwrap();
        assert!(config.gateway.is_none());
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let path = Path::new("/home/u/.funcx/endpoints/x/config.toml");
        let error = |text: &str| EndpointConfig::parse(text, path).unwrap_err().to_string();
        let e = error("provider = \"local\"\n[blocks]\nmax_blocks = 3\n");
        assert!(
            e.starts_with("/home/u/.funcx/endpoints/x/config.toml: "),
            "{e}"
        );
        assert!(e.contains("unknown key `max_blocks`"), "{e}");
        let e = error("provider = \"lsf\"\n");
        assert!(e.contains("key `provider`") && e.contains("\"lsf\""), "{e}");
        let e = error("provider = \"local\"\n[blocks]\nmin = 3\nmax = 2\n");
        assert!(e.contains("key `blocks.min`"), "{e}");
        let e = error("provider = \"local\"\n[slurm]\npartition = \"x\"\n");
        assert!(e.contains("table `[slurm]`"), "{e}");
        let e = error("provider = \"local\"\n[managers]\nworkers_per_node = \"two\"\n");
        assert!(e.contains("line 3 (`workers_per_node = \"two\"`)"), "{e}");
        let e = error("provider = \"slurm\"\n[slurm]\nlauncher = \"pdsh\"\n");
        assert!(e.contains("key `slurm.launcher`"), "{e}");
        let e = error("provider = \"local\"\n[gateway]\nurl = \"gw:1\"\nendpoint_id = \"e\"\n");
        assert!(e.contains("key `gateway.url`"), "{e}");
    }

    #[test]
    fn allowed_formats_are_named_formats() {
        let path = Path::new("c.toml");
        let config =
            EndpointConfig::parse("provider = \"local\"\nallowed_formats = [\"json\"]\n", path)
                .unwrap();
        assert_eq!(config.allowed_formats, Some(vec![funcx_core::Format::Json]));
        let config = EndpointConfig::parse("provider = \"local\"\n", path).unwrap();
        assert_eq!(config.allowed_formats, None);
        let e = EndpointConfig::parse("provider = \"local\"\nallowed_formats = [\"yaml\"]\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("allowed_formats"), "{e}");

        let id = funcx_core::Function::from_source("def f(): pass", "f").id();
        let text = format!("provider = \"local\"\nallowed_functions = [\"{id}\"]\n");
        let config = EndpointConfig::parse(&text, path).unwrap();
        assert_eq!(config.allowed_functions, Some(vec![id.to_string()]));
        let text = "provider = \"local\"\nallowed_functions = [\"abc\"]\n";
        let config = EndpointConfig::parse(text, path).unwrap();
        let manager = ManagerCommand::new("funcx-manager");
        let e = config
            .builder("e", Path::new("/tmp"), path, manager)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("allowed_functions") && e.contains("\"abc\""),
            "{e}"
        );
    }
}
