//! A Slurm-backed `funcx-endpoint` seen from outside: the cluster's presence, the endpoint's
//! status, the queue, and the gateway's HTTP API, each wait bounded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::processes::{run, text, ALICE};
use super::{within, HANG};

/// Slurm starts a job within seconds here; this bounds a broken cluster, not a slow one.
pub const SLURM: Duration = Duration::from_secs(90);

/// Fails the test, saying how to set Slurm up, when its commands are not here: a missing
/// cluster is a failure, not a skip.
pub fn require_slurm() {
    let found = Command::new("sbatch")
        .arg("--version")
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "Slurm is not running here: run bash scripts/infra/slurm-up.sh (scripts/test does)"
    );
}

/// What `funcx-endpoint status NAME --json` says of endpoint `name` in `home`.
pub fn status(home: &Path, name: &str) -> serde_json::Value {
    let output = run(home, &["status", name, "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).expect("status JSON")
}

/// The Slurm jobs still in the queue among `jobs` (pending, running, completing).
pub fn queued_jobs(jobs: &[String]) -> Vec<String> {
    let output = Command::new("squeue")
        .args(["-h", "-o", "%i %T"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            jobs.iter()
                .any(|job| line.split_whitespace().next() == Some(job))
        })
        .map(String::from)
        .collect()
}

/// One request to the gateway as `alice` (an admin), bounded by [`HANG`]: the answer's
/// status and JSON body (`null` when it has none).
pub async fn call(
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(ALICE);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = within(HANG, request.send()).await.expect("HTTP");
    let status = response.status();
    let value = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, value)
}

/// Waits (bounded) until `check` holds on the endpoint's status, which the endpoint writes
/// every so often (so it may lag what just happened); returns that status.
pub fn wait_status(
    home: &Path,
    name: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + SLURM;
    loop {
        let status = status(home, name);
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "not {what} within {SLURM:?}: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Registers endpoint `name` at the gateway at `url` and makes it a Slurm endpoint in `home`
/// with `funcx-endpoint configure`, then edits the file as an admin would (quick scaling
/// looks, two workers per node, 1 GB of memory per job so that memory never keeps a block
/// waiting, a walltime), and then with `edit`. Returns the endpoint's id at the gateway.
pub async fn configure_slurm(
    home: &Path,
    url: &str,
    name: &str,
    edit: impl FnOnce(String) -> String,
) -> String {
    let (status_code, registered) = call(
        reqwest::Method::POST,
        &format!("{url}/v1/endpoints"),
        Some(serde_json::json!({ "name": name })),
    )
    .await;
    assert_eq!(status_code, reqwest::StatusCode::CREATED, "{registered}");
    let field = |key: &str| {
        registered[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {registered}"))
            .to_string()
    };
    let (id, token) = (field("endpoint_id"), field("endpoint_token"));
    let output = run(
        home,
        &[
            "configure",
            name,
            "--provider",
            "slurm",
            "--gateway",
            url,
            "--endpoint-id",
            &id,
            "--token",
            &token,
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let path = home.join("endpoints").join(name).join("config.toml");
    let config = std::fs::read_to_string(&path).expect("the configured file");
    let config = config
        .replace("# period_secs = 5 ", "period_secs = 0.2 ")
        .replace("workers_per_node = 1", "workers_per_node = 2")
        .replace("# mem = \"16G\"", "mem = \"1G\"")
        .replace("# walltime_secs = 3600", "walltime_secs = 600");
    std::fs::write(&path, edit(config)).expect("write the file");
    id
}

/// An endpoint started with `funcx-endpoint start NAME --detach`, stopped when dropped, so
/// that a failing test leaves neither the endpoint process nor its Slurm jobs behind (they
/// would hold the cluster's CPUs and keep the next test's blocks pending).
pub struct DetachedEndpoint {
    home: PathBuf,
    name: String,
}

impl DetachedEndpoint {
    /// Starts endpoint `name` of `home`; returns once it is connected to its gateway.
    pub fn start(home: &Path, name: &str) -> DetachedEndpoint {
        let output = run(home, &["start", name, "--detach"]);
        assert!(output.status.success(), "{}", text(&output));
        DetachedEndpoint {
            home: home.to_path_buf(),
            name: name.to_owned(),
        }
    }
}

impl Drop for DetachedEndpoint {
    fn drop(&mut self) {
        // Stopping a stopped endpoint is harmless; its answer does not matter here.
        let _ = run(&self.home, &["stop", &self.name]);
    }
}
