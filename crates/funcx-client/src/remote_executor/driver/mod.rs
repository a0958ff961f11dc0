//! The driver: the one task that owns the gateway side of a remote executor's pool. It
//! registers functions, submits tasks, maps the gateway's task ids back to the dispatcher's,
//! delivers results, and decides when a gateway has been gone too long.
//!
//! Here: the driver's state, its loop and its health; `submit` sends to the gateway,
//! `results` receives from it, `cancel` takes tasks back.

mod cancel;
mod results;
mod submit;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use funcx_core::ids::IdMap;
use funcx_core::worker::{
    FunctionKey, ToWorker, WorkItem, WorkResult, Worker, WorkerEvent, WorkerEvents,
};
use funcx_core::{Executor, Function, TaskError, TaskId};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::http::Http;
use super::stream::{result_stream, Feed};

/// The size of the pool that stands for the gateway: larger than any number of tasks a
/// program keeps in flight, so the dispatcher never holds tasks back from the gateway (whose
/// endpoint has its own queue and knows its own capacity).
const POOL_SIZE: usize = 1_000_000;

/// How patient the driver is with the gateway, from [`RemoteConfig`](super::RemoteConfig).
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
    // A relay: the gateway's endpoint places tasks that ask for resources, and fails
    // there those that can never fit.
    let events = executor.attach_relay(Box::new(pool), POOL_SIZE).await?;
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
}
