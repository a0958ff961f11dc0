//! Blocks of managers on AWS EC2 instances (feature `ec2`).
//!
//! ## Why this talks to the EC2 Query API itself instead of using the AWS SDK
//!
//! The AWS SDK for Rust is the obvious choice, so it was measured first: a scratch crate with
//! `aws-config` + `aws-sdk-ec2` 1.x (default features off; `behavior-version-latest`,
//! `rt-tokio`, `default-https-client`, i.e. rustls) took **8 min 51 s** for a clean debug
//! `cargo build` on the 2-core CI-sized machine (456 s of CPU, 177 crates, 8.4 GB peak
//! memory for rustc, 2.2 GB of `target/`); `aws-sdk-ec2` alone compiled for about five and a
//! half minutes (measured while other builds shared the cores, so an upper bound, but far
//! over any noise). That is over the 6-minute bar for a CI whose whole run should take ~30
//! minutes, for four API calls.
//!
//! What is used instead — `aws-sigv4`, `aws-credential-types`, `hyper`, `hyper-util`,
//! `hyper-rustls` (ring, webpki roots), `rustls`, `http`, `http-body-util`, `base64`,
//! `form_urlencoded`, `fastrand`, `roxmltree` and `tokio` — builds from clean in a scratch
//! crate in **35 s** (58 s of CPU, 101 crates, 0.4 GB peak), and much of it (tokio, rustls,
//! ring, roxmltree) the workspace compiles anyway. Both choices need a recent compiler with
//! the feature on (`aws-sigv4` 1.6 declares Rust 1.94, like the SDK itself), above the
//! workspace's 1.80; without the feature nothing changes.
//!
//! So this module makes the four calls it needs — `RunInstances`, `DescribeInstances`,
//! `CreateTags` and `TerminateInstances` — as plain EC2 Query API requests (a form-encoded
//! `POST`, an XML answer), signed by AWS's own SigV4 crate (`aws-sigv4`), sent with `hyper`
//! (HTTPS through `hyper-rustls` with the `ring` provider the workspace's TLS already uses),
//! and read with `roxmltree` (already this crate's XML parser). All of it stays behind the
//! `ec2` cargo feature, so users who do not need EC2 compile none of it.
//!
//! ## What a block is
//!
//! A block of `n` nodes is one `RunInstances` call for exactly `n` instances
//! (`MinCount = MaxCount = n`) whose user data is a shell script that exports the manager's
//! environment, [`BLOCK_ID_ENV`] and [`NODE_INDEX_ENV`] (read from the instance metadata's
//! `ami-launch-index`, which EC2 numbers `0..n` within one launch), runs the request's
//! `worker_init` lines and then `exec`s the manager. Nothing is installed: the image must
//! already hold the manager (and `curl` or `wget`, to read the instance metadata). Every
//! instance is tagged `funcx:block=<block id>`, `funcx:endpoint=<endpoint name>` and
//! `Name=funcx-<block id>`; status and cancel find a block's instances by its tag, so a new
//! provider (after a restart) still knows the blocks an earlier one started.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aws_credential_types::Credentials;
use base64::Engine as _;
use funcx_core::{BlockId, BlockRequest, BlockState, BlockStatus, Provider, ProviderError};
#[cfg(doc)]
use funcx_core::{BLOCK_ID_ENV, NODE_INDEX_ENV};
use futures::future::BoxFuture;

use crate::toolkit::{reject_per_block, StateClock};

pub(crate) mod api;
mod config;
mod user_data;

use api::{instance_ids, parse_instances, Api};
pub use config::{Ec2Config, Ec2ConfigError};
use user_data::render_user_data;

/// The tag that names the block an instance belongs to.
pub const BLOCK_TAG: &str = "funcx:block";

/// The tag that names the endpoint ([`Ec2Config::endpoint_name`]) that started an instance.
pub const ENDPOINT_TAG: &str = "funcx:endpoint";

/// Set on a block's instances when the provider cancels it, so that a block ended by
/// `cancel` reports [`BlockState::Cancelled`] even to a provider that did not cancel it.
const CANCELLED_TAG: &str = "funcx:cancelled";

/// The block's walltime in seconds, when it has one, so that status can tell a walltime
/// shutdown from a manager that ended on its own.
const WALLTIME_TAG: &str = "funcx:walltime";

