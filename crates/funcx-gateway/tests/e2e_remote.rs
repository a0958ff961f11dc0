//! End to end through a gateway on loopback: a remote executor (`funcx_client::connect`) submits, the gateway stores
//! and relays, an endpoint (a manager of real Python workers) dials out to the gateway and
//! runs the tasks.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::register_endpoint;
use funcx_client::{EndpointDial, RemoteConfig};
use funcx_core::{Args, Executor, Function, TaskOptions};
use funcx_gateway::{Gateway, GatewayConfig};
use funcx_python::{PythonConfig, PythonRuntime};
use funcx_transport::remote::{
    run_manager, AgentConfig, ExecutorRunner, ManagerConfig, ManagerExit, ManagerId, ManagerInfo,
};
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TOKEN: &str = "alice-secret-token-0123456789";

const SOURCE: &str = r#"
import time

def echo(x):
    return x

def scale(a, b=1):
    return a * b

def fail(x):
    raise ValueError(f"bad input {x}")

def slow(seconds):
    time.sleep(seconds)
    return seconds

def work(i):
    time.sleep(0.001)
    return i * 2
"#;

fn function(name: &str) -> Function {
    Function::from_source(SOURCE, name)
}

/// A gateway in this process, with a store in memory and quick heartbeats.
async fn start_gateway() -> SocketAddr {
    start_gateway_with("").await
}

