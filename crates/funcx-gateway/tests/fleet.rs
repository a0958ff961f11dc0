//! Several `funcx-gateway` processes on one PostgreSQL database (feature `postgres`; the
//! database of `scripts/infra/postgres-up.sh`, or `FUNCX_TEST_PG`): a task submitted at one
//! gateway runs on an endpoint connected to another, and its result reaches the client
//! streaming from the first.
#![cfg(feature = "postgres")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::process::{
    endpoint_status, free_port, python_endpoint, register_endpoint, results_within, temp_dir,
    GatewayProcess,
};
use common::ALICE;
use funcx_client::RemoteConfig;
use funcx_core::Function;
use funcx_gateway::store::{PgOptions, PgStore};

fn database() -> String {
    std::env::var("FUNCX_TEST_PG")
        .unwrap_or_else(|_| "postgres://funcx:funcx@127.0.0.1:5432/funcx".into())
}

/// A schema of this test's own, emptied: tests run in parallel on one database.
async fn fresh_schema(name: &str) -> String {
    let schema = format!("fleet_{name}_{}", std::process::id());
    PgStore::drop_schema(&PgOptions::new(database()).schema(schema.clone()))
        .await
        .expect("the test PostgreSQL (scripts/infra/postgres-up.sh) accepts connections");
    schema
}

