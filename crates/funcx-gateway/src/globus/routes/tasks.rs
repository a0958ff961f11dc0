//! The caller's tasks: their status one by one or in a batch, task groups, and where their
//! results queue is.

use axum::extract::Path;
use axum::Json;
use funcx_core::TaskState;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{parse_uuid, Caller, ComputeError, ComputeResult};
use crate::api::body::Input;
use crate::auth::User;
use crate::globus::service::{finished, lock, GlobusCompute};
use crate::globus::uuid::{self, Uuid};
use crate::store::TaskRecord;
use crate::Gateway;

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
    let Some(task) = gateway.store().task(id).await? else {
        return Ok(None);
    };
    if task.owner != user.name()
        || !service
            .is_shim(gateway.store().as_ref(), task.function)
            .await?
    {
        return Ok(None);
    }
    Ok(Some(task))
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

pub(super) async fn get_task(
    Caller {
        gateway,
        user,
        service,
    }: Caller,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
    let uuid = parse_uuid(&id, "task")?;
    let record = own_task(&gateway, &service, &user, &uuid)
        .await?
        .ok_or_else(|| ComputeError::not_found(format!("no task {id}")))?;
    Ok(Json(task_json(&gateway, &record).await))
}

#[derive(Deserialize)]
pub(super) struct BatchStatus {
    task_ids: Vec<String>,
}

/// `POST /v2/batch_status`: the caller's tasks among `task_ids`; others are left out, as
/// the SDK expects of unknown ids.
pub(super) async fn batch_status(
    Caller {
        gateway,
        user,
        service,
    }: Caller,
    input: Input<BatchStatus>,
) -> ComputeResult<Json<Value>> {
    let mut results = Map::new();
    for id in input.value.task_ids {
        let Some(uuid) = uuid::parse(&id) else {
            continue;
        };
        if let Some(record) = own_task(&gateway, &service, &user, &uuid).await? {
            results.insert(id, task_json(&gateway, &record).await);
        }
    }
    Ok(Json(json!({ "response": "batch", "results": results })))
}

pub(super) async fn task_group(
    Caller { user, service, .. }: Caller,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
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

pub(super) async fn amqp_url(Caller { user, service, .. }: Caller) -> ComputeResult<Json<Value>> {
    Ok(Json(json!({
        "connection_url": service.client_amqp_url(),
        "queue_prefix": service.queue_prefix(user.name()),
    })))
}
