//! The manager protocol: what an endpoint and the managers that dial in to it say.
//!
//! ```text
//!  manager                                   endpoint
//!     │ ── Hello { info, session, held } ──────▶ │  register, or resume a session
//!     │ ◀───────── Welcome { session, resumed } ─ │
//!     │ ◀───────── Work(Function | Tasks | Cancel | Shutdown)
//!     │ ── Results { seq, results } ───────────▶ │
//!     │ ◀───────── Ack { seq } ────────────────── │  results up to seq may be forgotten
//!     │ ◀──────── Heartbeat ────── Heartbeat ───▶ │  both ways, every period
//!     │ ── Leaving ────────────────────────────▶ │  (optional) asks to be drained
//!     │ ── Goodbye ────────────────────────────▶ │  drained, exiting
//! ```
//!
//! Delivery survives a dropped connection: a manager keeps every result until it is
//! acknowledged and re-sends the unacknowledged ones when it reconnects; the endpoint keeps
//! every task it sent until its result arrives and re-sends those the manager says it does
//! not hold. Results are keyed by task id, so a duplicate is recognised and dropped.

use std::time::Duration;

use funcx_core::worker::{ToWorker, WorkResult};
use funcx_core::{Capacity, TaskId};
use serde::{Deserialize, Serialize};

/// The identity a manager chooses at start (random), kept across its reconnections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ManagerId(pub u64);

impl std::fmt::Display for ManagerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "manager-{:016x}", self.0)
    }
}

/// What a manager tells the endpoint about itself when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerInfo {
    /// Its identity.
    pub id: ManagerId,
    /// The block (batch job, instance) it belongs to, as the provider named it.
    pub block: Option<String>,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// How many tasks it runs at once (its workers).
    pub slots: u32,
    /// Accelerators it pins its workers to.
    pub gpus: Vec<String>,
    /// CPU cores one task may reserve here; `None`: one per slot. An endpoint that dials its
    /// gateway as one manager says its largest node's, so that the gateway does not take
    /// its slots, spread over many nodes, for one machine's cores (protocol 3).
    pub cores: Option<u32>,
    /// Bytes of memory tasks may reserve here (its largest node's, for an endpoint);
    /// `None`: not said, so not limited here (protocol 3).
    pub memory: Option<u64>,
    /// The nodes of its block it holds for multi-node tasks, by host name, when it is its
    /// block's only manager (`funcx-manager --block-nodes`); empty: its own host alone. An
    /// endpoint dialling its gateway names the nodes of its block here, and the gateway
    /// fails at once a task asking for more nodes than that.
    pub nodes: Vec<String>,
}

impl ManagerInfo {
    /// What its machine offers tasks that ask for resources: its cores (a core per slot
    /// unless said), its memory, its GPUs, and its block's nodes (its own host unless it
    /// holds more).
    pub fn capacity(&self) -> Capacity {
        let nodes = if self.nodes.is_empty() {
            vec![self.host.clone()]
        } else {
            self.nodes.clone()
        };
        Capacity {
            cores: self.cores,
            memory: self.memory,
            gpus: Some(self.gpus.clone()),
            nodes: Some(nodes),
        }
    }
}

/// Manager → endpoint.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToEndpoint {
    /// The first message on every connection.
    Hello {
        /// Who is calling.
        info: ManagerInfo,
        /// The endpoint session this manager last belonged to, if any: when it matches the
        /// endpoint's, the session resumes.
        session: Option<u64>,
        /// Tasks the manager holds: received and unfinished, or finished and not yet
        /// acknowledged.
        held: Vec<TaskId>,
    },
    /// Finished tasks, numbered so that the endpoint can acknowledge them.
    Results {
        /// The sequence number of this batch; increases by one per batch.
        seq: u64,
        /// The results.
        results: Vec<WorkResult>,
    },
    /// Still alive.
    Heartbeat,
    /// Drained: every result was acknowledged, and the manager is exiting.
    Goodbye,
    /// The manager wants to leave (its endpoint is being stopped): send it no new work and
    /// drain it. The endpoint answers with `Work(Shutdown)`, after which the usual drain
    /// follows, ending in `Goodbye`.
    Leaving,
}

/// Endpoint → manager.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToManager {
    /// The answer to `Hello`.
    Welcome {
        /// The endpoint's session; the manager presents it when it reconnects.
        session: u64,
        /// Whether the endpoint still knows this manager. If not, the manager drops the
        /// tasks and results it held: nobody waits for them any more.
        resumed: bool,
        /// How often each side sends a heartbeat.
        heartbeat_period: Duration,
        /// How long each side waits without hearing anything before giving up on the other.
        heartbeat_threshold: Duration,
    },
    /// Functions, tasks, cancellations, or a request to drain (`ToWorker::Shutdown`).
    Work(ToWorker),
    /// Results up to and including batch `seq` arrived.
    Ack {
        /// The last batch received.
        seq: u64,
    },
    /// Still alive.
    Heartbeat,
    /// Cancel everything and exit now.
    Stop,
}
