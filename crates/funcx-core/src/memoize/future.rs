//! The response future of [`super::Memoize`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use super::cache::{Cache, Key};
use crate::{Payload, TaskError};

pin_project! {
    /// A result from the cache, or the inner service's future whose success is cached.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        cached: Option<Payload>,
        store: Option<(Key, Arc<Mutex<Cache>>)>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn cached(payload: Payload) -> Self {
        ResponseFuture {
            inner: None,
            cached: Some(payload),
            store: None,
        }
    }

    pub(super) fn pending(inner: F, key: Key, cache: Arc<Mutex<Cache>>) -> Self {
        ResponseFuture {
            inner: Some(inner),
            cached: None,
            store: Some((key, cache)),
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Payload, TaskError>>,
{
    type Output = Result<Payload, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(payload) = this.cached.take() {
            return Poll::Ready(Ok(payload));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(TaskError::protocol(
                "memoized future polled after completion",
            )));
        };
        let result = ready!(inner.poll(cx));
        if let (Ok(payload), Some((key, cache))) = (&result, this.store.take()) {
            if let Ok(mut cache) = cache.lock() {
                cache.insert(key, payload.clone());
            }
        }
        Poll::Ready(result)
    }
}
