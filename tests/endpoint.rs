//! `funcx::Endpoint::builder()` on real processes: a local provider starting real
//! `funcx-manager` processes with real Python workers; tasks from this program, and from a
//! gateway the endpoint dials out to.
#![cfg(unix)]

mod common;

use std::time::Duration;

use common::proc::{alive, children};
use common::{init_tracing, manager_binary, wait_until, within, HANG};
use funcx::endpoint::{Endpoint, EndpointState};
use funcx::providers::LocalProvider;
use funcx::{BlockState, Function, PythonConfig, StrategyConfig};

const SLOW: &str =
    "import os, time\n\ndef slow(x):\n    time.sleep(0.3)\n    return (x * 2, os.getpid())\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_blocks_run_tasks_and_stop_leaves_nothing_running() {
    init_tracing();
    let endpoint = Endpoint::builder()
        .name("local-test")
        .provider(LocalProvider::new())
        .manager_program(manager_binary())
        .nodes_per_block(2)
        .workers_per_node(1)
        .python(PythonConfig::new().env("FUNCX_ENDPOINT_TEST", "from-the-builder"))
        .strategy(
            StrategyConfig::new()
                .init_blocks(1)
                .max_blocks(1)
                .period(Duration::from_millis(100)),
        )
        .walltime(Duration::from_secs(600))
        .start()
        .await
        .expect("the endpoint starts");
    assert_eq!(endpoint.state(), EndpointState::Running);

    wait_until(HANG, "two managers registered", || async {
        endpoint.status().strategy.managers == 2
    })
    .await;
    let status = endpoint.status();
    assert_eq!(status.strategy.blocks.len(), 1, "{status:?}");
    let block = &status.strategy.blocks[0];
    assert_eq!(block.state, BlockState::Running, "{status:?}");
    assert_eq!((block.managers, block.workers), (2, 2), "{status:?}");
    assert_eq!(status.strategy.workers, 2);
    assert!(status.gateway.is_none() && status.connected.is_none());

    // The Python settings reach the workers.
    let env = Function::from_source(
        "import os\n\ndef env():\n    return os.environ.get('FUNCX_ENDPOINT_TEST')\n",
        "env",
    );
    let value: Option<String> = within(HANG, endpoint.executor().submit(&env, ()).result())
        .await
        .expect("env task");
    assert_eq!(value.as_deref(), Some("from-the-builder"));

    // Every manager process and its Python worker, to check that stop ends them all.
    let managers: Vec<u32> = endpoint.managers().iter().map(|m| m.pid).collect();
    assert_eq!(managers.len(), 2);
    let workers: Vec<u32> = managers.iter().flat_map(|&m| children(m)).collect();
    assert!(
        workers.len() >= 2,
        "each manager runs a worker: {workers:?}"
    );

    // Tasks in flight when stop is called finish and are delivered.
    let slow = Function::from_source(SLOW, "slow");
    let handles = endpoint
        .executor()
        .submit_batch(&slow, (0..8).map(|i| (i,)));
    wait_until(HANG, "tasks running", || async {
        endpoint.status().strategy.busy_workers > 0
            || endpoint.executor().stats().await.in_flight > 0
    })
    .await;
    let stopping = endpoint.clone();
    let stop = tokio::spawn(async move { stopping.stop().await });
    let mut ran_on = std::collections::HashSet::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let (double, pid): (i64, u32) = within(HANG, handle.result())
            .await
            .unwrap_or_else(|e| panic!("task {i} was lost by the stop: {e}"));
        assert_eq!(double, 2 * i as i64);
        ran_on.insert(pid);
    }
    within(HANG, stop).await.expect("stop");
    assert_eq!(endpoint.state(), EndpointState::Stopped);
    assert!(
        ran_on.iter().all(|pid| workers.contains(pid)),
        "{ran_on:?} vs {workers:?}"
    );

    for pid in managers.iter().chain(&workers) {
        assert!(!alive(*pid), "process {pid} of the endpoint outlived stop");
    }
    let status = endpoint.status();
    assert_eq!(status.state, EndpointState::Stopped);
    assert!(
        status.strategy.blocks.iter().all(|b| b.state.is_finished()),
        "{status:?}"
    );
    let late = endpoint.executor().submit(&slow, (1,)).await;
    assert!(late.unwrap_err().is_shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_cannot_start_is_reported() {
    init_tracing();
    let endpoint = Endpoint::builder()
        .provider(LocalProvider::new())
        .manager_program("/nonexistent/funcx-manager")
        .strategy(
            StrategyConfig::new()
                .init_blocks(1)
                .max_blocks(1)
                .period(Duration::from_millis(50)),
        )
        .start()
        .await
        .expect("the endpoint starts");
    wait_until(HANG, "the failed block reported", || async {
        endpoint.status().strategy.last_error.is_some()
    })
    .await;
    let error = endpoint.status().strategy.last_error.unwrap_or_default();
    assert!(error.contains("/nonexistent/funcx-manager"), "{error}");
    within(HANG, endpoint.stop()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_provider_it_says_so() {
    let error = Endpoint::builder().start().await.unwrap_err();
    assert!(error.to_string().contains("no provider"), "{error}");
}

/// An endpoint configured for JSON only refuses a pickled argument and a pickled function as
/// they enter it, with a typed error, and its real workers never load them; JSON tasks of
/// source-text functions run there as usual, and only the functions of its own allow-list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_only_endpoint_refuses_pickles_before_its_workers_see_them() {
    init_tracing();
    let describe = Function::from_source(
        "def describe(x):\n    return [x, type(x).__name__]\n",
        "describe",
    );
    let endpoint = Endpoint::builder()
        .name("json-only")
        .provider(LocalProvider::new())
        .manager_program(manager_binary())
        .allowed_formats([funcx::Format::Json])
        .allowed_functions([describe.id()])
        .strategy(
            StrategyConfig::new()
                .init_blocks(1)
                .max_blocks(1)
                .period(Duration::from_millis(100)),
        )
        .start()
        .await
        .expect("the endpoint starts");
    let json = |value: serde_json::Value| funcx::Payload::json(&value).expect("json");
    let result = within(
        HANG,
        endpoint.executor().submit(
            &describe,
            funcx::Args::new().payload(json(serde_json::json!({"a": [1, null]}))),
        ),
    )
    .await
    .expect("a JSON task runs");
    assert_eq!(result.format(), funcx::Format::Json);
    assert_eq!(
        result.decode::<serde_json::Value>().expect("json"),
        serde_json::json!([{"a": [1, null]}, "dict"])
    );

    // Pickles whose loading would create a file.
    let dir = common::TempDir::new("json-only");
    let trap = |marker: &str| {
        let script = format!(
            "import pickle, sys\nclass T:\n    def __reduce__(self):\n        return (open, ({marker:?}, 'w'))\nsys.stdout.buffer.write(pickle.dumps(T()))\n"
        );
        let output = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 runs");
        assert!(output.status.success(), "{output:?}");
        output.stdout
    };
    let argument_marker = dir.join("argument-loaded");
    let error = within(
        HANG,
        endpoint.executor().submit(
            &describe,
            funcx::Args::new().payload(funcx::Payload::from_pickled(trap(&argument_marker))),
        ),
    )
    .await
    .expect_err("a pickled argument is refused");
    assert!(error.is_format_refused(), "{error}");
    let function_marker = dir.join("function-loaded");
    let pickled = Function::from_pickle(trap(&function_marker), "trap");
    let error = within(
        HANG,
        endpoint.executor().submit(
            &pickled,
            funcx::Args::new().payload(json(serde_json::json!(1))),
        ),
    )
    .await
    .expect_err("a pickled function is refused");
    assert!(error.is_format_refused(), "{error}");

    // A JSON task after them ran on the same worker, which therefore had its chance to load
    // them had they been sent.
    let again = within(
        HANG,
        endpoint.executor().submit(
            &describe,
            funcx::Args::new().payload(json(serde_json::json!("x"))),
        ),
    )
    .await
    .expect("still running");
    assert_eq!(again.decode::<serde_json::Value>().expect("json")[0], "x");
    assert!(!std::path::Path::new(&argument_marker).exists());
    assert!(!std::path::Path::new(&function_marker).exists());

    // Its own allow-list: a source-text function not on it is refused too.
    let other = Function::from_source("def other(x):\n    return x\n", "other");
    let error = within(
        HANG,
        endpoint.executor().submit(
            &other,
            funcx::Args::new().payload(json(serde_json::json!(1))),
        ),
    )
    .await
    .expect_err("not on the endpoint's allow-list");
    assert!(error.is_function_refused(), "{error}");
    endpoint.stop().await;
}
