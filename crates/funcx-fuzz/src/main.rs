//! `funcx-fuzz`: runs fuzz campaigns, one JSON line per target.
//!
//! ```text
//! funcx-fuzz [--inputs N] [--seed S] [--replay INDEX] [TARGET...]
//! ```
//!
//! Without targets, runs every one. `--replay INDEX` runs only input INDEX of the campaign
//! (what a HANG or a finding names) and prints it. Exits 1 on a finding.

#[global_allocator]
static ALLOCATOR: funcx_fuzz::alloc::Counting = funcx_fuzz::alloc::Counting;

use std::process::ExitCode;
use std::time::Duration;

use funcx_fuzz::campaign::{self, Options};
use funcx_fuzz::targets;

fn main() -> ExitCode {
    let mut options = Options {
        progress: Some(Duration::from_secs(10)),
        ..Options::default()
    };
    let mut replay = None;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> Result<u64, String> {
            let value = args
                .next()
                .ok_or_else(|| format!("{what} needs a number"))?;
            value
                .replace('_', "")
                .parse()
                .map_err(|_| format!("{what} needs a number, not {value:?}"))
        };
        let parsed = match arg.as_str() {
            "--inputs" => number("--inputs").map(|n| options.inputs = n),
            "--seed" => number("--seed").map(|n| options.seed = n),
            "--replay" => number("--replay").map(|n| replay = Some(n)),
            "-h" | "--help" => {
                println!("usage: funcx-fuzz [--inputs N] [--seed S] [--replay INDEX] [TARGET...]");
                for target in targets::all() {
                    println!("  {:16} {}", target.name, target.reads);
                }
                return ExitCode::SUCCESS;
            }
            name => {
                names.push(name.to_string());
                Ok(())
            }
        };
        if let Err(message) = parsed {
            eprintln!("funcx-fuzz: {message}");
            return ExitCode::from(2);
        }
    }
    let all = targets::all();
    if let Some(unknown) = names.iter().find(|n| !all.iter().any(|t| &t.name == n)) {
        eprintln!("funcx-fuzz: no target {unknown:?}; `funcx-fuzz --help` lists them");
        return ExitCode::from(2);
    }
    let chosen = all
        .iter()
        .filter(|t| names.is_empty() || names.iter().any(|n| n == t.name));
    let mut failed = false;
    for target in chosen {
        if let Some(index) = replay {
            let corpus = target.corpus();
            let input = campaign::input(target, &corpus, options.seed, index);
            println!("{} input {index}: {input:02x?}", target.name);
            target.runner()(&input);
            continue;
        }
        match campaign::run(target, &options) {
            Ok(report) => println!(
                "{{\"target\":\"{}\",\"inputs\":{},\"seed\":{},\"corpus\":{},\"secs\":{:.1},\"inputs_per_s\":{:.0},\"peak_alloc_bytes\":{},\"slowest_ms\":{:.3},\"findings\":0}}",
                report.target,
                report.inputs,
                report.seed,
                report.corpus,
                report.elapsed.as_secs_f64(),
                report.inputs as f64 / report.elapsed.as_secs_f64(),
                report.peak_alloc,
                report.slowest.as_secs_f64() * 1e3,
            ),
            Err(finding) => {
                failed = true;
                eprintln!("funcx-fuzz: FINDING: {finding}");
                println!(
                    "{{\"target\":\"{}\",\"seed\":{},\"finding_index\":{},\"findings\":1}}",
                    finding.target, options.seed, finding.index
                );
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
