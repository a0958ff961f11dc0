//! [`Fleet`]: what a store shared by several gateways adds to [`super::TaskStore`].
//!
//! One gateway hands every task it accepts to its own endpoints' executors. Several
//! gateways on one store cannot: the endpoint a task is for may be connected to another
//! one. So in a fleet a task is handed out only by the gateway that *claims* it, and a
//! gateway claims only tasks of endpoints connected to it. A claim is a lease: the gateway
//! renews it while the endpoint stays connected, and a claim left to expire (the gateway
//! died, or the endpoint moved away) is taken by whichever gateway holds the endpoint next.
//! Gateways hear of each other's new tasks and results through the store's notifications
//! ([`FleetEvent`]), so that neither claiming nor a client's result stream polls.

use std::time::{Duration, SystemTime};

use super::{IdempotencyKey, Insertion, NewTask, StoreFuture, TaskRecord};

/// A notification from the store about another gateway's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    /// Another gateway stored tasks for endpoint `.0`: whoever holds it claims them.
    NewTasks(String),
    /// Another gateway stored the results of these tasks.
    Finished(Vec<u64>),
    /// Notifications may have been missed (the store's listening connection was re-made,
    /// or this listener fell behind): look at everything again.
    Resync,
}

/// Claims, leases and notifications of a store several gateways share.
pub trait Fleet: Send + Sync {
    /// This gateway's name in claims: unique per process.
    fn member(&self) -> &str;

    /// Claims for this gateway, for `lease`, at most `limit` unfinished tasks of `endpoint`
    /// that nobody holds or whose lease expired, oldest first; returns them. Two gateways
    /// claiming at once never get the same task.
    fn claim(
        &self,
        endpoint: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreFuture<'_, Vec<TaskRecord>>;

    /// Stores a submission as [`super::TaskStore::insert_tasks_once`] does under `key` (as
    /// [`super::TaskStore::insert_tasks`] does without one), and in the same write claims
    /// its tasks for this gateway if they are all for one endpoint and this gateway's lease
    /// on it runs for at least `margin` more: the gateway hands them to the endpoint
    /// connected to it at once, with no claim to wait for and no second write of each task.
    /// Returns what was stored and whether it was claimed; tasks stored unclaimed are
    /// announced to the fleet ([`FleetEvent::NewTasks`]) as any others.
    fn insert_claimed(
        &self,
        key: Option<IdempotencyKey>,
        tasks: Vec<NewTask>,
        now: SystemTime,
        margin: Duration,
    ) -> StoreFuture<'_, (Insertion, bool)>;

    /// Extends to `lease` from now this gateway's claims on the unfinished tasks of
    /// `endpoints` (those connected to it); returns how many endpoints' claims it renewed.
    /// A store keeps one lease per gateway and endpoint, so this costs the same however
    /// many tasks the gateway holds.
    fn renew(&self, endpoints: Vec<String>, lease: Duration) -> StoreFuture<'_, u64>;

    /// The records of tasks `ids` that exist, in no particular order: what a gateway reads
    /// when another reports results.
    fn tasks(&self, ids: Vec<u64>) -> StoreFuture<'_, Vec<TaskRecord>>;

    /// Notifications from now on (starting the store's listener on first use, so it must
    /// be called within a Tokio runtime). The first is a [`FleetEvent::Resync`], sent once
    /// the listener listens.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<FleetEvent>;
}
