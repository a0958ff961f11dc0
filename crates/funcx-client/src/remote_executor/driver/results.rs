//! Receiving from the gateway: the result stream's events, and reading outstanding tasks by
//! id when the stream may have missed some.

use std::time::Duration;

use funcx_core::worker::WorkResult;
use funcx_core::{Format, Payload, TaskError};
use hyper::Method;
use tracing::{debug, info, warn};

use super::super::http::Body;
use super::super::stream::Feed;
use super::Driver;
use crate::model::{BatchRequest, BatchResponse, Blob, TaskView};

/// How many outstanding tasks one `POST /v1/tasks/batch` asks about.
const BATCH_READ: usize = 4096;

impl Driver {
    pub(super) fn on_feed(&mut self, feed: Feed, results: &mut Vec<WorkResult>) {
        match feed {
            Feed::Connected => {
                self.stream_connected = true;
                self.healthy();
                // Whatever finished while the stream was down is read with the batch route.
                self.fetch_due = !self.gateway_of.is_empty();
            }
            Feed::Down(reason) => {
                if self.stream_connected {
                    info!(%reason, "result stream from the gateway lost; reconnecting");
                }
                self.stream_connected = false;
                self.failed(format!("result stream: {reason}"), false);
            }
            Feed::Results(views) => {
                results.reserve(views.len());
                for view in views {
                    if let Some(result) = self.finished(view) {
                        results.push(result);
                    }
                }
            }
            Feed::Lagged => {
                debug!("the gateway skipped result events; reading outstanding tasks");
                self.fetch_due = !self.gateway_of.is_empty();
            }
        }
    }

    /// The result of a finished task of ours, which is then forgotten.
    pub(super) fn finished(&mut self, view: TaskView) -> Option<WorkResult> {
        let outcome = match (view.result, view.error) {
            (Some(Blob(bytes)), _) => Ok(match view.result_format {
                Some(Format::Json) => Payload::from_json(bytes),
                _ => Payload::from_pickled(bytes),
            }),
            (None, Some(error)) => Err(error),
            (None, None) if view.state.is_finished() => {
                Err(TaskError::protocol(view.error_message.unwrap_or_else(
                    || "the gateway reported a finished task without an outcome".into(),
                )))
            }
            (None, None) => return None,
        };
        let id = self.local_of.remove(&view.id)?;
        self.gateway_of.remove(&id);
        let duration = match (view.timeline.running, view.timeline.finished) {
            (Some(start), Some(end)) => end.duration_since(start).unwrap_or_default(),
            _ => Duration::ZERO,
        };
        Some(WorkResult {
            id,
            duration,
            outcome,
        })
    }

    /// Reads every outstanding task with the batch route and delivers those that finished.
    pub(super) async fn fetch_outstanding(&mut self) {
        let ids: Vec<u64> = self.local_of.keys().copied().collect();
        for chunk in ids.chunks(BATCH_READ) {
            let request = BatchRequest {
                ids: chunk.to_vec(),
            };
            let body = match Body::postcard(&request) {
                Ok(body) => body,
                Err(_) => Body::json(&request),
            };
            let answer = self
                .http
                .call(Method::POST, "/v1/tasks/batch", Some(body))
                .await
                .and_then(|response| response.decode::<BatchResponse>());
            match answer {
                Ok(batch) => {
                    let mut results: Vec<WorkResult> = batch
                        .tasks
                        .into_iter()
                        .filter_map(|view| self.finished(view))
                        .collect();
                    for remote in batch.not_found {
                        if let Some(id) = self.local_of.remove(&remote) {
                            self.gateway_of.remove(&id);
                            results.push(WorkResult {
                                id,
                                duration: Duration::ZERO,
                                outcome: Err(TaskError::manager_lost(format!(
                                    "the gateway at {} no longer knows task {remote} (it restarted without a durable store, or the task was deleted or expired)",
                                    self.url
                                ))),
                            });
                        }
                    }
                    self.report(results);
                    self.healthy();
                }
                Err(error) if error.is_transient() => return self.failed(error.to_string(), true),
                Err(error) => {
                    // Not worth retrying; the stream still delivers what finishes from now on.
                    warn!(%error, "the gateway refused to read outstanding tasks");
                }
            }
        }
        self.fetch_due = false;
    }
}
