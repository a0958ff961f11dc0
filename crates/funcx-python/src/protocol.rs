//! The binary frame codec spoken over a worker's stdin and stdout.
//!
//! Every frame, in both directions, is a little-endian length, a kind byte and a body:
//!
//! ```text
//! +-- body_len --+- kind -+------ body ------+
//! |   u32 (LE)   |   u8   | body_len bytes   |
//! +--------------+--------+------------------+
//! ```
//!
//! `body_len` counts the body only, not the five header bytes. All integers are
//! little-endian.
//!
//! # Rust → worker
//!
//! `FUNCTION` (kind 1) defines a function under a key. `form` is 0 for source text, 1 for
//! a pickled callable, and 2 when Rust could not send it (the body is then a reason that
//! every task of the key reports as a load error):
//!
//! ```text
//! +- key -+- form -+- name_len -+-- name --+---------- body ----------+
//! |  u32  |   u8   |    u16     |  utf-8   | rest of the frame        |
//! +-------+--------+------------+----------+--------------------------+
//! ```
//!
//! `TASKS` (kind 2) is a count and that many tasks, run in order. Flag bit 0 is *isolate*;
//! bit 1 marks a task whose arguments did not fit the protocol or mix data formats (it
//! carries none and fails with an arguments error); bit 2 marks a *JSON task*: its
//! arguments are JSON text (read with `json.loads`, not `pickle.loads`) and its result comes
//! back as JSON (status 8). A worker that predates bit 2 would try to unpickle JSON text and
//! fail the task with an arguments error, never run it on wrong values. Bit 3 marks a task
//! with an environment (a task granted GPUs): after its arguments come `u16 count` and that
//! many `u16 len | name | u16 len | value` pairs, set in `os.environ` while it runs.
//! Bit 4 marks a task *lent a shared file* (this crate's `shared` module): a `u32 fd`
//! follows the task's fixed fields, and each argument's `len` is followed by no bytes: the
//! arguments are in that file of the Rust process, one after the other from offset 0, in the
//! order of the frame (positional, then keyword values).
//!
//! ```text
//! +- count -+-- task --+-- task --+ ...
//! |   u32   |          |          |
//! +---------+----------+----------+
//!
//! task:
//! +- task_id -+- key -+- flags -+- nargs -+- nkwargs -+
//! |    u64    |  u32  |   u8    |   u16   |    u16    |
//! +-----------+-------+---------+---------+-----------+
//! then nargs times:   +- len -+-- pickle or JSON --+
//!                     |  u32  |     len bytes      |
//!                     +-------+--------------------+
//! then nkwargs times: +- name_len -+- name -+- len -+-- pickle or JSON --+
//!                     |    u16     | utf-8  |  u32  |     len bytes      |
//!                     +------------+--------+-------+--------------------+
//! ```
//!
//! `CANCEL` (kind 3) is `u32 count` and `count` task ids (`u64`). `SHUTDOWN` (kind 4) has
//! an empty body.
//!
//! # Worker → Rust
//!
//! `READY` (kind 1): `u32 pid | u16 len | version text | u8 flags`, where flag bit 0 says
//! the worker can open the Rust process's shared files (a `READY` without the flags byte
//! has none). `STARTED` (kind 3): `u64 task_id`.
//! `RESULTS` (kind 2):
//!
//! ```text
//! +- count -+-- result --+-- result --+ ...
//! |   u32   |            |            |
//! +---------+------------+------------+
//!
//! result:
//! +- task_id -+- status -+- duration_ns -+- len -+--- body ---+
//! |    u64    |    u8    |      u64      |  u32  | len bytes  |
//! +-----------+----------+---------------+-------+------------+
//! ```
//!
//! Status 0 is success (the body is the pickled return value), 8 success of a JSON task (the
//! body is the return value as JSON text), 5 is a result over the size
//! limit (the body is its `u64` size), 6 cancelled (empty body) and 7 unknown function
//! (the body is the `u32` key), 9 success whose pickled return value the worker wrote into
//! the task's shared file (the body is its `u64` size; only for a task lent one). Statuses 1 (exception), 2 (load error), 3 (arguments would not unpickle) and 4
//! (result would not pickle, or for a JSON task would not become JSON) carry a Python exception:
//!
//! ```text
//! +- len -+- type_name -+- len -+- message -+- len -+- traceback -+- line -+
//! |  u32  |    utf-8    |  u32  |   utf-8   |  u32  |    utf-8    |  i32   |
//! +-------+-------------+-------+-----------+-------+-------------+--------+
//! ```
//!
//! where `line` is -1 when there is none.

use std::time::Duration;

use std::os::fd::RawFd;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use funcx_core::worker::{ToWorker, WorkItem, WorkResult};
use funcx_core::{Format, FunctionBody, Payload, PythonException, TaskError, TaskId};

use crate::shared::Lent;

/// Bytes in a frame header: `u32 body_len | u8 kind`.
pub const HEADER_LEN: usize = 5;

/// Kinds of frames sent to the worker.
pub mod to_worker {
    /// Defines a function.
    pub const FUNCTION: u8 = 1;
    /// Runs tasks.
    pub const TASKS: u8 = 2;
    /// Skips tasks not started yet.
    pub const CANCEL: u8 = 3;
    /// Finishes and exits.
    pub const SHUTDOWN: u8 = 4;
}

