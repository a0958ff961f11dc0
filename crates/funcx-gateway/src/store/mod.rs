//! What the gateway remembers: users, functions, endpoints and tasks.
//!
//! [`TaskStore`] is the seam. [`MemoryStore`] keeps everything in the process (tests, demos);
//! [`RedbStore`] keeps it in one file with [redb], an embedded database that needs no server:
//! every accepted task and every result is committed (fsync) before the gateway acknowledges
//! it, so killing the gateway loses nothing it said it had.
//!
//! # Outgrowing one gateway
//!
//! One gateway process with an embedded store serves a lab or a department. A deployment
//! that needs several gateways behind a load balancer implements this same trait over a
//! shared database instead. Over PostgreSQL (see `pg`): a `tasks` table keyed by a sequence
//! and written once, a narrow `pending` table of unfinished tasks per endpoint, each gateway
//! claiming the tasks of the endpoints connected to it with `SELECT … FOR UPDATE SKIP LOCKED`
//! (so two gateways never hand the same task out at once and a crashed gateway's claims are
//! taken over when its lease lapses); `finish` deletes the tasks' `pending` rows and inserts
//! the results of those it deleted into `results`, which keeps the first result only, and `LISTEN/NOTIFY` on a `results` channel tells the gateway holding a
//! user's event stream that a result arrived elsewhere. Over Redis: one stream per endpoint
//! for submissions read through a consumer group (pending entries are the claims, `XAUTOCLAIM`
//! recovers a dead gateway's), hashes for task records with `HSETNX` for first-result-wins,
//! and one stream per user for results. Either way endpoints keep dialling one gateway each;
//! only the store is shared.
//!
//! [redb]: https://docs.rs/redb

mod fleet;
mod memory;
#[cfg(feature = "postgres")]
mod pg;
mod redb;

use std::fmt;
use std::time::{Duration, SystemTime};

use funcx_core::{
    Args, FunctionBody, FunctionId, Payload, Resources, TaskError, TaskState, Timeline,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use self::fleet::{Fleet, FleetEvent};
pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use self::pg::{PgOptions, PgStore};
pub use self::redb::RedbStore;

/// The BLAKE3 hash of a secret token; only hashes are stored.
pub type TokenHash = [u8; 32];

/// Hashes a bearer token for storage and lookup.
///
/// BLAKE3 with a context string, so a token hash from this store cannot be confused with
/// any other use of BLAKE3 on the same bytes. Tokens are 32 random bytes, so a fast hash is
/// enough: there is nothing to brute-force.
pub fn hash_token(token: &str) -> TokenHash {
    blake3::derive_key("funcx-gateway token v1", token.as_bytes())
}

/// A user of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's name, which is also its identity in every other record.
    pub name: String,
    /// The hash of its bearer token.
    pub token_hash: TokenHash,
}

/// A function registered by a user.
///
/// Function ids are content hashes, so two users registering the same code get the same id;
/// each keeps a record of their own (keyed by id and owner), and a user may use the function
/// when any of its records allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The content hash.
    pub id: FunctionId,
    /// Who registered this record.
    pub owner: String,
    /// The entry point's name.
    pub name: String,
    /// Source or pickle.
    pub body: FunctionBody,
    /// Usable by every user.
    pub public: bool,
    /// Users who may use it besides the owner.
    pub shared_with: Vec<String>,
    /// The container image its tasks run in ([`funcx_core::Function::in_image`]); `None`
    /// for a function that runs on the endpoint's default workers. Part of the id. Not in
    /// the derived encoding, which records written before functions had images lack: stores
    /// that keep records encoded append it (`encode_function`).
    #[serde(skip)]
    pub image: Option<String>,
}

impl FunctionRecord {
    /// Whether `user` may see and use the function through this record.
    pub fn visible_to(&self, user: &str) -> bool {
        self.owner == user || self.public || self.shared_with.iter().any(|u| u == user)
    }

    /// The function itself, as executors take it: the same id as the record's, image and
    /// all.
    pub fn function(&self) -> funcx_core::Function {
        let function = match &self.body {
            FunctionBody::Source(source) => {
                funcx_core::Function::from_source(source.clone(), self.name.clone())
            }
            FunctionBody::Pickled(bytes) => {
                funcx_core::Function::from_pickle(bytes.clone(), self.name.clone())
            }
        };
        match &self.image {
            Some(image) => function.in_image(image.clone()),
            None => function,
        }
    }
}

