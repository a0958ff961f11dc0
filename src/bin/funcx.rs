//! `funcx`: register functions, submit tasks and read results at a funcx gateway from a
//! shell, a thin client of its HTTP API (`GET /v1/openapi.json` describes it).
//!
//! ```text
//! funcx register FILE.py [--name NAME] [--public]
//! funcx submit FUNCTION_ID --endpoint ID [ARG ...] [--kw KEY=VALUE ...] [--timeout SECS]
//! funcx status TASK_ID
//! funcx result TASK_ID [--wait SECS]
//! funcx tasks [--limit N] [--before TASK_ID]
//! funcx endpoints [register NAME | stop ID | delete ID]
//! ```
//!
//! Every command takes `--json` (one JSON document on stdout, for scripts); without it the
//! output is for people, and a command whose answer is an id (`register`, `submit`) prints
//! the id alone, so `F=$(funcx register f.py)` works. Arguments and keyword values are JSON
//! literals (`1`, `2.5`, `'"text"'`, `'[1, 2]'`, `'{"k": null}'`), which the function
//! receives as Python sees JSON; a result comes back as JSON.
//!
//! Which gateway, and as whom, from the first that says: the flags `--gateway URL`,
//! `--token TOKEN` and `--ca-file PEM`; the environment (`FUNCX_GATEWAY`, `FUNCX_TOKEN`,
//! `FUNCX_CA_FILE`); the file `$FUNCX_HOME/config.toml` (`FUNCX_HOME` defaults to
//! `~/.funcx`), whose keys are `gateway`, `token` or `token_file`, and `ca_file`.
//!
//! Exit status: 0 on success; 1 when the gateway refused (the HTTP status, the API's error
//! code and message are printed) or the task failed; 2 when `result` found the task not
//! finished; 64 for a bad command line or argument; 78 for a missing or bad configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand};
use funcx::client::model::{
    Blob, EndpointView, ListTasks, SubmitRequest, SubmitTask, TaskList, TaskView,
};
use funcx::{Payload, TaskState};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "funcx",
    about = "Register functions, submit tasks and read results at a funcx gateway",
    version
)]
struct Cli {
    /// The gateway's URL (default: $FUNCX_GATEWAY, then `gateway` in $FUNCX_HOME/config.toml).
    #[arg(long, global = true)]
    gateway: Option<String>,
    /// Your token at the gateway (default: $FUNCX_TOKEN, then the config file).
    #[arg(long, global = true)]
    token: Option<String>,
    /// The CA certificates (PEM) an `https://` gateway's certificate is checked against
    /// (default: $FUNCX_CA_FILE, then the config file, then the public roots).
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// Print one JSON document, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Registers the function a Python file defines; prints its id.
    Register {
        /// The Python file.
        file: PathBuf,
        /// The function to call (default: the file's only top-level `def`, or the one named
        /// like the file).
        #[arg(long)]
        name: Option<String>,
        /// Let every user of the gateway call it.
        #[arg(long)]
        public: bool,
    },
    /// Submits one call of a function to an endpoint; prints the task's id.
    Submit {
        /// The function's id (from `funcx register`).
        function_id: String,
        /// The endpoint that runs it.
        #[arg(long, short = 'e')]
        endpoint: String,
        /// Positional arguments, each a JSON literal: 1, 2.5, '"text"', '[1, 2]', null.
        #[arg(allow_negative_numbers = true)]
        args: Vec<String>,
        /// A keyword argument, KEY=JSON (repeat for more).
        #[arg(long = "kw", value_name = "KEY=JSON")]
        kwargs: Vec<String>,
        /// How long the task may run once started, in seconds.
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// A task's state and timeline, or its error.
    Status {
        /// The task's id.
        task_id: u64,
    },
    /// A task's result as JSON (exit status 2 while it is not finished).
    Result {
        /// The task's id.
        task_id: u64,
        /// Wait up to this many seconds for the task to finish.
        #[arg(long, value_name = "SECS")]
        wait: Option<f64>,
    },
    /// Your tasks, newest first.
    Tasks {
        /// How many (1 to 1000).
        #[arg(long, default_value_t = ListTasks::DEFAULT_LIMIT)]
        limit: usize,
        /// Only tasks older than this one (the next page of an earlier listing).
        #[arg(long, value_name = "TASK_ID")]
        before: Option<u64>,
    },
    /// Your endpoints and their state; or register, stop or delete one.
    Endpoints {
        #[command(subcommand)]
        action: Option<EndpointAction>,
    },
}

#[derive(Subcommand)]
enum EndpointAction {
    /// Registers an endpoint; prints its id and its token (shown this once).
    Register {
        /// A name for people.
        name: String,
    },
    /// Stops an endpoint remotely: it finishes and delivers the tasks it holds, and exits.
    Stop {
        /// The endpoint's id.
        id: String,
    },
    /// Deletes an endpoint: it is stopped, and its token stops working.
    Delete {
        /// The endpoint's id.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("funcx: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("funcx: {message}");
            ExitCode::from(code)
        }
    }
}