/// Kinds of frames the worker sends.
pub mod from_worker {
    /// The worker is up.
    pub const READY: u8 = 1;
    /// Results of finished tasks.
    pub const RESULTS: u8 = 2;
    /// An isolated task started.
    pub const STARTED: u8 = 3;
}

/// Result statuses in a `RESULTS` frame.
pub mod status {
    /// The body is the pickled return value.
    pub const OK: u8 = 0;
    /// The function raised.
    pub const EXCEPTION: u8 = 1;
    /// The function could not be loaded.
    pub const LOAD_ERROR: u8 = 2;
    /// The arguments could not be unpickled.
    pub const ARGS_ERROR: u8 = 3;
    /// The return value could not be pickled.
    pub const RESULT_ERROR: u8 = 4;
    /// The pickled return value was over the limit; the body is its `u64` size.
    pub const TOO_LARGE: u8 = 5;
    /// The task was cancelled before it started.
    pub const CANCELLED: u8 = 6;
    /// The task named a function key the worker was never sent; the body is the `u32` key.
    pub const UNKNOWN_FUNCTION: u8 = 7;
    /// A JSON task's return value, as JSON text.
    pub const OK_JSON: u8 = 8;
    /// The pickled return value is in the task's shared file; the body is its `u64` size.
    pub const OK_SHARED: u8 = 9;
}

const FORM_SOURCE: u8 = 0;
const FORM_PICKLED: u8 = 1;
const FORM_REJECTED: u8 = 2;
const FLAG_ISOLATE: u8 = 1;
const FLAG_REJECTED: u8 = 2;
const FLAG_JSON: u8 = 4;
const FLAG_ENV: u8 = 8;
const FLAG_SHARED: u8 = 16;

/// Payloads up to this size are copied into the frame buffer; bigger ones are written from
/// their own memory, so a 1 GiB argument is never copied.
pub const INLINE_PAYLOAD: usize = 64 * 1024;

/// A `TASKS` frame is closed once it holds this many bytes, so a huge batch never needs a
/// `body_len` over `u32::MAX` (a single task may still be bigger, up to that limit).
const TASKS_FRAME_TARGET: usize = 64 * 1024 * 1024;

/// The largest body a frame can describe.
const MAX_BODY: usize = u32::MAX as usize;

/// Why bytes from a worker are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The header announced a frame bigger than the configured limit.
    #[error("frame of {size} bytes is over the limit of {limit} bytes")]
    FrameTooLarge {
        /// The announced body length.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The kind byte is not one the worker may send.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A result carried a status this codec does not know.
    #[error("unknown result status {0}")]
    UnknownStatus(u8),
    /// A field ran past the end of its frame.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A frame had bytes left over after its last field.
    #[error("{0} bytes left over at the end of a {1} frame")]
    TrailingBytes(usize, &'static str),
}

/// A decoded frame from the worker.
#[derive(Debug)]
pub enum FromWorker {
    /// The worker started.
    Ready {
        /// Its process id.
        pid: u32,
        /// The Python implementation and version it runs.
        version: String,
        /// Whether it can open the shared files of this process.
        shared: bool,
    },
    /// An isolated task started running.
    Started(TaskId),
    /// Finished tasks, in the order they ran.
    Results(Vec<WorkResult>),
}

/// Decodes frames from a worker's stdout.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame_size: usize,
    max_result_size: u64,
    /// The files lent to the worker's tasks, whose `OK_SHARED` results are read from them.
    shared: Option<Arc<Lent>>,
}

impl Decoder {
    /// A decoder that rejects frames whose body is over `max_frame_size` bytes, and reports
    /// too-large results against `max_result_size`.
    pub fn new(max_frame_size: usize, max_result_size: u64) -> Decoder {
        Decoder {
            max_frame_size,
            max_result_size,
            shared: None,
        }
    }

    /// The same decoder, for a worker whose tasks may be lent files of `lent`.
    pub(crate) fn with_shared(self, lent: Arc<Lent>) -> Decoder {
        Decoder {
            shared: Some(lent),
            ..self
        }
    }

