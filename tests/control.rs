//! Timeouts, cancellation and shutdown, against real workers.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_pool_works, echo, pid, start, wait_for_state, within, TempDir, HANG};
use funcx::{Function, TaskOptions, TaskState};

fn sleeper() -> Function {
    Function::from_source(
        "import time\n\ndef sleeper(s):\n    time.sleep(s)\n    return s\n",
        "sleeper",
    )
}

/// Writes a line to `path` (creating it), then returns `value`.
fn marker() -> Function {
    Function::from_source(
        "def marker(path, value):\n    with open(path, 'a') as f:\n        f.write('ran\\n')\n    return value\n",
        "marker",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_count_run_time_and_replace_the_worker() {
    let executor = start(1).await;
    let first_pid: i64 = within(HANG, executor.submit(&pid(), ()).result())
        .await
        .unwrap();

    let started = Instant::now();
    let handle = executor.submit_with(
        &sleeper(),
        (30,),
        TaskOptions::new().timeout(Duration::from_millis(500)),
    );
    let err = within(HANG, handle).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(!err.is_system(), "a timeout is not retried: {err}");
    assert!(
        elapsed >= Duration::from_millis(450),
        "timed out too early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    // The worker that ran it was killed and replaced.
    let second_pid: i64 = within(HANG, executor.submit(&pid(), ()).result())
        .await
        .unwrap();
    assert_ne!(
        first_pid, second_pid,
        "the timed-out worker was not replaced"
    );
    assert_pool_works(&executor, 100).await;

    // The clock starts when the task runs, not while it waits: a task queued behind a
    // 1.2 s one on the single worker, with a 1 s timeout, must not time out.
    let blocker = executor.submit(&sleeper(), (1.2,));
    let patient = executor.submit_with(
        &sleeper(),
        (0.05,),
        TaskOptions::new().timeout(Duration::from_secs(1)),
    );
    let value: f64 = within(HANG, blocker.result()).await.unwrap();
    assert_eq!(value, 1.2);
    let value: f64 = within(HANG, patient.result())
        .await
        .expect("queue time must not count against the timeout");
    assert_eq!(value, 0.05);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_task_means_it_never_runs() {
    let executor = start(1).await;
    let dir = TempDir::new("cancel-queued");
    let path = dir.join("ran");

    let busy = executor.submit(&sleeper(), (30,));
    wait_for_state(&executor, busy.id(), TaskState::Running, HANG).await;
    let queued = executor.submit(&marker(), (&path, 1));
    let status = executor.status(queued.id()).await.expect("queued is known");
    assert!(
        matches!(status.state, TaskState::Queued | TaskState::Dispatched),
        "{status:?}"
    );
    queued.cancel();
    let err = within(Duration::from_secs(5), queued).await.unwrap_err();
    assert!(err.is_cancelled(), "{err}");

    // Free the worker, then run something after the cancelled task's place in line.
    busy.cancel();
    let err = within(Duration::from_secs(10), busy).await.unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    let other = dir.join("other");
    let value: i64 = within(HANG, executor.submit(&marker(), (&other, 2)).result())
        .await
        .unwrap();
    assert_eq!(value, 2);
    assert!(Path::new(&other).exists());
    assert!(!Path::new(&path).exists(), "the cancelled task ran anyway");
    executor.shutdown().await;
    assert!(
        !Path::new(&path).exists(),
        "the cancelled task ran at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_kills_its_worker() {
    let executor = start(2).await;
    let handle = executor.submit(&sleeper(), (30,));
    let id = handle.id();
    wait_for_state(&executor, id, TaskState::Running, HANG).await;

    let started = Instant::now();
    handle.cancel();
    let err = within(Duration::from_secs(10), handle).await.unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Its record may linger (as finished) until the killed worker is gone, then it is
    // forgotten.
    let status = executor.status(id).await;
    assert!(
        status.map_or(true, |s| s.state == TaskState::Failed),
        "{status:?}"
    );
    common::wait_until(HANG, "the cancelled task forgotten", || async {
        executor.status(id).await.is_none()
    })
    .await;

    // Cancelling through the executor by id, too.
    let handle = executor.submit(&sleeper(), (30,));
    let id = handle.id();
    wait_for_state(&executor, id, TaskState::Running, HANG).await;
    executor.cancel(id);
    let err = within(Duration::from_secs(10), handle).await.unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    // Forgotten once its killed worker's exit is in, when the replacement is on its way.
    common::wait_until(HANG, "the second cancelled task forgotten", || async {
        executor.status(id).await.is_none()
    })
    .await;
    within(HANG, executor.ready())
        .await
        .expect("both slots ready again");
    let stats = executor.stats().await;
    assert_eq!(stats.ready_workers, 2, "{stats:?}");
    assert_eq!(
        stats.workers_started, 4,
        "two at the start, one replacement per cancelled running task: {stats:?}"
    );

    // Cancelling a finished task changes nothing.
    let done = executor.submit(&echo(), (5,));
    let id = done.id();
    let value: i64 = within(HANG, done.result()).await.unwrap();
    assert_eq!(value, 5);
    executor.cancel(id);

    assert_pool_works(&executor, 100).await;
    let stats = executor.stats().await;
    assert_eq!(
        stats.workers_started, 4,
        "no worker killed since: {stats:?}"
    );
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_every_accepted_task() {
    let executor = start(2).await;
    let work = Function::from_source("def work(i):\n    return i * 3\n", "work");
    const N: i64 = 2_000;
    let handles = executor.submit_batch(&work, (0..N).map(|i| (i,)));
    // A few slower tasks in flight too.
    let slow: Vec<_> = (0..4)
        .map(|_| executor.submit(&sleeper(), (0.2,)))
        .collect();
    within(HANG, executor.shutdown()).await;

    for (i, handle) in handles.into_iter().enumerate() {
        let value: i64 = within(HANG, handle.result())
            .await
            .unwrap_or_else(|e| panic!("task {i} lost at shutdown: {e}"));
        assert_eq!(value, i as i64 * 3);
    }
    for handle in slow {
        let value: f64 = within(HANG, handle.result()).await.unwrap();
        assert_eq!(value, 0.2);
    }

    let err = within(HANG, executor.submit(&work, (1,)))
        .await
        .unwrap_err();
    assert!(err.is_shutdown(), "{err}");
    let err = within(HANG, executor.ready()).await.unwrap_err();
    assert!(err.is_shutdown(), "{err}");
    // Shutting down again returns at once.
    within(Duration::from_secs(5), executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_now_cancels_everything_without_hanging() {
    let executor = start(2).await;
    let running: Vec<_> = (0..2).map(|_| executor.submit(&sleeper(), (30,))).collect();
    for handle in &running {
        wait_for_state(&executor, handle.id(), TaskState::Running, HANG).await;
    }
    let queued: Vec<_> = (0..20)
        .map(|_| executor.submit(&sleeper(), (30,)))
        .collect();

    let started = Instant::now();
    within(Duration::from_secs(10), executor.shutdown_now()).await;
    for handle in running.into_iter().chain(queued) {
        let err = within(Duration::from_secs(5), handle).await.unwrap_err();
        assert!(err.is_cancelled(), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let err = within(HANG, executor.submit(&echo(), (1,)))
        .await
        .unwrap_err();
    assert!(err.is_shutdown(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_executor_finishes_accepted_tasks() {
    let executor = start(2).await;
    let handles = executor.submit_batch(&echo(), (0..500_i64).map(|i| (i,)));
    drop(executor);
    for (i, handle) in handles.into_iter().enumerate() {
        let value: i64 = within(HANG, handle.result()).await.unwrap();
        assert_eq!(value, i as i64);
    }
}
