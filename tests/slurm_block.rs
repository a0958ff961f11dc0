//! End to end on real processes: a `funcx-gateway` process, and a Slurm-backed endpoint
//! made with `funcx-endpoint configure` whose blocks run one manager for the whole block
//! (`[managers] layout = "per-block"`). Its block is one Slurm job (real `sbatch`) whose
//! script runs `funcx-endpoint manager --block-nodes auto` once, holding the job's node; an
//! mpi4py task of one node and two ranks launches them with Open MPI inside the job's own
//! task slots (no oversubscription asked); a task of two nodes, more than a block has, is
//! refused by the gateway at once, typed; and `stop` leaves no job behind. An endpoint of
//! two-node blocks tells its gateway so before any block runs.
//!
//! The test cluster (scripts/infra/slurm-up.sh) is one node with 2 CPUs, so the block is one
//! node with two workers, hence two task slots for ranks. Needs Slurm, Open MPI and Debian's
//! mpi4py for /usr/bin/python3 (scripts/infra/mpi-up.sh); without them the test fails, it
//! does not skip.
#![cfg(all(unix, feature = "cli"))]

mod common;

use std::time::Duration;

use common::processes::{run, text, GatewayProcess, ALICE};
use common::slurm::{
    configure_slurm, queued_jobs, require_slurm, status, wait_status, DetachedEndpoint, SLURM,
};
use common::{init_tracing, within, TempDir};
use funcx::{Args, MpiFunction, ShellResult, TaskOptions};

/// How soon a task that no block can hold must fail.
const AT_ONCE: Duration = Duration::from_secs(10);

/// Each rank prints its rank, how many ranks answered, its Slurm job, the job's node list
/// and the hosts funcx gave the task.
const RANKS: &str = "import os\n\
from mpi4py import MPI\n\
c = MPI.COMM_WORLD\n\
size = c.allreduce(1)\n\
e = lambda name: os.environ.get(name, '-')\n\
os.write(1, ('%d %d %s %s %s\\n' % (c.Get_rank(), size, e('SLURM_JOB_ID'), \
e('SLURM_JOB_NODELIST'), e('FUNCX_MPI_HOSTS'))).encode())\n";

