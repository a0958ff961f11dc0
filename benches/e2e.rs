//! End-to-end throughput and latency of funcx through the public API: on local Python
//! workers, on Python workers behind managers that dial the endpoint over TCP, and on a
//! large number of simulated managers.
//!
//! ```text
//! cargo bench --bench e2e -- WORKLOAD... [--workers N] [--n N] [--managers M] [--slots S]
//!     [--store FILE] [--pg URL] [--kills K] [--seed S]
//!     [--pace-ms MS]
//! ```
//!
//! `--features jemalloc` runs everything on jemalloc instead of the system's allocator.
//!
//! WORKLOAD is one of `startup`, `W1`, `W2`, `W3`, `W4`, `W1-tcp`, `W2-tcp`, `W3-tcp`,
//! `W1-gw`, `W2-gw`, `W3-gw`, `gw-restart`, `chaos`, `W5`, `W6-tcp`, `scale` or `all` (everything
//! but `scale`, `W5`, `W6-tcp`, `chaos` and the gateway workloads, which run only when asked). Each prints one
//! JSON line: `{"peer":"funcx","workload":..,"n":..,"seconds":..,"tasks_per_s":..,
//! "p50_ms":..,"p99_ms":..,"mib_per_s_both_ways":..,"efficiency":..}` (null where a field
//! does not apply; `scale` adds fields of its own). Every result is checked; a wrong one
//! aborts the run.
//!
//! - `startup`: creating the executor until one no-op per worker has returned (median of n).
//! - `W1`: `noop(x)` for x in range(n = 20,000), all submitted, then all awaited.
//! - `W2`: n = 2,000 sequential round trips of `noop(i)`.
//! - `W3`: n = 2,000 calls of `echo(b)` with a 1 MiB random bytes argument, all at once.
//! - `W4`: n = 200 calls of a pure-Python loop calibrated to about 10 ms.
//! - `W1-tcp`, `W2-tcp`, `W3-tcp`: the same work as W1, W2 and W3, but the executor has no
//!   workers of its own. An [`EndpointAgent`] listens on 127.0.0.1 (random port, with a
//!   token) and `--workers` (default 2) managers of one Python worker each dial it. The
//!   managers run in this process, as Tokio tasks of
//!   [`funcx::python::manager::run`], but everything between them and the endpoint is real:
//!   one loopback TCP connection each, the token handshake, the manager protocol, and real
//!   Python worker processes behind each manager. Timing starts once every manager is
//!   attached and the workers are warm.
//! - `scale`: one endpoint on loopback TCP and `--managers` M (default 1,024) simulated
//!   managers of `--slots` S (default 256) slots each, M × S = 262,144 simulated workers by
//!   default. Each manager is a [`run_manager`] task of this process with an [`EchoRunner`]
//!   (slots that return their first argument at once) and its own TCP connection. Then n
//!   (default 1,000,000) no-op tasks are submitted with `submit_batch` in batches of 50,000,
//!   at most 4 batches unfinished at a time, and every result is awaited and checked. Extra
//!   fields:
//!   - `"managers"`, `"slots"`;
//!   - `"connect_s"`: from starting the managers until all M are attached;
//!   - `"tasks_per_s"`, `"p50_ms"`, `"p99_ms"`: throughput, and the submitted → finished
//!     latency of one task in 100 from its report's timeline. The latency is measured at
//!     full load, with up to 200,000 tasks outstanding, so it is mostly queueing (about
//!     outstanding tasks / throughput), not the cost of one round trip (that is W2-tcp);
//!   - `"cpus_busy"`: CPU time of the whole process (endpoint, managers and this harness)
//!     during the timed part, divided by its wall time: how many cores it kept busy;
//!   - `"rss_before_mib"`, `"rss_after_mib"`: VmRSS of the process before the managers
//!     connect and once all are attached, and `"endpoint_kib_per_manager"`, their difference
//!     per manager. It is an upper bound: it includes the memory of the in-process managers
//!     (their tasks and their side of each connection), not only the endpoint's;
//!   - `"fds_per_manager"`: file descriptors opened by connecting, per manager, endpoint side
//!     only. With the managers in process, every connection holds two descriptors, one per
//!     end, so this is (after − before) / 2 / M.
//!
//!   `scale` needs about 2 × M + 100 file descriptors; where the soft limit is lower, raise
//!   it first (`ulimit -n 8192`). It checks the limit before starting and says so when it
//!   is too low.
//! - `W1-gw`, `W2-gw`, `W3-gw`: the same work as W1, W2 and W3, submitted through a
//!   the remote executor ([`funcx_client::connect`]; postcard submissions, results pushed over a binary stream of postcard
//!   frames) to a funcx gateway serving on 127.0.0.1 (random port) in this process, with one
//!   user and one registered endpoint. The endpoint side runs in this process too: a local
//!   executor of `--workers` (default 2) Python workers behind [`run_manager`] with an [`EndpointDial`] and an
//!   [`ExecutorRunner`], dialling the gateway over loopback TCP. The gateway's store is in
//!   memory unless `--store FILE` names a redb file (created; removed afterwards), or
//!   `--pg URL` a PostgreSQL database (feature `postgres`; a schema of its own, emptied
//!   first). These run only when named, not with `all`.
//! - `W1-gw-pg2`, `failover-pg`: several gateways on one PostgreSQL (feature `postgres`,
//!   `--pg URL`, by default the test database of `scripts/infra/postgres-up.sh`); see
//!   `e2e_pg.rs`. Run only when named.
//! - `W5`: scheduling quality on `--workers` (default 2) local Python workers. Four mixes of
//!   tasks that sleep for given durations, each on a function of its own (so that nothing
//!   learned in one mix helps the next), all of a mix submitted at once:
//!   (a) the function learned fast (one call with a tiny argument), then 8 × 0.3 s;
//!   (b) 1 × 0.5 s then 200 × 5 ms; (c) 400 tasks, 10 % of 100 ms and 90 % of 1 ms, shuffled
//!   with a fixed seed; (d) 200 durations from 1 to 40 ms, sorted ascending. For each mix,
//!   the makespan (first submission to last result) over the ideal makespan, max(longest
//!   task, total work / workers); fields `"a"`, `"b"`, `"c"`, `"d"` and
//!   `"makespan_over_ideal"`, the worst of the four. 1.0 is perfect. Run only when named.
//! - `W6-tcp`: `--n` (default 64) tasks, each with a 16 MiB bytes argument and a 16 MiB
//!   result (the argument reversed, with the task's number), through one manager *process*
//!   of 8 Python workers (this benchmark's own executable, started as `manager`) that dials
//!   an [`EndpointAgent`] on loopback TCP; all submitted at once, every byte of every result
//!   checked. Fields `"mib_per_s_both_ways"`; `"in_flight_mib"`, the bytes of the arguments
//!   and results of the tasks submitted and not yet received at the start (n × 32 MiB);
//!   `"rss_before_mib"`, the endpoint's (this process's) VmRSS before submitting, and
//!   `"rss_growth_mib"`, its peak (VmHWM, reset before submitting) above that, and their
//!   ratio `"rss_growth_over_in_flight"`. A run that does not finish within
//!   [`W6_LIMIT`] prints a line with an `"error"` field instead of hanging, and the
//!   benchmark exits with an error. Run only when named.
//! - `gw-restart`: n (default 2,000) tasks through a funcx gateway *process* (this
//!   executable again, with a redb store) that is killed with `SIGKILL` `--kills` times
//!   (default 10) at seeded random moments 100–500 ms apart and started again on the same
//!   port and store at once, while a remote executor ([`funcx_client::connect`]) submits batches of 100 every 20 ms
//!   and an endpoint of `--workers` (default 2) Python workers in this process runs them.
//!   Each task appends a byte to a file of its own (`mark(i)`, 2 ms), so executions are
//!   counted by the function; after the last gateway stops, the store is read back. Fields
//!   `"tasks"`, `"gateway_kills"`, `"executions_over_1"` (tasks that ran more than once),
//!   `"stored_twice"` (tasks with more than one record), `"lost"` (tasks without their
//!   result). Target: 0, 0, 0. Run only when named.
//! - `chaos`: the chaos soak of `chaos.rs`: n (default 100,000) tasks of mixed duration and
//!   size through a gateway process, an endpoint process and `--managers` (default 3)
//!   manager processes of `--workers` (default 2) Python workers, while a schedule seeded
//!   by `--seed` (the first six actions are one of each kind) kills workers, managers, the endpoint and the gateway, freezes managers and
//!   cuts the endpoint's connection at a relay. Fields `"tasks"`, `"lost"`, `"duplicated"`,
//!   `"hung"`, `"wrong"`, `"failed_typed"`, `"seed"`, `"actions"`, `"errors"`,
//!   `"stored_twice"` (the gateway's store read back), `"gateway_peak_mib"`,
//!   `"gateway_rss_end_mib"`, `"gateway_rss_by_decile_mib"` (the gateway's RSS as each tenth
//!   of the tasks resolved), `"endpoint_peak_mib"`, `"manager_peak_mib"`. Target: lost,
//!   duplicated, hung, wrong and stored_twice all 0; the bench exits with an error otherwise.
//!   `--gateway-bin target/release/funcx-gateway` runs the real gateway binary (its
//!   allocator, its defaults) instead of this executable; `--without kill_gateway` (any of
//!   the actions, comma-separated) leaves actions out, to watch one gateway process's memory
//!   over the whole run. Run only when named.

