//! Values across the Rust–Python boundary: typed arguments and results, keyword arguments,
//! opaque payloads, big payloads, chatty functions, unpicklable and oversized results.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{assert_pool_works, echo, start, start_with, within, HANG};
use funcx::{Args, Executor, Function, Payload, PythonConfig, TaskState};
use futures::StreamExt;
use serde::Deserialize;
use serde_bytes::ByteBuf;

/// Echoes `value` through Python and decodes it back as the same type.
async fn echo_back<T>(executor: &Executor, value: T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    within(HANG, executor.submit(&echo(), (&value,)).result::<T>())
        .await
        .expect("echo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scalars_round_trip() {
    let executor = start(2).await;
    for value in [0_i64, 1, -1, 42, -42, i64::MIN, i64::MAX, 1 << 40] {
        assert_eq!(echo_back(&executor, value).await, value);
    }
    for value in [0.0_f64, -0.5, 1e300, -1e-300, f64::MAX, f64::INFINITY] {
        assert_eq!(echo_back(&executor, value).await, value);
    }
    assert!(echo_back(&executor, f64::NAN).await.is_nan());
    for value in [true, false] {
        assert_eq!(echo_back(&executor, value).await, value);
    }
    for value in [
        "",
        "plain",
        "héllo wörld",
        "日本語 🦀 \u{1F600}",
        "nul\0inside",
        "a\nb",
    ] {
        assert_eq!(echo_back(&executor, value.to_string()).await, value);
    }
    assert_eq!(echo_back(&executor, None::<i64>).await, None);
    assert_eq!(echo_back(&executor, Some(7_i64)).await, Some(7));

    // Python sees the types the README promises, and computes with them.
    let types = Function::from_source(
        "def types(*args):\n    return [type(a).__name__ for a in args]\n",
        "types",
    );
    let names: Vec<String> = within(
        HANG,
        executor
            .submit(
                &types,
                (
                    1_i64,
                    2.5_f64,
                    "s",
                    ByteBuf::from(vec![1_u8]),
                    vec![1_i64],
                    HashMap::from([("k".to_string(), 1_i64)]),
                    None::<i64>,
                    true,
                ),
            )
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(
        names,
        ["int", "float", "str", "bytes", "list", "dict", "NoneType", "bool"]
    );

    let arith = Function::from_source(
        "def arith(a, b):\n    return (a * b, a - b, a // b, str(a) + '/' + str(b))\n",
        "arith",
    );
    let result: (i64, i64, i64, String) =
        within(HANG, executor.submit(&arith, (-7_i64, 2_i64)).result())
            .await
            .unwrap();
    assert_eq!(result, (-14, -9, -4, "-7/2".to_string()));
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_collections_and_tuples_round_trip() {
    let executor = start(2).await;

    let all_bytes = ByteBuf::from((0..=255_u8).collect::<Vec<_>>());
    assert_eq!(echo_back(&executor, all_bytes.clone()).await, all_bytes);
    assert_eq!(
        echo_back(&executor, ByteBuf::new()).await,
        ByteBuf::new(),
        "empty bytes"
    );

    let reverse = Function::from_source("def reverse(b):\n    return b[::-1]\n", "reverse");
    let reversed: ByteBuf = within(
        HANG,
        executor
            .submit(&reverse, (ByteBuf::from(b"abc\x00\xff".to_vec()),))
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(reversed.as_ref(), b"\xff\x00cba");

    let list = vec![vec![1_i64, -2], vec![], vec![i64::MAX]];
    assert_eq!(echo_back(&executor, list.clone()).await, list);
    let strings = vec!["ä".to_string(), String::new(), "z".into()];
    assert_eq!(echo_back(&executor, strings.clone()).await, strings);

    let map: HashMap<String, Vec<f64>> = HashMap::from([
        ("x".to_string(), vec![1.5, -2.0]),
        ("ü".to_string(), vec![]),
        (String::new(), vec![0.0]),
    ]);
    assert_eq!(echo_back(&executor, map.clone()).await, map);
    let int_keys: HashMap<i64, String> = HashMap::from([(1, "one".into()), (-2, "minus".into())]);
    assert_eq!(echo_back(&executor, int_keys.clone()).await, int_keys);

    let tuple = (1_i64, "two".to_string(), (3.0_f64, false), None::<String>);
    assert_eq!(echo_back(&executor, tuple.clone()).await, tuple);

    // A tuple built by Python decodes into a Rust tuple.
    let split = Function::from_source(
        "def split(s):\n    head, _, tail = s.partition(',')\n    return (head, tail, len(s))\n",
        "split",
    );
    let parts: (String, String, i64) = within(HANG, executor.submit(&split, ("ab,cdé",)).result())
        .await
        .unwrap();
    assert_eq!(parts, ("ab".to_string(), "cdé".to_string(), 6));
    executor.shutdown().await;
}

#[derive(Debug, Deserialize, PartialEq)]
struct Measurement {
    name: String,
    count: i64,
    mean: f64,
    tags: Vec<String>,
    note: Option<String>,
    extra: HashMap<String, i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dicts_decode_into_structs() {
    let executor = start(1).await;
    let measure = Function::from_source(
        r#"
import statistics

def measure(name, values):
    return {
        "name": name.title(),
        "count": len(values),
        "mean": statistics.mean(values),
        "tags": sorted({"a", "b"}),
        "note": None,
        "extra": {"max": max(values), "min": min(values)},
    }
"#,
        "measure",
    );
    let m: Measurement = within(
        HANG,
        executor
            .submit(&measure, ("sensor één", vec![1_i64, 2, 6]))
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(
        m,
        Measurement {
            name: "Sensor Één".into(),
            count: 3,
            mean: 3.0,
            tags: vec!["a".into(), "b".into()],
            note: None,
            extra: HashMap::from([("max".into(), 6), ("min".into(), 1)]),
        }
    );

    // Decoding into the wrong Rust type is a serialization error, not a panic.
    let err = within(
        HANG,
        executor
            .submit(&measure, ("x", vec![1_i64]))
            .result::<i64>(),
    )
    .await
    .unwrap_err();
    assert!(err.is_serialization(), "{err}");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_arguments() {
    let executor = start(2).await;
    let f = Function::from_source(
        "def f(a, b=10, *rest, c=100, **more):\n    return [a, b, list(rest), c, sorted(more.items())]\n",
        "f",
    );
    type Out = (i64, i64, Vec<i64>, i64, Vec<(String, String)>);

    let only_kw: Out = within(
        HANG,
        executor
            .submit(&f, Args::new().arg(&1_i64).kwarg("c", &5_i64))
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(only_kw, (1, 10, vec![], 5, vec![]));

    let all: Out = within(
        HANG,
        executor
            .submit(
                &f,
                Args::new()
                    .arg(&1_i64)
                    .arg(&2_i64)
                    .arg(&3_i64)
                    .kwarg("zeta", &"z")
                    .kwarg("c", &-1_i64)
                    .kwarg("alpha", &"ä"),
            )
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(
        all,
        (
            1,
            2,
            vec![3],
            -1,
            vec![("alpha".into(), "ä".into()), ("zeta".into(), "z".into())]
        )
    );

    let by_name: Out = within(
        HANG,
        executor
            .submit(&f, Args::new().kwarg("b", &7_i64).kwarg("a", &8_i64))
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(by_name, (8, 7, vec![], 100, vec![]));

    // A keyword the function does not take is the function's TypeError.
    let strict = Function::from_source("def strict(a):\n    return a\n", "strict");
    let err = within(
        HANG,
        executor.submit(&strict, Args::new().kwarg("nope", &1_i64)),
    )
    .await
    .unwrap_err();
    assert!(err.is_python(), "{err}");
    let exception = err.python_exception().unwrap();
    assert_eq!(exception.type_name, "TypeError");
    assert!(exception.message.contains("nope"), "{}", exception.message);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_payloads_pass_between_tasks() {
    let executor = start(2).await;
    let make = Function::from_source(
        r#"
import fractions

def make(n, d):
    return {"fraction": fractions.Fraction(n, d), "set": {n, d}}
"#,
        "make",
    );
    let payload: Payload = within(HANG, executor.submit(&make, (2_i64, 6_i64)))
        .await
        .unwrap();
    assert!(!payload.is_empty());
    let err = payload.decode::<HashMap<String, Vec<i64>>>().unwrap_err();
    assert!(err.is_serialization(), "{err}");
    assert!(payload.decode::<String>().unwrap_err().is_serialization());

    let use_it = Function::from_source(
        r#"
def use_it(obj, scale=1):
    f = obj["fraction"] * scale
    return [f.numerator, f.denominator, sorted(obj["set"])]
"#,
        "use_it",
    );
    // As a positional payload next to an ordinary keyword argument.
    let out: (i64, i64, Vec<i64>) = within(
        HANG,
        executor
            .submit(
                &use_it,
                Args::new().payload(payload.clone()).kwarg("scale", &3_i64),
            )
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(out, (1, 1, vec![2, 6]));

    // As a keyword payload, and as the whole argument list through IntoArgs.
    let out: (i64, i64, Vec<i64>) = within(
        HANG,
        executor
            .submit(&use_it, Args::new().kwarg_payload("obj", payload.clone()))
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(out, (1, 3, vec![2, 6]));
    let out: (i64, i64, Vec<i64>) = within(HANG, executor.submit(&use_it, payload).result())
        .await
        .unwrap();
    assert_eq!(out, (1, 3, vec![2, 6]));
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_argument_and_result() {
    let executor = start(2).await;
    const SIZE: usize = 16 << 20;
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let digest = Function::from_source(
        r#"
import hashlib

def digest(b):
    return [len(b), hashlib.sha256(b).hexdigest(), b[::-1]]
"#,
        "digest",
    );
    let (len, sha, reversed): (usize, String, ByteBuf) = within(
        HANG,
        executor
            .submit(&digest, (ByteBuf::from(data.clone()),))
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(len, SIZE);
    assert_eq!(sha.len(), 64);
    assert_eq!(reversed.len(), SIZE);
    assert!(
        reversed.iter().rev().eq(data.iter()),
        "the reversed 16 MiB differ"
    );

    // A result made in Python, checked byte for byte.
    let make = Function::from_source(
        "def make(n):\n    return bytes(i * 7 % 256 for i in range(n))\n",
        "make",
    );
    let made: ByteBuf = within(HANG, executor.submit(&make, (SIZE,)).result())
        .await
        .unwrap();
    assert_eq!(made.len(), SIZE);
    assert!(made
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i * 7 % 256) as u8));

    // And an echo of the exact bytes, both ways.
    let back: ByteBuf = within(
        HANG,
        executor
            .submit(&echo(), (ByteBuf::from(data.clone()),))
            .result(),
    )
    .await
    .unwrap();
    assert!(back.as_ref() == data.as_slice(), "echoed 16 MiB differ");
    assert_pool_works(&executor, 10).await;
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatty_functions_return_their_results() {
    let executor = start(1).await;
    let chatty = Function::from_source(
        r#"
import os
import sys

def chatty(n):
    line = "x" * 99 + "\n"
    for _ in range(n // 100 // 3):
        print(line, end="")
    sys.stderr.write(line * (n // 100 // 3))
    sys.stderr.flush()
    sys.stdout.flush()
    os.write(1, (line * (n // 100 // 3)).encode())
    os.write(2, b"raw stderr without newline")
    print("\x00\xff binary-ish \x1b[31m escape", flush=True)
    return {"done": n}
"#,
        "chatty",
    );
    const FIVE_MB: i64 = 5_000_000;
    let out: HashMap<String, i64> = within(HANG, executor.submit(&chatty, (FIVE_MB,)).result())
        .await
        .unwrap();
    assert_eq!(out["done"], FIVE_MB);
    // Again, in a batch with other tasks around it.
    let handles = executor.submit_batch(&chatty, [(10_000_i64,), (200_000,), (1,)]);
    for (handle, n) in handles.into_iter().zip([10_000_i64, 200_000, 1]) {
        let out: HashMap<String, i64> = within(HANG, handle.result()).await.unwrap();
        assert_eq!(out["done"], n);
    }
    assert_pool_works(&executor, 100).await;
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpicklable_results_are_serialization_errors() {
    let executor = start(1).await;
    let first_pid: i64 = within(HANG, executor.submit(&common::pid(), ()).result())
        .await
        .unwrap();
    let cases = [
        ("def f():\n    return lambda x: x\n", "lambda"),
        ("def f():\n    return (i for i in range(3))\n", "generator"),
        (
            "import threading\n\ndef f():\n    return {'lock': threading.Lock()}\n",
            "lock",
        ),
    ];
    for (source, needle) in cases {
        let f = Function::from_source(source, "f");
        let err = within(HANG, executor.submit(&f, ())).await.unwrap_err();
        assert!(err.is_serialization(), "{needle}: {err}");
        assert!(!err.is_system(), "{err}");
        let exception = err.python_exception().expect("the pickling exception");
        let text = format!("{}: {}", exception.type_name, exception.message);
        assert!(text.to_lowercase().contains(needle), "{needle}: {text}");
        assert!(err.to_string().contains("pickle"), "{err}");
    }
    // The worker survived all of that: same process, still working.
    let pid: i64 = within(HANG, executor.submit(&common::pid(), ()).result())
        .await
        .unwrap();
    assert_eq!(
        pid, first_pid,
        "an unpicklable result must not cost the worker"
    );
    assert_pool_works(&executor, 100).await;
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_the_limit_are_refused() {
    let executor = start_with(
        Executor::builder().workers(1),
        PythonConfig::new().max_result_size(1024),
    )
    .await;
    let make = Function::from_source("def make(n):\n    return b'x' * n\n", "make");
    let small: ByteBuf = within(HANG, executor.submit(&make, (100,)).result())
        .await
        .unwrap();
    assert_eq!(small.len(), 100);
    for n in [2_000_usize, 5 << 20] {
        let err = within(HANG, executor.submit(&make, (n,)))
            .await
            .unwrap_err();
        assert!(err.is_result_too_large(), "{n}: {err}");
        assert!(err.to_string().contains("1024"), "{err}");
    }
    // The limit is on results: big arguments still go in.
    let len = Function::from_source("def size(b):\n    return len(b)\n", "size");
    let n: usize = within(
        HANG,
        executor
            .submit(&len, (ByteBuf::from(vec![0_u8; 100_000]),))
            .result(),
    )
    .await
    .unwrap();
    assert_eq!(n, 100_000);
    assert_pool_works(&executor, 10).await;
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_keeps_input_order() {
    let executor = start(2).await;
    let jitter = Function::from_source(
        "import random, time\n\ndef jitter(i):\n    time.sleep(random.random() * 0.004)\n    return i\n",
        "jitter",
    );
    const N: i64 = 300;
    let results: Vec<i64> = within(
        HANG,
        executor
            .map(&jitter, (0..N).map(|i| (i,)), 16)
            .map(|r| r.and_then(|p| p.decode::<i64>()).expect("map item"))
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(results, (0..N).collect::<Vec<_>>());
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_carry_an_ordered_timeline() {
    let executor = start(2).await;
    let work = Function::from_source(
        "import time\n\ndef work(x):\n    time.sleep(0.02)\n    return x * 2\n",
        "work",
    );
    for x in 0..3_i64 {
        let report = within(HANG, executor.submit(&work, (x,)).report()).await;
        assert_eq!(report.result.unwrap().decode::<i64>().unwrap(), x * 2);
        let status = report.status;
        assert_eq!(status.state, TaskState::Succeeded);
        assert_eq!(status.attempts, 1);
        let t = status.timeline;
        let dispatched = t.dispatched.expect("dispatched set");
        let running = t.running.expect("running set");
        let finished = t.finished.expect("finished set");
        assert!(t.submitted <= dispatched, "{t:?}");
        assert!(dispatched <= running, "{t:?}");
        assert!(running <= finished, "{t:?}");
        let ran = finished.duration_since(running).unwrap();
        assert!(ran >= Duration::from_millis(15), "ran {ran:?}: {t:?}");
    }
    // A failed task has a timeline too.
    let boom = Function::from_source("def boom():\n    raise ValueError('no')\n", "boom");
    let report = within(HANG, executor.submit(&boom, ()).report()).await;
    assert!(report.result.unwrap_err().is_python());
    assert_eq!(report.status.state, TaskState::Failed);
    assert!(report.status.timeline.finished.is_some());
    executor.shutdown().await;
}
