//! [`PgStore`]: the gateway's state in PostgreSQL, shared by several gateways.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use std::sync::{Arc, Mutex};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use funcx_core::{FunctionId, TaskState, Timeline};
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::fleet::{Fleet, FleetEvent};
use super::{
    apply, decode, encode, new_record, page, EndpointRecord, Finished, FunctionRecord,
    IdempotencyKey, Insertion, NewTask, StoreError, StoreFuture, TaskPage, TaskRecord, TaskStore,
    TokenHash, UserRecord,
};

/// The schema, one version at a time. A version is applied once, in one transaction with
/// its row in `schema_migrations`; versions are never edited once released, only added.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE users (
        name text PRIMARY KEY,
        token_hash bytea NOT NULL UNIQUE
    );
    CREATE TABLE functions (
        id bytea NOT NULL,
        owner text NOT NULL,
        record bytea NOT NULL,
        PRIMARY KEY (id, owner)
    );
    CREATE TABLE endpoints (
        id text PRIMARY KEY,
        owner text NOT NULL,
        record bytea NOT NULL
    );
    CREATE SEQUENCE task_ids;
    CREATE TABLE tasks (
        id bigint PRIMARY KEY,
        owner text NOT NULL,
        endpoint text NOT NULL,
        function bytea NOT NULL,
        args bytea NOT NULL,
        timeout_ms bigint,
        state bytea NOT NULL,
        timeline bytea NOT NULL,
        result bytea,
        created timestamptz NOT NULL,
        finished timestamptz,
        claimed_by text,
        lease_until timestamptz
    );
    CREATE INDEX tasks_by_owner ON tasks (owner, id);
    CREATE INDEX tasks_unfinished ON tasks (endpoint, id) WHERE finished IS NULL;
    CREATE INDEX tasks_by_finish ON tasks (finished) WHERE finished IS NOT NULL;
    CREATE TABLE idempotency_keys (
        owner text NOT NULL,
        key text NOT NULL,
        fingerprint bytea NOT NULL,
        ids bigint[] NOT NULL,
        created timestamptz NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX keys_by_time ON idempotency_keys (created);
    "#,
    ),
    (
        2,
        // What a claim reads: an endpoint's unfinished tasks whose lease is absent or over,
        // without stepping over the ones held (a gateway holds thousands while they run).
        r#"
    CREATE INDEX tasks_claimable ON tasks
        (endpoint, (COALESCE(lease_until, '-infinity'::timestamptz)))
        WHERE finished IS NULL;
    "#,
    ),
];

/// The advisory lock that serializes migrations: gateways starting together on an empty
/// database do not both create the tables.
const MIGRATION_LOCK: i64 = 0x6675_6e63_785f_6d69;

/// The columns of a task row, in the order [`task_of_row`] reads them.
const TASK_COLUMNS: &str =
    "id, owner, endpoint, function, args, timeout_ms, state, timeline, result, created, finished";

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
/// Several gateways can share one database: task ids come from a sequence, a finished
/// task's result is written only if it has none (`UPDATE … WHERE result IS NULL`), and
/// idempotency keys are a primary key, so two gateways never both create for one key.
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
    let size = args.len() + result.as_ref().map_or(0, Vec::len);
    let record = TaskRecord {
        id,
        owner: row.try_get(1).map_err(pg)?,
        endpoint: row.try_get(2).map_err(pg)?,
        function: FunctionId::from_bytes(function),
        args,
        timeout: timeout.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
        state: decode::<TaskState>(&state)?,
        timeline: decode::<Timeline>(&timeline)?,
        result: result.as_deref().map(decode).transpose()?,
        created: row.try_get(9).map_err(pg)?,
        finished: row.try_get(10).map_err(pg)?,
    };
    Ok((record, size))
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

