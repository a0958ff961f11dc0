//! The gateway's HTTP API as it travels: the bodies of its requests and answers, and the names
//! its requests use (headers, media type, upgrade protocol). The gateway serves exactly these
//! types (it depends on this crate for them), so a client and the routes cannot disagree.
//!
//! One set of types serves JSON (payloads as base64 text) and postcard ([`POSTCARD`], payloads
//! as raw bytes), so the Rust client and curl read and write the same structures.
//!
//! Types that travel as postcard never skip a field when serializing: postcard has no field
//! names, so an absent field would shift every later one. Optional fields are `null` in JSON.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use funcx_core::{ErrorCode, Format, Resources, TaskError, TaskState, Timeline};
use funcx_transport::frame::FrameCodec;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// The media type of postcard bodies.
pub const POSTCARD: &str = "application/x-postcard";

/// The header that names a submission, so that sending it again does not submit it again.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header on the answer to a resent submission: `true` when the tasks were created by an
/// earlier request with the same key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The protocol an endpoint's `GET /v1/endpoints/{id}/connect` upgrades its connection to: the
/// funcx handshake and manager protocol follow on the same connection.
pub const UPGRADE_PROTOCOL: &str = "funcx-manager-protocol";

/// Bytes in a body: base64 (standard alphabet, padded) in JSON, raw bytes in postcard.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("base64 text (or bytes)")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Blob, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map(Blob)
                    .map_err(|e| E::custom(format_args!("invalid base64: {e}")))
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Blob, E> {
                Ok(Blob(bytes.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(bytes))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visit)
        } else {
            deserializer.deserialize_byte_buf(Visit)
        }
    }
}

/// `POST /v1/functions`: register a function by source or by pickle, optionally in a
/// container image.
///
/// In JSON, `"image"` is written only when there is one, so that a gateway from before
/// functions had images (which refuses fields it does not know) still registers plain ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterFunction {
    /// The entry point (source) or a name for logs (pickle).
    pub name: String,
    /// Python source that defines `name`.
    #[serde(default)]
    pub source: Option<String>,
    /// A pickled callable (`cloudpickle.dumps(f)`).
    #[serde(default)]
    pub pickle: Option<Blob>,
    /// Usable by every user.
    #[serde(default)]
    pub public: bool,
    /// Users who may use it besides its owner.
    #[serde(default)]
    pub shared_with: Vec<String>,
    /// The container image its tasks run in ([`funcx_core::Function::in_image`]), part of its
    /// id; `None` for the endpoint's default workers.
    #[serde(default)]
    pub image: Option<String>,
}

impl Serialize for RegisterFunction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // Postcard has no field names: there every field is written, in order.
        let skip_image = self.image.is_none() && serializer.is_human_readable();
        let mut body = serializer.serialize_struct("RegisterFunction", 6)?;
        body.serialize_field("name", &self.name)?;
        body.serialize_field("source", &self.source)?;
        body.serialize_field("pickle", &self.pickle)?;
        body.serialize_field("public", &self.public)?;
        body.serialize_field("shared_with", &self.shared_with)?;
        if skip_image {
            body.skip_field("image")?;
        } else {
            body.serialize_field("image", &self.image)?;
        }
        body.end()
    }
}

/// The answer to `POST /v1/functions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRegistered {
    /// The content hash, 64 hex digits.
    pub function_id: String,
}

/// `GET /v1/functions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionView {
    /// The content hash.
    pub function_id: String,
    /// Its name.
    pub name: String,
    /// Who registered the record shown.
    pub owner: String,
    /// Usable by everyone.
    pub public: bool,
    /// Who it is shared with (shown to its owner only; empty for others).
    pub shared_with: Vec<String>,
    /// Its source, for a source function.
    pub source: Option<String>,
    /// Its pickle, for a pickled function.
    pub pickle: Option<Blob>,
    /// The container image its tasks run in, if it names one (absent from the answers of
    /// gateways from before functions had images).
    #[serde(default)]
    pub image: Option<String>,
}

