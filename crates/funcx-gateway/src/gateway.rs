//! [`Gateway`]: the state behind the HTTP API, the endpoints' executors, and the flow of
//! tasks and results between them and the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use funcx_core::worker::WorkResult;
use funcx_core::{
    report_stream, Executor, Function, FunctionId, ReportSink, ReportStream, Task, TaskId,
    TaskReport,
};
use funcx_transport::remote::{AgentConfig, EndpointAgent, ResultKeeper};
use funcx_transport::TcpTransport;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::api::model::EndpointStatusView;
use crate::auth::{Authenticator, RateLimiter, TokenAuthenticator};
use crate::config::{GatewayConfig, PostgresConfig, StoreConfig};
use crate::error::GatewayError;
use crate::metrics::{EndpointGauges, Metrics};
use crate::result_writes::{KeeperShare, ResultWrites};
use crate::store::{
    hash_token, Finished, IdempotencyKey, Insertion, MemoryStore, NewTask, RedbStore, StoreError,
    TaskRecord, TaskStore, UserRecord,
};

/// What a gateway tells its result streams (and its Globus Compute outbox).
#[derive(Clone, Debug)]
pub(crate) enum Published {
    /// A task finished: its record as stored.
    Finished(Arc<TaskRecord>),
    /// Results may have been stored that this gateway never heard of: its fleet listener
    /// lost notifications (the database restarted, or it fell behind). Whoever waits for
    /// results reads them from the store by id, as after a lag.
    Missed,
}

/// How many finished tasks may wait for a slow result-stream subscriber before it misses
/// some (it is told, and can read them with `GET /v1/tasks/{id}`).
const EVENT_BUFFER: usize = 4096;
/// How many outcomes are stored in one transaction at most.
const RESULT_BATCH: usize = 1024;
/// How long a claim on a task lasts unrenewed, for a shared store given to the builder.
const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// A running gateway: its store, its users, one executor per endpoint that endpoints'
/// managers attach to, and the task that stores results as they arrive.
///
/// Cheap to clone. Serve its API with [`Gateway::serve`], or mount [`Gateway::router`] in an
/// axum application of your own.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn TaskStore>,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) limiter: RateLimiter,
    pub(crate) config: GatewayConfig,
    pub(crate) metrics: Metrics,
    /// Handshake and frame limits for upgraded endpoint connections. Its token is empty:
    /// the endpoint token was checked by the HTTP route.
    pub(crate) transport: TcpTransport,
    agent: AgentConfig,
    /// The TLS configuration from `[tls]`, loaded at start so that a bad certificate or key
    /// stops the gateway there rather than at its first connection.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    endpoints: Mutex<HashMap<String, Arc<EndpointRuntime>>>,
    /// Gateway task id → the endpoint and the executor-side id of its current run.
    running: Mutex<HashMap<u64, (String, TaskId)>>,
    functions: Mutex<HashMap<FunctionId, Function>>,
    sink: ReportSink,
    pub(crate) events: broadcast::Sender<Published>,
    /// Which results are being written, by an endpoint's keeper or by `store_results`, so
    /// that each is written once. Locked after `running` when both are.
    writes: ResultWrites,
    /// Set when the gateway stops: long-lived streams end, so a graceful stop is not held
    /// up by them.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    store_repaired: bool,
    /// Set when the store is shared with other gateways: tasks are claimed, not handed out
    /// as they are stored ([`crate::fleet`]).
    pub(crate) fleet: Option<crate::fleet::FleetState>,
    /// The Globus Compute routes' state, when `[globus_compute]` is configured.
    #[cfg(feature = "globus-compute")]
    pub(crate) globus: Option<Arc<crate::globus::GlobusCompute>>,
}

/// The gateway side of one endpoint: an executor with no workers of its own, whose pools
/// are the endpoint's connections.
pub(crate) struct EndpointRuntime {
    pub(crate) executor: Executor,
    pub(crate) agent: EndpointAgent,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.inner.config.listen)
            .finish_non_exhaustive()
    }
}

