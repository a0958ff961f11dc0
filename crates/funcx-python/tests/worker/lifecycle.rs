//! How workers start, exit, die and are killed.

use std::time::Duration;

use funcx_core::worker::{
    ToWorker, WorkItem, Worker, WorkerEvent, WorkerEvents, WorkerId, WorkerRuntime,
};
use funcx_core::{Args, TaskId, WorkerExit};
use funcx_python::{PythonConfig, PythonRuntime};
use tokio::sync::mpsc;

use crate::harness::Harness;
use crate::IDENTITY;

#[tokio::test]
async fn os_exit_is_reported_after_earlier_results() {
    let mut h = Harness::start().await;
    let key = h.define(IDENTITY, "identity");
    let die = h.define("import os\ndef f():\n    os._exit(3)\n", "f");
    let a = h.submit(key, Args::new().arg(&1), false);
    let b = h.submit(key, Args::new().arg(&2), false);
    h.submit(die, Args::new(), true);
    let mut started = false;
    let mut results = Vec::new();
    let exit = loop {
        match h.event().await {
            WorkerEvent::Results(r) => results.extend(r),
            WorkerEvent::Started(_) => started = true,
            WorkerEvent::Exited(exit) => break exit,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(started);
    let ids: Vec<_> = results.iter().map(|r| r.id).collect();
    assert_eq!(ids, [a, b]);
    assert_eq!(exit, WorkerExit::Code(3));
}

#[tokio::test]
async fn death_by_signal() {
    let mut h = Harness::start().await;
    let die = h.define("import os\ndef f():\n    os.kill(os.getpid(), 9)\n", "f");
    h.submit(die, Args::new(), false);
    let (results, exit) = h.exit().await;
    assert!(results.is_empty());
    assert_eq!(exit, WorkerExit::Signal(9));
}

#[tokio::test]
async fn kill_stops_a_running_task() {
    let mut h = Harness::start().await;
    let sleep = h.define("import time\ndef f():\n    time.sleep(60)\n", "f");
    h.submit(sleep, Args::new(), true);
    assert!(matches!(h.event().await, WorkerEvent::Started(_)));
    h.worker.kill();
    let (results, exit) = h.exit().await;
    assert!(results.is_empty());
    assert_eq!(exit, WorkerExit::Signal(9));
}

#[tokio::test]
async fn dropping_the_handle_kills_the_worker() {
    let mut h = Harness::start().await;
    let sleep = h.define("import time\ndef f():\n    time.sleep(60)\n", "f");
    h.submit(sleep, Args::new(), true);
    assert!(matches!(h.event().await, WorkerEvent::Started(_)));
    let Harness { worker, events, .. } = h;
    drop(worker);
    let mut h = Harness {
        worker: Box::new(NoWorker),
        events,
        next_key: 0,
    };
    let (_, exit) = h.exit().await;
    assert_eq!(exit, WorkerExit::Signal(9));
}

struct NoWorker;

impl Worker for NoWorker {
    fn send(&mut self, _: ToWorker) {}
    fn kill(&mut self) {}
}

#[tokio::test]
async fn environment_working_dir_init_and_pinning() {
    let dir = std::env::temp_dir().join(format!("funcx-python-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let config = PythonConfig::new()
        .env("FUNCX_TEST_VAR", "from-config")
        .working_dir(&dir)
        .worker_init("export FOO=bar\necho init says hello")
        .accelerators(vec!["0".into(), "1".into(), "2".into()]);
    let mut h = Harness::with(config, 4).await;
    let source = "import os\ndef f(name):\n    return os.environ.get(name, '<unset>')\ndef cwd():\n    return os.getcwd()\n";
    let mut get = |name: &'static str| {
        let key = h.define(source, "f");
        h.submit(key, Args::new().arg(name), false)
    };
    let ids = [
        get("FUNCX_TEST_VAR"),
        get("FOO"),
        get("CUDA_VISIBLE_DEVICES"),
        get("ROCR_VISIBLE_DEVICES"),
        get("ZE_AFFINITY_MASK"),
        get("FUNCX_WORKER_INDEX"),
    ];
    let results = h.results(ids.len()).await;
    let values: Vec<String> = results
        .into_iter()
        .map(|r| r.outcome.unwrap().decode().unwrap())
        .collect();
    assert_eq!(values, ["from-config", "bar", "1", "1", "1", "4"]);
    let cwd = h.run(source, "cwd", Args::new()).await.unwrap();
    assert_eq!(cwd.decode::<String>().unwrap(), dir.to_string_lossy());
    let _ = std::fs::remove_dir(&dir);
}

/// Workers keep large payload buffers on glibc's heap (see `MALLOC_TUNABLES` in the runtime),
/// unless the configuration or the environment chooses its own allocator settings.
#[tokio::test]
async fn workers_get_allocator_settings_unless_configured() {
    const ENV: &str =
        "import os\ndef f():\n    return os.environ.get('GLIBC_TUNABLES', '<unset>')\n";
    let mut h = Harness::with(PythonConfig::new(), 1).await;
    let default: String = h
        .run(ENV, "f", Args::new())
        .await
        .unwrap()
        .decode()
        .unwrap();
    match std::env::var("GLIBC_TUNABLES") {
        // The environment's own settings win.
        Ok(inherited) => assert_eq!(default, inherited),
        Err(_) => assert_eq!(
            default,
            "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728"
        ),
    }
    let config = PythonConfig::new().env("GLIBC_TUNABLES", "glibc.malloc.arena_max=2");
    let mut h = Harness::with(config, 1).await;
    let own: String = h
        .run(ENV, "f", Args::new())
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(own, "glibc.malloc.arena_max=2");
}

#[tokio::test]
async fn a_missing_interpreter_is_a_spawn_error() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let runtime = PythonRuntime::new(PythonConfig::new().python("/nonexistent/bin/python3"));
    let result = runtime.spawn(0, WorkerEvents::new(WorkerId(0), tx)).await;
    let err = result.err().expect("spawn should fail");
    assert!(
        err.to_string().contains("/nonexistent/bin/python3"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_init_snippet_exits_without_ready() {
    let mut h = Harness::spawn(PythonConfig::new().worker_init("exit 7"), 0).await;
    let (results, exit) = h.exit().await;
    assert!(results.is_empty());
    assert_eq!(exit, WorkerExit::Code(7));
}

#[tokio::test]
async fn garbage_on_the_protocol_pipe_kills_the_worker() {
    let mut h = Harness::start().await;
    let key = h.define(IDENTITY, "identity");
    let a = h.submit(key, Args::new().arg(&1), false);
    assert_eq!(h.results(1).await[0].id, a);
    // Only the worker loop knows its private protocol descriptor; find it through gc.
    let garbage = h.define(
        "import gc, os, time\ndef f():\n    w = [o for o in gc.get_objects() if type(o).__name__ == 'Worker'][0]\n    os.write(w.fd_out, b'\\xff' * 64)\n    time.sleep(60)\n",
        "f",
    );
    h.submit(garbage, Args::new(), false);
    let (results, exit) = h.exit().await;
    assert!(results.is_empty(), "{results:?}");
    assert_eq!(exit, WorkerExit::Signal(9));
}

#[tokio::test]
async fn many_small_tasks_in_batches() {
    let mut h = Harness::start().await;
    let key = h.define("def inc(x):\n    return x + 1\n", "inc");
    let total = 20_000_i64;
    let mut ids = Vec::new();
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        let items: Vec<WorkItem> = chunk
            .iter()
            .map(|&i| {
                let id = TaskId::next();
                ids.push((id, i));
                WorkItem {
                    id,
                    function: key,
                    isolate: false,
                    args: Args::new().arg(&i),
                    timeout: None,
                    trace: None,
                    env: Vec::new(),
                    resources: None,
                }
            })
            .collect();
        h.worker.send(ToWorker::Tasks(items));
    }
    let results = h.results(total as usize).await;
    for (result, (id, i)) in results.into_iter().zip(ids) {
        assert_eq!(result.id, id);
        assert_eq!(result.outcome.unwrap().decode::<i64>().unwrap(), i + 1);
    }
}

#[tokio::test]
async fn a_worker_that_closes_its_output_without_exiting_is_killed() {
    let mut h = Harness::start().await;
    let hang = h.define(
        "import gc, os, time\ndef f():\n    w = [o for o in gc.get_objects() if type(o).__name__ == 'Worker'][0]\n    os.close(w.fd_out)\n    time.sleep(60)\n",
        "f",
    );
    h.submit(hang, Args::new(), false);
    let (results, exit) = h.exit().await;
    assert!(results.is_empty());
    assert_eq!(exit, WorkerExit::Signal(9));
}

#[tokio::test]
async fn cancel_reaches_queued_tasks_behind_a_slow_one() {
    let mut h = Harness::start().await;
    // The slow task says when it has started, then runs until the worker's protocol pipe
    // holds unread bytes (the cancel): the cancel is sure to arrive while it runs, with no
    // clock involved.
    let started = std::env::temp_dir().join(format!("funcx-started-{}", std::process::id()));
    let _ = std::fs::remove_file(&started);
    let slow_source = "import gc, select\ndef f(x, started):\n    w = [o for o in gc.get_objects() if type(o).__name__ == 'Worker'][0]\n    open(started, 'w').close()\n    while not select.select([w.fd_in], [], [], 0.005)[0]:\n        pass\n    return x\n";
    let gated = h.define(slow_source, "f");
    let slow = TaskId::next();
    let queued = TaskId::next();
    let item = |id, x: i64| WorkItem {
        id,
        function: gated,
        isolate: false,
        args: Args::new().arg(&x).arg(started.to_string_lossy().as_ref()),
        timeout: None,
        trace: None,
        env: Vec::new(),
        resources: None,
    };
    h.worker
        .send(ToWorker::Tasks(vec![item(slow, 1), item(queued, 2)]));
    tokio::time::timeout(Duration::from_secs(30), async {
        while !started.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the slow task starts");
    h.worker.send(ToWorker::Cancel(vec![queued]));
    let results = h.results(2).await;
    let _ = std::fs::remove_file(&started);
    assert_eq!([results[0].id, results[1].id], [slow, queued]);
    assert!(results[0].outcome.is_ok());
    assert!(results[1].outcome.as_ref().unwrap_err().is_cancelled());
}

#[tokio::test]
async fn inspect_sees_the_source() {
    let mut h = Harness::start().await;
    let source = "import inspect\ndef f():\n    return inspect.getsource(f)\n";
    let out = h.run(source, "f", Args::new()).await.unwrap();
    assert!(out
        .decode::<String>()
        .unwrap()
        .contains("return inspect.getsource(f)"));
}

#[test]
fn spawning_outside_a_runtime_is_an_error_not_a_panic() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let runtime = PythonRuntime::new(PythonConfig::new());
    let err = runtime
        .spawn_worker(0, WorkerEvents::new(WorkerId(0), tx))
        .expect_err("no runtime");
    assert!(err.to_string().contains("Tokio"), "{err}");
}
