//! Several `funcx-gateway` processes on one PostgreSQL database (feature `postgres`; the
//! database of `scripts/infra/postgres-up.sh`, or `FUNCX_TEST_PG`): a task submitted at one
//! gateway runs on an endpoint connected to another, and its result reaches the client
//! streaming from the first.
#![cfg(feature = "postgres")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::process::{
    endpoint_status, free_port, python_endpoint, register_endpoint, results_within, temp_dir,
    GatewayProcess,
};
use common::ALICE;
use funcx_client::RemoteExecutor;
use funcx_core::Function;
use funcx_gateway::store::{PgOptions, PgStore};

fn database() -> String {
    std::env::var("FUNCX_TEST_PG")
        .unwrap_or_else(|_| "postgres://funcx:funcx@127.0.0.1:5432/funcx".into())
}

/// A schema of this test's own, emptied: tests run in parallel on one database.
async fn fresh_schema(name: &str) -> String {
    let schema = format!("fleet_{name}_{}", std::process::id());
    PgStore::drop_schema(&PgOptions::new(database()).schema(schema.clone()))
        .await
        .expect("the test PostgreSQL (scripts/infra/postgres-up.sh) accepts connections");
    schema
}

/// Writes the config of a gateway on `address` sharing `schema`, and starts it.
fn gateway(dir: &Path, name: &str, address: SocketAddr, schema: &str) -> GatewayProcess {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\n\n[store]\npostgres = \"{}\"\nschema = \"{schema}\"\nlease_secs = 2\n\n[[users]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n",
            database()
        ),
    )
    .expect("write config");
    GatewayProcess::start(&config, address, &dir.join(format!("{name}.log")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_submitted_at_one_gateway_runs_through_another_and_its_result_comes_back() {
    let dir = temp_dir("fleet-route");
    let schema = fresh_schema("route").await;
    let (a, b) = (free_port(), free_port());
    let gateway_a = gateway(&dir, "a", a, &schema);
    let gateway_b = gateway(&dir, "b", b, &schema);

    // Registered at B, connected to A: only A can hand its tasks out.
    let (endpoint, endpoint_token) = register_endpoint(b, ALICE, "at-a").await;
    let manager = common::connect(a, &endpoint, &endpoint_token);

    let executor = RemoteExecutor::builder(&format!("http://{b}"), ALICE, &endpoint)
        .give_up_after(Duration::from_secs(30))
        .start()
        .await
        .expect("the client connects to B");
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let n = 500_i64;
    let handles = executor.submit_batch(&echo, (0..n).map(|i| (i,)));
    let values = results_within(handles, Duration::from_secs(60), "through A").await;
    assert_eq!(values, (0..n).collect::<Vec<_>>());

    // A ran them: B has no connection of the endpoint's.
    assert_eq!(
        endpoint_status(a, ALICE, &endpoint).await["connected"],
        true
    );
    assert_eq!(
        endpoint_status(b, ALICE, &endpoint).await["connected"],
        false
    );

    executor.shutdown().await;
    manager.abort();
    drop((gateway_a, gateway_b));
    let _ = std::fs::remove_dir_all(&dir);
}

const WORK: &str = r#"
import time

def work(i):
    time.sleep(0.001)
    return i * 2
"#;

/// Every task of `user` in the shared store, counted by id: (tasks, distinct ids, finished).
async fn stored(schema: &str, user: &str) -> (usize, usize, usize) {
    use funcx_gateway::store::TaskStore;
    let store = PgStore::connect_with(PgOptions::new(database()).schema(schema))
        .await
        .expect("open the shared store");
    let mut records = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .tasks_of(user, before, 1000)
            .await
            .expect("list tasks");
        records.extend(page.tasks);
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let mut ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let finished = records.iter().filter(|r| r.result.is_some()).count();
    (records.len(), ids.len(), finished)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_mid_run_its_endpoint_and_client_move_on_and_every_result_arrives_once() {
    use funcx_client::EndpointDial;

    let dir = temp_dir("fleet-failover");
    let schema = fresh_schema("failover").await;
    let (a, b, c) = (free_port(), free_port(), free_port());
    let gateway_a = gateway(&dir, "a", a, &schema);
    let gateway_b = gateway(&dir, "b", b, &schema);
    let gateway_c = gateway(&dir, "c", c, &schema);
    let (endpoint, endpoint_token) = register_endpoint(a, ALICE, "moves").await;

    // The endpoint dials A first, then B, then C; so does the client.
    let dial = EndpointDial::new(a.to_string(), endpoint.clone(), endpoint_token)
        .failover(b.to_string())
        .failover(c.to_string());
    let manager = python_endpoint(dial, 11, Duration::from_millis(200));
    let executor = RemoteExecutor::builder(&format!("http://{a}"), ALICE, &endpoint)
        .failover(&format!("http://{b}"))
        .failover(&format!("http://{c}"))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(60))
        .start()
        .await
        .expect("the client connects to A");
    let work = Function::from_source(WORK, "work");

    let n = 2_000_i64;
    let mut handles = executor.submit_batch(&work, (0..n).map(|i| (i,)));
    // Results flow through A before it dies, so that the kill lands mid-run.
    let mut values = results_within(
        handles.drain(..200),
        Duration::from_secs(60),
        "before the kill",
    )
    .await;
    gateway_a.sigkill();
    let killed = std::time::Instant::now();
    values.extend(results_within(handles, Duration::from_secs(120), "after A is killed").await);
    let recovered = killed.elapsed();
    assert_eq!(values, (0..n).map(|i| i * 2).collect::<Vec<_>>());

    // Once each in the store: nothing created twice by a resend, nothing left unfinished.
    let (records, distinct, finished) = stored(&schema, "alice").await;
    assert_eq!(
        (records, distinct, finished),
        (n as usize, n as usize, n as usize)
    );
    // The endpoint moved to B (the next in its list), not to C.
    assert_eq!(
        endpoint_status(b, ALICE, &endpoint).await["connected"],
        true
    );
    assert_eq!(
        endpoint_status(c, ALICE, &endpoint).await["connected"],
        false
    );
    eprintln!(
        "recovered {} tasks in {recovered:?} after the kill",
        n - 200
    );

    executor.shutdown().await;
    manager.abort();
    drop((gateway_b, gateway_c));
    let _ = std::fs::remove_dir_all(&dir);
}
