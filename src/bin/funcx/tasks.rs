//! `funcx status`, `funcx result` and `funcx tasks`.

use super::*;

/// An id as one path segment: ids are plain tokens, so anything else is refused rather than
/// escaped into another route.
pub(crate) fn path_segment(id: &str) -> Result<&str> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id != "."
        && id != ".."
    {
        Ok(id)
    } else {
        Err(Failure(USAGE, format!("{id:?} is not an id")))
    }
}

pub(crate) fn state_name(state: TaskState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{state:?}").to_lowercase())
}

pub(crate) fn finished(state: TaskState) -> bool {
    matches!(state, TaskState::Succeeded | TaskState::Failed)
}

pub(crate) fn seconds_between(from: SystemTime, to: SystemTime) -> Option<f64> {
    to.duration_since(from).ok().map(|d| d.as_secs_f64())
}

/// "submitted 3.1 s ago, waited 0.012 s, ran 0.201 s": the timeline for people.
pub(crate) fn describe_timeline(view: &TaskView) -> String {
    let timeline = &view.timeline;
    let mut parts = Vec::new();
    if let Some(age) = seconds_between(timeline.submitted, SystemTime::now()) {
        parts.push(format!("submitted {} ago", human_seconds(age)));
    }
    if let Some(waited) = timeline
        .running
        .and_then(|running| seconds_between(timeline.submitted, running))
    {
        parts.push(format!("waited {}", human_seconds(waited)));
    }
    if let (Some(running), Some(done)) = (timeline.running, timeline.finished) {
        if let Some(ran) = seconds_between(running, done) {
            parts.push(format!("ran {}", human_seconds(ran)));
        }
    }
    parts.join(", ")
}

pub(crate) fn human_seconds(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else if secs < 120.0 {
        format!("{secs:.1} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

pub(crate) async fn read_task(gateway: &Gateway, id: u64) -> Result<(Value, TaskView)> {
    let raw = gateway.get(&format!("/v1/tasks/{id}")).await?;
    let view: TaskView = parse("GET /v1/tasks/{id}", raw.clone())?;
    Ok((raw, view))
}

pub(crate) async fn status(gateway: &Gateway, id: u64, json: bool) -> Result<()> {
    let (mut raw, view) = read_task(gateway, id).await?;
    if json {
        // The result is `funcx result`'s business (and may be large).
        if let Some(object) = raw.as_object_mut() {
            object.remove("result");
        }
        return print_json(&raw);
    }
    println!(
        "task {id}: {} ({})",
        state_name(view.state),
        describe_timeline(&view)
    );
    if let Some(error) = &view.error {
        println!("  error ({}): {error}", error.code());
    }
    Ok(())
}

pub(crate) async fn result(
    gateway: &Gateway,
    id: u64,
    wait: Option<f64>,
    json: bool,
) -> Result<()> {
    let wait = match wait {
        None => Duration::ZERO,
        Some(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Some(secs) => {
            return Err(Failure(
                USAGE,
                format!("--wait {secs}: give a number of seconds, 0 or more"),
            ))
        }
    };
    let deadline = Instant::now() + wait;
    // Polled: a task that finished before we looked is read the same way as one that
    // finishes while we wait. The pause grows to half a second, so a quick task is seen
    // quickly and a slow one costs a request every half second.
    let mut pause = Duration::from_millis(10);
    let view = loop {
        let (_, view) = read_task(gateway, id).await?;
        if finished(view.state) {
            break view;
        }
        let now = Instant::now();
        if now >= deadline {
            let state = state_name(view.state);
            if json {
                print_json(&json!({ "id": id, "state": state }))?;
            }
            let hint = if wait.is_zero() {
                " (pass --wait SECS to wait for it)"
            } else {
                ""
            };
            return Err(Failure(
                PENDING,
                format!("task {id} is {state}, not finished{hint}"),
            ));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    };
    if let Some(error) = &view.error {
        if json {
            print_json(&json!({ "id": id, "state": "failed", "error": error }))?;
        }
        let mut message = format!("task {id} failed ({}): {error}", error.code());
        if let Some(exception) = error.python_exception() {
            if !exception.traceback.trim().is_empty() {
                message = format!("{message}\n{}", exception.traceback.trim_end());
            }
        }
        return Err(Failure(FAILED, message));
    }
    let payload = match &view.result {
        Some(blob) => match view.result_format {
            Some(funcx::Format::Json) => Payload::from_json(blob.0.clone()),
            _ => Payload::from_pickled(blob.0.clone()),
        },
        None => {
            return Err(Failure(
                FAILED,
                format!("task {id} succeeded but the gateway sent no result"),
            ))
        }
    };
    let value: Value = match payload.decode() {
        Ok(value) => value,
        Err(error) => {
            if json {
                print_json(&json!({ "id": id, "state": "succeeded", "result": null,
                    "result_pickle": serde_json::to_value(Blob(payload.as_bytes().to_vec())).unwrap_or(Value::Null) }))?;
            }
            return Err(Failure(
                FAILED,
                format!(
                    "task {id} succeeded, but its result is a Python value JSON cannot hold ({error}); `--json` gives its pickle as base64 in `result_pickle`"
                ),
            ));
        }
    };
    if json {
        print_json(&json!({ "id": id, "state": "succeeded", "result": value }))
    } else {
        print_json(&value)
    }
}

pub(crate) async fn tasks(
    gateway: &Gateway,
    limit: usize,
    before: Option<u64>,
    json: bool,
) -> Result<()> {
    let mut path = format!("/v1/tasks?limit={limit}");
    if let Some(before) = before {
        path.push_str(&format!("&before={before}"));
    }
    let raw = gateway.get(&path).await?;
    if json {
        return print_json(&raw);
    }
    let list: TaskList = parse("GET /v1/tasks", raw)?;
    if list.tasks.is_empty() {
        println!("no tasks");
        return Ok(());
    }
    println!(
        "{:>10}  {:<10}  {:<32}  {:<12}  {:>9}  ERROR",
        "TASK", "STATE", "ENDPOINT", "FUNCTION", "AGE"
    );
    let now = SystemTime::now();
    for task in &list.tasks {
        let age =
            seconds_between(task.timeline.submitted, now).map_or("-".to_string(), human_seconds);
        println!(
            "{:>10}  {:<10}  {:<32}  {:<12}  {:>9}  {}",
            task.id,
            state_name(task.state),
            task.endpoint_id,
            task.function_id.get(..12).unwrap_or(&task.function_id),
            age,
            task.error_code
                .map_or(String::new(), |code| code.to_string()),
        );
    }
    if let Some(next) = list.next {
        println!("more: funcx tasks --before {next}");
    }
    Ok(())
}
