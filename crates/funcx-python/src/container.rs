//! Workers inside a container: the worker command wrapped in `podman run`.
//!
//! The worker speaks its protocol on stdin and stdout, and `podman run -i` passes both
//! through, so a containerized worker is the same process as any other behind one more
//! program. Its start cost (a few hundred milliseconds) is paid when the worker starts; warm
//! workers then serve every task of the endpoint in that image.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use funcx_core::worker::{SpawnError, WorkerId};
use tokio::process::Command;

/// The container image workers run in, and how to start it (set with
/// [`crate::PythonConfig::container`]).
///
/// Podman runs the image with `--rm -i --network none --pull never`: no registry is ever
/// consulted (the image must be on the machine, built or `podman load`ed), and the worker has
/// no network; [`Container::option`] adds to or overrides that (`--network host`, `-v
/// /data:/data:ro`, ...). The environment set with [`crate::PythonConfig::env`], the worker's
/// index and id and its pinned accelerator are passed with `-e`; the working directory with
/// `-w` (a directory inside the container). The Python interpreter
/// ([`crate::PythonConfig::python`], default `python3`) is the one inside the image.
///
/// ```
/// use funcx_python::{Container, PythonConfig};
///
/// let config = PythonConfig::new()
///     .container(Container::podman("localhost/funcx-python:latest").option("--memory=2g"));
/// assert_eq!(config.container_image(), Some("localhost/funcx-python:latest"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    program: OsString,
    image: String,
    options: Vec<OsString>,
}

impl Container {
    /// Workers in `image`, started by `podman` from `PATH`.
    pub fn podman(image: impl Into<String>) -> Container {
        Container {
            program: "podman".into(),
            image: image.into(),
            options: Vec::new(),
        }
    }

    /// Runs this podman binary instead of `podman` from `PATH`.
    pub fn program(mut self, program: impl Into<OsString>) -> Container {
        self.program = program.into();
        self
    }

    /// Adds an option to `podman run`, before the image name (later options override
    /// earlier ones, the defaults included).
    pub fn option(mut self, option: impl Into<OsString>) -> Container {
        self.options.push(option.into());
        self
    }

    /// The image workers run in.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The container name of worker `id`: unique per process and worker, so a worker can be
    /// removed by name when it is killed.
    pub(crate) fn name(id: WorkerId) -> String {
        format!("funcx-worker-{}-{}", std::process::id(), id.0)
    }

    /// The command that starts `inner` (the interpreter and its arguments) in the container,
    /// with `env` and `workdir` inside it.
    pub(crate) fn command<'a>(
        &self,
        name: &str,
        env: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
        workdir: Option<&Path>,
        inner: impl IntoIterator<Item = OsString>,
    ) -> Command {
        let mut command = Command::new(&self.program);
        command.args(["run", "--rm", "-i", "--network", "none", "--pull", "never"]);
        command.arg("--name").arg(name);
        for (key, value) in env {
            let mut pair = OsString::from(key);
            pair.push("=");
            pair.push(value);
            command.arg("-e").arg(pair);
        }
        if let Some(dir) = workdir {
            command.arg("-w").arg(dir);
        }
        command.args(&self.options);
        command.arg(&self.image);
        command.args(inner);
        command
    }

    /// Checks that the engine runs and has the image, so that a missing one is named in the
    /// error instead of showing up as a worker that exited before it was ready.
    pub(crate) async fn check(&self) -> Result<(), SpawnError> {
        let output = Command::new(&self.program)
            .args(["image", "exists", &self.image])
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                SpawnError::new(format!(
                    "could not run the container engine {:?}: {e} (is podman installed? \
                     scripts/infra/podman-up.sh sets it up)",
                    self.program
                ))
            })?;
        match output.status.code() {
            Some(0) => Ok(()),
            Some(1) => Err(SpawnError::new(format!(
                "container image {:?} is not on this machine ({:?} image exists said no); \
                 build or load it first: workers never pull from a registry",
                self.image, self.program
            ))),
            _ => Err(SpawnError::new(format!(
                "{:?} image exists {:?} failed ({}): {}",
                self.program,
                self.image,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        }
    }

    /// Removes worker container `name` if it is still there: a worker killed while it runs a
    /// task would otherwise finish the task inside the container, unseen, before it noticed
    /// its input was gone.
    pub(crate) async fn remove(&self, name: &str) {
        let result = Command::new(&self.program)
            .args(["rm", "--force", "--ignore", "--time", "0", name])
            .kill_on_drop(true)
            .output()
            .await;
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => tracing::warn!(
                container = name,
                "could not remove the worker's container: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(e) => tracing::warn!(
                container = name,
                "could not remove the worker's container: {e}"
            ),
        }
    }
}