/// The EC2 API version this module speaks (the current one; EC2 has not versioned since).
const API_VERSION: &str = "2016-11-15";

/// EC2 refuses user data over 16 KiB (before base64).
const USER_DATA_LIMIT: usize = 16 * 1024;

/// How long one API call may take before it is given up as unreachable.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// EC2 accepts at most 200 values in one filter.
const FILTER_VALUES: usize = 200;

/// The `tracing` target of this provider's log lines.
const LOG_TARGET: &str = "funcx::ec2";

/// A [`Provider`] whose blocks are EC2 instances, one manager on each.
///
/// Block ids are `ec2-` and 12 random lowercase letters and digits. States:
///
/// - [`BlockState::Pending`] while no instance runs yet and some are `pending`;
///   [`BlockState::Running`] once any instance is `running`.
/// - When every instance is `shutting-down` or `terminated`: [`BlockState::Cancelled`] if
///   the block was cancelled through a provider; [`BlockState::Failed`] if EC2 ended an
///   instance (a spot interruption, `Server.*` reasons) or the walltime expired;
///   [`BlockState::Completed`] otherwise.
/// - [`BlockState::Failed`] (`instance i-... stopped`) if an instance is `stopping` or
///   `stopped` and none runs: a stopped instance runs no manager.
/// - [`BlockState::Unknown`] for an id with no instances (never issued, or terminated long
///   enough ago that EC2 forgot it, about an hour) and for instance states funcx does not
///   know.
///
/// A walltime is enforced on the instance: the user data schedules `shutdown -h +<minutes>`
/// (rounded up to whole minutes), and instances are launched with
/// `InstanceInitiatedShutdownBehavior=terminate`, so they terminate when it expires.
///
/// A request for one manager for the whole block
/// ([`ManagerLayout::PerBlock`](funcx_core::ManagerLayout::PerBlock)) is rejected: instances
/// run in no batch job that lists the block's nodes to such a manager.
///
/// Cancel terminates every instance of the block (after tagging them `funcx:cancelled`);
/// it returns once EC2 accepted the request, and the block reports
/// [`BlockState::Cancelled`] once the instances are gone.
///
/// Errors: an answer from EC2 is reported with its error code and message
/// (`InvalidSubnetID.NotFound: The subnet ID 'subnet-x' does not exist`); a launch that EC2
/// refuses as asked (`Invalid*`, `Unsupported*`, `MissingParameter` codes) is
/// [`ProviderError::is_rejected`], other API errors are [`ProviderError::is_command`]; an
/// endpoint that cannot be reached is [`ProviderError::is_io`].
///
/// Must be used within a tokio runtime.
#[derive(Debug)]
pub struct Ec2Provider {
    config: Ec2Config,
    api: Api,
    clock: StateClock,
    /// Blocks this provider cancelled.
    cancelled: Mutex<HashSet<BlockId>>,
}

