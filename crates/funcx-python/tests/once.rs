//! Evidence for the delivery promise, on real `funcx-manager` processes with real Python
//! workers: every run of a task is counted by the task itself (it appends the pid of the
//! manager it runs under to a file named after the task, with an `O_APPEND` write), and every
//! outcome handed to the caller is counted on a report stream.
//!
//! - A manager killed mid-run: each task runs at least once, and only tasks that ran on the
//!   killed manager without their result getting out run a second time; each result reaches
//!   the caller exactly once.
//! - A connection cut and restored, and tasks sent while a manager is unreachable: each task
//!   runs exactly once and is delivered exactly once.
//! - A cancelled task that had not started never runs, and its cancellation is its one
//!   outcome.
//! - A local worker killed mid-task: that task alone runs again (a charged retry), or fails
//!   with the death when no retry is left.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{endpoint, managers, wait_until, within, Manager, Relay, LIMIT};
use funcx_core::{
    report_stream, Executor, Function, ReportStream, Task, TaskId, TaskOptions, TaskReport,
};

/// Appends the manager's pid (the worker's parent) to `directory/i`, then sleeps `pause`
/// seconds, or for a minute if it runs under `hold_pid` and that manager has already run
/// `hold_after` tasks (so the killed manager is sure to die in the middle of a task).
const RUN: &str = r#"import os, time

def run(i, directory, pause, hold_pid=0, hold_after=0):
    manager = os.getppid()
    with open(os.path.join(directory, str(i)), "a") as f:
        f.write("%d\n" % manager)
    if manager == hold_pid:
        with open(os.path.join(directory, "runs-%d" % manager), "a") as f:
            f.write("x\n")
        with open(os.path.join(directory, "runs-%d" % manager)) as f:
            if len(f.readlines()) > hold_after:
                time.sleep(60)
    time.sleep(pause)
    return (i, manager)
"#;

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "funcx-once-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn text(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every run of every task so far: task number → the pids of the managers it ran under, in
/// the order it ran.
fn runs(directory: &Path) -> HashMap<i64, Vec<u32>> {
    let mut runs = HashMap::new();
    for entry in std::fs::read_dir(directory).expect("read runs") {
        let entry = entry.expect("entry");
        let Ok(task) = entry.file_name().to_string_lossy().parse::<i64>() else {
            continue; // a manager's own counter
        };
        let text = std::fs::read_to_string(entry.path()).expect("read a task's runs");
        let pids = text
            .lines()
            .map(|line| line.parse::<u32>().expect("a pid per line"))
            .collect();
        runs.insert(task, pids);
    }
    runs
}

/// How many runs have started so far, all tasks together.
fn total_runs(directory: &Path) -> usize {
    runs(directory).values().map(Vec::len).sum()
}

/// Submits `run(i, directory, pause, hold_pid, hold_after)` for i in `range`, tagged i.
fn submit(
    executor: &Executor,
    range: std::ops::Range<i64>,
    directory: &TempDir,
    pause: f64,
    hold: (u32, usize),
) -> (Vec<TaskId>, ReportStream) {
    let run = Function::from_source(RUN, "run");
    let (sink, reports) = report_stream();
    let ids = executor.submit_streamed(
        range.map(|i| {
            let args = (i, directory.text(), pause, hold.0, hold.1 as u64);
            (i as u64, Task::new(&run, args))
        }),
        &sink,
    );
    (ids, reports)
}

