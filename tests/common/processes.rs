//! The programs as separate processes: a `funcx-gateway` (from `target/<profile>`, built by
//! `scripts/test`), `funcx-endpoint` commands, and what tells whether a process still runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::HANG;

/// The `funcx-endpoint` program of this build.
pub const ENDPOINT_PROGRAM: &str = env!("CARGO_BIN_EXE_funcx-endpoint");

/// The token of user `alice`, an admin, in [`GatewayProcess::start`]'s configuration.
pub const ALICE: &str = "alice-token-0123456789abcdef";

/// `target/<profile>/funcx-gateway`, built by `scripts/test` before the tests.
pub fn gateway_binary() -> PathBuf {
    let binary = Path::new(ENDPOINT_PROGRAM)
        .parent()
        .map(|dir| dir.join("funcx-gateway"))
        .expect("the program lives in target/<profile>");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p funcx-gateway --bins` (scripts/test does)",
        binary.display()
    );
    binary
}

/// A `funcx-gateway` process with a redb store in `dir`, user `alice` (token [`ALICE`],
/// an admin), logging to `dir/gateway.log`; killed when dropped.
pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its configuration file.
    pub config: PathBuf,
}

impl GatewayProcess {
    /// Starts it on a free loopback port and waits (bounded) until it listens.
    pub fn start(dir: &Path) -> GatewayProcess {
        GatewayProcess::start_with(dir, None)
    }

    /// As [`GatewayProcess::start`]; with `tls` (certificate and key files), it serves HTTPS
    /// and its `url` is `https://127.0.0.1:PORT`.
    pub fn start_with(dir: &Path, tls: Option<(&Path, &Path)>) -> GatewayProcess {
        let address: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{address}\"\nstore = \"{}\"\nadmins = [\"alice\"]\n\n[[users]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n{}",
                dir.join("gateway.redb").display(),
                tls.map_or(String::new(), |(cert, key)| format!(
                    "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                    cert.display(),
                    key.display()
                )),
            ),
        )
        .expect("gateway config");
        let log = std::fs::File::create(dir.join("gateway.log")).expect("gateway log");
        let mut child = Command::new(gateway_binary())
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start funcx-gateway");
        let said = || std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
        let deadline = Instant::now() + HANG;
        while std::net::TcpStream::connect(address).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the gateway exited at start ({status}): {}", said());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not listen: {}",
                said()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        GatewayProcess {
            child,
            url: format!(
                "{}://{address}",
                if tls.is_some() { "https" } else { "http" }
            ),
            config,
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `funcx-endpoint ARGS` with `FUNCX_HOME=home`.
pub fn run(home: &(impl AsRef<Path> + ?Sized), args: &[&str]) -> Output {
    Command::new(ENDPOINT_PROGRAM)
        .args(args)
        .env("FUNCX_HOME", home.as_ref())
        .env("RUST_LOG", "info")
        .output()
        .expect("run funcx-endpoint")
}

/// A finished command's status and output, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `funcx-endpoint configure NAME` for a local provider and this gateway, then edited as a
/// user would: two workers per manager, no block until there is work, quick scaling.
pub fn configure_local(
    home: &(impl AsRef<Path> + ?Sized),
    name: &str,
    url: &str,
    id: &str,
    token: &str,
) {
    let home = home.as_ref();
    let output = run(
        home,
        &[
            "configure",
            name,
            "--provider",
            "local",
            "--gateway",
            url,
            "--endpoint-id",
            id,
            "--token",
            token,
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let path = home.join("endpoints").join(name).join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let config = config
        .replace("workers_per_node = 1", "workers_per_node = 2")
        .replace("init = 1", "init = 0")
        .replace("# period_secs = 5 ", "period_secs = 0.1 ");
    std::fs::write(&path, config).unwrap();
}
