//! Helpers shared by the providers' integration tests.
// Each test file uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory of its own for one test's scripts and job logs, removed afterwards.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "funcx-providers-it-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Every job log (`*.out`, `*.err`) in the directory, for a failure message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let path = entry.path();
                if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("out" | "err")
                ) {
                    let body = std::fs::read_to_string(&path).unwrap_or_default();
                    text.push_str(&format!("--- {}\n{body}\n", path.display()));
                }
            }
        }
        text
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `target/<profile>/funcx-manager`, next to the `deps` directory the tests run from.
pub fn manager_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("funcx-manager"))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        binary.is_file(),
        "{} is missing: build it first with `cargo build -p funcx-python --bins` \
         (scripts/test does, before `cargo test`)",
        binary.display()
    );
    binary
}
