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

/// Above this many places, a table three quarters empty gives its memory back (an empty one
/// all of it), so a burst of a million tasks does not keep its records' memory (hundreds of
/// MiB) for the rest of the endpoint's life because a few of them still run.
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
        if self.places.len() <= KEEP_PLACES {
            self.free.push(place);
        } else if self.place_of.is_empty() {
            *self = Records::default();
        } else if self.place_of.len() < self.places.len() / 4 {
            self.compact();
        } else {
            self.free.push(place);
        }
        record
    }

    /// Moves the records still held to the front of a table of their size. Runs after at
    /// least three quarters of the places were emptied since the table last had this size,
    /// so its cost (one move per record held) is paid for by those removals.
    fn compact(&mut self) {
        let mut places = Vec::with_capacity(self.place_of.len());
        for place in self.place_of.values_mut() {
            places.push(self.places[*place].take());
            *place = places.len() - 1;
        }
        self.places = places;
        self.free = Vec::new();
        self.place_of.shrink_to_fit();
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
        assert!(
            records.places.capacity() <= KEEP_PLACES && records.free.capacity() <= KEEP_PLACES,
            "{} places, {} free kept",
            records.places.capacity(),
            records.free.capacity()
        );
        // A small table keeps its places for the next tasks.
        let mut small = Records::default();
        small.insert(id(1), record(0));
        small.remove(&id(1));
        assert_eq!(small.places.len(), 1);
        small.insert(id(2), record(0));
        assert_eq!(small.places.len(), 1, "the kept place took the next record");
    }

    #[test]
    fn a_large_table_with_a_few_records_left_gives_the_rest_back_and_keeps_them() {
        let mut records = Records::default();
        let many = 4 * KEEP_PLACES as u64;
        for n in 0..many {
            records.insert(id(n), record(n as u32));
        }
        // Every 100th task still runs after the burst.
        for n in (0..many).filter(|n| n % 100 != 0) {
            records.remove(&id(n));
        }
        let left = (many / 100 + 1) as usize;
        assert!(
            records.places.capacity() < KEEP_PLACES,
            "{} places kept for {left} records",
            records.places.capacity()
        );
        for n in (0..many).step_by(100) {
            assert_eq!(records.get(&id(n)).map(|r| r.attempts), Some(n as u32));
        }
        assert_eq!(records.values().count(), left);
        // The table still takes and gives back records after it shrank.
        records.insert(id(many), record(1));
        assert_eq!(records.remove(&id(many)).map(|r| r.attempts), Some(1));
        assert_eq!(records.remove(&id(0)).map(|r| r.attempts), Some(0));
        assert!(records.get(&id(0)).is_none());
    }
}