/// Numbers `tasks` and stores them in `tx`: ids are taken from the sequence first and
/// handed out in ascending order, so a batch's ids increase as its tasks do.
async fn insert(
    tx: &deadpool_postgres::Transaction<'_>,
    member: &str,
    channels: &Channels,
    tasks: Vec<NewTask>,
    now: SystemTime,
) -> Result<Vec<u64>, StoreError> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let count = i64::try_from(tasks.len()).map_err(StoreError::backend)?;
    let mut ids: Vec<i64> = tx
        .query(
            "SELECT nextval('task_ids') FROM generate_series(1, $1::bigint)",
            &[&count],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|row| row.try_get(0).map_err(pg))
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();
    let mut owners = Vec::with_capacity(tasks.len());
    let mut endpoints = Vec::with_capacity(tasks.len());
    let mut functions = Vec::with_capacity(tasks.len());
    let mut args = Vec::with_capacity(tasks.len());
    let mut timeouts = Vec::with_capacity(tasks.len());
    let mut states = Vec::with_capacity(tasks.len());
    let mut timelines = Vec::with_capacity(tasks.len());
    for (task, id) in tasks.into_iter().zip(&ids) {
        let record = new_record(id_from_sql(*id)?, task, now)?;
        states.push(encode(&record.state)?);
        timelines.push(encode(&record.timeline)?);
        timeouts.push(record.timeout.map(millis));
        functions.push(record.function.as_bytes().to_vec());
        owners.push(record.owner);
        endpoints.push(record.endpoint);
        args.push(record.args);
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO tasks (id, owner, endpoint, function, args, timeout_ms, state, timeline, created)
             SELECT id, owner, endpoint, function, args, timeout_ms, state, timeline, $9
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::bytea[],
                         $6::bigint[], $7::bytea[], $8::bytea[])
                  AS t(id, owner, endpoint, function, args, timeout_ms, state, timeline)",
        )
        .await
        .map_err(pg)?;
    tx.execute(
        &statement,
        &[
            &ids, &owners, &endpoints, &functions, &args, &timeouts, &states, &timelines, &now,
        ],
    )
    .await
    .map_err(pg)?;
    // Delivered at commit, to every gateway listening: the one holding the endpoint claims.
    endpoints.sort_unstable();
    endpoints.dedup();
    for endpoint in &endpoints {
        let payload = format!("{member} {endpoint}");
        tx.execute("SELECT pg_notify($1, $2)", &[&channels.tasks, &payload])
            .await
            .map_err(pg)?;
    }
    ids.into_iter().map(id_from_sql).collect()
}

