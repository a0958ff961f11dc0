//! The HTTP routes the Globus Compute SDK calls (through globus-sdk's `ComputeClientV2` and
//! `ComputeClientV3`), with the shapes it parses, and the token route of its `ClientApp`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use funcx_core::{Task, TaskOptions, TaskState};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::info;

use super::service::{finished, lock, ComputeFunction, GlobusCompute, Group};
use super::uuid::{self, Uuid};
use super::{shim, token};
use crate::api::body::Input;
use crate::auth::User;
use crate::error::ApiError;
use crate::store::{EndpointRecord, FunctionRecord, NewTask, StoreError, TaskRecord};
use crate::Gateway;

/// The lowest SDK and endpoint versions the gateway serves: those that speak API v3 for
/// registration and submission (and AMQP for results).
const MIN_SDK_VERSION: &str = "2.0.0";

/// An error as Globus services answer one: `{"code", "message"}` with the HTTP status,
/// which globus-sdk raises as `GlobusAPIError`.
pub(crate) struct ComputeError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ComputeError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ComputeError {
        ComputeError {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> ComputeError {
        ComputeError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    fn bad_request(message: impl Into<String>) -> ComputeError {
        ComputeError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    fn forbidden(message: impl Into<String>) -> ComputeError {
        ComputeError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    fn unauthorized(message: impl Into<String>) -> ComputeError {
        ComputeError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }
}

impl From<StoreError> for ComputeError {
    fn from(error: StoreError) -> ComputeError {
        tracing::error!(%error, "task store failed");
        ComputeError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            error.to_string(),
        )
    }
}

impl From<ApiError> for ComputeError {
    fn from(error: ApiError) -> ComputeError {
        let code = match error.status().as_u16() {
            400 => "BAD_REQUEST",
            401 => "UNAUTHORIZED",
            403 => "FORBIDDEN",
            404 => "NOT_FOUND",
            413 => "PAYLOAD_TOO_LARGE",
            415 => "UNSUPPORTED_MEDIA_TYPE",
            429 => "TOO_MANY_REQUESTS",
            _ => "INTERNAL_ERROR",
        };
        ComputeError::new(error.status(), code, error.to_string())
    }
}

impl IntoResponse for ComputeError {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "message": self.message,
            "http_status_code": self.status.as_u16(),
        });
        (self.status, Json(body)).into_response()
    }
}

type ComputeResult<T> = Result<T, ComputeError>;

/// The Globus Compute routes, if the gateway serves them.
pub(crate) fn router(gateway: &Gateway) -> Option<Router> {
    gateway.inner.globus.as_ref()?;
    let users = Router::new()
        .route("/v3/functions", post(register_function))
        .route(
            "/v2/functions/{id}",
            get(get_function).delete(delete_function),
        )
        .route("/v3/endpoints/{id}/submit", post(submit))
        .route("/v2/tasks/{id}", get(get_task))
        .route("/v2/batch_status", post(batch_status))
        .route("/v2/taskgroup/{id}", get(task_group))
        .route("/v2/get_amqp_result_connection_url", get(amqp_url))
        .route("/v2/endpoints", get(list_endpoints))
        .route("/v2/endpoints/{id}", get(endpoint_metadata))
        .route("/v2/endpoints/{id}/status", get(endpoint_status))
        .route_layer(middleware::from_fn_with_state(
            gateway.clone(),
            authenticate,
        ));
    let open = Router::new()
        .route("/v2/version", get(version))
        .route("/v2/oauth2/token", post(issue_token));
    Some(open.merge(users).with_state(gateway.clone()))
}

fn service(gateway: &Gateway) -> ComputeResult<&Arc<GlobusCompute>> {
    gateway
        .inner
        .globus
        .as_ref()
        .ok_or_else(|| ComputeError::not_found("this gateway does not serve Globus Compute"))
}

/// The caller, by a token of the token route or by a gateway user token (what
/// `AccessTokenAuthorizer` sends), within its rate.
async fn authenticate(
    State(gateway): State<Gateway>,
    mut request: Request,
    next: Next,
) -> Result<Response, ComputeError> {
    let token = crate::api::bearer(request.headers()).ok_or_else(|| {
        ComputeError::unauthorized("send a token: `Authorization: Bearer <token>`")
    })?;
    let user = if GlobusCompute::is_client_token(token) {
        service(&gateway)?.clients.verify(token, SystemTime::now())
    } else {
        gateway.inner.authenticator.authenticate(token).await?
    };
    let user = user.ok_or_else(|| ComputeError::unauthorized("the token is not valid"))?;
    gateway
        .inner
        .limiter
        .check(user.name())
        .map_err(|seconds| ComputeError::from(ApiError::rate_limited(seconds)))?;
    request.extensions_mut().insert(user);
    Ok(next.run(request).await)
}

