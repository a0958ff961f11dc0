//! Cancelling: tasks the caller cancels, at the gateway too, and everything left when the
//! executor lets go of the pool.

use std::collections::HashSet;
use std::time::Duration;

use funcx_core::worker::WorkResult;
use funcx_core::{TaskError, TaskId};
use futures::StreamExt;
use hyper::Method;
use tracing::debug;

use super::Driver;

impl Driver {
    /// Cancels tasks: those not yet sent are dropped, those at the gateway are cancelled
    /// there (in the background). Either way the dispatcher learns at once; a result that
    /// arrives later is for a task nobody waits for and is ignored.
    pub(super) fn cancel(&mut self, ids: Vec<TaskId>) {
        let ids: HashSet<TaskId> = ids.into_iter().collect();
        let before = self.pending.len();
        self.pending.retain(|item| !ids.contains(&item.id));
        if let Some((_, chunk)) = &self.in_doubt {
            // Kept in the submission, which must be resent unchanged under its key.
            self.cancelled_in_doubt.extend(
                chunk
                    .iter()
                    .map(|item| item.id)
                    .filter(|id| ids.contains(id)),
            );
        }
        let mut at_gateway = Vec::new();
        for id in &ids {
            if let Some(remote) = self.gateway_of.remove(id) {
                self.local_of.remove(&remote);
                at_gateway.push(remote);
            }
        }
        debug!(
            dropped = before - self.pending.len(),
            at_gateway = at_gateway.len(),
            "cancelling tasks"
        );
        self.cancel_at_gateway(at_gateway);
        let results = ids
            .into_iter()
            .map(|id| WorkResult {
                id,
                duration: Duration::ZERO,
                outcome: Err(TaskError::cancelled()),
            })
            .collect();
        self.report(results);
    }

    /// Cancels tasks at the gateway, in the background.
    pub(super) fn cancel_at_gateway(&self, remote: Vec<u64>) {
        if remote.is_empty() {
            return;
        }
        let http = self.http.clone();
        tokio::spawn(async move {
            futures::stream::iter(remote)
                .for_each_concurrent(16, |remote| {
                    let http = &http;
                    async move {
                        let path = format!("/v1/tasks/{remote}/cancel");
                        if let Err(error) = http.call(Method::POST, &path, None).await {
                            debug!(task = remote, %error, "cancel at the gateway failed");
                        }
                    }
                })
                .await;
        });
    }

    /// The dispatcher is done with the pool: cancel what is left at the gateway (briefly,
    /// best effort), and stop.
    pub(super) async fn abandon(&mut self) {
        let remote: Vec<u64> = self.local_of.drain().map(|(remote, _)| remote).collect();
        self.gateway_of.clear();
        self.pending.clear();
        // A submission in doubt may be stored; its tasks are not known by id, so they run
        // (nobody reads their results). Unavoidable: the gateway never answered.
        self.in_doubt = None;
        if remote.is_empty() {
            return;
        }
        debug!(
            tasks = remote.len(),
            "cancelling abandoned tasks at the gateway"
        );
        let http = &self.http;
        let cancels = futures::stream::iter(remote).for_each_concurrent(16, |remote| async move {
            let path = format!("/v1/tasks/{remote}/cancel");
            let _ = http.call(Method::POST, &path, None).await;
        });
        let _ = tokio::time::timeout(Duration::from_secs(2), cancels).await;
    }
}
