//! The `funcx-gateway` binary as a child process: started on a config file, stopped with
//! `SIGTERM` or killed with `SIGKILL`, its stderr kept in a file to read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running gateway process, killed when dropped.
pub struct GatewayProcess {
    child: Child,
    log: PathBuf,
}

impl GatewayProcess {
    /// Starts the binary on `config` and waits until it accepts connections on `address`
    /// and has said so on stderr, which goes to `log` (appended).
    pub fn start(config: &Path, address: SocketAddr, log: &Path) -> GatewayProcess {
        GatewayProcess::start_with(&[], config, address, log)
    }

    /// As [`GatewayProcess::start`], with options before the config file (`--log-level`).
    pub fn start_with(
        options: &[&str],
        config: &Path,
        address: SocketAddr,
        log: &Path,
    ) -> GatewayProcess {
        let listening = |text: &str| text.matches("listening on").count();
        let before = listening(&std::fs::read_to_string(log).unwrap_or_default());
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the gateway's log");
        let child = Command::new(env!("CARGO_BIN_EXE_funcx-gateway"))
            .args(options)
            .arg(config)
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the funcx-gateway binary");
        let mut process = GatewayProcess {
            child,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(address).is_err() || listening(&process.log()) == before
        {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("the gateway exited at start ({status}): {}", process.log());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr so far (this run and earlier ones on the same log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL the gateway");
        let status = self.child.wait().expect("reap the gateway");
        assert!(!status.success(), "{status}");
    }

    /// `kill -TERM`, then waits up to `bound` for it to exit; its exit status, or `None` if
    /// it was still running at the bound (it is then killed).
    pub fn sigterm(mut self, bound: Duration) -> Option<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed: {sent}");
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the gateway") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "funcx-gateway-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A loopback address nobody listens on now.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// Writes a gateway config for `address` with a redb store in `dir` and one user.
pub fn write_config(dir: &Path, address: SocketAddr, user: &str, token: &str) -> PathBuf {
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\nstore = \"{}\"\n\n[[users]]\nname = \"{user}\"\ntoken = \"{token}\"\n",
            dir.join("gateway.redb").display()
        ),
    )
    .expect("write config");
    config
}

/// Registers an endpoint named `name` for the user of `token` on the gateway at `address`:
/// (endpoint id, endpoint token).
pub async fn register_endpoint(address: SocketAddr, token: &str, name: &str) -> (String, String) {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{address}/v1/endpoints"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .expect("register endpoint")
        .error_for_status()
        .expect("endpoint registered")
        .json()
        .await
        .expect("json");
    let field = |key: &str| answer[key].as_str().expect(key).to_owned();
    (field("endpoint_id"), field("endpoint_token"))
}

/// A `funcx-gateway` process (a redb store, one user `alice`) and one endpoint of hers,
/// whose manager dials the gateway; both stop when it is dropped.
pub struct GatewayWithEndpoint {
    /// Where the gateway listens.
    pub address: SocketAddr,
    /// The endpoint's id.
    pub endpoint: String,
    /// The gateway process.
    pub gateway: GatewayProcess,
    /// The endpoint's manager, aborted when dropped.
    pub manager: tokio::task::JoinHandle<funcx_transport::remote::ManagerExit>,
    /// The gateway's files.
    pub dir: PathBuf,
}

impl GatewayWithEndpoint {
    /// Starts a gateway for `alice` with `token`, registers endpoint `name`, and has
    /// `connect` start its manager on the dial to it.
    pub async fn start(
        name: &str,
        token: &str,
        connect: impl FnOnce(
            funcx_client::EndpointDial,
        ) -> tokio::task::JoinHandle<funcx_transport::remote::ManagerExit>,
    ) -> GatewayWithEndpoint {
        let dir = temp_dir(name);
        let address = free_port();
        let config = write_config(&dir, address, "alice", token);
        let gateway = GatewayProcess::start(&config, address, &dir.join("gateway.log"));
        let (endpoint, endpoint_token) = register_endpoint(address, token, name).await;
        let manager = connect(funcx_client::EndpointDial::new(
            address.to_string(),
            endpoint.clone(),
            endpoint_token,
        ));
        GatewayWithEndpoint {
            address,
            endpoint,
            gateway,
            manager,
            dir,
        }
    }
}

impl Drop for GatewayWithEndpoint {
    fn drop(&mut self) {
        self.manager.abort();
    }
}

/// The live status (`status` of `GET /v1/endpoints/{id}`) of endpoint `endpoint` at the
/// gateway on `address`, as the user of `token` sees it.
pub async fn endpoint_status(
    address: SocketAddr,
    token: &str,
    endpoint: &str,
) -> serde_json::Value {
    let view: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{address}/v1/endpoints/{endpoint}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("endpoint status")
        .json()
        .await
        .expect("json");
    view["status"].clone()
}

/// Task `id` (`GET /v1/tasks/{id}` as the user of `token`) once it has succeeded or failed;
/// panics if it has not within `hang`.
pub async fn task_when_finished(
    address: SocketAddr,
    token: &str,
    id: u64,
    hang: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + hang;
    loop {
        let view: serde_json::Value = reqwest::Client::new()
            .get(format!("http://{address}/v1/tasks/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("the gateway answers")
            .json()
            .await
            .expect("a JSON task");
        if view["state"] == "succeeded" || view["state"] == "failed" {
            return view;
        }
        assert!(Instant::now() < deadline, "task {id} unfinished: {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An endpoint of two Python workers behind one manager that connects through `dial` and
/// keeps dialling, with back-off up to `max_backoff`, while no gateway answers. `tag` sets
/// the manager's id apart from other tests' (one process runs one test under nextest).
pub fn python_endpoint(
    dial: funcx_client::EndpointDial,
    tag: u64,
    max_backoff: Duration,
) -> tokio::task::JoinHandle<funcx_transport::remote::ManagerExit> {
    use funcx_python::{PythonConfig, PythonRuntime};
    use funcx_transport::remote::{
        run_manager, ExecutorRunner, ManagerConfig, ManagerId, ManagerInfo,
    };
    let local = funcx_core::Executor::builder()
        .workers(2)
        .start(PythonRuntime::new(PythonConfig::new()));
    let mut manager = ManagerConfig::new(ManagerInfo {
        id: ManagerId(u64::from(std::process::id()) << 16 | tag),
        block: None,
        host: "localhost".into(),
        pid: std::process::id(),
        slots: 2,
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: Vec::new(),
    });
    manager.max_backoff = max_backoff;
    tokio::spawn(run_manager(dial, ExecutorRunner::new(local, 2), manager))
}

/// The `i64` results of `handles`, in order, within `bound` for all of them: a task that
/// fails, or a result late past the bound, fails the test with `what`.
pub async fn results_within(
    handles: impl IntoIterator<Item = funcx_core::TaskHandle>,
    bound: Duration,
    what: &str,
) -> Vec<i64> {
    let all = async {
        let mut values = Vec::new();
        for handle in handles {
            match handle.result::<i64>().await {
                Ok(value) => values.push(value),
                Err(error) => panic!("{what}: a task failed: {error}"),
            }
        }
        values
    };
    match tokio::time::timeout(bound, all).await {
        Ok(values) => values,
        Err(_) => panic!("{what}: not every result within {bound:?}"),
    }
}
