//! A bounded map from calls to results, oldest entries evicted first.

use std::collections::{HashMap, VecDeque};

use crate::{Args, FunctionId, Payload, Task};

/// What makes two calls the same: the function and the exact argument bytes. Options such as
/// the timeout do not change a result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Key {
    function: FunctionId,
    args: Args,
}

impl Key {
    pub(super) fn of(task: &Task) -> Key {
        Key {
            function: task.function.id(),
            args: task.args.clone(),
        }
    }
}

#[derive(Debug)]
pub(super) struct Cache {
    capacity: usize,
    entries: HashMap<Key, Payload>,
    order: VecDeque<Key>,
}

impl Cache {
    pub(super) fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn get(&self, key: &Key) -> Option<Payload> {
        self.entries.get(key).cloned()
    }

    pub(super) fn insert(&mut self, key: Key, payload: Payload) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(key.clone(), payload).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Function;

    #[test]
    fn evicts_the_oldest_beyond_capacity() {
        let f = Function::from_source("def f(x): return x", "f");
        let key = |x: i32| Key::of(&Task::new(&f, (x,)));
        let mut cache = Cache::new(2);
        for x in 0..3 {
            cache.insert(key(x), Payload::pickle(&x).unwrap());
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key(0)).is_none());
        assert_eq!(cache.get(&key(2)).unwrap().decode::<i32>().unwrap(), 2);
    }
}
