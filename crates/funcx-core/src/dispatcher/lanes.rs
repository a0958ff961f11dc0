//! Warm workers per container image: the queue of each image's tasks (a lane), which image
//! each of the endpoint's own workers runs in, and moving workers between images.
//!
//! A task of a function that names an image ([`crate::Function::in_image`]) waits in its
//! image's lane and runs only on a worker started in that image; a plain task waits in the
//! default lane and runs on the endpoint's default workers. Pools (remote managers) take
//! tasks of every lane: their manager starts the image's workers itself.
//!
//! The endpoint's workers are one budget. When an image's tasks wait and no worker of that
//! image is free or on its way, an idle worker of an image with nothing waiting is retired and
//! its slot starts a worker in the wanted image; a lane with work and no worker at all takes
//! one from the lane with the most workers (it finishes what it holds first). A lane that has
//! workers takes more only while its waiting work (by its functions' estimates) outweighs
//! what starting one costs there (measured, spawn to ready), so the tail of one image's batch
//! does not move a worker that another image's next batch takes back. A worker stays in its
//! image until another image needs it, so a container's start cost is paid once per worker,
//! not per task. While every worker is busy in an image with a long queue, another image's
//! tasks wait for one of them to finish what it holds.
//!
//! An image whose worker cannot start (no container engine, the image missing) fails the
//! tasks waiting for it with a [`TaskError::is_no_workers`] error naming the image, and the
//! tasks submitted for it in the next [`BROKEN_FOR`] fail the same way at once, so a missing
//! image costs one start attempt per [`BROKEN_FOR`], not an endless respawn loop.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::slot::Phase;
use super::Dispatcher;
use crate::worker::ToWorker;
use crate::{TaskError, TaskId};

/// How long an image whose worker failed to start fails its tasks at once, before the next
/// task of it tries again.
pub(super) const BROKEN_FOR: Duration = Duration::from_secs(10);

/// The workers a task may run on: the endpoint's default workers, or those of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Lane(pub(super) usize);

impl Lane {
    /// The endpoint's default workers, for functions that name no image.
    pub(super) const DEFAULT: Lane = Lane(0);
}

/// One lane's queue and state.
struct LaneQueue {
    /// `None` for the default lane.
    image: Option<Arc<str>>,
    tasks: VecDeque<TaskId>,
    /// Why its workers cannot start, and until when its tasks fail at once for it.
    broken: Option<(Instant, String)>,
    /// How long its last worker took from spawn to ready (a container's start cost).
    start_ns: Option<u64>,
}

impl LaneQueue {
    fn new(image: Option<Arc<str>>) -> LaneQueue {
        LaneQueue {
            image,
            tasks: VecDeque::new(),
            broken: None,
            start_ns: None,
        }
    }
}

/// The queued tasks, one queue per lane; the default lane always exists.
pub(super) struct Queues {
    lanes: Vec<LaneQueue>,
    by_image: HashMap<Arc<str>, Lane>,
}

impl Queues {
    pub(super) fn new() -> Queues {
        Queues {
            lanes: vec![LaneQueue::new(None)],
            by_image: HashMap::new(),
        }
    }

    /// The lane of tasks of `image` (the default lane for `None`), made on first use.
    pub(super) fn lane_of(&mut self, image: Option<&str>) -> Lane {
        let Some(image) = image else {
            return Lane::DEFAULT;
        };
        if let Some(lane) = self.by_image.get(image) {
            return *lane;
        }
        let lane = Lane(self.lanes.len());
        let image: Arc<str> = Arc::from(image);
        self.lanes.push(LaneQueue::new(Some(Arc::clone(&image))));
        self.by_image.insert(image, lane);
        lane
    }

    /// The image of `lane`; `None` for the default lane.
    pub(super) fn image(&self, lane: Lane) -> Option<&Arc<str>> {
        self.lanes[lane.0].image.as_ref()
    }

    /// Whether any function has named an image: until one has, the endpoint has only the
    /// default lane and nothing here costs anything.
    pub(super) fn has_images(&self) -> bool {
        self.lanes.len() > 1
    }

    /// How many lanes there are, the default one included.
    pub(super) fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The tasks waiting in `lane`.
    pub(super) fn get(&self, lane: Lane) -> &VecDeque<TaskId> {
        &self.lanes[lane.0].tasks
    }

