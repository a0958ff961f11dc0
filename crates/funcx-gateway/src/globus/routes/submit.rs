//! Submitting tasks: every task becomes a funcx task of the shim.

use std::time::SystemTime;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use funcx_core::{Function, Task, TaskOptions};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::endpoints::visible_endpoint;
use super::functions::visible_function;
use super::{parse_uuid, Caller, ComputeError, ComputeResult};
use crate::api::body::Input;
use crate::auth::User;
use crate::globus::endpoint_config;
use crate::globus::resource_spec::ResourceSpecification;
use crate::globus::service::{lock, remember, ComputeFunction, GlobusCompute, Group};
use crate::globus::{shim, uuid};
use crate::store::{FunctionRecord, Insertion, NewTask, StoreError};
use crate::Gateway;

#[derive(Deserialize)]
pub(super) struct SubmitRequest {
    tasks: Map<String, Value>,
    #[serde(default)]
    task_group_id: Option<String>,
    #[serde(default)]
    create_queue: bool,
    #[serde(default)]
    result_serializers: Option<Vec<String>>,
    #[serde(default)]
    user_endpoint_config: Option<Value>,
    #[serde(default)]
    resource_specification: Option<Value>,
}

/// `POST /v3/endpoints/{id}/submit`: every task becomes a funcx task of the shim, stored
/// before the answer; with `create_queue`, the task group's result queue is declared first.
/// A `resource_specification` gives every task of the request its nodes and the shim its
/// MPI launch (see [`ResourceSpecification`]); a `user_endpoint_config` naming a container
/// image runs them in it (see [`endpoint_config`]).
pub(super) async fn submit(
    Caller {
        gateway,
        user,
        service,
    }: Caller,
    Path(id): Path<String>,
    input: Input<SubmitRequest>,
) -> ComputeResult<Json<Value>> {
    let request = input.value;
    let (endpoint_uuid, endpoint) = visible_endpoint(&gateway, &user, &id).await?;
    let image = endpoint_config::container_image(request.user_endpoint_config.as_ref())
        .map_err(ComputeError::bad_request)?;
    let spec = ResourceSpecification::parse(request.resource_specification.as_ref())
        .map_err(ComputeError::bad_request)?;
    let shim = service.shim_in(image.as_deref());
    let shim_id = shim.id();
    if !endpoint.allows(&shim_id) {
        let within = image
            .as_deref()
            .map(|image| format!(" in image {image}"))
            .unwrap_or_default();
        return Err(ComputeError::forbidden(format!(
            "endpoint {id} runs only its allowed functions; allow the Globus Compute shim{within} ({shim_id}) to run Globus Compute tasks on it"
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
        let function = visible_function(&service, &user, &uuid)
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
    register_shim(&gateway, &service, &user, &shim).await?;

    let mut new = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for (_, function, payloads) in &work {
        for payload in payloads {
            let args = shim::task_args(&function.code, payload, &serializers, spec.as_ref())
                .map_err(|e| ComputeError::bad_request(e.to_string()))?;
            let resources = spec.as_ref().and_then(ResourceSpecification::resources);
            new.push(NewTask {
                owner: user.name().to_owned(),
                endpoint: endpoint.id.clone(),
                function: shim_id,
                args: args.clone(),
                timeout: None,
                resources,
            });
            tasks.push(Task {
                function: shim.clone(),
                args,
                options: resources
                    .map_or_else(TaskOptions::new, |r| TaskOptions::new().resources(r)),
            });
        }
    }
    // Stored (durably) before anything runs or is acknowledged.
    let stored = gateway
        .store_submission(&endpoint.id, None, new, SystemTime::now())
        .await?;
    let Insertion::Created(ids) = stored.insertion else {
        return Err(StoreError::backend("tasks stored without a key were not created").into());
    };
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
    gateway.dispatch(
        &endpoint.id,
        ids.iter().copied().zip(tasks).collect(),
        stored.claimed,
    );

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

/// Stores the function record of `shim` (the shim in an image, or in none) for `user` (once
/// per user, shim and process), so that the store can re-create its tasks after a restart
/// like any other.
async fn register_shim(
    gateway: &Gateway,
    service: &GlobusCompute,
    user: &User,
    shim: &Function,
) -> ComputeResult<()> {
    let key = (user.name().to_owned(), shim.id());
    if lock(&service.shim_owners).contains(&key) {
        return Ok(());
    }
    gateway
        .store()
        .put_function(FunctionRecord {
            id: shim.id(),
            owner: user.name().to_owned(),
            name: shim::SHIM_NAME.to_owned(),
            body: shim.body().clone(),
            public: false,
            shared_with: Vec::new(),
            image: shim.image().map(str::to_owned),
        })
        .await?;
    remember(&service.shim_ids, shim.id());
    remember(&service.shim_owners, key);
    Ok(())
}
