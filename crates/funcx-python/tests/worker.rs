//! Real `python3` workers driven through `PythonRuntime::spawn`.

use std::collections::BTreeMap;
use std::time::Duration;

use funcx_core::worker::{
    FunctionKey, ToWorker, WorkItem, WorkResult, Worker, WorkerEvent, WorkerEvents, WorkerId,
    WorkerRuntime,
};
use funcx_core::{Args, Function, Payload, TaskError, TaskId, WorkerExit};
use funcx_python::{PythonConfig, PythonRuntime};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(60);

/// One worker and the events it reports.
struct Harness {
    worker: Box<dyn Worker>,
    events: mpsc::UnboundedReceiver<(WorkerId, WorkerEvent)>,
    next_key: u32,
}

impl Harness {
    async fn start() -> Harness {
        Harness::with(PythonConfig::new(), 0).await
    }

    async fn with(config: PythonConfig, index: usize) -> Harness {
        let mut harness = Harness::spawn(config, index).await;
        match harness.event().await {
            WorkerEvent::Ready => {}
            other => panic!("expected Ready, got {other:?}"),
        }
        harness
    }

    async fn spawn(config: PythonConfig, index: usize) -> Harness {
        // Worker output and protocol complaints show up in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("funcx=debug,funcx_python=debug")
            .try_init();
        let (tx, events) = mpsc::unbounded_channel();
        // Runs the suite against another interpreter, e.g. the oldest supported Python.
        let config = match std::env::var_os("FUNCX_TEST_PYTHON") {
            Some(python) => config.python(python),
            None => config,
        };
        let runtime = PythonRuntime::new(config);
        let worker = runtime
            .spawn(index, WorkerEvents::new(WorkerId(index as u64), tx))
            .await
            .expect("spawn");
        Harness {
            worker,
            events,
            next_key: 0,
        }
    }

    async fn event(&mut self) -> WorkerEvent {
        match tokio::time::timeout(TIMEOUT, self.events.recv()).await {
            Ok(Some((_, event))) => event,
            Ok(None) => panic!("event channel closed"),
            Err(_) => panic!("no event within {TIMEOUT:?}"),
        }
    }

    fn define(&mut self, source: &str, name: &str) -> FunctionKey {
        self.define_function(Function::from_source(source, name))
    }

    fn define_function(&mut self, function: Function) -> FunctionKey {
        let key = FunctionKey(self.next_key);
        self.next_key += 1;
        self.worker.send(ToWorker::Function { key, function });
        key
    }

    fn submit(&mut self, key: FunctionKey, args: Args, isolate: bool) -> TaskId {
        let id = TaskId::next();
        self.worker.send(ToWorker::Tasks(vec![WorkItem {
            id,
            function: key,
            isolate,
            args,
            timeout: None,
            trace: None,
            env: Vec::new(),
            resources: None,
        }]));
        id
    }

