//! How a batch job starts one manager on each of its nodes, or one for the whole block.
//!
//! A batch script runs on the first node of its allocation only; a *launcher* (`srun`,
//! `mpiexec`, `aprun`) fans the manager command out to every node. Each launcher also tells
//! each copy which node it is on, through its own rank variable, which the rendered line
//! turns into [`NODE_INDEX_ENV`] before the manager starts. A block of
//! [`ManagerLayout::PerBlock`](funcx_core::ManagerLayout::PerBlock) fans nothing out: its one
//! manager runs in the batch script ([`Launcher::block_line`]).

use funcx_core::{BlockRequest, ManagerLayout, ProviderError, NODE_INDEX_ENV};

use super::shell::shell_quote;

/// Rejects a request for one manager for the whole block ([`ManagerLayout::PerBlock`]) from
/// a provider whose blocks (`blocks`: "local processes", "EC2 instances") run in no batch
/// job: such a manager would find no list of the block's nodes to hold (`funcx-manager
/// --block-nodes auto` reads the scheduler's), so it is refused before anything starts.
pub(crate) fn reject_per_block(blocks: &str, request: &BlockRequest) -> Result<(), ProviderError> {
    match request.manager_layout() {
        ManagerLayout::PerNode => Ok(()),
        ManagerLayout::PerBlock => Err(ProviderError::rejected(format!(
            "one manager for the whole block needs a batch job that lists the block's nodes \
             (Slurm, PBS, Grid Engine); {blocks} run in none: use one manager per node"
        ))),
    }
}

/// Starts one manager per node of a block, from inside the block's batch script.
///
/// ```
/// use funcx_providers::Launcher;
///
/// let srun = Launcher::srun();
/// assert_eq!(
///     srun.launch_line(2, "'funcx-manager'"),
///     "srun --ntasks=2 --ntasks-per-node=1 /bin/sh -c \
///      'FUNCX_NODE_INDEX=\"${SLURM_NODEID:-$SLURM_PROCID}\"; export FUNCX_NODE_INDEX; exec \"$@\"' \
///      funcx-manager 'funcx-manager'"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// Runs the manager once, in the batch script itself: for one-node blocks.
    SingleNode,
    /// `srun --ntasks=<nodes> --ntasks-per-node=1 <extra_args>`: Slurm's own launcher.
    Srun {
        /// Extra `srun` arguments, each one word (e.g. `--cpu-bind=none`); shell-quoted.
        extra_args: Vec<String>,
    },
    /// `mpiexec -n <nodes> -ppn 1 <extra_args>` (MPICH / Intel MPI / Cray PALS syntax).
    Mpiexec {
        /// Extra `mpiexec` arguments, each one word; shell-quoted.
        extra_args: Vec<String>,
    },
    /// `aprun -n <nodes> -N 1 <extra_args>`: Cray ALPS.
    Aprun {
        /// Extra `aprun` arguments, each one word; shell-quoted.
        extra_args: Vec<String>,
    },
    /// Runs the manager once behind `prefix`, e.g. a container command
    /// (`singularity exec image.sif`). The prefix is shell text, inserted as written, and
    /// must pass the environment through to the manager. Like [`Launcher::SingleNode`], it
    /// starts one manager: for one-node blocks, or a prefix that fans out by itself.
    Wrapped {
        /// Shell text put before the manager command.
        prefix: String,
    },
}

impl Default for Launcher {
    /// [`Launcher::SingleNode`].
    fn default() -> Self {
        Launcher::SingleNode
    }
}

/// The shell snippet each launched copy runs: sets the node index from the launcher's rank
/// variable, then becomes the manager (`exec`, so signals from the launcher reach it).
fn per_node(rank: &str) -> String {
    shell_quote(&format!(
        "{NODE_INDEX_ENV}=\"{rank}\"; export {NODE_INDEX_ENV}; exec \"$@\""
    ))
}

