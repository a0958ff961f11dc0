//! Workers inside a container: the worker command wrapped in `podman run`, in `apptainer
//! exec` (or `singularity exec`), or in bubblewrap as a light sandbox.
//!
//! The worker speaks its protocol on stdin and stdout, and `podman run -i`, `apptainer exec`
//! and `bwrap` pass both through, so a containerized worker is the same process as any other
//! behind one more program. Its start cost (a few hundred milliseconds) is paid when the
//! worker starts; warm workers then serve every task in that image: the endpoint's, or those
//! of the functions that name it ([`funcx_core::Function::in_image`]).

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
/// let sandboxed = PythonConfig::new().container(Container::bubblewrap());
/// assert_eq!(sandboxed.container_image(), None);
/// ```
///
/// [`Container::apptainer`] runs the image with Apptainer or Singularity, as HPC centres
/// allow where podman is not; [`Container::bubblewrap`] is the light sandbox instead: no
/// image, this machine's file tree read-only, a private `/tmp`, no network, and the worker
/// dies with its parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    engine: Engine,
    program: OsString,
    options: Vec<OsString>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Engine {
    /// `podman run` of this image.
    Podman { image: String },
    /// `apptainer exec` (or `singularity exec`) of this image.
    Apptainer { image: String },
    /// `bwrap` over this machine's own file tree.
    Bubblewrap,
}

impl Container {
    /// Workers in `image`, started by `podman` from `PATH`.
    pub fn podman(image: impl Into<String>) -> Container {
        Container {
            engine: Engine::Podman {
                image: image.into(),
            },
            program: "podman".into(),
            options: Vec::new(),
        }
    }

    /// Workers in Apptainer image `image` (a `.sif` file, a sandbox directory, or a URI such
    /// as `docker://...` that Apptainer resolves), started with `apptainer exec`, or with
    /// `singularity exec` when only Singularity is on `PATH`:
    /// `exec --containall --cleanenv --env K=V ... [--pwd DIR] IMAGE python3 ...`, so the
    /// worker sees the image's file tree (no home directory, a private `/tmp`), its own PID
    /// and IPC namespaces, and only the environment funcx passes. [`Container::option`] adds
    /// to that (`--bind /data`, `--nv` for NVIDIA GPUs); a missing binary fails the worker's
    /// start with an error that names it, and a missing image file likewise.
    ///
    /// Untested against a real Apptainer: the command line it builds is tested, and so is
    /// the error when the binary is missing, but no CI machine has Apptainer installed.
    pub fn apptainer(image: impl Into<String>) -> Container {
        let program = ["apptainer", "singularity"]
            .into_iter()
            .find(|name| on_path(name))
            .unwrap_or("apptainer");
        Container {
            engine: Engine::Apptainer {
                image: image.into(),
            },
            program: program.into(),
            options: Vec::new(),
        }
    }

    /// This container with `image` in place of its own, for the functions that name one:
    /// the same engine, program and options. Bubblewrap runs no image, so its workers for an
    /// image run with podman from `PATH`.
    pub fn with_image(&self, image: impl Into<String>) -> Container {
        let image = image.into();
        match &self.engine {
            Engine::Podman { .. } => Container {
                engine: Engine::Podman { image },
                ..self.clone()
            },
            Engine::Apptainer { .. } => Container {
                engine: Engine::Apptainer { image },
                ..self.clone()
            },
            Engine::Bubblewrap => Container::podman(image),
        }
    }

    /// Workers in a bubblewrap sandbox (`bwrap` from `PATH`): `--ro-bind / / --dev /dev
    /// --proc /proc --tmpfs /tmp --unshare-all --die-with-parent --new-session`, so a worker
    /// reads this machine's files but writes none outside its own `/tmp`, has no network, and
    /// cannot outlive its parent. [`Container::option`] adds to that (`--bind DIR DIR` for a
    /// writable directory, `--share-net`). The environment is this process's plus
    /// [`crate::PythonConfig::env`]; the working directory is set with `--chdir`.
    pub fn bubblewrap() -> Container {
        Container {
            engine: Engine::Bubblewrap,
            program: "bwrap".into(),
            options: Vec::new(),
        }
    }

    /// Runs this engine binary (podman, apptainer or bwrap) instead of the one on `PATH`.
    pub fn program(mut self, program: impl Into<OsString>) -> Container {
        self.program = program.into();
        self
    }

    /// Adds an option to `podman run` or `apptainer exec` (before the image name) or to
    /// `bwrap` (before the command); later options override earlier ones, the defaults
    /// included.
    pub fn option(mut self, option: impl Into<OsString>) -> Container {
        self.options.push(option.into());
        self
    }

    /// The image workers run in; `None` for bubblewrap, which runs this machine's files.
    pub fn image(&self) -> Option<&str> {
        match &self.engine {
            Engine::Podman { image } | Engine::Apptainer { image } => Some(image),
            Engine::Bubblewrap => None,
        }
    }

    /// What workers run in, for messages: the image, or bubblewrap.
    pub(crate) fn describe(&self) -> String {
        match &self.engine {
            Engine::Podman { image } => format!("container image {image:?}"),
            Engine::Apptainer { image } => {
                format!("Apptainer image {image:?} ({:?})", self.program)
            }
            Engine::Bubblewrap => format!("bubblewrap sandbox ({:?})", self.program),
        }
    }

