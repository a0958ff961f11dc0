//! End-to-end throughput and latency of funcx on local Python workers, through the public API.
//!
//! ```text
//! cargo bench --bench e2e -- WORKLOAD... [--workers N] [--n N]
//! ```
//!
//! WORKLOAD is one of `startup`, `W1`, `W2`, `W3`, `W4` or `all`. Each prints one JSON line:
//! `{"peer":"funcx","workload":..,"n":..,"seconds":..,"tasks_per_s":..,"p50_ms":..,
//! "p99_ms":..,"mib_per_s_both_ways":..,"efficiency":..}` (null where a field does not apply).
//! Every result is checked; a wrong one aborts the run.
//!
//! - `startup`: creating the executor until one no-op per worker has returned (median of n).
//! - `W1`: `noop(x)` for x in range(n = 20,000), all submitted, then all awaited.
//! - `W2`: n = 2,000 sequential round trips of `noop(i)`.
//! - `W3`: n = 2,000 calls of `echo(b)` with a 1 MiB random bytes argument, all at once.
//! - `W4`: n = 200 calls of a pure-Python loop calibrated to about 10 ms.

use std::error::Error;
use std::time::{Duration, Instant};

use funcx::{Args, Executor, Function, Payload, PythonRuntime};
use serde_bytes::ByteBuf;

const NOOP: &str = "def noop(x):\n    return x\n";
const ECHO: &str = "def echo(b):\n    return b\n";
const SPIN: &str =
    "def spin(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n";

type BoxResult<T> = Result<T, Box<dyn Error>>;

#[derive(Default)]
struct Line {
    workload: &'static str,
    n: usize,
    seconds: f64,
    tasks_per_s: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    mib_per_s_both_ways: Option<f64>,
    efficiency: Option<f64>,
}

impl Line {
    fn print(&self) {
        let field = |value: Option<f64>| value.map_or("null".to_string(), |v| format!("{v:.4}"));
        println!(
            "{{\"peer\":\"funcx\",\"workload\":\"{}\",\"n\":{},\"seconds\":{:.6},\"tasks_per_s\":{},\"p50_ms\":{},\"p99_ms\":{},\"mib_per_s_both_ways\":{},\"efficiency\":{}}}",
            self.workload,
            self.n,
            self.seconds,
            field(self.tasks_per_s),
            field(self.p50_ms),
            field(self.p99_ms),
            field(self.mib_per_s_both_ways),
            field(self.efficiency),
        );
    }
}

struct Options {
    workloads: Vec<String>,
    workers: usize,
    n: Option<usize>,
}

fn parse_options() -> BoxResult<Options> {
    let mut options = Options {
        workloads: Vec::new(),
        workers: 2,
        n: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            "--workers" => {
                options.workers = args.next().ok_or("--workers needs a value")?.parse()?
            }
            "--n" => options.n = Some(args.next().ok_or("--n needs a value")?.parse()?),
            "all" => options
                .workloads
                .extend(["startup", "W1", "W2", "W3", "W4"].map(String::from)),
            other if other.starts_with('-') => return Err(format!("unknown option {other}").into()),
            other => options.workloads.push(other.to_string()),
        }
    }
    if options.workloads.is_empty() {
        options
            .workloads
            .extend(["startup", "W1", "W2", "W3", "W4"].map(String::from));
    }
    Ok(options)
}

async fn executor(workers: usize) -> BoxResult<Executor> {
    let executor = Executor::builder()
        .workers(workers)
        .start(PythonRuntime::default());
    executor.ready().await?;
    Ok(executor)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn startup(workers: usize, n: usize) -> BoxResult<Line> {
    let noop = Function::from_source(NOOP, "noop");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let executor = Executor::builder()
            .workers(workers)
            .start(PythonRuntime::default());
        let handles = executor.submit_batch(&noop, (0..workers as i64).map(|i| (i,)));
        for (i, handle) in handles.into_iter().enumerate() {
            let value: i64 = handle.result().await?;
            if value != i as i64 {
                return Err(format!("startup: noop({i}) returned {value}").into());
            }
        }
        samples.push(started.elapsed().as_secs_f64());
        executor.shutdown_now().await;
    }
    samples.sort_by(f64::total_cmp);
    let median = percentile(&samples, 0.5);
    Ok(Line {
        workload: "startup",
        n,
        seconds: median,
        p50_ms: Some(median * 1e3),
        p99_ms: Some(percentile(&samples, 0.99) * 1e3),
        ..Line::default()
    })
}

async fn warm(
    executor: &Executor,
    function: &Function,
    args: impl Fn(usize) -> Args,
) -> BoxResult<()> {
    for handle in executor.submit_batch(function, (0..200).map(args)) {
        handle.await?;
    }
    Ok(())
}

