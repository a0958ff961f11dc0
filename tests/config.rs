//! Worker configuration through `PythonConfig`, read back from inside the workers.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{runtime, start_with, within, TempDir, HANG};
use funcx::{Executor, Function, PythonConfig};

fn environ() -> Function {
    Function::from_source(
        "import os\n\ndef environ(keys):\n    return {k: os.environ.get(k) for k in keys}\n",
        "environ",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_working_dir_and_init() {
    let dir = TempDir::new("config");
    std::fs::write(dir.0.join("helper_mod_e2e.py"), "ANSWER = 41 + 1\n").unwrap();
    let executor = start_with(
        Executor::builder().workers(2),
        PythonConfig::new()
            .env("FUNCX_E2E_PLAIN", "plain value")
            .env("FUNCX_E2E_UNICODE", "wért ✓")
            .working_dir(&dir.0)
            .worker_init("export FUNCX_E2E_FROM_INIT=\"init-$((20 + 22))\""),
    )
    .await;
    let keys = [
        "FUNCX_E2E_PLAIN",
        "FUNCX_E2E_UNICODE",
        "FUNCX_E2E_FROM_INIT",
        "FUNCX_E2E_NOT_SET",
    ];
    // Both workers see the same configuration.
    let handles = executor.submit_batch(&environ(), (0..8).map(|_| (keys,)));
    for handle in handles {
        let env: HashMap<String, Option<String>> = within(HANG, handle.result()).await.unwrap();
        assert_eq!(env["FUNCX_E2E_PLAIN"].as_deref(), Some("plain value"));
        assert_eq!(env["FUNCX_E2E_UNICODE"].as_deref(), Some("wért ✓"));
        assert_eq!(env["FUNCX_E2E_FROM_INIT"].as_deref(), Some("init-42"));
        assert_eq!(env["FUNCX_E2E_NOT_SET"], None);
    }

    let where_am_i = Function::from_source(
        "import os\n\ndef where_am_i():\n    import helper_mod_e2e\n    return [os.getcwd(), helper_mod_e2e.ANSWER]\n",
        "where_am_i",
    );
    let (cwd, answer): (String, i64) = within(HANG, executor.submit(&where_am_i, ()).result())
        .await
        .unwrap();
    assert_eq!(
        std::fs::canonicalize(&cwd).unwrap(),
        std::fs::canonicalize(&dir.0).unwrap()
    );
    assert_eq!(answer, 42, "modules in the working directory import");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accelerators_pin_one_device_per_worker_slot() {
    let devices = ["0", "GPU-uuid-1"];
    let executor = start_with(
        Executor::builder().workers(2),
        PythonConfig::new().accelerators(devices.iter().map(|d| d.to_string()).collect()),
    )
    .await;
    let pinned = Function::from_source(
        r#"
import os, time

def pinned(_):
    time.sleep(0.05)
    return [os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"),
            os.environ.get("ROCR_VISIBLE_DEVICES"), os.environ.get("ZE_AFFINITY_MASK")]
"#,
        "pinned",
    );
    // Enough slow tasks that both workers run some.
    let handles = executor.submit_batch(&pinned, (0..20).map(|i| (i,)));
    let mut by_pid: HashMap<i64, String> = HashMap::new();
    for handle in handles {
        let (pid, cuda, rocr, ze): (i64, Option<String>, Option<String>, Option<String>) =
            within(HANG, handle.result()).await.unwrap();
        let cuda = cuda.expect("CUDA_VISIBLE_DEVICES set");
        assert_eq!(rocr.as_deref(), Some(cuda.as_str()));
        assert_eq!(ze.as_deref(), Some(cuda.as_str()));
        if let Some(previous) = by_pid.insert(pid, cuda.clone()) {
            assert_eq!(previous, cuda, "a worker's device changed");
        }
    }
    assert_eq!(by_pid.len(), 2, "both workers ran tasks: {by_pid:?}");
    let seen: HashSet<&str> = by_pid.values().map(String::as_str).collect();
    assert_eq!(
        seen,
        HashSet::from(devices),
        "worker slot i sees devices[i]: {by_pid:?}"
    );
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_interpreter_fails_fast_instead_of_hanging() {
    common::init_tracing();
    let missing = common::unique_path("no-python").join("bin/python3");
    let executor = Executor::builder()
        .workers(2)
        .start(runtime(PythonConfig::new().python(&missing)));
    let started = Instant::now();
    let err = within(Duration::from_secs(10), executor.ready())
        .await
        .unwrap_err();
    assert!(err.is_no_workers(), "{err}");
    assert!(err.is_system(), "{err}");
    assert!(
        err.to_string().contains("no-python"),
        "the error names the interpreter: {err}"
    );

    let echo = common::echo();
    let handles: Vec<_> = (0..5).map(|i| executor.submit(&echo, (i,))).collect();
    for handle in handles {
        let err = within(Duration::from_secs(10), handle).await.unwrap_err();
        assert!(err.is_no_workers(), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    within(Duration::from_secs(10), executor.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_worker_init_fails_fast() {
    common::init_tracing();
    let executor = Executor::builder()
        .workers(1)
        .start(runtime(PythonConfig::new().worker_init("exit 17")));
    let err = within(Duration::from_secs(10), executor.ready())
        .await
        .unwrap_err();
    assert!(err.is_no_workers(), "{err}");
    let err = within(
        Duration::from_secs(10),
        executor.submit(&common::echo(), (1,)),
    )
    .await
    .unwrap_err();
    assert!(err.is_no_workers(), "{err}");
    within(Duration::from_secs(10), executor.shutdown()).await;
}
