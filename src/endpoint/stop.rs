//! Ending a running endpoint: draining its tasks, then releasing its blocks and waiting
//! until they have ended.

use std::time::Duration;

use funcx_core::BlockId;
use tracing::{info, warn};

use super::{Endpoint, EndpointState};

/// How long drained blocks get to end on their own (their managers exit) before they are
/// cancelled.
const OWN_END_GRACE: Duration = Duration::from_secs(15);

impl Endpoint {
    /// Drains: takes no new tasks (a gateway is asked to send no more), finishes and
    /// delivers every task it holds, then lets its managers go (they say goodbye and exit).
    /// Blocks stay until [`Endpoint::stop`].
    pub async fn drain(&self) {
        let _guard = self.inner.stopping.lock().await;
        self.drain_locked().await;
    }

    async fn drain_locked(&self) {
        if matches!(self.state(), EndpointState::Stopped) {
            return;
        }
        self.inner.state.send_replace(EndpointState::Draining);
        let link = self.inner.link.lock().ok().and_then(|mut link| link.take());
        if let Some(link) = link {
            link.leave().await;
        }
        self.inner.executor.shutdown().await;
        info!(endpoint = %self.inner.name, "endpoint drained");
    }

    /// Drains (see [`Endpoint::drain`]), then releases every block and waits until the
    /// provider reports each one ended, so that no manager or worker of the endpoint is
    /// left running when it returns (up to [`EndpointBuilder::stop_timeout`](super::EndpointBuilder::stop_timeout)).
    pub async fn stop(&self) {
        let _guard = self.inner.stopping.lock().await;
        if matches!(self.state(), EndpointState::Stopped) {
            return;
        }
        self.drain_locked().await;
        let strategy = self.inner.strategy.lock().ok().and_then(|mut s| s.take());
        let mut running: Vec<BlockId> = Vec::new();
        let mut pending: Vec<BlockId> = Vec::new();
        if let Some(strategy) = strategy {
            let status = strategy.status();
            for block in status.blocks.iter().filter(|b| !b.state.is_finished()) {
                if block.managers > 0 {
                    running.push(block.id.clone());
                } else {
                    pending.push(block.id.clone());
                }
            }
            if let Ok(mut last) = self.inner.last_strategy.lock() {
                *last = status;
            }
            // Not cancelling: the drained managers are exiting on their own, and a block
            // cancelled now could kill one before it has stopped its workers.
            strategy.stop(false).await;
        }
        // Blocks without a manager hold nothing: cancelled at once. Blocks whose managers
        // drained end when they exit; those that do not within the grace are cancelled.
        self.cancel(&pending).await;
        let own_end = OWN_END_GRACE.min(self.inner.stop_timeout);
        if tokio::time::timeout(own_end, self.blocks_ended(&running))
            .await
            .is_err()
        {
            self.cancel(&running).await;
        }
        let blocks: Vec<BlockId> = running.into_iter().chain(pending).collect();
        let waited =
            tokio::time::timeout(self.inner.stop_timeout, self.blocks_ended(&blocks)).await;
        if waited.is_err() {
            let message = format!(
                "blocks still not ended {:?} after being released: {blocks:?}",
                self.inner.stop_timeout
            );
            warn!(endpoint = %self.inner.name, "{message}");
            if let Ok(mut last) = self.inner.last_strategy.lock() {
                last.last_error = Some(message);
            }
        }
        if let Ok(mut last) = self.inner.last_strategy.lock() {
            last.managers = 0;
            last.workers = 0;
            last.busy_workers = 0;
            last.idle_workers = 0;
            last.queued = 0;
            last.in_flight = 0;
            for block in &mut last.blocks {
                block.managers = 0;
                block.workers = 0;
                block.busy = 0;
            }
        }
        self.inner.serving.abort();
        self.inner.state.send_replace(EndpointState::Stopped);
        info!(endpoint = %self.inner.name, "endpoint stopped");
    }

    async fn cancel(&self, blocks: &[BlockId]) {
        for block in blocks {
            if let Err(error) = self.inner.provider.cancel(block).await {
                warn!(%block, %error, "could not cancel block");
            }
        }
    }

    async fn blocks_ended(&self, blocks: &[BlockId]) {
        if blocks.is_empty() {
            return;
        }
        let mut pause = Duration::from_millis(20);
        loop {
            match self.inner.provider.status(blocks).await {
                Ok(statuses) if statuses.iter().all(|s| s.state.is_finished()) => {
                    if let Ok(mut last) = self.inner.last_strategy.lock() {
                        for status in statuses {
                            if let Some(block) = last.blocks.iter_mut().find(|b| b.id == status.id)
                            {
                                block.state = status.state;
                            }
                        }
                    }
                    return;
                }
                Ok(_) => {}
                Err(error) => warn!(%error, "could not read block status while stopping"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}