    /// How many bytes `buf` must hold before the frame at its start can be decoded, or
    /// `None` when the header is not complete yet. Lets the reader reserve a big frame's
    /// memory once instead of growing the buffer step by step.
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if body_len > self.max_frame_size {
            return Err(ProtocolError::FrameTooLarge {
                size: body_len,
                limit: self.max_frame_size,
            });
        }
        Ok(Some(HEADER_LEN + body_len))
    }

    /// Takes one complete frame off the front of `buf` and decodes it; `Ok(None)` when `buf`
    /// does not hold a whole frame yet. Result payloads share the memory of `buf`.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<FromWorker>, ProtocolError> {
        let Some(len) = self.frame_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < len {
            return Ok(None);
        }
        self.decode_frame(buf.split_to(len).freeze()).map(Some)
    }

    /// Decodes one whole frame, header included, whose length [`frame_len`](Self::frame_len)
    /// gave (a reader that read a large frame into a buffer of its own). Result payloads
    /// share the memory of `frame`.
    pub fn decode_frame(&self, mut frame: Bytes) -> Result<FromWorker, ProtocolError> {
        if frame.len() < HEADER_LEN {
            return Err(ProtocolError::Truncated("frame header"));
        }
        let kind = frame[4];
        frame.advance(HEADER_LEN);
        let mut body = Reader::new(frame);
        let message = match kind {
            from_worker::READY => {
                let pid = body.u32("READY pid")?;
                let len = body.u16("READY version")? as usize;
                let version = body.bytes(len, "READY version")?;
                let flags = if body.remaining() > 0 {
                    body.u8("READY flags")?
                } else {
                    0
                };
                body.finish("READY")?;
                FromWorker::Ready {
                    pid,
                    version: String::from_utf8_lossy(&version).into_owned(),
                    shared: flags & 1 != 0,
                }
            }
            from_worker::STARTED => {
                let id = body.u64("STARTED task id")?;
                body.finish("STARTED")?;
                FromWorker::Started(TaskId::from_u64(id))
            }
            from_worker::RESULTS => {
                let count = body.u32("RESULTS count")? as usize;
                // Each result takes at least 21 bytes, which bounds the allocation by the
                // frame size whatever count claims.
                let mut results = Vec::with_capacity(count.min(body.remaining() / 21));
                for _ in 0..count {
                    results.push(self.result(&mut body)?);
                }
                body.finish("RESULTS")?;
                FromWorker::Results(results)
            }
            other => return Err(ProtocolError::UnknownKind(other)),
        };
        Ok(message)
    }

    fn result(&self, body: &mut Reader) -> Result<WorkResult, ProtocolError> {
        let id = TaskId::from_u64(body.u64("result task id")?);
        let status = body.u8("result status")?;
        let duration = Duration::from_nanos(body.u64("result duration")?);
        let len = body.u32("result length")? as usize;
        let mut data = Reader::new(body.bytes(len, "result body")?);
        let outcome = match status {
            status::OK => Ok(Payload::from_pickled(data.rest())),
            status::OK_JSON => Ok(Payload::from_json(data.rest())),
            status::EXCEPTION => Err(TaskError::python(read_exception(&mut data)?)),
            status::LOAD_ERROR => Err(TaskError::load(read_exception(&mut data)?)),
            status::ARGS_ERROR => Err(TaskError::arguments_unpickle(read_exception(&mut data)?)),
            status::RESULT_ERROR => Err(TaskError::result_pickle(read_exception(&mut data)?)),
            status::TOO_LARGE => {
                let size = data.u64("result size")?;
                data.finish("TOO_LARGE result")?;
                Err(TaskError::result_too_large(size, self.max_result_size))
            }
            status::CANCELLED => {
                data.finish("CANCELLED result")?;
                Err(TaskError::cancelled())
            }
            status::UNKNOWN_FUNCTION => {
                let key = data.u32("UNKNOWN_FUNCTION key")?;
                data.finish("UNKNOWN_FUNCTION result")?;
                // The dispatcher defines every function before using it, so this is a
                // broken conversation, not the function's fault.
                Err(TaskError::protocol(format!(
                    "worker does not know function key {key}"
                )))
            }
            status::OK_SHARED => {
                let size = data.u64("shared result size")?;
                data.finish("OK_SHARED result")?;
                let Some(shared) = &self.shared else {
                    return Err(ProtocolError::UnknownStatus(status));
                };
                return Ok(WorkResult {
                    id,
                    duration,
                    outcome: shared.take_result(id, size, self.max_result_size),
                });
            }
            other => return Err(ProtocolError::UnknownStatus(other)),
        };
        if let Some(shared) = &self.shared {
            shared.finished(id);
        }
        Ok(WorkResult {
            id,
            duration,
            outcome,
        })
    }
}

fn read_exception(data: &mut Reader) -> Result<PythonException, ProtocolError> {
    let type_name = data.string("exception type")?;
    let message = data.string("exception message")?;
    let traceback = data.string("exception traceback")?;
    let line = data.i32("exception line")?;
    data.finish("exception")?;
    Ok(PythonException {
        type_name,
        message,
        traceback,
        line: u32::try_from(line).ok(),
    })
}

/// Bounds-checked little-endian reads from a frame body.
struct Reader {
    bytes: Bytes,
}

