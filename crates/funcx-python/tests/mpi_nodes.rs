//! Multi-node MPI tasks on a real `funcx-manager` process that holds its block's nodes
//! (`--block-nodes`), run by real Open MPI with Debian's mpi4py (scripts/infra/mpi-up.sh):
//! a task holds whole nodes while it runs and its launcher is given their host names, tasks
//! never share a node, a task waits until enough nodes are free, and one asking for more
//! nodes than the block has fails at once.
//!
//! On Slurm (scripts/infra/slurm-up.sh), a manager in a batch job takes its nodes from the
//! job. This machine is one node; its two names (its host name and `localhost`) stand for a
//! block of two nodes. Open MPI starts ranks on both locally, so the ranks of one task still
//! see each other, while the manager accounts for them as two nodes.

use std::time::Duration;

use funcx_core::{Args, MpiFunction, ShellResult, TaskOptions};

mod common;

use common::Manager;

/// How long the whole batch may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(120);

/// Rank 0 reports when the ranks started and ended (after all reached the end), how many
/// ranks answered, and the hosts the task was given.
const PROGRAM: &str = "import os, time\n\
from mpi4py import MPI\n\
c = MPI.COMM_WORLD\n\
start = c.allreduce(time.time(), op=MPI.MIN)\n\
size = c.allreduce(1)\n\
time.sleep(3)\n\
c.Barrier()\n\
if c.Get_rank() == 0:\n    \
os.write(1, ('%f %f %d %s\\n' % (start, time.time(), size, os.environ.get('FUNCX_MPI_HOSTS', ''))).encode())\n";

/// What rank 0 reported of one task.
#[derive(Debug)]
struct Run {
    start: f64,
    end: f64,
    ranks: u32,
    hosts: Vec<String>,
}

fn parse(result: &ShellResult) -> Run {
    assert_eq!(result.returncode, 0, "{result:?}");
    let fields: Vec<&str> = result.stdout.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{result:?}");
    let number = |i: usize| fields[i].parse::<f64>().expect("a number");
    Run {
        start: number(0),
        end: number(1),
        ranks: fields[2].parse().expect("a rank count"),
        hosts: fields[3].split(',').map(String::from).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_tasks_hold_whole_nodes_of_the_managers_block() {
    let endpoint = common::endpoint(0, Duration::from_secs(10)).await;
    let executor = endpoint.executor.clone();
    let block = [funcx_core::hostname(), "localhost".to_owned()];
    let _manager = Manager::start_with(endpoint.address, 3, &["--block-nodes", &block.join(",")]);
    common::managers(&executor, 1).await;

    let mpi = MpiFunction::new("/usr/bin/python3 -c {program}")
        .shell(|shell| shell.walltime(Duration::from_secs(60)));
    let function = mpi.function();
    // One task of 2 nodes and four of 1, submitted at once to 3 workers: the nodes, not the
    // workers, decide what runs together.
    let asked: Vec<(u32, u32)> = vec![(2, 4), (1, 2), (1, 2), (1, 2), (1, 2)];
    let handles: Vec<_> = asked
        .iter()
        .map(|&(nodes, ranks)| {
            executor.submit_with(
                &function,
                Args::new().kwarg("program", PROGRAM).kwarg("ranks", &ranks),
                TaskOptions::new().nodes(nodes),
            )
        })
        .collect();
    let runs = common::within("the MPI tasks", LIMIT, async {
        let mut runs = Vec::new();
        for handle in handles {
            let result: ShellResult = handle
                .result()
                .await
                .expect("an MPI task that fits the block runs");
            runs.push(parse(&result));
        }
        runs
    })
    .await;

    for (run, &(nodes, ranks)) in runs.iter().zip(&asked) {
        assert_eq!(run.ranks, ranks, "every rank answered: {run:?}");
        assert_eq!(run.hosts.len(), nodes as usize, "given its nodes: {run:?}");
        assert!(
            run.hosts.iter().all(|host| block.contains(host)),
            "nodes of the block: {run:?}"
        );
    }
    // Tasks that ran at the same time never held the same node.
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            let overlapped = a.start < b.end && b.start < a.end;
            let shared = a.hosts.iter().any(|host| b.hosts.contains(host));
            assert!(
                !(overlapped && shared),
                "two tasks held a node at once: {a:?} {b:?}"
            );
        }
    }
    // Two one-node tasks did run side by side: the block's two nodes were both used.
    let ones: Vec<&Run> = runs[1..].iter().collect();
    assert!(
        ones.iter().enumerate().any(|(i, a)| ones[i + 1..]
            .iter()
            .any(|b| a.start < b.end && b.start < a.end)),
        "one-node tasks ran one at a time on a block of two nodes: {runs:?}"
    );

    // Three nodes of a block of two: refused at once, saying why.
    assert_refused(&executor, &function, 3).await;
}