/// A failed command: its exit status and what to tell the user.
struct Failure(u8, String);

/// The gateway refused, or the task failed.
const FAILED: u8 = 1;
/// `result`: the task has not finished.
const PENDING: u8 = 2;
/// A bad command line or argument.
const USAGE: u8 = 64;
/// A missing or bad configuration.
const CONFIG: u8 = 78;

type Result<T> = std::result::Result<T, Failure>;

async fn run(cli: Cli) -> Result<()> {
    let gateway = Gateway::new(Settings::resolve(&cli)?)?;
    let json = cli.json;
    match cli.command {
        Command::Register { file, name, public } => {
            register(&gateway, &file, name, public, json).await
        }
        Command::Submit {
            function_id,
            endpoint,
            args,
            kwargs,
            timeout,
        } => {
            submit(
                &gateway,
                function_id,
                &endpoint,
                &args,
                &kwargs,
                timeout,
                json,
            )
            .await
        }
        Command::Status { task_id } => status(&gateway, task_id, json).await,
        Command::Result { task_id, wait } => result(&gateway, task_id, wait, json).await,
        Command::Tasks { limit, before } => tasks(&gateway, limit, before, json).await,
        Command::Endpoints { action } => match action {
            None => endpoints(&gateway, json).await,
            Some(EndpointAction::Register { name }) => {
                register_endpoint(&gateway, &name, json).await
            }
            Some(EndpointAction::Stop { id }) => stop_endpoint(&gateway, &id, json).await,
            Some(EndpointAction::Delete { id }) => delete_endpoint(&gateway, &id, json).await,
        },
    }
}

/// `$FUNCX_HOME/config.toml`: the defaults of the user's commands.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The gateway's URL.
    gateway: Option<String>,
    /// The user's token, inline (keep the file private: mode 0600).
    token: Option<String>,
    /// A file holding the user's token (relative paths are from `$FUNCX_HOME`).
    token_file: Option<PathBuf>,
    /// CA certificates for an `https://` gateway (relative paths are from `$FUNCX_HOME`).
    ca_file: Option<PathBuf>,
}

