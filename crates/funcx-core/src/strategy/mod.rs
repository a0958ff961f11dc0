//! The elastic strategy: grow and shrink an endpoint's blocks with its load.
//!
//! Every period the strategy polls the provider and the executor, then:
//! - scales **out** when outstanding tasks need more worker slots than the live blocks bring
//!   (times `parallelism`, within `min_blocks..=max_blocks`);
//! - scales **in** only blocks whose managers have all been idle for `max_idle_time`, by
//!   draining them (they finish, say goodbye and exit), never by killing a block that holds
//!   a task; pending blocks nobody needs any more are cancelled, as they hold nothing;
//! - drains a block `margin` before its walltime ends, so the scheduler kills no task; a
//!   task that still dies with it is re-run without being charged a retry;
//! - cancels a block pending longer than `pending_timeout`, or running without any manager
//!   dialling in for `connect_timeout`, and reports why;
//! - backs off (doubling up to `max_backoff`) after blocks fail or are rejected, instead of
//!   submitting into a wall forever.

mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

pub use config::StrategyConfig;

use crate::{
    BlockId, BlockReport, BlockRequest, BlockState, Executor, PoolStatus, Provider, StrategyStatus,
};

/// How many ended blocks the status keeps showing.
const ENDED_SHOWN: usize = 16;