    /// The tasks waiting in `lane`, to take from or put back into.
    pub(super) fn get_mut(&mut self, lane: Lane) -> &mut VecDeque<TaskId> {
        &mut self.lanes[lane.0].tasks
    }

    /// Records that a worker of `lane` took `took` from spawn to ready.
    pub(super) fn started(&mut self, lane: Lane, took: Duration) {
        self.lanes[lane.0].start_ns = Some(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Every waiting task, lane by lane.
    pub(super) fn iter(&self) -> impl Iterator<Item = &TaskId> {
        self.lanes.iter().flat_map(|lane| lane.tasks.iter())
    }

    /// Whether no task waits in any lane.
    pub(super) fn is_empty(&self) -> bool {
        self.lanes.iter().all(|lane| lane.tasks.is_empty())
    }

    /// How many tasks wait, in every lane.
    pub(super) fn len(&self) -> usize {
        self.lanes.iter().map(|lane| lane.tasks.len()).sum()
    }

    /// Takes every waiting task out of every lane.
    pub(super) fn take_all(&mut self) -> Vec<TaskId> {
        self.lanes
            .iter_mut()
            .flat_map(|lane| std::mem::take(&mut lane.tasks))
            .collect()
    }

    /// Why tasks of `lane` fail at once now, if its workers failed to start in the last
    /// [`BROKEN_FOR`].
    pub(super) fn broken(&mut self, lane: Lane, now: Instant) -> Option<&str> {
        let state = &mut self.lanes[lane.0];
        if state
            .broken
            .as_ref()
            .is_some_and(|(until, _)| *until <= now)
        {
            state.broken = None; // Long enough: the next worker tries again.
        }
        state.broken.as_ref().map(|(_, reason)| reason.as_str())
    }
}

impl Dispatcher {
    /// Moves the endpoint's own workers between lanes (see the module's documentation).
    /// Called after placement, so an idle worker is one that got nothing of its own lane.
    pub(super) fn assign_lanes(&mut self) {
        if !self.queues.has_images() || matches!(self.stop, Some(super::shutdown::Stop::Now)) {
            return;
        }
        let local = self.config.workers.min(self.slots.len());
        let waiting: Vec<Lane> = (0..self.queues.lanes())
            .map(Lane)
            .filter(|&lane| !self.queues.get(lane).is_empty())
            .collect();
        if waiting.is_empty() {
            return;
        }
        // Workers per lane, counting those on their way into one.
        let mut workers = vec![0usize; self.queues.lanes()];
        for slot in &self.slots[..local] {
            if slot.phase != Phase::Dead {
                workers[slot.switch_to.unwrap_or(slot.lane).0] += 1;
            }
        }
        // First every lane with work and no worker gets one: an idle worker of another lane,
        // or else one of the most crowded lane's (which finishes what it holds first).
        for &lane in &waiting {
            if workers[lane.0] > 0 {
                continue;
            }
            let donor = self.idle_elsewhere(lane, local).or_else(|| {
                (0..local)
                    .filter(|&index| {
                        let slot = &self.slots[index];
                        slot.switch_to.is_none() && slot.takes_work() && workers[slot.lane.0] >= 2
                    })
                    .max_by_key(|&index| {
                        let slot = &self.slots[index];
                        // Within the most crowded lane, the worker holding least.
                        (workers[slot.lane.0], usize::MAX - slot.in_flight.len())
                    })
            });
            if let Some(index) = donor {
                workers[self.slots[index].lane.0] -= 1;
                workers[lane.0] += 1;
                self.retire(index, lane);
            }
        }
        // Then a lane with more waiting than workers free for it or on their way takes the
        // idle workers of lanes with nothing waiting, while its waiting work is worth a
        // worker's start.
        for &lane in &waiting {
            let Some(start_ns) = self.queues.lanes[lane.0].start_ns else {
                continue; // Its first worker has yet to show what a start costs.
            };
            let queue = self.queues.get(lane);
            let each_ns = queue
                .front()
                .and_then(|id| self.tasks.get(id))
                .map_or(0, |record| {
                    self.function_table[record.key.0 as usize].1.nanos()
                });
            let waiting_ns = each_ns.saturating_mul(queue.len() as u64);
            if waiting_ns < start_ns.saturating_mul(workers[lane.0].max(1) as u64) {
                continue;
            }
            let coming = self.slots[..local]
                .iter()
                .filter(|slot| match slot.switch_to {
                    Some(to) => to == lane,
                    None => {
                        slot.lane == lane
                            && match slot.phase {
                                Phase::Spawning | Phase::Starting => true,
                                Phase::Ready => slot.in_flight.is_empty(),
                                Phase::Stopping | Phase::Dead => false,
                            }
                    }
                })
                .count();
            let mut wanted = self.queues.get(lane).len().saturating_sub(coming);
            while wanted > 0 {
                let Some(index) = self.idle_elsewhere(lane, local) else {
                    break;
                };
                self.retire(index, lane);
                wanted -= 1;
            }
        }
    }

    /// One of the first `local` slots whose worker is idle in another lane than `lane`, with
    /// nothing waiting in its own.
    fn idle_elsewhere(&self, lane: Lane, local: usize) -> Option<usize> {
        (0..local).find(|&index| {
            let slot = &self.slots[index];
            slot.lane != lane
                && slot.switch_to.is_none()
                && slot.takes_work()
                && slot.in_flight.is_empty()
                && self.queues.get(slot.lane).is_empty()
        })
    }

    /// Stops slot `index`'s worker (it finishes what it holds) and starts the slot's next
    /// worker in `lane` once it has exited.
    fn retire(&mut self, index: usize, lane: Lane) {
        let image = self.queues.image(lane).map(|image| image.to_string());
        let slot = &mut self.slots[index];
        info!(worker = %slot.id, slot = index, to = ?image, "retiring a worker to start one in another image");
        slot.switch_to = Some(lane);
        slot.phase = Phase::Stopping;
        if let Some(worker) = slot.worker.as_mut() {
            worker.send(ToWorker::Shutdown);
        }
    }

    /// A worker of an image could not start: the image's waiting tasks fail, its next tasks
    /// fail at once for [`BROKEN_FOR`], and the slot goes back to a default worker.
    pub(super) fn lane_failed(&mut self, index: usize, reason: &str) {
        let lane = self.slots[index].lane;
        let image = self.queues.image(lane).map(|image| image.to_string());
        let reason = format!(
            "no worker can start in container image {}: {reason}",
            image.as_deref().unwrap_or_default()
        );
        warn!(slot = index, "{reason}");
        self.queues.lanes[lane.0].broken = Some((Instant::now() + BROKEN_FOR, reason.clone()));
        for id in std::mem::take(self.queues.get_mut(lane)) {
            if let Some(mut record) = self.tasks.remove(&id) {
                record.finish(Err(TaskError::no_workers(&reason)));
            }
        }
        self.slots[index].lane = Lane::DEFAULT;
        if self.keeps_worker(index) {
            self.respawn(index);
        } else {
            self.slots[index].phase = Phase::Dead;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_made_once_per_image_and_the_default_lane_is_free() {
        let mut queues = Queues::new();
        assert!(!queues.has_images());
        assert_eq!(queues.lane_of(None), Lane::DEFAULT);
        let a = queues.lane_of(Some("localhost/a:1"));
        let b = queues.lane_of(Some("localhost/b:1"));
        assert_ne!(a, b);
        assert_eq!(queues.lane_of(Some("localhost/a:1")), a);
        assert_eq!(queues.image(a).map(|image| &**image), Some("localhost/a:1"));
        assert_eq!(queues.image(Lane::DEFAULT), None);
        assert!(queues.has_images());
        assert_eq!(queues.lanes(), 3);
    }

    #[test]
    fn a_broken_lane_heals_after_its_time() {
        let mut queues = Queues::new();
        let a = queues.lane_of(Some("localhost/a:1"));
        let now = Instant::now();
        queues.lanes[a.0].broken = Some((now + BROKEN_FOR, "missing".into()));
        assert_eq!(queues.broken(a, now), Some("missing"));
        assert_eq!(queues.broken(a, now + BROKEN_FOR), None);
        assert_eq!(queues.broken(a, now), None, "cleared once healed");
    }
}
