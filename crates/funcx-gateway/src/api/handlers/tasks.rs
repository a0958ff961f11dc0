//! Submitting tasks (with idempotency keys), reading, cancelling and deleting them.

use super::*;

/// The `Idempotency-Key` of a request, checked: 1 to 256 visible ASCII characters.
pub(super) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| {
            !key.is_empty()
                && key.len() <= IdempotencyKey::MAX_LEN
                && key.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "an Idempotency-Key is 1 to {} visible ASCII characters",
                IdempotencyKey::MAX_LEN
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// The most memory a task may ask for: what every store can keep (a signed 64-bit column).
const MAX_MEMORY: u64 = i64::MAX as u64;

/// The options a task runs with at its endpoint: its timeout and what it asks for. A plain
/// task's (`resources` is `None`) are the default's.
pub(crate) fn task_options(
    timeout: Option<Duration>,
    resources: Option<funcx_core::Resources>,
) -> TaskOptions {
    let mut options = TaskOptions::new();
    if let Some(timeout) = timeout {
        options = options.timeout(timeout);
    }
    if let Some(resources) = resources {
        options = options.resources(resources);
    }
    options
}

pub(crate) async fn submit(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
    headers: HeaderMap,
    input: Input<SubmitRequest>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let endpoint = visible_endpoint(&gateway, &user, &id).await?;
    let requests = input.value.tasks;
    if requests.is_empty() {
        return Err(ApiError::bad_request("no tasks to submit"));
    }
    // Each function is looked up once per submission, however many tasks call it.
    let mut functions: HashMap<FunctionId, Function> = HashMap::new();
    let mut new = Vec::with_capacity(requests.len());
    let mut tasks = Vec::with_capacity(requests.len());
    for (index, request) in requests.into_iter().enumerate() {
        let function_id = parse_function_id(&request.function_id)
            .map_err(|e| ApiError::bad_request(format!("task {index}: {e}")))?;
        let function = match functions.get(&function_id) {
            Some(function) => function.clone(),
            None => {
                let record = visible_function(&gateway, &user, function_id)
                    .await?
                    .ok_or_else(|| {
                        ApiError::not_found(format!("task {index}: no function {function_id}"))
                    })?;
                let function = gateway.function(&record);
                functions.insert(function_id, function.clone());
                function
            }
        };
        if !endpoint.allows(&function_id) {
            return Err(ApiError::forbidden(format!(
                "task {index}: endpoint {id} does not run function {function_id}"
            )));
        }
        let payload = |bytes: Vec<u8>| match request.format {
            funcx_core::Format::Json => Payload::from_json(bytes),
            _ => Payload::from_pickled(bytes),
        };
        let mut args = Args::new();
        for arg in request.args {
            args = args.payload(payload(arg.0));
        }
        for (name, value) in request.kwargs {
            args = args.kwarg_payload(name, payload(value.0));
        }
        let timeout = request.timeout_ms.map(Duration::from_millis);
        let resources = request.resources;
        if resources.is_some_and(|asked| asked.memory > MAX_MEMORY) {
            return Err(ApiError::bad_request(format!(
                "task {index}: resources.memory is at most {MAX_MEMORY} bytes"
            )));
        }
        let options = task_options(timeout, resources);
        new.push(NewTask {
            owner: user.name().to_string(),
            endpoint: endpoint.id.clone(),
            function: function_id,
            args: args.clone(),
            timeout,
            resources,
        });
        tasks.push(Task {
            function,
            args,
            options,
        });
    }
    // Stored (durably) before anything runs or is acknowledged; with a key, in the same
    // write as the key, so a resend after a lost answer finds them.
    let now = SystemTime::now();
    let key = match key {
        None => None,
        Some(key) => Some(IdempotencyKey {
            owner: user.name().to_string(),
            fingerprint: fingerprint(&new)?,
            key,
        }),
    };
    // Replays and conflicts name the key (only a submission with one has either).
    let name = key.as_ref().map(|key| key.key.clone()).unwrap_or_default();
    let stored = gateway
        .store_submission(&endpoint.id, key, new, now)
        .await?;
    let ids = match stored.insertion {
        Insertion::Created(ids) => ids,
        Insertion::Replayed(ids) => {
            debug!(key = %name, tasks = ids.len(), "a resent submission: answered with its first ids");
            let mut response =
                Reply::ok(SubmitResponse { task_ids: ids }, input.format).into_response();
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            return Ok(response);
        }
        Insertion::Conflict => {
            return Err(ApiError::conflict(format!(
                "Idempotency-Key {name:?} was used for a different submission; use a new key for new tasks"
            )))
        }
    };
    gateway.inner.metrics.submitted(ids.len());
    gateway.dispatch(
        &endpoint.id,
        ids.iter().copied().zip(tasks).collect(),
        stored.claimed,
    );
    Ok(Reply::ok(SubmitResponse { task_ids: ids }, input.format).into_response())
}

/// A task's state and timeline: the store's, or for an unfinished task the executor's.
pub(super) async fn live_state(
    gateway: &Gateway,
    record: &TaskRecord,
) -> (TaskState, funcx_core::Timeline) {
    if record.result.is_none() {
        if let Some((runtime, local)) = gateway.running(record.id) {
            if let Some(status) = runtime.executor.status(local).await {
                let timeline = funcx_core::Timeline {
                    submitted: record.timeline.submitted,
                    ..status.timeline
                };
                return (status.state, timeline);
            }
        }
    }
    (record.state, record.timeline)
}

/// A task as the API shows it; live states of unfinished tasks come from the executor.
pub(super) async fn task_view(gateway: &Gateway, record: TaskRecord) -> TaskView {
    let (state, timeline) = live_state(gateway, &record).await;
    view_of(record, state, timeline)
}

/// `GET /v1/tasks`: the caller's tasks, newest first, a page at a time.
pub(crate) async fn list_tasks(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    query: Result<Query<ListTasks>, QueryRejection>,
) -> ApiResult<Reply<TaskList>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(ListTasks::DEFAULT_LIMIT);
    if !(1..=ListTasks::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit is 1 to {}, not {limit}",
            ListTasks::MAX_LIMIT
        )));
    }
    let page = gateway
        .store()
        .tasks_of(user.name(), query.before, limit)
        .await?;
    let mut tasks = Vec::with_capacity(page.tasks.len());
    for record in page.tasks {
        let (state, timeline) = live_state(&gateway, &record).await;
        tasks.push(TaskSummary {
            id: record.id,
            state,
            endpoint_id: record.endpoint,
            function_id: record.function.to_string(),
            timeline,
            error_code: match &record.result {
                Some(Err(error)) => Some(error.code()),
                _ => None,
            },
        });
    }
    Ok(Reply::json(TaskList {
        tasks,
        next: page.next,
    }))
}

