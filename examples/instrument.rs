//! Instrument control: analyse every data file the moment the instrument finishes writing it.
//!
//! ```text
//! cargo run --release --example instrument -- DIR
//! ```
//!
//! Watches DIR (created if missing). Each time a file there is closed after writing (the
//! instrument is done with it), its bytes go to a Python analysis function on a warm worker,
//! and one line is printed per file: the analysis and the latency from "file closed" (the
//! kernel's close-write event) to "result in hand". Ctrl-C stops it cleanly: files already
//! seen are finished, then a summary (count, p50, p99, max) is printed. Try it with
//! `for i in $(seq 100); do head -c 100000 /dev/urandom > DIR/frame-$i.bin; done`.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use funcx::{Executor, Function, PythonRuntime};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use serde::Deserialize;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

/// The analysis: a few statistics of the frame's bytes, in plain Python.
const ANALYSIS: &str = r#"
import hashlib

def analyse(name, data):
    n = len(data)
    mean = sum(data) / n if n else 0.0
    return {"name": name, "bytes": n, "mean": mean, "sha1": hashlib.sha1(data).hexdigest()[:12]}
"#;

/// What the analysis returns.
#[derive(Debug, Deserialize)]
struct Analysis {
    name: String,
    bytes: u64,
    mean: f64,
    sha1: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: instrument DIR (the directory the instrument writes files into)")?,
    );
    std::fs::create_dir_all(&dir)?;

    let executor = Executor::builder()
        .workers(2)
        .start(PythonRuntime::default());
    executor.ready().await?;
    let analyse = Function::from_source(ANALYSIS, "analyse");

    // The watcher calls back on a thread of its own; each close-write event is stamped there,
    // as early as this process can know that the file is complete.
    let (closed, mut files) = mpsc::unbounded_channel::<(PathBuf, Instant)>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let at = Instant::now();
        match event {
            Ok(event) if event.kind == EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for path in event.paths {
                    let _ = closed.send((path, at));
                }
            }
            Ok(_) => {}
            Err(error) => eprintln!("watch error: {error}"),
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    println!("watching {} (Ctrl-C to stop)", dir.display());

    // Each file becomes a task at once; results are printed as they come, in any order.
    let (done, mut results) = mpsc::unbounded_channel::<(Result<Analysis, String>, Duration)>();
    let mut seen = 0_usize;
    let mut latencies = Vec::new();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some((path, closed_at)) = files.recv() => {
                seen += 1;
                submit(&executor, &analyse, &path, closed_at, done.clone());
            }
            Some((result, latency)) = results.recv() => {
                report(result, latency, &mut latencies);
            }
        }
    }

    // Ctrl-C: stop watching, finish the files already seen, then summarise.
    drop(watcher);
    while latencies.len() < seen {
        match results.recv().await {
            Some((result, latency)) => report(result, latency, &mut latencies),
            None => break,
        }
    }
    executor.shutdown().await;
    summarise(&mut latencies);
    Ok(())
}

/// Reads the file and submits its analysis; the outcome and its latency go to `done`.
fn submit(
    executor: &Executor,
    analyse: &Function,
    path: &Path,
    closed_at: Instant,
    done: mpsc::UnboundedSender<(Result<Analysis, String>, Duration)>,
) {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(error) => {
            let _ = done.send((Err(format!("{name}: {error}")), closed_at.elapsed()));
            return;
        }
    };
    let handle = executor.submit(analyse, (name.clone(), ByteBuf::from(data)));
    tokio::spawn(async move {
        let result = handle
            .result::<Analysis>()
            .await
            .map_err(|e| format!("{name}: {e}"));
        let _ = done.send((result, closed_at.elapsed()));
    });
}

fn report(result: Result<Analysis, String>, latency: Duration, latencies: &mut Vec<Duration>) {
    latencies.push(latency);
    match result {
        Ok(a) => println!(
            "{}: {} bytes, mean {:.2}, sha1 {} — {:.3} ms from close to result",
            a.name,
            a.bytes,
            a.mean,
            a.sha1,
            latency.as_secs_f64() * 1e3
        ),
        Err(error) => println!("failed: {error}"),
    }
}

fn summarise(latencies: &mut [Duration]) {
    if latencies.is_empty() {
        println!("summary: no files");
        return;
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "summary: {} files, latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        latencies.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}
