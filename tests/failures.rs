//! The function's failures (exceptions, load errors) and the system's (dead workers),
//! and recovery from the latter.

mod common;

use std::time::{Duration, Instant};

use common::{assert_pool_works, pid, start, start_with, within, TempDir, HANG};
use funcx::{Executor, Function, PythonConfig, RetrySystemFailures, Task, WorkerExit};
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_arrive_with_type_message_and_traceback() {
    let executor = start(2).await;
    let source = r#"
class InstrumentError(Exception):
    pass

def helper(x):
    return 10 // x

def check(x):
    if x < 0:
        raise InstrumentError(f"detector {x} is saturated: ünïcode")
    return helper(x)
"#;
    let check = Function::from_source(source, "check");

    let err = within(HANG, executor.submit(&check, (0,)))
        .await
        .unwrap_err();
    assert!(err.is_python(), "{err}");
    assert!(!err.is_system() && !err.is_load(), "{err}");
    let e = err.python_exception().unwrap();
    assert_eq!(e.type_name, "ZeroDivisionError");
    assert!(e.message.contains("division"), "{}", e.message);
    assert!(
        e.traceback.contains("return 10 // x"),
        "the failing line:\n{}",
        e.traceback
    );
    assert!(
        e.traceback.contains("return helper(x)"),
        "the calling line:\n{}",
        e.traceback
    );
    assert!(e.traceback.contains("ZeroDivisionError"), "{}", e.traceback);
    assert_eq!(e.line, None);
    assert!(err.to_string().contains("ZeroDivisionError"), "{err}");

    let err = within(HANG, executor.submit(&check, (-3,)))
        .await
        .unwrap_err();
    assert!(err.is_python(), "{err}");
    let e = err.python_exception().unwrap();
    assert_eq!(e.type_name, "InstrumentError");
    assert_eq!(e.message, "detector -3 is saturated: ünïcode");
    assert!(
        e.traceback
            .contains(r#"raise InstrumentError(f"detector {x} is saturated: ünïcode")"#),
        "{}",
        e.traceback
    );
    // No frames of the worker's own machinery leak into the user's traceback... at least the
    // user's frames come first and the exception is last.
    assert!(
        e.traceback
            .trim_end()
            .ends_with("detector -3 is saturated: ünïcode"),
        "{}",
        e.traceback
    );

    // A chained exception keeps its cause in the traceback.
    let chained = Function::from_source(
        "def chained():\n    try:\n        {}['missing']\n    except KeyError as e:\n        raise RuntimeError('lookup failed') from e\n",
        "chained",
    );
    let err = within(HANG, executor.submit(&chained, ()))
        .await
        .unwrap_err();
    let e = err.python_exception().unwrap();
    assert_eq!(e.type_name, "RuntimeError");
    assert!(e.traceback.contains("KeyError"), "{}", e.traceback);
    assert!(e.traceback.contains("{}['missing']"), "{}", e.traceback);

    // Successful calls of the same function still work on the same workers.
    let value: i64 = within(HANG, executor.submit(&check, (5,)).result())
        .await
        .unwrap();
    assert_eq!(value, 2);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_errors_name_the_problem() {
    let executor = start(2).await;

    // Line 4 has the syntax error.
    let broken =
        Function::from_source("import os\n\ndef broken(x):\n    return x +* 2\n", "broken");
    let err = within(HANG, executor.submit(&broken, (1,)))
        .await
        .unwrap_err();
    assert!(err.is_load(), "{err}");
    assert!(!err.is_python() && !err.is_system(), "{err}");
    let e = err.python_exception().unwrap();
    assert_eq!(e.type_name, "SyntaxError");
    assert_eq!(e.line, Some(4), "{e:?}");
    assert!(err.to_string().contains("line 4"), "{err}");
    // Every call fails the same way (the error is not a one-off of the first worker).
    for handle in executor.submit_batch(&broken, (0..6).map(|i| (i,))) {
        let err = within(HANG, handle).await.unwrap_err();
        assert!(err.is_load(), "{err}");
        assert_eq!(err.python_exception().unwrap().line, Some(4));
    }

    // Indentation errors are SyntaxErrors with a line too.
    let indented = Function::from_source("def f():\nreturn 1\n", "f");
    let err = within(HANG, executor.submit(&indented, ()))
        .await
        .unwrap_err();
    assert!(err.is_load(), "{err}");
    assert_eq!(err.python_exception().unwrap().line, Some(2));

    // A missing entry point.
    let missing = Function::from_source("def other():\n    return 1\n", "wanted");
    let err = within(HANG, executor.submit(&missing, ()))
        .await
        .unwrap_err();
    assert!(err.is_load(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("wanted") && text.contains("not defined"),
        "{text}"
    );
    assert_eq!(err.python_exception().unwrap().line, None);

    // An entry point that is not callable.
    let constant = Function::from_source("value = 3\n", "value");
    let err = within(HANG, executor.submit(&constant, ()))
        .await
        .unwrap_err();
    assert!(err.is_load(), "{err}");
    assert!(err.to_string().contains("not a function"), "{err}");

    // Source that raises while being loaded.
    let raising = Function::from_source(
        "import no_such_module_funcx_e2e\n\ndef f():\n    return 1\n",
        "f",
    );
    let err = within(HANG, executor.submit(&raising, ()))
        .await
        .unwrap_err();
    assert!(err.is_load(), "{err}");
    let e = err.python_exception().unwrap();
    assert_eq!(e.type_name, "ModuleNotFoundError");
    assert!(
        e.message.contains("no_such_module_funcx_e2e"),
        "{}",
        e.message
    );

    // None of it hurt the workers.
    assert_pool_works(&executor, 100).await;
    executor.shutdown().await;
}

fn exit_with() -> Function {
    Function::from_source(
        "import os\n\ndef exit_with(code):\n    os._exit(code)\n",
        "exit_with",
    )
}

fn kill_self() -> Function {
    Function::from_source(
        "import os\n\ndef kill_self(sig):\n    os.kill(os.getpid(), sig)\n",
        "kill_self",
    )
}

/// Kills its worker with `os._exit(3)` the first time (no marker file at `path` yet),
/// returns "ok" afterwards.
fn flaky() -> Function {
    Function::from_source(
        r#"
import os

def flaky(path):
    if not os.path.exists(path):
        open(path, "w").close()
        os._exit(3)
    return "ok"
"#,
        "flaky",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_deaths_are_typed_and_the_pool_recovers() {
    let executor = start(2).await;
    let before = executor.stats().await.workers_started;
    assert_eq!(before, 2);

    let err = within(HANG, executor.submit(&exit_with(), (3,)))
        .await
        .unwrap_err();
    assert!(err.is_worker_died(), "{err}");
    assert!(err.is_system(), "{err}");
    assert_eq!(err.worker_exit(), Some(WorkerExit::Code(3)));
    assert!(err.to_string().contains("exit code 3"), "{err}");

    let err = within(HANG, executor.submit(&kill_self(), (9,)))
        .await
        .unwrap_err();
    assert!(err.is_worker_died(), "{err}");
    assert_eq!(err.worker_exit(), Some(WorkerExit::Signal(9)));
    assert!(err.to_string().contains("SIGKILL"), "{err}");

    let err = within(HANG, executor.submit(&kill_self(), (15,)))
        .await
        .unwrap_err();
    assert_eq!(err.worker_exit(), Some(WorkerExit::Signal(15)), "{err}");

    // The pool keeps working, on replaced workers.
    assert_pool_works(&executor, 100).await;
    // Three workers died, so three more were started, each counted once (the last may
    // still be starting: `ready()` waits for it).
    within(HANG, executor.ready())
        .await
        .expect("both slots ready again");
    let stats = executor.stats().await;
    assert_eq!(stats.workers, 2, "{stats:?}");
    assert_eq!(stats.ready_workers, 2, "{stats:?}");
    assert_eq!(stats.workers_started, before + 3, "{stats:?}");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_culprit_fails_when_a_worker_dies_mid_batch() {
    let executor = start(1).await;
    let echo = common::echo();
    // Teach the dispatcher that echo is fast, so that many of its tasks share the worker
    // with the killer.
    assert_pool_works(&executor, 200).await;
    let before: Vec<_> = executor.submit_batch(&echo, (0..200_i64).map(|i| (i,)));
    let killer = executor.submit(&exit_with(), (7,));
    let after: Vec<_> = executor.submit_batch(&echo, (200..400_i64).map(|i| (i,)));
    for (i, handle) in before.into_iter().chain(after).enumerate() {
        let value: i64 = within(HANG, handle.result())
            .await
            .unwrap_or_else(|e| panic!("innocent task {i} failed: {e}"));
        assert_eq!(value, i as i64);
    }
    let err = within(HANG, killer).await.unwrap_err();
    assert_eq!(err.worker_exit(), Some(WorkerExit::Code(7)), "{err}");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_layer_reruns_a_task_whose_worker_died() {
    let executor = start(2).await;
    let dir = TempDir::new("retry-layer");

    // Without a retry, the first call dies with its worker: the test below can fail.
    let marker = dir.join("plain");
    let err = within(HANG, executor.submit(&flaky(), (&marker,)))
        .await
        .unwrap_err();
    assert_eq!(err.worker_exit(), Some(WorkerExit::Code(3)), "{err}");
    assert!(std::path::Path::new(&marker).exists());

    let mut service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetrySystemFailures::new(2)))
        .service(executor.clone());
    let marker = dir.join("retried");
    let payload = within(
        HANG,
        service
            .ready()
            .await
            .unwrap()
            .call(Task::new(&flaky(), (&marker,))),
    )
    .await
    .expect("the retry succeeds");
    assert_eq!(payload.decode::<String>().unwrap(), "ok");

    // The function's own exception is never retried: it runs exactly once.
    let counter = dir.join("counter");
    let raises = Function::from_source(
        "def raises(path):\n    with open(path, 'a') as f:\n        f.write('x\\n')\n    raise ValueError('mine')\n",
        "raises",
    );
    let err = within(
        HANG,
        service
            .ready()
            .await
            .unwrap()
            .call(Task::new(&raises, (&counter,))),
    )
    .await
    .unwrap_err();
    assert!(err.is_python(), "{err}");
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1
    );

    // A function that always kills its worker fails after 1 + 2 attempts.
    let start = Instant::now();
    let err = within(
        HANG,
        service
            .ready()
            .await
            .unwrap()
            .call(Task::new(&exit_with(), (5,))),
    )
    .await
    .unwrap_err();
    assert_eq!(err.worker_exit(), Some(WorkerExit::Code(5)), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_pool_works(&executor, 20).await;
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_retries_on_worker_death() {
    let executor = start_with(
        Executor::builder().workers(2).retries_on_worker_death(1),
        PythonConfig::new(),
    )
    .await;
    let dir = TempDir::new("builder-retry");
    let marker = dir.join("marker");
    let report = within(HANG, executor.submit(&flaky(), (&marker,)).report()).await;
    let payload = report.result.expect("the re-run succeeds");
    assert_eq!(payload.decode::<String>().unwrap(), "ok");
    assert_eq!(report.status.attempts, 2, "{:?}", report.status);

    // One retry only: a function that always dies fails with its exit status.
    let err = within(HANG, executor.submit(&exit_with(), (4,)))
        .await
        .unwrap_err();
    assert_eq!(err.worker_exit(), Some(WorkerExit::Code(4)), "{err}");

    let pid_before: i64 = within(HANG, executor.submit(&pid(), ()).result())
        .await
        .unwrap();
    assert!(pid_before > 0);
    assert_pool_works(&executor, 100).await;
    executor.shutdown().await;
}
