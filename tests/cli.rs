//! The `funcx-endpoint` program on real processes: `configure` writes a config file,
//! `start --detach` runs an endpoint process that dials a gateway and starts local blocks
//! of managers (the same program, as `funcx-endpoint manager`) with real Python workers,
//! `status`/`list` report it, and `stop` drains it with nothing lost and nothing left.
#![cfg(all(unix, feature = "cli", feature = "gateway"))]

mod common;

use common::proc::{alive, pids, tree};
use common::processes::{configure_local as configure, run, text, ALICE};
use common::{init_tracing, wait_until, within, TempDir, HANG};
use funcx::gateway::{Gateway, GatewayConfig, UserConfig};
use funcx::Function;
use std::path::Path;

fn json(home: &str, args: &[&str]) -> serde_json::Value {
    let output = run(home, args);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)))
}

/// Every live process whose environment has `FUNCX_HOME=home`: everything the tests'
/// endpoints started, however it was reparented.
fn processes_of_home(home: &str) -> Vec<u32> {
    let needle = format!("FUNCX_HOME={home}");
    let mut found = Vec::new();
    for (pid, dir) in pids() {
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        if environ
            .split(|&b| b == 0)
            .any(|var| var == needle.as_bytes())
            && alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

struct TestGateway {
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn gateway() -> TestGateway {
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
    TestGateway { url, server }
}

async fn register(url: &str, name: &str) -> (String, String) {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/endpoints"))
        .bearer_auth(ALICE)
        .json(&serde_json::json!({ "name": name }))
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

#[test]
fn configure_writes_every_key_and_a_private_token() {
    let home = TempDir::new("cli-configure");
    for provider in ["local", "slurm", "pbs", "gridengine", "ec2"] {
        let name = format!("ep-{provider}");
        let output = run(
            &home.path(),
            &[
                "configure",
                &name,
                "--provider",
                provider,
                "--gateway",
                "http://127.0.0.1:9",
                "--endpoint-id",
                "abc",
                "--token",
                "sekrit",
            ],
        );
        assert!(output.status.success(), "{}", text(&output));
        let dir = Path::new(&home.path()).join("endpoints").join(&name);
        let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        assert!(
            config.contains(&format!("provider = \"{provider}\"")),
            "{config}"
        );
        assert!(config.contains(&format!("[{provider}]")), "{config}");
        assert!(config.contains("endpoint_id = \"abc\""), "{config}");
        assert!(!config.contains("sekrit"), "the token is not in the config");
        for key in [
            "listen",
            "workers_per_node",
            "worker_init",
            "walltime_secs",
            "max_idle_secs",
        ] {
            assert!(config.contains(key), "{key} missing from\n{config}");
        }
        use std::os::unix::fs::PermissionsExt;
        let token = dir.join("token");
        assert_eq!(std::fs::read_to_string(&token).unwrap().trim(), "sekrit");
        let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is readable by its owner only");
    }
    // A second configure does not overwrite.
    let again = run(&home.path(), &["configure", "ep-local"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"), "{}", text(&again));

    // `list` shows them all, stopped.
    let listed = json(&home.path(), &["list", "--json"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ep-ec2", "ep-gridengine", "ep-local", "ep-pbs", "ep-slurm"]
    );
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["state"] == "stopped"));

    // Bad names and providers are refused with a usage error.
    let bad = run(&home.path(), &["configure", "../evil"]);
    assert_eq!(bad.status.code(), Some(64), "{}", text(&bad));
    let bad = run(&home.path(), &["configure", "x", "--provider", "lsf"]);
    assert_eq!(bad.status.code(), Some(64), "{}", text(&bad));
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let home = TempDir::new("cli-config-errors");
    let output = run(
        &home.path(),
        &[
            "configure",
            "broken",
            "--gateway",
            "http://127.0.0.1:9",
            "--endpoint-id",
            "e",
            "--token",
            "t",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let path = Path::new(&home.path()).join("endpoints/broken/config.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let cases = [
        (
            "nodes_per_block = 1",
            "nodes_per_blocks = 1",
            "unknown key `nodes_per_blocks`",
        ),
        ("max = 1", "max = \"many\"", "line"),
        ("max = 1", "max = 0", "key `blocks.max`"),
        (
            "provider = \"local\"",
            "provider = \"lsf\"",
            "key `provider`",
        ),
    ];
    for (from, to, expected) in cases {
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
        for command in [&["start", "broken"][..], &["status", "broken"][..]] {
            let output = run(&home.path(), command);
            assert_eq!(output.status.code(), Some(78), "{to}: {}", text(&output));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(&path.display().to_string()), "{stderr}");
            assert!(stderr.contains(expected), "{to}: {stderr}");
        }
    }
    // Without a gateway, start says what is missing.
    std::fs::write(&path, original.replace("[gateway]", "[gateway_]")).unwrap();
    let output = run(&home.path(), &["start", "broken"]);
    assert_eq!(output.status.code(), Some(78), "{}", text(&output));
    assert!(text(&output).contains("gateway_"), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_detached_endpoints_run_tasks_side_by_side_and_stop_drains_them() {
    init_tracing();
    let home = TempDir::new("cli-start");
    let gateway = gateway().await;
    let mut endpoints = Vec::new();
    for name in ["alpha", "beta"] {
        let (id, token) = register(&gateway.url, name).await;
        configure(&home.path(), name, &gateway.url, &id, &token);
        let output = run(&home.path(), &["start", name, "--detach"]);
        assert!(output.status.success(), "{}", text(&output));
        assert!(text(&output).contains("connected"), "{}", text(&output));
        endpoints.push((name, id));
    }
    let mut pids = Vec::new();
    for (name, _) in &endpoints {
        let status = json(&home.path(), &["status", name, "--json"]);
        assert_eq!(status["state"], "running", "{status}");
        assert_eq!(status["report"]["connected"], true, "{status}");
        let pid = status["pid"].as_u64().unwrap() as u32;
        assert!(alive(pid));
        let dir = Path::new(&home.path()).join("endpoints").join(name);
        assert!(dir.join("endpoint.log").is_file());
        assert!(dir.join("endpoint.pid").is_file());
        pids.push(pid);
    }
    assert_ne!(pids[0], pids[1]);

    // Tasks over HTTP to each endpoint run on blocks it starts for them.
    let slow = Function::from_source(
        "import os, time\n\ndef slow(x):\n    time.sleep(0.2)\n    return (x * 3, os.getppid())\n",
        "slow",
    );
    let mut handles = Vec::new();
    for (_, id) in &endpoints {
        let client = funcx::client::connect(&gateway.url, ALICE, id)
            .await
            .unwrap();
        handles.push((client.submit_batch(&slow, (0..6).map(|i| (i,))), client));
    }
    let mut managers = Vec::new();
    for (batch, _) in &mut handles {
        let first = batch.remove(0);
        let (value, manager): (i64, u32) = within(HANG, first.result()).await.expect("a task");
        assert_eq!(value, 0);
        managers.push(manager);
    }
    assert_ne!(
        managers[0], managers[1],
        "each endpoint runs its own managers"
    );
    for (name, _) in &endpoints {
        // The status file follows the endpoint within a second.
        let home_path = home.path();
        wait_until(HANG, "status showing the manager", || {
            let home_path = home_path.clone();
            async move { json(&home_path, &["status", name, "--json"])["report"]["managers"] == 1 }
        })
        .await;
        let status = json(&home.path(), &["status", name, "--json"]);
        let blocks = status["report"]["blocks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(blocks.len(), 1, "{status}");
        assert_eq!(blocks[0]["state"], "running", "{status}");
        assert_eq!(status["report"]["managers"], 1, "{status}");
        assert_eq!(status["report"]["workers"], 2, "{status}");
    }
    let listed = run(&home.path(), &["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains("alpha") && listed.contains("beta") && listed.contains("running"),
        "{listed}"
    );

    // Stop alpha while its tasks run: each finishes, or waits at the gateway; none is lost.
    // Its processes (endpoint, managers, workers) are all gone when stop returns.
    let alpha = tree(pids[0]);
    assert!(
        alpha.contains(&managers[0]) && alpha.len() >= 4,
        "endpoint, manager, 2 workers: {alpha:?}"
    );
    let output = run(&home.path(), &["stop", "alpha"]);
    assert!(output.status.success(), "{}", text(&output));
    let left: Vec<u32> = alpha.iter().copied().filter(|&pid| alive(pid)).collect();
    assert!(
        left.is_empty(),
        "processes of alpha outlived stop: {left:?}"
    );
    let status = json(&home.path(), &["status", "alpha", "--json"]);
    assert_eq!(status["state"], "stopped", "{status}");
    // Beta is untouched.
    let status = json(&home.path(), &["status", "beta", "--json"]);
    assert_eq!(status["state"], "running", "{status}");
    assert!(alive(managers[1]));

    // Alpha restarted keeps its identity: what waited at the gateway runs now.
    let output = run(&home.path(), &["start", "alpha", "--detach"]);
    assert!(output.status.success(), "{}", text(&output));
    for (batch, client) in handles {
        for (i, handle) in batch.into_iter().enumerate() {
            let (value, _): (i64, u32) = within(HANG, handle.result())
                .await
                .unwrap_or_else(|e| panic!("task {} lost: {e}", i + 1));
            assert_eq!(value, 3 * (i as i64 + 1));
        }
        client.shutdown().await;
    }
    for (name, _) in &endpoints {
        let output = run(&home.path(), &["stop", name]);
        assert!(output.status.success(), "{}", text(&output));
    }
    let left = processes_of_home(&home.path());
    assert!(left.is_empty(), "processes left after both stops: {left:?}");
}
