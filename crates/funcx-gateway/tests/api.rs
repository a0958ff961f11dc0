//! The HTTP API over real HTTP on loopback, with in-process endpoints that dial in through
//! the upgrade route.

mod common;

use std::collections::HashSet;

use common::*;
use funcx_client::EndpointDial;
use funcx_gateway::RateLimitConfig;
use funcx_transport::remote::Dial;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_on_a_connected_endpoint_and_results_come_back_three_ways() {
    let gw = start(config()).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, token) = gw
        .register_endpoint(ALICE, json!({ "name": "laptop" }))
        .await;

    // Tasks submitted before the endpoint connects wait for it.
    let (status, early) = gw.submit(ALICE, &endpoint, &function, &[1, 2, 3]).await;
    assert_eq!(status, StatusCode::OK, "{early}");
    let early = ids(&early);
    let (_, view) = gw.get(&format!("/v1/tasks/{}", early[0]), ALICE).await;
    assert_eq!(view["state"], "queued");
    let (_, listed) = gw.get("/v1/endpoints", ALICE).await;
    assert_eq!(listed[0]["status"]["connected"], false);
    assert_eq!(listed[0]["status"]["queued"], 3);

    // Open the result stream first, then connect the endpoint.
    let mut events = gw
        .http
        .get(gw.url("/v1/results"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let _endpoint = gw.connect(&endpoint, &token);

    for (id, expected) in early.iter().zip([1, 2, 3]) {
        let view = gw.wait(ALICE, *id).await;
        assert_eq!(view["state"], "succeeded", "{view}");
        assert_eq!(unpickled(&view), expected);
        assert!(view["error"].is_null());
    }

    // A batch submitted while connected, read back with one batch call.
    let (status, batch) = gw
        .submit(ALICE, &endpoint, &function, &[10, 20, 30, 40])
        .await;
    assert_eq!(status, StatusCode::OK);
    let batch = ids(&batch);
    for id in &batch {
        gw.wait(ALICE, *id).await;
    }
    let (status, read) = gw
        .post(
            "/v1/tasks/batch",
            ALICE,
            json!({ "ids": [batch[0], batch[3], 999_999] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(unpickled(&read["tasks"][1]), 40);
    assert_eq!(read["not_found"], json!([999_999]));

    // Every one of the seven results arrived as a server-sent event.
    let mut seen = HashSet::new();
    let mut buffer = String::new();
    while seen.len() < 7 {
        let chunk = tokio::time::timeout(TIMEOUT, events.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        for view in result_events(&mut buffer) {
            assert_eq!(view["state"], "succeeded");
            seen.insert(view["id"].as_u64().unwrap());
        }
    }
    let expected: HashSet<u64> = early.iter().chain(&batch).copied().collect();
    assert_eq!(seen, expected);

    // The endpoint shows as connected with its slots.
    let (_, view) = gw.get(&format!("/v1/endpoints/{endpoint}"), ALICE).await;
    assert_eq!(view["status"]["connected"], true, "{view}");
    assert_eq!(view["status"]["workers"], 4);
    assert_eq!(view["status"]["managers"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postcard_bodies_on_the_submit_and_result_routes() {
    use funcx_client::model::{Blob, SubmitRequest, SubmitResponse, SubmitTask, TaskView};
    let gw = start(config()).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let _endpoint = gw.connect(&endpoint, &token);
    let request = SubmitRequest {
        tasks: vec![SubmitTask {
            function_id: function,
            args: vec![Blob(
                funcx_core::Payload::pickle(&5_i64)
                    .unwrap()
                    .as_bytes()
                    .to_vec(),
            )],
            kwargs: Default::default(),
            timeout_ms: Some(10_000),
            format: funcx_core::Format::Pickle,
            resources: None,
        }],
    };
    let response = gw
        .http
        .post(gw.url(&format!("/v1/endpoints/{endpoint}/tasks")))
        .bearer_auth(ALICE)
        .header("content-type", funcx_client::model::POSTCARD)
        .body(postcard::to_stdvec(&request).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        funcx_client::model::POSTCARD
    );
    let submitted: SubmitResponse = postcard::from_bytes(&response.bytes().await.unwrap()).unwrap();
    let id = submitted.task_ids[0];
    gw.wait(ALICE, id).await;
    let response = gw
        .http
        .get(gw.url(&format!("/v1/tasks/{id}")))
        .bearer_auth(ALICE)
        .header("accept", funcx_client::model::POSTCARD)
        .send()
        .await
        .unwrap();
    let view: TaskView = postcard::from_bytes(&response.bytes().await.unwrap()).unwrap();
    let value: i64 = funcx_core::Payload::from_pickled(view.result.unwrap().0)
        .decode()
        .unwrap();
    assert_eq!(value, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_result_stream_sends_frames_of_the_callers_results() {
    use funcx_client::model::ResultFrame;
    let gw = start(config()).await;
    let alice_function = gw.echo_function(ALICE).await;
    let bob_function = gw.echo_function(BOB).await;
    let (alice_endpoint, alice_token) = gw.register_endpoint(ALICE, json!({ "name": "a" })).await;
    let (bob_endpoint, bob_token) = gw.register_endpoint(BOB, json!({ "name": "b" })).await;

    let mut stream = gw
        .http
        .get(gw.url("/v1/results"))
        .bearer_auth(ALICE)
        .header("accept", funcx_client::model::POSTCARD)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(
        stream.headers()["content-type"],
        funcx_client::model::POSTCARD
    );

    // Bob's results finish while Alice's stream is open; they must not reach her.
    let _bob = gw.connect(&bob_endpoint, &bob_token);
    let (status, bob_tasks) = gw.submit(BOB, &bob_endpoint, &bob_function, &[7, 8]).await;
    assert_eq!(status, StatusCode::OK, "{bob_tasks}");
    let bob_tasks = ids(&bob_tasks);
    for id in &bob_tasks {
        gw.wait(BOB, *id).await;
    }
    let (status, alice_tasks) = gw
        .submit(ALICE, &alice_endpoint, &alice_function, &[1, 2, 3, 4, 5, 6])
        .await;
    assert_eq!(status, StatusCode::OK, "{alice_tasks}");
    let alice_tasks = ids(&alice_tasks);
    let _alice = gw.connect(&alice_endpoint, &alice_token);

    let mut seen = std::collections::HashMap::new();
    let mut buffer = Vec::new();
    let mut frames = 0;
    while seen.len() < alice_tasks.len() {
        let chunk = tokio::time::timeout(TIMEOUT, stream.chunk())
            .await
            .expect("frames in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.extend_from_slice(&chunk);
        while buffer.len() >= 4 {
            let length = u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize;
            if buffer.len() < 4 + length {
                break;
            }
            let frame: ResultFrame = postcard::from_bytes(&buffer[4..4 + length]).unwrap();
            buffer.drain(..4 + length);
            frames += 1;
            assert_eq!(frame.lagged, 0);
            for view in frame.results {
                assert!(
                    !bob_tasks.contains(&view.id),
                    "Bob's task {} reached Alice",
                    view.id
                );
                let value: i64 = funcx_core::Payload::from_pickled(view.result.unwrap().0)
                    .decode()
                    .unwrap();
                seen.insert(view.id, value);
            }
        }
    }
    assert!(frames >= 1);
    let expected: std::collections::HashMap<u64, i64> = alice_tasks
        .iter()
        .copied()
        .zip([1, 2, 3, 4, 5, 6])
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_and_checked() {
    let gw = start(config()).await;
    let (status, body) = gw.call(Method::GET, "/v1/endpoints", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = gw.get("/v1/endpoints", "not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = gw
        .http
        .get(gw.url("/v1/endpoints"))
        .header("authorization", "Basic YWxpY2U6eA==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Health needs nothing.
    let (status, body) = gw.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");

    // Endpoints present their own token; a user token or a wrong one is refused.
    let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    for wrong in [ALICE, "wrong"] {
        let error = EndpointDial::new(gw.addr.to_string(), &endpoint, wrong)
            .dial()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("401"), "{error}");
    }
    let error = EndpointDial::new(gw.addr.to_string(), "no-such-endpoint", &token)
        .dial()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
    // The right token without the upgrade headers: 426.
    let (status, body) = gw
        .get(&format!("/v1/endpoints/{endpoint}/connect"), &token)
        .await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED, "{body}");
    assert!(EndpointDial::new(gw.addr.to_string(), &endpoint, &token)
        .dial()
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_and_what_is_shared() {
    let gw = start(config()).await;
    let private = gw.echo_function(ALICE).await;
    let public = gw
        .register_function(
            ALICE,
            json!({ "name": "pub", "source": "def pub(x):\n    return x\n", "public": true }),
        )
        .await;
    let shared = gw
        .register_function(
            ALICE,
            json!({ "name": "sh", "source": "def sh(x):\n    return x\n", "shared_with": ["carol"] }),
        )
        .await;

    // Functions: private → 404 for others; public → everyone; shared → the named user.
    let (status, _) = gw.get(&format!("/v1/functions/{private}"), BOB).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, view) = gw.get(&format!("/v1/functions/{public}"), BOB).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["source"], "def pub(x):\n    return x\n");
    let (status, _) = gw.get(&format!("/v1/functions/{shared}"), CAROL).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = gw.get(&format!("/v1/functions/{shared}"), BOB).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Deleting: someone else's visible function → 403, invisible → 404.
    let (status, _) = gw
        .call(
            Method::DELETE,
            &format!("/v1/functions/{public}"),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = gw
        .call(
            Method::DELETE,
            &format!("/v1/functions/{private}"),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Endpoints: Alice's private one is invisible to Bob, reads and submissions alike.
    let (mine, mine_token) = gw.register_endpoint(ALICE, json!({ "name": "mine" })).await;
    let _connected = gw.connect(&mine, &mine_token);
    let (status, _) = gw.get(&format!("/v1/endpoints/{mine}"), BOB).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw.submit(BOB, &mine, &public, &[1]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, bobs) = gw.get("/v1/endpoints", BOB).await;
    assert_eq!(bobs, json!([]));

    // Alice's tasks are invisible to Bob.
    let (_, submitted) = gw.submit(ALICE, &mine, &private, &[7]).await;
    let task = ids(&submitted)[0];
    for (method, path) in [
        (Method::GET, format!("/v1/tasks/{task}")),
        (Method::POST, format!("/v1/tasks/{task}/cancel")),
        (Method::DELETE, format!("/v1/tasks/{task}")),
    ] {
        let (status, body) = gw.call(method, &path, Some(BOB), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (_, read) = gw
        .post("/v1/tasks/batch", BOB, json!({ "ids": [task] }))
        .await;
    assert_eq!(read["not_found"], json!([task]));
    assert_eq!(unpickled(&gw.wait(ALICE, task).await), 7);

    // A shared endpoint limited to one function: Bob may submit that function only, and
    // only functions he can see.
    let (limited, limited_token) = gw
        .register_endpoint(
            ALICE,
            json!({ "name": "limited", "allowed_users": ["bob"], "allowed_functions": [public] }),
        )
        .await;
    let _connected = gw.connect(&limited, &limited_token);
    let (status, view) = gw.get(&format!("/v1/endpoints/{limited}"), BOB).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let (status, submitted) = gw.submit(BOB, &limited, &public, &[3]).await;
    assert_eq!(status, StatusCode::OK, "{submitted}");
    assert_eq!(unpickled(&gw.wait(BOB, ids(&submitted)[0]).await), 3);
    let bobs_own = gw
        .register_function(
            BOB,
            json!({ "name": "b", "source": "def b(x):\n    return x\n" }),
        )
        .await;
    let (status, body) = gw.submit(BOB, &limited, &bobs_own, &[3]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = gw.submit(BOB, &limited, &shared, &[3]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Registering the same code as someone else gives the same id and a record of one's own.
    assert_eq!(gw.echo_function(BOB).await, private);
    let (status, view) = gw.get(&format!("/v1/functions/{private}"), BOB).await;
    assert_eq!((status, &view["owner"]), (StatusCode::OK, &json!("bob")));
    // Carol is not among the allowed users.
    let (status, _) = gw.submit(CAROL, &limited, &public, &[3]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_size_limits_answer_429_and_413() {
    let mut config = config();
    config.rate_limit = Some(RateLimitConfig {
        per_second: 0.2,
        burst: 3,
    });
    config.max_body_bytes = 1024;
    let gw = start(config).await;
    for _ in 0..3 {
        let (status, _) = gw.get("/v1/endpoints", ALICE).await;
        assert_eq!(status, StatusCode::OK);
    }
    let response = gw
        .http
        .get(gw.url("/v1/endpoints"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another user has a bucket of its own.
    let big = "x".repeat(2000);
    let (status, body) = gw
        .post("/v1/functions", BOB, json!({ "name": "f", "source": big }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1024"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_clear_4xx() {
    let gw = start(config()).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, _) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let raw = |path: &str, content_type: &str, body: &'static str| {
        gw.http
            .post(gw.url(path))
            .bearer_auth(ALICE)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases = [
        ("/v1/functions", "application/json", "{not json", 400),
        (
            "/v1/functions",
            "application/json",
            "{\"name\": 5, \"source\": \"x\"}",
            400,
        ),
        (
            "/v1/functions",
            "application/json",
            "{\"name\": \"f\"}",
            400,
        ),
        (
            "/v1/functions",
            "application/json",
            "{\"name\": \"f\", \"source\": \"x\", \"pickle\": \"AA==\"}",
            400,
        ),
        ("/v1/functions", "application/json", "[]", 400),
        ("/v1/functions", "text/plain", "hello", 415),
        (
            "/v1/functions",
            "application/x-postcard",
            "\u{ff}\u{ff}",
            400,
        ),
        (
            "/v1/endpoints",
            "application/json",
            "{\"name\": \"e\", \"allowed_functions\": [\"zz\"]}",
            400,
        ),
        (
            "/v1/tasks/batch",
            "application/json",
            "{\"ids\": [\"one\"]}",
            400,
        ),
        (
            "/v1/tasks/batch",
            "application/json",
            "{\"ids\": [-1]}",
            400,
        ),
    ];
    for (path, content_type, body, expected) in cases {
        let response = raw(path, content_type, body).await.unwrap();
        let status = response.status().as_u16();
        let value: Value = response.json().await.unwrap();
        assert_eq!(status, expected, "{path} {body}: {value}");
        assert!(!value["error"]["message"].as_str().unwrap().is_empty());
    }

    let submit = format!("/v1/endpoints/{endpoint}/tasks");
    let bad_submissions = [
        (
            json!({ "tasks": [{ "function_id": function, "args": ["not base64!"] }] }),
            400,
            "invalid base64",
        ),
        (
            json!({ "tasks": [{ "function_id": "abc" }] }),
            400,
            "function id",
        ),
        (json!({ "tasks": [] }), 400, "no tasks"),
        (
            json!({ "tasks": [{ "function_id": "0".repeat(64) }] }),
            404,
            "no function",
        ),
        (
            json!({ "tasks": [{ "function_id": function, "timeout_ms": "soon" }] }),
            400,
            "invalid type",
        ),
        (json!({ "nothing": true }), 400, "tasks"),
    ];
    for (body, expected, phrase) in bad_submissions {
        let (status, value) = gw.post(&submit, ALICE, body.clone()).await;
        assert_eq!(status.as_u16(), expected, "{body}: {value}");
        let message = value["error"]["message"].as_str().unwrap();
        assert!(message.contains(phrase), "{body}: {message}");
    }

    let reads = [
        (Method::GET, "/v1/tasks/12345".to_string(), 404),
        (Method::GET, "/v1/tasks/not-a-number".to_string(), 400),
        (
            Method::GET,
            "/v1/tasks/99999999999999999999999".to_string(),
            400,
        ),
        (Method::POST, "/v1/tasks/12345/cancel".to_string(), 404),
        (Method::DELETE, "/v1/tasks/12345".to_string(), 404),
        (Method::GET, "/v1/functions/xyz".to_string(), 400),
        (
            Method::GET,
            format!("/v1/functions/{}", "0".repeat(64)),
            404,
        ),
        (Method::GET, "/v1/endpoints/unknown".to_string(), 404),
        (Method::POST, "/v1/endpoints/unknown/tasks".to_string(), 404),
        (Method::GET, "/v1/nothing-here".to_string(), 404),
        (Method::PUT, "/v1/functions".to_string(), 405),
    ];
    for (method, path, expected) in reads {
        let body = (method == Method::POST).then(|| json!({ "tasks": [] }));
        let (status, value) = gw.call(method.clone(), &path, Some(ALICE), body).await;
        assert_eq!(status.as_u16(), expected, "{method} {path}: {value}");
        assert!(
            value["error"]["code"].is_string(),
            "{method} {path}: {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_delete_tasks() {
    let mut config = config();
    config.delete_after_fetch = true;
    let gw = start(config).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    // Not connected: the tasks wait, and can be cancelled while they do.
    let (_, submitted) = gw.submit(ALICE, &endpoint, &function, &[1, 2]).await;
    let submitted = ids(&submitted);
    let (status, view) = gw
        .call(
            Method::POST,
            &format!("/v1/tasks/{}/cancel", submitted[0]),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{view}");
    let view = gw.wait(ALICE, submitted[0]).await;
    assert_eq!(view["state"], "failed");
    assert_eq!(view["error"]["code"], "cancelled");
    assert_eq!(view["error"]["message"], "task was cancelled");
    assert!(view["error_message"].as_str().unwrap().contains("cancel"));
    // Fetched once with delete-after-fetch: gone.
    let (status, _) = gw.get(&format!("/v1/tasks/{}", submitted[0]), ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = gw
        .call(
            Method::DELETE,
            &format!("/v1/tasks/{}", submitted[1]),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = gw.get(&format!("/v1/tasks/{}", submitted[1]), ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nothing of the deleted tasks comes back when the endpoint connects.
    let _endpoint = gw.connect(&endpoint, &token);
    let (_, submitted) = gw.submit(ALICE, &endpoint, &function, &[3]).await;
    assert_eq!(unpickled(&gw.wait(ALICE, ids(&submitted)[0]).await), 3);
}

/// Every route of the OpenAPI document is served (and the router is built from the same
/// list, so nothing is served that the document lacks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let gw = start(config()).await;
    let (status, document) = gw.get("/v1/openapi.json", ALICE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.0.3");
    // The task error codes the document lists are exactly the stable codes.
    let codes: Vec<&str> = document["components"]["schemas"]["TaskView"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("the error codes are listed")
        .iter()
        .map(|code| code.as_str().expect("a code is a string"))
        .collect();
    let stable: Vec<&str> = funcx_core::ErrorCode::ALL
        .iter()
        .map(|code| code.as_str())
        .collect();
    assert_eq!(codes, stable);
    let paths = document["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    operations.sort();
    let expected = [
        ("DELETE", "/v1/admin/users/{id}"),
        ("DELETE", "/v1/endpoints/{id}"),
        ("DELETE", "/v1/endpoints/{id}/token"),
        ("DELETE", "/v1/functions/{id}"),
        ("DELETE", "/v1/tasks/{id}"),
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/v1/admin/users"),
        ("GET", "/v1/endpoints"),
        ("GET", "/v1/endpoints/{id}"),
        ("GET", "/v1/endpoints/{id}/connect"),
        ("GET", "/v1/functions/{id}"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/results"),
        ("GET", "/v1/tasks"),
        ("GET", "/v1/tasks/{id}"),
        ("POST", "/v1/admin/users"),
        ("POST", "/v1/admin/users/{id}/token"),
        ("POST", "/v1/endpoints"),
        ("POST", "/v1/endpoints/{id}/stop"),
        ("POST", "/v1/endpoints/{id}/tasks"),
        ("POST", "/v1/endpoints/{id}/token"),
        ("POST", "/v1/functions"),
        ("POST", "/v1/tasks/batch"),
        ("POST", "/v1/tasks/{id}/cancel"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(operations, expected);
    for (method, path) in operations {
        if path == "/v1/results" {
            continue; // a stream that stays open; served, as the functional test shows
        }
        let concrete = path.replace("{id}", "1");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = gw
            .http
            .request(method.clone(), gw.url(&concrete))
            .bearer_auth(ALICE)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(body["error"]["code"], "no_route", "{method} {path}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(!status.is_server_error(), "{method} {path}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    let gw = start(config()).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let _endpoint = gw.connect(&endpoint, &token);
    let (_, submitted) = gw.submit(ALICE, &endpoint, &function, &[1, 2]).await;
    for id in ids(&submitted) {
        gw.wait(ALICE, id).await;
    }
    let response = gw
        .http
        .get(gw.url("/metrics"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        samples.insert(name.to_string(), value);
    }
    assert_eq!(samples["funcx_gateway_tasks_submitted_total"], 2.0);
    assert_eq!(
        samples["funcx_gateway_tasks_finished_total{state=\"succeeded\"}"],
        2.0
    );
    assert_eq!(samples["funcx_gateway_task_latency_seconds_count"], 2.0);
    assert_eq!(
        samples["funcx_gateway_task_latency_seconds_bucket{le=\"+Inf\"}"],
        2.0
    );
    assert_eq!(samples["funcx_gateway_endpoints_connected"], 1.0);
    assert_eq!(samples["funcx_gateway_workers"], 4.0);
}

/// An endpoint that drops its connection and comes back keeps its tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_an_endpoint_reconnecting() {
    let gw = start(config()).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let first = gw.connect(&endpoint, &token);
    let (_, submitted) = gw.submit(ALICE, &endpoint, &function, &[1]).await;
    gw.wait(ALICE, ids(&submitted)[0]).await;
    first.abort();
    // Gone: its connection is closed.
    let _ = tokio::time::timeout(TIMEOUT, first)
        .await
        .expect("the endpoint stops");
    let (_, submitted) = gw.submit(ALICE, &endpoint, &function, &[2, 3]).await;
    let _second = gw.connect(&endpoint, &token);
    for (id, expected) in ids(&submitted).into_iter().zip([2, 3]) {
        assert_eq!(unpickled(&gw.wait(ALICE, id).await), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_submission_with_its_idempotency_key_creates_nothing() {
    let gw = start(config()).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, _token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let path = format!("/v1/endpoints/{endpoint}/tasks");
    let body = |values: &[i64]| {
        let tasks: Vec<_> = values
            .iter()
            .map(|v| json!({ "function_id": function, "args": [pickled(*v)] }))
            .collect();
        json!({ "tasks": tasks })
    };
    let send = |key: &'static str, token: &'static str, body: serde_json::Value| {
        gw.http
            .post(gw.url(&path))
            .bearer_auth(token)
            .header(funcx_client::model::IDEMPOTENCY_KEY, key)
            .json(&body)
            .send()
    };

    let first = send("batch-0001", ALICE, body(&[1, 2, 3])).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first
        .headers()
        .get(funcx_client::model::IDEMPOTENT_REPLAYED)
        .is_none());
    let first = ids(&first.json().await.unwrap());
    assert_eq!(first.len(), 3);

    // The same request again: the same ids, marked as a replay, nothing new queued.
    let again = send("batch-0001", ALICE, body(&[1, 2, 3])).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        again.headers()[funcx_client::model::IDEMPOTENT_REPLAYED],
        "true"
    );
    assert_eq!(ids(&again.json().await.unwrap()), first);
    let (_, view) = gw.get(&format!("/v1/endpoints/{endpoint}"), ALICE).await;
    assert_eq!(view["status"]["queued"], 3, "{view}");
    let (_, metrics) = gw.call(Method::GET, "/metrics", Some(ALICE), None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("funcx_gateway_tasks_submitted_total 3"),
        "{metrics}"
    );

    // The same key with another body is the client's mistake: 409, with the reason.
    let (status, error) = {
        let response = send("batch-0001", ALICE, body(&[1, 2, 4])).await.unwrap();
        (
            response.status(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["error"]["code"], "conflict");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch-0001"),
        "{error}"
    );

    // Keys are per user: bob's "batch-0001" is his own (bob may not see alice's endpoint,
    // so give him one).
    let (bobs_endpoint, _) = gw.register_endpoint(BOB, json!({ "name": "b" })).await;
    let bob_function = gw.echo_function(BOB).await;
    let response = gw
        .http
        .post(gw.url(&format!("/v1/endpoints/{bobs_endpoint}/tasks")))
        .bearer_auth(BOB)
        .header(funcx_client::model::IDEMPOTENCY_KEY, "batch-0001")
        .json(&json!({ "tasks": [{ "function_id": bob_function, "args": [pickled(1)] }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bobs = ids(&response.json().await.unwrap());
    assert!(bobs.iter().all(|id| !first.contains(id)));

    // A key that cannot be one is refused before anything is stored.
    for bad in ["", &"k".repeat(257), "with space"] {
        let response = gw
            .http
            .post(gw.url(&path))
            .bearer_auth(ALICE)
            .header(funcx_client::model::IDEMPOTENCY_KEY, bad)
            .json(&body(&[5]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
    }
    let (_, view) = gw.get(&format!("/v1/endpoints/{endpoint}"), ALICE).await;
    assert_eq!(view["status"]["queued"], 3, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_lists_its_own_tasks_newest_first_a_page_at_a_time() {
    let gw = start(config()).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let (_, first) = gw.submit(ALICE, &endpoint, &function, &[1, 2, 3]).await;
    let first = ids(&first);
    // Bob's function and endpoint: his tasks are not Alice's to see.
    let bobs_function = gw.echo_function(BOB).await;
    let (bobs_endpoint, _) = gw.register_endpoint(BOB, json!({ "name": "b" })).await;
    let (status, bobs) = gw.submit(BOB, &bobs_endpoint, &bobs_function, &[9]).await;
    assert_eq!(status, StatusCode::OK, "{bobs}");
    let (_, second) = gw.submit(ALICE, &endpoint, &function, &[4, 5]).await;
    let second = ids(&second);

    let (status, page) = gw.get("/v1/tasks?limit=3", ALICE).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed = |page: &Value| -> Vec<u64> {
        page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(listed(&page), vec![second[1], second[0], first[2]]);
    assert_eq!(page["next"], first[2]);
    let task = &page["tasks"][0];
    assert_eq!(task["state"], "queued", "{task}");
    assert_eq!(task["endpoint_id"], endpoint.as_str());
    assert_eq!(task["function_id"], function.as_str());
    assert!(task["error_code"].is_null());
    assert!(task.get("result").is_none(), "a list carries no results");
    let (_, rest) = gw
        .get(&format!("/v1/tasks?limit=3&before={}", first[2]), ALICE)
        .await;
    assert_eq!(listed(&rest), vec![first[1], first[0]]);
    assert!(rest["next"].is_null(), "{rest}");
    let (_, default) = gw.get("/v1/tasks", ALICE).await;
    assert_eq!(listed(&default).len(), 5);
    let (_, carols) = gw.get("/v1/tasks", CAROL).await;
    assert_eq!(carols["tasks"], json!([]));

    // Finished tasks show their state, and a failure its code.
    let _endpoint = gw.connect(&endpoint, &token);
    for id in first.iter().chain(&second) {
        gw.wait(ALICE, *id).await;
    }
    let (status, cancelled) = gw
        .post(
            &format!("/v1/tasks/{}/cancel", ids(&bobs)[0]),
            BOB,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{cancelled}");
    gw.wait(BOB, ids(&bobs)[0]).await;
    let (_, page) = gw.get("/v1/tasks?limit=1", ALICE).await;
    assert_eq!(page["tasks"][0]["state"], "succeeded", "{page}");
    let (_, bobs_page) = gw.get("/v1/tasks", BOB).await;
    assert_eq!(bobs_page["tasks"][0]["state"], "failed", "{bobs_page}");
    assert_eq!(
        bobs_page["tasks"][0]["error_code"], "cancelled",
        "{bobs_page}"
    );

    // Bad queries are 400s in the API's error shape.
    for query in [
        "limit=0",
        "limit=1001",
        "limit=many",
        "before=-1",
        "color=red",
    ] {
        let (status, error) = gw.get(&format!("/v1/tasks?{query}"), ALICE).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {error}");
        assert_eq!(error["error"]["code"], "bad_request", "{query}: {error}");
    }
}
