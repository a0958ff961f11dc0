//! Per-task resources on real `python3` workers: tasks that ask for cores, memory and GPUs
//! run only while those are free (checked from the start and end times the tasks record
//! themselves), GPU tasks see only their devices, and a task that could never fit fails at
//! once.

use std::time::Duration;

use funcx_core::{
    Args, ErrorCode, Executor, ExecutorBuilder, Function, ShellFunction, ShellResult, TaskError,
    TaskOptions, ACCELERATOR_VARIABLES,
};
use funcx_python::{PythonConfig, PythonRuntime};

mod common;

use common::Manager;

/// How long a whole batch of tasks may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(120);

/// Holds its resources for `seconds`, and reports when it ran and which devices it saw.
const HOLD: &str = r#"
import os, time

def hold(seconds):
    start = time.time()
    time.sleep(seconds)
    devices = [os.environ.get(v) for v in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")]
    return [start, time.time(), devices]
"#;

type Record = (f64, f64, Vec<Option<String>>);

fn start(builder: ExecutorBuilder) -> Executor {
    let config = match std::env::var_os("FUNCX_TEST_PYTHON") {
        Some(python) => PythonConfig::new().python(python),
        None => PythonConfig::new(),
    };
    builder.start(PythonRuntime::new(config))
}

/// Runs one `hold` task per option set, all submitted at once; returns what each recorded.
async fn run_all(executor: &Executor, options: &[TaskOptions], seconds: f64) -> Vec<Record> {
    let hold = Function::from_source(HOLD, "hold");
    let handles: Vec<_> = options
        .iter()
        .map(|o| executor.submit_with(&hold, (seconds,), *o))
        .collect();
    let all = async {
        let mut records = Vec::new();
        for handle in handles {
            records.push(handle.result::<Record>().await);
        }
        records
    };
    let records = tokio::time::timeout(LIMIT, all)
        .await
        .expect("the tasks finish within the limit");
    records
        .into_iter()
        .map(|r| r.expect("a task that fits runs"))
        .collect()
}

/// The largest total of `amount` over tasks running at the same instant.
fn peak(records: &[Record], amount: impl Fn(usize) -> u64) -> u64 {
    let mut peak = 0;
    for (start, _, _) in records {
        // At each task's start, what every task running then holds (intervals are
        // [start, end): a task granted what another freed starts after that one ended).
        let at = records
            .iter()
            .enumerate()
            .filter(|(_, (s, e, _))| s <= start && start < e)
            .map(|(j, _)| amount(j))
            .sum::<u64>();
        peak = peak.max(at);
    }
    peak
}

#[tokio::test]
async fn concurrent_tasks_never_oversubscribe_cores_or_memory() {
    // Four workers, but three cores and 1000 bytes of memory between them.
    let executor = start(Executor::builder().workers(4).cores(3).memory(1000));
    let plain = TaskOptions::new();
    let asks: Vec<(u32, u64)> = vec![
        (1, 0),
        (2, 0),
        (3, 0),
        (1, 0),
        (2, 600),
        (1, 600),
        (1, 0),
        (3, 100),
        (1, 0),
        (2, 300),
        (1, 0),
        (1, 0),
    ];
    let options: Vec<TaskOptions> = asks
        .iter()
        .map(|&(cores, memory)| match (cores, memory) {
            (1, 0) => plain, // a plain task holds one core
            _ => plain.cores(cores).memory(memory),
        })
        .collect();
    let records = run_all(&executor, &options, 0.3).await;
    let cores = peak(&records, |i| u64::from(asks[i].0));
    let memory = peak(&records, |i| asks[i].1);
    assert!(cores <= 3, "{cores} cores in use at once: {records:?}");
    assert!(memory <= 1000, "{memory} bytes in use at once: {records:?}");
    // And the machine was shared, not run one task at a time.
    assert!(cores >= 2, "never more than one core in use: {records:?}");
}

#[tokio::test]
async fn gpu_tasks_see_only_their_own_devices() {
    let executor = start(Executor::builder().workers(3).gpus(["g0", "g1"]));
    // What a task that asks for no GPU sees: the worker's own environment.
    let before = run_all(&executor, &[TaskOptions::new()], 0.0).await;
    let one = TaskOptions::new().gpus(1);
    let records = run_all(&executor, &[one; 6], 0.2).await;
    for (_, _, devices) in &records {
        let first = devices[0].as_deref().unwrap_or_default();
        assert!(first == "g0" || first == "g1", "{devices:?}");
        assert!(
            devices.iter().all(|d| d.as_deref() == Some(first)),
            "every vendor's variable names the device: {devices:?}"
        );
    }
    for (i, (start, _, devices)) in records.iter().enumerate() {
        for (j, (s, e, other)) in records.iter().enumerate() {
            if i != j && s <= start && start < e {
                assert_ne!(
                    devices, other,
                    "two running tasks shared a GPU: {records:?}"
                );
            }
        }
    }
    let gpus = peak(&records, |_| 1);
    assert!(gpus <= 2, "{gpus} GPU tasks at once: {records:?}");

    let both = run_all(&executor, &[TaskOptions::new().gpus(2)], 0.0).await;
    assert_eq!(both[0].2[0].as_deref(), Some("g0,g1"));
    // The devices were the task's, not the worker's: a plain task after sees what it did.
    let after = run_all(&executor, &[TaskOptions::new(); 3], 0.0).await;
    for record in after {
        assert_eq!(record.2, before[0].2);
    }

    // A shell task's command inherits them.
    let shell = ShellFunction::new("echo \"$CUDA_VISIBLE_DEVICES\"");
    let handle = executor.submit_with(&shell.function(), Args::new(), one);
    let result: ShellResult = tokio::time::timeout(LIMIT, handle.result())
        .await
        .expect("within the limit")
        .expect("the shell task runs");
    let device = result.stdout.trim();
    assert!(device == "g0" || device == "g1", "{result:?}");
    assert_eq!(ACCELERATOR_VARIABLES[0], "CUDA_VISIBLE_DEVICES");
}

async fn refused(executor: &Executor, options: TaskOptions) -> TaskError {
    let hold = Function::from_source(HOLD, "hold");
    tokio::time::timeout(
        Duration::from_secs(10),
        executor.submit_with(&hold, (0.0,), options),
    )
    .await
    .expect("refused at once, not queued")
    .expect_err("the task cannot fit")
}

#[tokio::test]
async fn a_task_that_fits_nowhere_fails_at_once() {
    let executor = start(Executor::builder().workers(2).cores(4).gpus(["0"]));
    let error = refused(&executor, TaskOptions::new().cores(5)).await;
    assert!(error.is_unsatisfiable(), "{error}");
    assert_eq!(error.report().code, ErrorCode::Unsatisfiable);
    assert!(
        error.to_string().contains("5 cores (the node has 4)"),
        "{error}"
    );

    let error = refused(&executor, TaskOptions::new().gpus(2)).await;
    assert!(
        error.is_unsatisfiable() && error.to_string().contains("2 GPUs"),
        "{error}"
    );
    assert!(!error.is_system(), "a retry would not help");

    // What fits still runs, after the refusals.
    let fits = run_all(&executor, &[TaskOptions::new().cores(4).gpus(1)], 0.0).await;
    assert_eq!(fits[0].2[0].as_deref(), Some("0"));
}

#[tokio::test]
async fn a_manager_places_resource_tasks_on_its_own_gpus() {
    let endpoint = common::endpoint(0, Duration::from_secs(10)).await;
    let executor = endpoint.executor.clone();
    let hold = Function::from_source(HOLD, "hold");
    // Submitted before any manager attached: they wait for one rather than fail...
    let early = executor.submit_with(&hold, (0.0,), TaskOptions::new().gpus(1));
    let too_big = executor.submit_with(&hold, (0.0,), TaskOptions::new().gpus(4));
    let _manager = Manager::start_with(endpoint.address, 2, &["--gpus", "m0,m1,m2"]);
    common::managers(&executor, 1).await;
    // ...and once it has, what fits it runs on its GPUs, what does not fails.
    let error = tokio::time::timeout(LIMIT, too_big)
        .await
        .expect("answered within the limit")
        .expect_err("4 GPUs do not fit a manager with 3");
    assert!(
        error.is_unsatisfiable() && error.to_string().contains("4 GPUs"),
        "{error}"
    );
    let (_, _, devices): Record = tokio::time::timeout(LIMIT, early.result())
        .await
        .expect("within the limit")
        .expect("runs on the manager");
    assert!(
        matches!(devices[0].as_deref(), Some("m0" | "m1" | "m2")),
        "{devices:?}"
    );

    let records = run_all(&executor, &[TaskOptions::new().gpus(1); 4], 0.2).await;
    for (i, (start, _, devices)) in records.iter().enumerate() {
        assert!(
            matches!(devices[0].as_deref(), Some("m0" | "m1" | "m2")),
            "{devices:?}"
        );
        for (j, (s, e, other)) in records.iter().enumerate() {
            if i != j && s <= start && start < e {
                assert_ne!(
                    devices, other,
                    "two running tasks shared a GPU: {records:?}"
                );
            }
        }
    }
    // Two GPUs for one task: the manager granted them (its workers are pinned to one each).
    let two = run_all(&executor, &[TaskOptions::new().gpus(2)], 0.0).await;
    let devices = two[0].2[0].clone().unwrap_or_default();
    assert_eq!(devices.split(',').count(), 2, "{devices}");
    let error = refused(&executor, TaskOptions::new().cores(3)).await;
    assert!(
        error.is_unsatisfiable() && error.to_string().contains("3 cores"),
        "{error}"
    );
}

#[tokio::test]
async fn a_manager_advertises_its_memory_and_places_memory_tasks_by_it() {
    let endpoint = common::endpoint(0, Duration::from_secs(10)).await;
    let executor = endpoint.executor.clone();
    const GIB: u64 = 1 << 30;
    let _manager = Manager::start_with(endpoint.address, 2, &["--memory", &(3 * GIB).to_string()]);
    common::managers(&executor, 1).await;
    // Two tasks of two GiB on a node of three: each fits, never both at once.
    let records = run_all(&executor, &[TaskOptions::new().memory(2 * GIB); 2], 0.5).await;
    let (first, second) = (&records[0], &records[1]);
    assert!(
        first.1 <= second.0 || second.1 <= first.0,
        "two 2 GiB tasks ran at once on 3 GiB: {records:?}"
    );
    let error = refused(&executor, TaskOptions::new().memory(4 * GIB)).await;
    assert!(error.is_unsatisfiable(), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("{} bytes of memory", 4 * GIB)),
        "the error names what was asked: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_name_the_os_refuses_fails_the_task_not_the_worker() {
    // A NUL byte cannot be in an environment variable; found by the worker-input fuzz target,
    // where it killed the worker with a ValueError.
    let executor = start(Executor::builder().workers(1).gpus(["g\0bad"]));
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let refused = executor.submit_with(&echo, (1,), TaskOptions::new().gpus(1));
    let error = tokio::time::timeout(LIMIT, refused.result::<i64>())
        .await
        .expect("within the limit")
        .expect_err("the task cannot get that environment");
    assert_eq!(error.code(), ErrorCode::ArgumentsUnpickle, "{error}");
    assert!(error.to_string().contains("null"), "{error}");
    // The same worker goes on: a plain task runs, and the environment was restored.
    let check = Function::from_source(
        "import os\ndef check(x):\n    return x, os.environ.get('CUDA_VISIBLE_DEVICES')\n",
        "check",
    );
    let (value, devices): (i64, Option<String>) =
        tokio::time::timeout(LIMIT, executor.submit(&check, (7,)).result())
            .await
            .expect("within the limit")
            .expect("the worker still runs tasks");
    assert_eq!(value, 7);
    assert_eq!(devices, None);
    assert_eq!(
        executor.stats().await.workers_started,
        1,
        "the worker did not die"
    );
}
