//! The token route of the SDK's `ClientApp`.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use tracing::info;

use super::{service, ComputeError, ComputeResult};
use crate::globus::token;
use crate::Gateway;

/// `POST /v2/oauth2/token`: the client-credentials grant (client id and secret by HTTP
/// Basic, or in the form), one token per resource server the requested scopes name.
pub(super) async fn issue_token(
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
