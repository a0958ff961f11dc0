//! [`RemoteExecutor`]: the ordinary [`Executor`] API, with the tasks running on an endpoint
//! behind a gateway.
//!
//! Switching a program from local workers to a remote endpoint is one line:
//!
//! ```no_run
//! use funcx_core::{Executor, Function};
//! use funcx_gateway::RemoteExecutor;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // let executor = Executor::builder().workers(2).start(PythonRuntime::default());
//! let executor: Executor =
//!     RemoteExecutor::connect("http://127.0.0.1:8470", "alice's token", "3f9c0e...").await?;
//! let add = Function::from_source("def add(a, b):\n    return a + b\n", "add");
//! let sum: i64 = executor.submit(&add, (2, 3)).result().await?;
//! # Ok(()) }
//! ```
//!
//! Handles, `map`, cancellation, timeouts, streamed submissions and tower layers work as they
//! do locally: the executor is a real [`Executor`] whose only worker is a *pool* (see
//! [`Executor::attach`]) standing for the gateway, with room for a million tasks at once.
//!
//! # How a task travels, and what it costs
//!
//! 1. The dispatcher hands the pool everything queued in one `ToWorker::Tasks` batch; the
//!    pool's driver task coalesces what else is already waiting and sends it in **one**
//!    `POST /v1/endpoints/{id}/tasks` with a postcard body (arguments as raw pickle bytes, no
//!    base64), split only past [`RemoteExecutorBuilder::max_request_bytes`]. Each function is
//!    registered once (`POST /v1/functions`) before its first task.
//! 2. The gateway stores the batch (one durable write), answers with the gateway task ids,
//!    and relays the tasks to the endpoint over its manager connection, where warm Python
//!    workers run them. Every submission carries a fresh `Idempotency-Key`, and a failed
//!    one is sent again exactly as it was, under the same key: if the gateway stored it but
//!    its answer was lost (it crashed, the connection dropped), the resend answers the same
//!    task ids and nothing runs twice.
//! 3. Results come back pushed over one long-lived `GET /v1/results` stream in its binary
//!    form (`Accept: application/x-postcard`): length-prefixed postcard frames, each holding
//!    every result that was waiting at the gateway (results as raw bytes, no base64). The
//!    driver maps the gateway ids back to the local tasks and reports each frame to the
//!    dispatcher as one batch.
//!
//! So a task costs a share of one HTTP request and one store write on the way in, and a
//! share of one frame (about a hundred bytes plus its result) on the way out; per-task
//! overhead is dominated by the gateway's store, not by round trips or encoding. Latency of a lone task is one
//! HTTP round trip plus the endpoint's relay plus one frame.
//!
//! # When the gateway goes away
//!
//! The result stream reconnects with back-off. After every (re)connection the driver reads
//! the state of every task still outstanding with `POST /v1/tasks/batch`, so a result
//! published while the stream was down is not missed; a result that arrives both ways is
//! delivered once. Submissions that fail because the gateway cannot be reached are retried
//! with back-off. A gateway that stays unreachable for
//! [`RemoteExecutorBuilder::give_up_after`] (default 60 s) fails the outstanding tasks with a
//! [`TaskError::is_manager_lost`] error naming the gateway and the last failure; tasks
//! submitted while it is still down fail the same way at once instead of hanging, and the
//! executor works again as soon as the gateway is back.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use funcx_core::ids::IdMap;
use funcx_core::worker::{
    FunctionKey, ToWorker, WorkItem, WorkResult, Worker, WorkerEvent, WorkerEvents,
};
use funcx_core::{Executor, ExecutorBuilder, Function, FunctionBody, Payload, TaskError, TaskId};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::api::model::{
    BatchRequest, BatchResponse, Blob, EndpointView, FunctionRegistered, RegisterFunction,
    ResultFrame, SubmitRequest, SubmitResponse, SubmitTask, TaskView,
};

/// The size of the pool that stands for the gateway: larger than any number of tasks a
/// program keeps in flight, so the dispatcher never holds tasks back from the gateway (whose
/// endpoint has its own queue and knows its own capacity).
const POOL_SIZE: usize = 1_000_000;

/// The body type of `application/x-postcard` requests and responses.
const POSTCARD: &str = "application/x-postcard";

/// How many outstanding tasks one `POST /v1/tasks/batch` asks about.
const BATCH_READ: usize = 4096;

/// How many tasks one submission holds at most.
const MAX_TASKS_PER_REQUEST: usize = 50_000;

/// Connects [`Executor`]s to an endpoint through a funcx gateway.
///
/// [`RemoteExecutor::connect`] with defaults, or [`RemoteExecutor::builder`] to set the
/// executor's options and how patient the connection is.
#[derive(Debug, Clone, Copy)]
pub struct RemoteExecutor;

impl RemoteExecutor {
    /// An [`Executor`] whose tasks run on endpoint `endpoint_id` of the gateway at
    /// `gateway_url` (`http://host:port`, or `https://host:port` with the `tls` feature), on behalf of the user whose bearer token is
    /// `user_token`.
    ///
    /// Checks first that the gateway answers and that the user sees the endpoint, so a
    /// wrong address, token or endpoint fails here with the reason rather than task by task.
    /// The endpoint itself need not be connected yet: tasks wait in the gateway for it.
    pub async fn connect(
        gateway_url: &str,
        user_token: &str,
        endpoint_id: &str,
    ) -> Result<Executor, RemoteError> {
        RemoteExecutor::builder(gateway_url, user_token, endpoint_id)
            .start()
            .await
    }