fn lock(cancelled: &Mutex<HashSet<BlockId>>) -> MutexGuard<'_, HashSet<BlockId>> {
    // The set is consistent after every statement; a panic elsewhere must not take the
    // provider down with it.
    cancelled.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ec2Provider {
    /// A provider that starts instances as `config` says, with credentials, region and
    /// endpoint from `config` or else from the environment (see [`Ec2Config`]).
    pub fn new(config: Ec2Config) -> Result<Ec2Provider, Ec2ConfigError> {
        Ec2Provider::with_env(config, |key| std::env::var(key).ok())
    }

    fn with_env(
        mut config: Ec2Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Ec2Provider, Ec2ConfigError> {
        let env = |key: &str| env(key).filter(|value| !value.is_empty());
        let region = match config.region.clone().or_else(|| env("AWS_REGION")) {
            Some(region) => region,
            None => env("AWS_DEFAULT_REGION").ok_or_else(|| {
                Ec2ConfigError(
                    "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or Ec2Config::region"
                        .to_owned(),
                )
            })?,
        };
        config.region = Some(region.clone());
        let credentials = match config.credentials.clone() {
            Some(credentials) => credentials,
            None => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(access_key_id), Some(secret_access_key)) => Credentials::new(
                    access_key_id,
                    secret_access_key,
                    env("AWS_SESSION_TOKEN"),
                    None,
                    "environment",
                ),
                (access, _) => {
                    let missing = if access.is_none() {
                        "AWS_ACCESS_KEY_ID"
                    } else {
                        "AWS_SECRET_ACCESS_KEY"
                    };
                    return Err(Ec2ConfigError(format!(
                        "no AWS credentials: {missing} is not set (set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY, or Ec2Config::credentials)"
                    )));
                }
            },
        };
        let endpoint = config
            .endpoint_url
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_EC2"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| default_endpoint(&region));
        let api = Api::new(&endpoint, region, credentials, config.request_timeout)?;
        Ok(Ec2Provider {
            config,
            api,
            clock: StateClock::default(),
            cancelled: Mutex::default(),
        })
    }

    /// The URL the API calls go to.
    pub fn endpoint_url(&self) -> String {
        self.api.endpoint.to_string()
    }

    async fn start(&self, request: &BlockRequest) -> Result<BlockId, ProviderError> {
        request.check()?;
        reject_per_block("EC2 instances", request)?;
        let id = new_block_id();
        let user_data = render_user_data(request, &id)?;
        if user_data.len() > USER_DATA_LIMIT {
            return Err(ProviderError::rejected(format!(
                "the user data for block {id} is {} bytes, over EC2's limit of {USER_DATA_LIMIT} \
                 (long worker_init lines or manager environment?)",
                user_data.len()
            )));
        }
        let params = self.run_instances_params(request, &id, &user_data);
        let answer = self
            .api
            .call("RunInstances", &params)
            .await
            .map_err(|error| error.into_provider_error("RunInstances", true))?;
        let instances = instance_ids(&answer)
            .map_err(|detail| ProviderError::command("EC2 RunInstances", detail))?;
        tracing::info!(
            target: LOG_TARGET,
            block = %id,
            "started block {id}: {} instance(s) of {} from {}: {}",
            instances.len(),
            self.config.instance_type,
            self.config.image_id,
            instances.join(" ")
        );
        Ok(id)
    }

    fn run_instances_params(
        &self,
        request: &BlockRequest,
        id: &BlockId,
        user_data: &[u8],
    ) -> Vec<(String, String)> {
        let config = &self.config;
        let nodes = request.node_count().to_string();
        let mut params = vec![
            param("ImageId", &config.image_id),
            param("InstanceType", &config.instance_type),
            param("MinCount", &nodes),
            param("MaxCount", &nodes),
            param(
                "UserData",
                base64::engine::general_purpose::STANDARD.encode(user_data),
            ),
            // A retried call with the same token starts no second set of instances.
            param("ClientToken", id.as_str()),
            param("InstanceInitiatedShutdownBehavior", "terminate"),
        ];
        if let Some(subnet) = &config.subnet_id {
            params.push(param("SubnetId", subnet));
        }
        if let Some(key) = &config.key_name {
            params.push(param("KeyName", key));
        }
        for (index, group) in config.security_group_ids.iter().enumerate() {
            params.push(param(format!("SecurityGroupId.{}", index + 1), group));
        }
        if let Some(profile) = &config.iam_instance_profile {
            let field = if profile.starts_with("arn:") {
                "IamInstanceProfile.Arn"
            } else {
                "IamInstanceProfile.Name"
            };
            params.push(param(field, profile));
        }
        if let Some(spot) = &config.spot {
            params.push(param("InstanceMarketOptions.MarketType", "spot"));
            params.push(param(
                "InstanceMarketOptions.SpotOptions.SpotInstanceType",
                "one-time",
            ));
            params.push(param(
                "InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior",
                "terminate",
            ));
            if let Some(price) = &spot.max_price {
                params.push(param("InstanceMarketOptions.SpotOptions.MaxPrice", price));
            }
        }
        params.push(param("TagSpecification.1.ResourceType", "instance"));
        for (index, (key, value)) in self.tags(request, id).into_iter().enumerate() {
            params.push(param(
                format!("TagSpecification.1.Tag.{}.Key", index + 1),
                key,
            ));
            params.push(param(
                format!("TagSpecification.1.Tag.{}.Value", index + 1),
                value,
            ));
        }
        params
    }

    /// The tags of a block's instances: `Name`, the configured ones, then funcx's own.
    fn tags(&self, request: &BlockRequest, id: &BlockId) -> Vec<(String, String)> {
        let mut tags = vec![("Name".to_owned(), format!("funcx-{id}"))];
        let mut set = |key: &str, value: String| match tags.iter_mut().find(|(k, _)| k == key) {
            Some(tag) => tag.1 = value,
            None => tags.push((key.to_owned(), value)),
        };
        for (key, value) in &self.config.tags {
            if !key.starts_with("funcx:") {
                set(key, value.clone());
            }
        }
        set(BLOCK_TAG, id.to_string());
        set(ENDPOINT_TAG, self.config.endpoint_name.clone());
        if let Some(walltime) = request.walltime_limit() {
            set(WALLTIME_TAG, walltime.as_secs().to_string());
        }
        tags
    }

    /// The instances of `blocks` (ids that could be this provider's), by block.
    async fn instances(
        &self,
        blocks: &[&BlockId],
    ) -> Result<HashMap<String, Vec<Instance>>, ProviderError> {
        let mut found: HashMap<String, Vec<Instance>> = HashMap::new();
        for chunk in blocks.chunks(FILTER_VALUES) {
            let mut next_token: Option<String> = None;
            loop {
                let mut params = vec![param("Filter.1.Name", format!("tag:{BLOCK_TAG}"))];
                for (index, id) in chunk.iter().enumerate() {
                    params.push(param(format!("Filter.1.Value.{}", index + 1), id.as_str()));
                }
                if let Some(token) = &next_token {
                    params.push(param("NextToken", token));
                }
                let answer = self
                    .api
                    .call("DescribeInstances", &params)
                    .await
                    .map_err(|error| error.into_provider_error("DescribeInstances", false))?;
                let (instances, token) = parse_instances(&answer)
                    .map_err(|detail| ProviderError::command("EC2 DescribeInstances", detail))?;
                for instance in instances {
                    if let Some(block) = instance.tag(BLOCK_TAG) {
                        found.entry(block.to_owned()).or_default().push(instance);
                    }
                }
                match token {
                    Some(token) => next_token = Some(token),
                    None => break,
                }
            }
        }
        Ok(found)
    }

    async fn statuses(&self, blocks: &[BlockId]) -> Result<Vec<BlockStatus>, ProviderError> {
        // Only ids this provider could have issued are asked about: a tag filter treats `*`
        // and `?` as wildcards.
        let ours: Vec<&BlockId> = blocks.iter().filter(|id| is_block_id(id)).collect();
        let mut instances = if ours.is_empty() {
            HashMap::new()
        } else {
            self.instances(&ours).await?
        };
        let cancelled = lock(&self.cancelled);
        let statuses = blocks
            .iter()
            .map(|id| {
                let block_state = if is_block_id(id) {
                    let found = instances.remove(id.as_str()).unwrap_or_default();
                    block_state(id, &found, cancelled.contains(id))
                } else {
                    BlockState::Unknown(format!(
                        "{id} is not an EC2 block id (ec2-<letters and digits>)"
                    ))
                };
                self.clock.observe(id, block_state)
            })
            .collect();
        Ok(statuses)
    }

    async fn stop(&self, id: &BlockId) -> Result<(), ProviderError> {
        if !is_block_id(id) {
            return Err(ProviderError::not_found(id.clone()));
        }
        let instances = self.instances(&[id]).await?;
        let live: Vec<String> = instances
            .get(id.as_str())
            .into_iter()
            .flatten()
            .filter(|instance| !matches!(instance.state.as_str(), "shutting-down" | "terminated"))
            .map(|instance| instance.id.clone())
            .collect();
        if live.is_empty() {
            // Finished already, or terminated long ago and forgotten by EC2: nothing to end.
            return Ok(());
        }
        lock(&self.cancelled).insert(id.clone());
        let mut tag = vec![
            param("Tag.1.Key", CANCELLED_TAG),
            param("Tag.1.Value", "true"),
        ];
        let mut terminate = Vec::with_capacity(live.len());
        for (index, instance) in live.iter().enumerate() {
            tag.push(param(format!("ResourceId.{}", index + 1), instance));
            terminate.push(param(format!("InstanceId.{}", index + 1), instance));
        }
        self.api
            .call("CreateTags", &tag)
            .await
            .map_err(|error| error.into_provider_error("CreateTags", false))?;
        self.api
            .call("TerminateInstances", &terminate)
            .await
            .map_err(|error| error.into_provider_error("TerminateInstances", false))?;
        tracing::info!(
            target: LOG_TARGET,
            block = %id,
            "cancelled block {id}: terminating {}",
            live.join(" ")
        );
        Ok(())
    }
}

