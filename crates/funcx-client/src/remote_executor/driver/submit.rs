//! Sending to the gateway: registering the functions pending tasks need, then submitting the
//! tasks in as few requests as the gateway's size limit allows, each under an idempotency
//! key so that one sent without an answer can be sent again as it was.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use funcx_core::worker::{FunctionKey, WorkItem, WorkResult};
use funcx_core::{Format, FunctionBody, TaskError};
use hyper::{Method, StatusCode};
use tracing::{debug, warn};

use super::super::http::{Body, HttpError};
use super::Driver;
use crate::model::{
    Blob, FunctionRegistered, RegisterFunction, SubmitRequest, SubmitResponse, SubmitTask,
};

/// How many tasks one submission holds at most.
const MAX_TASKS_PER_REQUEST: usize = 50_000;

impl Driver {
    /// A fresh idempotency key for one submission: 64 random hex digits from the operating
    /// system's CSPRNG (the generator of connection tokens; a key need not be secret, only
    /// never reused).
    pub(super) fn submission_key(&mut self) -> String {
        self.submissions += 1;
        funcx_transport::new_token().unwrap_or_else(|_| {
            // No randomness: still unique for this process's life, and across processes by
            // the time and process id.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{}-{nanos}-{}", std::process::id(), self.submissions)
        })
    }

