//! Request bodies in, response bodies out: JSON or postcard, within the size limit, with a
//! clear 4xx for anything else.

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;
use crate::Gateway;

pub(crate) use funcx_client::model::POSTCARD;

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Postcard,
}

impl Format {
    /// The format a client asked responses in: postcard when `Accept` names it.
    pub(crate) fn accepted(headers: &HeaderMap) -> Format {
        let postcard = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains(POSTCARD));
        if postcard {
            Format::Postcard
        } else {
            Format::Json
        }
    }
}

/// A request body decoded as `T`, and the format it came in (responses answer in kind).
pub(crate) struct Input<T> {
    pub(crate) value: T,
    pub(crate) format: Format,
}

impl<T: DeserializeOwned> FromRequest<Gateway> for Input<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, gateway: &Gateway) -> Result<Self, ApiError> {
        let limit = gateway.inner.config.max_body_bytes;
        let headers = request.headers();
        let format = match headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
            None => Format::Json,
            Some(Ok(t)) if t.starts_with("application/json") => Format::Json,
            // What `curl -d '{...}'` sends when told no type: the body is still JSON, and
            // refusing it made the README's first curl call fail. A form that is not JSON
            // gets the same 400 "malformed JSON body" as any other bad JSON.
            Some(Ok(t)) if t.starts_with("application/x-www-form-urlencoded") => Format::Json,
            Some(Ok(t)) if t.starts_with(POSTCARD) => Format::Postcard,
            Some(other) => {
                return Err(ApiError::unsupported_media_type(format!(
                    "bodies are application/json or {POSTCARD}, not {:?}",
                    other.unwrap_or("(not text)")
                )))
            }
        };
        let mut body = request.into_body();
        let mut bytes = Vec::new();
        // Counted as it arrives, so a chunked body without a length cannot exceed the limit
        // in memory either.
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > limit {
                    return Err(ApiError::payload_too_large(limit));
                }
                bytes.extend_from_slice(&data);
            }
        }
        let value = match format {
            Format::Json => serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?,
            Format::Postcard => postcard::from_bytes(&bytes)
                .map_err(|e| ApiError::bad_request(format!("malformed postcard body: {e}")))?,
        };
        Ok(Input { value, format })
    }
}

/// A response body in the format the client asked for, with a status.
pub(crate) struct Reply<T> {
    pub(crate) status: StatusCode,
    pub(crate) value: T,
    pub(crate) format: Format,
}

impl<T> Reply<T> {
    pub(crate) fn ok(value: T, format: Format) -> Reply<T> {
        Reply {
            status: StatusCode::OK,
            value,
            format,
        }
    }

    pub(crate) fn json(value: T) -> Reply<T> {
        Reply::ok(value, Format::Json)
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Reply<T> {
        self.status = status;
        self
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        match self.format {
            Format::Json => (self.status, axum::Json(self.value)).into_response(),
            Format::Postcard => match postcard::to_stdvec(&self.value) {
                Ok(bytes) => (
                    self.status,
                    [(header::CONTENT_TYPE, HeaderValue::from_static(POSTCARD))],
                    bytes,
                )
                    .into_response(),
                Err(e) => {
                    ApiError::internal(format!("encoding the response failed: {e}")).into_response()
                }
            },
        }
    }
}
