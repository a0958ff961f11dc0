//! Micro-benchmarks of the hot paths: pickling arguments, and the dispatcher's cost per task
//! with workers that answer instantly (so only funcx's own overhead is measured).
//!
//! ```text
//! cargo bench --bench codec
//! ```

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use funcx::worker::{ToWorker, WorkResult, Worker, WorkerEvent, WorkerEvents};
use funcx::{Args, Executor, Function, Payload, SpawnError, WorkerRuntime};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// Workers that echo their first argument from a tokio task, with no process behind them.
struct EchoRuntime;

struct EchoWorker {
    tx: mpsc::UnboundedSender<ToWorker>,
}

impl Worker for EchoWorker {
    fn send(&mut self, message: ToWorker) {
        let _ = self.tx.send(message);
    }

    fn kill(&mut self) {
        let _ = self.tx.send(ToWorker::Shutdown);
    }
}

impl WorkerRuntime for EchoRuntime {
    fn spawn(
        &self,
        _index: usize,
        events: WorkerEvents,
    ) -> BoxFuture<'static, Result<Box<dyn Worker>, SpawnError>> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            events.send(WorkerEvent::Ready);
            while let Some(message) = rx.recv().await {
                match message {
                    ToWorker::Tasks(items) => {
                        let results = items
                            .into_iter()
                            .map(|item| WorkResult {
                                id: item.id,
                                duration: Duration::from_micros(1),
                                outcome: item
                                    .args
                                    .positional()
                                    .first()
                                    .cloned()
                                    .ok_or_else(|| funcx::TaskError::protocol("no argument")),
                            })
                            .collect();
                        events.send(WorkerEvent::Results(results));
                    }
                    ToWorker::Shutdown => break,
                    ToWorker::Function { .. } | ToWorker::Cancel(_) => {}
                }
            }
            events.send(WorkerEvent::Exited(funcx::WorkerExit::Code(0)));
        });
        Box::pin(async move { Ok(Box::new(EchoWorker { tx }) as Box<dyn Worker>) })
    }
}

fn pickling(c: &mut Criterion) {
    let mut group = c.benchmark_group("payload");
    group.throughput(Throughput::Elements(1));
    group.bench_function("pickle i64 argument", |b| {
        b.iter(|| Args::new().arg(&12345_i64))
    });
    let payload = Payload::pickle(&12345_i64).expect("pickle");
    group.bench_function("decode i64 result", |b| {
        b.iter(|| payload.decode::<i64>().expect("decode"))
    });
    group.finish();
}

fn dispatcher(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let executor = runtime.block_on(async {
        let executor = Executor::builder().workers(2).start(EchoRuntime);
        executor.ready().await.expect("ready");
        executor
    });
    let noop = Function::from_source("def noop(x):\n    return x\n", "noop");
    let batch = 10_000_u64;
    let mut group = c.benchmark_group("dispatcher");
    group.throughput(Throughput::Elements(batch));
    group.bench_function("submit_batch + await, instant workers", |b| {
        b.iter_batched(
            || (0..batch as i64).map(|i| (i,)).collect::<Vec<_>>(),
            |inputs| {
                runtime.block_on(async {
                    for handle in executor.submit_batch(&noop, inputs) {
                        handle.await.expect("result");
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, pickling, dispatcher);
criterion_main!(benches);
