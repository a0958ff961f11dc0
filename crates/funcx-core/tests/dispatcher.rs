//! Tests of the dispatcher through the `Executor`, with simulated workers.
//!
//! No test sleeps in place of waiting for a condition: tests await handles, or poll
//! `stats()`/`status()` until a condition holds, always under an overall time limit.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use funcx_core::{
    Executor, ExecutorStats, MemoizeLayer, RetrySystemFailures, Task, TaskHandle, TaskId,
    TaskOptions, TaskState, TaskStatus, WorkerExit,
};
use futures::StreamExt;
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

use support::{func, SimConfig, SimRuntime};

/// The longest any single test step may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

/// Polls the executor's stats until `condition` holds.
async fn wait_stats(
    executor: &Executor,
    what: &str,
    condition: impl Fn(&ExecutorStats) -> bool,
) -> ExecutorStats {
    within(what, async {
        loop {
            let stats = executor.stats().await;
            if condition(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

/// Polls a task's status until `condition` holds.
async fn wait_status(
    executor: &Executor,
    id: TaskId,
    what: &str,
    condition: impl Fn(Option<TaskStatus>) -> bool,
) -> Option<TaskStatus> {
    within(what, async {
        loop {
            let status = executor.status(id).await;
            if condition(status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

fn state(status: Option<TaskStatus>) -> Option<TaskState> {
    status.map(|s| s.state)
}

async fn started(workers: usize, sim: &SimRuntime) -> Executor {
    started_with(Executor::builder().workers(workers), sim).await
}

async fn started_with(builder: funcx_core::ExecutorBuilder, sim: &SimRuntime) -> Executor {
    let executor = builder.start(sim.clone());
    within("workers to be ready", executor.ready())
        .await
        .expect("workers start");
    executor
}

/// Runs `name(arg)` `times` times, one after the other, so the dispatcher learns that the
/// function is short and batches its later tasks without isolating them.
async fn warm(executor: &Executor, name: &str, arg: i64, times: usize) {
    let f = func(name);
    for _ in 0..times {
        within("a warm-up task", executor.submit(&f, (arg,)))
            .await
            .expect("warm-up task succeeds");
    }
}

async fn pid(executor: &Executor) -> u64 {
    within("pid()", executor.submit(&func("pid"), ()).result::<u64>())
        .await
        .expect("pid() succeeds")
}

/// Kills a worker with a task that exits, then waits until its replacement is ready; the
/// stats from then. The task's failure comes with its worker's exit, when the dispatcher
/// has already begun the replacement, so `ready()` waits for it.
async fn replace_a_worker(executor: &Executor) -> ExecutorStats {
    let error = within("exit(1)", executor.submit(&func("exit"), (1,)))
        .await
        .expect_err("exit(1) kills its worker");
    assert!(error.is_worker_died(), "{error}");
    within("the replacement", executor.ready())
        .await
        .expect("the replacement is ready");
    executor.stats().await
}

async fn all_ok(handles: Vec<TaskHandle>) -> Vec<i64> {
    let mut values = Vec::with_capacity(handles.len());
    for handle in handles {
        let id = handle.id();
        let value = within("a task", handle.result::<i64>())
            .await
            .unwrap_or_else(|e| panic!("{id} failed: {e}"));
        values.push(value);
    }
    values
}

// ---- 1. volume ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_thousand_echo_tasks_batch_and_single() {
    const N: i64 = 100_000;
    let sim = SimRuntime::new();
    let executor = started(4, &sim).await;
    let echo = func("echo");

    let handles = executor.submit_batch(&echo, (0..N).map(|i| (i,)));
    let ids: Vec<TaskId> = handles.iter().map(TaskHandle::id).collect();
    let values = all_ok(handles).await;
    assert!(values.iter().copied().eq(0..N), "batch results in order");

    let handles: Vec<TaskHandle> = (0..N).map(|i| executor.submit(&echo, (i,))).collect();
    let more: Vec<TaskId> = handles.iter().map(TaskHandle::id).collect();
    let values = all_ok(handles).await;
    assert!(values.iter().copied().eq(0..N), "single results in order");

    for id in ids.into_iter().chain(more) {
        assert_eq!(sim.executions(id), 1, "{id} ran exactly once");
    }
    assert_eq!(sim.calls("echo"), 2 * N as u32);
    let stats = executor.stats().await;
    assert_eq!((stats.queued, stats.in_flight), (0, 0), "{stats:?}");
    assert_eq!(
        stats.workers_started, 4,
        "no worker was replaced: {stats:?}"
    );
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_tasks_report_once_each_with_their_tags() {
    const N: u64 = 20_000;
    let sim = SimRuntime::new();
    let executor = started(2, &sim).await;
    let echo = func("echo");
    let raise = func("raise");
    let (sink, mut stream) = funcx_core::report_stream();
    let tasks = (0..N).map(|tag| {
        // Every hundredth task raises, to see failures travel the stream too.
        let function = if tag % 100 == 0 { &raise } else { &echo };
        (tag, funcx_core::Task::new(function, (tag as i64,)))
    });
    let ids = executor.submit_streamed(tasks, &sink);
    assert_eq!(ids.len(), N as usize);
    drop(sink);
    let mut seen = vec![false; N as usize];
    let mut batch = Vec::new();
    while within("streamed reports", stream.recv_many(&mut batch, 512)).await > 0 {
        for (tag, report) in batch.drain(..) {
            assert!(
                !std::mem::replace(&mut seen[tag as usize], true),
                "tag {tag} reported twice"
            );
            assert_eq!(report.id, ids[tag as usize]);
            if tag % 100 == 0 {
                assert!(report.result.expect_err("raises").is_python());
            } else {
                let value: i64 = report.result.expect("echo").decode().expect("i64");
                assert_eq!(value, tag as i64);
            }
        }
        if seen.iter().all(|s| *s) {
            break;
        }
    }
    assert!(seen.iter().all(|s| *s), "every task reported");
    within("shutdown", executor.shutdown()).await;
}

// ---- 2. map ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_yields_in_input_order_with_bounded_in_flight() {
    const IN_FLIGHT: usize = 8;
    let sim = SimRuntime::new();
    let executor = started(4, &sim).await;

    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let inputs = (0..3_000_i64).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        (i,)
    });
    let mut stream = Box::pin(executor.map(&func("echo"), inputs, IN_FLIGHT));
    let mut next = 0_i64;
    while let Some(result) = within("map item", stream.next()).await {
        let value: i64 = result.expect("echo succeeds").decode().unwrap();
        assert_eq!(value, next, "results come in input order");
        next += 1;
        let taken = pulled.load(Ordering::SeqCst);
        assert!(
            taken <= next as usize - 1 + IN_FLIGHT,
            "{taken} inputs taken when {next} results were yielded"
        );
    }
    assert_eq!(next, 3_000);
    assert!(
        sim.max_held() <= IN_FLIGHT,
        "workers held {} tasks at once",
        sim.max_held()
    );

    // Tasks of different lengths finish out of order; the stream must not.
    let lengths: Vec<i64> = (0..40).map(|i| (i * 7) % 5).collect();
    let results: Vec<i64> = within(
        "map of sleeps",
        executor
            .map(
                &func("sleep"),
                lengths.clone().into_iter().map(|ms| (ms,)),
                6,
            )
            .map(|r| r.expect("sleep succeeds").decode::<i64>().unwrap())
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(results, lengths);
    within("shutdown", executor.shutdown()).await;
}

// ---- 3. a task that kills its worker --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_that_kills_its_worker_fails_alone() {
    let sim = SimRuntime::new();
    let executor = started(2, &sim).await;
    let before = executor.stats().await.workers_started;
    assert_eq!(
        before, 2,
        "both ready workers are counted once ready() returns"
    );
    let echo = func("echo");

    let mut around: Vec<TaskHandle> = (0..20).map(|i| executor.submit(&echo, (i,))).collect();
    let killer = executor.submit(&func("exit"), (3,));
    let killer_id = killer.id();
    around.extend((20..40).map(|i| executor.submit(&echo, (i,))));

    let error = within("the killer", killer)
        .await
        .expect_err("exit(3) fails");
    assert!(error.is_worker_died(), "{error}");
    assert!(error.is_system(), "{error}");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Code(3)));
    assert!(error.to_string().contains("exit code 3"), "{error}");
    assert_eq!(sim.executions(killer_id), 1, "not retried by default");

    let values = all_ok(around).await;
    assert!(values.iter().copied().eq(0..40));

    // The pool keeps working on a replacement, counted once (the killer's failure came
    // with its worker's exit, so `ready()` waits for the replacement).
    within("a replacement worker", executor.ready())
        .await
        .expect("the replacement starts");
    let stats = executor.stats().await;
    assert_eq!(stats.ready_workers, 2, "{stats:?}");
    assert_eq!(stats.workers_started, before + 1, "{stats:?}");
    let values = all_ok((0..50).map(|i| executor.submit(&echo, (i,))).collect()).await;
    assert!(values.iter().copied().eq(0..50));
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_queued_on_a_dying_worker_are_rerun_not_charged() {
    // One worker, warm estimates: the culprit runs isolated only because it was the one
    // running; tasks batched behind it on the same worker must be re-run and succeed.
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    warm(&executor, "poison", 1, 20).await;
    let f = func("poison");
    let mut handles = vec![executor.submit_with(&f, (-3,), TaskOptions::new().timeout(LIMIT))];
    handles.extend(executor.submit_batch(&f, (0..30).map(|i| (i,))));
    let mut handles = handles.into_iter();
    let culprit = handles.next().unwrap();
    let error = within("the culprit", culprit).await.expect_err("dies");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Code(3)), "{error}");
    let values = all_ok(handles.collect()).await;
    assert!(values.iter().copied().eq(0..30));
    within("shutdown", executor.shutdown()).await;
}

// ---- 4. retries_on_worker_death -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_on_worker_death_reruns_the_task() {
    let sim = SimRuntime::new();
    let executor = started_with(
        Executor::builder().workers(2).retries_on_worker_death(1),
        &sim,
    )
    .await;
    let report = within("flaky", executor.submit(&func("flaky"), (42,)).report()).await;
    let value: i64 = report.result.expect("succeeds on retry").decode().unwrap();
    assert_eq!(value, 42);
    assert_eq!(sim.flaky_runs(42), 2);
    assert_eq!(report.status.attempts, 2);
    assert_eq!(report.status.state, TaskState::Succeeded);

    // Dying on every attempt: one retry, then the death is reported.
    let handle = executor.submit(&func("exit"), (5,));
    let id = handle.id();
    let error = within("exit", handle).await.expect_err("always dies");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Code(5)));
    assert_eq!(sim.executions(id), 2);
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_flaky_task_fails() {
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    let error = within("flaky", executor.submit(&func("flaky"), (1,)))
        .await
        .expect_err("no retries by default");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Code(1)));
    assert_eq!(sim.flaky_runs(1), 1);
    within("shutdown", executor.shutdown()).await;
}

