//! `funcx register` and `funcx submit`.

use super::*;

/// The function a Python file defines at top level that `register` calls by default: the
/// only one, or the one named like the file.
pub(crate) fn entry_point(file: &Path, source: &str) -> Result<String> {
    let defined: Vec<&str> = source
        .lines()
        .filter_map(|line| {
            line.strip_prefix("def ")
                .or_else(|| line.strip_prefix("async def "))
        })
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    let stem = file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or_default();
    match defined.as_slice() {
        [only] => Ok((*only).to_string()),
        _ if defined.contains(&stem) => Ok(stem.to_string()),
        [] => Err(Failure(
            USAGE,
            format!(
                "{} defines no top-level function (`def NAME(...)`)",
                file.display()
            ),
        )),
        many => Err(Failure(
            USAGE,
            format!(
                "{} defines {}: say which with --name",
                file.display(),
                many.join(", ")
            ),
        )),
    }
}

pub(crate) async fn register(
    gateway: &Gateway,
    file: &Path,
    name: Option<String>,
    public: bool,
    image: Option<String>,
    json: bool,
) -> Result<()> {
    let source = std::fs::read_to_string(file)
        .map_err(|e| Failure(USAGE, format!("cannot read {}: {e}", file.display())))?;
    let name = match name {
        Some(name) => name,
        None => entry_point(file, &source)?,
    };
    let mut body = json!({ "name": name, "source": source, "public": public });
    if let Some(image) = image {
        // Only when set: a gateway from before images refuses fields it does not know.
        body["image"] = Value::String(image);
    }
    let answer = gateway.post("/v1/functions", &body).await?;
    let function_id = answer["function_id"].as_str().ok_or_else(|| {
        Failure(
            FAILED,
            format!("the gateway's answer has no function_id: {answer}"),
        )
    })?;
    if json {
        print_json(&json!({ "function_id": function_id, "name": name }))
    } else {
        println!("{function_id}");
        Ok(())
    }
}

/// A JSON literal from the command line, pickled as the function's argument.
pub(crate) fn json_argument(what: &str, text: &str) -> Result<Blob> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Failure(
            USAGE,
            format!(
                "{what} ({text:?}) is not a JSON literal: {e}; a string is quoted: '\"{text}\"'"
            ),
        )
    })?;
    let payload = Payload::pickle(&value).map_err(|e| Failure(USAGE, format!("{what}: {e}")))?;
    Ok(Blob(payload.as_bytes().to_vec()))
}

pub(crate) async fn submit(
    gateway: &Gateway,
    function_id: String,
    endpoint: &str,
    args: &[String],
    kwargs: &[String],
    timeout: Option<f64>,
    json: bool,
) -> Result<()> {
    let args = args
        .iter()
        .enumerate()
        .map(|(i, text)| json_argument(&format!("argument {}", i + 1), text))
        .collect::<Result<Vec<_>>>()?;
    let mut keywords = std::collections::BTreeMap::new();
    for pair in kwargs {
        let (key, text) = pair
            .split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .ok_or_else(|| {
                Failure(
                    USAGE,
                    format!("--kw {pair:?}: write KEY=JSON, e.g. --kw factor=2.5"),
                )
            })?;
        keywords.insert(
            key.to_string(),
            json_argument(&format!("--kw {key}"), text)?,
        );
    }
    let timeout_ms = match timeout {
        None => None,
        Some(secs) if secs.is_finite() && secs > 0.0 => Some((secs * 1000.0).ceil() as u64),
        Some(secs) => {
            return Err(Failure(
                USAGE,
                format!("--timeout {secs}: give a number of seconds above 0"),
            ))
        }
    };
    let request = SubmitRequest {
        tasks: vec![SubmitTask {
            function_id,
            args,
            kwargs: keywords,
            timeout_ms,
            format: funcx::Format::Pickle,
            resources: None,
        }],
    };
    let body = serde_json::to_value(&request)
        .map_err(|e| Failure(FAILED, format!("cannot encode the submission: {e}")))?;
    let answer = gateway
        .post(
            &format!("/v1/endpoints/{}/tasks", path_segment(endpoint)?),
            &body,
        )
        .await?;
    let id = answer["task_ids"][0].as_u64().ok_or_else(|| {
        Failure(
            FAILED,
            format!("the gateway's answer has no task id: {answer}"),
        )
    })?;
    if json {
        print_json(&json!({ "task_id": id }))
    } else {
        println!("{id}");
        Ok(())
    }
}
