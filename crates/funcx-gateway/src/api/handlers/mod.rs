//! The route handlers: each checks who may do what, then asks the store or the endpoint's
//! executor.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
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
use crate::gateway::Published;
use crate::store::{
    fingerprint, hash_token, EndpointRecord, Finished, FunctionRecord, IdempotencyKey, Insertion,
    NewTask, TaskRecord,
};
use crate::Gateway;

mod endpoints;
mod functions;
mod results;
mod tasks;

pub(crate) use endpoints::*;
pub(crate) use functions::*;
pub(crate) use results::*;
pub(crate) use tasks::*;

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
