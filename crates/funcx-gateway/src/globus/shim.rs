//! How a Globus Compute task runs on an ordinary funcx worker without the gateway ever
//! unpickling anything: one fixed Python function (the *shim*) that the gateway registers as
//! a source function, whose arguments are the task's Globus-Compute-serialized strings.
//!
//! The shim imports `globus_compute_sdk.serialize.ComputeSerializer` from the workers' own
//! Python (so the SDK must be installed there; funcx's native tasks need nothing but the
//! standard library and never load it), deserializes the function and its arguments exactly
//! as a Globus Compute endpoint would, calls it, and returns a triple of strings: the status
//! (`"success"` or `"failed"`), the result serialized with the task's result serializers or
//! the remote traceback, and the worker's environment details as JSON. The gateway reads
//! that triple (plain strings, decoded with `serde-pickle`) and relays the opaque result.
//!
//! Around the call, the shim sets what a Globus Compute endpoint's engine would: for a task
//! with a resource specification, the `PARSL_*` variables an `MPIFunction` launches with
//! (from the nodes funcx granted the task); for a `ShellFunction`, a sandbox directory of
//! its own (`GC_TASK_SANDBOX_DIR`). It restores the worker's environment and working
//! directory after the call and removes the sandbox, so the next task on the warm worker
//! sees none of it. The source is `shim.py`.

use funcx_core::{Args, Function, Payload, TaskError, TASK_PLACEMENT_PY};
use serde::Serialize;

use super::resource_spec::ResourceSpecification;

/// The shim's entry point.
pub(crate) const SHIM_NAME: &str = "_funcx_globus_compute_task";

/// The shim's own source, after funcx-core's [`TASK_PLACEMENT_PY`] (the granted hosts and
/// sandboxes, as funcx's shell functions have them). Deserialized functions are cached per
/// worker by their serialized form, so a warm worker deserializes each function once.
const SHIM_PY: &str = include_str!("shim.py");

/// The shim as a funcx function (its id is the hash of its source, the same everywhere).
pub(crate) fn shim() -> Function {
    Function::from_source(format!("{TASK_PLACEMENT_PY}\n\n{SHIM_PY}"), SHIM_NAME)
}

/// The arguments of one task: the packed function, the packed arguments, and the result
/// serializers, each pickled as Python `str` / `list[str]`; with a resource specification,
/// also the keyword `resource_specification` (its JSON text), from which the shim sets the
/// MPI launch variables for the call. A task without one has the arguments it always had.
pub(crate) fn task_args(
    function_code: &str,
    payload: &str,
    result_serializers: &[String],
    spec: Option<&ResourceSpecification>,
) -> Result<Args, TaskError> {
    let args = Args::new()
        .payload(pickle(&function_code)?)
        .payload(pickle(&payload)?)
        .payload(pickle(&result_serializers)?);
    Ok(match spec {
        Some(spec) => args.kwarg_payload("resource_specification", pickle(&spec.to_json())?),
        None => args,
    })
}

fn pickle<T: Serialize + ?Sized>(value: &T) -> Result<Payload, TaskError> {
    Payload::pickle(value)
}

/// What a Globus Compute task came to, as its clients show it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    /// The serialized result (success) or the traceback text (failure).
    pub(crate) data: String,
    /// `None` on success; the error code (`RemoteExecutionError`, ...) on failure.
    pub(crate) error_code: Option<&'static str>,
    /// The worker's environment, as the SDK's version-mismatch warning reads it.
    pub(crate) details: serde_json::Value,
}

impl Outcome {
    /// Whether the task failed.
    pub(crate) fn is_error(&self) -> bool {
        self.error_code.is_some()
    }
}

/// Reads what the shim returned, or the funcx error the task ended with (the shim itself
/// failing, a lost worker, a timeout, a cancellation).
pub(crate) fn outcome(result: &Result<Payload, TaskError>, endpoint_id: &str) -> Outcome {
    let mut outcome = match result {
        Ok(payload) => match payload.decode::<(String, String, String)>() {
            Ok((status, data, details)) => Outcome {
                error_code: (status != "success").then_some("RemoteExecutionError"),
                data,
                details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
            },
            Err(error) => Outcome {
                data: format!("the worker returned something other than the Globus Compute shim's answer: {error}"),
                error_code: Some("InternalError"),
                details: serde_json::Value::Null,
            },
        },
        Err(error) => Outcome {
            data: match error.python_exception() {
                Some(python) if !python.traceback.is_empty() => python.traceback.clone(),
                _ => error.to_string(),
            },
            error_code: Some(if error.is_cancelled() {
                "TaskCancelled"
            } else {
                "RemoteExecutionError"
            }),
            details: serde_json::Value::Null,
        },
    };
    if let serde_json::Value::Object(details) = &mut outcome.details {
        details.insert("endpoint_id".into(), endpoint_id.into());
    }
    outcome
}
