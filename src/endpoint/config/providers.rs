//! The provider tables (`[local]`, `[slurm]`, `[pbs]`, `[gridengine]`, `[ec2]`): their keys,
//! the checks those keys need beyond their types, and the provider each one builds.
//!
//! Every table is a [`ProviderTable`]; the batch schedulers' shared keys (`job_name`,
//! `directives`, `scripts_dir`) go through one helper, [`Place::batch`], and every optional
//! key through [`Maybe::maybe`], so a table's `provider` lists only what is its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use funcx_core::Provider;
use funcx_providers::{
    GridEngineConfig, GridEngineProvider, Launcher, LocalProvider, PbsConfig, PbsFlavor,
    PbsProvider, SlurmConfig, SlurmProvider,
};
use serde::Deserialize;

use super::secs;

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

/// A provider's table: the checks its keys need beyond their types, and the provider it
/// builds. Both answer with a message that names the key; the caller adds the file.
pub(super) trait ProviderTable {
    /// Refuses values the types let through (a launcher's name, a required key).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// The provider this table describes, for the endpoint at `place`.
    fn provider(self: Box<Self>, place: &Place<'_>) -> Result<Arc<dyn Provider>, String>;
}

/// A provider's table as the file has it, or its defaults when the file has none.
pub(super) fn table<T: ProviderTable + Clone + Default + 'static>(
    section: &Option<T>,
) -> Box<dyn ProviderTable> {
    Box::new(section.clone().unwrap_or_default())
}

/// Where the endpoint lives, which a provider's defaults and relative paths come from.
pub(super) struct Place<'a> {
    /// The endpoint's name.
    pub(super) name: &'a str,
    /// The endpoint's folder.
    pub(super) dir: &'a Path,
}

impl Place<'_> {
    /// `path` taken from the endpoint's folder, unless it is absolute.
    pub(super) fn relative(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    /// Sets the keys every batch scheduler's table has: the job name (`funcx-NAME` by
    /// default), the extra directives in their order, and the scripts directory (`blocks` in
    /// the endpoint's folder by default).
    fn batch<C: BatchConfig>(
        &self,
        config: C,
        job_name: Option<String>,
        directives: Vec<String>,
        scripts_dir: Option<PathBuf>,
    ) -> C {
        let scripts_dir = match scripts_dir {
            Some(dir) => self.relative(&dir),
            None => self.dir.join("blocks"),
        };
        let job_name = job_name.unwrap_or_else(|| format!("funcx-{}", self.name));
        let config = config.scripts_dir(scripts_dir).job_name(job_name);
        directives.into_iter().fold(config, C::directive)
    }
}

/// The setters funcx-providers gives every batch scheduler's config (its `batch_options!`),
/// as a trait so that [`Place::batch`] sets them on any of them.
trait BatchConfig: Sized {
    fn job_name(self, prefix: String) -> Self;
    fn directive(self, line: String) -> Self;
    fn scripts_dir(self, dir: PathBuf) -> Self;
}

macro_rules! batch_config {
    ($($config:ty),*) => {$(
        // The inherent setters (they take `impl Into<..>`); inherent methods come first, so
        // these calls do not recurse.
        impl BatchConfig for $config {
            fn job_name(self, prefix: String) -> Self {
                <$config>::job_name(self, prefix)
            }
            fn directive(self, line: String) -> Self {
                <$config>::directive(self, line)
            }
            fn scripts_dir(self, dir: PathBuf) -> Self {
                <$config>::scripts_dir(self, dir)
            }
        }
    )*};
}
batch_config!(SlurmConfig, PbsConfig, GridEngineConfig);

/// `config.maybe(key, Config::setter)`: the setter applied when the key is set, so a table of
/// optional keys reads as one chain.
pub(super) trait Maybe: Sized {
    fn maybe<T>(self, value: Option<T>, set: impl FnOnce(Self, T) -> Self) -> Self {
        match value {
            Some(value) => set(self, value),
            None => self,
        }
    }
}

impl<C> Maybe for C {}

impl ProviderTable for LocalSection {
    fn provider(self: Box<Self>, _: &Place<'_>) -> Result<Arc<dyn Provider>, String> {
        let grace = self.grace_secs.map(secs);
        Ok(Arc::new(
            LocalProvider::new().maybe(grace, LocalProvider::grace_period),
        ))
    }
}

impl ProviderTable for SlurmSection {
    fn check(&self) -> Result<(), String> {
        check_launcher("slurm", self.launcher.as_deref())
    }

