//! The `funcx-gateway` process stops gracefully on `SIGTERM`: it exits 0 within its bound
//! with an endpoint connected and a client's result stream open, and the next start finds a
//! store that was closed cleanly and nothing to recover. `SIGKILL`, for contrast, leaves a
//! store that the next start must repair.

mod common;

use std::time::Duration;

use common::process::{free_port, register_endpoint, temp_dir, write_config, GatewayProcess};
use common::TIMEOUT;
use funcx_client::RemoteConfig;
use funcx_core::Function;

const TOKEN: &str = "alice-secret-token-0123456789";

async fn metric(address: std::net::SocketAddr, name: &str) -> String {
    let text = reqwest::Client::new()
        .get(format!("http://{address}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_gateway_cleanly_and_the_next_start_has_nothing_to_recover() {
    let dir = temp_dir("lifecycle");
    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);
    let log = dir.join("gateway.log");
    let gateway = GatewayProcess::start(&config, address, &log);
    assert!(
        gateway.log().contains("opened cleanly"),
        "{}",
        gateway.log()
    );

    let (id, token) = register_endpoint(address, TOKEN, "lifecycle").await;
    let _endpoint = common::connect(address, &id, &token);
    let executor = RemoteConfig::new(&format!("http://{address}"), TOKEN, &id)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("the executor connects");
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let values = tokio::time::timeout(TIMEOUT, async {
        let mut values = Vec::new();
        for handle in executor.submit_batch(&echo, (0..20_i64).map(|i| (i,))) {
            values.push(handle.result::<i64>().await.expect("a result"));
        }
        values
    })
    .await
    .expect("the tasks finish");
    assert_eq!(values, (0..20).collect::<Vec<_>>());

    // SIGTERM with the endpoint's connection and the client's result stream open: a clean
    // exit well within the 10 s grace.
    let status = tokio::task::spawn_blocking(move || gateway.sigterm(Duration::from_secs(15)))
        .await
        .expect("join")
        .expect("the gateway exits within its bound");
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("stopped cleanly"), "{text}");

    // The next start: the store needs no repair, and nothing is re-submitted.
    let gateway = GatewayProcess::start(&config, address, &log);
    let text = gateway.log();
    let second_start = &text[text.rfind("funcx-gateway: store").expect("a store line")..];
    assert!(second_start.contains("opened cleanly"), "{text}");
    assert_eq!(
        metric(address, "funcx_gateway_tasks_recovered_total").await,
        "0"
    );
    // And it works: the endpoint and the client found it again.
    let value = tokio::time::timeout(TIMEOUT, executor.submit(&echo, (42_i64,)).result::<i64>())
        .await
        .expect("in time")
        .expect("a result after the restart");
    assert_eq!(value, 42);

    // For contrast: a kill leaves a store the next start has to repair.
    gateway.sigkill();
    let gateway = GatewayProcess::start(&config, address, &log);
    let text = gateway.log();
    let third_start = &text[text.rfind("funcx-gateway: store").expect("a store line")..];
    assert!(third_start.contains("repaired"), "{text}");

    executor.shutdown().await;
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