    /// The next `n` results, failing on any other event.
    async fn results(&mut self, n: usize) -> Vec<WorkResult> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.event().await {
                WorkerEvent::Results(results) => out.extend(results),
                other => panic!("expected results, got {other:?} after {}", out.len()),
            }
        }
        assert_eq!(out.len(), n, "more results than tasks");
        out
    }

    async fn run(&mut self, source: &str, name: &str, args: Args) -> Result<Payload, TaskError> {
        let key = self.define(source, name);
        let id = self.submit(key, args, false);
        let mut results = self.results(1).await;
        let result = results.remove(0);
        assert_eq!(result.id, id);
        result.outcome
    }

    /// Waits for Exited, passing over any results.
    async fn exit(&mut self) -> (Vec<WorkResult>, WorkerExit) {
        let mut results = Vec::new();
        loop {
            match self.event().await {
                WorkerEvent::Results(r) => results.extend(r),
                WorkerEvent::Exited(exit) => return (results, exit),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

const IDENTITY: &str = "def identity(x):\n    return x\n";

#[tokio::test]
async fn ready_arrives_and_shutdown_exits_cleanly() {
    let mut h = Harness::start().await;
    h.worker.send(ToWorker::Shutdown);
    let (results, exit) = h.exit().await;
    assert!(results.is_empty());
    assert_eq!(exit, WorkerExit::Code(0));
}

#[tokio::test]
async fn values_round_trip() {
    let mut h = Harness::start().await;
    let key = h.define(IDENTITY, "identity");
    let mut map = BTreeMap::new();
    map.insert("a".to_string(), vec![1_i64, 2]);
    let ids = [
        h.submit(key, Args::new().arg(&42_i64), false),
        h.submit(key, Args::new().arg(&-2.5_f64), false),
        h.submit(key, Args::new().arg("héllo"), false),
        h.submit(
            key,
            Args::new().arg(&ByteBuf::from(vec![0_u8, 255, 7])),
            false,
        ),
        h.submit(key, Args::new().arg(&vec![1_i64, 2, 3]), false),
        h.submit(key, Args::new().arg(&map), false),
        h.submit(key, Args::new().arg(&()), false),
        h.submit(key, Args::new().arg(&(1_i64, "two".to_string())), false),
        h.submit(key, Args::new().arg(&(1_i64 << 40)), false),
    ];
    let results = h.results(ids.len()).await;
    let ids_back: Vec<_> = results.iter().map(|r| r.id).collect();
    assert_eq!(ids_back, ids, "results come back in order");
    let payload = |i: usize| results[i].outcome.as_ref().expect("ok").clone();
    assert_eq!(payload(0).decode::<i64>().unwrap(), 42);
    assert_eq!(payload(1).decode::<f64>().unwrap(), -2.5);
    assert_eq!(payload(2).decode::<String>().unwrap(), "héllo");
    assert_eq!(
        payload(3).decode::<ByteBuf>().unwrap().as_ref(),
        [0, 255, 7]
    );
    assert_eq!(payload(4).decode::<Vec<i64>>().unwrap(), [1, 2, 3]);
    assert_eq!(
        payload(5).decode::<BTreeMap<String, Vec<i64>>>().unwrap(),
        map
    );
    assert_eq!(payload(6).decode::<Option<i64>>().unwrap(), None);
    assert_eq!(
        payload(7).decode::<(i64, String)>().unwrap(),
        (1, "two".to_string())
    );
    assert_eq!(payload(8).decode::<i64>().unwrap(), 1 << 40);
    assert!(results.iter().all(|r| r.duration < Duration::from_secs(5)));
}

#[tokio::test]
async fn positional_and_keyword_arguments() {
    let mut h = Harness::start().await;
    let source =
        "def f(a, b, *rest, scale=1, **kw):\n    return [a, b, list(rest), scale, sorted(kw)]\n";
    let out = h
        .run(
            source,
            "f",
            Args::new()
                .arg(&1)
                .arg(&2)
                .arg(&3)
                .kwarg("scale", &10)
                .kwarg("z", &0),
        )
        .await
        .unwrap();
    let (a, b, rest, scale, kw): (i64, i64, Vec<i64>, i64, Vec<String>) = out.decode().unwrap();
    assert_eq!(
        (a, b, rest, scale, kw),
        (1, 2, vec![3], 10, vec!["z".to_string()])
    );

    let none = h
        .run("def g():\n    return 'none'\n", "g", Args::new())
        .await
        .unwrap();
    assert_eq!(none.decode::<String>().unwrap(), "none");
}

#[tokio::test]
async fn exceptions_carry_type_message_and_traceback() {
    let mut h = Harness::start().await;
    let source = "class Oops(Exception):\n    pass\n\ndef boom(x):\n    if x:\n        raise ValueError('bad value %d' % x)\n    raise Oops('custom')\n";
    let err = h
        .run(source, "boom", Args::new().arg(&3))
        .await
        .unwrap_err();
    assert!(err.is_python(), "{err}");
    let e = err.python_exception().unwrap();
    assert_eq!(e.type_name, "ValueError");
    assert_eq!(e.message, "bad value 3");
    assert!(
        e.traceback.contains("raise ValueError('bad value %d' % x)"),
        "{}",
        e.traceback
    );
    assert!(e.traceback.contains("<funcx:boom>"), "{}", e.traceback);
    assert!(e.traceback.contains("ValueError: bad value 3"));
    assert_eq!(e.line, None);

    let err = h
        .run(source, "boom", Args::new().arg(&0))
        .await
        .unwrap_err();
    assert_eq!(err.python_exception().unwrap().type_name, "Oops");

    let err = h
        .run(
            "import json\ndef f():\n    json.loads('{')\n",
            "f",
            Args::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.python_exception().unwrap().type_name,
        "json.decoder.JSONDecodeError"
    );

    // Exits and interrupts raised by the function are its errors, not the worker's end.
    let err = h
        .run("import sys\ndef f():\n    sys.exit(4)\n", "f", Args::new())
        .await
        .unwrap_err();
    assert_eq!(err.python_exception().unwrap().type_name, "SystemExit");
    let err = h
        .run("def f():\n    raise KeyboardInterrupt\n", "f", Args::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.python_exception().unwrap().type_name,
        "KeyboardInterrupt"
    );
    let ok = h.run(IDENTITY, "identity", Args::new().arg(&1)).await;
    assert_eq!(ok.unwrap().decode::<i64>().unwrap(), 1);
}

#[tokio::test]
async fn load_errors() {
    let mut h = Harness::start().await;
    let err = h
        .run("x = 1\ndef f(:\n    pass\n", "f", Args::new())
        .await
        .unwrap_err();
    assert!(err.is_load(), "{err}");
    let e = err.python_exception().unwrap();
    assert_eq!(e.type_name, "SyntaxError");
    assert_eq!(e.line, Some(2));
    assert!(err.to_string().contains("line 2"), "{err}");

    let err = h
        .run("def g():\n    pass\n", "f", Args::new())
        .await
        .unwrap_err();
    assert!(err.is_load());
    assert!(
        err.python_exception()
            .unwrap()
            .message
            .contains("entry point 'f' is not defined in the source"),
        "{err}"
    );

    let err = h.run("f = 3\n", "f", Args::new()).await.unwrap_err();
    assert!(err.is_load(), "{err}");

    let err = h
        .run("raise RuntimeError('at import')\n", "f", Args::new())
        .await
        .unwrap_err();
    assert!(err.is_load());
    assert_eq!(err.python_exception().unwrap().type_name, "RuntimeError");

    let key = h.define_function(Function::from_pickle(&b"not a pickle"[..], "p"));
    // Every task of a broken function fails the same way.
    let a = h.submit(key, Args::new(), false);
    let b = h.submit(key, Args::new(), false);
    let results = h.results(2).await;
    assert_eq!([results[0].id, results[1].id], [a, b]);
    assert!(results
        .iter()
        .all(|r| r.outcome.as_ref().unwrap_err().is_load()));

    // A pickled callable works: builtins.len, pickled by reference.
    let len = Function::from_pickle(&b"\x80\x04\x95\x0f\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x03len\x94\x93\x94."[..], "len");
    let key = h.define_function(len);
    h.submit(key, Args::new().arg("four"), false);
    let result = h.results(1).await.remove(0);
    assert_eq!(result.outcome.unwrap().decode::<i64>().unwrap(), 4);
}

#[tokio::test]
async fn unknown_function_key_is_a_protocol_error() {
    let mut h = Harness::start().await;
    h.submit(FunctionKey(77), Args::new(), false);
    let err = h.results(1).await.remove(0).outcome.unwrap_err();
    assert!(err.is_protocol() && err.to_string().contains("77"), "{err}");
}

#[tokio::test]
async fn serialization_errors() {
    let mut h = Harness::start().await;
    let err = h
        .run("def f():\n    return lambda: 0\n", "f", Args::new())
        .await
        .unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(err.to_string().contains("could not pickle the result"));

    let err = h
        .run("def f():\n    yield 1\n", "f", Args::new())
        .await
        .unwrap_err();
    assert!(err.is_serialization(), "{err}");

    let err = h
        .run(
            IDENTITY,
            "identity",
            Args::new().payload(Payload::from_pickled(&b"\x80\x04garbage"[..])),
        )
        .await
        .unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(err.to_string().contains("unpickle the arguments"), "{err}");
}

#[tokio::test]
async fn results_over_the_limit_are_refused() {
    let mut h = Harness::with(PythonConfig::new().max_result_size(1000), 0).await;
    let err = h
        .run(
            "def f(n):\n    return b'x' * n\n",
            "f",
            Args::new().arg(&5000),
        )
        .await
        .unwrap_err();
    assert!(err.is_result_too_large(), "{err}");
    assert!(err.to_string().contains("1000"), "{err}");
    let ok = h
        .run(
            "def f(n):\n    return b'x' * n\n",
            "f",
            Args::new().arg(&10),
        )
        .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn isolated_tasks_report_their_start_first() {
    let mut h = Harness::start().await;
    let key = h.define(IDENTITY, "identity");
    let a = h.submit(key, Args::new().arg(&1), false);
    let b = h.submit(key, Args::new().arg(&2), true);
    let c = h.submit(key, Args::new().arg(&3), false);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match h.event().await {
            WorkerEvent::Results(results) => {
                seen.extend(results.into_iter().map(|r| format!("done {:?}", r.id)))
            }
            WorkerEvent::Started(id) => seen.push(format!("started {id:?}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            format!("done {a:?}"),
            format!("started {b:?}"),
            format!("done {b:?}"),
            format!("done {c:?}"),
        ]
    );
}

#[tokio::test]
async fn cancel_before_an_isolated_task_starts() {
    let mut h = Harness::start().await;
    let sleep = h.define(
        "import time\ndef f(x):\n    time.sleep(x)\n    return x\n",
        "f",
    );
    let first = h.submit(sleep, Args::new().arg(&0.5), true);
    let second = h.submit(sleep, Args::new().arg(&0.0), true);
    match h.event().await {
        WorkerEvent::Started(id) => assert_eq!(id, first),
        other => panic!("unexpected {other:?}"),
    }
    h.worker.send(ToWorker::Cancel(vec![second]));
    let results = h.results(2).await;
    assert_eq!(results[0].id, first);
    assert!(results[0].outcome.is_ok());
    assert_eq!(results[1].id, second);
    assert!(results[1].outcome.as_ref().unwrap_err().is_cancelled());
    // The worker carries on afterwards.
    let ok = h.run(IDENTITY, "identity", Args::new().arg(&5)).await;
    assert_eq!(ok.unwrap().decode::<i64>().unwrap(), 5);
}

#[tokio::test]
async fn chatty_functions_do_not_corrupt_the_protocol() {
    let mut h = Harness::start().await;
    let source = "import os, sys\ndef f(n):\n    print('x' * n)\n    sys.stdout.write('y' * n)\n    sys.stderr.write('z' * n + '\\n')\n    os.write(1, b'w' * 1000 + b'\\n')\n    for i in range(1000):\n        print(i)\n    return n\n";
    let n = 10 * 1024 * 1024;
    let out = h.run(source, "f", Args::new().arg(&n)).await.unwrap();
    assert_eq!(out.decode::<i64>().unwrap(), n);
    let again = h.run(source, "f", Args::new().arg(&3)).await.unwrap();
    assert_eq!(again.decode::<i64>().unwrap(), 3);
}

#[tokio::test]
async fn large_arguments_and_results_round_trip() {
    let mut h = Harness::start().await;
    let data: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let key = h.define(
        "def f(b):\n    assert len(b) == 16 * 1024 * 1024\n    return b[::-1]\n",
        "f",
    );
    h.submit(key, Args::new().arg(&ByteBuf::from(data.clone())), false);
    h.submit(key, Args::new().arg(&ByteBuf::from(data.clone())), false);
    for result in h.results(2).await {
        let back: ByteBuf = result.outcome.unwrap().decode().unwrap();
        assert!(back.iter().eq(data.iter().rev()));
    }
}

/// Tasks with large arguments pickle their results into parts (see worker.py); small,
/// failing and over-the-limit results of such tasks come back as from any other task.
#[tokio::test]
async fn tasks_with_large_arguments_report_every_kind_of_result() {
    let mut h = Harness::with(PythonConfig::new().max_result_size(1 << 20), 0).await;
    let data = ByteBuf::from(vec![7_u8; 200 * 1024]);
    let key = h.define(
        "def f(b, n):\n    if n < 0:\n        raise ValueError('negative')\n    return (len(b), b[:n])\n",
        "f",
    );
    let small = h.submit(key, Args::new().arg(&data).arg(&3), false);
    let large = h.submit(key, Args::new().arg(&data).arg(&(150 * 1024)), false);
    let raised = h.submit(key, Args::new().arg(&data).arg(&-1), false);
    let huge = ByteBuf::from(vec![8_u8; 2 << 20]);
    let over = h.submit(key, Args::new().arg(&huge).arg(&(2 << 20)), false);
    let after = h.submit(
        key,
        Args::new().arg(&ByteBuf::from(vec![1, 2])).arg(&1),
        false,
    );
    let results = h.results(5).await;
    let ids: Vec<_> = results.iter().map(|r| r.id).collect();
    assert_eq!(ids, [small, large, raised, over, after]);
    let decode =
        |i: usize| -> (usize, ByteBuf) { results[i].outcome.as_ref().unwrap().decode().unwrap() };
    assert_eq!(decode(0), (200 * 1024, ByteBuf::from(vec![7_u8; 3])));
    assert_eq!(
        decode(1),
        (200 * 1024, ByteBuf::from(vec![7_u8; 150 * 1024]))
    );
    let error = results[2].outcome.as_ref().unwrap_err();
    assert!(error.to_string().contains("negative"), "{error}");
    let error = results[3].outcome.as_ref().unwrap_err();
    assert!(error.is_result_too_large(), "{error}");
    assert_eq!(decode(4), (2, ByteBuf::from(vec![1_u8])));
}

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
