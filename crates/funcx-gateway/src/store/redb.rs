//! [`RedbStore`]: the gateway's state in one file, with no database server.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use funcx_core::FunctionId;
use redb::{Database, ReadableTable, TableDefinition};

use super::{
    apply, decode, decode_function, decode_task, encode, encode_function, encode_task, expired,
    new_record, page, EndpointRecord, Finished, FunctionRecord, IdempotencyKey, Insertion,
    KeyRecord, NewTask, StoreError, StoreFuture, TaskPage, TaskRecord, TaskStore, TokenHash,
    UserRecord,
};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Token hash → user name: the lookup every request makes.
const TOKENS: TableDefinition<&[u8], &str> = TableDefinition::new("user_tokens");
/// `"<function id hex>/<owner>"` → record, so one prefix range finds every record of an id.
const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
const TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks");
/// The ids of tasks without an outcome, so recovery does not scan every result ever kept.
const UNFINISHED: TableDefinition<u64, ()> = TableDefinition::new("unfinished");
/// postcard `(owner, key)` → [`KeyRecord`]: the idempotency keys of submissions.
const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("idempotency_keys");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_TASK: &str = "next_task";
/// `(when it finished, in Unix seconds, task id)`: what expiry reads, so that it never walks
/// the whole store (which would also pull every page of it through the cache).
const FINISHED: TableDefinition<(u64, u64), ()> = TableDefinition::new("finished_by_time");
/// `(when it was created, in Unix seconds, KEYS key)`: the same for idempotency keys.
const KEY_TIMES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("keys_by_time");
/// Set once `FINISHED` and `KEY_TIMES` cover every record (a store written before they
/// existed is indexed once, when it is opened).
const INDEXED: &str = "time_indexes";
/// `(owner, task id)`: a user's tasks, so listing them reads one range, not the store.
const OWNER_TASKS: TableDefinition<(&str, u64), ()> = TableDefinition::new("tasks_by_owner");
/// Set once `OWNER_TASKS` covers every task (a store written before it existed is indexed
/// once, when it is opened).
const OWNERS_INDEXED: &str = "owner_index";

