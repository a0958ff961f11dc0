//! The trace id that follows a task across processes reaches the worker.

use std::sync::{Arc, Mutex};

use funcx_core::worker::{ToWorker, WorkItem, Worker};
use funcx_core::{Executor, Function, Task, TaskOptions};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<WorkItem>>>);

impl Worker for Recorder {
    fn send(&mut self, message: ToWorker) {
        if let ToWorker::Tasks(items) = message {
            self.0.lock().expect("not poisoned").extend(items);
        }
    }

    fn kill(&mut self) {}
}

#[tokio::test]
async fn a_task_is_traced_by_its_first_id_at_every_hop() {
    let executor = Executor::builder().start_without_workers();
    let recorder = Recorder::default();
    let _events = executor
        .attach(Box::new(recorder.clone()), 8, None)
        .await
        .expect("attach");
    let f = Function::from_source("def f(x):\n    return x\n", "f");
    // Submitted here: traced by its own id. Relayed from elsewhere: keeps the given trace.
    let local = executor.submit(&f, (1,));
    let relayed = executor.submit_with(&f, (2,), TaskOptions::new().trace(4242));
    let streamed = {
        let (sink, _stream) = funcx_core::report_stream();
        executor.submit_streamed(
            [(
                7,
                Task::new(&f, (3,)).with_options(TaskOptions::new().trace(99)),
            )],
            &sink,
        )[0]
    };
    let items = loop {
        let items = recorder.0.lock().expect("not poisoned").clone();
        if items.len() == 3 {
            break items;
        }
        tokio::task::yield_now().await;
    };
    let trace_of = |id| {
        items
            .iter()
            .find(|item| item.id == id)
            .and_then(|item| item.trace)
    };
    assert_eq!(trace_of(local.id()), Some(local.id().as_u64()));
    assert_eq!(trace_of(relayed.id()), Some(4242));
    assert_eq!(trace_of(streamed), Some(99));
}
