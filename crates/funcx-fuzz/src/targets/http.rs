//! The `gateway-http` target: whole HTTP requests, made from the input, through the
//! gateway's router (in process, no socket), as an untrusted client would send them.
//!
//! ```text
//! input:  +--------+------------------+--------------+-------------+------+------+
//!         | method | route | who (3b) | content type | path param  | 0x00 | body |
//!         +--------+------------------+--------------+-------------+------+------+
//!            1 B         1 B                1 B          any bytes           rest
//! ```

use axum::body::Body;
use axum::http::{header, Method, Request};
use funcx_gateway::{Gateway, GatewayConfig, UserConfig};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::Runner;

const ALICE: &str = "alice-fuzz-token";
const BOB: &str = "bob-fuzz-token-2";
const ROOT: &str = "root-fuzz-token-3";

const METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
];

/// The gateway's routes; `{}` takes the input's path parameter.
const ROUTES: [&str; 17] = [
    "/v1/functions",
    "/v1/functions/{}",
    "/v1/endpoints",
    "/v1/endpoints/{}",
    "/v1/endpoints/{}/stop",
    "/v1/endpoints/{}/tasks",
    "/v1/endpoints/{}/token",
    "/v1/tasks",
    "/v1/tasks/batch",
    "/v1/tasks/{}",
    "/v1/tasks/{}/cancel",
    "/v1/admin/users",
    "/v1/admin/users/{}",
    "/v1/admin/users/{}/token",
    "/v1/openapi.json",
    "/v1/tasks?{}",
    "/{}",
];

/// The result stream never ends; its answer's head is read, not its body.
const STREAM: &str = "/v1/results";

const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("application/x-postcard"),
    None,
    Some("application/x-www-form-urlencoded"),
    Some("text/plain; charset=latin-1"),
    Some("application/json; charset=utf-8"),
];

pub(super) fn runner() -> Runner {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime for the gateway-http target");
    let config = GatewayConfig {
        users: [("alice", ALICE), ("bob", BOB), ("root", ROOT)]
            .into_iter()
            .map(|(name, token)| UserConfig {
                name: name.into(),
                token: token.into(),
            })
            .collect(),
        admins: vec!["root".into()],
        max_body_bytes: 1 << 20,
        ..GatewayConfig::default()
    };
    let gateway = runtime
        .block_on(Gateway::builder(config).start())
        .expect("an in-memory gateway for the gateway-http target");
    let router = gateway.router();
    Box::new(move |data: &[u8]| {
        let Some(request) = request(data) else {
            return;
        };
        let stream = request.uri().path() == STREAM;
        runtime.block_on(async {
            let Ok(response) = router.clone().oneshot(request).await;
            if !stream {
                let _ = response.into_body().collect().await;
            }
        });
    })
}

/// The request `data` describes. Every input of three bytes or more makes one: the path
/// parameter is percent-encoded and header values keep their visible ASCII, as they would
/// have to be to get past the HTTP parser in front of the router.
fn request(data: &[u8]) -> Option<Request<Body>> {
    let [method, route, kind, rest @ ..] = data else {
        return None;
    };
    let (param, body) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let path = match route & 0x1f {
        31 => STREAM.to_string(),
        n => {
            let template = ROUTES[usize::from(n) % ROUTES.len()];
            // A query keeps its `=` and `&`; a bare path its `/`.
            let keep: &[u8] = if template.contains('?') { b"=&" } else { b"/" };
            template.replace("{}", &percent_encode(param, keep))
        }
    };
    let header_text: String = param
        .iter()
        .filter(|b| (0x20..0x7f).contains(*b))
        .map(|&b| char::from(b))
        .collect();
    let mut builder = Request::builder()
        .method(METHODS[usize::from(*method) % METHODS.len()].clone())
        .uri(path);
    let token = match route >> 5 {
        0 => None,
        1 | 5 => Some(format!("Bearer {ALICE}")),
        2 => Some(format!("Bearer {BOB}")),
        3 => Some(format!("Bearer {ROOT}")),
        4 => Some(format!("Bearer {header_text}")),
        _ => Some(format!("Basic {header_text}")),
    };
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, token.trim_end());
    }
    if let Some(content_type) = CONTENT_TYPES[usize::from(kind & 7) % CONTENT_TYPES.len()] {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    if kind & 0x08 != 0 {
        builder = builder.header(header::ACCEPT, "application/x-postcard");
    }
    if kind & 0x10 != 0 {
        builder = builder.header("idempotency-key", header_text.trim());
    }
    builder.body(Body::from(body.to_vec())).ok()
}

