//! Authentication over the whole API: every route the OpenAPI document marks as a user's
//! refuses a missing or wrong token; an endpoint's token cannot act as a user, nor a user's
//! token connect as an endpoint; and no token reaches the gateway's logs, even at `debug`.

mod common;

use common::process::{free_port, register_endpoint, temp_dir, write_config, GatewayProcess};
use common::{config, result_events, start, ALICE, TIMEOUT};
use funcx_gateway::GatewayConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Every `(method, path, security scheme)` of the OpenAPI document, with path parameters
/// filled in with values of the right shape.
fn operations(document: &Value) -> Vec<(Method, String, String)> {
    let mut out = Vec::new();
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("an operation map") {
            let scheme = operation["security"]
                .as_array()
                .and_then(|schemes| schemes.first())
                .and_then(|scheme| scheme.as_object())
                .and_then(|scheme| scheme.keys().next().cloned())
                .unwrap_or_default();
            let path = path
                .replace("{id}", &"ab".repeat(32))
                .replace("{name}", "someone");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            out.push((method, path, scheme));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_route_refuses_a_missing_or_wrong_token_and_an_endpoint_token() {
    let gw = start(config()).await;
    let (_endpoint, endpoint_token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let (status, document) = gw.get("/v1/openapi.json", ALICE).await;
    assert_eq!(status, StatusCode::OK);
    let operations = operations(&document);
    let user_routes: Vec<_> = operations.iter().filter(|(_, _, s)| s == "user").collect();
    assert!(
        user_routes.len() >= 15,
        "the document lists the user routes: {operations:?}"
    );
    for (method, path, _) in user_routes {
        for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            let (status, body) = gw.call(method.clone(), path, token, None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with token {token:?}: {body}"
            );
        }
        // An endpoint's token is not a user's.
        let (status, body) = gw
            .call(method.clone(), path, Some(&endpoint_token), None)
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with an endpoint token: {body}"
        );
    }
    // The endpoint routes refuse a user's token.
    let endpoint_routes: Vec<_> = operations
        .iter()
        .filter(|(_, _, s)| s == "endpoint")
        .collect();
    for (method, path, _) in endpoint_routes {
        let (status, body) = gw.call(method.clone(), path, Some(ALICE), None).await;
        assert!(
            status == StatusCode::UNAUTHORIZED
                || status == StatusCode::FORBIDDEN
                || status == StatusCode::NOT_FOUND,
            "{method} {path} with a user token: {status} {body}"
        );
        assert!(!status.is_success(), "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs_even_at_debug() {
    const TOKEN: &str = "alice-secret-token-never-logged-0123456789";
    let dir = temp_dir("security-logs");
    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);
    let log = dir.join("gateway.log");
    let gateway = GatewayProcess::start_with(&["--log-level", "debug"], &config, address, &log);
    let (endpoint, endpoint_token) = register_endpoint(address, TOKEN, "logged").await;
    let client = reqwest::Client::new();
    // Requests with good, wrong and endpoint tokens, on user routes: each is logged at debug.
    for token in [TOKEN, "wrong-secret-token-0123456789", &endpoint_token] {
        let _ = tokio::time::timeout(
            TIMEOUT,
            client
                .get(format!("http://{address}/v1/endpoints/{endpoint}"))
                .bearer_auth(token)
                .send(),
        )
        .await
        .expect("answered in time");
    }
    let text = gateway.log();
    assert!(
        text.lines().count() > 3,
        "the gateway logged at debug: {text}"
    );
    for secret in [
        TOKEN,
        "wrong-secret-token-0123456789",
        endpoint_token.as_str(),
    ] {
        assert!(
            !text.contains(secret),
            "a token is in the gateway's log: {secret}\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_can_neither_read_nor_change_a_users_objects() {
    use common::BOB;
    let gw = start(config()).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, endpoint_token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let _connected = gw.connect(&endpoint, &endpoint_token);
    let (status, answer) = gw.submit(ALICE, &endpoint, &function, &[7]).await;
    assert!(status.is_success(), "{answer}");
    let task = answer["task_ids"][0].as_u64().expect("a task id");
    gw.wait(ALICE, task).await;

    let attempts = [
        (Method::GET, format!("/v1/functions/{function}"), None),
        (Method::DELETE, format!("/v1/functions/{function}"), None),
        (Method::GET, format!("/v1/endpoints/{endpoint}"), None),
        (
            Method::POST,
            format!("/v1/endpoints/{endpoint}/tasks"),
            Some(json!({ "tasks": [{ "function_id": function, "args": [] }] })),
        ),
        (Method::POST, format!("/v1/endpoints/{endpoint}/stop"), None),
        (
            Method::POST,
            format!("/v1/endpoints/{endpoint}/token"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/endpoints/{endpoint}/token"),
            None,
        ),
        (Method::DELETE, format!("/v1/endpoints/{endpoint}"), None),
        (Method::GET, format!("/v1/tasks/{task}"), None),
        (Method::POST, format!("/v1/tasks/{task}/cancel"), None),
        (Method::DELETE, format!("/v1/tasks/{task}"), None),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = gw.call(method.clone(), &path, Some(BOB), body).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
            "bob: {method} {path}: {status} {answer}"
        );
    }
    // Reads that list or batch show bob nothing of alice's.
    let (status, batch) = gw
        .post("/v1/tasks/batch", BOB, json!({ "ids": [task] }))
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["tasks"], json!([]), "{batch}");
    assert_eq!(batch["not_found"], json!([task]), "{batch}");
    let (_, list) = gw.get("/v1/tasks", BOB).await;
    assert_eq!(list["tasks"], json!([]), "{list}");
    let (_, endpoints) = gw.get("/v1/endpoints", BOB).await;
    assert!(
        !endpoints.to_string().contains(&endpoint),
        "bob sees alice's endpoint: {endpoints}"
    );

    // Alice's objects are untouched.
    for path in [
        format!("/v1/functions/{function}"),
        format!("/v1/endpoints/{endpoint}"),
        format!("/v1/tasks/{task}"),
    ] {
        let (status, answer) = gw.get(&path, ALICE).await;
        assert_eq!(status, StatusCode::OK, "alice: {path}: {answer}");
    }
    let (_, view) = gw.get(&format!("/v1/tasks/{task}"), ALICE).await;
    assert_eq!(view["state"], "succeeded", "{view}");
}

/// Reads from `stream` until the peer closes it (or the bound passes): what it sent.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    bound: std::time::Duration,
) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_the_gateway_keeps_serving() {
    use tokio::io::AsyncWriteExt;
    let gw = start(config()).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let huge = "x".repeat(2 << 20);
    let request = format!(
        "GET /v1/endpoints HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {ALICE}\r\nx-big: {huge}\r\n\r\n"
    );
    // The gateway may close the connection before taking it all: a failed write is fine.
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut stream, TIMEOUT)
        .await
        .expect("the gateway closes a connection whose headers are too large");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 431") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    let (status, _) = gw.get("/v1/endpoints", ALICE).await;
    assert_eq!(status, StatusCode::OK, "the gateway still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_are_disconnected_and_others_are_served_meanwhile() {
    use tokio::io::AsyncWriteExt;
    let gw = start(GatewayConfig {
        header_read_timeout_secs: 1,
        ..config()
    })
    .await;
    // Fifty clients that start a request and then trickle its headers, a byte at a time,
    // never finishing them.
    let mut loris = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /v1/endpoints HTTP/1.1\r\nhost: gw\r\n")
            .await
            .expect("the request line goes out");
        loris.push(stream);
    }
    let trickle = tokio::spawn(async move {
        let mut open = loris.len();
        let started = tokio::time::Instant::now();
        // Each round sends one more header byte on every connection still open; a write
        // or a read that shows the peer gone counts that connection as closed.
        while open > 0 && started.elapsed() < TIMEOUT {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            open = 0;
            for stream in &mut loris {
                let alive = stream.write_all(b"x").await.is_ok() && {
                    let mut probe = [0u8; 1];
                    !matches!(stream.try_read(&mut probe), Ok(0) | Ok(1))
                };
                if alive {
                    open += 1;
                }
            }
        }
        open
    });
    // Meanwhile the gateway answers everybody else.
    for _ in 0..5 {
        let (status, _) = gw.get("/v1/endpoints", ALICE).await;
        assert_eq!(status, StatusCode::OK);
    }
    let still_open = tokio::time::timeout(TIMEOUT + TIMEOUT, trickle)
        .await
        .expect("the trickle ends")
        .expect("the trickle task");
    assert_eq!(
        still_open, 0,
        "every slow client is disconnected once its headers take over header_read_timeout_secs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_wait_for_one_to_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = start(GatewayConfig {
        max_connections: 4,
        ..config()
    })
    .await;
    let request =
        format!("GET /v1/endpoints HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {ALICE}\r\n\r\n");
    // Four keep-alive connections, each answered once and then held open.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut buf = [0u8; 12];
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut buf))
            .await
            .expect("answered in time")
            .expect("an answer");
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(stream);
    }
    // A fifth is accepted by the kernel's backlog but not served while the four are open.
    let mut fifth = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    fifth.write_all(request.as_bytes()).await.expect("send");
    let mut buf = [0u8; 12];
    // A negative: nothing may arrive within this window (the gateway is idle otherwise, so
    // two seconds is ample for an answer it would give).
    let early = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        fifth.read_exact(&mut buf),
    )
    .await;
    assert!(
        early.is_err(),
        "the fifth connection was served while four were open"
    );
    // One of the four closes: the fifth is served.
    drop(held.pop());
    tokio::time::timeout(TIMEOUT, fifth.read_exact(&mut buf))
        .await
        .expect("the fifth connection is served once one closes")
        .expect("an answer");
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_stream_carries_only_its_users_results() {
    use common::BOB;
    let gw = start(config()).await;
    // Bob listens first, then Alice's twenty tasks run and finish.
    let mut bob_stream = gw
        .http
        .get(gw.url("/v1/results"))
        .bearer_auth(BOB)
        .send()
        .await
        .expect("bob's stream");
    assert_eq!(bob_stream.status(), StatusCode::OK);
    let mut alice_stream = gw
        .http
        .get(gw.url("/v1/results"))
        .bearer_auth(ALICE)
        .send()
        .await
        .expect("alice's stream");
    let function = gw.echo_function(ALICE).await;
    let (endpoint, endpoint_token) = gw.register_endpoint(ALICE, json!({ "name": "a" })).await;
    let _alice_endpoint = gw.connect(&endpoint, &endpoint_token);
    let values: Vec<i64> = (0..20).collect();
    let (status, answer) = gw.submit(ALICE, &endpoint, &function, &values).await;
    assert!(status.is_success(), "{answer}");
    let alice_tasks: Vec<u64> = answer["task_ids"]
        .as_array()
        .expect("task ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    // Alice's own stream gets all twenty (the control: results are being published).
    let mut buffer = String::new();
    let mut seen = Vec::new();
    while seen.len() < alice_tasks.len() {
        let chunk = tokio::time::timeout(TIMEOUT, alice_stream.chunk())
            .await
            .expect("alice's results in time")
            .expect("alice's stream")
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        seen.extend(
            result_events(&mut buffer)
                .iter()
                .filter_map(|v| v["id"].as_u64()),
        );
    }
    // Then Bob's own task runs. Results are published in the order they finish, so by the
    // time Bob's stream shows his, any of Alice's it was (wrongly) sent would be ahead of it.
    let bob_function = gw.echo_function(BOB).await;
    let (bob_endpoint, bob_token) = gw.register_endpoint(BOB, json!({ "name": "b" })).await;
    let _bob_endpoint = gw.connect(&bob_endpoint, &bob_token);
    let (status, answer) = gw.submit(BOB, &bob_endpoint, &bob_function, &[99]).await;
    assert!(status.is_success(), "{answer}");
    let bob_task = answer["task_ids"][0].as_u64().expect("bob's task id");
    let mut buffer = String::new();
    let mut bob_seen = Vec::new();
    while !bob_seen.contains(&bob_task) {
        let chunk = tokio::time::timeout(TIMEOUT, bob_stream.chunk())
            .await
            .expect("bob's result in time")
            .expect("bob's stream")
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        bob_seen.extend(
            result_events(&mut buffer)
                .iter()
                .filter_map(|v| v["id"].as_u64()),
        );
    }
    assert_eq!(
        bob_seen,
        vec![bob_task],
        "bob's stream carried another user's results"
    );
}