/// Writes the config of a gateway on `address` sharing `schema`, and starts it.
fn gateway(dir: &Path, name: &str, address: SocketAddr, schema: &str) -> GatewayProcess {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\n\n[store]\npostgres = \"{}\"\nschema = \"{schema}\"\nlease_secs = 2\n\n[[users]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n",
            database()
        ),
    )
    .expect("write config");
    GatewayProcess::start(&config, address, &dir.join(format!("{name}.log")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_submitted_at_one_gateway_runs_through_another_and_its_result_comes_back() {
    let dir = temp_dir("fleet-route");
    let schema = fresh_schema("route").await;
    let (a, b) = (free_port(), free_port());
    let gateway_a = gateway(&dir, "a", a, &schema);
    let gateway_b = gateway(&dir, "b", b, &schema);

    // Registered at B, connected to A: only A can hand its tasks out.
    let (endpoint, endpoint_token) = register_endpoint(b, ALICE, "at-a").await;
    let manager = common::connect(a, &endpoint, &endpoint_token);

    let executor = RemoteConfig::new(&format!("http://{b}"), ALICE, &endpoint)
        .give_up_after(Duration::from_secs(30))
        .connect()
        .await
        .expect("the client connects to B");
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let n = 500_i64;
    let handles = executor.submit_batch(&echo, (0..n).map(|i| (i,)));
    let values = results_within(handles, Duration::from_secs(60), "through A").await;
    assert_eq!(values, (0..n).collect::<Vec<_>>());

    // A ran them: B has no connection of the endpoint's.
    assert_eq!(
        endpoint_status(a, ALICE, &endpoint).await["connected"],
        true
    );
    assert_eq!(
        endpoint_status(b, ALICE, &endpoint).await["connected"],
        false
    );

    executor.shutdown().await;
    manager.abort();
    drop((gateway_a, gateway_b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway hears what the others finish only while it listens on the database. When its
/// listening connection is cut it listens again, and since results may have been stored in
/// between, its result streams say `lagged`: their clients read what they wait for by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_that_listens_again_tells_its_result_streams_to_read_by_id() {
    let dir = temp_dir("fleet-relisten");
    let schema = fresh_schema("relisten").await;
    let address = free_port();
    let gateway = gateway(&dir, "a", address, &schema);
    let mut stream = reqwest::Client::new()
        .get(format!("http://{address}/v1/results"))
        .bearer_auth(ALICE)
        .send()
        .await
        .expect("the result stream opens");
    assert!(stream.status().is_success(), "{}", stream.status());

    // The gateway listens before it serves (see the first test): its listener is there.
    let (client, connection) = tokio_postgres::connect(&database(), tokio_postgres::NoTls)
        .await
        .expect("the test database");
    tokio::spawn(connection);
    let cut = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1",
            &[&format!("LISTEN funcx_tasks_{schema};%")],
        )
        .await
        .expect("cut the listener");
    assert_eq!(cut.len(), 1, "one listening connection");

    let mut text = String::new();
    let lagged = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = stream.chunk().await.expect("the stream stays up") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: lagged") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(lagged, Ok(true), "a lagged event after the cut: {text:?}");
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

const WORK: &str = r#"
import time

def work(i):
    time.sleep(0.001)
    return i * 2
"#;

/// Submits `n` tasks of [`WORK`] through `executor`, calls `kill` once results flow (so that
/// it lands mid-run), and checks that every result arrives, right, and that each task is
/// stored once and finished: nothing created twice by a resend, nothing left unfinished.
async fn run_across_a_kill<T>(
    executor: &funcx_core::Executor,
    schema: &str,
    n: i64,
    kill: impl FnOnce() -> T,
) -> T {
    let work = Function::from_source(WORK, "work");
    let mut handles = executor.submit_batch(&work, (0..n).map(|i| (i,)));
    let mut values = results_within(
        handles.drain(..200),
        Duration::from_secs(60),
        "before the kill",
    )
    .await;
    let after = kill();
    values.extend(results_within(handles, Duration::from_secs(120), "after the kill").await);
    assert_eq!(values, (0..n).map(|i| i * 2).collect::<Vec<_>>());
    let (records, distinct, finished) = stored(schema, "alice").await;
    let n = n as usize;
    assert_eq!((records, distinct, finished), (n, n, n));
    after
}

/// Every task of `user` in the shared store, counted by id: (tasks, distinct ids, finished).
async fn stored(schema: &str, user: &str) -> (usize, usize, usize) {
    stored_at(&database(), Some(schema), user).await
}

/// [`stored`] in the database `url`, in `schema` or the default one.
async fn stored_at(url: &str, schema: Option<&str>, user: &str) -> (usize, usize, usize) {
    use funcx_gateway::store::TaskStore;
    let mut options = PgOptions::new(url);
    options.schema = schema.map(str::to_owned);
    let store = PgStore::connect_with(options)
        .await
        .expect("open the shared store");
    let mut records = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .tasks_of(user, before, 1000)
            .await
            .expect("list tasks");
        records.extend(page.tasks);
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let mut ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let finished = records.iter().filter(|r| r.result.is_some()).count();
    (records.len(), ids.len(), finished)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_mid_run_its_endpoint_and_client_move_on_and_every_result_arrives_once() {
    use funcx_client::EndpointDial;

    let dir = temp_dir("fleet-failover");
    let schema = fresh_schema("failover").await;
    let (a, b, c) = (free_port(), free_port(), free_port());
    let gateway_a = gateway(&dir, "a", a, &schema);
    let gateway_b = gateway(&dir, "b", b, &schema);
    let gateway_c = gateway(&dir, "c", c, &schema);
    let (endpoint, endpoint_token) = register_endpoint(a, ALICE, "moves").await;

    // The endpoint dials A first, then B, then C; so does the client.
    let dial = EndpointDial::new(a.to_string(), endpoint.clone(), endpoint_token)
        .failover(b.to_string())
        .failover(c.to_string());
    let manager = python_endpoint(dial, 11, Duration::from_millis(200));
    let executor = RemoteConfig::new(&format!("http://{a}"), ALICE, &endpoint)
        .failover(&format!("http://{b}"))
        .failover(&format!("http://{c}"))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(60))
        .connect()
        .await
        .expect("the client connects to A");
    let started = std::time::Instant::now();
    run_across_a_kill(&executor, &schema, 10_000, || gateway_a.sigkill()).await;
    let elapsed = started.elapsed();
    // The endpoint moved to B (the next in its list), not to C.
    assert_eq!(
        endpoint_status(b, ALICE, &endpoint).await["connected"],
        true
    );
    assert_eq!(
        endpoint_status(c, ALICE, &endpoint).await["connected"],
        false
    );
    eprintln!("10,000 tasks across the kill in {elapsed:?}");

    executor.shutdown().await;
    manager.abort();
    drop((gateway_b, gateway_c));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PostgreSQL server of one test's own (Debian's binaries, `initdb` into a temporary
/// directory, on a free loopback port), so that restarting it disturbs no other test.
/// Stopped when dropped.
struct PrivateDatabase {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
}

impl PrivateDatabase {
    fn start(dir: &Path) -> PrivateDatabase {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries (scripts/infra/postgres-up.sh installs them)")
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL version under /usr/lib/postgresql");
        let data = dir.join("pgdata");
        let port = free_port().port();
        let database = PrivateDatabase { bin, data, port };
        // PostgreSQL refuses to run as root: as root, the directory and the server are the
        // postgres user's.
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown the database directory");
        }
        database.run("initdb", &["-A", "trust", "-U", "funcx", "-D"], true);
        database.pg_ctl("start");
        database
    }

    fn url(&self) -> String {
        format!("postgres://funcx@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.data
                .parent()
                .map_or(String::new(), |d| d.display().to_string())
        );
        // `-l`: the server's output goes to a file, not to pipes that would outlive pg_ctl.
        let log = self.data.with_file_name("postgres.log");
        let log = log.display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-w", "-t", "60", "-l", &log, "-m", "fast", "-o", &options, action, "-D",
            ],
            true,
        );
    }

    /// Runs `program args... <data dir>` (as postgres when root).
    fn run(&self, program: &str, args: &[&str], must: bool) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            std::process::Command::new(&path)
        };
        let status = command
            .args(args)
            .arg(&self.data)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run a PostgreSQL program");
        if must {
            assert!(status.success(), "{program} {args:?}: {status}");
        }
    }
}

