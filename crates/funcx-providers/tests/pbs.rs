//! The PBS provider (Torque flavour) against Slurm's PBS wrappers (`qsub`, `qstat`, `qdel`
//! in /opt/slurm-torque/bin, from `bash scripts/infra/pbs-slurm-up.sh`; the project's
//! `scripts/test` runs it first).
//!
//! No PBS server can be obtained on this machine (see scripts/infra/README.md), so this is
//! PBS *syntax* over Slurm's scheduler: it proves the commands, the id handling and the
//! text `qstat -f` parsing on real output (`job_state = R`, then `C`), not PBS's semantics.
//! The wrappers print no `exit_status`, so how a job ended is only unit-tested, on
//! hand-written PBS Pro and Torque output.
#![cfg(unix)]

use std::path::Path;
use std::time::Duration;

mod common;

use common::TempDir;
use funcx_core::{BlockId, BlockRequest, BlockState, ManagerCommand, Provider};
use funcx_providers::{PbsConfig, PbsFlavor, PbsProvider};

const BIN: &str = "/opt/slurm-torque/bin";

const LIMIT: Duration = Duration::from_secs(60);

/// Fails (not skips) without the wrappers: a green run must mean the provider was tested.
fn require_pbs() {
    assert!(
        Path::new(BIN).join("qsub").is_file() && Path::new(BIN).join("sbatch").exists(),
        "the PBS wrappers are not installed here: run bash scripts/infra/pbs-slurm-up.sh first"
    );
}

/// Cancels its block when dropped, so a failed test leaves no job behind.
struct Job(BlockId);

impl Drop for Job {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Path::new(BIN).join("qdel"))
            .arg(self.0.as_str())
            .status();
    }
}

fn provider(dir: &TempDir) -> PbsProvider {
    PbsProvider::new(
        PbsConfig::new(PbsFlavor::Torque)
            .commands_dir(BIN)
            .scripts_dir(dir.path()),
    )
}

async fn state_of(provider: &PbsProvider, id: &BlockId) -> BlockState {
    let statuses = provider
        .status(std::slice::from_ref(id))
        .await
        .expect("status");
    assert_eq!(statuses.len(), 1);
    statuses[0].state.clone()
}

async fn wait_for_state(
    provider: &PbsProvider,
    id: &BlockId,
    done: impl Fn(&BlockState) -> bool,
) -> BlockState {
    let result = tokio::time::timeout(LIMIT, async {
        loop {
            let state = state_of(provider, id).await;
            if done(&state) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    match result {
        Ok(state) => state,
        Err(_) => panic!(
            "block {id} did not reach the expected state in {LIMIT:?}; now {}",
            state_of(provider, id).await
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torque_block_runs_with_its_identity_and_cancels() {
    require_pbs();
    let dir = TempDir::new("identity");
    let provider = provider(&dir);
    let marker = dir.path().join("identity");
    let command = ManagerCommand::new("/bin/sh").args([
        "-c",
        "printf '%s %s %s' \"$FUNCX_BLOCK_ID\" \"$PBS_JOBID\" \"$FUNCX_NODE_INDEX\" > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"; exec sleep 300",
        "sh",
        &marker.to_string_lossy(),
    ]);
    let request = BlockRequest::new(command).walltime(Duration::from_secs(600));
    let id = provider.submit(&request).await.expect("submit");
    let _job = Job(id.clone());

    wait_for_state(&provider, &id, |s| *s == BlockState::Running).await;
    let written = tokio::time::timeout(LIMIT, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&marker) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the block wrote its identity");
    assert_eq!(written, format!("{id} {id} 0"));

    provider.cancel(&id).await.expect("cancel");
    let state = wait_for_state(&provider, &id, BlockState::is_finished).await;
    assert_eq!(state, BlockState::Cancelled);
    // qdel of a finished job fails silently in the wrappers; the provider asks qstat.
    provider
        .cancel(&id)
        .await
        .expect("cancel a cancelled block");

    // The job's output went to the scripts directory, not the current one.
    let outputs: Vec<_> = std::fs::read_dir(dir.path())
        .expect("scripts dir")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".out"))
        .collect();
    assert_eq!(
        outputs.len(),
        1,
        "one output file in {}",
        dir.path().display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_pbs_job_is_unknown_and_cancels_fine() {
    require_pbs();
    let dir = TempDir::new("unknown");
    let provider = provider(&dir);
    let never = BlockId::new("987654321");
    assert!(
        matches!(state_of(&provider, &never).await, BlockState::Unknown(_)),
        "never submitted"
    );
    provider
        .cancel(&never)
        .await
        .expect("cancel of an unknown job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_pbs_job_is_reported_finished() {
    require_pbs();
    let dir = TempDir::new("finished");
    let provider = provider(&dir);
    let id = provider
        .submit(&BlockRequest::new(
            ManagerCommand::new("/bin/sh").args(["-c", "exit 0"]),
        ))
        .await
        .expect("submit");
    let _job = Job(id.clone());
    let state = wait_for_state(&provider, &id, BlockState::is_finished).await;
    // The wrappers print `job_state = C` without an exit status, which the provider reports
    // rather than guesses over.
    match state {
        BlockState::Failed(why) => assert!(why.contains("no exit status"), "{why}"),
        other => panic!("expected the finished-without-status report, got {other:?}"),
    }
}