/// An endpoint registered by a user: a place tasks run, which dials in to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Random hex id.
    pub id: String,
    /// Who registered it.
    pub owner: String,
    /// A name for people.
    pub name: String,
    /// The hash of the token the endpoint presents when it dials in.
    pub token_hash: TokenHash,
    /// If set, the only functions it runs.
    pub allowed_functions: Option<Vec<FunctionId>>,
    /// If set, the users besides the owner who may submit to it.
    pub allowed_users: Option<Vec<String>>,
    /// When it was registered.
    pub created: SystemTime,
}

impl EndpointRecord {
    /// Whether `user` may see the endpoint and submit to it.
    pub fn visible_to(&self, user: &str) -> bool {
        self.owner == user
            || self
                .allowed_users
                .as_ref()
                .is_some_and(|users| users.iter().any(|u| u == user))
    }

    /// Whether the endpoint runs `function`.
    pub fn allows(&self, function: &FunctionId) -> bool {
        self.allowed_functions
            .as_ref()
            .is_none_or(|allowed| allowed.contains(function))
    }
}

/// A task the gateway accepted, not yet numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Who submitted it.
    pub owner: String,
    /// Where it runs.
    pub endpoint: String,
    /// What it calls.
    pub function: FunctionId,
    /// Its arguments.
    pub args: Args,
    /// How long it may run.
    pub timeout: Option<Duration>,
    /// What it asks for of the endpoint's machine; `None` for a plain task.
    pub resources: Option<Resources>,
}

/// A client's name for one submission, so that sending it again does not submit it again.
///
/// The gateway stores it with the tasks it created, in the same durable write: a resend
/// with the same key by the same user answers the same task ids and creates nothing,
/// whether the first attempt's answer was lost or the gateway crashed after committing it.
/// Keys are kept as long as finished tasks are (the result TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Whose key: keys of different users never meet.
    pub owner: String,
    /// The client's key (the `Idempotency-Key` header), at most
    /// [`IdempotencyKey::MAX_LEN`] bytes.
    pub key: String,
    /// A hash of the submission ([`fingerprint`]): the same key with another body is a
    /// client's mistake, refused rather than answered with the first body's ids.
    pub fingerprint: [u8; 32],
}

impl IdempotencyKey {
    /// The longest key accepted, in bytes.
    pub const MAX_LEN: usize = 256;
}

/// What [`TaskStore::insert_tasks_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insertion {
    /// The tasks were new: stored and numbered.
    Created(Vec<u64>),
    /// The key was seen with the same submission: its tasks' ids, and nothing new stored.
    Replayed(Vec<u64>),
    /// The key was seen with a different submission: nothing stored.
    Conflict,
}

/// The hash of a submission that [`IdempotencyKey::fingerprint`] holds: its endpoint,
/// and each task's function, arguments, timeout and resources, in order.
pub fn fingerprint(tasks: &[NewTask]) -> Result<[u8; 32], StoreError> {
    let mut hasher = blake3::Hasher::new_derive_key("funcx-gateway submission v1");
    hasher.update(&(tasks.len() as u64).to_le_bytes());
    for task in tasks {
        let mut encoded =
            postcard::to_stdvec(&(&task.endpoint, &task.function, &task.args, &task.timeout))
                .map_err(StoreError::backend)?;
        // Appended only when there are any: a plain task's fingerprint is what it was before
        // tasks had resources, so keys stored then still match their resends.
        if let Some(resources) = &task.resources {
            encoded.extend(postcard::to_stdvec(resources).map_err(StoreError::backend)?);
            // The same for whole nodes, which the derived encoding above leaves out.
            if resources.nodes > 0 {
                encoded.extend(postcard::to_stdvec(&resources.nodes).map_err(StoreError::backend)?);
            }
        }
        hasher.update(&(encoded.len() as u64).to_le_bytes());
        hasher.update(&encoded);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// What a store remembers of an idempotency key: enough to answer a resend.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    fingerprint: [u8; 32],
    /// The tasks were numbered consecutively, in one write: `first..first + count`.
    first: u64,
    count: u64,
    created: SystemTime,
}

impl KeyRecord {
    fn ids(&self) -> Vec<u64> {
        (self.first..self.first + self.count).collect()
    }

    /// The answer to a resend of `key`.
    fn answer(&self, key: &IdempotencyKey) -> Insertion {
        if self.fingerprint == key.fingerprint {
            Insertion::Replayed(self.ids())
        } else {
            Insertion::Conflict
        }
    }
}

/// A task as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Gateway-assigned, unique for the life of the store.
    pub id: u64,
    /// Who submitted it.
    pub owner: String,
    /// Where it runs.
    pub endpoint: String,
    /// What it calls.
    pub function: FunctionId,
    /// Its arguments, as postcard bytes of [`Args`] (kept encoded: the gateway only passes
    /// them on).
    pub args: Vec<u8>,
    /// How long it may run.
    pub timeout: Option<Duration>,
    /// `Queued` until it finishes; live states in between come from the endpoint's executor.
    pub state: TaskState,
    /// Its transitions.
    pub timeline: Timeline,
    /// The outcome, once finished.
    pub result: Option<Result<Payload, TaskError>>,
    /// When it was accepted.
    pub created: SystemTime,
    /// When its outcome was stored.
    pub finished: Option<SystemTime>,
    /// What it asks for of the endpoint's machine, whole nodes included; `None` for a plain
    /// task. Not in the derived encoding, which records written before tasks had resources
    /// lack: stores that keep records encoded append it, and its nodes after it
    /// (`encode_task`).
    #[serde(skip)]
    pub resources: Option<Resources>,
}

