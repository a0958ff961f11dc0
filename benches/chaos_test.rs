//! The short chaos soak in the test command: 2,000 tasks through a gateway process, an
//! endpoint process and three manager processes of real Python workers while every kind of
//! chaos action strikes at least once; nothing may be lost, duplicated, hung or wrong.
//!
//! A test without the libtest harness, because the soak starts this executable again as its
//! gateway, endpoint and manager processes. It answers `--list` as libtest does, so that
//! cargo-nextest runs it like any other test.

use std::process::ExitCode;
use std::time::Duration;

mod chaos;

const NAME: &str = "a_chaos_soak_loses_nothing";

fn main() -> ExitCode {
    if let Ok(config) = std::env::var(chaos::GATEWAY_PROCESS) {
        return exit(chaos::run_gateway_process(&config));
    }
    if let Ok(spec) = std::env::var(chaos::ENDPOINT_PROCESS) {
        return exit(chaos::run_endpoint_process(&spec));
    }
    if let Some(status) = funcx::python::manager::run_if_manager() {
        return status;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("{NAME}: test");
        }
        return ExitCode::SUCCESS;
    }
    // A filter that does not match this test's name runs nothing, as libtest does.
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty()
        && !filters.iter().any(|f| {
            if exact {
                *f == NAME
            } else {
                NAME.contains(f.as_str())
            }
        })
    {
        return ExitCode::SUCCESS;
    }
    exit(soak())
}

fn exit(outcome: Result<(), chaos::BoxError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{NAME}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn soak() -> Result<(), chaos::BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = chaos::ChaosOptions {
        n: 2_000,
        seed: 0x7465_7374_2d63_6861,
        managers: 3,
        workers: 2,
        // 10 batches 1.5 s apart: about 15 s of chaos, enough for the six kinds of action.
        pace: Duration::from_millis(1_500),
        grace: Duration::from_secs(60),
        gateway_program: None,
        without: Vec::new(),
    };
    // The whole soak is bounded: a hang fails the test instead of stalling the run.
    let report = runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(240), chaos::chaos(options)).await
        })
        .map_err(|_| "the soak did not finish within 240 s")??;
    let fields: Vec<String> = report
        .fields()
        .into_iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    println!("{NAME}: {:.1} s {{{}}}", report.seconds, fields.join(","));
    for (action, count) in &report.actions {
        if *count == 0 {
            return Err(format!("the action {action} never struck").into());
        }
    }
    if !report.clean() {
        return Err(format!(
            "lost {}, duplicated {}, hung {}, wrong {} (seed {})",
            report.lost, report.duplicated, report.hung, report.wrong, report.seed
        )
        .into());
    }
    println!("test {NAME} ... ok");
    Ok(())
}
