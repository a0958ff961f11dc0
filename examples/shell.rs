//! Shell tasks: command lines filled from each task's arguments, run on warm workers in
//! sandbox directories of their own, with bounded output, exit statuses and a walltime.
//!
//! ```text
//! cargo run --release --example shell
//! ```
//!
//! Prints each task's command, return code and output, and exits non-zero if any result is
//! not what it should be.

use std::error::Error;
use std::time::{Duration, Instant};

use funcx::{Args, Executor, PythonRuntime, ShellFunction, ShellResult};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let executor = Executor::builder()
        .workers(2)
        .start(PythonRuntime::default());
    executor.ready().await?;

    let mut failed = Vec::new();
    let mut check = |what: &str, ok: bool| {
        println!("  check: {what}: {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(what.to_owned());
        }
    };

    // Arguments are quoted: a value is one word, never shell syntax.
    let echo = ShellFunction::new("echo {greeting} {name}; echo to stderr >&2");
    let name = "world; rm -rf / $(reboot)";
    let r = show(
        &executor,
        &echo,
        Args::new().kwarg("greeting", "hello").kwarg("name", name),
    )
    .await?;
    check(
        "the hostile name is echoed, not run",
        r.stdout == format!("hello {name}\n"),
    );
    check("stderr is captured", r.stderr == "to stderr\n");

    // A non-zero status is a result, not an error.
    let grep = ShellFunction::new("printf 'a\\nb\\n' | grep -c {0}");
    let r = show(&executor, &grep, Args::new().arg(&"zzz")).await?;
    check(
        "grep without a match returns 1",
        r.returncode == 1 && r.stdout == "0\n",
    );

    // Only the last lines of a large output are kept.
    let many = ShellFunction::new("seq 1 {n}").snippet_lines(3);
    let r = show(&executor, &many, Args::new().kwarg("n", &1_000_000)).await?;
    check(
        "1,000,000 lines counted, the last 3 kept",
        r.stdout_lines == 1_000_000 && r.stdout == "999998\n999999\n1000000\n",
    );

    // The walltime kills the command and everything it started.
    let slow = ShellFunction::new("sleep 60 & sleep 60").walltime(Duration::from_millis(300));
    let started = Instant::now();
    let r = show(&executor, &slow, Args::new()).await?;
    check(
        "the walltime ends it with 124 well before 60 s",
        r.returncode == 124 && r.timed_out && started.elapsed() < Duration::from_secs(20),
    );

    // Each task runs in a fresh sandbox directory.
    let files = ShellFunction::new("touch {0} && ls");
    let a = show(&executor, &files, Args::new().arg(&"a.txt")).await?;
    let b = show(&executor, &files, Args::new().arg(&"b.txt")).await?;
    check(
        "each sandbox starts empty",
        a.stdout == "a.txt\n" && b.stdout == "b.txt\n",
    );

    if failed.is_empty() {
        println!("all checks passed");
        Ok(())
    } else {
        Err(format!("failed checks: {}", failed.join("; ")).into())
    }
}

async fn show(
    executor: &Executor,
    shell: &ShellFunction,
    args: Args,
) -> Result<ShellResult, Box<dyn Error>> {
    let result: ShellResult = executor.submit(&shell.function(), args).result().await?;
    println!("$ {}", result.command);
    for line in result.stdout.lines() {
        println!("  stdout | {line}");
    }
    for line in result.stderr.lines() {
        println!("  stderr | {line}");
    }
    println!(
        "  return code {} after {:.3} s ({} stdout lines in all{})",
        result.returncode,
        result.seconds,
        result.stdout_lines,
        if result.stdout_truncated {
            ", the last kept"
        } else {
            ""
        }
    );
    Ok(result)
}
