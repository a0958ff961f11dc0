//! Reading what Grid Engine's commands print: `qsub -terse`, `qstat -xml`, `qstat -j`,
//! `qacct -j`.

use std::collections::HashMap;

use funcx_core::BlockState;

/// True for the ids Grid Engine issues: a job number.
pub(crate) fn is_job_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
}

/// The job id in what `qsub -terse` printed: the first line, without the task range an
/// array job adds (`5.1-4:1` → `5`).
pub(crate) fn parse_job_id(stdout: &str) -> Option<String> {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())?;
    let id = line.split('.').next()?;
    is_job_id(id).then(|| id.to_string())
}

/// The state letters of each job `qstat -xml` lists, by job number. A job listed more than
/// once (array tasks in several states) gets the letters of its most advanced entry.
pub(crate) fn parse_qstat(xml: &str) -> Result<HashMap<String, String>, String> {
    let document = roxmltree::Document::parse(xml).map_err(|error| error.to_string())?;
    let mut jobs: HashMap<String, String> = HashMap::new();
    for entry in document
        .descendants()
        .filter(|node| node.has_tag_name("job_list"))
    {
        let field = |name: &str| {
            entry
                .children()
                .find(|child| child.has_tag_name(name))
                .and_then(|child| child.text())
                .map(str::trim)
        };
        let (Some(number), Some(letters)) = (field("JB_job_number"), field("state")) else {
            continue;
        };
        let rank = |letters: &str| match classify(letters) {
            Listed::Error => 3,
            Listed::Running => 2,
            Listed::Pending => 1,
            Listed::Other => 0,
        };
        match jobs.get(number) {
            Some(known) if rank(known) >= rank(letters) => {}
            _ => {
                jobs.insert(number.to_string(), letters.to_string());
            }
        }
    }
    Ok(jobs)
}

/// What a `qstat` state means for a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listed {
    Pending,
    Running,
    Error,
    Other,
}

/// Classifies `qstat`'s state letters: `E` error, `r` running, `t` transferring, `R`
/// restarted, `s`/`S`/`T` suspended, `d` deleting, `q` queued, `w` waiting, `h` held.
pub(crate) fn classify(letters: &str) -> Listed {
    if letters.is_empty() || !letters.chars().all(|c| "EdhqwrtRsSTz".contains(c)) {
        return Listed::Other;
    }
    if letters.contains('E') {
        Listed::Error
    } else if letters.contains(['r', 't', 's', 'S', 'T']) {
        // Managers exist (suspended ones are stopped, and the endpoint will see them miss
        // heartbeats). A job being deleted (`dr`) runs until it is gone.
        Listed::Running
    } else if letters.contains(['q', 'w', 'h']) {
        Listed::Pending
    } else {
        // `d` alone, `R` alone, `z`: nothing funcx can rely on.
        Listed::Other
    }
}

/// The `error reason` lines of `qstat -j`, joined.
pub(crate) fn parse_error_reason(text: &str) -> Option<String> {
    let reasons: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("error reason"))
        .map(|rest| {
            // `error reason    1:      11/28/2026 06:16:49 [0:5942]: error: can't open ...`:
            // the task number, then the text after the timestamp and ids.
            let rest = rest.trim_start();
            let rest = rest.split_once(':').map_or(rest, |(_, after)| after).trim();
            rest.split_once("]: ")
                .map_or(rest, |(_, after)| after)
                .trim()
        })
        .filter(|reason| !reason.is_empty())
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// How a job ended, from its `qacct -j` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accounting {
    /// `failed`: 0, or Grid Engine's code and text (`37  : qmaster enforced h_rt ...`).
    pub(super) failed: (i64, String),
    /// `exit_status`: the job script's exit status (128 + signal when killed).
    pub(super) exit_status: i64,
}

impl Accounting {
    pub(crate) fn state(&self) -> BlockState {
        let (code, text) = &self.failed;
        let exit = match self.exit_status {
            0 => None,
            status if status > 128 => Some(format!(
                "exit status {status} (killed by signal {})",
                status - 128
            )),
            status => Some(format!("exit status {status}")),
        };
        match (code, exit) {
            (0, None) => BlockState::Completed,
            (0, Some(exit)) => BlockState::Failed(format!("the job ended with {exit}")),
            (37, _) => BlockState::Failed(format!(
                "walltime (h_rt) expired: Grid Engine killed the job ({code} : {text})"
            )),
            (_, exit) => BlockState::Failed(match exit {
                Some(exit) => format!("Grid Engine failed the job ({code} : {text}); {exit}"),
                None => format!("Grid Engine failed the job ({code} : {text})"),
            }),
        }
    }
}

/// The last record in `qacct -j` output (a rescheduled job has one per run).
pub(crate) fn parse_qacct(text: &str) -> Option<Accounting> {
    let mut last = None;
    for record in text.split("==========") {
        let mut failed = None;
        let mut exit_status = None;
        for line in record.lines() {
            let Some((key, value)) = line.trim().split_once(char::is_whitespace) else {
                continue;
            };
            let value = value.trim();
            match key {
                "failed" => {
                    let (code, text) = value.split_once(':').unwrap_or((value, ""));
                    failed = code
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .map(|code| (code, text.trim().to_string()));
                }
                "exit_status" => {
                    exit_status = value
                        .split_whitespace()
                        .next()
                        .and_then(|status| status.parse::<i64>().ok());
                }
                _ => {}
            }
        }
        if let (Some(failed), Some(exit_status)) = (failed, exit_status) {
            last = Some(Accounting {
                failed,
                exit_status,
            });
        }
    }
    last
}
