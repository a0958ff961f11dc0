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