/// Configures and starts a [`Gateway`].
pub struct GatewayBuilder {
    config: GatewayConfig,
    store: Option<Arc<dyn TaskStore>>,
    authenticator: Option<Arc<dyn Authenticator>>,
    agent: AgentConfig,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// Uses `store` instead of the one the configuration names.
    pub fn store(mut self, store: Arc<dyn TaskStore>) -> GatewayBuilder {
        self.store = Some(store);
        self
    }

    /// Authenticates users with `authenticator` instead of the store's tokens.
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> GatewayBuilder {
        self.authenticator = Some(authenticator);
        self
    }

    /// How endpoints' connections are watched (heartbeats; how long a dropped endpoint may
    /// take to come back before its tasks are re-queued).
    pub fn agent_config(mut self, agent: AgentConfig) -> GatewayBuilder {
        self.agent = agent;
        self
    }

    /// Opens the store, seeds the configured users, re-submits every unfinished task, and
    /// starts storing results. Must be called within a Tokio runtime.
    pub async fn start(self) -> Result<Gateway, GatewayError> {
        self.config.validate()?;
        #[cfg(feature = "tls")]
        let tls = match &self.config.tls {
            Some(tls) => Some(crate::tls::server_config(&tls.cert, &tls.key)?),
            None => None,
        };
        let mut store_repaired = false;
        let store: Arc<dyn TaskStore> = match (self.store, &self.config.store) {
            (Some(store), _) => store,
            (None, Some(StoreConfig::Postgres(config))) => open_postgres(config).await?,
            (None, Some(StoreConfig::Redb(path))) => {
                let store =
                    RedbStore::open_with_cache(path, self.config.store_cache_mib.max(1) << 20)?;
                store_repaired = store.was_repaired();
                if store_repaired {
                    warn!(store = %path.display(), "the store was not closed cleanly (the gateway was killed); redb repaired it");
                } else {
                    info!(store = %path.display(), "the store opened cleanly");
                }
                Arc::new(store)
            }
            (None, None) => Arc::new(MemoryStore::new()),
        };
        for user in &self.config.users {
            store
                .put_user(UserRecord {
                    name: user.name.clone(),
                    token_hash: hash_token(&user.token),
                })
                .await?;
        }
        let authenticator = self
            .authenticator
            .unwrap_or_else(|| Arc::new(TokenAuthenticator::new(store.clone())));
        let (sink, reports) = report_stream();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let transport = TcpTransport::builder()
            .max_frame_size(self.config.max_body_bytes.max(64 * 1024 * 1024))
            .build();
        let fleet = store.fleet().map(|_| {
            let lease = match &self.config.store {
                Some(StoreConfig::Postgres(config)) => Duration::from_secs(config.lease_secs),
                _ => DEFAULT_LEASE,
            };
            crate::fleet::FleetState::new(lease)
        });
        #[cfg(feature = "globus-compute")]
        let globus = self
            .config
            .globus_compute
            .clone()
            .map(|config| Arc::new(crate::globus::GlobusCompute::new(config)));
        let gateway = Gateway {
            inner: Arc::new(Shared {
                store,
                authenticator,
                limiter: RateLimiter::new(self.config.rate_limit),
                config: self.config,
                metrics: Metrics::default(),
                transport,
                agent: self.agent,
                #[cfg(feature = "tls")]
                tls,
                endpoints: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
                sink,
                events,
                writes: ResultWrites::default(),
                closing: tokio::sync::watch::Sender::new(false),
                store_repaired,
                fleet,
                #[cfg(feature = "globus-compute")]
                globus,
            }),
        };
        #[cfg(feature = "globus-compute")]
        if gateway.inner.globus.is_some() {
            tokio::spawn(crate::globus::run_outbox(Arc::downgrade(&gateway.inner)));
        }
        tokio::spawn(store_results(Arc::downgrade(&gateway.inner), reports));
        tokio::spawn(expire_results(Arc::downgrade(&gateway.inner)));
        if gateway.inner.fleet.is_some() {
            // Nothing to re-submit: unfinished tasks are claimed as their endpoints connect.
            crate::fleet::start(&gateway).await;
        } else {
            gateway.recover().await?;
        }
        Ok(gateway)
    }
}

