//! What a task needs of the machine that runs it (cores, GPUs, memory), and what an
//! endpoint's own workers' machine offers.
//!
//! A task that asks for nothing ([`Resources::default`]: one core) runs as before, on any
//! worker. A task that asks for more runs only on one of the endpoint's own workers, and only
//! while what it asks for is free on their machine, so concurrent tasks never oversubscribe
//! it; a task that could never fit fails at once with [`crate::TaskError::is_unsatisfiable`].
//! A pool that relays to another endpoint ([`crate::Executor::attach_relay`], a gateway)
//! carries what a task asks for there, and that endpoint decides by the same rules.

use serde::{Deserialize, Serialize};

/// What one task needs while it runs: set with [`crate::TaskOptions::cores`],
/// [`crate::TaskOptions::gpus`] and [`crate::TaskOptions::memory`].
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
}

impl Default for Resources {
    fn default() -> Resources {
        Resources {
            cores: 1,
            gpus: 0,
            memory: 0,
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
        )
    }
}

/// What the machine of an endpoint's own workers offers tasks, set with
/// [`crate::ExecutorBuilder::cores`], [`crate::ExecutorBuilder::memory`] and
/// [`crate::ExecutorBuilder::gpus`].
///
/// Unset, the cores are the number of workers (so plain tasks, one core each, are never held
/// back), the memory is unlimited, and the GPUs are the accelerators the worker runtime
/// advertises ([`crate::WorkerRuntime::accelerators`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// CPU cores tasks may reserve.
    pub cores: Option<u32>,
    /// Bytes of memory tasks may reserve.
    pub memory: Option<u64>,
    /// The ids of the GPUs tasks may be given (`"0"`, `"1"`, or UUIDs).
    pub gpus: Option<Vec<String>>,
}

/// Environment variables that name the accelerators a process may use: NVIDIA, AMD and
/// Intel, as Parsl sets them. Workers pinned to a device and tasks granted GPUs get all
/// three.
pub const ACCELERATOR_VARIABLES: [&str; 3] = [
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
];