pub(crate) fn view_of(
    record: TaskRecord,
    state: TaskState,
    timeline: funcx_core::Timeline,
) -> TaskView {
    let (result, result_format, error) = match record.result {
        Some(Ok(payload)) => (
            Some(Blob(payload.as_bytes().to_vec())),
            Some(payload.format()),
            None,
        ),
        Some(Err(error)) => (None, None, Some(error)),
        None => (None, None, None),
    };
    TaskView {
        id: record.id,
        state,
        timeline,
        result,
        error_message: error.as_ref().map(ToString::to_string),
        error,
        result_format,
    }
}

/// Task `id` if it is `user`'s; 404 otherwise.
pub(super) async fn own_task(gateway: &Gateway, user: &User, id: u64) -> ApiResult<TaskRecord> {
    gateway
        .store()
        .task(id)
        .await?
        .filter(|t| t.owner == user.name())
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))
}

pub(super) async fn after_fetch(gateway: &Gateway, record: &TaskRecord) -> ApiResult<()> {
    if gateway.inner.config.delete_after_fetch && record.result.is_some() {
        gateway.store().delete_task(record.id).await?;
    }
    Ok(())
}

pub(crate) async fn get_task(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Reply<TaskView>> {
    let id = parse_task_id(&id)?;
    let record = own_task(&gateway, &user, id).await?;
    after_fetch(&gateway, &record).await?;
    let view = task_view(&gateway, record).await;
    Ok(Reply::ok(view, Format::accepted(&headers)))
}

pub(crate) async fn batch(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    headers: HeaderMap,
    input: Input<BatchRequest>,
) -> ApiResult<Reply<BatchResponse>> {
    let mut response = BatchResponse {
        tasks: Vec::with_capacity(input.value.ids.len()),
        not_found: Vec::new(),
    };
    for id in input.value.ids {
        match gateway.store().task(id).await? {
            Some(record) if record.owner == user.name() => {
                after_fetch(&gateway, &record).await?;
                response.tasks.push(task_view(&gateway, record).await);
            }
            _ => response.not_found.push(id),
        }
    }
    let format = match input.format {
        Format::Postcard => Format::Postcard,
        Format::Json => Format::accepted(&headers),
    };
    Ok(Reply::ok(response, format))
}

pub(crate) async fn cancel_task(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<Reply<TaskView>> {
    let id = parse_task_id(&id)?;
    let record = own_task(&gateway, &user, id).await?;
    if record.result.is_none() {
        match gateway.running(id) {
            Some((runtime, local)) => runtime.executor.cancel(local),
            None => {
                // Not held by any executor (cannot normally happen): settle it here.
                let finished = gateway
                    .store()
                    .finish(
                        vec![Finished {
                            id,
                            result: Err(funcx_core::TaskError::cancelled()),
                            timeline: record.timeline,
                        }],
                        SystemTime::now(),
                    )
                    .await?;
                gateway.publish(finished);
            }
        }
    }
    let record = own_task(&gateway, &user, id).await?;
    Ok(Reply::json(task_view(&gateway, record).await).with_status(StatusCode::ACCEPTED))
}

pub(crate) async fn delete_task(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_task_id(&id)?;
    let record = own_task(&gateway, &user, id).await?;
    if record.result.is_none() {
        if let Some((runtime, local)) = gateway.running(id) {
            runtime.executor.cancel(local);
        }
    }
    gateway.store().delete_task(id).await?;
    gateway.forget(id);
    Ok(StatusCode::NO_CONTENT)
}