/// Where the gateway is and who the user is, resolved from flags, environment and file.
struct Settings {
    url: String,
    token: String,
    ca_file: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn funcx_home() -> Option<PathBuf> {
    std::env::var_os("FUNCX_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".funcx")))
}

impl Settings {
    fn resolve(cli: &Cli) -> Result<Settings> {
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

fn read_config(path: &Path) -> Result<ConfigFile> {
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

/// The gateway's HTTP API, as this program calls it.
struct Gateway {
    http: reqwest::Client,
    url: String,
    token: String,
}

/// The API's error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// An error and its causes, on one line: reqwest's own text leaves out why a connection failed.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        source = cause.source();
    }
    text
}

impl Gateway {
    fn new(settings: Settings) -> Result<Gateway> {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120));
        let https = settings.url.starts_with("https://");
        let builder = if https || settings.url.starts_with("http://") {
            with_tls(builder, https, settings.ca_file.as_deref())?
        } else {
            return Err(Failure(
                CONFIG,
                format!(
                    "the gateway's URL is http://HOST:PORT or https://HOST:PORT, not {:?}",
                    settings.url
                ),
            ));
        };
        let http = builder.build().map_err(|e| {
            Failure(
                CONFIG,
                format!("cannot set up the HTTP client: {}", chain(&e)),
            )
        })?;
        Ok(Gateway {
            http,
            url: settings.url,
            token: settings.token,
        })
    }

    /// Sends a request with the user's token; a JSON answer on success (`Null` if empty), the
    /// HTTP status with the API's error code and message otherwise.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            Failure(
                FAILED,
                format!(
                    "{method} {path}: cannot reach the gateway at {}: {}",
                    self.url,
                    chain(&e)
                ),
            )
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            Failure(
                FAILED,
                format!(
                    "{method} {path}: {status}: the answer broke off: {}",
                    chain(&e)
                ),
            )
        })?;
        if !status.is_success() {
            let why = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => format!("{}: {}", body.error.code, body.error.message),
                Err(_) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let text: String = text.trim().chars().take(300).collect();
                    if text.is_empty() {
                        "(no details)".to_string()
                    } else {
                        text
                    }
                }
            };
            return Err(Failure(FAILED, format!("{method} {path}: {status}: {why}")));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure(
                FAILED,
                format!("{method} {path}: {status}: the answer is not JSON: {e}"),
            )
        })
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// The gateway crate's rustls configuration (the given CA file, else the public roots), so
/// that `funcx` checks a gateway's certificate exactly as `RemoteExecutor` does.
#[cfg(feature = "tls")]
fn with_tls(
    builder: reqwest::ClientBuilder,
    https: bool,
    ca_file: Option<&Path>,
) -> Result<reqwest::ClientBuilder> {
    if !https {
        return Ok(builder);
    }
    let config = match ca_file {
        Some(ca_file) => funcx::client::tls::client_config(ca_file),
        None => funcx::client::tls::client_config_with_public_roots(),
    }
    .map_err(|e| Failure(CONFIG, format!("TLS: {e}")))?;
    Ok(builder.use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(config)))
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    builder: reqwest::ClientBuilder,
    https: bool,
    _ca_file: Option<&Path>,
) -> Result<reqwest::ClientBuilder> {
    if https {
        return Err(Failure(
            CONFIG,
            "an https:// gateway: this funcx was built without TLS support (feature `tls`)".into(),
        ));
    }
    Ok(builder)
}

/// Decodes an answer into the API's type for it.
fn parse<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Failure(
            FAILED,
            format!("the gateway's answer to {what} is not what this funcx expects: {e}"),
        )
    })
}

fn print_json(value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure(FAILED, format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// The function a Python file defines at top level that `register` calls by default: the
/// only one, or the one named like the file.
fn entry_point(file: &Path, source: &str) -> Result<String> {
    let defined: Vec<&str> = source
        .lines()
        .filter_map(|line| {
            line.strip_prefix("def ")
                .or_else(|| line.strip_prefix("async def "))
        })
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    let stem = file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or_default();
    match defined.as_slice() {
        [only] => Ok((*only).to_string()),
        _ if defined.contains(&stem) => Ok(stem.to_string()),
        [] => Err(Failure(
            USAGE,
            format!(
                "{} defines no top-level function (`def NAME(...)`)",
                file.display()
            ),
        )),
        many => Err(Failure(
            USAGE,
            format!(
                "{} defines {}: say which with --name",
                file.display(),
                many.join(", ")
            ),
        )),
    }
}

async fn register(
    gateway: &Gateway,
    file: &Path,
    name: Option<String>,
    public: bool,
    json: bool,
) -> Result<()> {
    let source = std::fs::read_to_string(file)
        .map_err(|e| Failure(USAGE, format!("cannot read {}: {e}", file.display())))?;
    let name = match name {
        Some(name) => name,
        None => entry_point(file, &source)?,
    };
    let answer = gateway
        .post(
            "/v1/functions",
            &json!({ "name": name, "source": source, "public": public }),
        )
        .await?;
    let function_id = answer["function_id"].as_str().ok_or_else(|| {
        Failure(
            FAILED,
            format!("the gateway's answer has no function_id: {answer}"),
        )
    })?;
    if json {
        print_json(&json!({ "function_id": function_id, "name": name }))
    } else {
        println!("{function_id}");
        Ok(())
    }
}

/// A JSON literal from the command line, pickled as the function's argument.
fn json_argument(what: &str, text: &str) -> Result<Blob> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Failure(
            USAGE,
            format!(
                "{what} ({text:?}) is not a JSON literal: {e}; a string is quoted: '\"{text}\"'"
            ),
        )
    })?;
    let payload = Payload::pickle(&value).map_err(|e| Failure(USAGE, format!("{what}: {e}")))?;
    Ok(Blob(payload.as_bytes().to_vec()))
}

