//! A remote executor (`funcx_client::connect`) names every submission with an `Idempotency-Key` and resends it
//! unchanged when the answer is lost: the gateway stores the batch once, and each task runs
//! once.
//!
//! A proxy between the client and the gateway forwards the first submission, lets the
//! gateway store it, and then cuts the connection instead of passing the answer on: exactly
//! the "committed, killed before the answer" case, without killing anything. The tasks of
//! that submission run meanwhile, and may finish before the client knows their ids.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use funcx_client::RemoteConfig;
use funcx_core::Function;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to `target`; the answer to the first `POST .../tasks` is swallowed
/// and its connection cut once `cut` is true (the client waits for that answer until then).
/// Counts the submissions that went through it.
async fn lossy_proxy(
    target: std::net::SocketAddr,
    cut: watch::Receiver<bool>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let submissions = Arc::new(AtomicUsize::new(0));
    let seen = submissions.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let seen = seen.clone();
            let mut cut = cut.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                // Set when this connection carried the first submission: its answer is lost.
                let swallow = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let up = {
                    let swallow = swallow.clone();
                    async move {
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let text = String::from_utf8_lossy(&buffer[..n]);
                            if text.contains("POST /v1/endpoints/") && text.contains("/tasks") {
                                let before = seen.fetch_add(1, Ordering::SeqCst);
                                assert!(
                                    text.to_ascii_lowercase().contains("idempotency-key: "),
                                    "a submission without an Idempotency-Key"
                                );
                                if before == 0 {
                                    swallow.store(true, Ordering::SeqCst);
                                }
                            }
                            if server_write.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                let down = async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let n = match server_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if swallow.load(Ordering::SeqCst) {
                            // The gateway answered (it has stored the batch); the client never
                            // hears of it.
                            let _ = cut.wait_for(|cut| *cut).await;
                            return;
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            });
        }
    });
    (address, submissions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_whose_answer_was_lost_is_stored_once() {
    let gw = start(config()).await;
    let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let _endpoint = gw.connect(&endpoint, &token);
    let (_cut, cut) = watch::channel(true);
    let (proxy, submissions) = lossy_proxy(gw.addr, cut).await;

    let executor = RemoteConfig::new(&format!("http://{proxy}"), ALICE, &endpoint)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .connect()
        .await
        .expect("the executor connects through the proxy");
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let handles = executor.submit_batch(&echo, (0..10_i64).map(|i| (i,)));
    let values = tokio::time::timeout(TIMEOUT, async {
        let mut values = Vec::new();
        for handle in handles {
            values.push(handle.result::<i64>().await.expect("a result"));
        }
        values
    })
    .await
    .expect("every task finishes");
    assert_eq!(values, (0..10).collect::<Vec<_>>());

    // The batch went twice (the first answer was lost), and was stored once: ids 1..=10.
    assert!(submissions.load(Ordering::SeqCst) >= 2);
    let store = gw.gateway.store();
    for id in 1..=10 {
        assert!(store.task(id).await.unwrap().is_some(), "task {id}");
    }
    assert!(
        store.task(11).await.unwrap().is_none(),
        "the resent batch was stored again"
    );
    executor.shutdown().await;
}

/// The tasks of a submission whose answer was lost run at the gateway before the client
/// knows their ids; their results come on the result stream while the client still waits
/// to resend. Those results are not lost: the client reads its tasks once the resend tells
/// it their ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_that_come_before_the_resend_is_answered_are_delivered() {
    let gw = start(config()).await;
    let (endpoint, token) = gw.register_endpoint(ALICE, json!({ "name": "e" })).await;
    let _endpoint = gw.connect(&endpoint, &token);
    let (cut_tx, cut) = watch::channel(false);
    let (proxy, submissions) = lossy_proxy(gw.addr, cut).await;

    // A pause before the resend long enough that the results on the stream surely come
    // first.
    let executor = RemoteConfig::new(&format!("http://{proxy}"), ALICE, &endpoint)
        .backoff(Duration::from_secs(1), Duration::from_secs(1))
        .connect()
        .await
        .expect("the executor connects through the proxy");
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let handles = executor.submit_batch(&echo, (0..10_i64).map(|i| (i,)));

    // The answer is cut only once every task of the submission has finished at the gateway.
    let store = gw.gateway.store();
    tokio::time::timeout(TIMEOUT, async {
        for id in 1..=10 {
            while store
                .task(id)
                .await
                .unwrap()
                .is_none_or(|task| task.result.is_none())
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
    .await
    .expect("the first submission's tasks finish at the gateway");
    cut_tx.send_replace(true);

    let values = tokio::time::timeout(TIMEOUT, async {
        let mut values = Vec::new();
        for handle in handles {
            values.push(handle.result::<i64>().await.expect("a result"));
        }
        values
    })
    .await
    .expect("every task finishes");
    assert_eq!(values, (0..10).collect::<Vec<_>>());
    assert!(submissions.load(Ordering::SeqCst) >= 2);
    assert!(
        store.task(11).await.unwrap().is_none(),
        "the resent batch was stored again"
    );
    executor.shutdown().await;
}
