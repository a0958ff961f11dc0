//! [`MemoryStore`]: everything in the process, nothing on disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use funcx_core::FunctionId;

use super::{
    apply, expired, new_record, page, EndpointRecord, Finished, FunctionRecord, IdempotencyKey,
    Insertion, KeyRecord, NewTask, StoreError, StoreFuture, TaskPage, TaskRecord, TaskStore,
    TokenHash, UserRecord,
};

/// A store that lives and dies with the process: for tests, demos, and gateways whose tasks
/// need not survive a restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<TokenHash, UserRecord>,
    functions: BTreeMap<(FunctionId, String), FunctionRecord>,
    endpoints: BTreeMap<String, EndpointRecord>,
    tasks: BTreeMap<u64, TaskRecord>,
    /// (owner, key) → what the key created.
    keys: HashMap<(String, String), KeyRecord>,
    next_task: u64,
}

impl State {
    fn insert(&mut self, tasks: Vec<NewTask>, now: SystemTime) -> Result<Vec<u64>, StoreError> {
        let first = self.next_task + 1;
        let records = tasks
            .into_iter()
            .zip(first..)
            .map(|(task, id)| new_record(id, task, now))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
        self.next_task += records.len() as u64;
        self.tasks.extend(records.into_iter().map(|r| (r.id, r)));
        Ok(ids)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::backend("the memory store's lock was poisoned"))
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> StoreFuture<'_, T> {
        let result = self.lock().and_then(|mut state| f(&mut state));
        Box::pin(std::future::ready(result))
    }
}

impl TaskStore for MemoryStore {
    fn put_user(&self, user: UserRecord) -> StoreFuture<'_, ()> {
        self.run(move |s| {
            s.users.retain(|_, u| u.name != user.name);
            s.users.insert(user.token_hash, user);
            Ok(())
        })
    }

    fn user_by_token(&self, hash: TokenHash) -> StoreFuture<'_, Option<UserRecord>> {
        self.run(move |s| Ok(s.users.get(&hash).cloned()))
    }

    fn users(&self) -> StoreFuture<'_, Vec<UserRecord>> {
        self.run(move |s| Ok(s.users.values().cloned().collect()))
    }

    fn delete_user(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        self.run(move |s| {
            let before = s.users.len();
            s.users.retain(|_, u| u.name != name);
            Ok(s.users.len() != before)
        })
    }

    fn put_function(&self, function: FunctionRecord) -> StoreFuture<'_, ()> {
        self.run(move |s| {
            s.functions
                .insert((function.id, function.owner.clone()), function);
            Ok(())
        })
    }

    fn function(&self, id: FunctionId) -> StoreFuture<'_, Vec<FunctionRecord>> {
        self.run(move |s| {
            Ok(s.functions
                .range((id, String::new())..)
                .take_while(|((fid, _), _)| *fid == id)
                .map(|(_, record)| record.clone())
                .collect())
        })
    }

    fn delete_function(&self, id: FunctionId, owner: &str) -> StoreFuture<'_, bool> {
        let owner = owner.to_string();
        self.run(move |s| Ok(s.functions.remove(&(id, owner)).is_some()))
    }

    fn put_endpoint(&self, endpoint: EndpointRecord) -> StoreFuture<'_, ()> {
        self.run(move |s| {
            s.endpoints.insert(endpoint.id.clone(), endpoint);
            Ok(())
        })
    }

    fn endpoint(&self, id: &str) -> StoreFuture<'_, Option<EndpointRecord>> {
        let id = id.to_string();
        self.run(move |s| Ok(s.endpoints.get(&id).cloned()))
    }

    fn delete_endpoint(&self, id: &str) -> StoreFuture<'_, bool> {
        let id = id.to_string();
        self.run(move |s| Ok(s.endpoints.remove(&id).is_some()))
    }

    fn endpoints(&self) -> StoreFuture<'_, Vec<EndpointRecord>> {
        self.run(|s| Ok(s.endpoints.values().cloned().collect()))
    }

    fn insert_tasks(&self, tasks: Vec<NewTask>, now: SystemTime) -> StoreFuture<'_, Vec<u64>> {
        self.run(move |s| s.insert(tasks, now))
    }

    fn insert_tasks_once(
        &self,
        key: IdempotencyKey,
        tasks: Vec<NewTask>,
        now: SystemTime,
    ) -> StoreFuture<'_, Insertion> {
        self.run(move |s| {
            let name = (key.owner.clone(), key.key.clone());
            if let Some(seen) = s.keys.get(&name) {
                return Ok(seen.answer(&key));
            }
            let ids = s.insert(tasks, now)?;
            s.keys.insert(
                name,
                KeyRecord {
                    fingerprint: key.fingerprint,
                    first: ids.first().copied().unwrap_or(0),
                    count: ids.len() as u64,
                    created: now,
                },
            );
            Ok(Insertion::Created(ids))
        })
    }

    fn task(&self, id: u64) -> StoreFuture<'_, Option<TaskRecord>> {
        self.run(move |s| Ok(s.tasks.get(&id).cloned()))
    }

    fn tasks_of(
        &self,
        owner: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, TaskPage> {
        let owner = owner.to_string();
        self.run(move |s| {
            // A scan of the whole map: a memory store is small by nature.
            let records = s
                .tasks
                .range(..before.unwrap_or(u64::MAX))
                .rev()
                .filter(|(_, t)| t.owner == owner)
                .map(|(_, t)| {
                    let result = match &t.result {
                        Some(Ok(payload)) => payload.as_bytes().len(),
                        _ => 0,
                    };
                    Ok((t.clone(), t.args.len() + result))
                });
            page(records, limit)
        })
    }

    fn finish(&self, outcomes: Vec<Finished>, now: SystemTime) -> StoreFuture<'_, Vec<TaskRecord>> {
        self.run(move |s| {
            let mut done = Vec::new();
            for outcome in outcomes {
                if let Some(record) = s.tasks.get_mut(&outcome.id) {
                    if apply(record, outcome, now) {
                        done.push(record.clone());
                    }
                }
            }
            Ok(done)
        })
    }

    fn delete_task(&self, id: u64) -> StoreFuture<'_, bool> {
        self.run(move |s| Ok(s.tasks.remove(&id).is_some()))
    }

    fn unfinished_tasks(&self) -> StoreFuture<'_, Vec<TaskRecord>> {
        self.run(|s| {
            Ok(s.tasks
                .values()
                .filter(|t| t.result.is_none())
                .cloned()
                .collect())
        })
    }

    fn expire(&self, now: SystemTime, ttl: Duration) -> StoreFuture<'_, usize> {
        self.run(move |s| {
            let before = s.tasks.len();
            s.tasks.retain(|_, t| !expired(t, now, ttl));
            s.keys
                .retain(|_, k| now.duration_since(k.created).map_or(true, |age| age <= ttl));
            Ok(before - s.tasks.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_store_contract() {
        super::super::tests::contract(&MemoryStore::new()).await;
    }
}
