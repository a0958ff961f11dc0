//! The HTTP routes the Globus Compute SDK calls (through globus-sdk's `ComputeClientV2` and
//! `ComputeClientV3`), with the shapes it parses, and the token route of its `ClientApp`.
//!
//! One file per resource, as the SDK groups them: `functions`, `submit` (task submission),
//! `tasks` (status, groups, the results queue), `endpoints`, and `oauth` (the token route).
//! Here: the router, the error shape Globus services answer with, authentication, and the
//! [`Caller`] extractor that hands every authenticated route who calls and the service.

mod endpoints;
mod functions;
mod oauth;
mod submit;
mod tasks;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::service::GlobusCompute;
use super::uuid::{self, Uuid};
use crate::auth::User;
use crate::error::ApiError;
use crate::store::StoreError;
use crate::Gateway;

/// The lowest SDK and endpoint versions the gateway serves: those that speak API v3 for
/// registration and submission (and AMQP for results).
const MIN_SDK_VERSION: &str = "2.0.0";

/// What a request without a token is told.
const SEND_A_TOKEN: &str = "send a token: `Authorization: Bearer <token>`";

/// An error as Globus services answer one: `{"code", "message"}` with the HTTP status,
/// which globus-sdk raises as `GlobusAPIError`.
pub(crate) struct ComputeError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ComputeError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ComputeError {
        ComputeError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn not_found(message: impl Into<String>) -> ComputeError {
        ComputeError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ComputeError {
        ComputeError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub(super) fn forbidden(message: impl Into<String>) -> ComputeError {
        ComputeError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub(super) fn unauthorized(message: impl Into<String>) -> ComputeError {
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
        .route("/v3/functions", post(functions::register_function))
        .route(
            "/v2/functions/{id}",
            get(functions::get_function).delete(functions::delete_function),
        )
        .route("/v3/endpoints/{id}/submit", post(submit::submit))
        .route("/v2/tasks/{id}", get(tasks::get_task))
        .route("/v2/batch_status", post(tasks::batch_status))
        .route("/v2/taskgroup/{id}", get(tasks::task_group))
        .route("/v2/get_amqp_result_connection_url", get(tasks::amqp_url))
        .route("/v2/endpoints", get(endpoints::list_endpoints))
        .route("/v2/endpoints/{id}", get(endpoints::endpoint_metadata))
        .route("/v2/endpoints/{id}/status", get(endpoints::endpoint_status))
        .route_layer(middleware::from_fn_with_state(
            gateway.clone(),
            authenticate,
        ));
    let open = Router::new()
        .route("/v2/version", get(version))
        .route("/v2/oauth2/token", post(oauth::issue_token));
    Some(open.merge(users).with_state(gateway.clone()))
}

/// The gateway's Globus Compute service; `router` serves these routes only when there is one.
fn service(gateway: &Gateway) -> ComputeResult<&Arc<GlobusCompute>> {
    gateway
        .inner
        .globus
        .as_ref()
        .ok_or_else(|| ComputeError::not_found("this gateway does not serve Globus Compute"))
}

/// Who calls an authenticated route, and what it needs to answer: the preamble of every
/// route behind [`authenticate`], which has put the user in the request.
struct Caller {
    gateway: Gateway,
    user: User,
    service: Arc<GlobusCompute>,
}

impl FromRequestParts<Gateway> for Caller {
    type Rejection = ComputeError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> ComputeResult<Caller> {
        let service = Arc::clone(service(gateway)?);
        // Absent only on a route outside `authenticate`'s layer: refused rather than served
        // to nobody.
        let user = parts
            .extensions
            .get::<User>()
            .cloned()
            .ok_or_else(|| ComputeError::unauthorized(SEND_A_TOKEN))?;
        Ok(Caller {
            gateway: gateway.clone(),
            user,
            service,
        })
    }
}

/// The caller, by a token of the token route or by a gateway user token (what
/// `AccessTokenAuthorizer` sends), within its rate.
async fn authenticate(
    State(gateway): State<Gateway>,
    mut request: Request,
    next: Next,
) -> Result<Response, ComputeError> {
    let token = crate::api::bearer(request.headers())
        .ok_or_else(|| ComputeError::unauthorized(SEND_A_TOKEN))?;
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

/// `text` as a UUID, or a 400 that says what it should have been the id of.
fn parse_uuid(text: &str, what: &str) -> ComputeResult<Uuid> {
    uuid::parse(text)
        .ok_or_else(|| ComputeError::bad_request(format!("{text:?} is not a {what} UUID")))
}
