//! The nodes of the block a manager runs in, as its batch scheduler lists them: what a
//! manager that holds its whole block (`funcx-manager --block-nodes auto`) gives multi-node
//! tasks ([`funcx_core::TaskOptions::nodes`]).
//!
//! Each scheduler tells a job its nodes its own way: Slurm in `SLURM_JOB_NODELIST`, in its
//! compressed form (`node[01-04],gpu7`, expanded by `scontrol show hostnames`); PBS Pro and
//! Torque in the file `PBS_NODEFILE` (a line per slot, so hosts repeat); Grid Engine in the
//! file `PE_HOSTFILE` (a line per host: name, slots, queue, processors).

use std::process::Command;

/// Which nodes a manager holds for multi-node tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockNodes {
    /// Those of its batch job, read from the scheduler when the manager starts.
    FromScheduler,
    /// These, by host name.
    Hosts(Vec<String>),
}

impl BlockNodes {
    /// `auto`, or a comma-separated list of host names.
    pub fn parse(text: &str) -> Result<BlockNodes, String> {
        if text == "auto" {
            return Ok(BlockNodes::FromScheduler);
        }
        let hosts: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(String::from)
            .collect();
        if hosts.is_empty() {
            return Err("--block-nodes takes `auto` or host names, comma-separated".into());
        }
        Ok(BlockNodes::Hosts(hosts))
    }

    /// The host names: as given, or as the scheduler of the batch job this process runs in
    /// lists them (an error saying what was looked for when none does).
    pub fn resolve(&self) -> Result<Vec<String>, String> {
        match self {
            BlockNodes::Hosts(hosts) => Ok(hosts.clone()),
            BlockNodes::FromScheduler => from_scheduler(|name| std::env::var(name).ok()),
        }
    }
}

fn from_scheduler(var: impl Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    if let Some(list) = var("SLURM_JOB_NODELIST").or_else(|| var("SLURM_NODELIST")) {
        return slurm_hostnames(&list);
    }
    if let Some(path) = var("PBS_NODEFILE") {
        return read_hosts(&path, "PBS_NODEFILE");
    }
    if let Some(path) = var("PE_HOSTFILE") {
        return read_hosts(&path, "PE_HOSTFILE");
    }
    Err(
        "--block-nodes auto: this process is not in a batch job that lists its nodes \
         (none of SLURM_JOB_NODELIST, PBS_NODEFILE, PE_HOSTFILE is set)"
            .into(),
    )
}

/// Slurm's compressed node list expanded by Slurm itself, which knows every form of it.
fn slurm_hostnames(list: &str) -> Result<Vec<String>, String> {
    let output = Command::new("scontrol")
        .args(["show", "hostnames", list])
        .output()
        .map_err(|error| format!("cannot run `scontrol show hostnames {list}`: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "`scontrol show hostnames {list}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let hosts = unique_first_words(&String::from_utf8_lossy(&output.stdout));
    if hosts.is_empty() {
        return Err(format!("`scontrol show hostnames {list}` listed no host"));
    }
    Ok(hosts)
}

fn read_hosts(path: &str, variable: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {variable} ({path}): {error}"))?;
    let hosts = unique_first_words(&text);
    if hosts.is_empty() {
        return Err(format!("{variable} ({path}) lists no host"));
    }
    Ok(hosts)
}

/// The first word of each line, each host once, in the order first seen.
fn unique_first_words(text: &str) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for host in text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        if !hosts.iter().any(|seen| seen == host) {
            hosts.push(host.to_owned());
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_or_auto() {
        assert_eq!(
            BlockNodes::parse("a, b,,c"),
            Ok(BlockNodes::Hosts(vec!["a".into(), "b".into(), "c".into()]))
        );
        assert_eq!(BlockNodes::parse("auto"), Ok(BlockNodes::FromScheduler));
        assert!(BlockNodes::parse(",").is_err());
    }

    #[test]
    fn pbs_and_grid_engine_files_list_each_host_once() {
        let dir = std::env::temp_dir().join(format!("funcx-nodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pbs = dir.join("pbs");
        std::fs::write(&pbs, "n1\nn1\nn2\nn2\n").expect("write");
        let sge = dir.join("sge");
        std::fs::write(&sge, "n3 4 all.q@n3 UNDEFINED\nn4 4 all.q@n4 UNDEFINED\n").expect("write");
        let pbs = pbs.display().to_string();
        let sge = sge.display().to_string();
        let env = |pbs: Option<&str>, sge: Option<&str>| {
            let (pbs, sge) = (pbs.map(String::from), sge.map(String::from));
            move |name: &str| match name {
                "PBS_NODEFILE" => pbs.clone(),
                "PE_HOSTFILE" => sge.clone(),
                _ => None,
            }
        };
        assert_eq!(
            from_scheduler(env(Some(&pbs), None)),
            Ok(vec!["n1".to_owned(), "n2".to_owned()])
        );
        assert_eq!(
            from_scheduler(env(None, Some(&sge))),
            Ok(vec!["n3".to_owned(), "n4".to_owned()])
        );
        let none = from_scheduler(env(None, None)).expect_err("no scheduler");
        assert!(none.contains("SLURM_JOB_NODELIST"), "{none}");
        let missing =
            from_scheduler(env(Some("/nonexistent/nodefile"), None)).expect_err("unreadable");
        assert!(missing.contains("PBS_NODEFILE"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
