//! [`Fleet`] for [`PgStore`]: claims with leases, so that each task runs through one gateway.

use super::listen::{listen, LISTENER_BUFFER};
use super::*;

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
            let lease = millis(lease) as f64;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            // The tasks of gateways whose lease on this endpoint lapsed (they died, or the
            // endpoint left them) are released first, then claimed with the others, oldest
            // first. The lease rows are locked: a submission being claimed at insert under
            // one holds it (`holds_lease`) and is skipped until it commits, so that its
            // tasks are seen here; a gateway taking the same one over at the same moment
            // skips it too.
            let lapsed = tx
                .prepare_cached(
                    "SELECT member FROM leases
                     WHERE endpoint = $1 AND until < now() AND member <> $2
                     FOR UPDATE SKIP LOCKED",
                )
                .await
                .map_err(pg)?;
            let lapsed: Vec<String> = tx
                .query(&lapsed, &[&endpoint, &self.member])
                .await
                .map_err(pg)?
                .iter()
                .map(|row| row.try_get(0).map_err(pg))
                .collect::<Result<_, _>>()?;
            if !lapsed.is_empty() {
                // Their tasks claimed at insert, unfinished, get a row in `pending` (a task
                // that is there already, taken over before, keeps its row) ...
                let moved = tx
                    .prepare_cached(
                        "INSERT INTO pending (id, endpoint)
                         SELECT t.id, t.endpoint FROM tasks t
                         WHERE t.endpoint = $1 AND t.claimed_by = ANY($2)
                           AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = t.id)
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .await
                    .map_err(pg)?;
                tx.execute(&moved, &[&endpoint, &lapsed])
                    .await
                    .map_err(pg)?;
                // ... their claimed ones are released, and their leases are gone: nothing is
                // held by them any more.
                tx.execute(
                    "UPDATE pending SET claimed_by = NULL
                     WHERE endpoint = $1 AND claimed_by = ANY($2)",
                    &[&endpoint, &lapsed],
                )
                .await
                .map_err(pg)?;
                tx.execute(
                    "DELETE FROM leases WHERE endpoint = $1 AND member = ANY($2)",
                    &[&endpoint, &lapsed],
                )
                .await
                .map_err(pg)?;
            }
            // The lease is written with the claim, so a task is never held without one.
            // SKIP LOCKED: a gateway claiming at the same moment takes other rows instead
            // of waiting for these, and neither gets a row twice.
            let claim = tx
                .prepare_cached(&format!(
                    "WITH lease AS (
                             INSERT INTO leases (endpoint, member, until)
                             VALUES ($2, $1, now() + $3 * interval '1 millisecond')
                             ON CONFLICT (endpoint, member) DO UPDATE SET until = EXCLUDED.until),
                         claimed AS (
                             UPDATE pending SET claimed_by = $1
                             WHERE id IN (
                                 SELECT id FROM pending
                                 WHERE endpoint = $2 AND claimed_by IS NULL
                                 ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
                             RETURNING id)
                         SELECT {TASK_COLUMNS} FROM task_rows
                         WHERE id = ANY(ARRAY(SELECT id FROM claimed))"
                ))
                .await
                .map_err(pg)?;
            let rows = tx
                .query(&claim, &[&self.member, &endpoint, &lease, &limit])
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

    fn insert_claimed(
        &self,
        key: Option<IdempotencyKey>,
        tasks: Vec<NewTask>,
        now: SystemTime,
        margin: Duration,
    ) -> StoreFuture<'_, (Insertion, bool)> {
        self.run(self.store_tasks(key, tasks, now, Some(margin)))
    }

    fn renew(&self, endpoints: Vec<String>, lease: Duration) -> StoreFuture<'_, u64> {
        self.run(async move {
            if endpoints.is_empty() {
                return Ok(0);
            }
            let mut client = self.client().await?;
            let tx = lax(&mut client).await?;
            // One row per endpoint, however many tasks the claims cover.
            let renewed = tx
                .execute(
                    "INSERT INTO leases (endpoint, member, until)
                     SELECT endpoint, $1, now() + $3 * interval '1 millisecond'
                     FROM unnest($2::text[]) AS e(endpoint)
                     ON CONFLICT (endpoint, member) DO UPDATE SET until = EXCLUDED.until",
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
                    "SELECT {TASK_COLUMNS} FROM task_rows WHERE id = ANY($1)"
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

impl PgStore {
    /// Whether this gateway's lease on `endpoint` runs for at least `margin` more, by the
    /// database's clock at the start of `tx`. If it does, the lease row stays locked
    /// (`KEY SHARE`: renewals go on) until `tx` ends, so that no gateway takes the lease
    /// over before the tasks `tx` claims under it are committed (see `claim`).
    pub(super) async fn holds_lease(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        endpoint: &str,
        margin: Duration,
    ) -> Result<bool, StoreError> {
        let statement = tx
            .prepare_cached(
                "SELECT 1 FROM leases WHERE endpoint = $1 AND member = $2
                 AND until > now() + $3 * interval '1 millisecond'
                 FOR KEY SHARE",
            )
            .await
            .map_err(pg)?;
        let row = tx
            .query_opt(
                &statement,
                &[&endpoint, &self.member, &(millis(margin) as f64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.is_some())
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
