//! Each result an endpoint delivers is written to the store once: its connection's keeper
//! and its executor's report both reach the gateway, and only one of them writes it. A
//! store wrapper counts, per task, the outcomes handed to `finish` and the records it
//! finished; with PostgreSQL (feature `postgres`) a second write of a result was a
//! `duplicate key` error redone as `INSERT … ON CONFLICT`, so every call must finish all it
//! was given.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{config, ALICE};
use funcx_core::FunctionId;
use funcx_gateway::store::{
    EndpointRecord, Finished, Fleet, FunctionRecord, IdempotencyKey, Insertion, MemoryStore,
    NewTask, StoreFuture, TaskPage, TaskRecord, TaskStore, TokenHash, UserRecord,
};
use serde_json::json;

/// Tasks per test: enough batches of results that the keeper and the report writer meet.
const TASKS: usize = 4_000;

/// What [`Counting`] saw of `finish`.
#[derive(Default)]
struct Finishes {
    /// Per task id, how many outcomes `finish` was handed for it.
    written: HashMap<u64, usize>,
    /// Per task id, how many calls finished it.
    finished: HashMap<u64, usize>,
    /// Calls that finished fewer tasks than they were handed.
    short_calls: usize,
}

/// A store that counts the outcomes written through it, and otherwise is `inner`.
struct Counting<S> {
    inner: S,
    finishes: Arc<Mutex<Finishes>>,
}

impl<S: TaskStore> TaskStore for Counting<S> {
    fn put_user(&self, user: UserRecord) -> StoreFuture<'_, ()> {
        self.inner.put_user(user)
    }
    fn user_by_token(&self, hash: TokenHash) -> StoreFuture<'_, Option<UserRecord>> {
        self.inner.user_by_token(hash)
    }
    fn users(&self) -> StoreFuture<'_, Vec<UserRecord>> {
        self.inner.users()
    }
    fn delete_user(&self, name: &str) -> StoreFuture<'_, bool> {
        self.inner.delete_user(name)
    }
    fn put_function(&self, function: FunctionRecord) -> StoreFuture<'_, ()> {
        self.inner.put_function(function)
    }
    fn function(&self, id: FunctionId) -> StoreFuture<'_, Vec<FunctionRecord>> {
        self.inner.function(id)
    }
    fn delete_function(&self, id: FunctionId, owner: &str) -> StoreFuture<'_, bool> {
        self.inner.delete_function(id, owner)
    }
    fn put_endpoint(&self, endpoint: EndpointRecord) -> StoreFuture<'_, ()> {
        self.inner.put_endpoint(endpoint)
    }
    fn endpoint(&self, id: &str) -> StoreFuture<'_, Option<EndpointRecord>> {
        self.inner.endpoint(id)
    }
    fn endpoints(&self) -> StoreFuture<'_, Vec<EndpointRecord>> {
        self.inner.endpoints()
    }
    fn delete_endpoint(&self, id: &str) -> StoreFuture<'_, bool> {
        self.inner.delete_endpoint(id)
    }
    fn insert_tasks(&self, tasks: Vec<NewTask>, now: SystemTime) -> StoreFuture<'_, Vec<u64>> {
        self.inner.insert_tasks(tasks, now)
    }
    fn insert_tasks_once(
        &self,
        key: IdempotencyKey,
        tasks: Vec<NewTask>,
        now: SystemTime,
    ) -> StoreFuture<'_, Insertion> {
        self.inner.insert_tasks_once(key, tasks, now)
    }
    fn task(&self, id: u64) -> StoreFuture<'_, Option<TaskRecord>> {
        self.inner.task(id)
    }
    fn tasks_of(
        &self,
        owner: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, TaskPage> {
        self.inner.tasks_of(owner, before, limit)
    }
    fn finish(&self, outcomes: Vec<Finished>, now: SystemTime) -> StoreFuture<'_, Vec<TaskRecord>> {
        let ids: Vec<u64> = outcomes.iter().map(|outcome| outcome.id).collect();
        let finishes = self.finishes.clone();
        let write = self.inner.finish(outcomes, now);
        Box::pin(async move {
            let records = write.await?;
            let mut finishes = finishes.lock().expect("the counts' lock");
            for id in &ids {
                *finishes.written.entry(*id).or_default() += 1;
            }
            for record in &records {
                *finishes.finished.entry(record.id).or_default() += 1;
            }
            if records.len() < ids.len() {
                finishes.short_calls += 1;
            }
            Ok(records)
        })
    }
    fn delete_task(&self, id: u64) -> StoreFuture<'_, bool> {
        self.inner.delete_task(id)
    }
    fn unfinished_tasks(&self) -> StoreFuture<'_, Vec<TaskRecord>> {
        self.inner.unfinished_tasks()
    }
    fn expire(&self, now: SystemTime, ttl: Duration) -> StoreFuture<'_, usize> {
        self.inner.expire(now, ttl)
    }
    fn fleet(&self) -> Option<&dyn Fleet> {
        self.inner.fleet()
    }
    fn close(&self) -> StoreFuture<'_, ()> {
        self.inner.close()
    }
}

