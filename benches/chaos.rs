//! The chaos soak (`cargo bench --bench e2e -- chaos [--n N] [--seed S] [--managers M]`):
//! tasks of mixed duration and size through a gateway *process* (redb store), an endpoint
//! *process* and several manager *processes* with real Python workers, while a seeded
//! schedule kills and freezes those processes and cuts the endpoint's connection to the
//! gateway at a relay.
//!
//! Every process is this executable again: the gateway when [`GATEWAY_PROCESS`] names its
//! config, the endpoint when [`ENDPOINT_PROCESS`] is set, a manager when started as
//! `manager ...`. The endpoint process is an executor without workers of its own, an
//! [`EndpointAgent`] on a fixed loopback port that the managers dial, and one
//! [`run_manager`] connection that serves the gateway's tasks on that executor, dialling the
//! gateway through the [`Relay`].
//!
//! The schedule comes from one xorshift seed: the same seed gives the same list of
//! (delay, action). What the run cannot fix is the moment each action meets the work.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use funcx::transport::remote::{
    run_manager, AgentConfig, EndpointAgent, ExecutorRunner, ManagerConfig, ManagerId, ManagerInfo,
};
use funcx::transport::TcpTransport;
use funcx::{Executor, Function};
use funcx_client::{EndpointDial, RemoteConfig};
use funcx_gateway::{Gateway, GatewayConfig};
use serde_bytes::ByteBuf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// An error of the soak's own machinery (not a task's failure, which is counted).
pub type BoxError = Box<dyn std::error::Error>;

/// The environment variable that makes this executable a gateway process: the value is the
/// gateway's config file.
pub const GATEWAY_PROCESS: &str = "FUNCX_BENCH_GATEWAY";
/// The environment variable that makes this executable the soak's endpoint process: the
/// value is `AGENT_ADDRESS GATEWAY_ADDRESS ENDPOINT_ID ENDPOINT_TOKEN SLOTS`.
pub const ENDPOINT_PROCESS: &str = "FUNCX_BENCH_ENDPOINT";
/// The token the managers present to the endpoint process.
const AGENT_TOKEN: &str = "chaos-agent-token";
const USER_TOKEN: &str = "chaos-user-token-0123456789";

/// Returns a value derived from `i` and, for `size` > 0, a payload derived from `i`, after
/// sleeping `sleep_ms`.
const TASK: &str = r#"
import time

def f(i, size, sleep_ms):
    if sleep_ms:
        time.sleep(sleep_ms / 1000.0)
    return (i * 3 + 1, bytes([i % 251]) * size)
"#;

/// What the soak is asked to do.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// Tasks to submit.
    pub n: usize,
    /// The schedule's seed.
    pub seed: u64,
    /// Manager processes.
    pub managers: usize,
    /// Python workers per manager.
    pub workers: usize,
    /// A pause after each batch of 200 submissions, to spread a short run over enough
    /// chaos actions.
    pub pace: Duration,
    /// How long unresolved tasks are waited for once everything was submitted and the
    /// chaos stopped.
    pub grace: Duration,
    /// The gateway program (the real `funcx-gateway` binary, started as `PROGRAM CONFIG`)
    /// instead of this executable: the soak then measures the memory of what a site runs,
    /// with its allocator.
    pub gateway_program: Option<PathBuf>,
    /// Actions of [`ACTIONS`] left out of the schedule (for instance `kill_gateway`, to
    /// watch one gateway process's memory over the whole run).
    pub without: Vec<String>,
}

