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
