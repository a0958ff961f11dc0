//! The layer that wraps a service in [`Memoize`].

use tower_layer::Layer;

use super::Memoize;

/// Applies [`Memoize`] to a service. Every service the layer builds shares nothing: each
/// gets its own cache of `capacity` results.
#[derive(Clone, Copy, Debug)]
pub struct MemoizeLayer {
    capacity: usize,
}

impl MemoizeLayer {
    /// A layer whose services remember up to `capacity` results each.
    pub fn new(capacity: usize) -> MemoizeLayer {
        MemoizeLayer { capacity }
    }
}

impl<S> Layer<S> for MemoizeLayer {
    type Service = Memoize<S>;

    fn layer(&self, inner: S) -> Memoize<S> {
        Memoize::new(inner, self.capacity)
    }
}