use std::error::Error;

/// jemalloc under `--features jemalloc` (see that feature in `benches/Cargo.toml`); the
/// system's allocator otherwise, as an application that embeds funcx and chooses nothing.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The chaos soak (`chaos`), and the child processes it shares with `gw-restart`.
mod chaos;

use chaos::{GatewayChild, Xorshift, ENDPOINT_PROCESS, GATEWAY_PROCESS};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use funcx::python::manager::{self, ManagerOptions};
use funcx::transport::remote::{
    run_manager, AgentConfig, EchoRunner, EndpointAgent, ExecutorRunner, ManagerConfig,
    ManagerExit, ManagerId, ManagerInfo, TcpDial,
};
use funcx::transport::TcpTransport;
use funcx::{Args, Executor, Function, Payload, PythonConfig, PythonRuntime};
use funcx_client::{EndpointDial, RemoteConfig};
use funcx_gateway::{Gateway, GatewayConfig, UserConfig};
use serde_bytes::ByteBuf;
use tokio::task::{JoinHandle, JoinSet};

const NOOP: &str = "def noop(x):\n    return x\n";
const ECHO: &str = "def echo(b):\n    return b\n";
const SPIN: &str =
    "def spin(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n";
const TOKEN: &str = "e2e-bench-token";

type BoxResult<T> = Result<T, Box<dyn Error>>;