fn words(args: &[String]) -> String {
    args.iter()
        .map(|arg| format!(" {}", shell_quote(arg)))
        .collect()
}

impl Launcher {
    /// `srun` with no extra arguments.
    pub fn srun() -> Launcher {
        Launcher::Srun {
            extra_args: Vec::new(),
        }
    }

    /// `mpiexec` with no extra arguments.
    pub fn mpiexec() -> Launcher {
        Launcher::Mpiexec {
            extra_args: Vec::new(),
        }
    }

    /// `aprun` with no extra arguments.
    pub fn aprun() -> Launcher {
        Launcher::Aprun {
            extra_args: Vec::new(),
        }
    }

    /// Whether this launcher starts a manager on each of `nodes` nodes. The one-copy
    /// launchers reject more than one node, since the other nodes would sit idle while
    /// being paid for.
    pub fn check(&self, nodes: usize) -> Result<(), ProviderError> {
        match self {
            Launcher::SingleNode | Launcher::Wrapped { .. } if nodes > 1 => {
                Err(ProviderError::rejected(format!(
                    "the {} launcher starts one manager, but the block asks for {nodes} nodes; \
                     use srun, mpiexec or aprun for multi-node blocks",
                    self.name()
                )))
            }
            _ => Ok(()),
        }
    }

