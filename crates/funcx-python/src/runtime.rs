//! Python worker processes: starting them and talking to them over their pipes.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use funcx_core::worker::{
    SpawnError, ToWorker, Worker, WorkerEvent, WorkerEvents, WorkerId, WorkerRuntime,
};
use funcx_core::WorkerExit;
use funcx_transport::pool::{BufferPool, PooledFrame, POOLED_FRAME_MIN};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, Notify};

use crate::config::{PythonConfig, ACCELERATOR_VARIABLES};
use crate::protocol::{Decoder, Encoder, FromWorker, ProtocolError};
use crate::shared::{Lent, SharedFiles};
use crate::Container;

/// The worker program, passed to `python -c` so that starting a worker touches no file.
const WORKER_SOURCE: &str = include_str!("worker.py");

/// glibc's allocator settings for workers, unless the environment sets its own: payloads up
/// to 32 MiB come from the heap instead of a fresh `mmap` each, and up to 128 MiB of freed
/// heap is kept for the next task. Without them every large argument and result of a worker
/// is a fresh mapping whose pages fault in one by one (a third of a worker's time when tasks
/// move 16 MiB arrays); a worker still returns memory beyond that to the system.
const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728";

/// The writer stops coalescing queued messages once this many bytes are encoded, so that a
/// flood of submissions starts reaching the worker before it has all been encoded.
const WRITE_BATCH: usize = 4 * 1024 * 1024;

/// Reads from the worker's stdout are at least this big.
const READ_CHUNK: usize = 64 * 1024;
/// The most a runtime keeps of the buffers its workers' large results were read into: seven
/// results of 16 MiB. A result's buffer is in use until the endpoint has acknowledged it,
/// so several are at once when the workers of a node finish together.
const RECEIVE_POOL_KEEP: usize = 128 * 1024 * 1024;

/// Lines of worker output longer than this are logged in pieces.
const MAX_LOG_LINE: usize = 16 * 1024;

/// How long a worker that closed its output may take to exit before it is killed; a clean
/// exit (after `Shutdown`) closes the output first, and must not be reported as a kill.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How long to keep reading results after the worker exited, in case a process it started
/// still holds the pipe open.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs workers as Python processes on this machine.
///
/// Each worker is a `python -u -c <worker program>` process (started through
/// `sh -c` when a [`PythonConfig::worker_init`] snippet is set) that speaks the
/// [`crate::protocol`] on its stdin and stdout. What functions print goes to its stderr,
/// which is logged line by line with `tracing` under the target `funcx::worker`.
#[derive(Debug, Clone)]
pub struct PythonRuntime {
    config: Arc<PythonConfig>,
    /// Set once the container engine has been seen to have the image: later workers skip
    /// the check.
    image_found: Arc<AtomicBool>,
    /// The images of functions ([`funcx_core::Function::in_image`]) the engine has been seen
    /// to have, likewise.
    images_found: Arc<Mutex<HashSet<String>>>,
    /// The buffers large frames from the workers (results) are read into, shared by all
    /// of them.
    receive_pool: BufferPool,
    /// The memfds large arguments and results of local workers cross in (`None` where the
    /// system has none: everything then goes through the pipes).
    shared: Option<Arc<SharedFiles>>,
}

impl PythonRuntime {
    /// A runtime that starts workers as `config` describes.
    pub fn new(config: PythonConfig) -> PythonRuntime {
        PythonRuntime {
            config: Arc::new(config),
            image_found: Arc::new(AtomicBool::new(false)),
            images_found: Arc::new(Mutex::new(HashSet::new())),
            receive_pool: BufferPool::new(RECEIVE_POOL_KEEP),
            shared: SharedFiles::new(),
        }
    }

    /// How workers for functions in container image `image` are started: with the engine,
    /// program and options of [`PythonConfig::container`] when it runs an image (podman or
    /// Apptainer), otherwise with podman from `PATH` and its defaults.
    pub fn container_for(&self, image: &str) -> Container {
        match self.config.container_config() {
            Some(container) if container.image().is_some() => container.with_image(image),
            _ => Container::podman(image),
        }
    }

    /// The configuration workers are started with.
    pub fn config(&self) -> &PythonConfig {
        &self.config
    }

