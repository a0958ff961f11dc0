//! [`PgStore`]: the gateway's state in PostgreSQL, shared by several gateways.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use std::sync::{Arc, Mutex};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use funcx_core::{FunctionId, Resources, TaskState, Timeline};
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls, Row};

mod fleet;
mod listen;
mod migrations;
mod tasks;

use self::migrations::{MIGRATIONS, MIGRATION_LOCK};
use super::fleet::{Fleet, FleetEvent};
use super::{
    decode, decode_function, encode, encode_function, new_record, page, settled, EndpointRecord,
    Finished, FunctionRecord, IdempotencyKey, Insertion, NewTask, StoreError, StoreFuture,
    TaskPage, TaskRecord, TaskStore, TokenHash, UserRecord,
};

/// The columns of a task (of view `task_rows`), in the order [`task_of_row`] reads them.
const TASK_COLUMNS: &str = "id, owner, endpoint, function, args, timeout_ms, state, timeline, \
     result, created, finished, cores, gpus, memory, nodes";

/// How a [`PgStore`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// A libpq-style URL or key/value string (`postgres://user:pass@host:5432/db`).
    pub url: String,
    /// The schema the tables live in (created if missing); `None` for the database's
    /// default (`public`). Several deployments, or tests running in parallel, can share one
    /// database this way.
    pub schema: Option<String>,
    /// The most connections the pool opens (default 16).
    pub pool_size: usize,
}

impl PgOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            schema: None,
            pool_size: 16,
        }
    }

    /// Puts the tables in `schema`.
    pub fn schema(mut self, schema: impl Into<String>) -> PgOptions {
        self.schema = Some(schema.into());
        self
    }

    /// The parsed connection configuration, with the schema as the search path.
    fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| StoreError::backend(format!("the PostgreSQL URL does not parse: {e}")))?;
        if let Some(schema) = &self.schema {
            check_schema(schema)?;
            config.options(format!("-c search_path={schema}"));
        }
        if config.get_application_name().is_none() {
            config.application_name("funcx-gateway");
        }
        config.connect_timeout(Duration::from_secs(10));
        Ok(config)
    }
}

/// Schema names are put into SQL text (`CREATE SCHEMA`, `search_path`): only plain
/// identifiers are taken, so none needs quoting.
fn check_schema(schema: &str) -> Result<(), StoreError> {
    let plain = !schema.is_empty()
        && schema.len() <= 48
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if plain {
        Ok(())
    } else {
        Err(StoreError::backend(format!(
            "schema {schema:?}: only lowercase letters, digits and '_' (not first), at most 48"
        )))
    }
}

/// A store in PostgreSQL, through a pool of [tokio-postgres] connections.
///
/// Every write is one transaction committed before its future resolves (PostgreSQL's
/// commit waits for its WAL flush with the default `synchronous_commit`), so what the
/// gateway acknowledged survives the gateway, and the database server, being killed.
/// Several gateways can share one database: task ids come from a sequence, a task's
/// result is stored once (the primary key of `results` decides which finish stores it),
/// and idempotency keys are a primary key, so two gateways never both create for one key.
/// A task row is written once; a task claimed as it is stored says so in its row
/// (`claimed_by`), other unfinished tasks and their claims are rows of `pending`, results
/// are rows of `results` (migrations 6 and 7), and `task_rows` reads a task whole. Tasks
/// and results are written with `COPY ... FROM STDIN (FORMAT binary)`.
///
/// The schema is created and migrated when the store is opened ([`PgStore::connect`]):
/// table `schema_migrations` records the versions applied.
///
/// [tokio-postgres]: https://docs.rs/tokio-postgres
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: Pool,
    /// How the listener connects (the pool's configuration).
    config: tokio_postgres::Config,
    /// This store's name in claims and notifications: random, one per process.
    member: String,
    /// The notification channels, per schema: deployments sharing a database do not hear
    /// each other (`funcx_tasks_<schema>`, `funcx_results_<schema>`).
    channels: Channels,
    /// The listener's channel, once somebody subscribed.
    listener: Arc<Mutex<Option<broadcast::Sender<FleetEvent>>>>,
}

#[derive(Clone, Debug)]
struct Channels {
    tasks: String,
    results: String,
}

/// How many task ids one result notification names: a payload is at most 8,000 bytes.
const IDS_PER_NOTIFICATION: usize = 400;

fn pg(error: tokio_postgres::Error) -> StoreError {
    // The server's own message (a constraint, a lost connection) says more than Display's
    // "db error".
    match error.as_db_error() {
        Some(db) => StoreError::backend(format!("PostgreSQL: {db}")),
        None => match std::error::Error::source(&error) {
            Some(source) => StoreError::backend(format!("PostgreSQL: {error}: {source}")),
            None => StoreError::backend(format!("PostgreSQL: {error}")),
        },
    }
}

