//! Real `python3` workers driven through `PythonRuntime::spawn`.

mod harness;
mod lifecycle;
mod shared;

use std::collections::BTreeMap;
use std::time::Duration;

use funcx_core::worker::{FunctionKey, ToWorker, WorkerEvent};
use funcx_core::{Args, Function, Payload, WorkerExit};
use funcx_python::PythonConfig;
use serde_bytes::ByteBuf;

use harness::Harness;

pub(crate) const IDENTITY: &str = "def identity(x):\n    return x\n";

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