/// `POST /v1/endpoints`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterEndpoint {
    /// A name for people.
    pub name: String,
    /// If set, the only functions (ids) it runs.
    #[serde(default)]
    pub allowed_functions: Option<Vec<String>>,
    /// If set, the users besides the owner who may submit to it.
    #[serde(default)]
    pub allowed_users: Option<Vec<String>>,
}

/// The answer to `POST /v1/endpoints`: the token is shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRegistered {
    /// The endpoint's id.
    pub endpoint_id: String,
    /// The secret the endpoint presents when it dials in.
    pub endpoint_token: String,
}

/// `GET /v1/endpoints` and `GET /v1/endpoints/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointView {
    /// Its id.
    pub endpoint_id: String,
    /// Its name.
    pub name: String,
    /// Who registered it.
    pub owner: String,
    /// The functions it is limited to, if any.
    pub allowed_functions: Option<Vec<String>>,
    /// The users besides the owner it accepts, if any.
    pub allowed_users: Option<Vec<String>>,
    /// Its live state.
    pub status: EndpointStatusView,
}

/// An endpoint's live state, from its gateway-side executor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatusView {
    /// At least one manager (endpoint connection) is attached.
    pub connected: bool,
    /// Attached managers.
    pub managers: usize,
    /// Their worker slots.
    pub workers: usize,
    /// Slots running a task.
    pub busy_workers: usize,
    /// Slots free.
    pub idle_workers: usize,
    /// Tasks waiting in the gateway for a slot.
    pub queued: usize,
    /// Tasks sent to the endpoint and unfinished.
    pub in_flight: usize,
}

/// `POST /v1/endpoints/{id}/tasks`.
///
/// In postcard, the tasks, then, only when some task holds whole nodes, each task's node
/// count in order. The counts trail the whole request rather than each task, so that a
/// gateway and a client from before tasks could hold nodes still read every request of
/// the other: postcard ignores bytes after a value, and a request without them has none.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct SubmitRequest {
    /// The tasks, submitted together.
    pub tasks: Vec<SubmitTask>,
}

impl Serialize for SubmitRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        if serializer.is_human_readable() {
            return SubmitRequest::serialize(self, serializer);
        }
        let nodes: Vec<u32> = self
            .tasks
            .iter()
            .map(|task| task.resources.map_or(0, |resources| resources.nodes))
            .collect();
        let with_nodes = nodes.iter().any(|&n| n > 0);
        let mut tuple = serializer.serialize_tuple(if with_nodes { 2 } else { 1 })?;
        tuple.serialize_element(&self.tasks)?;
        if with_nodes {
            tuple.serialize_element(&nodes)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for SubmitRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return SubmitRequest::deserialize(deserializer);
        }
        deserializer.deserialize_tuple(2, BinaryRequest)
    }
}

/// Reads [`SubmitRequest`]'s postcard form, with or without its trailing node counts.
struct BinaryRequest;

impl<'de> de::Visitor<'de> for BinaryRequest {
    type Value = SubmitRequest;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("tasks, then optionally their node counts")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<SubmitRequest, A::Error> {
        let mut tasks: Vec<SubmitTask> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        // The body ends after the tasks when no task holds nodes (or the client predates
        // them): postcard then fails to read more, which here means none.
        let nodes: Vec<u32> = seq.next_element().ok().flatten().unwrap_or_default();
        if nodes.is_empty() {
            return Ok(SubmitRequest { tasks });
        }
        if nodes.len() != tasks.len() {
            return Err(de::Error::custom(format!(
                "node counts for {} tasks in a request of {}",
                nodes.len(),
                tasks.len()
            )));
        }
        for (task, nodes) in tasks.iter_mut().zip(nodes) {
            if nodes > 0 {
                task.resources = special(Resources {
                    nodes,
                    ..task.resources.unwrap_or_default()
                });
            }
        }
        Ok(SubmitRequest { tasks })
    }
}

