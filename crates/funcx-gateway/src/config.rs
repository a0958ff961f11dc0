//! [`GatewayConfig`]: what an operator sets, from a TOML file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::GatewayError;
pub use crate::globus::config::{ComputeClientConfig, GlobusComputeConfig};

/// How a gateway runs.
///
/// ```
/// use funcx_gateway::GatewayConfig;
///
/// let config = GatewayConfig::from_toml(r#"
///     listen = "0.0.0.0:8470"
///     store = "/var/lib/funcx/gateway.redb"
///     max_body_bytes = 8388608
///     result_ttl_secs = 86400
///     delete_after_fetch = true
///
///     [rate_limit]
///     per_second = 50.0
///     burst = 200
///
///     [[users]]
///     name = "alice"
///     token = "5f2b...from-your-secret-store"
/// "#).unwrap();
/// assert_eq!(config.users[0].name, "alice");
/// assert_eq!(config.rate_limit.unwrap().burst, 200);
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the HTTP API listens (default `127.0.0.1:8470`). Endpoints dial the same port.
    pub listen: SocketAddr,
    /// Where the state is kept: `store = "/path/gateway.redb"` (or `[store] redb = "..."`)
    /// for a file of this gateway's own ([`crate::store::RedbStore`]); `[store] postgres =
    /// "postgres://..."` for a database several gateways share (`PgStore`, feature
    /// `postgres`); `None` (default) for a store in memory that forgets everything at exit.
    pub store: Option<StoreConfig>,
    /// The store's page cache, in MiB (default 64): the most memory the store file's pages
    /// take in the gateway, however large the file grows.
    pub store_cache_mib: usize,
    /// How long a graceful stop (`SIGTERM`, `SIGINT`) may take, in seconds (default 10):
    /// requests under way finish, streams are closed, the store is closed cleanly.
    pub shutdown_grace_secs: u64,
    /// Users to create (or whose token to replace) at start.
    pub users: Vec<UserConfig>,
    /// Requests per user; `None` (default) for no limit.
    pub rate_limit: Option<RateLimitConfig>,
    /// The largest request body, in bytes (default 16 MiB).
    pub max_body_bytes: usize,
    /// How long finished tasks are kept, in seconds (default 7 days).
    pub result_ttl_secs: u64,
    /// Whether a finished task is deleted once its result has been read with
    /// `GET /v1/tasks/{id}` or `POST /v1/tasks/batch` (default false).
    pub delete_after_fetch: bool,
    /// How many times a task is re-run after the endpoint running it was lost (it dropped
    /// its connection and did not come back within the heartbeat threshold) before it fails
    /// with a "manager lost" error (default 3).
    pub endpoint_retries: u32,
    /// Serve HTTPS instead of plain HTTP on `listen` (needs the `tls` feature); `None`
    /// (default) for plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Serve the Globus Compute SDK too (`[globus_compute]`; needs the `globus-compute`
    /// feature); `None` (default) for the funcx API only.
    pub globus_compute: Option<GlobusComputeConfig>,
    /// Users who may manage users (`/v1/admin/users`): create them, rotate their tokens,
    /// delete them, while the gateway runs. Users made this way live in the store.
    pub admins: Vec<String>,
    /// The most HTTP connections served at once (default 4096): clients and result streams
    /// (an endpoint's connection counts until it is upgraded to the manager protocol). Past it the gateway stops accepting until one closes, so a flood
    /// of connections costs bounded memory and file descriptors instead of failing accept.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, in seconds (default 30); a
    /// slower one (a slow-loris attack, a stalled client) is disconnected. Also bounds how
    /// long an idle keep-alive connection is held.
    pub header_read_timeout_secs: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            store: None,
            store_cache_mib: 64,
            shutdown_grace_secs: 10,
            users: Vec::new(),
            rate_limit: None,
            max_body_bytes: 16 * 1024 * 1024,
            result_ttl_secs: 7 * 24 * 3600,
            delete_after_fetch: false,
            endpoint_retries: 3,
            tls: None,
            globus_compute: None,
            admins: Vec::new(),
            max_connections: 4096,
            header_read_timeout_secs: 30,
        }
    }
}

