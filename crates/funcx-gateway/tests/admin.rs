//! `funcx-gateway admin users ...` against a running `funcx-gateway` process: an admin
//! creates a user, lists users, rotates and deletes a user's token, and each change holds at
//! once for requests; non-admins, bad names and unknown users are refused with the API's
//! status and code. The gateway runs with `--log-level info --log-format json`, and its log
//! lines are JSON objects that record who changed what.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::process::{free_port, temp_dir, GatewayProcess};
use common::TIMEOUT;
use reqwest::StatusCode;
use serde_json::Value;

const ALICE: &str = "alice-admin-token-0123456789";
const CAROL: &str = "carol-plain-token-0123456789";

/// A command that must fail: its arguments, the token in `FUNCX_TOKEN`, the exit status,
/// and what its stderr must say.
type Refusal<'a> = (&'a [&'a str], Option<&'a str>, i32, &'a [&'a str]);

/// `funcx-gateway admin ARGS` with `FUNCX_TOKEN` unset unless `token` is given.
fn admin(args: &[&str], token: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_funcx-gateway"));
    command.arg("admin").args(args).env_remove("FUNCX_GATEWAY");
    match token {
        Some(token) => command.env("FUNCX_TOKEN", token),
        None => command.env_remove("FUNCX_TOKEN"),
    };
    command.output().expect("run funcx-gateway admin")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// An admin command that must succeed with `--json`; its answer.
fn admin_json(config: &Path, args: &[&str]) -> Value {
    let mut all = vec![
        "--config",
        config.to_str().unwrap(),
        "--token",
        ALICE,
        "--json",
    ];
    all.extend_from_slice(args);
    let output = admin(&all, None);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)))
}

/// The status of `GET /v1/endpoints` with `token`: whether the gateway takes the token.
async fn status_with(address: std::net::SocketAddr, token: &str) -> StatusCode {
    tokio::time::timeout(
        TIMEOUT,
        reqwest::Client::new()
            .get(format!("http://{address}/v1/endpoints"))
            .bearer_auth(token)
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("HTTP")
    .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_users_of_a_running_gateway_from_the_command_line() {
    let dir = temp_dir("admin-cli");
    let address = free_port();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\nstore = \"{}\"\nadmins = [\"alice\"]\n\n[[users]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n\n[[users]]\nname = \"carol\"\ntoken = \"{CAROL}\"\n",
            dir.join("gateway.redb").display()
        ),
    )
    .unwrap();
    let log = dir.join("gateway.log");
    let gateway = GatewayProcess::start_with(
        &["--log-level", "info", "--log-format", "json"],
        &config,
        address,
        &log,
    );

    // Create: the token works at once, without a restart or an edit of the config.
    let created = admin_json(&config, &["users", "create", "bob"]);
    assert_eq!(created["name"], "bob");
    let bob = created["token"].as_str().expect("a token").to_string();
    assert_eq!(status_with(address, &bob).await, StatusCode::OK);
    let listed = admin_json(&config, &["users", "list"]);
    assert_eq!(
        listed["users"],
        serde_json::json!(["alice", "bob", "carol"])
    );

    // Rotate: the old token is refused, the new one works.
    let rotated = admin_json(&config, &["users", "rotate-token", "bob"]);
    let new_bob = rotated["token"].as_str().expect("a token").to_string();
    assert_ne!(new_bob, bob);
    assert_eq!(status_with(address, &bob).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(address, &new_bob).await, StatusCode::OK);

    // Delete (or `revoke`): the token is refused; human output; the URL and token from the
    // environment.
    let url = format!("http://{address}");
    let output = admin(&["users", "revoke", "bob", "--url", &url], Some(ALICE));
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("user bob deleted"),
        "{}",
        text(&output)
    );
    assert_eq!(
        status_with(address, &new_bob).await,
        StatusCode::UNAUTHORIZED
    );

    // Refusals carry the HTTP status, the API's code and its message.
    let cases: [Refusal; 6] = [
        (
            &["users", "delete", "bob"],
            Some(ALICE),
            1,
            &["404", "not_found", "no user bob"],
        ),
        (
            &["users", "create", "alice"],
            Some(ALICE),
            1,
            &["409", "conflict"],
        ),
        (
            &["users", "list"],
            Some(CAROL),
            1,
            &["403", "forbidden", "admins"],
        ),
        (
            &["users", "list"],
            Some("not-a-valid-token-0000"),
            1,
            &["401", "unauthorized"],
        ),
        (
            &["users", "create", "bad/name"],
            Some(ALICE),
            64,
            &["not a user name"],
        ),
        (&["users", "list"], None, 78, &["--token", "FUNCX_TOKEN"]),
    ];
    for (args, token, code, says) in cases {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let output = admin(&all, token);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        for said in says {
            assert!(
                stderr.contains(said),
                "{args:?}: {said:?} missing from {stderr}"
            );
        }
    }
    let output = admin(
        &["--url", "http://127.0.0.1:9", "users", "list"],
        Some(ALICE),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("cannot reach the gateway at http://127.0.0.1:9"),
        "{}",
        text(&output)
    );

    // The log: one JSON object a line, naming who made each change.
    let lines = gateway.log();
    let events: Vec<Value> = lines
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let said = |message: &str| {
        events.iter().any(|event| {
            event["fields"]["message"] == message
                && event["fields"]["user"] == "bob"
                && event["fields"]["by"] == "alice"
                && event["level"] == "INFO"
        })
    };
    for message in ["user created", "user token rotated", "user deleted"] {
        assert!(said(message), "no {message:?} event in {lines}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A gateway serving HTTPS: `--config` makes the URL `https://`, and the admin command checks
/// the certificate against `--ca-file` (a self-signed one here), refusing it without.
#[cfg(feature = "tls")]
#[test]
fn an_https_gateway_is_reached_with_its_ca_file() {
    let dir = temp_dir("admin-cli-tls");
    let address = free_port();
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("rcgen makes a certificate");
    let (cert, key) = (dir.join("gateway.crt"), dir.join("gateway.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\nadmins = [\"alice\"]\n\n[[users]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let _gateway = GatewayProcess::start(&config, address, &dir.join("gateway.log"));
    let ca = cert.to_str().unwrap();
    let listed = admin_json(&config, &["--ca-file", ca, "users", "list"]);
    assert_eq!(listed["users"], serde_json::json!(["alice"]));

    let output = admin(
        &["--config", config.to_str().unwrap(), "users", "list"],
        Some(ALICE),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        said.contains(&format!("https://{address}")) && said.contains("certificate"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
