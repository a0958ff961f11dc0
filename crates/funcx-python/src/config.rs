//! How Python workers are started: interpreter, environment, limits.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::Container;

/// The default [`PythonConfig::max_result_size`]: 1 GiB.
pub const DEFAULT_MAX_RESULT_SIZE: u64 = 1 << 30;

/// Room in a frame for everything but the result itself (headers, other results batched
/// with it, exception text).
const FRAME_SLACK: usize = 1 << 20;

/// The smallest frame limit allowed, so that exception reports always fit.
const MIN_FRAME_SIZE: usize = 1 << 20;

/// Environment variables that pin a worker to one accelerator (defined in `funcx-core`, which
/// sets them for tasks granted GPUs too).
pub use funcx_core::ACCELERATOR_VARIABLES;

/// How to start Python workers: which interpreter, with what environment.
///
/// How many workers run is the executor's business (`Executor::builder().workers(n)`),
/// not the runtime's.
///
/// A builder: start from [`PythonConfig::new`] and chain the settings.
///
/// ```
/// use funcx_python::PythonConfig;
///
/// let config = PythonConfig::new()
///     .python("/opt/venv/bin/python")
///     .env("OMP_NUM_THREADS", "1")
///     .worker_init("module load cuda")
///     .accelerators(vec!["0".into(), "1".into()]);
/// assert_eq!(config.accelerator_for(3), Some("1"));
/// ```
#[derive(Debug, Clone)]
pub struct PythonConfig {
    python: OsString,
    env: Vec<(OsString, OsString)>,
    working_dir: Option<PathBuf>,
    worker_init: Option<String>,
    accelerators: Vec<String>,
    max_result_size: u64,
    max_frame_size: Option<usize>,
    container: Option<Container>,
}

impl Default for PythonConfig {
    fn default() -> PythonConfig {
        PythonConfig::new()
    }
}

impl PythonConfig {
    /// `python3` from `PATH`, the environment of this process, results
    /// up to 1 GiB.
    pub fn new() -> PythonConfig {
        PythonConfig {
            python: OsString::from("python3"),
            env: Vec::new(),
            working_dir: None,
            worker_init: None,
            accelerators: Vec::new(),
            max_result_size: DEFAULT_MAX_RESULT_SIZE,
            max_frame_size: None,
            container: None,
        }
    }

    /// The Python interpreter to run: a name looked up in `PATH` or a path, such as a
    /// virtual environment's `bin/python` (which needs no activation).
    pub fn python(mut self, python: impl Into<OsString>) -> PythonConfig {
        self.python = python.into();
        self
    }

    /// Sets an environment variable for the workers, on top of this process's environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> PythonConfig {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets several environment variables, as [`PythonConfig::env`] does.
    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> PythonConfig
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The directory the workers start in (and import modules from); by default this
    /// process's.
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> PythonConfig {
        self.working_dir = Some(dir.into());
        self
    }

    /// A shell snippet run before each worker starts, in the shell that then becomes the
    /// worker, so what it exports reaches Python: `module load cuda`,
    /// `source /opt/conda/bin/activate env`, `export FOO=bar`. Its output goes to the
    /// worker's log.
    pub fn worker_init(mut self, snippet: impl Into<String>) -> PythonConfig {
        self.worker_init = Some(snippet.into());
        self
    }

    /// Pins workers to accelerators: worker slot `i` sees only
    /// `accelerators[i % accelerators.len()]` through `CUDA_VISIBLE_DEVICES`,
    /// `ROCR_VISIBLE_DEVICES` and `ZE_AFFINITY_MASK`. Each entry is what those variables
    /// accept: a device index, a UUID, or a comma-separated list.
    pub fn accelerators(mut self, accelerators: Vec<String>) -> PythonConfig {
        self.accelerators = accelerators;
        self
    }

