//! The HTTP API, version 1.
//!
//! One list (`routes`) holds every route with its method, path, access rule, handler and
//! OpenAPI operation; the router and `GET /v1/openapi.json` are both built from it, so the
//! document cannot drift from what is served.
//!
//! The bodies of the routes, and the headers and media type they use, are the clients'
//! contract and live with them: `funcx_client::model`.

pub(crate) mod body;
mod handlers;
pub mod lifecycle;
pub(crate) use funcx_client::model;

use std::sync::OnceLock;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{self, MethodRouter};
use axum::Router;
use serde_json::{json, Map, Value};

#[cfg(feature = "globus-compute")]
pub(crate) use handlers::bearer;
pub(crate) use handlers::task_options;

use crate::error::ApiError;
use crate::Gateway;
use model::POSTCARD;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone.
    Public,
    /// A user, by bearer token (through the [`crate::Authenticator`]), within its rate.
    User,
    /// An endpoint, by its own bearer token (checked by the route).
    Endpoint,
}

pub(crate) struct RouteSpec {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) access: Access,
    pub(crate) handler: MethodRouter<Gateway>,
    /// The OpenAPI operation object, written by hand.
    pub(crate) operation: Value,
}

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<Gateway>,
    operation: Value,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
        handler,
        operation,
    }
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON (and, where `postcard`, also postcard) body of schema `name`.
fn content(name: &str, postcard: bool) -> Value {
    let mut content = json!({ "application/json": { "schema": schema(name) } });
    if postcard {
        content[POSTCARD] = json!({ "schema": { "type": "string", "format": "binary",
            "description": format!("postcard encoding of {name}") } });
    }
    content
}

fn ok(description: &str, name: &str, postcard: bool) -> Value {
    json!({ "description": description, "content": content(name, postcard) })
}

fn errors(codes: &[&str]) -> Value {
    let mut responses = Map::new();
    for code in codes {
        responses.insert(
            (*code).to_string(),
            json!({ "description": "error", "content": content("Error", false) }),
        );
    }
    Value::Object(responses)
}

fn operation(
    summary: &str,
    request: Option<(&str, bool)>,
    responses: Value,
    errs: &[&str],
) -> Value {
    let mut op = json!({ "summary": summary, "responses": responses });
    if let Some((name, postcard)) = request {
        op["requestBody"] = json!({ "required": true, "content": content(name, postcard) });
    }
    if let (Some(all), Value::Object(extra)) = (op["responses"].as_object_mut(), errors(errs)) {
        all.extend(extra);
    }
    op
}

fn path_param(op: Value, name: &str, description: &str) -> Value {
    let mut op = op;
    op["parameters"] = json!([{ "name": name, "in": "path", "required": true,
        "description": description, "schema": { "type": "string" } }]);
    op
}

/// Adds optional query parameters `(name, type, description)` to an operation.
fn query_params(op: Value, params: &[(&str, &str, &str)]) -> Value {
    let mut op = op;
    op["parameters"] = params
        .iter()
        .map(|(name, kind, description)| {
            json!({ "name": name, "in": "query", "required": false,
                "description": description, "schema": { "type": kind } })
        })
        .collect();
    op
}

/// Adds the optional `Idempotency-Key` request header and the `Idempotent-Replayed` answer
/// header to the submit operation.
fn idempotency_header(op: Value) -> Value {
    let mut op = op;
    if let Some(parameters) = op["parameters"].as_array_mut() {
        parameters.push(json!({ "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "A name the client chooses for this submission (1 to 256 visible ASCII characters, e.g. a UUID), kept with its tasks for the result TTL. A resend with the same key by the same user answers the first request's task ids and creates nothing; with a different body it is refused with 409 `conflict`.",
            "schema": { "type": "string", "maxLength": 256 } }));
    }
    op["responses"]["200"]["headers"] = json!({ "Idempotent-Replayed": {
        "description": "`true` when the answer repeats the ids of an earlier request with the same Idempotency-Key",
        "schema": { "type": "string" } } });
    op
}