    /// Starts worker slot `index` and returns its handle; the same as
    /// [`WorkerRuntime::spawn`], without boxing.
    ///
    /// Must be called within a Tokio runtime: the worker's pipes are served by tasks
    /// spawned on it.
    pub fn spawn_worker(
        &self,
        index: usize,
        events: WorkerEvents,
    ) -> Result<PythonWorker, SpawnError> {
        self.spawn_in(self.config.container_config(), index, events)
    }

    /// Starts worker slot `index` in `container` (or on this machine for `None`).
    fn spawn_in(
        &self,
        container: Option<&Container>,
        index: usize,
        events: WorkerEvents,
    ) -> Result<PythonWorker, SpawnError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SpawnError::new(
                "Python workers must be started within a Tokio runtime",
            ));
        }
        let id = events.worker();
        // A worker in a container cannot open this process's files: it sees another /proc.
        let shared = match (container, &self.shared) {
            (None, Some(files)) => Some(files.clone()),
            _ => None,
        };
        let container = container.map(|container| (container, Container::name(id)));
        let probe = shared.as_ref().map(|files| files.probe());
        let mut command = command(&self.config, container.as_ref(), index, id, probe);
        let mut child = command.spawn().map_err(|e| match &container {
            Some((container, _)) => SpawnError::new(format!(
                "could not start a Python worker in {}: {e}",
                container.describe()
            )),
            None => SpawnError::new(format!(
                "could not start Python worker {:?}: {e}",
                self.config.python_path()
            )),
        })?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Unreachable with piped stdio, but a missing pipe must not become a panic.
            return Err(SpawnError::new("worker process has no pipes"));
        };
        widen_pipe(&stdin);
        widen_pipe(&stdout);
        let (tx, rx) = mpsc::unbounded_channel();
        let kill = Arc::new(Notify::new());
        let mut decoder = Decoder::new(
            self.config.frame_size_limit(),
            self.config.result_size_limit(),
        );
        let lent = shared.map(|files| Arc::new(Lent::new(files, self.receive_pool.clone())));
        let encoder = match &lent {
            Some(lent) => {
                decoder = decoder.with_shared(lent.clone());
                Encoder::with_shared(lent.clone())
            }
            None => Encoder::new(),
        };
        tokio::spawn(write_messages(stdin, rx, encoder, id));
        tokio::spawn(forward_output(stderr, id));
        let container = container.map(|(container, name)| (container.clone(), name));
        tokio::spawn(read_events(
            child,
            stdout,
            events,
            kill.clone(),
            Output::new(decoder, self.receive_pool.clone(), lent),
            container,
        ));
        tracing::debug!(worker = %id, ?pid, index, "started Python worker");
        Ok(PythonWorker { id, pid, tx, kill })
    }
}

impl Default for PythonRuntime {
    /// `python3` from `PATH` with the defaults of [`PythonConfig::new`].
    fn default() -> PythonRuntime {
        PythonRuntime::new(PythonConfig::new())
    }
}

impl WorkerRuntime for PythonRuntime {
    fn accelerators(&self) -> Vec<String> {
        self.config.accelerator_list().to_vec()
    }

    fn spawn(
        &self,
        index: usize,
        events: WorkerEvents,
    ) -> BoxFuture<'static, Result<Box<dyn Worker>, SpawnError>> {
        let runtime = self.clone();
        Box::pin(async move {
            if let Some(container) = runtime.config.container_config() {
                if !runtime.image_found.load(Ordering::Relaxed) {
                    container.check().await?;
                    runtime.image_found.store(true, Ordering::Relaxed);
                }
            }
            let worker = runtime.spawn_worker(index, events)?;
            Ok(Box::new(worker) as Box<dyn Worker>)
        })
    }

    /// Starts the worker in `image` with [`PythonRuntime::container_for`]; the engine is
    /// asked once per image whether it has it, so a missing image or engine is named in
    /// the error that fails the function's tasks.
    fn spawn_in_image(
        &self,
        index: usize,
        image: &str,
        events: WorkerEvents,
    ) -> BoxFuture<'static, Result<Box<dyn Worker>, SpawnError>> {
        let runtime = self.clone();
        let image = image.to_owned();
        Box::pin(async move {
            let container = runtime.container_for(&image);
            let found = |runtime: &PythonRuntime| match runtime.images_found.lock() {
                Ok(found) => found.contains(&image),
                Err(_) => false, // A panicked holder: check again, it is only slower.
            };
            if !found(&runtime) {
                container.check().await?;
                if let Ok(mut found) = runtime.images_found.lock() {
                    found.insert(image.clone());
                }
            }
            let worker = runtime.spawn_in(Some(&container), index, events)?;
            Ok(Box::new(worker) as Box<dyn Worker>)
        })
    }
}

