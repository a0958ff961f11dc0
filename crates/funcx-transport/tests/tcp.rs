//! TCP connections on loopback: round trips, limits, and hostile peers.

use std::net::SocketAddr;
use std::time::Duration;

use funcx_transport::{TcpAcceptor, TcpTransport, TransportError, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum ToManager {
    Run { task: u64, args: Vec<String> },
    Cancel(u64),
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum ToEndpoint {
    Hello { slots: u32, host: String },
    Done { task: u64, ok: bool },
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
}

const TIMEOUT: Duration = Duration::from_secs(20);

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .expect("the test did not finish in time")
}

async fn listen(transport: &TcpTransport) -> TcpAcceptor<ToManager, ToEndpoint> {
    transport.listen("127.0.0.1:0").await.unwrap()
}

/// A raw client that completes a valid handshake, then lets the test write what it likes.
async fn raw_client(addr: SocketAddr, token: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&preamble(PROTOCOL_VERSION, token))
        .await
        .unwrap();
    let mut reply = [0u8; 8];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply[..5], b"FUNCX");
    assert_eq!(reply[7], 0, "the server refused a valid handshake");
    stream
}

fn preamble(version: u16, token: &[u8]) -> Vec<u8> {
    let mut p = b"FUNCX".to_vec();
    p.extend_from_slice(&version.to_be_bytes());
    p.extend_from_slice(&(token.len() as u16).to_be_bytes());
    p.extend_from_slice(token);
    p
}

#[tokio::test]
async fn enums_round_trip_both_ways() {
    within(async {
        let transport = TcpTransport::builder().token("tok").build();
        let mut acceptor = listen(&transport).await;
        let mut manager = transport
            .dial::<ToEndpoint, ToManager>(acceptor.local_addr())
            .await
            .unwrap();
        let mut endpoint = acceptor.accept().await.unwrap();
        assert_eq!(manager.peer().addr(), Some(acceptor.local_addr()));
        let manager_addr = endpoint.peer().addr().unwrap();
        assert!(manager_addr.ip().is_loopback());
        assert_eq!(endpoint.peer().to_string(), manager_addr.to_string());

        let hello = ToEndpoint::Hello {
            slots: 4,
            host: "node-1".into(),
        };
        manager.send(hello.clone()).unwrap();
        assert_eq!(endpoint.recv().await.unwrap().unwrap(), hello);

        let run = ToManager::Run {
            task: 9,
            args: vec!["a".into(), "ü".into()],
        };
        endpoint.send(run.clone()).unwrap();
        endpoint.send(ToManager::Cancel(3)).unwrap();
        assert_eq!(manager.recv().await.unwrap().unwrap(), run);
        assert_eq!(manager.recv().await.unwrap().unwrap(), ToManager::Cancel(3));
        manager
            .send(ToEndpoint::Done { task: 9, ok: true })
            .unwrap();
        assert_eq!(
            endpoint.recv().await.unwrap().unwrap(),
            ToEndpoint::Done { task: 9, ok: true }
        );

        // A clean close: the manager goes, the endpoint's receiver ends.
        endpoint.send(ToManager::Shutdown).unwrap();
        assert_eq!(manager.recv().await.unwrap().unwrap(), ToManager::Shutdown);
        drop(manager);
        assert!(endpoint.recv().await.is_none());
    })
    .await
}

