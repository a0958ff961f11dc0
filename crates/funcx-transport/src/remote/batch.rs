//! Keeping every message of the manager protocol under the connection's size limit.
//!
//! Tasks and results travel in batches, and a batch of large payloads could grow past what
//! a connection carries; a message over the limit would break the connection, and the
//! session would send it again on the next one, forever. So batches are cut by bytes as well
//! as by count, and a single task or result too large for any message fails on its own,
//! typed, before it is sent.

use funcx_core::worker::{WorkItem, WorkResult};
use funcx_core::TaskError;

/// The most payload bytes one batch message carries, unless a single task needs more.
/// Small enough that a heartbeat is never stuck behind much, large enough that the per-message
/// cost vanishes.
pub(crate) const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Room for everything in a message besides its payloads (ids, names, postcard lengths).
pub(crate) const MESSAGE_SLACK: usize = 1024 * 1024;

/// The largest payload a connection whose messages may be `max_message_size` bytes carries.
pub(crate) fn payload_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_sub(MESSAGE_SLACK)
}

/// Cuts `items` into runs whose sizes add up to at most `budget`; a run holds at least one
/// item, so an item larger than the budget travels alone.
pub(crate) fn split_by_bytes<T>(
    items: Vec<T>,
    budget: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let total = items.iter().map(&size).fold(0usize, usize::saturating_add);
    if total <= budget && !items.is_empty() {
        // The usual case: one run, the items' own vector.
        return vec![items];
    }
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let item_bytes = size(&item);
        if !run.is_empty() && bytes.saturating_add(item_bytes) > budget {
            runs.push(std::mem::take(&mut run));
            bytes = 0;
        }
        bytes = bytes.saturating_add(item_bytes);
        run.push(item);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// The bytes a task adds to a message, near enough: its arguments.
pub(crate) fn item_size(item: &WorkItem) -> usize {
    item.args.byte_len()
}

/// The bytes a result adds to a message, near enough: its payload, or the text of its error
/// (a Python traceback can be large).
pub(crate) fn result_size(result: &WorkResult) -> usize {
    match &result.outcome {
        Ok(payload) => payload.len(),
        Err(error) => {
            let exception = error.python_exception().map_or(0, |e| {
                e.type_name.len() + e.message.len() + e.traceback.len()
            });
            64 + exception + error.to_string().len()
        }
    }
}

/// Replaces results too large for a message with a typed failure, so that the task fails
/// alone instead of breaking the connection it would travel on.
pub(crate) fn refuse_oversized_results(results: &mut [WorkResult], limit: usize) {
    for result in results {
        let size = result_size(result);
        if size > limit {
            tracing::warn!(task = %result.id, size, limit, "result too large for the connection to the endpoint");
            result.outcome = Err(TaskError::result_too_large(size as u64, limit as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_stay_under_the_budget_and_large_items_travel_alone() {
        let runs = split_by_bytes(vec![3, 3, 3, 10, 1, 1, 4], 6, |n| *n);
        assert_eq!(runs, vec![vec![3, 3], vec![3], vec![10], vec![1, 1, 4]]);
        assert!(split_by_bytes(Vec::<usize>::new(), 6, |n| *n).is_empty());
        let one_each = split_by_bytes(vec![7, 7], 6, |n| *n);
        assert_eq!(one_each, vec![vec![7], vec![7]]);
        let within = split_by_bytes(vec![1, 2, 3], 6, |n| *n);
        assert_eq!(
            within,
            vec![vec![1, 2, 3]],
            "all within the budget: one run"
        );
    }

    #[test]
    fn oversized_results_become_typed_failures() {
        use funcx_core::{Payload, TaskId};
        use std::time::Duration;
        let result = |id, bytes: usize| WorkResult {
            id: TaskId::from_u64(id),
            duration: Duration::ZERO,
            outcome: Ok(Payload::from_pickled(vec![0u8; bytes])),
        };
        let mut results = vec![result(1, 10), result(2, 1000)];
        refuse_oversized_results(&mut results, 100);
        assert!(results[0].outcome.is_ok());
        let error = results[1].outcome.as_ref().unwrap_err();
        assert!(error.is_result_too_large(), "{error}");
    }
}