/// The pipe size asked for a worker's stdin and stdout: a 16 MiB payload then crosses in 16
/// writes instead of 256, each a wake-up of the other side.
const PIPE_SIZE: usize = 1 << 20;

/// Enlarges a worker pipe to [`PIPE_SIZE`] where the system allows it (Linux caps it at
/// `/proc/sys/fs/pipe-max-size` for unprivileged users); a refusal keeps the default size.
fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::pipe::fcntl_setpipe_size(pipe, PIPE_SIZE) {
        tracing::debug!(%error, "kept the default pipe size");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pipe;
}

/// The command that starts worker `id` in slot `index`: on this machine, or in `container`
/// under the container name given with it.
fn command(
    config: &PythonConfig,
    container: Option<&(&Container, String)>,
    index: usize,
    id: WorkerId,
    shared_probe: Option<(u32, RawFd, u64)>,
) -> Command {
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(snippet) = config.init_snippet() {
        // The snippet runs in the shell that then execs Python, so its exports and
        // `source`d environments reach the worker. Its output is sent to stderr: stdout is
        // the protocol pipe.
        argv.extend(["/bin/sh".into(), "-c".into()]);
        argv.push(format!("{{\n{snippet}\n}} >&2\nexec \"$@\"").into());
        argv.push("sh".into());
    }
    argv.push(config.python_path().to_owned());
    argv.extend(["-u".into(), "-c".into(), WORKER_SOURCE.into()]);
    argv.push(config.result_size_limit().to_string().into());
    if let Some((pid, fd, nonce)) = shared_probe {
        // The worker checks that it can open this process's shared files (crate::shared).
        argv.push(pid.to_string().into());
        argv.push(fd.to_string().into());
        argv.push(nonce.to_string().into());
    }

    let mut env: Vec<(OsString, OsString)> = config.environment().to_vec();
    env.push(("FUNCX_WORKER_INDEX".into(), index.to_string().into()));
    env.push(("FUNCX_WORKER_ID".into(), id.0.to_string().into()));
    let tunables_set = std::env::var_os("GLIBC_TUNABLES").is_some()
        || config
            .environment()
            .iter()
            .any(|(k, _)| k == "GLIBC_TUNABLES");
    if !tunables_set {
        env.push(("GLIBC_TUNABLES".into(), MALLOC_TUNABLES.into()));
    }
    if let Some(accelerator) = config.accelerator_for(index) {
        for variable in ACCELERATOR_VARIABLES {
            env.push((variable.into(), accelerator.into()));
        }
    }

    let mut command = match container {
        // Inside a container, the environment and the directory are the container's.
        Some((container, name)) => container.command(
            name,
            env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())),
            config.current_dir(),
            argv,
        ),
        None => {
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]).envs(env);
            if let Some(dir) = config.current_dir() {
                command.current_dir(dir);
            }
            command
        }
    };
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A process group of its own keeps a terminal's Ctrl-C from reaching the workers:
        // the application decides what an interrupt means, and a worker whose parent is
        // gone exits when its stdin closes.
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// A running Python worker process.
///
/// Dropping the handle kills the process.
#[derive(Debug)]
pub struct PythonWorker {
    id: WorkerId,
    pid: Option<u32>,
    tx: mpsc::UnboundedSender<ToWorker>,
    kill: Arc<Notify>,
}

impl PythonWorker {
    /// The worker's id, as its events are tagged.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// The process id of the worker, if it was known at start.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

impl Worker for PythonWorker {
    fn send(&mut self, message: ToWorker) {
        // A worker that is gone reports Exited on its own; the message has nowhere to go.
        let _ = self.tx.send(message);
    }