async fn submit(
    gateway: &Gateway,
    function_id: String,
    endpoint: &str,
    args: &[String],
    kwargs: &[String],
    timeout: Option<f64>,
    json: bool,
) -> Result<()> {
    let args = args
        .iter()
        .enumerate()
        .map(|(i, text)| json_argument(&format!("argument {}", i + 1), text))
        .collect::<Result<Vec<_>>>()?;
    let mut keywords = std::collections::BTreeMap::new();
    for pair in kwargs {
        let (key, text) = pair
            .split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .ok_or_else(|| {
                Failure(
                    USAGE,
                    format!("--kw {pair:?}: write KEY=JSON, e.g. --kw factor=2.5"),
                )
            })?;
        keywords.insert(
            key.to_string(),
            json_argument(&format!("--kw {key}"), text)?,
        );
    }
    let timeout_ms = match timeout {
        None => None,
        Some(secs) if secs.is_finite() && secs > 0.0 => Some((secs * 1000.0).ceil() as u64),
        Some(secs) => {
            return Err(Failure(
                USAGE,
                format!("--timeout {secs}: give a number of seconds above 0"),
            ))
        }
    };
    let request = SubmitRequest {
        tasks: vec![SubmitTask {
            function_id,
            args,
            kwargs: keywords,
            timeout_ms,
            format: funcx::Format::Pickle,
        }],
    };
    let body = serde_json::to_value(&request)
        .map_err(|e| Failure(FAILED, format!("cannot encode the submission: {e}")))?;
    let answer = gateway
        .post(
            &format!("/v1/endpoints/{}/tasks", path_segment(endpoint)?),
            &body,
        )
        .await?;
    let id = answer["task_ids"][0].as_u64().ok_or_else(|| {
        Failure(
            FAILED,
            format!("the gateway's answer has no task id: {answer}"),
        )
    })?;
    if json {
        print_json(&json!({ "task_id": id }))
    } else {
        println!("{id}");
        Ok(())
    }
}

/// An id as one path segment: ids are plain tokens, so anything else is refused rather than
/// escaped into another route.
fn path_segment(id: &str) -> Result<&str> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id != "."
        && id != ".."
    {
        Ok(id)
    } else {
        Err(Failure(USAGE, format!("{id:?} is not an id")))
    }
}

fn state_name(state: TaskState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{state:?}").to_lowercase())
}

fn finished(state: TaskState) -> bool {
    matches!(state, TaskState::Succeeded | TaskState::Failed)
}

fn seconds_between(from: SystemTime, to: SystemTime) -> Option<f64> {
    to.duration_since(from).ok().map(|d| d.as_secs_f64())
}

/// "submitted 3.1 s ago, waited 0.012 s, ran 0.201 s": the timeline for people.
fn describe_timeline(view: &TaskView) -> String {
    let timeline = &view.timeline;
    let mut parts = Vec::new();
    if let Some(age) = seconds_between(timeline.submitted, SystemTime::now()) {
        parts.push(format!("submitted {} ago", human_seconds(age)));
    }
    if let Some(waited) = timeline
        .running
        .and_then(|running| seconds_between(timeline.submitted, running))
    {
        parts.push(format!("waited {}", human_seconds(waited)));
    }
    if let (Some(running), Some(done)) = (timeline.running, timeline.finished) {
        if let Some(ran) = seconds_between(running, done) {
            parts.push(format!("ran {}", human_seconds(ran)));
        }
    }
    parts.join(", ")
}