/// One task of a submission.
///
/// In JSON, `format` (default `"pickle"`) says what `args` and `kwargs` hold: base64 pickles,
/// or with `"format": "json"` plain JSON values, which is what a curl user or a program in
/// any language sends: `{"function_id": "…", "format": "json", "args": [1, "x", {"k": null}]}`.
/// A task's arguments all share its format; its result comes back in it.
///
/// `"resources": {"cores": 4, "gpus": 1, "memory": 1073741824}` (each field optional, cores
/// default 1, memory in bytes) asks for part of the endpoint's machine while the task runs
/// ([`funcx_core::TaskOptions::resources`]); `"nodes": 2` in it holds two whole nodes of one
/// block for a multi-node (MPI) task ([`funcx_core::TaskOptions::nodes`]). Without it, or
/// asking for no more than one core, the task is a plain one.
#[derive(Debug, Clone)]
pub struct SubmitTask {
    /// The function's id (64 hex digits).
    pub function_id: String,
    /// Positional arguments, serialized in `format`.
    pub args: Vec<Blob>,
    /// Keyword arguments, serialized in `format`.
    pub kwargs: BTreeMap<String, Blob>,
    /// How long the task may run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// The data format of every argument.
    pub format: Format,
    /// What the task asks for of the endpoint's machine, whole nodes included; `None` for a
    /// plain task (one core), which is also what a request asking for no more than that is
    /// read as.
    pub resources: Option<Resources>,
}

/// [`SubmitTask`] in postcard: the fields in order, arguments as raw bytes.
#[derive(Serialize, Deserialize)]
struct SubmitTaskBinary {
    function_id: String,
    args: Vec<Blob>,
    kwargs: BTreeMap<String, Blob>,
    timeout_ms: Option<u64>,
    format: Format,
    /// In [`Resources`]' derived encoding, which has no nodes: [`SubmitRequest`] carries
    /// them after all its tasks.
    resources: Option<Resources>,
}

/// [`Resources`] in JSON: every field optional, as a curl user writes only what matters.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory: Option<u64>,
    /// Written only when asked for, so that a gateway from before tasks could hold nodes
    /// (which refuses fields it does not know) still takes every other task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nodes: Option<u32>,
}

impl ResourcesText {
    fn of(resources: &Resources) -> ResourcesText {
        ResourcesText {
            cores: Some(resources.cores),
            gpus: (resources.gpus > 0).then_some(resources.gpus),
            memory: (resources.memory > 0).then_some(resources.memory),
            nodes: (resources.nodes > 0).then_some(resources.nodes),
        }
    }
}

/// What a task asks for as a submission carries it: `None` unless it asks for more than a
/// plain task, so that plain tasks stay plain however they were written.
fn special(resources: Resources) -> Option<Resources> {
    let resources = Resources {
        cores: resources.cores.max(1),
        ..resources
    };
    resources.is_special().then_some(resources)
}

/// [`SubmitTask`] in JSON: arguments are base64 strings or JSON values, as `format` says.
#[derive(Serialize, Deserialize)]
struct SubmitTaskText {
    function_id: String,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    args: Vec<serde_json::Value>,
    #[serde(default)]
    kwargs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resources: Option<ResourcesText>,
}

/// An argument or result as JSON text shows it: a base64 string for a pickle, the value
/// itself for JSON.
fn to_text(format: Format, bytes: &[u8]) -> Result<serde_json::Value, String> {
    match format {
        Format::Json => serde_json::from_slice(bytes)
            .map_err(|e| format!("a JSON payload is not valid JSON: {e}")),
        _ => Ok(serde_json::Value::String(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        )),
    }
}

/// The bytes of an argument or result shown as [`to_text`] does.
fn from_text(format: Format, value: serde_json::Value) -> Result<Blob, String> {
    match (format, value) {
        (Format::Json, value) => serde_json::to_vec(&value)
            .map(Blob)
            .map_err(|e| e.to_string()),
        (_, serde_json::Value::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Blob)
            .map_err(|e| format!("invalid base64: {e}")),
        (format, _) => Err(format!(
            "a {format} payload is base64 text; send plain JSON values with \"format\": \"json\""
        )),
    }
}

