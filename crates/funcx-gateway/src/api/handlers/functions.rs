//! Registering, reading and deleting functions.

use super::*;

pub(crate) async fn register_function(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    input: Input<RegisterFunction>,
) -> ApiResult<Reply<FunctionRegistered>> {
    let request = input.value;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("a function needs a name"));
    }
    let function = match (request.source, request.pickle) {
        (Some(source), None) => Function::from_source(source, request.name.clone()),
        (None, Some(pickle)) => Function::from_pickle(pickle.0, request.name.clone()),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `source` and `pickle`",
            ))
        }
    };
    let function = match request.image {
        Some(image) if image.trim().is_empty() || image.chars().any(char::is_control) => {
            return Err(ApiError::bad_request(format!(
                "{image:?} is not a container image name"
            )))
        }
        Some(image) => function.in_image(image),
        None => function,
    };
    let record = FunctionRecord {
        id: function.id(),
        owner: user.name().to_string(),
        name: request.name,
        body: function.body().clone(),
        public: request.public,
        shared_with: request.shared_with,
        image: function.image().map(str::to_owned),
    };
    gateway.store().put_function(record).await?;
    Ok(Reply::json(FunctionRegistered {
        function_id: function.id().to_string(),
    })
    .with_status(StatusCode::CREATED))
}

/// The caller's own record of function `id`, else one shared with it.
pub(super) async fn visible_function(
    gateway: &Gateway,
    user: &User,
    id: FunctionId,
) -> ApiResult<Option<FunctionRecord>> {
    let records = gateway.store().function(id).await?;
    let own = records.iter().position(|r| r.owner == user.name());
    let visible = own.or_else(|| records.iter().position(|r| r.visible_to(user.name())));
    Ok(visible.map(|i| records[i].clone()))
}

pub(crate) async fn get_function(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<Reply<FunctionView>> {
    let id = parse_function_id(&id)?;
    let record = visible_function(&gateway, &user, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no function {id}")))?;
    let (source, pickle) = match record.body {
        funcx_core::FunctionBody::Source(source) => (Some(source), None),
        funcx_core::FunctionBody::Pickled(bytes) => (None, Some(Blob(bytes.to_vec()))),
    };
    let mine = record.owner == user.name();
    Ok(Reply::json(FunctionView {
        function_id: id.to_string(),
        name: record.name,
        owner: record.owner,
        public: record.public,
        shared_with: if mine { record.shared_with } else { Vec::new() },
        source,
        pickle,
        image: record.image,
    }))
}

pub(crate) async fn delete_function(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_function_id(&id)?;
    if gateway.store().delete_function(id, user.name()).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    match visible_function(&gateway, &user, id).await? {
        Some(_) => Err(ApiError::forbidden(format!(
            "function {id} is not yours to delete"
        ))),
        None => Err(ApiError::not_found(format!("no function {id}"))),
    }
}
