//! Multi-node MPI tasks through a gateway: a real `funcx-gateway` process; an endpoint that
//! dials it and says it holds a block of two nodes; a real `funcx-manager` process holding
//! that block (`--block-nodes`) dialling the endpoint; real Open MPI with Debian's mpi4py
//! (scripts/infra/mpi-up.sh); and a remote executor (`funcx_client::connect`) submitting.
//! A task's nodes travel client -> gateway -> endpoint -> manager, its ranks run on the hosts
//! it was given, a task asking for more nodes than the block has fails at the gateway at
//! once, and a stored task keeps its nodes across a gateway restart.
//!
//! Needs `funcx-manager` built next to the gateway (`cargo build -p funcx-python --bins`, as
//! scripts/test does). This machine is one node; its two names (its host name and
//! `localhost`) stand for a block of two, as in crates/funcx-python/tests/mpi_nodes.rs.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{
    free_port, register_endpoint, task_when_finished, temp_dir, write_config, GatewayProcess,
    GatewayWithEndpoint,
};
use funcx_client::RemoteConfig;
use funcx_core::{Args, Executor, Function, FunctionBody, MpiFunction, ShellResult, TaskOptions};
use funcx_transport::remote::{
    run_manager, AgentConfig, EndpointAgent, ExecutorRunner, ManagerConfig, ManagerExit, ManagerId,
    ManagerInfo,
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

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The endpoint of these tests: an executor whose only workers are the managers that dial
/// it, which tells its gateway it holds a block of two nodes (this machine's two names).
struct BlockEndpoint {
    executor: Executor,
    /// Where its managers dial it.
    address: SocketAddr,
    block: Vec<String>,
}

impl BlockEndpoint {
    async fn start() -> BlockEndpoint {
        let executor = Executor::builder().start_without_workers();
        let acceptor = TcpTransport::builder()
            .token(MANAGER_TOKEN)
            .build()
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("the endpoint listens for managers");
        let address = acceptor.local_addr();
        tokio::spawn(EndpointAgent::new(executor.clone(), AgentConfig::default()).serve(acceptor));
        BlockEndpoint {
            executor,
            address,
            block: vec![funcx_core::hostname(), "localhost".to_owned()],
        }
    }

    /// Dials the gateway on `dial` as one manager that says it holds the block, as an
    /// endpoint says its largest node's cores.
    fn connect(&self, dial: funcx_client::EndpointDial) -> tokio::task::JoinHandle<ManagerExit> {
        let info = ManagerInfo {
            id: ManagerId(manager_id()),
            block: None,
            host: "localhost".into(),
            pid: std::process::id(),
            slots: WORKERS,
            gpus: Vec::new(),
            cores: None,
            memory: None,
            nodes: self.block.clone(),
        };
        let mut config = ManagerConfig::new(info);
        config.max_backoff = Duration::from_millis(200);
        let runner = ExecutorRunner::new(self.executor.clone(), WORKERS as usize);
        tokio::spawn(run_manager(dial, runner, config))
    }

    /// A real `funcx-manager` of this build holding the block, once it has attached.
    async fn start_manager(&self) -> ManagerProcess {
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
            .args(["--endpoint", &self.address.to_string()])
            .args(["--workers", &WORKERS.to_string()])
            .args(["--block-nodes", &self.block.join(",")])
            .args(["--give-up-after", "20"])
            .env("FUNCX_TOKEN", MANAGER_TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start funcx-manager");
        let manager = ManagerProcess(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.executor.stats().await.managers == 0 {
            assert!(Instant::now() < deadline, "funcx-manager did not attach");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        manager
    }
}

/// A manager id of this process, apart from other tests' (one process runs one test under
/// nextest, several under `cargo test`).
fn manager_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    u64::from(std::process::id()) << 16 | NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The MPI function of these tests: `program` run by `ranks` ranks under Open MPI.
fn mpi_function() -> Function {
    MpiFunction::new("/usr/bin/python3 -c {program}")
        .shell(|shell| shell.walltime(Duration::from_secs(60)))
        .function()
}

/// Submits `function` to run [`RANKS`] over `ranks` ranks on `nodes` nodes to `endpoint`
/// through the JSON API of the gateway at `address` (`"resources": {"nodes": N}`); its id.
async fn submit_json(
    address: SocketAddr,
    endpoint: &str,
    function: &Function,
    nodes: u32,
    ranks: u32,
) -> u64 {
    let (status, answer) = common::post_json(
        address,
        TOKEN,
        &format!("/v1/endpoints/{endpoint}/tasks"),
        json!({ "tasks": [{
            "function_id": function.id().to_string(), "format": "json",
            "kwargs": { "program": RANKS, "ranks": ranks }, "resources": { "nodes": nodes }
        }] }),
    )
    .await;
    assert!(status.is_success(), "{status} {answer}");
    answer["task_ids"][0].as_u64().expect("a task id")
}

/// The result of shell task `id` at the gateway at `address`, once it has succeeded.
async fn shell_result(address: SocketAddr, id: u64) -> ShellResult {
    let view = task_when_finished(address, TOKEN, id, HANG).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    serde_json::from_value(view["result"].clone()).expect("a shell result in JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_tasks_run_through_the_gateway_on_the_nodes_they_were_given() {
    let endpoint = BlockEndpoint::start().await;
    let block = endpoint.block.clone();
    let setup = GatewayWithEndpoint::start("mpi-nodes", TOKEN, |dial| endpoint.connect(dial)).await;
    let client = RemoteConfig::new(&format!("http://{}", setup.address), TOKEN, &setup.endpoint)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("the remote executor connects");
    let function = mpi_function();
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
    let at_endpoint = endpoint.executor.stats().await;
    assert_eq!(
        (at_endpoint.queued, at_endpoint.in_flight),
        (0, 0),
        "the endpoint never got it"
    );

    let _manager = endpoint.start_manager().await;

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
    let id = submit_json(setup.address, &setup.endpoint, &function, 2, 2).await;
    assert_ran(&shell_result(setup.address, id).await, 2, 2, &block);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_node_task_stored_before_a_gateway_restart_runs_on_its_nodes_after_it() {
    let endpoint = BlockEndpoint::start().await;
    let _manager = endpoint.start_manager().await;
    let dir = temp_dir("mpi-nodes-restart");
    let address = free_port();
    let config = write_config(&dir, address, "alice", TOKEN);
    let log = dir.join("gateway.log");
    let gateway = GatewayProcess::start(&config, address, &log);
    let (id, endpoint_token) = register_endpoint(address, TOKEN, "mpi-nodes-restart").await;
    let function = mpi_function();
    let FunctionBody::Source(source) = function.body() else {
        panic!("a shell function is Python source");
    };
    let (status, registered) = common::post_json(
        address,
        TOKEN,
        "/v1/functions",
        json!({ "name": function.name(), "source": source }),
    )
    .await;
    assert!(status.is_success(), "{status} {registered}");
    assert_eq!(registered["function_id"], function.id().to_string());
    // Submitted while the endpoint is away: the gateway only stores it.
    let task = submit_json(address, &id, &function, 2, 4).await;
    gateway.sigkill();

    // Another gateway process on the same store: the task, read back with its nodes, runs
    // on both once the endpoint dials in.
    let _gateway = GatewayProcess::start(&config, address, &log);
    let _link = endpoint.connect(funcx_client::EndpointDial::new(
        address.to_string(),
        id,
        endpoint_token,
    ));
    assert_ran(&shell_result(address, task).await, 2, 4, &endpoint.block);
}
