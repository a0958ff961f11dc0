//! A task keeps one trace id from the gateway to the workers that run it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, ids, start, ALICE};
use funcx_client::EndpointDial;
use funcx_core::worker::{FunctionKey, WorkItem, WorkResult};
use funcx_core::{Function, TaskId};
use funcx_transport::remote::{
    run_manager, EchoRunner, ManagerConfig, ManagerId, ManagerInfo, Runner,
};
use serde_json::json;

/// Simulated workers that remember the trace id of every task they are given.
struct Tracing {
    inner: EchoRunner,
    traces: Arc<Mutex<Vec<Option<u64>>>>,
}

impl Runner for Tracing {
    fn slots(&self) -> usize {
        self.inner.slots()
    }

    fn define(&mut self, key: FunctionKey, function: Function) {
        self.inner.define(key, function);
    }

    fn run(&mut self, items: Vec<WorkItem>) {
        if let Ok(mut traces) = self.traces.lock() {
            traces.extend(items.iter().map(|item| item.trace));
        }
        self.inner.run(items);
    }

    fn cancel(&mut self, ids: Vec<TaskId>) {
        self.inner.cancel(ids);
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn held(&self) -> Vec<TaskId> {
        self.inner.held()
    }

    async fn next_results(&mut self) -> Vec<WorkResult> {
        self.inner.next_results().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_task_id_is_the_trace_at_the_endpoint() {
    let gw = start(config()).await;
    let function = gw.echo_function(ALICE).await;
    let (endpoint, token) = gw
        .register_endpoint(ALICE, json!({ "name": "traced" }))
        .await;
    let traces = Arc::new(Mutex::new(Vec::new()));
    let runner = Tracing {
        inner: EchoRunner::new(4),
        traces: traces.clone(),
    };
    let info = ManagerInfo {
        id: ManagerId(7),
        block: None,
        host: "test".into(),
        pid: std::process::id(),
        slots: 4,
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: Vec::new(),
    };
    let mut manager = ManagerConfig::new(info);
    manager.give_up_after = Duration::from_secs(30);
    let dial = EndpointDial::new(gw.addr.to_string(), &endpoint, &token);
    tokio::spawn(run_manager(dial, runner, manager));

    let (_, submitted) = gw.submit(ALICE, &endpoint, &function, &[1, 2, 3]).await;
    let submitted = ids(&submitted);
    for id in &submitted {
        gw.wait(ALICE, *id).await;
    }
    let mut seen: Vec<u64> = traces
        .lock()
        .expect("not poisoned")
        .iter()
        .flatten()
        .copied()
        .collect();
    seen.sort_unstable();
    let mut expected = submitted.clone();
    expected.sort_unstable();
    assert_eq!(
        seen, expected,
        "each task is traced by its gateway id at the endpoint"
    );
}