/// The shared store `[store] postgres` names, its schema migrated.
#[cfg(feature = "postgres")]
async fn open_postgres(config: &PostgresConfig) -> Result<Arc<dyn TaskStore>, GatewayError> {
    let options = crate::store::PgOptions {
        url: config.url.clone(),
        schema: config.schema.clone(),
        pool_size: config.pool_size,
    };
    let store = crate::store::PgStore::connect_with(options).await?;
    info!(schema = ?config.schema, "the PostgreSQL store is open and migrated");
    Ok(Arc::new(store))
}

/// Refused by [`GatewayConfig::validate`] before this is reached; kept for the types.
#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &PostgresConfig) -> Result<Arc<dyn TaskStore>, GatewayError> {
    Err(GatewayError::Config(
        "[store] postgres needs a gateway built with the `postgres` feature".into(),
    ))
}

impl Gateway {
    /// A builder for a gateway configured by `config`.
    pub fn builder(config: GatewayConfig) -> GatewayBuilder {
        GatewayBuilder {
            config,
            store: None,
            authenticator: None,
            agent: AgentConfig::default(),
        }
    }

    /// Starts a gateway configured by `config` with its defaults.
    pub async fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        Gateway::builder(config).start().await
    }

    /// The store the gateway keeps its state in.
    pub fn store(&self) -> &Arc<dyn TaskStore> {
        &self.inner.store
    }

    /// Whether the store file had to be repaired when the gateway opened it: the process
    /// before did not stop cleanly. `false` for a store in memory or given by the caller.
    pub fn store_was_repaired(&self) -> bool {
        self.inner.store_repaired
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The HTTP API, to serve or to nest in a larger application. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so that endpoint connections
    /// are logged with their address.
    pub fn router(&self) -> axum::Router {
        let router = crate::api::router(self.clone());
        #[cfg(feature = "globus-compute")]
        let router = match crate::globus::router(self) {
            Some(globus_compute) => router.merge(globus_compute),
            None => router,
        };
        router
    }

    /// The gateway side of endpoint `id`, created on first use.
    pub(crate) fn runtime(&self, id: &str) -> Arc<EndpointRuntime> {
        if let Some(fleet) = &self.inner.fleet {
            crate::fleet::start_claimer(self, fleet, id);
        }
        let mut endpoints = match self.inner.endpoints.lock() {
            Ok(endpoints) => endpoints,
            Err(poisoned) => poisoned.into_inner(),
        };
        endpoints
            .entry(id.to_string())
            .or_insert_with(|| {
                let executor = Executor::builder()
                    .retries_on_worker_death(self.inner.config.endpoint_retries)
                    .start_without_workers();
                // Durable: the endpoint sees tasks under their gateway ids and resumes its
                // session with the next run of the gateway, so a restart re-sends only what
                // it does not hold; and a result is acknowledged once it is in the store.
                let keeper = Arc::new(Keeper {
                    gateway: Arc::downgrade(&self.inner),
                    endpoint: id.to_string(),
                });
                let agent = EndpointAgent::durable(
                    executor.clone(),
                    self.inner.agent,
                    endpoint_session(id),
                    keeper,
                );
                Arc::new(EndpointRuntime { executor, agent })
            })
            .clone()
    }

    /// The gateway side of endpoint `id`, if it was created.
    pub(crate) fn existing_runtime(&self, id: &str) -> Option<Arc<EndpointRuntime>> {
        self.inner
            .endpoints
            .lock()
            .ok()
            .and_then(|endpoints| endpoints.get(id).cloned())
    }

    /// The function object for `record`, compiled (hashed) once per process.
    pub(crate) fn function(&self, record: &crate::store::FunctionRecord) -> Function {
        match self.inner.functions.lock() {
            Ok(mut cache) => cache
                .entry(record.id)
                .or_insert_with(|| record.function())
                .clone(),
            Err(_) => record.function(),
        }
    }

    /// Stores a submission of tasks for `endpoint`, under the client's idempotency `key` if
    /// it sent one. In a fleet, when the endpoint is connected here, the store claims the
    /// tasks for this gateway as it stores them (if this gateway's lease on the endpoint is
    /// sound), so that [`Gateway::dispatch`] hands them out at once.
    pub(crate) async fn store_submission(
        &self,
        endpoint: &str,
        key: Option<IdempotencyKey>,
        tasks: Vec<NewTask>,
        now: SystemTime,
    ) -> Result<Stored, StoreError> {
        if let (Some(state), Some(fleet)) = (&self.inner.fleet, self.inner.store.fleet()) {
            if crate::fleet::connected(self, endpoint).await {
                let (insertion, claimed) = fleet
                    .insert_claimed(key, tasks, now, state.claim_at_insert_margin())
                    .await?;
                return Ok(Stored { insertion, claimed });
            }
        }
        let insertion = match key {
            None => Insertion::Created(self.inner.store.insert_tasks(tasks, now).await?),
            Some(key) => self.inner.store.insert_tasks_once(key, tasks, now).await?,
        };
        Ok(Stored {
            insertion,
            claimed: false,
        })
    }

    /// Hands tasks just stored to their endpoint: to its executor here, or in a fleet to
    /// whichever gateway claims them (this one's claimer first, if the endpoint is here),
    /// unless this gateway `claimed` them as they were stored.
    pub(crate) fn dispatch(&self, endpoint: &str, tasks: Vec<(u64, Task)>, claimed: bool) {
        // In a fleet the claimer hands them out: its wakes coalesce, so that a burst of
        // submissions is claimed in a few large batches (claiming each submission's tasks
        // by id as it came cut W1-gw on PostgreSQL from 20,000 to 5,000 tasks/s).
        match &self.inner.fleet {
            Some(fleet) if !claimed => fleet.wake(endpoint),
            _ => self.dispatch_local(endpoint, tasks),
        }
    }

    /// An endpoint connection was admitted: in a fleet, its tasks can be claimed now.
    pub(crate) fn endpoint_connected(&self, endpoint: &str) {
        if let Some(fleet) = &self.inner.fleet {
            fleet.wake(endpoint);
        }
    }

    /// Hands stored tasks to their endpoint's executor here.
    fn dispatch_local(&self, endpoint: &str, tasks: Vec<(u64, Task)>) {
        if tasks.is_empty() {
            return;
        }
        let runtime = self.runtime(endpoint);
        let gateway_ids: Vec<u64> = tasks.iter().map(|(id, _)| *id).collect();
        // Held across the submission so the result task cannot look a task up before it
        // is recorded here.
        let mut running = self.inner.running();
        // The gateway's task id is the trace that the endpoint's and its managers' logs name
        // the task by (each hop's span carries it; see `TaskOptions::trace`).
        let tasks = tasks.into_iter().map(|(id, mut task)| {
            task.options = task.options.trace(id);
            (id, task)
        });
        let local = runtime.executor.submit_streamed(tasks, &self.inner.sink);
        for (id, local) in gateway_ids.into_iter().zip(local) {
            running.insert(id, (endpoint.to_string(), local));
        }
    }

    /// Where task `id` runs now: its endpoint's executor and its id there.
    pub(crate) fn running(&self, id: u64) -> Option<(Arc<EndpointRuntime>, TaskId)> {
        let (endpoint, local) = self.inner.running.lock().ok()?.get(&id).cloned()?;
        Some((self.existing_runtime(&endpoint)?, local))
    }

    /// Cancels, where they run through this gateway, those of `ids` that do: one look at
    /// the running table for the whole batch, since most ids of a batch are not there.
    pub(crate) fn cancel_running(&self, ids: &[u64]) {
        let found: Vec<(u64, String, TaskId)> = match self.inner.running.lock() {
            Ok(running) => ids
                .iter()
                .filter_map(|id| running.get(id).map(|(e, local)| (*id, e.clone(), *local)))
                .collect(),
            Err(_) => return,
        };
        for (id, endpoint, local) in found {
            if let Some(runtime) = self.existing_runtime(&endpoint) {
                debug!(task = id, "cancelled where it runs");
                runtime.executor.cancel(local);
            }
        }
    }

    pub(crate) fn forget(&self, id: u64) {
        if let Ok(mut running) = self.inner.running.lock() {
            running.remove(&id);
        }
    }

    /// Submits every unfinished task of the store again (after a restart).
    async fn recover(&self) -> Result<(), GatewayError> {
        let unfinished = self.inner.store.unfinished_tasks().await?;
        if unfinished.is_empty() {
            return Ok(());
        }
        let count = unfinished.len();
        self.dispatch_records(unfinished).await;
        self.inner.metrics.recovered(count);
        info!(
            tasks = count,
            "re-submitted the unfinished tasks of the store"
        );
        Ok(())
    }

    /// Hands stored tasks (recovered, or claimed in a fleet) to their endpoints' executors
    /// here; a task that cannot be rebuilt (its function was deleted) fails with the reason.
    pub(crate) async fn dispatch_records(&self, records: Vec<TaskRecord>) {
        let mut by_endpoint: HashMap<String, Vec<(u64, Task)>> = HashMap::new();
        let mut failed = Vec::new();
        for record in records {
            match self.task_of(&record).await {
                Ok(task) => by_endpoint
                    .entry(record.endpoint.clone())
                    .or_default()
                    .push((record.id, task)),
                Err(error) => failed.push(Finished {
                    id: record.id,
                    result: Err(error),
                    timeline: record.timeline,
                }),
            }
        }
        for (endpoint, tasks) in by_endpoint {
            self.dispatch_local(&endpoint, tasks);
        }
        if !failed.is_empty() {
            let finished = store_outcomes(&self.inner, failed).await;
            self.publish(finished);
        }
    }

    async fn task_of(&self, record: &TaskRecord) -> Result<Task, funcx_core::TaskError> {
        let args = record
            .decode_args()
            .map_err(|e| funcx_core::TaskError::protocol(e.to_string()))?;
        let options = crate::api::task_options(record.timeout, record.resources);
        // Claimed tasks come in thousands of one function: one lookup per process.
        let cached = self
            .inner
            .functions
            .lock()
            .ok()
            .and_then(|cache| cache.get(&record.function).cloned());
        if let Some(function) = cached {
            return Ok(Task {
                function,
                args,
                options,
            });
        }
        let functions = self
            .inner
            .store
            .function(record.function)
            .await
            .map_err(|e| funcx_core::TaskError::protocol(e.to_string()))?;
        // Any record of the id has the same body; the submitter was allowed at submission.
        let Some(function) = functions.first() else {
            return Err(funcx_core::TaskError::protocol(format!(
                "function {} was deleted before the task ran",
                record.function
            )));
        };
        Ok(Task {
            function: self.function(function),
            args,
            options,
        })
    }

    /// Tells result-stream subscribers, and counts.
    pub(crate) fn publish(&self, finished: Vec<TaskRecord>) {
        publish(&self.inner, finished);
    }

    /// The live state of endpoint `id`.
    pub(crate) async fn endpoint_status(&self, id: &str) -> EndpointStatusView {
        let Some(runtime) = self.existing_runtime(id) else {
            return EndpointStatusView::default();
        };
        status_of(&runtime).await
    }

    /// Counts for `/metrics`.
    pub(crate) async fn gauges(&self) -> EndpointGauges {
        let runtimes: Vec<Arc<EndpointRuntime>> = self
            .inner
            .endpoints
            .lock()
            .map(|endpoints| endpoints.values().cloned().collect())
            .unwrap_or_default();
        let mut gauges = EndpointGauges {
            registered: runtimes.len(),
            ..EndpointGauges::default()
        };
        for runtime in runtimes {
            let status = status_of(&runtime).await;
            gauges.connected += usize::from(status.connected);
            gauges.managers += status.managers;
            gauges.workers += status.workers;
            gauges.busy_workers += status.busy_workers;
            gauges.queued += status.queued;
            gauges.in_flight += status.in_flight;
        }
        gauges
    }
}

