//! A gateway among several on one shared store ([`crate::store::Fleet`]): it hands out only
//! the tasks it claimed, for the endpoints connected to it, and tells its result streams of
//! the results other gateways stored.
//!
//! Three loops do it. Each connected endpoint has a *claimer*, woken when tasks for it may
//! be waiting (a submission here, a notification from another gateway, the endpoint
//! connecting, the periodic sweep), which claims them in batches and dispatches them to the
//! endpoint's executor. The *listener* turns the store's notifications into wakes and into
//! result events. The *keeper* renews this gateway's leases on the tasks of its connected
//! endpoints and wakes their claimers now and then: a lease another gateway left to expire
//! (it died) is taken over then — the only periodic work, and not on the path of a task
//! whose gateways are alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};
use tracing::{debug, warn};

use crate::gateway::{Gateway, Published, Shared};
use crate::store::{FleetEvent, TaskRecord};

/// How many tasks one claim takes at most.
const CLAIM_BATCH: usize = 2048;

/// The fleet side of a gateway's state.
pub(crate) struct FleetState {
    /// How long a claim lasts without renewal.
    pub(crate) lease: Duration,
    /// Each endpoint's claimer's wake-up.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl FleetState {
    pub(crate) fn new(lease: Duration) -> FleetState {
        FleetState {
            lease,
            wakers: Mutex::new(HashMap::new()),
        }
    }

    fn wakers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        match self.wakers.lock() {
            Ok(wakers) => wakers,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Wakes endpoint `endpoint`'s claimer, if it has one here. A wake while it works is
    /// kept: it looks once more after its current claim.
    pub(crate) fn wake(&self, endpoint: &str) {
        if let Some(waker) = self.wakers().get(endpoint) {
            waker.notify_one();
        }
    }

    /// How long this gateway's lease on an endpoint must still run for a submission to be
    /// claimed as it is stored ([`crate::store::Fleet::insert_claimed`]): the keeper renews
    /// every third of a lease, so a lease it keeps has two thirds left or more; one with
    /// less than a third is late, and may lapse before the submission's tasks are done.
    pub(crate) fn claim_at_insert_margin(&self) -> Duration {
        self.lease / 3
    }

    fn wake_all(&self) {
        for waker in self.wakers().values() {
            waker.notify_one();
        }
    }
}

/// How long a starting gateway waits for the store's listener to listen before it serves
/// anyway: it then tells its result streams to read by id once the listener does.
const LISTENING_WAIT: Duration = Duration::from_secs(30);

/// Starts the listener and the keeper of `gateway`, which must be in a fleet. Returns once
/// the listener listens, so that nothing another gateway finishes after this gateway
/// serves goes unheard: a client streaming results here from the start would not know to
/// read the missed ones by id.
pub(crate) async fn start(gateway: &Gateway) {
    let Some(fleet) = gateway.inner.store.fleet() else {
        return;
    };
    let mut events = fleet.subscribe();
    let mut listening = false;
    match tokio::time::timeout(LISTENING_WAIT, events.recv()).await {
        // The first notification is the resync of a listener that listens; anything else
        // also says that notifications flow.
        Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => listening = true,
        Ok(Err(broadcast::error::RecvError::Closed)) => return,
        Err(_) => warn!(
            wait = ?LISTENING_WAIT,
            "the store's listener does not listen yet; serving, and result streams read by id once it does"
        ),
    }
    tokio::spawn(listen(Arc::downgrade(&gateway.inner), events, listening));
    tokio::spawn(keep_leases(Arc::downgrade(&gateway.inner)));
}

/// Starts endpoint `endpoint`'s claimer (once per endpoint and process).
pub(crate) fn start_claimer(gateway: &Gateway, state: &FleetState, endpoint: &str) {
    let waker = Arc::new(Notify::new());
    {
        let mut wakers = state.wakers();
        if wakers.contains_key(endpoint) {
            return;
        }
        wakers.insert(endpoint.to_string(), waker.clone());
    }
    tokio::spawn(claim_loop(
        Arc::downgrade(&gateway.inner),
        endpoint.to_string(),
        waker,
    ));
}

/// Whether endpoint `endpoint` has a connection to this gateway now.
pub(crate) async fn connected(gateway: &Gateway, endpoint: &str) -> bool {
    match gateway.existing_runtime(endpoint) {
        Some(runtime) => !runtime.executor.pools().await.is_empty(),
        None => false,
    }
}

async fn claim_loop(shared: Weak<Shared>, endpoint: String, waker: Arc<Notify>) {
    loop {
        waker.notified().await;
        let Some(inner) = shared.upgrade() else {
            return;
        };
        let gateway = Gateway { inner };
        let Some(state) = gateway.inner.fleet.as_ref() else {
            return;
        };
        if !connected(&gateway, &endpoint).await {
            continue;
        }
        let Some(fleet) = gateway.inner.store.fleet() else {
            return;
        };
        loop {
            let claimed = match fleet.claim(&endpoint, CLAIM_BATCH, state.lease).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    // The next wake (at the latest the keeper's sweep) tries again.
                    warn!(endpoint = %endpoint, %error, "could not claim tasks");
                    break;
                }
            };
            let full = claimed.len() == CLAIM_BATCH;
            if !claimed.is_empty() {
                debug!(endpoint = %endpoint, tasks = claimed.len(), "claimed tasks");
                gateway.dispatch_records(claimed).await;
            }
            if !full {
                break;
            }
        }
    }
}

