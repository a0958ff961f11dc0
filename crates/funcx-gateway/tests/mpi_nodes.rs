//! Multi-node MPI tasks through a gateway: a real `funcx-gateway` process; an endpoint that
//! dials it and says it holds a block of two nodes; a real `funcx-manager` process holding
//! that block (`--block-nodes`) dialling the endpoint; real Open MPI with Debian's mpi4py
//! (scripts/infra/mpi-up.sh); and a remote executor (`funcx_client::connect`) submitting.
//! A task's nodes travel client -> gateway -> endpoint -> manager, its ranks run on the hosts
//! it was given, and a task asking for more nodes than the block has fails at the gateway at
//! once.
//!
//! Needs `funcx-manager` built next to the gateway (`cargo build -p funcx-python --bins`, as
//! scripts/test does). This machine is one node; its two names (its host name and
//! `localhost`) stand for a block of two, as in crates/funcx-python/tests/mpi_nodes.rs.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{task_when_finished, GatewayWithEndpoint};
use funcx_client::RemoteConfig;
use funcx_core::{Args, Executor, MpiFunction, ShellResult, TaskOptions};
use funcx_transport::remote::{
    run_manager, AgentConfig, EndpointAgent, ExecutorRunner, ManagerConfig, ManagerId, ManagerInfo,
};
use funcx_transport::TcpTransport;
use serde_json::json;

const TOKEN: &str = "alice-secret-token-0123456789";
/// What the endpoint's managers present to it.
const MANAGER_TOKEN: &str = "mpi-nodes-manager-token";
/// How long the MPI tasks may take before the test fails instead of hanging.
const HANG: Duration = Duration::from_secs(120);
/// How soon a task that can never fit must fail.
const AT_ONCE: Duration = Duration::from_secs(10);
/// The manager's workers: more than the block's nodes, so the nodes decide what runs
/// together.
const WORKERS: u32 = 3;

/// Rank 0 prints how many ranks answered it and the hosts the task was given.
const RANKS: &str = "import os\n\
from mpi4py import MPI\n\
answered = MPI.COMM_WORLD.allreduce(1)\n\
if MPI.COMM_WORLD.Get_rank() == 0:\n    \
print(answered, os.environ.get('FUNCX_MPI_HOSTS', '-'), flush=True)\n";

/// That `result` is of a task whose `ranks` ranks all answered, and which was given `nodes`
/// hosts of `block`.
fn assert_ran(result: &ShellResult, nodes: usize, ranks: u32, block: &[String]) {
    assert_eq!(result.returncode, 0, "{result:?}");
    let printed: Vec<&str> = result.stdout.split_whitespace().collect();
    assert_eq!(printed.len(), 2, "{result:?}");
    assert_eq!(
        printed[0],
        ranks.to_string(),
        "every rank answered: {result:?}"
    );
    let hosts: Vec<&str> = printed[1].split(',').collect();
    assert_eq!(hosts.len(), nodes, "given its nodes: {result:?}");
    assert!(
        hosts
            .iter()
            .all(|host| block.iter().any(|node| node == host)),
        "nodes of the block: {result:?}"
    );
}

/// A `funcx-manager` process, killed when dropped so that no test leaves one behind.
struct ManagerProcess(Child);