/// Which store the gateway keeps its state in (`store` in the TOML).
///
/// Parsed whether or not the crate was built with the `postgres` feature, so that a gateway
/// built without it refuses a PostgreSQL URL with the reason, not an "unknown key" error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StoreSpec")]
pub enum StoreConfig {
    /// One file, one gateway ([`crate::store::RedbStore`]).
    Redb(PathBuf),
    /// A PostgreSQL database, shared by every gateway configured with it.
    Postgres(PostgresConfig),
}

impl std::fmt::Display for StoreConfig {
    /// The store for a log line: a PostgreSQL URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Redb(path) => write!(f, "{}", path.display()),
            StoreConfig::Postgres(config) => write!(f, "{}", redacted(&config.url)),
        }
    }
}

/// `url` with the password of its user info replaced by `***`.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // A key/value connection string: say no more than that it is one.
        return "PostgreSQL (key/value connection string)".into();
    };
    match rest.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// The `[store] postgres = ...` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// A libpq-style URL: `postgres://user:password@host:5432/database`.
    pub url: String,
    /// The schema the tables are in (`schema`; default the database's `public`).
    pub schema: Option<String>,
    /// The most connections this gateway opens (`pool_size`, default 16).
    pub pool_size: usize,
    /// How long a gateway's claim on a task lasts without being renewed (`lease_secs`,
    /// default 10): the time before the tasks of a gateway that died are taken over.
    pub lease_secs: u64,
}

/// What the TOML may say: a path, or a table naming one kind of store.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoreSpec {
    Path(PathBuf),
    Table(StoreTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreTable {
    redb: Option<PathBuf>,
    postgres: Option<String>,
    schema: Option<String>,
    pool_size: Option<usize>,
    lease_secs: Option<u64>,
}

impl TryFrom<StoreSpec> for StoreConfig {
    type Error = String;

    fn try_from(spec: StoreSpec) -> Result<StoreConfig, String> {
        let table = match spec {
            StoreSpec::Path(path) => return Ok(StoreConfig::Redb(path)),
            StoreSpec::Table(table) => table,
        };
        let postgres_only =
            table.schema.is_some() || table.pool_size.is_some() || table.lease_secs.is_some();
        match (table.redb, table.postgres) {
            (Some(path), None) if !postgres_only => Ok(StoreConfig::Redb(path)),
            (Some(_), None) => {
                Err("[store]: schema, pool_size and lease_secs are for postgres".into())
            }
            (None, Some(url)) => {
                let config = PostgresConfig {
                    url,
                    schema: table.schema,
                    pool_size: table.pool_size.unwrap_or(16),
                    lease_secs: table.lease_secs.unwrap_or(10),
                };
                if config.pool_size == 0 || config.lease_secs == 0 {
                    return Err("[store]: pool_size and lease_secs must be at least 1".into());
                }
                Ok(StoreConfig::Postgres(config))
            }
            (Some(_), Some(_)) => Err("[store]: either redb or postgres, not both".into()),
            (None, None) => Err("[store] needs redb = \"<file>\" or postgres = \"<url>\"".into()),
        }
    }
}

/// A user seeded from the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user's name.
    pub name: String,
    /// Its bearer token (only its hash is stored).
    pub token: String,
}

/// The certificate the gateway presents when it serves HTTPS (`[tls]` in the TOML).
///
/// Parsed whether or not the crate was built with the `tls` feature, so that a gateway
/// built without it refuses such a configuration with the reason instead of an "unknown
/// key" error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, the gateway's own certificate first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A per-user token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests a second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
}