/// The outcome of one soak, as its JSON line's fields.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// Tasks submitted.
    pub tasks: usize,
    /// Tasks that resolved with an error that is not a typed system failure: accepted, then
    /// never given their result.
    pub lost: usize,
    /// Results delivered more than once for one task where results are consumed.
    pub duplicated: usize,
    /// Tasks still unresolved after the grace period.
    pub hung: usize,
    /// Results whose value does not match the task's input.
    pub wrong: usize,
    /// Tasks that failed with a typed system error (worker died, manager lost, no workers)
    /// after the endpoint's retries.
    pub failed_typed: usize,
    /// The schedule's seed.
    pub seed: u64,
    /// Chaos actions taken, by kind.
    pub actions: Vec<(&'static str, usize)>,
    /// Error codes of the tasks counted in `lost` and `failed_typed`.
    pub errors: Vec<(String, usize)>,
    /// Tasks with more than one record in the gateway's store, read back after the run.
    pub stored_twice: usize,
    /// Peak VmHWM of any gateway process, in MiB.
    pub gateway_peak_mib: f64,
    /// Peak VmHWM of any endpoint process, in MiB.
    pub endpoint_peak_mib: f64,
    /// VmRSS of the last gateway process at the end of the run, in MiB.
    pub gateway_rss_end_mib: f64,
    /// VmRSS of the gateway process when 10 %, 20 %, ... 100 % of the tasks had resolved,
    /// in MiB: flat when memory is bounded, rising with the task count when it is not.
    pub gateway_rss_by_decile_mib: Vec<f64>,
    /// Peak VmHWM of any manager process, in MiB.
    pub manager_peak_mib: f64,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl ChaosReport {
    /// The `chaos` workload's fields after the common ones of a bench line.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let object = |pairs: Vec<(String, usize)>| {
            let inner: Vec<String> = pairs
                .into_iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{{}}}", inner.join(","))
        };
        vec![
            ("tasks", self.tasks.to_string()),
            ("lost", self.lost.to_string()),
            ("duplicated", self.duplicated.to_string()),
            ("hung", self.hung.to_string()),
            ("wrong", self.wrong.to_string()),
            ("failed_typed", self.failed_typed.to_string()),
            ("seed", self.seed.to_string()),
            (
                "actions",
                object(
                    self.actions
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), *v))
                        .collect(),
                ),
            ),
            ("errors", object(self.errors.clone())),
            ("stored_twice", self.stored_twice.to_string()),
            ("gateway_peak_mib", format!("{:.1}", self.gateway_peak_mib)),
            (
                "gateway_rss_end_mib",
                format!("{:.1}", self.gateway_rss_end_mib),
            ),
            (
                "endpoint_peak_mib",
                format!("{:.1}", self.endpoint_peak_mib),
            ),
            ("manager_peak_mib", format!("{:.1}", self.manager_peak_mib)),
            (
                "gateway_rss_by_decile_mib",
                format!(
                    "[{}]",
                    self.gateway_rss_by_decile_mib
                        .iter()
                        .map(|m| format!("{m:.1}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
        ]
    }

    /// True when nothing was lost, duplicated, hung or wrong.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.hung == 0
            && self.wrong == 0
            && self.stored_twice == 0
    }
}

/// xorshift64*: a schedule reproducible from its seed.
pub struct Xorshift(pub u64);

impl Xorshift {
    /// The next number below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// A child process of this executable, killed when dropped.
pub struct Child(pub std::process::Child);

impl Child {
    /// Starts this executable with `args` and `env`, its output discarded unless
    /// `RUST_LOG` is set.
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Result<Child, BoxError> {
        Child::spawn_program(&std::env::current_exe()?, args, env)
    }

