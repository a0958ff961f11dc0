//! What an [`Ec2Provider`](super::Ec2Provider) starts and where the EC2 API is.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use aws_credential_types::Credentials;

use super::DEFAULT_REQUEST_TIMEOUT;

/// How to start instances: image, instance type, network, market, tags, and where the EC2
/// API is.
///
/// ```
/// use funcx_providers::Ec2Config;
///
/// let config = Ec2Config::new("ami-0abcdef1234567890", "c7i.large")
///     .region("us-east-2")
///     .subnet_id("subnet-0123456789abcdef0")
///     .security_group_id("sg-0123456789abcdef0")
///     .key_name("ops")
///     .spot_max_price("0.05")
///     .tag("team", "imaging")
///     .endpoint_name("beamline-7");
/// # let _ = config;
/// ```
///
/// Credentials and region come from the standard AWS environment variables unless set here:
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
/// `AWS_DEFAULT_REGION`, and `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL` for the API
/// endpoint (by default the region's, `https://ec2.<region>.amazonaws.com/`). Shared config
/// files, SSO and the instance metadata service are not read.
#[derive(Clone, Debug)]
pub struct Ec2Config {
    pub(super) image_id: String,
    pub(super) instance_type: String,
    pub(super) region: Option<String>,
    pub(super) subnet_id: Option<String>,
    pub(super) key_name: Option<String>,
    pub(super) security_group_ids: Vec<String>,
    pub(super) spot: Option<Spot>,
    pub(super) iam_instance_profile: Option<String>,
    pub(super) tags: Vec<(String, String)>,
    pub(super) endpoint_url: Option<String>,
    pub(super) endpoint_name: String,
    pub(super) credentials: Option<Credentials>,
    pub(super) request_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Spot {
    pub(super) max_price: Option<String>,
}

impl Ec2Config {
    /// Instances of `instance_type` (e.g. `c7i.large`) from image `image_id` (`ami-...`),
    /// on demand, in the default subnet and security group of the region.
    pub fn new(image_id: impl Into<String>, instance_type: impl Into<String>) -> Ec2Config {
        Ec2Config {
            image_id: image_id.into(),
            instance_type: instance_type.into(),
            region: None,
            subnet_id: None,
            key_name: None,
            security_group_ids: Vec::new(),
            spot: None,
            iam_instance_profile: None,
            tags: Vec::new(),
            endpoint_url: None,
            endpoint_name: "funcx".to_owned(),
            credentials: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The AWS region (`us-east-1`), instead of `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub fn region(mut self, region: impl Into<String>) -> Ec2Config {
        self.region = Some(region.into());
        self
    }

    /// Launches into this subnet (and so its VPC and availability zone).
    pub fn subnet_id(mut self, subnet_id: impl Into<String>) -> Ec2Config {
        self.subnet_id = Some(subnet_id.into());
        self
    }

    /// The EC2 key pair whose public key is installed for SSH logins.
    pub fn key_name(mut self, key_name: impl Into<String>) -> Ec2Config {
        self.key_name = Some(key_name.into());
        self
    }

    /// Adds a security group (`sg-...`). The managers dial out to the endpoint, so a group
    /// only needs to allow that outbound connection.
    pub fn security_group_id(mut self, group_id: impl Into<String>) -> Ec2Config {
        self.security_group_ids.push(group_id.into());
        self
    }

    /// Adds security groups.
    pub fn security_group_ids<I>(mut self, group_ids: I) -> Ec2Config
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.security_group_ids
            .extend(group_ids.into_iter().map(Into::into));
        self
    }

    /// Runs one-time spot instances (interrupted instances terminate) at up to the
    /// on-demand price.
    pub fn spot(mut self) -> Ec2Config {
        self.spot = Some(Spot { max_price: None });
        self
    }

    /// Runs one-time spot instances at up to `max_price` US dollars an hour (`"0.05"`).
    pub fn spot_max_price(mut self, max_price: impl Into<String>) -> Ec2Config {
        self.spot = Some(Spot {
            max_price: Some(max_price.into()),
        });
        self
    }

    /// Runs on-demand instances (the default).
    pub fn on_demand(mut self) -> Ec2Config {
        self.spot = None;
        self
    }

    /// The IAM instance profile the instances run as: its name, or its ARN (`arn:...`).
    pub fn iam_instance_profile(mut self, profile: impl Into<String>) -> Ec2Config {
        self.iam_instance_profile = Some(profile.into());
        self
    }

    /// Adds a tag to every instance. A `Name` tag replaces the default `funcx-<block id>`;
    /// the `funcx:` tags the provider sets cannot be replaced.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Ec2Config {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Sends the API calls to `url` instead of the region's endpoint, e.g.
    /// `http://127.0.0.1:5000` for an emulator such as moto. Plain `http` is allowed.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Ec2Config {
        self.endpoint_url = Some(url.into());
        self
    }

    /// The name of the funcx endpoint these blocks serve, recorded in the `funcx:endpoint`
    /// tag (`funcx` by default).
    pub fn endpoint_name(mut self, name: impl Into<String>) -> Ec2Config {
        self.endpoint_name = name.into();
        self
    }

    /// Signs with these credentials instead of those in the environment.
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Ec2Config {
        self.credentials = Some(Credentials::new(
            access_key_id,
            secret_access_key,
            session_token,
            None,
            "funcx-config",
        ));
        self
    }

    /// How long one API call may take (30 s by default) before it fails as unreachable.
    pub fn request_timeout(mut self, timeout: Duration) -> Ec2Config {
        self.request_timeout = timeout;
        self
    }
}

/// Why an [`Ec2Provider`](super::Ec2Provider) could not be made: no credentials, no region, a bad endpoint URL.
#[derive(Debug)]
pub struct Ec2ConfigError(pub(super) String);

impl fmt::Display for Ec2ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot use EC2: {}", self.0)
    }
}

impl StdError for Ec2ConfigError {}