impl Serialize for SubmitTask {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return SubmitTaskBinary {
                function_id: self.function_id.clone(),
                args: self.args.clone(),
                kwargs: self.kwargs.clone(),
                timeout_ms: self.timeout_ms,
                format: self.format,
                resources: self.resources.and_then(special),
            }
            .serialize(serializer);
        }
        let text = |blob: &Blob| to_text(self.format, &blob.0).map_err(serde::ser::Error::custom);
        SubmitTaskText {
            function_id: self.function_id.clone(),
            format: Some(self.format),
            args: self.args.iter().map(text).collect::<Result<_, _>>()?,
            kwargs: self
                .kwargs
                .iter()
                .map(|(name, blob)| Ok((name.clone(), text(blob)?)))
                .collect::<Result<_, S::Error>>()?,
            timeout_ms: self.timeout_ms,
            resources: self
                .resources
                .and_then(special)
                .as_ref()
                .map(ResourcesText::of),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SubmitTask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            let task = SubmitTaskBinary::deserialize(deserializer)?;
            return Ok(SubmitTask {
                resources: task.resources.and_then(special),
                function_id: task.function_id,
                args: task.args,
                kwargs: task.kwargs,
                timeout_ms: task.timeout_ms,
                format: task.format,
            });
        }
        let task = SubmitTaskText::deserialize(deserializer)?;
        let format = task.format.unwrap_or(Format::Pickle);
        let blob = |value| from_text(format, value).map_err(de::Error::custom);
        Ok(SubmitTask {
            function_id: task.function_id,
            args: task.args.into_iter().map(blob).collect::<Result<_, _>>()?,
            kwargs: task
                .kwargs
                .into_iter()
                .map(|(name, value)| Ok((name, blob(value)?)))
                .collect::<Result<_, D::Error>>()?,
            timeout_ms: task.timeout_ms,
            format,
            resources: task.resources.and_then(|text| {
                special(Resources {
                    cores: text.cores.unwrap_or(1),
                    gpus: text.gpus.unwrap_or(0),
                    memory: text.memory.unwrap_or(0),
                    nodes: text.nodes.unwrap_or(0),
                })
            }),
        })
    }
}

/// The answer to a submission: one id per task, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// Gateway task ids.
    pub task_ids: Vec<u64>,
}

/// A task as `GET /v1/tasks/{id}`, the batch route and the result events show it.
///
/// In JSON, `result` is base64 text for a pickled result and the value itself for a JSON
/// one (`"result_format": "json"`, the result of a task submitted with JSON arguments).
#[derive(Debug, Clone)]
pub struct TaskView {
    /// Its id.
    pub id: u64,
    /// `queued`, `dispatched`, `running`, `succeeded` or `failed`.
    pub state: TaskState,
    /// When it went through each state.
    pub timeline: Timeline,
    /// The serialized result, once succeeded.
    pub result: Option<Blob>,
    /// The error, once failed, in its stable form ([`funcx_core::TaskErrorReport`]: a `code`
    /// such as `"worker_died"`, the text, and the code's details).
    pub error: Option<TaskError>,
    /// The error as text, for people.
    pub error_message: Option<String>,
    /// The format of `result`, when there is one.
    pub result_format: Option<Format>,
}

/// [`TaskView`] in postcard: the fields in order, the result as raw bytes.
#[derive(Serialize, Deserialize)]
struct TaskViewBinary {
    id: u64,
    state: TaskState,
    timeline: Timeline,
    result: Option<Blob>,
    error: Option<TaskError>,
    error_message: Option<String>,
    result_format: Option<Format>,
}

/// [`TaskView`] in JSON: the result as base64 text or a JSON value, as `result_format` says.
#[derive(Serialize, Deserialize)]
struct TaskViewText {
    id: u64,
    state: TaskState,
    timeline: Timeline,
    result: Option<serde_json::Value>,
    error: Option<TaskError>,
    error_message: Option<String>,
    #[serde(default)]
    result_format: Option<Format>,
}

