//! Globus Compute compatibility (feature `globus-compute`): the routes the unmodified
//! `globus-compute-sdk` calls, results for its `Executor` over RabbitMQ, a client-credentials
//! token route, and Globus Compute tasks run on ordinary funcx endpoints.
//!
//! How a task flows: `POST /v3/endpoints/{id}/submit` carries, per registered function,
//! strings the SDK serialized (dill or JSON; the gateway never looks inside). Each becomes an
//! ordinary funcx task of one fixed source function, the [`shim`], whose arguments are those
//! strings; it is stored and dispatched like any native task. On the worker, the shim
//! deserializes and runs the function with the `globus_compute_sdk` installed in the
//! workers' Python, and returns the result serialized the Globus Compute way (or the remote
//! traceback). When the task finishes, the gateway publishes a Globus Compute `Result`
//! message to the task group's queue, where the SDK's `Executor` reads it; `GET /v2/tasks`
//! and `POST /v2/batch_status` show the same outcome over HTTP. A submission's
//! `resource_specification` gives its tasks nodes and an MPI launch ([`resource_spec`]); its
//! `user_endpoint_config` may name a container image they run in ([`endpoint_config`]).
//!
//! What lives where: tasks and their results are in the gateway's store (durable with
//! redb); a Globus Compute task id is a UUID that contains the gateway task id. Registered
//! Globus Compute functions, task groups and the outbox of results still to publish are kept
//! in memory: a gateway restart forgets them (re-register functions; `Executor` futures
//! that were waiting across the restart do not resolve, though their results stay readable
//! with `Client.get_result`).

pub mod config;

#[cfg(feature = "globus-compute")]
mod amqp;
#[cfg(feature = "globus-compute")]
mod endpoint_config;
#[cfg(feature = "globus-compute")]
mod resource_spec;
#[cfg(feature = "globus-compute")]
mod routes;
#[cfg(feature = "globus-compute")]
mod shim;
#[cfg(feature = "globus-compute")]
mod token;
#[cfg(feature = "globus-compute")]
mod uuid;

#[cfg(feature = "globus-compute")]
pub(crate) use routes::router;

/// The fields of `name`, an object-valued option of a submission (`resource_specification`,
/// `user_endpoint_config`): `None` when it is absent, `null` or empty; an error naming
/// what is wrong when it is not an object or has keys other than `keys`.
#[cfg(feature = "globus-compute")]
fn option_fields<'a>(
    value: Option<&'a serde_json::Value>,
    name: &str,
    keys: &[&str],
) -> Result<Option<&'a serde_json::Map<String, serde_json::Value>>, String> {
    let fields = match value {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Object(fields)) if fields.is_empty() => return Ok(None),
        Some(serde_json::Value::Object(fields)) => fields,
        Some(other) => return Err(format!("{name} must be an object, not {other}")),
    };
    let mut unknown: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|key| !keys.contains(key))
        .collect();
    if unknown.is_empty() {
        return Ok(Some(fields));
    }
    unknown.sort_unstable();
    Err(format!(
        "{name} has keys this gateway does not take: {unknown:?}; it takes {keys:?}"
    ))
}
#[cfg(feature = "globus-compute")]
pub(crate) use service::{run_outbox, GlobusCompute};

