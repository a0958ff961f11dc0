//! The PostgreSQL workloads of `e2e` (feature `postgres`): several gateways on one database.
//!
//! - `W1-gw-pg2`: W1 (n = 20,000 no-ops) through two gateways in this process sharing one
//!   PostgreSQL schema: half submitted at each by a remote executor ([`funcx_client::connect`]) of its own, all run by
//!   one endpoint of `--workers` Python workers connected to the first gateway, so that the
//!   second gateway's tasks are claimed by the first and their results routed back to it
//!   through LISTEN/NOTIFY. Every result is checked.
//! - `failover-pg`: n (default 10,000) tasks through three gateway *processes* (this
//!   executable) on one schema, with `lease_secs = 2`; the client and the endpoint use the
//!   first and list the other two for failover. Once a tenth of the results are in, the first
//!   gateway is killed with `SIGKILL`. Each task appends a byte to a file of its own, so that
//!   executions are counted by the function; the store is read back at the end. Fields
//!   `"tasks"`, `"lost"` (tasks without their right result), `"duplicated"` (tasks stored
//!   more than once), `"executions_over_1"` (tasks run more than once: allowed, at-least-once
//!   execution), `"recover_s"` (from the kill to the first result of a task unfinished at the
//!   kill) and `"drain_s"` (from the kill to the last result).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use funcx::transport::remote::{
    run_manager, ExecutorRunner, ManagerConfig, ManagerExit, ManagerId, ManagerInfo,
};
use funcx::{Args, Executor, Function, PythonConfig, PythonRuntime};
use funcx_client::{EndpointDial, RemoteConfig};
use funcx_gateway::store::{PgOptions, PgStore, TaskStore};
use funcx_gateway::{Gateway, GatewayConfig, StoreConfig, UserConfig};
use tokio::task::JoinHandle;

use super::{postgres_store, warm, BoxResult, GatewayChild, Line, MARK, NOOP, TOKEN};

/// Registers an endpoint at the gateway `url` for the user of `token`: (id, token).
async fn register(url: &str, token: &str, name: &str) -> BoxResult<(String, String)> {
    let registered: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/endpoints"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    match (
        registered["endpoint_id"].as_str(),
        registered["endpoint_token"].as_str(),
    ) {
        (Some(id), Some(token)) => Ok((id.to_owned(), token.to_owned())),
        _ => Err(format!("unexpected answer registering an endpoint: {registered}").into()),
    }
}

/// An endpoint of `workers` Python workers behind one manager dialling `dial`.
async fn endpoint(
    workers: usize,
    dial: EndpointDial,
) -> BoxResult<(Executor, JoinHandle<ManagerExit>)> {
    let local = Executor::builder()
        .workers(workers)
        .start(PythonRuntime::new(PythonConfig::new()));
    local.ready().await?;
    let mut config = ManagerConfig::new(ManagerInfo {
        id: ManagerId(u64::from(std::process::id()) << 20 | 0x9f),
        block: None,
        host: "localhost".into(),
        pid: std::process::id(),
        slots: u32::try_from(workers).unwrap_or(u32::MAX),
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: Vec::new(),
    });
    config.max_backoff = Duration::from_millis(100);
    let manager = tokio::spawn(run_manager(
        dial,
        ExecutorRunner::new(local.clone(), workers),
        config,
    ));
    Ok((local, manager))
}

/// `W1-gw-pg2`.
pub(super) async fn w1_pg2(workers: usize, url: &str, n: usize) -> BoxResult<Line> {
    let store = postgres_store(url, "bench_pg2").await?;
    let token = funcx_gateway::new_token()?;
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let gateway = Gateway::start(GatewayConfig {
            users: vec![UserConfig {
                name: "bench".into(),
                token: token.clone(),
            }],
            store: Some(store.clone()),
            ..GatewayConfig::default()
        })
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        urls.push(format!("http://{}", listener.local_addr()?));
        servers.push(tokio::spawn(async move { gateway.serve(listener).await }));
    }
    let (id, endpoint_token) = register(&urls[0], &token, "pg2").await?;
    let authority = urls[0].trim_start_matches("http://").to_owned();
    let (local, manager) =
        endpoint(workers, EndpointDial::new(authority, &id, endpoint_token)).await?;
    let noop = Function::from_source(NOOP, "noop");
    let mut executors = Vec::new();
    for url in &urls {
        let executor = funcx_client::connect(url, &token, &id).await?;
        warm(&executor, &noop, |i| Args::new().arg(&i)).await?;
        executors.push(executor);
    }

    let started = Instant::now();
    let halves = [(0, n / 2), (n / 2, n)];
    let mut runs = Vec::new();
    for (executor, (from, to)) in executors.iter().zip(halves) {
        let executor = executor.clone();
        let noop = noop.clone();
        runs.push(tokio::spawn(async move {
            let handles = executor.submit_batch(&noop, (from as i64..to as i64).map(|i| (i,)));
            for (i, handle) in (from..to).zip(handles) {
                let value: i64 = handle.result().await.map_err(|e| e.to_string())?;
                if value != i as i64 {
                    return Err(format!("W1-gw-pg2: noop({i}) returned {value}"));
                }
            }
            Ok::<(), String>(())
        }));
    }
    for run in runs {
        run.await??;
    }
    let seconds = started.elapsed().as_secs_f64();

    for executor in executors {
        executor.shutdown().await;
    }
    manager.abort();
    local.shutdown_now().await;
    for server in servers {
        server.abort();
    }
    Ok(Line {
        workload: "W1-gw-pg2",
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        extra: vec![("gateways", "2".into())],
        ..Line::default()
    })
}

