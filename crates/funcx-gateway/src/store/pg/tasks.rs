//! [`TaskStore`] for [`PgStore`]: users, functions, endpoints, tasks and results as rows.

use super::*;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

/// Numbers `tasks` and stores them in `tx`: ids are taken from the sequence first and
/// handed out in ascending order, so a batch's ids increase as its tasks do. With a
/// `claimant`, the tasks are stored claimed by it (the caller holds its lease) in their own
/// row, and no other gateway is told of them; without, each gets a row in `pending`
/// (unclaimed) and every gateway listening hears of them.
async fn insert(
    tx: &deadpool_postgres::Transaction<'_>,
    member: &str,
    channels: &Channels,
    tasks: Vec<NewTask>,
    now: SystemTime,
    claimant: Option<&str>,
) -> Result<Vec<u64>, StoreError> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    // The timeline's submission time is read back from `created` (see `finish`): the same
    // time, to the column's microsecond.
    let now = to_micros(now);
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
    // `COPY ... BINARY` rather than `INSERT ... SELECT FROM unnest(...)`: no arrays to
    // unpack and no plan per statement, and the server writes the rows a page at a time.
    let copy = tx
        .prepare_cached(
            "COPY tasks (id, owner, endpoint, function, args, timeout_ms, state, timeline,
                         created, cores, gpus, memory, nodes, claimed_by)
             FROM STDIN (FORMAT binary)",
        )
        .await
        .map_err(pg)?;
    let sink = tx.copy_in(&copy).await.map_err(pg)?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::BYTEA,
            Type::BYTEA,
            Type::INT8,
            Type::BYTEA,
            Type::BYTEA,
            Type::TIMESTAMPTZ,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
        ],
    );
    let mut writer = std::pin::pin!(writer);
    let mut endpoints = Vec::with_capacity(tasks.len());
    // Every new task's state and timeline are the same: encoded once.
    let mut encoded: Option<(Vec<u8>, Vec<u8>)> = None;
    for (task, id) in tasks.into_iter().zip(&ids) {
        let record = new_record(id_from_sql(*id)?, task, now)?;
        let (state, timeline) = match &encoded {
            Some(both) => both,
            None => encoded.insert((encode(&record.state)?, encode(&record.timeline)?)),
        };
        let [cores, gpus, memory, nodes] = resources_to_row(record.resources.as_ref())?;
        let function = record.function.as_bytes().as_slice();
        let timeout = record.timeout.map(millis);
        writer
            .as_mut()
            .write(&[
                id,
                &record.owner,
                &record.endpoint,
                &function,
                &record.args,
                &timeout,
                state,
                timeline,
                &now,
                &cores,
                &gpus,
                &memory,
                &nodes,
                &claimant,
            ])
            .await
            .map_err(pg)?;
        endpoints.push(record.endpoint);
    }
    writer.finish().await.map_err(pg)?;
    if claimant.is_some() {
        return ids.into_iter().map(id_from_sql).collect();
    }
    let unclaimed = tx
        .prepare_cached("COPY pending (id, endpoint) FROM STDIN (FORMAT binary)")
        .await
        .map_err(pg)?;
    let sink = tx.copy_in(&unclaimed).await.map_err(pg)?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &[Type::INT8, Type::TEXT]));
    for (id, endpoint) in ids.iter().zip(&endpoints) {
        writer.as_mut().write(&[id, endpoint]).await.map_err(pg)?;
    }
    writer.finish().await.map_err(pg)?;
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

