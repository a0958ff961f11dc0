//! A gateway on 127.0.0.1:0, users, and an HTTP client for the API tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use funcx_client::EndpointDial;
use funcx_core::Payload;
use funcx_gateway::{Gateway, GatewayBuilder, GatewayConfig, UserConfig};
use funcx_transport::remote::{
    run_manager, AgentConfig, EchoRunner, ManagerConfig, ManagerExit, ManagerId, ManagerInfo,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub mod process;

pub const ALICE: &str = "alice-token-0123456789abcdef";
pub const BOB: &str = "bob-token-0123456789abcdef";
pub const CAROL: &str = "carol-token-0123456789abcdef";

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn config() -> GatewayConfig {
    GatewayConfig {
        users: [("alice", ALICE), ("bob", BOB), ("carol", CAROL)]
            .into_iter()
            .map(|(name, token)| UserConfig {
                name: name.into(),
                token: token.into(),
            })
            .collect(),
        ..GatewayConfig::default()
    }
}

pub struct TestGateway {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A gateway builder for `config` whose endpoint connections are watched at test speed
/// (heartbeats every 200 ms, lost after 2 s).
pub fn builder(config: GatewayConfig) -> GatewayBuilder {
    Gateway::builder(config).agent_config(AgentConfig {
        heartbeat_period: Duration::from_millis(200),
        heartbeat_threshold: Duration::from_secs(2),
        hello_timeout: Duration::from_secs(5),
    })
}

pub async fn start(config: GatewayConfig) -> TestGateway {
    let gateway = builder(config).start().await.expect("the gateway starts");
    serve(gateway).await
}

pub async fn serve(gateway: Gateway) -> TestGateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            let _ = gateway.serve(listener).await;
        }
    });
    TestGateway {
        addr,
        gateway,
        http: reqwest::Client::new(),
        server,
    }
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A JSON request; returns the status and the JSON body (`Null` if none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call(&self.http, self.addr, method, path, token, body).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn register_function(&self, token: &str, body: Value) -> String {
        let (status, value) = self.post("/v1/functions", token, body).await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        value["function_id"].as_str().unwrap().to_string()
    }

    pub async fn echo_function(&self, token: &str) -> String {
        self.register_function(
            token,
            json!({ "name": "echo", "source": "def echo(x):\n    return x\n" }),
        )
        .await
    }

    /// Registers an endpoint; returns its id and token.
    pub async fn register_endpoint(&self, token: &str, body: Value) -> (String, String) {
        let (status, value) = self.post("/v1/endpoints", token, body).await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
        (
            value["endpoint_id"].as_str().unwrap().to_string(),
            value["endpoint_token"].as_str().unwrap().to_string(),
        )
    }

    /// Submits one task per value (echoed back by the endpoint); returns their ids.
    pub async fn submit(
        &self,
        token: &str,
        endpoint: &str,
        function: &str,
        values: &[i64],
    ) -> (StatusCode, Value) {
        let tasks: Vec<Value> = values
            .iter()
            .map(|v| json!({ "function_id": function, "args": [pickled(*v)] }))
            .collect();
        self.post(
            &format!("/v1/endpoints/{endpoint}/tasks"),
            token,
            json!({ "tasks": tasks }),
        )
        .await
    }

    /// Polls a task until it has finished.
    pub async fn wait(&self, token: &str, id: u64) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let (status, value) = self.get(&format!("/v1/tasks/{id}"), token).await;
            assert_eq!(status, StatusCode::OK, "{value}");
            if value["state"] == "succeeded" || value["state"] == "failed" {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} did not finish: {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An in-process endpoint that dials in through the upgrade route and echoes its tasks'
    /// first argument.
    pub fn connect(&self, endpoint: &str, token: &str) -> tokio::task::JoinHandle<ManagerExit> {
        connect(self.addr, endpoint, token)
    }
}

pub fn connect(
    addr: SocketAddr,
    endpoint: &str,
    token: &str,
) -> tokio::task::JoinHandle<ManagerExit> {
    let dial = EndpointDial::new(addr.to_string(), endpoint, token);
    let info = ManagerInfo {
        id: ManagerId(fastrand_u64()),
        block: None,
        host: "test".into(),
        pid: std::process::id(),
        slots: 4,
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: Vec::new(),
    };
    let mut config = ManagerConfig::new(info);
    config.give_up_after = Duration::from_secs(30);
    tokio::spawn(run_manager(dial, EchoRunner::new(4), config))
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(1);
    hasher.finish()
}

/// A JSON request through `http` to the gateway at `address`, answered within [`TIMEOUT`];
/// returns the status and the JSON body (`Null` if none).
pub async fn call(
    http: &reqwest::Client,
    address: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, format!("http://{address}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = tokio::time::timeout(TIMEOUT, request.send())
        .await
        .expect("answered in time")
        .expect("the request went through");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// `POST path` with a JSON `body` as the user of `token`, to the gateway at `address`.
pub async fn post_json(
    address: SocketAddr,
    token: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    call(
        &reqwest::Client::new(),
        address,
        Method::POST,
        path,
        Some(token),
        Some(body),
    )
    .await
}

/// `GET path` as the user of `token`, from the gateway at `address`.
pub async fn get_json(address: SocketAddr, token: &str, path: &str) -> (StatusCode, Value) {
    call(
        &reqwest::Client::new(),
        address,
        Method::GET,
        path,
        Some(token),
        None,
    )
    .await
}

pub fn pickled(value: i64) -> String {
    base64::engine::general_purpose::STANDARD.encode(Payload::pickle(&value).unwrap().as_bytes())
}

pub fn unpickled(view: &Value) -> i64 {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(view["result"].as_str().expect("a result"))
        .unwrap();
    Payload::from_pickled(bytes).decode().unwrap()
}

pub fn ids(value: &Value) -> Vec<u64> {
    value["task_ids"]
        .as_array()
        .expect("task ids")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// The task views of the `result` events complete in `buffer`, the text read so far from a
/// `GET /v1/results` stream of server-sent events; what they took is drained from it.
pub fn result_events(buffer: &mut String) -> Vec<Value> {
    let mut views = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let event: String = buffer.drain(..end + 2).collect();
        if !event.contains("event: result") {
            continue;
        }
        let data = event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("a result event has a data line");
        views.push(serde_json::from_str(data).expect("a result event's data is a task view"));
    }
    views
}
