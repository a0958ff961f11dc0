//! A Globus Compute task's `resource_specification`: what an `MPIFunction` asks of the
//! endpoint (`Executor.resource_specification`, or `Client.create_batch(...)`), read the way
//! Parsl's MPI engine reads it.
//!
//! `num_nodes` becomes the funcx task's whole nodes ([`funcx_core::TaskOptions::nodes`]): the
//! dispatcher holds that many nodes of one block for it and tells the worker their host
//! names. `ranks_per_node`, `num_ranks` and `launcher_options` travel to the shim, which
//! composes the launcher prefix (`$PARSL_MPI_PREFIX`) from them and those hosts. Anything
//! else is refused with a message the SDK shows, as Parsl refuses unknown keys.

use funcx_core::Resources;
use serde_json::{json, Map, Value};

use super::option_fields;

/// The keys Parsl's MPI engine knows (`mpi_prefix_composer.validate_resource_spec`).
const KEYS: [&str; 4] = [
    "num_nodes",
    "ranks_per_node",
    "num_ranks",
    "launcher_options",
];

/// The largest node or rank count taken: far beyond any machine, and small enough that
/// products of counts never overflow.
const MAX_COUNT: u64 = 1 << 20;

/// The longest `launcher_options` taken, in bytes.
const MAX_LAUNCHER_OPTIONS: usize = 4096;

/// What one submission's tasks ask for (`resource_specification` of the submit body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResourceSpecification {
    /// Whole nodes of one block; `None` runs the ranks on the worker's own node.
    pub(crate) num_nodes: Option<u32>,
    /// Ranks started on each node.
    pub(crate) ranks_per_node: Option<u32>,
    /// Ranks in all.
    pub(crate) num_ranks: Option<u32>,
    /// Extra launcher arguments, appended to the prefix as Parsl does.
    pub(crate) launcher_options: Option<String>,
}

impl ResourceSpecification {
    /// Reads the submit body's `resource_specification`: `None` when it is absent, `null`
    /// or empty; an error (for a 400 answer) naming what is wrong otherwise.
    pub(crate) fn parse(value: Option<&Value>) -> Result<Option<ResourceSpecification>, String> {
        let Some(fields) = option_fields(value, "resource_specification", &KEYS)? else {
            return Ok(None);
        };
        let spec = ResourceSpecification {
            num_nodes: count(fields, "num_nodes")?,
            ranks_per_node: count(fields, "ranks_per_node")?,
            num_ranks: count(fields, "num_ranks")?,
            launcher_options: launcher_options(fields)?,
        };
        if let (Some(ranks), Some(per_node)) = (spec.num_ranks, spec.ranks_per_node) {
            let nodes = u64::from(spec.num_nodes.unwrap_or(1));
            if u64::from(ranks) > nodes * u64::from(per_node) {
                return Err(format!(
                    "resource_specification asks for {ranks} ranks on {nodes} node(s) of {per_node} rank(s) each: num_ranks is at most num_nodes x ranks_per_node"
                ));
            }
        }
        Ok(Some(spec))
    }

    /// What the funcx task asks of its endpoint: the nodes, when it names them.
    pub(crate) fn resources(&self) -> Option<Resources> {
        self.num_nodes.map(|nodes| Resources {
            nodes,
            ..Resources::default()
        })
    }

    /// The JSON text the shim reads (only the keys given).
    pub(crate) fn to_json(&self) -> String {
        let mut fields = Map::new();
        let counts = [
            ("num_nodes", self.num_nodes),
            ("ranks_per_node", self.ranks_per_node),
            ("num_ranks", self.num_ranks),
        ];
        for (key, value) in counts {
            if let Some(value) = value {
                fields.insert(key.into(), json!(value));
            }
        }
        if let Some(options) = &self.launcher_options {
            fields.insert("launcher_options".into(), json!(options));
        }
        Value::Object(fields).to_string()
    }
}

