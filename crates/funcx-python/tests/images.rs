//! Functions that name a container image (`Function::in_image`), on real podman:
//! scripts/infra/podman-up.sh builds `localhost/funcx-image-a:latest` and
//! `localhost/funcx-image-b:latest`, each with `/etc/funcx-image` holding its own name.
//! The endpoint's default workers run on this machine; each function's tasks run in its
//! image, on workers started there once and kept warm.

mod common;

use std::time::Duration;

use common::{endpoint, managers, Manager};
use funcx_core::{Executor, Function};
use funcx_python::{Container, PythonConfig, PythonRuntime};

/// How long a step may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(120);

const WHERE: &str = r#"
import os

def where(x):
    # The marker file is in the image only; this machine has none.
    if os.path.exists("/etc/funcx-image"):
        return [x, open("/etc/funcx-image").read().strip()]
    return [x, "none"]
"#;

fn where_in(image: Option<&str>) -> Function {
    let function = Function::from_source(WHERE, "where");
    match image {
        Some(image) => function.in_image(image),
        None => function,
    }
}

async fn ready(workers: usize, config: PythonConfig) -> Executor {
    let executor = Executor::builder()
        .workers(workers)
        .start(PythonRuntime::new(config));
    tokio::time::timeout(LIMIT, executor.ready())
        .await
        .expect("ready within the limit")
        .expect("the default workers start");
    executor
}

/// Runs `per_round` tasks alternating between `functions` (each with the image name its
/// tasks must report) and checks every result.
async fn interleaved(executor: &Executor, functions: &[(&Function, &str)], per_round: i64) {
    let handles: Vec<_> = (0..per_round)
        .map(|i| {
            let (function, expected) = functions[i as usize % functions.len()];
            (i, expected, executor.submit(function, (i,)))
        })
        .collect();
    for (i, expected, handle) in handles {
        let (x, ran_in): (i64, String) = tokio::time::timeout(LIMIT, handle.result())
            .await
            .expect("within the limit")
            .unwrap_or_else(|e| panic!("task {i}: {e}"));
        assert_eq!((x, ran_in.as_str()), (i, expected), "task {i}");
    }
}

#[tokio::test]
async fn each_function_runs_in_its_image_on_workers_started_once() {
    let executor = ready(2, PythonConfig::new()).await;
    let a = where_in(Some("localhost/funcx-image-a:latest"));
    let b = where_in(Some("localhost/funcx-image-b:latest"));
    let plain = where_in(None);
    let before = executor.stats().await.workers_started;
    assert_eq!(before, 2, "the two default workers");

    let rounds = 4;
    for _ in 0..rounds {
        interleaved(&executor, &[(&a, "a"), (&b, "b")], 100).await;
    }
    let starts = executor.stats().await.workers_started - before;
    // One worker moves into each image; a round's tail moves one only when it outweighs a
    // container's start, which these microsecond tasks never do.
    assert!(
        (2..=2 + 2 * rounds).contains(&starts),
        "{starts} container starts for {} tasks",
        rounds * 100
    );
    eprintln!("{starts} container starts for {} tasks", rounds * 100);

    // Plain tasks run on this machine again (no marker), on a default worker started for them.
    interleaved(&executor, &[(&plain, "none")], 10).await;
    executor.shutdown().await;
}

#[tokio::test]
async fn a_missing_image_fails_its_tasks_clearly_while_others_run() {
    let executor = ready(2, PythonConfig::new()).await;
    let missing = where_in(Some("localhost/funcx-no-such-image:latest"));
    let a = where_in(Some("localhost/funcx-image-a:latest"));
    let plain = where_in(None);
    let doomed: Vec<_> = (0..5).map(|i| executor.submit(&missing, (i,))).collect();
    interleaved(&executor, &[(&a, "a"), (&plain, "none")], 20).await;
    for handle in doomed {
        let error = tokio::time::timeout(LIMIT, handle.result::<(i64, String)>())
            .await
            .expect("within the limit")
            .expect_err("no worker starts in a missing image");
        let text = error.to_string();
        assert!(error.is_no_workers(), "{text}");
        assert!(
            text.contains("funcx-no-such-image") && text.contains("not on this machine"),
            "{text}"
        );
    }
    // The others still run after the failure.
    interleaved(&executor, &[(&a, "a"), (&plain, "none")], 10).await;
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_manager_runs_a_function_in_its_image() {
    // The image travels with the function over the manager protocol; the funcx-manager
    // process starts the image's worker with podman from PATH.
    let endpoint = endpoint(0, Duration::from_secs(10)).await;
    let _manager = Manager::start(endpoint.address, 2);
    managers(&endpoint.executor, 1).await;
    let a = where_in(Some("localhost/funcx-image-a:latest"));
    let b = where_in(Some("localhost/funcx-image-b:latest"));
    let plain = where_in(None);
    interleaved(
        &endpoint.executor,
        &[(&a, "a"), (&b, "b"), (&plain, "none")],
        30,
    )
    .await;
    tokio::time::timeout(LIMIT, endpoint.executor.shutdown())
        .await
        .expect("shut down within the limit");
}

#[tokio::test]
async fn a_missing_apptainer_is_named_in_the_error() {
    // Neither apptainer nor singularity is installed here: the spawn really runs the
    // binary the container resolved, and fails.
    let config = PythonConfig::new().container(Container::apptainer("/images/analysis.sif"));
    let executor = Executor::builder()
        .workers(1)
        .start(PythonRuntime::new(config));
    let error = tokio::time::timeout(LIMIT, executor.ready())
        .await
        .expect("answered within the limit")
        .expect_err("no worker can start");
    let text = error.to_string();
    assert!(error.is_no_workers(), "{text}");
    assert!(
        text.contains("could not run the container engine")
            && (text.contains("\"apptainer\"") || text.contains("\"singularity\"")),
        "{text}"
    );
}

#[tokio::test]
async fn a_function_image_is_started_by_the_endpoints_container_engine() {
    // The endpoint's own workers run in podman too (in the base image, which has no marker
    // and none of this machine's tree); a function's image is started by the same engine.
    let config = PythonConfig::new()
        .container(Container::podman("localhost/funcx-python:latest").option("--memory=1g"));
    let executor = ready(1, config).await;
    let b = where_in(Some("localhost/funcx-image-b:latest"));
    let plain = Function::from_source(
        "import os\n\ndef tree(x):\n    return [x, 'work' if os.path.exists('/work') else 'image']\n",
        "tree",
    );
    interleaved(&executor, &[(&b, "b")], 4).await;
    interleaved(&executor, &[(&plain, "image")], 4).await;
    executor.shutdown().await;
}
