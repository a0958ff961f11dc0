//! Per-task resources through a gateway: a real `funcx-gateway` process, an endpoint of four
//! real Python workers on a machine of four cores and two (named) GPUs that dials out to it,
//! and a remote executor (`funcx_client::connect`) or plain JSON over HTTP submitting. What
//! a task asks for travels with it to the endpoint, which never oversubscribes its machine;
//! what could never fit there fails at once.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{task_when_finished, GatewayWithEndpoint};
use funcx_client::RemoteConfig;
use funcx_core::{Executor, Function, TaskError, TaskOptions};
use funcx_python::{PythonConfig, PythonRuntime};
use funcx_transport::remote::{run_manager, ExecutorRunner, ManagerConfig, ManagerId, ManagerInfo};
use serde_json::{json, Value};

const TOKEN: &str = "alice-secret-token-0123456789";
/// How long a batch of tasks may take before the test fails instead of hanging.
const HANG: Duration = Duration::from_secs(120);
/// How soon a task that can never fit must fail.
const AT_ONCE: Duration = Duration::from_secs(15);
/// The endpoint's machine: four workers, so four cores, and two GPUs.
const WORKERS: usize = 4;
const GPUS: [&str; 2] = ["0", "1"];

/// Holds what it was given for `seconds`, and reports when it ran and which devices it saw.
const HOLD: &str = r#"
import os, time

def hold(seconds):
    start = time.time()
    time.sleep(seconds)
    return [start, time.time(), os.environ.get("CUDA_VISIBLE_DEVICES")]
"#;

type Record = (f64, f64, Option<String>);

/// A gateway process, and an endpoint of [`WORKERS`] workers and [`GPUS`] connected to it.
async fn setup(name: &str, tag: u64) -> GatewayWithEndpoint {
    GatewayWithEndpoint::start(name, TOKEN, |dial| {
        let local = Executor::builder()
            .workers(WORKERS)
            .gpus(GPUS)
            .start(PythonRuntime::new(PythonConfig::new()));
        let mut config = ManagerConfig::new(ManagerInfo {
            id: ManagerId(u64::from(std::process::id()) << 16 | tag),
            block: None,
            host: "localhost".into(),
            pid: std::process::id(),
            slots: WORKERS as u32,
            gpus: GPUS.iter().map(|gpu| (*gpu).to_owned()).collect(),
            cores: None,
            memory: None,
            nodes: Vec::new(),
        });
        config.max_backoff = Duration::from_millis(200);
        tokio::spawn(run_manager(
            dial,
            ExecutorRunner::new(local, WORKERS),
            config,
        ))
    })
    .await
}

/// Runs one `hold` task per option set, all submitted at once; returns what each recorded.
async fn run_all(executor: &Executor, options: &[TaskOptions], seconds: f64) -> Vec<Record> {
    let hold = Function::from_source(HOLD, "hold");
    let handles: Vec<_> = options
        .iter()
        .map(|o| executor.submit_with(&hold, (seconds,), *o))
        .collect();
    let all = async {
        let mut records = Vec::new();
        for handle in handles {
            records.push(
                handle
                    .result::<Record>()
                    .await
                    .expect("a task that fits runs"),
            );
        }
        records
    };
    tokio::time::timeout(HANG, all)
        .await
        .expect("the tasks finish within the bound")
}

