//! Large arguments and results between this process and a local worker through shared
//! memory files (memfds) instead of the worker's pipes.
//!
//! Through a pipe, a 16 MiB argument is copied into the pipe here and out of it in the
//! worker, in 1 MiB turns that wake each side sixteen times, and every page of the pipe is
//! allocated and freed on the way; its result crosses the same way back. Instead, a task
//! whose arguments are [`SHARED_MIN`] bytes or more is *lent* a memfd: its arguments are
//! written into the file, and the `TASKS` frame names the file's descriptor number in this
//! process (flag `SHARED`, see [`crate::protocol`]). The worker opens it as
//! `/proc/<this pid>/fd/<n>`, maps it and unpickles the arguments from the mapping, then
//! writes a large result into the same file (over the same pages) and answers with status
//! `OK_SHARED` and the result's size; the result is read back here into a buffer of the
//! runtime's receive pool. The file then goes back to a free list (bounded in bytes), so the
//! next task reuses its pages.
//!
//! ```text
//!  lend(task): file ◀─ args written        TASKS { SHARED, fd n, sizes } ──▶ worker
//!                                          worker: open /proc/<pid>/fd/n, mmap, run,
//!                                                  pwritev(result) into the file
//!  take_result(task, size) ◀───────────── RESULTS { OK_SHARED, size }
//!     read into a pooled buffer, file back to the free list
//! ```
//!
//! Nothing can leak: a memfd has no name; it lives while a descriptor or a mapping holds
//! it, and the kernel closes those of a process that dies, whichever side it is. A file is
//! held here from lending until the task's first result (any status: the worker opens the
//! file only while it runs the task, and closes it before answering), or until the worker
//! is gone. A worker uses lent files only after it proved at start that it can open this
//! process's descriptors (a probe file with a known text, [`SharedFiles::probe`]): a worker
//! in a container, or one that `/proc` hides this process from, says so in `READY` and gets
//! its arguments through the pipe as before. The text holds a random nonce as well as this
//! process's id, so a worker in another PID namespace, where the same pid is some other
//! funcx process, does not pass the probe on that process's file.
//!
//! Trust: any process of this user can open `/proc/<this pid>/fd/<n>`, so any worker (or
//! anything a task starts) can read and write every file this process lends, to its tasks
//! or another worker's. That is the trust already given: every worker runs as this user,
//! the user whose code every task is, and can signal its siblings and this process.
//!
//! Cost on the runtime's threads: [`Lent::lend`] copies a task's arguments into its file
//! and [`Lent::take_result`] copies a result out, on the Tokio thread that writes to or
//! reads from the worker (one memory copy of the payload: not measured apart, it is part of
//! W6-tcp's time in BENCHMARKS.md), as the pipe's copies are.
//! They are not moved off it with `block_in_place`, which panics on a current-thread
//! runtime, and an executor started outside a runtime runs on one (`funcx-core`'s
//! `run_on_own_thread`); the manager's multi-thread runtime has other threads meanwhile.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use funcx_core::{Payload, TaskError, TaskId};
use funcx_transport::pool::BufferPool;

/// Tasks whose arguments add up to at least this many bytes are lent a file; smaller ones
/// go through the pipe. A 1 MiB payload crosses a worker's 1 MiB pipe in one turn, and
/// lending it a file measured slower (W3-tcp, 1 MiB each way: -5 %) than the pipe's copies;
/// 16 MiB payloads (W6-tcp) gain from it.
pub(crate) const SHARED_MIN: usize = 4 * 1024 * 1024;

/// The most the free list keeps of files between tasks, in bytes: eight 16 MiB files, one
/// per worker of a node that moves 16 MiB payloads.
const FREE_KEEP: u64 = 128 * 1024 * 1024;

/// The memfds of one runtime: the probe that workers open at start, and the files between
/// tasks. Shared by the runtime's workers.
#[derive(Debug)]
pub(crate) struct SharedFiles {
    probe: File,
    /// The random part of the probe's text.
    nonce: u64,
    free: Mutex<Free>,
}

/// Files waiting to be lent again.
#[derive(Debug, Default)]
struct Free {
    files: Vec<(File, u64)>,
    /// The sizes of `files`, together.
    bytes: u64,
}

impl SharedFiles {
    /// Files for this process's workers, or `None` where the system has no memfds (the
    /// workers then use their pipes for everything).
    pub(crate) fn new() -> Option<Arc<SharedFiles>> {
        let probe = new_file("funcx-probe").ok()?;
        let nonce = nonce();
        probe
            .write_all_at(probe_text(std::process::id(), nonce).as_bytes(), 0)
            .ok()?;
        Some(Arc::new(SharedFiles {
            probe,
            nonce,
            free: Mutex::new(Free::default()),
        }))
    }