impl Reader {
    fn new(bytes: Bytes) -> Reader {
        Reader { bytes }
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ProtocolError> {
        if self.bytes.len() < N {
            return Err(ProtocolError::Truncated(what));
        }
        let mut out = [0; N];
        self.bytes.copy_to_slice(&mut out);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.take::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        self.take(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        self.take(what).map(u32::from_le_bytes)
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        self.take(what).map(i32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        self.take(what).map(u64::from_le_bytes)
    }

    fn bytes(&mut self, len: usize, what: &'static str) -> Result<Bytes, ProtocolError> {
        if self.bytes.len() < len {
            return Err(ProtocolError::Truncated(what));
        }
        Ok(self.bytes.split_to(len))
    }

    fn string(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let len = self.u32(what)? as usize;
        let bytes = self.bytes(len, what)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    fn finish(&self, what: &'static str) -> Result<(), ProtocolError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(ProtocolError::TrailingBytes(n, what)),
        }
    }
}

/// Encodes messages for a worker's stdin into a list of chunks to write in order.
///
/// Headers and small payloads are packed into one buffer; payloads over
/// [`INLINE_PAYLOAD`] become chunks of their own, shared with the caller's [`Payload`]
/// rather than copied.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: BytesMut,
    chunks: Vec<Bytes>,
    len: usize,
    /// Where tasks with large arguments are lent a file, for a worker that can open them.
    shared: Option<Arc<Lent>>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// An empty encoder that lends files of `lent` to tasks with large arguments.
    pub(crate) fn with_shared(lent: Arc<Lent>) -> Encoder {
        Encoder {
            shared: Some(lent),
            ..Encoder::default()
        }
    }

    /// The number of bytes encoded and not yet taken.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting to be taken.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the encoded bytes, as chunks to write one after the other.
    pub fn take(&mut self) -> Vec<Bytes> {
        self.seal();
        self.len = 0;
        std::mem::take(&mut self.chunks)
    }

    fn seal(&mut self) {
        if !self.buf.is_empty() {
            self.chunks.push(self.buf.split().freeze());
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf.put_slice(bytes);
        self.len += bytes.len();
    }

    fn put_shared(&mut self, bytes: &Bytes) {
        if bytes.len() <= INLINE_PAYLOAD {
            self.put(bytes);
        } else {
            self.put_chunk(bytes.clone());
        }
    }

    fn put_payload(&mut self, payload: &Payload) {
        if payload.len() <= INLINE_PAYLOAD {
            self.put(payload.as_bytes());
        } else {
            self.put_chunk(payload.to_bytes());
        }
    }

    /// Appends `bytes` as a chunk of their own, written from their memory.
    fn put_chunk(&mut self, bytes: Bytes) {
        self.seal();
        self.len += bytes.len();
        self.chunks.push(bytes);
    }

    fn header(&mut self, body_len: usize, kind: u8) {
        debug_assert!(body_len <= MAX_BODY);
        self.buf.reserve(HEADER_LEN + body_len.min(INLINE_PAYLOAD));
        self.put(&(body_len as u32).to_le_bytes());
        self.put(&[kind]);
    }

    /// Appends the frames for `message`.
    pub fn encode(&mut self, message: &ToWorker) {
        match message {
            ToWorker::Function { key, function } => {
                let name = truncate(function.name(), u16::MAX as usize);
                let (form, body) = match function.body() {
                    FunctionBody::Source(source) => {
                        (FORM_SOURCE, Bytes::copy_from_slice(source.as_bytes()))
                    }
                    FunctionBody::Pickled(bytes) => (FORM_PICKLED, bytes.clone()),
                };
                let fixed = 4 + 1 + 2 + name.len();
                let (form, body) = if fixed + body.len() > MAX_BODY {
                    let reason = format!(
                        "function of {} bytes is too large for the worker protocol",
                        body.len()
                    );
                    (FORM_REJECTED, Bytes::from(reason))
                } else {
                    (form, body)
                };
                self.header(fixed + body.len(), to_worker::FUNCTION);
                self.put(&key.0.to_le_bytes());
                self.put(&[form]);
                self.put(&(name.len() as u16).to_le_bytes());
                self.put(name.as_bytes());
                self.put_shared(&body);
            }
            ToWorker::Tasks(items) => self.tasks(items),
            // A worker skips a task named in a CANCEL frame if it has not started it, and
            // says so with a cancelled result: exactly what giving it back means.
            ToWorker::Cancel(ids) | ToWorker::Return(ids) => {
                // Bounded so that body_len fits in u32.
                for ids in ids.chunks((MAX_BODY - 4) / 8) {
                    self.header(4 + 8 * ids.len(), to_worker::CANCEL);
                    self.put(&(ids.len() as u32).to_le_bytes());
                    for id in ids {
                        self.put(&id.as_u64().to_le_bytes());
                    }
                }
            }
            ToWorker::Shutdown => self.header(0, to_worker::SHUTDOWN),
        }
    }

    fn tasks(&mut self, items: &[WorkItem]) {
        // The files lent, by position in `items`; empty when none is (every small task).
        let lent = self.lend(items);
        let mut rest = items;
        let mut at = 0;
        while !rest.is_empty() {
            // Group tasks into frames of bounded size; a task always fits in a frame of
            // its own because oversized ones are sent rejected.
            let mut body_len = 4;
            let mut n = 0;
            for (i, item) in rest.iter().enumerate() {
                let shared = lent.get(at + i).copied().flatten().is_some();
                let size = encoded_len(item, shared).unwrap_or(TASK_FIXED);
                if n > 0 && body_len + size > TASKS_FRAME_TARGET {
                    break;
                }
                body_len += size;
                n += 1;
            }
            let (frame, tail) = rest.split_at(n);
            rest = tail;
            self.header(body_len, to_worker::TASKS);
            self.put(&(n as u32).to_le_bytes());
            for item in frame {
                self.task(item, lent.get(at).copied().flatten());
                at += 1;
            }
        }
    }

    /// Lends a file to each task of `items` with large arguments (see
    /// [`Lent::lend`]); the descriptor numbers by position, or an empty list when no task
    /// was lent one.
    fn lend(&self, items: &[WorkItem]) -> Vec<Option<RawFd>> {
        let Some(shared) = &self.shared else {
            return Vec::new();
        };
        let mut lent = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let payloads = || {
                item.args
                    .positional()
                    .iter()
                    .chain(item.args.keyword().iter().map(|(_, payload)| payload))
                    .map(Payload::as_bytes)
            };
            let total = payloads().map(<[u8]>::len).sum();
            if !shared.wants(total) || encoded_len(item, false).is_none() {
                continue;
            }
            if let Some(fd) = shared.lend(item.id, total, payloads()) {
                lent.resize(i, None);
                lent.push(Some(fd));
            }
        }
        lent
    }

    fn task(&mut self, item: &WorkItem, shared: Option<RawFd>) {
        let isolate = if item.isolate { FLAG_ISOLATE } else { 0 };
        let fits = encoded_len(item, shared.is_some()).is_some();
        let env = if item.env.is_empty() { 0 } else { FLAG_ENV };
        let lent = if shared.is_some() { FLAG_SHARED } else { 0 };
        let flags = match item.args.format() {
            _ if !fits => isolate | FLAG_REJECTED,
            Some(Format::Json) => isolate | FLAG_JSON | env | lent,
            _ => isolate | env | lent,
        };
        self.put(&item.id.as_u64().to_le_bytes());
        self.put(&item.function.0.to_le_bytes());
        self.put(&[flags]);
        if !fits {
            self.put(&[0; 4]);
            return;
        }
        let positional = item.args.positional();
        let keyword = item.args.keyword();
        self.put(&(positional.len() as u16).to_le_bytes());
        self.put(&(keyword.len() as u16).to_le_bytes());
        if let Some(fd) = shared {
            // Descriptor numbers are never negative.
            self.put(&(fd as u32).to_le_bytes());
        }
        for payload in positional {
            self.put(&(payload.len() as u32).to_le_bytes());
            if shared.is_none() {
                self.put_payload(payload);
            }
        }
        for (name, payload) in keyword {
            self.put(&(name.len() as u16).to_le_bytes());
            self.put(name.as_bytes());
            self.put(&(payload.len() as u32).to_le_bytes());
            if shared.is_none() {
                self.put_payload(payload);
            }
        }
        if !item.env.is_empty() {
            self.put(&(item.env.len() as u16).to_le_bytes());
            for (name, value) in &item.env {
                for text in [name, value] {
                    self.put(&(text.len() as u16).to_le_bytes());
                    self.put(text.as_bytes());
                }
            }
        }
    }
}

/// The encoded size of a task sent with its arguments, or `None` when it is sent rejected
/// (see [`task_len`] and [`funcx_core::Args::format`]).
fn encoded_len(item: &WorkItem, shared: bool) -> Option<usize> {
    item.args.format()?;
    task_len(item, shared)
}

/// Bytes of a task with no arguments.
const TASK_FIXED: usize = 8 + 4 + 1 + 2 + 2;

/// The encoded size of a task, or `None` when it cannot be encoded (too many arguments, a
/// keyword name over `u16`, more than a frame can hold).
fn task_len(item: &WorkItem, shared: bool) -> Option<usize> {
    let positional = item.args.positional();
    let keyword = item.args.keyword();
    if positional.len() > u16::MAX as usize || keyword.len() > u16::MAX as usize {
        return None;
    }
    // The arguments of a task lent a file are in the file, not in the frame.
    let inline = |payload: &Payload| if shared { 0 } else { payload.len() };
    let mut len = TASK_FIXED + if shared { 4 } else { 0 };
    for payload in positional {
        len = len.checked_add(4 + inline(payload))?;
    }
    for (name, payload) in keyword {
        if name.len() > u16::MAX as usize {
            return None;
        }
        len = len.checked_add(2 + name.len() + 4 + inline(payload))?;
    }
    if !item.env.is_empty() {
        if item.env.len() > u16::MAX as usize {
            return None;
        }
        len = len.checked_add(2)?;
        for (name, value) in &item.env {
            if name.len() > u16::MAX as usize || value.len() > u16::MAX as usize {
                return None;
            }
            len = len.checked_add(4 + name.len() + value.len())?;
        }
    }
    // Leaves room for the frame's own count.
    (len <= MAX_BODY - 4).then_some(len)
}

/// `text` cut to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Builds the frames a worker sends; for tests of the decoder and of code that consumes it,
/// and the seeds of the `worker-output` fuzz target (feature `fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub mod build {
    use super::*;

    /// One frame: length, kind, body.
    pub fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(body);
        out
    }

