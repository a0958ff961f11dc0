//! Workers inside podman containers, on real podman (scripts/infra/podman-up.sh builds the
//! image `localhost/funcx-python:latest` from this machine's Python, with no registry).

use std::process::Command;
use std::time::Duration;

use funcx_core::{Executor, Function, TaskOptions};
use funcx_python::{Container, PythonConfig, PythonRuntime};

/// How long a step may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(90);

fn image() -> String {
    std::env::var("FUNCX_TEST_IMAGE").unwrap_or_else(|_| "localhost/funcx-python:latest".into())
}

fn executor(container: Container) -> Executor {
    let config = PythonConfig::new()
        .container(container)
        .env("FUNCX_TEST_VALUE", "passed in");
    Executor::builder()
        .workers(1)
        .start(PythonRuntime::new(config))
}

/// `executor`, once its worker is ready.
async fn ready(container: Container) -> Executor {
    let executor = executor(container);
    tokio::time::timeout(LIMIT, executor.ready())
        .await
        .expect("ready within the limit")
        .expect("the container worker starts (is scripts/infra/podman-up.sh run?)");
    executor
}

/// Names of this process's worker containers that podman still lists.
fn our_containers() -> Vec<String> {
    let output = Command::new("podman")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .expect("podman ps runs");
    let prefix = format!("funcx-worker-{}-", std::process::id());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

const INSIDE: &str = r#"
import os, sys

def inside(x):
    # The image holds Python and nothing of this machine's file tree.
    return [x * 6, os.path.exists("/work"), os.environ.get("FUNCX_TEST_VALUE"), sys.executable]
"#;

#[tokio::test]
async fn a_podman_worker_runs_a_function_and_its_result_comes_back() {
    let executor = ready(Container::podman(image())).await;
    assert_eq!(our_containers().len(), 1, "one worker, one container");
    let inside = Function::from_source(INSIDE, "inside");
    let (value, sees_host_tree, env, _python): (i64, bool, Option<String>, String) =
        tokio::time::timeout(LIMIT, executor.submit(&inside, (7,)).result())
            .await
            .expect("within the limit")
            .expect("the task runs in the container");
    assert_eq!(value, 42);
    assert!(
        !sees_host_tree,
        "the worker ran on the host, not in the image"
    );
    assert_eq!(env.as_deref(), Some("passed in"));

    // Warm: the second task runs in the same container.
    let again = tokio::time::timeout(
        LIMIT,
        executor
            .submit(&inside, (1,))
            .result::<(i64, bool, Option<String>, String)>(),
    )
    .await
    .expect("within the limit")
    .expect("runs");
    assert_eq!(again.0, 6);
    assert_eq!(our_containers().len(), 1);
}

#[tokio::test]
async fn a_killed_worker_takes_its_container_and_task_with_it() {
    let executor = ready(Container::podman(image())).await;
    let first = our_containers();
    assert_eq!(first.len(), 1, "{first:?}");
    let hang = Function::from_source("import time\n\ndef hang():\n    time.sleep(600)\n", "hang");
    let error = tokio::time::timeout(
        LIMIT,
        executor.submit_with(
            &hang,
            (),
            TaskOptions::new().timeout(Duration::from_secs(2)),
        ),
    )
    .await
    .expect("the timeout fires within the limit")
    .expect_err("the task times out");
    assert!(error.is_timeout(), "{error}");
    // The killed worker's container is gone (the replacement has one of its own).
    let deadline = std::time::Instant::now() + LIMIT;
    while our_containers().contains(&first[0]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed worker's container {} is still there",
            first[0]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    executor.shutdown().await;
}

#[tokio::test]
async fn a_missing_image_is_a_clear_error() {
    let executor = executor(Container::podman("localhost/funcx-no-such-image:latest"));
    let error = tokio::time::timeout(LIMIT, executor.ready())
        .await
        .expect("answered within the limit")
        .expect_err("no worker can start");
    let text = error.to_string();
    assert!(error.is_no_workers(), "{text}");
    assert!(
        text.contains("funcx-no-such-image") && text.contains("not on this machine"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_container_engine_is_a_clear_error() {
    let executor = executor(Container::podman(image()).program("/nonexistent/podman"));
    let error = tokio::time::timeout(LIMIT, executor.ready())
        .await
        .expect("answered within the limit")
        .expect_err("no worker can start");
    let text = error.to_string();
    assert!(
        text.contains("could not run the container engine") && text.contains("/nonexistent/podman"),
        "{text}"
    );
}

const SANDBOXED: &str = r#"
import os

def probe(path):
    # This machine's files are there, read-only; /tmp is the sandbox's own.
    try:
        open(path, "w").close()
        wrote = True
    except OSError:
        wrote = False
    open("/tmp/funcx-bwrap-probe", "w").write("x")
    return [os.path.exists("/usr/bin"), wrote, os.environ.get("FUNCX_TEST_VALUE")]
"#;

#[tokio::test]
async fn a_bubblewrap_worker_reads_the_machine_but_writes_only_its_own_tmp() {
    let executor = ready(Container::bubblewrap()).await;
    // A file in this build's own directory (not /tmp, which is the sandbox's), which the
    // sandbox must not be able to create.
    let outside = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("funcx-bwrap-{}", std::process::id()));
    let _ = std::fs::remove_file(&outside);
    let probe = Function::from_source(SANDBOXED, "probe");
    let (usr_bin, wrote, env): (bool, bool, Option<String>) = tokio::time::timeout(
        LIMIT,
        executor
            .submit(&probe, (outside.to_string_lossy().into_owned(),))
            .result(),
    )
    .await
    .expect("within the limit")
    .expect("the sandboxed worker runs the task");
    assert!(usr_bin, "the machine's files are visible");
    assert!(!wrote && !outside.exists(), "the sandbox wrote {outside:?}");
    assert_eq!(env.as_deref(), Some("passed in"));
    assert!(
        !std::path::Path::new("/tmp/funcx-bwrap-probe").exists(),
        "the sandbox's /tmp is not this machine's"
    );
}