/// Submits a task of `nodes` nodes, more than any block has, and checks that it fails at
/// once as unsatisfiable, naming the count.
async fn assert_refused(
    executor: &funcx_core::Executor,
    function: &funcx_core::Function,
    nodes: u32,
) {
    let error = common::within(
        "the refusal",
        Duration::from_secs(10),
        executor
            .submit_with(
                function,
                Args::new().kwarg("program", PROGRAM),
                TaskOptions::new().nodes(nodes),
            )
            .result::<ShellResult>(),
    )
    .await
    .expect_err("no block has that many nodes");
    assert!(error.is_unsatisfiable(), "{error}");
    assert!(
        error.to_string().contains(&format!("{nodes} nodes")),
        "{error}"
    );
}

/// A batch job of Slurm's (scripts/infra/slurm-up.sh: one node), cancelled when dropped so
/// that no test leaves one queued.
struct SlurmJob {
    id: String,
}

impl SlurmJob {
    /// Submits `command` as a job of one node and `tasks` tasks, its output in `output`.
    fn submit(tasks: u32, command: &str, output: &std::path::Path) -> SlurmJob {
        let submitted = std::process::Command::new("sbatch")
            .args([
                "--parsable",
                "-N",
                "1",
                "-n",
                &tasks.to_string(),
                "--time",
                "5",
            ])
            .arg("--output")
            .arg(output)
            .args(["--wrap", command])
            .env("FUNCX_TOKEN", common::TOKEN)
            .env("RUST_LOG", "warn")
            .output()
            .expect("Slurm's sbatch runs (scripts/infra/slurm-up.sh installs it)");
        assert!(
            submitted.status.success(),
            "sbatch: {}",
            String::from_utf8_lossy(&submitted.stderr)
        );
        let id = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
        SlurmJob { id }
    }
}

impl Drop for SlurmJob {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scancel").arg(&self.id).status();
    }
}

/// Slurm's names of its nodes (`sinfo`), expanded as a job would see them.
fn slurm_nodes() -> Vec<String> {
    let listed = std::process::Command::new("sinfo")
        .args(["-h", "-o", "%N"])
        .output()
        .expect("Slurm's sinfo runs (scripts/infra/slurm-up.sh installs it)");
    let list = String::from_utf8_lossy(&listed.stdout).trim().to_owned();
    let expanded = std::process::Command::new("scontrol")
        .args(["show", "hostnames", &list])
        .output()
        .expect("scontrol runs");
    String::from_utf8_lossy(&expanded.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// A manager started inside a Slurm batch job with `--block-nodes auto` holds the job's
/// nodes as Slurm names them (`SLURM_JOB_NODELIST`, expanded by `scontrol show hostnames`):
/// an MPI task of one node runs its ranks there, with Open MPI inside the job's
/// allocation, and a task of more nodes than the job has is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_in_a_slurm_job_holds_the_jobs_nodes() {
    let nodes = slurm_nodes();
    assert_eq!(nodes.len(), 1, "the test cluster has one node: {nodes:?}");
    let endpoint = common::endpoint(0, Duration::from_secs(10)).await;
    let executor = endpoint.executor.clone();
    let output = std::env::temp_dir().join(format!("funcx-slurm-mpi-{}.out", std::process::id()));
    let command = format!(
        "exec {} --endpoint {} --workers 1 --block-nodes auto --give-up-after 20",
        env!("CARGO_BIN_EXE_funcx-manager"),
        endpoint.address
    );
    let job = SlurmJob::submit(2, &command, &output);
    // Other tests' jobs may hold the node's cores for a while: this bounds a broken
    // cluster, not a busy one.
    let attached = executor.clone();
    common::wait_until(
        "the manager in the Slurm job attaches",
        Duration::from_secs(120),
        move || {
            let executor = attached.clone();
            async move { executor.stats().await.managers == 1 }
        },
    )
    .await;

    let mpi = MpiFunction::new("/usr/bin/python3 -c {program}")
        .shell(|shell| shell.walltime(Duration::from_secs(60)));
    let function = mpi.function();
    let result: ShellResult = common::within(
        "the MPI task",
        LIMIT,
        executor
            .submit_with(
                &function,
                Args::new().kwarg("program", PROGRAM).kwarg("ranks", &2),
                TaskOptions::new().nodes(1),
            )
            .result(),
    )
    .await
    .unwrap_or_else(|error| {
        let log = std::fs::read_to_string(&output).unwrap_or_default();
        panic!("an MPI task of the job's one node runs: {error}\njob output:\n{log}")
    });
    let run = parse(&result);
    assert_eq!(run.ranks, 2, "every rank answered: {run:?}");
    assert_eq!(
        run.hosts, nodes,
        "the job's node, as Slurm names it: {run:?}"
    );

    // Two nodes of a job of one: refused at once.
    assert_refused(&executor, &function, 2).await;
    drop(job);
    let _ = std::fs::remove_file(&output);
}

#[test]
fn a_manager_outside_a_batch_job_says_it_cannot_list_its_nodes() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_funcx-manager"))
        .args([
            "--endpoint",
            "127.0.0.1:9",
            "--token",
            "t",
            "--block-nodes",
            "auto",
            "--give-up-after",
            "1",
        ])
        .env_remove("SLURM_JOB_NODELIST")
        .env_remove("SLURM_NODELIST")
        .env_remove("PBS_NODEFILE")
        .env_remove("PE_HOSTFILE")
        .output()
        .expect("funcx-manager runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("SLURM_JOB_NODELIST"), "{stderr}");
}