/// Whole seconds since the Unix epoch: the time indexes' resolution.
fn secs(time: SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A durable store in one file, through [redb](https://docs.rs/redb).
///
/// Every write is one transaction committed with an fsync before its future resolves, so a
/// task the gateway acknowledged, or a result it stored, survives the process being killed.
/// A batch of submissions or of results is one transaction, which keeps the cost of the
/// fsync per batch rather than per task. redb is blocking; calls run on Tokio's blocking
/// pool.
///
/// redb keeps a cache of the file's pages in memory: [`RedbStore::open_with_cache`] bounds
/// it (the gateway's `store_cache_mib`), so that the process's memory does not follow the
/// size of the store.
#[derive(Clone)]
pub struct RedbStore {
    /// `None` once closed.
    db: Arc<std::sync::RwLock<Option<Arc<Database>>>>,
    /// Whether opening the file had to repair it: it was not closed cleanly.
    repaired: bool,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::backend(error)
}

fn function_key(id: &FunctionId, owner: &str) -> String {
    format!("{id}/{owner}")
}

impl RedbStore {
    /// The page cache of a store opened with [`RedbStore::open`]: 64 MiB.
    pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

    /// Opens the store at `path`, creating the file if needed, with a page cache of
    /// [`RedbStore::DEFAULT_CACHE_BYTES`].
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        RedbStore::open_with_cache(path, RedbStore::DEFAULT_CACHE_BYTES)
    }

    /// Opens the store at `path` with a page cache of at most `cache_bytes` (redb's default
    /// would be 1 GiB, which a large store fills). A file that was not closed cleanly (the
    /// gateway was killed) is repaired first; [`RedbStore::was_repaired`] says so.
    pub fn open_with_cache(
        path: impl AsRef<Path>,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = repaired.clone();
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::Relaxed))
            .create(path.as_ref())
            .map_err(backend)?;
        // Create every table up front: reads of a table that was never written fail.
        let tx = db.begin_write().map_err(backend)?;
        {
            tx.open_table(USERS).map_err(backend)?;
            tx.open_table(TOKENS).map_err(backend)?;
            tx.open_table(FUNCTIONS).map_err(backend)?;
            tx.open_table(ENDPOINTS).map_err(backend)?;
            tx.open_table(TASKS).map_err(backend)?;
            tx.open_table(UNFINISHED).map_err(backend)?;
            tx.open_table(KEYS).map_err(backend)?;
            tx.open_table(FINISHED).map_err(backend)?;
            tx.open_table(KEY_TIMES).map_err(backend)?;
            tx.open_table(OWNER_TASKS).map_err(backend)?;
            let mut meta = tx.open_table(META).map_err(backend)?;
            if meta.get(INDEXED).map_err(backend)?.is_none() {
                index_times(&tx)?;
                meta.insert(INDEXED, 1).map_err(backend)?;
            }
            if meta.get(OWNERS_INDEXED).map_err(backend)?.is_none() {
                index_owners(&tx)?;
                meta.insert(OWNERS_INDEXED, 1).map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)?;
        Ok(RedbStore {
            db: Arc::new(std::sync::RwLock::new(Some(Arc::new(db)))),
            repaired: repaired.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Whether the file had to be repaired when it was opened: the process that wrote it
    /// last did not close it (it was killed). Nothing committed is lost either way.
    pub fn was_repaired(&self) -> bool {
        self.repaired
    }

    fn database(&self) -> Result<Arc<Database>, StoreError> {
        let db = match self.db.read() {
            Ok(db) => db,
            Err(poisoned) => poisoned.into_inner(),
        };
        db.clone()
            .ok_or_else(|| backend("the store is closed (the gateway is stopping)"))
    }

    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let db = self.database();
        Box::pin(async move {
            let db = db?;
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .map_err(|e| backend(format!("a store operation did not complete: {e}")))?
        })
    }
}

/// Fills the time indexes from the records (once, for a store written before they existed).
fn index_times(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let tasks = tx.open_table(TASKS).map_err(backend)?;
    let mut finished = tx.open_table(FINISHED).map_err(backend)?;
    for entry in tasks.iter().map_err(backend)? {
        let (id, value) = entry.map_err(backend)?;
        if let Ok(record) = decode_task(value.value()) {
            if let Some(at) = record.finished {
                finished
                    .insert((secs(at), id.value()), ())
                    .map_err(backend)?;
            }
        }
    }
    let keys = tx.open_table(KEYS).map_err(backend)?;
    let mut key_times = tx.open_table(KEY_TIMES).map_err(backend)?;
    for entry in keys.iter().map_err(backend)? {
        let (name, value) = entry.map_err(backend)?;
        if let Ok(record) = decode::<KeyRecord>(value.value()) {
            key_times
                .insert((secs(record.created), name.value()), ())
                .map_err(backend)?;
        }
    }
    Ok(())
}

/// Fills the owner index from the records (once, for a store written before it existed).
fn index_owners(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let tasks = tx.open_table(TASKS).map_err(backend)?;
    let mut owners = tx.open_table(OWNER_TASKS).map_err(backend)?;
    for entry in tasks.iter().map_err(backend)? {
        let (id, value) = entry.map_err(backend)?;
        if let Ok(record) = decode_task(value.value()) {
            owners
                .insert((record.owner.as_str(), id.value()), ())
                .map_err(backend)?;
        }
    }
    Ok(())
}

/// Stores and numbers new tasks in `tx`.
fn insert(
    tx: &redb::WriteTransaction,
    tasks: Vec<NewTask>,
    now: SystemTime,
) -> Result<Vec<u64>, StoreError> {
    let mut meta = tx.open_table(META).map_err(backend)?;
    let mut table = tx.open_table(TASKS).map_err(backend)?;
    let mut unfinished = tx.open_table(UNFINISHED).map_err(backend)?;
    let mut owners = tx.open_table(OWNER_TASKS).map_err(backend)?;
    let mut next = meta
        .get(NEXT_TASK)
        .map_err(backend)?
        .map_or(0, |v| v.value());
    let mut ids = Vec::with_capacity(tasks.len());
    for task in tasks {
        next += 1;
        let record = new_record(next, task, now)?;
        table
            .insert(next, encode_task(&record)?.as_slice())
            .map_err(backend)?;
        unfinished.insert(next, ()).map_err(backend)?;
        owners
            .insert((record.owner.as_str(), next), ())
            .map_err(backend)?;
        ids.push(next);
    }
    meta.insert(NEXT_TASK, next).map_err(backend)?;
    Ok(ids)
}

impl TaskStore for RedbStore {
    fn put_user(&self, user: UserRecord) -> StoreFuture<'_, ()> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            {
                let mut users = tx.open_table(USERS).map_err(backend)?;
                let mut tokens = tx.open_table(TOKENS).map_err(backend)?;
                let old = users
                    .get(user.name.as_str())
                    .map_err(backend)?
                    .map(|old| decode::<UserRecord>(old.value()))
                    .transpose()?;
                if let Some(old) = old {
                    tokens.remove(old.token_hash.as_slice()).map_err(backend)?;
                }
                users
                    .insert(user.name.as_str(), encode(&user)?.as_slice())
                    .map_err(backend)?;
                tokens
                    .insert(user.token_hash.as_slice(), user.name.as_str())
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
    }

    fn user_by_token(&self, hash: TokenHash) -> StoreFuture<'_, Option<UserRecord>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let tokens = tx.open_table(TOKENS).map_err(backend)?;
            let Some(name) = tokens.get(hash.as_slice()).map_err(backend)? else {
                return Ok(None);
            };
            let users = tx.open_table(USERS).map_err(backend)?;
            let user = users.get(name.value()).map_err(backend)?;
            user.map(|u| decode(u.value())).transpose()
        })
    }

    fn put_function(&self, function: FunctionRecord) -> StoreFuture<'_, ()> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            {
                let mut table = tx.open_table(FUNCTIONS).map_err(backend)?;
                let key = function_key(&function.id, &function.owner);
                table
                    .insert(key.as_str(), encode_function(&function)?.as_slice())
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
    }

    fn function(&self, id: FunctionId) -> StoreFuture<'_, Vec<FunctionRecord>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(FUNCTIONS).map_err(backend)?;
            // Hex digits then '/', and '0' sorts right after '/': the range is one id's keys.
            let (start, end) = (format!("{id}/"), format!("{id}0"));
            let mut records = Vec::new();
            for entry in table.range(start.as_str()..end.as_str()).map_err(backend)? {
                let (_, value) = entry.map_err(backend)?;
                records.push(decode_function(value.value())?);
            }
            Ok(records)
        })
    }

    fn delete_function(&self, id: FunctionId, owner: &str) -> StoreFuture<'_, bool> {
        let key = function_key(&id, owner);
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            let existed = {
                let mut table = tx.open_table(FUNCTIONS).map_err(backend)?;
                let removed = table.remove(key.as_str()).map_err(backend)?;
                removed.is_some()
            };
            tx.commit().map_err(backend)?;
            Ok(existed)
        })
    }

    fn put_endpoint(&self, endpoint: EndpointRecord) -> StoreFuture<'_, ()> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            {
                let mut table = tx.open_table(ENDPOINTS).map_err(backend)?;
                table
                    .insert(endpoint.id.as_str(), encode(&endpoint)?.as_slice())
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
    }

    fn endpoint(&self, id: &str) -> StoreFuture<'_, Option<EndpointRecord>> {
        let id = id.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(ENDPOINTS).map_err(backend)?;
            let value = table.get(id.as_str()).map_err(backend)?;
            value.map(|v| decode(v.value())).transpose()
        })
    }

    fn delete_endpoint(&self, id: &str) -> StoreFuture<'_, bool> {
        let id = id.to_string();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            let existed = {
                let mut table = tx.open_table(ENDPOINTS).map_err(backend)?;
                let removed = table.remove(id.as_str()).map_err(backend)?;
                removed.is_some()
            };
            tx.commit().map_err(backend)?;
            Ok(existed)
        })
    }

    fn users(&self) -> StoreFuture<'_, Vec<UserRecord>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(USERS).map_err(backend)?;
            let mut records = Vec::new();
            for entry in table.iter().map_err(backend)? {
                let (_, value) = entry.map_err(backend)?;
                records.push(decode(value.value())?);
            }
            Ok(records)
        })
    }

    fn delete_user(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            let existed = {
                let mut users = tx.open_table(USERS).map_err(backend)?;
                let mut tokens = tx.open_table(TOKENS).map_err(backend)?;
                let old = users
                    .remove(name.as_str())
                    .map_err(backend)?
                    .map(|old| decode::<UserRecord>(old.value()))
                    .transpose()?;
                match old {
                    Some(old) => {
                        tokens.remove(old.token_hash.as_slice()).map_err(backend)?;
                        true
                    }
                    None => false,
                }
            };
            tx.commit().map_err(backend)?;
            Ok(existed)
        })
    }

    fn endpoints(&self) -> StoreFuture<'_, Vec<EndpointRecord>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(ENDPOINTS).map_err(backend)?;
            let mut records = Vec::new();
            for entry in table.iter().map_err(backend)? {
                let (_, value) = entry.map_err(backend)?;
                records.push(decode(value.value())?);
            }
            Ok(records)
        })
    }

    fn insert_tasks(&self, tasks: Vec<NewTask>, now: SystemTime) -> StoreFuture<'_, Vec<u64>> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            let ids = insert(&tx, tasks, now)?;
            tx.commit().map_err(backend)?;
            Ok(ids)
        })
    }

    fn insert_tasks_once(
        &self,
        key: IdempotencyKey,
        tasks: Vec<NewTask>,
        now: SystemTime,
    ) -> StoreFuture<'_, Insertion> {
        self.blocking(move |db| {
            let name = encode(&(&key.owner, &key.key))?;
            // redb has one writer at a time: two sends of one key cannot both miss it here.
            let tx = db.begin_write().map_err(backend)?;
            let seen = {
                let keys = tx.open_table(KEYS).map_err(backend)?;
                let value = keys.get(name.as_slice()).map_err(backend)?;
                value.map(|v| decode::<KeyRecord>(v.value())).transpose()?
            };
            if let Some(seen) = seen {
                tx.abort().map_err(backend)?;
                return Ok(seen.answer(&key));
            }
            let ids = insert(&tx, tasks, now)?;
            {
                let mut keys = tx.open_table(KEYS).map_err(backend)?;
                let record = KeyRecord {
                    fingerprint: key.fingerprint,
                    first: ids.first().copied().unwrap_or(0),
                    count: ids.len() as u64,
                    created: now,
                };
                keys.insert(name.as_slice(), encode(&record)?.as_slice())
                    .map_err(backend)?;
                let mut key_times = tx.open_table(KEY_TIMES).map_err(backend)?;
                key_times
                    .insert((secs(now), name.as_slice()), ())
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(Insertion::Created(ids))
        })
    }

    fn task(&self, id: u64) -> StoreFuture<'_, Option<TaskRecord>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(TASKS).map_err(backend)?;
            let value = table.get(id).map_err(backend)?;
            value.map(|v| decode_task(v.value())).transpose()
        })
    }

    fn tasks_of(
        &self,
        owner: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, TaskPage> {
        let owner = owner.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let owners = tx.open_table(OWNER_TASKS).map_err(backend)?;
            let table = tx.open_table(TASKS).map_err(backend)?;
            let end = before.unwrap_or(u64::MAX);
            let range = owners
                .range((owner.as_str(), 0)..(owner.as_str(), end))
                .map_err(backend)?;
            let records = range.rev().filter_map(|entry| {
                let id = match entry {
                    Ok((key, _)) => key.value().1,
                    Err(error) => return Some(Err(backend(error))),
                };
                match table.get(id) {
                    Ok(Some(value)) => {
                        let bytes = value.value();
                        match decode_task(bytes) {
                            Ok(record) => Some(Ok((record, bytes.len()))),
                            // One bad record does not hide the others; expiry leaves it too.
                            Err(error) => {
                                tracing::warn!(task = id, %error, "a task record does not decode; not listed");
                                None
                            }
                        }
                    }
                    // Deleted in the meantime.
                    Ok(None) => None,
                    Err(error) => Some(Err(backend(error))),
                }
            });
            page(records, limit)
        })
    }

    fn finish(&self, outcomes: Vec<Finished>, now: SystemTime) -> StoreFuture<'_, Vec<TaskRecord>> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            let done = {
                let mut table = tx.open_table(TASKS).map_err(backend)?;
                let mut unfinished = tx.open_table(UNFINISHED).map_err(backend)?;
                let mut by_time = tx.open_table(FINISHED).map_err(backend)?;
                let mut done = Vec::new();
                for outcome in outcomes {
                    let id = outcome.id;
                    let existing = table
                        .get(id)
                        .map_err(backend)?
                        .map(|v| decode_task(v.value()))
                        .transpose()?;
                    let Some(mut record) = existing else { continue };
                    if apply(&mut record, outcome, now) {
                        table
                            .insert(id, encode_task(&record)?.as_slice())
                            .map_err(backend)?;
                        unfinished.remove(id).map_err(backend)?;
                        by_time.insert((secs(now), id), ()).map_err(backend)?;
                        done.push(record);
                    }
                }
                done
            };
            if done.is_empty() {
                // Nothing changed (every outcome was known already): no write, no fsync.
                tx.abort().map_err(backend)?;
            } else {
                tx.commit().map_err(backend)?;
            }
            Ok(done)
        })
    }

    fn delete_task(&self, id: u64) -> StoreFuture<'_, bool> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            let existed = {
                let mut table = tx.open_table(TASKS).map_err(backend)?;
                let mut unfinished = tx.open_table(UNFINISHED).map_err(backend)?;
                let mut owners = tx.open_table(OWNER_TASKS).map_err(backend)?;
                unfinished.remove(id).map_err(backend)?;
                let removed = table.remove(id).map_err(backend)?;
                let owner = removed
                    .as_ref()
                    .and_then(|value| decode_task(value.value()).ok())
                    .map(|record| record.owner);
                if let Some(owner) = owner {
                    owners.remove((owner.as_str(), id)).map_err(backend)?;
                }
                removed.is_some()
            };
            tx.commit().map_err(backend)?;
            Ok(existed)
        })
    }

    fn unfinished_tasks(&self) -> StoreFuture<'_, Vec<TaskRecord>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let unfinished = tx.open_table(UNFINISHED).map_err(backend)?;
            let table = tx.open_table(TASKS).map_err(backend)?;
            let mut records = Vec::new();
            for entry in unfinished.iter().map_err(backend)? {
                let (id, _) = entry.map_err(backend)?;
                if let Some(value) = table.get(id.value()).map_err(backend)? {
                    records.push(decode_task(value.value())?);
                }
            }
            Ok(records)
        })
    }

    fn expire(&self, now: SystemTime, ttl: Duration) -> StoreFuture<'_, usize> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            // Only what the time indexes name as old enough is read: expiry costs what it
            // removes, not the size of the store.
            let cutoff = now.checked_sub(ttl).map_or(0, secs).saturating_add(1);
            let count = {
                let mut table = tx.open_table(TASKS).map_err(backend)?;
                let mut by_time = tx.open_table(FINISHED).map_err(backend)?;
                let mut owners = tx.open_table(OWNER_TASKS).map_err(backend)?;
                let mut candidates = Vec::new();
                for entry in by_time.range((0, 0)..(cutoff, 0)).map_err(backend)? {
                    let (key, _) = entry.map_err(backend)?;
                    candidates.push(key.value());
                }
                let mut stale = 0;
                for (at, id) in candidates {
                    let record = table
                        .get(id)
                        .map_err(backend)?
                        .map(|value| decode_task(value.value()));
                    match record {
                        // A record that does not decode is left for someone to look at.
                        Some(Err(_)) => continue,
                        Some(Ok(record)) if !expired(&record, now, ttl) => continue,
                        Some(Ok(record)) => {
                            table.remove(id).map_err(backend)?;
                            owners
                                .remove((record.owner.as_str(), id))
                                .map_err(backend)?;
                            stale += 1;
                        }
                        // Deleted earlier: only its index entry was left.
                        None => {}
                    }
                    by_time.remove((at, id)).map_err(backend)?;
                }
                let mut keys = tx.open_table(KEYS).map_err(backend)?;
                let mut key_times = tx.open_table(KEY_TIMES).map_err(backend)?;
                let mut old_keys = Vec::new();
                for entry in key_times
                    .range((0, [].as_slice())..(cutoff, [].as_slice()))
                    .map_err(backend)?
                {
                    let (key, _) = entry.map_err(backend)?;
                    let (at, name) = key.value();
                    old_keys.push((at, name.to_vec()));
                }
                for (at, name) in &old_keys {
                    let created = keys
                        .get(name.as_slice())
                        .map_err(backend)?
                        .and_then(|value| decode::<KeyRecord>(value.value()).ok())
                        .map(|record| record.created);
                    if created.is_some_and(|created| {
                        now.duration_since(created).is_ok_and(|age| age <= ttl)
                    }) {
                        continue;
                    }
                    keys.remove(name.as_slice()).map_err(backend)?;
                    key_times.remove((*at, name.as_slice())).map_err(backend)?;
                }
                stale
            };
            tx.commit().map_err(backend)?;
            Ok(count)
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        let taken = match self.db.write() {
            Ok(mut db) => db.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        Box::pin(async move {
            let Some(mut db) = taken else {
                return Ok(());
            };
            // Operations under way hold the database; each is one short transaction.
            let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        // Dropping it writes redb's allocator state: the next open needs no
                        // repair.
                        return tokio::task::spawn_blocking(move || drop(db))
                            .await
                            .map_err(|e| backend(format!("closing the store failed: {e}")));
                    }
                    Err(shared) if tokio::time::Instant::now() < deadline => {
                        db = shared;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(_) => {
                        return Err(backend(format!(
                            "the store was still in use after {CLOSE_WAIT:?}; not closed cleanly"
                        )))
                    }
                }
            }
        })
    }
}

/// How long [`TaskStore::close`] waits for the operations under way.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests;