/// Submits a task of `nodes` nodes of `mpi` and checks that the gateway refuses it at once,
/// typed unsatisfiable, saying that a block has `block_has`.
async fn assert_refused(client: &funcx::Executor, mpi: &MpiFunction, nodes: u32, block_has: u32) {
    let refused = within(
        AT_ONCE,
        client
            .submit_with(
                &mpi.function(),
                Args::new().kwarg("program", RANKS),
                TaskOptions::new().nodes(nodes),
            )
            .result::<ShellResult>(),
    )
    .await
    .expect_err("no block has that many nodes");
    assert!(refused.is_unsatisfiable(), "{refused}");
    let said = format!("{nodes} nodes (the block has {block_has})");
    assert!(refused.to_string().contains(&said), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_block_slurm_endpoint_runs_mpi_ranks_in_its_jobs_allocation() {
    require_slurm();
    init_tracing();
    let dir = TempDir::new("slurm-block");
    let home = dir.0.join("home");
    let gateway = GatewayProcess::start(&dir.0);
    let id = configure_slurm(&home, &gateway.url, "mpi", |config| {
        config.replace("# layout = \"per-node\"", "layout = \"per-block\"")
    })
    .await;
    let endpoint = DetachedEndpoint::start(&home, "mpi");
    let client = funcx::client::connect(&gateway.url, ALICE, &id)
        .await
        .expect("client");
    let mpi = MpiFunction::new("/usr/bin/python3 -c {program}")
        .ranks(2)
        .shell(|shell| shell.walltime(Duration::from_secs(60)));
    let args = || Args::new().kwarg("program", RANKS);

    // Two nodes of a block of one: the endpoint told its gateway its blocks' node count, so
    // the gateway refuses the task at once, saying why.
    assert_refused(&client, &mpi, 2, 1).await;

    // One node, two ranks: launched by Open MPI in the job's two task slots.
    let result: ShellResult = within(
        SLURM,
        client
            .submit_with(&mpi.function(), args(), TaskOptions::new().nodes(1))
            .result(),
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "the MPI task runs in the block (scripts/infra/mpi-up.sh installs Open MPI and \
             mpi4py): {error}\nendpoint log:\n{}",
            std::fs::read_to_string(home.join("endpoints/mpi/endpoint.log")).unwrap_or_default()
        )
    });
    assert_eq!(result.returncode, 0, "{result:?}");
    let mut lines: Vec<Vec<&str>> = result
        .stdout
        .lines()
        .map(|line| line.split(' ').collect())
        .collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 2, "{result:?}");
    let job = lines[0][2];
    for (rank, fields) in lines.iter().enumerate() {
        let (node_list, hosts) = (fields[3], fields[4]);
        assert_eq!(fields[..3], [&rank.to_string(), "2", job], "{result:?}");
        // The manager held the job's node as Slurm names it (`--block-nodes auto`), and gave
        // it to the task.
        assert_eq!(hosts, node_list, "{result:?}");
    }

    // The block's script: a job of two tasks on its node, whose one manager it runs itself,
    // told to take the job's nodes; nothing fans it out.
    let scripts = std::fs::read_dir(home.join("endpoints/mpi/blocks")).expect("the scripts");
    let script = scripts
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "sh"))
        .expect("the block's batch script");
    let script = std::fs::read_to_string(script).expect("the script");
    assert!(
        script.contains("\n#SBATCH --ntasks-per-node=2\n"),
        "{script}"
    );
    assert!(!script.contains("srun"), "{script}");
    let last = script.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("FUNCX_NODE_INDEX=0 ") && last.contains(" --block-nodes auto"),
        "{script}"
    );

    // The job is the endpoint's one block, with its one manager and its two workers.
    let shown = wait_status(&home, "mpi", "showing the block's manager", |s| {
        s["report"]["blocks"]
            .as_array()
            .is_some_and(|blocks| blocks.iter().any(|b| b["managers"] == 1))
    });
    let blocks = shown["report"]["blocks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(blocks.len(), 1, "{shown}");
    assert_eq!(
        blocks[0]["id"], job,
        "the ranks ran in the block's job: {shown}"
    );
    assert_eq!(shown["report"]["workers"], 2, "{shown}");

    let output = run(&home, &["stop", "mpi"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        queued_jobs(&[job.to_string()]),
        Vec::<String>::new(),
        "a Slurm job outlived stop"
    );
    assert_eq!(status(&home, "mpi")["state"], "stopped");
    drop(endpoint);
    client.shutdown().await;
}

/// The endpoint tells its gateway how many nodes one of its blocks has, before any block
/// runs: with blocks of two nodes, a task of three is refused at once, naming two (an
/// endpoint of one manager per node would say one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_block_endpoint_tells_its_gateway_its_blocks_node_count() {
    init_tracing();
    let dir = TempDir::new("slurm-block-count");
    let home = dir.0.join("home");
    let gateway = GatewayProcess::start(&dir.0);
    let id = configure_slurm(&home, &gateway.url, "wide", |config| {
        config
            .replace("# layout = \"per-node\"", "layout = \"per-block\"")
            .replace("nodes_per_block = 1", "nodes_per_block = 2")
            // No block: the count is the endpoint's to tell, not a running block's.
            .replace("init = 1", "init = 0")
    })
    .await;
    let endpoint = DetachedEndpoint::start(&home, "wide");
    let client = funcx::client::connect(&gateway.url, ALICE, &id)
        .await
        .expect("client");
    let mpi = MpiFunction::new("/usr/bin/python3 -c {program}").ranks(3);
    assert_refused(&client, &mpi, 3, 2).await;
    assert_eq!(
        status(&home, "wide")["report"]["blocks"],
        serde_json::json!([])
    );
    drop(endpoint);
    client.shutdown().await;
}