const AUTH_ERRORS: [&str; 2] = ["401", "429"];

fn with_auth(codes: &[&'static str]) -> Vec<&'static str> {
    let mut all = AUTH_ERRORS.to_vec();
    all.extend_from_slice(codes);
    all
}

/// Every route of the API.
pub(crate) fn routes() -> Vec<RouteSpec> {
    use handlers::*;
    use Access::*;
    vec![
        route(Method::GET, "/health", Public, routing::get(health),
            operation("Liveness: 200 while the gateway serves.", None,
                json!({ "200": { "description": "alive" } }), &[])),
        route(Method::GET, "/metrics", User, routing::get(metrics),
            operation("Prometheus metrics (text format): tasks by state, submit-to-result latency, endpoints, workers.", None,
                json!({ "200": { "description": "metrics", "content": { "text/plain": { "schema": { "type": "string" } } } } }),
                &AUTH_ERRORS)),
        route(Method::GET, "/v1/openapi.json", User, routing::get(openapi),
            operation("This document.", None,
                json!({ "200": { "description": "OpenAPI 3 document" } }), &AUTH_ERRORS)),
        route(Method::POST, "/v1/functions", User, routing::post(register_function),
            operation("Register a function by Python source or pickle; its id is a content hash.",
                Some(("RegisterFunction", false)),
                json!({ "201": ok("registered", "FunctionRegistered", false) }),
                &with_auth(&["400", "413", "415"]))),
        route(Method::GET, "/v1/functions/{id}", User, routing::get(get_function),
            path_param(operation("A function the caller owns or may use.", None,
                json!({ "200": ok("the function", "FunctionView", false) }),
                &with_auth(&["400", "404"])), "id", "function id (64 hex digits)")),
        route(Method::DELETE, "/v1/functions/{id}", User, routing::delete(delete_function),
            path_param(operation("Delete the caller's record of a function.", None,
                json!({ "204": { "description": "deleted" } }),
                &with_auth(&["400", "403", "404"])), "id", "function id (64 hex digits)")),
        route(Method::POST, "/v1/endpoints", User, routing::post(register_endpoint),
            operation("Register an endpoint; the answer holds its token, shown once.",
                Some(("RegisterEndpoint", false)),
                json!({ "201": ok("registered", "EndpointRegistered", false) }),
                &with_auth(&["400", "413", "415"]))),
        route(Method::GET, "/v1/endpoints", User, routing::get(list_endpoints),
            operation("The caller's endpoints with their live status.", None,
                json!({ "200": { "description": "endpoints", "content": { "application/json": {
                    "schema": { "type": "array", "items": schema("EndpointView") } } } } }),
                &AUTH_ERRORS)),
        route(Method::GET, "/v1/endpoints/{id}", User, routing::get(get_endpoint),
            path_param(operation("An endpoint the caller owns or may submit to.", None,
                json!({ "200": ok("the endpoint", "EndpointView", false) }),
                &with_auth(&["404"])), "id", "endpoint id")),
        route(Method::GET, "/v1/endpoints/{id}/connect", Endpoint, routing::get(connect_endpoint),
            path_param(operation(
                "An endpoint dials in: with `Authorization: Bearer <endpoint token>`, `Connection: Upgrade` and `Upgrade: funcx-manager-protocol`, the answer is 101 and the connection then carries the funcx handshake and manager protocol.",
                None,
                json!({ "101": { "description": "switching to funcx-manager-protocol" } }),
                &["401", "404", "426"]), "id", "endpoint id")),
        route(Method::POST, "/v1/endpoints/{id}/stop", User, routing::post(lifecycle::stop_endpoint),
            path_param(operation("Stop an endpoint remotely (its owner): its connections take no new task, finish and deliver the ones they hold, and exit. Tasks that had not reached it wait for its next start.", None,
                json!({ "202": ok("stopping", "EndpointStopping", false) }),
                &with_auth(&["403", "404"])), "id", "endpoint id")),
        route(Method::DELETE, "/v1/endpoints/{id}", User, routing::delete(lifecycle::delete_endpoint),
            path_param(operation("Delete an endpoint (its owner): it is stopped and forgotten; its token stops working.", None,
                json!({ "204": { "description": "deleted" } }),
                &with_auth(&["403", "404"])), "id", "endpoint id")),
        route(Method::POST, "/v1/endpoints/{id}/token", User, routing::post(lifecycle::rotate_endpoint_token),
            path_param(operation("Rotate an endpoint's token (its owner): the answer holds the new one, shown once; the old one is refused from now on.", None,
                json!({ "201": ok("rotated", "EndpointRegistered", false) }),
                &with_auth(&["403", "404"])), "id", "endpoint id")),
        route(Method::DELETE, "/v1/endpoints/{id}/token", User, routing::delete(lifecycle::revoke_endpoint_token),
            path_param(operation("Revoke an endpoint's token (its owner): the endpoint is stopped, and refused until a new token is issued.", None,
                json!({ "204": { "description": "revoked" } }),
                &with_auth(&["403", "404"])), "id", "endpoint id")),
        route(Method::GET, "/v1/admin/users", User, routing::get(lifecycle::list_users),
            operation("Every user (admins only).", None,
                json!({ "200": ok("users", "UserList", false) }),
                &with_auth(&["403"]))),
        route(Method::POST, "/v1/admin/users", User, routing::post(lifecycle::create_user),
            operation("Create a user (admins only); the answer holds its token, shown once.", Some(("CreateUser", false)),
                json!({ "201": ok("created", "UserToken", false) }),
                &with_auth(&["400", "403", "409"]))),
        route(Method::POST, "/v1/admin/users/{id}/token", User, routing::post(lifecycle::rotate_user_token),
            path_param(operation("Rotate a user's token (admins only); the old one is refused from now on.", None,
                json!({ "201": ok("rotated", "UserToken", false) }),
                &with_auth(&["403", "404"])), "id", "user name")),
        route(Method::DELETE, "/v1/admin/users/{id}", User, routing::delete(lifecycle::delete_user),
            path_param(operation("Delete a user (admins only); its token is refused from now on.", None,
                json!({ "204": { "description": "deleted" } }),
                &with_auth(&["403", "404"])), "id", "user name")),
        route(Method::POST, "/v1/endpoints/{id}/tasks", User, routing::post(submit),
            idempotency_header(path_param(operation("Submit tasks to an endpoint; each is stored durably before the answer. With an `Idempotency-Key` header, sending the same request again (after a timeout, a lost answer, a gateway restart) answers the same task ids and creates nothing; the same key with a different body is a 409.",
                Some(("SubmitRequest", true)),
                json!({ "200": ok("accepted", "SubmitResponse", true) }),
                &with_auth(&["400", "403", "404", "409", "413", "415"])), "id", "endpoint id"))),
        route(Method::POST, "/v1/tasks/batch", User, routing::post(batch),
            operation("Many tasks at once.", Some(("BatchRequest", true)),
                json!({ "200": ok("the tasks found", "BatchResponse", true) }),
                &with_auth(&["400", "413", "415"]))),
        route(Method::GET, "/v1/tasks", User, routing::get(list_tasks),
            query_params(operation("The caller's tasks, newest first, a page at a time: each with its endpoint, function, state, timeline and error code, without arguments or results.", None,
                json!({ "200": ok("a page of tasks", "TaskList", false) }),
                &with_auth(&["400"])), &[
                    ("limit", "integer", "how many tasks, 1 to 1000 (default 50); a page of large records stops short"),
                    ("before", "integer", "only tasks older than this id: the `next` of the previous page"),
                ])),
        route(Method::GET, "/v1/tasks/{id}", User, routing::get(get_task),
            path_param(operation("A task: state, timeline, and its result or error once finished (`Accept: application/x-postcard` for postcard).", None,
                json!({ "200": ok("the task", "TaskView", true) }),
                &with_auth(&["400", "404"])), "id", "task id")),
        route(Method::DELETE, "/v1/tasks/{id}", User, routing::delete(delete_task),
            path_param(operation("Cancel a task if unfinished and forget it.", None,
                json!({ "204": { "description": "deleted" } }),
                &with_auth(&["400", "404"])), "id", "task id")),
        route(Method::POST, "/v1/tasks/{id}/cancel", User, routing::post(cancel_task),
            path_param(operation("Cancel a task; it finishes with a `cancelled` error unless it finished first.", None,
                json!({ "202": ok("cancellation requested", "TaskView", false) }),
                &with_auth(&["400", "404"])), "id", "task id")),
        route(Method::GET, "/v1/results", User, routing::get(results),
            operation("Server-sent events: a `result` event (data: TaskView JSON) for each of the caller's tasks that finishes while connected; `lagged` (data: count, 1 when not known) if some were missed. With `Accept: application/x-postcard`, a binary stream instead: frames of a u32 big-endian length then a postcard ResultFrame holding every result waiting when it was written (payloads raw); an empty frame is a keep-alive.", None,
                json!({ "200": { "description": "event stream", "content": {
                    "text/event-stream": { "schema": { "type": "string" } },
                    POSTCARD: { "schema": { "type": "string", "format": "binary",
                        "description": "frames: u32 big-endian length, postcard encoding of ResultFrame" } } } } }),
                &AUTH_ERRORS)),
    ]
}

/// The OpenAPI 3 document, built once from [`routes`].
pub(crate) fn openapi_document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut paths = Map::new();
        for spec in routes() {
            let mut operation = spec.operation;
            operation["security"] = match spec.access {
                Access::Public => json!([]),
                Access::User => json!([{ "user": [] }]),
                Access::Endpoint => json!([{ "endpoint": [] }]),
            };
            let entry = paths
                .entry(spec.path.to_string())
                .or_insert_with(|| json!({}));
            entry[spec.method.as_str().to_ascii_lowercase()] = operation;
        }
        json!({
            "openapi": "3.0.3",
            "info": {
                "title": "funcx gateway",
                "version": "1",
                "description": "Run Python functions on your endpoints. JSON bodies carry payloads as base64 pickles, or as plain JSON values for a task submitted with \"format\": \"json\"; the submit and result routes also take and give application/x-postcard. Errors are {\"error\": {\"code\", \"message\"}}."
            },
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "user": { "type": "http", "scheme": "bearer", "description": "a user token" },
                    "endpoint": { "type": "http", "scheme": "bearer", "description": "an endpoint token" }
                },
                "schemas": schemas()
            }
        })
    })
}

