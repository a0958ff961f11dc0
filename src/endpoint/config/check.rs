//! What the types of the file's keys do not catch: values out of range, keys that go together,
//! a table for another provider, and the provider table's own checks.

use std::path::Path;

use funcx_core::ManagerLayout;

use super::{ConfigError, EndpointConfig, PROVIDERS};

impl EndpointConfig {
    /// Refuses what the keys' types let through; the error names the key.
    pub(super) fn check(&self, path: &Path) -> Result<(), ConfigError> {
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
        if self.managers.layout == ManagerLayout::PerBlock {
            self.check_per_block(path)?;
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
            let is_url = |url: &str| url.starts_with("http://") || url.starts_with("https://");
            if !is_url(&gateway.url) {
                return bad(format!(
                    "key `gateway.url`: {:?} is not an http:// or https:// URL",
                    gateway.url
                ));
            }
            if let Some(url) = gateway.failover.iter().find(|url| !is_url(url)) {
                return bad(format!(
                    "key `gateway.failover`: {url:?} is not an http:// or https:// URL"
                ));
            }
            if gateway.endpoint_id.trim().is_empty() {
                return bad("key `gateway.endpoint_id`: is empty".into());
            }
        }
        // `provider` names a provider (checked first), so there is a table.
        if let Some(table) = self.provider_table() {
            table
                .check()
                .map_err(|message| ConfigError::new(path, message))?;
        }
        Ok(())
    }

    /// Refuses what cannot work with one manager per block: a provider without batch jobs
    /// (nothing lists the block's nodes to its manager), a launcher (which would fan the
    /// manager out; it is never used, so the setting would be ignored), a Grid Engine block
    /// without a parallel environment (its host file is where the manager finds its hosts).
    fn check_per_block(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| Err(ConfigError::new(path, message));
        let launcher = match self.provider.as_str() {
            "slurm" => self.slurm.as_ref().and_then(|s| s.launcher.as_ref()),
            "pbs" => self.pbs.as_ref().and_then(|s| s.launcher.as_ref()),
            _ => None,
        };
        if launcher.is_some() {
            return bad(format!(
                "key `{}.launcher`: not used with `managers.layout = \"per-block\"`, whose one \
                 manager runs in the batch script itself; remove it",
                self.provider
            ));
        }
        match self.provider.as_str() {
            "local" | "ec2" => bad(format!(
                "key `managers.layout`: \"per-block\" needs a batch scheduler (slurm, pbs or \
                 gridengine), whose job lists the block's nodes to its one manager; provider \
                 {:?} runs no batch job",
                self.provider
            )),
            "gridengine"
                if self
                    .gridengine
                    .as_ref()
                    .and_then(|s| s.parallel_environment.as_ref())
                    .is_none() =>
            {
                bad(
                    "key `gridengine.parallel_environment`: required with `managers.layout = \
                     \"per-block\"`: the block's one manager reads its hosts from the parallel \
                     environment's host file (PE_HOSTFILE)"
                        .into(),
                )
            }
            _ => Ok(()),
        }
    }
}
