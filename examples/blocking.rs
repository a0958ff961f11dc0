//! funcx from a program that is not async: four plain threads share one executor, each
//! submitting and waiting on its own, the way the threads of instrument-control software do.
//!
//! ```text
//! cargo run --release --example blocking
//! ```

use std::error::Error;
use std::time::{Duration, Instant};

use funcx::{blocking, Executor, Function, PythonRuntime};

/// One detector frame's worth of work, in plain Python.
const SOURCE: &str = r#"
import math

def integrate(channel, frame):
    return sum(math.sin(channel + frame + k / 100.0) for k in range(200))
"#;

const THREADS: usize = 4;
const FRAMES: u32 = 500;

fn main() -> Result<(), Box<dyn Error>> {
    // No #[tokio::main]: the executor owns the runtime it needs, on a thread of its own.
    let started = Instant::now();
    let executor =
        blocking::Executor::start(Executor::builder().workers(2), PythonRuntime::default())?;
    executor.ready()?;
    println!(
        "2 Python workers ready in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let integrate = Function::from_source(SOURCE, "integrate");

    // Each thread is one channel of the instrument: it submits its frames one by one and
    // waits for each answer, at most a second, as a control loop would.
    let started = Instant::now();
    let totals = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|channel| {
                let (executor, integrate) = (executor.clone(), integrate.clone());
                scope.spawn(move || -> Result<f64, String> {
                    let mut total = 0.0;
                    for frame in 0..FRAMES {
                        let handle = executor.submit(&integrate, (channel, frame));
                        match handle.wait_timeout(Duration::from_secs(1)) {
                            Some(result) => {
                                total += result
                                    .and_then(|p| p.decode::<f64>())
                                    .map_err(|e| e.to_string())?;
                            }
                            None => {
                                handle.cancel();
                                return Err(format!("frame {frame} took over a second"));
                            }
                        }
                    }
                    Ok(total)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().map_err(|_| "a thread panicked".to_string())?)
            .collect::<Result<Vec<f64>, String>>()
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    for (channel, total) in totals.iter().enumerate() {
        println!("channel {channel}: {FRAMES} frames, total {total:.3}");
    }
    let calls = THREADS as f64 * f64::from(FRAMES);
    println!(
        "{calls} calls from {THREADS} threads in {elapsed:.3} s: {:.0} calls/s, {:.0} µs per call per thread",
        calls / elapsed,
        elapsed / f64::from(FRAMES) * 1e6
    );

    // The same work as one `map`: an iterator of results in input order, 64 in flight.
    let started = Instant::now();
    let mut total = 0.0;
    for result in executor.map(&integrate, (0..2_000).map(|frame| (0, frame)), 64) {
        total += result?.decode::<f64>()?;
    }
    println!(
        "map over 2000 frames: total {total:.3} in {:.3} s",
        started.elapsed().as_secs_f64()
    );

    executor.shutdown();
    Ok(())
}
