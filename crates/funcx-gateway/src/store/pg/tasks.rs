//! [`TaskStore`] for [`PgStore`]: users, functions, endpoints, tasks and results as rows.

use super::*;

/// Numbers `tasks` and stores them in `tx`, each with its row in `pending` (unfinished):
/// ids are taken from the sequence first and
/// handed out in ascending order, so a batch's ids increase as its tasks do. With a
/// `claimant`, the tasks are stored claimed by it (the caller checked its lease) and no
/// other gateway is told of them; without, every gateway listening hears of them.
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
    let mut owners = Vec::with_capacity(tasks.len());
    let mut endpoints = Vec::with_capacity(tasks.len());
    let mut functions = Vec::with_capacity(tasks.len());
    let mut args = Vec::with_capacity(tasks.len());
    let mut timeouts = Vec::with_capacity(tasks.len());
    let mut states = Vec::with_capacity(tasks.len());
    let mut timelines = Vec::with_capacity(tasks.len());
    // Plain tasks (nearly all) are inserted as before, without four columns of NULLs.
    let special = tasks.iter().any(|task| task.resources.is_some());
    let mut cores = Vec::new();
    let mut gpus = Vec::new();
    let mut memory = Vec::new();
    let mut nodes = Vec::new();
    for (task, id) in tasks.into_iter().zip(&ids) {
        let record = new_record(id_from_sql(*id)?, task, now)?;
        if special {
            let [c, g, m, n] = resources_to_row(record.resources.as_ref())?;
            cores.push(c);
            gpus.push(g);
            memory.push(m);
            nodes.push(n);
        }
        states.push(encode(&record.state)?);
        timelines.push(encode(&record.timeline)?);
        timeouts.push(record.timeout.map(millis));
        functions.push(record.function.as_bytes().to_vec());
        owners.push(record.owner);
        endpoints.push(record.endpoint);
        args.push(record.args);
    }
    if special {
        let statement = tx
            .prepare_cached(
                "WITH stored AS (
                     INSERT INTO tasks (id, owner, endpoint, function, args, timeout_ms, state,
                                        timeline, created, cores, gpus, memory, nodes)
                     SELECT id, owner, endpoint, function, args, timeout_ms, state, timeline,
                            $9, cores, gpus, memory, nodes
                     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[],
                                 $5::bytea[], $6::bigint[], $7::bytea[], $8::bytea[],
                                 $10::bigint[], $11::bigint[], $12::bigint[], $14::bigint[])
                          AS t(id, owner, endpoint, function, args, timeout_ms, state,
                               timeline, cores, gpus, memory, nodes)
                     RETURNING id, endpoint)
                 INSERT INTO pending (id, endpoint, claimed_by)
                 SELECT id, endpoint, $13 FROM stored",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &statement,
            &[
                &ids, &owners, &endpoints, &functions, &args, &timeouts, &states, &timelines, &now,
                &cores, &gpus, &memory, &claimant, &nodes,
            ],
        )
        .await
        .map_err(pg)?;
    } else {
        let statement = tx
            .prepare_cached(
                "WITH stored AS (
                     INSERT INTO tasks (id, owner, endpoint, function, args, timeout_ms, state,
                                        timeline, created)
                     SELECT id, owner, endpoint, function, args, timeout_ms, state, timeline, $9
                     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[],
                                 $5::bytea[], $6::bigint[], $7::bytea[], $8::bytea[])
                          AS t(id, owner, endpoint, function, args, timeout_ms, state, timeline)
                     RETURNING id, endpoint)
                 INSERT INTO pending (id, endpoint, claimed_by)
                 SELECT id, endpoint, $10 FROM stored",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &statement,
            &[
                &ids, &owners, &endpoints, &functions, &args, &timeouts, &states, &timelines, &now,
                &claimant,
            ],
        )
        .await
        .map_err(pg)?;
    }
    // Delivered at commit, to every gateway listening: the one holding the endpoint claims.
    endpoints.sort_unstable();
    endpoints.dedup();
    if claimant.is_some() {
        endpoints.clear();
    }
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
            if outcomes.is_empty() {
                return Ok(Vec::new());
            }
            // One statement, no read first. Deleting the task's `pending` row decides who
            // finishes it: a concurrent finish of the same task waits on the row and then
            // finds it gone, so the first one's result stands and the later one's is
            // dropped (and not returned); a task finished already, or unknown, has no row.
            // The result itself is a plain insert into `results` (no task row rewritten).
            // The stored timeline's submission time is not the gateway's (the endpoint
            // executor saw a later one); `task_of_row` reads it from `created`.
            let mut seen = std::collections::HashSet::with_capacity(outcomes.len());
            let mut ids = Vec::with_capacity(outcomes.len());
            let mut states = Vec::with_capacity(outcomes.len());
            let mut timelines = Vec::with_capacity(outcomes.len());
            let mut results = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                if !seen.insert(outcome.id) {
                    continue; // The first outcome of a task wins, as in every store.
                }
                let (state, timeline) = settled(&outcome, now);
                ids.push(id_to_sql(outcome.id));
                states.push(encode(&state)?);
                timelines.push(encode(&timeline)?);
                // The inner value, as `task_of_row` decodes it (NULL is the `None`).
                results.push(encode(&outcome.result)?);
            }
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let update = tx
                .prepare_cached(
                    "WITH done AS (
                         DELETE FROM pending WHERE id = ANY($1::bigint[]) RETURNING id),
                     stored AS (
                         INSERT INTO results (id, state, timeline, result, finished)
                         SELECT u.id, u.state, u.timeline, u.result, $5
                         FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[])
                              AS u(id, state, timeline, result)
                         WHERE u.id IN (SELECT id FROM done)
                         RETURNING id, state, timeline, result, finished)
                     SELECT t.id, t.owner, t.endpoint, t.function, t.args, t.timeout_ms,
                            s.state, s.timeline, s.result, t.created, s.finished,
                            t.cores, t.gpus, t.memory, t.nodes
                     FROM stored s JOIN tasks t ON t.id = s.id",
                )
                .await
                .map_err(pg)?;
            let rows = tx
                .query(&update, &[&ids, &states, &timelines, &results, &now])
                .await
                .map_err(pg)?;
            if rows.is_empty() {
                tx.rollback().await.map_err(pg)?;
                return Ok(Vec::new());
            }
            let mut done = rows
                .iter()
                .map(|row| task_of_row(row).map(|(record, _)| record))
                .collect::<Result<Vec<_>, _>>()?;
            done.sort_unstable_by_key(|record| record.id);
            let done_ids: Vec<i64> = done.iter().map(|record| id_to_sql(record.id)).collect();
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
            tx.commit().await.map_err(pg)?;
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
                         WHERE id IN (SELECT id FROM pending) ORDER BY id"
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