    fn kill(&mut self) {
        self.kill.notify_one();
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        self.kill.notify_one();
    }
}

/// Feeds the worker's stdin: everything queued is encoded into one batch of writes.
async fn write_messages(
    mut stdin: ChildStdin,
    mut rx: mpsc::UnboundedReceiver<ToWorker>,
    mut encoder: Encoder,
    id: WorkerId,
) {
    while let Some(message) = rx.recv().await {
        let mut shutdown = matches!(message, ToWorker::Shutdown);
        encoder.encode(&message);
        while !shutdown && encoder.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(message) => {
                    shutdown = matches!(message, ToWorker::Shutdown);
                    encoder.encode(&message);
                }
                Err(_) => break,
            }
        }
        for chunk in encoder.take() {
            if let Err(e) = stdin.write_all(&chunk).await {
                // The worker is gone; the reader reports how it ended.
                tracing::debug!(worker = %id, "could not write to worker: {e}");
                return;
            }
        }
        if shutdown {
            break;
        }
    }
    // Dropping stdin closes it: end of input tells the worker to exit once it is done.
    drop(stdin);
}

/// Logs what the worker writes to stderr (including its functions' prints), line by line.
async fn forward_output(mut stderr: ChildStderr, id: WorkerId) {
    let mut line: Vec<u8> = Vec::new();
    let mut chunk = vec![0_u8; 8192];
    loop {
        let n = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &chunk[..n];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..end]);
            log_line(&line, id);
            line.clear();
            rest = &rest[end + 1..];
        }
        line.extend_from_slice(rest);
        while line.len() >= MAX_LOG_LINE {
            log_line(&line[..MAX_LOG_LINE], id);
            line.drain(..MAX_LOG_LINE);
        }
    }
    if !line.is_empty() {
        log_line(&line, id);
    }
}

fn log_line(line: &[u8], id: WorkerId) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = String::from_utf8_lossy(line);
    tracing::info!(target: "funcx::worker", worker = %id, "{line}");
}

/// Reads the worker's stdout, reports its events, and reports how it exited once it is gone.
async fn read_events(
    mut child: Child,
    mut stdout: ChildStdout,
    events: WorkerEvents,
    kill: Arc<Notify>,
    mut output: Output,
    container: Option<(Container, String)>,
) {
    let id = events.worker();
    // Whether the worker was killed rather than left to exit.
    let mut killed = false;
    let mut reading = true;
    // Set once the output is closed: a worker that closed it without exiting is hung.
    let mut exit_deadline: Option<tokio::time::Instant> = None;
    let status = loop {
        tokio::select! {
            biased;
            () = kill.notified() => {
                killed = true;
                let _ = child.start_kill();
            }
            read = output.read_from(&mut stdout), if reading => {
                match read.and_then(|n| handle(n, &mut output, &events)) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Eof) => {
                        reading = false;
                        exit_deadline = Some(tokio::time::Instant::now() + EXIT_GRACE);
                    }
                    Ok(Flow::Abandoned) => {
                        killed = true;
                        let _ = child.start_kill();
                        reading = false;
                    }
                    Err(reason) => {
                        tracing::warn!(worker = %id, "killing worker: {reason}");
                        killed = true;
                        let _ = child.start_kill();
                        reading = false;
                    }
                }
            }
            () = sleep_until(exit_deadline) => {
                tracing::warn!(worker = %id, "killing worker: it closed its output but did not exit");
                killed = true;
                let _ = child.start_kill();
                exit_deadline = None;
            }
            status = child.wait() => break status,
        }
    };
    if reading {
        // The exit can be seen before the last results are read: read on to the end of
        // the pipe, so that every result the worker sent is reported before Exited.
        let drain = async {
            loop {
                let read = output.read_from(&mut stdout).await;
                match read.and_then(|n| handle(n, &mut output, &events)) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Eof | Flow::Abandoned) => break,
                    Err(reason) => {
                        tracing::warn!(worker = %id, "worker sent garbage: {reason}");
                        break;
                    }
                }
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!(worker = %id, "worker exited but its output pipe stayed open");
        }
    }
    let exit = match status {
        Ok(status) => exit_of(status),
        Err(e) => {
            tracing::warn!(worker = %id, "could not read the worker's exit status: {e}");
            WorkerExit::Unknown
        }
    };
    if let Some((container, name)) = container.filter(|_| killed) {
        // Killing `podman run` leaves the container running until the worker inside reads
        // its closed input, which a running task delays: it goes before the exit is
        // reported, so that a killed worker is gone, task and all.
        container.remove(&name).await;
    }
    if let Some(lent) = &output.lent {
        lent.forget_all();
    }
    tracing::debug!(worker = %id, "worker exited: {exit}");
    events.send(WorkerEvent::Exited(exit));
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What the reader does after handling a read.
enum Flow {
    Continue,
    /// The worker closed its output.
    Eof,
    /// The dispatcher is gone; nobody wants the worker any more.
    Abandoned,
}

