//! The records of the tasks the dispatcher holds, by id, in one growing table instead of one
//! allocation each.
//!
//! A record is a few hundred bytes and lives from submission to outcome; at hundreds of
//! thousands of tasks a second, allocating and freeing one per task was a visible share of
//! the allocator's work (and of its lock contention, as the other threads allocate too). The
//! records sit in a vector whose free places are reused, most recently freed first (still in
//! the caches), and the id map holds only their places.

use super::TaskRecord;
use crate::ids::IdMap;
use crate::TaskId;

/// Above this many places, an empty table gives its memory back, so a burst of a million tasks
/// does not keep its records' memory for the rest of the endpoint's life.
const KEEP_PLACES: usize = 4096;

/// The dispatcher's task records by id.
#[derive(Default)]
pub(super) struct Records {
    place_of: IdMap<TaskId, usize>,
    places: Vec<Option<TaskRecord>>,
    /// Places without a record, the most recently freed last.
    free: Vec<usize>,
}

impl Records {
    pub(super) fn get(&self, id: &TaskId) -> Option<&TaskRecord> {
        let place = *self.place_of.get(id)?;
        self.places[place].as_ref()
    }

    pub(super) fn get_mut(&mut self, id: &TaskId) -> Option<&mut TaskRecord> {
        let place = *self.place_of.get(id)?;
        self.places[place].as_mut()
    }

    pub(super) fn contains_key(&self, id: &TaskId) -> bool {
        self.place_of.contains_key(id)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.place_of.is_empty()
    }

    /// Holds `record` under `id`, in place of any record it had.
    pub(super) fn insert(&mut self, id: TaskId, record: TaskRecord) {
        if let Some(&place) = self.place_of.get(&id) {
            self.places[place] = Some(record);
            return;
        }
        let place = match self.free.pop() {
            Some(place) => {
                self.places[place] = Some(record);
                place
            }
            None => {
                self.places.push(Some(record));
                self.places.len() - 1
            }
        };
        self.place_of.insert(id, place);
    }

    /// Takes the record of `id` out.
    pub(super) fn remove(&mut self, id: &TaskId) -> Option<TaskRecord> {
        let place = self.place_of.remove(id)?;
        let record = self.places[place].take();
        if self.place_of.is_empty() && self.places.len() > KEEP_PLACES {
            *self = Records::default();
        } else {
            self.free.push(place);
        }
        record
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &TaskRecord> {
        self.places.iter().flatten()
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut TaskRecord> {
        self.places.iter_mut().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::FunctionKey;
    use crate::{Args, TaskState, Timeline};
    use std::time::SystemTime;

    /// A queued record whose `attempts` tells it apart.
    fn record(attempts: u32) -> TaskRecord {
        TaskRecord {
            key: FunctionKey(0),
            args: Args::default(),
            bytes: 0,
            timeout: None,
            reply: None,
            timeline: Timeline {
                submitted: SystemTime::now(),
                dispatched: None,
                running: None,
                finished: None,
            },
            state: TaskState::Queued,
            attempts,
            deaths: 0,
            disruptions: 0,
            isolate: false,
            charged_ns: 0,
            stolen: false,
            span: tracing::Span::none(),
            trace: 0,
            resources: None,
            lane: super::super::lanes::Lane::DEFAULT,
        }
    }

    fn id(n: u64) -> TaskId {
        TaskId::from_u64(n)
    }

    #[test]
    fn records_come_back_by_id_and_freed_places_are_reused() {
        let mut records = Records::default();
        for n in 0..3 {
            records.insert(id(n), record(n as u32));
        }
        let removed = records.remove(&id(1)).expect("held");
        assert_eq!(removed.attempts, 1);
        assert!(records.get(&id(1)).is_none() && !records.contains_key(&id(1)));
        assert!(records.remove(&id(1)).is_none(), "removed once");
        records.insert(id(7), record(7));
        assert_eq!(
            records.places.len(),
            3,
            "the freed place took the new record"
        );
        // Inserting under an id it holds replaces that record.
        records.insert(id(7), record(70));
        assert_eq!(records.places.len(), 3);
        let attempts: Vec<u32> = [0, 2, 7]
            .iter()
            .map(|&n| records.get(&id(n)).expect("held").attempts)
            .collect();
        assert_eq!(attempts, [0, 2, 70]);
        if let Some(record) = records.get_mut(&id(2)) {
            record.attempts = 20;
        }
        let mut all: Vec<u32> = records.values().map(|record| record.attempts).collect();
        all.sort_unstable();
        assert_eq!(all, [0, 20, 70]);
    }

    #[test]
    fn an_emptied_large_table_gives_its_memory_back() {
        let mut records = Records::default();
        let many = KEEP_PLACES as u64 + 10;
        for n in 0..many {
            records.insert(id(n), record(0));
        }
        for n in 0..many {
            records.remove(&id(n));
        }
        assert!(records.is_empty());
        assert_eq!(records.places.capacity(), 0);
        assert_eq!(records.free.capacity(), 0);
        // A small table keeps its places for the next tasks.
        records.insert(id(1), record(0));
        records.remove(&id(1));
        assert_eq!(records.places.len(), 1);
    }
}
