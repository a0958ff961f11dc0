//! What a task needs of the machine that runs it (cores, GPUs, memory, whole nodes of a
//! block), and what an endpoint's own workers' machine offers.
//!
//! A task that asks for nothing ([`Resources::default`]: one core) runs as before, on any
//! worker. A task that asks for more runs only on one of the endpoint's own workers, and only
//! while what it asks for is free on their machine, so concurrent tasks never oversubscribe
//! it; a task that could never fit fails at once with [`crate::TaskError::is_unsatisfiable`].
//! A pool that relays to another endpoint ([`crate::Executor::attach_relay`], a gateway)
//! carries what a task asks for there, and that endpoint decides by the same rules.

use serde::{Deserialize, Serialize};

/// What one task needs while it runs: set with [`crate::TaskOptions::cores`],
/// [`crate::TaskOptions::gpus`], [`crate::TaskOptions::memory`] and
/// [`crate::TaskOptions::nodes`].
///
/// These are reservations the dispatcher accounts for, not limits it enforces: a task that
/// asked for one core and starts eight threads gets eight. GPU tasks see only the devices
/// granted to them, through `CUDA_VISIBLE_DEVICES` and its AMD and Intel kin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores (at least 1).
    pub cores: u32,
    /// GPUs, from the accelerators the endpoint advertises.
    pub gpus: u32,
    /// Bytes of memory; 0 asks for none in particular.
    pub memory: u64,
    /// Whole nodes of one block, held for this task alone while it runs (a multi-node MPI
    /// task: its launcher starts ranks on them); 0 asks for none, and the task runs within
    /// its worker's node. Cores, GPUs and memory are still asked of the worker's node.
    ///
    /// Not in the derived encoding, which must stay what it was before tasks could ask for
    /// nodes (gateways' stored records and idempotency fingerprints of tasks without nodes
    /// are unchanged): an endpoint sends it to its managers with the rest
    /// (`WorkItem::resources`), and a client and its gateway carry it next to the rest,
    /// only when it is not 0.
    #[serde(skip)]
    pub nodes: u32,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources {
            cores: 1,
            gpus: 0,
            memory: 0,
            nodes: 0,
        }
    }
}

impl Resources {
    /// Whether this asks for more than a plain task (one core, nothing else).
    pub fn is_special(&self) -> bool {
        *self != Resources::default()
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cores, {} GPUs, {} bytes of memory",
            self.cores, self.gpus, self.memory
        )?;
        if self.nodes > 0 {
            write!(f, ", {} nodes", self.nodes)?;
        }
        Ok(())
    }
}

/// Resources in full, nodes included: the encoding of [`crate::worker::WorkItem::resources`]
/// between an endpoint and its managers (`#[serde(with = "with_nodes")]`).
pub(crate) mod with_nodes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Resources;

    /// Encodes `resources` followed by its nodes.
    pub fn serialize<S: Serializer>(
        resources: &Option<Resources>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        resources
            .map(|resources| (resources, resources.nodes))
            .serialize(serializer)
    }

    /// Decodes what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Resources>, D::Error> {
        let full = Option::<(Resources, u32)>::deserialize(deserializer)?;
        Ok(full.map(|(resources, nodes)| Resources { nodes, ..resources }))
    }
}

/// What the machine of an endpoint's own workers offers tasks, set with
/// [`crate::ExecutorBuilder::cores`], [`crate::ExecutorBuilder::memory`],
/// [`crate::ExecutorBuilder::gpus`] and [`crate::ExecutorBuilder::nodes`]; or what a remote
/// manager says of its machine ([`crate::Executor::attach_with_capacity`]).
///
/// Unset, the cores are the number of workers (so plain tasks, one core each, are never held
/// back), the memory is unlimited, the GPUs are the accelerators the worker runtime
/// advertises ([`crate::WorkerRuntime::accelerators`]), and the nodes are this machine
/// alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// CPU cores tasks may reserve.
    pub cores: Option<u32>,
    /// Bytes of memory tasks may reserve.
    pub memory: Option<u64>,
    /// The ids of the GPUs tasks may be given (`"0"`, `"1"`, or UUIDs).
    pub gpus: Option<Vec<String>>,
    /// The host names of the block's nodes that multi-node tasks may be given
    /// ([`crate::TaskOptions::nodes`]), as the batch scheduler lists them.
    pub nodes: Option<Vec<String>>,
}

/// The environment variable that tells a task holding whole nodes
/// ([`crate::TaskOptions::nodes`]) how many it holds.
pub const NODES_VARIABLE: &str = "FUNCX_MPI_NODES";

/// The environment variable that names, comma-separated, the hosts of the nodes a task holds
/// ([`crate::TaskOptions::nodes`]); an MPI launcher's `{hosts}`.
pub const HOSTS_VARIABLE: &str = "FUNCX_MPI_HOSTS";

/// Environment variables that name the accelerators a process may use: NVIDIA, AMD and
/// Intel, as Parsl sets them. Workers pinned to a device and tasks granted GPUs get all
/// three.
pub const ACCELERATOR_VARIABLES: [&str; 3] = [
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
];

/// This machine's host name, as the kernel has it (what `hostname` prints, and how a batch
/// scheduler names the node); `localhost` where it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
