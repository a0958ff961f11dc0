//! End to end on real processes: a `funcx-gateway` process, and a Slurm-backed endpoint
//! made with `funcx-endpoint configure` + `start --detach`. Tasks submitted over HTTP run on
//! Slurm blocks (real `sbatch`; the managers are `funcx-endpoint manager` inside the jobs),
//! `status` shows the blocks, `stop` drains with nothing lost and no job or process left, a
//! stop from the gateway ends the endpoint, and a revoked token is refused on restart.
//!
//! Needs Slurm (`scripts/test` brings it up with `scripts/infra/`); without it the test
//! fails, it does not skip.
#![cfg(all(unix, feature = "cli"))]

mod common;

use std::time::{Duration, Instant};

use common::proc::alive;
use common::processes::{run, text, GatewayProcess, ALICE};
use common::slurm::{
    call, configure_slurm, queued_jobs, require_slurm, status, wait_status, SLURM,
};
use common::{init_tracing, within, TempDir};
use funcx::Function;

const WHERE: &str = "import os, time\n\ndef where(x, pause):\n    time.sleep(pause)\n    return (x, os.environ.get('SLURM_JOB_ID', ''))\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slurm_endpoint_configured_started_stopped_and_revoked() {
    require_slurm();
    init_tracing();
    let dir = TempDir::new("slurm-endpoint");
    let home = dir.0.join("home");
    let gateway = GatewayProcess::start(&dir.0);
    let id = configure_slurm(&home, &gateway.url, "cluster", |config| config).await;

    let output = run(&home, &["start", "cluster", "--detach"]);
    assert!(output.status.success(), "{}", text(&output));
    let client = funcx::client::connect(&gateway.url, ALICE, &id)
        .await
        .expect("client");
    let where_ = Function::from_source(WHERE, "where");

    // Tasks over HTTP run on a Slurm block.
    let handles = client.submit_batch(&where_, (0..20).map(|i| (i, 0.05)));
    let mut jobs = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let (x, job): (i64, String) = within(SLURM, handle.result()).await.expect("a task");
        assert_eq!(x, i as i64);
        assert!(!job.is_empty(), "task {i} did not run in a Slurm job");
        if !jobs.contains(&job) {
            jobs.push(job);
        }
    }
    // An MPI task: mpirun starts 2 ranks inside the block's Slurm job (it takes the
    // allocation from Slurm), and the ranks see each other.
    let mpi = funcx::MpiFunction::new("/usr/bin/python3 -c {program}")
        .ranks(2)
        .oversubscribe();
    let program = "import os\nfrom mpi4py import MPI\nc = MPI.COMM_WORLD\n\
                   os.write(1, b'%d %d %s\\n' % (c.Get_rank(), c.allreduce(1), \
                   os.environ.get('SLURM_JOB_ID', '').encode()))\n";
    let handle = client.submit(
        &mpi.function(),
        funcx::Args::new().kwarg("program", program),
    );
    let result: funcx::ShellResult = within(SLURM, handle.result())
        .await
        .expect("the MPI task runs (scripts/infra/mpi-up.sh installs Open MPI and mpi4py)");
    let mut lines: Vec<&str> = result.stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 2, "{result:?}");
    for (rank, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            fields[..2],
            [rank.to_string(), "2".to_string()],
            "{result:?}"
        );
        assert!(
            jobs.iter().any(|job| job == fields[2]),
            "rank outside the block: {result:?}"
        );
    }

    wait_status(&home, "cluster", "showing its Slurm block", |s| {
        s["report"]["blocks"].as_array().is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b["state"] == "running" && b["managers"] == 1)
        })
    });
    let shown = status(&home, "cluster");
    let blocks: Vec<String> = shown["report"]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        jobs.iter().all(|job| blocks.contains(job)),
        "{jobs:?} vs {shown}"
    );
    assert_eq!(shown["report"]["workers"], 2, "{shown}");
    let endpoint_pid = shown["pid"].as_u64().unwrap() as u32;

    // Stop while tasks run: those the endpoint holds finish and are delivered, the rest wait
    // at the gateway; the Slurm job and the endpoint process are gone when stop returns.
    let handles = client.submit_batch(&where_, (0..6).map(|i| (i, 1.0)));
    wait_status(&home, "cluster", "running tasks", |s| {
        s["report"]["in_flight"].as_u64() > Some(0)
    });
    let output = run(&home, &["stop", "cluster"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!alive(endpoint_pid), "the endpoint process outlived stop");
    assert_eq!(
        queued_jobs(&blocks),
        Vec::<String>::new(),
        "a Slurm job outlived stop"
    );
    assert_eq!(status(&home, "cluster")["state"], "stopped");
    let (_, view) = call(
        reqwest::Method::GET,
        &format!("{}/v1/endpoints/{id}", gateway.url),
        None,
    )
    .await;
    assert_eq!(
        view["status"]["in_flight"], 0,
        "the endpoint delivered all it held: {view}"
    );

    // Restarted, it runs what waited: nothing was lost.
    let output = run(&home, &["start", "cluster", "--detach"]);
    assert!(output.status.success(), "{}", text(&output));
    for (i, handle) in handles.into_iter().enumerate() {
        let (x, job): (i64, String) = within(SLURM, handle.result())
            .await
            .unwrap_or_else(|e| panic!("task {i} lost across the stop: {e}"));
        assert_eq!(x, i as i64);
        assert!(!job.is_empty());
    }

    // A stop from the gateway ends the endpoint process and its blocks.
    let pid = status(&home, "cluster")["pid"].as_u64().unwrap() as u32;
    let blocks: Vec<String> = status(&home, "cluster")["report"]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    let (code, answer) = call(
        reqwest::Method::POST,
        &format!("{}/v1/endpoints/{id}/stop", gateway.url),
        None,
    )
    .await;
    assert_eq!(code, reqwest::StatusCode::ACCEPTED, "{answer}");
    let deadline = Instant::now() + SLURM;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the endpoint ignored the remote stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        queued_jobs(&blocks),
        Vec::<String>::new(),
        "a Slurm job outlived the remote stop"
    );
    let log =
        std::fs::read_to_string(home.join("endpoints/cluster/endpoint.log")).unwrap_or_default();
    assert!(log.contains("the gateway stopped this endpoint"), "{log}");

    // Revoked: the running endpoint is stopped, and its restart is refused with the reason.
    let output = run(&home, &["start", "cluster", "--detach"]);
    assert!(output.status.success(), "{}", text(&output));
    let pid = status(&home, "cluster")["pid"].as_u64().unwrap() as u32;
    let (code, _) = call(
        reqwest::Method::DELETE,
        &format!("{}/v1/endpoints/{id}/token", gateway.url),
        None,
    )
    .await;
    assert_eq!(code, reqwest::StatusCode::NO_CONTENT);
    let deadline = Instant::now() + SLURM;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the revoked endpoint kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = run(&home, &["start", "cluster", "--detach", "--wait", "5"]);
    assert!(!output.status.success(), "{}", text(&output));
    let said = text(&output);
    assert!(
        said.contains("401") && said.contains("wrong endpoint token"),
        "{said}"
    );
    assert_eq!(status(&home, "cluster")["state"], "stopped");
    client.shutdown().await;
}
