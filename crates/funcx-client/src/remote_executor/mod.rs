//! [`connect`] and [`RemoteConfig`]: a remote executor is an [`Executor`] like any other, whose
//! workers are behind a gateway, so connecting one returns an `Executor` (as
//! `tokio_postgres::connect` and its `Config` return a client).
//!
//! Switching a program from local workers to a remote endpoint is one line:
//!
//! ```no_run
//! use funcx_core::{Executor, Function};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // let executor = Executor::builder().workers(2).start(PythonRuntime::default());
//! let executor: Executor =
//!     funcx_client::connect("http://127.0.0.1:8470", "alice's token", "3f9c0e...").await?;
//! let add = Function::from_source("def add(a, b):\n    return a + b\n", "add");
//! let sum: i64 = executor.submit(&add, (2, 3)).result().await?;
//! # Ok(()) }
//! ```
//!
//! Handles, `map`, cancellation, timeouts, streamed submissions and tower layers work as they
//! do locally: the executor is a real [`Executor`] whose only worker is a *pool* (see
//! [`Executor::attach`]) standing for the gateway, with room for a million tasks at once.
//!
//! # How a task travels, and what it costs
//!
//! 1. The dispatcher hands the pool everything queued in one `ToWorker::Tasks` batch; the
//!    pool's driver task coalesces what else is already waiting and sends it in **one**
//!    `POST /v1/endpoints/{id}/tasks` with a postcard body (arguments as raw pickle bytes, no
//!    base64), split only past [`RemoteConfig::max_request_bytes`]. Each function is
//!    registered once (`POST /v1/functions`) before its first task.
//! 2. The gateway stores the batch (one durable write), answers with the gateway task ids,
//!    and relays the tasks to the endpoint over its manager connection, where warm Python
//!    workers run them. Every submission carries a fresh `Idempotency-Key`, and a failed
//!    one is sent again exactly as it was, under the same key: if the gateway stored it but
//!    its answer was lost (it crashed, the connection dropped), the resend answers the same
//!    task ids and nothing runs twice.
//! 3. Results come back pushed over one long-lived `GET /v1/results` stream in its binary
//!    form (`Accept: application/x-postcard`): length-prefixed postcard frames, each holding
//!    every result that was waiting at the gateway (results as raw bytes, no base64). The
//!    driver maps the gateway ids back to the local tasks and reports each frame to the
//!    dispatcher as one batch.
//!
//! So a task costs a share of one HTTP request and one store write on the way in, and a
//! share of one frame (about a hundred bytes plus its result) on the way out; per-task
//! overhead is dominated by the gateway's store, not by round trips or encoding. Latency of a lone task is one
//! HTTP round trip plus the endpoint's relay plus one frame.
//!
//! # When the gateway goes away
//!
//! The result stream reconnects with back-off. After every (re)connection the driver reads
//! the state of every task still outstanding with `POST /v1/tasks/batch`, so a result
//! published while the stream was down is not missed; a result that arrives both ways is
//! delivered once. Submissions that fail because the gateway cannot be reached are retried
//! with back-off. A gateway that stays unreachable for
//! [`RemoteConfig::give_up_after`] (default 60 s) fails the outstanding tasks with a
//! [`TaskError::is_manager_lost`] error naming the gateway and the last failure; tasks
//! submitted while it is still down fail the same way at once instead of hanging, and the
//! executor works again as soon as the gateway is back.

mod config;
mod driver;
mod http;
mod stream;

use funcx_core::Executor;

pub use config::{RemoteConfig, RemoteError};

/// An [`Executor`] whose tasks run on endpoint `endpoint_id` of the gateway at `gateway_url`
/// (`http://host:port`, or `https://host:port` with the `tls` feature), on behalf of the user
/// whose bearer token is `user_token`, with the default options; [`RemoteConfig`] sets others.
///
/// Checks first that the gateway answers and that the user sees the endpoint, so a wrong
/// address, token or endpoint fails here with the reason rather than task by task. The
/// endpoint itself need not be connected yet: tasks wait in the gateway for it.
///
/// # Panics
///
/// Outside a Tokio runtime.
pub async fn connect(
    gateway_url: &str,
    user_token: &str,
    endpoint_id: &str,
) -> Result<Executor, RemoteError> {
    RemoteConfig::new(gateway_url, user_token, endpoint_id)
        .connect()
        .await
}