async fn w1(workers: usize, n: usize) -> BoxResult<Line> {
    let executor = executor(workers).await?;
    let noop = Function::from_source(NOOP, "noop");
    warm(&executor, &noop, |i| Args::new().arg(&i)).await?;
    let started = Instant::now();
    let handles = executor.submit_batch(&noop, (0..n as i64).map(|i| (i,)));
    for (i, handle) in handles.into_iter().enumerate() {
        let value: i64 = handle.result().await?;
        if value != i as i64 {
            return Err(format!("W1: noop({i}) returned {value}").into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    executor.shutdown().await;
    Ok(Line {
        workload: "W1",
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        ..Line::default()
    })
}

async fn w2(workers: usize, n: usize) -> BoxResult<Line> {
    let executor = executor(workers).await?;
    let noop = Function::from_source(NOOP, "noop");
    warm(&executor, &noop, |i| Args::new().arg(&i)).await?;
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n as i64 {
        let sent = Instant::now();
        let value: i64 = executor.submit(&noop, (i,)).result().await?;
        samples.push(sent.elapsed().as_secs_f64() * 1e3);
        if value != i {
            return Err(format!("W2: noop({i}) returned {value}").into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    executor.shutdown().await;
    samples.sort_by(f64::total_cmp);
    Ok(Line {
        workload: "W2",
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        p50_ms: Some(percentile(&samples, 0.5)),
        p99_ms: Some(percentile(&samples, 0.99)),
        ..Line::default()
    })
}

/// 1 MiB of bytes from a xorshift generator: random enough that nothing compresses it, and
/// no dependency for it.
fn random_mib() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn w3(workers: usize, n: usize) -> BoxResult<Line> {
    let executor = executor(workers).await?;
    let echo = Function::from_source(ECHO, "echo");
    let data = random_mib();
    let argument = Payload::pickle(&ByteBuf::from(data.clone()))?;
    warm(&executor, &echo, |_| Args::new().payload(argument.clone())).await?;
    let started = Instant::now();
    let handles = executor.submit_batch(&echo, (0..n).map(|_| argument.clone()));
    for handle in handles {
        let back: ByteBuf = handle.result().await?;
        if back.as_slice() != data.as_slice() {
            return Err("W3: echo returned different bytes".into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    executor.shutdown().await;
    Ok(Line {
        workload: "W3",
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        mib_per_s_both_ways: Some(2.0 * n as f64 / seconds),
        ..Line::default()
    })
}

async fn w4(workers: usize, n: usize) -> BoxResult<Line> {
    let executor = executor(workers).await?;
    let spin = Function::from_source(SPIN, "spin");
    // Calibrate the loop to about 10 ms, then measure one call alone, sequentially.
    let mut iterations = 100_000_i64;
    loop {
        let started = Instant::now();
        executor.submit(&spin, (iterations,)).await?;
        let took = started.elapsed();
        if took >= Duration::from_millis(5) {
            iterations = (iterations as f64 * 0.010 / took.as_secs_f64()) as i64;
            break;
        }
        iterations *= 4;
    }
    let expected: i64 = iterations * (iterations - 1) / 2;
    let mut singles = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let value: i64 = executor.submit(&spin, (iterations,)).result().await?;
        singles.push(started.elapsed().as_secs_f64());
        if value != expected {
            return Err(format!("W4: spin returned {value}, expected {expected}").into());
        }
    }
    singles.sort_by(f64::total_cmp);
    let single = percentile(&singles, 0.5);
    let started = Instant::now();
    for handle in executor.submit_batch(&spin, (0..n).map(|_| (iterations,))) {
        let value: i64 = handle.result().await?;
        if value != expected {
            return Err(format!("W4: spin returned {value}, expected {expected}").into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    executor.shutdown().await;
    Ok(Line {
        workload: "W4",
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        efficiency: Some((n as f64 * single / workers as f64) / seconds),
        ..Line::default()
    })
}

fn main() -> BoxResult<()> {
    let options = parse_options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for workload in &options.workloads {
            let workers = options.workers;
            let line = match workload.as_str() {
                "startup" => startup(workers, options.n.unwrap_or(10)).await?,
                "W1" => w1(workers, options.n.unwrap_or(20_000)).await?,
                "W2" => w2(workers, options.n.unwrap_or(2_000)).await?,
                "W3" => w3(workers, options.n.unwrap_or(2_000)).await?,
                "W4" => w4(workers, options.n.unwrap_or(200)).await?,
                other => {
                    return Err(format!(
                        "unknown workload {other}; expected startup, W1, W2, W3, W4 or all"
                    )
                    .into())
                }
            };
            line.print();
        }
        Ok(())
    })
}
