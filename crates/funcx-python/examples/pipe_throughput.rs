//! Measures worker start-up and no-op task throughput by hand:
//! `cargo run --release -p funcx-python --example pipe_throughput [tasks] [batch] [workers]`,
//! with `FUNCX_PYTHON` naming the interpreter if not `python3`.

use std::time::Instant;

use funcx_core::worker::{
    FunctionKey, ToWorker, WorkItem, Worker, WorkerEvent, WorkerEvents, WorkerId, WorkerRuntime,
};
use funcx_core::{Args, Function, TaskId};
use funcx_python::{PythonConfig, PythonRuntime};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() {
    let mut argv = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let tasks = argv.next().flatten().unwrap_or(200_000);
    let batch = argv.next().flatten().unwrap_or(500);
    let workers = argv.next().flatten().unwrap_or(1);
    // How many batches each worker may have queued, as a dispatcher would keep it fed.
    let window = 4;

    let start = Instant::now();
    let mut config = PythonConfig::new();
    // A pyenv shim costs tens of milliseconds per start; point this at the real binary.
    if let Some(python) = std::env::var_os("FUNCX_PYTHON") {
        config = config.python(python);
    }
    let runtime = PythonRuntime::new(config);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let noop = Function::from_source("def noop(x):\n    return x\n", "noop");
    let mut handles: Vec<Box<dyn Worker>> = Vec::new();
    for i in 0..workers {
        let events = WorkerEvents::new(WorkerId(i as u64), tx.clone());
        let mut worker = runtime.spawn(i, events).await.expect("spawn");
        worker.send(ToWorker::Function {
            key: FunctionKey(0),
            function: noop.clone(),
        });
        handles.push(worker);
    }
    let args = Args::new().arg(&1);
    let item = |_| WorkItem {
        id: TaskId::next(),
        function: FunctionKey(0),
        isolate: false,
        args: args.clone(),
        timeout: None,
        trace: None,
        env: Vec::new(),
        resources: None,
    };
    for worker in &mut handles {
        worker.send(ToWorker::Tasks(vec![item(0)]));
    }
    let mut first = 0;
    while first < workers {
        match rx.recv().await {
            Some((_, WorkerEvent::Results(r))) => first += r.len(),
            Some((_, WorkerEvent::Ready)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    println!(
        "{workers} worker(s): creation to first no-op result on each: {:?}",
        start.elapsed()
    );

    let per_worker = tasks / workers;
    let mut sent = vec![0_usize; workers];
    let mut done = vec![0_usize; workers];
    let t0 = Instant::now();
    for (w, worker) in handles.iter_mut().enumerate() {
        for _ in 0..window {
            let n = batch.min(per_worker - sent[w]);
            worker.send(ToWorker::Tasks((0..n).map(item).collect()));
            sent[w] += n;
        }
    }
    let mut total = 0;
    while total < per_worker * workers {
        let Some((id, event)) = rx.recv().await else {
            panic!("channel closed")
        };
        let WorkerEvent::Results(results) = event else {
            panic!("unexpected {event:?}")
        };
        let w = id.0 as usize;
        total += results.len();
        done[w] += results.len();
        while sent[w] < per_worker && sent[w] - done[w] < window * batch {
            let n = batch.min(per_worker - sent[w]);
            handles[w].send(ToWorker::Tasks((0..n).map(item).collect()));
            sent[w] += n;
        }
    }
    let elapsed = t0.elapsed();
    println!(
        "{total} no-op tasks in batches of {batch}: {elapsed:?}, {:.0} tasks/s",
        total as f64 / elapsed.as_secs_f64()
    );
    for worker in &mut handles {
        worker.send(ToWorker::Shutdown);
    }
}
