//! Many tasks: every result accounted for, none missing or duplicated.

mod common;

use std::collections::HashSet;

use common::{start, within, HANG};
use funcx::Function;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_tasks_all_come_back() {
    let executor = start(2).await;
    let tag = Function::from_source("def tag(i):\n    return [i, str(i)]\n", "tag");
    const N: i64 = 100_000;
    // Half in one batch, half one by one.
    let mut handles = executor.submit_batch(&tag, (0..N / 2).map(|i| (i,)));
    handles.extend((N / 2..N).map(|i| executor.submit(&tag, (i,))));
    assert_eq!(handles.len(), N as usize);

    let ids: HashSet<_> = handles.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), N as usize, "task ids are unique");

    let results = within(
        HANG,
        futures::future::join_all(handles.into_iter().map(|h| h.result::<(i64, String)>())),
    )
    .await;
    let mut seen = vec![false; N as usize];
    for (position, result) in results.into_iter().enumerate() {
        let (value, text) = result.unwrap_or_else(|e| panic!("task {position} failed: {e}"));
        assert_eq!(value, position as i64, "result of another task");
        assert_eq!(text, value.to_string());
        assert!(
            !std::mem::replace(&mut seen[value as usize], true),
            "duplicate {value}"
        );
    }
    assert!(seen.iter().all(|s| *s), "missing results");

    let stats = executor.stats().await;
    assert_eq!(stats.queued, 0, "{stats:?}");
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    assert_eq!(stats.workers_started, 2, "no worker died: {stats:?}");
    executor.shutdown().await;
}