#[tokio::test]
async fn ten_thousand_small_messages_arrive_in_order() {
    within(async {
        let transport = TcpTransport::new();
        let mut acceptor = listen(&transport).await;
        let manager = transport
            .dial::<ToEndpoint, ToManager>(acceptor.local_addr())
            .await
            .unwrap();
        let mut endpoint = acceptor.accept().await.unwrap();
        let sender = manager.sender();
        let producer = tokio::spawn(async move {
            for task in 0..10_000u64 {
                sender.send(ToEndpoint::Done { task, ok: true }).unwrap();
            }
        });
        for task in 0..10_000u64 {
            assert_eq!(
                endpoint.recv().await.unwrap().unwrap(),
                ToEndpoint::Done { task, ok: true }
            );
        }
        producer.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_16_mib_message_round_trips_under_a_32_mib_limit() {
    within(async {
        let transport = TcpTransport::builder()
            .max_frame_size(32 * 1024 * 1024)
            .build();
        let mut acceptor = listen(&transport).await;
        let mut manager = transport
            .dial::<ToEndpoint, ToManager>(acceptor.local_addr())
            .await
            .unwrap();
        let mut endpoint = acceptor.accept().await.unwrap();
        let blob: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        manager.send(ToEndpoint::Blob(blob.clone())).unwrap();
        manager
            .send(ToEndpoint::Done { task: 1, ok: true })
            .unwrap();
        match endpoint.recv().await.unwrap().unwrap() {
            ToEndpoint::Blob(got) => assert!(got == blob, "the blob came back different"),
            other => panic!("expected the blob, got {other:?}"),
        }
        assert_eq!(
            endpoint.recv().await.unwrap().unwrap(),
            ToEndpoint::Done { task: 1, ok: true }
        );
        // The connection is still good both ways.
        endpoint.send(ToManager::Cancel(1)).unwrap();
        assert_eq!(manager.recv().await.unwrap().unwrap(), ToManager::Cancel(1));
    })
    .await
}

#[tokio::test]
async fn dropping_a_connection_with_unread_input_loses_nothing_it_sent() {
    within(async {
        let transport = TcpTransport::new();
        let mut acceptor = listen(&transport).await;
        let manager = transport
            .dial::<ToEndpoint, ToManager>(acceptor.local_addr())
            .await
            .unwrap();
        let mut endpoint = acceptor.accept().await.unwrap();
        // The endpoint talks to a manager that never reads...
        for task in 0..20_000 {
            endpoint.send(ToManager::Cancel(task)).unwrap();
        }
        // ...and that sends a lot, then drops everything at once.
        for task in 0..50_000u64 {
            manager.send(ToEndpoint::Done { task, ok: true }).unwrap();
        }
        drop(manager);
        for task in 0..50_000u64 {
            match endpoint.recv().await {
                Some(Ok(msg)) => assert_eq!(msg, ToEndpoint::Done { task, ok: true }),
                other => panic!("message {task}: {other:?}"),
            }
        }
        assert!(endpoint.recv().await.is_none());
    })
    .await
}

#[tokio::test]
async fn an_oversized_frame_closes_that_connection_only() {
    within(async {
        let transport = TcpTransport::builder()
            .token("tok")
            .max_frame_size(1024 * 1024)
            .build();
        let mut acceptor = listen(&transport).await;
        let addr = acceptor.local_addr();

        // A well-behaved manager, connected before and kept across the bad one.
        let mut good = transport.dial::<ToEndpoint, ToManager>(addr).await.unwrap();
        let mut good_at_endpoint = acceptor.accept().await.unwrap();

        let mut bad = raw_client(addr, b"tok").await;
        let mut bad_at_endpoint = acceptor.accept().await.unwrap();
        bad.write_all(&3_000_000u32.to_be_bytes()).await.unwrap();

        let err = bad_at_endpoint.recv().await.unwrap().unwrap_err();
        assert!(err.is_frame_too_large(), "{err}");
        assert_eq!(err.frame_size(), Some((3_000_000, 1024 * 1024)));
        assert!(err
            .to_string()
            .contains("frame of 3000000 bytes exceeds the limit of 1048576"));
        assert_eq!(err.peer_addr(), bad_at_endpoint.peer().addr());
        assert!(bad_at_endpoint.recv().await.is_none());
        // The endpoint closed the socket: the raw client reads EOF (or a reset).
        let mut rest = Vec::new();
        let _ = bad.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
        if let Err(e) = bad_at_endpoint.send(ToManager::Shutdown) {
            assert!(e.is_closed(), "{e}");
        }
        bad_at_endpoint.sender().closed().await;

        // The good connection does not notice.
        good.send(ToEndpoint::Done { task: 5, ok: true }).unwrap();
        assert_eq!(
            good_at_endpoint.recv().await.unwrap().unwrap(),
            ToEndpoint::Done { task: 5, ok: true }
        );
        good_at_endpoint.send(ToManager::Cancel(5)).unwrap();
        assert_eq!(good.recv().await.unwrap().unwrap(), ToManager::Cancel(5));
    })
    .await
}

#[tokio::test]
async fn a_truncated_frame_is_an_error_not_a_panic() {
    within(async {
        let transport = TcpTransport::new();
        let mut acceptor = listen(&transport).await;
        let mut raw = raw_client(acceptor.local_addr(), b"").await;
        let mut conn = acceptor.accept().await.unwrap();
        raw.write_all(&100u32.to_be_bytes()).await.unwrap();
        raw.write_all(&[7u8; 10]).await.unwrap();
        drop(raw);
        let err = conn.recv().await.unwrap().unwrap_err();
        assert!(err.is_decode() || err.is_closed() || err.is_io(), "{err}");
        assert!(err.to_string().contains("middle of a frame"), "{err}");
        assert!(conn.recv().await.is_none());
    })
    .await
}

#[tokio::test]
async fn garbage_bodies_are_decode_errors_not_panics() {
    within(async {
        let transport = TcpTransport::new();
        let mut acceptor = listen(&transport).await;
        let addr = acceptor.local_addr();
        // A simple deterministic generator: no extra dependency.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut decode_errors = 0;
        for round in 0..200 {
            let mut raw = raw_client(addr, b"").await;
            let mut conn = acceptor.accept().await.unwrap();
            let len = (next() % 64) as usize + 1;
            let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut frame = (len as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            raw.write_all(&frame).await.unwrap();
            drop(raw);
            // Either the garbage happened to be a valid message, or it is a decode error;
            // either way the stream then ends, and nothing panics.
            let mut saw_error = false;
            while let Some(item) = conn.recv().await {
                match item {
                    Ok(_) => {}
                    Err(e) => {
                        assert!(e.is_decode(), "round {round}: {e}");
                        saw_error = true;
                    }
                }
            }
            decode_errors += usize::from(saw_error);
        }
        assert!(
            decode_errors > 100,
            "only {decode_errors} of 200 were errors"
        );
    })
    .await
}

#[tokio::test]
async fn a_wrong_token_is_refused_on_both_sides() {
    within(async {
        let endpoint = TcpTransport::builder().token("right").build();
        let mut acceptor = listen(&endpoint).await;
        let manager = TcpTransport::builder().token("wrong").build();
        let dialled = manager
            .dial::<ToEndpoint, ToManager>(acceptor.local_addr())
            .await;
        let client_err = dialled.unwrap_err();
        assert!(client_err.is_bad_token(), "{client_err}");
        assert!(client_err.to_string().contains("refused our token"));
        let server_err = acceptor.accept().await.unwrap_err();
        assert!(server_err.is_bad_token(), "{server_err}");
        assert!(server_err.peer_addr().is_some());

        // The acceptor keeps going.
        let ok = endpoint
            .dial::<ToEndpoint, ToManager>(acceptor.local_addr())
            .await;
        assert!(ok.is_ok());
        assert!(acceptor.accept().await.is_ok());
    })
    .await
}

#[tokio::test]
async fn a_wrong_version_is_refused_on_both_sides() {
    within(async {
        let transport = TcpTransport::builder().token("tok").build();
        let mut acceptor = listen(&transport).await;
        let mut raw = TcpStream::connect(acceptor.local_addr()).await.unwrap();
        raw.write_all(&preamble(99, b"tok")).await.unwrap();

        let server_err = acceptor.accept().await.unwrap_err();
        assert!(server_err.is_version_mismatch(), "{server_err}");
        assert_eq!(server_err.versions(), Some((PROTOCOL_VERSION, 99)));
        let expected = format!(
            "peer speaks funcx protocol 99, we speak {PROTOCOL_VERSION}; upgrade the older side"
        );
        assert!(server_err.to_string().contains(&expected), "{server_err}");

        // The client is told which version the endpoint speaks, then the endpoint hangs up.
        let mut reply = Vec::new();
        raw.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply.len(), 8);
        assert_eq!(&reply[..5], b"FUNCX");
        assert_eq!(u16::from_be_bytes([reply[5], reply[6]]), PROTOCOL_VERSION);
        assert_eq!(reply[7], 1, "status 1: bad version");
    })
    .await
}

#[tokio::test]
async fn a_silent_peer_times_out_without_holding_up_others() {
    within(async {
        let transport = TcpTransport::builder()
            .handshake_timeout(Duration::from_millis(300))
            .build();
        let mut acceptor = listen(&transport).await;
        let addr = acceptor.local_addr();
        // Connected: it is ahead of the next one in the listener's queue.
        let _silent = TcpStream::connect(addr).await.unwrap();

        // A manager that arrives after the silent one is accepted first.
        let _good = transport.dial::<ToEndpoint, ToManager>(addr).await.unwrap();
        assert!(acceptor.accept().await.is_ok());

        let err = acceptor.accept().await.unwrap_err();
        assert!(err.is_timeout() && err.is_handshake(), "{err}");

        // A dialler facing a silent listener times out too.
        let silent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = transport
            .dial::<ToEndpoint, ToManager>(silent_listener.local_addr().unwrap())
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
    })
    .await
}

#[tokio::test]
async fn something_that_is_not_funcx_is_a_handshake_error() {
    within(async {
        let transport = TcpTransport::new();
        let mut acceptor = listen(&transport).await;
        let mut raw = TcpStream::connect(acceptor.local_addr()).await.unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let err = acceptor.accept().await.unwrap_err();
        assert!(err.is_handshake() && !err.is_timeout(), "{err}");
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "no reply to a stranger");
    })
    .await
}

#[tokio::test]
async fn dialling_nothing_is_an_io_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err: TransportError = TcpTransport::new()
        .dial::<ToEndpoint, ToManager>(addr)
        .await
        .unwrap_err();
    assert!(err.is_io(), "{err}");
    assert_eq!(err.peer_addr(), Some(addr));
}

/// `dial_stream` / `accept_stream`: the same handshake over a stream connected by other means
/// (as an HTTP upgrade gives one), including its refusals.
#[tokio::test]
async fn handshake_and_frames_over_an_existing_stream() {
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let server = TcpTransport::builder().token("right").build();

    let (a, b) = tokio::io::duplex(1024);
    let (dialled, accepted) = within(async {
        tokio::join!(
            server.dial_stream::<ToEndpoint, ToManager, _>(a, peer),
            server.accept_stream::<ToManager, ToEndpoint, _>(b, peer),
        )
    })
    .await;
    let (dialled, mut accepted) = (dialled.unwrap(), accepted.unwrap());
    assert_eq!(accepted.peer().addr(), Some(peer));
    // Larger than the duplex buffer: frames flow through the stream's back-pressure.
    dialled.send(ToEndpoint::Blob(vec![7; 100_000])).unwrap();
    match within(accepted.recv()).await.unwrap().unwrap() {
        ToEndpoint::Blob(bytes) => assert_eq!(bytes.len(), 100_000),
        other => panic!("unexpected {other:?}"),
    }

    let wrong = TcpTransport::builder().token("wrong").build();
    let (a, b) = tokio::io::duplex(1024);
    let (dialled, accepted) = within(async {
        tokio::join!(
            wrong.dial_stream::<ToEndpoint, ToManager, _>(a, peer),
            server.accept_stream::<ToManager, ToEndpoint, _>(b, peer),
        )
    })
    .await;
    assert!(dialled.unwrap_err().is_bad_token());
    assert!(accepted.unwrap_err().is_bad_token());
}