/// Field `key` as a count from 1 to [`MAX_COUNT`], if present.
fn count(fields: &Map<String, Value>, key: &str) -> Result<Option<u32>, String> {
    let Some(value) = fields.get(key) else {
        return Ok(None);
    };
    match value.as_u64() {
        Some(n) if (1..=MAX_COUNT).contains(&n) => Ok(u32::try_from(n).ok()),
        _ => Err(format!(
            "resource_specification.{key} must be an integer from 1 to {MAX_COUNT}, not {value}"
        )),
    }
}

/// `launcher_options`, if present: text without NUL bytes (it becomes part of an
/// environment variable) and of bounded length.
fn launcher_options(fields: &Map<String, Value>) -> Result<Option<String>, String> {
    match fields.get("launcher_options") {
        None => Ok(None),
        Some(Value::String(text))
            if text.len() <= MAX_LAUNCHER_OPTIONS && !text.contains('\0') =>
        {
            Ok(Some(text.clone()))
        }
        Some(other) => Err(format!(
            "resource_specification.launcher_options must be text of at most {MAX_LAUNCHER_OPTIONS} bytes without NUL, not {}",
            truncated(other)
        )),
    }
}

/// `value` as JSON, cut short enough to quote in an error message.
fn truncated(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<Option<ResourceSpecification>, String> {
        ResourceSpecification::parse(Some(&value))
    }

    #[test]
    fn absent_null_and_empty_ask_for_nothing() {
        assert_eq!(ResourceSpecification::parse(None), Ok(None));
        assert_eq!(parse(Value::Null), Ok(None));
        assert_eq!(parse(json!({})), Ok(None));
    }

    #[test]
    fn num_nodes_becomes_the_tasks_nodes_and_the_rest_travels_to_the_shim() {
        let spec = parse(
            json!({"num_nodes": 2, "ranks_per_node": 3, "launcher_options": "--bind-to none"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.resources().map(|r| (r.nodes, r.cores)), Some((2, 1)));
        let sent: Value = serde_json::from_str(&spec.to_json()).unwrap();
        assert_eq!(
            sent,
            json!({"num_nodes": 2, "ranks_per_node": 3, "launcher_options": "--bind-to none"})
        );
        // Ranks alone run on the worker's own node: no nodes asked of the endpoint.
        let ranks_only = parse(json!({"num_ranks": 2})).unwrap().unwrap();
        assert_eq!(ranks_only.resources(), None);
        assert_eq!(ranks_only.to_json(), r#"{"num_ranks":2}"#);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let cases = [
            (json!([1, 2]), "must be an object"),
            (
                json!({"num_nodes": 2, "gpus": 1, "cores": 2}),
                r#"does not take: ["cores", "gpus"]"#,
            ),
            (
                json!({"num_nodes": 0}),
                "num_nodes must be an integer from 1",
            ),
            (
                json!({"num_nodes": -1}),
                "num_nodes must be an integer from 1",
            ),
            (
                json!({"num_nodes": 1.5}),
                "num_nodes must be an integer from 1",
            ),
            (
                json!({"num_nodes": "2"}),
                "num_nodes must be an integer from 1",
            ),
            (
                json!({"ranks_per_node": 1u64 << 40}),
                "ranks_per_node must be an integer",
            ),
            (json!({"num_ranks": null}), "num_ranks must be an integer"),
            (
                json!({"launcher_options": 3}),
                "launcher_options must be text",
            ),
            (
                json!({"launcher_options": "a\u{0}b"}),
                "launcher_options must be text",
            ),
            (
                json!({"num_nodes": 2, "ranks_per_node": 2, "num_ranks": 5}),
                "asks for 5 ranks on 2 node(s) of 2 rank(s) each",
            ),
        ];
        for (value, expected) in cases {
            let error = parse(value.clone()).expect_err(&value.to_string());
            assert!(error.contains(expected), "{value}: {error}");
        }
        // Fewer ranks than slots is a fine request.
        assert!(parse(json!({"num_nodes": 2, "ranks_per_node": 2, "num_ranks": 3})).is_ok());
    }
}
