//! A Globus Compute submission's `user_endpoint_config`: on Globus Compute, values for the
//! endpoint's configuration template, which spawn a user endpoint per distinct value. Its
//! common use, a container per task (the `dynamic_containers` tutorial's `container_type`,
//! `container_uri`, `container_cmd_options`), maps onto funcx's function images: the
//! submission's tasks call the shim in that image ([`funcx_core::Function::in_image`]), and
//! the endpoint runs them on warm workers started in it. Everything else about a funcx
//! endpoint is set where it runs, so other keys are refused, by name.

use serde_json::Value;

use super::option_fields;

/// The keys taken.
const KEYS: [&str; 3] = ["container_uri", "container_type", "container_cmd_options"];

/// The container types whose images a funcx endpoint starts: OCI images, with podman (which
/// runs Docker's images as they are).
const CONTAINER_TYPES: [&str; 2] = ["podman", "docker"];

/// The longest image name taken, in bytes.
const MAX_IMAGE: usize = 512;

/// Reads the submit body's `user_endpoint_config`: the container image its tasks run in, or
/// `None` when it is absent, `null` or empty; an error (for a 400 answer) naming what is
/// wrong otherwise.
pub(crate) fn container_image(value: Option<&Value>) -> Result<Option<String>, String> {
    let fields = option_fields(value, "user_endpoint_config", &KEYS).map_err(|error| {
        format!("{error} (a container image per task: a funcx endpoint's other settings are made where it runs)")
    })?;
    let Some(fields) = fields else {
        return Ok(None);
    };
    match fields.get("container_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if CONTAINER_TYPES.contains(&kind.as_str()) => {}
        Some(other) => {
            return Err(format!(
                "user_endpoint_config.container_type {other} is not one this gateway's endpoints start: they run OCI images with podman; use one of {CONTAINER_TYPES:?} or leave it out"
            ))
        }
    }
    match fields.get("container_cmd_options") {
        None | Some(Value::Null) => {}
        Some(Value::String(options)) if options.trim().is_empty() => {}
        Some(_) => {
            return Err(
                "user_endpoint_config.container_cmd_options is not taken: how containers start (mounts, devices, network) is the endpoint operator's setting, not a task's".into(),
            )
        }
    }
    match fields.get("container_uri") {
        Some(Value::String(image)) if is_image_name(image) => Ok(Some(image.clone())),
        Some(other) => Err(format!(
            "user_endpoint_config.container_uri must name an image (letters, digits and ._-/:@+, starting with a letter or digit, at most {MAX_IMAGE} bytes), not {other}"
        )),
        None => Err("user_endpoint_config needs container_uri, the image to run the tasks in".into()),
    }
}

/// Whether `image` is a plausible image reference, and never a container engine's option
/// (it is passed to `podman run` as an argument).
fn is_image_name(image: &str) -> bool {
    image.len() <= MAX_IMAGE
        && image.starts_with(|c: char| c.is_ascii_alphanumeric())
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@+".contains(c))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn image(value: Value) -> Result<Option<String>, String> {
        container_image(Some(&value))
    }

    #[test]
    fn absent_null_and_empty_name_no_image() {
        assert_eq!(container_image(None), Ok(None));
        assert_eq!(image(Value::Null), Ok(None));
        assert_eq!(image(json!({})), Ok(None));
    }

    #[test]
    fn a_container_uri_names_the_tasks_image() {
        let config = json!({
            "container_type": "podman",
            "container_uri": "localhost/compute-worker:3.8.0",
            "container_cmd_options": ""
        });
        assert_eq!(
            image(config),
            Ok(Some("localhost/compute-worker:3.8.0".into()))
        );
        let digest = "docker.io/library/python@sha256:0123abcd";
        assert_eq!(
            image(json!({"container_uri": digest})),
            Ok(Some(digest.into()))
        );
    }

    #[test]
    fn other_keys_engines_options_and_names_are_refused_by_name() {
        let cases = [
            (json!("podman"), "must be an object"),
            (
                json!({"container_uri": "a", "worker_init": "x", "engine": {}}),
                r#"does not take: ["engine", "worker_init"]"#,
            ),
            (
                json!({"container_uri": "a", "container_type": "apptainer"}),
                r#"container_type "apptainer" is not one"#,
            ),
            (
                json!({"container_uri": "a", "container_cmd_options": "-v /:/host"}),
                "container_cmd_options is not taken",
            ),
            (json!({"container_type": "podman"}), "needs container_uri"),
            (
                json!({"container_uri": "--privileged"}),
                "must name an image",
            ),
            (json!({"container_uri": "a b"}), "must name an image"),
            (json!({"container_uri": ""}), "must name an image"),
            (json!({"container_uri": 7}), "must name an image"),
        ];
        for (value, expected) in cases {
            let error = image(value.clone()).expect_err(&value.to_string());
            assert!(error.contains(expected), "{value}: {error}");
        }
    }
}
