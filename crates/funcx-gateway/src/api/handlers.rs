//! The route handlers: each checks who may do what, then asks the store or the endpoint's
//! executor.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::{Bytes, BytesMut};
use funcx_core::{Args, Function, FunctionId, Payload, Task, TaskError, TaskOptions, TaskState};
use funcx_transport::remote::{ToEndpoint, ToManager};
use futures::StreamExt;
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::codec::Encoder;
use tracing::{debug, info, warn};

use super::body::{Format, Input, Reply, POSTCARD};
use super::model::*;
use crate::auth::{new_id, new_token, User};
use crate::error::ApiError;
use crate::store::{
    fingerprint, hash_token, EndpointRecord, Finished, FunctionRecord, IdempotencyKey, Insertion,
    NewTask, TaskRecord,
};
use crate::Gateway;

type ApiResult<T> = Result<T, ApiError>;

pub(crate) async fn health() -> Reply<serde_json::Value> {
    Reply::json(serde_json::json!({ "status": "ok" }))
}

pub(crate) async fn metrics(State(gateway): State<Gateway>) -> Response {
    let text = gateway.inner.metrics.render(gateway.gauges().await);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn openapi() -> Reply<serde_json::Value> {
    Reply::json(super::openapi_document().clone())
}

/// Parses 64 hex digits.
pub(crate) fn parse_function_id(text: &str) -> ApiResult<FunctionId> {
    let bad = || {
        ApiError::bad_request(format!(
            "{text:?} is not a function id (64 hexadecimal digits)"
        ))
    };
    if text.len() != 64 || !text.is_ascii() {
        return Err(bad());
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(FunctionId::from_bytes(bytes))
}

fn parse_task_id(text: &str) -> ApiResult<u64> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a task id (an integer)")))
}

pub(crate) async fn register_function(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    input: Input<RegisterFunction>,
) -> ApiResult<Reply<FunctionRegistered>> {
    let request = input.value;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("a function needs a name"));
    }
    let function = match (request.source, request.pickle) {
        (Some(source), None) => Function::from_source(source, request.name.clone()),
        (None, Some(pickle)) => Function::from_pickle(pickle.0, request.name.clone()),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `source` and `pickle`",
            ))
        }
    };
    let record = FunctionRecord {
        id: function.id(),
        owner: user.name().to_string(),
        name: request.name,
        body: function.body().clone(),
        public: request.public,
        shared_with: request.shared_with,
    };
    gateway.store().put_function(record).await?;
    Ok(Reply::json(FunctionRegistered {
        function_id: function.id().to_string(),
    })
    .with_status(StatusCode::CREATED))
}

/// The caller's own record of function `id`, else one shared with it.
async fn visible_function(
    gateway: &Gateway,
    user: &User,
    id: FunctionId,
) -> ApiResult<Option<FunctionRecord>> {
    let records = gateway.store().function(id).await?;
    let own = records.iter().position(|r| r.owner == user.name());
    let visible = own.or_else(|| records.iter().position(|r| r.visible_to(user.name())));
    Ok(visible.map(|i| records[i].clone()))
}

pub(crate) async fn get_function(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<Reply<FunctionView>> {
    let id = parse_function_id(&id)?;
    let record = visible_function(&gateway, &user, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no function {id}")))?;
    let (source, pickle) = match record.body {
        funcx_core::FunctionBody::Source(source) => (Some(source), None),
        funcx_core::FunctionBody::Pickled(bytes) => (None, Some(Blob(bytes.to_vec()))),
    };
    let mine = record.owner == user.name();
    Ok(Reply::json(FunctionView {
        function_id: id.to_string(),
        name: record.name,
        owner: record.owner,
        public: record.public,
        shared_with: if mine { record.shared_with } else { Vec::new() },
        source,
        pickle,
    }))
}

pub(crate) async fn delete_function(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_function_id(&id)?;
    if gateway.store().delete_function(id, user.name()).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    match visible_function(&gateway, &user, id).await? {
        Some(_) => Err(ApiError::forbidden(format!(
            "function {id} is not yours to delete"
        ))),
        None => Err(ApiError::not_found(format!("no function {id}"))),
    }
}

pub(crate) async fn register_endpoint(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    input: Input<RegisterEndpoint>,
) -> ApiResult<Reply<EndpointRegistered>> {
    let request = input.value;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("an endpoint needs a name"));
    }
    let allowed_functions = request
        .allowed_functions
        .map(|ids| ids.iter().map(|id| parse_function_id(id)).collect())
        .transpose()?;
    let token = new_token()?;
    let record = EndpointRecord {
        id: new_id()?,
        owner: user.name().to_string(),
        name: request.name,
        token_hash: hash_token(&token),
        allowed_functions,
        allowed_users: request.allowed_users,
        created: SystemTime::now(),
    };
    let endpoint_id = record.id.clone();
    gateway.store().put_endpoint(record).await?;
    info!(endpoint = %endpoint_id, owner = %user.name(), "endpoint registered");
    Ok(Reply::json(EndpointRegistered {
        endpoint_id,
        endpoint_token: token,
    })
    .with_status(StatusCode::CREATED))
}