    /// A short name for messages: `single-node`, `srun`, `mpiexec`, `aprun`, `wrapped`.
    pub fn name(&self) -> &'static str {
        match self {
            Launcher::SingleNode => "single-node",
            Launcher::Srun { .. } => "srun",
            Launcher::Mpiexec { .. } => "mpiexec",
            Launcher::Aprun { .. } => "aprun",
            Launcher::Wrapped { .. } => "wrapped",
        }
    }

    /// The shell line that starts `command` (already shell-quoted words) once, as node 0, in
    /// the batch script itself: the one manager of a block that holds all its nodes, which
    /// must see the job's node list and launch ranks across the allocation itself, so no
    /// launcher fans it out. A [`Launcher::Wrapped`] prefix (a container runtime) still goes
    /// before it.
    pub fn block_line(&self, command: &str) -> String {
        match self {
            Launcher::Wrapped { .. } => self.launch_line(1, command),
            _ => Launcher::SingleNode.launch_line(1, command),
        }
    }

    /// The shell line that starts `command` (already shell-quoted words) once on each of
    /// `nodes` nodes, with [`NODE_INDEX_ENV`] set for each copy.
    pub fn launch_line(&self, nodes: usize, command: &str) -> String {
        // `$0` of the per-node shell names the manager in `ps` and in error messages.
        let fan_out = |launcher: String, rank: &str| {
            format!(
                "{launcher} /bin/sh -c {} funcx-manager {command}",
                per_node(rank)
            )
        };
        match self {
            Launcher::SingleNode => format!("{NODE_INDEX_ENV}=0 {command}"),
            Launcher::Wrapped { prefix } => format!("{NODE_INDEX_ENV}=0 {prefix} {command}"),
            Launcher::Srun { extra_args } => fan_out(
                format!(
                    "srun --ntasks={nodes} --ntasks-per-node=1{}",
                    words(extra_args)
                ),
                // One task per node, so the node id and the task rank agree; the rank is the
                // fallback for srun setups that do not export the node id.
                "${SLURM_NODEID:-$SLURM_PROCID}",
            ),
            Launcher::Mpiexec { extra_args } => fan_out(
                format!("mpiexec -n {nodes} -ppn 1{}", words(extra_args)),
                // MPICH/Hydra, Open MPI and PMIx-based launchers each name the rank
                // differently.
                "${PMI_RANK:-${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-0}}}",
            ),
            Launcher::Aprun { extra_args } => fan_out(
                format!("aprun -n {nodes} -N 1{}", words(extra_args)),
                "${ALPS_APP_PE:-0}",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "'/opt/funcx-manager' '--workers' '2'";
    const PER_NODE: &str = "/bin/sh -c 'FUNCX_NODE_INDEX=\"RANK\"; export FUNCX_NODE_INDEX; exec \"$@\"' funcx-manager '/opt/funcx-manager' '--workers' '2'";

    fn per_node_with(rank: &str) -> String {
        PER_NODE.replace("RANK", rank)
    }

    #[test]
    fn single_node_runs_the_command_as_node_0() {
        assert_eq!(
            Launcher::SingleNode.launch_line(1, CMD),
            format!("FUNCX_NODE_INDEX=0 {CMD}")
        );
    }

    #[test]
    fn wrapped_puts_the_prefix_before_the_command() {
        let launcher = Launcher::Wrapped {
            prefix: "singularity exec /images/py.sif".into(),
        };
        assert_eq!(
            launcher.launch_line(1, CMD),
            format!("FUNCX_NODE_INDEX=0 singularity exec /images/py.sif {CMD}")
        );
    }

    #[test]
    fn srun_runs_one_task_per_node_with_the_node_id() {
        let launcher = Launcher::Srun {
            extra_args: vec!["--cpu-bind=none".into(), "--label x".into()],
        };
        assert_eq!(
            launcher.launch_line(3, CMD),
            format!(
                "srun --ntasks=3 --ntasks-per-node=1 '--cpu-bind=none' '--label x' {}",
                per_node_with("${SLURM_NODEID:-$SLURM_PROCID}")
            )
        );
    }

    #[test]
    fn mpiexec_runs_one_rank_per_node() {
        assert_eq!(
            Launcher::mpiexec().launch_line(4, CMD),
            format!(
                "mpiexec -n 4 -ppn 1 {}",
                per_node_with("${PMI_RANK:-${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-0}}}")
            )
        );
    }

    #[test]
    fn aprun_runs_one_pe_per_node() {
        assert_eq!(
            Launcher::aprun().launch_line(2, CMD),
            format!("aprun -n 2 -N 1 {}", per_node_with("${ALPS_APP_PE:-0}"))
        );
    }

    #[test]
    fn the_block_line_never_fans_out_and_keeps_a_wrapper() {
        for launcher in [
            Launcher::SingleNode,
            Launcher::srun(),
            Launcher::mpiexec(),
            Launcher::aprun(),
        ] {
            assert_eq!(
                launcher.block_line(CMD),
                format!("FUNCX_NODE_INDEX=0 {CMD}")
            );
        }
        let wrapped = Launcher::Wrapped {
            prefix: "apptainer exec py.sif".into(),
        };
        assert_eq!(
            wrapped.block_line(CMD),
            format!("FUNCX_NODE_INDEX=0 apptainer exec py.sif {CMD}")
        );
    }

    #[test]
    fn one_copy_launchers_reject_multi_node_blocks() {
        assert!(Launcher::SingleNode.check(1).is_ok());
        let error = Launcher::SingleNode.check(2).unwrap_err();
        assert!(error.is_rejected(), "{error}");
        assert!(error.to_string().contains("2 nodes"), "{error}");
        let wrapped = Launcher::Wrapped { prefix: "x".into() };
        assert!(wrapped.check(3).is_err());
        assert!(Launcher::srun().check(64).is_ok());
        assert!(Launcher::mpiexec().check(64).is_ok());
        assert!(Launcher::aprun().check(64).is_ok());
    }

    /// The per-node snippet really exports the index to the program it execs.
    #[test]
    fn the_per_node_snippet_runs_in_a_real_shell() {
        let line = Launcher::mpiexec().launch_line(1, "'sh' '-c' 'echo \"$FUNCX_NODE_INDEX\"'");
        let snippet = line.trim_start_matches("mpiexec -n 1 -ppn 1 ");
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("PMI_RANK=5 {snippet}"))
            .output()
            .expect("run /bin/sh");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "5\n");
    }
}
