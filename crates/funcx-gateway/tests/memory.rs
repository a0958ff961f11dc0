//! The gateway's memory does not follow the size of its store: a `funcx-gateway` process
//! started on a store of many finished tasks stays under the bound the README states
//! (`MAX_RSS_MIB`), at start (nothing is loaded wholesale, expiry reads only what expired)
//! and while tasks are read back.
//!
//! `FUNCX_MEMORY_TASKS` sets how many finished tasks the store holds (default 100,000 with
//! 1 KiB results, about 260 MiB of store: loading it, or walking it at start as expiry did,
//! would break the bound; a debug build takes about a minute to write it).

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::process::{free_port, register_endpoint, temp_dir, write_config, GatewayProcess};
use funcx_client::RemoteConfig;
use funcx_core::{Args, Function, Payload, Timeline};
use funcx_gateway::store::{Finished, NewTask, RedbStore, TaskStore};

const TOKEN: &str = "alice-secret-token-0123456789";

/// The README's bound on the gateway's resident memory with the default 64 MiB store cache.
const MAX_RSS_MIB: u64 = 96;

/// A `/proc/PID/status` field, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_a_large_store_stays_within_its_memory_bound() {
    let tasks: u64 = std::env::var("FUNCX_MEMORY_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = temp_dir("memory");
    let path = dir.join("gateway.redb");
    {
        let store = RedbStore::open(&path).expect("store");
        let function = funcx_core::Function::from_source("def f(x):\n    return x\n", "f").id();
        let result = Payload::from_pickled(vec![7u8; 1024]);
        let batch = 20_000;
        let mut done = 0;
        while done < tasks {
            let n = batch.min(tasks - done);
            let new = (0..n)
                .map(|i| NewTask {
                    owner: "alice".into(),
                    endpoint: "e1".into(),
                    function,
                    args: Args::new().arg(&(done + i)),
                    timeout: None,
                    resources: None,
                })
                .collect();
            let now = SystemTime::now();
            let ids = store.insert_tasks(new, now).await.expect("insert");
            let outcomes = ids
                .into_iter()
                .map(|id| Finished {
                    id,
                    result: Ok(result.clone()),
                    timeline: Timeline::submitted_now(),
                })
                .collect();
            store.finish(outcomes, now).await.expect("finish");
            done += n;
        }
        store.close().await.expect("close");
    }
    let store_bytes = std::fs::metadata(&path).expect("store file").len();

    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);
    let gateway = GatewayProcess::start(&config, address, &dir.join("gateway.log"));
    // Read a spread of tasks back through the API: their pages go through the cache.
    let client = reqwest::Client::new();
    for i in 0..200 {
        let id = 1 + i * (tasks / 200);
        let answer = client
            .get(format!("http://{address}/v1/tasks/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("read a task");
        assert!(
            answer.status().is_success(),
            "task {id}: {}",
            answer.status()
        );
    }
    let peak = status_kib(gateway.pid(), "VmHWM:") / 1024;
    let now = status_kib(gateway.pid(), "VmRSS:") / 1024;
    eprintln!(
        "{tasks} finished tasks, store {} MiB ({} bytes a task): gateway RSS {now} MiB, peak {peak} MiB",
        store_bytes >> 20,
        store_bytes / tasks.max(1)
    );
    assert!(
        peak <= MAX_RSS_MIB,
        "the gateway's peak RSS was {peak} MiB on a store of {} MiB (bound {MAX_RSS_MIB} MiB)",
        store_bytes >> 20
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

/// How far above its resident memory before the first burst a gateway may stay once a burst
/// is over (the README's figure).
const MAX_RSS_AFTER_BURST_MIB: u64 = 24;

/// Bursts of work come and go; the gateway's memory goes back near where it was instead of
/// keeping each burst's high-water mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_gives_memory_back_after_bursts() {
    let burst: usize = std::env::var("FUNCX_MEMORY_BURST")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let dir = temp_dir("memory-bursts");
    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);
    // The store's page cache is bounded on its own (`store_cache_mib`, tested above); a small
    // one here leaves what this test is about: memory that a burst's tasks took.
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, format!("store_cache_mib = 4\n{text}")).expect("write config");
    let gateway = GatewayProcess::start(&config, address, &dir.join("gateway.log"));
    let (id, endpoint_token) = register_endpoint(address, TOKEN, "bursts").await;
    let endpoint = common::connect(address, &id, &endpoint_token);
    let executor = RemoteConfig::new(&format!("http://{address}"), TOKEN, &id)
        .connect()
        .await
        .expect("remote executor connects");
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let run = |n: usize| {
        let handles = executor.submit_batch(&echo, (0..n as i64).map(|i| (i,)));
        async move {
            for (i, handle) in handles.into_iter().enumerate() {
                let back: i64 = tokio::time::timeout(Duration::from_secs(120), handle.result())
                    .await
                    .expect("a result within 120 s")
                    .expect("the echo");
                assert_eq!(back, i as i64);
            }
        }
    };
    // Warm up: connections, caches and the allocator's first arenas are not a burst's cost.
    run(1_000).await;
    let baseline = status_kib(gateway.pid(), "VmRSS:") / 1024;
    let mut after = Vec::new();
    for _ in 0..3 {
        run(burst).await;
        let peak = status_kib(gateway.pid(), "VmHWM:") / 1024;
        // Memory is handed back by the allocator in the background: wait for it, bounded.
        let deadline = Instant::now() + Duration::from_secs(60);
        let settled = loop {
            let now = status_kib(gateway.pid(), "VmRSS:") / 1024;
            if now <= baseline + MAX_RSS_AFTER_BURST_MIB || Instant::now() > deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        eprintln!(
            "burst of {burst}: baseline {baseline} MiB, peak {peak} MiB, after {settled} MiB"
        );
        after.push(settled);
    }
    assert!(
        after
            .iter()
            .all(|&rss| rss <= baseline + MAX_RSS_AFTER_BURST_MIB),
        "the gateway's RSS after each burst of {burst} tasks was {after:?} MiB against \
         {baseline} MiB before them (bound: +{MAX_RSS_AFTER_BURST_MIB} MiB)"
    );
    executor.shutdown().await;
    endpoint.abort();
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