    /// One result record of a RESULTS frame.
    pub fn result(id: u64, status: u8, body: &[u8]) -> Vec<u8> {
        let mut out = id.to_le_bytes().to_vec();
        out.push(status);
        out.extend_from_slice(&1234_u64.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// A RESULTS frame of `results` (from [`result`]).
    pub fn results(results: &[Vec<u8>]) -> Vec<u8> {
        let mut body = (results.len() as u32).to_le_bytes().to_vec();
        for r in results {
            body.extend_from_slice(r);
        }
        frame(from_worker::RESULTS, &body)
    }

    /// The body of a failed result: the exception's type, message, traceback and line.
    pub fn exception(type_name: &str, message: &str, traceback: &str, line: i32) -> Vec<u8> {
        let mut out = Vec::new();
        for s in [type_name, message, traceback] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&line.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use funcx_core::worker::FunctionKey;
    use funcx_core::{Args, Function};

    fn decoder() -> Decoder {
        Decoder::new(1 << 20, 1000)
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<FromWorker>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(message) = decoder().decode(&mut buf)? {
            out.push(message);
        }
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        Ok(out)
    }

    fn one_result(result: Vec<u8>) -> Result<WorkResult, ProtocolError> {
        let mut messages = decode_all(&results(&[result]))?;
        match messages.pop() {
            Some(FromWorker::Results(mut results)) => Ok(results.remove(0)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decodes_ready_and_started() {
        let mut body = 42_u32.to_le_bytes().to_vec();
        body.extend_from_slice(&4_u16.to_le_bytes());
        body.extend_from_slice(b"3.11");
        let mut bytes = frame(from_worker::READY, &body);
        bytes.extend(frame(from_worker::STARTED, &7_u64.to_le_bytes()));
        let messages = decode_all(&bytes).unwrap();
        assert!(
            matches!(&messages[0], FromWorker::Ready { pid: 42, version, shared: false } if version == "3.11")
        );
        assert!(matches!(messages[1], FromWorker::Started(id) if id.as_u64() == 7));
    }

    #[test]
    fn decodes_every_status() {
        let ok = one_result(result(1, status::OK, b"\x80\x04K\x07.")).unwrap();
        assert_eq!(ok.id.as_u64(), 1);
        assert_eq!(ok.duration, Duration::from_nanos(1234));
        assert_eq!(ok.outcome.unwrap().decode::<i64>().unwrap(), 7);

        let exc = exception("ValueError", "bad", "Traceback", -1);
        let err = one_result(result(2, status::EXCEPTION, &exc))
            .unwrap()
            .outcome
            .unwrap_err();
        assert!(err.is_python());
        let e = err.python_exception().unwrap();
        assert_eq!(
            (&*e.type_name, &*e.message, &*e.traceback, e.line),
            ("ValueError", "bad", "Traceback", None)
        );

        let exc = exception("SyntaxError", "oops", "", 3);
        let err = one_result(result(3, status::LOAD_ERROR, &exc))
            .unwrap()
            .outcome
            .unwrap_err();
        assert!(err.is_load());
        assert_eq!(err.python_exception().unwrap().line, Some(3));

        for (st, check) in [
            (
                status::ARGS_ERROR,
                TaskError::is_serialization as fn(&TaskError) -> bool,
            ),
            (status::RESULT_ERROR, TaskError::is_serialization),
        ] {
            let err = one_result(result(4, st, &exc))
                .unwrap()
                .outcome
                .unwrap_err();
            assert!(check(&err), "{err}");
        }

        let err = one_result(result(5, status::TOO_LARGE, &5000_u64.to_le_bytes()))
            .unwrap()
            .outcome
            .unwrap_err();
        assert!(err.is_result_too_large());
        assert!(err.to_string().contains("5000") && err.to_string().contains("1000"));

        let err = one_result(result(6, status::CANCELLED, b""))
            .unwrap()
            .outcome
            .unwrap_err();
        assert!(err.is_cancelled());

        let err = one_result(result(7, status::UNKNOWN_FUNCTION, &12_u32.to_le_bytes()))
            .unwrap()
            .outcome
            .unwrap_err();
        assert!(
            err.is_protocol() && err.to_string().contains("key 12"),
            "{err}"
        );
    }

    #[test]
    fn results_share_the_read_buffer() {
        // Larger than a payload holds in place: those are copied, as `de` is.
        let large = [7_u8; 64];
        let bytes = results(&[result(1, status::OK, &large), result(2, status::OK, b"de")]);
        let mut buf = BytesMut::from(&bytes[..]);
        let start = buf.as_ptr() as usize;
        let Some(FromWorker::Results(results)) = decoder().decode(&mut buf).unwrap() else {
            panic!("no results");
        };
        let payload = results[0].outcome.as_ref().unwrap();
        let at = payload.as_bytes().as_ptr() as usize;
        assert!(at > start && at < start + bytes.len(), "payload was copied");
        assert_eq!(results[1].outcome.as_ref().unwrap().as_bytes(), b"de");
    }

    #[test]
    fn waits_for_a_whole_frame() {
        let bytes = results(&[result(1, status::OK, b"abc")]);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert!(
                decoder().decode(&mut buf).unwrap().is_none(),
                "cut at {cut}"
            );
            assert_eq!(buf.len(), cut);
        }
        assert_eq!(decoder().frame_len(&bytes[..5]), Ok(Some(bytes.len())));
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(
            decode_all(&frame(9, b"")).unwrap_err(),
            ProtocolError::UnknownKind(9)
        );
        assert_eq!(
            decode_all(&results(&[result(1, 42, b"")])).unwrap_err(),
            ProtocolError::UnknownStatus(42)
        );
        // A frame too short for its own fields.
        assert!(matches!(
            decode_all(&frame(from_worker::STARTED, b"1234")).unwrap_err(),
            ProtocolError::Truncated(_)
        ));
        assert!(matches!(
            decode_all(&frame(from_worker::STARTED, b"123456789")).unwrap_err(),
            ProtocolError::TrailingBytes(1, _)
        ));
        // A result whose length runs past the frame.
        let mut r = result(1, status::OK, b"abc");
        r.truncate(r.len() - 1);
        assert!(matches!(
            decode_all(&results(&[r])).unwrap_err(),
            ProtocolError::Truncated(_)
        ));
        // A count that promises more results than there are.
        let mut body = 1_000_000_u32.to_le_bytes().to_vec();
        body.extend(result(1, status::OK, b"x"));
        assert!(matches!(
            decode_all(&frame(from_worker::RESULTS, &body)).unwrap_err(),
            ProtocolError::Truncated(_)
        ));
        // An exception body cut short, or with a string length past its end.
        let exc = exception("E", "m", "t", 1);
        for cut in 0..exc.len() {
            let err = decode_all(&results(&[result(1, status::EXCEPTION, &exc[..cut])]));
            assert!(matches!(err, Err(ProtocolError::Truncated(_))), "cut {cut}");
        }
        let mut exc = exception("E", "m", "t", 1);
        exc[0] = 0xff;
        assert!(decode_all(&results(&[result(1, status::EXCEPTION, &exc)])).is_err());
        assert!(decode_all(&results(&[result(1, status::CANCELLED, b"x")])).is_err());
        assert!(decode_all(&results(&[result(1, status::TOO_LARGE, b"1234")])).is_err());
    }

    #[test]
    fn oversized_frames_are_rejected_before_they_arrive() {
        let mut header = u32::MAX.to_le_bytes().to_vec();
        header.push(from_worker::RESULTS);
        let mut buf = BytesMut::from(&header[..]);
        let err = decoder().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }), "{err}");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let exc = exception("E\u{fffd}", "m", "t", -1);
        let mut raw = exc.clone();
        // Turn the three bytes of U+FFFD into invalid UTF-8.
        raw[5] = 0xff;
        raw[6] = 0xfe;
        raw[7] = 0xfd;
        let err = one_result(result(1, status::EXCEPTION, &raw))
            .unwrap()
            .outcome
            .unwrap_err();
        assert!(err.python_exception().unwrap().type_name.starts_with('E'));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A tiny deterministic generator keeps the test free of dependencies.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = results(&[
            result(1, status::OK, b"abc"),
            result(2, status::EXCEPTION, &exception("E", "m", "t", 3)),
            result(3, status::TOO_LARGE, &9_u64.to_le_bytes()),
        ]);
        for _ in 0..20_000 {
            let mut bytes = valid.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decoder().decode(&mut buf) {}
        }
    }

    fn body_of(encoder: &mut Encoder) -> Vec<u8> {
        encoder.take().concat()
    }

    #[test]
    fn encodes_functions() {
        let mut encoder = Encoder::new();
        encoder.encode(&ToWorker::Function {
            key: FunctionKey(3),
            function: Function::from_source("def f(): pass", "f"),
        });
        let bytes = body_of(&mut encoder);
        let mut expected = Vec::new();
        expected.extend(3_u32.to_le_bytes());
        expected.push(FORM_SOURCE);
        expected.extend(1_u16.to_le_bytes());
        expected.extend(b"f");
        expected.extend(b"def f(): pass");
        assert_eq!(bytes, frame(to_worker::FUNCTION, &expected));
    }

    #[test]
    fn encodes_tasks_cancel_and_shutdown() {
        let id = TaskId::from_u64(9);
        let args = Args::new().arg(&1).kwarg("k", &2);
        let mut encoder = Encoder::new();
        encoder.encode(&ToWorker::Tasks(vec![WorkItem {
            id,
            function: FunctionKey(5),
            isolate: true,
            args: args.clone(),
            timeout: None,
            trace: None,
            env: Vec::new(),
            resources: None,
        }]));
        encoder.encode(&ToWorker::Cancel(vec![id]));
        encoder.encode(&ToWorker::Shutdown);
        let len = encoder.len();
        let bytes = body_of(&mut encoder);
        assert_eq!(len, bytes.len());
        assert!(encoder.is_empty());

        let mut task = 1_u32.to_le_bytes().to_vec();
        task.extend(9_u64.to_le_bytes());
        task.extend(5_u32.to_le_bytes());
        task.push(FLAG_ISOLATE);
        task.extend(1_u16.to_le_bytes());
        task.extend(1_u16.to_le_bytes());
        let a = args.positional()[0].as_bytes();
        task.extend((a.len() as u32).to_le_bytes());
        task.extend(a);
        task.extend(1_u16.to_le_bytes());
        task.extend(b"k");
        let k = args.keyword()[0].1.as_bytes();
        task.extend((k.len() as u32).to_le_bytes());
        task.extend(k);
        let mut expected = frame(to_worker::TASKS, &task);
        let mut cancel = 1_u32.to_le_bytes().to_vec();
        cancel.extend(9_u64.to_le_bytes());
        expected.extend(frame(to_worker::CANCEL, &cancel));
        expected.extend(frame(to_worker::SHUTDOWN, b""));
        assert_eq!(bytes, expected);
    }

    #[test]
    fn big_payloads_are_not_copied() {
        let big = Payload::from_pickled(vec![7_u8; INLINE_PAYLOAD + 1]);
        let mut encoder = Encoder::new();
        encoder.encode(&ToWorker::Tasks(vec![WorkItem {
            id: TaskId::from_u64(1),
            function: FunctionKey(0),
            isolate: false,
            args: Args::new().payload(big.clone()).arg(&1),
            timeout: None,
            trace: None,
            env: Vec::new(),
            resources: None,
        }]));
        let small = Payload::pickle(&1).unwrap().len();
        let chunks = encoder.take();
        assert_eq!(chunks.len(), 3, "header, payload, tail");
        assert_eq!(chunks[1].as_ptr(), big.as_bytes().as_ptr());
        let total: usize = chunks.iter().map(Bytes::len).sum();
        assert_eq!(
            total,
            HEADER_LEN + 4 + TASK_FIXED + 4 + big.len() + 4 + small
        );
    }

    #[test]
    fn oversized_batches_are_split_into_frames() {
        let payload = Payload::from_pickled(vec![0_u8; 16 * 1024 * 1024]);
        let items: Vec<WorkItem> = (0..10)
            .map(|i| WorkItem {
                id: TaskId::from_u64(i),
                function: FunctionKey(0),
                isolate: false,
                args: Args::new().payload(payload.clone()),
                timeout: None,
                trace: None,
                env: Vec::new(),
                resources: None,
            })
            .collect();
        let mut encoder = Encoder::new();
        encoder.encode(&ToWorker::Tasks(items));
        let bytes = body_of(&mut encoder);
        let mut at = 0;
        let mut tasks = 0;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert!(len <= TASKS_FRAME_TARGET);
            tasks += u32::from_le_bytes(bytes[at + 5..at + 9].try_into().unwrap());
            at += HEADER_LEN + len;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(tasks, 10);
    }

    #[test]
    fn tasks_that_do_not_fit_are_sent_rejected() {
        let mut args = Args::new();
        for _ in 0..=u16::MAX as usize {
            args = args.payload(Payload::from_pickled(&b"N."[..]));
        }
        let mut encoder = Encoder::new();
        encoder.encode(&ToWorker::Tasks(vec![WorkItem {
            id: TaskId::from_u64(1),
            function: FunctionKey(0),
            isolate: false,
            args,
            timeout: None,
            trace: None,
            env: Vec::new(),
            resources: None,
        }]));
        let bytes = body_of(&mut encoder);
        assert_eq!(bytes.len(), HEADER_LEN + 4 + TASK_FIXED);
        assert_eq!(bytes[HEADER_LEN + 4 + 12], FLAG_REJECTED);
    }

    fn task_frame(args: Args) -> Vec<u8> {
        let mut encoder = Encoder::new();
        encoder.encode(&ToWorker::Tasks(vec![WorkItem {
            id: TaskId::from_u64(1),
            function: FunctionKey(0),
            isolate: false,
            args,
            timeout: None,
            trace: None,
            env: Vec::new(),
            resources: None,
        }]));
        body_of(&mut encoder)
    }

    #[test]
    fn json_tasks_are_flagged_and_mixed_formats_sent_rejected() {
        let json = task_frame(Args::new().payload(Payload::from_json(&b"[1]"[..])));
        assert_eq!(json[HEADER_LEN + 4 + 12], FLAG_JSON);
        assert_eq!(json.len(), HEADER_LEN + 4 + TASK_FIXED + 4 + 3);
        let pickle = task_frame(Args::new().payload(Payload::from_pickled(&b"N."[..])));
        assert_eq!(pickle[HEADER_LEN + 4 + 12], 0);
        // Mixed formats: the frame's length matches the argument-less task actually sent.
        let mixed = task_frame(
            Args::new()
                .payload(Payload::from_json(&b"1"[..]))
                .kwarg_payload("x", Payload::from_pickled(&b"N."[..])),
        );
        assert_eq!(mixed.len(), HEADER_LEN + 4 + TASK_FIXED);
        assert_eq!(mixed[HEADER_LEN + 4 + 12], FLAG_REJECTED);

        let ok = one_result(result(1, status::OK_JSON, b"[1,2]")).unwrap();
        let payload = ok.outcome.unwrap();
        assert_eq!(payload.format(), Format::Json);
        assert_eq!(payload.decode::<Vec<i64>>().unwrap(), [1, 2]);
    }

    #[test]
    fn shared_results_need_a_file_lent_to_their_task() {
        let shared = result(1, status::OK_SHARED, &(4_u64 << 20).to_le_bytes());
        // A worker that was lent nothing cannot answer from a file.
        assert_eq!(
            decode_all(&results(std::slice::from_ref(&shared))).unwrap_err(),
            ProtocolError::UnknownStatus(status::OK_SHARED)
        );
        let Some(files) = crate::shared::SharedFiles::new() else {
            return; // No memfds here: nothing is ever lent.
        };
        let lent = Arc::new(Lent::new(files, funcx_transport::pool::BufferPool::new(0)));
        let mut buf = BytesMut::from(&results(&[shared])[..]);
        let Some(FromWorker::Results(mut out)) =
            decoder().with_shared(lent).decode(&mut buf).unwrap()
        else {
            panic!("no results");
        };
        let error = out.remove(0).outcome.unwrap_err();
        assert!(
            error.is_protocol() && error.to_string().contains("lent no file"),
            "{error}"
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
