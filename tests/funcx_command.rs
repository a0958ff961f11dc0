//! The `funcx` command on real processes: a `funcx-gateway` process, an endpoint from
//! `funcx-endpoint configure` + `start --detach` (local blocks of real Python workers), and
//! `funcx` registering a `.py` file, submitting with JSON arguments, reading status and
//! results, listing tasks and endpoints, and stopping the endpoint; `--json` output parsed,
//! errors checked for their status, code and message.
#![cfg(all(unix, feature = "cli"))]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::proc::alive;
use common::processes::{configure_local, run, text, GatewayProcess, ALICE};
use common::{TempDir, HANG};
use serde_json::Value;

const FUNCX: &str = env!("CARGO_BIN_EXE_funcx");

/// Runs `funcx ARGS` with `FUNCX_HOME=home` and nothing of the caller's environment that
/// would choose a gateway.
fn funcx(home: &Path, args: &[&str]) -> Output {
    Command::new(FUNCX)
        .args(args)
        .env("FUNCX_HOME", home)
        .env_remove("FUNCX_GATEWAY")
        .env_remove("FUNCX_TOKEN")
        .env_remove("FUNCX_CA_FILE")
        .output()
        .expect("run funcx")
}

/// `funcx ARGS` that must succeed; its stdout.
fn ok(home: &Path, args: &[&str]) -> String {
    let output = funcx(home, args);
    assert!(output.status.success(), "funcx {args:?}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `funcx ARGS --json` that must succeed; its JSON.
fn json(home: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(home, &args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("funcx {args:?}: {e}: {stdout}"))
}

/// `funcx ARGS` that must fail with exit status `code`; its stdout and stderr.
fn fails(home: &Path, args: &[&str], code: i32) -> (String, String) {
    let output = funcx(home, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "funcx {args:?}: {}",
        text(&output)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const SCALE: &str = "import math\n\ndef scale(x, factor=2.0):\n    return {\"x\": x, \"scaled\": x * factor, \"floor\": math.floor(x * factor)}\n";
const TOOLS: &str = "import time\n\ndef helper():\n    return 0\n\ndef invert(x):\n    return 1 / x\n\ndef nap(seconds):\n    time.sleep(seconds)\n    return [seconds, None, 'done']\n";

#[test]
fn register_submit_status_result_and_lists_through_a_gateway_process() {
    let dir = TempDir::new("funcx-command");
    let home = dir.0.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let gateway = GatewayProcess::start(&dir.0);
    let url = gateway.url.as_str();
    let flags = ["--gateway", url, "--token", ALICE];
    let with = |args: &[&str]| -> Vec<String> {
        flags.iter().chain(args).map(|s| s.to_string()).collect()
    };
    let call = |args: &[&str]| {
        ok(
            &home,
            &with(args).iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let call_json = |args: &[&str]| {
        json(
            &home,
            &with(args).iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let call_fails = |args: &[&str], code| {
        fails(
            &home,
            &with(args).iter().map(String::as_str).collect::<Vec<_>>(),
            code,
        )
    };

    // An endpoint registered with funcx, run by funcx-endpoint.
    let registered = call_json(&["endpoints", "register", "cluster"]);
    let endpoint = registered["endpoint_id"]
        .as_str()
        .expect("an id")
        .to_string();
    let endpoint_token = registered["endpoint_token"].as_str().expect("a token");
    configure_local(&home, "cluster", url, &endpoint, endpoint_token);
    let output = run(&home, &["start", "cluster", "--detach"]);
    assert!(output.status.success(), "{}", text(&output));

    // Register from .py files: the only function, or the one named with --name.
    let scale_py = dir.0.join("scale.py");
    std::fs::write(&scale_py, SCALE).unwrap();
    let scale = call(&["register", scale_py.to_str().unwrap()])
        .trim()
        .to_string();
    assert!(
        scale.len() == 64 && scale.chars().all(|c| c.is_ascii_hexdigit()),
        "the id alone: {scale:?}"
    );
    let again = call_json(&["register", scale_py.to_str().unwrap()]);
    assert_eq!(
        again["function_id"],
        scale.as_str(),
        "a content hash: the same id"
    );
    assert_eq!(again["name"], "scale");
    // In a container image: another function, whose id is the one the Rust API computes.
    let image = "localhost/funcx-image-a:latest";
    let boxed = call(&["register", scale_py.to_str().unwrap(), "--image", image]);
    assert_eq!(
        boxed.trim(),
        funcx::Function::from_source(SCALE, "scale")
            .in_image(image)
            .id()
            .to_string()
    );
    let tools_py = dir.0.join("tools.py");
    std::fs::write(&tools_py, TOOLS).unwrap();
    let (_, said) = call_fails(&["register", tools_py.to_str().unwrap()], 64);
    assert!(
        said.contains("helper, invert, nap") && said.contains("--name"),
        "{said}"
    );
    let invert = call(&["register", tools_py.to_str().unwrap(), "--name", "invert"]);
    let nap = call(&["register", tools_py.to_str().unwrap(), "--name", "nap"]);
    let (invert, nap) = (invert.trim(), nap.trim());

    // Submit with JSON-literal arguments and keyword arguments; the result comes back as JSON.
    let task = call(&[
        "submit",
        &scale,
        "--endpoint",
        &endpoint,
        "21.5",
        "--kw",
        "factor=3",
    ]);
    let task: u64 = task.trim().parse().expect("the task id alone");
    let answer = call_json(&["result", &task.to_string(), "--wait", "60"]);
    assert_eq!(answer["state"], "succeeded", "{answer}");
    assert_eq!(
        answer["result"],
        serde_json::json!({ "x": 21.5, "scaled": 64.5, "floor": 64 })
    );
    let shown: Value = serde_json::from_str(&call(&["result", &task.to_string()])).unwrap();
    assert_eq!(shown["floor"], 64, "human output is the result's JSON");
    let status = call_json(&["status", &task.to_string()]);
    assert_eq!(status["state"], "succeeded", "{status}");
    assert!(
        status.get("result").is_none(),
        "status leaves the result to `result`: {status}"
    );
    assert!(status["timeline"]["finished"].is_object(), "{status}");
    let line = call(&["status", &task.to_string()]);
    assert!(
        line.starts_with(&format!("task {task}: succeeded (")),
        "{line}"
    );
    let negative = call_json(&[
        "submit",
        &scale,
        "-e",
        &endpoint,
        "-2",
        "--kw",
        "factor=0.5",
    ]);
    let negative = negative["task_id"].as_u64().expect("a task id");
    let answer = call_json(&["result", &negative.to_string(), "--wait", "60"]);
    assert_eq!(answer["result"]["floor"], -1, "{answer}");

    // A task that raises: exit status 1, the code and the traceback; with --json, the error.
    let boom = call(&["submit", invert, "--endpoint", &endpoint, "0"]);
    let boom = boom.trim();
    let (stdout, stderr) = call_fails(&["result", boom, "--wait", "60", "--json"], 1);
    let error: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(error["state"], "failed");
    assert_eq!(error["error"]["code"], "python", "{error}");
    assert_eq!(
        error["error"]["python"]["type_name"], "ZeroDivisionError",
        "{error}"
    );
    assert!(
        stderr.contains("failed (python)") && stderr.contains("Traceback"),
        "{stderr}"
    );
    let line = call(&["status", boom]);
    assert!(
        line.contains("failed") && line.contains("ZeroDivisionError"),
        "{line}"
    );

    // Not finished yet: exit status 2; then --wait gets it.
    let slow = call(&["submit", nap, "--endpoint", &endpoint, "1.5"]);
    let slow = slow.trim();
    let (_, said) = call_fails(&["result", slow], 2);
    assert!(
        said.contains("not finished") && said.contains("--wait"),
        "{said}"
    );
    let answer = call_json(&["result", slow, "--wait", "60"]);
    assert_eq!(answer["result"], serde_json::json!([1.5, null, "done"]));

    // Lists: tasks newest first, a page at a time; endpoints with their state.
    let listed = call_json(&["tasks"]);
    let ids: Vec<String> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].to_string())
        .collect();
    assert_eq!(
        ids,
        [
            slow.to_string(),
            boom.to_string(),
            negative.to_string(),
            task.to_string()
        ]
    );
    assert_eq!(listed["tasks"][1]["error_code"], "python");
    assert_eq!(listed["tasks"][0]["endpoint_id"], endpoint.as_str());
    let page = call_json(&["tasks", "--limit", "2"]);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);
    let next = page["next"].to_string();
    let rest = call_json(&["tasks", "--limit", "2", "--before", &next]);
    assert_eq!(
        rest["tasks"][0]["id"].to_string(),
        negative.to_string(),
        "{rest}"
    );
    let table = call(&["tasks"]);
    assert!(
        table.contains("succeeded") && table.contains("failed") && table.contains("python"),
        "{table}"
    );
    let table = call(&["tasks", "--limit", "1"]);
    assert!(
        table.contains(&format!("funcx tasks --before {slow}")),
        "{table}"
    );
    let endpoints = call_json(&["endpoints"]);
    assert_eq!(endpoints[0]["endpoint_id"], endpoint.as_str());
    assert_eq!(endpoints[0]["status"]["connected"], true, "{endpoints}");
    let table = call(&["endpoints"]);
    assert!(
        table.contains(&endpoint) && table.contains("connected"),
        "{table}"
    );

    // The gateway's refusals: the HTTP status, the API's code and its message.
    let (_, said) = fails(
        &home,
        &["--gateway", url, "--token", "wrong-token", "tasks"],
        1,
    );
    assert!(
        said.contains("401") && said.contains("unauthorized"),
        "{said}"
    );
    let (_, said) = call_fails(&["status", "999999"], 1);
    assert!(
        said.contains("404") && said.contains("not_found") && said.contains("no task 999999"),
        "{said}"
    );
    let (_, said) = call_fails(
        &["submit", &"0".repeat(64), "--endpoint", &endpoint, "1"],
        1,
    );
    assert!(
        said.contains("404") && said.contains("no function"),
        "{said}"
    );
    let (_, said) = call_fails(&["submit", &scale, "--endpoint", &endpoint, "abc"], 64);
    assert!(
        said.contains("argument 1") && said.contains("not a JSON literal"),
        "{said}"
    );
    let (_, said) = call_fails(
        &["submit", &scale, "--endpoint", &endpoint, "--kw", "factor"],
        64,
    );
    assert!(said.contains("KEY=JSON"), "{said}");

    // The gateway and token from $FUNCX_HOME/config.toml.
    let token_file = dir.0.join("my-token");
    std::fs::write(&token_file, format!("{ALICE}\n")).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "gateway = \"{url}\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    let listed = json(&home, &["tasks", "--limit", "1"]);
    assert_eq!(listed["tasks"][0]["id"].to_string(), slow);

    // A remote stop through funcx: the endpoint process drains and exits.
    let pid = endpoint_pid(&home);
    let stopping = json(&home, &["endpoints", "stop", &endpoint]);
    assert!(stopping["connections"].as_u64() >= Some(1), "{stopping}");
    let deadline = Instant::now() + HANG;
    while alive(pid) {
        assert!(Instant::now() < deadline, "the endpoint ignored the stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    loop {
        let endpoints = json(&home, &["endpoints"]);
        if endpoints[0]["status"]["connected"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "still connected: {endpoints}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid of the endpoint `cluster` that `funcx-endpoint status` reports.
fn endpoint_pid(home: &Path) -> u32 {
    let output = run(home, &["status", "cluster", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    status["pid"].as_u64().expect("running, with a pid") as u32
}

#[test]
fn missing_and_bad_settings_are_named() {
    let dir = TempDir::new("funcx-command-config");
    let home = dir.0.as_path();
    let (_, said) = fails(home, &["tasks"], 78);
    assert!(
        said.contains("--gateway") && said.contains("FUNCX_GATEWAY"),
        "{said}"
    );
    let (_, said) = fails(home, &["--gateway", "http://127.0.0.1:9", "tasks"], 78);
    assert!(
        said.contains("no token") && said.contains("FUNCX_TOKEN"),
        "{said}"
    );
    let (_, said) = fails(home, &["--gateway", "ftp://x", "--token", "t", "tasks"], 78);
    assert!(said.contains("http://HOST:PORT"), "{said}");

    let config = home.join("config.toml");
    std::fs::write(&config, "gateway = \"http://127.0.0.1:9\"\ntokn = \"x\"\n").unwrap();
    let (_, said) = fails(home, &["tasks"], 78);
    assert!(
        said.contains(&config.display().to_string()) && said.contains("tokn"),
        "{said}"
    );
    std::fs::write(
        &config,
        "gateway = \"http://127.0.0.1:9\"\ntoken_file = \"nowhere\"\n",
    )
    .unwrap();
    let (_, said) = fails(home, &["tasks"], 78);
    assert!(
        said.contains("token_file") && said.contains("nowhere"),
        "{said}"
    );

    // Nothing listens on port 9: the command says it cannot reach the gateway, and where.
    std::fs::write(&config, "gateway = \"http://127.0.0.1:9\"\ntoken = \"t\"\n").unwrap();
    let (_, said) = fails(home, &["tasks"], 1);
    assert!(
        said.contains("cannot reach the gateway at http://127.0.0.1:9"),
        "{said}"
    );
    // The environment comes before the file.
    let output = Command::new(FUNCX)
        .args(["tasks"])
        .env("FUNCX_HOME", home)
        .env("FUNCX_GATEWAY", "http://127.0.0.1:7")
        .env("FUNCX_TOKEN", "t")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("http://127.0.0.1:7"),
        "{}",
        text(&output)
    );
    let (_, said) = fails(home, &["result", "1", "--wait", "nan"], 64);
    assert!(said.contains("--wait"), "{said}");
}

/// An HTTPS gateway whose certificate a private CA signed (here: self-signed): `funcx`
/// reaches it with `--ca-file` (or `ca_file` in the config file), and refuses it without.
#[cfg(feature = "tls")]
#[test]
fn an_https_gateway_is_checked_against_the_ca_file() {
    let dir = TempDir::new("funcx-command-tls");
    let home = dir.0.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("rcgen makes a certificate");
    let (cert, key) = (dir.0.join("gateway.crt"), dir.0.join("gateway.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let gateway = GatewayProcess::start_with(&dir.0, Some((&cert, &key)));
    let url = gateway.url.as_str();
    assert!(url.starts_with("https://"), "{url}");
    let ca = cert.to_str().unwrap();

    let registered = json(
        &home,
        &[
            "--gateway",
            url,
            "--token",
            ALICE,
            "--ca-file",
            ca,
            "endpoints",
            "register",
            "e",
        ],
    );
    let id = registered["endpoint_id"].as_str().expect("an id");
    std::fs::write(
        home.join("config.toml"),
        format!("gateway = \"{url}\"\ntoken_file = \"token\"\nca_file = \"{ca}\"\n"),
    )
    .unwrap();
    std::fs::write(home.join("token"), ALICE).unwrap();
    let listed = json(&home, &["endpoints"]);
    assert_eq!(listed[0]["endpoint_id"], id, "{listed}");

    // Without the CA, the certificate is not trusted: nothing is sent.
    let (_, said) = fails(&home, &["--ca-file", "/dev/null", "endpoints"], 78);
    assert!(said.contains("TLS"), "{said}");
    std::fs::write(
        home.join("config.toml"),
        format!("gateway = \"{url}\"\ntoken_file = \"token\"\n"),
    )
    .unwrap();
    let (_, said) = fails(&home, &["endpoints"], 1);
    assert!(
        said.contains("cannot reach the gateway") && said.to_lowercase().contains("certificate"),
        "{said}"
    );
}
