//! The manager protocol end to end, in one process: an endpoint agent, managers with
//! simulated workers, in-memory and TCP connections.

use std::time::Duration;

use funcx_core::{Executor, Function, TaskError};
use funcx_transport::memory;
use funcx_transport::remote::{
    run_manager, AgentConfig, EchoRunner, EndpointAgent, ManagerConfig, ManagerExit, ManagerId,
    ManagerInfo, TcpDial, ToEndpoint, ToManager,
};
use funcx_transport::TcpTransport;

fn info(id: u64, slots: u32) -> ManagerInfo {
    ManagerInfo {
        id: ManagerId(id),
        block: Some("block-0".into()),
        host: "localhost".into(),
        pid: std::process::id(),
        slots,
        gpus: Vec::new(),
        cores: None,
        memory: None,
        nodes: Vec::new(),
    }
}

fn fast() -> AgentConfig {
    AgentConfig {
        heartbeat_period: Duration::from_millis(50),
        heartbeat_threshold: Duration::from_millis(500),
        hello_timeout: Duration::from_secs(2),
    }
}

/// The longest any single step may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

async fn wait_for_managers(executor: &Executor, count: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while executor.stats().await.managers < count {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("managers attach");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_in_memory_run_every_task_once() {
    let executor = Executor::builder().start_without_workers();
    let agent = EndpointAgent::new(executor.clone(), fast());
    let (mut listener, dialer) = memory::listener::<ToManager, ToEndpoint>();
    let serving = agent.clone();
    tokio::spawn(async move {
        while let Ok(connection) = listener.accept().await {
            let agent = serving.clone();
            tokio::spawn(async move { agent.admit(connection).await });
        }
    });
    let mut managers = Vec::new();
    for id in 0..2 {
        let dialer = dialer.clone();
        managers.push(tokio::spawn(run_manager(
            dialer,
            EchoRunner::new(8),
            ManagerConfig::new(info(id, 8)),
        )));
    }
    wait_for_managers(&executor, 2).await;
    // The agent lists a manager just after the executor counts it: wait for both.
    within("the agent to list both managers", async {
        while agent.managers().len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(agent.managers().len(), 2);
    assert_eq!(executor.stats().await.workers, 16);

    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let handles = executor.submit_batch(&echo, (0..20_000_i64).map(|i| (i,)));
    for (i, handle) in handles.into_iter().enumerate() {
        let value = within("a result", handle.result::<i64>()).await;
        assert_eq!(value.expect("result"), i as i64);
    }

    within("the shutdown", executor.shutdown()).await;
    for manager in managers {
        let exit = within("a manager to drain", manager).await;
        assert_eq!(exit.expect("manager task"), ManagerExit::Drained);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_over_tcp_with_a_token() {
    let executor = Executor::builder().start_without_workers();
    let agent = EndpointAgent::new(executor.clone(), fast());
    let transport = TcpTransport::builder().token("s3cret").build();
    let acceptor = transport.listen("127.0.0.1:0").await.expect("listen");
    let address = acceptor.local_addr();
    tokio::spawn(agent.clone().serve(acceptor));

    let manager = tokio::spawn(run_manager(
        TcpDial::new(transport.clone(), address),
        EchoRunner::new(4),
        ManagerConfig::new(info(7, 4)),
    ));
    wait_for_managers(&executor, 1).await;
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let text: String = within("a result", executor.submit(&echo, ("over tcp",)).result())
        .await
        .expect("result");
    assert_eq!(text, "over tcp");

    // A manager with the wrong token is refused and never attaches.
    let intruder = TcpTransport::builder().token("wrong").build();
    let mut config = ManagerConfig::new(info(8, 4));
    config.give_up_after = Duration::from_millis(300);
    let refused = within(
        "the intruder to give up",
        run_manager(TcpDial::new(intruder, address), EchoRunner::new(4), config),
    )
    .await;
    assert!(
        matches!(refused, ManagerExit::EndpointGone(ref reason) if reason.contains("token")),
        "{refused:?}"
    );
    assert_eq!(executor.stats().await.managers, 1);

    within("the shutdown", executor.shutdown()).await;
    let exit = within("the manager to drain", manager).await;
    assert_eq!(exit.expect("manager task"), ManagerExit::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_manager_is_lost_and_its_tasks_fail_with_the_cause() {
    let executor = Executor::builder().start_without_workers();
    let agent = EndpointAgent::new(executor.clone(), fast());
    let (mut listener, dialer) = memory::listener::<ToManager, ToEndpoint>();
    let serving = agent.clone();
    tokio::spawn(async move {
        while let Ok(connection) = listener.accept().await {
            let agent = serving.clone();
            tokio::spawn(async move { agent.admit(connection).await });
        }
    });
    // A manager that registers and then says nothing, with its connection open.
    let connection = dialer.dial().await.expect("dial");
    connection
        .send(ToEndpoint::Hello {
            info: info(1, 2),
            session: None,
            held: Vec::new(),
        })
        .expect("hello");
    wait_for_managers(&executor, 1).await;
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let handle = executor.submit(&echo, (1,));
    let error: TaskError = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the task fails instead of hanging")
        .expect_err("no manager ran it");
    assert!(error.is_manager_lost(), "{error}");
    assert!(error.to_string().contains("heartbeat"), "{error}");
    assert_eq!(executor.stats().await.managers, 0);
    drop(connection);
}