impl Drop for PrivateDatabase {
    fn drop(&mut self) {
        self.run("pg_ctl", &["-w", "-m", "immediate", "stop", "-D"], false);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_mid_run_loses_no_accepted_task() {
    let dir = temp_dir("fleet-pg-restart");
    let database = PrivateDatabase::start(&dir);
    let address = free_port();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\n\n[store]\npostgres = \"{}\"\nlease_secs = 2\n\n[[users]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n",
            database.url()
        ),
    )
    .expect("write config");
    let gateway = GatewayProcess::start(&config, address, &dir.join("gateway.log"));
    let (endpoint, endpoint_token) = register_endpoint(address, ALICE, "steady").await;
    let manager = common::connect(address, &endpoint, &endpoint_token);
    let executor = RemoteConfig::new(&format!("http://{address}"), ALICE, &endpoint)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(60))
        .connect()
        .await
        .expect("the client connects");
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");

    // Accepted for an endpoint that is not connected yet: they wait in the database.
    let (late, late_token) = register_endpoint(address, ALICE, "late").await;
    let waiting_executor = RemoteConfig::new(&format!("http://{address}"), ALICE, &late)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(60))
        .connect()
        .await
        .expect("the client connects");
    let waiting = waiting_executor.submit_batch(&echo, (1000..1100_i64).map(|i| (i,)));

    let before = executor.submit_batch(&echo, (0..300_i64).map(|i| (i,)));
    let mut values = results_within(before, Duration::from_secs(60), "before the restart").await;
    database.pg_ctl("restart");
    // Submitted right after the restart: the gateway's connections were cut under it.
    let after = executor.submit_batch(&echo, (300..600_i64).map(|i| (i,)));
    values.extend(results_within(after, Duration::from_secs(90), "after the restart").await);
    assert_eq!(values, (0..600).collect::<Vec<_>>());
    // The tasks accepted before the restart run once their endpoint comes.
    let late_manager = common::connect(address, &late, &late_token);
    let late_values = results_within(waiting, Duration::from_secs(90), "accepted before").await;
    assert_eq!(late_values, (1000..1100).collect::<Vec<_>>());
    let (records, distinct, finished) = stored_at(&database.url(), None, "alice").await;
    assert_eq!((records, distinct, finished), (700, 700, 700));

    executor.shutdown().await;
    waiting_executor.shutdown().await;
    late_manager.abort();
    manager.abort();
    drop(gateway);
    drop(database);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sleeps for ten minutes once it has marked that it started.
