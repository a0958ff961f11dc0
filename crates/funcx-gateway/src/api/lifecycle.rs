//! Endpoint lifecycle (stop remotely, delete, rotate and revoke the token) and user
//! management by admins, while the gateway runs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::body::{Input, Reply};
use super::model::EndpointRegistered;
use crate::auth::{new_token, User};
use crate::error::ApiError;
use crate::store::{hash_token, EndpointRecord, UserRecord};
use crate::Gateway;

type ApiResult<T> = Result<T, ApiError>;

/// The answer to `POST /v1/endpoints/{id}/stop`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointStopping {
    /// The endpoint.
    pub endpoint_id: String,
    /// How many of its connections were asked to drain (0: it was not connected).
    pub connections: usize,
}

/// `POST /v1/admin/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The new user's name.
    pub name: String,
}

/// A user's token, shown once: the answer to creating a user or rotating its token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserToken {
    /// The user.
    pub name: String,
    /// Its bearer token.
    pub token: String,
}

/// `GET /v1/admin/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserList {
    /// Every user's name, sorted.
    pub users: Vec<String>,
}

/// Endpoint `id` if `user` owns it: 404 if it cannot see it, 403 if it may only use it.
async fn owned_endpoint(gateway: &Gateway, user: &User, id: &str) -> ApiResult<EndpointRecord> {
    let record = gateway
        .store()
        .endpoint(id)
        .await?
        .filter(|e| e.visible_to(user.name()))
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {id}")))?;
    if record.owner != user.name() {
        return Err(ApiError::forbidden(format!(
            "endpoint {id} is not yours to manage"
        )));
    }
    Ok(record)
}

/// Asks every connection of endpoint `id` to drain: it takes no new task, finishes and
/// delivers the ones it holds, and exits. Returns how many there were.
async fn drain_endpoint(gateway: &Gateway, id: &str) -> usize {
    let Some(runtime) = gateway.existing_runtime(id) else {
        return 0;
    };
    let pools = runtime.executor.pools().await;
    for pool in &pools {
        runtime.executor.drain_pool(pool.worker);
    }
    pools.len()
}

/// `POST /v1/endpoints/{id}/stop`: stops the endpoint remotely. Its tasks that have not
/// reached it wait at the gateway for its next start.
pub(crate) async fn stop_endpoint(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<Reply<EndpointStopping>> {
    owned_endpoint(&gateway, &user, &id).await?;
    let connections = drain_endpoint(&gateway, &id).await;
    info!(endpoint = %id, connections, by = %user.name(), "endpoint stopped remotely");
    Ok(Reply::json(EndpointStopping {
        endpoint_id: id,
        connections,
    })
    .with_status(StatusCode::ACCEPTED))
}

/// `DELETE /v1/endpoints/{id}`: stops it and forgets it; its token stops working.
pub(crate) async fn delete_endpoint(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    owned_endpoint(&gateway, &user, &id).await?;
    gateway.store().delete_endpoint(&id).await?;
    let connections = drain_endpoint(&gateway, &id).await;
    info!(endpoint = %id, connections, by = %user.name(), "endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/endpoints/{id}/token`: a new token for the endpoint; the old one stops working
/// at once for new connections (a connected endpoint stays connected).
pub(crate) async fn rotate_endpoint_token(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<Reply<EndpointRegistered>> {
    let mut record = owned_endpoint(&gateway, &user, &id).await?;
    let token = new_token()?;
    record.token_hash = hash_token(&token);
    gateway.store().put_endpoint(record).await?;
    info!(endpoint = %id, by = %user.name(), "endpoint token rotated");
    Ok(Reply::json(EndpointRegistered {
        endpoint_id: id,
        endpoint_token: token,
    })
    .with_status(StatusCode::CREATED))
}

/// `DELETE /v1/endpoints/{id}/token`: revokes the token: the endpoint is stopped and any
/// reconnection is refused until a new token is issued (`POST .../token`).
pub(crate) async fn revoke_endpoint_token(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let mut record = owned_endpoint(&gateway, &user, &id).await?;
    // The hash of a token nobody is ever told: no token matches it any more.
    record.token_hash = hash_token(&new_token()?);
    gateway.store().put_endpoint(record).await?;
    let connections = drain_endpoint(&gateway, &id).await;
    info!(endpoint = %id, connections, by = %user.name(), "endpoint token revoked");
    Ok(StatusCode::NO_CONTENT)
}

fn require_admin(gateway: &Gateway, user: &User) -> ApiResult<()> {
    if gateway.config().admins.iter().any(|a| a == user.name()) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only the gateway's admins (`admins` in its configuration) manage users",
        ))
    }
}

fn valid_user_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{name:?} is not a user name: 1 to 64 letters, digits, `-`, `_`, `.`, `@`"
        )))
    }
}

/// `GET /v1/admin/users`.
pub(crate) async fn list_users(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
) -> ApiResult<Reply<UserList>> {
    require_admin(&gateway, &user)?;
    let mut users: Vec<String> = gateway
        .store()
        .users()
        .await?
        .into_iter()
        .map(|u| u.name)
        .collect();
    users.sort();
    Ok(Reply::json(UserList { users }))
}

/// `POST /v1/admin/users`: a new user and its token (shown once; only its hash is stored).
pub(crate) async fn create_user(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    input: Input<CreateUser>,
) -> ApiResult<Reply<UserToken>> {
    require_admin(&gateway, &user)?;
    let name = input.value.name;
    valid_user_name(&name)?;
    let exists = gateway
        .store()
        .users()
        .await?
        .iter()
        .any(|u| u.name == name);
    if exists {
        return Err(ApiError::conflict(format!(
            "user {name} exists; rotate its token with POST /v1/admin/users/{name}/token"
        )));
    }
    let token = new_token()?;
    gateway
        .store()
        .put_user(UserRecord {
            name: name.clone(),
            token_hash: hash_token(&token),
        })
        .await?;
    info!(user = %name, by = %user.name(), "user created");
    Ok(Reply::json(UserToken { name, token }).with_status(StatusCode::CREATED))
}

/// `POST /v1/admin/users/{name}/token`: a new token for the user; the old one stops working.
pub(crate) async fn rotate_user_token(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(name): Path<String>,
) -> ApiResult<Reply<UserToken>> {
    require_admin(&gateway, &user)?;
    let exists = gateway
        .store()
        .users()
        .await?
        .iter()
        .any(|u| u.name == name);
    if !exists {
        return Err(ApiError::not_found(format!("no user {name}")));
    }
    let token = new_token()?;
    gateway
        .store()
        .put_user(UserRecord {
            name: name.clone(),
            token_hash: hash_token(&token),
        })
        .await?;
    info!(user = %name, by = %user.name(), "user token rotated");
    Ok(Reply::json(UserToken { name, token }).with_status(StatusCode::CREATED))
}

/// `DELETE /v1/admin/users/{name}`: the user's token stops working.
pub(crate) async fn delete_user(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&gateway, &user)?;
    if !gateway.store().delete_user(&name).await? {
        return Err(ApiError::not_found(format!("no user {name}")));
    }
    info!(user = %name, by = %user.name(), "user deleted");
    Ok(StatusCode::NO_CONTENT)
}