/// Runs [`TASKS`] echo tasks through a gateway on `store` with an endpoint connected, and
/// asserts that each result was written once, by a call that finished it.
async fn each_result_is_written_once(store: impl TaskStore) {
    let finishes = Arc::new(Mutex::new(Finishes::default()));
    let store = Arc::new(Counting {
        inner: store,
        finishes: finishes.clone(),
    });
    let gateway = common::builder(config())
        .store(store.clone())
        .start()
        .await
        .expect("the gateway starts");
    let gw = common::serve(gateway).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let connection = gw.connect(&endpoint, &token);

    let mut ids = Vec::with_capacity(TASKS);
    for chunk in (0..TASKS as i64).collect::<Vec<_>>().chunks(500) {
        let (status, value) = gw.submit(ALICE, &endpoint, &function, chunk).await;
        assert!(status.is_success(), "{value}");
        ids.extend(common::ids(&value));
    }
    assert_eq!(ids.len(), TASKS);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let finished = finishes.lock().expect("the counts' lock").finished.len();
        if finished == TASKS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{finished} of {TASKS} tasks finished within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every result is stored: the last one can be waited for through the API as well.
    let last = gw.wait(ALICE, ids[TASKS - 1]).await;
    assert_eq!(last["state"], "succeeded", "{last}");

    // A second write of a result could still be on its way: the counts are read once the
    // gateway is gone and every write it started has ended (each holds the gateway's
    // state, hence the store).
    connection.abort();
    drop(gw);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while Arc::strong_count(&store) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway's writes did not end within 60 s of its drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Taken out of the lock, so that a failed assertion does not poison it for the
    // gateway's writes still running.
    let finishes = std::mem::take(&mut *finishes.lock().expect("the counts' lock"));
    let twice: Vec<(u64, usize)> = finishes
        .written
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    assert!(
        twice.is_empty(),
        "{} of {TASKS} results were written more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    for id in &ids {
        assert_eq!(finishes.finished.get(id), Some(&1), "task {id}");
    }
    assert_eq!(
        finishes.short_calls, 0,
        "a write met results stored already"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_result_is_written_once_to_a_store_in_memory() {
    each_result_is_written_once(MemoryStore::new()).await;
}

/// The test database (`scripts/infra/postgres-up.sh`), or `FUNCX_TEST_PG`.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_result_is_written_once_to_postgresql() {
    use funcx_gateway::store::{PgOptions, PgStore};
    let url = std::env::var("FUNCX_TEST_PG")
        .unwrap_or_else(|_| "postgres://funcx:funcx@127.0.0.1:5432/funcx".into());
    let options = PgOptions::new(url).schema(format!("results_once_{}", std::process::id()));
    PgStore::drop_schema(&options)
        .await
        .expect("the test PostgreSQL (scripts/infra/postgres-up.sh) accepts connections");
    let store = PgStore::connect_with(options)
        .await
        .expect("open the test store");
    each_result_is_written_once(store).await;
}