impl PgStore {
    /// Stores a submission of `tasks`, under `key` if it has one (as
    /// [`TaskStore::insert_tasks_once`] does), in one transaction. With `claim`, the tasks are
    /// stored claimed by this gateway if they are all for one endpoint and this gateway's
    /// lease on it runs for at least `claim` more (see [`Fleet::insert_claimed`]); returns
    /// what was stored and whether it was claimed so.
    pub(super) async fn store_tasks(
        &self,
        key: Option<IdempotencyKey>,
        tasks: Vec<NewTask>,
        now: SystemTime,
        claim: Option<Duration>,
    ) -> Result<(Insertion, bool), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if let Some(key) = &key {
            // The key's row first: a concurrent insert of the same key waits on the primary
            // key until this transaction ends, then sees it and creates nothing.
            let new_key = tx
                .execute(
                    "INSERT INTO idempotency_keys (owner, key, fingerprint, ids, created)
                     VALUES ($1, $2, $3, '{}', $4) ON CONFLICT DO NOTHING",
                    &[&key.owner, &key.key, &key.fingerprint.as_slice(), &now],
                )
                .await
                .map_err(pg)?;
            if new_key == 0 {
                let row = tx
                    .query_one(
                        "SELECT fingerprint, ids FROM idempotency_keys WHERE owner = $1 AND key = $2",
                        &[&key.owner, &key.key],
                    )
                    .await
                    .map_err(pg)?;
                let fingerprint: &[u8] = row.try_get(0).map_err(pg)?;
                if fingerprint != key.fingerprint.as_slice() {
                    return Ok((Insertion::Conflict, false));
                }
                let ids: Vec<i64> = row.try_get(1).map_err(pg)?;
                let ids = ids.into_iter().map(id_from_sql).collect::<Result<_, _>>()?;
                return Ok((Insertion::Replayed(ids), false));
            }
        }
        let claimant = match (claim, one_endpoint(&tasks)) {
            (Some(margin), Some(endpoint)) => self
                .holds_lease(&tx, endpoint, margin)
                .await?
                .then_some(self.member.as_str()),
            _ => None,
        };
        let ids = insert(&tx, &self.member, &self.channels, tasks, now, claimant).await?;
        if let Some(key) = &key {
            let sql_ids: Vec<i64> = ids.iter().copied().map(id_to_sql).collect();
            tx.execute(
                "UPDATE idempotency_keys SET ids = $3 WHERE owner = $1 AND key = $2",
                &[&key.owner, &key.key, &sql_ids],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok((Insertion::Created(ids), claimant.is_some()))
    }
}

/// A finish's outcome of one task with its `results` row encoded (state, timeline, result).
struct Outcome {
    finished: Finished,
    state: TaskState,
    timeline: Timeline,
    row: [Vec<u8>; 3],
}

/// A task's own columns as [`task_of_row`] reads them, without a result: what a finish
/// reads of the tasks it stores results for.
const UNFINISHED_TASK_COLUMNS: &str = "id, owner, endpoint, function, args, timeout_ms, state, \
     timeline, NULL::bytea, created, NULL::timestamptz, cores, gpus, memory, nodes";

impl PgStore {
    /// Stores the results of `outcomes` in one transaction, of tasks that exist only, and
    /// returns the rows (of `tasks`) of those whose result it stored. With `copy`, the
    /// results are copied in as plain rows: if one of the tasks got a result after it was
    /// read (a concurrent finish of another gateway), nothing is stored and the answer is
    /// `None`. Without, each result is stored unless its
    /// task has one (`ON CONFLICT DO NOTHING`; a concurrent finish of the same task waits for
    /// the first to commit). Either way the tasks' rows in `pending` go: a task with a
    /// result is finished, whoever stored it.
    async fn store_results(
        &self,
        outcomes: &[Outcome],
        now: SystemTime,
        copy: bool,
    ) -> Result<Option<Vec<Row>>, StoreError> {
        let ids: Vec<i64> = outcomes
            .iter()
            .map(|outcome| id_to_sql(outcome.finished.id))
            .collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Tasks with a result already are left out here: a gateway may be told of a
        // result twice (its endpoint's keeper and executor both report it), and the second
        // is then a read, not a failed copy. `OFFSET 0` keeps the check a probe of the
        // primary key per task (see migration 7).
        let read = tx
            .prepare_cached(&format!(
                "SELECT {UNFINISHED_TASK_COLUMNS} FROM tasks t WHERE id = ANY($1)
                 AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = t.id OFFSET 0)"
            ))
            .await
            .map_err(pg)?;
        let mut rows = tx.query(&read, &[&ids]).await.map_err(pg)?;
        let known = rows
            .iter()
            .map(|row| row.try_get::<_, i64>(0).map_err(pg))
            .collect::<Result<std::collections::HashSet<i64>, _>>()?;
        let known_outcomes = || {
            outcomes
                .iter()
                .map(|outcome| (id_to_sql(outcome.finished.id), outcome))
                .filter(|(id, _)| known.contains(id))
        };
        if rows.is_empty() {
            // Nothing to store. A row in `pending` of a finished task (left by a takeover
            // that raced its finish) is still deleted below.
        } else if copy {
            let copied = async {
                let statement = tx
                    .prepare_cached(
                        "COPY results (id, state, timeline, result, finished)
                         FROM STDIN (FORMAT binary)",
                    )
                    .await?;
                let sink = tx.copy_in(&statement).await?;
                let mut writer = std::pin::pin!(BinaryCopyInWriter::new(
                    sink,
                    &[
                        Type::INT8,
                        Type::BYTEA,
                        Type::BYTEA,
                        Type::BYTEA,
                        Type::TIMESTAMPTZ,
                    ],
                ));
                for (id, outcome) in known_outcomes() {
                    let [state, timeline, result] = &outcome.row;
                    writer
                        .as_mut()
                        .write(&[&id, state, timeline, result, &now])
                        .await?;
                }
                writer.finish().await
            };
            match copied.await {
                Ok(_) => {}
                Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Ok(None);
                }
                Err(error) => return Err(pg(error)),
            }
        } else {
            let (mut stored_ids, mut states, mut timelines, mut results) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (id, outcome) in known_outcomes() {
                let [state, timeline, result] = &outcome.row;
                stored_ids.push(id);
                states.push(state.as_slice());
                timelines.push(timeline.as_slice());
                results.push(result.as_slice());
            }
            let insert = tx
                .prepare_cached(
                    "INSERT INTO results (id, state, timeline, result, finished)
                     SELECT u.id, u.state, u.timeline, u.result, $5
                     FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[])
                          AS u(id, state, timeline, result)
                     ON CONFLICT (id) DO NOTHING
                     RETURNING id",
                )
                .await
                .map_err(pg)?;
            let stored = tx
                .query(&insert, &[&stored_ids, &states, &timelines, &results, &now])
                .await
                .map_err(pg)?
                .iter()
                .map(|row| row.try_get::<_, i64>(0).map_err(pg))
                .collect::<Result<std::collections::HashSet<i64>, _>>()?;
            rows.retain(|row| matches!(row.try_get::<_, i64>(0), Ok(id) if stored.contains(&id)));
        }
        let statement = tx
            .prepare_cached("DELETE FROM pending WHERE id = ANY($1)")
            .await
            .map_err(pg)?;
        tx.execute(&statement, &[&ids]).await.map_err(pg)?;
        let mut done_ids = rows
            .iter()
            .map(|row| row.try_get::<_, i64>(0).map_err(pg))
            .collect::<Result<Vec<i64>, _>>()?;
        done_ids.sort_unstable();
        if !done_ids.is_empty() {
            // Other gateways' result streams learn of these at commit: every notification
            // in one statement, not a round trip each.
            let payloads: Vec<String> = done_ids
                .chunks(IDS_PER_NOTIFICATION)
                .map(|chunk| {
                    let mut payload = self.member.clone();
                    for (i, id) in chunk.iter().enumerate() {
                        payload.push(if i == 0 { ' ' } else { ',' });
                        payload.push_str(&id.to_string());
                    }
                    payload
                })
                .collect();
            tx.execute(
                "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS p(payload)",
                &[&self.channels.results, &payloads],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(Some(rows))
    }
}

