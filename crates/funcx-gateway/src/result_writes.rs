//! [`ResultWrites`]: each result an endpoint delivers is written to the store once.
//!
//! A result reaches the gateway twice: its endpoint connection hands it to the keeper (which
//! must store it before the connection acknowledges it, since the endpoint forgets it then),
//! and the endpoint's executor reports it to `store_results`. Whichever comes first writes
//! it; the other does not write it again, and the keeper does not return while the report's
//! write of one of its results is still in flight (that result is not durable yet).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// Which results are being written, and by whom; shared by an endpoint connection's keeper
/// and the gateway's report writer.
///
/// Lock order: a caller holding the gateway's `running` table locks it before this (both
/// writers look a task up there and change it in one step with this state).
#[derive(Debug, Default)]
pub(crate) struct ResultWrites {
    state: Mutex<State>,
    /// Woken whenever writes end, for keepers waiting on a report's write.
    ended: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Task ids whose result is being written now.
    writing: HashMap<u64, Writer>,
    /// Task ids the keeper wrote whose executor report has not come yet: it is skipped,
    /// and the id forgotten, when it does.
    kept: HashSet<u64>,
    /// Task ids a keeper claimed and let go of unwritten ([`KeeperClaim`]'s drop) after
    /// their report was skipped: nothing else will write them, so the next delivery to a
    /// keeper does, whatever the gateway's `running` table says.
    released: HashSet<u64>,
}

/// Who is writing a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// The keeper; `reported` once the executor's report of it came (and was skipped).
    Keeper { reported: bool },
    /// The report writer.
    Report,
}

/// What the keeper is to do with a batch of results ([`ResultWrites::keeper_takes`]).
#[derive(Debug)]
pub(crate) struct KeeperShare<'a, T> {
    /// Results it writes itself.
    pub(crate) write: Vec<(u64, T)>,
    /// Results whose write is already in flight elsewhere: it waits for those writes
    /// ([`ResultWrites::written`]) and then offers these again, since a write may end by
    /// being let go of unwritten.
    pub(crate) wait: Vec<(u64, T)>,
    /// Its claim on the results of `write`, told of each write as it ends.
    pub(crate) claim: KeeperClaim<'a>,
}

/// The results a keeper claimed and has not written yet.
///
/// Dropped with some unwritten (the keeper's future was dropped, or a store write
/// panicked), it lets go of them, so that no keeper waits for them forever and a later
/// delivery writes them: otherwise a result whose report was skipped because this keeper
/// was writing it would be written by nobody.
#[derive(Debug)]
pub(crate) struct KeeperClaim<'a> {
    writes: &'a ResultWrites,
    unwritten: HashSet<u64>,
}

impl KeeperClaim<'_> {
    /// The keeper's write of `ids` ended (each is in the store now, by this write or an
    /// earlier one): their reports, still to come, are skipped. Returns those whose report
    /// came (and was skipped) during the write: the report writer left them in the
    /// gateway's `running` table for the keeper to remove.
    pub(crate) fn wrote(&mut self, ids: &[u64]) -> Vec<u64> {
        for id in ids {
            self.unwritten.remove(id);
        }
        self.writes.keeper_wrote(ids)
    }
}

impl Drop for KeeperClaim<'_> {
    fn drop(&mut self) {
        if !self.unwritten.is_empty() {
            self.writes.keeper_released(&self.unwritten);
        }
    }
}

impl ResultWrites {
    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Splits results the keeper received: those it is to write (`ours` says the task was
    /// given to this endpoint and is not finished here), and those already being written,
    /// which it waits for. The rest (written already, or not this endpoint's) are dropped.
    pub(crate) fn keeper_takes<T>(
        &self,
        results: Vec<(u64, T)>,
        mut ours: impl FnMut(u64) -> bool,
    ) -> KeeperShare<'_, T> {
        let mut state = self.state();
        let mut share = KeeperShare {
            write: Vec::new(),
            wait: Vec::new(),
            claim: KeeperClaim {
                writes: self,
                unwritten: HashSet::new(),
            },
        };
        for (id, result) in results {
            if state.writing.contains_key(&id) {
                share.wait.push((id, result));
                continue;
            }
            let reported = state.released.remove(&id);
            if reported || (!state.kept.contains(&id) && ours(id)) {
                state.writing.insert(id, Writer::Keeper { reported });
                share.claim.unwritten.insert(id);
                share.write.push((id, result));
            }
        }
        share
    }

    /// See [`KeeperClaim::wrote`].
    fn keeper_wrote(&self, ids: &[u64]) -> Vec<u64> {
        let mut state = self.state();
        let mut reported = Vec::new();
        for id in ids {
            if let Some(Writer::Keeper { reported: was }) = state.writing.get(id).copied() {
                state.writing.remove(id);
                if was {
                    reported.push(*id);
                } else {
                    state.kept.insert(*id);
                }
            }
        }
        drop(state);
        self.ended.notify_waiters();
        reported
    }

    /// See [`KeeperClaim`]'s drop.
    fn keeper_released(&self, ids: &HashSet<u64>) {
        let mut state = self.state();
        for id in ids {
            if let Some(Writer::Keeper { reported }) = state.writing.get(id).copied() {
                state.writing.remove(id);
                if reported {
                    state.released.insert(*id);
                }
            }
        }
        drop(state);
        self.ended.notify_waiters();
    }

    /// Whether a keeper is writing the result of `id`: then the report writer leaves the
    /// task in the gateway's `running` table, for the keeper (or, if it lets go, the next
    /// delivery) to finish it.
    pub(crate) fn keeper_writing(&self, id: u64) -> bool {
        matches!(self.state().writing.get(&id), Some(Writer::Keeper { .. }))
    }