/// How many results of other gateways the listener gathers for one read of the store: a
/// quarter of the result streams' buffer, so that publishing one read does not make them
/// lag (a read may take one notification's worth more).
const READ_BATCH: usize = 1024;

/// Passes the store's notifications on: wakes for new tasks, result events for results.
/// Results announced together (several notifications already received) are read in one
/// query, not one per notification. After a gap (the listener listening again, or this
/// loop falling behind) every claimer looks for tasks and the result streams are told
/// that they may have missed some; `listening` says the listener's first listen, before
/// anyone could have streamed, was already seen.
async fn listen(
    shared: Weak<Shared>,
    mut events: broadcast::Receiver<FleetEvent>,
    mut listening: bool,
) {
    let mut ids = Vec::new();
    loop {
        let event = events.recv().await;
        let Some(inner) = shared.upgrade() else {
            return;
        };
        let Some(state) = inner.fleet.as_ref() else {
            return;
        };
        let mut next = Some(event);
        while let Some(event) = next.take() {
            match event {
                Ok(FleetEvent::NewTasks(endpoint)) => state.wake(&endpoint),
                Ok(FleetEvent::Finished(finished)) => ids.extend(finished),
                Ok(FleetEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    state.wake_all();
                    if listening {
                        let _ = inner.events.send(Published::Missed);
                    }
                    listening = true;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
            if ids.len() < READ_BATCH {
                next = match events.try_recv() {
                    Ok(event) => Some(Ok(event)),
                    Err(broadcast::error::TryRecvError::Empty) => None,
                    Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(missed)))
                    }
                    Err(broadcast::error::TryRecvError::Closed) => {
                        Some(Err(broadcast::error::RecvError::Closed))
                    }
                };
            }
        }
        if !ids.is_empty() {
            finished_elsewhere(&inner, std::mem::take(&mut ids)).await;
        }
    }
}

/// Tasks `ids` were settled by another gateway: a task that still runs through this one
/// (cancelled there, or taken over after this one's lease lapsed) is stopped, since its
/// outcome is stored and running on only wastes a worker; and their results go to this
/// gateway's result streams, read from the store only when some client streams here.
async fn finished_elsewhere(inner: &Arc<Shared>, ids: Vec<u64>) {
    Gateway {
        inner: inner.clone(),
    }
    .cancel_running(&ids);
    if inner.events.receiver_count() == 0 {
        return;
    }
    let Some(fleet) = inner.store.fleet() else {
        return;
    };
    match fleet.tasks(ids).await {
        Ok(records) => {
            for record in records.into_iter().filter(finished) {
                let _ = inner.events.send(Published::Finished(Arc::new(record)));
            }
        }
        Err(error) => warn!(%error, "could not read the results another gateway stored"),
    }
}

fn finished(record: &TaskRecord) -> bool {
    record.result.is_some()
}

/// Renews this gateway's leases on its connected endpoints' tasks, and sweeps: wakes their
/// claimers to take over leases that others left to expire.
async fn keep_leases(shared: Weak<Shared>) {
    loop {
        let period = match shared
            .upgrade()
            .and_then(|inner| inner.fleet.as_ref().map(|f| f.lease))
        {
            Some(lease) => lease / 3,
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(inner) = shared.upgrade() else {
            return;
        };
        let gateway = Gateway { inner };
        let (Some(state), Some(fleet)) =
            (gateway.inner.fleet.as_ref(), gateway.inner.store.fleet())
        else {
            return;
        };
        let endpoints: Vec<String> = state.wakers().keys().cloned().collect();
        let mut held = Vec::new();
        for endpoint in endpoints {
            if connected(&gateway, &endpoint).await {
                held.push(endpoint);
            }
        }
        if let Err(error) = fleet.renew(held.clone(), state.lease).await {
            warn!(%error, "could not renew this gateway's claims");
        }
        for endpoint in &held {
            state.wake(endpoint);
        }
    }
}
