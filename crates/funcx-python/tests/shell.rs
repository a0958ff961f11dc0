//! Shell and MPI functions on real `python3` workers running real processes: quoting, the
//! sandbox, bounded output, exit statuses, and a walltime that kills the whole process group.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use funcx_core::{Args, Executor, Function, MpiFunction, ShellFunction, ShellResult, TaskError};
use funcx_python::{PythonConfig, PythonRuntime};

/// How long any one task may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);

fn executor(workers: usize) -> Executor {
    let config = match std::env::var_os("FUNCX_TEST_PYTHON") {
        Some(python) => PythonConfig::new().python(python),
        None => PythonConfig::new(),
    };
    Executor::builder()
        .workers(workers)
        .start(PythonRuntime::new(config))
}

async fn run(executor: &Executor, function: impl Into<Function>, args: Args) -> ShellResult {
    let function = function.into();
    match tokio::time::timeout(LIMIT, executor.submit(&function, args).result()).await {
        Ok(Ok(result)) => result,
        // The MPI test needs scripts/infra/mpi-up.sh (Open MPI, Debian's mpi4py).
        Ok(Err(e)) => panic!("shell task failed: {e}"),
        Err(_) => panic!("shell task did not finish within {LIMIT:?}"),
    }
}

/// A directory of this test's own under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("funcx-shell-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Whether `pid` names a live process: a zombie (ended, not yet reaped by whoever inherited
/// it) counts as gone.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

async fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn pids(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[tokio::test]
async fn hostile_arguments_stay_single_words() {
    let executor = executor(1);
    let root = scratch("quoting");
    let shell = ShellFunction::new("printf '%s\\n' {0} {word}")
        .sandbox_root(root.to_string_lossy())
        .keep_sandbox(true);
    let hostile = [
        "$(touch pwned)",
        "`touch pwned`",
        "; touch pwned",
        "it's \"quoted\" && touch pwned",
        "two\nlines > pwned",
        "* ? [a] ~ {x} $HOME | & \\",
        "",
    ];
    for value in hostile {
        let result = run(
            &executor,
            &shell,
            Args::new().arg(&"first").kwarg("word", &value),
        )
        .await;
        assert_eq!(result.returncode, 0, "{result:?}");
        assert_eq!(result.stdout, format!("first\n{value}\n"), "{result:?}");
        let sandbox = result.sandbox.expect("a kept sandbox");
        assert!(Path::new(&sandbox).starts_with(&root));
        assert!(
            !Path::new(&sandbox).join("pwned").exists(),
            "{value:?} ran as shell syntax"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn each_task_runs_in_its_own_sandbox_which_is_removed_after() {
    let executor = executor(1);
    let root = scratch("sandbox");
    let shell = ShellFunction::new("pwd; echo \"$FUNCX_SANDBOX\"; echo {x} > out.txt; cat out.txt")
        .sandbox_root(root.to_string_lossy());
    let a = run(&executor, &shell, Args::new().kwarg("x", &1)).await;
    let b = run(&executor, &shell, Args::new().kwarg("x", &2)).await;
    let lines = |r: &ShellResult| r.stdout.lines().map(str::to_owned).collect::<Vec<_>>();
    let (a, b) = (lines(&a), lines(&b));
    assert_eq!(a[0], a[1], "the working directory is $FUNCX_SANDBOX");
    assert_ne!(a[0], b[0], "two tasks, two sandboxes");
    assert!(Path::new(&a[0]).starts_with(&root));
    assert_eq!((a[2].as_str(), b[2].as_str()), ("1", "2"));
    assert!(!Path::new(&a[0]).exists() && !Path::new(&b[0]).exists());
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_non_zero_status_is_a_result_unless_asked_otherwise() {
    let executor = executor(1);
    let shell = ShellFunction::new("echo out; echo err >&2; exit {0}");
    let result = run(&executor, &shell, Args::new().arg(&3)).await;
    assert_eq!(result.returncode, 3);
    assert!(!result.success() && !result.timed_out);
    assert_eq!(
        (result.stdout.as_str(), result.stderr.as_str()),
        ("out\n", "err\n")
    );

    let strict = shell.clone().fail_on_error(true);
    let error: TaskError = tokio::time::timeout(
        LIMIT,
        executor
            .submit(&strict.function(), (4,))
            .result::<ShellResult>(),
    )
    .await
    .expect("within the limit")
    .expect_err("fail_on_error makes status 4 an error");
    let exception = error.python_exception().expect("a Python exception");
    assert_eq!(exception.type_name, "ShellCommandFailed");
    assert!(exception.message.contains("exited with 4"), "{exception:?}");
    assert!(exception.message.contains("err"), "{exception:?}");

    // The worker is fine after both: the next task runs.
    let ok = run(&executor, &strict, Args::new().arg(&0)).await;
    assert!(ok.success());
}

#[tokio::test]
async fn walltime_kills_the_whole_process_group() {
    let executor = executor(1);
    // The command starts a child that would outlive it, reports both pids, then waits.
    let shell = ShellFunction::new("sleep 300 & echo $!; echo $$; sleep 300")
        .walltime(Duration::from_millis(500));
    let started = Instant::now();
    let result = run(&executor, &shell, Args::new()).await;
    let took = started.elapsed();
    assert_eq!(result.returncode, 124, "{result:?}");
    assert!(result.timed_out);
    assert!(took < Duration::from_secs(30), "the walltime took {took:?}");
    let pids = pids(&result.stdout);
    assert_eq!(pids.len(), 2, "{result:?}");
    for pid in pids {
        assert!(
            gone_within(pid, Duration::from_secs(10)).await,
            "process {pid} of the timed-out command is still alive"
        );
    }
}

#[tokio::test]
async fn processes_left_behind_by_a_finished_command_go_with_it() {
    let executor = executor(1);
    // Exits at once, leaving a background child that holds stdout open.
    let shell = ShellFunction::new("sleep 300 & echo $!");
    let started = Instant::now();
    let result = run(&executor, &shell, Args::new()).await;
    assert_eq!(result.returncode, 0);
    assert!(started.elapsed() < Duration::from_secs(30));
    let pid = pids(&result.stdout)[0];
    assert!(gone_within(pid, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn huge_output_stays_bounded() {
    let executor = executor(1);
    // 2,000,000 lines (14 MB) on stdout, and 50 MB without a line break on stderr.
    let shell = ShellFunction::new("seq 1 2000000; head -c 50000000 /dev/zero | tr '\\0' x >&2")
        .snippet_lines(5)
        .max_line_bytes(100);
    let result = run(&executor, &shell, Args::new()).await;
    assert_eq!(result.returncode, 0);
    assert_eq!(
        result.stdout,
        "1999996\n1999997\n1999998\n1999999\n2000000\n"
    );
    assert_eq!(result.stdout_lines, 2_000_000);
    assert!(result.stdout_truncated);
    assert_eq!(result.stderr_lines, 1);
    assert!(result.stderr_truncated);
    assert!(result.stderr.starts_with(&"x".repeat(100)));
    assert!(
        result.stderr.len() < 200,
        "{} bytes of stderr kept",
        result.stderr.len()
    );
}

#[tokio::test]
async fn mpi_ranks_see_each_other() {
    let executor = executor(1);
    // Debian's mpi4py is built for Debian's interpreter (scripts/infra/mpi-up.sh).
    let program = "from mpi4py import MPI\n\
                   c = MPI.COMM_WORLD\n\
                   total = c.allreduce(c.Get_rank() + 1)\n\
                   # One write per line: Open MPI interleaves the ranks' output by write.\n\
                   import os\n\
                   os.write(1, ('rank %d of %d sum %d\\n' % (c.Get_rank(), c.Get_size(), total)).encode())\n";
    let mpi = MpiFunction::new("/usr/bin/python3 -c {program}")
        .ranks(2)
        .oversubscribe()
        .shell(|s| s.walltime(Duration::from_secs(50)));
    for ranks in [2u32, 3] {
        let args = Args::new().kwarg("program", program).kwarg("ranks", &ranks);
        let result = run(&executor, &mpi, args).await;
        assert_eq!(result.returncode, 0, "{result:?}");
        let mut lines: Vec<&str> = result.stdout.lines().collect();
        lines.sort();
        let sum = ranks * (ranks + 1) / 2;
        let expected: Vec<String> = (0..ranks)
            .map(|r| format!("rank {r} of {ranks} sum {sum}"))
            .collect();
        assert_eq!(lines, expected, "{result:?}");
    }
}

#[tokio::test]
async fn mpi_tasks_reserve_a_core_per_rank() {
    let executor = Executor::builder()
        .workers(2)
        .cores(2)
        .start(PythonRuntime::new(PythonConfig::new()));
    let mpi = MpiFunction::new("/usr/bin/python3 -c {program}").oversubscribe();
    let program =
        "import os\nfrom mpi4py import MPI\nos.write(1, b'%d\\n' % MPI.COMM_WORLD.Get_size())\n";
    let too_many = mpi.clone().ranks(3);
    let error = tokio::time::timeout(
        LIMIT,
        executor.submit_with(
            &too_many.function(),
            Args::new().kwarg("program", program),
            too_many.options(),
        ),
    )
    .await
    .expect("refused at once")
    .expect_err("3 ranks do not fit 2 cores");
    assert!(error.is_unsatisfiable(), "{error}");

    let fits = mpi.ranks(2);
    let handle = executor.submit_with(
        &fits.function(),
        Args::new().kwarg("program", program),
        fits.options(),
    );
    let result: ShellResult = tokio::time::timeout(LIMIT, handle.result())
        .await
        .expect("within the limit")
        .expect("2 ranks fit 2 cores");
    assert_eq!(result.stdout, "2\n2\n", "{result:?}");
}

#[tokio::test]
async fn a_worker_killed_for_a_timeout_takes_the_command_with_it() {
    let executor = executor(1);
    let root = scratch("timeout");
    let pidfile = root.join("pid");
    // The shell writes its pid, then execs the long command (which keeps that pid).
    let shell = ShellFunction::new("echo $$ > {0}; exec sleep 300");
    let error = tokio::time::timeout(
        LIMIT,
        executor.submit_with(
            &shell.function(),
            (pidfile.to_string_lossy().into_owned(),),
            funcx_core::TaskOptions::new().timeout(Duration::from_millis(500)),
        ),
    )
    .await
    .expect("the timeout fires within the limit")
    .expect_err("the task times out");
    assert!(error.is_timeout(), "{error}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("the command wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(
        gone_within(pid, Duration::from_secs(10)).await,
        "the command {pid} outlived its killed worker"
    );
    let _ = std::fs::remove_dir_all(&root);
}