    /// What a worker is told so it can check that it can open this process's files: this
    /// process's id, the probe's descriptor number and the nonce. The worker opens
    /// `/proc/<pid>/fd/<fd>` and compares what it reads with `funcx-shared <pid> <nonce>`
    /// ([`probe_text`]).
    pub(crate) fn probe(&self) -> (u32, RawFd, u64) {
        (std::process::id(), self.probe.as_raw_fd(), self.nonce)
    }

    /// A file for `len` bytes: the smallest free one that holds them, or any free one, or a
    /// new one.
    fn take(&self, len: u64) -> std::io::Result<File> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let fits = free
            .files
            .iter()
            .enumerate()
            .filter(|(_, (_, size))| *size >= len)
            .min_by_key(|(_, (_, size))| *size)
            .map(|(i, _)| i);
        let pick = fits.or(free.files.len().checked_sub(1));
        if let Some(i) = pick {
            let (file, size) = free.files.swap_remove(i);
            free.bytes -= size;
            return Ok(file);
        }
        drop(free);
        new_file("funcx-payload")
    }

    /// Keeps `file` for the next task, unless the free list is full.
    fn give_back(&self, file: File) {
        let Ok(size) = file.metadata().map(|m| m.len()) else {
            return;
        };
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.bytes + size <= FREE_KEEP {
            free.bytes += size;
            free.files.push((file, size));
        }
    }
}

/// The text of the probe file of process `pid`.
fn probe_text(pid: u32, nonce: u64) -> String {
    format!("funcx-shared {pid} {nonce}")
}

/// A random number: the standard library's hasher keys are drawn from the system's random
/// source, once a process and then stepped, and the clock sets them apart further.
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::hash::RandomState::new().build_hasher();
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}

/// A new memfd, closed on exec (workers are spawned while files are lent to others).
fn new_file(name: &str) -> std::io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
        Ok(File::from(fd))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// The files lent to the tasks of one worker.
#[derive(Debug)]
pub(crate) struct Lent {
    files: Arc<SharedFiles>,
    /// Where results are read into.
    pool: BufferPool,
    /// Set once the worker said (in `READY`) that it can open this process's files.
    usable: AtomicBool,
    lent: Mutex<HashMap<TaskId, File>>,
    /// `lent.len()`, read without the lock: a result of a worker with nothing lent (every
    /// small task) costs one atomic load.
    count: AtomicUsize,
}

impl Lent {
    /// Nothing lent yet, and nothing to lend until [`enable`](Self::enable).
    pub(crate) fn new(files: Arc<SharedFiles>, pool: BufferPool) -> Lent {
        Lent {
            files,
            pool,
            usable: AtomicBool::new(false),
            lent: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
        }
    }

    /// The worker can open this process's files: large arguments may be lent from now on.
    pub(crate) fn enable(&self) {
        self.usable.store(true, Ordering::Relaxed);
    }

    /// Whether a task with `total` bytes of arguments is to be lent a file: they are large
    /// enough, and the worker can open this process's files.
    pub(crate) fn wants(&self, total: usize) -> bool {
        total >= SHARED_MIN && self.usable.load(Ordering::Relaxed)
    }