impl TaskRecord {
    /// The arguments, decoded.
    pub fn decode_args(&self) -> Result<Args, StoreError> {
        postcard::from_bytes(&self.args)
            .map_err(|e| StoreError::corrupt(format!("task {}: {e}", self.id)))
    }
}

/// The outcome of one task, to store.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Which task.
    pub id: u64,
    /// Its result or error.
    pub result: Result<Payload, TaskError>,
    /// Its timeline as the endpoint's executor saw it.
    pub timeline: Timeline,
}

/// Why the store could not do something.
///
/// Opaque, as `hyper::Error` is: the gateway answers 500 with the message and logs it.
pub struct StoreError {
    message: String,
    corrupt: bool,
}

impl StoreError {
    /// The backing database failed (I/O, a full disk, a lock).
    pub fn backend(error: impl fmt::Display) -> StoreError {
        StoreError {
            message: error.to_string(),
            corrupt: false,
        }
    }

    /// A stored record does not decode.
    pub fn corrupt(reason: impl fmt::Display) -> StoreError {
        StoreError {
            message: format!("a stored record does not decode: {reason}"),
            corrupt: true,
        }
    }

    /// Whether a stored record failed to decode (rather than the database failing).
    pub fn is_corrupt(&self) -> bool {
        self.corrupt
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task store: {}", self.message)
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("message", &self.message)
            .field("corrupt", &self.corrupt)
            .finish()
    }
}

impl std::error::Error for StoreError {}

/// One page of a user's tasks ([`TaskStore::tasks_of`]), newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskPage {
    /// The tasks, newest (highest id) first.
    pub tasks: Vec<TaskRecord>,
    /// Where the next page starts (pass it as `before`), when more may follow.
    pub next: Option<u64>,
}

/// The most bytes of records one page holds before it stops short of its count: results
/// can be megabytes each, and a page is read into memory whole.
pub const PAGE_BYTES: usize = 32 << 20;

/// Cuts a page out of `records` (each with its size in bytes, newest first): at most
/// `limit` records and, past the first, at most [`PAGE_BYTES`]. Reads one record beyond the
/// page, to tell whether another page follows.
fn page(
    records: impl Iterator<Item = Result<(TaskRecord, usize), StoreError>>,
    limit: usize,
) -> Result<TaskPage, StoreError> {
    let mut page = TaskPage::default();
    let mut bytes = 0;
    for record in records {
        let (record, size) = record?;
        let full =
            page.tasks.len() >= limit || (!page.tasks.is_empty() && bytes + size > PAGE_BYTES);
        if full {
            page.next = page.tasks.last().map(|last| last.id);
            break;
        }
        bytes += size;
        page.tasks.push(record);
    }
    Ok(page)
}

/// A value as the stores keep it in a column or table: postcard bytes.
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(StoreError::backend)
}

/// A value the stores kept with [`encode`]; bytes that do not decode are a corrupt record.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(StoreError::corrupt)
}

