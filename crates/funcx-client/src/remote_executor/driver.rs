//! The driver: the one task that owns the gateway side of a remote executor's pool. It
//! registers functions, submits tasks, maps the gateway's task ids back to the dispatcher's,
//! delivers results, and decides when a gateway has been gone too long.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use funcx_core::ids::IdMap;
use funcx_core::worker::{
    FunctionKey, ToWorker, WorkItem, WorkResult, Worker, WorkerEvent, WorkerEvents,
};
use funcx_core::{Executor, Format, Function, FunctionBody, Payload, TaskError, TaskId};
use futures::StreamExt;
use hyper::{Method, StatusCode};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::http::{Body, Http, HttpError};
use super::stream::{result_stream, Feed};
use crate::model::{
    BatchRequest, BatchResponse, Blob, FunctionRegistered, RegisterFunction, SubmitRequest,
    SubmitResponse, SubmitTask, TaskView,
};

/// The size of the pool that stands for the gateway: larger than any number of tasks a
/// program keeps in flight, so the dispatcher never holds tasks back from the gateway (whose
/// endpoint has its own queue and knows its own capacity).
const POOL_SIZE: usize = 1_000_000;

/// How many outstanding tasks one `POST /v1/tasks/batch` asks about.
const BATCH_READ: usize = 4096;

/// How many tasks one submission holds at most.
const MAX_TASKS_PER_REQUEST: usize = 50_000;

/// How patient the driver is with the gateway, from [`RemoteExecutorBuilder`](super::RemoteExecutorBuilder).
pub(super) struct Patience {
    pub(super) give_up_after: Duration,
    pub(super) min_backoff: Duration,
    pub(super) max_backoff: Duration,
    pub(super) max_request_bytes: usize,
}

/// Attaches the gateway to `executor` as its pool, and spawns the driver and the result
/// stream that serve it.
pub(super) async fn attach(
    executor: &Executor,
    http: Http,
    url: String,
    endpoint: String,
    patience: Patience,
) -> Result<(), TaskError> {
    let (input, inputs) = mpsc::unbounded_channel();
    let pool = GatewayPool { input };
    let events = executor.attach(Box::new(pool), POOL_SIZE, None).await?;
    let (feed_tx, feed) = mpsc::unbounded_channel();
    tokio::spawn(result_stream(
        http.clone(),
        feed_tx,
        patience.min_backoff,
        patience.max_backoff,
    ));
    let driver = Driver {
        http,
        url,
        endpoint,
        events,
        inputs,
        feed,
        give_up_after: patience.give_up_after,
        min_backoff: patience.min_backoff,
        max_backoff: patience.max_backoff,
        max_request_bytes: patience.max_request_bytes,
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
        backoff: patience.min_backoff,
        retry_at: None,
        draining: false,
    };
    tokio::spawn(driver.run());
    Ok(())
}

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
                // A resend answered in this flush asks for a read now: nothing else may
                // ever wake the loop for its tasks.
                if self.fetch_due && self.retry_at.is_none() {
                    self.fetch_outstanding().await;
                }
            }
            self.check_give_up();
        }
    }

    /// Nothing is waiting to be sent or for a result.
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.in_doubt.is_none() && self.gateway_of.is_empty()
    }

    /// A fresh idempotency key for one submission: 64 random hex digits from the operating
    /// system's CSPRNG (the generator of connection tokens; a key need not be secret, only
    /// never reused).
    fn submission_key(&mut self) -> String {
        self.submissions += 1;
        funcx_transport::new_token().unwrap_or_else(|_| {
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
            (Some(Blob(bytes)), _) => Ok(match view.result_format {
                Some(Format::Json) => Payload::from_json(bytes),
                _ => Payload::from_pickled(bytes),
            }),
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
            let resent = self.in_doubt.is_some();
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
                        // Mixed formats never get here: the dispatcher refuses them.
                        format: item.args.format().unwrap_or(Format::Pickle),
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
                    debug!(tasks = chunk.len(), resent, "submitted to the gateway");
                    if resent {
                        // The first send may have been stored and its tasks run: results the
                        // stream delivered before their ids were known here were dropped, and
                        // the stream sends no result twice. They are read by id instead.
                        self.fetch_due = true;
                    }
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

/// The byte limit a gateway states in its 413 answer ("... the limit of N bytes").
fn stated_limit(message: &str) -> Option<u64> {
    let (_, after) = message.rsplit_once("limit of ")?;
    after.split_whitespace().next()?.parse().ok()
}