async fn version() -> Json<Value> {
    Json(json!({
        "api": "funcx-gateway",
        "min_sdk_version": MIN_SDK_VERSION,
        "min_ep_version": MIN_SDK_VERSION,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `POST /v2/oauth2/token`: the client-credentials grant (client id and secret by HTTP
/// Basic, or in the form), one token per resource server the requested scopes name.
async fn issue_token(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ComputeResult<Json<Value>> {
    let service = service(&gateway)?;
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err(ComputeError::bad_request(
            "only grant_type=client_credentials is served",
        ));
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| {
            v.split_once(':')
                .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
        });
    let (id, secret) = match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(pair), _, _) => pair,
        (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
        _ => return Err(ComputeError::unauthorized("send the client id and secret")),
    };
    let Some(access_token) = service.clients.issue(&id, &secret, SystemTime::now()) else {
        info!(client = %id, "refused client credentials");
        return Err(ComputeError::unauthorized("unknown client or wrong secret"));
    };
    // One token per resource server, each with its own scopes (the SDK refuses two tokens
    // for one resource server, and checks that its scopes were granted).
    let requested = form
        .get("scope")
        .map_or(token::COMPUTE_SCOPE, String::as_str);
    let mut servers: Vec<(String, Vec<&str>)> = Vec::new();
    for scope in requested.split_whitespace() {
        let server = token::resource_server(scope);
        match servers.iter_mut().find(|(s, _)| *s == server) {
            Some((_, scopes)) => scopes.push(scope),
            None => servers.push((server, vec![scope])),
        }
    }
    if servers.is_empty() {
        servers.push((
            token::COMPUTE_RESOURCE_SERVER.to_owned(),
            vec![token::COMPUTE_SCOPE],
        ));
    }
    let lifetime = token::TOKEN_LIFETIME.as_secs();
    let mut tokens: Vec<Value> = servers
        .into_iter()
        .map(|(server, scopes)| {
            json!({
                "access_token": access_token,
                "scope": scopes.join(" "),
                "resource_server": server,
                "expires_in": lifetime,
                "token_type": "Bearer",
                "refresh_token": null,
            })
        })
        .collect();
    let mut first = tokens.remove(0);
    first["other_tokens"] = Value::Array(tokens);
    Ok(Json(first))
}

#[derive(Deserialize)]
struct RegisterFunction {
    function_name: String,
    function_code: String,
    #[serde(default = "yes")]
    serialized: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    meta: Value,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    ha_endpoint_id: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v3/functions`: a serialized function (packed as the SDK sends it), or source
/// text (`register_source_code`), which the gateway packs as `PureSourceTextInspect`.
async fn register_function(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    input: Input<RegisterFunction>,
) -> ComputeResult<Json<Value>> {
    let service = service(&gateway)?;
    let request = input.value;
    if request.group.is_some() || request.ha_endpoint_id.is_some() {
        return Err(ComputeError::bad_request(
            "function sharing with Globus Groups and high-assurance functions are not supported by this gateway",
        ));
    }
    let name = request.function_name.trim();
    if name.is_empty() {
        return Err(ComputeError::bad_request(
            "a function needs a function_name",
        ));
    }
    let code = if request.serialized {
        // One packed buffer: "<length in characters>\n<serialized function>".
        let valid = request
            .function_code
            .split_once('\n')
            .and_then(|(length, rest)| Some(length.parse::<usize>().ok()? == rest.chars().count()))
            .unwrap_or(false);
        if !valid {
            return Err(ComputeError::bad_request(
                "function_code is not one packed buffer (\"<length>\\n<serialized function>\")",
            ));
        }
        request.function_code
    } else {
        let identifier = name.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !identifier {
            return Err(ComputeError::bad_request(format!(
                "function_name {name:?} must be the Python name the source defines"
            )));
        }
        let body = format!("st\n{name}:{}", request.function_code);
        format!("{}\n{body}", body.chars().count())
    };
    let id = uuid::random()?;
    lock(&service.functions).insert(
        id,
        ComputeFunction {
            owner: user.name().to_owned(),
            name: name.to_owned(),
            code,
            description: request.description,
            public: request.public,
            meta: request.meta,
        },
    );
    Ok(Json(json!({ "function_uuid": uuid::format(&id) })))
}

fn parse_uuid(text: &str, what: &str) -> ComputeResult<Uuid> {
    uuid::parse(text)
        .ok_or_else(|| ComputeError::bad_request(format!("{text:?} is not a {what} UUID")))
}

/// Function `id` if `user` may use it.
fn visible_function(service: &GlobusCompute, user: &User, id: &Uuid) -> Option<ComputeFunction> {
    lock(&service.functions)
        .get(id)
        .filter(|f| f.public || f.owner == user.name())
        .cloned()
}

async fn get_function(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
    let service = service(&gateway)?;
    let uuid = parse_uuid(&id, "function")?;
    let function = visible_function(service, &user, &uuid)
        .ok_or_else(|| ComputeError::not_found(format!("no function {id}")))?;
    Ok(Json(json!({
        "function_uuid": uuid::format(&uuid),
        "function_name": function.name,
        "function_code": function.code,
        "description": function.description,
        "public": function.public,
        "owner": function.owner,
        "metadata": function.meta,
    })))
}

async fn delete_function(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
    let service = service(&gateway)?;
    let uuid = parse_uuid(&id, "function")?;
    let mut functions = lock(&service.functions);
    match functions.get(&uuid) {
        Some(f) if f.owner == user.name() => {
            functions.remove(&uuid);
            Ok(Json(
                json!({ "result": 302, "function_uuid": uuid::format(&uuid) }),
            ))
        }
        Some(f) if f.public => Err(ComputeError::forbidden(format!(
            "function {id} is not yours to delete"
        ))),
        _ => Err(ComputeError::not_found(format!("no function {id}"))),
    }
}

/// Endpoint `uuid` if `user` may see it and submit to it.
async fn visible_endpoint(
    gateway: &Gateway,
    user: &User,
    id: &str,
) -> ComputeResult<(Uuid, EndpointRecord)> {
    let uuid = parse_uuid(id, "endpoint")?;
    let record = gateway
        .store()
        .endpoint(&uuid::endpoint_id(&uuid))
        .await?
        .filter(|e| e.visible_to(user.name()))
        .ok_or_else(|| ComputeError::not_found(format!("no endpoint {id}")))?;
    Ok((uuid, record))
}

#[derive(Deserialize)]
struct SubmitRequest {
    tasks: Map<String, Value>,
    #[serde(default)]
    task_group_id: Option<String>,
    #[serde(default)]
    create_queue: bool,
    #[serde(default)]
    result_serializers: Option<Vec<String>>,
    #[serde(default)]
    user_endpoint_config: Option<Value>,
}

/// `POST /v3/endpoints/{id}/submit`: every task becomes a funcx task of the shim, stored
/// before the answer; with `create_queue`, the task group's result queue is declared first.
async fn submit(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
    input: Input<SubmitRequest>,
) -> ComputeResult<Json<Value>> {
    let service = service(&gateway)?;
    let request = input.value;
    let (endpoint_uuid, endpoint) = visible_endpoint(&gateway, &user, &id).await?;
    if request
        .user_endpoint_config
        .as_ref()
        .is_some_and(|config| !config.is_null() && config.as_object().is_none_or(|c| !c.is_empty()))
    {
        return Err(ComputeError::bad_request(
            "user_endpoint_config is not supported: a funcx endpoint has one configuration, set where it runs",
        ));
    }
    let shim_id = service.shim.id();
    if !endpoint.allows(&shim_id) {
        return Err(ComputeError::forbidden(format!(
            "endpoint {id} runs only its allowed functions; allow the Globus Compute shim ({shim_id}) to run Globus Compute tasks on it"
        )));
    }
    let group_id = match &request.task_group_id {
        Some(text) => parse_uuid(text, "task group")?,
        None => uuid::random()?,
    };
    let serializers = request.result_serializers.unwrap_or_default();

    // Every function first, so that a bad one refuses the whole request before anything
    // is stored.
    let mut work: Vec<(String, ComputeFunction, Vec<String>)> = Vec::new();
    let mut count = 0usize;
    for (function_id, payloads) in request.tasks {
        let uuid = parse_uuid(&function_id, "function")?;
        let function = visible_function(service, &user, &uuid)
            .ok_or_else(|| ComputeError::not_found(format!("no function {function_id}")))?;
        let payloads: Vec<String> = serde_json::from_value(payloads).map_err(|_| {
            ComputeError::bad_request(format!("tasks[{function_id:?}] must be a list of strings"))
        })?;
        count += payloads.len();
        work.push((function_id, function, payloads));
    }
    if count == 0 {
        return Err(ComputeError::bad_request("no tasks to submit"));
    }

    let queue = if request.create_queue {
        let queue = format!(
            "{}{}",
            service.queue_prefix(user.name()),
            uuid::format(&group_id)
        );
        service.broker.declare(&queue).await.map_err(|error| {
            ComputeError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                format!("cannot create the task group's result queue: {error}"),
            )
        })?;
        Some(queue)
    } else {
        None
    };
    register_shim(&gateway, service, &user).await?;

    let mut new = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for (_, function, payloads) in &work {
        for payload in payloads {
            let args = shim::task_args(&function.code, payload, &serializers)
                .map_err(|e| ComputeError::bad_request(e.to_string()))?;
            new.push(NewTask {
                owner: user.name().to_owned(),
                endpoint: endpoint.id.clone(),
                function: shim_id,
                args: args.clone(),
                timeout: None,
            });
            tasks.push(Task {
                function: service.shim.clone(),
                args,
                options: TaskOptions::new(),
            });
        }
    }
    // Stored (durably) before anything runs or is acknowledged.
    let ids = gateway.store().insert_tasks(new, SystemTime::now()).await?;
    {
        let mut groups = lock(&service.groups);
        let group: &mut Group = groups
            .entry((user.name().to_owned(), group_id))
            .or_default();
        group.tasks.extend(&ids);
        if queue.is_some() {
            group.queue.clone_from(&queue);
        }
        // Into the outbox before they can finish.
        if let Some(queue) = &group.queue {
            let mut outbox = lock(&service.outbox);
            for id in &ids {
                outbox.insert(*id, queue.clone());
            }
        }
    }
    gateway.inner.metrics.submitted(ids.len());
    gateway.dispatch(&endpoint.id, ids.iter().copied().zip(tasks).collect());

    let mut answer = Map::new();
    let mut next = ids.iter();
    for (function_id, _, payloads) in work {
        let task_ids: Vec<Value> = next
            .by_ref()
            .take(payloads.len())
            .map(|id| Value::String(uuid::format(&uuid::task_uuid(*id))))
            .collect();
        answer.insert(function_id, Value::Array(task_ids));
    }
    Ok(Json(json!({
        "request_id": uuid::format(&uuid::random()?),
        "task_group_id": uuid::format(&group_id),
        "endpoint_id": uuid::format(&endpoint_uuid),
        "tasks": answer,
    })))
}

/// Stores the shim's function record for `user` (once per user and process), so that the
/// store can re-create its tasks after a restart like any other.
async fn register_shim(
    gateway: &Gateway,
    service: &GlobusCompute,
    user: &User,
) -> ComputeResult<()> {
    if lock(&service.shim_owners).contains(user.name()) {
        return Ok(());
    }
    gateway
        .store()
        .put_function(FunctionRecord {
            id: service.shim.id(),
            owner: user.name().to_owned(),
            name: shim::SHIM_NAME.to_owned(),
            body: service.shim.body().clone(),
            public: false,
            shared_with: Vec::new(),
        })
        .await?;
    lock(&service.shim_owners).insert(user.name().to_owned());
    Ok(())
}

/// Task `uuid` if it is a Globus Compute task of `user`'s.
async fn own_task(
    gateway: &Gateway,
    service: &GlobusCompute,
    user: &User,
    uuid: &Uuid,
) -> ComputeResult<Option<TaskRecord>> {
    let Some(id) = uuid::task_id(uuid) else {
        return Ok(None);
    };
    Ok(gateway
        .store()
        .task(id)
        .await?
        .filter(|t| t.owner == user.name() && t.function == service.shim.id()))
}

/// A task as `GET /v2/tasks/{id}` and `POST /v2/batch_status` show it.
async fn task_json(gateway: &Gateway, record: &TaskRecord) -> Value {
    let task_id = uuid::format(&uuid::task_uuid(record.id));
    if let Some(done) = finished(record) {
        let outcome = done.outcome;
        let mut task = json!({
            "task_id": task_id,
            "status": if outcome.is_error() { "failed" } else { "success" },
            "completion_t": format!("{:.6}", done.completion),
            "details": outcome.details,
        });
        let key = if outcome.is_error() {
            "exception"
        } else {
            "result"
        };
        task[key] = Value::String(outcome.data);
        return task;
    }
    let mut state = record.state;
    if let Some((runtime, local)) = gateway.running(record.id) {
        if let Some(status) = runtime.executor.status(local).await {
            state = status.state;
        }
    }
    let status = match state {
        TaskState::Running => "running",
        _ if gateway.endpoint_status(&record.endpoint).await.connected => "waiting-for-launch",
        _ => "waiting-for-ep",
    };
    json!({ "task_id": task_id, "status": status, "completion_t": null })
}

async fn get_task(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
    let service = service(&gateway)?;
    let uuid = parse_uuid(&id, "task")?;
    let record = own_task(&gateway, service, &user, &uuid)
        .await?
        .ok_or_else(|| ComputeError::not_found(format!("no task {id}")))?;
    Ok(Json(task_json(&gateway, &record).await))
}

#[derive(Deserialize)]
struct BatchStatus {
    task_ids: Vec<String>,
}

/// `POST /v2/batch_status`: the caller's tasks among `task_ids`; others are left out, as
/// the SDK expects of unknown ids.
async fn batch_status(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    input: Input<BatchStatus>,
) -> ComputeResult<Json<Value>> {
    let service = service(&gateway)?;
    let mut results = Map::new();
    for id in input.value.task_ids {
        let Some(uuid) = uuid::parse(&id) else {
            continue;
        };
        if let Some(record) = own_task(&gateway, service, &user, &uuid).await? {
            results.insert(id, task_json(&gateway, &record).await);
        }
    }
    Ok(Json(json!({ "response": "batch", "results": results })))
}

async fn task_group(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
    let service = service(&gateway)?;
    let uuid = parse_uuid(&id, "task group")?;
    let tasks: Vec<Value> = lock(&service.groups)
        .get(&(user.name().to_owned(), uuid))
        .ok_or_else(|| ComputeError::not_found(format!("no task group {id}")))?
        .tasks
        .iter()
        .map(|task| json!({ "id": uuid::format(&uuid::task_uuid(*task)) }))
        .collect();
    Ok(Json(
        json!({ "taskgroup_id": uuid::format(&uuid), "tasks": tasks }),
    ))
}

async fn amqp_url(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
) -> ComputeResult<Json<Value>> {
    let service = service(&gateway)?;
    Ok(Json(json!({
        "connection_url": service.client_amqp_url(),
        "queue_prefix": service.queue_prefix(user.name()),
    })))
}

async fn endpoint_json(gateway: &Gateway, uuid: &Uuid, record: &EndpointRecord) -> Value {
    let status = gateway.endpoint_status(&record.id).await;
    json!({
        "uuid": uuid::format(uuid),
        "name": record.name,
        "display_name": record.name,
        "owner": record.owner,
        "status": if status.connected { "online" } else { "offline" },
        "endpoint_type": "funcx",
    })
}

#[derive(Deserialize)]
struct Role {
    #[serde(default)]
    role: Option<String>,
}

async fn list_endpoints(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Query(role): Query<Role>,
) -> ComputeResult<Json<Value>> {
    let any = role.role.as_deref() == Some("any");
    let mut list = Vec::new();
    for record in gateway.store().endpoints().await? {
        let mine = record.owner == user.name();
        if !(mine || any && record.visible_to(user.name())) {
            continue;
        }
        if let Some(uuid) = uuid::parse(&record.id) {
            list.push(endpoint_json(&gateway, &uuid, &record).await);
        }
    }
    Ok(Json(Value::Array(list)))
}

async fn endpoint_metadata(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
    let (uuid, record) = visible_endpoint(&gateway, &user, &id).await?;
    Ok(Json(endpoint_json(&gateway, &uuid, &record).await))
}

async fn endpoint_status(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
    let (_, record) = visible_endpoint(&gateway, &user, &id).await?;
    let status = gateway.endpoint_status(&record.id).await;
    Ok(Json(json!({
        "status": if status.connected { "online" } else { "offline" },
        "details": {
            "managers": status.managers,
            "total_workers": status.workers,
            "idle_workers": status.idle_workers,
            "pending_tasks": status.queued,
            "outstanding_tasks": status.in_flight,
        },
    })))
}