async fn status_of(runtime: &EndpointRuntime) -> EndpointStatusView {
    let stats = runtime.executor.stats().await;
    let pools = runtime.executor.pools().await;
    let workers: usize = pools.iter().map(|p| p.size).sum();
    let busy: usize = pools.iter().map(|p| p.in_flight.min(p.size)).sum();
    EndpointStatusView {
        connected: !pools.is_empty(),
        managers: pools.len(),
        workers,
        busy_workers: busy,
        idle_workers: workers - busy,
        queued: stats.queued,
        in_flight: stats.in_flight,
    }
}

fn publish(shared: &Shared, finished: Vec<TaskRecord>) {
    for record in finished {
        let latency = record
            .finished
            .and_then(|f| f.duration_since(record.created).ok());
        let succeeded = matches!(record.result, Some(Ok(_)));
        shared.metrics.finished(succeeded, latency);
        // No subscriber is fine: results are in the store.
        let _ = shared.events.send(Published::Finished(Arc::new(record)));
    }
}

/// The session number of endpoint `id`'s connections, the same in every run of the gateway
/// so that an endpoint resumes its session after a restart. Endpoint ids are random and
/// never reused, so two endpoints, or two stores, do not share one.
fn endpoint_session(id: &str) -> u64 {
    let hash = blake3::derive_key("funcx-gateway endpoint session v1", id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(bytes)
}

impl Shared {
    /// The `running` table, taken whole even if a panic poisoned its lock: each change to
    /// it is one insert or remove, never left half-done.
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, TaskId)>> {
        match self.running.lock() {
            Ok(running) => running,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Stores the results an endpoint delivers before its connection acknowledges them: the
/// endpoint forgets a result only once it is in the store.
struct Keeper {
    gateway: Weak<Shared>,
    endpoint: String,
}

impl ResultKeeper for Keeper {
    fn keep(&self, results: Vec<(u64, WorkResult)>) -> futures::future::BoxFuture<'static, ()> {
        let gateway = self.gateway.clone();
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let Some(shared) = gateway.upgrade() else {
                return;
            };
            // Only tasks this gateway gave this endpoint: an endpoint cannot finish another's.
            // Those whose result is being written elsewhere are not written again, but
            // waited for (the endpoint forgets them once this returns), then offered again:
            // a write let go of unwritten leaves them to this keeper.
            let mut results = results;
            while !results.is_empty() {
                let KeeperShare {
                    write,
                    wait,
                    mut claim,
                } = {
                    let running = shared.running();
                    shared.writes.keeper_takes(results, |id| {
                        running.get(&id).is_some_and(|(e, _)| *e == endpoint)
                    })
                };
                let now = SystemTime::now();
                let outcomes: Vec<Finished> = write
                    .into_iter()
                    .map(|(id, result)| Finished {
                        id,
                        result: result.outcome,
                        timeline: funcx_core::Timeline {
                            submitted: now,
                            dispatched: None,
                            running: now.checked_sub(result.duration),
                            finished: Some(now),
                        },
                    })
                    .collect();
                // The connection hands over every result that queued up while the last
                // write ran (thousands at once): written and published a batch at a time,
                // so that result streams get the first ones sooner and their buffer
                // (`EVENT_BUFFER`) is not outrun, which would make them lag.
                for outcomes in outcomes.chunks(RESULT_BATCH) {
                    let ids: Vec<u64> = outcomes.iter().map(|outcome| outcome.id).collect();
                    let finished = store_outcomes(&shared, outcomes.to_vec()).await;
                    {
                        let mut running = shared.running();
                        for id in claim.wrote(&ids) {
                            running.remove(&id);
                        }
                    }
                    publish(&shared, finished);
                }
                drop(claim);
                let waited: Vec<u64> = wait.iter().map(|(id, _)| *id).collect();
                shared.writes.written(&waited).await;
                results = wait;
            }
        })
    }
}

