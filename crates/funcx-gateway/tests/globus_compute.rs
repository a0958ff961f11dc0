//! The Globus Compute routes over HTTP and AMQP, without the SDK (tests/globus_compute at the
//! workspace root drives them with the real SDK): tenancy, the token route, refusals of bad
//! input, and results reaching a task group's queue in RabbitMQ (scripts/infra/rabbitmq-up.sh).
#![cfg(feature = "globus-compute")]

mod common;

use base64::Engine;
use common::{config, start, TestGateway, ALICE, BOB, TIMEOUT};
use funcx_gateway::{ComputeClientConfig, GlobusComputeConfig};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const CLIENT_ID: &str = "0c3d9b1e-8f2a-4c7e-9d41-5b6a7e8f9a01";
const CLIENT_SECRET: &str = "the-client-secret-of-alice";

async fn gateway() -> TestGateway {
    let mut globus = GlobusComputeConfig::new(AMQP);
    globus.clients.push(ComputeClientConfig {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        user: "alice".into(),
    });
    let mut config = config();
    config.globus_compute = Some(globus);
    start(config).await
}

/// `id` (32 hex digits) as the SDK writes endpoint UUIDs.
fn dashed(id: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    )
}

async fn token(gw: &TestGateway, secret: &str) -> (StatusCode, Value) {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{secret}"));
    let response = gw
        .http
        .post(gw.url("/v2/oauth2/token"))
        .header("Authorization", format!("Basic {basic}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=https%3A%2F%2Fauth.globus.org%2Fscopes%2Ffacd7ccc-c5f4-42aa-916b-a0e270e2c2a9%2Fall+openid")
        .send()
        .await
        .expect("the token route answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn register_source(gw: &TestGateway, token: &str) -> String {
    let (status, body) = gw
        .post(
            "/v3/functions",
            token,
            json!({ "function_name": "f", "function_code": "def f(x):\n    return x\n",
                    "serialized": false, "meta": {} }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["function_uuid"]
        .as_str()
        .expect("a function UUID")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_their_own_and_bad_input_is_refused() {
    let gw = gateway().await;

    // The token route: the right secret gets a token per resource server; it acts as alice.
    assert_eq!(
        token(&gw, "a-wrong-secret-for-alice").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, issued) = token(&gw, CLIENT_SECRET).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(issued["resource_server"], "funcx_service");
    assert_eq!(
        issued["other_tokens"][0]["resource_server"],
        "auth.globus.org"
    );
    let alice = issued["access_token"].as_str().expect("a token").to_owned();
    let (status, amqp) = gw.get("/v2/get_amqp_result_connection_url", &alice).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(amqp["connection_url"], AMQP);
    let (_, bobs) = gw.get("/v2/get_amqp_result_connection_url", BOB).await;
    assert_ne!(
        amqp["queue_prefix"], bobs["queue_prefix"],
        "each user's queues are apart"
    );

    // Refused credentials, with the shape globus-sdk raises as GlobusAPIError.
    for bad in [
        "gcc1.x",
        "gcc1.YQ.99999999999.00",
        "nobody-issued-this-token",
    ] {
        let (status, body) = gw.get("/v2/endpoints", bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(body["code"], "UNAUTHORIZED");
    }
    assert_eq!(
        gw.call(reqwest::Method::GET, "/v2/endpoints", None, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    let function = register_source(&gw, &alice).await;
    let (status, record) = gw.get(&format!("/v2/functions/{function}"), ALICE).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a static token and a client token are the same user"
    );
    let packed = "def f(x):\n    return x\n";
    let body = format!("st\nf:{packed}");
    assert_eq!(
        record["function_code"],
        format!("{}\n{body}", body.chars().count())
    );
    assert_eq!(
        gw.get(&format!("/v2/functions/{function}"), BOB).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gw.call(
            reqwest::Method::DELETE,
            &format!("/v2/functions/{function}"),
            Some(BOB),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    let (endpoint, _) = gw
        .register_endpoint(ALICE, json!({ "name": "alices" }))
        .await;
    let endpoint = dashed(&endpoint);
    let (bob_endpoint, _) = gw.register_endpoint(BOB, json!({ "name": "bobs" })).await;
    let bob_endpoint = dashed(&bob_endpoint);
    let submission = |function: &str| json!({ "tasks": { function: ["12\n11\n[1, 2, 3]11\n11\n{\"k\": 4}"] }, "create_queue": false });
    // Bob can neither use alice's endpoint nor her function.
    let (status, _) = gw
        .post(
            &format!("/v3/endpoints/{endpoint}/submit"),
            BOB,
            submission(&function),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw
        .post(
            &format!("/v3/endpoints/{bob_endpoint}/submit"),
            BOB,
            submission(&function),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, submitted) = gw
        .post(
            &format!("/v3/endpoints/{endpoint}/submit"),
            &alice,
            submission(&function),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{submitted}");
    assert_eq!(submitted["endpoint_id"], endpoint);
    let task = submitted["tasks"][&function][0]
        .as_str()
        .expect("a task UUID")
        .to_owned();
    let group = submitted["task_group_id"]
        .as_str()
        .expect("a group UUID")
        .to_owned();
    let (status, view) = gw.get(&format!("/v2/tasks/{task}"), ALICE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["task_id"], task);
    assert_eq!(
        view["status"], "waiting-for-ep",
        "nobody runs alice's endpoint"
    );
    assert_eq!(
        gw.get(&format!("/v2/tasks/{task}"), BOB).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, batch) = gw
        .post("/v2/batch_status", BOB, json!({ "task_ids": [task] }))
        .await;
    assert_eq!(batch["results"], json!({}));
    let (_, batch) = gw
        .post("/v2/batch_status", ALICE, json!({ "task_ids": [task] }))
        .await;
    assert_eq!(batch["results"][&task]["status"], "waiting-for-ep");
    let (status, tasks) = gw.get(&format!("/v2/taskgroup/{group}"), ALICE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tasks["tasks"], json!([{ "id": task }]));
    assert_eq!(
        gw.get(&format!("/v2/taskgroup/{group}"), BOB).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, status_view) = gw
        .get(&format!("/v2/endpoints/{endpoint}/status"), ALICE)
        .await;
    assert_eq!(status_view["status"], "offline");
    let (_, listed) = gw.get("/v2/endpoints", BOB).await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "bob lists his own: {listed}"
    );

    // Malformed input: a clear 400, nothing stored.
    for (path, body) in [
        (
            "/v3/endpoints/not-a-uuid/submit".to_owned(),
            submission(&function),
        ),
        (
            format!("/v3/endpoints/{endpoint}/submit"),
            submission("also-not-a-uuid"),
        ),
        (
            format!("/v3/endpoints/{endpoint}/submit"),
            json!({ "tasks": { function.clone(): [1, 2] } }),
        ),
        (
            format!("/v3/endpoints/{endpoint}/submit"),
            json!({ "tasks": {} }),
        ),
        (
            "/v3/functions".to_owned(),
            json!({ "function_name": "g", "function_code": "99\n01\nxyz" }),
        ),
        (
            "/v3/functions".to_owned(),
            json!({ "function_name": "not a name", "function_code": "x", "serialized": false }),
        ),
    ] {
        let (status, answer) = gw.post(&path, ALICE, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
    }
    let (_, tasks) = gw.get(&format!("/v2/taskgroup/{group}"), ALICE).await;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_reach_the_task_groups_queue_in_rabbitmq() {
    let gw = gateway().await;
    let function = register_source(&gw, ALICE).await;
    let (endpoint, endpoint_token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let group = "3b9f2c1e-0000-4000-8000-".to_owned() + &format!("{:012x}", std::process::id());
    let (status, submitted) = gw
        .post(
            &format!("/v3/endpoints/{}/submit", dashed(&endpoint)),
            ALICE,
            json!({ "tasks": { function.clone(): ["p1", "p2", "p3"] },
                    "task_group_id": group, "create_queue": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{submitted}");
    let ids: Vec<String> = submitted["tasks"][&function]
        .as_array()
        .expect("task ids")
        .iter()
        .map(|id| id.as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);

    // The queue exists before any result (the SDK consumes it without declaring it).
    let (_, amqp) = gw.get("/v2/get_amqp_result_connection_url", ALICE).await;
    let queue = format!(
        "{}{group}",
        amqp["queue_prefix"].as_str().unwrap_or_default()
    );
    let connection = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ is up (scripts/infra/rabbitmq-up.sh)");
    let channel = connection.create_channel().await.expect("a channel");
    let get = || async {
        channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .expect("the queue exists")
    };
    assert!(get().await.is_none(), "no result before the endpoint runs");

    // An echoing endpoint runs them: it answers with its first argument (the function code),
    // not the shim's answer, so each task fails with the gateway's explanation.
    let _endpoint = gw.connect(&endpoint, &endpoint_token);
    let mut seen = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while seen.len() < 3 {
            match get().await {
                Some(delivery) => {
                    let body = &delivery.delivery.data;
                    assert_eq!(body[0], 1, "messagepack protocol 1");
                    let message: Value = serde_json::from_slice(&body[1..]).expect("JSON");
                    assert_eq!(message["message_type"], "result");
                    assert_eq!(message["data"]["error_details"]["code"], "InternalError");
                    seen.push(
                        message["data"]["task_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                    delivery
                        .delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .expect("ack");
                }
                None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("three results in the queue");
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected, "each result once, for its task");
    let (_, view) = gw.get(&format!("/v2/tasks/{}", ids[0]), ALICE).await;
    assert_eq!(view["status"], "failed");
    assert!(view["completion_t"].as_str().is_some_and(|t| !t.is_empty()));
}