/// A future the store returns.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Where the gateway keeps its state.
///
/// Every write is durable when its future resolves: the gateway acknowledges a submission
/// or considers a result delivered only after that.
pub trait TaskStore: Send + Sync + 'static {
    /// Adds or replaces a user.
    fn put_user(&self, user: UserRecord) -> StoreFuture<'_, ()>;

    /// The user whose token hashes to `hash`.
    fn user_by_token(&self, hash: TokenHash) -> StoreFuture<'_, Option<UserRecord>>;

    /// Every user.
    fn users(&self) -> StoreFuture<'_, Vec<UserRecord>>;

    /// Removes user `name` (its token stops working); whether it existed.
    fn delete_user(&self, name: &str) -> StoreFuture<'_, bool>;

    /// Adds or replaces a function record (keyed by id and owner).
    fn put_function(&self, function: FunctionRecord) -> StoreFuture<'_, ()>;

    /// Every record of function `id`, whoever registered it.
    fn function(&self, id: FunctionId) -> StoreFuture<'_, Vec<FunctionRecord>>;

    /// Removes `owner`'s record of function `id`; whether there was one.
    fn delete_function(&self, id: FunctionId, owner: &str) -> StoreFuture<'_, bool>;

    /// Adds or replaces an endpoint.
    fn put_endpoint(&self, endpoint: EndpointRecord) -> StoreFuture<'_, ()>;

    /// Endpoint `id`.
    fn endpoint(&self, id: &str) -> StoreFuture<'_, Option<EndpointRecord>>;

    /// Every endpoint.
    fn endpoints(&self) -> StoreFuture<'_, Vec<EndpointRecord>>;

    /// Removes endpoint `id`; whether it existed.
    fn delete_endpoint(&self, id: &str) -> StoreFuture<'_, bool>;

    /// Stores new tasks, in state `Queued`, and numbers them, in one durable write.
    fn insert_tasks(&self, tasks: Vec<NewTask>, now: SystemTime) -> StoreFuture<'_, Vec<u64>>;

    /// As [`TaskStore::insert_tasks`], under the client's idempotency `key`, in the same
    /// durable write: the first call with a key stores the tasks and remembers their ids
    /// under it; a later call with the same key and fingerprint stores nothing and returns
    /// those ids ([`Insertion::Replayed`]); with another fingerprint, [`Insertion::Conflict`].
    /// Two calls with one key at once must not both create (a store serializes them, as
    /// redb's single writer does, or uses a unique constraint).
    fn insert_tasks_once(
        &self,
        key: IdempotencyKey,
        tasks: Vec<NewTask>,
        now: SystemTime,
    ) -> StoreFuture<'_, Insertion>;

    /// Task `id`.
    fn task(&self, id: u64) -> StoreFuture<'_, Option<TaskRecord>>;

    /// `owner`'s tasks, newest first: at most `limit` of them, only ids below `before` when
    /// it is given (`next` of the previous page). A page may stop short of `limit` when its
    /// records are large ([`PAGE_BYTES`]); `next` says whether another follows. It costs
    /// the page, not the store: stores keep an index by owner.
    fn tasks_of(&self, owner: &str, before: Option<u64>, limit: usize)
        -> StoreFuture<'_, TaskPage>;

    /// Stores outcomes in one durable write. An outcome for a task that is unknown or already
    /// finished is ignored (at-least-once execution, at-most-once results). Returns the
    /// records that were finished by this call.
    fn finish(&self, outcomes: Vec<Finished>, now: SystemTime) -> StoreFuture<'_, Vec<TaskRecord>>;

    /// Removes task `id`; whether it existed.
    fn delete_task(&self, id: u64) -> StoreFuture<'_, bool>;

    /// Every task without an outcome, oldest first: what a restarted gateway submits again.
    fn unfinished_tasks(&self) -> StoreFuture<'_, Vec<TaskRecord>>;

    /// Removes finished tasks whose outcome is older than `ttl` at `now`, and idempotency
    /// keys older than `ttl`; how many tasks.
    fn expire(&self, now: SystemTime, ttl: Duration) -> StoreFuture<'_, usize>;

    /// The claims and notifications of a store that several gateways share; `None`
    /// (the default) for a store of one gateway, which hands out every task itself.
    fn fleet(&self) -> Option<&dyn Fleet> {
        None
    }

    /// Waits for the writes under way, then releases the store cleanly (a graceful stop of
    /// the gateway), so that the next start has nothing to repair. Calls after it fail.
    /// The default does nothing: for a store with nothing to release.
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Applies `outcome` to `record` if it is unfinished: the one rule both stores share.
fn apply(record: &mut TaskRecord, outcome: Finished, now: SystemTime) -> bool {
    if record.result.is_some() {
        return false;
    }
    let (state, mut timeline) = settled(&outcome, now);
    // The submission time is the gateway's, not the endpoint executor's (which may be a
    // re-submission after a restart).
    timeline.submitted = record.timeline.submitted;
    record.state = state;
    record.timeline = timeline;
    record.result = Some(outcome.result);
    record.finished = Some(now);
    true
}

