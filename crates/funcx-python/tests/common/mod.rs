//! What the tests with real `funcx-manager` processes share: an endpoint on 127.0.0.1, manager
//! processes that are killed when dropped, a TCP relay that cuts connections, and bounded
//! waits.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use funcx_core::Executor;
use funcx_transport::remote::{AgentConfig, EndpointAgent};
use funcx_transport::TcpTransport;
use tokio::net::{TcpListener, TcpStream};

/// The token every test endpoint and manager share.
pub const TOKEN: &str = "test-token";

/// How long a step of a test may take, unless it says otherwise, before the test fails
/// instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test after `limit` with what it was waiting for.
pub async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `check` every 10 ms until it holds; fails the test after `limit`.
pub async fn wait_until<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    let result = tokio::time::timeout(limit, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "timed out waiting until {what}");
}

/// Heartbeats every 100 ms; a manager is lost after `threshold` without a word or a
/// reconnection.
pub fn agent_config(threshold: Duration) -> AgentConfig {
    AgentConfig {
        heartbeat_period: Duration::from_millis(100),
        heartbeat_threshold: threshold,
        hello_timeout: Duration::from_secs(5),
    }
}

/// An executor without workers of its own, and the address its managers dial.
pub struct Endpoint {
    pub executor: Executor,
    pub address: SocketAddr,
}

pub async fn endpoint_on(address: SocketAddr, retries: u32, threshold: Duration) -> Endpoint {
    let executor = Executor::builder().retries_on_worker_death(retries);
    endpoint_of(executor, address, threshold).await
}

/// An endpoint of an executor built by `executor`, listening on `address`.
pub async fn endpoint_of(
    executor: funcx_core::ExecutorBuilder,
    address: SocketAddr,
    threshold: Duration,
) -> Endpoint {
    let executor = executor.start_without_workers();
    let agent = EndpointAgent::new(executor.clone(), agent_config(threshold));
    let acceptor = TcpTransport::builder()
        .token(TOKEN)
        .build()
        .listen(address)
        .await
        .expect("listen");
    let address = acceptor.local_addr();
    tokio::spawn(agent.serve(acceptor));
    Endpoint { executor, address }
}

pub async fn endpoint(retries: u32, threshold: Duration) -> Endpoint {
    endpoint_on(SocketAddr::from(([127, 0, 0, 1], 0)), retries, threshold).await
}

/// A manager process; killed when dropped so no test leaves one behind.
pub struct Manager(pub Child);

impl Manager {
    pub fn start(address: SocketAddr, workers: usize) -> Manager {
        Manager::start_with(address, workers, &[])
    }

    /// `start`, with `extra` arguments (`--gpus A,B`, say).
    pub fn start_with(address: SocketAddr, workers: usize, extra: &[&str]) -> Manager {
        let child = Command::new(env!("CARGO_BIN_EXE_funcx-manager"))
            .args([
                "--endpoint",
                &address.to_string(),
                "--workers",
                &workers.to_string(),
            ])
            .args(extra)
            .args(["--give-up-after", "20"])
            .env("FUNCX_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start funcx-manager");
        Manager(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit by itself and returns its status code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("manager {} did not exit within {within:?}", self.pid());
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until exactly `count` managers are attached to `executor`.
pub async fn managers(executor: &Executor, count: usize) {
    let executor = executor.clone();
    wait_until(
        &format!("{count} managers are attached"),
        Duration::from_secs(20),
        move || {
            let executor = executor.clone();
            async move { executor.stats().await.managers == count }
        },
    )
    .await;
}

/// A TCP relay that can cut every connection through it, and refuse new ones (accept and
/// drop them at once, as a network that is down would) until it is opened again.
pub struct Relay {
    pub address: SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    open: tokio::sync::watch::Sender<bool>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let address = listener.local_addr().expect("relay address");
        let (cut, cuts) = tokio::sync::watch::channel(0_u64);
        let (open, opened) = tokio::sync::watch::channel(true);
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*opened.borrow() {
                    continue; // dropped: refused
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {} // dropping both ends cuts the connection
                    }
                });
            }
        });
        Relay {
            address,
            cut,
            open,
            accepted,
        }
    }

    /// Cuts every connection through the relay now.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Refuses new connections (`false`) or relays them again (`true`).
    pub fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }

    /// How many connections the relay has passed on so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}