/// Reads exactly `count` outcomes, then checks that the stream ends (every task's reply is
/// gone, so nothing more can be delivered): tag → (times delivered, the last report).
async fn deliveries(reports: &mut ReportStream, count: usize) -> HashMap<u64, (u32, TaskReport)> {
    let mut seen: HashMap<u64, (u32, TaskReport)> = HashMap::new();
    for _ in 0..count {
        let (tag, report) = within("every outcome", LIMIT, reports.recv())
            .await
            .expect("an outcome per task");
        let times = seen.get(&tag).map_or(0, |(times, _)| *times) + 1;
        seen.insert(tag, (times, report));
    }
    let extra = within("the end of the report stream", LIMIT, reports.recv()).await;
    assert!(extra.is_none(), "an outcome was delivered twice: {extra:?}");
    assert_eq!(seen.len(), count, "every task has an outcome");
    assert!(
        seen.values().all(|(times, _)| *times == 1),
        "each outcome is delivered exactly once"
    );
    seen
}

/// The (task, manager pid) a task returned.
fn returned(report: &TaskReport, tag: u64) -> (i64, u32) {
    let payload = report
        .result
        .as_ref()
        .unwrap_or_else(|error| panic!("task {tag} failed: {error}"));
    payload.decode().expect("(i, pid)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_manager_s_tasks_run_at_least_once_and_are_delivered_once() {
    let endpoint = endpoint(2, Duration::from_millis(800)).await;
    let victim = Manager::start(endpoint.address, 1);
    let survivor = Manager::start(endpoint.address, 1);
    managers(&endpoint.executor, 2).await;
    let directory = TempDir::new("kill");

    // The victim runs two tasks normally; its third never finishes.
    const TASKS: i64 = 60;
    let (_, mut reports) = submit(
        &endpoint.executor,
        0..TASKS,
        &directory,
        0.01,
        (victim.pid(), 2),
    );
    let counter = directory.path().join(format!("runs-{}", victim.pid()));
    wait_until(
        "the victim is in the middle of its third task",
        Duration::from_secs(30),
        || {
            let counter = counter.clone();
            async move {
                std::fs::read_to_string(&counter).is_ok_and(|text| text.lines().count() >= 3)
            }
        },
    )
    .await;
    victim.signal("-KILL");

    let delivered = deliveries(&mut reports, TASKS as usize).await;
    let runs = runs(directory.path());
    let (a, b) = (victim.pid(), survivor.pid());
    let mut twice = Vec::new();
    for i in 0..TASKS {
        let (value, from) = returned(&delivered[&(i as u64)].1, i as u64);
        assert_eq!(value, i, "task {i} got another task's result");
        let pids = runs.get(&i).map(Vec::as_slice).unwrap_or_default();
        match pids {
            [] => panic!("task {i} never ran, yet its result arrived"),
            [only] => assert_eq!(*only, from, "task {i} ran once, under {only}"),
            [first, second] => {
                // Run again only because its first run was on the killed manager and its
                // result never got out.
                assert_eq!((*first, *second), (a, b), "task {i} ran twice: {pids:?}");
                assert_eq!(from, b, "task {i}'s delivered result is its second run's");
                twice.push(i);
            }
            more => panic!("task {i} ran {} times: {more:?}", more.len()),
        }
    }
    // The task the victim died in ran twice, and the bound is exact: the tasks that ran
    // twice are those that ran on the victim without a result from it.
    let started_on_victim: Vec<i64> = (0..TASKS).filter(|i| runs[i].first() == Some(&a)).collect();
    let delivered_from_victim: Vec<i64> = (0..TASKS)
        .filter(|i| returned(&delivered[&(*i as u64)].1, *i as u64).1 == a)
        .collect();
    assert!(!twice.is_empty(), "the task running at the kill ran again");
    assert_eq!(
        twice.len(),
        started_on_victim.len() - delivered_from_victim.len(),
        "ran twice: {twice:?}; started on the victim: {started_on_victim:?}; delivered from it: {delivered_from_victim:?}"
    );
    // A re-run is charged: the dispatcher counts each attempt.
    for i in &twice {
        let attempts = delivered[&(*i as u64)].1.status.attempts;
        assert!(attempts >= 2, "task {i} ran twice in {attempts} attempts");
    }
    managers(&endpoint.executor, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_and_restored_connection_runs_each_task_exactly_once() {
    // Retries 0: a task lost in a cut would fail instead of quietly running again.
    let endpoint = endpoint(0, Duration::from_secs(10)).await;
    let relay = Relay::start(endpoint.address).await;
    let manager = Manager::start(relay.address, 2);
    managers(&endpoint.executor, 1).await;
    let directory = TempDir::new("cut");

    const TASKS: i64 = 300;
    let (_, mut reports) = submit(&endpoint.executor, 0..TASKS, &directory, 0.005, (0, 0));
    for cut in 1..=3_usize {
        let threshold = cut * TASKS as usize / 4;
        wait_until(
            &format!("{threshold} runs before cut {cut}"),
            Duration::from_secs(30),
            || async { total_runs(directory.path()) >= threshold },
        )
        .await;
        relay.cut();
        wait_until(
            "the manager to reconnect",
            Duration::from_secs(30),
            || async { relay.connections() > cut },
        )
        .await;
    }

    let delivered = deliveries(&mut reports, TASKS as usize).await;
    let runs = runs(directory.path());
    for i in 0..TASKS {
        assert_eq!(
            runs.get(&i).map(Vec::as_slice),
            Some(&[manager.pid()][..]),
            "task {i} ran exactly once"
        );
        assert_eq!(
            returned(&delivered[&(i as u64)].1, i as u64),
            (i, manager.pid())
        );
    }
    assert_eq!(runs.len(), TASKS as usize);
    assert_eq!(endpoint.executor.stats().await.managers, 1, "one session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sent_while_a_manager_is_unreachable_are_resent_and_run_once() {
    let endpoint = endpoint(0, Duration::from_secs(10)).await;
    let relay = Relay::start(endpoint.address).await;
    let manager = Manager::start(relay.address, 2);
    managers(&endpoint.executor, 1).await;
    let directory = TempDir::new("resend");

    // Warm the function, then take the network down.
    let (_, mut warm) = submit(&endpoint.executor, 0..10, &directory, 0.0, (0, 0));
    deliveries(&mut warm, 10).await;
    relay.set_open(false);
    relay.cut();

    const TASKS: i64 = 100;
    let (_, mut reports) = submit(&endpoint.executor, 10..10 + TASKS, &directory, 0.0, (0, 0));
    // The endpoint hands tasks to the manager's session, which stands for the heartbeat
    // threshold: they wait there to be re-sent, since nothing reaches the manager.
    let executor = endpoint.executor.clone();
    wait_until(
        "tasks to be handed to the absent manager",
        Duration::from_secs(10),
        || {
            let executor = executor.clone();
            async move { executor.stats().await.in_flight > 0 }
        },
    )
    .await;
    assert_eq!(total_runs(directory.path()), 10, "nothing ran while away");
    relay.set_open(true);

    let delivered = deliveries(&mut reports, TASKS as usize).await;
    let runs = runs(directory.path());
    for i in 0..10 + TASKS {
        assert_eq!(
            runs.get(&i).map(Vec::as_slice),
            Some(&[manager.pid()][..]),
            "task {i} ran exactly once"
        );
    }
    for i in 10..10 + TASKS {
        assert_eq!(
            returned(&delivered[&(i as u64)].1, i as u64),
            (i, manager.pid())
        );
    }
    assert_eq!(
        relay.connections(),
        2,
        "one reconnection, to the same session"
    );
    assert_eq!(endpoint.executor.stats().await.managers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_before_it_starts_never_runs() {
    let endpoint = endpoint(0, Duration::from_secs(10)).await;
    let _manager = Manager::start(endpoint.address, 1);
    managers(&endpoint.executor, 1).await;
    let directory = TempDir::new("cancel");

    // The one worker is busy with task 0 (held for a minute); tasks 1..=20 wait behind it,
    // some in the endpoint's queue, some perhaps already on the manager.
    let manager_pid = _manager.pid();
    let (ids, mut reports) = submit(&endpoint.executor, 0..21, &directory, 0.0, (manager_pid, 0));
    wait_until("task 0 to start", Duration::from_secs(30), || async {
        runs(directory.path()).contains_key(&0)
    })
    .await;
    for id in &ids[1..] {
        endpoint.executor.cancel(*id);
    }
    endpoint.executor.cancel(ids[0]);

    let delivered = deliveries(&mut reports, 21).await;
    for (tag, (_, report)) in &delivered {
        let error = report.result.as_ref().expect_err("cancelled");
        assert!(error.is_cancelled(), "task {tag}: {error}");
    }
    let runs = runs(directory.path());
    assert_eq!(
        runs.keys().copied().collect::<Vec<_>>(),
        vec![0],
        "only the running task ran"
    );
}

/// Appends the worker's pid to `directory/i`; task `culprit` kills its own worker the first
/// time it runs.
const DIES_ONCE: &str = r#"import os, signal

def run(i, directory, culprit):
    path = os.path.join(directory, str(i))
    with open(path, "a") as f:
        f.write("%d\n" % os.getpid())
    with open(path) as f:
        first = len(f.readlines()) == 1
    if i == culprit and first:
        os.kill(os.getpid(), signal.SIGKILL)
    return (i, os.getpid())
"#;

/// Local workers: a worker killed in the middle of a task re-runs that task once (the
/// retry is charged to it) on a fresh worker, and every other task runs once; without a
/// retry, the task fails with the worker's death after its one run.
///
/// The tasks have a timeout, so each runs isolated: the worker reports each start and each
/// result at once, and a death names its task. (Without isolation, results of tasks that
/// finished just before the death may not have left the worker; those tasks then run again
/// too, which is the at-least-once rule, checked with managers above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_reruns_that_task_alone() {
    for retries in [1, 0] {
        let executor = Executor::builder()
            .workers(2)
            .retries_on_worker_death(retries)
            .start(funcx_python::PythonRuntime::new(
                funcx_python::PythonConfig::new(),
            ));
        let directory = TempDir::new("worker");
        let function = Function::from_source(DIES_ONCE, "run");
        let (sink, mut reports) = report_stream();
        const TASKS: i64 = 40;
        const CULPRIT: i64 = 17;
        executor.submit_streamed(
            (0..TASKS).map(|i| {
                let task = Task::new(&function, (i, directory.text(), CULPRIT))
                    .with_options(TaskOptions::new().timeout(LIMIT));
                (i as u64, task)
            }),
            &sink,
        );
        drop(sink);
        let delivered = deliveries(&mut reports, TASKS as usize).await;
        let runs = runs(directory.path());
        for i in 0..TASKS {
            let pids = &runs[&i];
            let report = &delivered[&(i as u64)].1;
            if i != CULPRIT {
                assert_eq!(pids.len(), 1, "task {i} ran once: {pids:?}");
                let (value, pid): (i64, u32) = report
                    .result
                    .as_ref()
                    .expect("result")
                    .decode()
                    .expect("(i, pid)");
                assert_eq!((value, pid), (i, pids[0]));
            } else if retries == 1 {
                assert_eq!(pids.len(), 2, "the culprit ran again: {pids:?}");
                assert_ne!(pids[0], pids[1], "on a fresh worker");
                let (_, pid): (i64, u32) = report
                    .result
                    .as_ref()
                    .expect("re-run")
                    .decode()
                    .expect("(i, pid)");
                assert_eq!(pid, pids[1], "its result is the second run's");
                assert_eq!(report.status.attempts, 2, "the re-run is an attempt");
            } else {
                assert_eq!(pids.len(), 1, "without retries the culprit ran once");
                let error = report.result.as_ref().expect_err("its worker died");
                assert!(error.is_worker_died(), "{error}");
            }
        }
        within("the shutdown", LIMIT, executor.shutdown()).await;
    }
}
