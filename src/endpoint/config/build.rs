//! Turning a checked file into an [`EndpointBuilder`].

use std::path::Path;

use funcx_core::{ManagerCommand, StrategyConfig};
use funcx_python::PythonConfig;

use super::providers::{Maybe, Place};
use super::{secs, ConfigError, EndpointConfig};
use crate::endpoint::{Endpoint, EndpointBuilder, GatewayLink, ManagerTls};

impl EndpointConfig {
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
        let place = Place { name, dir };
        let relative = |p: &Path| place.relative(p);
        let blocks = &self.blocks;
        let managers = &self.managers;
        let mut builder = Endpoint::builder()
            .name(name)
            .nodes_per_block(managers.nodes_per_block)
            .manager_layout(managers.layout)
            .workers_per_node(managers.workers_per_node)
            .listen(managers.listen)
            .retries_on_manager_loss(managers.retries)
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
            )
            .maybe(blocks.walltime_secs.map(secs), EndpointBuilder::walltime)
            .maybe(
                blocks.drain_margin_secs.map(secs),
                EndpointBuilder::drain_margin,
            )
            .maybe(managers.advertise.as_ref(), EndpointBuilder::advertise)
            .maybe(managers.memory_per_node, EndpointBuilder::memory_per_node)
            .maybe(self.allowed_formats.as_ref(), |builder, formats| {
                builder.allowed_formats(formats.iter().copied())
            });
        if let Some(functions) = &self.allowed_functions {
            let ids = functions
                .iter()
                .map(|id| id.parse::<funcx_core::FunctionId>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::new(path, format!("key `allowed_functions`: {e}")))?;
            builder = builder.allowed_functions(ids);
        }
        builder = match &managers.program {
            Some(program) => builder.manager_program(relative(program)),
            None => builder.manager_command(manager),
        };
        if let (Some(cert), Some(key), Some(ca)) =
            (&managers.tls_cert, &managers.tls_key, &managers.tls_ca)
        {
            builder = builder.manager_tls(ManagerTls {
                cert: relative(cert),
                key: relative(key),
                ca: relative(ca),
                server_name: managers.tls_name.clone(),
            });
        }
        let python = &self.python;
        let accelerators = (!python.accelerators.is_empty()).then(|| python.accelerators.clone());
        let config = PythonConfig::new()
            .maybe(python.interpreter.as_ref(), PythonConfig::python)
            .maybe(python.worker_init.as_ref(), PythonConfig::worker_init)
            .maybe(accelerators, PythonConfig::accelerators)
            .maybe(python.working_dir.as_ref(), PythonConfig::working_dir)
            .envs(python.env.iter());
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
                failover: gateway.failover.clone(),
            });
        }

        let table = self.provider_table().ok_or_else(|| {
            ConfigError::new(
                path,
                format!("key `provider`: {:?} is not a provider", self.provider),
            )
        })?;
        let provider = table
            .provider(&place)
            .map_err(|message| ConfigError::new(path, message))?;
        Ok(builder.provider_shared(provider))
    }
}
