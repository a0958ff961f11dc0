//! The elastic strategy against a scripted provider and hand-driven pools of workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use funcx_core::worker::{ToWorker, WorkResult, Worker, WorkerEvent, WorkerEvents};
use funcx_core::{
    BlockId, BlockRequest, BlockState, BlockStatus, Executor, Function, ManagerCommand, Provider,
    ProviderError, Strategy, StrategyConfig, TaskHandle,
};
use futures::future::BoxFuture;

/// A provider whose blocks change state only when the test says so.
#[derive(Clone, Default)]
struct Scripted {
    state: Arc<Mutex<ScriptedState>>,
}

#[derive(Default)]
struct ScriptedState {
    next: u32,
    blocks: HashMap<BlockId, BlockState>,
    submitted: Vec<BlockId>,
    cancelled: Vec<BlockId>,
    reject: bool,
    start_running: bool,
}

impl Scripted {
    fn running() -> Scripted {
        let scripted = Scripted::default();
        scripted.lock().start_running = true;
        scripted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScriptedState> {
        self.state.lock().expect("not poisoned")
    }

    fn submitted(&self) -> Vec<BlockId> {
        self.lock().submitted.clone()
    }

    fn cancelled(&self) -> Vec<BlockId> {
        self.lock().cancelled.clone()
    }

    fn set(&self, id: &BlockId, state: BlockState) {
        self.lock().blocks.insert(id.clone(), state);
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn submit<'a>(
        &'a self,
        _request: &'a BlockRequest,
    ) -> BoxFuture<'a, Result<BlockId, ProviderError>> {
        let mut state = self.lock();
        let result = if state.reject {
            Err(ProviderError::rejected("invalid partition 'gpu'"))
        } else {
            state.next += 1;
            let id = BlockId::new(format!("b{}", state.next));
            let initial = if state.start_running {
                BlockState::Running
            } else {
                BlockState::Pending
            };
            state.blocks.insert(id.clone(), initial);
            state.submitted.push(id.clone());
            Ok(id)
        };
        Box::pin(std::future::ready(result))
    }