impl Provider for Ec2Provider {
    fn name(&self) -> &str {
        "ec2"
    }

    fn submit<'a>(
        &'a self,
        request: &'a BlockRequest,
    ) -> BoxFuture<'a, Result<BlockId, ProviderError>> {
        Box::pin(self.start(request))
    }

    fn status<'a>(
        &'a self,
        blocks: &'a [BlockId],
    ) -> BoxFuture<'a, Result<Vec<BlockStatus>, ProviderError>> {
        Box::pin(self.statuses(blocks))
    }

    fn cancel<'a>(&'a self, block: &'a BlockId) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.stop(block))
    }
}

fn param(key: impl Into<String>, value: impl Into<String>) -> (String, String) {
    (key.into(), value.into())
}

fn default_endpoint(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("https://ec2.{region}.amazonaws.com.cn/")
    } else {
        format!("https://ec2.{region}.amazonaws.com/")
    }
}

const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn new_block_id() -> BlockId {
    let suffix: String = (0..12)
        .map(|_| char::from(ID_ALPHABET[fastrand::usize(..ID_ALPHABET.len())]))
        .collect();
    BlockId::new(format!("ec2-{suffix}"))
}

/// True for ids of the form this provider issues: `ec2-` and 1 to 32 lowercase letters and
/// digits.
fn is_block_id(id: &BlockId) -> bool {
    match id.as_str().strip_prefix("ec2-") {
        Some(rest) => {
            (1..=32).contains(&rest.len())
                && rest
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        }
        None => false,
    }
}

