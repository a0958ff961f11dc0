//! `funcx::blocking` from plain threads (no Tokio runtime anywhere in the test), and the async
//! builder called outside a runtime, on real `python3` workers.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{init_tracing, runtime, HANG};
use funcx::{blocking, Executor, Function, PythonConfig, TaskOptions, TaskState};

fn start(workers: usize) -> blocking::Executor {
    init_tracing();
    let executor = blocking::Executor::start(
        Executor::builder().workers(workers),
        runtime(PythonConfig::new()),
    )
    .expect("a runtime thread");
    // `ready` has no bound of its own; a task with a timeout is the bounded wait.
    let probe = executor.submit(&pid(), ());
    assert!(
        probe.wait_timeout(HANG).is_some(),
        "workers did not start within {HANG:?}"
    );
    executor.ready().expect("workers should start");
    executor
}

fn pid() -> Function {
    Function::from_source("import os\n\ndef pid():\n    return os.getpid()\n", "pid")
}

fn add() -> Function {
    Function::from_source("def add(a, b):\n    return a + b\n", "add")
}

fn sleepy() -> Function {
    Function::from_source(
        "import time\n\ndef sleepy(s):\n    time.sleep(s)\n    return s\n",
        "sleepy",
    )
}

/// Waits for `handle` with the test's bound, failing the test as hung past it.
fn bounded(handle: &blocking::TaskHandle) -> Result<funcx::Payload, funcx::TaskError> {
    handle
        .wait_timeout(HANG)
        .unwrap_or_else(|| panic!("task {} hung past {HANG:?}", handle.id()))
}

#[test]
fn submit_wait_and_decode_without_any_runtime() {
    let executor = start(2);
    let sum: i64 = bounded(&executor.submit(&add(), (2, 3)))
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(sum, 5);
    // `result` is the shortest form, decoding on the way.
    let handle = executor.submit(&add(), ("a", "b"));
    assert!(bounded(&handle).is_ok());
    let text: String = handle.result().unwrap();
    assert_eq!(text, "ab");
    executor.shutdown();
}

#[test]
fn a_python_error_arrives_typed() {
    let executor = start(1);
    let error = bounded(&executor.submit(&add(), (1, "x"))).unwrap_err();
    assert!(error.is_python(), "{error}");
    assert_eq!(error.python_exception().unwrap().type_name, "TypeError");
}

#[test]
fn wait_timeout_returns_none_while_running_then_the_result() {
    let executor = start(1);
    let handle = executor.submit(&sleepy(), (1.0,));
    // Not done after a zero wait nor a short one: the task sleeps a whole second.
    assert!(handle.wait_timeout(Duration::ZERO).is_none());
    assert!(!handle.is_finished());
    let waited = Instant::now();
    assert!(handle.wait_timeout(Duration::from_millis(50)).is_none());
    assert!(waited.elapsed() >= Duration::from_millis(50));
    // The handle is still good: the task carries on and its result arrives.
    let seconds: f64 = bounded(&handle).unwrap().decode().unwrap();
    assert_eq!(seconds, 1.0);
    // Waiting again gives the same result.
    assert!(handle.is_finished());
    assert_eq!(bounded(&handle).unwrap().decode::<f64>().unwrap(), 1.0);
}