/// A submission as the store took it ([`Gateway::store_submission`]).
pub(crate) struct Stored {
    /// What the store did with it.
    pub(crate) insertion: Insertion,
    /// Whether this gateway claimed its tasks as they were stored (in a fleet): then they
    /// are handed out here, at once, not by the claimer.
    pub(crate) claimed: bool,
}

/// Stores outcomes; a result is never dropped for a store hiccup: retried until written.
async fn store_outcomes(shared: &Shared, outcomes: Vec<Finished>) -> Vec<TaskRecord> {
    let mut pause = Duration::from_millis(50);
    loop {
        match shared
            .store
            .finish(outcomes.clone(), SystemTime::now())
            .await
        {
            Ok(finished) => return finished,
            Err(error) => {
                warn!(%error, ?pause, "could not store results; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Stores outcomes as the endpoints' executors report them, batch by batch, then tells
/// subscribers. Ends when the gateway is dropped.
async fn store_results(gateway: Weak<Shared>, mut reports: ReportStream) {
    let mut batch: Vec<(u64, TaskReport)> = Vec::new();
    loop {
        if reports.recv_many(&mut batch, RESULT_BATCH).await == 0 {
            return;
        }
        let Some(shared) = gateway.upgrade() else {
            return;
        };
        let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
        // Results an endpoint's keeper stored, or is storing, are not stored (or published)
        // twice.
        let outcomes: Vec<Finished> = shared
            .writes
            .report_takes(std::mem::take(&mut batch))
            .into_iter()
            .map(|(id, report)| Finished {
                id,
                result: report.result,
                timeline: report.status.timeline,
            })
            .collect();
        let written: Vec<u64> = outcomes.iter().map(|outcome| outcome.id).collect();
        let finished = if outcomes.is_empty() {
            Vec::new()
        } else {
            store_outcomes(&shared, outcomes).await
        };
        {
            // One step with the end of the write, so that a keeper finds each id either
            // being written or gone from `running`, never neither.
            // A task a keeper is writing stays: the keeper removes it once written.
            let mut running = shared.running();
            for id in &ids {
                if !shared.writes.keeper_writing(*id) {
                    running.remove(id);
                }
            }
            shared.writes.report_wrote(&written);
        }
        publish(&shared, finished);
    }
}

/// Removes finished tasks older than the result TTL, now and then.
async fn expire_results(gateway: Weak<Shared>) {
    loop {
        let (store, ttl) = match gateway.upgrade() {
            Some(shared) => (shared.store.clone(), shared.config.result_ttl()),
            None => return,
        };
        let period = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        match store.expire(SystemTime::now(), ttl).await {
            Ok(0) => {}
            Ok(n) => info!(tasks = n, "expired finished tasks"),
            Err(error) => warn!(%error, "could not expire finished tasks"),
        }
        drop(store);
        tokio::time::sleep(period).await;
    }
}
