//! A relay pool (a gateway, `Executor::attach_relay`) takes the tasks that ask for
//! resources and carries what they ask for; the endpoint behind it decides whether they fit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use funcx_core::worker::{ToWorker, WorkItem, Worker};
use funcx_core::{Executor, Function, Resources, TaskOptions};

/// How long the dispatcher may take to hand tasks out before the test fails.
const BOUND: Duration = Duration::from_secs(10);

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<WorkItem>>>);

impl Recorder {
    /// The items received once there are `count` of them.
    async fn items(&self, count: usize) -> Vec<WorkItem> {
        let wait = async {
            loop {
                let items = self.0.lock().expect("not poisoned").clone();
                if items.len() >= count {
                    return items;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(BOUND, wait)
            .await
            .expect("the tasks reach the pool")
    }
}

impl Worker for Recorder {
    fn send(&mut self, message: ToWorker) {
        if let ToWorker::Tasks(items) = message {
            self.0.lock().expect("not poisoned").extend(items);
        }
    }

    fn kill(&mut self) {}
}

fn f() -> Function {
    Function::from_source("def f(x):\n    return x\n", "f")
}

#[tokio::test]
async fn a_relay_takes_tasks_that_ask_for_resources_and_carries_what_they_ask() {
    let executor = Executor::builder().start_without_workers();
    let big = Resources {
        cores: 64,
        gpus: 2,
        memory: 1 << 30,
        nodes: 0,
    };
    // Queued before any pool attached: it waits for one rather than failing.
    let early = executor.submit_with(&f(), (0,), TaskOptions::new().cores(3));

    // A pool that says nothing of its machine takes no such task, and with it alone a new
    // one fails at once as unsatisfiable...
    let plain = Recorder::default();
    let _plain_events = executor
        .attach(Box::new(plain.clone()), 4, None)
        .await
        .expect("attach a plain pool");
    let error = tokio::time::timeout(BOUND, early)
        .await
        .expect("failed at once, not queued")
        .expect_err("no pool can run it");
    assert!(error.is_unsatisfiable(), "{error}");

    // ... but with a relay attached, the relay takes it with what it asks for.
    let relay = Recorder::default();
    let _relay_events = executor
        .attach_relay(Box::new(relay.clone()), 1_000_000)
        .await
        .expect("attach a relay");
    let special = executor.submit_with(&f(), (1,), TaskOptions::new().resources(big));
    let gpu = executor.submit_with(&f(), (2,), TaskOptions::new().gpus(1));
    let items = relay.items(2).await;
    let resources_of = |id| {
        items
            .iter()
            .find(|item| item.id == id)
            .map(|item| item.resources)
    };
    assert_eq!(resources_of(special.id()), Some(Some(big)));
    assert_eq!(
        resources_of(gpu.id()),
        Some(Some(Resources {
            gpus: 1,
            ..Resources::default()
        }))
    );
    assert!(
        plain.0.lock().expect("not poisoned").is_empty(),
        "the plain pool took a task that asks for resources"
    );

    // Plain tasks still go anywhere, and carry nothing: they cost what they did.
    let handles: Vec<_> = (0..20).map(|i| executor.submit(&f(), (i,))).collect();
    let plain_items = plain.items(1).await;
    let relayed = relay.items(3).await;
    for item in plain_items.iter().chain(&relayed[2..]) {
        assert!(handles.iter().any(|h| h.id() == item.id));
        assert_eq!(item.resources, None, "a plain task carries no resources");
    }
}
