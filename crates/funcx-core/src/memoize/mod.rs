//! Memoization: a tower middleware that answers repeated calls from a cache.
//!
//! Opt-in, because only pure functions may be memoized: the cache is keyed by the function's
//! id and the exact argument bytes, and a cached result is returned without running
//! anything. Only successful results are cached.

mod cache;
mod future;
mod layer;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower_service::Service;

pub use future::ResponseFuture;
pub use layer::MemoizeLayer;

use crate::{Payload, Task, TaskError};
use cache::Cache;

/// A service that remembers the results of the [`Task`]s it passed on.
///
/// ```no_run
/// use funcx_core::{Executor, Function, MemoizeLayer, Task};
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// # async fn demo(executor: Executor) -> Result<(), funcx_core::TaskError> {
/// let mut service = ServiceBuilder::new().layer(MemoizeLayer::new(10_000)).service(executor);
/// let slow = Function::from_source("def slow(x):\n    return x * 2\n", "slow");
/// let first = service.ready().await?.call(Task::new(&slow, (21,))).await?;
/// let again = service.ready().await?.call(Task::new(&slow, (21,))).await?; // from the cache
/// assert_eq!(first, again);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Memoize<S> {
    inner: S,
    cache: Arc<Mutex<Cache>>,
}

impl<S> Memoize<S> {
    /// Wraps `inner`, remembering up to `capacity` results (the oldest go first).
    pub fn new(inner: S, capacity: usize) -> Memoize<S> {
        Memoize {
            inner,
            cache: Arc::new(Mutex::new(Cache::new(capacity))),
        }
    }

    /// How many results are cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().map_or(0, |cache| cache.len())
    }
}

impl<S> Service<Task> for Memoize<S>
where
    S: Service<Task, Response = Payload, Error = TaskError>,
{
    type Response = Payload;
    type Error = TaskError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: Task) -> Self::Future {
        let key = cache::Key::of(&task);
        let hit = self.cache.lock().ok().and_then(|cache| cache.get(&key));
        match hit {
            Some(payload) => ResponseFuture::cached(payload),
            None => ResponseFuture::pending(self.inner.call(task), key, Arc::clone(&self.cache)),
        }
    }
}
