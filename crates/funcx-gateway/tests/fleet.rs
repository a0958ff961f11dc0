//! Several `funcx-gateway` processes on one PostgreSQL database (feature `postgres`; the
//! database of `scripts/infra/postgres-up.sh`, or `FUNCX_TEST_PG`): a task submitted at one
//! gateway runs on an endpoint connected to another, and its result reaches the client
//! streaming from the first.
#![cfg(feature = "postgres")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::process::{endpoint_status, free_port, register_endpoint, temp_dir, GatewayProcess};
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
    let all = async {
        let mut values = Vec::new();
        for handle in handles {
            values.push(handle.result::<i64>().await.expect("a result through A"));
        }
        values
    };
    let values = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every result reaches the client at B");
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