fn human_seconds(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else if secs < 120.0 {
        format!("{secs:.1} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

async fn read_task(gateway: &Gateway, id: u64) -> Result<(Value, TaskView)> {
    let raw = gateway.get(&format!("/v1/tasks/{id}")).await?;
    let view: TaskView = parse("GET /v1/tasks/{id}", raw.clone())?;
    Ok((raw, view))
}

async fn status(gateway: &Gateway, id: u64, json: bool) -> Result<()> {
    let (mut raw, view) = read_task(gateway, id).await?;
    if json {
        // The result is `funcx result`'s business (and may be large).
        if let Some(object) = raw.as_object_mut() {
            object.remove("result");
        }
        return print_json(&raw);
    }
    println!(
        "task {id}: {} ({})",
        state_name(view.state),
        describe_timeline(&view)
    );
    if let Some(error) = &view.error {
        println!("  error ({}): {error}", error.code());
    }
    Ok(())
}

async fn result(gateway: &Gateway, id: u64, wait: Option<f64>, json: bool) -> Result<()> {
    let wait = match wait {
        None => Duration::ZERO,
        Some(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Some(secs) => {
            return Err(Failure(
                USAGE,
                format!("--wait {secs}: give a number of seconds, 0 or more"),
            ))
        }
    };
    let deadline = Instant::now() + wait;
    // Polled: a task that finished before we looked is read the same way as one that
    // finishes while we wait. The pause grows to half a second, so a quick task is seen
    // quickly and a slow one costs a request every half second.
    let mut pause = Duration::from_millis(10);
    let view = loop {
        let (_, view) = read_task(gateway, id).await?;
        if finished(view.state) {
            break view;
        }
        let now = Instant::now();
        if now >= deadline {
            let state = state_name(view.state);
            if json {
                print_json(&json!({ "id": id, "state": state }))?;
            }
            let hint = if wait.is_zero() {
                " (pass --wait SECS to wait for it)"
            } else {
                ""
            };
            return Err(Failure(
                PENDING,
                format!("task {id} is {state}, not finished{hint}"),
            ));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    };
    if let Some(error) = &view.error {
        if json {
            print_json(&json!({ "id": id, "state": "failed", "error": error }))?;
        }
        let mut message = format!("task {id} failed ({}): {error}", error.code());
        if let Some(exception) = error.python_exception() {
            if !exception.traceback.trim().is_empty() {
                message = format!("{message}\n{}", exception.traceback.trim_end());
            }
        }
        return Err(Failure(FAILED, message));
    }
    let payload = match &view.result {
        Some(blob) => match view.result_format {
            Some(funcx::Format::Json) => Payload::from_json(blob.0.clone()),
            _ => Payload::from_pickled(blob.0.clone()),
        },
        None => {
            return Err(Failure(
                FAILED,
                format!("task {id} succeeded but the gateway sent no result"),
            ))
        }
    };
    let value: Value = match payload.decode() {
        Ok(value) => value,
        Err(error) => {
            if json {
                print_json(&json!({ "id": id, "state": "succeeded", "result": null,
                    "result_pickle": serde_json::to_value(Blob(payload.as_bytes().to_vec())).unwrap_or(Value::Null) }))?;
            }
            return Err(Failure(
                FAILED,
                format!(
                    "task {id} succeeded, but its result is a Python value JSON cannot hold ({error}); `--json` gives its pickle as base64 in `result_pickle`"
                ),
            ));
        }
    };
    if json {
        print_json(&json!({ "id": id, "state": "succeeded", "result": value }))
    } else {
        print_json(&value)
    }
}

async fn tasks(gateway: &Gateway, limit: usize, before: Option<u64>, json: bool) -> Result<()> {
    let mut path = format!("/v1/tasks?limit={limit}");
    if let Some(before) = before {
        path.push_str(&format!("&before={before}"));
    }
    let raw = gateway.get(&path).await?;
    if json {
        return print_json(&raw);
    }
    let list: TaskList = parse("GET /v1/tasks", raw)?;
    if list.tasks.is_empty() {
        println!("no tasks");
        return Ok(());
    }
    println!(
        "{:>10}  {:<10}  {:<32}  {:<12}  {:>9}  ERROR",
        "TASK", "STATE", "ENDPOINT", "FUNCTION", "AGE"
    );
    let now = SystemTime::now();
    for task in &list.tasks {
        let age =
            seconds_between(task.timeline.submitted, now).map_or("-".to_string(), human_seconds);
        println!(
            "{:>10}  {:<10}  {:<32}  {:<12}  {:>9}  {}",
            task.id,
            state_name(task.state),
            task.endpoint_id,
            task.function_id.get(..12).unwrap_or(&task.function_id),
            age,
            task.error_code
                .map_or(String::new(), |code| code.to_string()),
        );
    }
    if let Some(next) = list.next {
        println!("more: funcx tasks --before {next}");
    }
    Ok(())
}

async fn endpoints(gateway: &Gateway, json: bool) -> Result<()> {
    let raw = gateway.get("/v1/endpoints").await?;
    if json {
        return print_json(&raw);
    }
    let list: Vec<EndpointView> = parse("GET /v1/endpoints", raw)?;
    if list.is_empty() {
        println!("no endpoints (register one: funcx endpoints register NAME)");
        return Ok(());
    }
    println!(
        "{:<32}  {:<16}  {:<12}  {:>8}  {:>12}  {:>6}  {:>9}",
        "ENDPOINT", "NAME", "STATE", "MANAGERS", "BUSY/WORKERS", "QUEUED", "IN FLIGHT"
    );
    for endpoint in &list {
        let status = &endpoint.status;
        println!(
            "{:<32}  {:<16}  {:<12}  {:>8}  {:>12}  {:>6}  {:>9}",
            endpoint.endpoint_id,
            endpoint.name,
            if status.connected {
                "connected"
            } else {
                "disconnected"
            },
            status.managers,
            format!("{}/{}", status.busy_workers, status.workers),
            status.queued,
            status.in_flight,
        );
    }
    Ok(())
}

async fn register_endpoint(gateway: &Gateway, name: &str, json: bool) -> Result<()> {
    let answer = gateway
        .post("/v1/endpoints", &json!({ "name": name }))
        .await?;
    if json {
        return print_json(&answer);
    }
    let (Some(id), Some(token)) = (
        answer["endpoint_id"].as_str(),
        answer["endpoint_token"].as_str(),
    ) else {
        return Err(Failure(
            FAILED,
            format!("the gateway's answer has no endpoint id and token: {answer}"),
        ));
    };
    println!("endpoint {id} registered; its token (shown this once): {token}");
    println!(
        "run it: funcx-endpoint configure {name} --gateway {} --endpoint-id {id} --token {token}",
        gateway.url
    );
    Ok(())
}

async fn stop_endpoint(gateway: &Gateway, id: &str, json: bool) -> Result<()> {
    let answer = gateway
        .post(
            &format!("/v1/endpoints/{}/stop", path_segment(id)?),
            &json!({}),
        )
        .await?;
    if json {
        return print_json(&answer);
    }
    match answer["connections"].as_u64() {
        Some(0) => println!("endpoint {id} is not connected; nothing to stop"),
        Some(n) => println!("endpoint {id} is stopping ({n} connection(s) draining)"),
        None => println!("endpoint {id} is stopping"),
    }
    Ok(())
}

async fn delete_endpoint(gateway: &Gateway, id: &str, json: bool) -> Result<()> {
    gateway
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/endpoints/{}", path_segment(id)?),
            None,
        )
        .await?;
    if json {
        return print_json(&json!({ "endpoint_id": id, "deleted": true }));
    }
    println!("endpoint {id} deleted");
    Ok(())
}
