//! `funcx::Endpoint::builder()` with TLS on the managers' link, on real processes: a local
//! provider starts `funcx-manager` processes with `--tls-ca`, they dial the endpoint over
//! TLS, and real Python workers run its tasks. A manager that speaks plain TCP is refused
//! even with the right token, and a manager that does not trust the endpoint's certificate
//! gives up without ever being admitted, so its token never reaches an impostor in clear.
#![cfg(all(unix, feature = "tls"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{init_tracing, manager_binary, wait_until, within, TempDir, HANG};
use funcx::endpoint::{Endpoint, EndpointState, ManagerTls};
use funcx::providers::LocalProvider;
use funcx::{Function, StrategyConfig};

const TOKEN: &str = "manager-token-0123456789abcdef";

/// A self-signed certificate for `localhost` and 127.0.0.1: `(cert, key)` files in `dir`.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("rcgen makes a certificate");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// Runs a `funcx-manager` that simulates one worker (no Python) against `address` with
/// `options`, giving up after 2 s without an endpoint; its output once it has exited.
async fn rogue_manager(address: &str, options: &[&str]) -> Output {
    let mut command = Command::new(manager_binary());
    command
        .args([
            "--endpoint",
            address,
            "--simulate",
            "1",
            "--give-up-after",
            "2",
        ])
        .args(options)
        .env("FUNCX_TOKEN", TOKEN)
        .env("RUST_LOG", "info");
    within(
        HANG,
        tokio::task::spawn_blocking(move || command.output().expect("run funcx-manager")),
    )
    .await
    .expect("the manager process was waited for")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_dial_over_tls_and_neither_side_accepts_a_peer_without_it() {
    init_tracing();
    let dir = TempDir::new("endpoint-tls");
    let (cert, key) = self_signed(&dir.0, "endpoint");
    let (impostor_ca, _) = self_signed(&dir.0, "impostor");
    let endpoint = Endpoint::builder()
        .name("tls")
        .provider(LocalProvider::new())
        .manager_program(manager_binary())
        .workers_per_node(2)
        .manager_token(TOKEN)
        .manager_tls(ManagerTls {
            cert: cert.clone(),
            key,
            ca: cert,
            server_name: Some("localhost".into()),
        })
        .strategy(
            StrategyConfig::new()
                .init_blocks(1)
                .min_blocks(1)
                .max_blocks(1)
                .period(Duration::from_millis(100)),
        )
        .start()
        .await
        .expect("the endpoint starts");
    wait_until(HANG, "the block's manager attached over TLS", || async {
        endpoint.status().strategy.managers == 1
    })
    .await;

    let square = Function::from_source("def square(x):\n    return x * x\n", "square");
    let handles = endpoint
        .executor()
        .submit_batch(&square, (0..20_i64).map(|i| (i,)));
    for (i, handle) in handles.into_iter().enumerate() {
        let value: i64 = within(HANG, handle.result())
            .await
            .unwrap_or_else(|e| panic!("task {i}: {e}"));
        assert_eq!(value, (i * i) as i64);
    }

    // Plain TCP with the right token: the endpoint's TLS listener never admits it.
    let address = endpoint.address().to_string();
    let plain = rogue_manager(&address, &[]).await;
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain));
    // A manager that trusts another CA refuses the endpoint at the TLS handshake, before
    // its own handshake (and token) is sent.
    let impostor_ca = impostor_ca.to_string_lossy().into_owned();
    let distrustful = rogue_manager(
        &address,
        &["--tls-ca", &impostor_ca, "--tls-name", "localhost"],
    )
    .await;
    assert_eq!(distrustful.status.code(), Some(2), "{}", text(&distrustful));
    let said = String::from_utf8_lossy(&distrustful.stderr).to_lowercase();
    assert!(said.contains("certificate"), "{}", text(&distrustful));
    assert_eq!(
        endpoint.status().strategy.managers,
        1,
        "only the block's manager was ever admitted"
    );

    endpoint.stop().await;
    assert_eq!(endpoint.state(), EndpointState::Stopped);
}