#[test]
fn cancel_a_running_task_and_the_executor_goes_on() {
    let executor = start(1);
    let handle = executor.submit(&sleepy(), (60,));
    let deadline = Instant::now() + HANG;
    // Cancel once it is running, so that its worker has to be killed and replaced.
    while executor.status(handle.id()).map(|s| s.state) != Some(TaskState::Running) {
        assert!(Instant::now() < deadline, "the task never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.cancel();
    let error = bounded(&handle).unwrap_err();
    assert!(error.is_cancelled(), "{error}");
    // A queued task cancelled through the executor never runs.
    let queued = executor.submit(&sleepy(), (60,));
    executor.cancel(queued.id());
    assert!(bounded(&queued).unwrap_err().is_cancelled());
    assert_eq!(
        bounded(&executor.submit(&add(), (1, 1)))
            .unwrap()
            .decode::<i64>()
            .unwrap(),
        2
    );
}

#[test]
fn map_yields_every_result_in_input_order_with_a_bounded_window() {
    let executor = start(2);
    let results: Vec<i64> = executor
        .map(&add(), (0..500).map(|i| (i, 1000)), 16)
        .map(|result| result.unwrap().decode().unwrap())
        .collect();
    assert_eq!(results, (0..500).map(|i| i + 1000).collect::<Vec<_>>());
    // Lazily consumed: an endless input is fine when only a prefix is taken.
    let first: Vec<i64> = executor
        .map(&add(), (0..).map(|i| (i, 0)), 4)
        .take(10)
        .map(|result| result.unwrap().decode().unwrap())
        .collect();
    assert_eq!(first, (0..10).collect::<Vec<_>>());
    let stats = executor.stats();
    assert_eq!(stats.queued, 0, "{stats:?}");
}

#[test]
fn many_threads_submit_and_wait_on_one_executor_at_once() {
    let executor = start(2);
    let threads = 8;
    let per_thread = 200;
    let seen: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let joins: Vec<_> = (0..threads)
            .map(|t| {
                let executor = executor.clone();
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    // Half one at a time, half in a batch: both paths, concurrently.
                    for i in 0..per_thread / 2 {
                        let x = t * 1_000_000 + i;
                        mine.push(
                            bounded(&executor.submit(&add(), (x, 0)))
                                .unwrap()
                                .decode::<i64>()
                                .unwrap(),
                        );
                    }
                    let batch = executor.submit_batch(
                        &add(),
                        (per_thread / 2..per_thread).map(|i| (t * 1_000_000 + i, 0)),
                    );
                    for handle in batch {
                        mine.push(bounded(&handle).unwrap().decode::<i64>().unwrap());
                    }
                    mine
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for (t, mine) in seen.iter().enumerate() {
        let expected: Vec<i64> = (0..per_thread).map(|i| t as i64 * 1_000_000 + i).collect();
        assert_eq!(mine, &expected, "thread {t} got its own results, in order");
    }
    let all: HashSet<i64> = seen.into_iter().flatten().collect();
    assert_eq!(all.len(), (threads * per_thread) as usize);
}

#[test]
fn a_task_timeout_applies() {
    let executor = start(1);
    let handle = executor.submit_with(
        &sleepy(),
        (60,),
        TaskOptions::new().timeout(Duration::from_millis(300)),
    );
    let error = bounded(&handle).unwrap_err();
    assert!(error.is_timeout(), "{error}");
}

#[test]
fn shutdown_finishes_accepted_tasks_then_refuses_new_ones() {
    let executor = start(1);
    let other = executor.clone();
    let handles = executor.submit_batch(&sleepy(), [(0.2,), (0.2,)]);
    executor.shutdown();
    for handle in &handles {
        assert_eq!(bounded(handle).unwrap().decode::<f64>().unwrap(), 0.2);
    }
    let late = other.submit(&add(), (1, 1));
    assert!(bounded(&late).unwrap_err().is_shutdown());
}

#[test]
fn dropping_the_last_clone_stops_the_workers() {
    let executor = start(1);
    let worker: u32 = bounded(&executor.submit(&pid(), ()))
        .unwrap()
        .decode()
        .unwrap();
    let handle = executor.submit(&sleepy(), (60,));
    drop(executor);
    // The handle outlives the executor and says why it will never have a result.
    let error = bounded(&handle).unwrap_err();
    assert!(error.is_cancelled() || error.is_shutdown(), "{error}");
    // The worker process has ended (gone, or a zombie nobody reaped yet): dropping the
    // executor waited for its shutdown.
    assert!(
        !std::path::Path::new(&format!("/proc/{worker}")).exists()
            || std::fs::read_to_string(format!("/proc/{worker}/stat"))
                .map_or(true, |stat| stat.contains(") Z ")),
        "worker {worker} outlived its executor"
    );
}

#[test]
fn the_async_builder_outside_a_runtime_starts_its_own() {
    init_tracing();
    // No Tokio runtime on this thread: this used to panic with "there is no reactor running".
    let executor = Executor::builder()
        .workers(1)
        .start(runtime(PythonConfig::new()));
    // Its futures complete without a Tokio runtime on the waiting side.
    let sum = futures::executor::block_on(async {
        executor.ready().await?;
        executor.submit(&add(), (20, 22)).result::<i64>().await
    });
    assert_eq!(sum.unwrap(), 42);
    futures::executor::block_on(executor.shutdown());
    let late = futures::executor::block_on(executor.submit(&add(), (1, 1)));
    assert!(late.unwrap_err().is_shutdown());

    // And an executor without workers of its own (an endpoint for managers) likewise.
    let endpoint = Executor::builder().start_without_workers();
    let stats = futures::executor::block_on(endpoint.stats());
    assert_eq!(stats.queued, 0);
}

#[test]
fn blocking_calls_inside_an_async_runtime_do_not_panic() {
    let executor = start(1);
    // A multi-threaded runtime: the wait moves off the worker thread (block_in_place).
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let from_multi: i64 = multi.block_on(async {
        bounded(&executor.submit(&add(), (1, 2)))
            .unwrap()
            .decode()
            .unwrap()
    });
    assert_eq!(from_multi, 3);
    // A current-thread runtime cannot lend its thread; the wait runs on a helper thread.
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let from_current: i64 = current.block_on(async {
        bounded(&executor.submit(&add(), (3, 4)))
            .unwrap()
            .decode()
            .unwrap()
    });
    assert_eq!(from_current, 7);
}
