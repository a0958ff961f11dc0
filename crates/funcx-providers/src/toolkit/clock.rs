//! When each block entered its current state.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use funcx_core::{BlockId, BlockState, BlockStatus};

/// How many blocks' states are remembered before finished ones are forgotten, so an endpoint
/// that runs for months does not grow without bound.
const CAPACITY: usize = 4096;

/// Remembers when each block was first seen in its current state: a polled scheduler or
/// cloud only says what the state is, but [`BlockStatus::since`] promises when it began.
///
/// [`BlockState::Unknown`] is not remembered (an endpoint may ask about ids that never
/// were, without end); a finished state is, so a provider can answer for a finished block
/// without asking its scheduler again ([`StateClock::finished`]).
#[derive(Debug, Default)]
pub(crate) struct StateClock {
    seen: Mutex<HashMap<BlockId, (BlockState, SystemTime)>>,
}

impl StateClock {
    /// The status of `id` now in `state`, stamped with when that state was first observed.
    pub(crate) fn observe(&self, id: &BlockId, state: BlockState) -> BlockStatus {
        self.observe_at(id, state, SystemTime::now())
    }

    /// [`StateClock::observe`] at `now`.
    pub(crate) fn observe_at(
        &self,
        id: &BlockId,
        state: BlockState,
        now: SystemTime,
    ) -> BlockStatus {
        // Every write leaves the map consistent, so a poisoned lock is still usable.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let since = match seen.get(id) {
            Some((previous, since)) if *previous == state => *since,
            Some((_, since)) if matches!(state, BlockState::Unknown(_)) => *since,
            _ => now,
        };
        if !matches!(state, BlockState::Unknown(_)) {
            if seen.len() >= CAPACITY && !seen.contains_key(id) {
                seen.retain(|_, (state, _)| !state.is_finished());
                if seen.len() >= CAPACITY {
                    // Only live blocks: an endpoint with that many is misconfigured; their
                    // `since` restarts rather than memory growing.
                    seen.clear();
                }
            }
            seen.insert(id.clone(), (state.clone(), since));
        }
        BlockStatus::new(id.clone(), state, since)
    }

    /// The state `id` finished in, if it was seen finished (and not forgotten since).
    pub(crate) fn finished(&self, id: &BlockId) -> Option<BlockState> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(id)
            .map(|(state, _)| state)
            .filter(|state| state.is_finished())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn since_is_when_the_state_was_first_seen() {
        let clock = StateClock::default();
        let id = BlockId::new("7");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let t1 = t0 + Duration::from_secs(5);
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(clock.observe_at(&id, BlockState::Pending, t0).since, t0);
        assert_eq!(clock.observe_at(&id, BlockState::Pending, t1).since, t0);
        assert_eq!(clock.observe_at(&id, BlockState::Running, t1).since, t1);
        // An unknown answer does not move the clock, nor is it remembered.
        let unknown = clock.observe_at(&id, BlockState::Unknown("?".into()), t2);
        assert_eq!(unknown.since, t1);
        assert_eq!(clock.observe_at(&id, BlockState::Running, t2).since, t1);
        assert_eq!(clock.finished(&id), None);
        clock.observe_at(&id, BlockState::Completed, t2);
        assert_eq!(clock.finished(&id), Some(BlockState::Completed));
    }

    #[test]
    fn unknown_ids_are_not_remembered_and_finished_ones_are_forgotten_first() {
        let clock = StateClock::default();
        for n in 0..CAPACITY * 2 {
            clock.observe(
                &BlockId::new(format!("ghost-{n}")),
                BlockState::Unknown("no".into()),
            );
        }
        assert!(clock.seen.lock().unwrap().is_empty());
        let live = BlockId::new("live");
        clock.observe(&live, BlockState::Running);
        for n in 0..CAPACITY {
            clock.observe(&BlockId::new(format!("done-{n}")), BlockState::Completed);
        }
        let seen = clock.seen.lock().unwrap();
        assert!(seen.len() <= CAPACITY, "{}", seen.len());
        assert!(seen.contains_key(&live), "a live block is kept");
    }
}
