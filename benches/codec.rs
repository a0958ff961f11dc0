//! Micro-benchmarks of the hot paths: pickling arguments, the worker frame codec, and the
//! dispatcher's cost per task with workers that answer instantly (so only funcx's own
//! overhead is measured).
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
                    ToWorker::Function { .. } | ToWorker::Cancel(_) | ToWorker::Return(_) => {}
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

/// A `RESULTS` frame of `count` small pickled integers, as a worker writes it.
fn results_frame(count: u32) -> Vec<u8> {
    use funcx::python::protocol::{from_worker, status};
    let pickled = Payload::pickle(&7_i64).expect("pickle");
    let mut body = Vec::new();
    body.extend_from_slice(&count.to_le_bytes());
    for id in 0..u64::from(count) {
        body.extend_from_slice(&id.to_le_bytes());
        body.push(status::OK);
        body.extend_from_slice(&1_000_u64.to_le_bytes());
        body.extend_from_slice(&(pickled.len() as u32).to_le_bytes());
        body.extend_from_slice(pickled.as_bytes());
    }
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.push(from_worker::RESULTS);
    frame.extend_from_slice(&body);
    frame
}

fn worker_codec(c: &mut Criterion) {
    use funcx::python::protocol::{Decoder, Encoder};
    use funcx::worker::{FunctionKey, WorkItem};
    let batch = 1_000_u64;
    let items: Vec<WorkItem> = (0..batch)
        .map(|i| WorkItem {
            id: funcx::TaskId::from_u64(i),
            function: FunctionKey(0),
            isolate: false,
            args: Args::new().arg(&(i as i64)),
            timeout: None,
            trace: None,
            env: Vec::new(),
            resources: None,
        })
        .collect();
    let frame = results_frame(batch as u32);
    let mut group = c.benchmark_group("worker codec");
    group.throughput(Throughput::Elements(batch));
    group.bench_function("encode 1,000 tasks", |b| {
        b.iter_batched(
            || ToWorker::Tasks(items.clone()),
            |message| {
                let mut encoder = Encoder::new();
                encoder.encode(&message);
                encoder.take()
            },
            BatchSize::SmallInput,
        )
    });
    let decoder = Decoder::new(1 << 30, 1 << 30);
    group.bench_function("decode 1,000 results", |b| {
        b.iter_batched(
            || bytes::BytesMut::from(frame.as_slice()),
            |mut buffer| decoder.decode(&mut buffer).expect("valid frame"),
            BatchSize::SmallInput,
        )
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

criterion_group!(benches, pickling, worker_codec, dispatcher);
criterion_main!(benches);