async fn endpoint_view(gateway: &Gateway, record: EndpointRecord) -> EndpointView {
    let status = gateway.endpoint_status(&record.id).await;
    EndpointView {
        endpoint_id: record.id,
        name: record.name,
        owner: record.owner,
        allowed_functions: record
            .allowed_functions
            .map(|ids| ids.iter().map(ToString::to_string).collect()),
        allowed_users: record.allowed_users,
        status,
    }
}

/// Endpoint `id` if `user` may see it; 404 otherwise, whether or not it exists.
async fn visible_endpoint(gateway: &Gateway, user: &User, id: &str) -> ApiResult<EndpointRecord> {
    gateway
        .store()
        .endpoint(id)
        .await?
        .filter(|e| e.visible_to(user.name()))
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {id}")))
}

pub(crate) async fn list_endpoints(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
) -> ApiResult<Reply<Vec<EndpointView>>> {
    let mut views = Vec::new();
    for record in gateway.store().endpoints().await? {
        if record.owner == user.name() {
            views.push(endpoint_view(&gateway, record).await);
        }
    }
    Ok(Reply::json(views))
}

pub(crate) async fn get_endpoint(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<Reply<EndpointView>> {
    let record = visible_endpoint(&gateway, &user, &id).await?;
    Ok(Reply::json(endpoint_view(&gateway, record).await))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `GET /v1/endpoints/{id}/connect`: an endpoint dials in. After `101 Switching Protocols`
/// the connection carries the funcx handshake and the manager protocol, and the endpoint is
/// a manager of its gateway-side executor.
pub(crate) async fn connect_endpoint(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    mut request: Request,
) -> ApiResult<Response> {
    let token = bearer(request.headers())
        .ok_or_else(|| ApiError::unauthorized("send the endpoint token as a bearer token"))?
        .to_string();
    let record = gateway
        .store()
        .endpoint(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {id}")))?;
    if !bool::from(record.token_hash.ct_eq(&hash_token(&token))) {
        return Err(ApiError::unauthorized("wrong endpoint token"));
    }
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if !upgrade {
        return Err(ApiError::upgrade_required(format!(
            "endpoints connect with `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}`"
        )));
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let runtime = gateway.runtime(&id);
    let transport = gateway.inner.transport.clone();
    let admitted = gateway.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                return warn!(endpoint = %id, %error, "endpoint connection upgrade failed")
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        match transport
            .accept_stream::<ToManager, ToEndpoint, _>(io, peer)
            .await
        {
            Ok(connection) => {
                info!(endpoint = %id, %peer, "endpoint connected");
                runtime.agent.admit(connection).await;
                admitted.endpoint_connected(&id);
            }
            Err(error) => warn!(endpoint = %id, %peer, %error, "endpoint handshake failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL)),
        ],
    )
        .into_response())
}

/// The `Idempotency-Key` of a request, checked: 1 to 256 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
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
        let options = match timeout {
            Some(timeout) => TaskOptions::new().timeout(timeout),
            None => TaskOptions::new(),
        };
        new.push(NewTask {
            owner: user.name().to_string(),
            endpoint: endpoint.id.clone(),
            function: function_id,
            args: args.clone(),
            timeout,
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
    let ids = match key {
        None => gateway.store().insert_tasks(new, now).await?,
        Some(key) => {
            let key = IdempotencyKey {
                owner: user.name().to_string(),
                fingerprint: fingerprint(&new)?,
                key,
            };
            let name = key.key.clone();
            match gateway.store().insert_tasks_once(key, new, now).await? {
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
            }
        }
    };
    gateway.inner.metrics.submitted(ids.len());
    gateway.dispatch(&endpoint.id, ids.iter().copied().zip(tasks).collect());
    Ok(Reply::ok(SubmitResponse { task_ids: ids }, input.format).into_response())
}

/// A task's state and timeline: the store's, or for an unfinished task the executor's.
async fn live_state(gateway: &Gateway, record: &TaskRecord) -> (TaskState, funcx_core::Timeline) {
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
async fn task_view(gateway: &Gateway, record: TaskRecord) -> TaskView {
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
async fn own_task(gateway: &Gateway, user: &User, id: u64) -> ApiResult<TaskRecord> {
    gateway
        .store()
        .task(id)
        .await?
        .filter(|t| t.owner == user.name())
        .ok_or_else(|| ApiError::not_found(format!("no task {id}")))
}

async fn after_fetch(gateway: &Gateway, record: &TaskRecord) -> ApiResult<()> {
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

/// `GET /v1/results`: the caller's tasks as they finish, while the stream is open.
///
/// By default server-sent events: one `result` event per task, a `lagged` event (data: how
/// many were missed) if the caller reads too slowly to keep up. With `Accept:
/// application/x-postcard`, the binary stream of [`results_postcard`] instead.
pub(crate) async fn results(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    headers: HeaderMap,
) -> Response {
    let events = gateway.inner.events.subscribe();
    // A stopping gateway ends the stream, so that the stop is not held up by it.
    let mut closing = gateway.inner.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    if Format::accepted(&headers) == Format::Postcard {
        return results_postcard(events, user, closed);
    }
    let stream = futures::stream::unfold((events, user), |(mut events, user)| async move {
        loop {
            match events.recv().await {
                Ok(record) if record.owner == user.name() => {
                    let record = TaskRecord::clone(&record);
                    let (state, timeline) = (record.state, record.timeline);
                    let view = view_of(record, state, timeline);
                    let event = Event::default()
                        .event("result")
                        .json_data(view)
                        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
                    return Some((Ok::<_, Infallible>(event), (events, user)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    let event = Event::default().event("lagged").data(missed.to_string());
                    return Some((Ok(event), (events, user)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream.take_until(closed))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// How often the binary result stream sends an empty frame when nothing finishes (as the
/// event stream sends a keep-alive comment).
const FRAME_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A frame stops taking results past this many payload bytes (the rest go in the next).
const FRAME_MAX_BYTES: usize = 16 << 20;

/// The binary result stream: frames of [`ResultFrame::codec`] (a `u32` big-endian length, then
/// a postcard [`ResultFrame`]), each holding every result of the caller's waiting when it is written.
/// Results are encoded straight from the broadcast records: payloads are not copied until
/// they are written into the frame.
fn results_postcard(
    events: broadcast::Receiver<Arc<TaskRecord>>,
    user: User,
    closed: impl std::future::Future<Output = ()> + Send + 'static,
) -> Response {
    let frames = futures::stream::unfold(
        (events, user, false),
        |(mut events, user, closed)| async move {
            if closed {
                return None;
            }
            let mut records = Vec::new();
            let mut lagged = 0u64;
            let mut closed = false;
            // Wait for the first result of the caller's (or a lag, or the keep-alive time).
            let deadline = tokio::time::Instant::now() + FRAME_KEEP_ALIVE;
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) => break,
                    Ok(Ok(record)) if record.owner == user.name() => {
                        records.push(record);
                        break;
                    }
                    Ok(Ok(_)) => continue,
                    Ok(Err(RecvError::Lagged(missed))) => {
                        lagged += missed;
                        break;
                    }
                    Ok(Err(RecvError::Closed)) => return None,
                }
            }
            // Then everything else already there, without waiting.
            let mut bytes = 0;
            while bytes < FRAME_MAX_BYTES {
                match events.try_recv() {
                    Ok(record) if record.owner == user.name() => {
                        if let Some(Ok(payload)) = &record.result {
                            bytes += payload.as_bytes().len();
                        }
                        records.push(record);
                    }
                    Ok(_) => {}
                    Err(TryRecvError::Lagged(missed)) => lagged += missed,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        closed = true;
                        break;
                    }
                }
            }
            let frame = FrameRef {
                lagged,
                results: records.iter().map(|record| ViewRef::of(record)).collect(),
            };
            let mut bytes = BytesMut::new();
            let chunk = match ResultFrame::codec().encode(&frame, &mut bytes) {
                Ok(()) => bytes.freeze(),
                Err(error) => {
                    warn!(%error, "cannot send a result frame; the client reads those tasks by id");
                    lagged_frame(lagged + records.len() as u64)
                }
            };
            Some((Ok::<_, Infallible>(chunk), (events, user, closed)))
        },
    )
    .take_until(closed);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(POSTCARD)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        axum::body::Body::from_stream(frames),
    )
        .into_response()
}

/// A frame that only says `missed` results were dropped.
fn lagged_frame(missed: u64) -> Bytes {
    let frame = FrameRef {
        lagged: missed.max(1),
        results: Vec::new(),
    };
    let mut bytes = BytesMut::new();
    // A few bytes: within any frame size, and encoding two integers cannot fail.
    let _ = ResultFrame::codec().encode(&frame, &mut bytes);
    bytes.freeze()
}

/// [`ResultFrame`] borrowing the records it shows: the same postcard encoding.
#[derive(Serialize)]
struct FrameRef<'a> {
    lagged: u64,
    results: Vec<ViewRef<'a>>,
}

/// [`TaskView`] borrowing its record: the same fields in the same order, so the same
/// postcard encoding.
#[derive(Serialize)]
struct ViewRef<'a> {
    id: u64,
    state: TaskState,
    timeline: funcx_core::Timeline,
    result: Option<BlobRef<'a>>,
    error: Option<&'a TaskError>,
    error_message: Option<String>,
    result_format: Option<funcx_core::Format>,
}

impl<'a> ViewRef<'a> {
    fn of(record: &'a TaskRecord) -> ViewRef<'a> {
        let (result, result_format, error) = match &record.result {
            Some(Ok(payload)) => (
                Some(BlobRef(payload.as_bytes())),
                Some(payload.format()),
                None,
            ),
            Some(Err(error)) => (None, None, Some(error)),
            None => (None, None, None),
        };
        ViewRef {
            id: record.id,
            state: record.state,
            timeline: record.timeline,
            result,
            error,
            error_message: error.map(ToString::to_string),
            result_format,
        }
    }
}

/// [`Blob`] borrowed, for binary formats only (raw bytes, as [`Blob`] is in postcard).
struct BlobRef<'a>(&'a [u8]);

impl Serialize for BlobRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}