impl ManagerProcess {
    /// `funcx-manager` of this build holding `block`, dialling the endpoint at `address`.
    fn start(address: SocketAddr, block: &[String]) -> ManagerProcess {
        let binary = Path::new(env!("CARGO_BIN_EXE_funcx-gateway"))
            .parent()
            .map(|dir| dir.join("funcx-manager"))
            .unwrap_or_else(|| PathBuf::from("funcx-manager"));
        assert!(
            binary.is_file(),
            "{} is missing: build it with `cargo build -p funcx-python --bins` (scripts/test does)",
            binary.display()
        );
        let child = Command::new(binary)
            .args(["--endpoint", &address.to_string()])
            .args(["--workers", &WORKERS.to_string()])
            .args(["--block-nodes", &block.join(",")])
            .args(["--give-up-after", "20"])
            .env("FUNCX_TOKEN", MANAGER_TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start funcx-manager");
        ManagerProcess(child)
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_tasks_run_through_the_gateway_on_the_nodes_they_were_given() {
    let block = vec![funcx_core::hostname(), "localhost".to_owned()];
    // The endpoint: an executor whose only workers are the managers that dial it.
    let executor = Executor::builder().start_without_workers();
    let acceptor = TcpTransport::builder()
        .token(MANAGER_TOKEN)
        .build()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the endpoint listens for managers");
    let managers_dial = acceptor.local_addr();
    tokio::spawn(EndpointAgent::new(executor.clone(), AgentConfig::default()).serve(acceptor));
    // It dials the gateway as one manager that says it holds the block, as it says its
    // largest node's cores.
    let endpoint = executor.clone();
    let info = ManagerInfo {
        id: ManagerId(u64::from(std::process::id()) << 16 | 31),
        block: None,
        host: "localhost".into(),
        pid: std::process::id(),
        slots: WORKERS,
        gpus: Vec::new(),
        cores: None,
        memory: None,
        nodes: block.clone(),
    };
    let setup = GatewayWithEndpoint::start("mpi-nodes", TOKEN, move |dial| {
        let mut config = ManagerConfig::new(info);
        config.max_backoff = Duration::from_millis(200);
        tokio::spawn(run_manager(
            dial,
            ExecutorRunner::new(endpoint, WORKERS as usize),
            config,
        ))
    })
    .await;
    let client = RemoteConfig::new(&format!("http://{}", setup.address), TOKEN, &setup.endpoint)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("the remote executor connects");
    let mpi = MpiFunction::new("/usr/bin/python3 -c {program}")
        .shell(|shell| shell.walltime(Duration::from_secs(60)));
    let function = mpi.function();
    let task = |nodes: u32, ranks: u32| {
        client.submit_with(
            &function,
            Args::new().kwarg("program", RANKS).kwarg("ranks", &ranks),
            TaskOptions::new().nodes(nodes),
        )
    };

    // Three nodes of a block of two, before any manager has dialled the endpoint: the
    // gateway refuses it at once, by what the endpoint said. (The endpoint itself would
    // hold it until a manager came.)
    let refused = tokio::time::timeout(AT_ONCE, task(3, 2).result::<ShellResult>())
        .await
        .expect("refused at once, not queued")
        .expect_err("no block has three nodes");
    assert!(refused.is_unsatisfiable(), "{refused}");
    assert!(refused.to_string().contains("3 nodes"), "{refused}");
    let at_endpoint = executor.stats().await;
    assert_eq!(
        (at_endpoint.queued, at_endpoint.in_flight),
        (0, 0),
        "the endpoint never got it"
    );

    let _manager = ManagerProcess::start(managers_dial, &block);
    let deadline = Instant::now() + Duration::from_secs(30);
    while executor.stats().await.managers == 0 {
        assert!(Instant::now() < deadline, "funcx-manager did not attach");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A task of both nodes and one of one, submitted together: their ranks run on the
    // hosts each was given.
    let both = task(2, 4);
    let one = task(1, 2);
    let results = tokio::time::timeout(HANG, async {
        (
            both.result::<ShellResult>().await,
            one.result::<ShellResult>().await,
        )
    })
    .await
    .expect("the MPI tasks finish within the bound");
    assert_ran(&results.0.expect("a two-node task runs"), 2, 4, &block);
    assert_ran(&results.1.expect("a one-node task runs"), 1, 2, &block);

    // The JSON API takes them too: `"resources": {"nodes": 2}`.
    let (status, answer) = common::post_json(
        setup.address,
        TOKEN,
        &format!("/v1/endpoints/{}/tasks", setup.endpoint),
        json!({ "tasks": [{
            "function_id": function.id().to_string(), "format": "json",
            "kwargs": { "program": RANKS, "ranks": 2 }, "resources": { "nodes": 2 }
        }] }),
    )
    .await;
    assert!(status.is_success(), "{status} {answer}");
    let id = answer["task_ids"][0].as_u64().expect("a task id");
    let view = task_when_finished(setup.address, TOKEN, id, HANG).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    let result: ShellResult =
        serde_json::from_value(view["result"].clone()).expect("a shell result in JSON");
    assert_ran(&result, 2, 2, &block);
    client.shutdown().await;
}