/// Task ids are `u64` in the API and `bigint` in the table; the sequence starts at 1.
fn id_to_sql(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn id_from_sql(id: i64) -> Result<u64, StoreError> {
    u64::try_from(id).map_err(|_| StoreError::corrupt(format!("negative task id {id}")))
}

/// `time` to the whole microsecond below: the precision of a PostgreSQL `timestamptz`, in
/// which a task's acceptance time is kept.
fn to_micros(time: SystemTime) -> SystemTime {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => SystemTime::UNIX_EPOCH + Duration::from_micros(since.as_micros() as u64),
        Err(_) => time,
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn task_of_row(row: &Row) -> Result<(TaskRecord, usize), StoreError> {
    let id: i64 = row.try_get(0).map_err(pg)?;
    let id = id_from_sql(id)?;
    let function: Vec<u8> = row.try_get(3).map_err(pg)?;
    let function: [u8; 32] = function
        .try_into()
        .map_err(|_| StoreError::corrupt(format!("task {id}: a function id is 32 bytes")))?;
    let args: Vec<u8> = row.try_get(4).map_err(pg)?;
    let timeout: Option<i64> = row.try_get(5).map_err(pg)?;
    let state: Vec<u8> = row.try_get(6).map_err(pg)?;
    let timeline: Vec<u8> = row.try_get(7).map_err(pg)?;
    let result: Option<Vec<u8>> = row.try_get(8).map_err(pg)?;
    let created: SystemTime = row.try_get(9).map_err(pg)?;
    // Always the gateway's acceptance: a finish stores the endpoint executor's timeline as
    // it came (see `finish`), whose own submission time is later.
    let timeline = Timeline {
        submitted: created,
        ..decode::<Timeline>(&timeline)?
    };
    let size = args.len() + result.as_ref().map_or(0, Vec::len);
    let record = TaskRecord {
        id,
        owner: row.try_get(1).map_err(pg)?,
        endpoint: row.try_get(2).map_err(pg)?,
        function: FunctionId::from_bytes(function),
        args,
        timeout: timeout.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
        state: decode::<TaskState>(&state)?,
        timeline,
        result: result.as_deref().map(decode).transpose()?,
        created,
        finished: row.try_get(10).map_err(pg)?,
        resources: resources_of_row(row, id)?,
    };
    Ok((record, size))
}

/// What a task row asks for: `None` (all four columns NULL) for a plain task.
fn resources_of_row(row: &Row, id: u64) -> Result<Option<Resources>, StoreError> {
    let cores: Option<i64> = row.try_get(11).map_err(pg)?;
    let gpus: Option<i64> = row.try_get(12).map_err(pg)?;
    let memory: Option<i64> = row.try_get(13).map_err(pg)?;
    let nodes: Option<i64> = row.try_get(14).map_err(pg)?;
    if cores.is_none() && gpus.is_none() && memory.is_none() && nodes.is_none() {
        return Ok(None);
    }
    let bad = |what: &str, value: i64| {
        StoreError::corrupt(format!("task {id}: {value} is not a number of {what}"))
    };
    let count = |what: &str, value: Option<i64>, default: u32| match value {
        None => Ok(default),
        Some(value) => u32::try_from(value).map_err(|_| bad(what, value)),
    };
    Ok(Some(Resources {
        cores: count("cores", cores, 1)?,
        gpus: count("GPUs", gpus, 0)?,
        memory: match memory {
            None => 0,
            Some(value) => u64::try_from(value).map_err(|_| bad("bytes", value))?,
        },
        nodes: count("nodes", nodes, 0)?,
    }))
}

/// What a task asks for as its row's columns (`cores`, `gpus`, `memory`, `nodes`): NULLs
/// for a plain task, and `nodes` NULL for a task that holds no whole nodes.
fn resources_to_row(resources: Option<&Resources>) -> Result<[Option<i64>; 4], StoreError> {
    let Some(resources) = resources else {
        return Ok([None; 4]);
    };
    let memory = i64::try_from(resources.memory).map_err(|_| {
        StoreError::backend(format!(
            "{} bytes of memory is more than the store can keep",
            resources.memory
        ))
    })?;
    Ok([
        Some(i64::from(resources.cores)),
        Some(i64::from(resources.gpus)),
        Some(memory),
        (resources.nodes > 0).then(|| i64::from(resources.nodes)),
    ])
}

impl PgStore {
    /// Connects to the database `url` names (with the default [`PgOptions`]) and brings its
    /// schema up to date.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::connect_with(PgOptions::new(url)).await
    }

    /// Connects as `options` say and brings the schema up to date.
    pub async fn connect_with(options: PgOptions) -> Result<PgStore, StoreError> {
        let config = options.config()?;
        if let Some(schema) = &options.schema {
            // The pool's connections look in the schema; it must exist before they do.
            let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
            let driver = tokio::spawn(connection);
            let created = client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await;
            drop(client);
            let _ = driver.await;
            if let Err(error) = created {
                // Two stores creating one schema at once: the loser's unique violation
                // means it exists, which is what was asked.
                if error.code() != Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    return Err(pg(error));
                }
            }
        }
        let schema = options.schema.as_deref().unwrap_or("public");
        let channels = Channels {
            tasks: format!("funcx_tasks_{schema}"),
            results: format!("funcx_results_{schema}"),
        };
        let member = crate::auth::new_id()?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .build()
            .map_err(StoreError::backend)?;
        let store = PgStore {
            pool,
            config,
            member,
            channels,
            listener: Arc::new(Mutex::new(None)),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Drops `options.schema` and everything in it (nothing if it does not exist): a
    /// deployment taken down, or a test's schema emptied before it starts. Refuses to drop
    /// the default schema (`options.schema` is `None`).
    pub async fn drop_schema(options: &PgOptions) -> Result<(), StoreError> {
        let Some(schema) = &options.schema else {
            return Err(StoreError::backend(
                "no schema named: the default one is not dropped",
            ));
        };
        let config = options.config()?;
        let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
        let driver = tokio::spawn(connection);
        let dropped = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
        drop(client);
        let _ = driver.await;
        dropped.map_err(pg)
    }

    /// The schema versions applied, oldest first.
    pub async fn schema_versions(&self) -> Result<Vec<i32>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(|row| row.try_get(0).map_err(pg)).collect()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::backend(format!("no PostgreSQL connection: {e}")))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                applied timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg)?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.try_get(0).map_err(pg))
            .collect::<Result<_, _>>()?;
        let newest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        if let Some(unknown) = applied.iter().find(|v| **v > newest) {
            return Err(StoreError::backend(format!(
                "the database's schema is version {unknown}, newer than this gateway's {newest}: upgrade the gateway"
            )));
        }
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg)?;
            tracing::info!(version, "applied a schema migration");
        }
        tx.commit().await.map_err(pg)
    }

    fn run<'a, T: Send + 'a>(
        &'a self,
        f: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        Box::pin(f)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::listen::{finished_elsewhere, stored_elsewhere};
    use super::*;

    /// The test database (`scripts/infra/postgres-up.sh`), or `FUNCX_TEST_PG`.
    pub(crate) fn test_url() -> String {
        std::env::var("FUNCX_TEST_PG")
            .unwrap_or_else(|_| "postgres://funcx:funcx@127.0.0.1:5432/funcx".into())
    }

    /// A store in a schema of its own, so that tests run in parallel on one database.
    pub(crate) async fn fresh(name: &str) -> PgStore {
        let options =
            PgOptions::new(test_url()).schema(format!("test_{name}_{}", std::process::id()));
        PgStore::drop_schema(&options)
            .await
            .expect("the test PostgreSQL (scripts/infra/postgres-up.sh) accepts connections");
        PgStore::connect_with(options)
            .await
            .expect("open the test store")
    }

    /// Another gateway's store on the schema [`fresh`]`(name)` made.
    async fn another_gateway(name: &str) -> PgStore {
        let options =
            PgOptions::new(test_url()).schema(format!("test_{name}_{}", std::process::id()));
        PgStore::connect_with(options)
            .await
            .expect("open the test store again")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_the_store_contract() {
        let store = fresh("contract").await;
        super::super::tests::contract(&store).await;
        assert_eq!(
            store.schema_versions().await.unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_run_once_and_a_newer_schema_is_refused() {
        let store = fresh("migrations").await;
        let options =
            PgOptions::new(test_url()).schema(format!("test_migrations_{}", std::process::id()));
        // Opened again (another gateway): nothing applied twice, the data is there.
        store
            .put_user(UserRecord {
                name: "alice".into(),
                token_hash: super::super::hash_token("a"),
            })
            .await
            .unwrap();
        let again = PgStore::connect_with(options.clone()).await.unwrap();
        assert_eq!(
            again.schema_versions().await.unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(again.users().await.unwrap().len(), 1);
        // A database migrated by a newer gateway is not written by this one.
        let client = again.client().await.unwrap();
        client
            .execute("INSERT INTO schema_migrations (version) VALUES (999)", &[])
            .await
            .unwrap();
        drop(client);
        let error = PgStore::connect_with(options).await.unwrap_err();
        assert!(error.to_string().contains("upgrade the gateway"), "{error}");
    }

    /// A fresh schema `{name}_{pid}` migrated as a gateway of `version` left it, its options,
    /// and a connection to it (its driver task alongside) for writing rows of that version.
    async fn schema_at(
        name: &str,
        version: i32,
    ) -> (
        PgOptions,
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        let schema = format!("{name}_{}", std::process::id());
        let options = PgOptions::new(test_url()).schema(schema.clone());
        PgStore::drop_schema(&options).await.unwrap();
        let (client, connection) = tokio_postgres::connect(&test_url(), NoTls).await.unwrap();
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path = {schema};
                 CREATE TABLE schema_migrations (version integer PRIMARY KEY,
                                                 applied timestamptz NOT NULL DEFAULT now())"
            ))
            .await
            .unwrap();
        for (applied, sql) in MIGRATIONS.iter().filter(|(applied, _)| *applied <= version) {
            client.batch_execute(sql).await.unwrap();
            client
                .execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[applied],
                )
                .await
                .unwrap();
        }
        (options, client, driver)
    }

    /// A schema left by a gateway of version 5 (task rows holding their results and claims)
    /// migrates to `pending` and `results` with every task as it was: a finished one keeps
    /// its result and is not finished again, a dead gateway's claim is taken over, an
    /// unclaimed task is claimed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_5_schema_migrates_with_its_tasks() {
        let (options, client, driver) = schema_at("test_from_v5", 5).await;
        let now = to_micros(SystemTime::now());
        let task = plain_task("e");
        let outcome = |id| Finished {
            id,
            result: Ok(funcx_core::Payload::pickle(&(id as i64)).unwrap()),
            timeline: Timeline::submitted_now(),
        };
        let (done_state, done_timeline) = settled(&outcome(1), now);
        // Task 1 finished, task 2 claimed by a gateway whose lease lapsed, task 3 unclaimed.
        for (id, claimed_by, finished) in [
            (1_i64, None, true),
            (2, Some("gone"), false),
            (3, None, false),
        ] {
            let record = new_record(id_from_sql(id).unwrap(), task.clone(), now).unwrap();
            let (state, timeline, result, finished_at) = if finished {
                (
                    encode(&done_state).unwrap(),
                    encode(&done_timeline).unwrap(),
                    Some(encode(&outcome(1).result).unwrap()),
                    Some(now),
                )
            } else {
                (
                    encode(&record.state).unwrap(),
                    encode(&record.timeline).unwrap(),
                    None,
                    None,
                )
            };
            client
                .execute(
                    "INSERT INTO tasks (id, owner, endpoint, function, args, state, timeline,
                                        result, created, finished, claimed_by)
                     VALUES ($1, 'alice', 'e', $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &id,
                        &record.function.as_bytes().as_slice(),
                        &record.args,
                        &state,
                        &timeline,
                        &result,
                        &now,
                        &finished_at,
                        &claimed_by,
                    ],
                )
                .await
                .unwrap();
        }
        client
            .batch_execute(
                "INSERT INTO leases VALUES ('e', 'gone', now() - interval '1 hour');
                 SELECT setval('task_ids', 3)",
            )
            .await
            .unwrap();
        drop(client);
        let _ = driver.await;

        let store = PgStore::connect_with(options).await.unwrap();
        assert_eq!(
            store.schema_versions().await.unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
        let finished = store.task(1).await.unwrap().unwrap();
        assert_eq!(finished.state, TaskState::Succeeded);
        let value: i64 = finished.result.unwrap().unwrap().decode().unwrap();
        assert_eq!(value, 1);
        assert_eq!(finished.finished, Some(now));
        let unfinished: Vec<u64> = store
            .unfinished_tasks()
            .await
            .unwrap()
            .into_iter()
            .map(|task| task.id)
            .collect();
        assert_eq!(unfinished, vec![2, 3]);
        assert_eq!(claim_ids(&store, "e").await, vec![2, 3]);
        // Finished once: the old result stands, a second finish of a task stores nothing.
        let later = SystemTime::now();
        let done = store
            .finish(vec![outcome(1), outcome(2), outcome(3)], later)
            .await
            .unwrap();
        let done: Vec<u64> = done.into_iter().map(|task| task.id).collect();
        assert_eq!(done, vec![2, 3]);
        assert!(store
            .finish(vec![outcome(2)], later)
            .await
            .unwrap()
            .is_empty());
        assert!(store.unfinished_tasks().await.unwrap().is_empty());
        assert_eq!(store.task(1).await.unwrap().unwrap().finished, Some(now));
        // New tasks are numbered after the migrated ones.
        let ids = store.insert_tasks(vec![task], later).await.unwrap();
        assert_eq!(ids, vec![4]);
    }

    /// A schema left by a gateway of version 6 (a row in `pending` per unfinished task)
    /// migrates with every task as it was (a finished one keeps its result, a dead gateway's
    /// claim is taken over, an unclaimed task is claimed); a submission claimed at insert
    /// afterwards has no row in `pending`, is still unfinished, and is taken over when its
    /// gateway's lease lapses, its result stored once however many finish it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_6_schema_migrates_with_its_tasks() {
        let (options, client, driver) = schema_at("test_from_v6", 6).await;
        let now = to_micros(SystemTime::now());
        let task = plain_task("e");
        let outcome = |id, value: i64| Finished {
            id,
            result: Ok(funcx_core::Payload::pickle(&value).unwrap()),
            timeline: Timeline::submitted_now(),
        };
        let (done_state, done_timeline) = settled(&outcome(1, 1), now);
        for id in 1..=3_i64 {
            let record = new_record(id_from_sql(id).unwrap(), task.clone(), now).unwrap();
            client
                .execute(
                    "INSERT INTO tasks (id, owner, endpoint, function, args, state, timeline,
                                        created)
                     VALUES ($1, 'alice', 'e', $2, $3, $4, $5, $6)",
                    &[
                        &id,
                        &record.function.as_bytes().as_slice(),
                        &record.args,
                        &encode(&record.state).unwrap(),
                        &encode(&record.timeline).unwrap(),
                        &now,
                    ],
                )
                .await
                .unwrap();
        }
        // Task 1 finished, task 2 claimed by a gateway whose lease lapsed, task 3 unclaimed.
        client
            .execute(
                "INSERT INTO results (id, state, timeline, result, finished)
                 VALUES (1, $1, $2, $3, $4)",
                &[
                    &encode(&done_state).unwrap(),
                    &encode(&done_timeline).unwrap(),
                    &encode(&outcome(1, 1).result).unwrap(),
                    &now,
                ],
            )
            .await
            .unwrap();
        client
            .batch_execute(
                "INSERT INTO pending VALUES (2, 'e', 'gone'), (3, 'e', NULL);
                 INSERT INTO leases VALUES ('e', 'gone', now() - interval '1 hour');
                 SELECT setval('task_ids', 3)",
            )
            .await
            .unwrap();

        let store = PgStore::connect_with(options.clone()).await.unwrap();
        assert_eq!(
            store.schema_versions().await.unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
        let unfinished = |store: PgStore| async move {
            let tasks = store.unfinished_tasks().await.unwrap();
            tasks.into_iter().map(|task| task.id).collect::<Vec<u64>>()
        };
        assert_eq!(unfinished(store.clone()).await, vec![2, 3]);
        assert_eq!(claim_ids(&store, "e").await, vec![2, 3]);
        let later = SystemTime::now();
        let done = store
            .finish(vec![outcome(1, 2), outcome(2, 2), outcome(3, 2)], later)
            .await
            .unwrap();
        let done: Vec<u64> = done.into_iter().map(|task| task.id).collect();
        assert_eq!(done, vec![2, 3]);
        let kept = stored_value(&store, 1).await;
        assert_eq!(kept, 1, "the result stored before the migration stands");

        // The claim left a lease of a minute: a submission now is claimed as it is stored.
        let (stored, claimed) = store
            .insert_claimed(None, vec![task.clone(); 2], later, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(claimed);
        assert_eq!(stored, Insertion::Created(vec![4, 5]));
        let pending: i64 = client
            .query_one("SELECT count(*) FROM pending", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(pending, 0, "tasks claimed at insert have no row in pending");
        assert_eq!(unfinished(store.clone()).await, vec![4, 5]);
        drop(client);
        let _ = driver.await;

        // Its lease lapses: another gateway takes the tasks over. Both finish task 4 (the
        // first late, its endpoint having run it anyway): one result is stored.
        store
            .renew(vec!["e".into()], Duration::from_millis(100))
            .await
            .unwrap();
        let other = PgStore::connect_with(options).await.unwrap();
        assert_eq!(take_over(&other, "e", 2).await, vec![4, 5]);
        let (by_first, by_other) = tokio::join!(
            store.finish(vec![outcome(4, 1)], SystemTime::now()),
            other.finish(vec![outcome(4, 2), outcome(5, 2)], SystemTime::now()),
        );
        let (by_first, by_other) = (by_first.unwrap(), by_other.unwrap());
        let mut stored_ids: Vec<u64> = by_first.iter().chain(&by_other).map(|t| t.id).collect();
        stored_ids.sort_unstable();
        assert_eq!(stored_ids, vec![4, 5], "each result is stored once");
        let winner: i64 = if by_first.is_empty() { 2 } else { 1 };
        let stored = stored_value(&other, 4).await;
        assert_eq!(
            stored, winner,
            "the result stored is the one returned as stored"
        );
        assert!(unfinished(other.clone()).await.is_empty());
        assert!(store
            .finish(vec![outcome(5, 1)], SystemTime::now())
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_key_sent_twice_at_once_creates_once() {
        let store = fresh("racing_keys").await;
        let task = NewTask {
            owner: "alice".into(),
            endpoint: "e".into(),
            function: funcx_core::Function::from_source("", "f").id(),
            args: funcx_core::Args::new(),
            timeout: Some(Duration::from_millis(1500)),
            resources: None,
        };
        let tasks = vec![task.clone(), task];
        let key = IdempotencyKey {
            owner: "alice".into(),
            key: "k".into(),
            fingerprint: super::super::fingerprint(&tasks).unwrap(),
        };
        let now = SystemTime::now();
        let sends = (0..8).map(|_| store.insert_tasks_once(key.clone(), tasks.clone(), now));
        let answers = futures::future::join_all(sends).await;
        let created: Vec<_> = answers
            .iter()
            .filter(|a| matches!(a, Ok(Insertion::Created(_))))
            .collect();
        assert_eq!(created.len(), 1, "{answers:?}");
        let Ok(Insertion::Created(ids)) = created[0] else {
            unreachable!()
        };
        for answer in &answers {
            match answer {
                Ok(Insertion::Created(got) | Insertion::Replayed(got)) => assert_eq!(got, ids),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(store.unfinished_tasks().await.unwrap().len(), 2);
        let record = store.task(ids[0]).await.unwrap().unwrap();
        assert_eq!(record.timeout, Some(Duration::from_millis(1500)));
    }

    /// Two gateways finishing the same tasks at once (a task run twice across a failover),
    /// unclaimed ones and ones claimed at insert: each task's result is stored by exactly
    /// one of them, the one that returned it, and
    /// the value read back is that one's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_gateways_racing_finish_each_task_once() {
        let first = fresh("finish_race").await;
        let second = another_gateway("finish_race").await;
        let task = plain_task("e");
        let now = SystemTime::now();
        // Half unclaimed (a row in `pending` each), half claimed at insert (none).
        let mut ids = first
            .insert_tasks(vec![task.clone(); 300], now)
            .await
            .unwrap();
        first
            .renew(vec!["e".into()], Duration::from_secs(60))
            .await
            .unwrap();
        let (stored, claimed) = first
            .insert_claimed(None, vec![task; 300], now, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(claimed);
        let Insertion::Created(held) = stored else {
            panic!("{stored:?}")
        };
        ids.extend(held);
        // Each side finishes every task with its own value, in batches of 50 in opposite
        // orders, so that the batches overlap in flight.
        let outcomes = |value: i64, ids: &[u64]| -> Vec<Finished> {
            ids.iter()
                .map(|&id| Finished {
                    id,
                    result: Ok(funcx_core::Payload::pickle(&value).unwrap()),
                    timeline: Timeline::submitted_now(),
                })
                .collect()
        };
        let reversed: Vec<u64> = ids.iter().rev().copied().collect();
        let finish_all = |store: &PgStore, value: i64, order: Vec<u64>| {
            let store = store.clone();
            let batches: Vec<Vec<Finished>> =
                order.chunks(50).map(|c| outcomes(value, c)).collect();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for batch in batches {
                    done.extend(store.finish(batch, SystemTime::now()).await.unwrap());
                }
                done.into_iter().map(|task| task.id).collect::<Vec<u64>>()
            })
        };
        let by_first = finish_all(&first, 1, ids.clone());
        let by_second = finish_all(&second, 2, reversed);
        let (by_first, by_second) = (by_first.await.unwrap(), by_second.await.unwrap());
        let mut all: Vec<u64> = by_first.iter().chain(&by_second).copied().collect();
        all.sort_unstable();
        assert_eq!(all, ids, "every task finished exactly once");
        for (store_value, won) in [(1_i64, &by_first), (2, &by_second)] {
            let read = second.tasks(won.clone()).await.unwrap();
            assert_eq!(read.len(), won.len());
            for record in read {
                let value: i64 = record.result.unwrap().unwrap().decode().unwrap();
                assert_eq!(
                    value, store_value,
                    "task {} has its finisher's result",
                    record.id
                );
            }
        }
        assert!(first.unfinished_tasks().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_gateways_racing_claim_each_task_once_and_leases_expire() {
        let first = fresh("race").await;
        let second = another_gateway("race").await;
        assert_ne!(first.member(), second.member());
        let mut notes = second.subscribe();
        let resync = tokio::time::timeout(Duration::from_secs(10), notes.recv()).await;
        assert_eq!(resync.unwrap().unwrap(), FleetEvent::Resync);

        let task = plain_task;
        let now = SystemTime::now();
        let ids = first
            .insert_tasks((0..500).map(|_| task("e")).collect(), now)
            .await
            .unwrap();
        let other = first.insert_tasks(vec![task("other")], now).await.unwrap();
        // The other gateway hears of the new tasks, per endpoint.
        let mut heard = Vec::new();
        while heard.len() < 2 {
            let note = tokio::time::timeout(Duration::from_secs(10), notes.recv()).await;
            heard.push(note.unwrap().unwrap());
        }
        assert_eq!(
            heard,
            vec![
                FleetEvent::NewTasks("e".into()),
                FleetEvent::NewTasks("other".into())
            ]
        );

        // Both claim in small batches at once, round after round, until nothing is left:
        // each round's two claims are in flight together, so they race for the same rows.
        let lease = Duration::from_secs(60);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        loop {
            let (ca, cb) = tokio::join!(first.claim("e", 7, lease), second.claim("e", 7, lease));
            let (ca, cb) = (ca.unwrap(), cb.unwrap());
            if ca.is_empty() && cb.is_empty() {
                break;
            }
            a.extend(ca.into_iter().map(|t| t.id));
            b.extend(cb.into_iter().map(|t| t.id));
        }
        // With 500 tasks and 7 a claim, each side's first claim finds tasks left whatever the
        // order the two commit in.
        assert!(
            !a.is_empty() && !b.is_empty(),
            "both claimed: {} {}",
            a.len(),
            b.len()
        );
        let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, ids, "every task claimed exactly once");

        // The other endpoint's task is not claimed with these.
        assert_eq!(
            first.claim("other", 10, lease).await.unwrap()[0].id,
            other[0]
        );

        // A finished task is never claimed again, and its result is announced to the other.
        let outcome = Finished {
            id: a[0],
            result: Ok(funcx_core::Payload::pickle(&1i64).unwrap()),
            timeline: Timeline::submitted_now(),
        };
        assert_eq!(first.finish(vec![outcome], now).await.unwrap().len(), 1);
        let note = tokio::time::timeout(Duration::from_secs(10), notes.recv()).await;
        assert_eq!(note.unwrap().unwrap(), FleetEvent::Finished(vec![a[0]]));
        let read = second.tasks(vec![a[0], 999_999]).await.unwrap();
        assert_eq!(read.len(), 1);
        assert!(read[0].result.is_some());

        // Renewed claims hold; a claim left to expire is taken over by the other gateway.
        assert_eq!(first.renew(vec!["e".into()], lease).await.unwrap(), 1);
        assert!(second.claim("e", 1000, lease).await.unwrap().is_empty());
        let short = Duration::from_millis(200);
        assert_eq!(first.renew(vec!["e".into()], short).await.unwrap(), 1);
        let taken = take_over(&second, "e", a.len() - 1).await;
        assert_eq!(taken, a[1..].to_vec());
    }

    /// A schema left by a gateway of version 7 migrates with its idempotency keys: a key
    /// stored before still replays its ids, and a submission's ids stored after are
    /// compressed with lz4 where the server has it (migration 8), and replay the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_7_schema_migrates_with_its_idempotency_keys() {
        let (options, client, driver) = schema_at("test_from_v7", 7).await;
        let task = plain_task("e");
        let key = |name: &str, tasks: &[NewTask]| IdempotencyKey {
            owner: "alice".into(),
            key: name.into(),
            fingerprint: super::super::fingerprint(tasks).unwrap(),
        };
        let before = vec![task.clone(); 3];
        client
            .execute(
                "INSERT INTO idempotency_keys (owner, key, fingerprint, ids, created)
                 VALUES ('alice', 'before', $1, '{1,2,3}', now())",
                &[&key("before", &before).fingerprint.as_slice()],
            )
            .await
            .unwrap();
        let store = PgStore::connect_with(options).await.unwrap();
        assert_eq!(
            store.schema_versions().await.unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
        let now = SystemTime::now();
        assert_eq!(
            store
                .insert_tasks_once(key("before", &before), before, now)
                .await
                .unwrap(),
            Insertion::Replayed(vec![1, 2, 3])
        );

        // Large enough to be compressed (a few KB): 5,000 ids.
        let after = vec![task; 5_000];
        let Insertion::Created(ids) = store
            .insert_tasks_once(key("after", &after), after.clone(), now)
            .await
            .unwrap()
        else {
            panic!("a new key creates its tasks");
        };
        assert_eq!(ids.len(), 5_000);
        assert_eq!(
            store
                .insert_tasks_once(key("after", &after), after, now)
                .await
                .unwrap(),
            Insertion::Replayed(ids)
        );
        let row = client
            .query_one(
                "SELECT pg_column_compression(ids),
                        EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'
                                AND 'lz4' = ANY (enumvals))
                 FROM idempotency_keys WHERE key = 'after'",
                &[],
            )
            .await
            .unwrap();
        let (compression, lz4): (Option<String>, bool) = (row.get(0), row.get(1));
        if lz4 {
            assert_eq!(compression.as_deref(), Some("lz4"));
        }
        drop(client);
        let _ = driver.await;
    }

    /// The value (an `i64`) stored as task `id`'s result.
    async fn stored_value(store: &PgStore, id: u64) -> i64 {
        let record = store.task(id).await.unwrap().expect("the task is stored");
        let result = record.result.expect("the task has a result");
        result.expect("the task succeeded").decode().unwrap()
    }

    /// The ids of the tasks of `endpoint` that `store` claims now (for a minute), in order.
    async fn claim_ids(store: &PgStore, endpoint: &str) -> Vec<u64> {
        let claimed = store
            .claim(endpoint, 1000, Duration::from_secs(60))
            .await
            .unwrap();
        claimed.into_iter().map(|t| t.id).collect()
    }

    /// The ids of `count` tasks of `endpoint` that `store` claims once another gateway's
    /// lease on them lapsed, in order: claimed again and again, for 10 s at most.
    async fn take_over(store: &PgStore, endpoint: &str, count: usize) -> Vec<u64> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut taken = Vec::new();
        while taken.len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lapsed claims were not taken over"
            );
            taken.extend(claim_ids(store, endpoint).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        taken.sort_unstable();
        taken
    }

    /// A task of alice's for `endpoint`, with no options.
    fn plain_task(endpoint: &str) -> NewTask {
        NewTask {
            owner: "alice".into(),
            endpoint: endpoint.into(),
            function: funcx_core::Function::from_source("", "f").id(),
            args: funcx_core::Args::new(),
            timeout: None,
            resources: None,
        }
    }

    /// The next notification, within 10 s.
    async fn next_note(notes: &mut broadcast::Receiver<FleetEvent>) -> FleetEvent {
        let note = tokio::time::timeout(Duration::from_secs(10), notes.recv()).await;
        note.expect("a notification within 10 s")
            .expect("the listener runs")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_submission_is_claimed_as_it_is_stored_only_under_a_sound_lease() {
        let first = fresh("claim_at_insert").await;
        let second = another_gateway("claim_at_insert").await;
        let mut notes = second.subscribe();
        assert_eq!(next_note(&mut notes).await, FleetEvent::Resync);
        let tasks = |endpoint: &str, n: usize| -> Vec<NewTask> {
            (0..n).map(|_| plain_task(endpoint)).collect()
        };
        let now = SystemTime::now();
        let margin = Duration::from_secs(20);

        // No lease on the endpoint yet: stored unclaimed, announced, claimable by any.
        let (stored, claimed) = first
            .insert_claimed(None, tasks("e", 3), now, margin)
            .await
            .unwrap();
        assert!(!claimed);
        let Insertion::Created(unclaimed) = stored else {
            panic!("{stored:?}")
        };
        assert_eq!(
            next_note(&mut notes).await,
            FleetEvent::NewTasks("e".into())
        );
        assert_eq!(claim_ids(&first, "e").await, unclaimed);

        // Its claim left a lease of 60 s: the next submission is claimed as it is stored,
        // under an idempotency key too, and not announced (the next note is another's).
        let key = IdempotencyKey {
            owner: "alice".into(),
            key: "k".into(),
            fingerprint: super::super::fingerprint(&tasks("e", 4)).unwrap(),
        };
        let (stored, claimed) = first
            .insert_claimed(Some(key.clone()), tasks("e", 4), now, margin)
            .await
            .unwrap();
        assert!(claimed);
        let Insertion::Created(held) = stored else {
            panic!("{stored:?}")
        };
        let (replayed, claimed) = first
            .insert_claimed(Some(key), tasks("e", 4), now, margin)
            .await
            .unwrap();
        assert_eq!(
            (replayed, claimed),
            (Insertion::Replayed(held.clone()), false)
        );
        first.insert_tasks(tasks("other", 1), now).await.unwrap();
        assert_eq!(
            next_note(&mut notes).await,
            FleetEvent::NewTasks("other".into())
        );
        assert!(claim_ids(&second, "e").await.is_empty());
        assert!(claim_ids(&first, "e").await.is_empty());

        // A lease with less than the margin left: stored unclaimed.
        assert_eq!(first.renew(vec!["e".into()], margin / 2).await.unwrap(), 1);
        let (stored, claimed) = first
            .insert_claimed(None, tasks("e", 2), now, margin)
            .await
            .unwrap();
        assert!(!claimed);
        let Insertion::Created(late) = stored else {
            panic!("{stored:?}")
        };
        assert_eq!(claim_ids(&second, "e").await, late);

        // Tasks claimed at insert are held by the lease like claimed ones: when it lapses,
        // the other gateway takes them over.
        assert_eq!(
            first
                .renew(vec!["e".into()], Duration::from_millis(100))
                .await
                .unwrap(),
            1
        );
        let taken = take_over(&second, "e", unclaimed.len() + held.len()).await;
        let mut expected: Vec<u64> = unclaimed.iter().chain(&held).copied().collect();
        expected.sort_unstable();
        assert_eq!(taken, expected);
    }

    #[test]
    fn result_notifications_name_their_sender() {
        assert_eq!(finished_elsewhere("me 1,2", "me"), None);
        assert_eq!(
            finished_elsewhere("you 1,2,3", "me"),
            Some(FleetEvent::Finished(vec![1, 2, 3]))
        );
        assert_eq!(finished_elsewhere("garbage", "me"), None);
        assert_eq!(stored_elsewhere("me e1", "me"), None);
        assert_eq!(
            stored_elsewhere("you e1", "me"),
            Some(FleetEvent::NewTasks("e1".into()))
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema("funcx_1").is_ok());
        for bad in ["", "1a", "a;drop", "A", "a b", &"x".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
        let options = PgOptions::new("not a url ::");
        assert!(options.config().is_err());
        let default = PgOptions::new(test_url());
        let refused = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(PgStore::drop_schema(&default));
        assert!(refused.is_err());
    }
}