    /// A builder for a remote executor, to set options before [`RemoteExecutorBuilder::start`].
    pub fn builder(
        gateway_url: &str,
        user_token: &str,
        endpoint_id: &str,
    ) -> RemoteExecutorBuilder {
        RemoteExecutorBuilder {
            url: gateway_url.to_owned(),
            token: user_token.to_owned(),
            endpoint: endpoint_id.to_owned(),
            executor: Executor::builder(),
            give_up_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_request_bytes: 8 << 20,
            #[cfg(feature = "tls")]
            ca_file: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Options of a [`RemoteExecutor`].
#[derive(Debug, Clone)]
pub struct RemoteExecutorBuilder {
    url: String,
    token: String,
    endpoint: String,
    executor: ExecutorBuilder,
    give_up_after: Duration,
    request_timeout: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    max_request_bytes: usize,
    /// The CA file to trust for an `https` gateway, read at start.
    #[cfg(feature = "tls")]
    ca_file: Option<std::path::PathBuf>,
    /// A rustls configuration made by hand for an `https` gateway.
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl RemoteExecutorBuilder {
    /// The local executor's options: a default task timeout, the shutdown grace. (Its
    /// worker count does not apply: its only worker is the gateway.)
    pub fn executor(mut self, builder: ExecutorBuilder) -> RemoteExecutorBuilder {
        self.executor = builder;
        self
    }

    /// How long the gateway may stay unreachable before outstanding tasks fail with a
    /// [`TaskError::is_manager_lost`] error (default 60 s). A gateway restart that takes
    /// less loses nothing.
    pub fn give_up_after(mut self, after: Duration) -> RemoteExecutorBuilder {
        self.give_up_after = after;
        self
    }

    /// How long one HTTP request may take before it counts as a failure (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> RemoteExecutorBuilder {
        self.request_timeout = timeout;
        self
    }

    /// The first pause after a failed request or a dropped event stream (default 50 ms); it
    /// doubles up to `max` (default 2 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> RemoteExecutorBuilder {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// The largest submission body to send (default 8 MiB); larger batches are split. A
    /// gateway that answers 413 makes the client halve it.
    pub fn max_request_bytes(mut self, bytes: usize) -> RemoteExecutorBuilder {
        self.max_request_bytes = bytes.max(1);
        self
    }

    /// Trusts the CA certificates in the PEM file `path` for an `https://` gateway, instead
    /// of the Mozilla roots: the certificate of a self-signed gateway, or its private CA.
    /// The file is read by [`start`](Self::start), which fails with [`RemoteError::Tls`] if
    /// it cannot be used.
    #[cfg(feature = "tls")]
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> RemoteExecutorBuilder {
        self.ca_file = Some(path.into());
        self
    }

    /// Uses a rustls configuration made by hand for an `https://` gateway (client
    /// certificates, custom verification); it takes precedence over
    /// [`ca_file`](Self::ca_file).
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> RemoteExecutorBuilder {
        self.tls = Some(config);
        self
    }

    /// The TLS trust configured, if any (`None`: the Mozilla roots).
    #[cfg(feature = "tls")]
    fn client_tls(&self) -> Result<ClientTls, RemoteError> {
        if let Some(config) = &self.tls {
            return Ok(Some(config.clone()));
        }
        match &self.ca_file {
            Some(path) => {
                crate::tls::client_config(path)
                    .map(Some)
                    .map_err(|error| RemoteError::Tls {
                        url: self.url.clone(),
                        reason: error.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    #[cfg(not(feature = "tls"))]
    fn client_tls(&self) -> Result<ClientTls, RemoteError> {
        Ok(())
    }

    /// Checks the gateway, the token and the endpoint, then starts the executor.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn start(self) -> Result<Executor, RemoteError> {
        let http = Http::new(
            &self.url,
            &self.token,
            self.request_timeout,
            self.client_tls()?,
        )?;
        let path = format!("/v1/endpoints/{}", self.endpoint);
        let view: EndpointView = http
            .call(Method::GET, &path, None)
            .await
            .and_then(|response| response.decode())
            .map_err(|error| match error {
                HttpError::Unreachable(reason) => RemoteError::Unreachable {
                    url: self.url.clone(),
                    reason,
                },
                HttpError::Tls(reason) => RemoteError::Tls {
                    url: self.url.clone(),
                    reason,
                },
                HttpError::Refused {
                    status, message, ..
                } => RemoteError::Refused {
                    status: status.as_u16(),
                    message,
                },
            })?;
        info!(
            endpoint = %view.endpoint_id,
            name = %view.name,
            connected = view.status.connected,
            gateway = %self.url,
            "connected to the gateway"
        );

        // Lost is reported only when the dispatcher stops the pool, so the retry budget
        // never applies; the gateway re-runs tasks whose endpoint was lost itself.
        let executor = self.executor.start_without_workers();
        let (input, inputs) = mpsc::unbounded_channel();
        let pool = GatewayPool { input };
        let events = executor
            .attach(Box::new(pool), POOL_SIZE, None)
            .await
            .map_err(RemoteError::Executor)?;
        let (feed_tx, feed) = mpsc::unbounded_channel();
        tokio::spawn(result_stream(
            http.clone(),
            feed_tx,
            self.min_backoff,
            self.max_backoff,
        ));
        let driver = Driver {
            http,
            url: self.url,
            endpoint: self.endpoint,
            events,
            inputs,
            feed,
            give_up_after: self.give_up_after,
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
            max_request_bytes: self.max_request_bytes,
            functions: HashMap::new(),
            pending: VecDeque::new(),
            in_doubt: None,
            cancelled_in_doubt: HashSet::new(),
            submissions: 0,
            gateway_of: IdMap::default(),
            local_of: HashMap::new(),
            stream_connected: false,
            fetch_due: false,
            down_since: None,
            last_failure: String::new(),
            backoff: self.min_backoff,
            retry_at: None,
            draining: false,
        };
        tokio::spawn(driver.run());
        Ok(executor)
    }
}

/// Why a [`RemoteExecutor`] could not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The gateway URL is not an `http://host:port[/prefix]` URL (or `https://`, with the
    /// `tls` feature).
    #[error("invalid gateway URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token is not a valid HTTP header value.
    #[error("the token contains characters that cannot be sent in a header")]
    InvalidToken,
    /// The gateway could not be reached.
    #[error("the gateway at {url} cannot be reached: {reason}")]
    Unreachable {
        /// The URL given.
        url: String,
        /// The connection failure.
        reason: String,
    },
    /// The TLS connection to an `https` gateway failed: its certificate is not signed by a
    /// trusted CA or not valid for its name, or the CA file could not be used.
    #[error("TLS with the gateway at {url} failed: {reason}")]
    Tls {
        /// The URL given.
        url: String,
        /// What rustls objected to, or why the CA file is unusable.
        reason: String,
    },
    /// The gateway refused: a wrong token (401), an endpoint this user may not see (404).
    #[error("the gateway refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The gateway's explanation.
        message: String,
    },
    /// The local executor would not take the gateway as its worker (it is shutting down).
    #[error("the executor refused the gateway pool: {0}")]
    Executor(TaskError),
}

// ---- the pool -----------------------------------------------------------------------------

/// What the dispatcher tells the driver.
enum Input {
    Work(ToWorker),
    Kill,
}

/// The gateway as the dispatcher sees it: a pool of workers that takes everything.
struct GatewayPool {
    input: mpsc::UnboundedSender<Input>,
}

impl Worker for GatewayPool {
    fn send(&mut self, message: ToWorker) {
        let _ = self.input.send(Input::Work(message));
    }

    fn kill(&mut self) {
        let _ = self.input.send(Input::Kill);
    }
}

/// What the result stream tells the driver.
#[derive(Debug)]
enum Feed {
    /// The stream is (re)connected: results from now on arrive as events.
    Connected,
    /// The stream dropped, or could not be opened.
    Down(String),
    /// Tasks finished: one frame of the stream.
    Results(Vec<TaskView>),
    /// The gateway dropped results for this reader (it read too slowly).
    Lagged,
}

/// A function the dispatcher defined, and its id at the gateway once registered.
struct Known {
    function: Function,
    registered: bool,
}

/// Owns the gateway side of the pool: registers, submits, maps ids, delivers results.
struct Driver {
    http: Http,
    url: String,
    endpoint: String,
    events: WorkerEvents,
    inputs: mpsc::UnboundedReceiver<Input>,
    feed: mpsc::UnboundedReceiver<Feed>,
    give_up_after: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    max_request_bytes: usize,
    functions: HashMap<FunctionKey, Known>,
    /// Tasks not yet accepted by the gateway, oldest first.
    pending: VecDeque<WorkItem>,
    /// A submission sent without an answer: it may be stored at the gateway, so it is sent
    /// again as it was, under its idempotency key, before anything else.
    in_doubt: Option<(String, Vec<WorkItem>)>,
    /// Tasks of `in_doubt` cancelled meanwhile: the dispatcher knows already; once the
    /// gateway answers, they are cancelled there too.
    cancelled_in_doubt: HashSet<TaskId>,
    /// Submissions sent, for idempotency keys when the system has no randomness.
    submissions: u64,
    /// Tasks the gateway accepted and has not finished.
    gateway_of: IdMap<TaskId, u64>,
    local_of: HashMap<u64, TaskId>,
    stream_connected: bool,
    /// Outstanding tasks must be read with the batch route (the stream reconnected).
    fetch_due: bool,
    /// Since when the gateway has failed us, if it does now.
    down_since: Option<Instant>,
    last_failure: String,
    backoff: Duration,
    /// When to try again after a failure.
    retry_at: Option<Instant>,
    draining: bool,
}

impl Driver {
    async fn run(mut self) {
        loop {
            if self.draining && self.idle() {
                let _ = self
                    .events
                    .send(WorkerEvent::Exited(funcx_core::WorkerExit::Code(0)));
                return;
            }
            let retry_at = self.retry_at;
            let retry = async move {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                input = self.inputs.recv() => {
                    let mut next = input;
                    loop {
                        match next {
                            None => {
                                // The dispatcher dropped the pool: nobody waits any more.
                                self.abandon().await;
                                return;
                            }
                            Some(Input::Kill) => {
                                self.abandon().await;
                                let _ = self.events.send(WorkerEvent::Lost(
                                    "the executor stopped its connection to the gateway".into(),
                                ));
                                return;
                            }
                            Some(Input::Work(message)) => self.on_work(message),
                        }
                        // Coalesce whatever else is already queued into one submission.
                        match self.inputs.try_recv() {
                            Ok(more) => next = Some(more),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => next = None,
                        }
                    }
                }
                Some(feed) = self.feed.recv() => {
                    let mut results = Vec::new();
                    self.on_feed(feed, &mut results);
                    while let Ok(feed) = self.feed.try_recv() {
                        self.on_feed(feed, &mut results);
                    }
                    self.report(results);
                }
                () = retry => self.retry_at = None,
            }
            if self.retry_at.is_none() {
                if self.fetch_due {
                    self.fetch_outstanding().await;
                }
                if (!self.pending.is_empty() || self.in_doubt.is_some()) && self.retry_at.is_none()
                {
                    self.flush().await;
                }
            }
            self.check_give_up();
        }
    }

    /// Nothing is waiting to be sent or for a result.
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.in_doubt.is_none() && self.gateway_of.is_empty()
    }

    /// A fresh idempotency key for one submission: 32 random hex digits.
    fn submission_key(&mut self) -> String {
        self.submissions += 1;
        crate::auth::new_id().unwrap_or_else(|_| {
            // No randomness: still unique for this process's life, and across processes by
            // the time and process id.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{}-{nanos}-{}", std::process::id(), self.submissions)
        })
    }

    fn on_work(&mut self, message: ToWorker) {
        match message {
            ToWorker::Function { key, function } => {
                self.functions.insert(
                    key,
                    Known {
                        function,
                        registered: false,
                    },
                );
            }
            ToWorker::Tasks(items) => self.pending.extend(items),
            ToWorker::Cancel(ids) => self.cancel(ids),
            // The gateway's tasks cannot be taken back; they finish where they are.
            ToWorker::Return(_) => {}
            ToWorker::Shutdown => self.draining = true,
        }
    }

    /// Cancels tasks: those not yet sent are dropped, those at the gateway are cancelled
    /// there (in the background). Either way the dispatcher learns at once; a result that
    /// arrives later is for a task nobody waits for and is ignored.
    fn cancel(&mut self, ids: Vec<TaskId>) {
        let ids: HashSet<TaskId> = ids.into_iter().collect();
        let before = self.pending.len();
        self.pending.retain(|item| !ids.contains(&item.id));
        if let Some((_, chunk)) = &self.in_doubt {
            // Kept in the submission, which must be resent unchanged under its key.
            self.cancelled_in_doubt.extend(
                chunk
                    .iter()
                    .map(|item| item.id)
                    .filter(|id| ids.contains(id)),
            );
        }
        let mut at_gateway = Vec::new();
        for id in &ids {
            if let Some(remote) = self.gateway_of.remove(id) {
                self.local_of.remove(&remote);
                at_gateway.push(remote);
            }
        }
        debug!(
            dropped = before - self.pending.len(),
            at_gateway = at_gateway.len(),
            "cancelling tasks"
        );
        self.cancel_at_gateway(at_gateway);
        let results = ids
            .into_iter()
            .map(|id| WorkResult {
                id,
                duration: Duration::ZERO,
                outcome: Err(TaskError::cancelled()),
            })
            .collect();
        self.report(results);
    }

    /// Cancels tasks at the gateway, in the background.
    fn cancel_at_gateway(&self, remote: Vec<u64>) {
        if remote.is_empty() {
            return;
        }
        let http = self.http.clone();
        tokio::spawn(async move {
            futures::stream::iter(remote)
                .for_each_concurrent(16, |remote| {
                    let http = &http;
                    async move {
                        let path = format!("/v1/tasks/{remote}/cancel");
                        if let Err(error) = http.call(Method::POST, &path, None).await {
                            debug!(task = remote, %error, "cancel at the gateway failed");
                        }
                    }
                })
                .await;
        });
    }

    fn on_feed(&mut self, feed: Feed, results: &mut Vec<WorkResult>) {
        match feed {
            Feed::Connected => {
                self.stream_connected = true;
                self.healthy();
                // Whatever finished while the stream was down is read with the batch route.
                self.fetch_due = !self.gateway_of.is_empty();
            }
            Feed::Down(reason) => {
                if self.stream_connected {
                    info!(%reason, "result stream from the gateway lost; reconnecting");
                }
                self.stream_connected = false;
                self.failed(format!("result stream: {reason}"), false);
            }
            Feed::Results(views) => {
                results.reserve(views.len());
                for view in views {
                    if let Some(result) = self.finished(view) {
                        results.push(result);
                    }
                }
            }
            Feed::Lagged => {
                debug!("the gateway skipped result events; reading outstanding tasks");
                self.fetch_due = !self.gateway_of.is_empty();
            }
        }
    }

    /// The result of a finished task of ours, which is then forgotten.
    fn finished(&mut self, view: TaskView) -> Option<WorkResult> {
        let outcome = match (view.result, view.error) {
            (Some(Blob(bytes)), _) => Ok(Payload::from_pickled(bytes)),
            (None, Some(error)) => Err(error),
            (None, None) if view.state.is_finished() => {
                Err(TaskError::protocol(view.error_message.unwrap_or_else(
                    || "the gateway reported a finished task without an outcome".into(),
                )))
            }
            (None, None) => return None,
        };
        let id = self.local_of.remove(&view.id)?;
        self.gateway_of.remove(&id);
        let duration = match (view.timeline.running, view.timeline.finished) {
            (Some(start), Some(end)) => end.duration_since(start).unwrap_or_default(),
            _ => Duration::ZERO,
        };
        Some(WorkResult {
            id,
            duration,
            outcome,
        })
    }

    fn report(&mut self, results: Vec<WorkResult>) {
        if !results.is_empty() {
            let _ = self.events.send(WorkerEvent::Results(results));
        }
    }

    /// A request or the stream failed; `retry` schedules another attempt after a pause.
    fn failed(&mut self, reason: String, retry: bool) {
        self.down_since.get_or_insert_with(Instant::now);
        self.last_failure = reason;
        if retry {
            self.retry_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(self.max_backoff);
        }
    }

    /// A request succeeded: the gateway is back, if the result stream is up too.
    fn healthy(&mut self) {
        self.backoff = self.min_backoff;
        if self.stream_connected && self.down_since.take().is_some() {
            info!(gateway = %self.url, "the gateway is reachable again");
        }
    }

    /// Fails every task not finished when the gateway has been unreachable too long.
    fn check_give_up(&mut self) {
        let Some(since) = self.down_since else {
            return;
        };
        if since.elapsed() < self.give_up_after || self.idle() {
            return;
        }
        let reason = format!(
            "the gateway at {} has been unreachable for {:.0?} (last failure: {})",
            self.url,
            since.elapsed(),
            self.last_failure
        );
        warn!(%reason, tasks = self.pending.len() + self.gateway_of.len(), "failing outstanding tasks");
        let error = TaskError::manager_lost(&reason);
        let in_doubt = self
            .in_doubt
            .take()
            .map(|(_, chunk)| chunk)
            .unwrap_or_default();
        let cancelled = std::mem::take(&mut self.cancelled_in_doubt);
        let results: Vec<WorkResult> = self
            .pending
            .drain(..)
            .chain(
                in_doubt
                    .into_iter()
                    .filter(|item| !cancelled.contains(&item.id)),
            )
            .map(|item| item.id)
            .chain(self.gateway_of.drain().map(|(id, _)| id))
            .map(|id| WorkResult {
                id,
                duration: Duration::ZERO,
                outcome: Err(error.clone()),
            })
            .collect();
        self.local_of.clear();
        self.fetch_due = false;
        self.report(results);
    }

    /// Registers the functions pending tasks need, then submits the pending tasks, as few
    /// requests as the size limit allows.
    async fn flush(&mut self) {
        let mut keys: Vec<FunctionKey> = Vec::new();
        for item in &self.pending {
            let registered = self
                .functions
                .get(&item.function)
                .map(|known| known.registered);
            if registered == Some(false) && !keys.contains(&item.function) {
                keys.push(item.function);
            }
        }
        for key in keys {
            let Some(known) = self.functions.get(&key) else {
                continue;
            };
            let body = match known.function.body() {
                FunctionBody::Source(source) => RegisterFunction {
                    name: known.function.name().to_owned(),
                    source: Some(source.clone()),
                    pickle: None,
                    public: false,
                    shared_with: Vec::new(),
                },
                FunctionBody::Pickled(bytes) => RegisterFunction {
                    name: known.function.name().to_owned(),
                    source: None,
                    pickle: Some(Blob(bytes.to_vec())),
                    public: false,
                    shared_with: Vec::new(),
                },
            };
            let expected = known.function.id().to_string();
            let name = known.function.name().to_owned();
            let answer = self
                .http
                .call(Method::POST, "/v1/functions", Some(Body::json(&body)))
                .await
                .and_then(|response| response.decode::<FunctionRegistered>());
            match answer {
                Ok(registered) => {
                    if registered.function_id != expected {
                        warn!(
                            function = %name,
                            local = %expected,
                            gateway = %registered.function_id,
                            "the gateway computed another id for a function"
                        );
                    }
                    if let Some(known) = self.functions.get_mut(&key) {
                        known.registered = true;
                    }
                    self.healthy();
                }
                Err(error) if error.is_transient() => return self.failed(error.to_string(), true),
                Err(error) => {
                    let error = TaskError::protocol(format!(
                        "the gateway refused function `{name}`: {error}"
                    ));
                    let failed = self.take_pending(|item| item.function == key);
                    self.fail(failed, &error);
                }
            }
        }
        let known: HashSet<FunctionKey> = self.functions.keys().copied().collect();
        let unknown = self.take_pending(|item| !known.contains(&item.function));
        self.fail(
            unknown,
            &TaskError::protocol("a task refers to a function the pool was never given"),
        );

        let path = format!("/v1/endpoints/{}/tasks", self.endpoint);
        loop {
            let (key, chunk) = match self.in_doubt.take() {
                Some(resend) => resend,
                None if self.pending.is_empty() => break,
                None => {
                    let mut bytes = 0;
                    let mut count = 0;
                    for item in &self.pending {
                        let size = item.args.byte_len() + 128;
                        if count > 0
                            && (bytes + size > self.max_request_bytes
                                || count >= MAX_TASKS_PER_REQUEST)
                        {
                            break;
                        }
                        bytes += size;
                        count += 1;
                    }
                    let chunk: Vec<WorkItem> = self.pending.drain(..count).collect();
                    (self.submission_key(), chunk)
                }
            };
            let bytes: usize = chunk.iter().map(|item| item.args.byte_len() + 128).sum();
            let request = SubmitRequest {
                tasks: chunk
                    .iter()
                    .map(|item| SubmitTask {
                        function_id: self
                            .functions
                            .get(&item.function)
                            .map(|known| known.function.id().to_string())
                            .unwrap_or_default(),
                        args: item
                            .args
                            .positional()
                            .iter()
                            .map(|payload| Blob(payload.as_bytes().to_vec()))
                            .collect(),
                        kwargs: item
                            .args
                            .keyword()
                            .iter()
                            .map(|(name, payload)| {
                                (name.clone(), Blob(payload.as_bytes().to_vec()))
                            })
                            .collect::<BTreeMap<_, _>>(),
                        timeout_ms: item
                            .timeout
                            .map(|timeout| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                    })
                    .collect(),
            };
            let body = match Body::postcard(&request) {
                Ok(body) => body,
                Err(error) => {
                    self.fail(chunk, &TaskError::serialize(error));
                    continue;
                }
            };
            let answer = self
                .http
                .send(Method::POST, &path, Some(body), Some(&key))
                .await
                .and_then(|response| response.decode::<SubmitResponse>());
            match answer {
                Ok(accepted) if accepted.task_ids.len() == chunk.len() => {
                    // What the gateway holds now and the caller no longer wants is cancelled
                    // there; the dispatcher was told already.
                    let cancelled = std::mem::take(&mut self.cancelled_in_doubt);
                    let mut remote_cancels = Vec::new();
                    for (item, remote) in chunk.iter().zip(accepted.task_ids) {
                        if cancelled.contains(&item.id) {
                            remote_cancels.push(remote);
                        } else {
                            self.gateway_of.insert(item.id, remote);
                            self.local_of.insert(remote, item.id);
                        }
                    }
                    self.cancel_at_gateway(remote_cancels);
                    debug!(tasks = chunk.len(), "submitted to the gateway");
                    self.healthy();
                }
                Ok(accepted) => {
                    let error = TaskError::protocol(format!(
                        "the gateway accepted {} tasks and returned {} ids",
                        chunk.len(),
                        accepted.task_ids.len()
                    ));
                    let chunk = self.still_wanted(chunk);
                    self.fail(chunk, &error);
                }
                Err(error) if error.is_transient() => {
                    // The gateway may have stored it: the same submission again, same key.
                    self.in_doubt = Some((key, chunk));
                    return self.failed(error.to_string(), true);
                }
                Err(HttpError::Refused {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    ..
                }) if chunk.len() > 1 => {
                    // Refused before it was stored: split, under new keys.
                    self.max_request_bytes = (bytes / 2).max(1);
                    debug!(
                        limit = self.max_request_bytes,
                        "submission too large; splitting"
                    );
                    for item in self.still_wanted(chunk).into_iter().rev() {
                        self.pending.push_front(item);
                    }
                }
                Err(HttpError::Refused {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message,
                    ..
                }) => {
                    // One task alone is over the gateway's body limit: it fails by itself,
                    // typed, and nothing is sent again.
                    let limit = stated_limit(&message).unwrap_or(bytes.saturating_sub(1) as u64);
                    let chunk = self.still_wanted(chunk);
                    for item in chunk {
                        let size = item.args.byte_len() as u64;
                        self.fail(vec![item], &TaskError::arguments_too_large(size, limit));
                    }
                }
                Err(error) => {
                    let error =
                        TaskError::protocol(format!("the gateway refused the task: {error}"));
                    let chunk = self.still_wanted(chunk);
                    self.fail(chunk, &error);
                }
            }
        }
    }

    /// The tasks of a submission the gateway did not take that were not cancelled meanwhile.
    fn still_wanted(&mut self, chunk: Vec<WorkItem>) -> Vec<WorkItem> {
        let cancelled = std::mem::take(&mut self.cancelled_in_doubt);
        chunk
            .into_iter()
            .filter(|item| !cancelled.contains(&item.id))
            .collect()
    }

    fn take_pending(&mut self, mut take: impl FnMut(&WorkItem) -> bool) -> Vec<WorkItem> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for item in self.pending.drain(..) {
            if take(&item) {
                taken.push(item);
            } else {
                kept.push_back(item);
            }
        }
        self.pending = kept;
        taken
    }

    fn fail(&mut self, items: Vec<WorkItem>, error: &TaskError) {
        let results = items
            .into_iter()
            .map(|item| WorkResult {
                id: item.id,
                duration: Duration::ZERO,
                outcome: Err(error.clone()),
            })
            .collect();
        self.report(results);
    }

    /// Reads every outstanding task with the batch route and delivers those that finished.
    async fn fetch_outstanding(&mut self) {
        let ids: Vec<u64> = self.local_of.keys().copied().collect();
        for chunk in ids.chunks(BATCH_READ) {
            let request = BatchRequest {
                ids: chunk.to_vec(),
            };
            let body = match Body::postcard(&request) {
                Ok(body) => body,
                Err(_) => Body::json(&request),
            };
            let answer = self
                .http
                .call(Method::POST, "/v1/tasks/batch", Some(body))
                .await
                .and_then(|response| response.decode::<BatchResponse>());
            match answer {
                Ok(batch) => {
                    let mut results: Vec<WorkResult> = batch
                        .tasks
                        .into_iter()
                        .filter_map(|view| self.finished(view))
                        .collect();
                    for remote in batch.not_found {
                        if let Some(id) = self.local_of.remove(&remote) {
                            self.gateway_of.remove(&id);
                            results.push(WorkResult {
                                id,
                                duration: Duration::ZERO,
                                outcome: Err(TaskError::manager_lost(format!(
                                    "the gateway at {} no longer knows task {remote} (it restarted without a durable store, or the task was deleted or expired)",
                                    self.url
                                ))),
                            });
                        }
                    }
                    self.report(results);
                    self.healthy();
                }
                Err(error) if error.is_transient() => return self.failed(error.to_string(), true),
                Err(error) => {
                    // Not worth retrying; the stream still delivers what finishes from now on.
                    warn!(%error, "the gateway refused to read outstanding tasks");
                }
            }
        }
        self.fetch_due = false;
    }

    /// The dispatcher is done with the pool: cancel what is left at the gateway (briefly,
    /// best effort), and stop.
    async fn abandon(&mut self) {
        let remote: Vec<u64> = self.local_of.drain().map(|(remote, _)| remote).collect();
        self.gateway_of.clear();
        self.pending.clear();
        // A submission in doubt may be stored; its tasks are not known by id, so they run
        // (nobody reads their results). Unavoidable: the gateway never answered.
        self.in_doubt = None;
        if remote.is_empty() {
            return;
        }
        debug!(
            tasks = remote.len(),
            "cancelling abandoned tasks at the gateway"
        );
        let http = &self.http;
        let cancels = futures::stream::iter(remote).for_each_concurrent(16, |remote| async move {
            let path = format!("/v1/tasks/{remote}/cancel");
            let _ = http.call(Method::POST, &path, None).await;
        });
        let _ = tokio::time::timeout(Duration::from_secs(2), cancels).await;
    }
}

// ---- the result stream ----------------------------------------------------------------------

/// Keeps `GET /v1/results` open, reconnecting with back-off, and feeds its events to the
/// driver until the driver is gone.
async fn result_stream(
    http: Http,
    feed: mpsc::UnboundedSender<Feed>,
    min_backoff: Duration,
    max_backoff: Duration,
) {
    let mut backoff = min_backoff;
    loop {
        let reason = tokio::select! {
            () = feed.closed() => return,
            opened = http.open_result_stream() => match opened {
                Ok(response) => {
                    backoff = min_backoff;
                    if feed.send(Feed::Connected).is_err() {
                        return;
                    }
                    tokio::select! {
                        () = feed.closed() => return,
                        reason = read_frames(response.into_body(), &feed) => reason,
                    }
                }
                Err(error) => error.to_string(),
            }
        };
        if feed.send(Feed::Down(reason)).is_err() {
            return;
        }
        tokio::select! {
            () = feed.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// How long the result stream may stay silent before it counts as dead: the gateway sends an
/// empty frame every 15 s, so this only fires on a connection that vanished without a reset
/// (a machine or a network gone).
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// The largest room reserved ahead for one frame on the word of its length prefix; a larger
/// frame still arrives, the buffer just grows as its bytes do.
const FRAME_RESERVE: usize = 64 << 20;

/// Reads result frames (`u32` big-endian length, postcard [`ResultFrame`]) until the stream
/// ends; each frame goes to the driver whole. Returns why the stream ended.
async fn read_frames(mut body: Incoming, feed: &mpsc::UnboundedSender<Feed>) -> String {
    let mut buffer = BytesMut::new();
    loop {
        let Ok(frame) = tokio::time::timeout(STREAM_SILENCE, body.frame()).await else {
            return format!("nothing from the gateway for {STREAM_SILENCE:?}");
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(error)) => return format!("the stream failed: {error}"),
            None => return "the gateway closed the stream".into(),
        };
        buffer.extend_from_slice(&data);
        while let Some(length) = frame_length(&buffer) {
            let Some(total) = length.checked_add(4) else {
                return "a result frame of impossible length".into();
            };
            if buffer.len() < total {
                buffer.reserve((total - buffer.len()).min(FRAME_RESERVE));
                break;
            }
            let frame = buffer.split_to(total);
            match postcard::from_bytes::<ResultFrame>(&frame[4..]) {
                Ok(frame) => {
                    if frame.lagged > 0 && feed.send(Feed::Lagged).is_err() {
                        return "the driver stopped".into();
                    }
                    if !frame.results.is_empty() && feed.send(Feed::Results(frame.results)).is_err()
                    {
                        return "the driver stopped".into();
                    }
                }
                // The frame boundaries still hold; the tasks it held are read by id.
                Err(error) => {
                    warn!(%error, "unreadable result frame from the gateway; reading outstanding tasks");
                    if feed.send(Feed::Lagged).is_err() {
                        return "the driver stopped".into();
                    }
                }
            }
        }
    }
}

/// The length a frame's prefix announces, once the prefix is in.
fn frame_length(buffer: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = buffer.get(..4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(prefix)).ok()
}

// ---- HTTP -----------------------------------------------------------------------------------

/// A small HTTP/1.1 client for the gateway's API.
///
/// It is hyper's own client (`hyper-util`'s pooled one): the gateway already serves with
/// hyper through axum and dials its endpoint connections with hyper, so the client adds no
/// second HTTP stack, and a keep-alive pool keeps one submission from paying a TCP
/// handshake.
#[derive(Clone)]
struct Http {
    client: Client<Connector, Full<Bytes>>,
    base: String,
    authorization: HeaderValue,
    timeout: Duration,
}

/// A request body.
struct Body {
    content_type: &'static str,
    bytes: Bytes,
}

impl Body {
    fn json(value: &impl Serialize) -> Body {
        Body {
            content_type: "application/json",
            // Serializing our own request types to JSON cannot fail.
            bytes: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    fn postcard(value: &impl Serialize) -> Result<Body, postcard::Error> {
        Ok(Body {
            content_type: POSTCARD,
            bytes: Bytes::from(postcard::to_stdvec(value)?),
        })
    }
}

/// A successful response, read whole.
struct Answer {
    postcard: bool,
    bytes: Bytes,
}

impl Answer {
    fn decode<T: DeserializeOwned>(self) -> Result<T, HttpError> {
        let decoded = if self.postcard {
            postcard::from_bytes(&self.bytes).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(&self.bytes).map_err(|e| e.to_string())
        };
        decoded.map_err(|reason| HttpError::Refused {
            status: StatusCode::OK,
            message: format!("unreadable answer from the gateway: {reason}"),
            transient: false,
        })
    }
}

/// Why a request failed.
#[derive(Debug)]
enum HttpError {
    /// The gateway could not be reached, or the connection failed: try again later.
    Unreachable(String),
    /// The TLS handshake failed. Tried again like `Unreachable` once running (the gateway
    /// may be rotating its certificate), but reported as such at start.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Tls(String),
    /// The gateway answered with an error status.
    Refused {
        status: StatusCode,
        message: String,
        /// A status worth trying again (5xx, 429, 408).
        transient: bool,
    },
}

impl HttpError {
    fn is_transient(&self) -> bool {
        match self {
            HttpError::Unreachable(_) | HttpError::Tls(_) => true,
            HttpError::Refused { transient, .. } => *transient,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Unreachable(reason) | HttpError::Tls(reason) => f.write_str(reason),
            HttpError::Refused {
                status, message, ..
            } => write!(f, "{} {}", status.as_u16(), message),
        }
    }
}

/// hyper-rustls rather than tokio-rustls by hand: it is a connector for the pooled client
/// already in use, so HTTPS connections are kept alive and reused like plain ones.
#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// Whom an `https` gateway must be certified by (`None`: the Mozilla roots).
#[cfg(feature = "tls")]
type ClientTls = Option<Arc<rustls::ClientConfig>>;
/// Nothing to configure without the `tls` feature.
#[cfg(not(feature = "tls"))]
type ClientTls = ();

impl Http {
    fn new(url: &str, token: &str, timeout: Duration, tls: ClientTls) -> Result<Http, RemoteError> {
        let invalid = |reason: &str| RemoteError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            #[cfg(feature = "tls")]
            Some("https") => {}
            #[cfg(not(feature = "tls"))]
            Some("https") => {
                return Err(invalid(
                    "this client was built without TLS support; rebuild with the `tls` feature",
                ))
            }
            _ => return Err(invalid("it must start with http:// or https://")),
        }
        if uri.host().is_none() {
            return Err(invalid("it has no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("it must not have a query"));
        }
        let base = url.trim_end_matches('/').to_owned();
        let authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| RemoteError::InvalidToken)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        #[cfg(feature = "tls")]
        let connector = {
            // The HTTP connector must let `https` URIs through to the TLS layer.
            connector.enforce_http(false);
            let config = match tls {
                Some(config) => config,
                None => crate::tls::client_config_with_public_roots().map_err(|error| {
                    RemoteError::Tls {
                        url: url.to_owned(),
                        reason: error.to_string(),
                    }
                })?,
            };
            // `https_or_http`: the same client serves `http://` gateways unchanged.
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*config).clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector)
        };
        #[cfg(not(feature = "tls"))]
        let () = tls;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Http {
            client,
            base,
            authorization,
            timeout,
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        accept: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::ACCEPT, accept);
        if let Some(key) = idempotency_key {
            builder = builder.header(crate::api::IDEMPOTENCY_KEY, key);
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, body.content_type);
                Full::new(body.bytes)
            }
            None => Full::new(Bytes::new()),
        };
        builder
            .body(body)
            .map_err(|e| HttpError::Unreachable(format!("cannot build the request: {e}")))
    }

    /// Sends a request and reads the whole answer, within the request timeout.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Answer, HttpError> {
        self.send(method, path, body, None).await
    }

    /// [`Http::call`] with an `Idempotency-Key` header when `idempotency_key` is given.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, HttpError> {
        let request = self.request(
            method,
            path,
            body,
            &format!("{POSTCARD}, application/json;q=0.5"),
            idempotency_key,
        )?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| client_error(&e))?;
            let status = response.status();
            let postcard = is_postcard(&response);
            let retry_after = response.headers().contains_key(header::RETRY_AFTER);
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            if status.is_success() {
                return Ok(Answer { postcard, bytes });
            }
            let message = error_message(&bytes);
            Err(HttpError::Refused {
                status,
                message,
                transient: status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT
                    || retry_after,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Unreachable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Opens the binary result stream (the connect and the headers within the timeout).
    async fn open_result_stream(&self) -> Result<Response<Incoming>, HttpError> {
        let request = self.request(Method::GET, "/v1/results", None, POSTCARD, None)?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| HttpError::Unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| client_error(&e))?;
        let status = response.status();
        if status.is_success() {
            if is_postcard(&response) {
                return Ok(response);
            }
            return Err(HttpError::Refused {
                status,
                message: "the gateway does not serve the binary result stream (upgrade it)".into(),
                transient: true,
            });
        }
        let bytes = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|body| body.to_bytes())
            .unwrap_or_default();
        Err(HttpError::Refused {
            status,
            message: error_message(&bytes),
            transient: true,
        })
    }
}

fn is_postcard<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(POSTCARD))
}