/// What status needs to know of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Instance {
    pub(super) id: String,
    pub(super) state: String,
    pub(super) reason_code: Option<String>,
    pub(super) reason_message: Option<String>,
    pub(super) tags: Vec<(String, String)>,
}

impl Instance {
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }
}

/// The state of block `id` from the states of its instances.
pub(crate) fn block_state(
    id: &BlockId,
    instances: &[Instance],
    cancelled_here: bool,
) -> BlockState {
    if instances.is_empty() {
        return BlockState::Unknown(format!(
            "no EC2 instances tagged {BLOCK_TAG}={id}: never issued, or terminated long enough \
             ago that EC2 forgot them"
        ));
    }
    let with_state = |state: &str| instances.iter().find(|i| i.state == state);
    if with_state("running").is_some() {
        return BlockState::Running;
    }
    if with_state("pending").is_some() {
        return BlockState::Pending;
    }
    if let Some(stopped) = with_state("stopping").or_else(|| with_state("stopped")) {
        return BlockState::Failed(match &stopped.reason_message {
            Some(reason) => format!("instance {} stopped ({reason})", stopped.id),
            None => format!("instance {} stopped", stopped.id),
        });
    }
    if let Some(odd) = instances
        .iter()
        .find(|i| !matches!(i.state.as_str(), "shutting-down" | "terminated"))
    {
        return BlockState::Unknown(format!(
            "instance {} is in state `{}`, which funcx does not know",
            odd.id, odd.state
        ));
    }
    // Every instance is shutting down or gone.
    if cancelled_here || instances.iter().any(|i| i.tag(CANCELLED_TAG).is_some()) {
        return BlockState::Cancelled;
    }
    let reason = |i: &Instance| i.reason_code.clone().unwrap_or_default();
    if let Some(ended) = instances.iter().find(|i| reason(i).starts_with("Server.")) {
        let why = ended.reason_message.as_deref().unwrap_or("no reason given");
        return BlockState::Failed(format!(
            "instance {} was terminated by EC2: {why}",
            ended.id
        ));
    }
    let walltime = instances
        .iter()
        .find_map(|i| i.tag(WALLTIME_TAG))
        .and_then(|seconds| seconds.parse::<u64>().ok());
    if let Some(walltime) = walltime {
        if instances
            .iter()
            .any(|i| reason(i) == "Client.InstanceInitiatedShutdown")
        {
            return BlockState::Failed(format!(
                "walltime of {:?} expired",
                Duration::from_secs(walltime)
            ));
        }
    }
    BlockState::Completed
}