    /// The container name of worker `id`: unique per process and worker, so a worker can be
    /// removed by name when it is killed. Worker ids are numbered per executor, so a
    /// process-wide sequence sets apart the workers of two executors in one process (two
    /// endpoints, or tests run together), whose names podman would otherwise refuse as taken.
    pub(crate) fn name(id: WorkerId) -> String {
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("funcx-worker-{}-{}-{sequence}", std::process::id(), id.0)
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
        match &self.engine {
            Engine::Podman { image } => {
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
                command.arg(image);
            }
            Engine::Apptainer { image } => {
                command.args(["exec", "--containall", "--cleanenv"]);
                for (key, value) in env {
                    let mut pair = OsString::from(key);
                    pair.push("=");
                    pair.push(value);
                    command.arg("--env").arg(pair);
                }
                if let Some(dir) = workdir {
                    command.arg("--pwd").arg(dir);
                }
                command.args(&self.options);
                command.arg(image);
            }
            Engine::Bubblewrap => {
                command.args([
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "--tmpfs",
                    "/tmp",
                    "--unshare-all",
                    "--die-with-parent",
                    "--new-session",
                ]);
                // bwrap passes its own environment on.
                command.envs(env);
                if let Some(dir) = workdir {
                    command.arg("--chdir").arg(dir);
                }
                command.args(&self.options);
                command.arg("--");
            }
        }
        command.args(inner);
        command
    }

    /// Checks that the engine runs and has the image, so that a missing one is named in the
    /// error instead of showing up as a worker that exited before it was ready.
    pub(crate) async fn check(&self) -> Result<(), SpawnError> {
        let args: Vec<&str> = match &self.engine {
            Engine::Podman { image } => vec!["image", "exists", image],
            Engine::Apptainer { .. } | Engine::Bubblewrap => vec!["--version"],
        };
        let output = Command::new(&self.program)
            .args(&args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                SpawnError::new(format!(
                    "could not run the container engine {:?}: {e} (is it installed? \
                     scripts/infra/podman-up.sh sets up podman and bubblewrap)",
                    self.program
                ))
            })?;
        match (&self.engine, output.status.code()) {
            (Engine::Apptainer { image }, Some(0)) => check_apptainer_image(image),
            (_, Some(0)) => Ok(()),
            (Engine::Podman { image }, Some(1)) => Err(SpawnError::new(format!(
                "container image {image:?} is not on this machine ({:?} image exists said \
                 no); build or load it first: workers never pull from a registry",
                self.program
            ))),
            _ => Err(SpawnError::new(format!(
                "{:?} {} failed ({}): {}",
                self.program,
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        }
    }

    /// Removes worker container `name` if it is still there: a worker killed while it runs a
    /// task would otherwise finish the task inside the container, unseen, before it noticed
    /// its input was gone.
    pub(crate) async fn remove(&self, name: &str) {
        if !matches!(self.engine, Engine::Podman { .. }) {
            // bwrap's --die-with-parent takes the sandbox with it; an Apptainer container is
            // the process itself, in its own PID namespace, gone when it is.
            return;
        }
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

/// Whether `name` is an executable file in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
    })
}

/// An Apptainer image that names a local file or directory must exist; a URI
/// (`docker://`, `library://`, `oras://`) is Apptainer's to resolve.
fn check_apptainer_image(image: &str) -> Result<(), SpawnError> {
    if image.contains("://") || Path::new(image).exists() {
        Ok(())
    } else {
        Err(SpawnError::new(format!(
            "Apptainer image {image:?} is not on this machine (no such file or directory)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &Command) -> Vec<String> {
        std::iter::once(command.as_std().get_program())
            .chain(command.as_std().get_args())
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn apptainer_runs_the_worker_contained_with_only_the_environment_given() {
        let container = Container::apptainer("/images/analysis.sif")
            .program("apptainer")
            .option("--bind=/data");
        let env = [(OsStr::new("FUNCX_WORKER_INDEX"), OsStr::new("0"))];
        let command = container.command(
            "unused",
            env,
            Some(Path::new("/scratch")),
            ["python3".into(), "-u".into()],
        );
        assert_eq!(
            args(&command),
            [
                "apptainer",
                "exec",
                "--containall",
                "--cleanenv",
                "--env",
                "FUNCX_WORKER_INDEX=0",
                "--pwd",
                "/scratch",
                "--bind=/data",
                "/images/analysis.sif",
                "python3",
                "-u",
            ]
        );
        assert_eq!(container.image(), Some("/images/analysis.sif"));
    }

    #[test]
    fn a_function_image_keeps_the_engine_and_its_options() {
        let podman = Container::podman("localhost/base:1").option("--memory=2g");
        let other = podman.with_image("localhost/other:1");
        assert_eq!(other.image(), Some("localhost/other:1"));
        assert_eq!(other.options, podman.options);
        let apptainer = Container::apptainer("/a.sif").with_image("/b.sif");
        assert!(matches!(apptainer.engine, Engine::Apptainer { .. }));
        assert_eq!(apptainer.image(), Some("/b.sif"));
        // Bubblewrap runs no image: an image means podman.
        let boxed = Container::bubblewrap().with_image("localhost/x:1");
        assert_eq!(boxed.image(), Some("localhost/x:1"));
        assert_eq!(boxed.program, OsString::from("podman"));
    }

    #[test]
    fn a_missing_apptainer_image_file_is_named() {
        let error = check_apptainer_image("/nonexistent/x.sif").expect_err("no such file");
        assert!(error.to_string().contains("/nonexistent/x.sif"), "{error}");
        assert!(check_apptainer_image("docker://python:3.12").is_ok());
    }
}