/// `bytes` with everything but unreserved characters and `keep` percent-encoded.
fn percent_encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn seeds() -> Vec<Vec<u8>> {
    use funcx_client::model::{Blob, RegisterFunction, SubmitRequest, SubmitTask};
    use funcx_core::{Format, Payload};

    let source = "def f(x):\n    return x\n";
    let id = funcx_core::Function::from_source(source, "f")
        .id()
        .to_string();
    let register = RegisterFunction {
        name: "f".into(),
        source: Some(source.into()),
        pickle: None,
        public: false,
        shared_with: vec!["bob".into()],
        image: None,
    };
    let pickled = Payload::pickle(&[1, 2])
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_default();
    let submit = SubmitRequest {
        tasks: vec![SubmitTask {
            function_id: id.clone(),
            args: vec![Blob(pickled.clone())],
            kwargs: [("scale".to_string(), Blob(pickled))].into(),
            timeout_ms: Some(1000),
            format: Format::Pickle,
            resources: None,
        }],
    };
    fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).unwrap_or_default()
    }
    let seed = |method: u8, route: u8, kind: u8, param: &str, body: &[u8]| {
        let mut out = vec![method, route, kind];
        out.extend_from_slice(param.as_bytes());
        out.push(0);
        out.extend_from_slice(body);
        out
    };
    let (alice, root) = (1 << 5, 3 << 5);
    let (as_json, as_postcard, with_key, accept_postcard) = (0, 1, 0x10, 0x08);
    let (post, get) = (1, 0);
    vec![
        seed(post, alice, as_json, "", &json(&register)),
        seed(post, alice, as_postcard, "", &postcard::to_allocvec(&register).unwrap_or_default()),
        seed(get, alice | 1, as_json, &id, b""),
        seed(post, alice | 2, as_json, "", br#"{"name": "laptop", "allowed_formats": ["json"]}"#),
        seed(post, alice | 5, as_json | with_key, "some-endpoint", &json(&submit)),
        seed(
            post,
            alice | 5,
            as_postcard | accept_postcard,
            "some-endpoint",
            &postcard::to_allocvec(&submit).unwrap_or_default(),
        ),
        seed(
            post,
            alice | 5,
            as_json,
            "some-endpoint",
            format!(r#"{{"tasks": [{{"function_id": "{id}", "format": "json", "args": [1, {{"k": [2.5]}}]}}]}}"#)
                .as_bytes(),
        ),
        seed(post, alice | 8, as_json, "", br#"{"ids": [1, 2, 3]}"#),
        seed(get, alice | 9, accept_postcard, "1", b""),
        seed(post, alice | 10, as_json, "1", b""),
        seed(get, alice | 15, as_json, "limit=10&before=5", b""),
        seed(post, root | 11, as_json, "", br#"{"name": "carol"}"#),
        seed(get, alice | 31, accept_postcard, "", b""),
        seed(get, 4 << 5, as_json, "not-a-token", b""),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn every_input_of_three_bytes_makes_a_request() {
        let corpus = seeds();
        for index in 0..20_000 {
            let input = crate::mutate::mutate(&mut Rng::for_input(5, index), &corpus, 512);
            if input.len() >= 3 {
                assert!(request(&input).is_some(), "no request from {input:02x?}");
            }
        }
    }
}