impl GatewayConfig {
    /// Parses a configuration from TOML text; missing keys take their defaults.
    pub fn from_toml(text: &str) -> Result<GatewayConfig, GatewayError> {
        let config: GatewayConfig =
            toml::from_str(text).map_err(|e| GatewayError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<GatewayConfig, GatewayError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))?;
        GatewayConfig::from_toml(&text)
    }

    /// How long finished tasks are kept.
    pub fn result_ttl(&self) -> Duration {
        Duration::from_secs(self.result_ttl_secs)
    }

    /// How long a graceful stop may take.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub(crate) fn validate(&self) -> Result<(), GatewayError> {
        if let Some(limit) = self.rate_limit {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst == 0 {
                return Err(GatewayError::Config(
                    "rate_limit needs per_second > 0 and burst >= 1".into(),
                ));
            }
        }
        for user in &self.users {
            if user.name.is_empty() || user.token.len() < 16 {
                return Err(GatewayError::Config(format!(
                    "user {:?}: a name and a token of at least 16 characters are required",
                    user.name
                )));
            }
        }
        if self.max_connections == 0 || self.header_read_timeout_secs == 0 {
            return Err(GatewayError::Config(
                "max_connections and header_read_timeout_secs must be at least 1".into(),
            ));
        }
        if self.store_cache_mib == 0 {
            return Err(GatewayError::Config(
                "store_cache_mib must be at least 1".into(),
            ));
        }
        if matches!(self.store, Some(StoreConfig::Postgres(_))) && !cfg!(feature = "postgres") {
            return Err(GatewayError::Config(
                "[store] postgres is set, but this gateway was built without PostgreSQL support; rebuild with the `postgres` feature".into(),
            ));
        }
        if self.tls.is_some() && !cfg!(feature = "tls") {
            return Err(GatewayError::Config(
                "[tls] is set, but this gateway was built without TLS support; rebuild with the `tls` feature".into(),
            ));
        }
        if let Some(globus_compute) = &self.globus_compute {
            globus_compute.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let config = GatewayConfig::from_toml("").unwrap();
        assert_eq!(config.max_body_bytes, 16 * 1024 * 1024);
        assert!(config.store.is_none());
        assert!(GatewayConfig::from_toml("listen = 5").is_err());
        assert!(GatewayConfig::from_toml("unknown_key = 1").is_err());
        assert!(GatewayConfig::from_toml("[rate_limit]\nper_second = 0.0\nburst = 1").is_err());
        assert!(GatewayConfig::from_toml("[[users]]\nname = \"a\"\ntoken = \"short\"").is_err());
        assert!(GatewayConfig::from_toml("[tls]\ncert = \"c.pem\"").is_err());
        assert!(GatewayConfig::from_toml("[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"").is_err());
    }

    #[test]
    fn store_is_a_path_or_a_table() {
        let path = GatewayConfig::from_toml("store = \"/var/lib/g.redb\"").unwrap();
        assert_eq!(
            path.store,
            Some(StoreConfig::Redb(PathBuf::from("/var/lib/g.redb")))
        );
        let table = GatewayConfig::from_toml("[store]\nredb = \"g.redb\"").unwrap();
        assert_eq!(
            table.store,
            Some(StoreConfig::Redb(PathBuf::from("g.redb")))
        );
        let postgres = GatewayConfig::from_toml(
            "[store]\npostgres = \"postgres://u:p@127.0.0.1/db\"\nlease_secs = 3",
        );
        if cfg!(feature = "postgres") {
            let Some(StoreConfig::Postgres(pg)) = postgres.unwrap().store else {
                panic!("a postgres store")
            };
            assert_eq!(
                (pg.url.as_str(), pg.schema, pg.pool_size, pg.lease_secs),
                ("postgres://u:p@127.0.0.1/db", None, 16, 3)
            );
        } else {
            let error = postgres.unwrap_err().to_string();
            assert!(error.contains("`postgres` feature"), "{error}");
        }
        let shown = StoreConfig::Postgres(PostgresConfig {
            url: "postgres://funcx:s3cret@db:5432/funcx".into(),
            schema: None,
            pool_size: 1,
            lease_secs: 1,
        });
        assert_eq!(shown.to_string(), "postgres://funcx:***@db:5432/funcx");
        for bad in [
            "[store]",
            "[store]\nredb = \"a\"\npostgres = \"b\"",
            "[store]\nredb = \"a\"\nlease_secs = 3",
            "[store]\npostgres = \"b\"\npool_size = 0",
            "[store]\nmysql = \"b\"",
        ] {
            assert!(GatewayConfig::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_table_parses_only_with_the_feature() {
        let parsed = GatewayConfig::from_toml("[tls]\ncert = \"gw.crt\"\nkey = \"gw.key\"");
        if cfg!(feature = "tls") {
            let tls = parsed.unwrap().tls.unwrap();
            assert_eq!(tls.cert, PathBuf::from("gw.crt"));
            assert_eq!(tls.key, PathBuf::from("gw.key"));
        } else {
            let error = parsed.unwrap_err().to_string();
            assert!(error.contains("rebuild with the `tls` feature"), "{error}");
        }
    }
}
