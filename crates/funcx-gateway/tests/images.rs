//! A function's container image through a gateway: a real `funcx-gateway` process, an
//! endpoint of real Python workers that dials out to it and starts a function's image with
//! real podman, and a remote executor (`funcx_client::connect`) or plain JSON over HTTP
//! registering and submitting. scripts/infra/podman-up.sh builds
//! `localhost/funcx-image-a:latest` and `localhost/funcx-image-b:latest`, each with
//! `/etc/funcx-image` holding its own name (`a`, `b`); this machine has no such file.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{python_endpoint, task_when_finished, GatewayWithEndpoint};
use funcx_client::RemoteConfig;
use funcx_core::{Executor, Function};
use serde_json::{json, Value};

const TOKEN: &str = "alice-secret-token-0123456789";
/// How long a task may take (a container's first start included) before the test fails
/// instead of hanging.
const LIMIT: Duration = Duration::from_secs(120);
const IMAGE_A: &str = "localhost/funcx-image-a:latest";
const IMAGE_B: &str = "localhost/funcx-image-b:latest";
const MISSING: &str = "localhost/funcx-no-such-image:latest";

/// Where it ran: the image's name from its marker file, or `none` on this machine.
const WHERE: &str = r#"
import os

def where(x):
    if os.path.exists("/etc/funcx-image"):
        return [x, open("/etc/funcx-image").read().strip()]
    return [x, "none"]
"#;

fn where_in(image: Option<&str>) -> Function {
    let function = Function::from_source(WHERE, "where");
    match image {
        Some(image) => function.in_image(image),
        None => function,
    }
}

/// A gateway process, and an endpoint of two Python workers connected to it.
async fn setup(name: &str, tag: u64) -> GatewayWithEndpoint {
    GatewayWithEndpoint::start(name, TOKEN, |dial| {
        python_endpoint(dial, tag, Duration::from_millis(200))
    })
    .await
}

async fn remote(setup: &GatewayWithEndpoint) -> Executor {
    RemoteConfig::new(&format!("http://{}", setup.address), TOKEN, &setup.endpoint)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("the remote executor connects")
}

async fn post(address: SocketAddr, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
    common::post_json(address, TOKEN, path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_registered_in_an_image_runs_in_it_through_a_gateway_process() {
    let setup = setup("images-gw", 31).await;
    let executor = remote(&setup).await;
    let (a, b, plain) = (
        where_in(Some(IMAGE_A)),
        where_in(Some(IMAGE_B)),
        where_in(None),
    );
    let handles: Vec<_> = (0..6_i64)
        .map(|i| {
            let (function, expected) = [(&a, "a"), (&b, "b"), (&plain, "none")][i as usize % 3];
            (i, expected, executor.submit(function, (i,)))
        })
        .collect();
    for (i, expected, handle) in handles {
        let (x, ran_in): (i64, String) = tokio::time::timeout(LIMIT, handle.result())
            .await
            .expect("within the limit")
            .unwrap_or_else(|e| panic!("task {i}: {e}"));
        assert_eq!((x, ran_in.as_str()), (i, expected), "task {i}");
    }

    // The gateway registered it under the client's id, image and all.
    let path = format!("/v1/functions/{}", a.id());
    let (_, view) = common::get_json(setup.address, TOKEN, &path).await;
    assert_eq!(view["image"], IMAGE_A, "{view}");
    let path = format!("/v1/functions/{}", plain.id());
    let (_, view) = common::get_json(setup.address, TOKEN, &path).await;
    assert!(view["image"].is_null(), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_in_a_missing_image_fails_typed_through_a_gateway_process() {
    let setup = setup("images-missing", 32).await;
    let executor = remote(&setup).await;
    let doomed = executor.submit(&where_in(Some(MISSING)), (1,));
    let plain = executor.submit(&where_in(None), (2,));
    let error = tokio::time::timeout(LIMIT, doomed.result::<(i64, String)>())
        .await
        .expect("within the limit")
        .expect_err("no worker starts in a missing image");
    assert!(error.is_no_workers(), "{error}");
    assert!(
        error.to_string().contains("funcx-no-such-image"),
        "the error names the image: {error}"
    );
    let ran: (i64, String) = tokio::time::timeout(LIMIT, plain.result())
        .await
        .expect("within the limit")
        .expect("a plain task beside it runs");
    assert_eq!(ran, (2, "none".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_registers_a_function_in_an_image() {
    let setup = setup("images-json", 33).await;
    let register = |image: Value| {
        post(
            setup.address,
            "/v1/functions",
            json!({ "name": "where", "source": WHERE, "image": image }),
        )
    };
    let (status, answer) = register(json!(IMAGE_B)).await;
    assert!(status.is_success(), "{status} {answer}");
    // The id is the one the Rust API computes for the same function in the same image.
    assert_eq!(
        answer["function_id"],
        where_in(Some(IMAGE_B)).id().to_string()
    );
    let path = format!("/v1/endpoints/{}/tasks", setup.endpoint);
    let (status, submitted) = post(
        setup.address,
        &path,
        json!({ "tasks": [{
            "function_id": answer["function_id"], "format": "json", "args": [7]
        }] }),
    )
    .await;
    assert!(status.is_success(), "{status} {submitted}");
    let id = submitted["task_ids"][0].as_u64().expect("a task id");
    let view = task_when_finished(setup.address, TOKEN, id, LIMIT).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    assert_eq!(view["result"], json!([7, "b"]), "{view}");

    // An empty name is no image: refused, not registered as a plain function.
    let (status, answer) = register(json!("  ")).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{answer}");
}
