//! The JSON data format over HTTP, the way curl or any language uses it: a real
//! `funcx-gateway` process, an endpoint of real Python workers dialling out to it, and plain
//! JSON bodies with plain JSON arguments and results, no base64 pickles. The endpoint allows
//! only JSON, so a pickle submitted over HTTP is refused there before any worker loads it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{
    free_port, register_endpoint, task_when_finished, temp_dir, write_config, GatewayProcess,
};
use funcx_client::EndpointDial;
use funcx_core::{Executor, Format};
use funcx_python::{PythonConfig, PythonRuntime};
use funcx_transport::remote::{run_manager, ExecutorRunner, ManagerConfig, ManagerId, ManagerInfo};
use serde_json::{json, Value};

const TOKEN: &str = "alice-secret-token-0123456789";
const HANG: Duration = Duration::from_secs(60);

async fn post(address: SocketAddr, path: &str, body: Value) -> Value {
    let (status, answer) = common::post_json(address, TOKEN, path, body).await;
    assert!(status.is_success(), "POST {path}: {status} {answer}");
    answer
}

async fn submit(address: SocketAddr, endpoint: &str, task: Value) -> u64 {
    let answer = post(
        address,
        &format!("/v1/endpoints/{endpoint}/tasks"),
        json!({ "tasks": [task] }),
    )
    .await;
    answer["task_ids"][0].as_u64().expect("a task id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_arguments_and_results_travel_as_plain_json_and_pickles_are_refused() {
    let dir = temp_dir("json-http");
    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);
    let _gateway = GatewayProcess::start(&config, address, &dir.join("gateway.log"));
    let (endpoint, endpoint_token) = register_endpoint(address, TOKEN, "json-only").await;

    // The endpoint's executor allows JSON only.
    let local = Executor::builder()
        .workers(1)
        .allowed_formats([Format::Json])
        .start(PythonRuntime::new(PythonConfig::new()));
    let manager = ManagerConfig::new(ManagerInfo {
        id: ManagerId(u64::from(std::process::id()) << 16 | 11),
        block: None,
        host: "localhost".into(),
        pid: std::process::id(),
        slots: 1,
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: Vec::new(),
    });
    let _endpoint = tokio::spawn(run_manager(
        EndpointDial::new(address.to_string(), endpoint.clone(), endpoint_token),
        ExecutorRunner::new(local, 1),
        manager,
    ));

    let function = post(
        address,
        "/v1/functions",
        json!({
            "name": "describe",
            "source": "def describe(x, scale=1):\n    return {'x': x, 'type': type(x).__name__, 'scale': scale}\n"
        }),
    )
    .await;
    let function = function["function_id"].as_str().expect("a function id");

    let values = [
        (json!(42), "int"),
        (json!(-2.5), "float"),
        (json!("héllo"), "str"),
        (json!(null), "NoneType"),
        (json!([1, [2, "three"], null]), "list"),
        (json!({"nested": {"list": [true, 1.5]}}), "dict"),
    ];
    for (value, python_type) in values {
        let id = submit(
            address,
            &endpoint,
            json!({ "function_id": function, "format": "json", "args": [value], "kwargs": {"scale": 3} }),
        )
        .await;
        let view = task_when_finished(address, TOKEN, id, HANG).await;
        assert_eq!(view["state"], "succeeded", "{view}");
        assert_eq!(view["result_format"], "json", "{view}");
        assert_eq!(
            view["result"],
            json!({"x": value, "type": python_type, "scale": 3}),
            "the result is plain JSON: {view}"
        );
    }

    // A pickle whose loading would create a file, sent as base64 the usual way.
    let marker = dir.join("unpickled");
    let script = format!(
        "import base64, pickle, sys\nclass T:\n    def __reduce__(self):\n        return (open, ({:?}, 'w'))\nsys.stdout.write(base64.b64encode(pickle.dumps(T())).decode())\n",
        marker.to_str().expect("a UTF-8 path")
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    let trap = String::from_utf8(output.stdout).expect("base64 text");
    let id = submit(
        address,
        &endpoint,
        json!({ "function_id": function, "args": [trap] }),
    )
    .await;
    let view = task_when_finished(address, TOKEN, id, HANG).await;
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(view["error"]["code"], "format_refused", "{view}");
    // A JSON task after it ran on the same worker: had the pickle reached it, it was loaded.
    let id = submit(
        address,
        &endpoint,
        json!({ "function_id": function, "format": "json", "args": ["after"] }),
    )
    .await;
    assert_eq!(
        task_when_finished(address, TOKEN, id, HANG).await["result"]["x"],
        "after"
    );
    assert!(
        !marker.exists(),
        "the endpoint's worker loaded the refused pickle"
    );

    // A JSON value where a pickle is expected is a clear 400, not a silent misreading.
    let response = reqwest::Client::new()
        .post(format!("http://{address}/v1/endpoints/{endpoint}/tasks"))
        .bearer_auth(TOKEN)
        .json(&json!({ "tasks": [{ "function_id": function, "args": [1] }] }))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let text = response.text().await.expect("a body");
    assert!(text.contains("format"), "{text}");
}
