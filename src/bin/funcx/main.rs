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

mod endpoints;
mod functions;
mod gateway;
mod settings;
mod tasks;

use endpoints::*;
use functions::*;
use gateway::*;
use settings::*;
use tasks::*;

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
        /// The container image its tasks run in (`localhost/analysis:1`); part of its id.
        #[arg(long)]
        image: Option<String>,
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
        Command::Register {
            file,
            name,
            public,
            image,
        } => register(&gateway, &file, name, public, image, json).await,
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