/// The endpoint of `tasks` if they are all for one (as a submission's are).
fn one_endpoint(tasks: &[NewTask]) -> Option<&str> {
    let first = tasks.first()?;
    tasks
        .iter()
        .all(|task| task.endpoint == first.endpoint)
        .then_some(first.endpoint.as_str())
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
            let record = encode_function(&function)?;
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
                .map(|row| decode_function(row.try_get::<_, &[u8]>(0).map_err(pg)?))
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
            match self.store_tasks(None, tasks, now, None).await? {
                (Insertion::Created(ids), _) => Ok(ids),
                (other, _) => Err(StoreError::backend(format!(
                    "tasks stored without a key were not created: {other:?}"
                ))),
            }
        })
    }

    fn insert_tasks_once(
        &self,
        key: IdempotencyKey,
        tasks: Vec<NewTask>,
        now: SystemTime,
    ) -> StoreFuture<'_, Insertion> {
        self.run(async move {
            let (insertion, _) = self.store_tasks(Some(key), tasks, now, None).await?;
            Ok(insertion)
        })
    }

    fn task(&self, id: u64) -> StoreFuture<'_, Option<TaskRecord>> {
        self.run(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM task_rows WHERE id = $1"
                ))
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
                        "SELECT {TASK_COLUMNS} FROM task_rows WHERE owner = $1 AND id < $2
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
            // The column's precision, as the stored time reads back.
            let now = to_micros(now);
            let mut seen = std::collections::HashSet::with_capacity(outcomes.len());
            let mut settled_outcomes = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                if !seen.insert(outcome.id) {
                    continue; // The first outcome of a task wins, as in every store.
                }
                let (state, timeline) = settled(&outcome, now);
                // The stored timeline's submission time is not the gateway's (the endpoint
                // executor saw a later one); `task_of_row` reads it from `created`.
                settled_outcomes.push(Outcome {
                    row: [
                        encode(&state)?,
                        encode(&timeline)?,
                        // The inner value, as `task_of_row` decodes it (NULL is the `None`).
                        encode(&outcome.result)?,
                    ],
                    state,
                    timeline,
                    finished: outcome,
                });
            }
            if settled_outcomes.is_empty() {
                return Ok(Vec::new());
            }
            // Nearly always none of these tasks has a result yet: the results are copied in
            // as plain rows. One that has (a task run twice across a failover, or finished
            // by another gateway at the same moment) fails the copy on the primary key, and
            // the batch is stored again, each result only where its task has none.
            let rows = match self.store_results(&settled_outcomes, now, true).await? {
                Some(rows) => rows,
                None => self
                    .store_results(&settled_outcomes, now, false)
                    .await?
                    .unwrap_or_default(),
            };
            let mut by_id: std::collections::HashMap<u64, Outcome> = settled_outcomes
                .into_iter()
                .map(|outcome| (outcome.finished.id, outcome))
                .collect();
            let mut done = Vec::with_capacity(rows.len());
            for row in &rows {
                let (mut record, _) = task_of_row(row)?;
                let Some(outcome) = by_id.remove(&record.id) else {
                    continue;
                };
                record.state = outcome.state;
                record.timeline = Timeline {
                    submitted: record.created,
                    ..outcome.timeline
                };
                record.result = Some(outcome.finished.result);
                record.finished = Some(now);
                done.push(record);
            }
            done.sort_unstable_by_key(|record| record.id);
            Ok(done)
        })
    }

    fn delete_task(&self, id: u64) -> StoreFuture<'_, bool> {
        self.run(async move {
            let client = self.client().await?;
            let deleted = client
                .execute(
                    "WITH result AS (DELETE FROM results WHERE id = $1),
                          unfinished AS (DELETE FROM pending WHERE id = $1)
                     DELETE FROM tasks WHERE id = $1",
                    &[&id_to_sql(id)],
                )
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
                    &format!(
                        "SELECT {TASK_COLUMNS} FROM task_rows
                         WHERE id IN (SELECT id FROM pending)
                            OR id IN (SELECT t.id FROM tasks t WHERE t.claimed_by IS NOT NULL
                                      AND NOT EXISTS (SELECT 1 FROM results r
                                                      WHERE r.id = t.id))
                         ORDER BY id"
                    ),
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
                    "WITH expired AS (DELETE FROM results WHERE finished < $1 RETURNING id)
                     DELETE FROM tasks WHERE id IN (SELECT id FROM expired)",
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
