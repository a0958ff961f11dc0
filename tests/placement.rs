//! Placement on real Python workers: new work is spread over idle workers whatever the
//! estimates say, and work prefetched by a busy worker moves to an idle one, each task
//! still running exactly once (counted by the function itself, not by handles).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{start, unique_path, within};
use funcx::Function;

/// Sleeps `pause`, appends its task number to a log (one line per execution), and says
/// which worker ran it. Task -1 only teaches the endpoint that the function is instant.
const LOGGED: &str = "import os, time\n\ndef logged(log, i, pause):\n    if i < 0:\n        return (i, os.getpid())\n    time.sleep(pause)\n    with open(log, 'a') as f:\n        f.write('%d\\n' % i)\n    return (i, os.getpid())\n";

/// `LOGGED`, and task 0 leaves a `.started` marker beside the log when it starts.
const STAGED: &str = "import os, time\n\ndef logged(log, i, pause):\n    if i < 0:\n        return (i, os.getpid())\n    if i == 0:\n        open(log[:-4] + '.started', 'w').close()\n    time.sleep(pause)\n    with open(log, 'a') as f:\n        f.write('%d\\n' % i)\n    return (i, os.getpid())\n";

/// One call of `f` as task -1, so the endpoint learns that `f` is instant.
async fn learn_instant(executor: &funcx::Executor, f: &Function, log: &str) {
    let (_, _): (i64, u32) = within(
        common::HANG,
        executor.submit(f, (log.to_owned(), -1_i64, 0.0)).result(),
    )
    .await
    .expect("a first, instant call");
}

/// Asserts that each task in `tasks` ran exactly once, by the log, and removes the log.
fn assert_ran_once(log: &Path, tasks: std::ops::Range<i64>) {
    let counts = executions(log);
    for i in tasks {
        assert_eq!(counts.get(&i), Some(&1), "task {i} ran once: {counts:?}");
    }
    let _ = std::fs::remove_file(log);
}

/// How many times each task number ran, from the log.
fn executions(log: &Path) -> HashMap<i64, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        let i: i64 = line.parse().expect("a task number per line");
        *counts.entry(i).or_default() += 1;
    }
    counts
}

/// The reproduction: a function learned as instant (one call with a tiny input),
/// then four calls of 0.3 s on two workers. All four used to be prefetched by one worker
/// and run one after another while the other stayed idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_spread_over_idle_workers_when_estimates_say_it_is_instant() {
    let executor = start(2).await;
    let log = unique_path("spread").with_extension("log");
    let log_text = log.to_string_lossy().into_owned();
    let f = Function::from_source(LOGGED, "logged");
    learn_instant(&executor, &f, &log_text).await;

    let handles = executor.submit_batch(&f, (0..4_i64).map(|i| (log_text.clone(), i, 0.3)));
    let mut per_worker: HashMap<u32, usize> = HashMap::new();
    for handle in handles {
        let (_, pid): (i64, u32) = within(common::HANG, handle.result())
            .await
            .expect("a slow call");
        *per_worker.entry(pid).or_default() += 1;
    }
    assert_eq!(
        per_worker.len(),
        2,
        "both workers ran tasks: {per_worker:?}"
    );
    assert!(
        per_worker.values().all(|&n| n == 2),
        "two each: {per_worker:?}"
    );
    assert_ran_once(&log, 0..4);
}

/// Six slow tasks then six quick ones, on two workers, the function learned as instant:
/// the first worker is dealt mostly slow ones, the second finishes its quick ones and goes
/// idle, and takes back what waits on the first. Every task runs exactly once, and no
/// move counts as an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_takes_work_waiting_on_a_busy_one_and_nothing_runs_twice() {
    let executor = start(2).await;
    let log = unique_path("steal").with_extension("log");
    let log_text = log.to_string_lossy().into_owned();
    let f = Function::from_source(LOGGED, "logged");
    learn_instant(&executor, &f, &log_text).await;

    let pauses: Vec<f64> = [0.3; 6].into_iter().chain([0.01; 6]).collect();
    let handles = executor.submit_batch(
        &f,
        pauses
            .iter()
            .enumerate()
            .map(|(i, &pause)| (log_text.clone(), i as i64, pause)),
    );
    let ids: Vec<_> = handles.iter().map(|h| h.id()).collect();
    let mut ran_on = Vec::new();
    for handle in handles {
        let report = within(common::HANG, handle.report()).await;
        assert_eq!(report.status.attempts, 1, "moving a task is not an attempt");
        let (i, pid): (i64, u32) = report.result.expect("a task").decode().expect("(i, pid)");
        ran_on.push((i, pid));
    }
    assert_eq!(ids.len(), 12);
    // One task to each worker (0 and 1), then the rest dealt in halves: 2..=6 behind task 0,
    // 7..=11 behind task 1. Without stealing, 2..=6 all run where 2 does.
    let first = ran_on[2].1;
    assert_eq!(
        ran_on[0].1, first,
        "tasks 0 and 2 were dealt to one worker: {ran_on:?}"
    );
    assert!(
        ran_on[3..=6].iter().any(|(_, pid)| *pid != first),
        "some of the work waiting behind the slow tasks moved to the idle worker: {ran_on:?}"
    );
    assert_ran_once(&log, 0..12);
}

/// `Executor::withdraw` takes back what has not started and never what has: the running
/// task finishes with its result, the ones waiting behind it resolve as cancelled, and the
/// log shows that they never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdraw_takes_back_only_what_has_not_started() {
    let executor = start(1).await;
    let log = unique_path("withdraw").with_extension("log");
    let log_text = log.to_string_lossy().into_owned();
    let started = log.with_extension("started");
    let f = Function::from_source(STAGED, "logged");
    learn_instant(&executor, &f, &log_text).await;

    let handles = executor.submit_batch(
        &f,
        [(0_i64, 0.5), (1, 0.0), (2, 0.0), (3, 0.0)]
            .into_iter()
            .map(|(i, pause)| (log_text.clone(), i, pause)),
    );
    // Task 0 has started once it made its marker (its worker holds all four).
    common::wait_until(common::HANG, "task 0 started", || {
        let started = started.clone();
        async move { started.exists() }
    })
    .await;
    executor.withdraw(handles.iter().map(|h| h.id()).collect());
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(within(common::HANG, handle.result::<(i64, u32)>()).await);
    }
    let ran = executions(&log);
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok((value, _)) => {
                assert_eq!(*value, i as i64);
                assert_eq!(ran.get(&(i as i64)), Some(&1), "a finished task ran once");
            }
            Err(error) => {
                assert!(error.is_cancelled(), "{error}");
                assert_eq!(
                    ran.get(&(i as i64)),
                    None,
                    "a withdrawn task never ran: {ran:?}"
                );
            }
        }
    }
    assert!(
        outcomes[0].is_ok(),
        "the running task is never taken back: {outcomes:?}"
    );
    assert!(
        outcomes[1..].iter().any(Result::is_err),
        "tasks waiting behind a 0.5 s task were taken back: {outcomes:?}"
    );
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&started);
}
