//! A gateway on a redb store that "crashes" (its whole runtime is dropped, with no shutdown)
//! and restarts on the same file: accepted tasks and stored results are still there.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use funcx_gateway::store::RedbStore;
use funcx_gateway::{Gateway, GatewayConfig, StoreConfig};
use reqwest::StatusCode;
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn store_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "funcx-gateway-{name}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("gateway.redb")
}

fn config_at(path: &Path) -> GatewayConfig {
    let mut config = config();
    config.store = Some(StoreConfig::Redb(path.to_path_buf()));
    config
}

/// Waits until the file's previous owner (a dropped runtime's tasks) has let go of it.
fn wait_until_released(path: &Path) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match RedbStore::open(path) {
            Ok(store) => return drop(store),
            Err(error) if std::time::Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("the store was never released: {error}"),
        }
    }
}

#[test]
fn accepted_tasks_and_results_survive_a_crash() {
    let path = store_path("crash");

    // Run 1: register, submit with no endpoint connected, crash.
    let first = runtime();
    let (function, endpoint, token, ids) = first.block_on(async {
        let gw = serve(Gateway::start(config_at(&path)).await.unwrap()).await;
        let function = gw.echo_function(ALICE).await;
        let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
        let (status, submitted) = gw.submit(ALICE, &endpoint, &function, &[1, 2, 3]).await;
        assert_eq!(status, StatusCode::OK);
        (function, endpoint, token, ids(&submitted))
    });
    first.shutdown_background();
    wait_until_released(&path);

    // Run 2: the tasks are still queued, and run when the endpoint connects.
    let second = runtime();
    second.block_on(async {
        let gw = serve(Gateway::start(config_at(&path)).await.unwrap()).await;
        for id in &ids {
            let (status, view) = gw.get(&format!("/v1/tasks/{id}"), ALICE).await;
            assert_eq!(status, StatusCode::OK, "{view}");
            assert_eq!(view["state"], "queued");
        }
        let _endpoint = gw.connect(&endpoint, &token);
        for (id, expected) in ids.iter().zip([1, 2, 3]) {
            assert_eq!(unpickled(&gw.wait(ALICE, *id).await), expected);
        }
        // New ids continue after the old ones.
        let (_, more) = gw.submit(ALICE, &endpoint, &function, &[4]).await;
        assert!(common::ids(&more)[0] > ids[2]);
        gw.wait(ALICE, common::ids(&more)[0]).await;
    });
    second.shutdown_background();
    wait_until_released(&path);

    // Run 3: finished results are still there; nothing is run again.
    let third = runtime();
    third.block_on(async {
        let gw = serve(Gateway::start(config_at(&path)).await.unwrap()).await;
        for (id, expected) in ids.iter().zip([1, 2, 3]) {
            let (status, view) = gw.get(&format!("/v1/tasks/{id}"), ALICE).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(view["state"], "succeeded");
            assert_eq!(unpickled(&view), expected);
        }
        assert!(gw
            .gateway
            .store()
            .unfinished_tasks()
            .await
            .unwrap()
            .is_empty());
        // The endpoint and the function were kept too.
        let (status, _) = gw.get(&format!("/v1/endpoints/{endpoint}"), ALICE).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = gw.get(&format!("/v1/functions/{function}"), ALICE).await;
        assert_eq!(status, StatusCode::OK);
    });
    third.shutdown_background();
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
