//! The `funcx-gateway` process's logs: `--log-level` chooses what is written (RUST_LOG's
//! syntax), `--log-format json` writes one JSON object a line, and a filter or format that
//! does not parse is a usage error.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::process::{free_port, temp_dir, write_config, GatewayProcess};
use common::TIMEOUT;
use serde_json::Value;

const TOKEN: &str = "alice-secret-token-0123456789";

/// Registers an endpoint (an `info` event at the gateway); its id.
async fn register(address: std::net::SocketAddr, name: &str) -> String {
    let answer: Value = tokio::time::timeout(
        TIMEOUT,
        reqwest::Client::new()
            .post(format!("http://{address}/v1/endpoints"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "name": name }))
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("HTTP")
    .json()
    .await
    .expect("JSON");
    answer["endpoint_id"]
        .as_str()
        .expect("an endpoint id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_at_the_level_asked_for() {
    let dir = temp_dir("logs");
    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);

    let log = dir.join("json.log");
    let gateway = GatewayProcess::start_with(
        &["--log-level", "info", "--log-format", "json"],
        &config,
        address,
        &log,
    );
    let id = register(address, "logged").await;
    let status = gateway.sigterm(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    // The lines the binary prints itself (listening, stopped) are text; every event is JSON.
    let events: Vec<Value> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let registered = events
        .iter()
        .find(|event| event["fields"]["message"] == "endpoint registered")
        .unwrap_or_else(|| panic!("no registration event in {text}"));
    assert_eq!(registered["level"], "INFO", "{registered}");
    assert_eq!(
        registered["fields"]["endpoint"],
        id.as_str(),
        "{registered}"
    );
    assert_eq!(registered["fields"]["owner"], "alice", "{registered}");
    assert!(registered["timestamp"].is_string(), "{registered}");
    assert!(!text.contains("\u{1b}["), "no terminal colours in a file");

    // At `warn`, the same event is not written.
    let log = dir.join("warn.log");
    let gateway = GatewayProcess::start_with(&["--log-level", "warn"], &config, address, &log);
    register(address, "quiet").await;
    let status = gateway.sigterm(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("listening on"), "{text}");
    assert!(!text.contains("endpoint registered"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_funcx-gateway"))
        .args(args)
        .output()
        .expect("run funcx-gateway")
}

#[test]
fn a_bad_filter_or_format_is_a_usage_error() {
    for args in [
        &["--log-level", "warn,[", "gateway.toml"][..],
        &["--log-format", "xml", "gateway.toml"][..],
        &[][..],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {output:?}");
    }
    let output = run(&["--log-level", "warn,[", "gateway.toml"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("--log-level") && said.contains("not a log filter"),
        "{said}"
    );
}