    fn status<'a>(
        &'a self,
        blocks: &'a [BlockId],
    ) -> BoxFuture<'a, Result<Vec<BlockStatus>, ProviderError>> {
        let state = self.lock();
        let statuses = blocks
            .iter()
            .map(|id| {
                let block_state = state
                    .blocks
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| BlockState::Unknown("never submitted".into()));
                BlockStatus::new(id.clone(), block_state, std::time::SystemTime::now())
            })
            .collect();
        Box::pin(std::future::ready(Ok(statuses)))
    }

    fn cancel<'a>(&'a self, block: &'a BlockId) -> BoxFuture<'a, Result<(), ProviderError>> {
        let mut state = self.lock();
        state.cancelled.push(block.clone());
        state.blocks.insert(block.clone(), BlockState::Cancelled);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A pool of workers the test drives by hand: it records what it is sent.
#[derive(Clone, Default)]
struct Pool {
    received: Arc<Mutex<Vec<ToWorker>>>,
    events: Arc<Mutex<Option<WorkerEvents>>>,
}

struct PoolWorker(Pool);

impl Worker for PoolWorker {
    fn send(&mut self, message: ToWorker) {
        self.0.received.lock().expect("not poisoned").push(message);
    }

    fn kill(&mut self) {}
}

impl Pool {
    async fn attach(executor: &Executor, size: usize, block: &BlockId) -> Pool {
        let pool = Pool::default();
        let events = executor
            .attach(
                Box::new(PoolWorker(pool.clone())),
                size,
                Some(block.clone()),
            )
            .await
            .expect("attach");
        *pool.events.lock().expect("not poisoned") = Some(events);
        pool
    }

    fn tasks(&self) -> Vec<funcx_core::worker::WorkItem> {
        self.received
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|m| match m {
                ToWorker::Tasks(items) => Some(items.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn drained(&self) -> bool {
        self.received
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|m| matches!(m, ToWorker::Shutdown))
    }

    fn finish_all(&self) {
        let results = self
            .tasks()
            .into_iter()
            .map(|item| WorkResult {
                id: item.id,
                duration: Duration::from_millis(1),
                outcome: Ok(item.args.positional()[0].clone()),
            })
            .collect();
        self.received.lock().expect("not poisoned").clear();
        self.send(WorkerEvent::Results(results));
    }

    fn send(&self, event: WorkerEvent) {
        if let Some(events) = self.events.lock().expect("not poisoned").as_ref() {
            events.send(event);
        }
    }
}

fn request() -> BlockRequest {
    BlockRequest::new(ManagerCommand::new("funcx-manager"))
}

fn fast() -> StrategyConfig {
    StrategyConfig::new()
        .period(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(200))
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

fn echo() -> Function {
    Function::from_source("def echo(x):\n    return x\n", "echo")
}

#[tokio::test]
async fn a_backlog_scales_out_up_to_max_blocks() {
    let executor = Executor::builder().start_without_workers();
    let provider = Scripted::default();
    let _handles: Vec<TaskHandle> = executor.submit_batch(&echo(), (0..100).map(|i| (i,)));
    let strategy = Strategy::start(
        executor.clone(),
        Arc::new(provider.clone()),
        request(),
        fast().init_blocks(0).max_blocks(5).slots_per_block(10),
    );
    until("five blocks are submitted", || {
        provider.submitted().len() == 5
    })
    .await;
    // Several more periods: the backlog wants ten blocks, but five is the ceiling.
    let mut strategy = strategy;
    for _ in 0..5 {
        strategy.changed().await;
    }
    assert_eq!(provider.submitted().len(), 5);
    assert_eq!(strategy.status().queued, 100);
    assert!(
        provider.cancelled().is_empty(),
        "pending blocks that are needed stay"
    );
}

#[tokio::test]
async fn parallelism_asks_for_fewer_slots_than_tasks() {
    let executor = Executor::builder().start_without_workers();
    let provider = Scripted::default();
    let _handles = executor.submit_batch(&echo(), (0..100).map(|i| (i,)));
    let mut strategy = Strategy::start(
        executor.clone(),
        Arc::new(provider.clone()),
        request(),
        fast()
            .init_blocks(0)
            .max_blocks(20)
            .slots_per_block(10)
            .parallelism(0.3),
    );
    until("blocks are submitted", || !provider.submitted().is_empty()).await;
    for _ in 0..5 {
        strategy.changed().await;
    }
    // 100 tasks × 0.3 = 30 slots = 3 blocks of 10.
    assert_eq!(provider.submitted().len(), 3);
}

#[tokio::test]
async fn rejected_and_failed_blocks_back_off_with_the_reason() {
    let executor = Executor::builder().start_without_workers();
    let provider = Scripted::default();
    provider.lock().reject = true;
    let _handles = executor.submit_batch(&echo(), (0..10).map(|i| (i,)));
    let mut strategy = Strategy::start(
        executor.clone(),
        Arc::new(provider.clone()),
        request(),
        fast()
            .init_blocks(0)
            .max_blocks(1)
            .max_backoff(Duration::from_secs(30)),
    );
    let status = loop {
        let status = strategy.changed().await;
        if status.last_error.is_some() {
            break status;
        }
    };
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("rejected") && error.contains("invalid partition"),
        "{error}"
    );
    assert!(status.backing_off_until.is_some());

    // Accepted now, but the block fails: reported, and no new block during the back-off.
    provider.lock().reject = false;
    let mut strategy_after = Strategy::start(
        executor.clone(),
        Arc::new(provider.clone()),
        request(),
        fast()
            .init_blocks(0)
            .max_blocks(1)
            .max_backoff(Duration::from_secs(30)),
    );
    strategy.stop(false).await;
    until("a block is submitted", || provider.submitted().len() == 1).await;
    let first = provider.submitted()[0].clone();
    provider.set(&first, BlockState::Failed("node_fail".into()));
    let status = loop {
        let status = strategy_after.changed().await;
        if status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("node_fail"))
        {
            break status;
        }
    };
    assert!(status
        .blocks
        .iter()
        .any(|b| b.id == first && b.reason.as_deref() == Some("node_fail")));
    let until_time = status
        .backing_off_until
        .expect("backing off after a failed block");
    assert_eq!(
        provider.submitted().len(),
        1,
        "no new block during the back-off"
    );
    // After the pause it tries again, rather than giving up for good.
    until("a new block after the back-off", || {
        provider.submitted().len() == 2
    })
    .await;
    assert!(std::time::SystemTime::now() >= until_time - Duration::from_millis(5));
}

#[tokio::test]
async fn blocks_that_never_start_or_never_call_home_are_cancelled_with_a_reason() {
    let executor = Executor::builder().start_without_workers();
    let provider = Scripted::default();
    let _handles = executor.submit_batch(&echo(), (0..10).map(|i| (i,)));
    let mut strategy = Strategy::start(
        executor.clone(),
        Arc::new(provider.clone()),
        request(),
        fast()
            .init_blocks(0)
            .max_blocks(1)
            .pending_timeout(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(50)),
    );
    until("the stuck block is cancelled", || {
        !provider.cancelled().is_empty()
    })
    .await;
    let status = strategy.changed().await;
    assert!(status
        .last_error
        .unwrap_or_default()
        .contains("pending for more than"));

    // Running, but no manager ever dials in.
    provider.lock().start_running = true;
    let mut strategy = Strategy::start(
        executor.clone(),
        Arc::new(provider.clone()),
        request(),
        fast()
            .init_blocks(0)
            .max_blocks(1)
            .connect_timeout(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(50)),
    );
    let cancelled_before = provider.cancelled().len();
    until("the silent block is cancelled", || {
        provider.cancelled().len() > cancelled_before
    })
    .await;
    let status = loop {
        let status = strategy.changed().await;
        if status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no manager dialled in"))
        {
            break status;
        }
    };
    assert!(status
        .last_error
        .unwrap_or_default()
        .contains("endpoint's address"));
}

#[tokio::test]
async fn only_idle_blocks_are_released_and_only_by_draining() {
    let executor = Executor::builder().start_without_workers();
    let provider = Scripted::running();
    let mut strategy = Strategy::start(
        executor.clone(),
        Arc::new(provider.clone()),
        request(),
        fast()
            .init_blocks(2)
            .max_blocks(2)
            .max_idle_time(Duration::from_millis(150)),
    );
    until("two blocks run", || provider.submitted().len() == 2).await;
    let blocks = provider.submitted();
    let busy = Pool::attach(&executor, 1, &blocks[0]).await;
    let idle = Pool::attach(&executor, 1, &blocks[1]).await;
    // One task, which lands on one pool and stays there: that pool is busy.
    let handle = executor.submit(&echo(), (1,));
    until("a pool holds the task", || {
        !busy.tasks().is_empty() || !idle.tasks().is_empty()
    })
    .await;
    let (busy, idle) = if busy.tasks().is_empty() {
        (idle, busy)
    } else {
        (busy, idle)
    };

    until("the idle block is drained", || idle.drained()).await;
    for _ in 0..10 {
        strategy.changed().await;
    }
    assert!(
        !busy.drained(),
        "a block with a running task is never released"
    );
    assert!(
        provider.cancelled().is_empty(),
        "blocks are drained, never cancelled with work"
    );
    busy.finish_all();
    assert_eq!(handle.result::<i64>().await.expect("result"), 1);
    until("the now idle block is drained too", || busy.drained()).await;
}

#[tokio::test]
async fn blocks_are_drained_before_their_walltime_and_their_end_costs_no_retry() {
    // No retries at all: a task lost with its block must still not fail.
    let executor = Executor::builder()
        .retries_on_worker_death(0)
        .start_without_workers();
    let provider = Scripted::running();
    let _strategy = Strategy::start(
        executor.clone(),
        Arc::new(provider.clone()),
        request(),
        fast()
            .init_blocks(1)
            .max_blocks(2)
            .max_idle_time(Duration::from_secs(60))
            .walltime(Duration::from_millis(400), Duration::from_millis(250)),
    );
    until("a block runs", || provider.submitted().len() == 1).await;
    let first = provider.submitted()[0].clone();
    let old = Pool::attach(&executor, 1, &first).await;
    let handle = executor.submit(&echo(), (7,));
    until("the old pool holds the task", || !old.tasks().is_empty()).await;
    until("the block is drained before its walltime", || old.drained()).await;

    // The block ends with the task still on it (it ran too long): the task is re-run
    // elsewhere without being charged, although retries are 0.
    old.send(WorkerEvent::Lost("walltime reached".into()));
    provider.set(
        &first,
        BlockState::Failed("walltime of 400ms expired".into()),
    );
    until("a replacement block is submitted", || {
        provider.submitted().len() == 2
    })
    .await;
    let second = provider.submitted()[1].clone();
    let new = Pool::attach(&executor, 1, &second).await;
    until("the task is re-run on the new block", || {
        !new.tasks().is_empty()
    })
    .await;
    new.finish_all();
    assert_eq!(handle.result::<i64>().await.expect("re-run, not failed"), 7);
}
