//! The gateway is a separate process with a store on disk; it is killed with `SIGKILL` in the
//! middle of a run and started again on the same port and store. Every task the
//! remote executor (`funcx_client::connect`) submitted, before or during the outage, delivers its result exactly once;
//! and work the endpoint did while the gateway was down is handed over, not done again.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{
    endpoint_status, free_port, python_endpoint, register_endpoint, results_within, temp_dir,
    write_config, GatewayProcess,
};

use funcx_client::EndpointDial;
use funcx_client::RemoteConfig;
use funcx_core::Function;

const TOKEN: &str = "alice-secret-token-0123456789";

const SOURCE: &str = r#"
import time

def work(i):
    time.sleep(0.001)
    return i * 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_killed_and_restarted_mid_run_loses_nothing() {
    let dir = temp_dir("e2e-restart");
    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);
    let log = dir.join("gateway.log");
    let gateway = GatewayProcess::start(&config, address, &log);

    let (id, token) = register_endpoint(address, TOKEN, "restart").await;

    // The endpoint: two Python workers behind a manager that dials the gateway and keeps
    // dialling while it is down.
    let endpoint = python_endpoint(
        EndpointDial::new(address.to_string(), id.clone(), token),
        7,
        Duration::from_millis(200),
    );

    let executor = RemoteConfig::new(&format!("http://{address}"), TOKEN, &id)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(60))
        .connect()
        .await
        .expect("remote executor connects");
    let work = Function::from_source(SOURCE, "work");

    let first = 4_000_i64;
    let mut handles = executor.submit_batch(&work, (0..first).map(|i| (i,)));
    // Wait until results flow, so that the kill lands mid-run.
    let mut values = results_within(
        handles.drain(..200),
        Duration::from_secs(60),
        "work before the kill",
    )
    .await;

    gateway.sigkill();
    // Submitted while the gateway is down: held by the client and sent once it is back.
    let during = executor.submit_batch(&work, (first..first + 500).map(|i| (i,)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let gateway = GatewayProcess::start(&config, address, &log);

    handles.extend(during);
    values
        .extend(results_within(handles, Duration::from_secs(120), "work across the restart").await);
    assert_eq!(values, (0..first + 500).map(|i| i * 2).collect::<Vec<_>>());

    // Nothing is left pending at the gateway for this user.
    let status = endpoint_status(address, TOKEN, &id).await;
    assert_eq!(status["queued"], 0, "{status}");
    assert_eq!(status["in_flight"], 0, "{status}");

    executor.shutdown().await;
    endpoint.abort();
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_gone_for_good_fails_tasks_with_the_cause_instead_of_hanging() {
    let dir = temp_dir("e2e-restart");
    let address = free_port();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!("listen = \"{address}\"\n\n[[users]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n"),
    )
    .expect("write config");
    let gateway = GatewayProcess::start(&config, address, &dir.join("gateway.log"));
    let (id, _) = register_endpoint(address, TOKEN, "never connects").await;
    let executor = RemoteConfig::new(&format!("http://{address}"), TOKEN, &id)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(2))
        .connect()
        .await
        .expect("remote executor connects");
    let work = Function::from_source(SOURCE, "work");

    // Accepted by the gateway, waiting for an endpoint that never comes; then the gateway dies.
    let waiting = executor.submit(&work, (1,));
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.sigkill();
    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("no hang")
        .expect_err("the gateway is gone");
    assert!(error.is_manager_lost(), "{error}");
    assert!(error.to_string().contains(&address.to_string()), "{error}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Submitted while it is still gone: fails as soon as the first attempt does.
    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(20), executor.submit(&work, (2,)))
        .await
        .expect("no hang")
        .expect_err("the gateway is still gone");
    assert!(error.is_manager_lost(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    executor.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Counts the files in `dir` whose name ends with `suffix`, and the bytes in them: one
/// file per task, one byte per execution.
fn markers(dir: &Path, suffix: &str) -> (usize, Vec<(String, usize)>) {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("marker dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(task) = name.strip_suffix(suffix) {
            let bytes = entry.metadata().map_or(0, |m| m.len() as usize);
            files.push((task.to_owned(), bytes));
        }
    }
    (files.len(), files)
}

const MARKING: &str = r#"
import os, time

def mark(i, directory, seconds):
    with open(os.path.join(directory, f"{i}.run"), "a") as f:
        f.write("x")
    time.sleep(seconds)
    with open(os.path.join(directory, f"{i}.done"), "a") as f:
        f.write("x")
    return i * 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_the_endpoint_holds_across_a_gateway_restart_are_handed_over_not_rerun() {
    let dir = temp_dir("e2e-restart");
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).expect("marks dir");
    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);
    let log = dir.join("gateway.log");
    let gateway = GatewayProcess::start(&config, address, &log);
    let (id, token) = register_endpoint(address, TOKEN, "handover").await;
    let endpoint = python_endpoint(
        EndpointDial::new(address.to_string(), id.clone(), token),
        9,
        Duration::from_millis(200),
    );
    let executor = RemoteConfig::new(&format!("http://{address}"), TOKEN, &id)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(60))
        .connect()
        .await
        .expect("remote executor connects");
    let mark = Function::from_source(MARKING, "mark");
    let n = 30_i64;
    let directory = marks.display().to_string();
    let mut handles = executor.submit_batch(&mark, (0..n).map(|i| (i, directory.clone(), 0.1)));
    let mut values = Vec::new();
    for handle in handles.drain(..4) {
        values.push(handle.result::<i64>().await.expect("work before the kill"));
    }

    // Killed while the endpoint runs tasks; it finishes at least one more while the gateway
    // is gone, and holds its result.
    let (done_at_kill, _) = markers(&marks, ".done");
    gateway.sigkill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while markers(&marks, ".done").0 <= done_at_kill {
        assert!(
            Instant::now() < deadline,
            "the endpoint finished nothing while the gateway was down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gateway = GatewayProcess::start(&config, address, &log);

    let rest = async {
        for handle in handles {
            values.push(
                handle
                    .result::<i64>()
                    .await
                    .expect("work across the restart"),
            );
        }
        values
    };
    let values = tokio::time::timeout(Duration::from_secs(120), rest)
        .await
        .expect("every task finishes after the restart");
    assert_eq!(values, (0..n).map(|i| i * 2).collect::<Vec<_>>());

    // Every task ran exactly once: nothing the endpoint held or had finished was re-queued.
    let (runs, files) = markers(&marks, ".run");
    assert_eq!(runs, n as usize);
    let twice: Vec<_> = files.iter().filter(|(_, bytes)| *bytes != 1).collect();
    assert!(twice.is_empty(), "tasks executed more than once: {twice:?}");

    executor.shutdown().await;
    endpoint.abort();
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
