//! The endpoints the caller may see: listed, one by one, and their status.

use axum::extract::{Path, Query};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_uuid, Caller, ComputeError, ComputeResult};
use crate::auth::User;
use crate::globus::uuid::{self, Uuid};
use crate::store::EndpointRecord;
use crate::Gateway;

/// Endpoint `uuid` if `user` may see it and submit to it.
pub(super) async fn visible_endpoint(
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
pub(super) struct Role {
    #[serde(default)]
    role: Option<String>,
}

pub(super) async fn list_endpoints(
    Caller { gateway, user, .. }: Caller,
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

pub(super) async fn endpoint_metadata(
    Caller { gateway, user, .. }: Caller,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
    let (uuid, record) = visible_endpoint(&gateway, &user, &id).await?;
    Ok(Json(endpoint_json(&gateway, &uuid, &record).await))
}

pub(super) async fn endpoint_status(
    Caller { gateway, user, .. }: Caller,
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