/// A record as a store keeps it encoded: the record's derived encoding, then `appended`
/// when there is one (a field added after records were first stored, which the derived
/// encoding skips). A record without it has the bytes it had before the field existed, so
/// records of either age decode ([`decode_appended`]).
fn encode_appended<R: Serialize, T: Serialize>(
    record: &R,
    appended: Option<&T>,
) -> Result<Vec<u8>, StoreError> {
    let mut bytes = encode(record)?;
    if let Some(appended) = appended {
        bytes.extend(encode(appended)?);
    }
    Ok(bytes)
}

/// A record [`encode_appended`] wrote, and what was appended to it, if anything.
fn decode_appended<R, T>(bytes: &[u8]) -> Result<(R, Option<T>), StoreError>
where
    R: serde::de::DeserializeOwned,
    T: serde::de::DeserializeOwned,
{
    let (record, rest) = postcard::take_from_bytes::<R>(bytes).map_err(StoreError::corrupt)?;
    let appended = if rest.is_empty() {
        None
    } else {
        Some(decode(rest)?)
    };
    Ok((record, appended))
}

/// A task record as a store keeps it encoded: what it asks for is appended, when it asks
/// for anything, so a plain task's bytes are what they were before tasks had resources;
/// then, when it holds whole nodes, their number (which [`Resources`]' derived encoding
/// leaves out), so the bytes of a task without nodes are what they were before tasks had
/// nodes.
fn encode_task(record: &TaskRecord) -> Result<Vec<u8>, StoreError> {
    let mut bytes = encode_appended(record, record.resources.as_ref())?;
    if let Some(nodes) = record
        .resources
        .map(|resources| resources.nodes)
        .filter(|&nodes| nodes > 0)
    {
        bytes.extend(encode(&nodes)?);
    }
    Ok(bytes)
}

/// A task record [`encode_task`] wrote.
fn decode_task(bytes: &[u8]) -> Result<TaskRecord, StoreError> {
    let (mut record, rest) =
        postcard::take_from_bytes::<TaskRecord>(bytes).map_err(StoreError::corrupt)?;
    if !rest.is_empty() {
        let (resources, rest) =
            postcard::take_from_bytes::<Resources>(rest).map_err(StoreError::corrupt)?;
        let nodes = if rest.is_empty() { 0 } else { decode(rest)? };
        record.resources = Some(Resources { nodes, ..resources });
    }
    Ok(record)
}

/// A function record as a store keeps it encoded: its image is appended, when it names
/// one, so a plain function's bytes are what they were before functions had images.
fn encode_function(record: &FunctionRecord) -> Result<Vec<u8>, StoreError> {
    encode_appended(record, record.image.as_ref())
}

/// A function record [`encode_function`] wrote.
fn decode_function(bytes: &[u8]) -> Result<FunctionRecord, StoreError> {
    let (mut record, image) = decode_appended::<FunctionRecord, _>(bytes)?;
    record.image = image;
    Ok(record)
}

/// The state and timeline of a task settled by `outcome` at `now`, but for the submission
/// time, which stays the gateway's.
fn settled(outcome: &Finished, now: SystemTime) -> (TaskState, Timeline) {
    let state = if outcome.result.is_ok() {
        TaskState::Succeeded
    } else {
        TaskState::Failed
    };
    let mut timeline = outcome.timeline;
    timeline.finished = timeline.finished.or(Some(now));
    (state, timeline)
}

fn new_record(id: u64, task: NewTask, now: SystemTime) -> Result<TaskRecord, StoreError> {
    let args = postcard::to_stdvec(&task.args).map_err(StoreError::backend)?;
    Ok(TaskRecord {
        id,
        owner: task.owner,
        endpoint: task.endpoint,
        function: task.function,
        args,
        timeout: task.timeout,
        state: TaskState::Queued,
        timeline: Timeline {
            submitted: now,
            dispatched: None,
            running: None,
            finished: None,
        },
        result: None,
        created: now,
        finished: None,
        resources: task.resources,
    })
}

fn expired(record: &TaskRecord, now: SystemTime, ttl: Duration) -> bool {
    record
        .finished
        .is_some_and(|finished| now.duration_since(finished).is_ok_and(|age| age > ttl))
}

#[cfg(test)]
pub(crate) mod tests;
