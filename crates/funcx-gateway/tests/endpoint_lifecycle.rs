//! Endpoint lifecycle on the gateway (remote stop, delete, token rotation and revocation)
//! and users managed by admins while the gateway runs.

mod common;

use common::{start, TestGateway, ALICE, BOB, TIMEOUT};
use funcx_transport::remote::ManagerExit;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn endpoint_status(gw: &TestGateway, id: &str) -> Value {
    let (status, view) = gw.get(&format!("/v1/endpoints/{id}"), ALICE).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view["status"].clone()
}

async fn wait_connected(gw: &TestGateway, id: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while endpoint_status(gw, id).await["connected"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoint {id} did not connect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_stop_drains_the_endpoint_and_keeps_its_tasks() {
    let gw = start(common::config()).await;
    let (id, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let connection = gw.connect(&id, &token);
    wait_connected(&gw, &id).await;

    // Only its owner stops it.
    let (status, _) = gw
        .post(&format!("/v1/endpoints/{id}/stop"), BOB, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = gw
        .post(&format!("/v1/endpoints/{id}/stop"), ALICE, json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["connections"], 1, "{answer}");
    let exit = tokio::time::timeout(TIMEOUT, connection)
        .await
        .expect("the endpoint drained in time")
        .expect("the endpoint task");
    assert_eq!(exit, ManagerExit::Drained);
    assert_eq!(endpoint_status(&gw, &id).await["connected"], false);

    // Tasks submitted while it is stopped wait for it, and run when it is back.
    let function = gw.echo_function(ALICE).await;
    let (status, submitted) = gw.submit(ALICE, &id, &function, &[7]).await;
    assert_eq!(status, StatusCode::OK, "{submitted}");
    let task = submitted["task_ids"][0].as_u64().unwrap();
    let _again = gw.connect(&id, &token);
    let done = gw.wait(ALICE, task).await;
    assert_eq!(done["state"], "succeeded", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_and_revoked_tokens() {
    let gw = start(common::config()).await;
    let (id, old) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;

    let (status, rotated) = gw
        .post(&format!("/v1/endpoints/{id}/token"), ALICE, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new = rotated["endpoint_token"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    // The old token is refused; the new one connects.
    let refused = tokio::time::timeout(TIMEOUT, connect_once(&gw, &id, &old))
        .await
        .unwrap();
    assert!(refused.contains("401"), "{refused}");
    let connection = gw.connect(&id, &new);
    wait_connected(&gw, &id).await;

    // Revoking stops the connected endpoint, and its reconnection is refused.
    let (status, body) = gw
        .call(
            Method::DELETE,
            &format!("/v1/endpoints/{id}/token"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let exit = tokio::time::timeout(TIMEOUT, connection)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, ManagerExit::Drained);
    let refused = tokio::time::timeout(TIMEOUT, connect_once(&gw, &id, &new))
        .await
        .unwrap();
    assert!(
        refused.contains("401") && refused.contains("wrong endpoint token"),
        "{refused}"
    );

    // Deleted, it is gone, for its owner and its old connections alike.
    let (status, _) = gw
        .call(
            Method::DELETE,
            &format!("/v1/endpoints/{id}"),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw
        .call(
            Method::DELETE,
            &format!("/v1/endpoints/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = gw.get(&format!("/v1/endpoints/{id}"), ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// One dial of the endpoint route; the refusal's text, or "connected".
async fn connect_once(gw: &TestGateway, id: &str, token: &str) -> String {
    use funcx_transport::remote::Dial;
    let dial = funcx_client::EndpointDial::new(gw.addr.to_string(), id, token);
    match dial.dial().await {
        Ok(_) => "connected".into(),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_while_the_gateway_runs() {
    let mut config = common::config();
    config.admins = vec!["alice".into()];
    let gw = start(config).await;

    let (status, _) = gw
        .post("/v1/admin/users", BOB, json!({ "name": "dave" }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "bob is no admin");
    let (status, created) = gw
        .post("/v1/admin/users", ALICE, json!({ "name": "dave" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let dave = created["token"].as_str().unwrap().to_string();
    let (status, _) = gw.get("/v1/endpoints", &dave).await;
    assert_eq!(status, StatusCode::OK, "dave's token works at once");
    let (status, _) = gw
        .post("/v1/admin/users", ALICE, json!({ "name": "dave" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = gw
        .post("/v1/admin/users", ALICE, json!({ "name": "no spaces" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, listed) = gw.get("/v1/admin/users", ALICE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["users"], json!(["alice", "bob", "carol", "dave"]));

    let (status, rotated) = gw
        .post("/v1/admin/users/dave/token", ALICE, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let fresh = rotated["token"].as_str().unwrap().to_string();
    assert_eq!(
        gw.get("/v1/endpoints", &dave).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(gw.get("/v1/endpoints", &fresh).await.0, StatusCode::OK);

    let (status, _) = gw
        .call(Method::DELETE, "/v1/admin/users/dave", Some(ALICE), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        gw.get("/v1/endpoints", &fresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = gw
        .call(Method::DELETE, "/v1/admin/users/dave", Some(ALICE), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
