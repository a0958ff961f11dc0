//! `examples/instrument.rs` driven as a user would: files are written into the directory it
//! watches, a result line arrives for each, and Ctrl-C (SIGINT) stops it cleanly with a
//! summary. The example binary is the one `cargo test` builds next to this test.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TempDir, HANG};

/// The example's binary: `cargo test` builds examples next to the tests
/// (target/debug/examples); when only this test was built, it is built here.
fn example_binary() -> std::path::PathBuf {
    // target/debug/deps/instrument-HASH -> target/debug/examples/instrument
    let exe = std::env::current_exe().expect("the test's path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let binary = debug.join("examples").join("instrument");
    if !binary.exists() {
        let built = Command::new(env!("CARGO"))
            .args(["build", "--example", "instrument"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(built.success(), "cargo build --example instrument: {built}");
    }
    binary
}

#[test]
fn each_new_file_is_analysed_and_ctrl_c_stops_with_a_summary() {
    let dir = TempDir::new("instrument");
    let mut child = Command::new(example_binary())
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start the instrument example (built by cargo test)");
    // Lines from its stdout, read on a thread so that every wait below has a bound.
    let (lines, output) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let next_line = || {
        output
            .recv_timeout(HANG)
            .unwrap_or_else(|_| panic!("no output within {HANG:?}"))
    };
    let watching = next_line();
    assert!(watching.starts_with("watching "), "{watching}");

    // Ten files, written and closed one after another, with known contents.
    let files = 10;
    for i in 0..files {
        let mut file = std::fs::File::create(dir.join(&format!("frame-{i}.bin"))).unwrap();
        file.write_all(&vec![i as u8; 1000 + i]).unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < files {
        let line = next_line();
        assert!(!line.starts_with("failed"), "{line}");
        let name = line.split(':').next().unwrap().to_owned();
        let i: usize = name
            .trim_start_matches("frame-")
            .trim_end_matches(".bin")
            .parse()
            .unwrap_or_else(|_| panic!("unexpected line: {line}"));
        // The analysis really ran on the file's bytes: length and mean are the file's.
        assert!(
            line.contains(&format!("{} bytes, mean {}.00", 1000 + i, i)),
            "{line}"
        );
        assert!(line.contains("ms from close to result"), "{line}");
        seen.insert(i);
    }

    // Ctrl-C: a clean stop, with the summary of all ten.
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let summary = next_line();
    assert!(
        summary.starts_with(&format!("summary: {files} files, latency p50 ")),
        "{summary}"
    );
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