    /// Keeps, of the executor's reports, those the report writer is to write: not those the
    /// keeper wrote or is writing.
    pub(crate) fn report_takes<T>(&self, reports: Vec<(u64, T)>) -> Vec<(u64, T)> {
        let mut state = self.state();
        let State { writing, kept, .. } = &mut *state;
        reports
            .into_iter()
            .filter(|(id, _)| {
                if kept.remove(id) {
                    return false;
                }
                match writing.get_mut(id) {
                    Some(Writer::Keeper { reported }) => {
                        *reported = true;
                        false
                    }
                    Some(Writer::Report) => false,
                    None => {
                        writing.insert(*id, Writer::Report);
                        true
                    }
                }
            })
            .collect()
    }

    /// The report writer's write of `ids` ended; keepers waiting on them may return.
    pub(crate) fn report_wrote(&self, ids: &[u64]) {
        let mut state = self.state();
        for id in ids {
            if state.writing.get(id) == Some(&Writer::Report) {
                state.writing.remove(id);
            }
        }
        drop(state);
        self.ended.notify_waiters();
    }

    /// Resolves once none of `ids` is being written. Bounded by those writes, which end
    /// when the store takes them (they are retried until it does).
    pub(crate) async fn written(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the look, so that an end between the look and the wait
            // is not missed.
            ended.as_mut().enable();
            if !ids.iter().any(|id| self.state().writing.contains_key(id)) {
                return;
            }
            ended.await;
        }
    }

    /// How many ids are remembered (being written, or kept awaiting their report).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        let state = self.state();
        state.writing.len() + state.kept.len() + state.released.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_keeper_first_means_the_report_is_not_written_and_nothing_stays_remembered() {
        let writes = ResultWrites::default();
        let mut share = writes.keeper_takes(vec![(1, 'a'), (2, 'b')], |_| true);
        assert_eq!(share.write, vec![(1, 'a'), (2, 'b')]);
        assert!(share.wait.is_empty());
        // One report comes during the keeper's write, one after it.
        assert!(writes.report_takes(vec![(1, 'a')]).is_empty());
        assert!(writes.keeper_writing(1));
        assert_eq!(
            share.claim.wrote(&[1, 2]),
            vec![1],
            "1's report came meanwhile"
        );
        drop(share);
        assert!(writes.report_takes(vec![(2, 'b')]).is_empty());
        assert_eq!(writes.remembered(), 0);
        // A redelivery to the keeper after both is not its to write (`running` says so).
        let share = writes.keeper_takes(vec![(1, 'a')], |_| false);
        assert!(share.write.is_empty() && share.wait.is_empty());
    }

    #[test]
    fn the_keeper_does_not_write_again_what_it_wrote_before_the_report() {
        let writes = ResultWrites::default();
        let mut share = writes.keeper_takes(vec![(1, 'a')], |_| true);
        share.claim.wrote(&[1]);
        drop(share);
        let again = writes.keeper_takes(vec![(1, 'a')], |_| true);
        assert!(again.write.is_empty() && again.wait.is_empty());
    }

    #[test]
    fn results_not_of_this_endpoint_are_not_the_keepers_to_write() {
        let writes = ResultWrites::default();
        let share = writes.keeper_takes(vec![(1, 'a'), (2, 'b')], |id| id == 2);
        assert_eq!(share.write, vec![(2, 'b')]);
    }

    #[tokio::test]
    async fn the_keeper_waits_for_the_reports_write_in_flight_and_does_not_repeat_it() {
        let writes = ResultWrites::default();
        assert_eq!(writes.report_takes(vec![(7, 'x'), (8, 'y')]).len(), 2);
        let mut share = writes.keeper_takes(vec![(7, 'x'), (9, 'z')], |_| true);
        assert_eq!(share.write, vec![(9, 'z')]);
        assert_eq!(share.wait, vec![(7, 'x')]);
        let wait = vec![7];
        let mut waiting = Box::pin(writes.written(&wait));
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "the keeper returned before the write it waits for ended"
        );
        writes.report_wrote(&[7, 8]);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the keeper returns once the report's write ended");
        assert!(share.claim.wrote(&[9]).is_empty());
        drop(share);
        assert!(writes.report_takes(vec![(9, 'z')]).is_empty());
        assert_eq!(writes.remembered(), 0);
    }

    #[tokio::test]
    async fn a_keeper_that_lets_go_unwritten_wakes_its_waiters_and_they_write() {
        let writes = ResultWrites::default();
        let share = writes.keeper_takes(vec![(1, 'a'), (2, 'b')], |_| true);
        // 1's report comes while the keeper writes, and is skipped; 2's has not come.
        assert!(writes.report_takes(vec![(1, 'a')]).is_empty());
        // A second delivery (the endpoint resent them) waits for the first keeper.
        let second = writes.keeper_takes(vec![(1, 'a'), (2, 'b')], |_| true);
        assert_eq!(second.wait, vec![(1, 'a'), (2, 'b')]);
        let mut waiting = Box::pin(writes.written(&[1, 2]));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        // The first keeper's future is dropped before its write ended.
        drop(share);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a keeper waiting on a claim let go returns");
        // The waiting keeper offers them again: 1 (its report skipped, its task gone from
        // `running`) is its to write anyway, as is 2 (still running).
        let mut again = writes.keeper_takes(second.wait, |id| id == 2);
        assert_eq!(again.write, vec![(1, 'a'), (2, 'b')]);
        assert!(again.wait.is_empty());
        assert_eq!(again.claim.wrote(&[1, 2]), vec![1]);
        drop(again);
        drop(second.claim);
        // 2's report, when it comes, is not written again.
        assert!(writes.report_takes(vec![(2, 'b')]).is_empty());
        assert_eq!(writes.remembered(), 0);
    }
}
