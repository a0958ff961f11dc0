//! The gateway process is killed (`SIGKILL`) at seeded random moments around submissions:
//! before the batch is committed, after the commit but before the answer, or after the
//! answer, while an endpoint of real Python workers runs the tasks. Every task is stored
//! once (the client resends under its idempotency key) and executed once (the endpoint
//! resumes with each new gateway process and keeps its results until they are stored):
//! executions are counted by the Python function itself, one byte per run in a file per
//! task, and the store is read back after the last stop.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::process::{
    free_port, python_endpoint, register_endpoint, temp_dir, write_config, GatewayProcess,
};
use funcx_client::EndpointDial;
use funcx_client::RemoteConfig;
use funcx_core::Function;
use funcx_gateway::store::{RedbStore, TaskStore};

const TOKEN: &str = "alice-secret-token-0123456789";
const SEED: u64 = 16;
const ROUNDS: usize = 24;
const BATCH: i64 = 25;

const MARKING: &str = r#"
import os, time

def mark(i, directory):
    with open(os.path.join(directory, f"{i}.run"), "a") as f:
        f.write("x")
    time.sleep(0.005)
    return i * 2
"#;

/// xorshift64*: a seeded sequence of kill moments, the same in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_killed_around_submissions_stores_and_runs_each_task_once() {
    let dir = temp_dir("chaos");
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).expect("marks dir");
    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);
    let log = dir.join("gateway.log");
    let mut gateway = Some(GatewayProcess::start(&config, address, &log));

    let (id, token) = register_endpoint(address, TOKEN, "chaos").await;
    let endpoint = python_endpoint(
        EndpointDial::new(address.to_string(), id.clone(), token),
        11,
        Duration::from_millis(100),
    );
    let executor = RemoteConfig::new(&format!("http://{address}"), TOKEN, &id)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .give_up_after(Duration::from_secs(60))
        .connect()
        .await
        .expect("remote executor connects");
    let mark = Function::from_source(MARKING, "mark");
    let directory = marks.display().to_string();
    // The function is registered before the kills start.
    assert_eq!(
        executor
            .submit(&mark, (-1_i64, directory.clone()))
            .result::<i64>()
            .await
            .expect("a first task"),
        -2
    );

    let mut rng = Rng(SEED);
    let mut values = Vec::new();
    for round in 0..ROUNDS as i64 {
        let first = round * BATCH;
        let handles = executor.submit_batch(
            &mark,
            (first..first + BATCH).map(|i| (i, directory.clone())),
        );
        // Somewhere around the submission: before, during or after its commit and answer.
        let delay = Duration::from_millis(rng.below(40));
        tokio::time::sleep(delay).await;
        if let Some(running) = gateway.take() {
            running.sigkill();
        }
        gateway = Some(GatewayProcess::start(&config, address, &log));
        let finished = tokio::time::timeout(Duration::from_secs(90), async {
            let mut round_values = Vec::new();
            for handle in handles {
                round_values.push(handle.result::<i64>().await.expect("no task is lost"));
            }
            round_values
        })
        .await
        .unwrap_or_else(|_| panic!("round {round} (kill after {delay:?}) did not finish"));
        values.extend(finished);
    }
    let n = ROUNDS as i64 * BATCH;
    assert_eq!(values, (0..n).map(|i| i * 2).collect::<Vec<_>>());

    // Executed once each.
    let mut runs: HashMap<i64, usize> = HashMap::new();
    for entry in std::fs::read_dir(&marks).expect("marks").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(task) = name.strip_suffix(".run").and_then(|t| t.parse().ok()) {
            runs.insert(task, entry.metadata().map_or(0, |m| m.len() as usize));
        }
    }
    let more_than_once: Vec<_> = runs.iter().filter(|(_, count)| **count != 1).collect();
    assert!(
        more_than_once.is_empty(),
        "executed more than once: {more_than_once:?}"
    );
    assert_eq!(runs.len(), n as usize + 1);

    // Stored once each: every record of the store, by its argument.
    executor.shutdown().await;
    endpoint.abort();
    let status = tokio::task::spawn_blocking(move || {
        gateway.take().map(|g| g.sigterm(Duration::from_secs(15)))
    })
    .await
    .expect("join")
    .flatten()
    .expect("the last gateway stops");
    assert!(status.success(), "{status}");
    let store = RedbStore::open(dir.join("gateway.redb")).expect("the store opens");
    let mut stored: HashMap<i64, usize> = HashMap::new();
    let mut id = 1;
    while let Some(record) = store.task(id).await.expect("read") {
        let arg: i64 = record.decode_args().expect("args").positional()[0]
            .decode()
            .expect("an int");
        *stored.entry(arg).or_default() += 1;
        id += 1;
    }
    let twice: Vec<_> = stored.iter().filter(|(_, count)| **count != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(stored.len(), n as usize + 1);
    let _ = std::fs::remove_dir_all(&dir);
}
