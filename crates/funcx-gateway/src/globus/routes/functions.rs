//! Registering, reading and deleting functions.

use axum::extract::Path;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_uuid, Caller, ComputeError, ComputeResult};
use crate::api::body::Input;
use crate::auth::User;
use crate::globus::service::{lock, ComputeFunction, GlobusCompute};
use crate::globus::uuid::{self, Uuid};

#[derive(Deserialize)]
pub(super) struct RegisterFunction {
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
pub(super) async fn register_function(
    Caller { user, service, .. }: Caller,
    input: Input<RegisterFunction>,
) -> ComputeResult<Json<Value>> {
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

/// Function `id` if `user` may use it.
pub(super) fn visible_function(
    service: &GlobusCompute,
    user: &User,
    id: &Uuid,
) -> Option<ComputeFunction> {
    lock(&service.functions)
        .get(id)
        .filter(|f| f.public || f.owner == user.name())
        .cloned()
}

pub(super) async fn get_function(
    Caller { user, service, .. }: Caller,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
    let uuid = parse_uuid(&id, "function")?;
    let function = visible_function(&service, &user, &uuid)
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

pub(super) async fn delete_function(
    Caller { user, service, .. }: Caller,
    Path(id): Path<String>,
) -> ComputeResult<Json<Value>> {
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
