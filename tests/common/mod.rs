//! Helpers shared by the end-to-end tests: executors on real `python3` workers, unique
//! scratch paths, and bounded waits.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use funcx::{Executor, ExecutorBuilder, PythonConfig, PythonRuntime, TaskId, TaskState};

/// The longest any single wait in these tests may take before the test fails as hung.
pub const HANG: Duration = Duration::from_secs(30);

/// What `/proc` tells about processes.
#[cfg(unix)]
pub mod proc;

/// The programs as separate processes (the `funcx-endpoint` program needs feature `cli`).
#[cfg(all(unix, feature = "cli"))]
pub mod processes;

/// A Slurm-backed endpoint seen from outside (the `funcx-endpoint` program, Slurm's queue).
#[cfg(all(unix, feature = "cli"))]
pub mod slurm;

/// `target/<profile>/funcx-manager`, next to the `deps` directory the tests run from.
pub fn manager_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let binary = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|profile| profile.join("funcx-manager"))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        binary.is_file(),
        "{} is missing: build it first with `cargo build -p funcx-python --bins` \
         (scripts/test does, before `cargo test`)",
        binary.display()
    );
    binary
}

/// Routes worker output and dispatcher logs to the test's captured output.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "funcx=info,funcx_core=info".into()),
        )
        .try_init();
}

/// `config`, with the interpreter from `FUNCX_TEST_PYTHON` if that is set.
pub fn runtime(config: PythonConfig) -> PythonRuntime {
    let config = match std::env::var_os("FUNCX_TEST_PYTHON") {
        Some(python) => config.python(python),
        None => config,
    };
    PythonRuntime::new(config)
}

/// An executor with `workers` default Python workers, all started.
pub async fn start(workers: usize) -> Executor {
    start_with(Executor::builder().workers(workers), PythonConfig::new()).await
}

/// An executor from `builder` and `config`, all workers started.
pub async fn start_with(builder: ExecutorBuilder, config: PythonConfig) -> Executor {
    init_tracing();
    let executor = builder.start(runtime(config));
    within(HANG, executor.ready())
        .await
        .expect("workers should start");
    executor
}

/// Awaits `future`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("no answer within {limit:?}: hung"),
    }
}

/// A path under the system's temporary directory that no other test (or run) uses.
pub fn unique_path(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "funcx-e2e-{tag}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A fresh, empty directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = unique_path(tag);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn join(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    pub fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls the status of task `id` until it is `state`, failing the test after `limit`.
pub async fn wait_for_state(executor: &Executor, id: TaskId, state: TaskState, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let status = executor.status(id).await;
        match status {
            Some(status) if status.state == state => return,
            Some(_) => {}
            None => panic!("task {id} finished (or is unknown) while waiting for {state:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "task {id} not {state:?} within {limit:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `condition` until it holds, failing the test with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "not {what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `def echo(x): return x`.
pub fn echo() -> funcx::Function {
    funcx::Function::from_source("def echo(x):\n    return x\n", "echo")
}

/// `def pid(): return os.getpid()`.
pub fn pid() -> funcx::Function {
    funcx::Function::from_source("import os\n\ndef pid():\n    return os.getpid()\n", "pid")
}

/// Asserts that the pool still runs work: `n` echo tasks succeed with their inputs.
pub async fn assert_pool_works(executor: &Executor, n: i64) {
    let handles = executor.submit_batch(&echo(), (0..n).map(|i| (i,)));
    for (i, handle) in handles.into_iter().enumerate() {
        let value: i64 = within(HANG, handle.result())
            .await
            .unwrap_or_else(|e| panic!("task {i} of the follow-up batch failed: {e}"));
        assert_eq!(value, i as i64);
    }
}
