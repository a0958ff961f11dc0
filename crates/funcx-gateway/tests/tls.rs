//! The gateway over HTTPS on loopback, with a self-signed certificate made for the test:
//! the API, an endpoint dialling in through the upgrade route, a remote executor (`funcx_client::connect`), and the
//! ways a client gets TLS wrong.
#![cfg(feature = "tls")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use funcx_client::{EndpointDial, RemoteConfig, RemoteError};
use funcx_core::Function;
use funcx_gateway::{Gateway, GatewayConfig, TlsConfig, UserConfig};
use funcx_transport::remote::{
    run_manager, AgentConfig, Dial, EchoRunner, ManagerConfig, ManagerId, ManagerInfo,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE: &str = "alice-token-0123456789abcdef";
const TIMEOUT: Duration = Duration::from_secs(30);

/// A certificate for `localhost` and 127.0.0.1 and its key, written to a fresh directory.
struct Certs {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certs(name: &str) -> Certs {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("rcgen makes a certificate");
    let dir = std::env::temp_dir().join(format!(
        "funcx-gateway-tls-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("gateway.crt"), dir.join("gateway.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    Certs { dir, cert, key }
}

struct TlsGateway {
    addr: SocketAddr,
    certs: Certs,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start(name: &str) -> TlsGateway {
    let certs = certs(name);
    let config = GatewayConfig {
        users: vec![UserConfig {
            name: "alice".into(),
            token: ALICE.into(),
        }],
        tls: Some(TlsConfig {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
        }),
        ..GatewayConfig::default()
    };
    let gateway = Gateway::builder(config)
        .agent_config(AgentConfig {
            heartbeat_period: Duration::from_millis(200),
            heartbeat_threshold: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(5),
        })
        .start()
        .await
        .expect("the gateway starts");
    assert!(gateway.is_tls());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = gateway.serve(listener).await;
    });
    TlsGateway {
        addr,
        certs,
        server,
    }
}

/// One HTTP/1.1 request over TLS, trusting `ca`; returns the status and the body.
async fn https(
    addr: SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let config = funcx_client::tls::client_config(ca).expect("the CA file is usable");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("the TLS handshake succeeds");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut answer = Vec::new();
    // A peer closing without close_notify is an error to rustls; what was read still counts.
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

fn manager_config() -> ManagerConfig {
    let info = ManagerInfo {
        id: ManagerId(u64::from(std::process::id())),
        block: None,
        host: "test".into(),
        pid: std::process::id(),
        slots: 4,
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: Vec::new(),
    };
    let mut config = ManagerConfig::new(info);
    config.give_up_after = Duration::from_secs(30);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_over_tls_and_plain_http_is_refused_without_harm() {
    let gateway = start("health").await;
    let ca = gateway.certs.cert.clone();
    tokio::time::timeout(TIMEOUT, async {
        let (status, _) = https(gateway.addr, &ca, "GET", "/health", None).await;
        assert_eq!(status, 200);

        // Plain HTTP to the TLS port: the handshake fails, the client gets an error (not
        // an answer), and the gateway goes on serving.
        for _ in 0..3 {
            let plain = reqwest::Client::new()
                .get(format!("http://{}/health", gateway.addr))
                .timeout(Duration::from_secs(15))
                .send()
                .await;
            assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");
        }
        // A client that connects and says nothing does not hold up the others.
        let _silent = TcpStream::connect(gateway.addr).await.unwrap();
        let (status, _) = https(gateway.addr, &ca, "GET", "/health", None).await;
        assert_eq!(status, 200);
    })
    .await
    .expect("the test did not finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_and_remote_executor_over_tls() {
    let gateway = start("e2e").await;
    let ca = gateway.certs.cert.clone();
    let url = format!("https://localhost:{}", gateway.addr.port());
    tokio::time::timeout(TIMEOUT, async {
        let (status, body) = https(
            gateway.addr,
            &ca,
            "POST",
            "/v1/endpoints",
            Some(r#"{"name": "tls-endpoint"}"#),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let view: Value = serde_json::from_str(&body).expect("JSON");
        let id = view["endpoint_id"]
            .as_str()
            .expect("an endpoint id")
            .to_owned();
        let token = view["endpoint_token"]
            .as_str()
            .expect("an endpoint token")
            .to_owned();

        // The endpoint dials in over TLS and upgrades to the manager protocol.
        let dial = EndpointDial::new(url.clone(), id.clone(), token)
            .ca_file(&ca)
            .expect("the CA file is usable");
        let endpoint = tokio::spawn(run_manager(dial, EchoRunner::new(4), manager_config()));

        let executor = RemoteConfig::new(&url, ALICE, &id)
            .ca_file(&ca)
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .connect()
            .await
            .expect("the remote executor connects over TLS");
        let function = Function::from_source("def echo(x):\n    return x\n", "echo");
        // EchoRunner answers each task with its first argument.
        let handles: Vec<_> = (0..50_i64)
            .map(|i| executor.submit(&function, (i,)))
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            let value: i64 = handle.result().await.expect("the task runs");
            assert_eq!(value, i as i64);
        }
        executor.shutdown().await;
        endpoint.abort();
    })
    .await
    .expect("the test did not finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_with_the_wrong_ca_gets_a_tls_error() {
    let gateway = start("wrong-ca").await;
    let other = certs("other-ca");
    let url = format!("https://localhost:{}", gateway.addr.port());
    tokio::time::timeout(TIMEOUT, async {
        let error = RemoteConfig::new(&url, ALICE, "any-endpoint")
            .ca_file(&other.cert)
            .connect()
            .await
            .expect_err("an untrusted certificate is refused");
        assert!(matches!(error, RemoteError::Tls { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("TLS") && text.contains("certificate"),
            "{text}"
        );

        // Trusting nothing but the Mozilla roots fails the same way for a self-signed gateway.
        let error = RemoteConfig::new(&url, ALICE, "any-endpoint")
            .connect()
            .await
            .expect_err("a self-signed certificate is not publicly trusted");
        assert!(matches!(error, RemoteError::Tls { .. }), "{error:?}");

        let dial = EndpointDial::new(url.clone(), "any-endpoint", "any-token")
            .ca_file(&other.cert)
            .expect("the CA file is usable");
        let error = match dial.dial().await {
            Ok(_) => panic!("an untrusted certificate was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("TLS handshake"), "{error}");

        // A CA file that is no PEM certificate is refused before any connection.
        let not_pem = other.dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        assert!(EndpointDial::new(url.clone(), "e", "t")
            .ca_file(&not_pem)
            .is_err());
        let error = RemoteConfig::new(&url, ALICE, "e")
            .ca_file(&not_pem)
            .connect()
            .await
            .expect_err("a bad CA file is refused");
        assert!(matches!(error, RemoteError::Tls { .. }), "{error:?}");

        // And the gateway still serves those who trust it.
        let (status, _) = https(gateway.addr, &gateway.certs.cert, "GET", "/health", None).await;
        assert_eq!(status, 200);
    })
    .await
    .expect("the test did not finish in time");
}

#[tokio::test]
async fn a_bad_key_stops_the_gateway_at_start() {
    let good = certs("bad-key");
    let other = certs("bad-key-other");
    let config = GatewayConfig {
        tls: Some(TlsConfig {
            cert: good.cert.clone(),
            key: other.key.clone(),
        }),
        ..GatewayConfig::default()
    };
    let error = Gateway::start(config).await.expect_err("a mismatched key");
    assert!(error.to_string().contains("TLS"), "{error}");
    let missing = GatewayConfig {
        tls: Some(TlsConfig {
            cert: good.dir.join("missing.crt"),
            key: good.key.clone(),
        }),
        ..GatewayConfig::default()
    };
    let error = Gateway::start(missing).await.expect_err("a missing file");
    assert!(error.to_string().contains("missing.crt"), "{error}");
}
