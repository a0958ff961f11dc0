//! The README's curl example, run as written against the real `funcx-gateway` binary: the
//! first HTTP call a newcomer makes must work. Only the address (`localhost:8470`) is
//! replaced, by a free port, and `$TOKEN` is set in the environment as the reader would.

mod common;

use common::process::{free_port, temp_dir, write_config, GatewayProcess};

/// The README's first `curl` block, verbatim.
fn readme_curl() -> String {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("```sh\ncurl ")
        .expect("the README has a curl example");
    let block = &readme[start + "```sh\n".len()..];
    let end = block.find("```").expect("the curl block ends");
    block[..end].to_owned()
}

#[test]
fn the_readme_curl_line_registers_a_function() {
    let curl = readme_curl();
    assert!(
        curl.contains("localhost:8470") && curl.contains("$TOKEN"),
        "the README's curl example changed shape; update this test: {curl}"
    );
    let dir = temp_dir("readme");
    let address = free_port();
    let token = "readme-token-0123456789abcdef";
    let config = write_config(&dir, address, "alice", token);
    let _gateway = GatewayProcess::start(&config, address, &dir.join("gateway.log"));

    // `-w` adds the status on a line of its own; `--max-time` bounds the call.
    let command = curl
        .replace("localhost:8470", &address.to_string())
        .replacen("curl ", "curl --max-time 30 -w '\\n%{http_code}' ", 1);
    let output = std::process::Command::new("bash")
        .args(["-c", &command])
        .env("TOKEN", token)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{command}\n{output:?}");
    let (body, status) = stdout.rsplit_once('\n').expect("a body and a status");
    assert_eq!(status, "201", "{command}\n{body}");
    let answer: serde_json::Value = serde_json::from_str(body).expect("a JSON answer");
    let id = answer["function_id"].as_str().expect("a function id");

    // The function is really registered: it can be read back.
    let read = std::process::Command::new("curl")
        .args(["-s", "--max-time", "30", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{address}/v1/functions/{id}"))
        .output()
        .expect("run curl");
    let function: serde_json::Value =
        serde_json::from_slice(&read.stdout).expect("a JSON function");
    assert_eq!(function["name"], "double", "{function}");

    // A real form (curl's default type, a body that is not JSON) is a clear 400, not a 415.
    let form = std::process::Command::new("curl")
        .args(["-s", "--max-time", "30", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-d", "name=double"])
        .arg(format!("http://{address}/v1/functions"))
        .output()
        .expect("run curl");
    let form = String::from_utf8_lossy(&form.stdout);
    assert!(form.ends_with("\n400"), "{form}");
    assert!(form.contains("malformed JSON body"), "{form}");
    let _ = std::fs::remove_dir_all(&dir);
}
