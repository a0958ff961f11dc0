//! Functions that misbehave in ways a worker must survive, or report precisely.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_pool_works, pid, start, start_with, wait_for_state, within, TempDir, HANG};
use funcx::{Args, Executor, Function, Payload, PythonConfig, TaskOptions, TaskState, WorkerExit};
use serde_bytes::ByteBuf;

async fn worker_pid(executor: &Executor) -> i64 {
    within(HANG, executor.submit(&pid(), ()).result())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_exceptions_are_the_functions_own() {
    let executor = start(1).await;
    let before = worker_pid(&executor).await;
    let cases = [
        ("import sys\n\ndef f():\n    sys.exit(3)\n", "SystemExit", "3"),
        ("def f():\n    raise KeyboardInterrupt('ctrl-c')\n", "KeyboardInterrupt", "ctrl-c"),
        ("def f():\n    return input()\n", "EOFError", ""),
        ("def f():\n    return f()\n", "RecursionError", "recursion"),
        (
            "class Weird(Exception):\n    def __str__(self):\n        raise RuntimeError('no str')\n\ndef f():\n    raise Weird()\n",
            "Weird",
            "",
        ),
        ("def f():\n    raise ValueError('x' * 10_000_000)\n", "ValueError", "xxxx"),
    ];
    for (source, type_name, needle) in cases {
        let f = Function::from_source(source, "f");
        let err = within(HANG, executor.submit(&f, ())).await.unwrap_err();
        assert!(err.is_python(), "{type_name}: {err}");
        let e = err.python_exception().unwrap();
        assert_eq!(e.type_name, type_name, "{e:?}");
        assert!(
            e.message.contains(needle),
            "{type_name}: {}",
            &e.message[..e.message.len().min(200)]
        );
        assert!(e.message.len() < 2_000_000, "huge messages are clipped");
    }
    assert_eq!(worker_pid(&executor).await, before, "the worker survived");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segfault_is_a_signal_11_death() {
    let executor = start(1).await;
    // A real crash in C code (a null dereference, or raise(SIGSEGV) where page 0 is mapped).
    let crash = Function::from_source(
        "import faulthandler\n\ndef crash():\n    faulthandler.disable()\n    faulthandler._sigsegv()\n",
        "crash",
    );
    let err = within(HANG, executor.submit(&crash, ())).await.unwrap_err();
    assert!(err.is_worker_died(), "{err}");
    assert_eq!(err.worker_exit(), Some(WorkerExit::Signal(11)), "{err}");
    assert!(err.to_string().contains("SIGSEGV"), "{err}");
    assert_pool_works(&executor, 50).await;
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_serialization_errors() {
    let executor = start(1).await;
    let before = worker_pid(&executor).await;
    let echo = common::echo();

    // Bytes that are not a pickle: the worker cannot unpickle them.
    let garbage = Payload::from_pickled(&b"\x80\x04this is not a pickle"[..]);
    let err = within(HANG, executor.submit(&echo, garbage))
        .await
        .unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(err.python_exception().is_some(), "{err}");
    // Next to a good argument, as a keyword.
    let f = Function::from_source("def f(a, b=None):\n    return a\n", "f");
    let err = within(
        HANG,
        executor.submit(
            &f,
            Args::new()
                .arg(&1)
                .kwarg_payload("b", Payload::from_pickled(&b"\x80\x04\x95garbage"[..])),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.is_serialization(), "{err}");

    // A value serde-pickle cannot serialize fails on the Rust side, without a worker.
    struct Unserializable;
    impl serde::Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "this value refuses to be pickled",
            ))
        }
    }
    let err = within(HANG, executor.submit(&echo, (1, Unserializable)))
        .await
        .unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(err.to_string().contains("refuses"), "{err}");

    assert_eq!(worker_pid(&executor).await, before);
    assert_pool_works(&executor, 20).await;
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickled_functions_run_and_bad_pickles_do_not_load() {
    let executor = start(2).await;
    // Python makes the pickle of a function (by reference, as pickle does for module-level
    // functions), Rust registers it.
    let make = Function::from_source(
        "import pickle, operator\n\ndef make(name):\n    return pickle.dumps(getattr(operator, name))\n",
        "make",
    );
    let bytes: ByteBuf = within(HANG, executor.submit(&make, ("mul",)).result())
        .await
        .unwrap();
    let mul = Function::from_pickle(bytes.into_vec(), "mul");
    let product: i64 = within(HANG, executor.submit(&mul, (6, 7)).result())
        .await
        .unwrap();
    assert_eq!(product, 42);

    let not_callable = Function::from_pickle(
        within(
            HANG,
            executor
                .submit(
                    &Function::from_source(
                        "import pickle\n\ndef p():\n    return pickle.dumps([1, 2])\n",
                        "p",
                    ),
                    (),
                )
                .result::<ByteBuf>(),
        )
        .await
        .unwrap()
        .into_vec(),
        "list",
    );
    let err = within(HANG, executor.submit(&not_callable, ()))
        .await
        .unwrap_err();
    assert!(err.is_load(), "{err}");
    assert!(err.to_string().contains("not callable"), "{err}");

    let garbage = Function::from_pickle(&b"\x80\x04not a pickle at all"[..], "garbage");
    let err = within(HANG, executor.submit(&garbage, ()))
        .await
        .unwrap_err();
    assert!(err.is_load(), "{err}");
    assert_pool_works(&executor, 20).await;
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_child_holding_the_pipes_does_not_block_a_timeout() {
    let executor = start(1).await;
    let before = worker_pid(&executor).await;
    // The child inherits every descriptor, the protocol pipes included, and outlives the
    // task's timeout.
    let forks = Function::from_source(
        r#"
import os, time

def forks():
    if os.fork() == 0:
        time.sleep(20)
        os._exit(0)
    time.sleep(30)
"#,
        "forks",
    );
    let started = Instant::now();
    let err = within(
        HANG,
        executor.submit_with(
            &forks,
            (),
            TaskOptions::new().timeout(Duration::from_millis(300)),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_ne!(worker_pid(&executor).await, before);
    assert_pool_works(&executor, 20).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    within(Duration::from_secs(15), executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_process_does_not_stall_shutdown() {
    let executor = start(1).await;
    let spawns = Function::from_source(
        "import subprocess\n\ndef spawns():\n    return subprocess.Popen(['sleep', '30']).pid\n",
        "spawns",
    );
    let child: i64 = within(HANG, executor.submit(&spawns, ()).result())
        .await
        .unwrap();
    assert!(child > 0);
    let started = Instant::now();
    within(Duration::from_secs(15), executor.shutdown()).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown waited on the function's child: {:?}",
        started.elapsed()
    );
}

/// Sleeps `s` seconds, then appends a line to `path` unless it is empty; returns `value`.
fn marker() -> Function {
    Function::from_source(
        "import time\n\ndef marker(path, s, value):\n    if s:\n        time.sleep(s)\n    if path:\n        with open(path, 'a') as f:\n            f.write('ran\\n')\n    return value\n",
        "marker",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_task_prefetched_behind_a_running_one() {
    let executor = start(1).await;
    let dir = TempDir::new("cancel-prefetched");
    // Teach the dispatcher that marker is fast (microseconds), so that several calls are
    // sent to the worker at once.
    for handle in executor.submit_batch(&marker(), (0..50).map(|i| ("", 0.0, i))) {
        within(HANG, handle).await.unwrap();
    }
    let victim_path = dir.join("victim");
    let mut handles = executor.submit_batch(
        &marker(),
        [("", 1.0, -1), (victim_path.as_str(), 0.0, 1), ("", 0.0, 2)],
    );
    let after = handles.pop().unwrap();
    let victim = handles.pop().unwrap();
    let blocker = handles.pop().unwrap();
    // The point of the test: it already sits on the worker, behind the running blocker.
    // (A status query in the same burst as the submission may still see it queued.)
    wait_for_state(
        &executor,
        victim.id(),
        TaskState::Dispatched,
        Duration::from_millis(900),
    )
    .await;
    victim.cancel();
    let err = within(HANG, victim).await.unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    let value: i64 = within(HANG, blocker.result()).await.unwrap();
    assert_eq!(value, -1);
    let value: i64 = within(HANG, after.result()).await.unwrap();
    assert_eq!(value, 2);
    assert!(!Path::new(&victim_path).exists(), "the cancelled task ran");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_and_timeouts_are_never_retried() {
    let executor = start_with(
        Executor::builder().workers(1).retries_on_worker_death(3),
        PythonConfig::new(),
    )
    .await;
    let dir = TempDir::new("no-retry");
    let path = dir.join("runs");
    let counted_sleep = Function::from_source(
        "import time\n\ndef counted_sleep(path, s):\n    with open(path, 'a') as f:\n        f.write('run\\n')\n    time.sleep(s)\n",
        "counted_sleep",
    );
    let report = within(
        HANG,
        executor
            .submit_with(
                &counted_sleep,
                (&path, 30),
                TaskOptions::new().timeout(Duration::from_millis(300)),
            )
            .report(),
    )
    .await;
    assert!(report.result.unwrap_err().is_timeout());
    assert_eq!(report.status.attempts, 1, "{:?}", report.status);

    let handle = executor.submit(&counted_sleep, (&path, 30));
    wait_for_state(&executor, handle.id(), TaskState::Running, HANG).await;
    handle.cancel();
    let err = within(HANG, handle).await.unwrap_err();
    assert!(err.is_cancelled(), "{err}");

    assert_pool_works(&executor, 10).await;
    let runs = std::fs::read_to_string(&path).unwrap();
    assert_eq!(runs.lines().count(), 2, "each ran exactly once");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builders_default_timeout_applies_and_can_be_overridden() {
    let executor = start_with(
        Executor::builder()
            .workers(1)
            .task_timeout(Duration::from_millis(400)),
        PythonConfig::new(),
    )
    .await;
    let sleeper = Function::from_source(
        "import time\n\ndef sleeper(s):\n    time.sleep(s)\n    return s\n",
        "sleeper",
    );
    let err = within(HANG, executor.submit(&sleeper, (30,)))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let value: f64 = within(
        HANG,
        executor
            .submit_with(
                &sleeper,
                (0.6,),
                TaskOptions::new().timeout(Duration::from_secs(20)),
            )
            .result(),
    )
    .await
    .expect("a per-task timeout overrides the default");
    assert_eq!(value, 0.6);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_deep_in_a_big_batch_fails_only_the_culprit() {
    let executor = start(2).await;
    let sometimes = Function::from_source(
        "import os\n\ndef sometimes(i, bad):\n    if i == bad:\n        os._exit(9)\n    return i\n",
        "sometimes",
    );
    // Learn that it is fast, so thousands share each worker's pipe.
    for handle in executor.submit_batch(&sometimes, (0..100).map(|i| (i, -1))) {
        within(HANG, handle).await.unwrap();
    }
    const N: i64 = 20_000;
    const BAD: i64 = 12_345;
    let handles = executor.submit_batch(&sometimes, (0..N).map(|i| (i, BAD)));
    let mut failures = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        match within(HANG, handle.result::<i64>()).await {
            Ok(value) => assert_eq!(value, i as i64),
            Err(e) => failures.push((i, e)),
        }
    }
    assert_eq!(failures.len(), 1, "only the culprit fails: {failures:?}");
    let (i, err) = &failures[0];
    assert_eq!(*i as i64, BAD);
    assert_eq!(err.worker_exit(), Some(WorkerExit::Code(9)), "{err}");
    let stats = executor.stats().await;
    assert_eq!(stats.in_flight + stats.queued, 0, "{stats:?}");
    executor.shutdown().await;
}