impl TaskStore for PgStore {
    fn put_user(&self, user: UserRecord) -> StoreFuture<'_, ()> {
        self.run(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            // A token moves with its user: drop whoever held this hash (a rotated token).
            tx.execute(
                "DELETE FROM users WHERE token_hash = $1 AND name <> $2",
                &[&user.token_hash.as_slice(), &user.name],
            )
            .await
            .map_err(pg)?;
            tx.execute(
                "INSERT INTO users (name, token_hash) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET token_hash = EXCLUDED.token_hash",
                &[&user.name, &user.token_hash.as_slice()],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)
        })
    }

    fn user_by_token(&self, hash: TokenHash) -> StoreFuture<'_, Option<UserRecord>> {
        self.run(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT name FROM users WHERE token_hash = $1")
                .await
                .map_err(pg)?;
            let row = client
                .query_opt(&statement, &[&hash.as_slice()])
                .await
                .map_err(pg)?;
            row.map(|row| {
                Ok(UserRecord {
                    name: row.try_get(0).map_err(pg)?,
                    token_hash: hash,
                })
            })
            .transpose()
        })
    }

    fn users(&self) -> StoreFuture<'_, Vec<UserRecord>> {
        self.run(async move {
            let client = self.client().await?;
            let rows = client
                .query("SELECT name, token_hash FROM users ORDER BY name", &[])
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|row| {
                    let hash: Vec<u8> = row.try_get(1).map_err(pg)?;
                    Ok(UserRecord {
                        name: row.try_get(0).map_err(pg)?,
                        token_hash: hash
                            .try_into()
                            .map_err(|_| StoreError::corrupt("a token hash is 32 bytes"))?,
                    })
                })
                .collect()
        })
    }

    fn delete_user(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        self.run(async move {
            let client = self.client().await?;
            let deleted = client
                .execute("DELETE FROM users WHERE name = $1", &[&name])
                .await
                .map_err(pg)?;
            Ok(deleted > 0)
        })
    }

    fn put_function(&self, function: FunctionRecord) -> StoreFuture<'_, ()> {
        self.run(async move {
            let record = encode(&function)?;
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO functions (id, owner, record) VALUES ($1, $2, $3)
                     ON CONFLICT (id, owner) DO UPDATE SET record = EXCLUDED.record",
                    &[&function.id.as_bytes().as_slice(), &function.owner, &record],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn function(&self, id: FunctionId) -> StoreFuture<'_, Vec<FunctionRecord>> {
        self.run(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT record FROM functions WHERE id = $1 ORDER BY owner")
                .await
                .map_err(pg)?;
            let rows = client
                .query(&statement, &[&id.as_bytes().as_slice()])
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|row| decode(row.try_get::<_, &[u8]>(0).map_err(pg)?))
                .collect()
        })
    }

    fn delete_function(&self, id: FunctionId, owner: &str) -> StoreFuture<'_, bool> {
        let owner = owner.to_string();
        self.run(async move {
            let client = self.client().await?;
            let deleted = client
                .execute(
                    "DELETE FROM functions WHERE id = $1 AND owner = $2",
                    &[&id.as_bytes().as_slice(), &owner],
                )
                .await
                .map_err(pg)?;
            Ok(deleted > 0)
        })
    }

    fn put_endpoint(&self, endpoint: EndpointRecord) -> StoreFuture<'_, ()> {
        self.run(async move {
            let record = encode(&endpoint)?;
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO endpoints (id, owner, record) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, record = EXCLUDED.record",
                    &[&endpoint.id, &endpoint.owner, &record],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn endpoint(&self, id: &str) -> StoreFuture<'_, Option<EndpointRecord>> {
        let id = id.to_string();
        self.run(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT record FROM endpoints WHERE id = $1")
                .await
                .map_err(pg)?;
            let row = client.query_opt(&statement, &[&id]).await.map_err(pg)?;
            row.map(|row| decode(row.try_get::<_, &[u8]>(0).map_err(pg)?))
                .transpose()
        })
    }

    fn endpoints(&self) -> StoreFuture<'_, Vec<EndpointRecord>> {
        self.run(async move {
            let client = self.client().await?;
            let rows = client
                .query("SELECT record FROM endpoints ORDER BY id", &[])
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|row| decode(row.try_get::<_, &[u8]>(0).map_err(pg)?))
                .collect()
        })
    }

    fn delete_endpoint(&self, id: &str) -> StoreFuture<'_, bool> {
        let id = id.to_string();
        self.run(async move {
            let client = self.client().await?;
            let deleted = client
                .execute("DELETE FROM endpoints WHERE id = $1", &[&id])
                .await
                .map_err(pg)?;
            Ok(deleted > 0)
        })
    }

    fn insert_tasks(&self, tasks: Vec<NewTask>, now: SystemTime) -> StoreFuture<'_, Vec<u64>> {
        self.run(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let ids = insert(&tx, &self.member, &self.channels, tasks, now).await?;
            tx.commit().await.map_err(pg)?;
            Ok(ids)
        })
    }

    fn insert_tasks_once(
        &self,
        key: IdempotencyKey,
        tasks: Vec<NewTask>,
        now: SystemTime,
    ) -> StoreFuture<'_, Insertion> {
        self.run(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            // The key's row first: a concurrent insert of the same key waits on the primary
            // key until this transaction ends, then sees it and creates nothing.
            let claimed = tx
                .execute(
                    "INSERT INTO idempotency_keys (owner, key, fingerprint, ids, created)
                     VALUES ($1, $2, $3, '{}', $4) ON CONFLICT DO NOTHING",
                    &[&key.owner, &key.key, &key.fingerprint.as_slice(), &now],
                )
                .await
                .map_err(pg)?;
            if claimed == 0 {
                let row = tx
                    .query_one(
                        "SELECT fingerprint, ids FROM idempotency_keys WHERE owner = $1 AND key = $2",
                        &[&key.owner, &key.key],
                    )
                    .await
                    .map_err(pg)?;
                let fingerprint: &[u8] = row.try_get(0).map_err(pg)?;
                if fingerprint != key.fingerprint.as_slice() {
                    return Ok(Insertion::Conflict);
                }
                let ids: Vec<i64> = row.try_get(1).map_err(pg)?;
                let ids = ids.into_iter().map(id_from_sql).collect::<Result<_, _>>()?;
                return Ok(Insertion::Replayed(ids));
            }
            let ids = insert(&tx, &self.member, &self.channels, tasks, now).await?;
            let sql_ids: Vec<i64> = ids.iter().copied().map(id_to_sql).collect();
            tx.execute(
                "UPDATE idempotency_keys SET ids = $3 WHERE owner = $1 AND key = $2",
                &[&key.owner, &key.key, &sql_ids],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(Insertion::Created(ids))
        })
    }

    fn task(&self, id: u64) -> StoreFuture<'_, Option<TaskRecord>> {
        self.run(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
                .await
                .map_err(pg)?;
            let row = client
                .query_opt(&statement, &[&id_to_sql(id)])
                .await
                .map_err(pg)?;
            row.map(|row| task_of_row(&row).map(|(record, _)| record))
                .transpose()
        })
    }

    fn tasks_of(
        &self,
        owner: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<'_, TaskPage> {
        let owner = owner.to_string();
        self.run(async move {
            let client = self.client().await?;
            // One row beyond the page tells whether another follows.
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let before = before.map_or(i64::MAX, id_to_sql);
            let rows = client
                .query(
                    &format!(
                        "SELECT {TASK_COLUMNS} FROM tasks WHERE owner = $1 AND id < $2
                         ORDER BY id DESC LIMIT $3"
                    ),
                    &[&owner, &before, &fetch],
                )
                .await
                .map_err(pg)?;
            let records = rows.iter().filter_map(|row| match task_of_row(row) {
                Ok(record) => Some(Ok(record)),
                // One bad record does not hide the others.
                Err(error) if error.is_corrupt() => {
                    tracing::warn!(%error, "a task record does not decode; not listed");
                    None
                }
                Err(error) => Some(Err(error)),
            });
            page(records, limit)
        })
    }

    fn finish(&self, outcomes: Vec<Finished>, now: SystemTime) -> StoreFuture<'_, Vec<TaskRecord>> {
        self.run(async move {
            if outcomes.is_empty() {
                return Ok(Vec::new());
            }
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let ids: Vec<i64> = outcomes.iter().map(|o| id_to_sql(o.id)).collect();
            // Locked, so that two gateways finishing one task at once cannot both find it
            // unfinished: the second waits, then sees the first's result.
            let select = tx
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1) AND result IS NULL
                     ORDER BY id FOR UPDATE"
                ))
                .await
                .map_err(pg)?;
            let rows = tx.query(&select, &[&ids]).await.map_err(pg)?;
            let mut open = std::collections::HashMap::with_capacity(rows.len());
            for row in &rows {
                let (record, _) = task_of_row(row)?;
                open.insert(record.id, record);
            }
            let mut done = Vec::with_capacity(open.len());
            for outcome in outcomes {
                let Some(mut record) = open.remove(&outcome.id) else {
                    continue;
                };
                if apply(&mut record, outcome, now) {
                    done.push(record);
                }
            }
            if done.is_empty() {
                tx.rollback().await.map_err(pg)?;
                return Ok(done);
            }
            let mut done_ids = Vec::with_capacity(done.len());
            let mut states = Vec::with_capacity(done.len());
            let mut timelines = Vec::with_capacity(done.len());
            let mut results = Vec::with_capacity(done.len());
            for record in &done {
                let Some(result) = &record.result else {
                    return Err(StoreError::backend("a finished task without a result"));
                };
                done_ids.push(id_to_sql(record.id));
                states.push(encode(&record.state)?);
                timelines.push(encode(&record.timeline)?);
                // The inner value, as `task_of_row` decodes it (NULL is the `None`).
                results.push(encode(result)?);
            }
            let update = tx
                .prepare_cached(
                    "UPDATE tasks SET state = u.state, timeline = u.timeline, result = u.result,
                            finished = $5, claimed_by = NULL, lease_until = NULL
                     FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[])
                          AS u(id, state, timeline, result)
                     WHERE tasks.id = u.id",
                )
                .await
                .map_err(pg)?;
            tx.execute(&update, &[&done_ids, &states, &timelines, &results, &now])
                .await
                .map_err(pg)?;
            // Other gateways' result streams learn of these at commit.
            for chunk in done_ids.chunks(IDS_PER_NOTIFICATION) {
                let mut payload = self.member.clone();
                for (i, id) in chunk.iter().enumerate() {
                    payload.push(if i == 0 { ' ' } else { ',' });
                    payload.push_str(&id.to_string());
                }
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[&self.channels.results, &payload],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(done)
        })
    }

    fn delete_task(&self, id: u64) -> StoreFuture<'_, bool> {
        self.run(async move {
            let client = self.client().await?;
            let deleted = client
                .execute("DELETE FROM tasks WHERE id = $1", &[&id_to_sql(id)])
                .await
                .map_err(pg)?;
            Ok(deleted > 0)
        })
    }

    fn unfinished_tasks(&self) -> StoreFuture<'_, Vec<TaskRecord>> {
        self.run(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE finished IS NULL ORDER BY id"),
                    &[],
                )
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|row| task_of_row(row).map(|(record, _)| record))
                .collect()
        })
    }

    fn expire(&self, now: SystemTime, ttl: Duration) -> StoreFuture<'_, usize> {
        self.run(async move {
            let cutoff = now.checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH);
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let tasks = tx
                .execute(
                    "DELETE FROM tasks WHERE finished IS NOT NULL AND finished < $1",
                    &[&cutoff],
                )
                .await
                .map_err(pg)?;
            tx.execute(
                "DELETE FROM idempotency_keys WHERE created < $1",
                &[&cutoff],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            usize::try_from(tasks).map_err(StoreError::backend)
        })
    }

    fn fleet(&self) -> Option<&dyn Fleet> {
        Some(self)
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        // Writes under way hold their connection until they finish; closing the pool stops
        // new ones and drops idle connections.
        self.pool.close();
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Fleet for PgStore {
    fn member(&self) -> &str {
        &self.member
    }

    fn claim(
        &self,
        endpoint: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreFuture<'_, Vec<TaskRecord>> {
        let endpoint = endpoint.to_string();
        self.run(async move {
            let mut client = self.client().await?;
            let tx = lax(&mut client).await?;
            // SKIP LOCKED: a gateway claiming at the same moment takes other rows instead of
            // waiting for these, and neither gets a row twice.
            let statement = tx
                .prepare_cached(&format!(
                    "UPDATE tasks SET claimed_by = $1,
                            lease_until = now() + $3 * interval '1 millisecond'
                     WHERE id IN (
                         SELECT id FROM tasks
                         WHERE endpoint = $2 AND finished IS NULL
                           AND COALESCE(lease_until, '-infinity'::timestamptz) < now()
                         ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
                     RETURNING {TASK_COLUMNS}"
                ))
                .await
                .map_err(pg)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let lease = millis(lease) as f64;
            let rows = tx
                .query(&statement, &[&self.member, &endpoint, &lease, &limit])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            let mut records = rows
                .iter()
                .map(|row| task_of_row(row).map(|(record, _)| record))
                .collect::<Result<Vec<_>, _>>()?;
            records.sort_unstable_by_key(|record| record.id);
            Ok(records)
        })
    }

    fn renew(&self, endpoints: Vec<String>, lease: Duration) -> StoreFuture<'_, u64> {
        self.run(async move {
            if endpoints.is_empty() {
                return Ok(0);
            }
            let mut client = self.client().await?;
            let tx = lax(&mut client).await?;
            let renewed = tx
                .execute(
                    "UPDATE tasks SET lease_until = now() + $3 * interval '1 millisecond'
                     WHERE claimed_by = $1 AND finished IS NULL AND endpoint = ANY($2)",
                    &[&self.member, &endpoints, &(millis(lease) as f64)],
                )
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(renewed)
        })
    }

    fn tasks(&self, ids: Vec<u64>) -> StoreFuture<'_, Vec<TaskRecord>> {
        self.run(async move {
            let ids: Vec<i64> = ids.into_iter().map(id_to_sql).collect();
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1)"
                ))
                .await
                .map_err(pg)?;
            let rows = client.query(&statement, &[&ids]).await.map_err(pg)?;
            rows.iter()
                .map(|row| task_of_row(row).map(|(record, _)| record))
                .collect()
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        let mut listener = match self.listener.lock() {
            Ok(listener) => listener,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(sender) = listener.as_ref() {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(LISTENER_BUFFER);
        *listener = Some(sender.clone());
        tokio::spawn(listen(
            self.config.clone(),
            self.member.clone(),
            self.channels.clone(),
            sender,
        ));
        receiver
    }
}

/// A transaction whose commit does not wait for its WAL flush: for claims and leases only,
/// which a crash of the database may lose without harm (a lost claim is a task claimed
/// again, by lease expiry at worst), never for tasks or results.
async fn lax(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
        .await
        .map_err(pg)?;
    Ok(tx)
}

/// How many notifications wait for a slow subscriber before it is told to resync.
const LISTENER_BUFFER: usize = 16 * 1024;

/// Listens on one connection of its own and passes notifications on; re-connects with
/// back-off when the connection is lost (the database restarted), and says
/// [`FleetEvent::Resync`] each time it listens again. Ends when nobody subscribes any more.
async fn listen(
    config: tokio_postgres::Config,
    member: String,
    channels: Channels,
    sender: broadcast::Sender<FleetEvent>,
) {
    use futures::StreamExt;
    let mut pause = Duration::from_millis(100);
    while sender.receiver_count() > 0 {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (notes, mut received) = tokio::sync::mpsc::unbounded_channel();
                // poll_message drives the connection: the LISTEN below and the
                // notifications after it.
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(note)) => {
                                if notes.send(note).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                return tracing::warn!(%error, "the store's listening connection failed");
                            }
                        }
                    }
                });
                let listening = client
                    .batch_execute(&format!(
                        "LISTEN {}; LISTEN {}",
                        channels.tasks, channels.results
                    ))
                    .await;
                if let Err(error) = listening {
                    tracing::warn!(error = %pg(error), "could not LISTEN on the store");
                    driver.abort();
                } else {
                    pause = Duration::from_millis(100);
                    tracing::debug!("listening for the other gateways' tasks and results");
                    let _ = sender.send(FleetEvent::Resync);
                    while let Some(note) = received.recv().await {
                        let event = if note.channel() == channels.tasks {
                            stored_elsewhere(note.payload(), &member)
                        } else {
                            finished_elsewhere(note.payload(), &member)
                        };
                        if let Some(event) = event {
                            if sender.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    drop(client);
                }
            }
            Err(error) => {
                tracing::warn!(error = %pg(error), ?pause, "the store's listener cannot connect; retrying")
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The endpoint of a task notification (`"<member> <endpoint>"`), unless this store sent
/// it: its own gateway hands out what it stores itself.
fn stored_elsewhere(payload: &str, member: &str) -> Option<FleetEvent> {
    let (from, endpoint) = payload.split_once(' ')?;
    (from != member).then(|| FleetEvent::NewTasks(endpoint.to_string()))
}

/// The ids of a result notification (`"<member> <id>,<id>,..."`), unless this store sent it.
fn finished_elsewhere(payload: &str, member: &str) -> Option<FleetEvent> {
    let (from, ids) = payload.split_once(' ')?;
    if from == member {
        return None;
    }
    let ids: Vec<u64> = ids.split(',').filter_map(|id| id.parse().ok()).collect();
    Some(FleetEvent::Finished(ids))
}

#[cfg(test)]
pub(crate) mod tests {
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_the_store_contract() {
        let store = fresh("contract").await;
        super::super::tests::contract(&store).await;
        assert_eq!(store.schema_versions().await.unwrap(), vec![1, 2]);
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
        assert_eq!(again.schema_versions().await.unwrap(), vec![1, 2]);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_key_sent_twice_at_once_creates_once() {
        let store = fresh("racing_keys").await;
        let task = NewTask {
            owner: "alice".into(),
            endpoint: "e".into(),
            function: funcx_core::Function::from_source("", "f").id(),
            args: funcx_core::Args::new(),
            timeout: Some(Duration::from_millis(1500)),
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_gateways_racing_claim_each_task_once_and_leases_expire() {
        let first = fresh("race").await;
        let options =
            PgOptions::new(test_url()).schema(format!("test_race_{}", std::process::id()));
        let second = PgStore::connect_with(options).await.unwrap();
        assert_ne!(first.member(), second.member());
        let mut notes = second.subscribe();
        let resync = tokio::time::timeout(Duration::from_secs(10), notes.recv()).await;
        assert_eq!(resync.unwrap().unwrap(), FleetEvent::Resync);

        let task = |endpoint: &str| NewTask {
            owner: "alice".into(),
            endpoint: endpoint.into(),
            function: funcx_core::Function::from_source("", "f").id(),
            args: funcx_core::Args::new(),
            timeout: None,
        };
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

        // Both claim in small batches at once until nothing is left.
        let lease = Duration::from_secs(60);
        let drain = |store: PgStore| async move {
            let mut got = Vec::new();
            loop {
                let claimed = store.claim("e", 7, lease).await.unwrap();
                if claimed.is_empty() {
                    return got;
                }
                got.extend(claimed.into_iter().map(|t| t.id));
            }
        };
        let (a, b) = tokio::join!(drain(first.clone()), drain(second.clone()));
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
        assert_eq!(
            first.renew(vec!["e".into()], lease).await.unwrap(),
            a.len() as u64 - 1
        );
        assert!(second.claim("e", 1000, lease).await.unwrap().is_empty());
        let short = Duration::from_millis(200);
        assert_eq!(
            first.renew(vec!["e".into()], short).await.unwrap(),
            a.len() as u64 - 1
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut taken = Vec::new();
        while taken.len() < a.len() - 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lapsed claims were not taken over"
            );
            taken.extend(
                second
                    .claim("e", 1000, lease)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|t| t.id),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        taken.sort_unstable();
        assert_eq!(taken, a[1..].to_vec());
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