    /// Starts `program` as [`Child::spawn`] starts this executable.
    fn spawn_program(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Child, BoxError> {
        let mut command = std::process::Command::new(program);
        command.args(args).stdin(std::process::Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .env("RUST_LOG", "error");
        }
        Ok(Child(command.spawn()?))
    }

    /// Its process id.
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gateway process started from this executable, killed when dropped.
pub struct GatewayChild(pub Child);

impl GatewayChild {
    /// Starts `program CONFIG` (a `funcx-gateway` binary), or this executable when
    /// `program` is `None`, and waits until it accepts connections on `address`.
    pub fn start(
        program: Option<&Path>,
        config: &Path,
        address: SocketAddr,
    ) -> Result<GatewayChild, BoxError> {
        let config = config.display().to_string();
        let mut child = match program {
            Some(program) => Child::spawn_program(program, &[&config], &[])?,
            None => Child::spawn(&[], &[(GATEWAY_PROCESS, &config)])?,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(address).is_err() {
            if let Some(status) = child.0.try_wait()? {
                return Err(format!("the gateway process exited at start: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("the gateway process did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(GatewayChild(child))
    }

    /// Stops it with `SIGTERM`, waiting up to `bound` for it to exit (then it is killed).
    pub fn stop(mut self, bound: Duration) {
        signal(self.0.pid(), "TERM");
        let deadline = Instant::now() + bound;
        while matches!(self.0 .0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// How many task records the redb store at `path` holds for each first argument (an
/// `i64`): more than one is a task stored twice. Read once its gateway has stopped.
pub async fn stored_per_task(path: &Path) -> Result<HashMap<i64, usize>, BoxError> {
    let store = funcx_gateway::store::RedbStore::open(path)?;
    let mut stored = HashMap::<i64, usize>::new();
    let mut task = 1;
    while let Some(record) = funcx_gateway::store::TaskStore::task(&store, task).await? {
        let args = record.decode_args()?;
        let first = args
            .positional()
            .first()
            .ok_or(format!("task {task} was stored without arguments"))?;
        *stored.entry(first.decode::<i64>()?).or_default() += 1;
        task += 1;
    }
    Ok(stored)
}

/// Runs this executable as a gateway on the config file `path` until it is stopped.
pub fn run_gateway_process(path: &str) -> Result<(), BoxError> {
    let config = GatewayConfig::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen).await?;
        let gateway = Gateway::start(config).await?;
        gateway.serve_until_signalled(listener).await?;
        Ok(())
    })
}

/// Runs this executable as the soak's endpoint process, `spec` being the value of
/// [`ENDPOINT_PROCESS`]; it runs until killed.
pub fn run_endpoint_process(spec: &str) -> Result<(), BoxError> {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let [agent, gateway, id, token, slots] = parts[..] else {
        return Err(format!("{ENDPOINT_PROCESS} wants 5 fields, not {spec:?}").into());
    };
    let slots: usize = slots.parse()?;
    let agent = agent.to_owned();
    let (gateway, id, token) = (gateway.to_owned(), id.to_owned(), token.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // A worker killed under a task costs it a retry, not the task.
        let executor = Executor::builder()
            .retries_on_worker_death(3)
            .start_without_workers();
        let acceptor = TcpTransport::builder()
            .token(AGENT_TOKEN)
            .build()
            .listen(agent.as_str())
            .await?;
        tokio::spawn(EndpointAgent::new(executor.clone(), AgentConfig::default()).serve(acceptor));
        // A new id for each incarnation: what the last one held is the gateway's to re-run.
        let mut config = ManagerConfig::new(ManagerInfo {
            id: ManagerId(u64::from(std::process::id()) << 8 | 0xed),
            block: None,
            host: "localhost".into(),
            pid: std::process::id(),
            slots: u32::try_from(slots).unwrap_or(u32::MAX),
            gpus: vec![],
            cores: None,
            memory: None,
            nodes: Vec::new(),
        });
        config.max_backoff = Duration::from_millis(200);
        config.give_up_after = Duration::from_secs(3600);
        let exit = run_manager(
            EndpointDial::new(gateway, id, token),
            ExecutorRunner::new(executor, slots),
            config,
        )
        .await;
        Err(format!("the endpoint's gateway connection ended: {exit}").into())
    })
}

/// A TCP relay on loopback in front of `target`; [`Relay::cut`] drops every connection
/// through it and refuses new ones until [`Relay::restore`].
struct Relay {
    address: SocketAddr,
    open: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Result<Relay, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (open, watching) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !*watching.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Ok(Relay { address, open })
    }

    fn cut(&self) {
        let _ = self.open.send(false);
    }

    fn restore(&self) {
        let _ = self.open.send(true);
    }
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
}

/// The processes whose parent is `parent` (from /proc).
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // After the command's closing parenthesis: state, then the parent.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// The field `label` (`VmHWM:`, `VmRSS:`) of `pid`'s status in KiB, 0 when it cannot be read.
fn status_kib(pid: u32, label: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(label))?;
            line[label.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The chaos actions, in the order of their weights in [`pick`].
const ACTIONS: [&str; 6] = [
    "kill_worker",
    "kill_manager",
    "freeze_manager",
    "kill_endpoint",
    "kill_gateway",
    "cut_relay",
];

/// Action `step` of the schedule: its index in [`ACTIONS`], a target (a manager) and a
/// duration in ms (freeze, cut). The first `first.len()` steps are every allowed action
/// once, in an order of the seed's, so that even a short run meets each; after them, an
/// action that is not `allowed` is rolled again.
fn pick(
    rng: &mut Xorshift,
    step: usize,
    first: &[usize],
    allowed: &[bool; ACTIONS.len()],
    managers: usize,
) -> (usize, usize, u64) {
    let action = if step < first.len() {
        first[step]
    } else {
        loop {
            let action = match rng.below(100) {
                0..=29 => 0,
                30..=49 => 1,
                50..=64 => 2,
                65..=76 => 3,
                77..=88 => 4,
                _ => 5,
            };
            if allowed[action] {
                break action;
            }
        }
    };
    let target = rng.below(managers as u64) as usize;
    let millis = 1_000 + rng.below(2_000);
    (action, target, millis)
}

/// The argument of task `i`: (size, sleep_ms), mostly small and fast.
fn shape(rng: &mut Xorshift) -> (usize, u64) {
    let size = match rng.below(1000) {
        0..=4 => 64 * 1024 + rng.below(960 * 1024) as usize,
        5..=99 => rng.below(16 * 1024) as usize,
        _ => rng.below(64) as usize,
    };
    let sleep = match rng.below(1000) {
        0..=1 => 200 + rng.below(100),
        2..=99 => rng.below(50),
        _ => 0,
    };
    (size, sleep)
}

/// The processes the schedule acts on.
struct Cluster {
    dir: PathBuf,
    gateway_address: SocketAddr,
    agent_address: SocketAddr,
    relay: Relay,
    gateway: Option<GatewayChild>,
    endpoint: Option<Child>,
    endpoint_spec: String,
    managers: Vec<Option<Child>>,
    workers: usize,
    gateway_program: Option<PathBuf>,
    gateway_peak: f64,
    endpoint_peak: f64,
    manager_peak: f64,
    /// The gateway's VmRSS in KiB at each tenth of the tasks resolved, as they are reached.
    gateway_rss_by_decile: Vec<f64>,
}

impl Cluster {
    fn config(&self) -> PathBuf {
        self.dir.join("gateway.toml")
    }

    fn start_endpoint(&mut self) -> Result<(), BoxError> {
        self.endpoint = Some(Child::spawn(
            &[],
            &[(ENDPOINT_PROCESS, &self.endpoint_spec)],
        )?);
        Ok(())
    }

    fn start_manager(&mut self, index: usize) -> Result<(), BoxError> {
        let endpoint = self.agent_address.to_string();
        let workers = self.workers.to_string();
        let args = [
            "manager",
            "--endpoint",
            &endpoint,
            "--workers",
            &workers,
            "--give-up-after",
            "3600",
        ];
        self.managers[index] = Some(Child::spawn(&args, &[("FUNCX_TOKEN", AGENT_TOKEN)])?);
        Ok(())
    }

    fn start_gateway(&mut self) -> Result<(), BoxError> {
        self.gateway = Some(GatewayChild::start(
            self.gateway_program.as_deref(),
            &self.config(),
            self.gateway_address,
        )?);
        Ok(())
    }

    /// Takes the peaks of every process, and the gateway's RSS for each tenth of the `n`
    /// tasks that `resolved` has passed since the last sample.
    fn sample_memory(&mut self, resolved: usize, n: usize) {
        if let Some(gateway) = &self.gateway {
            let pid = gateway.0.pid();
            self.gateway_peak = self.gateway_peak.max(status_kib(pid, "VmHWM:"));
            let reached = (resolved * 10) / n.max(1);
            while self.gateway_rss_by_decile.len() < reached.min(10) {
                self.gateway_rss_by_decile.push(status_kib(pid, "VmRSS:"));
            }
        }
        if let Some(endpoint) = &self.endpoint {
            self.endpoint_peak = self.endpoint_peak.max(status_kib(endpoint.pid(), "VmHWM:"));
        }
        for manager in self.managers.iter().flatten() {
            self.manager_peak = self.manager_peak.max(status_kib(manager.pid(), "VmHWM:"));
        }
    }

    /// Takes action `action` of [`ACTIONS`] on manager `target` for `millis`.
    async fn act(&mut self, action: usize, target: usize, millis: u64) -> Result<(), BoxError> {
        let pause = Duration::from_millis(millis);
        match action {
            0 => {
                if let Some(manager) = &self.managers[target] {
                    if let Some(worker) = children(manager.pid()).first() {
                        signal(*worker, "KILL");
                    }
                }
            }
            1 => {
                drop(self.managers[target].take());
                self.start_manager(target)?;
            }
            2 => {
                if let Some(manager) = &self.managers[target] {
                    let pid = manager.pid();
                    signal(pid, "STOP");
                    tokio::time::sleep(pause).await;
                    signal(pid, "CONT");
                }
            }
            3 => {
                drop(self.endpoint.take());
                self.start_endpoint()?;
            }
            4 => {
                drop(self.gateway.take());
                self.start_gateway()?;
            }
            _ => {
                self.relay.cut();
                tokio::time::sleep(pause).await;
                self.relay.restore();
            }
        }
        Ok(())
    }
}

/// Per-task outcome at the consumer: how often a result arrived, and how it was judged.
#[derive(Default)]
struct Tally {
    resolutions: Vec<u8>,
    wrong: usize,
    lost: usize,
    failed_typed: usize,
    errors: HashMap<String, usize>,
}

/// Runs the soak.
pub async fn chaos(options: ChaosOptions) -> Result<ChaosReport, BoxError> {
    let started = Instant::now();
    let mut allowed = [true; ACTIONS.len()];
    for name in &options.without {
        let index = ACTIONS
            .iter()
            .position(|action| action == name)
            .ok_or_else(|| format!("no chaos action is called {name:?}; they are {ACTIONS:?}"))?;
        allowed[index] = false;
    }
    if !allowed.contains(&true) {
        return Err("every chaos action was left out".into());
    }
    let dir = std::env::temp_dir().join(format!("funcx-bench-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let gateway_address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let agent_address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "listen = \"{gateway_address}\"\nstore = \"{}\"\n\n[[users]]\nname = \"chaos\"\ntoken = \"{USER_TOKEN}\"\n",
            dir.join("gateway.redb").display()
        ),
    )?;
    let gateway = GatewayChild::start(
        options.gateway_program.as_deref(),
        &dir.join("gateway.toml"),
        gateway_address,
    )?;
    let registered: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{gateway_address}/v1/endpoints"))
        .bearer_auth(USER_TOKEN)
        .json(&serde_json::json!({ "name": "chaos" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let (Some(id), Some(endpoint_token)) = (
        registered["endpoint_id"].as_str(),
        registered["endpoint_token"].as_str(),
    ) else {
        return Err(format!("unexpected answer registering an endpoint: {registered}").into());
    };
    let relay = Relay::start(gateway_address).await?;
    // The endpoint asks the gateway for more tasks than its workers hold, so that its own
    // queue keeps them busy across the extra hop; what it holds when killed is re-run.
    let slots = options.managers * options.workers * 8;
    let mut cluster = Cluster {
        endpoint_spec: format!(
            "{agent_address} {} {id} {endpoint_token} {slots}",
            relay.address
        ),
        dir: dir.clone(),
        gateway_address,
        agent_address,
        relay,
        gateway: Some(gateway),
        endpoint: None,
        managers: (0..options.managers).map(|_| None).collect(),
        workers: options.workers,
        gateway_program: options.gateway_program.clone(),
        gateway_peak: 0.0,
        endpoint_peak: 0.0,
        manager_peak: 0.0,
        gateway_rss_by_decile: Vec::with_capacity(10),
    };
    cluster.start_endpoint()?;
    for index in 0..options.managers {
        cluster.start_manager(index)?;
    }
    let executor = RemoteConfig::new(&format!("http://{gateway_address}"), USER_TOKEN, id)
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(3600))
        .connect()
        .await?;
    let function = Function::from_source(TASK, "f");

    let tally = Arc::new(std::sync::Mutex::new(Tally {
        resolutions: vec![0; options.n],
        ..Tally::default()
    }));
    // Tasks resolved so far, however: the memory samples are taken at each tenth.
    let resolved = Arc::new(AtomicUsize::new(0));
    let (give_up, giving_up) = watch::channel(false);
    // Set once the last task was submitted: the chaos stops there, and the grace period
    // bounds the wait for what is left, so that a hung task cannot keep the chaos going.
    let submitted = Arc::new(AtomicBool::new(false));
    // Submit in batches, with a bounded number outstanding, each batch's results consumed
    // by a task of its own.
    let submitter = {
        let executor = executor.clone();
        let tally = tally.clone();
        let resolved = resolved.clone();
        let n = options.n;
        let pace = options.pace;
        let submitted = submitted.clone();
        let mut shapes = Xorshift(options.seed ^ 0x5eed_5eed_5eed_5eed);
        tokio::spawn(async move {
            let mut consumers = tokio::task::JoinSet::new();
            let mut next = 0usize;
            while next < n {
                let end = (next + 200).min(n);
                let args: Vec<(i64, usize, u64)> = (next..end)
                    .map(|i| {
                        let (size, sleep) = shape(&mut shapes);
                        (i as i64, size, sleep)
                    })
                    .collect();
                let handles = executor.submit_batch(&function, args.clone());
                let tally = tally.clone();
                let resolved = resolved.clone();
                let mut giving_up = giving_up.clone();
                consumers.spawn(async move {
                    for ((i, size, _), handle) in args.into_iter().zip(handles) {
                        let outcome = tokio::select! {
                            outcome = handle.result::<(i64, ByteBuf)>() => outcome,
                            _ = giving_up.wait_for(|over| *over) => return,
                        };
                        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                        let index = i as usize;
                        tally.resolutions[index] = tally.resolutions[index].saturating_add(1);
                        resolved.fetch_add(1, Ordering::Relaxed);
                        match outcome {
                            Ok((value, payload)) => {
                                let byte = (i % 251) as u8;
                                if value != i * 3 + 1
                                    || payload.len() != size
                                    || payload.iter().any(|b| *b != byte)
                                {
                                    tally.wrong += 1;
                                }
                            }
                            Err(error) => {
                                if error.is_worker_died()
                                    || error.is_manager_lost()
                                    || error.is_no_workers()
                                {
                                    tally.failed_typed += 1;
                                } else {
                                    tally.lost += 1;
                                }
                                *tally
                                    .errors
                                    .entry(error.code().as_str().to_owned())
                                    .or_default() += 1;
                            }
                        }
                    }
                });
                next = end;
                tokio::time::sleep(pace).await;
                // At most 20 batches (4,000 tasks) outstanding: memory stays bounded.
                while consumers.len() >= 20 {
                    let _ = consumers.join_next().await;
                }
            }
            submitted.store(true, Ordering::Relaxed);
            while consumers.join_next().await.is_some() {}
        })
    };

    // The chaos: an action every 0.5–3 s until every task was submitted.
    let mut rng = Xorshift(options.seed);
    let mut first: Vec<usize> = (0..ACTIONS.len()).collect();
    for i in (1..first.len()).rev() {
        first.swap(i, rng.below(i as u64 + 1) as usize);
    }
    first.retain(|action| allowed[*action]);
    let mut counts = [0usize; ACTIONS.len()];
    let mut step = 0;
    let n = options.n;
    let mut sampling = tokio::time::interval(Duration::from_millis(500));
    // The pause before each action: 0.5–3 s, from the seed.
    let gap = |rng: &mut Xorshift| Duration::from_millis(500 + rng.below(2_500));
    let mut next_action = tokio::time::Instant::now() + gap(&mut rng);
    while !submitted.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tokio::time::sleep_until(next_action) => {}
            _ = sampling.tick() => {
                cluster.sample_memory(resolved.load(Ordering::Relaxed), n);
                continue;
            }
        }
        if submitted.load(Ordering::Relaxed) {
            break;
        }
        let (action, target, millis) = pick(&mut rng, step, &first, &allowed, options.managers);
        step += 1;
        tracing::info!(action = ACTIONS[action], target, millis, "chaos");
        cluster.sample_memory(resolved.load(Ordering::Relaxed), n);
        cluster.act(action, target, millis).await?;
        counts[action] += 1;
        next_action = tokio::time::Instant::now() + gap(&mut rng);
    }
    // Once submitted: no more chaos, and the grace period for what is left.
    let grace = tokio::time::sleep(options.grace);
    tokio::pin!(grace);
    let mut submitter = submitter;
    loop {
        tokio::select! {
            _ = &mut submitter => break,
            _ = &mut grace => {
                let _ = give_up.send(true);
                let _ = submitter.await;
                break;
            }
            _ = sampling.tick() => cluster.sample_memory(resolved.load(Ordering::Relaxed), n),
        }
    }
    cluster.sample_memory(resolved.load(Ordering::Relaxed), n);
    executor.shutdown_now().await;
    let seconds = started.elapsed().as_secs_f64();
    let gateway_peak_mib = cluster.gateway_peak / 1024.0;
    let endpoint_peak_mib = cluster.endpoint_peak / 1024.0;
    let manager_peak_mib = cluster.manager_peak / 1024.0;
    let gateway_rss_by_decile_mib = cluster
        .gateway_rss_by_decile
        .iter()
        .map(|kib| kib / 1024.0)
        .collect();
    let gateway_rss_end_mib = cluster
        .gateway
        .as_ref()
        .map_or(0.0, |g| status_kib(g.0.pid(), "VmRSS:") / 1024.0);
    if let Some(gateway) = cluster.gateway.take() {
        gateway.stop(Duration::from_secs(20));
    }
    drop(cluster);
    let stored_twice = stored_per_task(&dir.join("gateway.redb"))
        .await?
        .values()
        .filter(|count| **count > 1)
        .count();
    let _ = std::fs::remove_dir_all(&dir);

    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    let mut errors: Vec<(String, usize)> = tally.errors.clone().into_iter().collect();
    errors.sort();
    Ok(ChaosReport {
        tasks: options.n,
        lost: tally.lost,
        duplicated: tally.resolutions.iter().filter(|r| **r > 1).count(),
        hung: tally.resolutions.iter().filter(|r| **r == 0).count(),
        wrong: tally.wrong,
        failed_typed: tally.failed_typed,
        seed: options.seed,
        actions: ACTIONS.iter().copied().zip(counts).collect(),
        errors,
        stored_twice,
        gateway_peak_mib,
        gateway_rss_end_mib,
        gateway_rss_by_decile_mib,
        endpoint_peak_mib,
        manager_peak_mib,
        seconds,
    })
}
