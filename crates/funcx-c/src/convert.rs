//! JSON text to pickled arguments, and pickled results to JSON text.

use funcx::{Args, Payload, TaskError};
use serde_json::Value;

use crate::error::FuncxError;

const SHAPE: &str =
    "arguments are a JSON array of positional arguments, or an object {\"args\": [...], \"kwargs\": {...}}";

/// Parses `json` into the arguments of a call: an array is the positional arguments; an
/// object has an `args` array and/or a `kwargs` object and nothing else. Each value is
/// pickled as Python sees JSON: numbers, strings, lists, dicts, `True`/`False`, `None`.
pub(crate) fn args_from_json(json: &str) -> Result<Args, FuncxError> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| FuncxError::invalid(format!("the arguments are not JSON: {e}")))?;
    let (positional, keyword) = match value {
        Value::Array(positional) => (positional, serde_json::Map::new()),
        Value::Object(mut object) => {
            let positional = match object.remove("args") {
                None => Vec::new(),
                Some(Value::Array(positional)) => positional,
                Some(_) => {
                    return Err(FuncxError::invalid(format!(
                        "\"args\" is not an array: {SHAPE}"
                    )))
                }
            };
            let keyword = match object.remove("kwargs") {
                None => serde_json::Map::new(),
                Some(Value::Object(keyword)) => keyword,
                Some(_) => {
                    return Err(FuncxError::invalid(format!(
                        "\"kwargs\" is not an object: {SHAPE}"
                    )))
                }
            };
            if let Some(other) = object.keys().next() {
                return Err(FuncxError::invalid(format!(
                    "unexpected key {other:?}: {SHAPE}"
                )));
            }
            (positional, keyword)
        }
        _ => return Err(FuncxError::invalid(SHAPE)),
    };
    let args = positional
        .iter()
        .fold(Args::new(), |args, value| args.arg(value));
    let args = keyword
        .iter()
        .fold(args, |args, (name, value)| args.kwarg(name.clone(), value));
    // Any JSON value pickles; this only reports a bug.
    args.validate().map_err(FuncxError::from)?;
    Ok(args)
}

/// The result as JSON text. Python tuples become arrays and `None` null; a result JSON cannot
/// hold (bytes, a dict with non-string keys, an object only Python knows) is a serialization
/// error that says so.
pub(crate) fn result_to_json(payload: &Payload) -> Result<String, TaskError> {
    // Through `Payload::decode`, whose nesting limit keeps a hostile result from overflowing
    // the caller's stack, as serde-pickle alone would.
    let value: Value = payload.decode().map_err(|e| {
        TaskError::decode(format!(
            "{e}; the result is not JSON-shaped (use funcx_task_wait_pickle for it)"
        ))
    })?;
    serde_json::to_string(&value).map_err(TaskError::decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_positional_and_objects_carry_kwargs() {
        let args = args_from_json("[1, \"two\", [3.5, null], {\"k\": true}]").unwrap();
        assert_eq!(args.positional().len(), 4);
        assert!(args.keyword().is_empty());
        let decoded: (
            i64,
            String,
            Vec<Option<f64>>,
            std::collections::HashMap<String, bool>,
        ) = (
            args.positional()[0].decode().unwrap(),
            args.positional()[1].decode().unwrap(),
            args.positional()[2].decode().unwrap(),
            args.positional()[3].decode().unwrap(),
        );
        assert_eq!(decoded.0, 1);
        assert_eq!(decoded.1, "two");
        assert_eq!(decoded.2, vec![Some(3.5), None]);
        assert!(decoded.3["k"]);

        let args = args_from_json("{\"args\": [1], \"kwargs\": {\"factor\": 3}}").unwrap();
        assert_eq!(args.positional().len(), 1);
        assert_eq!(args.keyword()[0].0, "factor");
        assert_eq!(args.keyword()[0].1.decode::<i64>().unwrap(), 3);
    }

    #[test]
    fn bad_shapes_are_refused_with_the_reason() {
        for (json, says) in [
            ("[1,", "not JSON"),
            ("42", "JSON array"),
            ("{\"args\": 1}", "\"args\" is not an array"),
            ("{\"kwargs\": []}", "\"kwargs\" is not an object"),
            ("{\"arg\": []}", "unexpected key \"arg\""),
        ] {
            let error = args_from_json(json).unwrap_err();
            assert_eq!(error.kind, crate::FuncxErrorKind::InvalidArgument, "{json}");
            let message = error.message.to_str().unwrap();
            assert!(message.contains(says), "{json}: {message}");
        }
    }

    #[test]
    fn results_round_trip_to_json_and_bytes_are_refused() {
        let payload = Payload::pickle(&(1, "a", vec![0.5])).unwrap();
        assert_eq!(result_to_json(&payload).unwrap(), "[1,\"a\",[0.5]]");
        let bytes = Payload::pickle(&serde_bytes::Bytes::new(b"\x00\x01")).unwrap();
        let error = result_to_json(&bytes).unwrap_err();
        assert!(error.is_serialization(), "{error}");
        assert!(
            error.to_string().contains("funcx_task_wait_pickle"),
            "{error}"
        );
    }
}
