//! Large arguments and results through shared files (memfds) instead of the worker's pipes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use funcx_core::{Args, WorkerExit};
use funcx_python::PythonConfig;
use serde_bytes::ByteBuf;

use crate::harness::{Harness, TIMEOUT};

/// Python that finds the shared file the running task was lent, as `(st_dev, st_ino)`, or
/// None: the worker (found through the garbage collector) keeps the path it opened it by,
/// `/proc/<pid>/fd/<n>`, for the task's result.
const FIND_LENT_FILE: &str = r#"
import gc
import os
import time

def lent_file():
    for o in gc.get_objects():
        if type(o).__name__ == 'Worker' and getattr(o, 'lent', None):
            st = os.stat(o.lent[1])
            return (st.st_dev, st.st_ino)
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
    let source =
        format!("{FIND_LENT_FILE}def f(b):\n    return (lent_file() is not None, b[::-1])\n");
    let key = h.define(&source, "f");
    let small: Vec<u8> = (0..1024).map(|i| (i % 251) as u8).collect();
    let large: Vec<u8> = (0..6 << 20).map(|i| (i % 253) as u8).collect();
    let inputs = [&small, &large, &small, &large];
    for data in inputs {
        h.submit(key, Args::new().arg(&ByteBuf::from(data.clone())), false);
    }
    let results = h.results(inputs.len()).await;
    for (result, data) in results.into_iter().zip(inputs) {
        let (lent, back): (bool, ByteBuf) = result.outcome.unwrap().decode().unwrap();
        assert_eq!(
            lent,
            data.len() == large.len(),
            "lent a file for {} bytes",
            data.len()
        );
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
