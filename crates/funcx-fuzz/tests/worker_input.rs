//! The short pass of the `worker-input` target (python/worker_input.py): 20,000 mutated
//! streams of FUNCTION, TASKS, CANCEL and SHUTDOWN frames through the real worker loop of
//! crates/funcx-python/src/worker.py, which may answer them only with its protocol error.

use std::path::Path;
use std::process::Command;

#[test]
fn worker_input() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seed = std::env::var("FUNCX_FUZZ_SEED").unwrap_or_else(|_| "1".into());
    let output = Command::new("python3")
        .arg(root.join("python/worker_input.py"))
        .arg(root.join("../funcx-python/src/worker.py"))
        .args(["--inputs", "20000", "--seed", &seed])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["findings"], 0, "{report}");
    assert_eq!(report["inputs"], 20_000, "{report}");
    // Both kinds of answer were reached: streams the worker ran to the end, and streams it
    // refused as malformed.
    assert!(report["outcomes"]["ok"].as_u64() > Some(0), "{report}");
    assert!(
        report["outcomes"]["protocol error"].as_u64() > Some(0),
        "{report}"
    );
}