/// The gateway's `{"error": {"code", "message"}}`, or the body as text.
fn error_message(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Envelope>(bytes) {
        Ok(envelope) => format!("{}: {}", envelope.error.code, envelope.error.message),
        Err(_) => String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
    }
}

/// A failed request, as a TLS failure when it is one.
fn client_error(error: &(dyn std::error::Error + 'static)) -> HttpError {
    #[cfg(feature = "tls")]
    if crate::tls::is_tls_failure(error) {
        return HttpError::Tls(describe(error));
    }
    HttpError::Unreachable(describe(error))
}

/// A client error with its causes (hyper's own text is just "client error (Connect)").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The byte limit a gateway states in its 413 answer ("... the limit of N bytes").
fn stated_limit(message: &str) -> Option<u64> {
    let (_, after) = message.rsplit_once("limit of ")?;
    after.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_are_read_once_the_prefix_is_in() {
        assert_eq!(frame_length(&[0, 0, 1]), None);
        assert_eq!(frame_length(&[0, 0, 1, 2, 9]), Some(258));
    }

    #[test]
    fn urls_are_checked() {
        let timeout = Duration::from_secs(1);
        let new = |url: &str, token: &str| {
            #[cfg(feature = "tls")]
            let tls = None;
            #[cfg(not(feature = "tls"))]
            let tls = ();
            Http::new(url, token, timeout, tls)
        };
        assert!(new("ftp://x", "t").is_err());
        // https needs the feature, and says so without it.
        let https = new("https://x", "t");
        #[cfg(feature = "tls")]
        assert!(https.is_ok());
        #[cfg(not(feature = "tls"))]
        match https {
            Ok(_) => panic!("https accepted without the tls feature"),
            Err(error) => assert!(error.to_string().contains("`tls` feature"), "{error}"),
        }
        assert!(new("127.0.0.1:80", "t").is_err());
        assert!(new("http://127.0.0.1:80", "bad\ntoken").is_err());
        let http = new("http://127.0.0.1:80/", "t").unwrap();
        assert_eq!(http.base, "http://127.0.0.1:80");
    }

    #[test]
    fn error_bodies_are_read() {
        let body = br#"{"error":{"code":"forbidden","message":"not yours"}}"#;
        assert_eq!(error_message(body), "forbidden: not yours");
        assert_eq!(error_message(b"plain"), "plain");
    }
}
