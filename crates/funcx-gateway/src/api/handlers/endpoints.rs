//! Registering, listing and connecting endpoints (the upgrade to the manager protocol).

use super::*;

pub(crate) async fn register_endpoint(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    input: Input<RegisterEndpoint>,
) -> ApiResult<Reply<EndpointRegistered>> {
    let request = input.value;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("an endpoint needs a name"));
    }
    let allowed_functions = request
        .allowed_functions
        .map(|ids| ids.iter().map(|id| parse_function_id(id)).collect())
        .transpose()?;
    let token = new_token()?;
    let record = EndpointRecord {
        id: new_id()?,
        owner: user.name().to_string(),
        name: request.name,
        token_hash: hash_token(&token),
        allowed_functions,
        allowed_users: request.allowed_users,
        created: SystemTime::now(),
    };
    let endpoint_id = record.id.clone();
    gateway.store().put_endpoint(record).await?;
    info!(endpoint = %endpoint_id, owner = %user.name(), "endpoint registered");
    Ok(Reply::json(EndpointRegistered {
        endpoint_id,
        endpoint_token: token,
    })
    .with_status(StatusCode::CREATED))
}

pub(super) async fn endpoint_view(gateway: &Gateway, record: EndpointRecord) -> EndpointView {
    let status = gateway.endpoint_status(&record.id).await;
    EndpointView {
        endpoint_id: record.id,
        name: record.name,
        owner: record.owner,
        allowed_functions: record
            .allowed_functions
            .map(|ids| ids.iter().map(ToString::to_string).collect()),
        allowed_users: record.allowed_users,
        status,
    }
}

/// Endpoint `id` if `user` may see it; 404 otherwise, whether or not it exists.
pub(super) async fn visible_endpoint(
    gateway: &Gateway,
    user: &User,
    id: &str,
) -> ApiResult<EndpointRecord> {
    gateway
        .store()
        .endpoint(id)
        .await?
        .filter(|e| e.visible_to(user.name()))
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {id}")))
}

pub(crate) async fn list_endpoints(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
) -> ApiResult<Reply<Vec<EndpointView>>> {
    let mut views = Vec::new();
    for record in gateway.store().endpoints().await? {
        if record.owner == user.name() {
            views.push(endpoint_view(&gateway, record).await);
        }
    }
    Ok(Reply::json(views))
}

pub(crate) async fn get_endpoint(
    State(gateway): State<Gateway>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> ApiResult<Reply<EndpointView>> {
    let record = visible_endpoint(&gateway, &user, &id).await?;
    Ok(Reply::json(endpoint_view(&gateway, record).await))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `GET /v1/endpoints/{id}/connect`: an endpoint dials in. After `101 Switching Protocols`
/// the connection carries the funcx handshake and the manager protocol, and the endpoint is
/// a manager of its gateway-side executor.
pub(crate) async fn connect_endpoint(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    mut request: Request,
) -> ApiResult<Response> {
    let token = bearer(request.headers())
        .ok_or_else(|| ApiError::unauthorized("send the endpoint token as a bearer token"))?
        .to_string();
    let record = gateway
        .store()
        .endpoint(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {id}")))?;
    if !bool::from(record.token_hash.ct_eq(&hash_token(&token))) {
        return Err(ApiError::unauthorized("wrong endpoint token"));
    }
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if !upgrade {
        return Err(ApiError::upgrade_required(format!(
            "endpoints connect with `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}`"
        )));
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let runtime = gateway.runtime(&id);
    let transport = gateway.inner.transport.clone();
    let admitted = gateway.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                return warn!(endpoint = %id, %error, "endpoint connection upgrade failed")
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        match transport
            .accept_stream::<ToManager, ToEndpoint, _>(io, peer)
            .await
        {
            Ok(connection) => {
                info!(endpoint = %id, %peer, "endpoint connected");
                runtime.agent.admit(connection).await;
                admitted.endpoint_connected(&id);
            }
            Err(error) => warn!(endpoint = %id, %peer, %error, "endpoint handshake failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL)),
        ],
    )
        .into_response())
}
