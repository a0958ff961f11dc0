//! Arguments of a task: positional and keyword payloads.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::{Payload, TaskError};

/// The positional and keyword arguments of one call.
///
/// Each argument is its own [`Payload`], so an opaque payload returned by one task (a numpy
/// array, say) can be passed to the next one untouched, next to ordinary Rust values.
///
/// Most calls pass a tuple instead, through [`IntoArgs`]: `executor.submit(&f, (1, "x"))`.
///
/// ```
/// use funcx_core::Args;
///
/// let args = Args::new().arg(&3).arg(&"text").kwarg("scale", &0.5);
/// assert_eq!(args.positional().len(), 2);
/// assert_eq!(args.keyword()[0].0, "scale");
/// ```
///
/// A value that cannot be serialized does not panic and is not dropped: the task submitted
/// with these arguments fails with a [`TaskError::is_serialization`] error that says why.
///
/// Cloning is cheap (the arguments are shared), which matters because a task's arguments are
/// kept for a re-run while a copy travels to the worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Args {
    inner: Arc<Inner>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Inner {
    /// Inline up to two: most calls pass one or two, and a task's arguments are decoded on
    /// every hop, so an allocation here is one per task per hop.
    positional: SmallVec<[Payload; 2]>,
    keyword: Vec<(String, Payload)>,
    /// Why an argument failed to serialize. Never sent anywhere: such arguments are
    /// refused before they leave the process.
    #[serde(skip)]
    error: Option<String>,
}

/// On the wire, arguments are their positional and keyword payloads; sharing is a local
/// matter.
impl Serialize for Args {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Inner::deserialize(deserializer).map(|inner| Args {
            inner: Arc::new(inner),
        })
    }
}

impl Args {
    /// No arguments.
    pub fn new() -> Args {
        Args::default()
    }

    /// Appends a positional argument, pickled.
    pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Args {
        match Payload::pickle(value) {
            Ok(payload) => Arc::make_mut(&mut self.inner).positional.push(payload),
            Err(e) => self.fail(e),
        }
        self
    }

    /// Appends a positional argument that is already a payload.
    pub fn payload(mut self, payload: Payload) -> Args {
        Arc::make_mut(&mut self.inner).positional.push(payload);
        self
    }

    /// Adds a keyword argument, pickled.
    pub fn kwarg<T: Serialize + ?Sized>(mut self, name: impl Into<String>, value: &T) -> Args {
        match Payload::pickle(value) {
            Ok(payload) => Arc::make_mut(&mut self.inner)
                .keyword
                .push((name.into(), payload)),
            Err(e) => self.fail(e),
        }
        self
    }

    /// Adds a keyword argument that is already a payload.
    pub fn kwarg_payload(mut self, name: impl Into<String>, payload: Payload) -> Args {
        Arc::make_mut(&mut self.inner)
            .keyword
            .push((name.into(), payload));
        self
    }

    fn fail(&mut self, error: TaskError) {
        let inner = Arc::make_mut(&mut self.inner);
        if inner.error.is_none() {
            inner.error = Some(error.to_string());
        }
    }

    /// The positional arguments in order.
    pub fn positional(&self) -> &[Payload] {
        &self.inner.positional
    }

    /// The keyword arguments in the order they were added.
    pub fn keyword(&self) -> &[(String, Payload)] {
        &self.inner.keyword
    }

    /// The total number of argument bytes.
    pub fn byte_len(&self) -> usize {
        self.inner
            .positional
            .iter()
            .map(Payload::len)
            .sum::<usize>()
            + self
                .inner
                .keyword
                .iter()
                .map(|(k, p)| k.len() + p.len())
                .sum::<usize>()
    }

    /// The data format every argument is in (pickle when there are none), or `None` when
    /// they mix formats. A worker reads a task's arguments in one format and answers in it.
    pub fn format(&self) -> Option<crate::Format> {
        let mut formats = self
            .positional()
            .iter()
            .chain(self.keyword().iter().map(|(_, payload)| payload))
            .map(Payload::format);
        let first = formats.next().unwrap_or(crate::Format::Pickle);
        formats.all(|format| format == first).then_some(first)
    }

    /// Checks that every argument was serialized, all in one format.
    pub fn validate(&self) -> Result<(), TaskError> {
        if let Some(reason) = &self.inner.error {
            return Err(TaskError::serialize(reason));
        }
        if self.format().is_none() {
            return Err(TaskError::serialize(
                "the arguments mix data formats (pickle and JSON); a task's arguments share one format",
            ));
        }
        Ok(())
    }
}

/// Values that make the arguments of a call: [`Args`], `()`, a [`Payload`], or a tuple of up
/// to eight `Serialize` values.
///
/// A one-argument call is a one-element tuple: `(x,)`.
pub trait IntoArgs {
    /// Converts into positional and keyword arguments.
    fn into_args(self) -> Args;
}

impl IntoArgs for Args {
    fn into_args(self) -> Args {
        self
    }
}

impl IntoArgs for () {
    fn into_args(self) -> Args {
        Args::new()
    }
}

impl IntoArgs for Payload {
    fn into_args(self) -> Args {
        Args::new().payload(self)
    }
}

macro_rules! tuple_into_args {
    ($($name:ident)+) => {
        impl<$($name: Serialize),+> IntoArgs for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_args(self) -> Args {
                let ($($name,)+) = self;
                Args::new()$(.arg(&$name))+
            }
        }
    };
}

tuple_into_args!(A);
tuple_into_args!(A B);
tuple_into_args!(A B C);
tuple_into_args!(A B C D);
tuple_into_args!(A B C D E);
tuple_into_args!(A B C D E F);
tuple_into_args!(A B C D E F G);
tuple_into_args!(A B C D E F G H);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_become_positional_arguments() {
        let args = (1, "two", 3.0).into_args();
        assert_eq!(args.positional().len(), 3);
        assert_eq!(args.positional()[1].decode::<String>().unwrap(), "two");
        assert!(args.validate().is_ok());
    }

    #[test]
    fn serialized_arguments_come_back_equal_and_clones_are_independent() {
        let args = (1, "two").into_args().kwarg("k", &3.5);
        let bytes = serde_pickle::to_vec(&args, serde_pickle::SerOptions::new()).unwrap();
        let back: Args = serde_pickle::from_slice(&bytes, serde_pickle::DeOptions::new()).unwrap();
        assert_eq!(back, args);
        // A clone shares the payloads; extending one leaves the other as it was.
        let longer = args.clone().arg(&4);
        assert_eq!(args.positional().len(), 2);
        assert_eq!(longer.positional().len(), 3);
    }

    #[test]
    fn payloads_pass_through_untouched() {
        let opaque = Payload::from_pickled(&b"\x80\x04opaque"[..]);
        let args = Args::new().payload(opaque.clone()).kwarg("k", &1);
        assert_eq!(args.positional()[0], opaque);
        assert_eq!(args.keyword()[0].1.decode::<i32>().unwrap(), 1);
    }
}
