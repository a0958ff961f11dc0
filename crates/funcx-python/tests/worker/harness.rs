//! One real worker and the events it reports.

use std::time::Duration;

use funcx_core::worker::{
    FunctionKey, ToWorker, WorkItem, WorkResult, Worker, WorkerEvent, WorkerEvents, WorkerId,
    WorkerRuntime,
};
use funcx_core::{Args, Function, Payload, TaskError, TaskId, WorkerExit};
use funcx_python::{PythonConfig, PythonRuntime};
use tokio::sync::mpsc;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// One worker and the events it reports.
pub(crate) struct Harness {
    pub(crate) worker: Box<dyn Worker>,
    pub(crate) events: mpsc::UnboundedReceiver<(WorkerId, WorkerEvent)>,
    pub(crate) next_key: u32,
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        Harness::with(PythonConfig::new(), 0).await
    }

    pub(crate) async fn with(config: PythonConfig, index: usize) -> Harness {
        let mut harness = Harness::spawn(config, index).await;
        match harness.event().await {
            WorkerEvent::Ready => {}
            other => panic!("expected Ready, got {other:?}"),
        }
        harness
    }

    pub(crate) async fn spawn(config: PythonConfig, index: usize) -> Harness {
        // Worker output and protocol complaints show up in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("funcx=debug,funcx_python=debug")
            .try_init();
        let (tx, events) = mpsc::unbounded_channel();
        // Runs the suite against another interpreter, e.g. the oldest supported Python.
        let config = match std::env::var_os("FUNCX_TEST_PYTHON") {
            Some(python) => config.python(python),
            None => config,
        };
        let runtime = PythonRuntime::new(config);
        let worker = runtime
            .spawn(index, WorkerEvents::new(WorkerId(index as u64), tx))
            .await
            .expect("spawn");
        Harness {
            worker,
            events,
            next_key: 0,
        }
    }

    pub(crate) async fn event(&mut self) -> WorkerEvent {
        match tokio::time::timeout(TIMEOUT, self.events.recv()).await {
            Ok(Some((_, event))) => event,
            Ok(None) => panic!("event channel closed"),
            Err(_) => panic!("no event within {TIMEOUT:?}"),
        }
    }

    pub(crate) fn define(&mut self, source: &str, name: &str) -> FunctionKey {
        self.define_function(Function::from_source(source, name))
    }

    pub(crate) fn define_function(&mut self, function: Function) -> FunctionKey {
        let key = FunctionKey(self.next_key);
        self.next_key += 1;
        self.worker.send(ToWorker::Function { key, function });
        key
    }

    pub(crate) fn submit(&mut self, key: FunctionKey, args: Args, isolate: bool) -> TaskId {
        let id = TaskId::next();
        self.send_task(id, key, args, isolate);
        id
    }

    /// Sends task `id` again (a resent task keeps its id), with `args`.
    pub(crate) fn submit_as(&mut self, id: TaskId, key: FunctionKey, args: Args) {
        self.send_task(id, key, args, false);
    }

    fn send_task(&mut self, id: TaskId, key: FunctionKey, args: Args, isolate: bool) {
        self.worker.send(ToWorker::Tasks(vec![WorkItem {
            id,
            function: key,
            isolate,
            args,
            timeout: None,
            trace: None,
            env: Vec::new(),
            resources: None,
        }]));
    }

    /// The next `n` results, failing on any other event.
    pub(crate) async fn results(&mut self, n: usize) -> Vec<WorkResult> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.event().await {
                WorkerEvent::Results(results) => out.extend(results),
                other => panic!("expected results, got {other:?} after {}", out.len()),
            }
        }
        assert_eq!(out.len(), n, "more results than tasks");
        out
    }

    pub(crate) async fn run(
        &mut self,
        source: &str,
        name: &str,
        args: Args,
    ) -> Result<Payload, TaskError> {
        let key = self.define(source, name);
        let id = self.submit(key, args, false);
        let mut results = self.results(1).await;
        let result = results.remove(0);
        assert_eq!(result.id, id);
        result.outcome
    }

    /// Waits for Exited, passing over any results.
    pub(crate) async fn exit(&mut self) -> (Vec<WorkResult>, WorkerExit) {
        let mut results = Vec::new();
        loop {
            match self.event().await {
                WorkerEvent::Results(r) => results.extend(r),
                WorkerEvent::Exited(exit) => return (results, exit),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