#[derive(Default)]
struct Line {
    workload: &'static str,
    n: usize,
    seconds: f64,
    tasks_per_s: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    mib_per_s_both_ways: Option<f64>,
    efficiency: Option<f64>,
    /// Fields of one workload only, printed after the common ones, already formatted.
    extra: Vec<(&'static str, String)>,
}

impl Line {
    fn print(&self) {
        let field = |value: Option<f64>| value.map_or("null".to_string(), |v| format!("{v:.4}"));
        let extra: String = self
            .extra
            .iter()
            .map(|(name, value)| format!(",\"{name}\":{value}"))
            .collect();
        println!(
            "{{\"peer\":\"funcx\",\"workload\":\"{}\",\"n\":{},\"seconds\":{:.6},\"tasks_per_s\":{},\"p50_ms\":{},\"p99_ms\":{},\"mib_per_s_both_ways\":{},\"efficiency\":{}{extra}}}",
            self.workload,
            self.n,
            self.seconds,
            field(self.tasks_per_s),
            field(self.p50_ms),
            field(self.p99_ms),
            field(self.mib_per_s_both_ways),
            field(self.efficiency),
        );
    }
}

struct Options {
    workloads: Vec<String>,
    workers: usize,
    n: Option<usize>,
    /// `--managers`: for `scale` (default 1,024) and `chaos` (default 3).
    managers: Option<usize>,
    slots: usize,
    /// The gateway's redb file for the `-gw` workloads; `None` for a store in memory.
    store: Option<PathBuf>,
    /// How often `gw-restart` kills the gateway.
    kills: usize,
    /// `--pg URL`: the `-gw` workloads on a PostgreSQL store (feature `postgres`).
    pg: Option<String>,
    /// `--seed`: the schedule of `chaos`.
    seed: u64,
    /// `--pace-ms`: the pause of `chaos` after each batch of submissions.
    pace_ms: u64,
    /// `--gateway-bin PATH`: `chaos` runs this `funcx-gateway` binary as its gateway.
    gateway_bin: Option<PathBuf>,
    /// `--without ACTION[,ACTION]`: actions left out of `chaos`'s schedule.
    without: Vec<String>,
}

const ALL: [&str; 8] = [
    "startup", "W1", "W2", "W3", "W4", "W1-tcp", "W2-tcp", "W3-tcp",
];

impl Options {
    /// The database of the PostgreSQL workloads: `--pg`, else the test database of
    /// `scripts/infra/postgres-up.sh`.
    fn pg_url(&self) -> &str {
        self.pg
            .as_deref()
            .unwrap_or("postgres://funcx:funcx@127.0.0.1:5432/funcx")
    }
}

fn parse_options() -> BoxResult<Options> {
    let mut options = Options {
        workloads: Vec::new(),
        workers: 2,
        n: None,
        managers: None,
        slots: 256,
        store: None,
        kills: 10,
        pg: None,
        seed: 0x6368_616f_735f_3031,
        pace_ms: 0,
        gateway_bin: None,
        without: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| -> BoxResult<usize> {
            let text = args.next().ok_or(format!("{flag} needs a value"))?;
            let number: usize = text
                .parse()
                .map_err(|_| format!("{flag} takes a whole number, not {text:?}"))?;
            if number == 0 {
                return Err(format!("{flag} must be at least 1").into());
            }
            Ok(number)
        };
        match arg.as_str() {
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            "--workers" => options.workers = value("--workers")?,
            "--n" => options.n = Some(value("--n")?),
            "--managers" => options.managers = Some(value("--managers")?),
            "--slots" => options.slots = value("--slots")?,
            "--kills" => options.kills = value("--kills")?,
            "--seed" => options.seed = value("--seed")? as u64,
            "--pace-ms" => options.pace_ms = value("--pace-ms")? as u64,
            "--pg" => options.pg = Some(args.next().ok_or("--pg needs a URL")?),
            "--gateway-bin" => {
                options.gateway_bin = Some(args.next().ok_or("--gateway-bin needs a file")?.into());
            }
            "--without" => {
                let actions = args.next().ok_or("--without needs a list of actions")?;
                options.without.extend(actions.split(',').map(String::from));
            }
            "--store" => {
                options.store = Some(args.next().ok_or("--store needs a file")?.into());
            }
            "all" => options.workloads.extend(ALL.map(String::from)),
            other if other.starts_with('-') => return Err(format!("unknown option {other}").into()),
            other => options.workloads.push(other.to_string()),
        }
    }
    if options.workloads.is_empty() {
        options.workloads.extend(ALL.map(String::from));
    }
    Ok(options)
}

/// An executor to measure, and the in-process managers that serve it, if any.
struct Endpoint {
    executor: Executor,
    managers: Vec<JoinHandle<ManagerExit>>,
    /// For the `-gw` workloads: the gateway and the endpoint behind it.
    behind: Option<Behind>,
}

/// An in-process gateway and the in-process endpoint (local Python workers behind one
/// manager dialling the gateway) that a remote executor ([`funcx_client::connect`]) is measured against.
struct Behind {
    server: JoinHandle<std::io::Result<()>>,
    manager: JoinHandle<ManagerExit>,
    local: Executor,
    store: Option<PathBuf>,
}

impl Endpoint {
    /// An executor with `workers` local Python workers, all started.
    async fn local(workers: usize) -> BoxResult<Endpoint> {
        let executor = Executor::builder()
            .workers(workers)
            .start(PythonRuntime::default());
        executor.ready().await?;
        Ok(Endpoint {
            executor,
            managers: Vec::new(),
            behind: None,
        })
    }