    fn provider(self: Box<Self>, place: &Place<'_>) -> Result<Arc<dyn Provider>, String> {
        let s = *self;
        let config = SlurmConfig::new()
            .exclusive(s.exclusive)
            .maybe(s.partition, SlurmConfig::partition)
            .maybe(s.account, SlurmConfig::account)
            .maybe(s.qos, SlurmConfig::qos)
            .maybe(s.constraint, SlurmConfig::constraint)
            .maybe(s.cpus_per_task, SlurmConfig::cpus_per_task)
            .maybe(s.mem, SlurmConfig::mem)
            .maybe(
                s.launcher.as_deref().and_then(parse_launcher),
                SlurmConfig::launcher,
            );
        let config = place.batch(config, s.job_name, s.directives, s.scripts_dir);
        Ok(Arc::new(SlurmProvider::new(config)))
    }
}

impl ProviderTable for PbsSection {
    fn check(&self) -> Result<(), String> {
        check_launcher("pbs", self.launcher.as_deref())?;
        match self.flavor.as_deref() {
            None | Some("pbspro" | "torque") => Ok(()),
            Some(flavor) => Err(format!(
                "key `pbs.flavor`: {flavor:?} is not pbspro or torque"
            )),
        }
    }

    fn provider(self: Box<Self>, place: &Place<'_>) -> Result<Arc<dyn Provider>, String> {
        let s = *self;
        let flavor = match s.flavor.as_deref() {
            Some("torque") => PbsFlavor::Torque,
            _ => PbsFlavor::PbsPro,
        };
        let config = PbsConfig::new(flavor)
            .maybe(s.queue, PbsConfig::queue)
            .maybe(s.account, PbsConfig::account)
            .maybe(s.cpus_per_node, PbsConfig::cpus_per_node)
            .maybe(
                s.launcher.as_deref().and_then(parse_launcher),
                PbsConfig::launcher,
            );
        let config = place.batch(config, s.job_name, s.directives, s.scripts_dir);
        Ok(Arc::new(PbsProvider::new(config)))
    }
}

impl ProviderTable for GridEngineSection {
    fn provider(self: Box<Self>, place: &Place<'_>) -> Result<Arc<dyn Provider>, String> {
        let s = *self;
        let slots = s.slots_per_node.unwrap_or(1);
        let config = GridEngineConfig::new()
            .maybe(s.queue, GridEngineConfig::queue)
            .maybe(s.parallel_environment, |config, pe| {
                config.parallel_environment(pe, slots)
            });
        let config = place.batch(config, s.job_name, s.directives, s.scripts_dir);
        Ok(Arc::new(GridEngineProvider::new(config)))
    }
}

impl ProviderTable for Ec2Section {
    fn check(&self) -> Result<(), String> {
        if self.image_id.is_none() || self.instance_type.is_none() {
            return Err("keys `ec2.image_id` and `ec2.instance_type`: both are required".into());
        }
        Ok(())
    }

    #[cfg(feature = "ec2")]
    fn provider(self: Box<Self>, place: &Place<'_>) -> Result<Arc<dyn Provider>, String> {
        use funcx_providers::{Ec2Config, Ec2Provider};
        let s = *self;
        let mut config = Ec2Config::new(
            s.image_id.unwrap_or_default(),
            s.instance_type.unwrap_or_default(),
        )
        .endpoint_name(place.name)
        .maybe(s.region, Ec2Config::region)
        .maybe(s.subnet_id, Ec2Config::subnet_id)
        .maybe(s.key_name, Ec2Config::key_name)
        .security_group_ids(s.security_group_ids);
        // Before the price: `spot()` is spot at the on-demand price, which a price refines.
        if s.spot {
            config = config.spot();
        }
        let mut config = config
            .maybe(s.spot_max_price, Ec2Config::spot_max_price)
            .maybe(s.iam_instance_profile, Ec2Config::iam_instance_profile);
        for (key, value) in s.tags {
            config = config.tag(key, value);
        }
        let config = config.maybe(s.endpoint_url, Ec2Config::endpoint_url);
        let provider = Ec2Provider::new(config).map_err(|e| format!("table `[ec2]`: {e}"))?;
        Ok(Arc::new(provider))
    }

    #[cfg(not(feature = "ec2"))]
    fn provider(self: Box<Self>, _: &Place<'_>) -> Result<Arc<dyn Provider>, String> {
        Err("key `provider`: \"ec2\" needs funcx built with the `ec2` feature".into())
    }
}

/// Refuses a `launcher` key that names no launcher.
fn check_launcher(table: &str, launcher: Option<&str>) -> Result<(), String> {
    match launcher {
        Some(launcher) if parse_launcher(launcher).is_none() => Err(format!(
            "key `{table}.launcher`: {launcher:?} is not a launcher; use srun, mpiexec, aprun or single"
        )),
        _ => Ok(()),
    }
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