#[cfg(feature = "globus-compute")]
mod service {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Mutex, MutexGuard, Weak};
    use std::time::{Duration, SystemTime};

    use funcx_core::{Function, FunctionId};
    use serde_json::json;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    use tracing::{debug, warn};

    use super::amqp::{Broker, Message};
    use super::config::GlobusComputeConfig;
    use super::token::Clients;
    use super::uuid::{self, Uuid};
    use super::{shim, token};
    use crate::gateway::{Published, Shared};
    use crate::store::{StoreError, TaskRecord, TaskStore};

    /// A function registered through the Globus Compute API.
    #[derive(Debug, Clone)]
    pub(crate) struct ComputeFunction {
        pub(crate) owner: String,
        pub(crate) name: String,
        /// `pack_buffers([serialized function])`, as the SDK sent it (or as the gateway
        /// built it from source text).
        pub(crate) code: String,
        pub(crate) description: Option<String>,
        pub(crate) public: bool,
        pub(crate) meta: serde_json::Value,
    }

    /// The tasks of one task group of one user, and its result queue once asked for.
    #[derive(Debug, Default)]
    pub(crate) struct Group {
        pub(crate) tasks: Vec<u64>,
        pub(crate) queue: Option<String>,
    }

    /// The Globus Compute side of a gateway.
    pub(crate) struct GlobusCompute {
        pub(crate) config: GlobusComputeConfig,
        pub(crate) clients: Clients,
        pub(crate) broker: Broker,
        /// The shim, the one funcx function every Globus Compute task calls (on the
        /// endpoint's own workers; [`GlobusCompute::shim_in`] for a container image).
        pub(crate) shim: Function,
        /// Ids of the shim (in an image or in none) whose record is in the store: a cache of
        /// [`GlobusCompute::is_shim`]'s store lookups, bounded by [`CACHE_MAX`].
        pub(crate) shim_ids: Mutex<HashSet<FunctionId>>,
        pub(crate) functions: Mutex<HashMap<Uuid, ComputeFunction>>,
        pub(crate) groups: Mutex<HashMap<(String, Uuid), Group>>,
        /// Tasks whose result goes to a queue when they finish: gateway task id → queue.
        pub(crate) outbox: Mutex<HashMap<u64, String>>,
        /// (user, shim id) pairs whose function record is in the store, bounded by
        /// [`CACHE_MAX`] (a pair no longer here is stored again, which changes nothing).
        pub(crate) shim_owners: Mutex<HashSet<(String, FunctionId)>>,
    }

    /// The most entries a cache of what the store holds keeps (about 100 KiB of shim
    /// owners): each user's requests can name any image, and a set that grew with every
    /// one would be memory any user could take. A full cache is emptied, as its entries
    /// are all still in the store.
    pub(crate) const CACHE_MAX: usize = 1024;

    /// Adds `item` to the cache `set`, emptying it first when it holds [`CACHE_MAX`].
    pub(crate) fn remember<T: std::hash::Hash + Eq>(set: &Mutex<HashSet<T>>, item: T) {
        let mut set = lock(set);
        if set.len() >= CACHE_MAX {
            set.clear();
        }
        set.insert(item);
    }

    /// Locks `mutex`, whether or not another thread panicked while holding it (the maps
    /// stay consistent: every update is a single insert or remove).
    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    impl GlobusCompute {
        pub(crate) fn new(config: GlobusComputeConfig) -> GlobusCompute {
            GlobusCompute {
                clients: Clients::new(&config.clients),
                broker: Broker::new(
                    config.amqp_url.clone(),
                    Duration::from_secs(config.queue_expiry_secs),
                ),
                shim_ids: Mutex::new(HashSet::new()),
                shim: shim::shim(),
                functions: Mutex::new(HashMap::new()),
                groups: Mutex::new(HashMap::new()),
                outbox: Mutex::new(HashMap::new()),
                shim_owners: Mutex::new(HashSet::new()),
                config,
            }
        }

        /// The prefix of `user`'s result queues: the configured prefix, then a tag derived
        /// from the user name (names may hold characters queue names should not).
        pub(crate) fn queue_prefix(&self, user: &str) -> String {
            let tag = blake3::hash(user.as_bytes()).to_hex();
            format!("{}{}.", self.config.queue_prefix, &tag[..16])
        }

        /// The AMQP URI clients read results with.
        pub(crate) fn client_amqp_url(&self) -> &str {
            self.config
                .client_amqp_url
                .as_deref()
                .unwrap_or(&self.config.amqp_url)
        }

        /// The shim run in container image `image` ([`Function::in_image`]: workers started
        /// in it), or on the endpoint's own workers. Nothing remembers it until its record is
        /// stored (the submit route's `register_shim`, after the endpoint allowed it).
        pub(crate) fn shim_in(&self, image: Option<&str>) -> Function {
            match image {
                Some(image) => self.shim.clone().in_image(image),
                None => self.shim.clone(),
            }
        }

        /// Whether function `id` is the shim, in some image or none: whether its tasks are
        /// Globus Compute tasks. An id not seen by this process (an image's shim before a
        /// restart, or an earlier gateway version's shim, whose source differed) is looked
        /// up in `store`, by the shim's name: tasks stay readable across restarts and
        /// upgrades. (Only the task's owner reads it, so a function of their own that
        /// borrowed the name shows them nothing of anyone else's.)
        pub(crate) async fn is_shim(
            &self,
            store: &dyn TaskStore,
            id: FunctionId,
        ) -> Result<bool, StoreError> {
            if id == self.shim.id() || lock(&self.shim_ids).contains(&id) {
                return Ok(true);
            }
            let shim = store
                .function(id)
                .await?
                .iter()
                .any(|record| record.name == shim::SHIM_NAME);
            if shim {
                remember(&self.shim_ids, id);
            }
            Ok(shim)
        }

        /// Whether the token looks like one of the token route's (see [`token`]).
        pub(crate) fn is_client_token(token: &str) -> bool {
            token::Clients::is_client_token(token)
        }
    }

    /// The Globus Compute view of a finished task's outcome, for HTTP and AMQP alike.
    pub(crate) struct Finished {
        pub(crate) outcome: shim::Outcome,
        /// Unix seconds, fractional.
        pub(crate) completion: f64,
    }

    pub(crate) fn finished(record: &TaskRecord) -> Option<Finished> {
        let result = record.result.as_ref()?;
        let endpoint = uuid::parse(&record.endpoint)
            .map(|id| uuid::format(&id))
            .unwrap_or_else(|| record.endpoint.clone());
        let completion = record
            .finished
            .unwrap_or_else(SystemTime::now)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Some(Finished {
            outcome: shim::outcome(result, &endpoint),
            completion,
        })
    }

    /// The messagepack (protocol 1) `Result` message the SDK's `Executor` unpacks.
    pub(crate) fn result_message(task: u64, finished: &Finished) -> Vec<u8> {
        let outcome = &finished.outcome;
        let error_details = outcome.error_code.map(|code| {
            json!({ "code": code, "user_message": "An error occurred during the execution of this task" })
        });
        let details = match &outcome.details {
            serde_json::Value::Null => serde_json::Value::Null,
            details => details.clone(),
        };
        let message = json!({
            "message_type": "result",
            "data": {
                "task_id": uuid::format(&uuid::task_uuid(task)),
                "data": outcome.data,
                "details": details,
                "error_details": error_details,
            }
        });
        let mut body = vec![1u8];
        // Serializing a `Value` cannot fail.
        body.extend(serde_json::to_vec(&message).unwrap_or_default());
        body
    }

    /// How many results one broker round trip carries at most.
    const PUBLISH_BATCH: usize = 1024;
    /// How often the outbox is compared with the store when no result arrives (it catches
    /// results missed while the broadcast lagged or the broker was down).
    const SWEEP_PERIOD: Duration = Duration::from_secs(5);

    /// Publishes results of outbox tasks as they finish, until the gateway is dropped.
    pub(crate) async fn run_outbox(gateway: Weak<Shared>) {
        let mut events = match gateway.upgrade() {
            Some(shared) => shared.events.subscribe(),
            None => return,
        };
        let mut ready: Vec<(u64, Message)> = Vec::new();
        let mut sweep = false;
        let mut pause = Duration::from_millis(100);
        loop {
            // Wait for a result unless some are ready (then only take what is there).
            let first = if ready.is_empty() && !sweep {
                match tokio::time::timeout(SWEEP_PERIOD, events.recv()).await {
                    Ok(Ok(Published::Finished(record))) => Some(record),
                    Ok(Ok(Published::Missed)) | Ok(Err(RecvError::Lagged(_))) | Err(_) => {
                        sweep = true;
                        None
                    }
                    Ok(Err(RecvError::Closed)) => return,
                }
            } else {
                None
            };
            let Some(shared) = gateway.upgrade() else {
                return;
            };
            let Some(service) = shared.globus.as_ref() else {
                return;
            };
            let mut records = Vec::from_iter(first);
            while records.len() < PUBLISH_BATCH {
                match events.try_recv() {
                    Ok(Published::Finished(record)) => records.push(record),
                    Ok(Published::Missed) | Err(TryRecvError::Lagged(_)) => sweep = true,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => return,
                }
            }
            {
                let outbox = lock(&service.outbox);
                let mut waiting: HashSet<u64> = ready.iter().map(|(id, _)| *id).collect();
                for record in records {
                    if let Some(queue) = outbox.get(&record.id) {
                        if !waiting.insert(record.id) {
                            continue;
                        }
                        if let Some(done) = finished(&record) {
                            ready.push((record.id, message(queue, record.id, &done)));
                        }
                    }
                }
            }
            if sweep {
                sweep = false;
                let waiting: HashSet<u64> = ready.iter().map(|(id, _)| *id).collect();
                let pending: Vec<(u64, String)> = lock(&service.outbox)
                    .iter()
                    .filter(|(id, _)| !waiting.contains(*id))
                    .map(|(id, queue)| (*id, queue.clone()))
                    .collect();
                for (id, queue) in pending {
                    match shared.store.task(id).await {
                        Ok(Some(record)) => {
                            if let Some(done) = finished(&record) {
                                ready.push((id, message(&queue, id, &done)));
                            }
                        }
                        // Deleted (by its owner, or expired): nothing to publish.
                        Ok(None) => {
                            lock(&service.outbox).remove(&id);
                        }
                        Err(error) => warn!(%error, "could not read a task for its result"),
                    }
                }
            }
            if ready.is_empty() {
                continue;
            }
            let batch: Vec<(u64, Message)> =
                ready.drain(..ready.len().min(PUBLISH_BATCH)).collect();
            let messages: Vec<&Message> = batch.iter().map(|(_, message)| message).collect();
            match service.broker.publish(&messages).await {
                Ok(unroutable) => {
                    let mut outbox = lock(&service.outbox);
                    for (id, _) in &batch {
                        outbox.remove(id);
                    }
                    debug!(
                        results = batch.len(),
                        unroutable, "published Globus Compute results"
                    );
                    pause = Duration::from_millis(100);
                }
                Err(error) => {
                    warn!(%error, ?pause, results = batch.len(), "could not publish Globus Compute results; retrying");
                    // Back in front, in order; published again after the pause.
                    let mut retry = batch;
                    retry.append(&mut ready);
                    ready = retry;
                    drop(shared);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn message(queue: &str, id: u64, done: &Finished) -> Message {
        Message {
            queue: queue.to_owned(),
            body: result_message(id, done),
            timestamp: done.completion as u64,
        }
    }

    #[cfg(test)]
    mod tests {
        use funcx_core::Function;

        use super::*;
        use crate::store::{FunctionRecord, MemoryStore};

        fn record(function: &Function) -> FunctionRecord {
            FunctionRecord {
                id: function.id(),
                owner: "alice".into(),
                name: function.name().to_owned(),
                body: function.body().clone(),
                public: false,
                shared_with: Vec::new(),
                image: function.image().map(str::to_owned),
            }
        }

        #[tokio::test]
        async fn shims_of_any_image_or_version_are_known_and_other_functions_are_not() {
            let service = GlobusCompute::new(GlobusComputeConfig::new("amqp://127.0.0.1:1/"));
            let store = MemoryStore::new();
            assert!(service.is_shim(&store, service.shim.id()).await.unwrap());
            // An image's shim is not known for being asked for, only once stored (then the
            // cache knows it without the store).
            let boxed = service.shim_in(Some("localhost/a:1"));
            assert!(!service.is_shim(&store, boxed.id()).await.unwrap());
            remember(&service.shim_ids, boxed.id());
            assert!(service.is_shim(&store, boxed.id()).await.unwrap());
            // Stored before a restart (another process's image, an older shim's source):
            // known through its record.
            let older =
                Function::from_source("def x(): pass\n", shim::SHIM_NAME).in_image("localhost/b:1");
            assert!(!service.is_shim(&store, older.id()).await.unwrap());
            store.put_function(record(&older)).await.unwrap();
            assert!(service.is_shim(&store, older.id()).await.unwrap());
            // Any other function is not.
            let native = Function::from_source("def y(): pass\n", "y");
            store.put_function(record(&native)).await.unwrap();
            assert!(!service.is_shim(&store, native.id()).await.unwrap());
        }

        #[tokio::test]
        async fn the_shim_caches_stay_bounded_and_fall_back_to_the_store() {
            let service = GlobusCompute::new(GlobusComputeConfig::new("amqp://127.0.0.1:1/"));
            let store = MemoryStore::new();
            let first = service.shim_in(Some("localhost/0:1"));
            store.put_function(record(&first)).await.unwrap();
            assert!(service.is_shim(&store, first.id()).await.unwrap());
            for n in 1..=2 * CACHE_MAX {
                let shim = service.shim_in(Some(&format!("localhost/{n}:1")));
                remember(&service.shim_ids, shim.id());
                remember(&service.shim_owners, ("someone".to_owned(), shim.id()));
                assert!(lock(&service.shim_ids).len() <= CACHE_MAX);
                assert!(lock(&service.shim_owners).len() <= CACHE_MAX);
            }
            assert!(
                !lock(&service.shim_ids).contains(&first.id()),
                "emptied once full"
            );
            // Still known: through its record, and the shim outside any image always.
            assert!(service.is_shim(&store, first.id()).await.unwrap());
            assert!(service.is_shim(&store, service.shim.id()).await.unwrap());
        }
    }
}
