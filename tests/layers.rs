//! Tower layers stacked on the executor: memoization, tower's timeout and concurrency limit.

mod common;

use std::time::{Duration, Instant};

use common::{assert_pool_works, start, within, TempDir, HANG};
use funcx::{Function, MemoizeLayer, Payload, Task};
use tower::{Service, ServiceBuilder, ServiceExt};

/// Appends a line to the file at `path` each time it runs; returns `x * 10`.
fn counted() -> Function {
    Function::from_source(
        "def counted(path, x):\n    with open(path, 'a') as f:\n        f.write(f'{x}\\n')\n    return x * 10\n",
        "counted",
    )
}

fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memoize_answers_repeated_calls_from_the_cache() {
    let executor = start(2).await;
    let dir = TempDir::new("memoize");
    let path = dir.join("count");
    let mut service = ServiceBuilder::new()
        .layer(MemoizeLayer::new(1000))
        .service(executor.clone());

    async fn call<S>(service: &mut S, task: Task) -> Payload
    where
        S: Service<Task, Response = Payload, Error = funcx::TaskError>,
    {
        let ready = within(HANG, service.ready()).await.expect("ready");
        within(HANG, ready.call(task)).await.expect("call")
    }

    let first = call(&mut service, Task::new(&counted(), (&path, 4))).await;
    assert_eq!(first.decode::<i64>().unwrap(), 40);
    assert_eq!(lines(&path), ["4"]);

    let second = call(&mut service, Task::new(&counted(), (&path, 4))).await;
    assert_eq!(second, first);
    assert_eq!(
        lines(&path),
        ["4"],
        "the second call ran instead of hitting the cache"
    );
    assert_eq!(service.cached(), 1);

    // Different arguments run again, and are cached in turn.
    let third = call(&mut service, Task::new(&counted(), (&path, 5))).await;
    assert_eq!(third.decode::<i64>().unwrap(), 50);
    assert_eq!(lines(&path), ["4", "5"]);
    let _ = call(&mut service, Task::new(&counted(), (&path, 5))).await;
    let _ = call(&mut service, Task::new(&counted(), (&path, 4))).await;
    assert_eq!(lines(&path), ["4", "5"]);

    // Another function with the same arguments is another key.
    let other = Function::from_source(
        "def counted(path, x):\n    with open(path, 'a') as f:\n        f.write(f'other {x}\\n')\n    return -x\n",
        "counted",
    );
    let fourth = call(&mut service, Task::new(&other, (&path, 4))).await;
    assert_eq!(fourth.decode::<i64>().unwrap(), -4);
    assert_eq!(lines(&path), ["4", "5", "other 4"]);

    // Failures are not cached: a raising call runs every time.
    let flaky = Function::from_source(
        "def flaky(path):\n    with open(path, 'a') as f:\n        f.write('fail\\n')\n    raise ValueError('nope')\n",
        "flaky",
    );
    let fail_path = dir.join("fail");
    for attempt in 1..=2 {
        let ready = within(HANG, service.ready()).await.unwrap();
        let err = within(HANG, ready.call(Task::new(&flaky, (&fail_path,))))
            .await
            .unwrap_err();
        assert!(err.is_python(), "{err}");
        assert_eq!(lines(&fail_path).len(), attempt);
    }

    // The cache is the layer's, not the executor's: the bare executor runs again.
    let bare = within(
        HANG,
        executor.submit(&counted(), (&path, 4)).result::<i64>(),
    )
    .await
    .unwrap();
    assert_eq!(bare, 40);
    assert_eq!(lines(&path), ["4", "5", "other 4", "4"]);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memoize_capacity_evicts_old_results() {
    let executor = start(1).await;
    let dir = TempDir::new("memoize-cap");
    let path = dir.join("count");
    let mut service = ServiceBuilder::new()
        .layer(MemoizeLayer::new(2))
        .service(executor.clone());
    for x in [1, 2, 3] {
        let ready = within(HANG, service.ready()).await.unwrap();
        within(HANG, ready.call(Task::new(&counted(), (&path, x))))
            .await
            .unwrap();
    }
    assert!(service.cached() <= 2, "{}", service.cached());
    // 3 is the newest and must be cached; running it again adds no line.
    let ready = within(HANG, service.ready()).await.unwrap();
    within(HANG, ready.call(Task::new(&counted(), (&path, 3))))
        .await
        .unwrap();
    assert_eq!(lines(&path), ["1", "2", "3"]);
    // 1 is the oldest and was evicted; running it again adds a line.
    let ready = within(HANG, service.ready()).await.unwrap();
    within(HANG, ready.call(Task::new(&counted(), (&path, 1))))
        .await
        .unwrap();
    assert_eq!(lines(&path), ["1", "2", "3", "1"]);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_timeout_cancels_the_task() {
    let executor = start(1).await;
    let sleeper = Function::from_source(
        "import time\n\ndef sleeper(s):\n    time.sleep(s)\n    return s\n",
        "sleeper",
    );
    let mut service = ServiceBuilder::new()
        .timeout(Duration::from_millis(300))
        .service(executor.clone());
    let started = Instant::now();
    let err = within(
        HANG,
        service
            .ready()
            .await
            .unwrap()
            .call(Task::new(&sleeper, (30,))),
    )
    .await
    .unwrap_err();
    assert!(
        err.is::<tower::timeout::error::Elapsed>(),
        "expected tower's Elapsed, got {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Dropping the future cancelled the task: the only worker is free again quickly,
    // instead of sleeping for 30 s.
    let started = Instant::now();
    assert_pool_works(&executor, 10).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the abandoned task kept the worker busy: {:?}",
        started.elapsed()
    );
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_over_many_calls() {
    let executor = start(2).await;
    let square = Function::from_source("def square(x):\n    return x * x\n", "square");
    let service = ServiceBuilder::new()
        .concurrency_limit(50)
        .service(executor.clone());
    let calls = (0..2_000_i64).map(|x| Task::new(&square, (x,)));
    let results: Vec<_> = within(
        HANG,
        futures::StreamExt::collect::<Vec<_>>(service.call_all(futures::stream::iter(calls))),
    )
    .await;
    assert_eq!(results.len(), 2_000);
    for (x, result) in results.into_iter().enumerate() {
        let x = x as i64;
        assert_eq!(result.unwrap().decode::<i64>().unwrap(), x * x);
    }
    executor.shutdown().await;
}