impl Serialize for TaskView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return TaskViewBinary {
                id: self.id,
                state: self.state,
                timeline: self.timeline,
                result: self.result.clone(),
                error: self.error.clone(),
                error_message: self.error_message.clone(),
                result_format: self.result_format,
            }
            .serialize(serializer);
        }
        let format = self.result_format.unwrap_or(Format::Pickle);
        TaskViewText {
            id: self.id,
            state: self.state,
            timeline: self.timeline,
            result: self
                .result
                .as_ref()
                .map(|blob| to_text(format, &blob.0))
                .transpose()
                .map_err(serde::ser::Error::custom)?,
            error: self.error.clone(),
            error_message: self.error_message.clone(),
            result_format: self.result_format,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TaskView {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            let view = TaskViewBinary::deserialize(deserializer)?;
            return Ok(TaskView {
                id: view.id,
                state: view.state,
                timeline: view.timeline,
                result: view.result,
                error: view.error,
                error_message: view.error_message,
                result_format: view.result_format,
            });
        }
        let view = TaskViewText::deserialize(deserializer)?;
        let format = view.result_format.unwrap_or(Format::Pickle);
        Ok(TaskView {
            id: view.id,
            state: view.state,
            timeline: view.timeline,
            result: view
                .result
                .map(|value| from_text(format, value))
                .transpose()
                .map_err(de::Error::custom)?,
            error: view.error,
            error_message: view.error_message,
            result_format: view.result_format,
        })
    }
}

/// One frame of the binary result stream (`GET /v1/results` with `Accept:
/// application/x-postcard`): on the wire, a `u32` big-endian length, then this structure in
/// postcard ([`ResultFrame::codec`]). A frame carries every result of the caller's that was waiting when it was
/// written; a frame with no results and `lagged == 0` is a keep-alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultFrame {
    /// How many results the gateway dropped for this reader before this frame (it read too
    /// slowly): read outstanding tasks with the batch route when it is not 0.
    pub lagged: u64,
    /// Finished tasks, as `GET /v1/tasks/{id}` shows them.
    pub results: Vec<TaskView>,
}

impl ResultFrame {
    /// The framing of the binary result stream, for its writer and its readers: a `u32`
    /// big-endian length using all 32 bits (no fragment flag: every frame is a whole
    /// [`ResultFrame`]), then the postcard body, up to `u32::MAX` bytes a frame.
    pub fn codec() -> FrameCodec<ResultFrame> {
        FrameCodec::new()
            .without_fragments()
            .max_frame_size(u32::MAX as usize)
            .max_message_size(u32::MAX as usize)
    }
}

/// `GET /v1/tasks?limit=N&before=ID`: the query of a list of the caller's tasks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListTasks {
    /// How many tasks, 1 to [`ListTasks::MAX_LIMIT`] (default [`ListTasks::DEFAULT_LIMIT`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only tasks older than this one (the `next` of the previous page).
    #[serde(default)]
    pub before: Option<u64>,
}

impl ListTasks {
    /// A page's size when the query does not say.
    pub const DEFAULT_LIMIT: usize = 50;
    /// The largest page a query may ask for.
    pub const MAX_LIMIT: usize = 1000;
}

/// One task of a list: what it runs, where, and how it stands, without its arguments or
/// result (`GET /v1/tasks/{id}` has those).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSummary {
    /// Its id.
    pub id: u64,
    /// `queued`, `dispatched`, `running`, `succeeded` or `failed`.
    pub state: TaskState,
    /// The endpoint it was submitted to.
    pub endpoint_id: String,
    /// The function it calls (64 hex digits).
    pub function_id: String,
    /// When it went through each state.
    pub timeline: Timeline,
    /// Why it failed ([`ErrorCode`]), once failed.
    pub error_code: Option<ErrorCode>,
}

/// The answer to `GET /v1/tasks`: the caller's tasks, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskList {
    /// At most `limit` tasks, newest first; fewer when their records are large.
    pub tasks: Vec<TaskSummary>,
    /// When more tasks follow, the `before` of the next page.
    pub next: Option<u64>,
}

/// `POST /v1/tasks/batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRequest {
    /// The tasks to read.
    pub ids: Vec<u64>,
}

/// The answer to `POST /v1/tasks/batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResponse {
    /// The tasks found, in the order asked.
    pub tasks: Vec<TaskView>,
    /// The ids that are unknown (or not the caller's).
    pub not_found: Vec<u64>,
}

#[cfg(test)]
mod tests;
