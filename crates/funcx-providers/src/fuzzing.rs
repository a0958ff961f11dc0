//! Entry points for the fuzz targets of `crates/funcx-fuzz`: the parsers of what schedulers
//! and the EC2 API print, which arrive from outside the process.
//!
//! Each function takes arbitrary bytes, runs one parser and whatever reads the parsed value
//! (a block's state), and discards the answer: the fuzzer checks only that nothing panics,
//! hangs or allocates without bound. Not a stable API; compiled with the `fuzzing` feature.

use crate::gridengine::parse as sge;
use crate::{pbs, slurm, PbsFlavor};

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `squeue` output (`--format` as the Slurm provider asks for it) and the states it maps to.
pub fn slurm_squeue(data: &[u8]) {
    for job in slurm::parse_squeue(&text(data)).values() {
        let _ = job.block_state();
    }
}

/// `sacct` output and the states it maps to.
pub fn slurm_sacct(data: &[u8]) {
    for job in slurm::parse_sacct(&text(data)).values() {
        let _ = job.block_state();
    }
}

/// `sbatch --parsable` output.
pub fn slurm_sbatch(data: &[u8]) {
    let _ = slurm::parse_sbatch_id(&text(data));
}

/// `qstat -f -F json` (PBS Pro and OpenPBS), `qstat -f` text (Torque) and `qsub` output.
pub fn pbs_qstat(data: &[u8]) {
    let text = text(data);
    for flavor in [PbsFlavor::PbsPro, PbsFlavor::Torque] {
        if let Some(jobs) = pbs::parse_qstat_json(&text) {
            for job in jobs.values() {
                let _ = job.block_state(flavor);
            }
        }
        for job in pbs::parse_qstat_text(&text).values() {
            let _ = job.block_state(flavor);
        }
    }
    let _ = pbs::parse_qsub_id(&text);
}

/// Grid Engine's `qstat -xml`, `qacct -j`, `qsub` and `qstat -j` error outputs.
pub fn sge_qstat(data: &[u8]) {
    let text = text(data);
    if let Ok(jobs) = sge::parse_qstat(&text) {
        for letters in jobs.values() {
            let _ = sge::classify(letters);
        }
    }
    if let Some(accounting) = sge::parse_qacct(&text) {
        let _ = accounting.state();
    }
    if let Some(id) = sge::parse_job_id(&text) {
        let _ = sge::is_job_id(&id);
    }
    let _ = sge::parse_error_reason(&text);
}

/// EC2 Query API answers: `DescribeInstances`, `RunInstances` and error documents.
#[cfg(feature = "ec2")]
pub fn ec2_xml(data: &[u8]) {
    use crate::ec2::api;
    let text = text(data);
    if let Ok((instances, _next)) = api::parse_instances(&text) {
        let id = funcx_core::BlockId::new("b1");
        let _ = crate::ec2::block_state(&id, &instances, false);
    }
    let _ = api::instance_ids(&text);
    let _ = api::parse_error(400, &text).into_provider_error("fuzz", false);
}
