//! `funcx endpoints` and its actions.

use super::*;

pub(crate) async fn endpoints(gateway: &Gateway, json: bool) -> Result<()> {
    let raw = gateway.get("/v1/endpoints").await?;
    if json {
        return print_json(&raw);
    }
    let list: Vec<EndpointView> = parse("GET /v1/endpoints", raw)?;
    if list.is_empty() {
        println!("no endpoints (register one: funcx endpoints register NAME)");
        return Ok(());
    }
    println!(
        "{:<32}  {:<16}  {:<12}  {:>8}  {:>12}  {:>6}  {:>9}",
        "ENDPOINT", "NAME", "STATE", "MANAGERS", "BUSY/WORKERS", "QUEUED", "IN FLIGHT"
    );
    for endpoint in &list {
        let status = &endpoint.status;
        println!(
            "{:<32}  {:<16}  {:<12}  {:>8}  {:>12}  {:>6}  {:>9}",
            endpoint.endpoint_id,
            endpoint.name,
            if status.connected {
                "connected"
            } else {
                "disconnected"
            },
            status.managers,
            format!("{}/{}", status.busy_workers, status.workers),
            status.queued,
            status.in_flight,
        );
    }
    Ok(())
}

pub(crate) async fn register_endpoint(gateway: &Gateway, name: &str, json: bool) -> Result<()> {
    let answer = gateway
        .post("/v1/endpoints", &json!({ "name": name }))
        .await?;
    if json {
        return print_json(&answer);
    }
    let (Some(id), Some(token)) = (
        answer["endpoint_id"].as_str(),
        answer["endpoint_token"].as_str(),
    ) else {
        return Err(Failure(
            FAILED,
            format!("the gateway's answer has no endpoint id and token: {answer}"),
        ));
    };
    println!("endpoint {id} registered; its token (shown this once): {token}");
    println!(
        "run it: funcx-endpoint configure {name} --gateway {} --endpoint-id {id} --token {token}",
        gateway.url
    );
    Ok(())
}

pub(crate) async fn stop_endpoint(gateway: &Gateway, id: &str, json: bool) -> Result<()> {
    let answer = gateway
        .post(
            &format!("/v1/endpoints/{}/stop", path_segment(id)?),
            &json!({}),
        )
        .await?;
    if json {
        return print_json(&answer);
    }
    match answer["connections"].as_u64() {
        Some(0) => println!("endpoint {id} is not connected; nothing to stop"),
        Some(n) => println!("endpoint {id} is stopping ({n} connection(s) draining)"),
        None => println!("endpoint {id} is stopping"),
    }
    Ok(())
}

pub(crate) async fn delete_endpoint(gateway: &Gateway, id: &str, json: bool) -> Result<()> {
    gateway
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/endpoints/{}", path_segment(id)?),
            None,
        )
        .await?;
    if json {
        return print_json(&json!({ "endpoint_id": id, "deleted": true }));
    }
    println!("endpoint {id} deleted");
    Ok(())
}
