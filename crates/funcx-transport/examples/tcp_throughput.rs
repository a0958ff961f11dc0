//! Loopback throughput and latency of a TCP connection, to run by hand:
//!
//! ```text
//! cargo run --release -p funcx-transport --example tcp_throughput
//! ```

use std::error::Error;
use std::time::{Duration, Instant};

use funcx_transport::{Connection, TcpTransport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Done { task: u64, ok: bool },
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
}

async fn connect() -> Result<(Connection<Msg, Msg>, Connection<Msg, Msg>), Box<dyn Error>> {
    // A random token even on loopback: people copy examples, and a fixed one is guessable.
    let transport = TcpTransport::builder()
        .token(funcx_transport::new_token()?)
        .build();
    let mut acceptor = transport.listen::<Msg, Msg>("127.0.0.1:0").await?;
    let manager = transport.dial::<Msg, Msg>(acceptor.local_addr()).await?;
    let endpoint = acceptor.accept().await?;
    Ok((manager, endpoint))
}

/// Sends `count` messages made by `make` one way, with at most `window` of them unacknowledged
/// (the endpoint acknowledges each; without a window the producer would queue everything in
/// memory first); returns the time until the last arrived.
async fn one_way(count: u64, window: u64, make: impl Fn(u64) -> Msg + Send + 'static) -> Duration {
    let (manager, mut endpoint) = connect().await.expect("loopback connects");
    let start = Instant::now();
    let (sender, mut acks) = manager.split();
    tokio::spawn(async move {
        let mut acked = 0;
        for i in 0..count {
            while i - acked >= window {
                match acks.recv().await {
                    Some(Ok(_)) => acked += window / 2,
                    _ => return,
                }
            }
            if sender.send(make(i)).is_err() {
                return;
            }
        }
    });
    for i in 1..=count {
        endpoint.recv().await.expect("open").expect("decodes");
        if i % (window / 2) == 0 {
            let _ = endpoint.send(Msg::Done { task: i, ok: true });
        }
    }
    start.elapsed()
}

async fn ping_pong(rounds: u32) -> Duration {
    let (mut manager, mut endpoint) = connect().await.expect("loopback connects");
    tokio::spawn(async move {
        while let Some(Ok(msg)) = endpoint.recv().await {
            if endpoint.send(msg).is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    for task in 0..rounds {
        let _ = manager.send(Msg::Done {
            task: task.into(),
            ok: true,
        });
        manager.recv().await.expect("open").expect("decodes");
    }
    start.elapsed() / rounds
}

#[tokio::main]
async fn main() {
    let n = 2_000_000u64;
    let t = one_way(n, 4096, |task| Msg::Done { task, ok: true }).await;
    println!(
        "small messages: {n} in {t:.2?}: {:.0} messages/s",
        n as f64 / t.as_secs_f64()
    );

    let n = 2_000u64;
    let mib = vec![7u8; 1024 * 1024];
    let t = one_way(n, 16, move |_| Msg::Blob(mib.clone())).await;
    println!(
        "1 MiB messages: {n} in {t:.2?}: {:.0} messages/s, {:.0} MiB/s",
        n as f64 / t.as_secs_f64(),
        n as f64 / t.as_secs_f64()
    );

    let rounds = 20_000;
    println!(
        "round trip of one small message: {:.1?}",
        ping_pong(rounds).await
    );
}