/// A running strategy. Dropping it stops it (its blocks keep running; see
/// [`Strategy::stop`]).
#[derive(Debug)]
pub struct Strategy {
    status: watch::Receiver<StrategyStatus>,
    stop: Option<oneshot::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Strategy {
    /// Starts scaling `executor`'s blocks of `block` through `provider`.
    ///
    /// Must be called within a Tokio runtime.
    pub fn start(
        executor: Executor,
        provider: Arc<dyn Provider>,
        block: BlockRequest,
        config: StrategyConfig,
    ) -> Strategy {
        let (publish, status) = watch::channel(StrategyStatus::default());
        let (stop, stopped) = oneshot::channel();
        let scaler = Scaler {
            executor,
            provider,
            request: block,
            // Blocks within bounds whatever the public fields say: `wanted` clamps by them.
            config: config.normalized(),
            blocks: Vec::new(),
            ended: Vec::new(),
            failures: 0,
            backoff_until: None,
            last_error: None,
            publish,
        };
        let task = tokio::spawn(scaler.run(stopped));
        Strategy {
            status,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The latest snapshot of the endpoint.
    pub fn status(&self) -> StrategyStatus {
        self.status.borrow().clone()
    }

    /// Waits for the next snapshot.
    pub async fn changed(&mut self) -> StrategyStatus {
        let _ = self.status.changed().await;
        self.status.borrow_and_update().clone()
    }

    /// Stops scaling. With `cancel_blocks`, cancels every block it started too (drain the
    /// executor first, or their tasks are re-run elsewhere or fail).
    pub async fn stop(mut self, cancel_blocks: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(cancel_blocks);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Strategy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Block {
    id: BlockId,
    state: BlockState,
    submitted: Instant,
    running_since: Option<Instant>,
    draining: bool,
    reason: Option<String>,
}

struct Scaler {
    executor: Executor,
    provider: Arc<dyn Provider>,
    request: BlockRequest,
    config: StrategyConfig,
    blocks: Vec<Block>,
    ended: Vec<BlockReport>,
    failures: u32,
    backoff_until: Option<Instant>,
    last_error: Option<String>,
    publish: watch::Sender<StrategyStatus>,
}

/// Load on the managers of one block.
#[derive(Default)]
struct Load {
    managers: usize,
    workers: usize,
    busy: usize,
    /// The latest time any of its managers became idle; `None` if one is busy.
    idle_since: Option<SystemTime>,
    any_busy: bool,
}

impl Scaler {
    async fn run(mut self, mut stopped: oneshot::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.config.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..self.config.init_blocks {
            self.submit().await;
        }
        loop {
            tokio::select! {
                cancel = &mut stopped => {
                    if cancel.unwrap_or(false) {
                        for block in &self.blocks {
                            if let Err(error) = self.provider.cancel(&block.id).await {
                                warn!(block = %block.id, %error, "could not cancel block");
                            }
                        }
                    }
                    return;
                }
                _ = ticks.tick() => self.step().await,
            }
        }
    }

    async fn step(&mut self) {
        self.poll_blocks().await;
        let pools = self.executor.pools().await;
        let stats = self.executor.stats().await;
        let loads = load_by_block(&pools);
        self.drain_expiring();
        self.cancel_unreachable(&loads).await;

        let outstanding = stats.queued + stats.in_flight;
        let slots = self.slots_per_block(&pools);
        let live: Vec<usize> = (0..self.blocks.len())
            .filter(|&i| !self.blocks[i].draining && !self.blocks[i].state.is_finished())
            .collect();
        let wanted = self.wanted(outstanding, slots);
        if wanted > live.len() {
            if self.backing_off() {
                // Wait: the last blocks failed, and hammering the scheduler will not help.
            } else {
                for _ in live.len()..wanted {
                    self.submit().await;
                }
            }
        } else if wanted < live.len() {
            self.scale_in(live.len() - wanted, stats.queued, &loads)
                .await;
        }
        self.publish_status(&pools, stats.queued, stats.in_flight, &loads);
    }

    /// How many blocks the load calls for.
    fn wanted(&self, outstanding: usize, slots: usize) -> usize {
        let config = &self.config;
        let needed = if outstanding == 0 {
            0
        } else {
            let slots_wanted = (outstanding as f64 * config.parallelism).ceil() as usize;
            slots_wanted.div_ceil(slots.max(1)).max(1)
        };
        needed.clamp(config.min_blocks, config.max_blocks)
    }

    /// Worker slots per block: what registered managers show, else the configured estimate.
    fn slots_per_block(&self, pools: &[PoolStatus]) -> usize {
        let mut per_block: HashMap<&BlockId, usize> = HashMap::new();
        for pool in pools {
            if let Some(block) = &pool.block {
                *per_block.entry(block).or_default() += pool.size;
            }
        }
        let complete: Vec<usize> = self
            .blocks
            .iter()
            .filter(|b| b.state == BlockState::Running)
            .filter_map(|b| per_block.get(&b.id).copied())
            .collect();
        match complete.iter().max() {
            Some(&slots) if slots > 0 => slots.max(self.config.slots_per_block),
            _ => self.config.slots_per_block,
        }
    }

    fn backing_off(&self) -> bool {
        self.backoff_until
            .is_some_and(|until| Instant::now() < until)
    }

    fn fail(&mut self, reason: String) {
        self.failures += 1;
        let pause = self
            .config
            .period
            .saturating_mul(1 << self.failures.min(16))
            .min(self.config.max_backoff);
        self.backoff_until = Some(Instant::now() + pause);
        warn!(%reason, failures = self.failures, ?pause, "block problem; backing off");
        self.last_error = Some(reason);
    }

    async fn submit(&mut self) {
        match self.provider.submit(&self.request).await {
            Ok(id) => {
                info!(block = %id, provider = self.provider.name(), "submitted block");
                self.blocks.push(Block {
                    id,
                    state: BlockState::Pending,
                    submitted: Instant::now(),
                    running_since: None,
                    draining: false,
                    reason: None,
                });
            }
            Err(error) => self.fail(format!(
                "{} rejected a block: {error}",
                self.provider.name()
            )),
        }
    }

    async fn poll_blocks(&mut self) {
        if self.blocks.is_empty() {
            return;
        }
        let ids: Vec<BlockId> = self.blocks.iter().map(|b| b.id.clone()).collect();
        let statuses = match self.provider.status(&ids).await {
            Ok(statuses) => statuses,
            Err(error) => {
                warn!(%error, "could not read block status");
                self.last_error = Some(format!("could not read block status: {error}"));
                return;
            }
        };
        let now = Instant::now();
        for status in statuses {
            let Some(block) = self.blocks.iter_mut().find(|b| b.id == status.id) else {
                continue;
            };
            if status.state == BlockState::Running && block.running_since.is_none() {
                block.running_since = Some(now);
                info!(block = %block.id, "block running");
            }
            block.state = status.state;
        }
        let (ended, live): (Vec<Block>, Vec<Block>) = std::mem::take(&mut self.blocks)
            .into_iter()
            .partition(|b| b.state.is_finished());
        self.blocks = live;
        for block in ended {
            match &block.state {
                BlockState::Failed(reason) if !block.draining => {
                    self.fail(format!("block {} failed: {reason}", block.id));
                }
                // A block that ran and ended as planned resets the failure count.
                _ if block.running_since.is_some() && block.reason.is_none() => self.failures = 0,
                _ => {}
            }
            info!(block = %block.id, state = %block.state, "block ended");
            self.ended.push(report(&block, &Load::default()));
        }
        let excess = self.ended.len().saturating_sub(ENDED_SHOWN);
        self.ended.drain(..excess);
    }

    /// Drains blocks about to reach their walltime.
    fn drain_expiring(&mut self) {
        let Some((walltime, margin)) = self.config.walltime else {
            return;
        };
        for block in &mut self.blocks {
            let Some(since) = block.running_since else {
                continue;
            };
            if !block.draining && since.elapsed() + margin >= walltime {
                info!(block = %block.id, "draining block before its walltime ends");
                block.draining = true;
                self.executor.drain_block(&block.id);
            }
        }
    }

    /// Cancels blocks that never start, or start but never call home.
    async fn cancel_unreachable(&mut self, loads: &HashMap<BlockId, Load>) {
        let mut doomed = Vec::new();
        for block in &self.blocks {
            if block.state == BlockState::Pending
                && block.submitted.elapsed() > self.config.pending_timeout
            {
                doomed.push((
                    block.id.clone(),
                    format!(
                        "pending for more than {:?}; cancelled",
                        self.config.pending_timeout
                    ),
                ));
            } else if let Some(since) = block.running_since {
                let managers = loads.get(&block.id).map_or(0, |load| load.managers);
                if managers == 0 && !block.draining && since.elapsed() > self.config.connect_timeout
                {
                    doomed.push((
                        block.id.clone(),
                        format!(
                            "running for {:?} but no manager dialled in: can the nodes reach the endpoint's address?",
                            self.config.connect_timeout
                        ),
                    ));
                }
            }
        }
        for (id, reason) in doomed {
            if let Err(error) = self.provider.cancel(&id).await {
                warn!(block = %id, %error, "could not cancel block");
            }
            if let Some(block) = self.blocks.iter_mut().find(|b| b.id == id) {
                block.reason = Some(reason.clone());
                block.draining = true;
            }
            self.fail(format!("block {id} {reason}"));
        }
    }

    /// Releases `excess` blocks: pending ones first (they hold nothing), then blocks idle for
    /// long enough, drained so that nothing they hold is lost.
    async fn scale_in(&mut self, mut excess: usize, queued: usize, loads: &HashMap<BlockId, Load>) {
        // A pending block is cancelled only once it has waited as long as an idle one would
        // be kept: blocks submitted at start, or for a burst, get their chance.
        let patience = self.config.max_idle_time;
        let pending: Vec<BlockId> = self
            .blocks
            .iter()
            .rev()
            .filter(|b| b.state == BlockState::Pending && !b.draining)
            .filter(|b| b.submitted.elapsed() >= patience)
            .map(|b| b.id.clone())
            .collect();
        for id in pending.into_iter().take(excess) {
            if let Err(error) = self.provider.cancel(&id).await {
                warn!(block = %id, %error, "could not cancel block");
                continue;
            }
            if let Some(block) = self.blocks.iter_mut().find(|b| b.id == id) {
                block.draining = true;
                block.reason = Some("not needed any more".into());
            }
            excess -= 1;
        }
        if queued > 0 {
            return; // Work is waiting: idle blocks are about to get some.
        }
        let now = SystemTime::now();
        for block in &mut self.blocks {
            if excess == 0 {
                break;
            }
            if block.draining || block.state != BlockState::Running {
                continue;
            }
            let Some(load) = loads.get(&block.id) else {
                continue; // No manager yet: still starting.
            };
            let idle_for = load
                .idle_since
                .and_then(|since| now.duration_since(since).ok())
                .filter(|_| !load.any_busy);
            if idle_for.is_some_and(|idle| idle >= self.config.max_idle_time) {
                info!(block = %block.id, "draining idle block");
                block.draining = true;
                block.reason = Some("idle".into());
                self.executor.drain_block(&block.id);
                excess -= 1;
            }
        }
    }

    fn publish_status(
        &self,
        pools: &[PoolStatus],
        queued: usize,
        in_flight: usize,
        loads: &HashMap<BlockId, Load>,
    ) {
        let mut blocks: Vec<BlockReport> = self.ended.clone();
        blocks.extend(
            self.blocks
                .iter()
                .map(|block| report(block, loads.get(&block.id).unwrap_or(&Load::default()))),
        );
        let workers: usize = pools.iter().map(|p| p.size).sum();
        let busy_workers: usize = pools.iter().map(|p| p.in_flight.min(p.size)).sum();
        let backing_off_until = self
            .backoff_until
            .filter(|until| Instant::now() < *until)
            .map(|until| SystemTime::now() + until.saturating_duration_since(Instant::now()));
        let status = StrategyStatus {
            blocks,
            managers: pools.len(),
            workers,
            busy_workers,
            idle_workers: workers - busy_workers,
            queued,
            in_flight,
            last_error: self.last_error.clone(),
            backing_off_until,
        };
        self.publish.send_replace(status);
    }
}

fn load_by_block(pools: &[PoolStatus]) -> HashMap<BlockId, Load> {
    let mut loads: HashMap<BlockId, Load> = HashMap::new();
    for pool in pools {
        let Some(block) = &pool.block else {
            continue;
        };
        let load = loads.entry(block.clone()).or_default();
        load.managers += 1;
        load.workers += pool.size;
        load.busy += pool.in_flight.min(pool.size);
        load.any_busy |= pool.in_flight > 0;
        if let Some(since) = pool.idle_since {
            load.idle_since = Some(load.idle_since.map_or(since, |other| other.max(since)));
        }
    }
    loads
}

fn report(block: &Block, load: &Load) -> BlockReport {
    let reason = block.reason.clone().or_else(|| match &block.state {
        BlockState::Failed(reason) | BlockState::Unknown(reason) => Some(reason.clone()),
        _ => None,
    });
    BlockReport {
        id: block.id.clone(),
        state: block.state.clone(),
        draining: block.draining,
        managers: load.managers,
        workers: load.workers,
        busy: load.busy,
        reason,
    }
}