/// `failover-pg`.
pub(super) async fn failover(workers: usize, url: &str, n: usize) -> BoxResult<Line> {
    let StoreConfig::Postgres(store) = postgres_store(url, "bench_failover").await? else {
        return Err("a PostgreSQL store was expected".into());
    };
    let schema = store.schema.clone().unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("funcx-bench-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks)?;
    let token = format!("{TOKEN}-0123456789");
    let mut gateways = Vec::new();
    let mut addresses = Vec::new();
    for name in ["a", "b", "c"] {
        let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"{address}\"\n\n[store]\npostgres = \"{url}\"\nschema = \"{schema}\"\nlease_secs = 2\n\n[[users]]\nname = \"bench\"\ntoken = \"{token}\"\n"
            ),
        )?;
        gateways.push(Some(GatewayChild::start(None, &config, address)?));
        addresses.push(address);
    }
    let urls: Vec<String> = addresses.iter().map(|a| format!("http://{a}")).collect();
    let (id, endpoint_token) = register(&urls[0], &token, "failover").await?;
    let dial = EndpointDial::new(addresses[0].to_string(), &id, endpoint_token)
        .failover(addresses[1].to_string())
        .failover(addresses[2].to_string());
    let (local, manager) = endpoint(workers, dial).await?;
    let executor = RemoteConfig::new(&urls[0], &token, &id)
        .failover(&urls[1])
        .failover(&urls[2])
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .give_up_after(Duration::from_secs(120))
        .connect()
        .await?;
    let mark = Function::from_source(MARK, "mark");
    let directory = marks.display().to_string();

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let handles = executor.submit_batch(&mark, (0..n as i64).map(|i| (i, directory.clone())));
    let waits: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, handle)| {
            let done = done.clone();
            tokio::spawn(async move {
                let result =
                    tokio::time::timeout(Duration::from_secs(300), handle.result::<i64>()).await;
                done.fetch_add(1, Ordering::Relaxed);
                let right = matches!(result, Ok(Ok(value)) if value == 2 * i as i64);
                (right, Instant::now())
            })
        })
        .collect();
    // A tenth of the results in: the kill lands mid-run.
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::Relaxed) < n / 10 {
        if Instant::now() > deadline {
            return Err("failover-pg: results did not flow before the kill".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let finished_at_kill = done.load(Ordering::Relaxed);
    drop(gateways[0].take());
    let killed = Instant::now();

    let mut lost = 0usize;
    let mut after_kill = Vec::new();
    for wait in waits {
        let (right, at) = wait.await?;
        if !right {
            lost += 1;
        } else if at > killed {
            after_kill.push(at.duration_since(killed).as_secs_f64());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    after_kill.sort_by(f64::total_cmp);
    let recover_s = after_kill.first().copied().unwrap_or(0.0);
    let drain_s = after_kill.last().copied().unwrap_or(0.0);
    executor.shutdown().await;
    manager.abort();
    local.shutdown().await;

    let mut executions_over_1 = 0usize;
    for entry in std::fs::read_dir(&marks)?.flatten() {
        if entry.metadata()?.len() > 1 {
            executions_over_1 += 1;
        }
    }
    let stored = PgStore::connect_with(PgOptions::new(url).schema(schema)).await?;
    let mut per_argument = std::collections::HashMap::<i64, usize>::new();
    let mut before = None;
    loop {
        let page = stored.tasks_of("bench", before, 1000).await?;
        for record in &page.tasks {
            let arg: i64 = record.decode_args()?.positional()[0].decode()?;
            *per_argument.entry(arg).or_default() += 1;
        }
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let duplicated = per_argument.values().filter(|count| **count > 1).count();
    drop(gateways);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Line {
        workload: "failover-pg",
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        extra: vec![
            ("tasks", n.to_string()),
            ("gateways", "3".into()),
            ("finished_at_kill", finished_at_kill.to_string()),
            ("lost", lost.to_string()),
            ("duplicated", duplicated.to_string()),
            ("executions_over_1", executions_over_1.to_string()),
            ("recover_s", format!("{recover_s:.3}")),
            ("drain_s", format!("{drain_s:.3}")),
        ],
        ..Line::default()
    })
}
