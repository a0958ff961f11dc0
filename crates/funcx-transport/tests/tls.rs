//! TLS on loopback with a self-signed certificate made for the test.
#![cfg(feature = "tls")]

use std::time::Duration;

use funcx_transport::tls::{TlsClientConfig, TlsServerConfig};
use funcx_transport::TcpTransport;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
}

fn self_signed() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen makes a certificate");
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

#[tokio::test]
async fn round_trip_over_tls_with_pem_files() {
    let (cert, key) = self_signed();
    let dir = std::env::temp_dir().join(format!("funcx-transport-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("endpoint.crt"), dir.join("endpoint.key"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();

    let endpoint = TcpTransport::builder()
        .token("tok")
        .tls_server(TlsServerConfig::from_pem_files(&cert_path, &key_path).unwrap())
        .build();
    let manager = TcpTransport::builder()
        .token("tok")
        .tls_client(TlsClientConfig::from_pem_file(&cert_path, "localhost").unwrap())
        .build();
    let _ = std::fs::remove_dir_all(&dir);

    tokio::time::timeout(Duration::from_secs(20), async {
        let mut acceptor = endpoint.listen::<Msg, Msg>("127.0.0.1:0").await.unwrap();
        let mut client = manager
            .dial::<Msg, Msg>(acceptor.local_addr())
            .await
            .unwrap();
        let mut server = acceptor.accept().await.unwrap();
        assert!(client.peer().is_tls() && server.peer().is_tls());
        assert!(server.peer().to_string().ends_with("(tls)"));

        for i in 0..1000 {
            client.send(Msg::Ping(i)).unwrap();
        }
        for i in 0..1000 {
            assert_eq!(server.recv().await.unwrap().unwrap(), Msg::Ping(i));
        }
        let blob = vec![0xA5u8; 3 * 1024 * 1024];
        server.send(Msg::Blob(blob.clone())).unwrap();
        assert_eq!(client.recv().await.unwrap().unwrap(), Msg::Blob(blob));
        drop(client);
        assert!(server.recv().await.is_none());
    })
    .await
    .expect("the test did not finish in time");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error() {
    let (cert, key) = self_signed();
    let (other_ca, _) = self_signed();
    let endpoint = TcpTransport::builder()
        .tls_server(TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap())
        .build();
    let manager = TcpTransport::builder()
        .tls_client(TlsClientConfig::from_pem(other_ca.as_bytes(), "localhost").unwrap())
        .build();
    let mut acceptor = endpoint.listen::<Msg, Msg>("127.0.0.1:0").await.unwrap();
    let err = manager
        .dial::<Msg, Msg>(acceptor.local_addr())
        .await
        .unwrap_err();
    assert!(err.is_tls(), "{err}");
    let err = acceptor.accept().await.unwrap_err();
    assert!(err.is_tls(), "{err}");
}

#[tokio::test]
async fn a_plain_dialler_cannot_talk_to_a_tls_listener() {
    let (cert, key) = self_signed();
    let endpoint = TcpTransport::builder()
        .handshake_timeout(Duration::from_secs(2))
        .tls_server(TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap())
        .build();
    let plain = TcpTransport::builder()
        .handshake_timeout(Duration::from_secs(2))
        .build();
    let mut acceptor = endpoint.listen::<Msg, Msg>("127.0.0.1:0").await.unwrap();
    let err = plain
        .dial::<Msg, Msg>(acceptor.local_addr())
        .await
        .unwrap_err();
    assert!(err.is_handshake() || err.is_io(), "{err}");
    let err = acceptor.accept().await.unwrap_err();
    assert!(err.is_tls(), "{err}");
}
