//! `funcx::Endpoint` taking its tasks from a gateway it dials out to: a real gateway on
//! loopback, real `funcx-manager` processes from a local provider, real Python workers, and
//! a remote executor (`funcx_client::connect`) submitting over HTTP.
#![cfg(all(unix, feature = "cli", feature = "gateway"))]

mod common;

use std::time::Duration;

use common::{init_tracing, manager_binary, wait_until, within, HANG};
use funcx::endpoint::{Endpoint, EndpointBuilder, EndpointState, GatewayLink};
use funcx::gateway::{Gateway, GatewayConfig, UserConfig};
use funcx::providers::LocalProvider;
use funcx::{Executor, Function, PythonConfig, StrategyConfig, TaskOptions};

const ALICE: &str = "alice-token-0123456789abcdef";

async fn gateway() -> (String, tokio::task::JoinHandle<()>) {
    let config = GatewayConfig {
        users: vec![UserConfig {
            name: "alice".into(),
            token: ALICE.into(),
        }],
        ..GatewayConfig::default()
    };
    let gateway = Gateway::start(config).await.expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = gateway.serve(listener).await;
    });
    (url, server)
}

async fn register(url: &str) -> (String, String) {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/endpoints"))
        .bearer_auth(ALICE)
        .json(&serde_json::json!({ "name": "cluster" }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        answer["endpoint_id"].as_str().unwrap().to_string(),
        answer["endpoint_token"].as_str().unwrap().to_string(),
    )
}

/// `builder` (blocks of real managers from a local provider) started as a new endpoint of
/// the gateway at `url`, once it is connected there, and a client submitting to it.
async fn behind_gateway(url: &str, builder: EndpointBuilder) -> (Endpoint, Executor) {
    let (endpoint_id, endpoint_token) = register(url).await;
    let endpoint = builder
        .provider(LocalProvider::new())
        .manager_program(manager_binary())
        .gateway(GatewayLink {
            url: url.to_owned(),
            endpoint_id: endpoint_id.clone(),
            token: endpoint_token,
            ca_file: None,
            failover: Vec::new(),
        })
        .start()
        .await
        .expect("the endpoint starts");
    wait_until(HANG, "connected to the gateway", || async {
        endpoint.status().connected == Some(true)
    })
    .await;
    let client = funcx::client::connect(url, ALICE, &endpoint_id)
        .await
        .expect("client");
    (endpoint, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tasks_run_on_blocks_and_a_stop_delivers_every_result() {
    init_tracing();
    let (url, _server) = gateway().await;
    let (endpoint_id, endpoint_token) = register(&url).await;
    let link = GatewayLink {
        url: url.clone(),
        endpoint_id: endpoint_id.clone(),
        token: endpoint_token,
        ca_file: None,
        failover: Vec::new(),
    };
    let endpoint = Endpoint::builder()
        .name("relay")
        .provider(LocalProvider::new())
        .manager_program(manager_binary())
        .workers_per_node(2)
        .strategy(
            StrategyConfig::new()
                .init_blocks(0)
                .max_blocks(1)
                .period(Duration::from_millis(100)),
        )
        .gateway(link.clone())
        .start()
        .await
        .expect("the endpoint starts");
    wait_until(HANG, "connected to the gateway", || async {
        endpoint.status().connected == Some(true)
    })
    .await;
    assert_eq!(endpoint.state(), EndpointState::Running);
    // No block yet: init 0, and no work.
    assert!(endpoint.status().strategy.blocks.is_empty());

    let client = funcx::client::connect(&url, ALICE, &endpoint_id)
        .await
        .expect("client");
    let slow = Function::from_source(
        "import time\n\ndef slow(x):\n    time.sleep(0.2)\n    return x + 1\n",
        "slow",
    );
    // Work at the gateway makes the endpoint submit a block, whose managers run it.
    let first = within(HANG, client.submit(&slow, (1,)).result::<i64>())
        .await
        .expect("the first task runs on a block started for it");
    assert_eq!(first, 2);
    let status = endpoint.status();
    assert_eq!(status.strategy.blocks.len(), 1, "{status:?}");
    assert_eq!(status.strategy.managers, 1, "{status:?}");

    // A stop while tasks run: those at the endpoint finish and are delivered; the rest
    // wait at the gateway for the endpoint's next start. None is lost.
    let handles = client.submit_batch(&slow, (0..10).map(|i| (i,)));
    wait_until(HANG, "tasks running at the endpoint", || async {
        endpoint.executor().stats().await.in_flight > 0
    })
    .await;
    within(HANG, endpoint.stop()).await;
    let status = endpoint.status();
    assert_eq!(status.state, EndpointState::Stopped);
    assert!(
        status.strategy.blocks.iter().all(|b| b.state.is_finished()),
        "{status:?}"
    );
    let view: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/v1/endpoints/{endpoint_id}"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"]["connected"], false, "{view}");
    assert_eq!(
        view["status"]["in_flight"], 0,
        "the endpoint delivered what it held: {view}"
    );
    let queued = view["status"]["queued"].as_u64().unwrap_or(99);
    assert!(queued < 10, "the tasks the endpoint held ran: {view}");

    // Started again with the same identity, it runs what waited at the gateway.
    let again = Endpoint::builder()
        .name("relay")
        .provider(LocalProvider::new())
        .manager_program(manager_binary())
        .workers_per_node(2)
        .strategy(
            StrategyConfig::new()
                .init_blocks(0)
                .max_blocks(1)
                .period(Duration::from_millis(100)),
        )
        .gateway(link)
        .start()
        .await
        .expect("the endpoint starts again");
    for (i, handle) in handles.into_iter().enumerate() {
        let value: i64 = within(HANG, handle.result())
            .await
            .unwrap_or_else(|e| panic!("task {i} lost in the stop: {e}"));
        assert_eq!(value, i as i64 + 1);
    }
    within(HANG, again.stop()).await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_the_last_error() {
    init_tracing();
    let (url, _server) = gateway().await;
    let (endpoint_id, _) = register(&url).await;
    let endpoint = Endpoint::builder()
        .provider(LocalProvider::new())
        .manager_program(manager_binary())
        .strategy(StrategyConfig::new().init_blocks(0).max_blocks(1))
        .gateway(GatewayLink {
            url,
            endpoint_id,
            token: "not-the-endpoint-token".into(),
            ca_file: None,
            failover: Vec::new(),
        })
        .start()
        .await
        .expect("the endpoint starts");
    wait_until(HANG, "the refusal reported", || async {
        endpoint.status().strategy.last_error.is_some()
    })
    .await;
    let status = endpoint.status();
    let error = status.strategy.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("401") && error.contains("wrong endpoint token"),
        "{error}"
    );
    assert_eq!(status.connected, Some(false));
    assert_eq!(status.state, EndpointState::Starting);
    within(HANG, endpoint.stop()).await;
    assert_eq!(endpoint.state(), EndpointState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_first_gateway_is_down_dials_the_next_of_its_failover_list() {
    init_tracing();
    let (url, _server) = gateway().await;
    let (endpoint_id, endpoint_token) = register(&url).await;
    // Nobody listens at the first address: the endpoint must move on to the second.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let endpoint = Endpoint::builder()
        .provider(LocalProvider::new())
        .manager_program(manager_binary())
        .workers_per_node(1)
        .strategy(StrategyConfig::new().init_blocks(0).max_blocks(1))
        .gateway(GatewayLink {
            url: format!("http://{down}"),
            endpoint_id: endpoint_id.clone(),
            token: endpoint_token,
            ca_file: None,
            failover: vec![url.clone()],
        })
        .start()
        .await
        .expect("the endpoint starts");
    wait_until(HANG, "connected to the failover gateway", || async {
        endpoint.status().connected == Some(true)
    })
    .await;
    let client = funcx::client::connect(&url, ALICE, &endpoint_id)
        .await
        .expect("client");
    let double = Function::from_source("def double(x):\n    return 2 * x\n", "double");
    let value: i64 = within(HANG, client.submit(&double, (21,)).result())
        .await
        .expect("a task runs through the failover gateway");
    assert_eq!(value, 42);
    within(HANG, endpoint.stop()).await;
    client.shutdown().await;
}

/// An endpoint tells its gateway its slots (as cores) and its managers' GPUs, so tasks that
/// ask for them travel through the gateway to a real `funcx-manager`, which gives each its
/// own device; what could never fit on the endpoint fails at once at the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_asking_for_gpus_through_the_gateway_get_the_endpoints_gpus() {
    init_tracing();
    let (url, _server) = gateway().await;
    let (endpoint, client) = behind_gateway(
        &url,
        Endpoint::builder()
            .name("gpus")
            .workers_per_node(2)
            .python(PythonConfig::new().accelerators(vec!["0".into(), "1".into()]))
            .strategy(
                StrategyConfig::new()
                    .init_blocks(1)
                    .max_blocks(1)
                    .period(Duration::from_millis(100)),
            ),
    )
    .await;
    let device = Function::from_source(
        "import os, time\n\ndef device(pause):\n    time.sleep(pause)\n    return os.environ.get('CUDA_VISIBLE_DEVICES', '')\n",
        "device",
    );
    let one = TaskOptions::new().gpus(1);
    let handles: Vec<_> = (0..4)
        .map(|_| client.submit_with(&device, (0.2,), one))
        .collect();
    for handle in handles {
        let seen: String = within(HANG, handle.result())
            .await
            .expect("a GPU task runs on the endpoint's manager");
        assert!(seen == "0" || seen == "1", "it saw {seen:?}");
    }
    let both: String = within(
        HANG,
        client
            .submit_with(&device, (0.0,), TaskOptions::new().gpus(2))
            .result(),
    )
    .await
    .expect("a task asking for both GPUs runs");
    assert_eq!(both, "0,1");
    // Three GPUs on an endpoint of two: refused at the gateway, without waiting.
    let error = within(
        Duration::from_secs(10),
        client.submit_with(&device, (0.0,), TaskOptions::new().gpus(3)),
    )
    .await
    .expect_err("more GPUs than the endpoint has");
    assert!(error.is_unsatisfiable(), "{error}");
    within(HANG, endpoint.stop()).await;
    client.shutdown().await;
}

/// An endpoint of blocks of one node, two workers and 1 GiB each, up to two blocks: four
/// slots, but no task can have more than one node. It tells its gateway its largest node, so
/// a task asking for three cores (within the four slots), 2 GiB or two whole nodes fails at
/// the gateway at once, typed, without reaching the endpoint (no block is started for it);
/// one that fits a node runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_larger_than_any_node_fails_at_the_gateway_at_once() {
    init_tracing();
    const GIB: u64 = 1 << 30;
    let (url, _server) = gateway().await;
    let (endpoint, client) = behind_gateway(
        &url,
        Endpoint::builder()
            .name("nodes")
            .workers_per_node(2)
            .memory_per_node(GIB)
            .strategy(
                StrategyConfig::new()
                    .init_blocks(0)
                    .max_blocks(2)
                    .period(Duration::from_millis(100)),
            ),
    )
    .await;
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    for (options, named) in [
        (
            TaskOptions::new().cores(3),
            "3 cores (the node has 2)".to_owned(),
        ),
        (
            TaskOptions::new().memory(2 * GIB),
            format!("{} bytes of memory (the node has {GIB})", 2 * GIB),
        ),
        // Its managers each hold their own node: no task there holds two.
        (
            TaskOptions::new().nodes(2),
            "2 nodes (the block has 1)".to_owned(),
        ),
    ] {
        let error = within(
            Duration::from_secs(10),
            client.submit_with(&echo, (1,), options),
        )
        .await
        .expect_err("larger than any node");
        assert!(error.is_unsatisfiable(), "{error}");
        assert!(error.to_string().contains(&named), "{error}");
    }
    assert!(
        endpoint.status().strategy.blocks.is_empty(),
        "no block was started for tasks that never fit: {:?}",
        endpoint.status()
    );
    // What fits one node runs there.
    let fits = TaskOptions::new().cores(2).memory(GIB);
    let value: i64 = within(HANG, client.submit_with(&echo, (7,), fits).result())
        .await
        .expect("a task of one whole node runs");
    assert_eq!(value, 7);
    within(HANG, endpoint.stop()).await;
    client.shutdown().await;
}