    /// Writes `payloads` one after the other into a file lent to `task`, and returns the
    /// file's descriptor number for the `TASKS` frame; `None` when the task's arguments go
    /// through the pipe after all: the task already holds a file (sent twice: the worker may
    /// still open the first), or the file could not be written (no memory for it).
    pub(crate) fn lend<'a>(
        &self,
        task: TaskId,
        total: usize,
        payloads: impl Iterator<Item = &'a [u8]>,
    ) -> Option<RawFd> {
        if self
            .lent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&task)
        {
            return None;
        }
        // Written without the lock, which the reader of the worker's results takes.
        let file = match self.write(total as u64, payloads) {
            Ok(file) => file,
            Err(error) => {
                tracing::debug!(%error, "large arguments go through the pipe");
                return None;
            }
        };
        let fd = file.as_raw_fd();
        let mut lent = self.lent.lock().unwrap_or_else(PoisonError::into_inner);
        lent.insert(task, file);
        self.count.store(lent.len(), Ordering::Relaxed);
        Some(fd)
    }

    fn write<'a>(
        &self,
        total: u64,
        payloads: impl Iterator<Item = &'a [u8]>,
    ) -> std::io::Result<File> {
        let file = self.files.take(total)?;
        let mut at = 0;
        for payload in payloads {
            file.write_all_at(payload, at)?;
            at += payload.len() as u64;
        }
        Ok(file)
    }

    /// The result of `task` that its worker wrote into the task's file: `size` bytes of
    /// pickle. The file goes back to the free list, whether the result could be read or not
    /// (a size over the limit or past the file's end is the worker's fault, not the file's).
    pub(crate) fn take_result(
        &self,
        task: TaskId,
        size: u64,
        max_result_size: u64,
    ) -> Result<Payload, TaskError> {
        let Some(file) = self.remove(task) else {
            return Err(TaskError::protocol(format!(
                "the worker reported a result in shared memory for task {task}, which was lent no file"
            )));
        };
        let read = self.read_result(task, &file, size, max_result_size);
        self.files.give_back(file);
        Ok(Payload::from_pickled(self.pool.share(read?)))
    }

    /// The first `size` bytes of `file`, into a buffer of the pool. The size comes from the
    /// worker: it is checked against the limit and the file's length before a buffer is
    /// taken for it.
    fn read_result(
        &self,
        task: TaskId,
        file: &File,
        size: u64,
        max_result_size: u64,
    ) -> Result<Vec<u8>, TaskError> {
        if size > max_result_size {
            return Err(TaskError::result_too_large(size, max_result_size));
        }
        let failed = |e: std::io::Error| {
            TaskError::protocol(format!(
                "could not read the result of task {task} from shared memory: {e}"
            ))
        };
        let file_len = file.metadata().map_err(failed)?.len();
        let len = match usize::try_from(size) {
            Ok(len) if size <= file_len => len,
            _ => {
                return Err(TaskError::protocol(format!(
                    "the worker reported a result of {size} bytes for task {task} in a shared file of {file_len} bytes"
                )))
            }
        };
        let mut buffer = self.pool.take(len);
        buffer.clear();
        buffer.resize(len, 0);
        file.read_exact_at(&mut buffer, 0).map_err(failed)?;
        Ok(buffer)
    }

    /// `task` has a result that did not come through its file (an error, a small result, a
    /// cancellation): the worker is done with the file, which goes back to the free list.
    pub(crate) fn finished(&self, task: TaskId) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(file) = self.remove(task) {
            self.files.give_back(file);
        }
    }

    fn remove(&self, task: TaskId) -> Option<File> {
        let mut lent = self.lent.lock().unwrap_or_else(PoisonError::into_inner);
        let file = lent.remove(&task);
        self.count.store(lent.len(), Ordering::Relaxed);
        file
    }

    /// The worker is gone: the files lent to it are closed (not kept: a process it
    /// started may still hold one open).
    pub(crate) fn forget_all(&self) {
        let mut lent = self.lent.lock().unwrap_or_else(PoisonError::into_inner);
        lent.clear();
        self.count.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime's files and one worker's lent files, with a task lent a file holding
    /// `args`.
    fn lent_task(args: &[u8]) -> (Arc<SharedFiles>, Lent, TaskId) {
        let files = SharedFiles::new().expect("memfds on this system");
        let lent = Lent::new(files.clone(), BufferPool::new(64 << 20));
        lent.enable();
        let task = TaskId::next();
        lent.lend(task, args.len(), [args].into_iter())
            .expect("the file is written");
        (files, lent, task)
    }

    /// The files kept for the next task, in bytes.
    fn kept(files: &SharedFiles) -> u64 {
        files
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    /// Two runtimes of one process (as two processes of one pid in two PID namespaces)
    /// write different probe texts, so a worker cannot take one's file for the other's.
    #[test]
    fn probes_of_the_same_pid_differ_by_their_nonce() {
        let text = |files: &SharedFiles| {
            let mut buffer = [0; 64];
            let n = files.probe.read_at(&mut buffer, 0).expect("read the probe");
            String::from_utf8_lossy(&buffer[..n]).into_owned()
        };
        let (one, two) = (SharedFiles::new().unwrap(), SharedFiles::new().unwrap());
        let prefix = format!("funcx-shared {} ", std::process::id());
        assert!(text(&one).starts_with(&prefix), "{}", text(&one));
        assert_ne!(text(&one), text(&two));
    }

    #[test]
    fn a_result_that_the_worker_wrote_is_read_and_the_file_kept() {
        let (files, lent, task) = lent_task(b"the worker's result");
        let result = lent.take_result(task, 12, 1 << 20).expect("read");
        assert_eq!(result.as_bytes(), b"the worker's");
        assert_eq!(kept(&files), 19);
    }

    #[test]
    fn a_result_size_past_the_files_end_is_refused_and_the_file_kept() {
        let (files, lent, task) = lent_task(b"8 bytes!");
        let error = lent.take_result(task, 1 << 30, 1 << 40).unwrap_err();
        assert!(error.is_protocol(), "{error}");
        assert!(
            error.to_string().contains("in a shared file of 8 bytes"),
            "{error}"
        );
        assert_eq!(kept(&files), 8);
    }

    #[test]
    fn a_result_over_the_limit_is_refused_typed_and_the_file_kept() {
        let (files, lent, task) = lent_task(b"8 bytes!");
        let error = lent.take_result(task, 8, 4).unwrap_err();
        assert!(error.is_result_too_large(), "{error}");
        assert_eq!(kept(&files), 8);
    }
}