// ---- 5. tower retry -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tower_retry_retries_worker_deaths_but_not_exceptions() {
    let sim = SimRuntime::new();
    let executor = started(2, &sim).await;
    let mut service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetrySystemFailures::new(2)))
        .service(executor.clone());

    let flaky = Task::new(&func("flaky"), (7,));
    let payload = within("flaky via retry", async {
        service.ready().await?.call(flaky).await
    })
    .await
    .expect("retried after the worker died");
    assert_eq!(payload.decode::<i64>().unwrap(), 7);
    assert_eq!(sim.flaky_runs(7), 2);

    let error = within(
        "raise via retry",
        service.clone().oneshot(Task::new(&func("raise"), ())),
    )
    .await
    .expect_err("raise fails");
    assert!(error.is_python(), "{error}");
    assert_eq!(
        error.python_exception().map(|e| e.type_name.as_str()),
        Some("ValueError")
    );
    assert_eq!(sim.calls("raise"), 1, "a Python exception is never retried");

    let error = within(
        "exit via retry",
        service.clone().oneshot(Task::new(&func("exit"), (4,))),
    )
    .await
    .expect_err("always dies");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Code(4)));
    assert_eq!(sim.calls("exit"), 3, "one attempt and two retries");
    drop(service);
    within("shutdown", executor.shutdown()).await;
}