/// The most tasks of `records` running at the same instant (intervals are [start, end): a
/// task given what another freed starts after that one ended).
fn most_at_once(records: &[Record]) -> usize {
    records
        .iter()
        .map(|(start, _, _)| {
            records
                .iter()
                .filter(|(s, e, _)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn refused(executor: &Executor, options: TaskOptions) -> TaskError {
    let hold = Function::from_source(HOLD, "hold");
    tokio::time::timeout(AT_ONCE, executor.submit_with(&hold, (0.0,), options))
        .await
        .expect("refused at once, not queued")
        .expect_err("the task can never fit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resources_travel_through_the_gateway_and_the_endpoint_places_them() {
    let setup = setup("resources-gw", 21).await;
    let executor = RemoteConfig::new(&format!("http://{}", setup.address), TOKEN, &setup.endpoint)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("the remote executor connects");

    // Two cores each on four: at most two at once, and two did run at once.
    let records = run_all(&executor, &[TaskOptions::new().cores(2); 6], 1.0).await;
    let most = most_at_once(&records);
    assert!(
        most <= 2,
        "{most} two-core tasks at once on four cores: {records:?}"
    );
    assert!(most == 2, "the machine was not shared: {records:?}");

    // One GPU each on two: each sees only its own device, and no two running share one.
    let records = run_all(&executor, &[TaskOptions::new().gpus(1); 4], 0.5).await;
    for (i, (start, _, device)) in records.iter().enumerate() {
        let device = device.as_deref().unwrap_or_default();
        assert!(
            GPUS.contains(&device),
            "task {i} saw {device:?}: {records:?}"
        );
        for (j, (s, e, other)) in records.iter().enumerate() {
            if i != j && s <= start && start < e {
                assert_ne!(
                    Some(device),
                    other.as_deref(),
                    "two running tasks shared a GPU: {records:?}"
                );
            }
        }
    }
    let both = run_all(&executor, &[TaskOptions::new().gpus(2)], 0.0).await;
    assert_eq!(both[0].2.as_deref(), Some("0,1"));

    // More than the endpoint's machine has: refused at once, by name.
    let error = refused(&executor, TaskOptions::new().cores(8)).await;
    assert!(error.is_unsatisfiable(), "{error}");
    assert!(error.to_string().contains("8 cores"), "{error}");
    let error = refused(&executor, TaskOptions::new().gpus(3)).await;
    assert!(error.is_unsatisfiable(), "{error}");
    assert!(error.to_string().contains("3 GPUs"), "{error}");

    // Plain tasks are as they were: four at once on four workers.
    let records = run_all(&executor, &[TaskOptions::new(); 4], 1.0).await;
    assert!(
        most_at_once(&records) > 2,
        "plain tasks were held back: {records:?}"
    );
}

async fn post(address: SocketAddr, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
    common::post_json(address, TOKEN, path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_takes_resources() {
    let setup = setup("resources-json", 22).await;
    let (status, function) = post(
        setup.address,
        "/v1/functions",
        json!({ "name": "hold", "source": HOLD }),
    )
    .await;
    assert!(status.is_success(), "{status} {function}");
    let function = function["function_id"].as_str().expect("a function id");
    let path = format!("/v1/endpoints/{}/tasks", setup.endpoint);
    let submit = |resources: Value| {
        post(
            setup.address,
            &path,
            json!({ "tasks": [{
                "function_id": function, "format": "json", "args": [0.0], "resources": resources
            }] }),
        )
    };

    // A GPU asked for in JSON is given: the task sees it.
    let (status, answer) = submit(json!({ "gpus": 1, "memory": 1024 })).await;
    assert!(status.is_success(), "{status} {answer}");
    let view = task_when_finished(
        setup.address,
        TOKEN,
        answer["task_ids"][0].as_u64().expect("an id"),
        HANG,
    )
    .await;
    assert_eq!(view["state"], "succeeded", "{view}");
    let device = view["result"][2].as_str().unwrap_or_default();
    assert!(GPUS.contains(&device), "{view}");

    // More cores than the endpoint has: the task fails, with its stable code.
    let (status, answer) = submit(json!({ "cores": 64 })).await;
    assert!(status.is_success(), "{status} {answer}");
    let view = task_when_finished(
        setup.address,
        TOKEN,
        answer["task_ids"][0].as_u64().expect("an id"),
        HANG,
    )
    .await;
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(view["error"]["code"], "unsatisfiable", "{view}");

    // A misspelt field is a 400 that names it, not a plain task.
    let (status, answer) = submit(json!({ "gpu": 1 })).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("gpu"), "{answer}");
}
