//! Which gateway, and as whom: flags, the environment, then `$FUNCX_HOME/config.toml`.

use super::*;

/// `$FUNCX_HOME/config.toml`: the defaults of the user's commands.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// The gateway's URL.
    pub(crate) gateway: Option<String>,
    /// The user's token, inline (keep the file private: mode 0600).
    pub(crate) token: Option<String>,
    /// A file holding the user's token (relative paths are from `$FUNCX_HOME`).
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificates for an `https://` gateway (relative paths are from `$FUNCX_HOME`).
    pub(crate) ca_file: Option<PathBuf>,
}

/// Where the gateway is and who the user is, resolved from flags, environment and file.
pub(crate) struct Settings {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) ca_file: Option<PathBuf>,
}

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

pub(crate) fn funcx_home() -> Option<PathBuf> {
    std::env::var_os("FUNCX_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".funcx")))
}

impl Settings {
    pub(crate) fn resolve(cli: &Cli) -> Result<Settings> {
        let home = funcx_home();
        let path = home.as_ref().map(|home| home.join("config.toml"));
        let file = match &path {
            Some(path) if path.exists() => read_config(path)?,
            _ => ConfigFile::default(),
        };
        let relative = |file: PathBuf| match &home {
            Some(home) if file.is_relative() => home.join(file),
            _ => file,
        };
        let where_ = path
            .as_ref()
            .map_or("$FUNCX_HOME/config.toml".to_string(), |p| {
                p.display().to_string()
            });
        let url = cli
            .gateway
            .clone()
            .or_else(|| env("FUNCX_GATEWAY"))
            .or(file.gateway)
            .ok_or_else(|| {
                Failure(
                    CONFIG,
                    format!(
                        "which gateway? pass --gateway URL, set FUNCX_GATEWAY, or write `gateway = \"URL\"` in {where_}"
                    ),
                )
            })?;
        let token = match (cli.token.clone().or_else(|| env("FUNCX_TOKEN")), file.token, file.token_file) {
            (Some(token), _, _) | (None, Some(token), _) => token,
            (None, None, Some(token_file)) => {
                let token_file = relative(token_file);
                std::fs::read_to_string(&token_file)
                    .map_err(|e| {
                        Failure(
                            CONFIG,
                            format!("{where_}: key `token_file`: cannot read {}: {e}", token_file.display()),
                        )
                    })?
                    .trim()
                    .to_string()
            }
            (None, None, None) => {
                return Err(Failure(
                    CONFIG,
                    format!(
                        "no token: pass --token TOKEN, set FUNCX_TOKEN, or write `token_file = \"PATH\"` in {where_}"
                    ),
                ))
            }
        };
        let ca_file = cli
            .ca_file
            .clone()
            .or_else(|| env("FUNCX_CA_FILE").map(PathBuf::from))
            .or(file.ca_file.map(relative));
        Ok(Settings {
            url: url.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            ca_file,
        })
    }
}

pub(crate) fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure(CONFIG, format!("cannot read {}: {e}", path.display())))?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        Failure(
            CONFIG,
            format!("{}: {}", path.display(), e.to_string().trim_end()),
        )
    })?;
    if file.token.is_some() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
        if mode & 0o077 != 0 {
            eprintln!(
                "funcx: warning: {} holds a token and others may read it (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(file)
}