fn schemas() -> Value {
    let b64 =
        json!({ "type": "string", "format": "byte", "description": "base64 (standard, padded)" });
    let hex_id = json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
    let time = json!({ "type": "object", "nullable": true, "description": "SystemTime: seconds and nanoseconds since the Unix epoch",
        "properties": { "secs_since_epoch": { "type": "integer" }, "nanos_since_epoch": { "type": "integer" } } });
    // Its own json!: one macro call with everything would pass the recursion limit.
    let task_error = json!({ "type": "object", "nullable": true,
                "description": "funcx_core::TaskErrorReport: a stable code (funcx_core::ErrorCode), the text, and the details the code has (null otherwise)",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "enum": ["python", "load", "arguments_unpickle",
                        "result_pickle", "serialize", "decode", "result_too_large",
                        "arguments_too_large", "worker_died", "timeout", "cancelled", "shutdown",
                        "no_workers", "manager_lost", "protocol", "format_refused", "function_refused", "unsatisfiable"] },
                    "message": { "type": "string" },
                    "python": { "type": "object", "nullable": true, "properties": {
                        "type_name": { "type": "string" }, "message": { "type": "string" },
                        "traceback": { "type": "string" },
                        "line": { "type": "integer", "nullable": true } } },
                    "worker_exit": { "nullable": true,
                        "description": "{\"code\": n}, {\"signal\": n} or \"unknown\"" },
                    "reason": { "type": "string", "nullable": true },
                    "size": { "type": "integer", "nullable": true },
                    "limit": { "type": "integer", "nullable": true },
                    "timeout": { "type": "object", "nullable": true, "properties": {
                        "secs": { "type": "integer" }, "nanos": { "type": "integer" } } } } });
    // Its own json! too, for the same reason.
    let task_list = json!({ "type": "object", "properties": {
            "tasks": { "type": "array", "items": { "type": "object", "properties": {
                "id": { "type": "integer" },
                "state": { "type": "string", "enum": ["queued", "dispatched", "running", "succeeded", "failed"] },
                "endpoint_id": { "type": "string" },
                "function_id": hex_id,
                "timeline": { "type": "object", "properties": {
                    "submitted": time, "dispatched": time, "running": time, "finished": time } },
                "error_code": { "type": "string", "nullable": true,
                    "description": "the failed task's funcx_core::ErrorCode (as in TaskView's error)" } } } },
            "next": { "type": "integer", "nullable": true,
                "description": "the `before` of the next page, when more tasks follow" } } });
    json!({
        "Error": { "type": "object", "required": ["error"], "properties": { "error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": { "type": "string", "enum": ["not_found", "forbidden", "unauthorized",
                    "bad_request", "conflict", "payload_too_large", "unsupported_media_type", "rate_limited",
                    "upgrade_required", "no_route", "method_not_allowed", "internal"] },
                "message": { "type": "string" } } } } },
        "RegisterFunction": { "type": "object", "required": ["name"], "properties": {
            "name": { "type": "string" }, "source": { "type": "string" }, "pickle": b64,
            "public": { "type": "boolean" },
            "shared_with": { "type": "array", "items": { "type": "string" } },
            "image": { "type": "string",
                "description": "the container image its tasks run in (part of its id)" } } },
        "FunctionRegistered": { "type": "object", "properties": { "function_id": hex_id } },
        "FunctionView": { "type": "object", "properties": {
            "function_id": hex_id, "name": { "type": "string" }, "owner": { "type": "string" },
            "public": { "type": "boolean" },
            "shared_with": { "type": "array", "items": { "type": "string" } },
            "source": { "type": "string", "nullable": true }, "pickle": b64,
            "image": { "type": "string", "nullable": true } } },
        "RegisterEndpoint": { "type": "object", "required": ["name"], "properties": {
            "name": { "type": "string" },
            "allowed_functions": { "type": "array", "items": hex_id, "nullable": true },
            "allowed_users": { "type": "array", "items": { "type": "string" }, "nullable": true } } },
        "EndpointStopping": { "type": "object", "properties": {
            "endpoint_id": { "type": "string" }, "connections": { "type": "integer" } } },
        "CreateUser": { "type": "object", "required": ["name"], "properties": {
            "name": { "type": "string" } } },
        "UserToken": { "type": "object", "properties": {
            "name": { "type": "string" }, "token": { "type": "string" } } },
        "UserList": { "type": "object", "properties": {
            "users": { "type": "array", "items": { "type": "string" } } } },
        "EndpointRegistered": { "type": "object", "properties": {
            "endpoint_id": { "type": "string" }, "endpoint_token": { "type": "string" } } },
        "EndpointView": { "type": "object", "properties": {
            "endpoint_id": { "type": "string" }, "name": { "type": "string" },
            "owner": { "type": "string" },
            "allowed_functions": { "type": "array", "items": hex_id, "nullable": true },
            "allowed_users": { "type": "array", "items": { "type": "string" }, "nullable": true },
            "status": { "type": "object", "properties": {
                "connected": { "type": "boolean" }, "managers": { "type": "integer" },
                "workers": { "type": "integer" }, "busy_workers": { "type": "integer" },
                "idle_workers": { "type": "integer" }, "queued": { "type": "integer" },
                "in_flight": { "type": "integer" } } } } },
        "SubmitRequest": { "type": "object", "required": ["tasks"], "properties": { "tasks": {
            "type": "array", "items": { "type": "object", "required": ["function_id"], "properties": {
                "function_id": hex_id,
                "format": { "type": "string", "enum": ["pickle", "json"], "default": "pickle",
                    "description": "what args and kwargs hold: base64 pickles, or with \"json\" plain JSON values (any type), read by the worker with json.loads; the result then comes back as JSON too. An endpoint may allow only some formats (allowed_formats); a refused one fails the task with code format_refused" },
                "args": { "type": "array", "items": {},
                    "description": "positional arguments: base64 pickles (format pickle) or JSON values (format json)",
                    "example": [1, "x", { "k": [null, 2.5] }] },
                "kwargs": { "type": "object", "additionalProperties": {},
                    "description": "keyword arguments, in the task's format" },
                "timeout_ms": { "type": "integer", "nullable": true },
                "resources": { "type": "object", "additionalProperties": false,
                    "description": "what the task holds at its endpoint while it runs; a task that could fit on no node (or block, for nodes) of its endpoint fails at once with code unsatisfiable",
                    "properties": {
                        "cores": { "type": "integer", "default": 1 },
                        "gpus": { "type": "integer", "default": 0 },
                        "memory": { "type": "integer", "default": 0, "description": "bytes" },
                        "nodes": { "type": "integer", "default": 0,
                            "description": "whole nodes of one block, for a multi-node (MPI) task" } } } } } } } },
        "SubmitResponse": { "type": "object", "properties": {
            "task_ids": { "type": "array", "items": { "type": "integer" } } } },
        "TaskView": { "type": "object", "properties": {
            "id": { "type": "integer" },
            "state": { "type": "string", "enum": ["queued", "dispatched", "running", "succeeded", "failed"] },
            "timeline": { "type": "object", "properties": {
                "submitted": time, "dispatched": time, "running": time, "finished": time } },
            "result": { "nullable": true,
                "description": "the result: base64 text of a pickle, or for result_format json the JSON value itself" },
            "result_format": { "type": "string", "enum": ["pickle", "json"], "nullable": true,
                "description": "the format of result: json for a task submitted with format json" },
            "error": task_error,
            "error_message": { "type": "string", "nullable": true } } },
        "TaskList": task_list,
        "BatchRequest": { "type": "object", "required": ["ids"], "properties": {
            "ids": { "type": "array", "items": { "type": "integer" } } } },
        "BatchResponse": { "type": "object", "properties": {
            "tasks": { "type": "array", "items": schema("TaskView") },
            "not_found": { "type": "array", "items": { "type": "integer" } } } },
        "ResultFrame": { "type": "object", "description": "one frame of the binary result stream (postcard only)", "properties": {
            "lagged": { "type": "integer", "description": "results dropped for this reader before this frame" },
            "results": { "type": "array", "items": schema("TaskView") } } }
    })
}

/// Authenticates the caller, applies its rate limit, refuses a declared body over the limit
/// before reading it, and hands the [`crate::User`] to the handler.
async fn authenticate(
    State(gateway): State<Gateway>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = handlers::bearer(request.headers())
        .ok_or_else(|| ApiError::unauthorized("send a token: `Authorization: Bearer <token>`"))?;
    let user = gateway
        .inner
        .authenticator
        .authenticate(token)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token is not valid"))?;
    gateway
        .inner
        .limiter
        .check(user.name())
        .map_err(ApiError::rate_limited)?;
    let limit = gateway.inner.config.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    request.extensions_mut().insert(user);
    Ok(next.run(request).await)
}

/// The router of the API.
pub(crate) fn router(gateway: Gateway) -> Router {
    let mut open = Router::new();
    let mut users = Router::new();
    for spec in routes() {
        match spec.access {
            Access::Public | Access::Endpoint => open = open.route(spec.path, spec.handler),
            Access::User => users = users.route(spec.path, spec.handler),
        }
    }
    let users = users.route_layer(middleware::from_fn_with_state(
        gateway.clone(),
        authenticate,
    ));
    open.merge(users)
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(gateway)
}
