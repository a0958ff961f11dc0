//! Functions that name a container image, with simulated workers: each task runs on a worker
//! started in its function's image, the endpoint's workers move between images as the work
//! does (a worker start per move, not per task), and an image no worker can start in fails
//! its own tasks, clearly and at once, while other functions keep running.

mod support;

use std::future::Future;
use std::time::Duration;

use funcx_core::worker::{Worker, WorkerEvents, WorkerRuntime};
use funcx_core::{Executor, Function, SpawnError};
use futures::future::BoxFuture;

use support::{func, SimConfig, SimRuntime};

/// The longest any single test step may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

fn runtime(images: &[&str]) -> SimRuntime {
    SimRuntime::with_config(SimConfig {
        images: images.iter().map(|image| image.to_string()).collect(),
        ..SimConfig::default()
    })
}

/// `image()` run in `image`: returns the image its worker was started in.
fn in_image(image: &str) -> Function {
    func("image").in_image(image)
}

/// Submits `rounds` rounds of `per_round` tasks alternating between `functions`, waits for
/// each round, and checks every result: a function's tasks ran in its image.
async fn run_interleaved(
    executor: &Executor,
    functions: &[(&Function, &str)],
    rounds: usize,
    per_round: usize,
) {
    for round in 0..rounds {
        let handles: Vec<_> = (0..per_round)
            .map(|i| {
                let (function, expected) = functions[i % functions.len()];
                (expected, executor.submit(function, ()))
            })
            .collect();
        for (expected, handle) in handles {
            let ran_in: String = within("a result", handle.result())
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(ran_in, expected, "round {round}: ran in the wrong image");
        }
    }
}

#[tokio::test]
async fn each_task_runs_in_its_functions_image_and_starts_are_per_worker_not_per_task() {
    let sim = runtime(&["a", "b"]);
    let executor = Executor::builder().workers(2).start(sim.clone());
    within("ready", executor.ready()).await.expect("ready");
    let (a, b, plain) = (in_image("a"), in_image("b"), func("image"));
    assert_ne!(
        a.id(),
        b.id(),
        "the image is part of the function's identity"
    );

    let (rounds, per_round) = (5, 200);
    run_interleaved(&executor, &[(&a, "a"), (&b, "b")], rounds, per_round).await;
    let starts = sim.attempts_in("a") + sim.attempts_in("b");
    // One worker moves into each image at first (on an idle machine that is all); at the
    // end of a round the image that finished first may hand its idle worker to the other's
    // tail if that tail outweighs a start, and the next round takes it back: at most two
    // moves a round, against 200 tasks a round.
    assert!(
        (2..=2 + 2 * rounds).contains(&starts),
        "{starts} image worker starts for {} tasks (a: {}, b: {})",
        rounds * per_round,
        sim.attempts_in("a"),
        sim.attempts_in("b")
    );

    // Plain tasks take the workers back for the default lane, and run outside any image.
    run_interleaved(&executor, &[(&plain, "")], 1, 50).await;
    assert!(
        sim.attempts_in("") >= 3,
        "a default worker started again for the plain tasks"
    );
    executor.shutdown().await;
}

#[tokio::test]
async fn a_warm_image_worker_serves_every_task_of_its_image() {
    let sim = runtime(&["a"]);
    let executor = Executor::builder().workers(1).start(sim.clone());
    let a = in_image("a");
    for _ in 0..50 {
        let ran_in: String = within("a result", executor.submit(&a, ()).result())
            .await
            .expect("runs");
        assert_eq!(ran_in, "a");
    }
    assert_eq!(
        sim.attempts_in("a"),
        1,
        "one start in the image for 50 tasks"
    );
    assert_eq!(
        sim.attempts_in(""),
        1,
        "the one default worker, retired once"
    );
    executor.shutdown().await;
}

#[tokio::test]
async fn a_missing_image_fails_its_tasks_while_other_functions_keep_running() {
    let sim = runtime(&["a"]);
    let executor = Executor::builder().workers(2).start(sim.clone());
    within("ready", executor.ready()).await.expect("ready");
    let (a, missing, plain) = (in_image("a"), in_image("no-such-image"), func("image"));

    let doomed: Vec<_> = (0..20).map(|_| executor.submit(&missing, ())).collect();
    let fine: Vec<_> = (0..20).map(|_| executor.submit(&a, ())).collect();
    for handle in doomed {
        let error = within("the missing image's task", handle.result::<String>())
            .await
            .expect_err("no worker can start in a missing image");
        assert!(error.is_no_workers(), "{error}");
        let text = error.to_string();
        assert!(
            text.contains("no-such-image") && text.contains("not on this machine"),
            "{text}"
        );
    }
    for handle in fine {
        let ran_in: String = within("a task of a", handle.result()).await.expect("runs");
        assert_eq!(ran_in, "a");
    }
    let attempts = sim.attempts_in("no-such-image");
    assert!((1..=2).contains(&attempts), "{attempts} start attempts");

    // For a while its tasks fail at once, without another attempt; plain tasks run.
    let error = within(
        "a task of the missing image",
        executor.submit(&missing, ()).result::<String>(),
    )
    .await
    .expect_err("still missing");
    assert!(error.is_no_workers(), "{error}");
    assert_eq!(
        sim.attempts_in("no-such-image"),
        attempts,
        "no respawn loop"
    );
    let ran_in: String = within("a plain task", executor.submit(&plain, ()).result())
        .await
        .expect("plain tasks run");
    assert_eq!(ran_in, "");
    executor.shutdown().await;
}

/// A runtime that starts default workers only: it leaves `spawn_in_image` to the trait.
struct NoImages(SimRuntime);

impl WorkerRuntime for NoImages {
    fn spawn(
        &self,
        index: usize,
        events: WorkerEvents,
    ) -> BoxFuture<'static, Result<Box<dyn Worker>, SpawnError>> {
        self.0.spawn(index, events)
    }
}

#[tokio::test]
async fn a_runtime_that_cannot_start_images_says_so() {
    let executor = Executor::builder()
        .workers(1)
        .start(NoImages(SimRuntime::new()));
    let error = within(
        "the image task",
        executor
            .submit(&in_image("localhost/x:1"), ())
            .result::<String>(),
    )
    .await
    .expect_err("this runtime starts no images");
    assert!(error.is_no_workers(), "{error}");
    assert!(
        error
            .to_string()
            .contains("cannot start workers in container image \"localhost/x:1\""),
        "{error}"
    );
    let ran_in: String = within("a plain task", executor.submit(&func("image"), ()).result())
        .await
        .expect("the default worker is back");
    assert_eq!(ran_in, "");
    executor.shutdown().await;
}

#[tokio::test]
async fn a_draining_shutdown_finishes_the_tasks_of_every_image() {
    let sim = runtime(&["a", "b"]);
    let executor = Executor::builder().workers(2).start(sim.clone());
    let (a, b, plain) = (in_image("a"), in_image("b"), func("image"));
    // Submitted before any worker is ready, so the workers move between images while the
    // endpoint drains.
    let handles: Vec<_> = (0..90)
        .map(|i| {
            let (function, expected) = [(&a, "a"), (&b, "b"), (&plain, "")][i % 3];
            (expected, executor.submit(function, ()))
        })
        .collect();
    within("the draining shutdown", executor.shutdown()).await;
    for (expected, handle) in handles {
        let ran_in: String = within("a result", handle.result())
            .await
            .expect("accepted tasks finish before the endpoint stops");
        assert_eq!(ran_in, expected);
    }
}