const STUCK: &str = r#"
import time

def stuck(marker):
    open(marker, "w").close()
    time.sleep(600)
    return 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_cancelled_at_one_gateway_stops_running_through_another() {
    let dir = temp_dir("fleet-cancel");
    let schema = fresh_schema("cancel").await;
    let (a, b) = (free_port(), free_port());
    let gateway_a = gateway(&dir, "a", a, &schema);
    let gateway_b = gateway(&dir, "b", b, &schema);
    let (endpoint, endpoint_token) = register_endpoint(b, ALICE, "cancel-at-b").await;
    // Two Python workers, both about to be taken by a task that would hold them for ten
    // minutes.
    let dial = funcx_client::EndpointDial::new(a.to_string(), endpoint.clone(), endpoint_token);
    let manager = python_endpoint(dial, 12, Duration::from_millis(200));
    let executor = RemoteConfig::new(&format!("http://{b}"), ALICE, &endpoint)
        .give_up_after(Duration::from_secs(60))
        .connect()
        .await
        .expect("the client connects to B");

    let stuck = Function::from_source(STUCK, "stuck");
    let markers: Vec<String> = (0..2)
        .map(|i| dir.join(format!("started-{i}")).display().to_string())
        .collect();
    let handles = executor.submit_batch(&stuck, markers.iter().map(|m| (m.clone(),)));
    let started = async {
        while !markers.iter().all(|m| Path::new(m).exists()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), started)
        .await
        .expect("both tasks start on the endpoint behind A within 60 s");

    // Cancelled at B, which holds neither: B settles them, A must stop them.
    for handle in &handles {
        handle.cancel();
    }
    for handle in handles {
        let outcome = tokio::time::timeout(Duration::from_secs(30), handle.result::<i64>())
            .await
            .expect("a cancelled task resolves within 30 s");
        assert!(
            outcome.as_ref().is_err_and(|e| e.is_cancelled()),
            "{outcome:?}"
        );
    }
    // The workers are free again only if A cancelled what they ran: otherwise this task
    // waits ten minutes for one.
    let echo = Function::from_source("def echo(x):\n    return x\n", "echo");
    let after = executor.submit(&echo, (7_i64,));
    let value = tokio::time::timeout(Duration::from_secs(60), after.result::<i64>())
        .await
        .expect("a worker is free within 60 s of the cancel: A stopped the cancelled tasks")
        .expect("the task after the cancel runs");
    assert_eq!(value, 7);

    executor.shutdown().await;
    manager.abort();
    drop((gateway_a, gateway_b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_and_restarted_on_the_database_takes_its_endpoint_back_and_loses_nothing()
{
    use funcx_client::EndpointDial;

    let dir = temp_dir("fleet-restart");
    let schema = fresh_schema("restart").await;
    let (a, b) = (free_port(), free_port());
    let gateway_a = gateway(&dir, "a", a, &schema);
    let gateway_b = gateway(&dir, "b", b, &schema);
    let (endpoint, endpoint_token) = register_endpoint(a, ALICE, "comes-back").await;
    // The endpoint knows only A: its tasks wait in the database while A is down, and run
    // once A is back. The client streams from B, which stays up.
    let dial = EndpointDial::new(a.to_string(), endpoint.clone(), endpoint_token);
    let manager = python_endpoint(dial, 13, Duration::from_millis(200));
    let executor = RemoteConfig::new(&format!("http://{b}"), ALICE, &endpoint)
        .give_up_after(Duration::from_secs(60))
        .connect()
        .await
        .expect("the client connects to B");
    let gateway_a = run_across_a_kill(&executor, &schema, 5_000, || {
        gateway_a.sigkill();
        gateway(&dir, "a", a, &schema)
    })
    .await;
    assert_eq!(
        endpoint_status(a, ALICE, &endpoint).await["connected"],
        true
    );

    executor.shutdown().await;
    manager.abort();
    drop((gateway_a, gateway_b));
    let _ = std::fs::remove_dir_all(&dir);
}