/// `start_gateway`, with `settings` (top-level TOML keys) added to its configuration.
async fn start_gateway_with(settings: &str) -> SocketAddr {
    let config = GatewayConfig::from_toml(&format!(
        "{settings}\n[[users]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n"
    ))
    .expect("config");
    let gateway = Gateway::builder(config)
        .agent_config(AgentConfig {
            heartbeat_period: Duration::from_millis(200),
            heartbeat_threshold: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(5),
        })
        .start()
        .await
        .expect("gateway starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { gateway.serve(listener).await });
    address
}

/// The endpoint side: `workers` Python workers behind a manager that dials `dial_to`.
fn start_endpoint(
    dial_to: SocketAddr,
    id: &str,
    token: &str,
    workers: usize,
) -> JoinHandle<ManagerExit> {
    let local = Executor::builder()
        .workers(workers)
        .start(PythonRuntime::new(PythonConfig::new()));
    let info = ManagerInfo {
        id: ManagerId(fastrand_id()),
        block: None,
        host: "localhost".into(),
        pid: std::process::id(),
        slots: workers as u32,
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: Vec::new(),
    };
    let mut config = ManagerConfig::new(info);
    config.max_backoff = Duration::from_millis(200);
    let dial = EndpointDial::new(dial_to.to_string(), id, token);
    tokio::spawn(run_manager(
        dial,
        ExecutorRunner::new(local, workers),
        config,
    ))
}

fn fastrand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

async fn remote(gateway: SocketAddr, endpoint: &str) -> Executor {
    RemoteConfig::new(&format!("http://{gateway}"), TOKEN, endpoint)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .expect("remote executor connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_errors_map_cancel_timeout() {
    let gateway = start_gateway().await;
    let (id, token) = register_endpoint(gateway, TOKEN, "e2e").await;
    let endpoint = start_endpoint(gateway, &id, &token, 2);
    let executor = remote(gateway, &id).await;

    // Typed values both ways, keyword arguments.
    let value: (Vec<i64>, String, Option<f64>) = executor
        .submit(&function("echo"), ((vec![1_i64, 2, 3], "text", Some(2.5)),))
        .result()
        .await
        .expect("echo");
    assert_eq!(value, (vec![1, 2, 3], "text".to_owned(), Some(2.5)));
    let product: i64 = executor
        .submit(&function("scale"), Args::new().arg(&6).kwarg("b", &7))
        .result()
        .await
        .expect("scale");
    assert_eq!(product, 42);

    // A Python exception arrives typed, with its type, message and traceback.
    let error = executor
        .submit(&function("fail"), (7,))
        .await
        .expect_err("fail raises");
    assert!(error.is_python(), "{error}");
    let exception = error.python_exception().expect("exception");
    assert_eq!(exception.type_name, "ValueError");
    assert!(exception.message.contains("bad input 7"), "{exception:?}");
    assert!(exception.traceback.contains("fail"), "{exception:?}");

    // map keeps input order.
    let results: Vec<i64> = executor
        .map(&function("work"), (0..500_i64).map(|i| (i,)), 64)
        .map(|result| result.expect("work").decode::<i64>().expect("i64"))
        .collect()
        .await;
    assert_eq!(results, (0..500).map(|i| i * 2).collect::<Vec<_>>());

    // Cancel a running task: the handle says so at once, and the endpoint stays usable.
    let handle = executor.submit(&function("slow"), (30.0,));
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.cancel();
    let cancelled = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("cancel is prompt");
    assert!(cancelled.expect_err("cancelled").is_cancelled());

    // A timeout is enforced by the endpoint and arrives typed.
    let started = std::time::Instant::now();
    let timed_out = executor
        .submit_with(
            &function("slow"),
            (30.0,),
            TaskOptions::new().timeout(Duration::from_millis(500)),
        )
        .await
        .expect_err("times out");
    assert!(timed_out.is_timeout(), "{timed_out}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // Both workers are usable again.
    let handles = executor.submit_batch(&function("echo"), (0..100_i64).map(|i| (i,)));
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.result::<i64>().await.expect("echo"), i as i64);
    }

    // A wrong endpoint or token is refused at connect time, with the reason.
    let refused =
        funcx_client::connect(&format!("http://{gateway}"), "wrong-token-wrong-token", &id)
            .await
            .expect_err("bad token");
    assert!(refused.to_string().contains("401"), "{refused}");
    let unknown = funcx_client::connect(&format!("http://{gateway}"), TOKEN, "no-such-endpoint")
        .await
        .expect_err("unknown endpoint");
    assert!(unknown.to_string().contains("404"), "{unknown}");

    executor.shutdown().await;
    endpoint.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_that_connects_after_submission_runs_the_waiting_tasks() {
    let gateway = start_gateway().await;
    let (id, token) = register_endpoint(gateway, TOKEN, "e2e").await;
    let executor = remote(gateway, &id).await;

    let handles = executor.submit_batch(&function("work"), (0..300_i64).map(|i| (i,)));
    let done = Arc::new(AtomicBool::new(false));
    let waiter = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut values = Vec::new();
            for handle in handles {
                values.push(handle.result::<i64>().await.expect("work"));
            }
            done.store(true, Ordering::SeqCst);
            values
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !done.load(Ordering::SeqCst),
        "nothing runs without an endpoint"
    );

    let endpoint = start_endpoint(gateway, &id, &token, 2);
    let values = tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("tasks finish once the endpoint connects")
        .expect("waiter");
    assert_eq!(values, (0..300).map(|i| i * 2).collect::<Vec<_>>());
    executor.shutdown().await;
    endpoint.abort();
}

/// A TCP relay whose connections can be cut, standing for a flaky network between the
/// endpoint and the gateway.
struct Relay {
    address: SocketAddr,
    connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let address = listener.local_addr().expect("address");
        let connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().expect("lock").push(relay);
            }
        });
        Relay {
            address,
            connections,
        }
    }

    /// Drops every open connection (both sides see it close).
    fn cut(&self) -> usize {
        let open: Vec<_> = self.connections.lock().expect("lock").drain(..).collect();
        let count = open.iter().filter(|c| !c.is_finished()).count();
        for connection in open {
            connection.abort();
        }
        count
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_disconnects_and_reconnects_mid_run_and_nothing_is_lost() {
    let gateway = start_gateway().await;
    let (id, token) = register_endpoint(gateway, TOKEN, "e2e").await;
    let relay = Relay::start(gateway).await;
    let mut endpoint = start_endpoint(relay.address, &id, &token, 2);
    let executor = remote(gateway, &id).await;

    let calls = 3_000_i64;
    let handles = executor.submit_batch(&function("work"), (0..calls).map(|i| (i,)));
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    let waiter = tokio::spawn(async move {
        let mut values = Vec::new();
        for handle in handles {
            values.push(handle.result::<i64>().await);
            counter.fetch_add(1, Ordering::SeqCst);
        }
        values
    });
    // Results flowing since the last disruption: the endpoint is connected and working.
    let progressed = |at_least: usize| {
        let received = received.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(60), async {
                while received.load(Ordering::SeqCst) < at_least {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("fewer than {at_least} results within 60 s"));
        }
    };

    // The connection drops twice; the endpoint reconnects and resumes its session.
    for cut in 1..=2 {
        progressed(cut * 500).await;
        assert!(relay.cut() > 0, "the endpoint was connected");
    }
    // Then the endpoint itself goes away and another one takes over: the tasks the first
    // held are re-run once the gateway declares it lost.
    progressed(1_500).await;
    endpoint.abort();
    relay.cut();
    endpoint = start_endpoint(gateway, &id, &token, 2);

    let values = tokio::time::timeout(Duration::from_secs(120), waiter)
        .await
        .expect("every task finishes")
        .expect("waiter");
    assert_eq!(values.len(), calls as usize);
    for (i, value) in values.into_iter().enumerate() {
        assert_eq!(value.expect("no task fails"), i as i64 * 2);
    }
    executor.shutdown().await;
    endpoint.abort();
}

/// A task whose arguments alone are over the gateway's body limit fails by itself, typed,
/// with the gateway's limit; the tasks submitted with it are split off and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_over_the_gateways_body_limit_fails_alone_typed() {
    let gateway = start_gateway_with("max_body_bytes = 1048576").await;
    let (id, token) = register_endpoint(gateway, TOKEN, "e2e").await;
    let _endpoint = start_endpoint(gateway, &id, &token, 2);
    let executor = remote(gateway, &id).await;
    let sizes = [10_usize, 2 << 20, 1000];
    let handles = executor.submit_batch(
        &function("echo"),
        sizes
            .iter()
            .map(|&n| (serde_bytes::ByteBuf::from(vec![7u8; n]),)),
    );
    for (&size, handle) in sizes.iter().zip(handles) {
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            handle.result::<serde_bytes::ByteBuf>(),
        )
        .await
        .expect("an answer");
        if size > 1 << 20 {
            let error = result.expect_err("over the gateway's limit");
            assert!(error.is_arguments_too_large(), "{error}");
            assert!(
                error.to_string().contains("limit of 1048576 bytes"),
                "{error}"
            );
        } else {
            assert_eq!(result.expect("under the limit").len(), size);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shell_task_through_the_gateway_returns_a_typed_shell_result() {
    let gateway = start_gateway().await;
    let (id, token) = register_endpoint(gateway, TOKEN, "shell").await;
    let _endpoint = start_endpoint(gateway, &id, &token, 1);
    let executor = remote(gateway, &id).await;

    let shell = funcx_core::ShellFunction::new("echo {word}; echo oops >&2; exit {code}")
        .walltime(Duration::from_secs(30));
    let result: funcx_core::ShellResult = tokio::time::timeout(
        Duration::from_secs(60),
        executor
            .submit(
                &shell.function(),
                Args::new().kwarg("word", "a b; $(c)").kwarg("code", &3),
            )
            .result(),
    )
    .await
    .expect("within a minute")
    .expect("a non-zero status is a result");
    assert_eq!(result.returncode, 3);
    assert_eq!(result.stdout, "a b; $(c)\n");
    assert_eq!(result.stderr, "oops\n");
    assert!(!result.timed_out);
}
