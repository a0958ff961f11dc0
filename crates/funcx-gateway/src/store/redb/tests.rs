//! The redb store keeps the contract, and what it stored outlives the process.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_store_contract_and_survives_reopening() {
    let dir = crate::test_dir("redb-contract");
    let path = dir.join("gateway.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        super::super::tests::contract(&store).await;
    }
    let store = RedbStore::open(&path).unwrap();
    assert!(
        !store.was_repaired(),
        "dropped cleanly, opened without repair"
    );
    assert_eq!(store.endpoints().await.unwrap().len(), 1);
    // Numbering continues after a restart: ids are never reused.
    let ids = store
        .insert_tasks(
            vec![NewTask {
                owner: "alice".into(),
                endpoint: "e1".into(),
                function: funcx_core::Function::from_source("", "f").id(),
                args: funcx_core::Args::new(),
                timeout: None,
                resources: None,
            }],
            SystemTime::now(),
        )
        .await
        .unwrap();
    assert_eq!(ids, vec![15]);
    assert_eq!(store.unfinished_tasks().await.unwrap().len(), 3);

    // Closed: every later call fails with the reason, and the file reopens cleanly.
    store.close().await.unwrap();
    let error = store.task(1).await.unwrap_err();
    assert!(error.to_string().contains("closed"), "{error}");
    store.close().await.unwrap();
    let reopened = RedbStore::open_with_cache(&path, 1 << 20).unwrap();
    assert!(!reopened.was_repaired());
    assert_eq!(reopened.unfinished_tasks().await.unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(dir);
}