#[cfg(test)]
mod tests {
    use super::api::parse_error;
    use super::*;
    use crate::toolkit::mock::TempDir;
    use funcx_core::{ManagerCommand, BLOCK_ID_ENV};

    fn request() -> BlockRequest {
        BlockRequest::new(
            ManagerCommand::new("/opt/funcx/bin/funcx-manager")
                .arg("--endpoint=10.0.0.1:9000")
                .arg("--name=it's mine")
                .env("FUNCX_TOKEN", "s3cr3t $not-expanded")
                .env("PYTHONPATH", "/opt/lib"),
        )
        .nodes(2)
        .worker_init("source /opt/venv/bin/activate")
    }

    #[test]
    fn user_data_exports_the_environment_and_execs_the_manager() {
        let id = BlockId::new("ec2-abc123");
        let script = String::from_utf8(render_user_data(&request(), &id).unwrap()).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.contains("export FUNCX_TOKEN='s3cr3t $not-expanded'\n"),
            "{script}"
        );
        assert!(script.contains("export PYTHONPATH=/opt/lib\n"), "{script}");
        assert!(
            script.contains("export FUNCX_BLOCK_ID=ec2-abc123\n"),
            "{script}"
        );
        assert!(
            script.contains("FUNCX_NODE_INDEX=$(funcx_metadata ami-launch-index)"),
            "{script}"
        );
        assert!(script.contains("latest/meta-data/$1"), "{script}");
        assert!(
            script.ends_with(
                "source /opt/venv/bin/activate\n\
                 exec /opt/funcx/bin/funcx-manager '--endpoint=10.0.0.1:9000' '--name=it'\\''s mine'\n"
            ),
            "{script}"
        );
        // The block id is set after the manager's own environment, so it wins.
        let token = script.find("export FUNCX_TOKEN").unwrap();
        let block = script.find("export FUNCX_BLOCK_ID").unwrap();
        let init = script.find("source /opt/venv").unwrap();
        assert!(token < block && block < init, "{script}");
        assert!(!script.contains("shutdown"), "{script}");
    }

    #[test]
    fn user_data_schedules_the_walltime() {
        let id = BlockId::new("ec2-abc123");
        let request = request().walltime(Duration::from_secs(3601));
        let script = String::from_utf8(render_user_data(&request, &id).unwrap()).unwrap();
        assert!(script.contains("shutdown -h +61 "), "{script}");
    }

    #[test]
    fn user_data_rejects_bad_variable_names() {
        let request = BlockRequest::new(ManagerCommand::new("m").env("NOT-A-NAME", "x"));
        let error = render_user_data(&request, &BlockId::new("ec2-a")).unwrap_err();
        assert!(error.is_rejected());
        assert!(error.to_string().contains("NOT-A-NAME"), "{error}");
    }

    /// Runs the user data with `/bin/sh` here, with a fake `curl` standing in for the
    /// instance metadata service (nothing leaves this machine), and checks what the manager
    /// got.
    #[test]
    fn user_data_runs_the_manager_with_its_environment() {
        let temp = TempDir::new("ec2-user-data");
        let dir = temp.path();
        let curl = dir.join("curl");
        std::fs::write(
            &curl,
            "#!/bin/sh\n\
             for a; do last=$a; done\n\
             case $last in\n\
             \x20 */api/token) echo TOKEN ;;\n\
             \x20 */meta-data/ami-launch-index)\n\
             \x20   case \"$*\" in *'X-aws-ec2-metadata-token: TOKEN'*) echo 1 ;; *) exit 22 ;; esac ;;\n\
             \x20 *) exit 22 ;;\n\
             esac\n",
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&curl)
            .status()
            .unwrap();
        let manager = ManagerCommand::new("/bin/sh")
            .arg("-c")
            .arg("printf '%s|' \"$FUNCX_BLOCK_ID\" \"$FUNCX_NODE_INDEX\" \"$FUNCX_TOKEN\" \"$FROM_INIT\" \"$@\"")
            .arg("sh")
            .arg("it's")
            .arg("a $b `c`")
            .arg("")
            .env("FUNCX_TOKEN", "t'o k$en")
            .env(BLOCK_ID_ENV, "ec2-forged");
        let request = BlockRequest::new(manager).worker_init("export FROM_INIT=yes");
        let script = render_user_data(&request, &BlockId::new("ec2-run1")).unwrap();
        let path = dir.join("user-data");
        std::fs::write(&path, &script).unwrap();
        let output = std::process::Command::new("/bin/sh")
            .arg(&path)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "ec2-run1|1|t'o k$en|yes|it's|a $b `c`||"
        );
    }

    #[test]
    fn block_ids() {
        let id = new_block_id();
        assert!(is_block_id(&id), "{id}");
        assert_eq!(id.as_str().len(), 16);
        assert_ne!(new_block_id(), id);
        assert!(!is_block_id(&BlockId::new("ec2-*")));
        assert!(!is_block_id(&BlockId::new("ec2-")));
        assert!(!is_block_id(&BlockId::new("local-1")));
        assert!(!is_block_id(&BlockId::new("ec2-ABC")));
    }

    fn instance(id: &str, state: &str) -> Instance {
        Instance {
            id: id.into(),
            state: state.into(),
            reason_code: None,
            reason_message: None,
            tags: vec![(BLOCK_TAG.into(), "ec2-a".into())],
        }
    }

    #[test]
    fn block_states_from_instance_states() {
        let id = BlockId::new("ec2-a");
        let state = |instances: &[Instance], cancelled| block_state(&id, instances, cancelled);
        assert!(matches!(state(&[], false), BlockState::Unknown(_)));
        let pending = instance("i-1", "pending");
        let running = instance("i-2", "running");
        let terminated = instance("i-3", "terminated");
        let stopped = instance("i-4", "stopped");
        assert_eq!(
            state(std::slice::from_ref(&pending), false),
            BlockState::Pending
        );
        assert_eq!(
            state(&[pending.clone(), running.clone()], false),
            BlockState::Running
        );
        assert_eq!(
            state(&[terminated.clone(), running.clone()], true),
            BlockState::Running
        );
        assert_eq!(
            state(std::slice::from_ref(&terminated), false),
            BlockState::Completed
        );
        assert_eq!(
            state(std::slice::from_ref(&terminated), true),
            BlockState::Cancelled
        );
        let mut tagged = terminated.clone();
        tagged.tags.push((CANCELLED_TAG.into(), "true".into()));
        assert_eq!(state(&[tagged], false), BlockState::Cancelled);
        assert_eq!(
            state(&[terminated.clone(), stopped], false),
            BlockState::Failed("instance i-4 stopped".into())
        );
        let mut interrupted = terminated.clone();
        interrupted.reason_code = Some("Server.SpotInstanceTermination".into());
        interrupted.reason_message = Some("Server.SpotInstanceTermination: Spot".into());
        assert_eq!(
            state(&[interrupted], false),
            BlockState::Failed(
                "instance i-3 was terminated by EC2: Server.SpotInstanceTermination: Spot".into()
            )
        );
        let mut walltime = terminated.clone();
        walltime.reason_code = Some("Client.InstanceInitiatedShutdown".into());
        walltime.tags.push((WALLTIME_TAG.into(), "60".into()));
        assert_eq!(
            state(&[walltime], false),
            BlockState::Failed("walltime of 60s expired".into())
        );
        assert!(matches!(
            state(&[instance("i-5", "hibernating")], false),
            BlockState::Unknown(reason) if reason.contains("hibernating")
        ));
    }

    /// Instances run in no batch job that lists the block's nodes: one manager for the whole
    /// block is refused before any API call (the endpoint here answers nothing, so a call
    /// would be an I/O error, not a rejection).
    #[tokio::test]
    async fn one_manager_per_block_is_rejected_before_any_call() {
        let provider = Ec2Provider::with_env(
            Ec2Config::new("ami-1", "t3.micro")
                .region("us-east-1")
                .credentials("a", "s", None)
                .endpoint_url("http://127.0.0.1:9"),
            |_: &str| None,
        )
        .expect("provider");
        let error = provider
            .submit(&request().layout(funcx_core::ManagerLayout::PerBlock))
            .await
            .unwrap_err();
        assert!(error.is_rejected(), "{error}");
        assert!(
            error.to_string().contains("EC2 instances run in none"),
            "{error}"
        );
    }

    #[test]
    fn configuration_from_the_environment() {
        let config = || Ec2Config::new("ami-1", "t3.micro");
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                vars.iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
        };
        let error = Ec2Provider::with_env(config(), env(&[("AWS_REGION", "us-east-1")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no AWS credentials"), "{error}");
        assert!(error.contains("AWS_ACCESS_KEY_ID"), "{error}");
        let error = Ec2Provider::with_env(
            config(),
            env(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "s")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("no AWS region"), "{error}");
        let provider = Ec2Provider::with_env(
            config(),
            env(&[
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
            ]),
        )
        .unwrap();
        assert_eq!(
            provider.endpoint_url(),
            "https://ec2.eu-west-1.amazonaws.com/"
        );
        let provider = Ec2Provider::with_env(
            config()
                .region("us-east-1")
                .credentials("a", "s", None)
                .endpoint_url("http://127.0.0.1:5000"),
            env(&[]),
        )
        .unwrap();
        assert_eq!(provider.endpoint_url(), "http://127.0.0.1:5000/");
        let error = Ec2Provider::with_env(
            config().endpoint_url("ftp://x"),
            env(&[
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("bad EC2 endpoint URL"), "{error}");
    }

    #[test]
    fn tags_put_funcx_last_and_let_name_be_replaced() {
        let provider = Ec2Provider::with_env(
            Ec2Config::new("ami-1", "t3.micro")
                .region("us-east-1")
                .credentials("a", "s", None)
                .tag("team", "imaging")
                .tag("Name", "mine")
                .tag(BLOCK_TAG, "forged")
                .endpoint_name("beamline"),
            |_| None,
        )
        .unwrap();
        let id = BlockId::new("ec2-x");
        let tags = provider.tags(&BlockRequest::new(ManagerCommand::new("m")), &id);
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(
            tags,
            [
                ("Name", "mine"),
                ("team", "imaging"),
                (BLOCK_TAG, "ec2-x"),
                (ENDPOINT_TAG, "beamline"),
            ]
        );
    }

    #[test]
    fn errors_from_the_api() {
        let text = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                    <Code>InvalidAMIID.Malformed</Code><Message>Invalid id: \"bogus\"</Message>\
                    </Error></Errors><RequestID>req-1</RequestID></Response>";
        let error = parse_error(400, text).into_provider_error("RunInstances", true);
        assert!(error.is_rejected());
        assert_eq!(
            error.to_string(),
            "block request rejected: EC2 RunInstances refused it: InvalidAMIID.Malformed: \
             Invalid id: \"bogus\" (HTTP 400, request id req-1)"
        );
        let error = parse_error(
            503,
            text.replace("InvalidAMIID.Malformed", "Unavailable")
                .as_str(),
        )
        .into_provider_error("RunInstances", true);
        assert!(error.is_command(), "{error}");
        let error = parse_error(502, "<html>bad gateway</html>")
            .into_provider_error("DescribeInstances", false);
        assert!(error.is_command());
        assert!(error.to_string().contains("HTTP 502"), "{error}");
    }

    #[test]
    fn describe_instances_answers() {
        let text = r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
          <reservationSet><item><instancesSet>
            <item><instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState>
              <tagSet><item><key>funcx:block</key><value>ec2-a</value></item></tagSet>
              <groupSet><item><groupId>sg-1</groupId></item></groupSet></item>
            <item><instanceId>i-2</instanceId><instanceState><code>48</code><name>terminated</name></instanceState>
              <stateReason><code>Client.UserInitiatedShutdown</code><message>Client.UserInitiatedShutdown: User initiated shutdown</message></stateReason>
            </item>
          </instancesSet></item></reservationSet>
          <nextToken>more</nextToken>
        </DescribeInstancesResponse>"#;
        let (instances, next) = parse_instances(text).unwrap();
        assert_eq!(next.as_deref(), Some("more"));
        assert_eq!(instances.len(), 2);
        assert_eq!(instances[0].id, "i-1");
        assert_eq!(instances[0].state, "running");
        assert_eq!(instances[0].tag(BLOCK_TAG), Some("ec2-a"));
        assert_eq!(
            instances[1].reason_code.as_deref(),
            Some("Client.UserInitiatedShutdown")
        );
        assert!(parse_instances("not xml").is_err());
    }
}