    /// Registers the functions pending tasks need, then submits the pending tasks, as few
    /// requests as the size limit allows.
    pub(super) async fn flush(&mut self) {
        let mut keys: Vec<FunctionKey> = Vec::new();
        for item in &self.pending {
            let registered = self
                .functions
                .get(&item.function)
                .map(|known| known.registered);
            if registered == Some(false) && !keys.contains(&item.function) {
                keys.push(item.function);
            }
        }
        for key in keys {
            let Some(known) = self.functions.get(&key) else {
                continue;
            };
            let (source, pickle) = match known.function.body() {
                FunctionBody::Source(source) => (Some(source.clone()), None),
                FunctionBody::Pickled(bytes) => (None, Some(Blob(bytes.to_vec()))),
            };
            let body = RegisterFunction {
                name: known.function.name().to_owned(),
                source,
                pickle,
                public: false,
                shared_with: Vec::new(),
                image: known.function.image().map(str::to_owned),
            };
            let expected = known.function.id().to_string();
            let name = known.function.name().to_owned();
            let answer = self
                .http
                .call(Method::POST, "/v1/functions", Some(Body::json(&body)))
                .await
                .and_then(|response| response.decode::<FunctionRegistered>());
            match answer {
                Ok(registered) => {
                    if registered.function_id != expected {
                        warn!(
                            function = %name,
                            local = %expected,
                            gateway = %registered.function_id,
                            "the gateway computed another id for a function"
                        );
                    }
                    if let Some(known) = self.functions.get_mut(&key) {
                        known.registered = true;
                    }
                    self.healthy();
                }
                Err(error) if error.is_transient() => return self.failed(error.to_string(), true),
                Err(error) => {
                    let error = TaskError::protocol(format!(
                        "the gateway refused function `{name}`: {error}"
                    ));
                    let failed = self.take_pending(|item| item.function == key);
                    self.fail(failed, &error);
                }
            }
        }
        let known: HashSet<FunctionKey> = self.functions.keys().copied().collect();
        let unknown = self.take_pending(|item| !known.contains(&item.function));
        self.fail(
            unknown,
            &TaskError::protocol("a task refers to a function the pool was never given"),
        );

        let path = format!("/v1/endpoints/{}/tasks", self.endpoint);
        loop {
            let resent = self.in_doubt.is_some();
            let (key, chunk) = match self.in_doubt.take() {
                Some(resend) => resend,
                None if self.pending.is_empty() => break,
                None => {
                    let mut bytes = 0;
                    let mut count = 0;
                    for item in &self.pending {
                        let size = item.args.byte_len() + 128;
                        if count > 0
                            && (bytes + size > self.max_request_bytes
                                || count >= MAX_TASKS_PER_REQUEST)
                        {
                            break;
                        }
                        bytes += size;
                        count += 1;
                    }
                    let chunk: Vec<WorkItem> = self.pending.drain(..count).collect();
                    (self.submission_key(), chunk)
                }
            };
            let bytes: usize = chunk.iter().map(|item| item.args.byte_len() + 128).sum();
            let request = SubmitRequest {
                tasks: chunk
                    .iter()
                    .map(|item| SubmitTask {
                        function_id: self
                            .functions
                            .get(&item.function)
                            .map(|known| known.function.id().to_string())
                            .unwrap_or_default(),
                        args: item
                            .args
                            .positional()
                            .iter()
                            .map(|payload| Blob(payload.as_bytes().to_vec()))
                            .collect(),
                        kwargs: item
                            .args
                            .keyword()
                            .iter()
                            .map(|(name, payload)| {
                                (name.clone(), Blob(payload.as_bytes().to_vec()))
                            })
                            .collect::<BTreeMap<_, _>>(),
                        timeout_ms: item
                            .timeout
                            .map(|timeout| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                        // Mixed formats never get here: the dispatcher refuses them.
                        format: item.args.format().unwrap_or(Format::Pickle),
                        // Only a task that asks for more than a plain one carries any.
                        resources: item.resources,
                    })
                    .collect(),
            };
            let body = match Body::postcard(&request) {
                Ok(body) => body,
                Err(error) => {
                    self.fail(chunk, &TaskError::serialize(error));
                    continue;
                }
            };
            let answer = self
                .http
                .send(Method::POST, &path, Some(body), Some(&key))
                .await
                .and_then(|response| response.decode::<SubmitResponse>());
            match answer {
                Ok(accepted) if accepted.task_ids.len() == chunk.len() => {
                    // What the gateway holds now and the caller no longer wants is cancelled
                    // there; the dispatcher was told already.
                    let cancelled = std::mem::take(&mut self.cancelled_in_doubt);
                    let mut remote_cancels = Vec::new();
                    for (item, remote) in chunk.iter().zip(accepted.task_ids) {
                        if cancelled.contains(&item.id) {
                            remote_cancels.push(remote);
                        } else {
                            self.gateway_of.insert(item.id, remote);
                            self.local_of.insert(remote, item.id);
                        }
                    }
                    self.cancel_at_gateway(remote_cancels);
                    debug!(tasks = chunk.len(), resent, "submitted to the gateway");
                    if resent {
                        // The first send may have been stored and its tasks run: results the
                        // stream delivered before their ids were known here were dropped, and
                        // the stream sends no result twice. They are read by id instead.
                        self.fetch_due = true;
                    }
                    self.healthy();
                }
                Ok(accepted) => {
                    let error = TaskError::protocol(format!(
                        "the gateway accepted {} tasks and returned {} ids",
                        chunk.len(),
                        accepted.task_ids.len()
                    ));
                    let chunk = self.still_wanted(chunk);
                    self.fail(chunk, &error);
                }
                Err(error) if error.is_transient() => {
                    // The gateway may have stored it: the same submission again, same key.
                    self.in_doubt = Some((key, chunk));
                    return self.failed(error.to_string(), true);
                }
                Err(HttpError::Refused {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    ..
                }) if chunk.len() > 1 => {
                    // Refused before it was stored: split, under new keys.
                    self.max_request_bytes = (bytes / 2).max(1);
                    debug!(
                        limit = self.max_request_bytes,
                        "submission too large; splitting"
                    );
                    for item in self.still_wanted(chunk).into_iter().rev() {
                        self.pending.push_front(item);
                    }
                }
                Err(HttpError::Refused {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message,
                    ..
                }) => {
                    // One task alone is over the gateway's body limit: it fails by itself,
                    // typed, and nothing is sent again.
                    let limit = stated_limit(&message).unwrap_or(bytes.saturating_sub(1) as u64);
                    let chunk = self.still_wanted(chunk);
                    for item in chunk {
                        let size = item.args.byte_len() as u64;
                        self.fail(vec![item], &TaskError::arguments_too_large(size, limit));
                    }
                }
                Err(error) => {
                    let error =
                        TaskError::protocol(format!("the gateway refused the task: {error}"));
                    let chunk = self.still_wanted(chunk);
                    self.fail(chunk, &error);
                }
            }
        }
    }

    /// The tasks of a submission the gateway did not take that were not cancelled meanwhile.
    pub(super) fn still_wanted(&mut self, chunk: Vec<WorkItem>) -> Vec<WorkItem> {
        let cancelled = std::mem::take(&mut self.cancelled_in_doubt);
        chunk
            .into_iter()
            .filter(|item| !cancelled.contains(&item.id))
            .collect()
    }

    pub(super) fn take_pending(
        &mut self,
        mut take: impl FnMut(&WorkItem) -> bool,
    ) -> Vec<WorkItem> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for item in self.pending.drain(..) {
            if take(&item) {
                taken.push(item);
            } else {
                kept.push_back(item);
            }
        }
        self.pending = kept;
        taken
    }

    pub(super) fn fail(&mut self, items: Vec<WorkItem>, error: &TaskError) {
        let results = items
            .into_iter()
            .map(|item| WorkResult {
                id: item.id,
                duration: Duration::ZERO,
                outcome: Err(error.clone()),
            })
            .collect();
        self.report(results);
    }
}

/// The byte limit a gateway states in its 413 answer ("... the limit of N bytes").
fn stated_limit(message: &str) -> Option<u64> {
    let (_, after) = message.rsplit_once("limit of ")?;
    after.split_whitespace().next()?.parse().ok()
}
