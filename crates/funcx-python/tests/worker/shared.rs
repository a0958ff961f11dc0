//! Large arguments and results through shared files (memfds) instead of the worker's pipes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use funcx_core::{Args, Payload, WorkerExit};
use funcx_python::PythonConfig;
use serde_bytes::ByteBuf;

use crate::harness::{Harness, TIMEOUT};

/// Python that finds the shared file the running task was lent, as `(st_dev, st_ino)`, or
/// None: the worker holds it open while the task runs, as a descriptor of its own on a memfd
/// named `funcx-payload`. The test compares it with this process's descriptors
/// ([`holds_file`]), so a lent task proves that the manager's memfd itself reached it.
const FIND_LENT_FILE: &str = r#"
import os
import time

def lent_file():
    for fd in os.listdir('/proc/self/fd'):
        path = '/proc/self/fd/' + fd
        try:
            if os.readlink(path).startswith('/memfd:funcx-payload'):
                st = os.stat(path)
                return (st.st_dev, st.st_ino)
        except OSError:
            pass
    return None
"#;

/// Whether this process has a descriptor open on the file `(dev, ino)`.
fn holds_file(dev: u64, ino: u64) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::metadata(entry.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
    })
}

#[tokio::test]
async fn large_arguments_and_results_cross_in_a_shared_file_and_small_ones_in_the_pipe() {
    let mut h = Harness::start().await;
    let source = format!("{FIND_LENT_FILE}def f(b):\n    return (lent_file(), b[::-1])\n");
    let key = h.define(&source, "f");
    let small: Vec<u8> = (0..1024).map(|i| (i % 251) as u8).collect();
    let large: Vec<u8> = (0..6 << 20).map(|i| (i % 253) as u8).collect();
    let inputs = [&small, &large, &small, &large];
    for data in inputs {
        h.submit(key, Args::new().arg(&ByteBuf::from(data.clone())), false);
    }
    let results = h.results(inputs.len()).await;
    for (result, data) in results.into_iter().zip(inputs) {
        let (lent, back): (Option<(u64, u64)>, ByteBuf) = result.outcome.unwrap().decode().unwrap();
        assert_eq!(
            lent.is_some(),
            data.len() == large.len(),
            "lent a file for {} bytes",
            data.len()
        );
        if let Some((dev, ino)) = lent {
            assert!(
                holds_file(dev, ino),
                "the worker's file is not this process's"
            );
        }
        assert!(back.iter().eq(data.iter().rev()));
    }
}

/// A lent task's result over the limit fails it typed, as through the pipe, and the file
/// serves the next task.
#[tokio::test]
async fn lent_tasks_keep_the_result_limit() {
    let mut h = Harness::with(PythonConfig::new().max_result_size(8 << 20), 0).await;
    let key = h.define("def f(b, n):\n    return b * n\n", "f");
    let data = ByteBuf::from(vec![5_u8; 6 << 20]);
    let over = h.submit(key, Args::new().arg(&data).arg(&2), false);
    let fits = h.submit(key, Args::new().arg(&data).arg(&1), false);
    let results = h.results(2).await;
    assert_eq!((results[0].id, results[1].id), (over, fits));
    let error = results[0].outcome.as_ref().unwrap_err();
    assert!(error.is_result_too_large(), "{error}");
    let back: ByteBuf = results[1].outcome.as_ref().unwrap().decode().unwrap();
    assert_eq!(back, data);
}

/// A lent task that fails leaves the worker with no file: the same task sent again with
/// arguments through the pipe (the manager resends a task by id) and a large result gets
/// that result through the pipe, not into the file the manager took back after the failure.
#[tokio::test]
async fn a_lent_task_that_raises_leaves_no_file_for_the_next_result() {
    let mut h = Harness::start().await;
    let key = h.define(
        "def f(b, fail):\n    if fail:\n        raise ValueError('no')\n    return b * 2\n",
        "f",
    );
    let large = ByteBuf::from(vec![7_u8; 6 << 20]);
    let id = h.submit(key, Args::new().arg(&large).arg(&true), false);
    let failed = h.results(1).await.remove(0);
    assert_eq!(failed.id, id);
    let error = failed.outcome.unwrap_err();
    assert!(error.to_string().contains("ValueError"), "{error}");
    // 1 MiB: through the pipe, and large enough that its 2 MiB result is pickled in parts.
    let medium = ByteBuf::from(vec![9_u8; 1 << 20]);
    h.submit_as(id, key, Args::new().arg(&medium).arg(&false));
    let again = h.results(1).await.remove(0);
    assert_eq!(again.id, id);
    let back: ByteBuf = again.outcome.unwrap().decode().unwrap();
    assert_eq!(back.len(), 2 << 20);
    assert!(back.iter().all(|&b| b == 9));
}

/// JSON arguments are lent a file like pickled ones, and a JSON result larger than a frame's
/// inline part comes back through the pipe (a JSON result is one string, never pickle parts).
#[tokio::test]
async fn a_lent_json_task_returns_a_large_json_result() {
    let mut h = Harness::start().await;
    let source = format!("{FIND_LENT_FILE}def f(s):\n    return [lent_file(), s[:100000]]\n");
    let key = h.define(&source, "f");
    let text = "x".repeat(5 << 20);
    let args = Args::new().payload(Payload::json(&text).unwrap());
    let id = h.submit(key, args, false);
    let result = h.results(1).await.remove(0);
    assert_eq!(result.id, id);
    let (lent, back): (Option<(u64, u64)>, String) = result.outcome.unwrap().decode().unwrap();
    let (dev, ino) = lent.expect("the JSON task was lent a file");
    assert!(
        holds_file(dev, ino),
        "the worker's file is not this process's"
    );
    assert_eq!(back, text[..100_000]);
}

#[tokio::test]
async fn the_file_lent_to_a_killed_worker_is_closed() {
    let mut h = Harness::start().await;
    let mark = std::env::temp_dir().join(format!("funcx-lent-{}-{}", std::process::id(), line!()));
    let _ = std::fs::remove_file(&mark);
    let source = format!(
        r#"{FIND_LENT_FILE}
def f(b, mark):
    dev, ino = lent_file()
    with open(mark + '.tmp', 'w') as out:
        out.write('%d %d' % (dev, ino))
    os.rename(mark + '.tmp', mark)
    time.sleep(60)
"#
    );
    let key = h.define(&source, "f");
    let data = ByteBuf::from(vec![3_u8; 6 << 20]);
    let mark_text = mark.to_string_lossy().into_owned();
    h.submit(key, Args::new().arg(&data).arg(&mark_text), false);
    let (dev, ino) = wait_for_mark(&mark).await;
    let _ = std::fs::remove_file(&mark);
    assert!(
        holds_file(dev, ino),
        "the running task's file is not this process's"
    );
    h.worker.kill();
    let (results, exit) = h.exit().await;
    assert!(results.is_empty());
    assert_eq!(exit, WorkerExit::Signal(9));
    assert!(
        !holds_file(dev, ino),
        "the file lent to the killed worker is still open"
    );
}

/// The `dev ino` a task wrote into `mark`, once it has (within [`TIMEOUT`]).
async fn wait_for_mark(mark: &Path) -> (u64, u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(mark) {
            let mut fields = text.split(' ').map(|f| f.parse::<u64>().unwrap());
            return (fields.next().unwrap(), fields.next().unwrap());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never wrote {mark:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