    /// A remote executor ([`funcx_client::connect`]) on a gateway serving on a loopback port, with one endpoint of
    /// `workers` local Python workers attached to it through one manager connection. The
    /// store: PostgreSQL with `--pg`, else the redb file `store`, else memory.
    async fn gateway(
        workers: usize,
        store: Option<PathBuf>,
        pg: Option<&str>,
    ) -> BoxResult<Endpoint> {
        let token = funcx_gateway::new_token()?;
        if let Some(path) = &store {
            // A fresh store: nothing to recover from an earlier run.
            let _ = std::fs::remove_file(path);
        }
        let store_config = match pg {
            Some(url) => Some(postgres_store(url, "bench_gw").await?),
            None => store.clone().map(funcx_gateway::StoreConfig::Redb),
        };
        let config = GatewayConfig {
            users: vec![UserConfig {
                name: "bench".into(),
                token: token.clone(),
            }],
            store: store_config,
            ..GatewayConfig::default()
        };
        let gateway = Gateway::start(config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move { gateway.serve(listener).await });
        let url = format!("http://{address}");

        let registered: serde_json::Value = reqwest::Client::new()
            .post(format!("{url}/v1/endpoints"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "name": "bench" }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let (Some(endpoint_id), Some(endpoint_token)) = (
            registered["endpoint_id"].as_str(),
            registered["endpoint_token"].as_str(),
        ) else {
            return Err(format!("unexpected answer registering an endpoint: {registered}").into());
        };

        let local = Executor::builder()
            .workers(workers)
            .start(PythonRuntime::default());
        local.ready().await?;
        let info = ManagerInfo {
            id: ManagerId(1),
            block: None,
            host: "localhost".into(),
            pid: std::process::id(),
            slots: u32::try_from(workers).unwrap_or(u32::MAX),
            gpus: Vec::new(),
            cores: None,
            memory: None,
            nodes: Vec::new(),
        };
        let manager = tokio::spawn(run_manager(
            EndpointDial::new(address.to_string(), endpoint_id, endpoint_token),
            ExecutorRunner::new(local.clone(), workers),
            ManagerConfig::new(info),
        ));
        let executor = funcx_client::connect(&url, &token, endpoint_id).await?;
        Ok(Endpoint {
            executor,
            managers: Vec::new(),
            behind: Some(Behind {
                server,
                manager,
                local,
                store,
            }),
        })
    }

    /// An executor without workers, an endpoint agent on a loopback port, and `managers`
    /// in-process managers of one Python worker each dialling it, all attached.
    async fn tcp(managers: usize) -> BoxResult<Endpoint> {
        let (executor, address) = listen().await?;
        let managers = (0..managers)
            .map(|_| {
                tokio::spawn(manager::run(ManagerOptions {
                    endpoint: address,
                    token: TOKEN.into(),
                    workers: 1,
                    memory: None,
                    python: PythonConfig::new(),
                    block: None,
                    simulate: None,
                    give_up_after: Duration::from_secs(10),
                    tls_ca: None,
                    tls_name: None,
                    block_nodes: None,
                }))
            })
            .collect::<Vec<_>>();
        let endpoint = Endpoint {
            executor,
            managers,
            behind: None,
        };
        endpoint
            .wait_for_managers(Duration::from_secs(30), "")
            .await?;
        Ok(endpoint)
    }

    /// Waits until every manager of this endpoint is attached.
    async fn wait_for_managers(&self, limit: Duration, hint: &str) -> BoxResult<()> {
        let expected = self.managers.len();
        let started = Instant::now();
        loop {
            let attached = self.executor.stats().await.managers;
            if attached >= expected {
                return Ok(());
            }
            if self.managers.iter().any(JoinHandle::is_finished) {
                return Err(format!(
                    "a manager exited before attaching ({attached} of {expected} attached){hint}"
                )
                .into());
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "only {attached} of {expected} managers attached within {limit:?}{hint}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Drains the executor, then checks that every manager drained too.
    async fn close(self) -> BoxResult<()> {
        self.executor.shutdown().await;
        if let Some(behind) = self.behind {
            if behind.manager.is_finished() {
                return Err(format!(
                    "the endpoint's manager exited early: {}",
                    behind.manager.await?
                )
                .into());
            }
            behind.manager.abort();
            behind.local.shutdown_now().await;
            behind.server.abort();
            if let Some(path) = behind.store {
                let _ = std::fs::remove_file(path);
            }
        }
        for manager in self.managers {
            let exit = tokio::time::timeout(Duration::from_secs(30), manager)
                .await
                .map_err(|_| "a manager did not exit after the endpoint drained")??;
            if exit != ManagerExit::Drained {
                return Err(format!("a manager exited with {exit}").into());
            }
        }
        Ok(())
    }
}

/// An executor without workers of its own, and an endpoint agent accepting managers for it
/// on a random loopback port.
async fn listen() -> BoxResult<(Executor, SocketAddr)> {
    let executor = Executor::builder().start_without_workers();
    let agent = EndpointAgent::new(executor.clone(), AgentConfig::default());
    let acceptor = TcpTransport::builder()
        .token(TOKEN)
        .build()
        .listen("127.0.0.1:0")
        .await?;
    let address = acceptor.local_addr();
    tokio::spawn(agent.serve(acceptor));
    Ok((executor, address))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn startup(workers: usize, n: usize) -> BoxResult<Line> {
    let noop = Function::from_source(NOOP, "noop");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let executor = Executor::builder()
            .workers(workers)
            .start(PythonRuntime::default());
        let handles = executor.submit_batch(&noop, (0..workers as i64).map(|i| (i,)));
        for (i, handle) in handles.into_iter().enumerate() {
            let value: i64 = handle.result().await?;
            if value != i as i64 {
                return Err(format!("startup: noop({i}) returned {value}").into());
            }
        }
        samples.push(started.elapsed().as_secs_f64());
        executor.shutdown_now().await;
    }
    samples.sort_by(f64::total_cmp);
    let median = percentile(&samples, 0.5);
    Ok(Line {
        workload: "startup",
        n,
        seconds: median,
        p50_ms: Some(median * 1e3),
        p99_ms: Some(percentile(&samples, 0.99) * 1e3),
        ..Line::default()
    })
}

async fn warm(
    executor: &Executor,
    function: &Function,
    args: impl Fn(usize) -> Args,
) -> BoxResult<()> {
    for handle in executor.submit_batch(function, (0..200).map(args)) {
        handle.await?;
    }
    Ok(())
}

async fn w1(executor: &Executor, workload: &'static str, n: usize) -> BoxResult<Line> {
    let noop = Function::from_source(NOOP, "noop");
    warm(executor, &noop, |i| Args::new().arg(&i)).await?;
    let started = Instant::now();
    let handles = executor.submit_batch(&noop, (0..n as i64).map(|i| (i,)));
    for (i, handle) in handles.into_iter().enumerate() {
        let value: i64 = handle.result().await?;
        if value != i as i64 {
            return Err(format!("{workload}: noop({i}) returned {value}").into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Line {
        workload,
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        ..Line::default()
    })
}

async fn w2(executor: &Executor, workload: &'static str, n: usize) -> BoxResult<Line> {
    let noop = Function::from_source(NOOP, "noop");
    warm(executor, &noop, |i| Args::new().arg(&i)).await?;
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n as i64 {
        let sent = Instant::now();
        let value: i64 = executor.submit(&noop, (i,)).result().await?;
        samples.push(sent.elapsed().as_secs_f64() * 1e3);
        if value != i {
            return Err(format!("{workload}: noop({i}) returned {value}").into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    samples.sort_by(f64::total_cmp);
    Ok(Line {
        workload,
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        p50_ms: Some(percentile(&samples, 0.5)),
        p99_ms: Some(percentile(&samples, 0.99)),
        ..Line::default()
    })
}

/// `len` bytes from a xorshift generator: random enough that nothing compresses them, no
/// run of them repeats, and no dependency for it.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// 1 MiB of [`random_bytes`].
fn random_mib() -> Vec<u8> {
    random_bytes(1 << 20)
}

async fn w3(executor: &Executor, workload: &'static str, n: usize) -> BoxResult<Line> {
    let echo = Function::from_source(ECHO, "echo");
    let data = random_mib();
    let argument = Payload::pickle(&ByteBuf::from(data.clone()))?;
    warm(executor, &echo, |_| Args::new().payload(argument.clone())).await?;
    let started = Instant::now();
    let handles = executor.submit_batch(&echo, (0..n).map(|_| argument.clone()));
    for handle in handles {
        let back: ByteBuf = handle.result().await?;
        if back.as_slice() != data.as_slice() {
            return Err(format!("{workload}: echo returned different bytes").into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Line {
        workload,
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        mib_per_s_both_ways: Some(2.0 * n as f64 / seconds),
        ..Line::default()
    })
}

async fn w4(executor: &Executor, workers: usize, n: usize) -> BoxResult<Line> {
    let spin = Function::from_source(SPIN, "spin");
    // Calibrate the loop to about 10 ms, then measure one call alone, sequentially.
    let mut iterations = 100_000_i64;
    loop {
        let started = Instant::now();
        executor.submit(&spin, (iterations,)).await?;
        let took = started.elapsed();
        if took >= Duration::from_millis(5) {
            iterations = (iterations as f64 * 0.010 / took.as_secs_f64()) as i64;
            break;
        }
        iterations *= 4;
    }
    let expected: i64 = iterations * (iterations - 1) / 2;
    let mut singles = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let value: i64 = executor.submit(&spin, (iterations,)).result().await?;
        singles.push(started.elapsed().as_secs_f64());
        if value != expected {
            return Err(format!("W4: spin returned {value}, expected {expected}").into());
        }
    }
    singles.sort_by(f64::total_cmp);
    let single = percentile(&singles, 0.5);
    let started = Instant::now();
    for handle in executor.submit_batch(&spin, (0..n).map(|_| (iterations,))) {
        let value: i64 = handle.result().await?;
        if value != expected {
            return Err(format!("W4: spin returned {value}, expected {expected}").into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Line {
        workload: "W4",
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        efficiency: Some((n as f64 * single / workers as f64) / seconds),
        ..Line::default()
    })
}

/// Tasks per `submit_batch` call in `scale`.
const SCALE_BATCH: usize = 50_000;
/// Batches submitted and not yet fully awaited in `scale`, at most.
const SCALE_BATCHES_IN_FLIGHT: usize = 4;
/// One task in this many has its latency sampled in `scale`.
const SCALE_SAMPLE_EVERY: usize = 100;

/// A line of /proc/self/status or /proc/self/limits, by its label.
fn proc_field(file: &str, label: &str) -> BoxResult<String> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.trim().to_string())
        .ok_or_else(|| format!("no {label:?} in {file}").into())
}

/// The resident set size of this process, in KiB.
fn rss_kib() -> BoxResult<f64> {
    let value = proc_field("/proc/self/status", "VmRSS:")?;
    let kib = value.trim_end_matches("kB").trim();
    Ok(kib.parse()?)
}

/// How many file descriptors this process has open.
fn open_fds() -> BoxResult<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

/// CPU time used so far by every thread of this process, in seconds (the first field of
/// each thread's /proc schedstat, in nanoseconds).
fn cpu_seconds() -> BoxResult<f64> {
    let mut total = 0_u64;
    for thread in std::fs::read_dir("/proc/self/task")? {
        let path = thread?.path().join("schedstat");
        // A thread may have exited since the directory was read.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total as f64 / 1e9)
}

/// The soft limit on open files, if there is one.
fn fd_soft_limit() -> Option<usize> {
    let value = proc_field("/proc/self/limits", "Max open files").ok()?;
    value.split_whitespace().next()?.parse().ok()
}

/// Awaits one batch of `scale` whose first task got argument `first`, checks every result
/// and returns the latencies (ms) of the sampled tasks.
async fn await_scale_batch(
    handles: Vec<funcx::TaskHandle>,
    first: usize,
) -> Result<Vec<f64>, String> {
    let mut samples = Vec::with_capacity(handles.len() / SCALE_SAMPLE_EVERY + 1);
    for (offset, handle) in handles.into_iter().enumerate() {
        let i = first + offset;
        let report = handle.report().await;
        let payload = report
            .result
            .map_err(|error| format!("scale: task {i} failed: {error}"))?;
        let value: i64 = payload
            .decode()
            .map_err(|error| format!("scale: task {i}: {error}"))?;
        if value != i as i64 {
            return Err(format!("scale: noop({i}) returned {value}"));
        }
        if i % SCALE_SAMPLE_EVERY == 0 {
            let timeline = report.status.timeline;
            let finished = timeline.finished.unwrap_or_else(SystemTime::now);
            let latency = finished
                .duration_since(timeline.submitted)
                .unwrap_or_default();
            samples.push(latency.as_secs_f64() * 1e3);
        }
    }
    Ok(samples)
}

/// Submits tasks `range` in batches, at most [`SCALE_BATCHES_IN_FLIGHT`] unfinished, and
/// returns the sampled latencies.
async fn run_scale_tasks(
    executor: &Executor,
    function: &Function,
    range: std::ops::Range<usize>,
) -> BoxResult<Vec<f64>> {
    let mut pending = JoinSet::new();
    let mut samples = Vec::new();
    let mut first = range.start;
    while first < range.end || !pending.is_empty() {
        if first < range.end && pending.len() < SCALE_BATCHES_IN_FLIGHT {
            let last = (first + SCALE_BATCH).min(range.end);
            let handles =
                executor.submit_batch(function, (first as i64..last as i64).map(|i| (i,)));
            pending.spawn(await_scale_batch(handles, first));
            first = last;
            continue;
        }
        if let Some(done) = pending.join_next().await {
            samples.extend(done??);
        }
    }
    Ok(samples)
}

async fn scale(managers: usize, slots: usize, n: usize) -> BoxResult<Line> {
    let needed = 2 * managers + 100;
    if let Some(limit) = fd_soft_limit() {
        if limit < needed {
            return Err(format!(
                "scale: {managers} in-process managers need about {needed} file descriptors \
                 (two per connection), but the soft limit is {limit}; raise it first, e.g. \
                 `ulimit -n {}`",
                needed.next_power_of_two().max(8192)
            )
            .into());
        }
    }
    let (executor, address) = listen().await?;
    let rss_before = rss_kib()?;
    let fds_before = open_fds()?;

    let transport = TcpTransport::builder().token(TOKEN).build();
    let connecting = Instant::now();
    let handles = (0..managers)
        .map(|i| {
            let mut config = ManagerConfig::new(ManagerInfo {
                id: ManagerId(i as u64 + 1),
                block: Some("scale".into()),
                host: "localhost".into(),
                pid: std::process::id(),
                slots: u32::try_from(slots).unwrap_or(u32::MAX),
                gpus: Vec::new(),
                cores: None,
                memory: None,
                nodes: Vec::new(),
            });
            config.give_up_after = Duration::from_secs(60);
            tokio::spawn(run_manager(
                TcpDial::new(transport.clone(), address),
                EchoRunner::new(slots),
                config,
            ))
        })
        .collect();
    let endpoint = Endpoint {
        executor,
        managers: handles,
        behind: None,
    };
    endpoint
        .wait_for_managers(
            Duration::from_secs(120),
            "; if connections fail for lack of file descriptors, raise the limit \
             (`ulimit -n 8192`)",
        )
        .await?;
    let connect_s = connecting.elapsed().as_secs_f64();
    let rss_after = rss_kib()?;
    let fds_after = open_fds()?;
    let stats = endpoint.executor.stats().await;
    if stats.workers != managers * slots {
        return Err(format!(
            "scale: {} worker slots attached, expected {}",
            stats.workers,
            managers * slots
        )
        .into());
    }

    let noop = Function::from_source(NOOP, "noop");
    // Warm up: the function reaches the managers, buffers grow to their working size.
    run_scale_tasks(&endpoint.executor, &noop, 0..SCALE_BATCH.min(n)).await?;
    let cpu_before = cpu_seconds()?;
    let started = Instant::now();
    let mut samples = run_scale_tasks(&endpoint.executor, &noop, 0..n).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpus_busy = (cpu_seconds()? - cpu_before) / seconds;
    endpoint.close().await?;

    samples.sort_by(f64::total_cmp);
    let m = managers as f64;
    Ok(Line {
        workload: "scale",
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        p50_ms: Some(percentile(&samples, 0.5)),
        p99_ms: Some(percentile(&samples, 0.99)),
        extra: vec![
            ("managers", managers.to_string()),
            ("slots", slots.to_string()),
            ("connect_s", format!("{connect_s:.4}")),
            ("cpus_busy", format!("{cpus_busy:.2}")),
            ("rss_before_mib", format!("{:.2}", rss_before / 1024.0)),
            ("rss_after_mib", format!("{:.2}", rss_after / 1024.0)),
            (
                "endpoint_kib_per_manager",
                format!("{:.2}", (rss_after - rss_before) / m),
            ),
            (
                "fds_per_manager",
                format!(
                    "{:.4}",
                    fds_after.saturating_sub(fds_before) as f64 / 2.0 / m
                ),
            ),
        ],
        ..Line::default()
    })
}

/// Sleeps for `seconds`; the mix's name, in a comment, makes each mix a function of its
/// own, with nothing learned from another mix.
fn sleeper(mix: &str) -> Function {
    Function::from_source(
        format!("import time\n\ndef work(seconds):  # mix {mix}\n    time.sleep(seconds)\n    return seconds\n"),
        "work",
    )
}

/// Runs `durations` (seconds) on `function`, all submitted at once, and returns the makespan
/// over the ideal one on `workers` workers.
async fn makespan_ratio(
    executor: &Executor,
    function: &Function,
    durations: &[f64],
    workers: usize,
) -> BoxResult<f64> {
    let started = Instant::now();
    let handles = executor.submit_batch(function, durations.iter().map(|d| (*d,)));
    for (handle, expected) in handles.into_iter().zip(durations) {
        let value: f64 = handle.result().await?;
        if value != *expected {
            return Err(format!("W5: work({expected}) returned {value}").into());
        }
    }
    let makespan = started.elapsed().as_secs_f64();
    let longest = durations.iter().copied().fold(0.0, f64::max);
    let ideal = longest.max(durations.iter().sum::<f64>() / workers as f64);
    Ok(makespan / ideal)
}

/// `items` shuffled (Fisher–Yates) with a xorshift generator from a fixed seed.
fn shuffled<T>(mut items: Vec<T>, seed: u64) -> Vec<T> {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
    items
}

async fn w5(executor: &Executor, workers: usize) -> BoxResult<Line> {
    let started = Instant::now();
    // (a) Learned fast: one call with a tiny argument, then 8 long ones.
    let a = sleeper("a");
    let _: f64 = executor.submit(&a, (0.0,)).result().await?;
    let mix_a = vec![0.3; 8];
    // (b) One long task first, then many short ones.
    let mut mix_b = vec![0.5];
    mix_b.extend(vec![0.005; 200]);
    // (c) 10 % long and 90 % short, shuffled.
    let mut mix_c = vec![0.1; 40];
    mix_c.extend(vec![0.001; 360]);
    let mix_c = shuffled(mix_c, 0x9E37_79B9_7F4A_7C15);
    // (d) Growing durations, 1 to 40 ms.
    let mix_d: Vec<f64> = (0..200)
        .map(|i| (1.0 + 39.0 * i as f64 / 199.0) / 1e3)
        .collect();

    let mut ratios = Vec::new();
    for (name, durations) in [("a", &mix_a), ("b", &mix_b), ("c", &mix_c), ("d", &mix_d)] {
        let function = if name == "a" {
            a.clone()
        } else {
            sleeper(name)
        };
        let ratio = makespan_ratio(executor, &function, durations, workers).await?;
        ratios.push((name, ratio));
    }
    let worst = ratios.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    let mut extra: Vec<(&'static str, String)> = ratios
        .iter()
        .map(|(name, ratio)| (*name, format!("{ratio:.4}")))
        .collect();
    extra.push(("makespan_over_ideal", format!("{worst:.4}")));
    Ok(Line {
        workload: "W5",
        n: mix_a.len() + mix_b.len() + mix_c.len() + mix_d.len(),
        seconds: started.elapsed().as_secs_f64(),
        extra,
        ..Line::default()
    })
}

/// How long W6-tcp may take before it reports a failure instead of hanging.
const W6_LIMIT: Duration = Duration::from_secs(180);
/// The size of each argument and each result of W6-tcp.
const W6_MIB: usize = 16;
/// Returns its argument reversed, with its number, so that results cannot be swapped.
const FLIP: &str = "def flip(i, b):\n    return (i, b[::-1])\n";

/// A manager process: this executable, started as `manager`. Killed when dropped.
struct ManagerProcess(std::process::Child);

impl ManagerProcess {
    fn start(address: SocketAddr, workers: usize) -> BoxResult<ManagerProcess> {
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["manager", "--endpoint", &address.to_string()])
            .args(["--workers", &workers.to_string(), "--give-up-after", "10"])
            .env("FUNCX_TOKEN", TOKEN)
            // Its reconnections are worth seeing, its routine info lines are not.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(std::process::Stdio::null())
            .spawn()?;
        Ok(ManagerProcess(child))
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The peak resident set size of this process, in KiB.
fn hwm_kib() -> BoxResult<f64> {
    let value = proc_field("/proc/self/status", "VmHWM:")?;
    Ok(value.trim_end_matches("kB").trim().parse()?)
}

async fn w6_tcp(n: usize) -> BoxResult<Line> {
    let (executor, address) = listen().await?;
    let manager = ManagerProcess::start(address, 8)?;
    let started = Instant::now();
    while executor.stats().await.workers < 8 {
        if started.elapsed() > Duration::from_secs(60) {
            return Err("W6-tcp: the manager did not attach within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let flip = Function::from_source(FLIP, "flip");
    // Warm the workers (and the function) with small arguments.
    for handle in executor.submit_batch(
        &flip,
        (0..16_i64).map(|i| (i, ByteBuf::from(vec![1_u8; 64]))),
    ) {
        handle.await?;
    }
    let data = random_bytes(W6_MIB << 20);
    let reversed: Vec<u8> = data.iter().rev().copied().collect();
    let argument = Payload::pickle(&ByteBuf::from(data))?;
    // Measure the endpoint from here: its resident memory, and its peak from now on.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = rss_kib()?;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    let started = Instant::now();
    let run = async {
        let handles = executor.submit_batch(
            &flip,
            (0..n as i64).map(|i| Args::new().arg(&i).payload(argument.clone())),
        );
        for (i, handle) in handles.into_iter().enumerate() {
            let (number, back): (i64, ByteBuf) = handle.result().await?;
            if number != i as i64 || back.as_slice() != reversed.as_slice() {
                return Err(
                    format!("W6-tcp: task {i} returned wrong bytes (or task {number}'s)").into(),
                );
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        BoxResult::Ok(())
    };
    let outcome = tokio::time::timeout(W6_LIMIT, run).await;
    let seconds = started.elapsed().as_secs_f64();
    let peak = hwm_kib()?;
    let in_flight_mib = (n * 2 * W6_MIB) as f64;
    let growth_mib = (peak - rss_before).max(0.0) / 1024.0;
    let mut extra = vec![
        ("in_flight_mib", format!("{in_flight_mib:.0}")),
        ("rss_before_mib", format!("{:.1}", rss_before / 1024.0)),
        ("rss_growth_mib", format!("{growth_mib:.1}")),
        (
            "rss_growth_over_in_flight",
            format!("{:.3}", growth_mib / in_flight_mib),
        ),
    ];
    let mut line = Line {
        workload: "W6-tcp",
        n,
        seconds,
        ..Line::default()
    };
    match outcome {
        Ok(Ok(())) => {
            line.tasks_per_s = Some(n as f64 / seconds);
            line.mib_per_s_both_ways = Some(in_flight_mib / seconds);
            executor.shutdown().await;
        }
        Ok(Err(error)) => {
            extra.push(("error", format!("{:?}", error.to_string())));
            executor.shutdown_now().await;
        }
        Err(_) => {
            let done = received.load(std::sync::atomic::Ordering::Relaxed);
            extra.push((
                "error",
                format!("\"no progress: {done} of {n} results within {W6_LIMIT:?}\""),
            ));
            executor.shutdown_now().await;
        }
    }
    line.extra = extra;
    drop(manager);
    Ok(line)
}

// ---- gw-restart --------------------------------------------------------------------------

/// The store `[store] postgres` of a benchmark's gateways: `url`, in a schema of
/// `name` and this process's id, emptied first.
#[cfg(feature = "postgres")]
async fn postgres_store(url: &str, name: &str) -> BoxResult<funcx_gateway::StoreConfig> {
    let schema = format!("{name}_{}", std::process::id());
    let options = funcx_gateway::store::PgOptions::new(url).schema(schema.clone());
    funcx_gateway::store::PgStore::drop_schema(&options).await?;
    Ok(funcx_gateway::StoreConfig::Postgres(
        funcx_gateway::PostgresConfig {
            url: url.to_owned(),
            schema: Some(schema),
            pool_size: 16,
            lease_secs: 2,
        },
    ))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_store(_: &str, _: &str) -> BoxResult<funcx_gateway::StoreConfig> {
    Err("the PostgreSQL workloads need `--features postgres` (cargo bench -p funcx-benches --features postgres --bench e2e -- ...)".into())
}

/// The PostgreSQL workloads (`W1-gw-pg2`, `failover-pg`).
#[cfg(feature = "postgres")]
#[path = "e2e_pg.rs"]
mod pg;

/// Without the `postgres` feature, the PostgreSQL workloads say how to build them.
#[cfg(not(feature = "postgres"))]
mod pg {
    use super::{postgres_store, BoxResult, Line};

    pub(super) async fn w1_pg2(_: usize, url: &str, _: usize) -> BoxResult<Line> {
        postgres_store(url, "").await.map(|_| Line::default())
    }

    pub(super) async fn failover(_: usize, url: &str, _: usize) -> BoxResult<Line> {
        postgres_store(url, "").await.map(|_| Line::default())
    }
}

const MARK: &str = r#"
import os, time

def mark(i, directory):
    with open(os.path.join(directory, f"{i}.run"), "a") as f:
        f.write("x")
    time.sleep(0.002)
    return i * 2
"#;

/// `gw-restart`: n tasks through a gateway process that is killed `kills` times.
async fn gw_restart(workers: usize, n: usize, kills: usize) -> BoxResult<Line> {
    let dir = std::env::temp_dir().join(format!("funcx-bench-gw-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks)?;
    let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\nstore = \"{}\"\n\n[[users]]\nname = \"bench\"\ntoken = \"{TOKEN}-0123456789\"\n",
            dir.join("gateway.redb").display()
        ),
    )?;
    let token = format!("{TOKEN}-0123456789");
    let mut gateway = Some(GatewayChild::start(None, &config, address)?);
    let registered: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{address}/v1/endpoints"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "name": "gw-restart" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = registered["endpoint_id"]
        .as_str()
        .ok_or("no endpoint id")?
        .to_owned();
    let endpoint_token = registered["endpoint_token"]
        .as_str()
        .ok_or("no token")?
        .to_owned();
    let local = Executor::builder()
        .workers(workers)
        .start(PythonRuntime::new(PythonConfig::new()));
    let mut manager_config = ManagerConfig::new(ManagerInfo {
        id: ManagerId(u64::from(std::process::id()) << 20 | 0xbe),
        block: None,
        host: "localhost".into(),
        pid: std::process::id(),
        slots: workers as u32,
        gpus: vec![],
        cores: None,
        memory: None,
        nodes: Vec::new(),
    });
    manager_config.max_backoff = Duration::from_millis(100);
    let manager = tokio::spawn(run_manager(
        EndpointDial::new(address.to_string(), id.clone(), endpoint_token),
        ExecutorRunner::new(local.clone(), workers),
        manager_config,
    ));
    let executor = RemoteConfig::new(&format!("http://{address}"), &token, &id)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .give_up_after(Duration::from_secs(120))
        .connect()
        .await?;
    let mark = Function::from_source(MARK, "mark");
    let directory = marks.display().to_string();

    let started = Instant::now();
    // Batches of 100 every 20 ms, so that kills land around submissions.
    let submitter = {
        let executor = executor.clone();
        let mark = mark.clone();
        let directory = directory.clone();
        tokio::spawn(async move {
            let mut handles = Vec::with_capacity(n);
            let mut next = 0;
            while next < n {
                let end = (next + 100).min(n);
                handles.extend(executor.submit_batch(
                    &mark,
                    (next as i64..end as i64).map(|i| (i, directory.clone())),
                ));
                next = end;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            handles
        })
    };
    let mut rng = Xorshift(0x6177_2d72_6573_7461);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
        drop(gateway.take());
        gateway = Some(GatewayChild::start(None, &config, address)?);
    }
    let handles = submitter.await?;
    let mut lost = 0usize;
    for (i, handle) in handles.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(300), handle.result::<i64>()).await {
            Ok(Ok(value)) if value == 2 * i as i64 => {}
            _ => lost += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    executor.shutdown().await;
    manager.abort();
    local.shutdown().await;

    // Executions, counted by the function: one byte per run.
    let mut executions_over_1 = 0usize;
    for entry in std::fs::read_dir(&marks)?.flatten() {
        if entry.metadata()?.len() > 1 {
            executions_over_1 += 1;
        }
    }
    // Records, read back from the store once the last gateway stopped.
    if let Some(child) = gateway.take() {
        child.stop(Duration::from_secs(20));
    }
    let stored = chaos::stored_per_task(&dir.join("gateway.redb")).await?;
    let stored_twice = stored.values().filter(|count| **count > 1).count();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Line {
        workload: "gw-restart",
        n,
        seconds,
        tasks_per_s: Some(n as f64 / seconds),
        extra: vec![
            ("tasks", n.to_string()),
            ("gateway_kills", kills.to_string()),
            ("executions_over_1", executions_over_1.to_string()),
            ("stored_twice", stored_twice.to_string()),
            ("lost", lost.to_string()),
        ],
        ..Line::default()
    })
}

/// Runs `measure` on a fresh endpoint from `endpoint`, then closes the endpoint.
async fn on<F, Fut>(endpoint: BoxResult<Endpoint>, measure: F) -> BoxResult<Line>
where
    F: FnOnce(Executor) -> Fut,
    Fut: std::future::Future<Output = BoxResult<Line>>,
{
    let endpoint = endpoint?;
    let line = measure(endpoint.executor.clone()).await?;
    endpoint.close().await?;
    Ok(line)
}

fn main() -> BoxResult<()> {
    // gw-restart starts this executable again as its gateway process.
    if let Ok(config) = std::env::var(GATEWAY_PROCESS) {
        return chaos::run_gateway_process(&config);
    }
    // chaos starts this executable again as its endpoint process.
    if let Ok(spec) = std::env::var(ENDPOINT_PROCESS) {
        return chaos::run_endpoint_process(&spec);
    }
    // W6-tcp starts this executable again as its manager process.
    if let Some(status) = manager::run_if_manager() {
        return if status == std::process::ExitCode::SUCCESS {
            Ok(())
        } else {
            Err(format!("the manager process exited with {status:?}").into())
        };
    }
    let options = parse_options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for workload in &options.workloads {
            let workers = options.workers;
            let n = options.n;
            let line = match workload.as_str() {
                "startup" => startup(workers, n.unwrap_or(10)).await?,
                "W1" => {
                    on(Endpoint::local(workers).await, |e| async move {
                        w1(&e, "W1", n.unwrap_or(20_000)).await
                    })
                    .await?
                }
                "W2" => {
                    on(Endpoint::local(workers).await, |e| async move {
                        w2(&e, "W2", n.unwrap_or(2_000)).await
                    })
                    .await?
                }
                "W3" => {
                    on(Endpoint::local(workers).await, |e| async move {
                        w3(&e, "W3", n.unwrap_or(2_000)).await
                    })
                    .await?
                }
                "W4" => {
                    on(Endpoint::local(workers).await, |e| async move {
                        w4(&e, workers, n.unwrap_or(200)).await
                    })
                    .await?
                }
                "W1-tcp" => {
                    on(Endpoint::tcp(workers).await, |e| async move {
                        w1(&e, "W1-tcp", n.unwrap_or(20_000)).await
                    })
                    .await?
                }
                "W2-tcp" => {
                    on(Endpoint::tcp(workers).await, |e| async move {
                        w2(&e, "W2-tcp", n.unwrap_or(2_000)).await
                    })
                    .await?
                }
                "W3-tcp" => {
                    on(Endpoint::tcp(workers).await, |e| async move {
                        w3(&e, "W3-tcp", n.unwrap_or(2_000)).await
                    })
                    .await?
                }
                "chaos" => {
                    let report = chaos::chaos(chaos::ChaosOptions {
                        n: n.unwrap_or(100_000),
                        seed: options.seed,
                        managers: options.managers.unwrap_or(3),
                        workers,
                        pace: Duration::from_millis(options.pace_ms),
                        grace: Duration::from_secs(120),
                        gateway_program: options.gateway_bin.clone(),
                        without: options.without.clone(),
                    })
                    .await
                    ?;
                    let line = Line {
                        workload: "chaos",
                        n: report.tasks,
                        seconds: report.seconds,
                        tasks_per_s: Some(report.tasks as f64 / report.seconds),
                        extra: report.fields(),
                        ..Line::default()
                    };
                    line.print();
                    if !report.clean() {
                        return Err("chaos: tasks lost, duplicated, hung or wrong".into());
                    }
                    continue;
                }
                "gw-restart" => gw_restart(workers, n.unwrap_or(2_000), options.kills).await?,
                "W1-gw-pg2" => pg::w1_pg2(workers, options.pg_url(), n.unwrap_or(20_000)).await?,
                "failover-pg" => {
                    pg::failover(workers, options.pg_url(), n.unwrap_or(10_000)).await?
                }
                "W1-gw" => {
                    on(
                        Endpoint::gateway(workers, options.store.clone(), options.pg.as_deref())
                            .await,
                        |e| async move { w1(&e, "W1-gw", n.unwrap_or(20_000)).await },
                    )
                    .await?
                }
                "W2-gw" => {
                    on(
                        Endpoint::gateway(workers, options.store.clone(), options.pg.as_deref())
                            .await,
                        |e| async move { w2(&e, "W2-gw", n.unwrap_or(2_000)).await },
                    )
                    .await?
                }
                "W3-gw" => {
                    on(
                        Endpoint::gateway(workers, options.store.clone(), options.pg.as_deref())
                            .await,
                        |e| async move { w3(&e, "W3-gw", n.unwrap_or(2_000)).await },
                    )
                    .await?
                }
                "W5" => {
                    on(Endpoint::local(workers).await, |e| async move {
                        w5(&e, workers).await
                    })
                    .await?
                }
                "W6-tcp" => {
                    let line = w6_tcp(n.unwrap_or(64)).await?;
                    line.print();
                    if line.extra.iter().any(|(name, _)| *name == "error") {
                        return Err("W6-tcp failed".into());
                    }
                    continue;
                }
                "scale" => scale(
                    options.managers.unwrap_or(1024),
                    options.slots, n.unwrap_or(1_000_000)).await?,
                other => {
                    return Err(format!(
                        "unknown workload {other}; expected startup, W1, W2, W3, W4, W1-tcp, \
                         W2-tcp, W3-tcp, W1-gw, W2-gw, W3-gw, gw-restart, chaos, W5, W6-tcp, scale or all"
                    )
                    .into())
                }
            };
            line.print();
        }
        Ok(())
    })
}