// ---- 6. timeouts ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_kills_and_replaces_the_worker() {
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    let first_pid = pid(&executor).await;
    let before = executor.stats().await.workers_started;
    assert_eq!(before, 1);

    let begun = Instant::now();
    let report = within(
        "the timed-out task",
        executor
            .submit_with(
                &func("sleep"),
                (10_000,),
                TaskOptions::new().timeout(Duration::from_millis(100)),
            )
            .report(),
    )
    .await;
    let elapsed = begun.elapsed();
    let error = report.result.expect_err("times out");
    assert!(error.is_timeout(), "{error}");
    assert!(!error.is_system(), "{error}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(100), "took {elapsed:?}");
    assert_eq!(report.status.state, TaskState::Failed);

    let second_pid = pid(&executor).await;
    assert_ne!(first_pid, second_pid, "a fresh worker runs the next task");
    assert_eq!(executor.stats().await.workers_started, before + 1);
    let values = all_ok(
        (0..10)
            .map(|i| executor.submit(&func("echo"), (i,)))
            .collect(),
    )
    .await;
    assert!(values.iter().copied().eq(0..10));
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_task_timeout_applies_and_short_tasks_pass() {
    let sim = SimRuntime::new();
    let executor = started_with(
        Executor::builder()
            .workers(2)
            .task_timeout(Duration::from_millis(200)),
        &sim,
    )
    .await;
    let slow = executor.submit(&func("sleep"), (60_000,));
    let quick: Vec<TaskHandle> = (0..20)
        .map(|i| executor.submit(&func("echo"), (i,)))
        .collect();
    let error = within("the slow task", slow).await.expect_err("times out");
    assert!(error.is_timeout(), "{error}");
    let values = all_ok(quick).await;
    assert!(values.iter().copied().eq(0..20));
    within("shutdown", executor.shutdown()).await;
}

// ---- 7. cancellation ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_queued_and_running_tasks() {
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    let before = executor.stats().await.workers_started;

    let long = executor.submit(&func("sleep"), (60_000,));
    let long_id = long.id();
    wait_status(&executor, long_id, "the long task to run", |s| {
        state(s) == Some(TaskState::Running)
    })
    .await;

    let queued = executor.submit(&func("echo"), (5,));
    let queued_id = queued.id();
    wait_status(&executor, queued_id, "the second task to queue", |s| {
        state(s) == Some(TaskState::Queued)
    })
    .await;
    queued.cancel();
    let error = within("the cancelled queued task", queued)
        .await
        .expect_err("cancelled");
    assert!(error.is_cancelled(), "{error}");

    // Cancel the running one: its worker is killed and replaced.
    let begun = Instant::now();
    long.cancel();
    let error = within("the cancelled running task", long)
        .await
        .expect_err("cancelled");
    assert!(error.is_cancelled(), "{error}");
    assert!(begun.elapsed() < Duration::from_secs(5));
    // Its handle hears of the cancel at once; the dispatcher forgets the task when the
    // killed worker's exit comes in, and replaces the worker then.
    wait_status(&executor, long_id, "the killed worker's exit", |s| {
        s.is_none()
    })
    .await;
    within("the replacement", executor.ready())
        .await
        .expect("the replacement starts");
    let stats = executor.stats().await;
    assert_eq!(stats.ready_workers, 1, "{stats:?}");
    assert_eq!(stats.workers_started, before + 1, "{stats:?}");

    let values = all_ok(
        (0..10)
            .map(|i| executor.submit(&func("echo"), (i,)))
            .collect(),
    )
    .await;
    assert!(values.iter().copied().eq(0..10));
    assert_eq!(
        sim.executions(queued_id),
        0,
        "a cancelled queued task never runs"
    );
    assert_eq!(sim.executions(long_id), 1);
    assert_eq!(executor.status(long_id).await, None);
    assert_eq!(executor.status(queued_id).await, None);
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_a_task_waiting_on_the_worker_skips_it() {
    // Warm `sleep` so its tasks are batched: the echo then waits on the worker behind a
    // sleep, dispatched but not started, and the worker is told to skip it.
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    warm(&executor, "sleep", 0, 20).await;
    warm(&executor, "echo", 0, 20).await;
    let before = executor.stats().await.workers_started;

    let sleep = executor.submit(&func("sleep"), (300,));
    let echo = executor.submit(&func("echo"), (9,));
    let echo_id = echo.id();
    wait_status(&executor, echo_id, "the echo to be dispatched", |s| {
        state(s) == Some(TaskState::Dispatched)
    })
    .await;
    echo.cancel();
    let error = within("the cancelled echo", echo)
        .await
        .expect_err("cancelled");
    assert!(error.is_cancelled(), "{error}");
    assert_eq!(
        within("the sleep", sleep.result::<i64>()).await.unwrap(),
        300
    );
    // The worker reports the skipped task; then it holds nothing.
    wait_stats(&executor, "the worker to let go", |s| s.in_flight == 0).await;
    assert_eq!(sim.executions(echo_id), 0, "skipped by the worker");
    assert_eq!(
        executor.stats().await.workers_started,
        before,
        "no worker was killed to cancel a task that had not started"
    );
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_finished_task_changes_nothing() {
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    let handle = executor.submit(&func("echo"), (1,));
    let id = handle.id();
    assert_eq!(within("echo", handle.result::<i64>()).await.unwrap(), 1);
    executor.cancel(id);
    let values = all_ok(
        (0..5)
            .map(|i| executor.submit(&func("echo"), (i,)))
            .collect(),
    )
    .await;
    assert!(values.iter().copied().eq(0..5));
    assert_eq!(executor.stats().await.workers_started, 1);
    within("shutdown", executor.shutdown()).await;
}

// ---- 8. shutdown ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_every_accepted_task() {
    let sim = SimRuntime::new();
    let executor = started(4, &sim).await;
    let handles: Vec<TaskHandle> = (0..1_000)
        .map(|i| executor.submit(&func("sleep"), (i % 3,)))
        .collect();
    let stats = executor.stats().await;
    assert!(stats.queued + stats.in_flight > 0, "{stats:?}");
    within("shutdown", executor.shutdown()).await;
    let values = all_ok(handles).await;
    assert!(values.iter().copied().eq((0..1_000).map(|i| i % 3)));

    let late = within(
        "a task after shutdown",
        executor.submit(&func("echo"), (1,)),
    )
    .await
    .expect_err("rejected");
    assert!(late.is_shutdown(), "{late}");
    let error = executor.ready().await.expect_err("shut down");
    assert!(error.is_shutdown(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_before_workers_are_ready_still_drains() {
    let sim = SimRuntime::with_config(SimConfig {
        ready_delay: Duration::from_millis(50),
        ..SimConfig::default()
    });
    let executor = Executor::builder().workers(2).start(sim.clone());
    let handles: Vec<TaskHandle> = (0..100)
        .map(|i| executor.submit(&func("echo"), (i,)))
        .collect();
    within("shutdown", executor.shutdown()).await;
    let values = all_ok(handles).await;
    assert!(values.iter().copied().eq(0..100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_past_a_worker_death() {
    // A worker that dies during a graceful shutdown must not strand the tasks queued
    // behind it.
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    let killer = executor.submit(&func("exit"), (2,));
    let rest: Vec<TaskHandle> = (0..20)
        .map(|i| executor.submit(&func("echo"), (i,)))
        .collect();
    within("shutdown", executor.shutdown()).await;
    let error = within("the killer", killer).await.expect_err("dies");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Code(2)));
    let values = all_ok(rest).await;
    assert!(values.iter().copied().eq(0..20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_now_cancels_everything_quickly() {
    let sim = SimRuntime::new();
    let executor = started(2, &sim).await;
    let handles: Vec<TaskHandle> = (0..10)
        .map(|_| executor.submit(&func("sleep"), (60_000,)))
        .collect();
    wait_stats(&executor, "both workers busy", |s| s.in_flight == 2).await;
    let begun = Instant::now();
    within("shutdown_now", executor.shutdown_now()).await;
    for handle in handles {
        let error = within("a cancelled task", handle)
            .await
            .expect_err("cancelled");
        assert!(error.is_cancelled(), "{error}");
    }
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    let late = within(
        "a task after shutdown",
        executor.submit(&func("echo"), (1,)),
    )
    .await
    .expect_err("rejected");
    assert!(late.is_shutdown(), "{late}");
}

// ---- 9. memoization -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memoize_answers_repeated_calls_from_the_cache() {
    let sim = SimRuntime::new();
    let executor = started(2, &sim).await;
    let mut service = ServiceBuilder::new()
        .layer(MemoizeLayer::new(100))
        .service(executor.clone());
    let echo = func("echo");

    let first = within("first call", async {
        service.ready().await?.call(Task::new(&echo, (41,))).await
    })
    .await
    .unwrap();
    let again = within("second call", async {
        service.ready().await?.call(Task::new(&echo, (41,))).await
    })
    .await
    .unwrap();
    assert_eq!(first, again);
    assert_eq!(again.decode::<i64>().unwrap(), 41);
    assert_eq!(sim.calls("echo"), 1, "the second call came from the cache");
    assert_eq!(service.cached(), 1);

    let other = within("other args", async {
        service.ready().await?.call(Task::new(&echo, (42,))).await
    })
    .await
    .unwrap();
    assert_eq!(other.decode::<i64>().unwrap(), 42);
    assert_eq!(sim.calls("echo"), 2);

    // Failures are not cached.
    for _ in 0..2 {
        let error = within("raise", async {
            service
                .ready()
                .await?
                .call(Task::new(&func("raise"), ()))
                .await
        })
        .await
        .expect_err("raises");
        assert!(error.is_python());
    }
    assert_eq!(sim.calls("raise"), 2);
    drop(service);
    within("shutdown", executor.shutdown()).await;
}

// ---- 10. workers that cannot start ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawn_failures_fail_tasks_and_ready_quickly() {
    let sim = SimRuntime::with_config(SimConfig {
        fail_always: Some("python3: command not found".into()),
        ..SimConfig::default()
    });
    let executor = Executor::builder().workers(2).start(sim.clone());
    let begun = Instant::now();
    let handles: Vec<TaskHandle> = (0..10)
        .map(|i| executor.submit(&func("echo"), (i,)))
        .collect();
    let error = within("ready", executor.ready())
        .await
        .expect_err("no worker can start");
    assert!(error.is_no_workers(), "{error}");
    assert!(error.is_system(), "{error}");
    assert!(error.to_string().contains("command not found"), "{error}");
    for handle in handles {
        let error = within("a task", handle).await.expect_err("fails");
        assert!(error.is_no_workers(), "{error}");
        assert!(error.to_string().contains("command not found"), "{error}");
    }
    // Later submissions fail at once too.
    let error = within("a later task", executor.submit(&func("echo"), (1,)))
        .await
        .expect_err("fails");
    assert!(error.is_no_workers(), "{error}");
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(sim.spawned(), 0);
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_that_exit_before_ready_are_reported() {
    let sim = SimRuntime::with_config(SimConfig {
        exit_before_ready: Some(2),
        ..SimConfig::default()
    });
    let executor = Executor::builder().workers(1).start(sim.clone());
    let handle = executor.submit(&func("echo"), (1,));
    let error = within("ready", executor.ready())
        .await
        .expect_err("the worker exits at once");
    assert!(error.is_no_workers(), "{error}");
    assert!(error.to_string().contains("exit code 2"), "{error}");
    let error = within("the task", handle).await.expect_err("fails");
    assert!(error.is_no_workers(), "{error}");
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_first_spawn_is_retried() {
    // Two slots, the first spawn overall fails: the other slot works meanwhile.
    let sim = SimRuntime::with_config(SimConfig {
        fail_first: 1,
        ..SimConfig::default()
    });
    let executor = Executor::builder().workers(2).start(sim.clone());
    let handles: Vec<TaskHandle> = (0..50)
        .map(|i| executor.submit(&func("echo"), (i,)))
        .collect();
    let values = all_ok(handles).await;
    assert!(values.iter().copied().eq(0..50));
    within("ready", executor.ready()).await.expect("both start");
    assert_eq!(sim.spawn_attempts(), 3);
    within("shutdown", executor.shutdown()).await;

    // One slot: it recovers after the back-off, and then runs tasks.
    let sim = SimRuntime::with_config(SimConfig {
        fail_first: 1,
        ..SimConfig::default()
    });
    let executor = Executor::builder().workers(1).start(sim.clone());
    wait_stats(&executor, "the worker to start on the second try", |s| {
        s.ready_workers == 1
    })
    .await;
    within("ready", executor.ready()).await.expect("started");
    let values = all_ok(
        (0..10)
            .map(|i| executor.submit(&func("echo"), (i,)))
            .collect(),
    )
    .await;
    assert!(values.iter().copied().eq(0..10));
    assert_eq!(sim.spawn_attempts(), 2);
    within("shutdown", executor.shutdown()).await;
}

// ---- 11. status and timeline ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_follows_a_task_through_its_states() {
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    let sleep = func("sleep");
    let with_timeout = TaskOptions::new().timeout(LIMIT);

    // Warm: `sleep` is short, so the next two are usually sent together; the timeout isolates
    // them, so the first is reported running while the second waits.
    warm(&executor, "sleep", 0, 20).await;
    let a = executor.submit_with(&sleep, (300,), with_timeout);
    let b = executor.submit_with(&sleep, (300,), with_timeout);
    let a_id = a.id();
    let b_id = b.id();
    wait_status(&executor, a_id, "a to run", |s| {
        state(s) == Some(TaskState::Running)
    })
    .await;
    // b waits while a runs: on the worker (Dispatched) when the warm-up measured `sleep` as
    // short, in the queue when a loaded machine made the warm-up look long.
    let waiting = state(executor.status(b_id).await);
    assert!(
        matches!(waiting, Some(TaskState::Dispatched | TaskState::Queued)),
        "b while a runs on the only worker: {waiting:?}"
    );
    assert_eq!(within("a", a.result::<i64>()).await.unwrap(), 300);
    wait_status(&executor, b_id, "b to run", |s| {
        state(s) == Some(TaskState::Running)
    })
    .await;

    // `sleep` now looks long: a third task waits in the queue while b runs.
    let c = executor.submit(&sleep, (100,));
    let c_id = c.id();
    let queued = executor.status(c_id).await.expect("known");
    assert_eq!(queued.state, TaskState::Queued);
    assert_eq!(queued.attempts, 0);
    assert_eq!(queued.timeline.dispatched, None);
    assert_eq!(within("b", b.result::<i64>()).await.unwrap(), 300);
    let running = wait_status(&executor, c_id, "c to run", |s| {
        state(s) == Some(TaskState::Running)
    })
    .await
    .unwrap();
    assert_eq!(running.attempts, 1);
    assert!(running.timeline.dispatched.is_some() && running.timeline.running.is_some());

    let report = within("c", c.report()).await;
    assert_eq!(report.id, c_id);
    assert_eq!(report.result.unwrap().decode::<i64>().unwrap(), 100);
    assert_eq!(report.status.state, TaskState::Succeeded);
    assert_eq!(report.status.attempts, 1);
    let timeline = report.status.timeline;
    let dispatched = timeline.dispatched.expect("dispatched set");
    let running = timeline.running.expect("running set");
    let finished = timeline.finished.expect("finished set");
    assert!(timeline.submitted <= dispatched, "{timeline:?}");
    assert!(dispatched <= running, "{timeline:?}");
    assert!(running <= finished, "{timeline:?}");
    assert!(
        finished.duration_since(running).unwrap() >= Duration::from_millis(100),
        "{timeline:?}"
    );
    assert_eq!(executor.status(c_id).await, None, "gone once finished");
    assert_eq!(executor.status(TaskId::next()).await, None, "unknown id");

    // A batched (non-isolated) task gets a derived running time, still in order.
    let report = within("echo", executor.submit(&func("echo"), (1,)).report()).await;
    let timeline = report.status.timeline;
    let (d, r, f) = (
        timeline.dispatched.unwrap(),
        timeline.running.unwrap(),
        timeline.finished.unwrap(),
    );
    assert!(timeline.submitted <= d && d <= r && r <= f, "{timeline:?}");
    within("shutdown", executor.shutdown()).await;
}

// ---- 12. dropping the executor --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_every_executor_still_resolves_handles() {
    let sim = SimRuntime::new();
    let executor = started(2, &sim).await;
    let clone = executor.clone();
    let handles: Vec<TaskHandle> = (0..500)
        .map(|i| clone.submit(&func("sleep"), (i % 2,)))
        .collect();
    drop(executor);
    drop(clone);
    let values = all_ok(handles).await;
    assert!(values.iter().copied().eq((0..500).map(|i| i % 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_executor_before_workers_are_ready_still_resolves_handles() {
    let sim = SimRuntime::with_config(SimConfig {
        ready_delay: Duration::from_millis(50),
        ..SimConfig::default()
    });
    let executor = Executor::builder().workers(2).start(sim.clone());
    let handles: Vec<TaskHandle> = (0..100)
        .map(|i| executor.submit(&func("echo"), (i,)))
        .collect();
    drop(executor);
    let values = all_ok(handles).await;
    assert!(values.iter().copied().eq(0..100));
}

// ---- 13. ambiguous deaths -------------------------------------------------------------------

async fn ambiguous_death(workers: usize) {
    let sim = SimRuntime::new();
    let executor = started(workers, &sim).await;
    warm(&executor, "poison", 1, 20).await;
    let inputs: Vec<i64> = vec![0, 1, 2, 3, -7, 5, 6, 7, 8, 9];
    let before = sim.calls("poison");
    let handles = executor.submit_batch(&func("poison"), inputs.iter().map(|&x| (x,)));
    let mut culprit_report = None;
    for (handle, &x) in handles.into_iter().zip(&inputs) {
        let report = within("a poison task", handle.report()).await;
        if x < 0 {
            culprit_report = Some(report);
        } else {
            let value: i64 = report
                .result
                .unwrap_or_else(|e| panic!("poison({x}) failed: {e}"))
                .decode()
                .unwrap();
            assert_eq!(value, x);
        }
    }
    let report = culprit_report.unwrap();
    let error = report.result.expect_err("the culprit dies");
    assert!(error.is_worker_died(), "{error}");
    assert_eq!(error.worker_exit(), Some(WorkerExit::Code(7)));
    assert!(
        report.status.attempts >= 2,
        "re-run isolated before it was blamed: {:?}",
        report.status
    );
    // The batch ran up to the culprit, then everything it held ran again.
    let calls = sim.calls("poison") - before;
    assert!(calls > inputs.len() as u32, "{calls} calls");
    let values = all_ok(
        (0..10)
            .map(|i| executor.submit(&func("poison"), (i,)))
            .collect(),
    )
    .await;
    assert!(values.iter().copied().eq(0..10));
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ambiguous_death_blames_only_the_culprit_one_worker() {
    ambiguous_death(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ambiguous_death_blames_only_the_culprit_two_workers() {
    ambiguous_death(2).await;
}

// ---- misc -----------------------------------------------------------------------------------

#[tokio::test]
async fn python_exceptions_and_unknown_functions_fail_the_task_only() {
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    let error = within("raise", executor.submit(&func("raise"), ()))
        .await
        .expect_err("raises");
    assert!(error.is_python() && !error.is_system(), "{error}");
    let error = within("nope", executor.submit(&func("nope"), ()))
        .await
        .expect_err("unknown");
    assert_eq!(
        error.python_exception().map(|e| e.type_name.as_str()),
        Some("NameError")
    );
    let error = within(
        "decode",
        executor.submit(&func("echo"), ("text",)).result::<i64>(),
    )
    .await
    .expect_err("not an int");
    assert!(error.is_serialization(), "{error}");
    assert_eq!(executor.stats().await.workers_started, 1);
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_reported_before_the_spawn_resolves_is_not_lost() {
    // Regression: the dispatcher ignored a Ready that overtook the spawn's completion, and
    // the slot never became ready.
    let sim = SimRuntime::with_config(SimConfig {
        ready_in_spawn: true,
        ..SimConfig::default()
    });
    let executor = started(3, &sim).await;
    assert_eq!(executor.stats().await.workers_started, 3);
    let values = all_ok(
        (0..30)
            .map(|i| executor.submit(&func("echo"), (i,)))
            .collect(),
    )
    .await;
    assert!(values.iter().copied().eq(0..30));
    // Replacements go through the same path.
    let stats = replace_a_worker(&executor).await;
    assert_eq!(
        (stats.ready_workers, stats.workers_started),
        (3, 4),
        "{stats:?}"
    );
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_ready_before_its_spawn_resolves_is_counted_once() {
    // Every spawn reports Ready and then waits for a permit: the dispatcher hears of the
    // Ready first, and of the spawn's completion only when the test lets it.
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let sim = SimRuntime::with_config(SimConfig {
        ready_in_spawn: true,
        spawn_release: Some(Arc::clone(&release)),
        ..SimConfig::default()
    });
    let executor = started(1, &sim).await;
    let stats = executor.stats().await;
    assert_eq!(sim.spawned(), 1);
    assert_eq!(
        (stats.ready_workers, stats.workers_started),
        (1, 1),
        "counted at its Ready, its spawn still held: {stats:?}"
    );

    // The spawn completes: the worker gets tasks (it needs its handle for that), and is
    // not counted again.
    release.add_permits(1);
    assert_eq!(pid(&executor).await, 1);
    assert_eq!(executor.stats().await.workers_started, 1);

    // A replacement goes the same way, and is counted once too.
    let stats = replace_a_worker(&executor).await;
    assert_eq!(sim.spawned(), 2);
    assert_eq!(stats.workers_started, 2, "{stats:?}");
    release.add_permits(1);
    assert_eq!(pid(&executor).await, 2);
    assert_eq!(executor.stats().await.workers_started, 2);

    release.close();
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_grace_kills_workers_that_do_not_exit() {
    let sim = SimRuntime::with_config(SimConfig {
        ignore_shutdown: true,
        ..SimConfig::default()
    });
    let executor = Executor::builder()
        .workers(2)
        .shutdown_grace(Duration::from_millis(100))
        .start(sim.clone());
    within("ready", executor.ready()).await.expect("ready");
    let handle = executor.submit(&func("echo"), (1,));
    let begun = Instant::now();
    within("shutdown", executor.shutdown()).await;
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(within("echo", handle.result::<i64>()).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_a_service_future_cancels_its_task() {
    let sim = SimRuntime::new();
    let executor = started(1, &sim).await;
    let long = executor.submit(&func("sleep"), (60_000,));
    wait_status(&executor, long.id(), "the long task to run", |s| {
        state(s) == Some(TaskState::Running)
    })
    .await;
    let mut service = executor.clone();
    let future = within("service ready", ServiceExt::<Task>::ready(&mut service))
        .await
        .unwrap()
        .call(Task::new(&func("echo"), (1,)));
    wait_stats(&executor, "the echo to queue", |s| s.queued == 1).await;
    drop(future);
    wait_stats(&executor, "the echo to be cancelled", |s| s.queued == 0).await;
    long.cancel();
    let _ = within("the long task", long).await;
    let values = all_ok(
        (0..5)
            .map(|i| executor.submit(&func("echo"), (i,)))
            .collect(),
    )
    .await;
    assert!(values.iter().copied().eq(0..5));
    assert_eq!(sim.calls("echo"), 5, "the dropped call never ran");
    within("shutdown", executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_arguments_round_trip() {
    let sim = SimRuntime::new();
    let executor = started(2, &sim).await;
    let blobs: Vec<serde_bytes::ByteBuf> = (0..6_u8)
        .map(|i| serde_bytes::ByteBuf::from(vec![i; 3 << 20]))
        .collect();
    let handles: Vec<TaskHandle> = blobs
        .iter()
        .map(|blob| executor.submit(&func("echo"), (blob,)))
        .collect();
    for (handle, blob) in handles.into_iter().zip(&blobs) {
        let back: serde_bytes::ByteBuf = within("a blob", handle.result()).await.unwrap();
        assert_eq!(&back, blob);
    }
    within("shutdown", executor.shutdown()).await;
}