    /// The largest pickled result a task may return, in bytes; a bigger one fails the task
    /// with a [`funcx_core::TaskError::is_result_too_large`] error instead of being sent.
    /// Checked by the worker. Capped a little under 4 GiB, the most a frame can carry.
    pub fn max_result_size(mut self, bytes: u64) -> PythonConfig {
        self.max_result_size = bytes.min((u32::MAX as usize - FRAME_SLACK) as u64);
        self
    }

    /// The largest frame accepted from a worker, in bytes; a worker that announces a bigger
    /// one is treated as broken and killed. By default the result limit plus 1 MiB, which
    /// is what a well-behaved worker can send. At least 1 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> PythonConfig {
        self.max_frame_size = Some(bytes.max(MIN_FRAME_SIZE));
        self
    }

    /// Starts every worker inside `container` (an image run by podman, or a bubblewrap
    /// sandbox) instead of directly on this machine; see [`Container`] for what is passed
    /// in. A missing engine or image fails the worker's start with an error that names it.
    pub fn container(mut self, container: Container) -> PythonConfig {
        self.container = Some(container);
        self
    }

    /// The container workers start in, if any.
    pub fn container_config(&self) -> Option<&Container> {
        self.container.as_ref()
    }

    /// The image of the container workers start in, if any.
    pub fn container_image(&self) -> Option<&str> {
        self.container.as_ref().and_then(Container::image)
    }

    /// The interpreter that is run.
    pub fn python_path(&self) -> &OsStr {
        &self.python
    }

    /// The environment variables set for every worker, in the order they were added.
    pub fn environment(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// The working directory of the workers, if one was set.
    pub fn current_dir(&self) -> Option<&Path> {
        self.working_dir.as_deref()
    }

    /// The shell snippet run before each worker, if any.
    pub fn init_snippet(&self) -> Option<&str> {
        self.worker_init.as_deref()
    }

    /// The accelerators workers are pinned to, in slot order.
    pub fn accelerator_list(&self) -> &[String] {
        &self.accelerators
    }

    /// The largest pickled result a task may return.
    pub fn result_size_limit(&self) -> u64 {
        self.max_result_size
    }

    /// The largest frame body accepted from a worker.
    pub fn frame_size_limit(&self) -> usize {
        self.max_frame_size.unwrap_or_else(|| {
            usize::try_from(self.max_result_size)
                .unwrap_or(usize::MAX)
                .saturating_add(FRAME_SLACK)
                .min(u32::MAX as usize)
        })
    }

    /// The accelerator of worker slot `index`, if workers are pinned.
    pub fn accelerator_for(&self, index: usize) -> Option<&str> {
        if self.accelerators.is_empty() {
            return None;
        }
        Some(&self.accelerators[index % self.accelerators.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = PythonConfig::new();
        assert_eq!(config.python_path(), "python3");
        assert_eq!(config.result_size_limit(), 1 << 30);
        assert_eq!(config.frame_size_limit(), (1 << 30) + (1 << 20));
        assert_eq!(config.accelerator_for(3), None);
        assert!(config.current_dir().is_none() && config.init_snippet().is_none());
    }

    #[test]
    fn accelerators_cycle_over_slots() {
        let config = PythonConfig::new().accelerators(vec!["0".into(), "1".into(), "2".into()]);
        let pinned: Vec<_> = (0..5).map(|i| config.accelerator_for(i)).collect();
        assert_eq!(
            pinned,
            [Some("0"), Some("1"), Some("2"), Some("0"), Some("1")]
        );
    }

    #[test]
    fn limits_are_clamped() {
        let config = PythonConfig::new()
            .max_result_size(u64::MAX)
            .max_frame_size(10);
        assert!(config.result_size_limit() < u32::MAX as u64);
        assert_eq!(config.frame_size_limit(), MIN_FRAME_SIZE);
        let config = PythonConfig::new().max_result_size(10);
        assert_eq!(config.frame_size_limit(), 10 + FRAME_SLACK);
    }

    #[test]
    fn environment_accumulates() {
        let config = PythonConfig::new()
            .env("A", "1")
            .envs([("B", "2"), ("C", "3")]);
        let keys: Vec<_> = config
            .environment()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(keys, ["A", "B", "C"]);
    }
}