/// Why reading from the worker stopped.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("could not read from the worker: {0}")]
    Io(#[from] std::io::Error),
}

/// What has been read of a worker's output and not handled yet.
struct Output {
    decoder: Decoder,
    /// Small frames, and the start of large ones.
    buf: BytesMut,
    /// A large frame (a large result) being read into a buffer of the pool.
    large: Option<PooledFrame>,
    pool: BufferPool,
    /// The files lent to the worker's tasks, for a worker that may use them.
    lent: Option<Arc<Lent>>,
}

impl Output {
    fn new(decoder: Decoder, pool: BufferPool, lent: Option<Arc<Lent>>) -> Output {
        Output {
            decoder,
            buf: BytesMut::with_capacity(READ_CHUNK),
            large: None,
            pool,
            lent,
        }
    }

    /// Reads more of the worker's output. Cancel safe: what a read got is kept.
    async fn read_from(&mut self, stdout: &mut ChildStdout) -> Result<usize, ReadError> {
        let frame_len = self.decoder.frame_len(&self.buf)?.unwrap_or(0);
        if self.large.is_none() && frame_len >= POOLED_FRAME_MIN && self.buf.len() < frame_len {
            // Into a buffer of the pool, whose pages are already there, instead of fresh
            // memory; handed out without a copy either way.
            self.large = Some(PooledFrame::start(&self.pool, &mut self.buf, frame_len));
        }
        if let Some(large) = &mut self.large {
            return Ok(large.read_from(stdout).await?);
        }
        // Room for the whole frame that has started arriving.
        let want = frame_len.max(self.buf.len() + READ_CHUNK);
        self.buf.reserve(want - self.buf.len());
        Ok(stdout.read_buf(&mut self.buf).await?)
    }

    /// The next whole frame read, decoded.
    fn next(&mut self) -> Result<Option<FromWorker>, ProtocolError> {
        match self.large.take() {
            Some(large) if large.is_complete() => self
                .decoder
                .decode_frame(large.finish(&self.pool))
                .map(Some),
            Some(large) => {
                self.large = Some(large);
                Ok(None)
            }
            None => self.decoder.decode(&mut self.buf),
        }
    }

    /// Whether part of a frame has been read.
    fn is_inside_a_frame(&self) -> bool {
        !self.buf.is_empty() || self.large.is_some()
    }
}

fn handle(n: usize, output: &mut Output, events: &WorkerEvents) -> Result<Flow, ReadError> {
    if n == 0 {
        if output.is_inside_a_frame() {
            return Err(ProtocolError::Truncated("frame at the end of the output").into());
        }
        return Ok(Flow::Eof);
    }
    let mut results = Vec::new();
    let mut alive = true;
    // Results of consecutive frames go out as one event; anything else goes out in order.
    let outcome = loop {
        match output.next() {
            Ok(None) => break Ok(()),
            Ok(Some(FromWorker::Results(batch))) => {
                if results.is_empty() {
                    results = batch;
                } else {
                    results.extend(batch);
                }
            }
            Ok(Some(FromWorker::Ready {
                pid,
                version,
                shared,
            })) => {
                alive &= flush(&mut results, events);
                tracing::debug!(worker = %events.worker(), pid, version, shared, "worker ready");
                if let (true, Some(lent)) = (shared, &output.lent) {
                    lent.enable();
                }
                alive &= events.send(WorkerEvent::Ready);
            }
            Ok(Some(FromWorker::Started(task))) => {
                alive &= flush(&mut results, events);
                alive &= events.send(WorkerEvent::Started(task));
            }
            Err(e) => break Err(e),
        }
    };
    alive &= flush(&mut results, events);
    outcome?;
    Ok(if alive {
        Flow::Continue
    } else {
        Flow::Abandoned
    })
}

fn flush(results: &mut Vec<funcx_core::worker::WorkResult>, events: &WorkerEvents) -> bool {
    if results.is_empty() {
        return true;
    }
    events.send(WorkerEvent::Results(std::mem::take(results)))
}

fn exit_of(status: ExitStatus) -> WorkerExit {
    match (status.code(), status.signal()) {
        (Some(code), _) => WorkerExit::Code(code),
        (None, Some(signal)) => WorkerExit::Signal(signal),
        (None, None) => WorkerExit::Unknown,
    }
}
